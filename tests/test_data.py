"""CIFAR-10 formats written by the tests in the official layouts, bad inputs, download, splits, augmentation, loader."""
import hashlib
import http.server
import pickle
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import minitorch_cifar as mc
from minitorch_cifar.data import CLASSES, DataError, load_cifar10
from minitorch_cifar.data import cifar

# ../shared/data beside the checkout (or beside the working folder), where this workplace keeps the JPEG copy
SHARED = next((p for p in (Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpg.tar.gz",
                           Path.cwd().parent / "shared" / "data" / "cifar10-jpg.tar.gz") if p.exists()),
              Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpg.tar.gz")


def tiny(n_per_batch=4, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (6, n_per_batch, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 10, (6, n_per_batch))
    return images, labels  # batches 0-4 train, 5 test


def write_python(folder: Path, images, labels):
    folder.mkdir(parents=True)
    for name, im, lab in zip(cifar.PY_TRAIN + cifar.PY_TEST, images, labels):
        d = {b"batch_label": name.encode(), b"labels": lab.tolist(), b"data": im.reshape(len(im), -1), b"filenames": []}
        (folder / name).write_bytes(pickle.dumps(d))


def write_binary(folder: Path, images, labels):
    folder.mkdir(parents=True)
    for name, im, lab in zip(cifar.BIN_TRAIN + cifar.BIN_TEST, images, labels):
        rec = np.concatenate([lab.astype(np.uint8)[:, None], im.reshape(len(im), -1)], axis=1)
        (folder / name).write_bytes(rec.tobytes())


def write_png_folder(root: Path, images, labels):
    for split, ims, labs in (("train", images[:5].reshape(-1, 3, 32, 32), labels[:5].reshape(-1)), ("test", images[5], labels[5])):
        for c in CLASSES:
            (root / split / c).mkdir(parents=True, exist_ok=True)
        for i, (im, lab) in enumerate(zip(ims, labs)):
            Image.fromarray(im.transpose(1, 2, 0)).save(root / split / CLASSES[lab] / f"{i:04d}.png")


def tar_folder(src: Path, archive: Path, arcname: str):
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname=arcname)


def expected(images, labels):
    return images[:5].reshape(-1, 3, 32, 32), labels[:5].reshape(-1), images[5], labels[5]


def assert_loaded(data, images, labels, sort_by_class=False):
    tri, trl, tei, tel = expected(images, labels)
    if sort_by_class:  # an image folder is read class by class, file by file
        o1, o2 = np.argsort(trl, kind="stable"), np.argsort(tel, kind="stable")
        tri, trl, tei, tel = tri[o1], trl[o1], tei[o2], tel[o2]
    np.testing.assert_array_equal(data.train.images, tri)
    np.testing.assert_array_equal(data.train.labels, trl)
    np.testing.assert_array_equal(data.test.images, tei)
    np.testing.assert_array_equal(data.test.labels, tel)
    assert data.train.images.dtype == np.uint8 and data.train.labels.dtype == np.int64
    assert data.classes == CLASSES


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"


def test_python_folder_and_archive(tmp_path, cache):
    images, labels = tiny()
    write_python(tmp_path / "a" / "cifar-10-batches-py", images, labels)
    assert_loaded(load_cifar10(tmp_path / "a", cache_dir=cache), images, labels)
    tar_folder(tmp_path / "a" / "cifar-10-batches-py", tmp_path / "cifar-10-python.tar.gz", "cifar-10-batches-py")
    assert_loaded(load_cifar10(tmp_path / "cifar-10-python.tar.gz", cache_dir=cache), images, labels)


def test_binary_folder_and_archive(tmp_path, cache):
    images, labels = tiny(seed=1)
    write_binary(tmp_path / "b" / "cifar-10-batches-bin", images, labels)
    assert_loaded(load_cifar10(tmp_path / "b", cache_dir=cache), images, labels)
    (tmp_path / "b2").mkdir()
    tar_folder(tmp_path / "b" / "cifar-10-batches-bin", tmp_path / "b2" / "cifar-10-binary.tar.gz", "cifar-10-batches-bin")
    assert_loaded(load_cifar10(tmp_path / "b2", cache_dir=cache), images, labels)


def test_png_folder_and_archive_pixel_for_pixel(tmp_path, cache):
    images, labels = tiny(n_per_batch=10, seed=2)
    labels[:] = np.arange(60).reshape(6, 10) % 10  # every class present in both splits
    write_png_folder(tmp_path / "imgs", images, labels)
    assert_loaded(load_cifar10(tmp_path / "imgs", cache_dir=cache), images, labels, sort_by_class=True)
    tar_folder(tmp_path / "imgs", tmp_path / "copy.tar.gz", "cifar10-png")
    assert_loaded(load_cifar10(tmp_path / "copy.tar.gz", cache_dir=cache), images, labels, sort_by_class=True)


def test_cache_is_used_and_fast(tmp_path, cache, monkeypatch):
    images, labels = tiny()
    write_python(tmp_path / "cifar-10-batches-py", images, labels)
    load_cifar10(tmp_path, cache_dir=cache)
    files = list(cache.glob("*.npz"))
    assert len(files) == 1 and not list(cache.glob("*.tmp"))

    def no_decoding(folder):
        raise AssertionError("decoded again instead of reading the cache")
    monkeypatch.setattr(cifar, "_read_python_folder", no_decoding)
    t = time.perf_counter()
    assert_loaded(load_cifar10(tmp_path, cache_dir=cache), images, labels)
    assert time.perf_counter() - t < 1.0


@pytest.mark.parametrize("breakage,match", [
    ("truncate", "not a readable CIFAR-10 python batch"),
    ("shape", "b'data' has shape \\(4, 3000\\), expected \\(N, 3072\\)"),
    ("label", "labels must be in 0-9"),
    ("missing", "data_batch_3: missing"),
])
def test_bad_python_batches(tmp_path, cache, breakage, match):
    images, labels = tiny()
    folder = tmp_path / "cifar-10-batches-py"
    write_python(folder, images, labels)
    f = folder / "data_batch_3"
    if breakage == "truncate":
        f.write_bytes(f.read_bytes()[:500])
    elif breakage == "shape":
        f.write_bytes(pickle.dumps({b"data": np.zeros((4, 3000), np.uint8), b"labels": [0] * 4}))
    elif breakage == "label":
        f.write_bytes(pickle.dumps({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 12, 3]}))
    else:
        f.unlink()
    with pytest.raises(DataError, match=match):
        load_cifar10(tmp_path, cache_dir=cache)
    assert not list(cache.glob("*"))  # nothing half-written


def test_bad_binary_and_archives(tmp_path, cache):
    images, labels = tiny()
    folder = tmp_path / "cifar-10-batches-bin"
    write_binary(folder, images, labels)
    (folder / "data_batch_2.bin").write_bytes((folder / "data_batch_2.bin").read_bytes()[:-10])
    with pytest.raises(DataError, match="data_batch_2.bin.*not a whole number of 3073-byte records"):
        load_cifar10(tmp_path, cache_dir=cache)
    broken = tmp_path / "x" / "cifar-10-python.tar.gz"
    broken.parent.mkdir()
    broken.write_bytes(b"\x1f\x8b" + b"garbage" * 10)
    with pytest.raises(DataError, match="cifar-10-python.tar.gz: not a readable .tar.gz"):
        load_cifar10(broken.parent, cache_dir=cache)
    with pytest.raises(DataError, match="no such file or folder.*--data takes"):
        load_cifar10(tmp_path / "nowhere", cache_dir=cache)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no CIFAR-10 found"):
        load_cifar10(tmp_path / "empty", cache_dir=cache)


@pytest.mark.parametrize("breakage,match", [
    ("size", "image is 16x16, expected 32x32"),
    ("notimage", "not a readable image"),
    ("unknown", "unknown class folder\\(s\\) \\['zebra'\\]"),
    ("missing", "class folder\\(s\\) missing or empty: \\['truck'\\]"),
])
def test_bad_image_folders(tmp_path, cache, breakage, match):
    images, labels = tiny(n_per_batch=10, seed=3)
    labels[:] = np.arange(60).reshape(6, 10) % 10
    write_png_folder(tmp_path, images, labels)
    cat = tmp_path / "train" / "cat"
    if breakage == "size":
        Image.new("RGB", (16, 16)).save(cat / "small.png")
    elif breakage == "notimage":
        (cat / "fake.png").write_bytes(b"not a png")
    elif breakage == "unknown":
        (tmp_path / "train" / "zebra").mkdir()
        Image.new("RGB", (32, 32)).save(tmp_path / "train" / "zebra" / "z.png")
    else:
        for f in (tmp_path / "train" / "truck").iterdir():
            f.unlink()
    with pytest.raises(DataError, match=match):
        load_cifar10(tmp_path, cache_dir=cache)


class _Server:
    def __init__(self, payload):
        handler = type("H", (http.server.BaseHTTPRequestHandler,), {
            "do_GET": lambda self: (self.send_response(200), self.send_header("Content-Length", str(len(payload))),
                                    self.end_headers(), self.wfile.write(payload)),
            "log_message": lambda *a: None})
        self.httpd = http.server.HTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/cifar-10-python.tar.gz"

    def close(self):
        self.httpd.shutdown()


def test_download_verifies_md5_and_leaves_nothing_partial(tmp_path, cache):
    images, labels = tiny()
    write_python(tmp_path / "src" / "cifar-10-batches-py", images, labels)
    archive = tmp_path / "a.tar.gz"
    tar_folder(tmp_path / "src" / "cifar-10-batches-py", archive, "cifar-10-batches-py")
    good = archive.read_bytes()
    md5 = hashlib.md5(good).hexdigest()
    server = _Server(good[:-100] + b"x" * 100)  # corrupted in transit
    try:
        with pytest.raises(DataError, match="MD5.*corrupted, not kept"):
            load_cifar10(tmp_path / "dl", download=True, url=server.url, md5=md5, cache_dir=cache)
        assert list((tmp_path / "dl").iterdir()) == []
    finally:
        server.close()
    server = _Server(good)
    try:
        data = load_cifar10(tmp_path / "dl", download=True, url=server.url, md5=md5, cache_dir=cache)
    finally:
        server.close()
    assert_loaded(data, images, labels)
    assert [p.name for p in (tmp_path / "dl").iterdir()] == ["cifar-10-python.tar.gz"]


def test_download_offline_message(tmp_path):
    with pytest.raises(DataError, match="cannot download CIFAR-10.*Offline\\?.*--data takes"):
        mc.data.download_cifar10(tmp_path, url="http://127.0.0.1:9/nothing.tar.gz", timeout=2)
    assert list(tmp_path.iterdir()) == []


def test_stratified_split_is_seeded():
    labels = np.repeat(np.arange(10), 50)
    split = mc.data.Split(np.zeros((500, 3, 32, 32), np.uint8), labels)
    train, val = mc.data.train_val_split(split, val_size=100, seed=0)
    assert len(train) == 400 and len(val) == 100
    np.testing.assert_array_equal(np.bincount(val.labels), [10] * 10)
    _, val2 = mc.data.train_val_split(split, val_size=100, seed=0)
    np.testing.assert_array_equal(val.labels, val2.labels)
    train0, val0 = mc.data.train_val_split(split, val_size=0)
    assert len(train0) == 500 and len(val0) == 0


def test_random_subset_covers_every_class_of_a_sorted_split():
    split = mc.data.Split(np.zeros((1000, 3, 32, 32), np.uint8), np.repeat(np.arange(10), 100))
    sub = mc.data.random_subset(split, 200, seed=0)
    counts = np.bincount(sub.labels, minlength=10)
    assert len(sub) == 200 and counts.min() >= 8  # the first 200 would be two classes only
    np.testing.assert_array_equal(mc.data.random_subset(split, 200, seed=0).labels, sub.labels)


def test_augmentations_each_on_their_own():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (64, 3, 8, 8), dtype=np.uint8)
    flipped = mc.data.random_flip(x, np.random.default_rng(1))
    same = np.all(flipped == x, axis=(1, 2, 3))
    mirrored = np.all(flipped == x[..., ::-1], axis=(1, 2, 3))
    assert np.all(same | mirrored) and 15 < mirrored.sum() < 50
    crop = mc.data.random_crop(x, 2, np.random.default_rng(2), mode="zero")
    assert crop.shape == x.shape
    for i in range(8):  # each crop is a translation by at most 2 pixels, zero-filled
        padded = np.pad(x[i], ((0, 0), (2, 2), (2, 2)))
        assert any(np.array_equal(crop[i], padded[:, dy:dy + 8, dx:dx + 8]) for dy in range(5) for dx in range(5))
    reflect = mc.data.random_crop(x, 2, np.random.default_rng(2), mode="reflect")
    padded = np.pad(x[0], ((0, 0), (2, 2), (2, 2)), mode="reflect")
    assert any(np.array_equal(reflect[0], padded[:, dy:dy + 8, dx:dx + 8]) for dy in range(5) for dx in range(5))
    holes = mc.data.cutout(np.full((16, 3, 8, 8), 255, np.uint8), 4, np.random.default_rng(3))
    zeros = (holes == 0).all(axis=1).sum(axis=(1, 2))
    assert np.all((zeros >= 4) & (zeros <= 16))  # a 4x4 square, clipped at the border
    np.testing.assert_array_equal(mc.data.cutout(x, 4, np.random.default_rng(3)), mc.data.cutout(x, 4, np.random.default_rng(3)))


def test_normalize_uses_given_statistics():
    x = np.random.default_rng(0).integers(0, 256, (100, 3, 4, 4), dtype=np.uint8)
    mean, std = mc.data.channel_stats(x)
    y = mc.data.normalize(x, mean, std)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(y.std(axis=(0, 2, 3)), 1, atol=1e-4)


def test_loader_deterministic_drop_last_and_prefetch_equal():
    x = np.random.default_rng(0).integers(0, 256, (50, 3, 8, 8), dtype=np.uint8)
    y = np.arange(50)
    aug = mc.data.Augment("crop,flip", padding=2)
    make = lambda prefetch: mc.data.BatchLoader(x, y, 16, (0.5,) * 3, (0.25,) * 3, seed=3, augment=aug, prefetch=prefetch)
    a, b = make(True), make(False)
    assert len(a) == 3
    first = list(a)
    for (xa, ya), (xb, yb) in zip(first, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert xa.dtype == np.float32 and xa.shape == (16, 3, 8, 8)
    second = list(a)  # the next epoch is another order
    assert not np.array_equal(first[0][1], second[0][1])
    c = make(True)
    c.set_epoch(1)  # resume at epoch 1 gives epoch 1's batches
    for (xa, _), (xc, _) in zip(second, c):
        np.testing.assert_array_equal(xa, xc)
    seen = np.concatenate([yb for _, yb in mc.data.BatchLoader(x, y, 16, (0,) * 3, (1,) * 3, drop_last=False)])
    np.testing.assert_array_equal(np.sort(seen), y)


@pytest.mark.skipif(not SHARED.exists(), reason=f"the JPEG copy of CIFAR-10 is not at {SHARED}")
def test_shared_jpeg_copy():
    data = load_cifar10(SHARED)
    assert data.train.images.shape == (50000, 3, 32, 32) and data.test.images.shape == (10000, 3, 32, 32)
    np.testing.assert_array_equal(np.bincount(data.train.labels), [5000] * 10)
    np.testing.assert_array_equal(np.bincount(data.test.labels), [1000] * 10)
    mean, _ = mc.data.channel_stats(data.train.images[::10])
    np.testing.assert_allclose(mean, (0.491, 0.482, 0.447), atol=0.003)
