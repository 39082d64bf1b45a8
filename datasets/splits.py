"""Mismatch splits: train / train_dev / dev / test with loss weights (MLY ch. 36-40).

Machine Learning Yearning's recipe for training on a distribution that differs from
the one you care about:

* **dev** and **test** come only from the *target* distribution (the app photos,
  speech recorded in cars). Part of the target may also go into training: with
  10,000 app photos and 200,000 web photos, 5,000 app photos join the 200,000 web
  photos in training and 5,000 are split between dev and test.
* **train_dev** is held out from the *training* distribution (source + target-train
  rows, in the same proportions), so that ``train_dev error - train error`` measures
  variance and ``dev error - train_dev error`` measures data mismatch.
* Source rows can be weighted down: ``min sum_target L + beta * sum_source L``.

:func:`build` makes the four splits from a dataset of real rows of both domains,
:func:`add_check_sets` adds evaluation-only splits (:data:`schema.CHECK_SPLITS`, e.g.
``codrivers``: real speech every model is scored on and reported separately; never
trained on, never synthesised from, never used for a choice),
:func:`attach_synthetic` adds synthetic rows next to their parents,
:func:`assign_weights` writes the ``weight`` column, :func:`check` verifies the
invariants, :func:`report` / :func:`markdown` summarise the result.

Groups (speaker, car, source image: the unit that must never be split) are kept
disjoint between **train + train_dev**, **dev** and **test**. train_dev is a
row-level slice of the training pool, so a group may have rows in both train and
train_dev: train_dev measures how well the model generalises to new *rows* of the
training distribution, and a group-level train_dev would instead mix variance with a
shift between groups. Everything operates on the metadata columns with numpy and
``Dataset.select``; the image/audio data is never touched row by row, so the code
works for image and audio datasets alike.
"""

from __future__ import annotations

import hashlib
import json
from typing import Sequence

import datasets as hfds
import numpy as np

from shiftlab import seeding
from shiftlab.datasets import schema
from shiftlab.errors import ShiftlabError

SPLITS = schema.SPLITS
CHECK_SPLITS = schema.CHECK_SPLITS
#: the three buckets that must be group-disjoint (each check split present is one more)
BUCKETS = (("train", "train_dev"), ("dev",), ("test",))
META = ("id", "label", "domain", "origin", "group", "parent")

# --------------------------------------------------------------------------- helpers


def _cols(ds: hfds.Dataset, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Metadata columns as numpy arrays (strings -> object arrays); never decodes data."""
    if len(ds) == 0:
        kinds = {"label": np.int64, "weight": np.float64}
        return {n: np.array([], dtype=kinds.get(n, object)) for n in names}
    table = ds.select_columns(list(names)).with_format("arrow")[:]
    out = {}
    for n in names:
        a = table.column(n).to_numpy(zero_copy_only=False)
        out[n] = a.astype(np.int64) if n == "label" else a.astype(np.float64) if n == "weight" else a.astype(object)
    return out


def _with_weight(d: hfds.Dataset, w: np.ndarray) -> hfds.Dataset:
    """``d`` plus a float32 ``weight`` column, without copying or flattening the data.

    ``Dataset.add_column`` flattens an indices mapping first (a slow row-by-row copy of
    the images/audio); instead the weights are scattered onto the underlying table and
    the mapping is kept.
    """
    w = np.asarray(w, dtype=np.float32)
    feature = hfds.Value("float32")
    if d._indices is None:
        return d.add_column("weight", w, feature=feature)
    idx = np.asarray(d._indices.column(0).to_numpy(), dtype=np.int64)
    full = np.zeros(len(d._data), dtype=np.float32)
    full[idx] = w
    base = hfds.Dataset(d._data, info=d.info, split=d.split, fingerprint=d._fingerprint + "-base")
    base = base.add_column("weight", full, feature=feature)
    fp = hashlib.sha256(f"{d._fingerprint}/{base._fingerprint}".encode()).hexdigest()[:16]
    out = hfds.Dataset(base._data, info=base.info, split=d.split, indices_table=d._indices, fingerprint=fp)
    if d._format_type is not None or d._format_columns is not None:  # keep the caller's format
        cols = None if d._format_columns is None else [*d._format_columns, "weight"]
        out = out.with_format(d._format_type, columns=cols, output_all_columns=d._output_all_columns,
                              **d._format_kwargs)
    return out


def _require_columns(ds: hfds.Dataset, names: Sequence[str], where: str) -> None:
    missing = [c for c in names if c not in ds.column_names]
    if missing:
        raise ShiftlabError(f"{where}: missing column(s) {', '.join(missing)}")


def _allocate(sizes: np.ndarray, total: int, rng: np.random.Generator) -> np.ndarray:
    """Split ``total`` items over strata proportionally to ``sizes`` (largest remainder).

    Every stratum gets floor(share) or ceil(share) and never more than its size; ties in
    the remainders are broken by ``rng``.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    n = int(sizes.sum())
    if n == 0 or total <= 0:
        return np.zeros_like(sizes)
    total = min(int(total), n)
    quota = sizes * (total / n)
    base = np.minimum(np.floor(quota).astype(np.int64), sizes)
    left = total - int(base.sum())
    if left > 0:
        frac = quota - base
        frac[base >= sizes] = -1.0  # full strata take nothing more
        order = np.lexsort((rng.random(len(sizes)), -frac))
        base[order[:left]] += 1
    return base


def _stratified_pick(strata: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask choosing ``counts[s]`` random rows of each stratum ``s``."""
    keys = rng.random(len(strata))
    order = np.lexsort((keys, strata))
    sorted_strata = strata[order]
    starts = np.searchsorted(sorted_strata, sorted_strata, side="left")
    rank = np.arange(len(strata)) - starts
    mask = np.zeros(len(strata), dtype=bool)
    mask[order] = rank < counts[sorted_strata]
    return mask


def _fractions(cfg: dict) -> dict[str, float]:
    t = float(cfg.get("target_train_fraction", 0.5))
    d = float(cfg.get("dev_fraction", 0.5))
    if not 0.0 <= t < 1.0:
        raise ShiftlabError(f"target_train_fraction: must be in [0, 1), got {t:g}")
    if not 0.0 < d < 1.0:
        raise ShiftlabError(f"dev_fraction: must be in (0, 1), got {d:g}")
    return {"train": t, "dev": (1.0 - t) * d, "test": (1.0 - t) * (1.0 - d)}


def _assign_groups(
    gidx: np.ndarray, labels: np.ndarray, n_labels: int, fractions: dict[str, float],
    pinned: np.ndarray, rng: np.random.Generator, cfg: dict,
) -> np.ndarray:
    """Split index (0 train, 1 dev, 2 test) for every target group.

    Greedy, StratifiedGroupKFold-like: groups in a seeded random order, larger groups
    first; each goes to the split that most reduces the squared deviation of the
    per-(split, label) row counts from their targets. Groups in ``pinned`` go to train.
    Every split with a positive fraction gets at least one group.
    """
    n_groups = int(gidx.max()) + 1
    C = np.bincount(gidx * n_labels + labels, minlength=n_groups * n_labels).reshape(n_groups, n_labels)
    C = C.astype(np.float64)
    frac = np.array([fractions["train"], fractions["dev"], fractions["test"]])
    T = frac[:, None] * C.sum(axis=0)[None, :]
    positive = [s for s in range(3) if frac[s] > 0]
    names = ("train", "dev", "test")
    need = len(positive)
    free = np.flatnonzero(~pinned)
    if pinned.any() and 0 not in positive:
        raise ShiftlabError(
            f"{int(pinned.sum())} group(s) have both source and target rows, so their target rows must go to "
            f"train, but target_train_fraction is 0; give source and target rows different groups"
        )
    have_train = bool(pinned.any())
    if len(free) < need - have_train:
        raise ShiftlabError(
            f"only {n_groups} target group(s) ({len(free)} assignable), but target_train_fraction="
            f"{fractions['train']:g} and dev_fraction={cfg.get('dev_fraction', 0.5):g} need at least {need} "
            f"(one each for {', '.join(names[s] for s in positive)}); add target groups or change these keys"
        )
    out = np.full(n_groups, -1, dtype=np.int64)
    A = np.zeros_like(T)
    out[pinned] = 0
    A[0] += C[pinned].sum(axis=0)
    filled = {0} if have_train else set()
    # seeded random order, then larger groups first (stable sort keeps the random order among equals)
    perm = free[rng.permutation(len(free))]
    order = perm[np.argsort(-C[perm].sum(axis=1), kind="stable")]
    D = A - T
    remaining = len(order)
    for g in order:
        empty = [s for s in positive if s not in filled]
        cand = empty if remaining <= len(empty) else positive
        c = C[g]
        cost = (c * (c + 2.0 * D[cand])).sum(axis=1)
        s = cand[int(np.argmin(cost))]
        out[g] = s
        D[s] += c
        filled.add(s)
        remaining -= 1
    return out


# --------------------------------------------------------------------------- build


def build(ds: hfds.Dataset, cfg: dict) -> hfds.DatasetDict:
    """Split a dataset of real source and target rows into train / train_dev / dev / test.

    ``cfg`` is a ``split_images`` / ``split_audio`` params section (seed,
    target_train_fraction, dev_fraction, train_dev_fraction, max_source_rows,
    beta_source, beta_synthetic).

    1. Target groups go to train / dev / test with fractions ``t``, ``(1-t)*dev_fraction``,
       ``(1-t)*(1-dev_fraction)`` (``t = target_train_fraction``, may be 0): group-disjoint,
       label-stratified as far as the groups allow (see :func:`_assign_groups`). A group
       that also has source rows is pinned to train.
    2. Source rows (a seeded, label-stratified subsample of ``max_source_rows`` rows if set;
       the rest are dropped) join the target-train rows in the training pool.
    3. train_dev = a seeded row-level slice of the pool (``train_dev_fraction`` of it,
       stratified by (domain, label)); the rest is train.
    4. Weights by :func:`assign_weights`; the result passes :func:`check`.

    Rows keep their input order inside each split. Same input and cfg -> identical
    output; another seed -> another assignment.
    """
    where = "split input"
    _require_columns(ds, META, where)
    if len(ds) == 0:
        raise ShiftlabError(f"{where}: no rows")
    names = schema.label_names(ds)
    if "weight" in ds.column_names:
        ds = ds.remove_columns("weight")
    seed = int(cfg.get("seed", 0))
    fractions = _fractions(cfg)
    tdf = float(cfg.get("train_dev_fraction", 0.05))
    if not 0.0 < tdf < 1.0:
        raise ShiftlabError(f"train_dev_fraction: must be in (0, 1), got {tdf:g}")
    m = _cols(ds, ("id", "label", "domain", "origin", "group"))
    bad = set(np.unique(m["domain"]).tolist()) - set(schema.DOMAINS)
    if bad:
        raise ShiftlabError(f"{where}: column domain has value(s) {sorted(bad)}; allowed: source, target")
    badlab = np.flatnonzero((m["label"] < 0) | (m["label"] >= len(names)))
    if len(badlab):
        i = int(badlab[0])
        raise ShiftlabError(
            f"{where}: row {m['id'][i]} has label {int(m['label'][i])}, not one of the {len(names)} classes"
        )
    synth = np.flatnonzero(m["origin"] != "real")
    if len(synth):
        raise ShiftlabError(
            f"{where}: row {m['id'][synth[0]]} has origin {m['origin'][synth[0]]!r}; build() takes real rows "
            f"only (add synthetic rows with attach_synthetic)"
        )
    n = len(ds)
    is_target = m["domain"] == "target"
    is_source = ~is_target
    tgt = np.flatnonzero(is_target)
    if len(tgt) == 0:
        raise ShiftlabError(f"{where}: no target rows; dev and test must come from the target domain")

    # 1. target groups -> train / dev / test
    groups_t, gidx = np.unique(m["group"][tgt].astype(str), return_inverse=True)
    source_groups = np.unique(m["group"][is_source].astype(str)) if is_source.any() else np.array([], dtype=str)
    pinned = np.isin(groups_t, source_groups)
    where_g = _assign_groups(
        gidx.astype(np.int64), m["label"][tgt], len(names), fractions, pinned,
        seeding.sample_rng(seed, 0, "split", "target_groups"), cfg,
    )
    row_split = where_g[gidx]
    target_train = tgt[row_split == 0]
    dev_idx = tgt[row_split == 1]
    test_idx = tgt[row_split == 2]

    # 2. source rows (optionally subsampled) -> training pool
    src = np.flatnonzero(is_source)
    cap = cfg.get("max_source_rows")
    if cap is not None and len(src) > int(cap):
        lab = m["label"][src]
        counts = _allocate(np.bincount(lab, minlength=len(names)), int(cap),
                           seeding.sample_rng(seed, 0, "split", "max_source_rows", "allocate"))
        keep = _stratified_pick(lab, counts, seeding.sample_rng(seed, 0, "split", "max_source_rows"))
        src = src[keep]
    pool = np.sort(np.concatenate([src, target_train]))
    if len(pool) < 2:
        raise ShiftlabError(
            f"{where}: the training pool has {len(pool)} row(s) (source + target_train_fraction of the target); "
            f"train and train_dev need at least 2"
        )

    # 3. train_dev: row-level slice of the pool, stratified by (domain, label)
    strata = is_target[pool].astype(np.int64) * len(names) + m["label"][pool]
    n_td = max(1, int(np.floor(len(pool) * tdf + 0.5)))
    n_td = min(n_td, len(pool) - 1)
    counts = _allocate(np.bincount(strata, minlength=2 * len(names)), n_td,
                       seeding.sample_rng(seed, 0, "split", "train_dev", "allocate"))
    td_mask = _stratified_pick(strata, counts, seeding.sample_rng(seed, 0, "split", "train_dev"))
    parts = {"train": pool[~td_mask], "train_dev": pool[td_mask], "dev": dev_idx, "test": test_idx}
    assert sum(len(v) for v in parts.values()) <= n
    out = hfds.DatasetDict({k: ds.select(np.sort(parts[k]), keep_in_memory=True) for k in SPLITS})
    out = assign_weights(out, cfg.get("beta_source", 1.0), cfg.get("beta_synthetic", 1.0))
    check(out)
    return out


def _present(splits) -> list[str]:
    """:data:`SPLITS` then the check splits present (their fixed order); other keys are ignored."""
    return list(SPLITS) + [s for s in CHECK_SPLITS if s in splits]


# --------------------------------------------------------------------------- check sets


def add_check_sets(splits: hfds.DatasetDict, sets: dict[str, hfds.Dataset]) -> hfds.DatasetDict:
    """``splits`` plus the evaluation-only splits ``sets`` (``{name: dataset}``, names from
    :data:`schema.CHECK_SPLITS`).

    A check set holds real target rows only (as dev and test), labels among the splits'
    label names (re-encoded to them), columns those of the splits, weight 1, and groups
    of its own: a group that is also in train+train_dev, dev or test is an error (a
    speaker heard in training would not test anything new). An empty set is left out.
    The rows are never trained on (the trainer fits on train and selects on dev), never
    synthesised from (:func:`attach_synthetic` refuses a parent there) and only predicted
    at the end. The result passes :func:`check`.
    """
    for s in SPLITS:
        if s not in splits:
            raise ShiftlabError(f"splits: missing split {s}")
    names = schema.label_names(splits["train"])
    feats = splits["train"].features.copy()
    out = dict(splits)
    for name, ds in sets.items():
        if name not in CHECK_SPLITS:
            raise ShiftlabError(f"check set {name!r}: unknown (check sets: {', '.join(CHECK_SPLITS)})")
        if name in splits:
            raise ShiftlabError(f"check set {name}: the splits already have a split of that name")
        where = f"check set {name}"
        if len(ds) == 0:
            continue
        _require_columns(ds, META, where)
        m = _cols(ds, ("id", "domain", "origin"))
        bad = np.flatnonzero((m["domain"] != "target") | (m["origin"] != "real"))
        if len(bad):
            i = int(bad[0])
            raise ShiftlabError(f"{where}: row {m['id'][i]} has domain {m['domain'][i]} and origin {m['origin'][i]}; "
                                f"a check set holds real target rows only")
        try:
            ds = schema.relabel(ds, names)
        except ShiftlabError as e:
            raise ShiftlabError(f"{where}: {e} (labels of the splits: {', '.join(names)})") from None
        if "weight" in ds.column_names:
            ds = ds.remove_columns("weight")
        want = [c for c in feats if c != "weight"]
        missing = sorted(set(want) - set(ds.column_names))
        extra = sorted(set(ds.column_names) - set(want))
        if missing or extra:
            raise ShiftlabError(f"{where}: columns differ from the splits' (missing {missing or 'none'}, "
                                f"extra {extra or 'none'})")
        ds = ds.select_columns(want)
        same = hfds.Features({k: feats[k] for k in want})
        try:
            if ds.features != same:
                ds = ds.cast(same, keep_in_memory=True)
        except Exception as e:  # noqa: BLE001 - incompatible shapes/types
            raise ShiftlabError(f"{where}: features do not match the splits' ({type(e).__name__}: {e})") from None
        out[name] = _with_weight(ds, np.ones(len(ds), dtype=np.float32))
    out = hfds.DatasetDict(out)
    check(out)
    return out


# --------------------------------------------------------------------------- weights


def _beta(value, name: str, n_target: int, n_other: int, what: str) -> float:
    if isinstance(value, str):
        if value != "balanced":
            raise ShiftlabError(f"{name}: must be a number >= 0 or 'balanced', got {value!r}")
        if n_target == 0:
            raise ShiftlabError(
                f"{name}: 'balanced' gives the {what} rows in train the same total weight as the target rows in "
                f"train, but train has no (real) target rows (target_train_fraction is 0?); set a number instead"
            )
        return float(n_target) / n_other if n_other else 1.0
    v = float(value)
    if not np.isfinite(v) or v < 0:
        raise ShiftlabError(f"{name}: must be a number >= 0 or 'balanced', got {value!r}")
    return v


def resolve_betas(splits: hfds.DatasetDict, beta_source, beta_synthetic) -> tuple[float, float]:
    """The numeric (beta_source, beta_synthetic), resolving 'balanced' from the train split."""
    m = _cols(splits["train"], ("domain", "origin"))
    real = m["origin"] == "real"
    n_tt = int(np.sum(real & (m["domain"] == "target")))
    n_src = int(np.sum(real & (m["domain"] == "source")))
    n_syn = int(np.sum(~real))
    return (
        _beta(beta_source, "beta_source", n_tt, n_src, "source"),
        _beta(beta_synthetic, "beta_synthetic", n_tt, n_syn, "synthetic"),
    )


def assign_weights(splits: hfds.DatasetDict, beta_source, beta_synthetic) -> hfds.DatasetDict:
    """(Re)write a float32 ``weight`` column in every split.

    * real target rows: 1
    * real source rows: ``beta_source``
    * synthetic rows (any domain): ``beta_synthetic``

    A beta is a number >= 0 or ``"balanced"``, the book's rule: the group gets the same
    total weight in train as the real target rows in train, i.e. ``beta_source =
    n_target_train / n_source_real_train`` (5,000 app photos next to 200,000 web photos
    -> 1/40) and ``beta_synthetic = n_target_train / n_synthetic_train``. "balanced"
    without real target rows in train is an error (there is nothing to balance
    against); without rows of that kind it is 1. The same betas are written into every
    split (train_dev therefore measures the same weighted objective; dev/test hold only
    target rows, weight 1). The trainer uses ``loss = sum(w * l) / sum(w)`` over a
    batch, which is ``sum_target l + beta * sum_source l`` up to a constant factor.
    """
    if "train" not in splits:
        raise ShiftlabError("splits: no train split")
    b_src, b_syn = resolve_betas(splits, beta_source, beta_synthetic)
    out = {}
    for name, d in splits.items():
        if "weight" in d.column_names:
            d = d.remove_columns("weight")
        m = _cols(d, ("domain", "origin"))
        w = np.ones(len(d), dtype=np.float32)
        w[(m["origin"] == "real") & (m["domain"] == "source")] = np.float32(b_src)
        w[m["origin"] != "real"] = np.float32(b_syn)
        out[name] = _with_weight(d, w)
    return hfds.DatasetDict(out)


# --------------------------------------------------------------------------- synthetic rows


def attach_synthetic(splits: hfds.DatasetDict, synthetic: hfds.Dataset, cfg: dict) -> hfds.DatasetDict:
    """Add synthetic rows to the split of their parent (train or train_dev).

    Each synthetic row's ``parent`` must be the id of a real row in train or train_dev;
    the row's ``group`` and ``domain`` are overwritten with the parent's (a variant of
    a row belongs to the same group, so it can never leak into dev/test). A parent in
    dev/test, an unknown parent or a synthetic parent is an error naming the row. The
    synthetic rows are appended after the real rows; weights are recomputed with
    ``cfg["beta_source"]`` and ``cfg["beta_synthetic"]``.
    """
    where = "synthetic rows"
    _require_columns(synthetic, META, where)
    for s in SPLITS:
        if s not in splits:
            raise ShiftlabError(f"splits: missing split {s}")
    if len(synthetic) == 0:
        return assign_weights(splits, cfg.get("beta_source", 1.0), cfg.get("beta_synthetic", 1.0))
    if "weight" in synthetic.column_names:
        synthetic = synthetic.remove_columns("weight")
    names = schema.label_names(splits["train"])
    try:
        synthetic = schema.relabel(synthetic, names)
    except ShiftlabError as e:
        raise ShiftlabError(f"{where}: {e} (labels of the splits: {', '.join(names)})") from None
    sm = _cols(synthetic, ("id", "origin", "parent"))
    real = np.flatnonzero(sm["origin"] != "synthetic")
    if len(real):
        raise ShiftlabError(f"{where}: row {sm['id'][real[0]]} has origin {sm['origin'][real[0]]!r}, not 'synthetic'")

    # every row of every split (check splits too), to look the parents up
    allsp = _present(splits)
    ids, split_of, grp, dom, org = [], [], [], [], []
    for k, s in enumerate(allsp):
        m = _cols(splits[s], ("id", "group", "domain", "origin"))
        ids.append(m["id"].astype(str))
        split_of.append(np.full(len(m["id"]), k))
        grp.append(m["group"])
        dom.append(m["domain"])
        org.append(m["origin"])
    ids, split_of = np.concatenate(ids), np.concatenate(split_of)
    grp, dom, org = np.concatenate(grp), np.concatenate(dom), np.concatenate(org)
    order = np.argsort(ids, kind="stable")
    parents = sm["parent"].astype(str)
    pos = np.searchsorted(ids, parents, sorter=order)
    pos = np.minimum(pos, len(ids) - 1)
    hit = order[pos]
    found = ids[hit] == parents
    if not found.all():
        i = int(np.flatnonzero(~found)[0])
        raise ShiftlabError(
            f"{where}: row {sm['id'][i]} has parent {str(parents[i])!r}, which is in none of the splits"
        )
    psplit = split_of[hit]
    bad = np.flatnonzero(psplit >= 2)
    if len(bad):
        i = int(bad[0])
        raise ShiftlabError(
            f"{where}: row {sm['id'][i]} has parent {parents[i]} in {allsp[psplit[i]]}; synthetic rows may only "
            f"come from train/train_dev rows (never from dev/test{'/' + '/'.join(allsp[len(SPLITS):]) if allsp[len(SPLITS):] else ''})"
        )
    bad = np.flatnonzero(org[hit] != "real")
    if len(bad):
        i = int(bad[0])
        raise ShiftlabError(f"{where}: row {sm['id'][i]} has parent {parents[i]}, which is not a real row")

    feats = splits["train"].features.copy()
    feats.pop("weight", None)
    if synthetic._indices is not None:
        synthetic = synthetic.flatten_indices(keep_in_memory=True)
    synthetic = synthetic.remove_columns(["group", "domain"])
    synthetic = synthetic.add_column("group", grp[hit].tolist()).add_column("domain", dom[hit].tolist())
    extra = sorted(set(synthetic.column_names) - set(feats))
    missing = sorted(set(feats) - set(synthetic.column_names))
    if missing or extra:
        raise ShiftlabError(
            f"{where}: columns differ from the splits' (missing {missing or 'none'}, extra {extra or 'none'})"
        )
    synthetic = synthetic.select_columns(list(feats))
    try:
        if synthetic.features != feats:
            synthetic = synthetic.cast(feats, keep_in_memory=True)
    except Exception as e:  # noqa: BLE001 - incompatible shapes/types
        raise ShiftlabError(f"{where}: features do not match the splits' ({type(e).__name__}: {e})") from None

    out = {}
    for k, s in enumerate(allsp):
        d = splits[s]
        if "weight" in d.column_names:
            d = d.remove_columns("weight")
        mine = np.flatnonzero(psplit == k)
        if len(mine):
            d = hfds.concatenate_datasets([d, synthetic.select(mine, keep_in_memory=True)])
        out[s] = d
    out = assign_weights(hfds.DatasetDict(out), cfg.get("beta_source", 1.0), cfg.get("beta_synthetic", 1.0))
    check(out)
    return out


# --------------------------------------------------------------------------- checks


def check(splits: hfds.DatasetDict) -> None:
    """Raise a one-line ShiftlabError if the splits break an invariant.

    Checked: all four splits present and non-empty (a check split of
    :data:`schema.CHECK_SPLITS`, when present, too); ids unique across all splits;
    dev/test and the check splits hold only real target rows; every synthetic row's parent
    is a real row in train/train_dev with the same group and domain; no group in more than
    one of {train + train_dev, dev, test, each check split}; weights (when present) finite
    and >= 0. Other split names are not looked at.
    """
    allsp = _present(splits)
    for s in allsp:
        if s not in splits:
            raise ShiftlabError(f"splits: missing split {s} (have: {', '.join(splits) or 'none'})")
        if len(splits[s]) == 0:
            raise ShiftlabError(f"splits: split {s} is empty")
        _require_columns(splits[s], META, f"splits: {s}")
    cols = {s: _cols(splits[s], META) for s in allsp}

    ids = np.concatenate([cols[s]["id"].astype(str) for s in allsp])
    owner = np.concatenate([np.full(len(cols[s]["id"]), k) for k, s in enumerate(allsp)])
    uniq, first, counts = np.unique(ids, return_index=True, return_counts=True)
    if (counts > 1).any():
        dup = uniq[np.flatnonzero(counts > 1)[0]]
        where = sorted({allsp[k] for k in owner[ids == dup]}, key=allsp.index)
        raise ShiftlabError(f"splits: duplicate id {dup} (in {', '.join(where)})")

    for s in ("dev", "test", *allsp[len(SPLITS):]):  # dev, test and every check split: real target rows only
        m = cols[s]
        bad = np.flatnonzero((m["domain"] != "target") | (m["origin"] != "real"))
        if len(bad):
            i = int(bad[0])
            what = (f"{s} holds", "dev and test must be real target rows only") if s in SPLITS else \
                (f"check split {s} holds", "a check split holds real target rows only (never synthetic rows)")
            raise ShiftlabError(f"splits: {what[0]} row {m['id'][i]} with domain {m['domain'][i]} and origin "
                                f"{m['origin'][i]}; {what[1]}")

    # synthetic rows: parent real, in train/train_dev, same group and domain
    group_all = np.concatenate([cols[s]["group"] for s in allsp])
    domain_all = np.concatenate([cols[s]["domain"] for s in allsp])
    origin_all = np.concatenate([cols[s]["origin"] for s in allsp])
    for s in SPLITS:
        m = cols[s]
        syn = np.flatnonzero(m["origin"] != "real")
        if not len(syn):
            continue
        parents = m["parent"][syn].astype(str)
        pos = np.minimum(np.searchsorted(uniq, parents), len(uniq) - 1)
        found = uniq[pos] == parents
        at = first[pos]
        psplit = np.where(found, owner[at], -1)
        problems = [
            (~found, lambda i: "which is in no split"),
            (found & (psplit >= 2), lambda i: f"which is in {allsp[psplit[i]]} (parents must be in train/train_dev)"),
            (found & (origin_all[at] != "real"), lambda i: "which is not a real row"),
        ]
        for mask, why in problems:
            bad = np.flatnonzero(mask)
            if len(bad):
                i = int(bad[0])
                raise ShiftlabError(
                    f"splits: synthetic row {m['id'][syn[i]]} in {s} has parent {str(parents[i])!r}, {why(i)}"
                )
        for col, every in (("group", group_all), ("domain", domain_all)):
            bad = np.flatnonzero(every[at] != m[col][syn])
            if len(bad):
                i = int(bad[0])
                raise ShiftlabError(
                    f"splits: synthetic row {m['id'][syn[i]]} in {s} has {col} {str(m[col][syn[i]])!r} but its parent "
                    f"{parents[i]} has {col} {str(every[at[i]])!r}"
                )

    buckets = list(BUCKETS) + [(s,) for s in allsp[len(SPLITS):]]
    bucket_groups = []
    for bucket in buckets:
        g = np.concatenate([cols[s]["group"].astype(str) for s in bucket])
        bucket_groups.append(np.unique(g))
    names = ["+".join(b) for b in buckets]
    for a in range(len(buckets)):
        for b in range(a + 1, len(buckets)):
            both = np.intersect1d(bucket_groups[a], bucket_groups[b])
            if len(both):
                raise ShiftlabError(
                    f"splits: group {str(both[0])!r} is in both {names[a]} and {names[b]}"
                    f"{f' ({len(both)} groups in all)' if len(both) > 1 else ''}; groups must not cross splits"
                )

    for s in allsp:
        if "weight" in splits[s].column_names:
            w = _cols(splits[s], ("weight",))["weight"]
            if not np.all(np.isfinite(w) & (w >= 0)):
                raise ShiftlabError(f"splits: split {s} has weights that are negative or not finite")


# --------------------------------------------------------------------------- report


def report(splits: hfds.DatasetDict) -> dict:
    """Counts and weights per split, JSON-serialisable, in a fixed key order.

    * ``rows[split]``, ``groups[split]``, ``weight_sum[split]``: flat numbers (DVC metrics);
      ``sum(rows.values())`` is the number of rows in all splits, also ``total_rows``.
    * ``counts[split][domain][origin][label]``: row counts (label names; zeros included).
    * ``weights[split][domain][origin]``: weight sums; ``beta[split][domain][origin]``: the
      mean weight per row of that kind (null where there are none).
    * ``check[split]`` (only when a check split of :data:`schema.CHECK_SPLITS` is present):
      ``rows``, ``groups`` (the group names, sorted) and ``noise_groups`` (the sorted
      ``target_mix.noise_group`` values of its rows' recipes: the held-out noise sources it
      was mixed with; empty when its rows carry none).
    """
    present = [s for s in SPLITS if s in splits] + [s for s in splits if s not in SPLITS]
    names = schema.label_names(splits[present[0]]) if present else []
    rep: dict = {"labels": list(names), "total_rows": 0, "rows": {}, "groups": {}, "weight_sum": {},
                 "counts": {}, "weights": {}, "beta": {}}
    for s in present:
        d = splits[s]
        m = _cols(d, ("label", "domain", "origin", "group"))
        w = _cols(d, ("weight",))["weight"] if "weight" in d.column_names else np.ones(len(d))
        rep["rows"][s] = int(len(d))
        rep["groups"][s] = int(len(np.unique(m["group"].astype(str)))) if len(d) else 0
        rep["weight_sum"][s] = round(float(w.sum()), 6)
        rep["counts"][s], rep["weights"][s], rep["beta"][s] = {}, {}, {}
        for dom in schema.DOMAINS:
            rep["counts"][s][dom], rep["weights"][s][dom], rep["beta"][s][dom] = {}, {}, {}
            for org in schema.ORIGINS:
                sel = (m["domain"] == dom) & (m["origin"] == org)
                per = np.bincount(m["label"][sel], minlength=len(names))
                rep["counts"][s][dom][org] = {n: int(per[i]) for i, n in enumerate(names)}
                rep["weights"][s][dom][org] = round(float(w[sel].sum()), 6)
                k = int(sel.sum())
                rep["beta"][s][dom][org] = round(float(w[sel].mean()), 8) if k else None
    rep["total_rows"] = int(sum(rep["rows"].values()))
    checks = {}
    for s in present:
        if s not in CHECK_SPLITS:
            continue
        m = _cols(splits[s], ("group", "recipe"))
        noise = set()
        for r in m["recipe"]:
            try:
                rec = json.loads(r) if r else {}
            except (TypeError, ValueError):
                rec = {}
            tm = rec.get("target_mix") if isinstance(rec, dict) else None
            if isinstance(tm, dict) and tm.get("noise_group"):
                noise.add(str(tm["noise_group"]))
        checks[s] = {"rows": int(len(splits[s])), "groups": sorted(set(m["group"].astype(str).tolist())),
                     "noise_groups": sorted(noise)}
    if checks:
        rep["check"] = checks
    return rep


def _table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:,.4g}" if abs(v) < 1000 else f"{v:,.1f}"
        if isinstance(v, int):
            return f"{v:,}"
        return "" if v is None else str(v)

    rule = "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"
    lines = ["| " + " | ".join(header) + " |", rule]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def markdown(report: dict, title: str) -> str:
    """A readable markdown version of :func:`report`."""
    splits = list(report["rows"])
    kinds = [(d, o) for d in schema.DOMAINS for o in schema.ORIGINS]
    out = [f"# {title}", ""]
    out.append(
        "dev and test are real target rows only; groups never cross train+train_dev / dev / test; "
        "train_dev is a row-level slice of the training distribution."
    )
    out += ["", "## Rows and groups", ""]
    rows = []
    for s in splits:
        c = report["counts"][s]
        rows.append([s, report["rows"][s], report["groups"][s]] + [sum(c[d][o].values()) for d, o in kinds])
    if rows:
        total = [sum(r[i] for r in rows) for i in range(1, len(rows[0]))]
        rows.append(["**total**", total[0], None] + total[2:])
    out.append(_table(["split", "rows", "groups"] + [f"{d} {o}" for d, o in kinds], rows))
    out += ["", "## Rows per label", ""]
    labels = report["labels"]
    lrows = []
    for lab in labels:
        lrows.append([lab] + [sum(report["counts"][s][d][o][lab] for d, o in kinds) for s in splits])
    out.append(_table(["label"] + splits, lrows))
    out += ["", "## Weights", "",
            "Loss per batch = sum(w * loss) / sum(w): real target rows weigh 1, real source rows beta_source, "
            "synthetic rows beta_synthetic.", ""]
    wrows = []
    for s in splits:
        for d, o in kinds:
            n = sum(report["counts"][s][d][o].values())
            if n:
                wrows.append([s, d, o, n, report["weights"][s][d][o], report["beta"][s][d][o]])
        wrows.append([s, "**all**", "", report["rows"][s], report["weight_sum"][s], None])
    out.append(_table(["split", "domain", "origin", "rows", "weight sum", "weight per row"], wrows))
    if report.get("check"):
        out += ["", "## Check sets (evaluation only)", "",
                "Real target rows every trained model is scored on and reported separately; never trained on, "
                "never synthesised from, never used to choose a checkpoint. Their groups are in no other split.", ""]
        out.append(_table(["check set", "rows", "groups", "group names", "noise sources"],
                          [[s, d["rows"], len(d["groups"]), ", ".join(d["groups"]),
                            ", ".join(d["noise_groups"]) or "-"] for s, d in report["check"].items()]))
    return "\n".join(out) + "\n"
