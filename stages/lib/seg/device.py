# %% [markdown]
# ## Device set-up
# Where and how batches run: on a GPU in mixed precision with channels-last
# tensors. The loader ships uint8 images with pinned memory; they are
# normalised on the device, where the flip augmentation also runs.

# %%
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader, Dataset

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DeviceSetup:
    """How batches are run: device, precision, memory layout, accumulation.

    The normalisation constants live on the device once: building them per
    batch would copy from host memory and make the host wait for the GPU.
    """

    device: torch.device
    amp: bool
    channels_last: bool
    accum_steps: int
    pixel_mean: torch.Tensor = field(repr=False, compare=False)
    pixel_inv_std: torch.Tensor = field(repr=False, compare=False)

    @classmethod
    def create(
        cls, device: torch.device, amp: bool = True, batch_size: int = 1, accumulate_to: int = 1
    ) -> "DeviceSetup":
        """Mixed precision only where asked and on CUDA; gradients accumulated over enough
        batches of `batch_size` to reach `accumulate_to` images a step."""
        cuda = device.type == "cuda"
        accum = max(1, round(accumulate_to / batch_size))
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255.0
        inv_std = 1.0 / (torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255.0)
        return cls(
            device=device,
            amp=amp and cuda,
            channels_last=cuda,
            accum_steps=accum,
            pixel_mean=mean.to(device),
            pixel_inv_std=inv_std.to(device),
        )

    def flip_generator(self, seed: int) -> torch.Generator:
        """A seeded generator on the device, so flip draws need no host-to-device copy."""
        return torch.Generator(device=self.device).manual_seed(seed)

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp)


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def grad_scaler(setup: DeviceSetup) -> "torch.amp.GradScaler":
    """A loss scaler for float16 training; a pass-through when AMP is off."""
    return torch.amp.GradScaler(setup.device.type, enabled=setup.amp)


def make_loader(
    dataset: Dataset, batch_size: int, workers: int, device: torch.device, shuffle_seed: int | None
) -> DataLoader:
    """Loader with pinned memory on CUDA and workers kept alive between epochs.

    `shuffle_seed` None means keep order (validation, test).
    """
    generator = None
    if shuffle_seed is not None:
        generator = torch.Generator().manual_seed(shuffle_seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle_seed is not None,
        generator=generator,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
    )


def prepare_images(images: torch.Tensor, setup: DeviceSetup) -> torch.Tensor:
    """uint8 (B, 3, H, W) batch -> normalised float on the device, in the setup's layout."""
    x = images.to(setup.device, non_blocking=True).to(memory_format=setup.memory_format)
    return (x.float() - setup.pixel_mean) * setup.pixel_inv_std
