"""Where kernels run: Kaggle through the official client, or this machine."""
