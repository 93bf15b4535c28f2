"""Neural art (paper section 3.4, Figure 8): the optimizee's parameters are an image's pixels, its loss Gatys et al.'s
`a * L_content + b * L_style + c * L_tv` through a frozen feature network that all problems of a batch share."""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F

from ..data.photos import as_float, photo_files, read_image, style_file, where
from ..errors import L2LError
from .base import ParamSpec, ProblemBatch, TaskFamily, randn
from .features import feature_net

REFERENCE = 128  # side at which the training photographs normalise the feature network, whatever task.size is
REFERENCE_PHOTOS = 32  # at most this many of them (evenly spaced): a user's folder may hold thousands


def gram(f: torch.Tensor) -> torch.Tensor:
    """Gram matrices [N, C, C] of features [N, C, h, w], divided by the positions h * w."""
    f = f.flatten(2)
    return torch.bmm(f, f.transpose(1, 2)) / f.shape[-1]


def square(image: torch.Tensor, side: int) -> torch.Tensor:
    """The central square of an image [3, H, W], resized to side x side."""
    _, h, w = image.shape
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return resize(image[:, top : top + s, left : left + s], side)


def resize(image: torch.Tensor, side: int) -> torch.Tensor:
    if image.shape[-1] == side and image.shape[-2] == side:
        return image
    return F.interpolate(image[None], size=(side, side), mode="bilinear", antialias=True, align_corners=False)[0]


class ArtBatch(ProblemBatch):
    """B images to stylise, one content crop each, all with the family's style; replica r of problem b at r * B + b."""

    def __init__(self, family: ArtFamily, content: torch.Tensor, init: torch.Tensor):
        self.specs, self.batch, self.buffers = family.specs(), content.shape[0], {}
        self.net_on, self.net = family.net_on, family.net
        self.content, self.style, self.params0 = content, family.style_image, {"image": init}
        self.weights = (family.content_weight, family.style_weight, family.tv_weight)
        self.content_layer, self.style_layers = family.content_layer, family.style_layers
        self.targets: dict[str, torch.Tensor] = {}  # filled on the first loss, on the batch's device

    def init_params(self):
        return {"image": self.params0["image"].clone()}

    def to(self, device):
        self.net = self.net_on(device)  # the family's own copy there: moving the shared one would strand other batches
        return super().to(device)

    def _targets(self) -> dict[str, torch.Tensor]:
        if not self.targets:
            with torch.no_grad():
                self.targets["content"] = self.net(self.content)[self.content_layer]
                style = self.net(self.style[None])
                self.targets.update({k: gram(style[k]) for k in self.style_layers})
        return self.targets

    def loss(self, params, t):
        x = params["image"]  # [N, 3, S, S]
        target = self._targets()
        feats = self.net(x)
        f = feats[self.content_layer]
        content = (f.view(-1, *target["content"].shape) - target["content"]).square().flatten(2).mean(-1)
        style = sum((gram(feats[k]) - target[k]).square().flatten(1).mean(-1) for k in self.style_layers)
        tv = (x[..., 1:, :] - x[..., :-1, :]).square().flatten(1).mean(-1) + \
            (x[..., 1:] - x[..., :-1]).square().flatten(1).mean(-1)
        a, b, c = self.weights
        return a * content.reshape(-1) + b * style + c * tv

    def pictures(self, finals, path):
        from ..plots import plot_images

        rows = min(self.batch, 4)
        grid = [[self.content[i], self.style] + [p["image"][i].clamp(0, 1) for p in finals.values()]
                for i in range(rows)]
        plot_images(grid, ["content", "style", *finals], path)
        return True


class ArtFamily(TaskFamily):
    """Stylised `size` x `size` images. Problem: a random crop (of random scale) of a content photograph of the split,
    resized to `size`; theta_0 = 0.5 + N(0, init_std^2) per pixel. Style: the `style` image scaled by `style_scale`,
    its central `size` x `size` square (texture statistics at one scale, whatever the size). `features` picks the
    network's weights (random | hub | PATH), seed, pooling, normalisation, content layer and style layers."""

    def __init__(self, size: int = 64, style: str = "gravel", style_scale: float = 0.5, photos: str = "shipped",
                 content_weight: float = 1.0, style_weight: float = 1.0, tv_weight: float = 10.0,
                 init_std: float = 0.01, features: dict | None = None, **kw):
        super().__init__(**kw)
        self.size, self.style, self.style_scale, self.photos = int(size), style, float(style_scale), photos
        self.content_weight, self.style_weight, self.tv_weight = float(content_weight), float(style_weight), \
            float(tv_weight)
        self.init_std = float(init_std)
        f = {"weights": "random", "seed": 0, "pool": "avg", "normalize": True, "content_layer": "relu3_1",
             "style_layers": ["relu1_1", "relu2_1", "relu3_1"], **(features or {})}
        self.features = f
        self.content_layer, self.style_layers = f["content_layer"], list(f["style_layers"])
        self.net = None

    def specs(self):
        return (ParamSpec("image", (3, self.size, self.size), "image"),)

    def _load(self) -> None:
        """Read the photographs and the style image and build the network: once per family."""
        if self.net is not None:
            return
        files = photo_files(self.photos)
        self._photos = {split: [(name, self._check(path, read_image(path))) for name, path in found]
                        for split, found in files.items()}  # bytes: a float copy of a large folder is 4x the memory
        name, path = style_file(self.style)
        style = as_float(read_image(path))
        side = math.floor(min(style.shape[1:]) * self.style_scale)
        if side < self.size:
            raise L2LError(f"style image '{path}' is {style.shape[2]}x{style.shape[1]}: scaled by task.style_scale="
                           f"{self.style_scale} it is smaller than task.size={self.size}; raise task.style_scale, "
                           "lower task.size or use a larger style image")
        style = square(style, side)
        top = (side - self.size) // 2
        self.style_image = style[:, top : top + self.size, top : top + self.size].contiguous()
        train = self._photos["train"]
        picks = np.linspace(0, len(train) - 1, min(len(train), REFERENCE_PHOTOS)).round().astype(int)
        reference = torch.stack([square(as_float(train[i][1]), REFERENCE) for i in sorted(set(picks))])
        f = self.features
        self.net, net_info = feature_net([self.content_layer, *self.style_layers], f["weights"], f["seed"],
                                         f["pool"], f["normalize"], reference)
        weights = f"random weights, seed {f['seed']}" if f["weights"] == "random" else f"weights {net_info['weights']}"
        self._info = {"source": f"photographs ({self.photos}), style {name}, VGG-19 with {weights}",
                      **{f"{s}_images": len(v) for s, v in files.items()},
                      "photos": {s: [f"{n} ({where(n) if self.photos == 'shipped' else p})" for n, p in v]
                                 for s, v in files.items()},
                      "style": f"{name} ({where(name) if name == self.style else path})", "size": self.size,
                      "features": {**net_info, "content_layer": self.content_layer,
                                   "style_layers": self.style_layers,
                                   "normalized_on": f"{len(reference)} training photographs at {REFERENCE}px"}}
        self._nets = {str(torch.device("cpu")): self.net}

    def net_on(self, device) -> torch.nn.Module:
        """The frozen network on `device`: one copy per device, shared by every batch there."""
        key = str(torch.device(device))
        if key not in self._nets:
            self._nets[key] = copy.deepcopy(self.net).to(device)
        return self._nets[key]

    def _check(self, path, image: torch.Tensor) -> torch.Tensor:
        if min(image.shape[1:]) < self.size:
            raise L2LError(f"photograph '{path}' is {image.shape[2]}x{image.shape[1]}, too small for {self.size}x"
                           f"{self.size} crops: remove it or lower task.size")
        return image

    def crop(self, image: torch.Tensor, rng) -> torch.Tensor:
        """A square crop whose side is log-uniform between `size` and the image's short side, resized to `size`."""
        _, h, w = image.shape
        side = int(round(math.exp(rng.uniform(math.log(self.size), math.log(min(h, w))))))
        top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        return resize(as_float(image[:, top : top + side, left : left + side]), self.size)

    def draw(self, split, n, rng, key):
        self._load()
        photos = self._photos[split]
        content = torch.stack([self.crop(photos[int(rng.integers(len(photos)))][1], rng) for _ in range(n)])
        init = 0.5 + randn(rng, n, 3, self.size, self.size, std=self.init_std)
        return ArtBatch(self, content, init)

    def describe(self):
        self._load()
        return dict(self._info)
