# %% [markdown]
# ## The competition's fixed facts
# Severstal: Steel Defect Detection on Kaggle. Its data is mounted under the
# competition's slug; every image, train or test, is 256 pixels high and 1600
# wide (masks and RLEs cover the same grid); and defects come in four classes,
# numbered 1 to 4. Every other module takes these from here.

# %%
COMPETITION = "severstal-steel-defect-detection"

IMAGE_HEIGHT = 256
IMAGE_WIDTH = 1600
IMAGE_SHAPE: tuple[int, int] = (IMAGE_HEIGHT, IMAGE_WIDTH)

CLASS_IDS: tuple[int, ...] = (1, 2, 3, 4)
