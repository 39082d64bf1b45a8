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
        distinct kernels (1 for identical kernels). Both the Vendi score and the counts depend
        on n and on kernel size (short kernels all look alike), so the gates use them relative
        to a reference: ``effective_share`` = effective number of distinct *rendered* kernels
        among the rendered ones / their number (1 = a fresh kernel per row; k kernels reused
        over m rows give k / m; records that render to the same array count once), and
        ``vendi_ratio`` =
        Vendi(set) / Vendi(reference), the reference being one fresh kernel per rendered
        kernel of the same family and path length (:func:`reference_kernels`: equal n, equal
        scale). An unlimited sampler scores ~1 whatever its kernel size; a few fixed kernels
        score low. The thresholds come from the diversity ladder (:mod:`shiftlab.ladder`).
    ``near_duplicates`` -- share of analysed synthetic rows whose centred cosine similarity
        to another analysed row is >= ``near_duplicates.threshold``
        (:func:`shiftlab.stats.near_duplicates`), on pixels at the feature network's working
        size or on features; the same figure for their sharp parents as a reference.
    ``images`` -- Vendi score (RBF kernel, bandwidth from the median heuristic on the
        parents' features, shared by both sets) of the synthetic rows' features and of their
        sharp parents' features, and the ratio synthetic / parents.
    ``realism`` -- domain classifier synthetic vs real **target** rows of
        ``splits["train"]`` on features: out-of-fold AUC with a 95% interval
        (:func:`shiftlab.stats.domain_classifier_auc`), also for the sharp parents vs
        target. Grouped: a synthetic row and its sharp parent belong to the parent's group
        (the ``group`` of the parent row in the splits; its id without one), a target row to
        its own ``group``; the folds keep every group whole and the interval resamples
        groups (cluster bootstrap), so copies of one image or frames of one video never
        count as independent. Frechet distances (Heusel et al. 2017's formula on the
        features) of the synthetic rows and of their parents to the target, and their
        difference with a cluster-bootstrap interval (:func:`shiftlab.stats.frechet_difference`,
        paired by parent): ``moved_toward_target`` is ``"yes"`` only when the whole interval
        is below 0, ``"no"`` when it is above 0, ``"inconclusive"`` otherwise.
    ``probe`` -- held-out kernel probe, one design for every synthetic set
        (:func:`probe_plan`): an L2 logistic classifier (:func:`stats.fit_logistic`) on
        features predicts the label. Kernel orientations (:func:`kernel_orientation`) are cut
        into bands of ``probe.band_degrees`` (default 30) dealt alternately to two sets, ``A``
        = ``[0, 30) [60, 90) [120, 150)`` and ``B`` = ``[30, 60) [90, 120) [150, 180)``
        (90 / band is odd, so turning a kernel by 90 degrees moves it to the other set;
        ``band_degrees: 90`` gives the halves ``[0, 90)`` / ``[90, 180)``; interleaved bands
        are the default because a model trained on one half has never seen blur that smears
        the edges the other half keeps, which penalises even a diverse generator). For each set with
        at least ``probe.min_rows`` training rows, a classifier is trained on the rows of
        that set whose parent is not held out, and scored on the held-out parents of that set
        blurred again (:func:`blur.apply_kernels`) (a) with their own kernel (seen region)
        and (b) with that kernel turned by 90 degrees (``numpy.rot90``, exact: the same
        extent and shape in the other set, so the two errors differ only by the region). A
        held-out kernel is used only when its cosine similarity to *every* kernel the
        classifier was trained on is below ``probe.max_cosine`` (short, round kernels that
        look alike in every orientation drop out; the largest similarity is reported). The
        gap, error (b) - error (a), is averaged over the sets; its 95% interval resamples
        held-out parent groups (cluster bootstrap, paired). A set of kernels that all lie in
        one set (one kernel, :data:`blur.NARROW`) is probed in that direction only. The probe
        is not applicable (gap None, with the reason) when no set has enough rows or no
        held-out kernel is far enough from the training kernels.
    ``features`` -- the feature network (:mod:`shiftlab.synth.features`): trained inside the
        check on the labels of at most ``features.train_rows`` real rows of
        ``splits["train"]``, nothing downloaded, nothing cached. Its rows are disjoint, by
        group, from every row it then compares: the analysed target rows, the analysed
        synthetic rows and their parents. It takes real train rows that are neither
        (target rows beyond ``max_target``, source rows that are nobody's parent) first, and
        only when those are too few whole parent groups, at most ``features.max_parent_share``
        of them, which are then left out of the analysed synthetic rows
        (``subsample.feature_rows_overlap`` counts the overlap: 0).
    ``subsample`` -- how many rows each part analysed. Image metrics use at most
        ``max_rows`` synthetic rows chosen **by parent** (seeded order of the sorted parent
        ids; all copies of a chosen parent are kept, so copies that look alike are seen) and
        at most ``max_target`` target rows (whole groups, seeded).

Gates (:func:`gate`) and the verdict (:func:`verdict`): a gate passes when its value meets
its rule. A gate whose metric is not available (n/a: not computed, not applicable) does
**not** pass: it counts with its action, so an n/a fail gate fails the check, with the
reason in the gate's ``reason`` (a check that could not be made cannot vouch for the data).
The probe's fail gate is on the *upper* end of the gap's interval (``probe_gap_ci_high``):
the probe passes only when the data rule out a gap above the threshold.

Determinism: every random choice derives from ``seed`` through
:func:`shiftlab.seeding.sample_rng`; the same inputs, cfg, torch build and CPU thread count
give an identical report (and identical plots). The report does not depend on the order
of the synthetic rows.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from shiftlab import paramschema, seeding
from shiftlab.errors import ShiftlabError
from shiftlab.synth import features as feat_mod
from shiftlab.synth import kernels

__all__ = ["DEFAULTS", "METRICS", "check_cfg", "run", "gate", "verdict", "markdown", "kernel_coverage",
           "kernel_orientation", "orientation_set", "probe_plan", "feature_fit_rows", "reference_kernels"]

_KEY = "check_images"
_PURPOSE = "check_images"

#: Gateable metrics: name -> (path into the report, what it is).
METRICS: dict[str, tuple[tuple[str | int, ...], str]] = {
    "distinct_kernels": (("kernels", "distinct"), "distinct kernel records among the synthetic rows"),
    "kernel_vendi": (("kernels", "vendi"), "effective number of distinct kernels (Vendi, kernel vectors)"),
    "kernel_vendi_ratio": (("kernels", "vendi_ratio"),
                           "kernel Vendi / Vendi of a reference draw at equal n and scale (fresh kernels, same path lengths)"),
    "kernel_effective_number": (("kernels", "effective_number"), "exp(entropy) of the kernel counts"),
    "kernel_effective_share": (("kernels", "effective_share"),
                               "effective number of kernels (counts) per synthetic row: 1 = a fresh kernel per row"),
    "top_kernel_share": (("kernels", "top_share"), "share of rows using the most common kernel"),
    "orientation_entropy": (("kernels", "params", "orientation", "entropy"), "normalised entropy of kernel orientation"),
    "length_entropy": (("kernels", "params", "length", "entropy"), "normalised entropy of the blur path length"),
    "family_entropy": (("kernels", "params", "family", "entropy"), "normalised entropy of the family mix"),
    "max_copies_per_parent": (("kernels", "copies_per_parent", "max"), "most synthetic rows made from one source image"),
    "near_duplicate_share": (("near_duplicates", "share"), "share of synthetic rows with a near-duplicate"),
    "image_vendi_ratio": (("images", "ratio"), "image Vendi score synthetic / sharp parents"),
    "domain_auc": (("realism", "domain_auc", "auc"), "AUC of a classifier telling synthetic from target"),
    "probe_gap": (("probe", "gap"), "error on held-out kernels minus error on seen kernels"),
    "probe_gap_ci_high": (("probe", "gap_ci", 1), "upper end of the gap's 95% interval"),
    "frechet_difference": (("realism", "frechet_difference", "difference"),
                           "Frechet to target: synthetic minus sharp parents"),
    "frechet_difference_ci_high": (("realism", "frechet_difference", "ci_high"),
                                   "upper end of the Frechet difference's 95% interval"),
}

#: Defaults of the ``check_images`` params section (its model: :class:`shiftlab.paramschema.CheckImages`).
DEFAULTS: dict[str, Any] = paramschema.defaults(paramschema.CheckImages)

#: the probe's design, named in the report
PROBE_DESIGN = ("orientation bands dealt alternately to sets A and B; trained on one set, held-out kernel = "
                "the row's own kernel turned 90 degrees (into the other set)")


# --------------------------------------------------------------------------- config


def check_cfg(cfg: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """:data:`DEFAULTS` with ``cfg`` merged over it (nested sections key by key), validated by
    :class:`shiftlab.paramschema.CheckImages`.

    ``gates`` entries merge per metric: ``{probe_gap: {max: 0.1}}`` keeps the default
    action, ``{metric: null}`` disables that gate, ``gates: null`` disables all, and a new
    metric (one of :data:`METRICS`) may be added. Any problem is a one-line
    :class:`ShiftlabError` naming ``check_images.<key>``.
    """
    return paramschema.merge(paramschema.CheckImages, cfg, _KEY)


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


def _groups_of(ds) -> np.ndarray:
    """The ``group`` of every row of ``ds`` (object array); a row without one is its own group (its id)."""
    ids = _columns(ds, ("id",))["id"]
    if "group" not in ds.column_names:
        return ids.astype(object)
    g = _columns(ds, ("group",))["group"]
    empty = np.array([v is None or str(v) == "" for v in g], dtype=bool)
    g = g.astype(object)
    g[empty] = ids[empty]
    return g


def _pick_groups(rows: np.ndarray, groups: np.ndarray, m: int, seed: int, purpose: str) -> np.ndarray:
    """At most ``m`` of ``rows`` as whole groups in a seeded order (at least one group); sorted."""
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) <= m:
        return rows
    ug, ginv, gcount = np.unique(groups[rows].astype(str), return_inverse=True, return_counts=True)
    order = seeding.sample_rng(seed, 0, _PURPOSE, purpose).permutation(len(ug))
    take, tot = [], 0
    for u in order:
        if take and tot + gcount[u] > m:
            break
        take.append(u)
        tot += gcount[u]
    return np.sort(rows[np.isin(ginv.ravel(), take)])


def feature_fit_rows(groups, eligible, compared_groups, parent_groups, train_rows: int,
                     max_parent_share: float = 0.5, seed: int = 0) -> tuple[np.ndarray, set]:
    """Rows of the train split the feature network fits on, disjoint by group from the compared rows.

    ``groups``: the group of every train row; ``eligible``: bool per row (the real rows);
    ``compared_groups``: the groups of the target rows the check compares;
    ``parent_groups``: the groups of the parents of *all* synthetic rows. Rows of a compared
    group are never taken. Rows of no parent group are taken first (a seeded sample of
    ``train_rows`` of them); when they are too few, whole parent groups are added in a
    seeded order until ``train_rows`` rows, but at most ``floor(max_parent_share * G)`` of
    the ``G`` parent groups among the train rows -- the caller then leaves the synthetic rows
    of those groups out of its analysis. Returns ``(rows (sorted), parent groups used)``.
    """
    g = np.asarray(groups).astype(str)
    ok = np.asarray(eligible, dtype=bool) & ~np.isin(g, np.unique(np.asarray(compared_groups).astype(str)))
    is_parent = np.isin(g, np.unique(np.asarray(parent_groups).astype(str)))
    rng = seeding.sample_rng(seed, 0, _PURPOSE, "feature_rows")
    free = np.flatnonzero(ok & ~is_parent)
    if len(free) >= train_rows:
        return np.sort(rng.choice(free, int(train_rows), replace=False)), set()
    linked = np.flatnonzero(ok & is_parent)
    ug, ginv, gcount = np.unique(g[linked], return_inverse=True, return_counts=True)
    cap = int(math.floor(float(max_parent_share) * len(ug)))
    need = int(train_rows) - len(free)
    take, tot = [], 0
    for u in rng.permutation(len(ug))[:cap]:
        if tot >= need:
            break
        take.append(int(u))
        tot += int(gcount[u])
    rows = np.sort(np.concatenate([free, linked[np.isin(ginv.ravel(), take)]]))
    return rows, {str(ug[u]) for u in take}

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
    ref = reference_kernels([recs[i] for i in pick], c["seed"])
    ref_vecs = np.stack([kernels.vector(k, size) for k in ref])
    v_set = stats.vendi_score(vecs, "cosine")
    v_ref = stats.vendi_score(ref_vecs, "cosine")
    eff = stats.effective_number(counts)
    # distinct *rendered* kernels of the rendered subsample (records that render alike, e.g. every length-0 kernel
    # whatever its angle, are one kernel): effective number per rendered kernel, 1 = a fresh kernel per row
    _, rcounts = np.unique(np.array([f"{a.shape}{np.round(a, 7).tobytes().hex()}" for a in rendered]), return_counts=True)
    eff_rendered = stats.effective_number(rcounts)
    section = {
        "rows": n,
        "distinct": int(len(uniq)),
        "samples_per_kernel": {"max": int(counts.max()), "mean": float(n / len(uniq))},
        "top_share": float(counts.max() / n),
        "effective_number": eff,
        "effective_share": float(eff_rendered / m),
        "effective_number_rendered": eff_rendered,
        "copies_per_parent": {"parents": int(len(pcounts)), "max": int(pcounts.max()), "mean": float(n / len(pcounts))},
        "params": params,
        "vendi": v_set,
        "vendi_reference": v_ref,
        "vendi_ratio": float(v_set / v_ref) if v_ref > 0 else None,
        "vendi_rows": int(m),
        "vector_size": int(size),
    }
    extra = {"pick": pick, "vectors": vecs, "size": size, "keys": inv}
    return section, extra


def reference_kernels(records: Sequence[Mapping], seed: int = 0) -> list:
    """The reference draw of the kernel Vendi ratio: one fresh kernel per record, at the record's scale.

    For every record a new kernel of the same family and the same blur *path length* (equal
    scale): a straight kernel keeps its ``length`` and gets a uniform angle in [0, 180) and
    direction in [-1, 1]; a shake kernel keeps ``max_length`` and ``exposure`` and draws its
    other parameters from the ranges of :data:`kernels.DEFAULT_SAMPLE_CFG` and a fresh path
    seed. The list has as many kernels as ``records`` (equal n), so ``Vendi(set) /
    Vendi(reference)`` compares a set of kernels with what an unlimited generator of the same
    kernel sizes reaches: ~1 for a continuous sampler whatever its kernel size, low for a few
    kernels reused (their Vendi cannot exceed their number). Seeded by ``seed``.
    """
    rng = seeding.sample_rng(seed, 0, _PURPOSE, "reference_kernels")
    shake = kernels.DEFAULT_SAMPLE_CFG["shake"]
    out = []
    for r in records:
        if r["family"] == "linear":
            out.append(kernels.Linear(float(r["length"]), float(rng.uniform(0.0, 180.0)), float(rng.uniform(-1.0, 1.0))))
        else:
            cfg = {"families": {"shake": 1.0},
                   "shake": {**shake, "max_length": [float(r["max_length"])] * 2, "exposure": [float(r["exposure"])] * 2,
                             "n_steps": int(r.get("n_steps", shake["n_steps"]))}}
            out.append(kernels.sample(rng, cfg))
    return out


# --------------------------------------------------------------------------- probe


def orientation_set(orientation: float, band_degrees: float = 30.0) -> int:
    """0 (set A) or 1 (set B) for an orientation in degrees: bands of ``band_degrees``, dealt alternately."""
    return int((float(orientation) % 180.0) // float(band_degrees)) % 2


def _set_name(h: int, band: float) -> str:
    edges = np.arange(0.0, 180.0, band)
    spans = " ".join(f"[{lo:g}, {lo + band:g})" for i, lo in enumerate(edges) if i % 2 == h)
    return f"orientation set {'AB'[h]} {spans}"


def probe_plan(records: Sequence[Mapping], test, *, max_cosine: float = 0.9, band_degrees: float = 30.0) -> dict:
    """The held-out kernel design of the probe (module docstring, ``probe``) for kernel ``records``.

    ``records``: one kernel record per analysed row; ``test``: bool per row, True for the
    rows of held-out parents. Every distinct kernel is rendered once; a row's set is
    :func:`orientation_set` of its kernel's :func:`kernel_orientation`. Returns ``{"size",
    "set" (per row: 0 = A, 1 = B), "kernels" (the rendered arrays, one per distinct
    record), "kernel_of" (per row), "directions"}``; one direction per set with rows, each
    ``{"set", "train" (row indices, not held out), "test" (held-out rows whose turned
    kernel is far enough), "dropped" (held-out rows whose turned kernel is not),
    "max_cosine" (the largest cosine of a kept held-out kernel to a training kernel; None
    when none is kept)}``. The held-out kernel of a test row is ``numpy.rot90`` of its own
    kernel; cosines are between :func:`kernels.vector` renderings at the common side ``size``.
    """
    test = np.asarray(test, dtype=bool).ravel()
    if len(test) != len(records):
        raise ShiftlabError(f"probe_plan: {len(records)} records but {len(test)} test flags")
    keys = [json.dumps(dict(r), sort_keys=True) for r in records]
    uk, kinv = np.unique(np.array(keys, dtype=object).astype(str), return_inverse=True)
    kinv = kinv.ravel()
    arrs = [kernels.from_record(json.loads(k)).render() for k in uk]
    size = max(a.shape[0] for a in arrs) if arrs else 1
    size = size if size % 2 else size + 1

    def unit(vs):
        V = np.stack(vs).astype(np.float64)
        nrm = np.linalg.norm(V, axis=1, keepdims=True)
        return V / np.where(nrm > 0, nrm, 1.0)

    V = unit([kernels.vector(a, size) for a in arrs]) if arrs else np.zeros((0, size * size))
    R = unit([kernels.vector(np.ascontiguousarray(np.rot90(a)), size) for a in arrs]) if arrs else V
    set_k = np.array([orientation_set(kernel_orientation(a), band_degrees) for a in arrs], dtype=np.int64)
    of_set = set_k[kinv] if len(kinv) else np.zeros(0, np.int64)
    directions = []
    for h in (0, 1):
        mine = of_set == h
        if not mine.any():
            continue
        tr = np.flatnonzero(mine & ~test)
        te = np.flatnonzero(mine & test)
        train_k = np.unique(kinv[tr])
        test_k = np.unique(kinv[te])
        if len(train_k) and len(test_k):
            mx = (R[test_k] @ V[train_k].T).max(1)
        else:
            mx = np.zeros(len(test_k))
        far = dict(zip(test_k.tolist(), (mx < max_cosine).tolist()))
        cos = dict(zip(test_k.tolist(), mx.tolist()))
        keep = np.array([far[k] for k in kinv[te]], dtype=bool) if len(te) else np.zeros(0, dtype=bool)
        kept_cos = [cos[k] for k in kinv[te[keep]]]
        directions.append({
            "set": h, "train": tr, "test": te[keep], "dropped": te[~keep],
            "max_cosine": float(max(kept_cos)) if kept_cos else None,
        })
    return {"size": int(size), "set": of_set, "kernels": arrs, "kernel_of": kinv, "directions": directions}


def _probe(c, E_syn, y, recs, rows, parent_imgs, pgroups, ext, progress) -> dict:
    """Held-out kernel probe (module docstring). ``rows`` index ``recs``; arrays are per analysed row."""
    import torch

    from shiftlab import stats
    from shiftlab.synth import blur

    p = c["probe"]
    seed = c["seed"]
    n = len(rows)
    base = {"design": PROBE_DESIGN, "max_cosine": p["max_cosine"], "gap": None, "gap_ci": [None, None]}
    if len(np.unique(y)) < 2:
        return {**base, "skipped": "fewer than 2 labels among the analysed synthetic rows"}
    # held-out parents: a seeded share of the parent groups
    up, pinv = np.unique(pgroups.astype(str), return_inverse=True)
    u = np.array([seeding.sample_rng(seed, 0, _PURPOSE, "probe_parent", str(q)).random() for q in up])
    test = (u < p["test_fraction"])[pinv]
    if test.all() or not test.any():  # tiny inputs: force both sides
        test = np.zeros(n, dtype=bool)
        test[pinv == pinv[-1]] = True
    band = p["band_degrees"]
    plan = probe_plan([recs[i] for i in rows], test, max_cosine=p["max_cosine"], band_degrees=band)
    arrs, kof = plan["kernels"], plan["kernel_of"]
    directions, reasons, diffs, strata, groups_te = [], [], [], [], []
    for dd in plan["directions"]:
        h = dd["set"]
        tr, te = dd["train"], dd["test"]
        name = _set_name(h, band)
        if len(tr) < p["min_rows"]:
            reasons.append(f"{name}: {len(tr)} training rows (< probe.min_rows {p['min_rows']})")
            continue
        if len(np.unique(y[tr])) < 2:
            reasons.append(f"{name}: training rows hold fewer than 2 labels")
            continue
        if len(te) == 0:
            reasons.append(f"{name}: no held-out kernel below cosine {p['max_cosine']:g} to every training kernel "
                           f"({len(dd['dropped'])} held-out rows dropped)")
            continue
        model = stats.fit_logistic(E_syn[tr], y[tr], l2=p["l2"])
        x = torch.from_numpy(np.ascontiguousarray(parent_imgs[te]))
        seen = [arrs[k] for k in kof[te]]
        turned = [np.ascontiguousarray(np.rot90(arrs[k])) for k in kof[te]]
        e_in = (model.predict(ext.embed(blur.apply_kernels(x, seen).numpy())) != y[te]).astype(np.float64)
        e_out = (model.predict(ext.embed(blur.apply_kernels(x, turned).numpy())) != y[te]).astype(np.float64)
        diffs.append(e_out - e_in)
        strata.append(np.full(len(te), len(directions)))
        groups_te.append(pgroups[te].astype(str))
        directions.append({
            "train": name, "held_out": _set_name(1 - h, band) + " (own kernel turned 90 degrees)",
            "train_rows": int(len(tr)), "train_kernels": int(len(np.unique(kof[tr]))),
            "test_rows": int(len(te)), "dropped_test_rows": int(len(dd["dropped"])),
            "max_cosine_to_train": dd["max_cosine"],
            "error_seen": float(e_in.mean()), "error_held_out": float(e_out.mean()),
            "gap": float(e_out.mean() - e_in.mean()),
        })
    out = {**base, "band_degrees": band, "sets_with_rows": [_set_name(dd["set"], band) for dd in plan["directions"]],
           "directions": directions}
    if reasons:
        out["notes"] = reasons
    if not directions:
        return {**out, "skipped": "; ".join(reasons) or "no analysed rows"}
    diff, st = np.concatenate(diffs), np.concatenate(strata)
    g = np.concatenate(groups_te)
    nd = len(directions)
    masks = [st == d for d in range(nd)]

    def gap_w(W):  # a replicate that drew no row of a direction is NaN (dropped)
        with np.errstate(invalid="ignore", divide="ignore"):
            parts = [(W[:, m] * diff[m]).sum(1) / W[:, m].sum(1) for m in masks]
        return np.mean(parts, axis=0)

    lo, hi, _ = stats.cluster_bootstrap(gap_w, g, c["realism"]["n_boot"], seed)
    out.update({
        "error_seen": float(np.mean([d["error_seen"] for d in directions])),
        "error_held_out": float(np.mean([d["error_held_out"] for d in directions])),
        "gap": float(np.mean([d["gap"] for d in directions])),
        "gap_ci": [lo, hi],
        "test_rows": int(len(diff)),
        "test_groups": int(len(np.unique(g))),
    })
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


def run(synthetic, splits, cfg: Mapping[str, Any] | None = None, plots_dir=None, progress: bool = True,
        features_cache: dict | None = None) -> dict:
    """The diversity report of ``synthetic`` (rows of :func:`blur.make_synthetic`) against ``splits``.

    Args:
        synthetic: the synthetic image rows (image schema; ``recipe`` with a ``kernel``
            record, ``parent`` = id of a row of ``splits``).
        splits: the mismatch splits (``DatasetDict``; ``train`` holds the real source and
            target rows, parents may be in any split).
        cfg: the ``check_images`` section (plain dict; missing keys take :data:`DEFAULTS`).
        plots_dir: when given, PNGs are written there (module docstring, :func:`markdown`).
        progress: tqdm bar while the feature network trains.
        features_cache: a dict shared by several calls (the diversity ladder): the fitted
            feature network is kept there under its fit rows, network cfg and seed, so calls
            whose network would be fitted on the same rows reuse it (the report is the same
            as without the cache).

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

    # ---- groups: a synthetic row belongs to its parent's group
    up, pinv = np.unique(parents, return_inverse=True)
    pinv = pinv.ravel()
    ps_u, pr_u = _parent_index(splits, [str(q) for q in up])
    pg_u = np.empty(len(up), dtype=object)
    for sname in sorted(set(ps_u.tolist())):
        sel = ps_u == sname
        pg_u[sel] = _groups_of(splits[sname])[pr_u[sel]]
    pgroup = pg_u[pinv].astype(str)

    # ---- the real rows: compared target rows, then the feature network's rows (disjoint by group)
    train = splits["train"]
    tm = _columns(train, ("label", "domain", "origin"))
    tgroups = _groups_of(train).astype(str)
    real_mask = tm["origin"] == "real"
    tgt_all = np.flatnonzero(real_mask & (tm["domain"] == "target"))
    tgt_rows = _pick_groups(tgt_all, tgroups, c["max_target"], seed, "target")
    fc = c["features"]
    fit_rows, fit_groups = feature_fit_rows(tgroups, real_mask, tgroups[tgt_rows], pgroup, fc["train_rows"],
                                            fc["max_parent_share"], seed)
    if len(np.unique(tm["label"][fit_rows])) < 2:
        raise ShiftlabError("check images: splits train needs real rows of at least 2 labels, apart from the compared "
                            "rows, to train the feature network")
    eligible = np.flatnonzero(~np.isin(pgroup, np.asarray(sorted(fit_groups), dtype=str)))
    if len(eligible) == 0:
        raise ShiftlabError("check images: every synthetic row's parent is needed to train the feature network "
                            "(lower features.max_parent_share or features.train_rows)")

    # ---- image subsample
    rows = eligible[_subsample_by_parent(parents[eligible], ids[eligible], c["max_rows"], seed)]
    src_rows = rows if order is None else order[rows]
    syn_imgs = _read(synthetic, src_rows)
    y_syn = meta["label"][rows].astype(np.int64)
    par_imgs = _read_parents(splits, ps_u[pinv[rows]], pr_u[pinv[rows]])
    tgt_imgs = _read(train, tgt_rows)
    compared = np.asarray(sorted(set(tgroups[tgt_rows].tolist()) | set(pgroup[rows].tolist())), dtype=str)
    overlap = int(np.isin(tgroups[fit_rows], compared).sum())

    net_cfg = {k: v for k, v in fc.items() if k != "max_parent_share"}
    fkey = (hash(np.asarray(fit_rows, dtype=np.int64).tobytes()), len(fit_rows), len(train),
            json.dumps(net_cfg, sort_keys=True), seed)
    ext = None if features_cache is None else features_cache.get(fkey)
    if ext is None:
        ext = feat_mod.fit(_read(train, fit_rows), tm["label"][fit_rows], net_cfg, seed=seed, progress=progress)
        if features_cache is not None:
            features_cache[fkey] = ext
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
        "analysed_target_groups": int(len(np.unique(tgroups[tgt_rows]))),
        "feature_train_rows": int(len(fit_rows)),
        "feature_parent_groups": int(len(fit_groups)),
        "feature_rows_overlap": overlap,
        "note": (
            f"kernel counts and parameter histograms use all {len(ids)} synthetic rows; orientation and kernel "
            f"Vendi use {kern['vendi_rows']} rendered kernels; image metrics use {len(rows)} synthetic rows "
            f"(whole parents, seeded) and {len(tgt_rows)} of {len(tgt_all)} target rows; the feature network "
            f"fits on {len(fit_rows)} other real train rows ({overlap} shared groups with the compared rows)"
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

    # ---- realism vs target (grouped folds and cluster-bootstrap intervals)
    rc = c["realism"]
    g_syn, g_tgt = pgroup[rows], tgroups[tgt_rows]
    if min(len(E_tgt), len(E_syn)) < 2 * rc["folds"]:
        report["realism"] = {
            "skipped": f"need >= {2 * rc['folds']} target rows in splits train (have {len(E_tgt)})",
            "domain_auc": {"auc": None}, "target_rows": int(len(E_tgt)),
        }
    else:
        auc_s = stats.domain_classifier_auc(E_syn, E_tgt, rc["folds"], seed, groups_a=g_syn, groups_b=g_tgt,
                                            n_boot=rc["n_boot"])
        auc_p = stats.domain_classifier_auc(E_par, E_tgt, rc["folds"], seed, groups_a=g_syn, groups_b=g_tgt,
                                            n_boot=rc["n_boot"])
        with warnings.catch_warnings():  # dead ReLU units make a covariance singular; stats handles it
            warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
            fdd = stats.frechet_difference(E_syn, E_par, E_tgt, groups=g_syn, groups_t=g_tgt, n_boot=rc["n_boot"],
                                           seed=seed)
        lo, hi = fdd["ci_low"], fdd["ci_high"]
        moved = ("yes" if hi < 0 else "no" if lo > 0 else "inconclusive") if math.isfinite(lo) else "inconclusive"
        report["realism"] = {
            "target_rows": int(len(E_tgt)),
            "target_groups": int(len(np.unique(g_tgt))),
            "synthetic_groups": int(len(np.unique(g_syn))),
            "domain_auc": auc_s,
            "domain_auc_parents": auc_p,
            "frechet": fdd["frechet_x"],
            "frechet_parents": fdd["frechet_y"],
            "frechet_difference": {k: fdd[k] for k in ("difference", "ci_low", "ci_high", "n_boot")},
            "moved_toward_target": moved,
        }

    # ---- held-out kernel probe
    report["probe"] = _probe(c, E_syn, y_syn, recs, rows, par_imgs, pgroup[rows], ext, progress)

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


def _na_reason(report: Mapping, path: Sequence[str | int]) -> str:
    sec = report.get(path[0]) if isinstance(report, Mapping) else None
    if isinstance(sec, Mapping):
        if sec.get("skipped"):
            return f"n/a: {sec['skipped']}"
        sub = sec.get(path[1]) if len(path) > 1 else None
        if isinstance(sub, Mapping) and sub.get("reason"):
            return f"n/a: {sub['reason']}"
    return "n/a: not computed"


def gate(report: Mapping, cfg: Mapping[str, Any] | None = None) -> list[dict]:
    """One verdict per configured gate, in :data:`METRICS` order.

    ``cfg``: the ``check_images`` section (its ``gates``); ``None`` uses the cfg stored in
    the report (or :data:`DEFAULTS`). Each dict: ``name``, ``value`` (None when the metric
    was not computed or does not apply), ``op`` (``">="`` for ``min``, ``"<="`` for
    ``max``), ``threshold``, ``action`` (``fail`` | ``warn``), ``passed`` and
    ``description``. **n/a is not a pass**: a gate without a value has ``passed`` False and a
    ``reason``, so it counts with its action (an n/a fail gate fails the check; module
    docstring, "Gates").
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
        d = {"name": name, "value": v, "op": ">=" if op == "min" else "<=", "threshold": float(thr),
             "action": g["action"], "passed": bool(passed), "description": desc}
        if v is None:
            d["reason"] = _na_reason(report, path)
        out.append(d)
    return out


def verdict(gates: Sequence[Mapping]) -> str:
    """``"fail"`` (a fail gate did not pass, n/a included), ``"warn"`` (a warn gate did not), else ``"pass"``."""
    if any(not g["passed"] and g["action"] == "fail" for g in gates):
        return "fail"
    return "warn" if any(not g["passed"] for g in gates) else "pass"


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
    word = {"fail": "FAIL", "warn": "PASS with warnings", "pass": "PASS"}[verdict(gates)]
    L = ["# Synthetic image diversity", "", f"**Verdict: {word}** "
         f"({len(failed)} failed, {len(warned)} warnings, {len(gates)} gates)", ""]
    L += ["| gate | value | rule | action | result |", "|---|---:|---|---|---|"]
    for g in gates:
        res = "pass" if g["passed"] else ("FAIL" if g["action"] == "fail" else "warn")
        if g["value"] is None:
            res += " (n/a)"
        L.append(f"| {g['name']} | {_f(g['value'])} | {g['op']} {g['threshold']:g} | {g['action']} | {res} |")
    nas = [g for g in gates if g["value"] is None]
    if nas:
        L += ["", "Not available, so not passed (an n/a gate counts with its action): "
              + "; ".join(f"{g['name']}: {g.get('reason', 'n/a')}" for g in nas) + "."]
    sub = report.get("subsample", {})
    L += ["", f"Subsampling: {sub.get('note', '')}.", ""]
    k = report["kernels"]
    L += ["## Kernel coverage", "",
          f"- rows: {_f(k['rows'])}, distinct kernels: {_f(k['distinct'])}, most used kernel: "
          f"{_f(k['samples_per_kernel']['max'])} rows ({_f(k['top_share'])} of all), mean {_f(k['samples_per_kernel']['mean'], 2)} per kernel",
          f"- effective number of kernels (counts): {_f(k['effective_number'], 1)} ({_f(k.get('effective_share'))} per "
          f"row); Vendi score of the kernel vectors ({k['vector_size']}x{k['vector_size']}, {k['vendi_rows']} kernels): "
          f"{_f(k['vendi'], 1)}, of a reference draw at equal n and scale (a fresh kernel per row, same path lengths): "
          f"{_f(k.get('vendi_reference'), 1)}; ratio {_f(k.get('vendi_ratio'))}",
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
        fd = r["frechet_difference"]
        L += ["| compared with target | domain AUC (95% CI) | Frechet distance |", "|---|---|---:|",
              f"| synthetic | {_f(a['auc'])} ({_f(a['ci_low'])}-{_f(a['ci_high'])}) | {_f(r['frechet'], 2)} |",
              f"| sharp parents | {_f(ap['auc'])} ({_f(ap['ci_low'])}-{_f(ap['ci_high'])}) | {_f(r['frechet_parents'], 2)} |",
              "", f"Frechet distance to the target, synthetic minus sharp parents: {_f(fd['difference'])} (95% CI "
              f"{_f(fd['ci_low'])} to {_f(fd['ci_high'])}; cluster bootstrap over {_f(r['synthetic_groups'])} parent "
              f"and {_f(r['target_groups'])} target groups, paired by parent). Synthesis moved the source toward the "
              f"target: **{r['moved_toward_target']}** (yes only when the whole interval is below 0). AUC 0.5 = a "
              f"learner cannot tell them apart; its folds keep every group whole and its interval resamples groups."]
    p = report["probe"]
    L += ["", "## Held-out kernel probe", "", f"Design (the same for every synthetic set): {p.get('design', '')}; a "
          f"held-out kernel's cosine to every training kernel is below {_f(p.get('max_cosine'))}. A logistic "
          "classifier on features is trained on one orientation set and tested on held-out parents with their own "
          "kernel (seen) and with it turned 90 degrees (held-out).", ""]
    if p.get("directions"):
        L += ["| trained on | held-out kernels | train rows (kernels) | test rows (dropped) | max cosine | error seen | "
              "error held-out | gap |", "|---|---|---:|---:|---:|---:|---:|---:|"]
        for d in p["directions"]:
            L.append(f"| {d['train']} | {d['held_out']} | {d['train_rows']} ({d['train_kernels']}) | {d['test_rows']} "
                     f"({d['dropped_test_rows']}) | {_f(d['max_cosine_to_train'])} | {_f(d['error_seen'])} | "
                     f"{_f(d['error_held_out'])} | {_f(d['gap'])} |")
        L.append("")
    if p.get("skipped"):
        L.append(f"Not applicable: {p['skipped']}.")
    else:
        L += [f"Gap {_f(p['gap'])} (95% CI {_f(p['gap_ci'][0])} to {_f(p['gap_ci'][1])}, {p['test_rows']} test rows in "
              f"{p['test_groups']} parent groups): a large gap means a model overfits the kernels it saw; the fail "
              "gate is on the interval's upper end."]
        for note in p.get("notes") or []:
            L.append(f"Note: {note}.")
    fe = report["features"]
    L += ["", "## Feature network", "",
          f"Trained inside the check on {_f(fe['train_rows'])} real train rows (none of them, nor their groups, among "
          f"the compared rows: overlap {_f(sub.get('feature_rows_overlap'))}) at {fe['size']}x{fe['size']}, "
          f"{fe['dim']}-d embedding; train accuracy {_f(fe['train_accuracy'])}, on the analysed synthetic rows "
          f"{_f(fe['accuracy_synthetic'])}, on their sharp parents {_f(fe['accuracy_parents'])}."]
    if report.get("plots"):
        L += ["", "## Plots", ""] + [f"- `{p}`" for p in report["plots"]]
    return "\n".join(L) + "\n"
