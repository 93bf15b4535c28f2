"""Fashion-MNIST (60k train / 10k test, 28x28 grey, MNIST's IDX format): from data.root or Debian's package."""

from __future__ import annotations

from pathlib import Path

from .idx import has_files, idx_splits
from .splits import Split, describe

DEBIAN = Path("/usr/share/datasets/fashion-mnist")  # `apt-get install dataset-fashion-mnist`
FOLDER = "fashion-mnist"


def load_fashion_mnist(root: str | Path, system: Path = DEBIAN) -> tuple[dict[str, Split], dict]:
    """Splits from `root/fashion-mnist/` (or `root` itself) if the four IDX files are there, else from the Debian
    package's folder; a missing dataset says how to get it."""
    root = Path(root)
    where = next((p for p in (root / FOLDER, root, system) if has_files(p)), root / FOLDER)
    splits = idx_splits(where, "Fashion-MNIST", "Install it with `apt-get install dataset-fashion-mnist` (Debian, "
                        f"puts the files in {system}) or copy the four IDX files (.gz or plain) into '{where}'")
    source = "debian" if where == system else "idx"
    return splits, describe(source, str(where.resolve()), splits)
