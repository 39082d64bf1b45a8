"""``shiftlab check images``: is the synthetic (motion-blurred) data diverse enough?

Machine Learning Yearning ch. 40 ("the trap"): synthetic data that looks fine to a person
can come from so small a corner of the possible data (one blur kernel; 20 game car models;
one hour of car noise) that a model overfits that corner and fails on new real data.
:func:`run` measures the synthetic rows made by :mod:`shiftlab.synth.blur` against the
mismatch splits and returns a JSON-able report; :func:`gate` turns it into pass / warn /
fail verdicts with thresholds from the cfg; :func:`markdown` renders both.

What is measured (report keys)
    ``kernels`` -- kernel-parameter coverage over **all** synthetic rows, from the
        ``recipe`` column: family mix; histogram + normalised entropy (0 = one bin, 1 = flat,
        :func:`shiftlab.stats.normalized_entropy` over a fixed range) of the *path length*
        (linear ``length``; shake ``max_length * exposure``, the length of the exposed camera
        path, an upper bound of its extent), of ``exposure`` (shake) and ``direction``
        (linear); the number of distinct kernels (identical records), samples per kernel and
        the share of the most used kernel, copies per source image (rows per ``parent``), the
        effective number of kernels from the counts (``exp`` entropy). On a seeded subsample
        of ``max_kernels`` rows the kernels are rendered: the *orientation* of each kernel
        (the principal axis of its second moments, degrees in [0, 180); a straight kernel's
        ``angle mod 180``) gets a histogram + entropy, and the **kernel Vendi score** (cosine
        kernel on :func:`kernels.vector` at ``kernel_size``) is the effective number of
        distinct kernels (1 for identical kernels).
    ``near_duplicates`` -- share of analysed synthetic rows whose centred cosine similarity
        to another analysed row is >= ``near_duplicates.threshold``
        (:func:`shiftlab.stats.near_duplicates`), on pixels at the feature network's working
        size or on features; the same figure for their sharp parents as a reference.
    ``images`` -- Vendi score (RBF kernel, bandwidth from the median heuristic on the
        parents' features, shared by both sets) of the synthetic rows' features and of their
        sharp parents' features, and the ratio synthetic / parents.
    ``realism`` -- domain classifier synthetic vs real **target** rows of
        ``splits["train"]`` on features: out-of-fold AUC with a 95% bootstrap interval
        (:func:`shiftlab.stats.domain_classifier_auc`), and the Frechet distance between the
        feature statistics; both also for the sharp parents vs target, so one sees whether
        the synthesis moved the source toward the target.
    ``probe`` -- held-out kernel probe: an L2 logistic classifier (:func:`stats.fit_logistic`)
        on features predicts the label. It is trained on the synthetic rows of one part ``A``
        of the kernel space and tested on (a) held-out rows of ``A`` (other parents) and (b)
        the *same* held-out parents blurred again (:func:`blur.apply_kernels`) with kernels of
        rows outside ``A``. Error (b) - error (a) is the gap: a model that saw only ``A``
        fails on new blur. The split (``probe.split``): ``family`` (most common family vs
        the rest), ``orientation`` ([0, 90) vs [90, 180) degrees) or ``extent`` (path length
        <= median vs above); ``auto`` takes the first of these with at least
        ``probe.min_rows`` rows on each side, and runs it both ways (A -> B and B -> A; the
        gap is the mean of the two, which cancels most of the "one side is harder"
        effect). When no split has two such sides (e.g. every row has the same kernel,
        :data:`blur.NARROW`) the held-out kernels are drawn from the wide reference space
        ``probe.reference`` (default :data:`kernels.DEFAULT_SAMPLE_CFG`) and the model is
        trained on all analysed rows. The gap gets a paired, stratified percentile
        bootstrap interval.
    ``features`` -- the feature network (:mod:`shiftlab.synth.features`): trained inside the
        check on the labels of at most ``features.train_rows`` real rows of
        ``splits["train"]`` (source and target), nothing downloaded, nothing cached.
    ``subsample`` -- how many rows each part analysed. Image metrics use at most
        ``max_rows`` synthetic rows chosen **by parent** (seeded order of the sorted parent
        ids; all copies of a chosen parent are kept, so copies that look alike are seen) and
        at most ``max_target`` target rows.

Determinism: every random choice derives from ``seed`` through
:func:`shiftlab.seeding.sample_rng`; the same inputs, cfg, torch build and CPU thread count
give an identical report (and identical plots). The report does not depend on the order
of the synthetic rows.
"""

from __future__ import annotations

import copy
import difflib
import json
import math
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from shiftlab import seeding
from shiftlab.errors import ShiftlabError
from shiftlab.synth import features as feat_mod
from shiftlab.synth import kernels

__all__ = ["DEFAULTS", "METRICS", "check_cfg", "run", "gate", "markdown", "kernel_coverage", "kernel_orientation"]

_KEY = "check_images"
_PURPOSE = "check_images"

#: Gateable metrics: name -> (path into the report, what it is).
METRICS: dict[str, tuple[tuple[str | int, ...], str]] = {
    "distinct_kernels": (("kernels", "distinct"), "distinct kernel records among the synthetic rows"),
    "kernel_vendi": (("kernels", "vendi"), "effective number of distinct kernels (Vendi, kernel vectors)"),
    "kernel_effective_number": (("kernels", "effective_number"), "exp(entropy) of the kernel counts"),
    "top_kernel_share": (("kernels", "top_share"), "share of rows using the most common kernel"),
    "orientation_entropy": (("kernels", "params", "orientation", "entropy"), "normalised entropy of kernel orientation"),
    "length_entropy": (("kernels", "params", "length", "entropy"), "normalised entropy of the blur path length"),
    "family_entropy": (("kernels", "params", "family", "entropy"), "normalised entropy of the family mix"),
    "max_copies_per_parent": (("kernels", "copies_per_parent", "max"), "most synthetic rows made from one source image"),
    "near_duplicate_share": (("near_duplicates", "share"), "share of synthetic rows with a near-duplicate"),
    "image_vendi_ratio": (("images", "ratio"), "image Vendi score synthetic / sharp parents"),
    "domain_auc": (("realism", "domain_auc", "auc"), "AUC of a classifier telling synthetic from target"),
    "probe_gap": (("probe", "gap"), "error on held-out kernels minus error on seen kernels"),
    "probe_gap_ci_low": (("probe", "gap_ci", 0), "lower end of the gap's 95% interval"),
}

#: Defaults of the ``check_images`` params section.
DEFAULTS: dict[str, Any] = {
    "seed": 0,  # every random choice derives from it (>= 0)
    "max_rows": 4000,  # synthetic rows for the image metrics (subsample by parent; >= 50)
    "max_target": 2000,  # target rows for the realism metrics (>= 10)
    "max_kernels": 4000,  # kernels rendered for orientation and kernel Vendi (>= 10)
    "kernel_size": 0,  # side of the kernel vectors (odd); 0 = the largest rendered kernel (<= 63)
    "bins": 10,  # histogram bins per kernel parameter (>= 2)
    "length_range": [0.0, 32.0],  # px, histogram range of the blur path length
    "near_duplicates": {
        "space": "pixels",  # "pixels" (at features.size) or "features"
        "threshold": 0.98,  # centred cosine similarity in (0, 1]
    },
    "realism": {
        "folds": 5,  # domain classifier folds (>= 2)
        "n_boot": 1000,  # bootstrap replicates for every interval (>= 0)
    },
    "probe": {
        "split": "auto",  # auto | family | orientation | extent | reference
        "test_fraction": 0.3,  # share of parents held out (0 < f < 1)
        "min_rows": 50,  # rows each side of a split needs (>= 10)
        "l2": 0.001,  # logistic regression L2 penalty (>= 0)
        "reference": copy.deepcopy(kernels.DEFAULT_SAMPLE_CFG),  # kernels.sample cfg of held-out kernels
    },
    "features": copy.deepcopy(feat_mod.DEFAULTS),
    "plots": {"examples": 8},  # columns of the example grids (>= 1)
    "gates": {
        "distinct_kernels": {"min": 20, "action": "fail"},
        "kernel_vendi": {"min": 5.0, "action": "fail"},
        "top_kernel_share": {"max": 0.05, "action": "warn"},
        "orientation_entropy": {"min": 0.5, "action": "fail"},
        "length_entropy": {"min": 0.3, "action": "warn"},
        "max_copies_per_parent": {"max": 20, "action": "warn"},
        "near_duplicate_share": {"max": 0.1, "action": "fail"},
        "probe_gap": {"max": 0.05, "action": "warn"},
        "probe_gap_ci_low": {"max": 0.03, "action": "fail"},
        "domain_auc": {"max": 0.9, "action": "warn"},
    },
}

_SPLITS = ("family", "orientation", "extent")


# --------------------------------------------------------------------------- config


def _unknown(where: str, key, known) -> ShiftlabError:
    known = list(known)
    hint = difflib.get_close_matches(str(key), known, 1)
    if not hint:
        hint = [k for k in known if str(key) in k][:1]
    if hint:
        return ShiftlabError(f"{where}.{key}: unknown key (did you mean {hint[0]}?)")
    return ShiftlabError(f"{where}.{key}: unknown key (expected one of {', '.join(map(str, known))})")


def _num(v) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float, np.integer, np.floating)) and math.isfinite(float(v))


def _int(c: dict, key: str, lo: int, where: str) -> int:
    v = c[key]
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ShiftlabError(f"{where}.{key}: must be an integer >= {lo}, got {v!r}")
    return int(v)


def _merge_section(defaults: Mapping, cfg, where: str) -> dict:
    out = copy.deepcopy(dict(defaults))
    if cfg is None:
        return out
    if not isinstance(cfg, Mapping):
        raise ShiftlabError(f"{where}: must be a mapping of keys, got {cfg!r}")
    for k, v in cfg.items():
        if k not in out:
            raise _unknown(where, k, out)
        out[k] = copy.deepcopy(v)
    return out


def _check_gates(user, where: str) -> dict:
    out = copy.deepcopy(DEFAULTS["gates"])
    if user is None:
        return out
    if not isinstance(user, Mapping):
        raise ShiftlabError(f"{where}: must be a mapping of metric names to {{min|max, action}}, got {user!r}")
    for name, spec in user.items():
        if name not in METRICS:
            raise _unknown(where, name, METRICS)
        if spec is None:  # disabled
            out.pop(name, None)
            continue
        if not isinstance(spec, Mapping):
            raise ShiftlabError(f"{where}.{name}: must be a mapping like {{max: 0.1, action: fail}} or null, got {spec!r}")
        bad = sorted(set(spec) - {"min", "max", "action"})
        if bad:
            raise _unknown(f"{where}.{name}", bad[0], ("min", "max", "action"))
        ops = [k for k in ("min", "max") if k in spec]
        if len(ops) > 1:
            raise ShiftlabError(f"{where}.{name}: give either min or max, not both")
        base = out.get(name, {"action": "fail"})
        new = {"action": spec.get("action", base.get("action", "fail"))}
        if ops:
            new[ops[0]] = spec[ops[0]]
        else:
            old = [k for k in ("min", "max") if k in base]
            if not old:
                raise ShiftlabError(f"{where}.{name}: needs a threshold (min or max)")
            new[old[0]] = base[old[0]]
        op = "min" if "min" in new else "max"
        if not _num(new[op]):
            raise ShiftlabError(f"{where}.{name}.{op}: must be a finite number, got {new[op]!r}")
        new[op] = float(new[op])
        if new["action"] not in ("fail", "warn"):
            raise ShiftlabError(f"{where}.{name}.action: must be fail or warn, got {new['action']!r}")
        out[name] = new
    return out


def check_cfg(cfg: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """:data:`DEFAULTS` with ``cfg`` merged over it (nested sections key by key), validated.

    ``gates`` entries merge per metric: ``{probe_gap: {max: 0.1}}`` keeps the default
    action, ``{metric: null}`` disables that gate, and a new metric (one of
    :data:`METRICS`) may be added. Any problem is a one-line :class:`ShiftlabError` naming
    ``check_images.<key>``.
    """
    top = {k: v for k, v in DEFAULTS.items()}
    c = _merge_section(top, None, _KEY)
    if cfg is not None:
        if not isinstance(cfg, Mapping):
            raise ShiftlabError(f"{_KEY}: must be a mapping of keys, got {cfg!r}")
        for k in cfg:
            if k not in c:
                raise _unknown(_KEY, k, c)
    user = dict(cfg or {})
    for k in ("seed", "max_rows", "max_target", "max_kernels", "kernel_size", "bins", "length_range"):
        if k in user:
            c[k] = copy.deepcopy(user[k])
    for sec in ("near_duplicates", "realism", "plots"):
        c[sec] = _merge_section(DEFAULTS[sec], user.get(sec), f"{_KEY}.{sec}")
    probe_user = user.get("probe")
    c["probe"] = _merge_section(DEFAULTS["probe"], probe_user, f"{_KEY}.probe")
    if isinstance(probe_user, Mapping) and "reference" in probe_user:  # replaces, not merges
        c["probe"]["reference"] = copy.deepcopy(probe_user["reference"])
    c["features"] = feat_mod.check_cfg(user.get("features"), f"{_KEY}.features")
    c["gates"] = _check_gates(user.get("gates"), f"{_KEY}.gates")

    _int(c, "seed", 0, _KEY)
    _int(c, "max_rows", 50, _KEY)
    _int(c, "max_target", 10, _KEY)
    _int(c, "max_kernels", 10, _KEY)
    _int(c, "bins", 2, _KEY)
    ks = _int(c, "kernel_size", 0, _KEY)
    if ks and (ks % 2 == 0 or ks > kernels.MAX_AUTO_SIZE):
        raise ShiftlabError(f"{_KEY}.kernel_size: must be 0 (auto) or an odd integer <= {kernels.MAX_AUTO_SIZE}, got {ks}")
    lr = c["length_range"]
    if not (isinstance(lr, (list, tuple)) and len(lr) == 2 and all(_num(v) for v in lr) and 0 <= lr[0] < lr[1]):
        raise ShiftlabError(f"{_KEY}.length_range: must be [low, high] px with 0 <= low < high, got {lr!r}")
    c["length_range"] = [float(lr[0]), float(lr[1])]

    nd = c["near_duplicates"]
    if nd["space"] not in ("pixels", "features"):
        raise ShiftlabError(f"{_KEY}.near_duplicates.space: must be pixels or features, got {nd['space']!r}")
    t = nd["threshold"]
    if not (_num(t) and 0 < float(t) <= 1):
        raise ShiftlabError(f"{_KEY}.near_duplicates.threshold: must be a number in (0, 1], got {t!r}")
    nd["threshold"] = float(t)
    _int(c["realism"], "folds", 2, f"{_KEY}.realism")
    _int(c["realism"], "n_boot", 0, f"{_KEY}.realism")
    _int(c["plots"], "examples", 1, f"{_KEY}.plots")

    p = c["probe"]
    if p["split"] not in ("auto", "reference") + _SPLITS:
        raise ShiftlabError(
            f"{_KEY}.probe.split: must be one of auto, {', '.join(_SPLITS)}, reference; got {p['split']!r}"
        )
    tf = p["test_fraction"]
    if not (_num(tf) and 0 < float(tf) < 1):
        raise ShiftlabError(f"{_KEY}.probe.test_fraction: must be a number in (0, 1), got {tf!r}")
    p["test_fraction"] = float(tf)
    _int(p, "min_rows", 10, f"{_KEY}.probe")
    if not (_num(p["l2"]) and float(p["l2"]) >= 0):
        raise ShiftlabError(f"{_KEY}.probe.l2: must be a number >= 0, got {p['l2']!r}")
    p["l2"] = float(p["l2"])
    try:
        kernels.sample(0, p["reference"])
    except ShiftlabError as e:
        raise ShiftlabError(f"{_KEY}.probe.reference: {e}") from None
    return c


# --------------------------------------------------------------------------- small helpers


def _clean(obj):
    """JSON-able copy: numpy scalars -> Python, NaN/inf -> None, tuples -> lists."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [_clean(v) for v in obj.tolist()]
    if isinstance(obj, str):
        return str(obj)
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    return obj


def _hist(values: np.ndarray, bins: int, lo: float, hi: float) -> dict:
    v = np.asarray(values, dtype=np.float64)
    from shiftlab import stats

    if len(v) == 0:
        return {"n": 0, "range": [lo, hi], "edges": [], "counts": [], "entropy": None,
                "min": None, "max": None, "mean": None}
    counts, edges = np.histogram(np.clip(v, lo, hi), bins=bins, range=(lo, hi))
    return {
        "n": int(len(v)),
        "range": [lo, hi],
        "edges": [float(e) for e in edges],
        "counts": [int(c) for c in counts],
        "entropy": stats.normalized_entropy(np.clip(v, lo, hi), bins, (lo, hi)),
        "min": float(v.min()),
        "max": float(v.max()),
        "mean": float(v.mean()),
    }


def _path_length(rec: Mapping) -> float:
    if rec["family"] == "linear":
        return float(rec["length"])
    if rec["family"] == "shake":
        return float(rec["max_length"]) * float(rec["exposure"])
    return float("nan")


def kernel_orientation(kernel) -> float:
    """Principal-axis orientation of a kernel in degrees, in [0, 180).

    ``kernel``: a :class:`kernels.Kernel`, a record, or a rendered square odd array. The axis
    of the largest second moment of the kernel's mass, in the kernels' (column, row)
    coordinates, so a :class:`kernels.Linear` of length >= 2 px gives ``angle mod 180`` (up
    to rasterisation). 0.0 for an isotropic kernel (e.g. a delta).
    """
    k = kernel if isinstance(kernel, np.ndarray) else kernels.as_kernel(kernel).render()
    c = k.shape[0] // 2
    yy, xx = np.mgrid[-c : c + 1, -c : c + 1].astype(np.float64)
    w = k.astype(np.float64)
    mx, my = (w * xx).sum(), (w * yy).sum()
    cxx = (w * (xx - mx) ** 2).sum()
    cyy = (w * (yy - my) ** 2).sum()
    cxy = (w * (xx - mx) * (yy - my)).sum()
    if abs(cxx - cyy) < 1e-12 and abs(cxy) < 1e-12:
        return 0.0  # isotropic (e.g. a delta): no orientation
    a = 0.5 * math.degrees(math.atan2(2.0 * cxy, cxx - cyy))
    a = round(a, 9) % 180.0
    return 0.0 if a >= 180.0 else a


def _columns(ds, names: Sequence[str]) -> dict[str, np.ndarray]:
    if len(ds) == 0:
        return {n: np.array([], dtype=object) for n in names}
    table = ds.select_columns(list(names)).with_format("arrow")[:]
    out = {}
    for n in names:
        a = table.column(n).to_numpy(zero_copy_only=False)
        out[n] = a.astype(np.int64) if n == "label" else a.astype(object)
    return out


def _read(ds, rows: np.ndarray) -> np.ndarray:
    """uint8 (N, C, H, W) images of ``rows`` of ``ds`` in the given order."""
    from shiftlab.datasets import schema

    rows = np.asarray(rows, dtype=np.int64)
    c, h, w = ds.features["image"].shape
    if len(rows) == 0:
        return np.zeros((0, c, h, w), dtype=np.uint8)
    uniq, inv = np.unique(rows, return_inverse=True)
    return schema.chw_batch(ds.select(uniq.tolist()))[inv.reshape(-1)]


# --------------------------------------------------------------------------- inputs


def _inputs(synthetic, splits):
    from shiftlab.datasets import schema

    if synthetic is None or not hasattr(synthetic, "column_names"):
        raise ShiftlabError("check images: synthetic must be a Dataset (the output of synth blur)")
    if "image" not in synthetic.column_names:
        raise ShiftlabError("check images: synthetic dataset has no image column")
    miss = [c for c in ("id", "label", "parent", "recipe") if c not in synthetic.column_names]
    if miss:
        raise ShiftlabError(f"check images: synthetic dataset lacks column(s) {', '.join(miss)}")
    if len(synthetic) == 0:
        raise ShiftlabError("check images: synthetic dataset has no rows")
    if splits is None or not hasattr(splits, "keys") or "train" not in splits:
        raise ShiftlabError("check images: splits must be a DatasetDict with a train split")
    train = splits["train"]
    if schema.modality(train) != "image":
        raise ShiftlabError("check images: splits train is not an image dataset")
    if tuple(synthetic.features["image"].shape)[0] != tuple(train.features["image"].shape)[0]:
        raise ShiftlabError(
            f"check images: synthetic images have shape {tuple(synthetic.features['image'].shape)} (C, H, W) "
            f"but splits train has {tuple(train.features['image'].shape)}"
        )
    meta = _columns(synthetic, ("id", "label", "parent", "recipe"))
    recs = []
    for i, (rid, r) in enumerate(zip(meta["id"], meta["recipe"])):
        try:
            doc = json.loads(r)
        except (TypeError, json.JSONDecodeError):
            raise ShiftlabError(f"check images: synthetic row {rid}: recipe is not JSON") from None
        k = doc.get("kernel") if isinstance(doc, dict) else None
        if not isinstance(k, dict) or k.get("family") not in kernels.FAMILIES:
            raise ShiftlabError(f"check images: synthetic row {rid}: recipe has no kernel record (not a synth blur row?)")
        recs.append(k)
    return meta, recs


def _parent_index(splits, parents: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(split name, row) of each parent id, searched in train, train_dev, then the other splits."""
    want = {p: None for p in parents}
    order = [s for s in ("train", "train_dev") if s in splits] + [s for s in splits if s not in ("train", "train_dev")]
    for s in order:
        ids = _columns(splits[s], ("id",))["id"]
        for r, i in enumerate(ids):
            if i in want and want[i] is None:
                want[i] = (s, r)
    missing = [p for p, v in want.items() if v is None]
    if missing:
        raise ShiftlabError(
            f"check images: parent {missing[0]!r} of a synthetic row is in none of the splits "
            f"({len(missing)} parent(s) missing)"
        )
    split = np.array([want[p][0] for p in parents], dtype=object)
    row = np.array([want[p][1] for p in parents], dtype=np.int64)
    return split, row


def _read_parents(splits, split: np.ndarray, row: np.ndarray) -> np.ndarray:
    out = None
    for s in sorted(set(split.tolist())):
        sel = np.flatnonzero(split == s)
        imgs = _read(splits[s], row[sel])
        if out is None:
            out = np.empty((len(row),) + imgs.shape[1:], dtype=np.uint8)
        out[sel] = imgs
    return out


def _subsample_by_parent(parents: np.ndarray, ids: np.ndarray, max_rows: int, seed: int) -> np.ndarray:
    """Row indices: whole parents in seeded order until ``max_rows``; sorted by (parent, id)."""
    uniq, inv, counts = np.unique(parents.astype(str), return_inverse=True, return_counts=True)
    order = seeding.sample_rng(seed, 0, _PURPOSE, "rows").permutation(len(uniq))
    take, total = [], 0
    for u in order:
        if total + counts[u] > max_rows:
            if not take:
                take.append(u)
            break
        take.append(u)
        total += counts[u]
    chosen = np.zeros(len(uniq), dtype=bool)
    chosen[take] = True
    rows = np.flatnonzero(chosen[inv])
    key = np.lexsort((ids[rows].astype(str), parents[rows].astype(str)))
    rows = rows[key]
    return rows[:max_rows]


# --------------------------------------------------------------------------- kernel coverage


def kernel_coverage(records: Sequence[Mapping], parents: Sequence[str] | None = None,
                    cfg: Mapping[str, Any] | None = None) -> dict:
    """The ``kernels`` section of the report for kernel ``records`` (one per synthetic row).

    ``parents``: the rows' parent ids (copies per parent; default: every row its own
    parent). ``cfg``: the ``check_images`` section (``seed``, ``max_kernels``,
    ``kernel_size``, ``bins``, ``length_range`` are used). JSON-able.
    """
    c = check_cfg(cfg)
    recs = [dict(kernels.as_kernel(r).to_record()) for r in records]
    if not recs:
        raise ShiftlabError("kernel_coverage: no kernel records")
    par = np.array([str(i) for i in range(len(recs))] if parents is None else [str(p) for p in parents], dtype=object)
    if len(par) != len(recs):
        raise ShiftlabError(f"kernel_coverage: {len(recs)} records but {len(par)} parents")
    return _clean(_kernel_section(recs, par, c)[0])


def _kernel_section(recs: list[dict], parents: np.ndarray, c: dict) -> tuple[dict, dict]:
    from shiftlab import stats

    n = len(recs)
    keys = [json.dumps(r, sort_keys=True) for r in recs]
    uniq, inv, counts = np.unique(np.array(keys, dtype=object).astype(str), return_inverse=True, return_counts=True)
    fams = np.array([r["family"] for r in recs], dtype=object)
    fam_counts = {f: int((fams == f).sum()) for f in sorted(kernels.FAMILIES)}
    fam_vals = np.array([sorted(kernels.FAMILIES).index(f) for f in fams], dtype=np.float64)
    nf = len(kernels.FAMILIES)
    params: dict[str, Any] = {
        "family": {
            "counts": fam_counts,
            "entropy": stats.normalized_entropy(fam_vals, nf, (-0.5, nf - 0.5)) if nf >= 2 else None,
        },
        "length": _hist(np.array([_path_length(r) for r in recs]), c["bins"], *c["length_range"]),
        "exposure": _hist(
            np.array([float(r["exposure"]) for r in recs if r["family"] == "shake"]), c["bins"], 0.0, 1.0
        ),
        "direction": _hist(
            np.array([float(r["direction"]) for r in recs if r["family"] == "linear"]), c["bins"], -1.0, 1.0
        ),
    }
    # rendered subsample: orientation + Vendi
    m = min(n, c["max_kernels"])
    if m < n:
        pick = np.sort(seeding.sample_rng(c["seed"], 0, _PURPOSE, "kernels").choice(n, m, replace=False))
    else:
        pick = np.arange(n)
    kobjs = [kernels.from_record(recs[i]) for i in pick]
    rendered = [k.render() for k in kobjs]
    size = c["kernel_size"] or min(63, max(r.shape[0] for r in rendered))
    size = size if size % 2 else size + 1
    vecs = np.stack([kernels.vector(r, size) for r in rendered])
    orient = np.array([kernel_orientation(r) for r in rendered])
    params["orientation"] = _hist(orient, c["bins"], 0.0, 180.0)
    _, pcounts = np.unique(parents.astype(str), return_counts=True)
    section = {
        "rows": n,
        "distinct": int(len(uniq)),
        "samples_per_kernel": {"max": int(counts.max()), "mean": float(n / len(uniq))},
        "top_share": float(counts.max() / n),
        "effective_number": stats.effective_number(counts),
        "copies_per_parent": {"parents": int(len(pcounts)), "max": int(pcounts.max()), "mean": float(n / len(pcounts))},
        "params": params,
        "vendi": stats.vendi_score(vecs, "cosine"),
        "vendi_rows": int(m),
        "vector_size": int(size),
    }
    extra = {"pick": pick, "vectors": vecs, "size": size, "keys": inv}
    return section, extra


# --------------------------------------------------------------------------- probe


def _probe(c, E_syn, y, recs, rows, parent_imgs, parents, ext, progress) -> dict:
    """Held-out kernel probe (module docstring). ``rows`` index ``recs``; arrays are per analysed row."""
    import torch

    from shiftlab import stats
    from shiftlab.synth import blur

    p = c["probe"]
    seed = c["seed"]
    n = len(rows)
    if len(np.unique(y)) < 2:
        return {"skipped": "fewer than 2 labels among the analysed synthetic rows", "gap": None}
    # held-out parents
    up, pinv = np.unique(parents.astype(str), return_inverse=True)
    u = np.array([seeding.sample_rng(seed, 0, _PURPOSE, "probe_parent", str(q)).random() for q in up])
    test = (u < p["test_fraction"])[pinv]
    if test.all() or not test.any():  # tiny inputs: force both sides
        test = np.zeros(n, dtype=bool)
        test[pinv == pinv[-1]] = True

    fam = np.array([recs[i]["family"] for i in rows], dtype=object)
    splits_available: dict[str, tuple[np.ndarray, str, str]] = {}
    fu, fc = np.unique(fam.astype(str), return_counts=True)
    if len(fu) >= 2:
        top = fu[np.lexsort((fu, -fc))[0]]
        splits_available["family"] = (fam == top, f"family={top}", f"family!={top}")
    ori = np.array([kernel_orientation(recs[i]) for i in rows])
    splits_available["orientation"] = (ori < 90.0, "orientation<90", "orientation>=90")
    ln = np.array([_path_length(recs[i]) for i in rows])
    med = float(np.median(ln))
    splits_available["extent"] = (ln <= med, f"length<={med:.3g}", f"length>{med:.3g}")

    def ok(mask):
        return min(mask.sum(), (~mask).sum()) >= p["min_rows"] and all(
            min((mm & ~test).sum(), (mm & test).sum()) >= 2 for mm in (mask, ~mask)
        )

    mode = p["split"]
    note = ""
    if mode == "auto":
        mode = next((s for s in _SPLITS if s in splits_available and ok(splits_available[s][0])), "reference")
    elif mode != "reference" and not (mode in splits_available and ok(splits_available[mode][0])):
        note = f"split {mode} has fewer than {p['min_rows']} rows on a side; used the reference space"
        mode = "reference"

    directions = []
    if mode == "reference":
        plan = [(np.ones(n, dtype=bool), "all analysed kernels", "reference space", None)]
    else:
        mask, a_name, b_name = splits_available[mode]
        plan = [(mask, a_name, b_name, ~mask), (~mask, b_name, a_name, mask)]
    err_in, err_out, strata = [], [], []
    for d, (a_mask, a_name, b_name, b_mask) in enumerate(plan):
        tr = np.flatnonzero(a_mask & ~test)
        te = np.flatnonzero(a_mask & test)
        if len(np.unique(y[tr])) < 2 or len(te) == 0:
            continue
        model = stats.fit_logistic(E_syn[tr], y[tr], l2=p["l2"])
        rng = seeding.sample_rng(seed, d, _PURPOSE, "probe_kernels", mode)
        if b_mask is None:
            ks = [kernels.sample(seeding.sample_rng(seed, int(i), _PURPOSE, "probe_reference"), p["reference"])
                  for i in range(len(te))]
        else:
            pool = np.flatnonzero(b_mask)
            ks = [recs[rows[j]] for j in pool[rng.integers(0, len(pool), len(te))]]
        x_out = blur.apply_kernels(torch.from_numpy(np.ascontiguousarray(parent_imgs[te])), ks).numpy()
        E_out = ext.embed(x_out)
        ei = (model.predict(E_syn[te]) != y[te]).astype(np.float64)
        eo = (model.predict(E_out) != y[te]).astype(np.float64)
        err_in.append(ei)
        err_out.append(eo)
        strata.append(np.full(len(te), d))
        directions.append({
            "train": a_name, "held_out": b_name, "train_rows": int(len(tr)), "test_rows": int(len(te)),
            "error_seen": float(ei.mean()), "error_held_out": float(eo.mean()),
            "gap": float(eo.mean() - ei.mean()),
        })
    if not directions:
        return {"split": mode, "skipped": "too few rows or labels to train the probe", "gap": None}
    ei, eo, st = np.concatenate(err_in), np.concatenate(err_out), np.concatenate(strata)
    nd = len(directions)

    def mean_gap(a, b, s):
        return float(np.mean([b[s == d].mean() - a[s == d].mean() for d in range(nd) if (s == d).any()]))

    def mean_err(a, s):
        return float(np.mean([a[s == d].mean() for d in range(nd) if (s == d).any()]))

    ci = stats.bootstrap_ci(mean_gap, ei, eo, st, n=c["realism"]["n_boot"], seed=seed, labels=st)
    out = {
        "split": mode,
        "directions": directions,
        "error_seen": mean_err(ei, st),
        "error_held_out": mean_err(eo, st),
        "gap": ci.estimate,
        "gap_ci": [ci.low, ci.high],
        "test_rows": int(len(ei)),
    }
    if note:
        out["note"] = note
    return out


# --------------------------------------------------------------------------- plots


def _save(fig, path: Path) -> None:
    import io

    from shiftlab import store

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, metadata={"Software": None})
    with store.atomic_file(path, "wb") as f:
        f.write(buf.getvalue())


def _show(ax, img_chw: np.ndarray) -> None:
    img = np.asarray(img_chw)
    if img.shape[0] == 1:
        ax.imshow(img[0], cmap="gray", vmin=0, vmax=255)
    else:
        ax.imshow(img.transpose(1, 2, 0))
    ax.set_xticks([])
    ax.set_yticks([])


def _plots(plots_dir, report, kern_extra, syn_imgs, par_imgs, tgt_imgs, ids, nd_pairs, k_examples) -> list[str]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    out_dir = Path(plots_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    params = report["kernels"]["params"]
    with plt.rc_context({"figure.max_open_warning": 0}):
        fig, axes = plt.subplots(1, 5, figsize=(17, 3))
        fc = params["family"]["counts"]
        axes[0].bar(list(fc), list(fc.values()), color="tab:blue")
        axes[0].set_title("family")
        for ax, key, unit in zip(axes[1:], ("length", "orientation", "exposure", "direction"),
                                 ("path length (px)", "orientation (deg)", "exposure (shake)", "direction (linear)")):
            h = params[key]
            if h["n"]:
                e = np.array(h["edges"])
                ax.bar(e[:-1], h["counts"], width=np.diff(e), align="edge", color="tab:blue", edgecolor="white")
            ent = h["entropy"]
            ax.set_title(f"{unit}\nentropy {ent:.2f}" if ent is not None else f"{unit}\n(no rows)", fontsize=9)
        fig.tight_layout()
        _save(fig, out_dir / "kernel_params.png")
        plt.close(fig)
        written.append("kernel_params.png")

        ks = k_examples
        if ks:
            cols = min(8, len(ks))
            rows = int(math.ceil(len(ks) / cols))
            fig, axes = plt.subplots(rows, cols, figsize=(1.4 * cols, 1.5 * rows), squeeze=False)
            for ax in axes.ravel():
                ax.axis("off")
            for ax, (title, k) in zip(axes.ravel(), ks):
                ax.imshow(k, cmap="magma", interpolation="nearest")
                ax.set_title(title, fontsize=6)
            fig.suptitle("example kernels", fontsize=9)
            fig.tight_layout()
            _save(fig, out_dir / "kernels.png")
            plt.close(fig)
            written.append("kernels.png")

        m = min(len(syn_imgs), report_examples(report))
        if m:
            fig, axes = plt.subplots(3, m, figsize=(1.3 * m, 4.2), squeeze=False)
            for j in range(m):
                _show(axes[0, j], par_imgs[j])
                _show(axes[1, j], syn_imgs[j])
                if j < len(tgt_imgs):
                    _show(axes[2, j], tgt_imgs[j])
                else:
                    axes[2, j].axis("off")
            for r, name in enumerate(("sharp parent", "synthetic", "target")):
                axes[r, 0].set_ylabel(name, fontsize=8)
            fig.tight_layout()
            _save(fig, out_dir / "examples.png")
            plt.close(fig)
            written.append("examples.png")

        if nd_pairs:
            m = len(nd_pairs)
            fig, axes = plt.subplots(2, m, figsize=(1.4 * m, 3.2), squeeze=False)
            for j, (a, b, s) in enumerate(nd_pairs):
                _show(axes[0, j], syn_imgs[a])
                _show(axes[1, j], syn_imgs[b])
                axes[0, j].set_title(f"cos {s:.3f}", fontsize=7)
            fig.suptitle("near-duplicate synthetic pairs", fontsize=9)
            fig.tight_layout()
            _save(fig, out_dir / "near_duplicates.png")
            plt.close(fig)
            written.append("near_duplicates.png")
    return written


def report_examples(report) -> int:
    return int(report.get("cfg", {}).get("plots", {}).get("examples", DEFAULTS["plots"]["examples"]))


# --------------------------------------------------------------------------- run


def run(synthetic, splits, cfg: Mapping[str, Any] | None = None, plots_dir=None, progress: bool = True) -> dict:
    """The diversity report of ``synthetic`` (rows of :func:`blur.make_synthetic`) against ``splits``.

    Args:
        synthetic: the synthetic image rows (image schema; ``recipe`` with a ``kernel``
            record, ``parent`` = id of a row of ``splits``).
        splits: the mismatch splits (``DatasetDict``; ``train`` holds the real source and
            target rows, parents may be in any split).
        cfg: the ``check_images`` section (plain dict; missing keys take :data:`DEFAULTS`).
        plots_dir: when given, PNGs are written there (module docstring, :func:`markdown`).
        progress: tqdm bar while the feature network trains.

    Returns:
        A JSON-able dict (module docstring for the sections) with ``cfg`` (the merged cfg),
        ``subsample``, ``kernels``, ``near_duplicates``, ``images``, ``realism``, ``probe``,
        ``features`` and ``plots`` (file names written, relative to ``plots_dir``).
        Metrics that cannot be computed (e.g. no target rows in train) are ``None`` with a
        ``skipped`` reason.
    """
    import scipy.linalg

    from shiftlab import stats

    c = check_cfg(cfg)
    seed = c["seed"]
    meta, recs = _inputs(synthetic, splits)
    ids = meta["id"].astype(str)
    parents = meta["parent"].astype(str)
    order = np.argsort(ids, kind="stable")  # row-order independence
    if (order != np.arange(len(ids))).any():
        ids, parents = ids[order], parents[order]
        meta = {k: v[order] for k, v in meta.items()}
        recs = [recs[i] for i in order]
    else:
        order = None
    if len(np.unique(ids)) != len(ids):
        raise ShiftlabError("check images: synthetic dataset has duplicate ids")

    report: dict[str, Any] = {"cfg": c}
    kern, kextra = _kernel_section(recs, parents, c)
    report["kernels"] = kern

    # ---- image subsample and the real rows
    rows = _subsample_by_parent(parents, ids, c["max_rows"], seed)
    src_rows = rows if order is None else order[rows]
    syn_imgs = _read(synthetic, src_rows)
    y_syn = meta["label"][rows].astype(np.int64)
    p_split, p_row = _parent_index(splits, [str(q) for q in parents[rows]])
    par_imgs = _read_parents(splits, p_split, p_row)

    train = splits["train"]
    tm = _columns(train, ("label", "domain", "origin"))
    real = np.flatnonzero(tm["origin"] == "real")
    tgt_all = np.flatnonzero((tm["origin"] == "real") & (tm["domain"] == "target"))
    fc = c["features"]
    if len(real) > fc["train_rows"]:
        fit_rows = np.sort(seeding.sample_rng(seed, 0, _PURPOSE, "feature_rows").choice(len(real), fc["train_rows"], replace=False))
        fit_rows = real[fit_rows]
    else:
        fit_rows = real
    if len(np.unique(tm["label"][fit_rows])) < 2:
        raise ShiftlabError("check images: splits train needs real rows of at least 2 labels to train the feature network")
    if len(tgt_all) > c["max_target"]:
        tgt_rows = tgt_all[np.sort(seeding.sample_rng(seed, 0, _PURPOSE, "target").choice(len(tgt_all), c["max_target"], replace=False))]
    else:
        tgt_rows = tgt_all
    tgt_imgs = _read(train, tgt_rows)

    ext = feat_mod.fit(_read(train, fit_rows), tm["label"][fit_rows], fc, seed=seed, progress=progress)
    E_syn = ext.embed(syn_imgs)
    E_par = ext.embed(par_imgs)
    E_tgt = ext.embed(tgt_imgs) if len(tgt_imgs) else np.zeros((0, ext.dim), np.float32)

    report["subsample"] = {
        "synthetic_rows": int(len(ids)),
        "analysed_rows": int(len(rows)),
        "analysed_parents": int(len(np.unique(parents[rows]))),
        "kernel_rows": int(len(recs)),
        "rendered_kernels": int(kern["vendi_rows"]),
        "target_rows": int(len(tgt_all)),
        "analysed_target_rows": int(len(tgt_rows)),
        "feature_train_rows": int(len(fit_rows)),
        "note": (
            f"kernel counts and parameter histograms use all {len(ids)} synthetic rows; orientation and kernel "
            f"Vendi use {kern['vendi_rows']} rendered kernels; image metrics use {len(rows)} synthetic rows "
            f"(whole parents, seeded) and {len(tgt_rows)} of {len(tgt_all)} target rows"
        ),
    }
    report["features"] = {
        "size": ext.size, "dim": ext.dim, "train_rows": ext.train_rows,
        "train_accuracy": ext.train_accuracy, "loss_per_epoch": list(ext.history),
        "accuracy_synthetic": float((ext.predict_embedded(E_syn) == y_syn).mean()),
        "accuracy_parents": float((ext.predict_embedded(E_par) == y_syn).mean()),
    }

    # ---- near duplicates
    nd = c["near_duplicates"]
    if nd["space"] == "pixels":
        A = feat_mod.to_float(syn_imgs, ext.size).reshape(len(syn_imgs), -1).numpy()
        B = feat_mod.to_float(par_imgs, ext.size).reshape(len(par_imgs), -1).numpy()
    else:
        A, B = E_syn, E_par
    dup = stats.near_duplicates(A, nd["threshold"], center=True, max_pairs=c["plots"]["examples"])
    dup_par = stats.near_duplicates(B, nd["threshold"], center=True, max_pairs=0)
    pairs = dup["pairs"]
    report["near_duplicates"] = {
        "space": nd["space"], "threshold": nd["threshold"], "n": dup["n"],
        "share": dup["fraction"], "rows": dup["rows"],
        "share_parents": dup_par["fraction"],
        "examples": [
            {"a": ids[rows[a]], "b": ids[rows[b]], "similarity": s, "same_parent": bool(parents[rows[a]] == parents[rows[b]])}
            for a, b, s in pairs
        ],
    }

    # ---- image Vendi (shared RBF bandwidth from the parents)
    rng = seeding.sample_rng(seed, 0, _PURPOSE, "bandwidth")
    sub = E_par[np.sort(rng.choice(len(E_par), min(1000, len(E_par)), replace=False))].astype(np.float64)
    sq = (sub * sub).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * sub @ sub.T, 0.0)[np.triu_indices(len(sub), 1)]
    med = float(np.median(d2)) if len(d2) else 0.0
    bw = math.sqrt(med / 2.0) if med > 0 else 1.0
    v_syn = stats.vendi_score(E_syn, "rbf", bandwidth=bw, seed=seed)
    v_par = stats.vendi_score(E_par, "rbf", bandwidth=bw, seed=seed)
    report["images"] = {
        "n": int(len(E_syn)), "kernel": "rbf", "bandwidth": bw,
        "vendi": v_syn, "vendi_parents": v_par, "ratio": v_syn / v_par if v_par > 0 else None,
    }

    # ---- realism vs target
    rc = c["realism"]
    if min(len(E_tgt), len(E_syn)) < 2 * rc["folds"]:
        report["realism"] = {
            "skipped": f"need >= {2 * rc['folds']} target rows in splits train (have {len(E_tgt)})",
            "domain_auc": {"auc": None}, "target_rows": int(len(E_tgt)),
        }
    else:
        auc_s = stats.domain_classifier_auc(E_syn, E_tgt, rc["folds"], seed, n_boot=rc["n_boot"])
        auc_p = stats.domain_classifier_auc(E_par, E_tgt, rc["folds"], seed, n_boot=rc["n_boot"])
        with warnings.catch_warnings():  # dead ReLU units make a covariance singular; stats handles it
            warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
            fd_s = stats.frechet_from_features(E_syn, E_tgt)
            fd_p = stats.frechet_from_features(E_par, E_tgt)
        report["realism"] = {
            "target_rows": int(len(E_tgt)),
            "domain_auc": auc_s,
            "domain_auc_parents": auc_p,
            "frechet": fd_s,
            "frechet_parents": fd_p,
            "moved_toward_target": bool(fd_s < fd_p),
        }

    # ---- held-out kernel probe
    report["probe"] = _probe(c, E_syn, y_syn, recs, rows, par_imgs, parents[rows], ext, progress)

    # ---- plots
    report["plots"] = []
    if plots_dir is not None:
        kex = []
        seen = set()
        for j, i in enumerate(kextra["pick"]):
            key = int(kextra["keys"][i])
            if key in seen:
                continue
            seen.add(key)
            r = recs[i]
            title = (f"lin {r['length']:.0f}px {r['angle']:.0f}°" if r["family"] == "linear"
                     else f"shake {_path_length(r):.0f}px")
            kex.append((title, kextra["vectors"][j].reshape(kextra["size"], kextra["size"])))
            if len(kex) >= 24:
                break
        report["plots"] = _plots(plots_dir, report, kextra, syn_imgs, par_imgs, tgt_imgs, ids, pairs, kex)
    return _clean(report)


# --------------------------------------------------------------------------- gates and markdown


def _lookup(report: Mapping, path: Sequence[str | int]):
    cur: Any = report
    for p in path:
        if isinstance(p, int):
            if not isinstance(cur, (list, tuple)) or not -len(cur) <= p < len(cur):
                return None
        elif not isinstance(cur, Mapping) or p not in cur:
            return None
        cur = cur[p]
    return cur


def gate(report: Mapping, cfg: Mapping[str, Any] | None = None) -> list[dict]:
    """One verdict per configured gate, in :data:`METRICS` order.

    ``cfg``: the ``check_images`` section (its ``gates``); ``None`` uses the cfg stored in
    the report (or :data:`DEFAULTS`). Each dict: ``name``, ``value`` (None when the metric
    was not computed), ``op`` (``">="`` for ``min``, ``"<="`` for ``max``), ``threshold``,
    ``action`` (``fail`` | ``warn``), ``passed`` (False when the value is missing), and
    ``description``.
    """
    if cfg is None:
        gates = check_cfg(report.get("cfg") if isinstance(report, Mapping) else None)["gates"]
    else:
        gates = check_cfg(cfg)["gates"]
    out = []
    for name, (path, desc) in METRICS.items():
        if name not in gates:
            continue
        g = gates[name]
        op, thr = ("min", g["min"]) if "min" in g else ("max", g["max"])
        v = _lookup(report, path)
        v = None if v is None or (isinstance(v, float) and not math.isfinite(v)) else float(v)
        passed = v is not None and (v >= thr if op == "min" else v <= thr)
        out.append({
            "name": name, "value": v, "op": ">=" if op == "min" else "<=", "threshold": float(thr),
            "action": g["action"], "passed": bool(passed), "description": desc,
        })
    return out


def _f(v, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int) or (isinstance(v, float) and v.is_integer() and abs(v) >= 1):
        return f"{int(v):,}"
    return f"{v:.{digits}f}"


def markdown(report: Mapping, gates: Sequence[Mapping]) -> str:
    """The report as Markdown: verdict, gates table, then one section per measurement."""
    failed = [g for g in gates if not g["passed"] and g["action"] == "fail"]
    warned = [g for g in gates if not g["passed"] and g["action"] == "warn"]
    verdict = "FAIL" if failed else ("PASS with warnings" if warned else "PASS")
    L = ["# Synthetic image diversity", "", f"**Verdict: {verdict}** "
         f"({len(failed)} failed, {len(warned)} warnings, {len(gates)} gates)", ""]
    L += ["| gate | value | rule | action | result |", "|---|---:|---|---|---|"]
    for g in gates:
        res = "pass" if g["passed"] else ("FAIL" if g["action"] == "fail" else "warn")
        L.append(f"| {g['name']} | {_f(g['value'])} | {g['op']} {g['threshold']:g} | {g['action']} | {res} |")
    sub = report.get("subsample", {})
    L += ["", f"Subsampling: {sub.get('note', '')}.", ""]
    k = report["kernels"]
    L += ["## Kernel coverage", "",
          f"- rows: {_f(k['rows'])}, distinct kernels: {_f(k['distinct'])}, most used kernel: "
          f"{_f(k['samples_per_kernel']['max'])} rows ({_f(k['top_share'])} of all), mean {_f(k['samples_per_kernel']['mean'], 2)} per kernel",
          f"- effective number of kernels (counts): {_f(k['effective_number'], 1)}; Vendi score of the kernel vectors "
          f"({k['vector_size']}x{k['vector_size']}, {k['vendi_rows']} kernels): {_f(k['vendi'], 1)}",
          f"- copies per source image: max {k['copies_per_parent']['max']}, mean {_f(k['copies_per_parent']['mean'], 2)} "
          f"({_f(k['copies_per_parent']['parents'])} parents)",
          "- family mix: " + ", ".join(f"{f} {n}" for f, n in k["params"]["family"]["counts"].items())
          + f" (entropy {_f(k['params']['family']['entropy'])})", "",
          "| parameter | rows | min | mean | max | normalised entropy |", "|---|---:|---:|---:|---:|---:|"]
    for key, name in (("length", "path length (px)"), ("orientation", "orientation (deg)"),
                      ("exposure", "exposure (shake)"), ("direction", "direction (linear)")):
        h = k["params"][key]
        L.append(f"| {name} | {h['n']} | {_f(h['min'], 2)} | {_f(h['mean'], 2)} | {_f(h['max'], 2)} | {_f(h['entropy'])} |")
    nd = report["near_duplicates"]
    L += ["", "## Near-duplicates", "",
          f"{_f(nd['rows'])} of {_f(nd['n'])} analysed synthetic rows ({_f(nd['share'])}) have a near-duplicate "
          f"(centred cosine >= {nd['threshold']:g} on {nd['space']}); their sharp parents: {_f(nd['share_parents'])}."]
    for e in nd["examples"][:5]:
        L.append(f"- `{e['a']}` ~ `{e['b']}` ({e['similarity']:.4f}{', same parent' if e['same_parent'] else ''})")
    im = report["images"]
    L += ["", "## Effective number of distinct images", "",
          f"Vendi score (RBF on features, bandwidth {_f(im['bandwidth'])}) of {_f(im['n'])} synthetic rows: "
          f"{_f(im['vendi'], 2)}; of their sharp parents: {_f(im['vendi_parents'], 2)}; ratio {_f(im['ratio'])}."]
    r = report["realism"]
    L += ["", "## Realism: synthetic vs target", ""]
    if r.get("skipped"):
        L.append(f"Skipped: {r['skipped']}.")
    else:
        a, ap = r["domain_auc"], r["domain_auc_parents"]
        L += ["| compared with target | domain AUC (95% CI) | Frechet distance |", "|---|---|---:|",
              f"| synthetic | {_f(a['auc'])} ({_f(a['ci_low'])}-{_f(a['ci_high'])}) | {_f(r['frechet'], 2)} |",
              f"| sharp parents | {_f(ap['auc'])} ({_f(ap['ci_low'])}-{_f(ap['ci_high'])}) | {_f(r['frechet_parents'], 2)} |",
              "", f"Synthesis moved the source toward the target: {_f(r['moved_toward_target'])} "
              f"({_f(r['target_rows'])} target rows). AUC 0.5 = a learner cannot tell them apart."]
    p = report["probe"]
    L += ["", "## Held-out kernel probe", ""]
    if p.get("skipped"):
        L.append(f"Skipped: {p['skipped']}.")
    else:
        L += [f"Split: {p['split']}. Logistic classifier on features, trained on one part of the kernel space, "
              "tested on held-out parents with seen vs held-out kernels.", "",
              "| trained on | held-out kernels | train rows | test rows | error seen | error held-out | gap |",
              "|---|---|---:|---:|---:|---:|---:|"]
        for d in p["directions"]:
            L.append(f"| {d['train']} | {d['held_out']} | {d['train_rows']} | {d['test_rows']} | "
                     f"{_f(d['error_seen'])} | {_f(d['error_held_out'])} | {_f(d['gap'])} |")
        L += ["", f"Gap {_f(p['gap'])} (95% CI {_f(p['gap_ci'][0])} to {_f(p['gap_ci'][1])}): a large gap means a model "
              "overfits the kernels it saw."]
        if p.get("note"):
            L.append(f"Note: {p['note']}.")
    fe = report["features"]
    L += ["", "## Feature network", "",
          f"Trained inside the check on {_f(fe['train_rows'])} real train rows at {fe['size']}x{fe['size']}, "
          f"{fe['dim']}-d embedding; train accuracy {_f(fe['train_accuracy'])}, on the analysed synthetic rows "
          f"{_f(fe['accuracy_synthetic'])}, on their sharp parents {_f(fe['accuracy_parents'])}."]
    if report.get("plots"):
        L += ["", "## Plots", ""] + [f"- `{p}`" for p in report["plots"]]
    return "\n".join(L) + "\n"
