"""Real photographs and textures for the art task: those that installed packages ship, or a user's own files.

No package here ships ImageNet or paintings. Content photographs come from scikit-image, scikit-learn and
matplotlib, split by photograph (a photo's crops never cross splits); style images are scikit-image's texture
photographs or any image file.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from ..errors import L2LError

# (package, folder inside it, file)
_FILES = {
    "astronaut": ("skimage", "data", "astronaut.png"), "camera": ("skimage", "data", "camera.png"),
    "chelsea": ("skimage", "data", "chelsea.png"), "coffee": ("skimage", "data", "coffee.png"),
    "coins": ("skimage", "data", "coins.png"), "motorcycle": ("skimage", "data", "motorcycle_left.png"),
    "rocket": ("skimage", "data", "rocket.jpg"), "grace_hopper": ("matplotlib", "mpl-data/sample_data",
                                                                  "grace_hopper.jpg"),
    "hubble": ("skimage", "data", "hubble_deep_field.jpg"), "china": ("sklearn", "datasets/images", "china.jpg"),
    "flower": ("sklearn", "datasets/images", "flower.jpg"),
    "brick": ("skimage", "data", "brick.png"), "grass": ("skimage", "data", "grass.png"),
    "gravel": ("skimage", "data", "gravel.png"),
}
PHOTOS = {"train": ("astronaut", "camera", "chelsea", "coffee", "coins", "motorcycle", "rocket"),
          "validation": ("grace_hopper", "hubble"), "test": ("china", "flower")}
STYLES = ("brick", "grass", "gravel")
SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
PIP = {"skimage": "scikit-image", "sklearn": "scikit-learn", "matplotlib": "matplotlib"}


def shipped(name: str) -> Path:
    """The path of an image that a package ships."""
    package, folder, file = _FILES[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise L2LError(f"image '{name}' comes with the package {PIP[package]}, which is not installed: "
                       f"pip install {PIP[package]}")
    path = Path(spec.submodule_search_locations[0]) / folder / file
    if not path.is_file():
        raise L2LError(f"image '{name}' is missing from {PIP[package]} ({path}): reinstall it")
    return path


def read_image(path: Path) -> torch.Tensor:
    """An image file as bytes [3, H, W] (grey images get three equal channels), upright as its EXIF tag says."""
    from PIL import Image, ImageOps

    if Path(path).is_dir():
        raise L2LError(f"image '{path}' is a folder: pass an image file")
    try:
        with Image.open(path) as im:
            pixels = np.asarray(ImageOps.exif_transpose(im).convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise L2LError(f"image '{path}' not found") from None
    except Exception as e:  # PIL raises many kinds on a foreign, truncated or huge file
        raise L2LError(f"cannot read image '{path}' ({type(e).__name__}): pass a PNG or JPEG file") from None
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1)


def as_float(image: torch.Tensor) -> torch.Tensor:
    """Bytes [..., H, W] as floats in [0, 1]."""
    return image.float() / 255


def where(name: str) -> str:
    """Which package ships a named image, for run summaries."""
    return PIP[_FILES[name][0]] if name in _FILES else "user file"


def photo_files(photos: str) -> dict[str, list[tuple[str, Path]]]:
    """The content photographs of each split: `shipped`, or a folder with train/, validation/ and test/ subfolders
    of image files."""
    if photos == "shipped":
        return {split: [(n, shipped(n)) for n in names] for split, names in PHOTOS.items()}
    root = Path(photos).expanduser()
    found = {}
    for split in PHOTOS:
        folder = root / split
        files = sorted(p for p in folder.glob("*") if p.suffix.lower() in SUFFIXES) if folder.is_dir() else []
        if not files:
            raise L2LError(f"task.photos='{photos}' has no images in {folder}: it needs train/, validation/ and test/ "
                           f"folders of image files ({', '.join(SUFFIXES)}), or task.photos=shipped")
        found[split] = [(p.stem, p) for p in files]
    return found


def style_file(style: str) -> tuple[str, Path]:
    """A style image: a shipped texture by name, or an image file's path."""
    if style in STYLES:
        return style, shipped(style)
    path = Path(style).expanduser()
    if path.suffix.lower() not in SUFFIXES and not path.exists():
        raise L2LError(f"task.style='{style}' is neither a shipped texture ({', '.join(STYLES)}) nor an image file")
    if not path.exists():
        raise L2LError(f"task.style='{style}': image not found; pass a texture ({', '.join(STYLES)}) or an image file")
    return path.stem, path
