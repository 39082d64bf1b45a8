"""Image sources: Fashion-MNIST IDX files, class folders, hub-style dataset directories, arrays."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import datasets as hfds
import numpy as np
import pytest
from PIL import Image

from shiftlab import config, store
from shiftlab.datasets import images, schema
from shiftlab.errors import ShiftlabError

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


# --------------------------------------------------------------------------- helpers


def _idx_bytes(arr: np.ndarray, magic: int) -> bytes:
    arr = np.asarray(arr, dtype=np.uint8)
    head = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return head + arr.tobytes()


def _write_gz(path: Path, payload: bytes) -> None:
    # mtime=0: identical files for identical content
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        f.write(payload)


def _fake_fmnist(directory: Path, train_labels, test_labels, seed=0) -> dict:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    data = {}
    for split, labels in (("train", train_labels), ("t10k", test_labels)):
        labels = np.asarray(labels, dtype=np.uint8)
        imgs = rng.integers(0, 256, (len(labels), 28, 28), dtype=np.uint8)
        _write_gz(directory / f"{split}-images-idx3-ubyte.gz", _idx_bytes(imgs, 2051))
        _write_gz(directory / f"{split}-labels-idx1-ubyte.gz", _idx_bytes(labels, 2049))
        data[split] = (imgs, labels)
    return data


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def _png(path: Path, arr, mode=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = arr if isinstance(arr, Image.Image) else Image.fromarray(np.asarray(arr))
    if mode is not None:
        img = img.convert(mode)
    img.save(path)
    return path


def _class_folders(root: Path, classes=("cat", "dog"), per_class=3, size=(8, 8), seed=0) -> Path:
    """Grey and RGB PNGs (alternating) in one subfolder per class."""
    rng = np.random.default_rng(seed)
    for c in classes:
        for i in range(per_class):
            shape = size if i % 2 == 0 else (*size, 3)
            _png(root / c / f"img{i:02d}.png", rng.integers(0, 256, shape, dtype=np.uint8))
    return root


def _conversion_folder(root: Path) -> Path:
    """One image per documented conversion, all 4x4, in class folder 'x'."""
    d = root / "x"
    # RGBA: left half fully transparent red, right half opaque red
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:, 2:, 3] = 255
    _png(d / "a_rgba.png", rgba)
    # LA: half-transparent black -> mid grey
    la = np.zeros((4, 4, 2), np.uint8)
    la[..., 1] = 128
    _png(d / "b_la.png", Image.fromarray(la, "LA"))
    # palette: two colours
    pal = Image.new("P", (4, 4))
    pal.putpalette([0, 0, 255, 0, 255, 0] + [0] * 762)
    pal.putpixel((0, 0), 1)
    _png(d / "c_palette.png", pal)
    # 16-bit greyscale: 0, 32896 (-> 128), 65535 (-> 255)
    i16 = np.zeros((4, 4), np.uint16)
    i16[0, 0], i16[0, 1] = 65535, 32896
    _png(d / "d_16bit.png", Image.fromarray(i16))
    assert Image.open(d / "d_16bit.png").mode == "I;16"
    # plain greyscale and CMYK (JPEG keeps CMYK)
    _png(d / "e_grey.png", np.full((4, 4), 77, np.uint8))
    Image.new("CMYK", (4, 4), (0, 0, 0, 0)).save(d / "f_cmyk.jpg", quality=100)
    return root


# --------------------------------------------------------------------------- Fashion-MNIST


def test_fashion_mnist_columns(tmp_path):
    data = _fake_fmnist(tmp_path, np.arange(30) % 10, np.arange(20) % 10)
    ds = images.from_fashion_mnist(tmp_path)
    schema.check(ds)
    assert list(ds.features) == list(schema.IMAGE_COLUMNS)
    assert ds.features["image"].shape == (1, 28, 28)
    assert schema.label_names(ds) == list(images.FASHION_MNIST_LABELS)
    assert Counter(ds["domain"]) == {"source": 30, "target": 20}
    assert set(ds["origin"]) == {"real"} and set(ds["parent"]) == {""}
    assert ds["group"] == ds["id"]
    row = ds[7]
    assert row["id"] == "fashion_mnist/train/00007"
    assert np.array_equal(schema.hwc(row["image"])[..., 0], data["train"][0][7])
    assert row["label"] == 7
    assert json.loads(row["recipe"]) == {"source": "fashion_mnist", "file": "train-images-idx3-ubyte.gz", "index": 7}
    last = ds[len(ds) - 1]
    assert last["id"] == "fashion_mnist/test/00019" and last["domain"] == "target" and last["label"] == 9
    assert np.array_equal(schema.hwc(last["image"])[..., 0], data["t10k"][0][19])


def test_fashion_mnist_stratified_subsample(tmp_path):
    train = np.repeat(np.arange(10), [20, 20, 10, 10, 10, 10, 5, 5, 5, 5])  # 100 rows, unbalanced
    _fake_fmnist(tmp_path, train, np.arange(40) % 10)
    ds = images.from_fashion_mnist(tmp_path, source_rows=50, target_rows=20, seed=1)
    assert Counter(ds["domain"]) == {"source": 50, "target": 20}
    src = ds.filter(lambda d: d == "source", input_columns="domain")
    counts = Counter(src["label"])
    assert [counts[c] for c in range(10)] == [10, 10, 5, 5, 5, 5, 3, 3, 2, 2]  # largest remainder, ties low
    tgt = ds.filter(lambda d: d == "target", input_columns="domain")
    assert set(Counter(tgt["label"]).values()) == {2}
    # deterministic; the source draw does not depend on target_rows; another seed draws others
    again = images.from_fashion_mnist(tmp_path, source_rows=50, target_rows=None, seed=1)
    assert again.filter(lambda d: d == "source", input_columns="domain")["id"] == src["id"]
    other = images.from_fashion_mnist(tmp_path, source_rows=50, target_rows=20, seed=2)
    assert other["id"] != ds["id"]
    # ids keep the index in the file and stay sorted
    idx = [int(i.rsplit("/", 1)[1]) for i in src["id"]]
    assert idx == sorted(idx) and len(set(idx)) == 50
    # more rows than available: everything
    assert len(images.from_fashion_mnist(tmp_path, source_rows=1000)) == 140


def test_stratified_indices_counts():
    labels = np.array([0] * 7 + [1] * 2 + [2] * 1)
    for n in range(1, 11):
        keep = images.stratified_indices(labels, n, 0, "t")
        assert len(keep) == n and len(set(keep.tolist())) == n
        assert np.array_equal(keep, images.stratified_indices(labels, n, 0, "t"))


@pytest.mark.parametrize(
    "damage, expect",
    [
        ("truncate_payload", "truncated"),
        ("truncate_gzip", "gzip"),
        ("bad_magic", "magic"),
        ("count_mismatch", "labels"),
        ("missing", "not found"),
    ],
)
def test_fashion_mnist_bad_files(tmp_path, damage, expect):
    _fake_fmnist(tmp_path, np.arange(10), np.arange(10))
    path = tmp_path / "train-images-idx3-ubyte.gz"
    imgs = np.zeros((10, 28, 28), np.uint8)
    if damage == "truncate_payload":
        _write_gz(path, _idx_bytes(imgs, 2051)[:-100])
    elif damage == "truncate_gzip":
        path.write_bytes(path.read_bytes()[:-20])
    elif damage == "bad_magic":
        _write_gz(path, _idx_bytes(imgs, 2049))
    elif damage == "count_mismatch":
        _write_gz(path, _idx_bytes(imgs[:9], 2051))
    else:
        path.unlink()
    with pytest.raises(ShiftlabError) as e:
        images.from_fashion_mnist(tmp_path)
    msg = _one_line(e)
    assert str(path) in msg and expect in msg


@pytest.mark.debian_data
@pytest.mark.skipif(not FMNIST_DIR.is_dir(), reason=f"{FMNIST_DIR} not installed")
def test_fashion_mnist_real_data():
    ds = images.from_fashion_mnist(FMNIST_DIR)  # its speed: python bench/sources.py (no timed assertions here)
    assert len(ds) == 70000
    schema.check(ds)
    counts = Counter(zip(ds["domain"], ds["label"]))
    assert all(counts[("source", c)] == 6000 and counts[("target", c)] == 1000 for c in range(10))


# --------------------------------------------------------------------------- folders


def test_folder_columns(tmp_path):
    _class_folders(tmp_path / "src", ("cat", "dog"), per_class=3)
    _class_folders(tmp_path / "tgt", ("cat", "fox"), per_class=2, seed=1)
    _png(tmp_path / "src" / "dog" / "sub" / "deep.PNG", np.zeros((8, 8), np.uint8))  # nested, upper-case ext
    (tmp_path / "src" / "dog" / "notes.txt").write_text("not an image")
    _png(tmp_path / "src" / "dog" / ".hidden.png", np.zeros((3, 3), np.uint8))  # skipped (odd size)
    ds = images.from_folder(tmp_path / "src", tmp_path / "tgt")
    schema.check(ds)
    assert schema.label_names(ds) == ["cat", "dog", "fox"]
    assert ds.features["image"].shape == (3, 8, 8)
    assert Counter(ds["domain"]) == {"source": 7, "target": 4}
    assert ds["id"][:4] == ["source/cat/img00.png", "source/cat/img01.png", "source/cat/img02.png", "source/dog/img00.png"]
    assert "source/dog/sub/deep.PNG" in ds["id"]
    assert ds["group"] == ds["id"]
    assert set(ds["origin"]) == {"real"} and set(ds["parent"]) == {""}
    row = ds[0]
    assert json.loads(row["recipe"]) == {"source": "folder", "folder": str(tmp_path / "src"), "file": "cat/img00.png"}
    grey = np.asarray(Image.open(tmp_path / "src" / "cat" / "img00.png"))
    assert np.array_equal(schema.hwc(row["image"]), np.repeat(grey[..., None], 3, axis=2))
    fox = ds.filter(lambda i: i.startswith("target/fox/"), input_columns="id")
    assert len(fox) == 2 and set(fox["label"]) == {2}
    # only one domain given
    only = images.from_folder(target=tmp_path / "tgt", mode="grey")
    assert set(only["domain"]) == {"target"} and only.features["image"].shape == (1, 8, 8)


def test_folder_conversions(tmp_path):
    _conversion_folder(tmp_path / "c")
    ds = images.from_folder(tmp_path / "c")
    got = {i.rsplit("/", 1)[1]: schema.hwc(im) for i, im in zip(ds["id"], ds["image"])}
    rgba = got["a_rgba.png"]
    assert (rgba[:, :2] == 255).all()  # transparent -> white
    assert (rgba[:, 2:] == [255, 0, 0]).all()  # opaque red stays red
    assert (got["b_la.png"] == 127).all()  # black at alpha 128 over white
    assert (got["c_palette.png"][0, 0] == [0, 255, 0]).all() and (got["c_palette.png"][1, 1] == [0, 0, 255]).all()
    i16 = got["d_16bit.png"]
    assert list(i16[0, :3, 0]) == [255, 128, 0] and (i16[..., 0] == i16[..., 2]).all()  # scaled, not clipped
    assert (got["e_grey.png"] == 77).all()
    assert (got["f_cmyk.jpg"] >= 250).all()  # CMYK white
    grey = images.from_folder(tmp_path / "c", mode="grey")
    g = {i.rsplit("/", 1)[1]: schema.hwc(im) for i, im in zip(grey["id"], grey["image"])}
    assert g["a_rgba.png"].shape == (4, 4, 1)
    assert g["a_rgba.png"][0, 0, 0] == 255 and g["a_rgba.png"][0, 3, 0] == 76  # luma of red (PIL)
    assert list(g["d_16bit.png"][0, :3, 0]) == [255, 128, 0]


def test_float_image_is_an_error(tmp_path):
    path = tmp_path / "f" / "x" / "float.tif"
    path.parent.mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4), np.float32)).save(path)
    with pytest.raises(ShiftlabError) as e:
        images.from_folder(tmp_path / "f")
    assert str(path) in _one_line(e) and "float" in str(e.value)


def test_folder_resize_and_crop(tmp_path):
    root = tmp_path / "r"
    wide = np.zeros((10, 20), np.uint8)
    wide[:, 10:] = 255  # left black, right white: the centre crop keeps both halves
    _png(root / "a" / "wide.png", wide)
    _png(root / "a" / "tall.png", np.full((16, 8, 3), (10, 200, 30), np.uint8))
    _png(root / "b" / "tiny.png", np.full((3, 3), 99, np.uint8))  # upscaled
    ds = images.from_folder(root, size=[6, 4], mode="grey")
    assert ds.features["image"].shape == (1, 6, 4)
    got = {i: schema.hwc(im)[..., 0] for i, im in zip(ds["id"], ds["image"])}
    w = got["source/a/wide.png"]
    assert (w[:, 0] < 30).all() and (w[:, -1] > 225).all()
    assert (got["source/b/tiny.png"] == 99).all()
    tall = images.from_folder(root, size=[6, 4])
    t = {i: schema.hwc(im) for i, im in zip(tall["id"], tall["image"])}
    assert (t["source/a/tall.png"] == [10, 200, 30]).all()


def test_folder_group_pattern(tmp_path):
    root = tmp_path / "g"
    for rel in ("cat/car01_a.png", "cat/car02_a.png", "dog/car01_b.png", "dog/x/car03_c.png"):
        _png(root / rel, np.zeros((4, 4), np.uint8))
    ds = images.from_folder(root, group_pattern=r"(car\d+)_")
    assert dict(zip(ds["id"], ds["group"])) == {
        "source/cat/car01_a.png": "source/car01",
        "source/cat/car02_a.png": "source/car02",
        "source/dog/car01_b.png": "source/car01",
        "source/dog/x/car03_c.png": "source/car03",
    }
    whole = images.from_folder(target=root, group_pattern=r"car\d+")  # no group: the whole match
    assert whole["group"][0] == "target/car01"
    _png(root / "dog" / "other.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(ShiftlabError) as e:
        images.from_folder(root, group_pattern=r"(car\d+)_")
    msg = _one_line(e)
    assert str(root / "dog" / "other.png") in msg and "prepare_images.folder.group_pattern" in msg
    with pytest.raises(ShiftlabError, match="group_pattern"):
        images.from_folder(root, group_pattern="(unclosed")


@pytest.mark.parametrize("problem", ["missing", "empty", "no_classes", "no_images", "corrupt", "zero_bytes", "sizes"])
def test_folder_errors(tmp_path, problem):
    root = tmp_path / "data"
    if problem != "missing":
        root.mkdir()
    named = root
    if problem == "no_classes":
        _png(root / "loose.png", np.zeros((4, 4), np.uint8))
    elif problem == "no_images":
        _class_folders(root, ("a",), per_class=1)
        named = root / "b"
        named.mkdir()
        (named / "readme.txt").write_text("x")
    elif problem == "corrupt":
        _class_folders(root, ("a",), per_class=2)
        named = root / "a" / "broken.png"
        named.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    elif problem == "zero_bytes":
        _class_folders(root, ("a",), per_class=2)
        named = root / "a" / "empty.jpg"
        named.write_bytes(b"")
    elif problem == "sizes":
        _class_folders(root, ("a", "b"), per_class=2, size=(8, 8))
        named = _png(root / "b" / "odd.png", np.zeros((5, 7), np.uint8))
    with pytest.raises(ShiftlabError) as e:
        images.from_folder(root)
    msg = _one_line(e)
    assert str(named) in msg
    if problem == "sizes":
        assert "5x7" in msg and "8x8" in msg and "prepare_images.folder.size" in msg
    if problem == "zero_bytes":
        assert "0 bytes" in msg


def test_folder_needs_a_folder():
    with pytest.raises(ShiftlabError, match="source and/or target"):
        images.from_folder()


# --------------------------------------------------------------------------- hub-style directories


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """Keep load_dataset's Arrow cache inside tmp_path."""
    monkeypatch.setattr(hfds.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))


def _hub_dir(root: Path, splits: dict, features: hfds.Features) -> Path:
    (root / "data").mkdir(parents=True)
    for split, columns in splits.items():
        hfds.Dataset.from_dict(columns, features=features).to_parquet(str(root / "data" / f"{split}.parquet"))
    return root


def test_hub_image_feature_and_classlabel(tmp_path, hf_cache):
    rng = np.random.default_rng(0)

    def split(n):
        return {
            "image": [Image.fromarray(rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)) for _ in range(n)],
            "label": [i % 3 for i in range(n)],
        }

    feats = hfds.Features({"image": hfds.Image(), "label": hfds.ClassLabel(names=["zebra", "ant", "moth"])})
    src = split(12)
    root = _hub_dir(tmp_path / "mini", {"train": src, "test": split(9)}, feats)
    ds = images.from_hub(str(root))
    schema.check(ds)
    assert schema.label_names(ds) == ["zebra", "ant", "moth"]  # ClassLabel order kept
    assert Counter(ds["domain"]) == {"source": 12, "target": 9}
    assert ds.features["image"].shape == (3, 6, 5)
    assert ds["id"][0] == "mini/train/00000" and ds["id"][-1] == "mini/test/00008"
    assert ds["group"] == ds["id"]
    assert np.array_equal(schema.hwc(ds[4]["image"]), np.asarray(src["image"][4]))
    assert json.loads(ds[4]["recipe"])["split"] == "train" and json.loads(ds[4]["recipe"])["index"] == 4
    sub = images.from_hub(str(root), mode="grey", size=[4, 4], source_rows=6, seed=0)
    assert sub.features["image"].shape == (1, 4, 4)
    src_labels = [lab for lab, d in zip(sub["label"], sub["domain"]) if d == "source"]
    assert Counter(src_labels) == {0: 2, 1: 2, 2: 2}


def test_hub_nested_lists_string_labels_groups(tmp_path, hf_cache):
    def split(n, offset):
        return {
            "pixels": [np.full((4, 4), 10 * i + offset, np.uint8).tolist() for i in range(n)],
            "kind": ["shoe" if i % 2 else "bag" for i in range(n)],
            "who": [f"p{i // 2}" for i in range(n)],
        }

    feats = hfds.Features(
        {"pixels": hfds.List(hfds.List(hfds.Value("int64"))), "kind": hfds.Value("string"), "who": hfds.Value("string")}
    )
    root = _hub_dir(tmp_path / "lists", {"train": split(6, 0), "validation": split(4, 1)}, feats)
    ds = images.from_hub(
        str(root), target_split="validation", image_column="pixels", label_column="kind", group_column="who", mode="grey"
    )
    schema.check(ds)
    assert schema.label_names(ds) == ["bag", "shoe"]
    assert ds.features["image"].shape == (1, 4, 4)
    assert ds["group"][:3] == ["source/p0", "source/p0", "source/p1"] and ds["group"][-1] == "target/p1"
    assert int(schema.hwc(ds[3]["image"]).max()) == 30
    with pytest.raises(ShiftlabError) as e:
        images.from_hub(str(root))  # no 'test' split
    assert _one_line(e).startswith(f"hub dataset '{root}'") and "'test'" in str(e.value)
    with pytest.raises(ShiftlabError) as e:
        images.from_hub(str(root), target_split="validation")  # no 'image' column
    assert "'image'" in _one_line(e) and "pixels" in str(e.value)


def test_hub_unknown_id_fails_fast_offline(monkeypatch, tmp_path, hf_cache):
    """HF_HUB_OFFLINE=1 set after import: the call fails at once, without one network attempt
    (what made it slow: retries against an unreachable hub). Its speed: bench/sources.py."""
    import socket

    import huggingface_hub.constants as hub_constants

    # as if the variable was set only after `datasets` had read it at import
    for mod, name in ((hfds.config, "HF_HUB_OFFLINE"), (hfds.config, "HF_DATASETS_OFFLINE"),
                      (hub_constants, "HF_HUB_OFFLINE")):
        monkeypatch.setattr(mod, name, False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    attempts = []

    def no_network(self, address, *a, **k):
        attempts.append(address)
        raise OSError("network is unreachable (test)")

    def no_dns(host, *a, **k):
        attempts.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "name resolution disabled (test)")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket.socket, "connect_ex", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    with pytest.raises(ShiftlabError) as e:
        images.from_hub("shiftlab-tests/no-such-dataset-xyz")
    assert attempts == []
    assert _one_line(e).startswith("hub dataset 'shiftlab-tests/no-such-dataset-xyz': ")
    # the call-time override is undone
    assert (hfds.config.HF_HUB_OFFLINE, hfds.config.HF_DATASETS_OFFLINE, hub_constants.HF_HUB_OFFLINE) == (False,) * 3


# --------------------------------------------------------------------------- arrays


def test_from_arrays():
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (5, 6, 7), dtype=np.uint8)
    ds = images.from_arrays(grey, [0, 1, 2, 1, 0], "source", label_names=["a", "b", "c"])
    schema.check(ds)
    assert ds.features["image"].shape == (1, 6, 7) and ds["id"][0] == "arrays/source/00000"
    assert np.array_equal(schema.hwc(ds[2]["image"])[..., 0], grey[2])
    rgb = rng.integers(0, 256, (4, 3, 3, 3), dtype=np.uint8)
    ds = images.from_arrays(rgb, ["y", "x", "y", "z"], ["source", "target", "target", "source"], groups="ppqq", name="mine")
    assert schema.label_names(ds) == ["x", "y", "z"] and ds["label"] == [1, 0, 1, 2]
    assert ds["group"] == ["p", "p", "q", "q"] and ds["id"][1] == "mine/target/00001"


@pytest.mark.parametrize(
    "imgs, labels, expect",
    [
        (np.zeros((2, 4, 4), np.float32), [0, 1], "uint8"),
        (np.zeros((2, 4, 4), np.uint16), [0, 1], "uint8"),
        (np.zeros((2, 4, 4, 2), np.uint8), [0, 1], "shape"),
        (np.zeros((2, 4, 4), np.uint8), [0, 5], "out of range"),
        (np.zeros((2, 4, 4), np.uint8), [0], "labels"),
    ],
)
def test_from_arrays_errors(imgs, labels, expect):
    with pytest.raises(ShiftlabError) as e:
        images.from_arrays(imgs, labels, "source", label_names=["a", "b"], name="my_arrays")
    msg = _one_line(e)
    assert "my_arrays" in msg and expect in msg


# --------------------------------------------------------------------------- determinism, dispatch


def test_saves_are_byte_identical(tmp_path):
    _fake_fmnist(tmp_path / "fm", np.arange(50) % 10, np.arange(20) % 10)
    _class_folders(tmp_path / "src", ("a", "b"), per_class=3, size=(9, 12))
    _conversion_folder(tmp_path / "tgt")
    digests = []
    for run in range(2):
        fm = images.from_fashion_mnist(tmp_path / "fm", source_rows=20, target_rows=10, seed=4)
        folder = images.from_folder(tmp_path / "src", tmp_path / "tgt", size=[5, 5], group_pattern=r"\w")
        store.save(fm, tmp_path / f"fm{run}")
        store.save(folder, tmp_path / f"folder{run}")
        digests.append((store.tree_digest(tmp_path / f"fm{run}"), store.tree_digest(tmp_path / f"folder{run}")))
    assert digests[0] == digests[1]
    back = store.load(tmp_path / "folder0")
    schema.check(back)
    assert back.features["image"].shape == (3, 5, 5)


def _cfg(**section):
    return config.validate({"prepare_images": section})["prepare_images"]


def test_prepare_dispatch(tmp_path, hf_cache):
    _fake_fmnist(tmp_path / "fm", np.arange(20) % 10, np.arange(10) % 10)
    ds = images.prepare(_cfg(kind="fashion_mnist", seed=3, fashion_mnist={"dir": str(tmp_path / "fm"), "source_rows": 10}))
    assert Counter(ds["domain"]) == {"source": 10, "target": 10}
    _class_folders(tmp_path / "src", ("a", "b"), per_class=2)
    ds = images.prepare(_cfg(kind="folder", folder={"source": str(tmp_path / "src"), "mode": "grey", "size": [4, 4]}))
    assert len(ds) == 4 and ds.features["image"].shape == (1, 4, 4)
    with pytest.raises(ShiftlabError, match="source and/or target"):
        images.prepare(_cfg(kind="folder"))
    with pytest.raises(ShiftlabError, match="prepare_images.hub.id"):
        images.prepare(_cfg(kind="hub"))
    feats = hfds.Features({"image": hfds.Image(), "label": hfds.Value("int64")})
    split = {"image": [Image.new("L", (3, 3), 5)] * 4, "label": [7, 3, 7, 3]}
    root = _hub_dir(tmp_path / "h", {"train": split, "test": split}, feats)
    ds = images.prepare(_cfg(kind="hub", hub={"id": str(root), "target_rows": 2}))
    assert schema.label_names(ds) == ["3", "7"] and Counter(ds["domain"]) == {"source": 4, "target": 2}
    assert ds.features["image"].shape == (3, 3, 3)
