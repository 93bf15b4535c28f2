"""The art task (section 3.4): the feature network and its weights files, the photographs, the loss, the commands."""

import hashlib
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from l2lcli.commands import evaluate, generalize, sweep, train
from l2lcli.commands.common import compose_for
from l2lcli.config import build, compose
from l2lcli.data.photos import PHOTOS, STYLES, photo_files, shipped
from l2lcli.errors import L2LError
from l2lcli.tasks.art import ArtFamily, gram
from l2lcli.tasks.features import NAMES, WEIGHTS_FILE, VGGFeatures, feature_net
from tests.test_cli import l2l, one_line_error

SMALL = ["task=art", "recipe=smoke", "task.size=16", "eval.problems=2", "train.validation_problems=2"]


def small_family(**kw):
    features = {"content_layer": "relu2_1", "style_layers": ["relu1_1", "relu2_1"], **kw.pop("features", {})}
    return ArtFamily(name="art", steps=4, size=16, features=features, **kw)


def torchvision_file(path: Path, seed: int = 0, drop: str | None = None, bad_shape: str | None = None) -> Path:
    """A VGG-19 weights file in torchvision's format: every `features.N` conv and the classifier, random values."""
    g = torch.Generator().manual_seed(seed)
    full = VGGFeatures(["relu5_4"])
    state = {f"features.{k}": torch.randn(v.shape, generator=g) for k, v in full.layers.state_dict().items()}
    state.update({"classifier.0.weight": torch.randn(8, 8, generator=g), "classifier.0.bias": torch.zeros(8)})
    if drop:
        del state[drop]
    if bad_shape:
        state[bad_shape] = torch.zeros(3)
    torch.save(state, path)
    return path


def test_layer_names_are_torchvisions_indices():
    convs = [i for i, n in enumerate(NAMES) if n.startswith("conv")]
    assert convs == [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]
    assert [i for i, n in enumerate(NAMES) if n.startswith("pool")] == [4, 9, 18, 27, 36]
    assert NAMES[11] == "relu3_1" and NAMES[22] == "relu4_2"
    net = VGGFeatures(["relu2_1"])
    assert len(net.layers) == NAMES.index("relu2_1") + 1  # built only as deep as the deepest layer used
    assert list(net.layers.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias", "5.weight", "5.bias"]


def test_a_torchvision_weights_file_loads_as_it_is(tmp_path):
    path = torchvision_file(tmp_path / WEIGHTS_FILE)
    net, info = feature_net(["relu3_1"], str(path), normalize=False)
    saved = torch.load(path, weights_only=True)
    for key, value in net.layers.state_dict().items():
        assert torch.equal(value, saved[f"features.{key}"])
    assert info["weights_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    # from torch hub's cache directory, where a user already has it
    hub = tmp_path / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    torchvision_file(hub / WEIGHTS_FILE)
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    try:
        net2, info2 = feature_net(["relu3_1"], "hub", normalize=False)
    finally:
        torch.hub.set_dir(old)
    assert info2["weights"] == str(hub / WEIGHTS_FILE)
    assert torch.equal(net2.layers[0].weight, net.layers[0].weight)


@pytest.mark.parametrize("damage, fragment", [
    ("truncated", "cannot read VGG-19 weights"),
    ("missing", "features.10.weight is missing"),
    ("shape", "features.0.bias is shape (3,), not (64,)"),
    ("not a dict", "hold no state dict"),
])
def test_a_wrong_or_truncated_weights_file_is_one_line(tmp_path, damage, fragment):
    path = tmp_path / WEIGHTS_FILE
    if damage == "truncated":
        torchvision_file(path)
        path.write_bytes(path.read_bytes()[:5000])
    elif damage == "missing":
        torchvision_file(path, drop="features.10.weight")
    elif damage == "shape":
        torchvision_file(path, bad_shape="features.0.bias")
    else:
        torch.save(torch.zeros(3), path)
    with pytest.raises(L2LError, match=re.escape(fragment)):
        feature_net(["relu3_1"], str(path))
    one_line_error(l2l("sweep-baselines", *SMALL, f"task.features.weights={path}", out=tmp_path), fragment)


def test_missing_weights_name_the_ways_out(tmp_path):
    one_line_error(l2l("sweep-baselines", *SMALL, f"task.features.weights={tmp_path / 'none.pth'}", out=tmp_path),
                   "task.features.weights=random")
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "empty"))
    try:
        with pytest.raises(L2LError, match="cannot download it"):
            feature_net(["relu1_1"], "hub")
    finally:
        torch.hub.set_dir(old)


def test_random_weights_are_fixed_by_their_seed_and_normalised_per_layer():
    images = torch.rand(3, 3, 32, 32)
    a, info = feature_net(["relu2_1"], "random", seed=1, reference=images)
    b, _ = feature_net(["relu2_1"], "random", seed=1, reference=images)
    c, _ = feature_net(["relu2_1"], "random", seed=2, reference=images)
    assert torch.equal(a.layers[5].weight, b.layers[5].weight)
    assert not torch.equal(a.layers[5].weight, c.layers[5].weight)
    assert "not the paper's" in info["weights"] and info["normalized"]
    h = (images - a.mean) / a.std
    for module in a.layers:
        h = module(h)
        if isinstance(module, torch.nn.ReLU):
            assert h.mean().item() == pytest.approx(1.0, rel=1e-4)  # every layer's mean activation is 1


def test_shipped_photographs_split_by_photograph():
    files = photo_files("shipped")
    names = [n for split in PHOTOS for n, _ in files[split]]
    assert len(names) == len(set(names))  # no photograph in two splits
    assert all(p.is_file() for split in files.values() for _, p in split)
    assert all(shipped(s).is_file() for s in STYLES)


def write_photos(root: Path, colours: dict, size: int = 40) -> Path:
    """A photos folder: split -> one solid-colour PNG per colour."""
    for split, cs in colours.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        for i, c in enumerate(cs):
            Image.fromarray(np.full((size, size + 7, 3), c, dtype=np.uint8)).save(root / split / f"p{i}.png")
    return root


def test_a_users_photo_folder_gives_each_split_its_own_photographs(tmp_path):
    root = write_photos(tmp_path / "photos", {"train": [(255, 0, 0)], "validation": [(0, 255, 0)],
                                              "test": [(0, 0, 255), (0, 0, 128)]})
    fam = small_family(photos=str(root))
    test = fam.sample("test", 6, seed=0)
    assert torch.all(test.content[:, :2] == 0) and torch.all(test.content[:, 2] > 0.4)  # only the test photos
    assert fam.sample("train", 2, seed=0).content[:, 0].min() > 0.99
    again = small_family(photos=str(root)).sample("test", 6, seed=0)
    assert torch.equal(test.content, again.content) and torch.equal(test.init_params()["image"],
                                                                    again.init_params()["image"])
    assert fam.describe()["test_images"] == 2


def test_image_errors_are_one_line(tmp_path):
    small = write_photos(tmp_path / "small", {"train": [(9, 9, 9)], "validation": [(9, 9, 9)],
                                              "test": [(9, 9, 9)]}, size=10)
    one_line_error(l2l("sweep-baselines", *SMALL, f"task.photos={small}", out=tmp_path), "too small for 16x16 crops")
    one_line_error(l2l("sweep-baselines", *SMALL, f"task.photos={tmp_path / 'nowhere'}", out=tmp_path),
                   "needs train/, validation/ and test/")
    one_line_error(l2l("sweep-baselines", *SMALL, f"task.style={tmp_path / 'none.png'}", out=tmp_path),
                   "image not found")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    one_line_error(l2l("sweep-baselines", *SMALL, f"task.style={bad}", out=tmp_path), "cannot read image")
    one_line_error(l2l("sweep-baselines", *SMALL, "task.style_scale=0.01", out=tmp_path),
                   "smaller than task.size=16")


def test_the_loss_is_content_plus_style_plus_smoothness_for_every_replica():
    fam = small_family(content_weight=1.0, style_weight=0.0, tv_weight=0.0)
    batch = fam.sample("validation", 3, seed=0)
    assert torch.allclose(batch.loss({"image": batch.content}, 0), torch.zeros(3), atol=1e-6)
    fam = small_family(content_weight=0.0, style_weight=1.0, tv_weight=0.0)
    batch = fam.sample("validation", 2, seed=0)
    assert torch.allclose(batch.loss({"image": fam.style_image.expand(2, -1, -1, -1)}, 0), torch.zeros(2),
                          atol=1e-5)
    fam = small_family(content_weight=0.0, style_weight=0.0, tv_weight=1.0)
    batch = fam.sample("validation", 2, seed=0)
    ramp = torch.arange(16.0).view(1, 1, 1, 16).expand(2, 3, 16, 16)  # neighbours differ by 1 along the width
    assert torch.allclose(batch.loss({"image": ramp}, 0), torch.full((2,), 1.0))
    # two replicas of a batch (a sweep's learning rates) see the same problems
    fam = small_family()
    batch = fam.sample("test", 2, seed=0)
    x = torch.rand(4, 3, 16, 16)
    together = batch.loss({"image": x}, 0)
    alone = torch.cat([batch.loss({"image": x[:2]}, 0), batch.loss({"image": x[2:]}, 0)])
    assert torch.allclose(together, alone, rtol=1e-5)
    f = torch.rand(2, 5, 3, 4)
    assert torch.allclose(gram(f)[1], f[1].reshape(5, -1) @ f[1].reshape(5, -1).T / 12)


@pytest.mark.slow  # kept out of the default suite's 5 minutes; `make test-all` runs it
def test_meta_train_evaluate_sweep_and_figure8_on_art(make_cfg, tmp_path):
    cfg = make_cfg(*SMALL, tiny=False)
    trained = train.run(cfg)
    swept = sweep.run(make_cfg(*SMALL, tiny=False))
    ev = evaluate.run(make_cfg(*SMALL, f"eval.checkpoint={trained['run_dir']}",
                               f"eval.baselines={swept['run_dir']}", tiny=False))
    out = Path(ev["run_dir"])
    assert (out / "images.png").stat().st_size > 1000
    assert set(pd.read_csv(out / "summary.csv")["optimizer"]) == {"lstm", "sgd", "rmsprop", "adam", "nag"}
    assert "random weights" in ev["data"]["source"]
    fig = generalize.run(make_cfg(*SMALL, f"eval.checkpoint={trained['run_dir']}", "generalize.figure=figure8",
                                  "generalize.figure8=[{size: 16}, {size: 32}, {style: brick}]",
                                  "sweep.optimizers=[adam]", tiny=False))
    table = pd.read_csv(Path(fig["run_dir"]) / "generalize.csv")
    assert list(table["variant"]) == ["size=16", "size=32", "style=brick"]
    assert (table["ratio"] > 0).all() and (Path(fig["run_dir"]) / "figure8.png").is_file()
    assert (table["ratio_low"] <= table["ratio"]).all() and (table["ratio"] <= table["ratio_high"]).all()


def test_the_default_is_the_papers_protocol():
    cfg = compose(["task=art"])
    assert build(cfg.task).specs()[0].shape == (3, 64, 64)
    assert (cfg.task.steps, cfg.train.unroll, cfg.task.preprocess, cfg.task.output_scale, cfg.task.groups) == \
        (128, 32, "log_sign", 1.0, None)
    assert [dict(v) for v in cfg.generalize.figure8] == [{"size": 64}, {"size": 128}, {"style": "brick"}]


@pytest.mark.slow  # moved out of the default suite to keep it under 5 minutes (`make test-slow`)
def test_a_checkpoint_trained_with_an_odd_style_path_evaluates(make_cfg, tmp_path):
    """Saved task keys come back as Hydra overrides: a path with a space, an accent, a tilde and a quote too."""
    style = tmp_path / "my style é~'s.png"
    Image.fromarray(np.full((40, 40, 3), 128, dtype=np.uint8)).save(style)
    trained = train.run(make_cfg(*SMALL, f'task.style="{style}"', "task.style_scale=1.0", tiny=False))
    ev = evaluate.run(compose_for([f"out_dir={tmp_path}", "eval.problems=2"], checkpoint=trained["run_dir"]))
    assert ev["data"]["style"].startswith(style.stem)


@pytest.mark.slow  # kept out of the default suite's 5 minutes; `make test-all` runs it
def test_a_style_folder_and_a_variant_too_big_for_the_style_are_refused_before_work(tmp_path):
    one_line_error(l2l("sweep-baselines", *SMALL, f"task.style={tmp_path}", out=tmp_path), "is a folder")
    style = tmp_path / "small.png"
    Image.fromarray(np.full((40, 40, 3), 128, dtype=np.uint8)).save(style)
    run = l2l("meta-train", *SMALL, f"task.style={style}", "task.style_scale=1.0", out=tmp_path)
    assert run.exit_code == 0, run.output
    ckpt = next((tmp_path / "meta-train" / "art").iterdir())
    one_line_error(l2l("generalize", "--checkpoint", str(ckpt), "generalize.figure=figure8",
                       "generalize.figure8=[{size: 16}, {size: 64}]", out=tmp_path), "smaller than task.size=64")
    assert not (tmp_path / "generalize").exists()  # refused before a run folder, not after the first variant


def test_batches_on_two_devices_keep_their_own_network():
    fam = small_family()
    a = fam.sample("test", 2, seed=0)
    b = fam.sample("test", 2, seed=0, device="meta")  # a second device: this batch gets its own copy
    assert a.net is fam.net and b.net is not fam.net and next(b.net.parameters()).device.type == "meta"
    assert next(fam.net.parameters()).device.type == "cpu"
    a.loss(a.init_params(), 0)  # the first batch still runs where it is
