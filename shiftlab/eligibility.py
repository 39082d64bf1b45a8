"""Which rows may become synthetic: the one rule shared by motion blur and car-noise mixing.

A synthesis stage (``shiftlab.synth.blur``, ``shiftlab.mixing.mix``) makes synthetic copies of
*eligible parents*: the rows of the ``train`` and ``train_dev`` splits with domain ``source`` and
origin ``real`` (never a target row, never an already synthetic row). The parents are ordered
by id, so a parent's position does not depend on row order or on how rows are divided between
train and train_dev. A seeded ``fraction`` of them is used: ``n = floor(fraction * eligible + 0.5)``
parents, those whose rank in ``seeding.sample_rng(seed, 0, purpose, "select").permutation(eligible)``
is below ``n`` (raising ``fraction`` keeps every earlier choice).

``purpose`` is the stage's seeding name (``"blur"``, ``"mix"``), so the two stages draw
independently from the same seed.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from shiftlab import seeding
from shiftlab.errors import ShiftlabError

#: the splits whose source-domain real rows are parents
PARENT_SPLITS = ("train", "train_dev")
#: columns read as int64 (all others as Python objects)
_INT_COLUMNS = ("label", "sampling_rate")
#: the columns of a parents table (``split`` and ``row`` are added; ``extra`` columns follow)
_COLUMNS = ("id", "label", "domain", "group")
#: the stage that needs each modality (for the error message)
_STAGE = {"image": "synth blur", "audio": "synth mix"}


def columns(ds, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Columns ``names`` of a Dataset as numpy arrays (``label``, ``sampling_rate``: int64; others: object)."""
    if len(ds) == 0:
        return {n: np.array([], dtype=np.int64 if n in _INT_COLUMNS else object) for n in names}
    table = ds.select_columns(list(names)).with_format("arrow")[:]
    out = {}
    for n in names:
        a = table.column(n).to_numpy(zero_copy_only=False)
        out[n] = a.astype(np.int64) if n in _INT_COLUMNS else a.astype(object)
    return out


def eligible_parents(splits, modality: str, extra: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """The eligible parents of ``splits`` in id order: arrays ``id``, ``split`` (name), ``row``,
    ``label``, ``domain``, ``group`` and every column of ``extra``.

    ``modality`` (``image`` or ``audio``) is the column the stage needs; a split without it is an error.
    """
    from shiftlab.datasets import schema

    parts = []
    for s in PARENT_SPLITS:
        if s not in splits:
            raise ShiftlabError(f"splits: missing split {s} (have: {', '.join(splits) or 'none'})")
        d = splits[s]
        if schema.modality(d) != modality:
            raise ShiftlabError(f"splits: {s} is not an {modality} dataset ({_STAGE[modality]} needs an "
                                f"{modality} column)")
        m = columns(d, ("id", "label", "domain", "origin", "group", *extra))
        ok = np.flatnonzero((m["domain"] == "source") & (m["origin"] == "real"))
        part = {"id": m["id"][ok].astype(str), "split": np.full(len(ok), s, dtype=object), "row": ok.astype(np.int64)}
        part.update({k: m[k][ok] for k in (*_COLUMNS[1:], *extra)})
        parts.append(part)
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    order = np.argsort(out["id"], kind="stable")
    return {k: v[order] for k, v in out.items()}


def all_rows(ds, modality: str, split: str = "input", extra: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """Every row of one Dataset as parents, in row order (parent position = row number): the arrays of
    :func:`eligible_parents`, for synthesising copies of ANY dataset in the shiftlab schema."""
    from shiftlab.datasets import schema

    if schema.modality(ds) != modality:
        raise ShiftlabError(f"{split}: not an {modality} dataset in the shiftlab schema (needs an {modality} column)")
    m = columns(ds, (*_COLUMNS, *extra))
    n = len(ds)
    out = {"id": m["id"].astype(str), "split": np.full(n, split, dtype=object), "row": np.arange(n, dtype=np.int64)}
    out.update({k: m[k] for k in (*_COLUMNS[1:], *extra)})
    return out


def choose(n: int, fraction: float, seed: int, purpose: str) -> np.ndarray:
    """Sorted positions of the chosen parents among ``n`` eligible ones (module docstring)."""
    k = int(math.floor(fraction * n + 0.5))
    if k >= n:
        return np.arange(n, dtype=np.int64)
    rank = seeding.sample_rng(seed, 0, purpose, "select").permutation(n)
    return np.flatnonzero(rank < k).astype(np.int64)
