"""Image preprocessing in numpy and Pillow: what open_clip's transforms do (resize the short
side with bicubic resampling, centre crop, scale to [0, 1], normalise), without torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from clipsearch.errors import ModelLoadError

Pixels = np.ndarray[Any, np.dtype[np.float32]]


@dataclass(frozen=True)
class ImagePrep:
    """A decoded image -> a (3, size, size) float32 array, as the exported model expects."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __call__(self, image: Image.Image) -> Pixels:
        image = image if image.mode == "RGB" else image.convert("RGB")
        width, height = image.size
        # The short side becomes `size`; the long side is truncated, as torchvision does.
        if width <= height:
            new = (self.size, int(self.size * height / width))
        else:
            new = (int(self.size * width / height), self.size)
        if new != image.size:
            image = image.resize(new, Image.Resampling.BICUBIC)
        left = round((new[0] - self.size) / 2.0)
        top = round((new[1] - self.size) / 2.0)
        if new != (self.size, self.size):
            image = image.crop((left, top, left + self.size, top + self.size))
        array: Pixels = np.asarray(image, dtype=np.float32) * np.float32(1.0 / 255.0)
        array -= np.asarray(self.mean, dtype=np.float32)
        array /= np.asarray(self.std, dtype=np.float32)
        return np.ascontiguousarray(array.transpose(2, 0, 1))

    def to_dict(self) -> dict[str, Any]:
        return {"size": self.size, "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImagePrep:
        mean, std = data["mean"], data["std"]
        return cls(int(data["size"]), (mean[0], mean[1], mean[2]), (std[0], std[1], std[2]))


def read_transforms(preprocess: Any) -> ImagePrep:
    """The parameters of a torchvision `Compose` of the standard CLIP steps; anything else
    cannot be exported and says so."""
    from torchvision import transforms as T

    steps = list(getattr(preprocess, "transforms", []))
    size: int | None = None
    mean: Any = None
    std: Any = None
    for step in steps:
        if isinstance(step, T.Resize):
            if step.interpolation != T.InterpolationMode.BICUBIC or step.max_size is not None:
                break
            size = step.size if isinstance(step.size, int) else step.size[0]
        elif isinstance(step, T.CenterCrop):
            if size is None or tuple(step.size) != (size, size):
                break
        elif isinstance(step, T.Normalize):
            mean, std = tuple(step.mean), tuple(step.std)
        elif not _is_conversion(step):
            break
    else:
        if size is not None and mean is not None:
            return ImagePrep(size, (mean[0], mean[1], mean[2]), (std[0], std[1], std[2]))
    raise ModelLoadError(
        f"this model's preprocessing ({preprocess}) is not the standard resize, centre crop "
        "and normalise that the optimised runtimes reproduce; use --runtime torch"
    )


#: Steps that only convert (to RGB, to a [0, 1] tensor), by name: open_clip's own classes
#: (`MaybeConvertMode`, `MaybeToTensor`) and functions (`_convert_to_rgb`), torchvision's.
_CONVERSIONS = {"ToTensor", "MaybeToTensor", "MaybeConvertMode", "_convert_to_rgb"}


def _is_conversion(step: Any) -> bool:
    name = getattr(step, "__name__", None) or type(step).__name__
    return name in _CONVERSIONS and getattr(step, "mode", "RGB") == "RGB"
