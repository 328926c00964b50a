"""kernelgen: plain Python stage modules in, self-contained Kaggle kernels out."""

__version__ = "0.1.0"
