"""The Severstal pipeline's stage modules; rendered into Kaggle kernels by kernelgen."""
