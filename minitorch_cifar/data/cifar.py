"""CIFAR-10 from any of its common on-disk forms, cached as one .npz after the first decode.

Formats ``load_cifar10(root)`` recognises (root a folder holding one of them, or an archive itself):

* the official python version: ``cifar-10-batches-py/`` or ``cifar-10-python.tar.gz``
  (pickled dicts with b'data' (10000, 3072) uint8 and b'labels');
* the official binary version: ``cifar-10-batches-bin/`` or ``cifar-10-binary.tar.gz``
  (records of 1 label byte + 3072 pixel bytes, channel-major);
* an image folder ``train/<class>/*.png|jpg`` and ``test/<class>/*.png|jpg``, as a folder or a
  ``.tar.gz`` of one (possibly inside one top-level folder).
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
import tempfile
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
MD5 = "c58f30108f718f92721af3b95e74349a"
PY_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
PY_TEST = ["test_batch"]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
CACHE_VERSION = 1


class DataError(ValueError):
    """A data problem, with the file and what is wrong with it."""


@dataclass
class Split:
    images: np.ndarray  # (N, 3, 32, 32) uint8
    labels: np.ndarray  # (N,) int64

    def __len__(self):
        return len(self.labels)


@dataclass
class CIFAR10:
    train: Split
    test: Split
    classes: tuple = CLASSES
    source: str = ""


def default_root() -> Path:
    return Path(os.environ.get("MINITORCH_CIFAR_DATA", Path.home() / ".cache" / "minitorch_cifar"))


def formats_help() -> str:
    return ("--data takes a folder or archive holding CIFAR-10 as: cifar-10-batches-py/ or cifar-10-python.tar.gz "
            "(official python version), cifar-10-batches-bin/ or cifar-10-binary.tar.gz (official binary version), "
            "or an image folder train/<class>/*.png|jpg + test/<class>/*.png|jpg (or a .tar.gz of one)")


# ----------------------------------------------------------------------------- validation
def _check(images, labels, where):
    if images.ndim != 4 or images.shape[1:] != (3, 32, 32):
        raise DataError(f"{where}: images have shape {images.shape}, expected (N, 3, 32, 32)")
    if len(labels) != len(images):
        raise DataError(f"{where}: {len(images)} images but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{where}: labels must be in 0-9, found values in [{labels.min()}, {labels.max()}]")
    return Split(np.ascontiguousarray(images, dtype=np.uint8), labels.astype(np.int64))


def _concat(parts, where):
    return _check(np.concatenate([p.images for p in parts]), np.concatenate([p.labels for p in parts]), where)


# ----------------------------------------------------------------------------- official python version
def _read_python_batch(data: bytes, where: str) -> Split:
    try:
        d = pickle.loads(data, encoding="bytes")
    except Exception as e:
        raise DataError(f"{where}: not a readable CIFAR-10 python batch (truncated or corrupted?): {e}") from None
    if not isinstance(d, dict) or b"data" not in d or b"labels" not in d:
        raise DataError(f"{where}: expected a pickled dict with b'data' and b'labels', got keys {list(d)[:5] if isinstance(d, dict) else type(d).__name__}")
    data = np.asarray(d[b"data"])
    if data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{where}: b'data' has shape {data.shape}, expected (N, 3072)")
    return _check(data.reshape(-1, 3, 32, 32), np.asarray(d[b"labels"]), where)


def _read_batch_folder(folder: Path, train_names, test_names, parse, version) -> CIFAR10:
    """The official layouts: named batch files in one folder, each parsed by ``parse(bytes, where)``."""
    def read(names):
        parts = []
        for name in names:
            f = folder / name
            if not f.is_file():
                raise DataError(f"{f}: missing (the official {version} version has {', '.join(train_names + test_names)})")
            parts.append(parse(f.read_bytes(), str(f)))
        return _concat(parts, str(folder))
    return CIFAR10(read(train_names), read(test_names), source=str(folder))


def _read_python_folder(folder: Path) -> CIFAR10:
    return _read_batch_folder(folder, PY_TRAIN, PY_TEST, _read_python_batch, "python")


# ----------------------------------------------------------------------------- official binary version
def _read_binary_batch(data: bytes, where: str) -> Split:
    if len(data) == 0 or len(data) % 3073:
        raise DataError(f"{where}: {len(data)} bytes is not a whole number of 3073-byte records (truncated?)")
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, 3073)
    return _check(records[:, 1:].reshape(-1, 3, 32, 32), records[:, 0].astype(np.int64), where)


BIN_TRAIN = [f"data_batch_{i}.bin" for i in range(1, 6)]
BIN_TEST = ["test_batch.bin"]


def _read_binary_folder(folder: Path) -> CIFAR10:
    return _read_batch_folder(folder, BIN_TRAIN, BIN_TEST, _read_binary_batch, "binary")


# ----------------------------------------------------------------------------- image folders
def _decode(data: bytes, where: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(io.BytesIO(data)) as im:
            im = im.convert("RGB")
            if im.size != (32, 32):
                raise DataError(f"{where}: image is {im.size[0]}x{im.size[1]}, expected 32x32")
            return np.asarray(im).transpose(2, 0, 1)
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{where}: not a readable image ({e})") from None


def _image_split(entries, where) -> Split:
    """entries: list of (class name, file name, bytes-or-loader); decodes with two threads."""
    unknown = sorted({c for c, _, _ in entries} - set(CLASSES))
    if unknown:
        raise DataError(f"{where}: unknown class folder(s) {unknown}; expected exactly {list(CLASSES)}")
    missing = [c for c in CLASSES if c not in {c for c, _, _ in entries}]
    if missing:
        raise DataError(f"{where}: class folder(s) missing or empty: {missing}")
    entries = sorted(entries, key=lambda e: (CLASSES.index(e[0]), e[1]))
    with ThreadPoolExecutor(2) as pool:
        images = list(pool.map(lambda e: _decode(e[2]() if callable(e[2]) else e[2], f"{where}/{e[0]}/{e[1]}"), entries))
    labels = np.array([CLASSES.index(c) for c, _, _ in entries], dtype=np.int64)
    return _check(np.stack(images), labels, where)


def _read_image_folder(folder: Path) -> CIFAR10:
    splits = []
    for split in ("train", "test"):
        d = folder / split
        if not d.is_dir():
            raise DataError(f"{d}: missing (an image folder needs train/<class>/ and test/<class>/)")
        entries = [(f.parent.name, f.name, f.read_bytes) for f in d.glob("*/*") if f.suffix.lower() in IMAGE_SUFFIXES]
        stray = [f for f in d.iterdir() if f.is_dir() and f.name not in CLASSES]
        if stray:
            raise DataError(f"{d}: unknown class folder(s) {sorted(s.name for s in stray)}; expected exactly {list(CLASSES)}")
        splits.append(_image_split(entries, str(d)))
    return CIFAR10(*splits, source=str(folder))


# ----------------------------------------------------------------------------- archives
def _read_archive(path: Path) -> CIFAR10:
    try:
        with tarfile.open(path, "r:*") as tar:
            files = {}
            for m in tar:
                if m.isfile():
                    files[m.name] = tar.extractfile(m).read()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable .tar.gz archive (truncated or corrupted?): {e}") from None
    names = {n.split("/")[-1]: n for n in files}
    official = (("cifar-10-batches-py/", PY_TRAIN, PY_TEST, _read_python_batch),
                ("cifar-10-batches-bin/", BIN_TRAIN, BIN_TEST, _read_binary_batch))
    for folder, train_names, test_names, parse in official:
        if any(("/" + n).find("/" + folder) >= 0 for n in files):
            def read(batches):
                missing = [b for b in batches if b not in names]
                if missing:
                    raise DataError(f"{path}: archive lacks {missing}")
                return _concat([parse(files[names[b]], f"{path}:{names[b]}") for b in batches], str(path))
            return CIFAR10(read(train_names), read(test_names), source=str(path))
    splits = {"train": [], "test": []}
    for name, data in files.items():
        parts = name.split("/")
        if len(parts) >= 3 and parts[-3] in splits and Path(name).suffix.lower() in IMAGE_SUFFIXES:
            splits[parts[-3]].append((parts[-2], parts[-1], data))
    if not splits["train"] or not splits["test"]:
        raise DataError(f"{path}: holds no CIFAR-10 layout (no cifar-10-batches-py/, cifar-10-batches-bin/ or train/<class>/ + test/<class>/ images)")
    return CIFAR10(_image_split(splits["train"], f"{path}:train"), _image_split(splits["test"], f"{path}:test"), source=str(path))


# ----------------------------------------------------------------------------- finding and caching
def _find(root: Path):
    """(reader, path) for the first layout found at root."""
    if root.is_file():
        return _read_archive, root
    if not root.is_dir():
        raise DataError(f"{root}: no such file or folder. {formats_help()}")
    for name, reader in (("cifar-10-batches-py", _read_python_folder), ("cifar-10-python.tar.gz", _read_archive),
                         ("cifar-10-batches-bin", _read_binary_folder), ("cifar-10-binary.tar.gz", _read_archive)):
        if (root / name).exists():
            return reader, root / name
    if (root / "train").is_dir() or (root / "test").is_dir():
        return _read_image_folder, root
    subfolders = [d for d in root.iterdir() if d.is_dir() and (d / "train").is_dir()]
    if subfolders:
        return _read_image_folder, subfolders[0]
    archives = sorted(root.glob("*.tar.gz")) + sorted(root.glob("*.tgz"))
    if archives:
        return _read_archive, archives[0]
    raise DataError(f"{root}: no CIFAR-10 found. {formats_help()}")


def _fingerprint(path: Path) -> str:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    h = hashlib.sha256(f"v{CACHE_VERSION}:{path.resolve()}".encode())
    for f in files:
        st = f.stat()
        h.update(f"{f}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def atomic_save_npz(path: Path, **arrays):
    """Write to a temporary file in the same folder, then rename: a crash never leaves a half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load_cifar10(root=None, download=False, cache_dir=None, url=None, md5=MD5) -> CIFAR10:
    """Load CIFAR-10 from ``root`` (default: ``default_root()``); see the module docstring for formats.

    ``url`` (default: $MINITORCH_CIFAR_URL, else the official address) is where ``download`` fetches from."""
    root = Path(root) if root is not None else default_root()
    url = url or os.environ.get("MINITORCH_CIFAR_URL", URL)
    if download and not _has_cifar(root):
        download_cifar10(root, url=url, md5=md5)
    reader, path = _find(root)
    cache_dir = Path(cache_dir) if cache_dir else default_root() / "decoded"
    cache = cache_dir / f"cifar10-{_fingerprint(path)}.npz"
    if cache.is_file():
        try:
            with np.load(cache) as z:
                return CIFAR10(Split(z["train_images"], z["train_labels"]), Split(z["test_images"], z["test_labels"]), source=str(path))
        except Exception:
            pass  # an unreadable cache is rebuilt below
    data = reader(path)
    atomic_save_npz(cache, train_images=data.train.images, train_labels=data.train.labels,
                    test_images=data.test.images, test_labels=data.test.labels)
    return data


def _has_cifar(root: Path) -> bool:
    try:
        _find(root)
        return True
    except DataError:
        return False


def download_cifar10(root, url=URL, md5=MD5, timeout=30) -> Path:  # noqa: D401
    """Fetch the official python archive into root, verify its MD5, and only then give it its name."""
    from tqdm import tqdm
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    target = root / "cifar-10-python.tar.gz"
    fd, tmp = tempfile.mkstemp(dir=root, prefix=".cifar-10-python.", suffix=".part")
    digest = hashlib.md5()
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                response = urllib.request.urlopen(url, timeout=timeout)
            except (urllib.error.URLError, OSError) as e:
                raise DataError(
                    f"cannot download CIFAR-10 from {url} ({getattr(e, 'reason', e)}). Offline? Copy "
                    f"cifar-10-python.tar.gz (or any format below) into {root} yourself and pass --data. {formats_help()}"
                ) from None
            with response, tqdm(total=int(response.headers.get("Content-Length") or 0) or None, unit="B",
                                unit_scale=True, desc="CIFAR-10", disable=None) as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        if digest.hexdigest() != md5:
            raise DataError(f"download from {url} has MD5 {digest.hexdigest()}, expected {md5}: corrupted, not kept")
        os.replace(tmp, target)
        return target
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


# ----------------------------------------------------------------------------- splits and statistics
def train_val_split(split: Split, val_size=5000, seed=0):
    """A stratified split: each class gives val_size/10 of its images (rounded) to validation."""
    if not 0 <= val_size < len(split):
        raise DataError(f"validation size must be in [0, {len(split) - 1}], got {val_size}")
    rng = np.random.default_rng(seed)
    classes = np.unique(split.labels)
    per_class = np.bincount(split.labels)
    quotas = np.floor(val_size * per_class[classes] / len(split)).astype(int)
    quotas[: val_size - quotas.sum()] += 1  # hand out the rounding remainder
    val_idx = np.concatenate([rng.permutation(np.flatnonzero(split.labels == c))[:q] for c, q in zip(classes, quotas)] + [np.zeros(0, int)])
    mask = np.zeros(len(split), bool)
    mask[val_idx] = True
    return Split(split.images[~mask], split.labels[~mask]), Split(split.images[mask], split.labels[mask])


def random_subset(split: Split, n: int, seed=0) -> Split:
    """n images drawn at random (seeded), in their stored order. Never the first n: an image folder is
    stored class by class, so its first 10,000 images hold two classes."""
    keep = np.sort(np.random.default_rng([seed, 1]).permutation(len(split))[:n])
    return Split(split.images[keep], split.labels[keep])


def channel_stats(images: np.ndarray):
    """Per-channel mean and std of uint8 images scaled to [0, 1], accumulated in float64."""
    x = images.astype(np.float64) / 255
    return x.mean(axis=(0, 2, 3)), x.std(axis=(0, 2, 3))
