"""Image data sources: one ``Dataset`` with both domains, in the image schema.

Every function returns a Hugging Face ``Dataset`` that follows
:func:`shiftlab.datasets.schema.image_features` (``image`` is a uint8 ``Array3D``
stored channels-first (C, H, W), C = 1 or 3) and passes :func:`schema.check`: rows of domain
``source`` and ``target``, ``origin`` ``real``, ``parent`` "". The same inputs give
byte-identical :func:`shiftlab.store.save` outputs.

Sources (``prepare_images.kind``):

* ``fashion_mnist`` -- the four gzipped IDX files (train -> source, t10k -> target),
  see :func:`from_fashion_mnist`;
* ``folder`` -- one folder per domain with one subfolder per class, see :func:`from_folder`;
* ``hub`` -- a Hugging Face dataset id or a local dataset directory, see :func:`from_hub`.

:func:`from_arrays` wraps in-memory numpy arrays (tests, notebooks).

Pixel conversions (shared by folders and hub datasets, :func:`to_uint8_hwc`):

* palette (P), CMYK, YCbCr, HSV, bilevel (1), greyscale (L) and RGB: converted by PIL
  to ``L`` (mode ``grey``, ITU-R 601-2 luma) or ``RGB`` (mode ``rgb``);
* alpha (RGBA, LA, PA, and palette/grey/RGB images with a transparency key):
  composited over a white background;
* 16-bit and 32-bit integer greyscale (PIL ``I;16``, ``I``): scaled linearly from the
  full range of the image's dtype to 0..255 (uint16: v * 255 / 65535; int32:
  (v + 2**31) * 255 / (2**32 - 1)), never clipped; a PIL ``I`` image whose values all
  lie in 0..65535 (how PIL opens many 16-bit files) is scaled as uint16;
* float images (PIL ``F``, float arrays): rejected with a ShiftlabError;
* EXIF orientation is applied; multi-frame files (GIF, TIFF) give their first frame.

Arrays (hub columns of nested lists or arrays) follow the same rules by dtype: uint8
as is; bool as 0/255; uint16, int16, uint32, int32 scaled by their dtype range like
``I;16`` / ``I``; int64 / uint64 (what plain lists of Python ints become) must hold
values in 0..255 and are taken as 8-bit. Shapes (H, W) or (H, W, C), C in 1..4
(2 = grey + alpha, 4 = RGB + alpha).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import datasets as hfds
import numpy as np
import pyarrow as pa
from PIL import Image, ImageOps
from tqdm.auto import tqdm

from shiftlab import seeding, store
from shiftlab.datasets import folders, schema
from shiftlab.errors import ShiftlabError

FASHION_MNIST_LABELS = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
# domain -> (images file, labels file, split name used in row ids)
FASHION_MNIST_FILES = {
    "source": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "train"),
    "target": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", "test"),
}
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
MODES = ("grey", "rgb")

_KEY = "prepare_images"
_PROGRESS_MIN = 200  # show a progress bar from this many images on
_MAX_CHUNK_VALUES = 1 << 30  # Array3D storage uses int32 list offsets: stay far below 2**31


# --------------------------------------------------------------------------- dispatch


def prepare(cfg: dict) -> hfds.Dataset:
    """Build the image source described by the ``prepare_images`` params section."""
    kind = cfg["kind"]
    sub = cfg[kind]
    frames_cfg = cfg.get("frames") or {}
    mode = frames_cfg.get("apply", "auto")
    simulate = mode == "on" or (mode == "auto" and kind == "fashion_mnist")
    if simulate and frames_cfg.get("generator", "imagemagick") == "imagemagick":
        from shiftlab.datasets import videotarget

        videotarget.require(frames_cfg.get("imagemagick"))  # a missing tool fails before the data is read
    if kind == "fashion_mnist":
        ds = from_fashion_mnist(sub["dir"], sub["source_rows"], sub["target_rows"], seed=cfg["seed"])
    elif kind == "folder":
        ds = from_folder(
            sub["source"], sub["target"], size=sub["size"], mode=sub["mode"], group_pattern=sub["group_pattern"]
        )
    elif kind == "hub":
        if not sub["id"]:
            raise ShiftlabError(f"{_KEY}.hub.id: required when {_KEY}.kind is hub (a hub dataset id or a local directory)")
        ds = from_hub(**sub, seed=cfg["seed"])
    else:
        raise ShiftlabError(f"{_KEY}.kind: unknown kind {kind!r} (fashion_mnist, folder, hub)")
    if simulate:
        ds = simulate_target_frames(ds, frames_cfg)
    return ds


def simulate_target_frames(ds: hfds.Dataset, frames_cfg: dict | None = None, progress: bool = True) -> hfds.Dataset:
    """Replace every target row's image by a simulated video frame.

    ``frames_cfg["generator"]`` picks the simulator: ``imagemagick`` (default,
    :mod:`shiftlab.datasets.videotarget`: ImageMagick motion blur, sensor noise, H.264 or
    JPEG; its knobs in ``frames_cfg["imagemagick"]``, no code shared with the synthesis) or
    ``shiftlab`` (:mod:`shiftlab.synth.frames`, the other keys of ``frames_cfg``; it shares
    the synthesis's kernel code, so a gain measured on it overstates transfer).
    A row's degradation is seeded by ``frames.seed`` and the crc32 of its id (stable whatever
    rows are selected); its recipe gains a ``frames`` record that regenerates the frame from
    the sharp image (``regenerate`` of the generator's module). Source rows are untouched.
    """
    import json

    frames_cfg = dict(frames_cfg or {})
    generator = frames_cfg.pop("generator", "imagemagick")
    im_cfg = frames_cfg.pop("imagemagick", None)
    if generator == "imagemagick":
        from shiftlab.datasets import videotarget

        vcfg = videotarget.check_cfg(im_cfg)
        seed = frames_cfg.get("seed", 1234)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ShiftlabError(f"{_KEY}.frames.seed: must be an integer >= 0, got {seed!r}")

        def run(images, index):
            return videotarget.simulate(images, index, vcfg, seed=seed, progress=progress)
    elif generator == "shiftlab":
        from shiftlab.synth import frames

        cfg = frames.check_cfg(frames_cfg)

        def run(images, index):
            return frames.simulate(images, index, cfg, progress=progress)
    else:
        raise ShiftlabError(f"{_KEY}.frames.generator: must be shiftlab or imagemagick, got {generator!r}")
    table = ds.with_format("arrow")[:]
    domains = np.asarray(table.column("domain").to_pylist(), dtype=object)
    tgt = np.flatnonzero(domains == "target")
    if len(tgt) == 0:
        return ds
    chw = schema.chw_batch(ds)
    ids = table.column("id").to_pylist()
    index = [zlib.crc32(ids[i].encode("utf-8")) for i in tgt]
    out, recs = run(chw[tgt], index)
    chw = chw.copy()
    chw[tgt] = out
    recipes = table.column("recipe").to_pylist()
    for i, r in zip(tgt.tolist(), recs):
        doc = json.loads(recipes[i]) if recipes[i] else {}
        doc["frames"] = json.loads(r)
        recipes[i] = store.recipe(**doc)
    names = schema.label_names(ds)
    return _build(
        chw.transpose(0, 2, 3, 1), np.asarray(table.column("label").to_numpy(), dtype=np.int64), names, ids,
        table.column("domain").to_pylist(), table.column("group").to_pylist(), recipes,
    )


# --------------------------------------------------------------------------- helpers


def stratified_indices(labels, n: int | None, seed: int = 0, *purpose) -> np.ndarray:
    """Sorted indices of a label-stratified subsample of ``n`` rows (all rows if ``n`` is None or >= len).

    Each class gets its proportional share (largest remainder, ties to the lower
    class), drawn without replacement from a generator seeded by
    ``seeding.sample_rng(seed, class, "subsample", *purpose)``: the choice depends
    only on the labels, ``n``, ``seed`` and ``purpose``.
    """
    labels = np.asarray(labels, dtype=np.int64)
    total = len(labels)
    if n is None or n >= total:
        return np.arange(total, dtype=np.int64)
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * n // total
    remainder = counts * n % total
    order = np.lexsort((classes, -remainder))  # largest remainder first, then lower class
    quota[order[: n - int(quota.sum())]] += 1
    picked = []
    for c, q in zip(classes, quota):
        members = np.flatnonzero(labels == c)
        rng = seeding.sample_rng(seed, int(c), "subsample", *purpose)
        picked.append(members[rng.permutation(len(members))[:q]])
    return np.sort(np.concatenate(picked))


def _encode_labels(values, label_names, where: str) -> tuple[np.ndarray, list[str]]:
    """Integer codes and names for int or string labels (names: given, or sorted distinct values)."""
    vals = np.asarray(values)
    if vals.dtype == object:
        if all(isinstance(v, str) for v in vals):
            vals = vals.astype(str)
        elif all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in vals):
            vals = vals.astype(np.int64)
        else:
            bad = next(v for v in vals if not isinstance(v, (str, int, np.integer)) or isinstance(v, bool))
            raise ShiftlabError(f"{where}: labels must be integers or strings, found {bad!r}")
    if vals.ndim != 1:
        raise ShiftlabError(f"{where}: labels must be one value per row, got shape {vals.shape}")
    if vals.dtype.kind in "iu":
        if label_names is not None:
            names = [str(n) for n in label_names]
            if len(vals) and (vals.min() < 0 or vals.max() >= len(names)):
                bad = vals[(vals < 0) | (vals >= len(names))][0]
                raise ShiftlabError(f"{where}: label {bad} is out of range for {len(names)} label names")
            return vals.astype(np.int64), names
        uniq, codes = np.unique(vals, return_inverse=True)
        return codes.astype(np.int64), [str(int(u)) for u in uniq]
    if vals.dtype.kind == "U":
        if label_names is not None:
            names = [str(n) for n in label_names]
            index = {n: i for i, n in enumerate(names)}
            missing = sorted(set(vals.tolist()) - set(index))
            if missing:
                raise ShiftlabError(f"{where}: label(s) {missing[:5]} are not in label_names")
            return np.array([index[v] for v in vals.tolist()], dtype=np.int64), names
        uniq, codes = np.unique(vals, return_inverse=True)
        return codes.astype(np.int64), [str(u) for u in uniq]
    raise ShiftlabError(f"{where}: labels must be integers or strings, got dtype {vals.dtype}")


def _image_column(images: np.ndarray) -> pa.ChunkedArray:
    """The ``image`` column (Array3D (C, H, W)) built from (N, H, W, C) uint8 without copies per row."""
    n, h, w, c = images.shape
    ext = hfds.Array3D(shape=(c, h, w), dtype="uint8")()  # stored channels-first (schema.py)
    per = h * w * c
    step = max(1, _MAX_CHUNK_VALUES // per)
    chunks = []
    for start in range(0, n, step):
        block = np.ascontiguousarray(images[start : start + step].transpose(0, 3, 1, 2))
        m = len(block)
        flat = pa.array(block.reshape(-1), type=pa.uint8())
        inner = pa.ListArray.from_arrays(pa.array(np.arange(0, m * c * h * w + 1, w, dtype=np.int32)), flat)
        mid = pa.ListArray.from_arrays(pa.array(np.arange(0, m * c * h + 1, h, dtype=np.int32)), inner)
        outer = pa.ListArray.from_arrays(pa.array(np.arange(0, m * c + 1, c, dtype=np.int32)), mid)
        chunks.append(pa.ExtensionArray.from_storage(ext, outer))
    return pa.chunked_array(chunks, type=ext)


def _build(images, labels, names, ids, domains, groups, recipes) -> hfds.Dataset:
    """Assemble the schema dataset in one go from numpy arrays and string lists."""
    images = np.asarray(images)
    labels = np.asarray(labels, dtype=np.int64)
    n = len(images)
    ids, domains, groups, recipes = list(ids), list(domains), list(groups), list(recipes)
    feats = schema.image_features(names, images.shape[1:])
    columns = {
        "id": pa.array(ids, pa.string()),
        "image": _image_column(images),
        "label": pa.array(labels, pa.int64()),
        "domain": pa.array(domains, pa.string()),
        "origin": pa.array(["real"] * n, pa.string()),
        "group": pa.array(groups, pa.string()),
        "parent": pa.array([""] * n, pa.string()),
        "recipe": pa.array(recipes, pa.string()),
    }
    table = pa.table({k: columns[k] for k in feats})
    # A content hash as fingerprint: datasets would otherwise pickle the whole table to hash it (slow).
    h = hashlib.blake2b(digest_size=8)
    h.update(repr((list(names), images.shape)).encode())
    h.update(np.ascontiguousarray(images).data)
    h.update(labels.tobytes())
    for col in (ids, domains, groups, recipes):
        h.update("\x00".join(col).encode())
    return hfds.Dataset(
        hfds.table.InMemoryTable(table), info=hfds.DatasetInfo(features=feats), fingerprint=h.hexdigest()
    )


def _width(n: int) -> int:
    return max(5, len(str(max(0, n - 1))))


# --------------------------------------------------------------------------- pixel conversion


def _scale_int(a: np.ndarray) -> np.ndarray:
    """Integer pixels -> uint8 by the full range of their dtype (not clipped)."""
    info = np.iinfo(a.dtype)
    scaled = (a.astype(np.float64) - float(info.min)) * (255.0 / (float(info.max) - float(info.min)))
    return np.rint(scaled).astype(np.uint8)


def _over_white(a: np.ndarray) -> np.ndarray:
    """(H, W, 2) grey+alpha or (H, W, 4) RGB+alpha uint8 -> composited over white, alpha dropped."""
    color = a[..., :-1].astype(np.uint32)
    alpha = a[..., -1:].astype(np.uint32)
    return ((color * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)


def _to_mode(a: np.ndarray, mode: str) -> np.ndarray:
    """uint8 (H, W) or (H, W, 1|3) -> (H, W, 1) for grey, (H, W, 3) for rgb."""
    if a.ndim == 2:
        a = a[:, :, None]
    if mode == "grey" and a.shape[2] == 3:
        a = np.asarray(Image.fromarray(np.ascontiguousarray(a), "RGB").convert("L"))[:, :, None]
    elif mode == "rgb" and a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return np.ascontiguousarray(a)


def _pil_to_array(img: Image.Image, mode: str, where: str) -> np.ndarray:
    if img.mode == "F":
        raise ShiftlabError(f"{where}: float image (PIL mode F) is not supported; convert it to 8 or 16 bit first")
    if img.mode.startswith("I;16") or img.mode == "I":
        a = np.asarray(img)
        # PIL opens many 16-bit files as 32-bit mode "I": values within 0..65535 are 16-bit data
        if img.mode == "I" and a.size and a.min() >= 0 and a.max() <= 65535:
            a = a.astype(np.uint16)
        return _to_mode(_scale_int(a), mode)
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        alpha_mode = "LA" if img.mode in ("LA", "La") else "RGBA"
        return _to_mode(_over_white(np.asarray(img.convert(alpha_mode))), mode)
    return _to_mode(np.asarray(img.convert("L" if mode == "grey" else "RGB")), mode)


def _array_to_uint8(a: np.ndarray, where: str) -> np.ndarray:
    """An array image of any supported dtype -> uint8 (H, W) or (H, W, C), alpha still in place."""
    if a.dtype == object:
        try:
            a = np.array(a.tolist())
        except ValueError:
            raise ShiftlabError(f"{where}: image rows have different lengths (ragged nested lists)") from None
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (2, 3, 4))) or 0 in a.shape:
        raise ShiftlabError(f"{where}: image array has shape {a.shape}; expected (H, W) or (H, W, C) with C in 1..4")
    kind, size = a.dtype.kind, a.dtype.itemsize
    if a.dtype == np.uint8:
        return a
    if kind == "b":
        return a.astype(np.uint8) * 255
    if kind in "iu" and size <= 4:
        return _scale_int(a)
    if kind in "iu":
        if a.min() < 0 or a.max() > 255:
            raise ShiftlabError(
                f"{where}: {a.dtype} pixel values must lie in 0..255 (got {a.min()}..{a.max()}); "
                "store 16-bit images as uint16"
            )
        return a.astype(np.uint8)
    if kind == "f":
        raise ShiftlabError(f"{where}: float images ({a.dtype}) are not supported; convert them to uint8 first")
    raise ShiftlabError(f"{where}: unsupported pixel dtype {a.dtype}")


def to_uint8_hwc(image, mode: str = "rgb", where: str = "image") -> np.ndarray:
    """A PIL image or array-like -> uint8 (H, W, 1) for ``grey`` or (H, W, 3) for ``rgb`` (module docstring rules)."""
    if mode not in MODES:
        raise ShiftlabError(f"{where}: mode must be one of {', '.join(MODES)}, got {mode!r}")
    if isinstance(image, Image.Image):
        return _pil_to_array(image, mode, where)
    try:
        a = np.asarray(image)
    except ValueError:  # numpy refuses ragged nested lists
        raise ShiftlabError(f"{where}: image rows have different lengths (ragged nested lists)") from None
    a = _array_to_uint8(a, where)
    if a.ndim == 3 and a.shape[2] in (2, 4):
        a = _over_white(a)
    return _to_mode(a, mode)


def _open_pil(source, mode: str, where: str) -> np.ndarray:
    """Decode a file path or a bytes buffer with PIL and convert it; PIL errors -> ShiftlabError."""
    try:
        with Image.open(source) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            return _pil_to_array(im, mode, where)
    except ShiftlabError:
        raise
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, struct.error ... on bad files
        reason = " ".join(str(e).split()) or type(e).__name__
        raise ShiftlabError(f"{where}: cannot read image ({reason})") from None


_local = threading.local()


def _resize(a: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Resize the shorter side to cover ``size`` = [H, W], then centre-crop (albumentations)."""
    height, width = int(size[0]), int(size[1])
    if a.shape[:2] == (height, width):
        return a
    cache = getattr(_local, "transforms", None)
    if cache is None:
        cache = _local.transforms = {}
    tr = cache.get((height, width))
    if tr is None:
        os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network check on import
        import albumentations as A
        import cv2

        tr = cache[(height, width)] = A.Compose(
            [
                A.SmallestMaxSize(
                    max_size_hw=(height, width), interpolation=cv2.INTER_LINEAR, area_for_downscale="image"
                ),
                A.CenterCrop(height, width),
            ]
        )
    out = tr(image=a)["image"]
    if out.ndim == 2:
        out = out[:, :, None]
    return np.ascontiguousarray(out, dtype=np.uint8)


def _convert_many(
    items: Sequence[tuple[str, object]],
    load: Callable[[object, str], np.ndarray],
    size,
    size_key: str,
    desc: str,
) -> np.ndarray:
    """Load and convert every item (in threads, order kept) into one (N, H, W, C) uint8 array.

    ``items`` are (where, payload) pairs; ``load(payload, where)`` returns a converted
    (H, W, C) array. Without ``size`` all images must share the first one's size.
    """

    def work(item):
        where, payload = item
        a = load(payload, where)
        return _resize(a, size) if size else a

    out = None
    first = None
    workers = max(1, min(8, os.cpu_count() or 1))
    bar = tqdm(total=len(items), desc=desc, unit="img", disable=len(items) < _PROGRESS_MIN)
    ex = ThreadPoolExecutor(workers)
    try:
        for i, a in enumerate(ex.map(work, items)):
            if out is None:
                out = np.empty((len(items),) + a.shape, dtype=np.uint8)
                first = items[i][0]
            elif a.shape != out.shape[1:]:
                h, w = a.shape[:2]
                eh, ew = out.shape[1:3]
                raise ShiftlabError(
                    f"{items[i][0]}: image is {h}x{w} (HxW) but {first} is {eh}x{ew}; all images must share "
                    f"one size: set {size_key} to [height, width] to resize them"
                )
            out[i] = a
            bar.update()
    finally:
        ex.shutdown(wait=True, cancel_futures=True)
        bar.close()
    return out


# --------------------------------------------------------------------------- Fashion-MNIST


def _read_idx(path: Path, magic: int, ndim: int, what: str) -> np.ndarray:
    key = f"{_KEY}.fashion_mnist.dir"
    if not path.is_file():
        raise ShiftlabError(f"{path}: file not found ({key} should hold the four Fashion-MNIST .gz files)")
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise ShiftlabError(f"{path}: corrupt or truncated gzip file ({e})") from None
    if len(data) < 4 + 4 * ndim:
        raise ShiftlabError(f"{path}: truncated: {len(data)} bytes is too short for an IDX header")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise ShiftlabError(f"{path}: not an IDX file of {what} (magic number 0x{found:08x}, expected 0x{magic:08x})")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    need = int(np.prod(dims, dtype=np.int64))
    have = len(data) - 4 - 4 * ndim
    if have < need:
        raise ShiftlabError(
            f"{path}: truncated: header says {'x'.join(map(str, dims))} bytes of {what} but only {have} follow"
        )
    if have > need:
        raise ShiftlabError(f"{path}: corrupt: {have - need} unexpected bytes after the {what} data")
    return np.frombuffer(data, dtype=np.uint8, count=need, offset=4 + 4 * ndim).reshape(dims)


def _read_fashion_split(directory: Path, domain: str) -> tuple[np.ndarray, np.ndarray]:
    images_file, labels_file, _ = FASHION_MNIST_FILES[domain]
    images = _read_idx(directory / images_file, 0x00000803, 3, "images")
    labels = _read_idx(directory / labels_file, 0x00000801, 1, "labels")
    if len(images) != len(labels):
        raise ShiftlabError(
            f"{directory / images_file}: {len(images)} images but {directory / labels_file} has {len(labels)} labels"
        )
    if len(labels) == 0:
        raise ShiftlabError(f"{directory / labels_file}: no rows")
    if labels.max() >= len(FASHION_MNIST_LABELS):
        raise ShiftlabError(
            f"{directory / labels_file}: label value {int(labels.max())} is out of range 0..{len(FASHION_MNIST_LABELS) - 1}"
        )
    return images, labels


def from_fashion_mnist(
    directory: str | os.PathLike = "/usr/share/datasets/fashion-mnist",
    source_rows: int | None = None,
    target_rows: int | None = None,
    seed: int = 0,
) -> hfds.Dataset:
    """Fashion-MNIST from its four gzipped IDX files: train -> source, t10k -> target.

    Images are (28, 28, 1) uint8, labels the ten class names
    (:data:`FASHION_MNIST_LABELS`). Row ids are ``fashion_mnist/train/00042`` and
    ``fashion_mnist/test/00042`` (the index in its file); every row is its own group;
    the recipe is ``{"file": <images file name>, "index": i, "source": "fashion_mnist"}``.
    ``source_rows`` / ``target_rows`` take a label-stratified subsample
    (:func:`stratified_indices`, seeded by ``seed`` and the domain); None keeps every row.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ShiftlabError(f"{directory}: folder not found ({_KEY}.fashion_mnist.dir)")
    parts_images, parts_labels, ids, domains, recipes = [], [], [], [], []
    for domain, rows in (("source", source_rows), ("target", target_rows)):
        images, labels = _read_fashion_split(directory, domain)
        images_file, _, split = FASHION_MNIST_FILES[domain]
        keep = stratified_indices(labels, rows, seed, "fashion_mnist", domain)
        width = _width(len(labels))
        parts_images.append(images[keep])
        parts_labels.append(labels[keep])
        ids += [f"fashion_mnist/{split}/{i:0{width}d}" for i in keep.tolist()]
        domains += [domain] * len(keep)
        recipes += [store.recipe(source="fashion_mnist", file=images_file, index=i) for i in keep.tolist()]
    images = np.concatenate(parts_images)[:, :, :, None]
    labels = np.concatenate(parts_labels).astype(np.int64)
    return _build(images, labels, FASHION_MNIST_LABELS, ids, domains, ids, recipes)


# --------------------------------------------------------------------------- folders


def _scan(folder, domain: str) -> list[tuple[str, str, Path]]:
    """(class, path relative to the class folder (posix), file) for every image, sorted."""
    found = []
    for cls in folders.class_folders(folder, f"{_KEY}.folder.{domain}"):
        files = folders.files(cls, IMAGE_EXTENSIONS)
        if not files:
            raise ShiftlabError(
                f"{cls}: class folder has no image files ({', '.join(e[1:] for e in IMAGE_EXTENSIONS)})"
            )
        found += [(cls.name, p.relative_to(cls).as_posix(), p) for p in files]
    return found


def _load_file(path: Path, mode: str, where: str) -> np.ndarray:
    try:
        empty = path.stat().st_size == 0
    except OSError as e:
        raise ShiftlabError(f"{where}: cannot read file ({e.strerror or e})") from None
    if empty:
        raise ShiftlabError(f"{where}: empty file (0 bytes)")
    return _open_pil(path, mode, where)


def from_folder(
    source: str | os.PathLike | None = None,
    target: str | os.PathLike | None = None,
    size: Sequence[int] | None = None,
    mode: str = "rgb",
    group_pattern: str | None = None,
) -> hfds.Dataset:
    """Images from folders: ``source`` and/or ``target``, each with one subfolder per class.

    The class is the subfolder name; images are found recursively under it (png,
    jpg, jpeg, bmp, gif, tif, tiff, webp, any case; hidden files and folders are
    skipped) and read in sorted order. Label names are the sorted union of the class
    names of both folders.

    * ``mode``: ``grey`` -> (H, W, 1), ``rgb`` -> (H, W, 3). Conversions: palette,
      CMYK, grey and RGB are converted by PIL; alpha (RGBA, LA, PA, transparency keys)
      is composited over a white background; 16/32-bit integer greyscale (I;16, I) is
      scaled to 8 bit by the range of its dtype (not clipped); float (F) images are
      an error. EXIF orientation is applied; animated files give their first frame.
    * ``size`` = [H, W]: the shorter side is resized to cover H x W
      (``A.SmallestMaxSize``, area interpolation when downscaling, bilinear when
      upscaling), then the centre is cropped (``A.CenterCrop``). Without ``size`` all
      images must share one size.
    * ``group_pattern``: a regex searched in the file's path relative to its class
      folder (posix, without extension); the group is ``<domain>/`` + its first capture
      group (or the whole match). By default every file is its own group (its id).

    Row ids are ``<domain>/<class>/<relative path>``; recipes record the folder (as
    given) and the file relative to it.
    """
    if source is None and target is None:
        raise ShiftlabError(
            f"{_KEY}.folder: set source and/or target (a folder with one subfolder per class) when kind is folder"
        )
    if mode not in MODES:
        raise ShiftlabError(f"{_KEY}.folder.mode: must be one of {', '.join(MODES)}, got {mode!r}")
    group_key = f"{_KEY}.folder.group_pattern"
    regex = folders.group_regex(group_pattern, group_key)
    rows = []  # (domain, class, rel, path, folder)
    for domain, folder in (("source", source), ("target", target)):
        if folder is not None:
            rows += [(domain, cls, rel, p, str(folder)) for cls, rel, p in _scan(folder, domain)]
    names = sorted({r[1] for r in rows})
    index = {n: i for i, n in enumerate(names)}
    ids, groups, recipes = [], [], []
    for domain, cls, rel, path, folder in rows:
        row_id = f"{domain}/{cls}/{rel}"
        ids.append(row_id)
        recipes.append(store.recipe(source="folder", folder=folder, file=f"{cls}/{rel}"))
        groups.append(folders.group_of(regex, domain, rel, path, row_id, group_key))
    items = [(str(r[3]), r[3]) for r in rows]
    images = _convert_many(
        items,
        lambda p, where: _load_file(p, mode, where),
        size,
        f"{_KEY}.folder.size",
        "reading images",
    )
    labels = np.array([index[r[1]] for r in rows], dtype=np.int64)
    return _build(images, labels, names, ids, [r[0] for r in rows], groups, recipes)


# --------------------------------------------------------------------------- Hugging Face hub


_TRUE = {"1", "ON", "YES", "TRUE"}


@contextlib.contextmanager
def _offline_from_env():
    """Honour HF_HUB_OFFLINE / HF_DATASETS_OFFLINE set after ``datasets`` was imported.

    Both libraries read the variables once at import; a later setting (a test, a
    wrapper script) would otherwise be ignored and an unreachable hub retried for ~20 s.
    """
    env = os.environ.get("HF_DATASETS_OFFLINE")
    if env is None:
        env = os.environ.get("HF_HUB_OFFLINE")
    if env is None or env.upper() not in _TRUE or hfds.config.HF_HUB_OFFLINE:
        yield
        return
    import huggingface_hub.constants as hub_constants

    saved = (hfds.config.HF_HUB_OFFLINE, hfds.config.HF_DATASETS_OFFLINE, hub_constants.HF_HUB_OFFLINE)
    hfds.config.HF_HUB_OFFLINE = hfds.config.HF_DATASETS_OFFLINE = hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hfds.config.HF_HUB_OFFLINE, hfds.config.HF_DATASETS_OFFLINE, hub_constants.HF_HUB_OFFLINE = saved


def _reason(e: BaseException) -> str:
    text = " ".join(str(e).split()) or "no details"
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(e).__name__}: {text}"


def _hub_labels(ds_by_domain: dict, column: str, where: str) -> tuple[dict, list[str]]:
    """Per-domain integer codes and the shared label names."""
    feats = {d: ds.features[column] for d, ds in ds_by_domain.items()}
    is_class = [isinstance(f, hfds.ClassLabel) for f in feats.values()]
    if all(is_class):
        names = []
        for f in feats.values():
            names += [n for n in f.names if n not in names]
        codes = {}
        for d, ds in ds_by_domain.items():
            lut = np.array([names.index(n) for n in feats[d].names], dtype=np.int64)
            col = ds.data.column(column)
            raw = None if col.null_count else col.to_numpy().astype(np.int64)
            if raw is None or np.any(raw < 0) or np.any(raw >= len(lut)):
                raise ShiftlabError(f"{where}: column '{column}' has missing or out-of-range class labels")
            codes[d] = lut[raw]
        return codes, names
    if any(is_class):
        raise ShiftlabError(f"{where}: column '{column}' is a ClassLabel in one split but not in the other")
    values = {d: ds[column] for d, ds in ds_by_domain.items()}
    for d, v in values.items():
        if any(x is None for x in v):
            raise ShiftlabError(f"{where}: column '{column}' has missing labels")
    domains = list(values)
    all_codes, names = _encode_labels(
        np.array(sum((list(values[d]) for d in domains), []), dtype=object), None, f"{where}: column '{column}'"
    )
    codes, start = {}, 0
    for d in domains:
        codes[d] = all_codes[start : start + len(values[d])]
        start += len(values[d])
    return codes, names


def _hub_payloads(ds: hfds.Dataset, column: str) -> list:
    """Raw image values for every row of ``ds`` (encoded bytes/paths for Image features, arrays otherwise)."""
    if isinstance(ds.features[column], hfds.Image):
        return list(ds.select_columns([column]).cast_column(column, hfds.Image(decode=False))[column])
    out = []
    for batch in ds.select_columns([column]).with_format("numpy").iter(batch_size=1000):
        out.extend(batch[column])
    return out


def _hub_load(value, mode: str, where: str) -> np.ndarray:
    if isinstance(value, dict) and ("bytes" in value or "path" in value):
        if value.get("bytes"):
            return _open_pil(io.BytesIO(value["bytes"]), mode, where)
        if value.get("path"):
            return _open_pil(value["path"], mode, where)
        raise ShiftlabError(f"{where}: empty image")
    if value is None:
        raise ShiftlabError(f"{where}: missing image")
    return to_uint8_hwc(value, mode, where)


def from_hub(
    id: str,
    name: str | None = None,
    revision: str | None = None,
    source_split: str = "train",
    target_split: str = "test",
    image_column: str = "image",
    label_column: str = "label",
    group_column: str | None = None,
    size: Sequence[int] | None = None,
    mode: str = "rgb",
    source_rows: int | None = None,
    target_rows: int | None = None,
    seed: int = 0,
) -> hfds.Dataset:
    """A Hugging Face dataset (hub id or local dataset directory): ``source_split`` -> source, ``target_split`` -> target.

    Loaded with ``datasets.load_dataset(id, name, revision=revision)``; HF_HUB_OFFLINE=1
    (read at call time) makes an uncached hub id fail at once. Images may be an Image
    feature, arrays or nested lists; they are converted like folder images (see
    :func:`from_folder` for ``mode``, ``size`` and the conversions). Labels: a
    ClassLabel keeps its names; plain ints or strings get their sorted distinct values
    as names. ``group_column`` gives groups ``<domain>/<value>``; by default every row
    is its own group. ``source_rows`` / ``target_rows``: label-stratified subsample as
    in :func:`from_fashion_mnist`. Row ids are ``<dataset>/<split>/<index>`` with
    ``<dataset>`` the hub id (the directory name for a local directory).
    Any load problem -> ``ShiftlabError("hub dataset '<id>': <reason>")``.
    """
    where = f"hub dataset '{id}'"
    if mode not in MODES:
        raise ShiftlabError(f"{_KEY}.hub.mode: must be one of {', '.join(MODES)}, got {mode!r}")
    if source_split == target_split:
        raise ShiftlabError(
            f"{where}: source_split and target_split are both '{source_split}' ({_KEY}.hub); they must differ"
        )
    with _offline_from_env():
        try:
            loaded = hfds.load_dataset(id, name, revision=revision)
        except Exception as e:  # hub, network, file-format and config errors alike
            raise ShiftlabError(f"{where}: {_reason(e)}") from None
    if not isinstance(loaded, hfds.DatasetDict):
        loaded = hfds.DatasetDict({"train": loaded})
    for domain, split in (("source", source_split), ("target", target_split)):
        if split not in loaded:
            raise ShiftlabError(
                f"{where}: no split '{split}' (available: {', '.join(loaded)}; {_KEY}.hub.{domain}_split)"
            )
    splits = {}
    for domain, split in (("source", source_split), ("target", target_split)):
        ds = loaded[split]
        for col, key in ((image_column, "image_column"), (label_column, "label_column"), (group_column, "group_column")):
            if col is not None and col not in ds.column_names:
                raise ShiftlabError(
                    f"{where}: split '{split}' has no column '{col}' "
                    f"(columns: {', '.join(ds.column_names)}; {_KEY}.hub.{key})"
                )
        if len(ds) == 0:
            raise ShiftlabError(f"{where}: split '{split}' has no rows")
        splits[domain] = ds
    codes, names = _hub_labels(splits, label_column, where)

    prefix = Path(id).name if os.path.isdir(id) else id.strip("/")
    items, labels, ids, domains, groups, recipes = [], [], [], [], [], []
    for domain, rows in (("source", source_rows), ("target", target_rows)):
        ds, split = splits[domain], (source_split if domain == "source" else target_split)
        keep = stratified_indices(codes[domain], rows, seed, "hub", domain)
        sub = ds.select(keep) if len(keep) < len(ds) else ds
        width = _width(len(ds))
        row_ids = [f"{prefix}/{split}/{i:0{width}d}" for i in keep.tolist()]
        payloads = _hub_payloads(sub, image_column)
        items += [(f"{where} {split}[{i}]", v) for i, v in zip(keep.tolist(), payloads)]
        labels.append(codes[domain][keep])
        ids += row_ids
        domains += [domain] * len(keep)
        if group_column is None:
            groups += row_ids
        else:
            for i, g in zip(keep.tolist(), sub[group_column]):
                if g is None:
                    raise ShiftlabError(f"{where} {split}[{i}]: missing value in group column '{group_column}'")
                groups.append(f"{domain}/{g}")
        recipes += [
            store.recipe(source="hub", dataset=id, name=name, revision=revision, split=split, index=i)
            for i in keep.tolist()
        ]
    images = _convert_many(
        items, lambda v, w: _hub_load(v, mode, w), size, f"{_KEY}.hub.size", f"converting {id}"
    )
    return _build(images, np.concatenate(labels), names, ids, domains, groups, recipes)


# --------------------------------------------------------------------------- arrays


def from_arrays(
    images,
    labels,
    domain: str | Sequence[str],
    label_names: Sequence[str] | None = None,
    groups: Sequence[str] | None = None,
    ids: Sequence[str] | None = None,
    name: str = "arrays",
) -> hfds.Dataset:
    """In-memory images: uint8 (N, H, W) or (N, H, W, C) with C in {1, 3}.

    ``labels``: ints (indices into ``label_names``; without names, the sorted distinct
    values become the names) or strings (sorted distinct values, or ``label_names``).
    ``domain``: ``source``/``target`` for all rows, or one per row. Ids default to
    ``<name>/<domain>/<index>``, groups to the ids; recipes are
    ``{"index": i, "source": <name>}``.
    """
    arr = np.asarray(images)
    if arr.dtype != np.uint8:
        raise ShiftlabError(f"{name}: images must be uint8 (got {arr.dtype}); convert them to uint8 first")
    if arr.ndim == 3:
        arr = arr[:, :, :, None]
    if arr.ndim != 4 or arr.shape[3] not in (1, 3):
        raise ShiftlabError(f"{name}: images must have shape (N, H, W) or (N, H, W, C) with C 1 or 3, got {arr.shape}")
    n = len(arr)
    if n == 0 or 0 in arr.shape:
        raise ShiftlabError(f"{name}: no images (shape {arr.shape})")
    codes, names = _encode_labels(labels, label_names, name)
    if len(codes) != n:
        raise ShiftlabError(f"{name}: {n} images but {len(codes)} labels")
    domains = [domain] * n if isinstance(domain, str) else [str(d) for d in domain]
    if len(domains) != n:
        raise ShiftlabError(f"{name}: {n} images but {len(domains)} domains")
    bad = sorted(set(domains) - set(schema.DOMAINS))
    if bad:
        raise ShiftlabError(f"{name}: domain {bad[0]!r} is not one of {', '.join(schema.DOMAINS)}")
    width = _width(n)
    if ids is None:
        ids = [f"{name}/{d}/{i:0{width}d}" for i, d in enumerate(domains)]
    ids = [str(i) for i in ids]
    if len(ids) != n or len(set(ids)) != n:
        raise ShiftlabError(f"{name}: ids must be {n} distinct values")
    groups = list(ids) if groups is None else [str(g) for g in groups]
    if len(groups) != n:
        raise ShiftlabError(f"{name}: {n} images but {len(groups)} groups")
    recipes = [store.recipe(source=name, index=i) for i in range(n)]
    return _build(arr, codes, names, ids, domains, groups, recipes)
