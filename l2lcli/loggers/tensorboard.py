"""logger=tensorboard: event files in each run folder (or under logger.tensorboard.dir), read by `tensorboard`."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from omegaconf import DictConfig

from ..errors import L2LError, one_line
from .base import Backend, RunInfo
from .series import Point


class TensorBoard(Backend):
    name = "tensorboard"

    def __init__(self, node: DictConfig):
        if importlib.util.find_spec("tensorboard") is None:
            raise L2LError("logger=tensorboard needs TensorBoard: pip install 'l2lcli[tensorboard]'")
        try:  # a broken install fails here, before any work, not mid-run
            from torch.utils.tensorboard import SummaryWriter  # noqa: F401
        except Exception as e:  # ImportError, or protobuf's errors on a mismatched version
            raise L2LError(f"logger=tensorboard cannot load TensorBoard ({one_line(e)[:120]}): pip install "
                           "--upgrade 'l2lcli[tensorboard]'") from None

        self.root, self.writer, self.dir = node.dir, None, None

    def start(self, info: RunInfo, saved: dict | None) -> dict:
        from torch.utils.tensorboard import SummaryWriter

        if info.run_dir is None or info.command == "multirun":  # parents: their children have the event files
            return {}
        # under one root, runs keep the folders' layout, so TensorBoard names each run as outputs/ does
        self.dir = Path(self.root) / info.command / info.task / info.name if self.root else info.run_dir / "tensorboard"
        continued = bool(saved) and saved.get("dir") == str(self.dir)
        self.writer = SummaryWriter(str(self.dir))
        if not continued:
            self.writer.add_text("config", f"```yaml\n{info.config_yaml}```", 0)
            self.writer.add_text("run", "\n".join(f"- {k}: {v}" for k, v in info.tags.items()), 0)
        return {"dir": str(self.dir), "continued": continued}

    def log(self, batch: list[Point]) -> None:
        if self.writer is None:
            return
        for p in batch:
            self.writer.add_scalar(p.key, p.value, p.step)
        self.writer.flush()  # an epoch's figures are on disk when the epoch is

    def files(self, paths: list[Path], checkpoints: list[Path]) -> None:
        if self.writer is None:
            return
        import matplotlib.image

        for path in paths:
            if path.suffix == ".png":
                image = matplotlib.image.imread(path)[..., :3]  # RGBA floats in [0, 1]
                self.writer.add_image(path.stem, image, 0, dataformats="HWC")

    def finish(self, status: str, summary: list[Point], params: dict) -> None:
        if self.writer is None:
            return
        from torch.utils.tensorboard.summary import hparams

        try:
            self.log(summary)
            # the config in the HParams tab, beside the summary figures, in this run's own event file
            for event in hparams(params, {p.key: p.value for p in summary}):
                self.writer.file_writer.add_summary(event)
            self.writer.add_text("status", status, 0)
        finally:
            self.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def where(self) -> str:
        if self.dir is None:
            return "the child runs' folders"
        return f"{self.dir} (tensorboard --logdir {self.root or self.dir.parent.parent.parent.parent})"
