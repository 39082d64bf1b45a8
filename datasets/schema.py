"""The interchange schema shared by every stage.

Every dataset a stage reads or writes is a Hugging Face ``Dataset`` with:

=============== ==================================================================
``id``          unique row id, stable across runs (``fashion_mnist/train/00042``)
``image``       uint8 array stored channels-first (C, H, W), C = 1 (grey) or 3 (RGB)
``audio``       float32 mono waveform                              -- audio data
``sampling_rate`` int, Hz                                          -- audio data
``label``       ``ClassLabel`` (names kept in the features)
``domain``      ``source`` | ``target``
``origin``      ``real`` | ``synthetic``
``group``       the unit that must never cross splits (speaker, car, source image)
``parent``      for synthetic rows the ``id`` of the real row it was made from; "" otherwise
``recipe``      canonical JSON: everything needed to regenerate (or trace) the row
=============== ==================================================================

Images are stored channels-first because Arrow keeps one int32 offset per innermost
list: (H, W, 1) storage costs 5x the pixels, (C, H, W) about 1.15x, and batches come
out in torch's NCHW layout. :func:`hwc` / :func:`chw_batch` convert at the boundary
(albumentations and PIL work in HWC).

Split datasets add a ``weight`` column (float32; see :mod:`shiftlab.datasets.splits`); their
splits are :data:`SPLITS` plus, optionally, the evaluation-only :data:`CHECK_SPLITS`.
"""

from __future__ import annotations

from typing import Sequence

import datasets as hfds
import numpy as np

from shiftlab.errors import ShiftlabError

DOMAINS = ("source", "target")
ORIGINS = ("real", "synthetic")
SPLITS = ("train", "train_dev", "dev", "test")
#: evaluation-only splits a split DatasetDict may carry besides :data:`SPLITS`: real target rows
#: that every trained model is scored on and reported separately, never trained on, never
#: synthesised from, never used to choose anything (``codrivers``: the real trigger-rally
#: recordings under held-out car noise, :func:`shiftlab.mixing.target.make_codrivers`)
CHECK_SPLITS = ("codrivers",)
COMMON = ("id", "label", "domain", "origin", "group", "parent", "recipe")
IMAGE_COLUMNS = ("id", "image", "label", "domain", "origin", "group", "parent", "recipe")
AUDIO_COLUMNS = ("id", "audio", "sampling_rate", "label", "domain", "origin", "group", "parent", "recipe")


def _meta(label_names: Sequence[str]) -> dict:
    return {
        "id": hfds.Value("string"),
        "label": hfds.ClassLabel(names=list(label_names)),
        "domain": hfds.Value("string"),
        "origin": hfds.Value("string"),
        "group": hfds.Value("string"),
        "parent": hfds.Value("string"),
        "recipe": hfds.Value("string"),
    }


def image_features(label_names: Sequence[str], shape: tuple[int, int, int]) -> hfds.Features:
    """Features of an image dataset whose images all have ``shape`` = (H, W, C).

    The column itself is stored channels-first, ``Array3D(shape=(C, H, W))``.
    """
    h, w, c = (int(s) for s in shape)
    meta = _meta(label_names)
    return hfds.Features({"id": meta.pop("id"), "image": hfds.Array3D(shape=(c, h, w), dtype="uint8"), **meta})


def image_shape(ds: hfds.Dataset) -> tuple[int, int, int]:
    """(H, W, C) of the images of ``ds``."""
    c, h, w = ds.features["image"].shape
    return h, w, c


def hwc(image) -> np.ndarray:
    """One stored image (C, H, W) as uint8 (H, W, C)."""
    a = np.asarray(image, dtype=np.uint8)
    if a.ndim != 3:
        raise ShiftlabError(f"stored image has {a.ndim} dimensions, expected 3 (C, H, W)")
    return np.ascontiguousarray(a.transpose(1, 2, 0))


def chw_batch(ds: hfds.Dataset, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Rows ``start:stop`` of the image column as a uint8 (N, C, H, W) array (no per-row Python)."""
    import pyarrow as pa

    c, h, w = ds.features["image"].shape
    n = len(ds)
    start, stop, _ = slice(start, stop).indices(n)
    stop = max(start, stop)
    # straight from the Arrow storage (nested uint8 lists): going through the dataset's own
    # slicing deserialises the Array3D extension type once per row (~30 us a row)
    table = ds.data.table if hasattr(ds.data, "table") else ds.data
    chunks = [ch.storage if isinstance(ch, pa.ExtensionArray) else ch for ch in table.column("image").chunks]
    storage = chunks[0] if len(chunks) == 1 else pa.chunked_array(chunks).combine_chunks()
    indices = getattr(ds, "_indices", None)
    if indices is not None:
        idx = indices.column(0).to_numpy()[start:stop]
        storage = storage.take(pa.array(idx, pa.uint64()))
    else:
        storage = storage.slice(start, stop - start)
    flat = storage.flatten().flatten().flatten().to_numpy(zero_copy_only=False)
    return flat.astype(np.uint8, copy=False).reshape(stop - start, c, h, w)


def audio_features(label_names: Sequence[str]) -> hfds.Features:
    meta = _meta(label_names)
    return hfds.Features(
        {
            "id": meta.pop("id"),
            "audio": hfds.List(hfds.Value("float32")),
            "sampling_rate": hfds.Value("int32"),
            **meta,
        }
    )


def modality(ds: hfds.Dataset) -> str:
    """``image`` or ``audio``, from the columns."""
    cols = set(ds.column_names)
    if "image" in cols:
        return "image"
    if "audio" in cols:
        return "audio"
    raise ShiftlabError(f"dataset has neither an image nor an audio column (columns: {sorted(cols)})")


def label_names(ds: hfds.Dataset) -> list[str]:
    feat = ds.features.get("label")
    if not isinstance(feat, hfds.ClassLabel):
        raise ShiftlabError("dataset column 'label' is not a ClassLabel")
    return list(feat.names)


def check(ds: hfds.Dataset, where: str = "dataset") -> None:
    """Raise a one-line ShiftlabError if ``ds`` does not follow the schema."""
    kind = modality(ds)
    need = IMAGE_COLUMNS if kind == "image" else AUDIO_COLUMNS
    missing = [c for c in need if c not in ds.column_names]
    if missing:
        raise ShiftlabError(f"{where}: missing column(s) {', '.join(missing)}")
    if len(ds) == 0:
        raise ShiftlabError(f"{where}: no rows")
    for col, allowed in (("domain", DOMAINS), ("origin", ORIGINS)):
        bad = set(ds.unique(col)) - set(allowed)
        if bad:
            raise ShiftlabError(f"{where}: column {col} has value(s) {sorted(bad)}; allowed: {', '.join(allowed)}")
    ids = ds["id"]
    if len(set(ids)) != len(ids):
        raise ShiftlabError(f"{where}: column id has duplicate values")


def relabel(ds: hfds.Dataset, names: Sequence[str]) -> hfds.Dataset:
    """Re-encode ``label`` against ``names`` (a superset of the dataset's own names)."""
    own = label_names(ds)
    if list(own) == list(names):
        return ds
    index = {n: i for i, n in enumerate(names)}
    missing = [n for n in own if n not in index]
    if missing:
        raise ShiftlabError(f"labels {missing} are not in the target label set")
    lut = np.array([index[n] for n in own], dtype=np.int64)
    labels = lut[np.asarray(ds["label"], dtype=np.int64)]
    feats = ds.features.copy()
    feats["label"] = hfds.ClassLabel(names=list(names))
    ds = ds.remove_columns("label").add_column("label", labels.tolist())
    ds = ds.select_columns(list(feats))
    return ds.cast(feats)


def concat(parts: Sequence[hfds.Dataset]) -> hfds.Dataset:
    """Concatenate datasets of one modality, unifying their label names (sorted union)."""
    parts = [p for p in parts if p is not None]
    if not parts:
        raise ShiftlabError("nothing to concatenate: no rows from any source")
    names = sorted(set().union(*(label_names(p) for p in parts)))
    parts = [relabel(p, names) for p in parts]
    cols = list(parts[0].features)
    parts = [p.select_columns(cols) for p in parts]
    return hfds.concatenate_datasets(parts) if len(parts) > 1 else parts[0]
