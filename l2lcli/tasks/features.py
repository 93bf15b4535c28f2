"""The art task's frozen feature network: VGG-19's convolutional part, laid out as torchvision's `vgg19().features`
(so its published weights file loads as it is), with fixed random weights from a seed where no weights file exists.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import L2LError

# VGG-19's configuration "E": channels per conv layer, M a 2x2 pooling
LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M")
WEIGHTS_FILE = "vgg19-dcbb9e9d.pth"  # torchvision's name in torch hub's cache
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # the ImageNet statistics VGG's inputs are scaled by


def layer_names() -> list[str]:
    """torchvision's module indices as names: conv1_1, relu1_1, ..., pool1, conv2_1, ... (index = position)."""
    names, block, i = [], 1, 1
    for v in LAYOUT:
        if v == "M":
            names.append(f"pool{block}")
            block, i = block + 1, 1
        else:
            names += [f"conv{block}_{i}", f"relu{block}_{i}"]
            i += 1
    return names


NAMES = layer_names()


def full_shapes() -> dict[str, tuple[int, ...]]:
    """Every conv layer's weight and bias shape in torchvision's `vgg19().features`, by its state-dict key."""
    shapes, c = {}, 3
    convs = [i for i, n in enumerate(NAMES) if n.startswith("conv")]
    for i, out in zip(convs, [v for v in LAYOUT if v != "M"], strict=True):
        shapes.update({f"{i}.weight": (out, c, 3, 3), f"{i}.bias": (out,)})
        c = out
    return shapes
RELUS = tuple(n for n in NAMES if n.startswith("relu"))


class VGGFeatures(nn.Module):
    """VGG-19's layers up to the deepest one asked for, returning the activations of `layers` ({name: [N, C, h, w]}).

    Inputs are images in [0, 1]; pooling is `max` (VGG's) or `avg` (Gatys et al.: smoother gradients for images).
    """

    def __init__(self, layers: list[str], pool: str = "avg"):
        super().__init__()
        self.wanted = tuple(dict.fromkeys(layers))
        depth = max(NAMES.index(n) for n in self.wanted) + 1
        modules, c = [], 3
        for v in LAYOUT:
            if v == "M":
                modules.append(nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2))
            else:
                modules += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU()]
                c = v
        modules = modules[:depth]
        self.layers = nn.Sequential(*modules)  # named 0, 1, 2, ...: torchvision's `features.N` without the prefix
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1))
        self.requires_grad_(False)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        h, out = (images - self.mean) / self.std, {}
        for name, module in zip(NAMES, self.layers, strict=False):
            h = module(h)
            if name in self.wanted:
                out[name] = h
        return out

    def convs(self) -> list[nn.Conv2d]:
        return [m for m in self.layers if isinstance(m, nn.Conv2d)]

    def randomize(self, seed: int) -> None:
        """He-normal weights and zero biases from `seed` (He, Wang and Hopcroft 2016: random VGG features)."""
        g = torch.Generator().manual_seed(seed)
        for conv in self.convs():
            fan_in = conv.weight[0].numel()
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
            conv.bias.zero_()

    def load(self, path: Path) -> str:
        """Weights from a torchvision VGG-19 file (`features.N.weight/bias`), read with weights_only; its sha256."""
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises many kinds on a truncated or foreign file
            raise L2LError(f"cannot read VGG-19 weights '{path}' ({type(e).__name__}): it must be torchvision's "
                           f"{WEIGHTS_FILE}, whole") from None
        if not isinstance(state, dict):
            raise L2LError(f"VGG-19 weights '{path}' hold no state dict: it must be torchvision's {WEIGHTS_FILE}")
        for key, shape in full_shapes().items():  # the whole network's, so that another net's file (VGG-16) fails
            found = state.get(f"features.{key}")
            if not torch.is_tensor(found) or tuple(found.shape) != shape:
                got = "missing" if found is None else f"shape {tuple(getattr(found, 'shape', ()))}"
                raise L2LError(f"VGG-19 weights '{path}': features.{key} is {got}, not {shape}: it must be "
                               f"torchvision's vgg19 weights ({WEIGHTS_FILE})")
        self.layers.load_state_dict({k: state[f"features.{k}"] for k in self.layers.state_dict()})
        return hashlib.sha256(path.read_bytes()).hexdigest()

    @torch.no_grad()
    def normalize(self, images: torch.Tensor) -> None:
        """Scale each layer so that its mean activation over `images`, filters and positions is 1: every layer's
        features, and so every term of the loss, on one scale. ReLU and pooling are positively homogeneous, so scaling
        a layer's weights and biases scales its output alone. Per layer, not per filter as Gatys et al. normalised
        the trained VGG: a random filter that photographs barely excite would be scaled up until it rules the loss."""
        h = (images - self.mean) / self.std
        for module in self.layers:
            h = module(h)
            if isinstance(module, nn.Conv2d):
                mean = F.relu(h).mean()
                scale = 1.0 / mean if mean > 0 else 1.0
                module.weight.mul_(scale)
                module.bias.mul_(scale)
                h = h * scale


def weights_path(weights: str) -> Path:
    """The weights file that `task.features.weights` names: `hub` (torch hub's cache) or a path."""
    if weights == "hub":
        path = Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE
        if not path.is_file():
            raise L2LError(f"task.features.weights=hub: {path} does not exist, and this machine cannot download it: "
                           f"copy torchvision's {WEIGHTS_FILE} there, pass task.features.weights=PATH, or use "
                           "task.features.weights=random")
        return path
    path = Path(weights).expanduser()
    if not path.is_file():
        raise L2LError(f"task.features.weights='{weights}' is not a file: pass torchvision's {WEIGHTS_FILE}, "
                       "task.features.weights=hub (torch hub's cache) or task.features.weights=random")
    return path


def feature_net(layers: list[str], weights: str = "random", seed: int = 0, pool: str = "avg",
                normalize: bool = True, reference: torch.Tensor | None = None) -> tuple[VGGFeatures, dict]:
    """The frozen network and the record of what it is (for every run's summary)."""
    net = VGGFeatures(layers, pool)
    if weights == "random":
        net.randomize(seed)
        info = {"weights": f"random (He-normal, seed {seed}); not the paper's ImageNet-trained VGG-19"}
    else:
        path = weights_path(weights)
        info = {"weights": str(path), "weights_sha256": net.load(path)}
    if normalize and reference is not None:
        net.normalize(reference)
    info.update({"network": "VGG-19 (torchvision layout)", "depth": NAMES[len(net.layers) - 1], "pool": pool,
                 "normalized": bool(normalize and reference is not None)})
    return net.eval(), info
