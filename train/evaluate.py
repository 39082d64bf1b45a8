"""Evaluation with confidence intervals and the Machine Learning Yearning error decomposition.

Input: the trainer's predictions, one entry per split (``train``, ``train_dev``, ``dev``,
``test``; any may be missing, extra split names are evaluated too)::

    {split: {"y": int (N,), "pred": int (N,), "probs": float (N, K) optional,
             "id": str (N,), "domain": str (N,), "origin": str (N,), "group": str (N,)}}

``y`` and ``pred`` are label indices into ``label_names``; ``domain``, ``origin``, ``group``
and ``id`` are optional here (breakdowns and cluster bootstraps need them, :func:`compare`
pairs runs by ``id``). An entry ``"label_names"`` in the mapping is used when the
``label_names`` argument is not given. A split with 0 rows counts as missing.

Error
    The plain (unweighted) fraction of rows with ``pred != y``. Loss weights (``beta``) are
    a training device and are not applied here; the per-domain breakdown shows the source
    and target parts of ``train`` separately.

Confidence intervals (level ``ci``, percentile bootstrap, ``n_boot`` replicates)
    *Rows*: the rows of the set are resampled with replacement. Because the statistic is a
    mean of 0/1 (or, in :func:`compare`, of 0/1 profiles over several runs), a replicate is
    drawn as multinomial counts over the distinct per-row error profiles, which has exactly
    the distribution of index resampling but costs O(n_boot * profiles) instead of
    O(n_boot * N) (checked against :func:`shiftlab.stats.bootstrap_ci` in the tests).
    *Groups* (cluster bootstrap; ``dev``/``test`` and their breakdowns only): the groups
    (speakers, videos) are resampled with replacement, each bringing all its rows; the
    replicate error is errors / rows of the resampled groups. Rows of one speaker are not
    independent, so the row CI understates the uncertainty when a few groups make up the
    set. ``cluster: auto`` uses groups when the set has at least ``min_groups`` groups and
    fewer groups than rows; with fewer than ``min_groups`` groups the row CI is reported
    with a note that it ignores between-group variation (e.g. the default audio dev set is
    one speaker). ``train`` / ``train_dev`` always use rows (train_dev is a row-level slice).
    Every entry says which method was used (``method``) and why (``note``).

Decomposition (MLY ch. 40-41; fractions, not percent)
    ``avoidable_bias = train - optimal_error``, ``variance = train_dev - train``,
    ``data_mismatch = dev - train_dev``, ``dev_overfitting = test - dev``. The four sets
    are disjoint, so one replicate resamples each set independently, and every component
    (and every split CI) is computed from those same joint replicates. A component whose
    CI contains 0 is reported as "not distinguishable from 0"; a component needing a
    missing split is "n/a".

Diagnosis (the book's words)
    A component is *named* when its CI lies above 0, its estimate is at least
    ``min_effect`` and at least ``dominant_share`` times the largest such estimate. With
    the defaults (0.01, 0.5) the book's examples read: 1/5/5 % -> "variance", 10/11/12 % ->
    "avoidable bias", 10/11/20 % -> "avoidable bias + data mismatch". Components that would
    be named by their estimate but whose CI includes 0 are listed as undetermined.

Everything is a pure function of (inputs, config): bootstrap streams derive from
``seeding.sample_seed(seed, 0, "evaluate", split, ...)``; results are plain JSON-able
dicts with floats rounded to 8 decimals.
"""

from __future__ import annotations

import copy
import csv
import difflib
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from shiftlab import seeding, store
from shiftlab.errors import ShiftlabError

SPLITS = ("train", "train_dev", "dev", "test")
CLUSTER_SPLITS = ("dev", "test")
COMPONENTS = ("avoidable_bias", "variance", "data_mismatch", "dev_overfitting")
WORDS = {
    "avoidable_bias": "avoidable bias",
    "variance": "variance",
    "data_mismatch": "data mismatch",
    "dev_overfitting": "overfitting to dev",
}
FORMULAS = {
    "avoidable_bias": ("train", None),
    "variance": ("train_dev", "train"),
    "data_mismatch": ("dev", "train_dev"),
    "dev_overfitting": ("test", "dev"),
}
ACTIONS = {
    "avoidable_bias": "a bigger model, longer training, better features or architecture (MLY ch. 25)",
    "variance": "more training data, regularisation, data augmentation (MLY ch. 27)",
    "data_mismatch": ("find how train differs from dev; get or synthesise training data that looks like dev "
                      "(MLY ch. 42-43)"),
    "dev_overfitting": "a bigger dev set; tune less against it (MLY ch. 41)",
}
NOT_DISTINGUISHABLE = "not distinguishable from 0"
VERDICTS = ("helps", "no measurable effect", "hurts")

DEFAULTS: dict[str, Any] = {
    "optimal_error": 0.0,  # Bayes / human-level proxy, a fraction in [0, 1)
    "n_boot": 2000,  # bootstrap replicates, >= 100
    "ci": 0.95,  # confidence level, in (0, 1)
    "seed": 0,  # bootstrap seed, >= 0
    "cluster": "auto",  # dev/test CI unit: auto | rows | groups
    "min_groups": 5,  # auto/groups: fewest groups for a cluster bootstrap, >= 2
    "min_effect": 0.01,  # a component is never named below this (fraction), in [0, 1]
    "dominant_share": 0.5,  # named when >= this share of the largest component, in (0, 1]
}

_KEY = "evaluate"
_CHUNK_CELLS = 4_000_000  # bootstrap weights drawn per block (n_boot x units)
_ROUND = 8


# --------------------------------------------------------------------------- config


def _num(c: dict, key: str, lo: float, hi: float, lo_open=False, hi_open=False) -> float:
    v = c[key]
    left, right = "(" if lo_open else "[", ")" if hi_open else "]"
    ok = not isinstance(v, bool) and isinstance(v, (int, float, np.integer, np.floating))
    if ok:
        v = float(v)
        ok = np.isfinite(v) and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
    if not ok:
        raise ShiftlabError(f"{_KEY}.{key}: must be a number in {left}{lo:g}, {hi:g}{right}, got {c[key]!r}")
    return v


def _int(c: dict, key: str, lo: int) -> int:
    v = c[key]
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ShiftlabError(f"{_KEY}.{key}: must be an integer >= {lo}, got {v!r}")
    return int(v)


def merge_config(cfg: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``cfg`` over :data:`DEFAULTS`, validated; a bad key or value is a one-line ShiftlabError.

    Keys: ``optimal_error`` [0, 1); ``n_boot`` int >= 100; ``ci`` (0, 1); ``seed`` int >= 0;
    ``cluster`` auto | rows | groups; ``min_groups`` int >= 2; ``min_effect`` [0, 1];
    ``dominant_share`` (0, 1].
    """
    out = copy.deepcopy(DEFAULTS)
    if cfg is not None:
        if not isinstance(cfg, Mapping):
            raise ShiftlabError(f"{_KEY}: must be a mapping of keys, got {cfg!r}")
        for k, v in cfg.items():
            if k not in out:
                hint = difflib.get_close_matches(str(k), list(out), 1)
                raise ShiftlabError(f"{_KEY}.{k}: unknown key{f' (did you mean {hint[0]}?)' if hint else ''}")
            out[k] = v
    out["optimal_error"] = _num(out, "optimal_error", 0.0, 1.0, hi_open=True)
    out["n_boot"] = _int(out, "n_boot", 100)
    out["ci"] = _num(out, "ci", 0.0, 1.0, lo_open=True, hi_open=True)
    out["seed"] = _int(out, "seed", 0)
    if out["cluster"] not in ("auto", "rows", "groups"):
        raise ShiftlabError(f"{_KEY}.cluster: must be one of auto, rows, groups, got {out['cluster']!r}")
    out["min_groups"] = _int(out, "min_groups", 2)
    out["min_effect"] = _num(out, "min_effect", 0.0, 1.0)
    out["dominant_share"] = _num(out, "dominant_share", 0.0, 1.0, lo_open=True)
    return out


# --------------------------------------------------------------------------- input checks


def _labels(predictions, label_names) -> list[str]:
    if label_names is None and isinstance(predictions, Mapping):
        label_names = predictions.get("label_names")
    if label_names is None:
        raise ShiftlabError("evaluate: label_names not given (argument or predictions['label_names'])")
    names = [str(n) for n in label_names]
    if not names:
        raise ShiftlabError("evaluate: label_names is empty")
    if len(set(names)) != len(names):
        raise ShiftlabError(f"evaluate: label_names has duplicates: {names}")
    return names


def _split_arrays(entry, where: str, k: int) -> dict[str, np.ndarray] | None:
    """Validated arrays of one split; None when it has 0 rows."""
    if not isinstance(entry, Mapping):
        raise ShiftlabError(f"{where}: must be a mapping with y and pred, got {type(entry).__name__}")
    for key in ("y", "pred"):
        if key not in entry:
            raise ShiftlabError(f"{where}: missing {key!r}")
    out: dict[str, np.ndarray] = {}
    for key in ("y", "pred"):
        a = np.asarray(entry[key])
        if a.ndim != 1:
            raise ShiftlabError(f"{where}.{key}: must be 1-D, got shape {a.shape}")
        if a.size and not np.issubdtype(a.dtype, np.integer):
            raise ShiftlabError(f"{where}.{key}: must hold integer label indices, got dtype {a.dtype}")
        a = a.astype(np.int64)
        if a.size and (a.min() < 0 or a.max() >= k):
            bad = int(a[(a < 0) | (a >= k)][0])
            raise ShiftlabError(f"{where}.{key}: label index {bad} outside 0..{k - 1} ({k} label_names)")
        out[key] = a
    n = len(out["y"])
    if len(out["pred"]) != n:
        raise ShiftlabError(f"{where}: y has {n} rows but pred has {len(out['pred'])}")
    for key in ("id", "domain", "origin", "group"):
        if entry.get(key) is not None:
            a = np.asarray(entry[key]).astype(str)
            if a.shape != (n,):
                raise ShiftlabError(f"{where}.{key}: shape {a.shape}, expected ({n},)")
            out[key] = a
    if entry.get("probs") is not None:
        p = np.asarray(entry["probs"])
        if p.shape != (n, k):
            raise ShiftlabError(f"{where}.probs: shape {p.shape}, expected ({n}, {k})")
    return out if n else None


def _split_order(names) -> list[str]:
    return [s for s in SPLITS if s in names] + sorted(s for s in names if s not in SPLITS)


# --------------------------------------------------------------------------- bootstrap engine


def _rng(cfg: dict, *purpose) -> np.random.Generator:
    return np.random.default_rng(seeding.sample_seed(cfg["seed"], 0, *purpose))


def _replicates(E: np.ndarray, groups: np.ndarray | None, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap replicates (n_boot, R) of the error rates of R runs on the same N rows.

    ``E`` is (R, N) 0/1. ``groups`` None: rows resampled (multinomial over distinct error
    profiles, exact in distribution); else groups resampled with all their rows.
    """
    E = np.asarray(E, dtype=np.int64)
    r, n = E.shape
    if groups is None:
        prof, inv = np.unique(E.T, axis=0, return_inverse=True)
        counts = np.bincount(inv.ravel(), minlength=len(prof)).astype(np.float64)
        pvals = counts / n
        sums, sizes, draws = prof.astype(np.float64), None, n
    else:
        _, inv = np.unique(groups, return_inverse=True)
        g = int(inv.max()) + 1
        sums = np.stack([np.bincount(inv, weights=E[j], minlength=g) for j in range(r)], axis=1)
        sizes = np.bincount(inv, minlength=g).astype(np.float64)
        pvals, draws = np.full(g, 1.0 / g), g
    out = np.empty((n_boot, r))
    block = max(1, _CHUNK_CELLS // len(pvals))
    for start in range(0, n_boot, block):
        m = min(block, n_boot - start)
        W = rng.multinomial(draws, pvals, size=m).astype(np.float64)
        tot = W @ sums
        out[start : start + m] = tot / (n if sizes is None else (W @ sizes)[:, None])
    return out


def _interval(reps: np.ndarray, level: float) -> tuple[float, float]:
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(reps, [a, 1.0 - a])
    return float(lo), float(hi)


def _r(x) -> float | None:
    return None if x is None else round(float(x), _ROUND)


def _method(split: str, groups: np.ndarray | None, n: int, cfg: dict) -> tuple[str, str | None, int | None]:
    """(method, note, number of groups) for the CI of a set of ``n`` rows of ``split``."""
    if split not in CLUSTER_SPLITS:
        return "rows", None, None
    if groups is None:
        return "rows", "no group column: rows resampled", None
    g = int(len(np.unique(groups)))
    if cfg["cluster"] == "rows":
        return "rows", None, g
    if g == n:
        return "rows", None, g  # every row its own group: the two bootstraps coincide
    need = 2 if cfg["cluster"] == "groups" else cfg["min_groups"]
    if g < need:
        return ("rows", f"only {g} group(s) (< {need}): a cluster bootstrap cannot work, so this row CI "
                        f"ignores between-group variation and understates the uncertainty", g)
    return "groups", None, g


def _estimate(e: np.ndarray, groups: np.ndarray | None, split: str, cfg: dict,
              purpose: tuple) -> tuple[dict, np.ndarray]:
    """Error summary of one set (e = 0/1 per row) and its chosen bootstrap replicates."""
    n = len(e)
    method, note, g = _method(split, groups, n, cfg)
    reps = _replicates(e[None, :], groups if method == "groups" else None, cfg["n_boot"],
                       _rng(cfg, "evaluate", *purpose))[:, 0]
    lo, hi = _interval(reps, cfg["ci"])
    err = float(e.mean())
    out = {"n": int(n), "errors": int(e.sum()), "error": _r(err), "low": _r(lo), "high": _r(hi),
           "method": method, "groups": g, "note": note}
    if method == "groups":  # the row CI beside it, to show what clustering changes
        rr = _replicates(e[None, :], None, cfg["n_boot"], _rng(cfg, "evaluate", *purpose, "rows"))[:, 0]
        out["rows_low"], out["rows_high"] = (_r(v) for v in _interval(rr, cfg["ci"]))
    return out, reps


def _status(lo: float, hi: float) -> str:
    if lo > 0:
        return "positive"
    if hi < 0:
        return "negative"
    return NOT_DISTINGUISHABLE


# --------------------------------------------------------------------------- evaluate


def evaluate(predictions: Mapping, label_names=None, cfg: Mapping | None = None) -> dict:
    """Errors with CIs, breakdowns, confusion matrices, decomposition and diagnosis.

    Returns a JSON-able dict:

    * ``label_names``, ``config`` (the merged config), ``optimal_error``;
    * ``splits[split]``: ``n``, ``errors``, ``error``, ``low``, ``high``, ``method`` (rows |
      groups), ``groups`` (distinct groups, dev/test), ``note``, (``rows_low``/``rows_high``
      when groups were used), ``confusion`` (K x K counts, rows = actual, columns =
      predicted), ``by_domain`` / ``by_origin`` / ``by_label`` (value -> the same summary;
      ``by_label`` lists every label, ``error`` None where it has no rows; a label's error is
      1 - its recall);
    * ``missing``: split names of :data:`SPLITS` that are absent or empty;
    * ``decomposition[component]``: ``value``, ``low``, ``high``, ``status`` (positive |
      negative | not distinguishable from 0 | n/a), ``formula``, ``reason`` (n/a only);
    * ``diagnosis``: ``named`` (components, in :data:`COMPONENTS` order), ``words`` (e.g.
      "avoidable bias + data mismatch", or "no dominant component"), ``undetermined``,
      ``text`` (one sentence).
    """
    c = merge_config(cfg)
    names = _labels(predictions, label_names)
    k = len(names)
    if not isinstance(predictions, Mapping):
        raise ShiftlabError(f"predictions: must be a mapping of split -> arrays, got {type(predictions).__name__}")
    data: dict[str, dict] = {}
    for s in _split_order([s for s in predictions if s != "label_names"]):
        arr = _split_arrays(predictions[s], f"predictions.{s}", k)
        if arr is not None:
            data[s] = arr
    if not data:
        raise ShiftlabError("predictions: no split with rows")

    splits: dict[str, dict] = {}
    reps: dict[str, np.ndarray] = {}
    raw: dict[str, float] = {}
    for s, a in data.items():
        e = (a["y"] != a["pred"]).astype(np.int64)
        groups = a.get("group")
        summ, reps[s] = _estimate(e, groups, s, c, (s,))
        raw[s] = float(e.mean())
        summ["confusion"] = np.bincount(a["y"] * k + a["pred"], minlength=k * k).reshape(k, k).tolist()
        for col in ("domain", "origin"):
            by = {}
            if col in a:
                for v in sorted(np.unique(a[col]).tolist()):
                    sel = a[col] == v
                    by[v], _ = _estimate(e[sel], None if groups is None else groups[sel], s, c, (s, col, v))
            summ[f"by_{col}"] = by
        by_label = {}
        for i, name in enumerate(names):
            sel = a["y"] == i
            if sel.any():
                by_label[name], _ = _estimate(e[sel], None if groups is None else groups[sel], s, c, (s, "label", i))
            else:
                by_label[name] = {"n": 0, "errors": 0, "error": None, "low": None, "high": None,
                                  "method": None, "groups": None, "note": None}
        summ["by_label"] = by_label
        splits[s] = summ

    decomposition = _decompose(raw, reps, c)
    return {
        "label_names": names,
        "config": c,
        "optimal_error": _r(c["optimal_error"]),
        "splits": splits,
        "missing": [s for s in SPLITS if s not in splits],
        "decomposition": decomposition,
        "diagnosis": _diagnose(decomposition, c),
    }


def _decompose(err: dict, reps: dict, c: dict) -> dict:
    opt = c["optimal_error"]
    out = {}
    for comp in COMPONENTS:
        a, b = FORMULAS[comp]
        formula = f"{a} - {'optimal' if b is None else b}"
        lack = [s for s in (a, b) if s is not None and s not in err]
        if lack:
            out[comp] = {"value": None, "low": None, "high": None, "status": "n/a", "formula": formula,
                         "reason": "no " + " and no ".join(lack) + " split"}
            continue
        est = err[a] - (opt if b is None else err[b])
        r = reps[a] - (opt if b is None else reps[b])
        lo, hi = _interval(r, c["ci"])
        out[comp] = {"value": _r(est), "low": _r(lo), "high": _r(hi), "status": _status(lo, hi),
                     "formula": formula}
    return out


def _diagnose(dec: dict, c: dict) -> dict:
    def big(comp):
        d = dec[comp]
        return d["value"] is not None and d["value"] >= c["min_effect"]

    sure = [k for k in COMPONENTS if big(k) and dec[k]["status"] == "positive"]
    top = max((dec[k]["value"] for k in sure), default=None)
    named = [k for k in sure if dec[k]["value"] >= c["dominant_share"] * top] if sure else []
    bar = c["dominant_share"] * top if top is not None else 0.0
    undetermined = [k for k in COMPONENTS if big(k) and dec[k]["status"] == NOT_DISTINGUISHABLE
                    and dec[k]["value"] >= bar]
    words = " + ".join(WORDS[k] for k in named) if named else "no dominant component"
    pct = int(round(100 * c["ci"]))
    parts = []
    for k in COMPONENTS:
        d = dec[k]
        if d["status"] == "n/a":
            parts.append(f"{WORDS[k]} n/a ({d['reason']})")
        else:
            tail = f": {NOT_DISTINGUISHABLE}" if d["status"] == NOT_DISTINGUISHABLE else ""
            parts.append(f"{WORDS[k]} {_pts(d['value'])} ({pct}% CI {_pts(d['low'])} to {_pts(d['high'])}){tail}")
    text = f"Diagnosis: {words}. " + "; ".join(parts) + "."
    if undetermined:
        text += " Undetermined (large estimate, CI includes 0): " + ", ".join(WORDS[k] for k in undetermined) + "."
    return {"named": named, "words": words, "undetermined": undetermined, "text": text}


# --------------------------------------------------------------------------- reports


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _pts(x) -> str:
    return "n/a" if x is None else f"{100 * x:+.1f} pts"


def _ci(d: Mapping, fmt=_pct) -> str:
    if d.get("low") is None:
        return "n/a"
    return f"[{fmt(d['low'])}, {fmt(d['high'])}]"


def _table(header, rows) -> str:
    rule = "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"
    lines = ["| " + " | ".join(map(str, header)) + " |", rule]
    lines += ["| " + " | ".join("" if v is None else str(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def markdown(result: Mapping, title: str = "Evaluation") -> str:
    """A readable markdown report of :func:`evaluate`'s result."""
    c = result["config"]
    pct = int(round(100 * c["ci"]))
    sp = result["splits"]
    out = [f"# {title}", ""]
    out.append(f"Errors are unweighted fractions of wrong predictions; intervals are {pct}% percentile "
               f"bootstrap CIs ({c['n_boot']} replicates, seed {c['seed']}); `groups` = cluster bootstrap "
               f"over the `group` column (speakers, videos), `rows` = rows resampled.")
    out += ["", "## Errors per split", ""]
    rows = [[s, f"{d['n']:,}", f"{d['errors']:,}", _pct(d["error"]), _ci(d), d["method"],
             "" if d["groups"] is None else d["groups"]] for s, d in sp.items()]
    out.append(_table(["split", "rows", "errors", "error", f"{pct}% CI", "CI over", "groups"], rows))
    notes = [f"* {s}: {d['note']}" for s, d in sp.items() if d.get("note")]
    notes += [f"* {s}: row CI for comparison {_ci({'low': d['rows_low'], 'high': d['rows_high']})}"
              for s, d in sp.items() if "rows_low" in d]
    if result["missing"]:
        notes.append("* missing splits: " + ", ".join(result["missing"]))
    if notes:
        out += [""] + notes

    out += ["", "## Error decomposition (Machine Learning Yearning ch. 40-41)", "",
            f"Optimal (Bayes / human-level proxy) error: {_pct(result['optimal_error'])}.", ""]
    drows = []
    for k, d in result["decomposition"].items():
        drows.append([WORDS[k], f"`{d['formula']}`", _pts(d["value"]), _ci(d, _pts),
                      d["status"] if d["status"] != "n/a" else f"n/a ({d['reason']})"])
    out.append(_table(["component", "formula", "value", f"{pct}% CI", "status"], drows))
    dg = result["diagnosis"]
    out += ["", f"**Diagnosis: {dg['words']}.**"]
    for k in dg["named"]:
        out.append(f"* {WORDS[k]}: {ACTIONS[k]}")
    if dg["undetermined"]:
        out.append("* undetermined (large estimate, CI includes 0): "
                   + ", ".join(WORDS[k] for k in dg["undetermined"]) + " -- more dev/test data would tell")

    out += ["", "## Breakdown by domain and origin", ""]
    brows = []
    for s, d in sp.items():
        for col in ("domain", "origin"):
            for v, e in d[f"by_{col}"].items():
                brows.append([s, col, v, f"{e['n']:,}", _pct(e["error"]), _ci(e), e["method"]])
    out.append(_table(["split", "by", "value", "rows", "error", f"{pct}% CI", "CI over"], brows) if brows
               else "(no domain/origin columns)")
    out += ["", "## Error per true label (1 - recall)", ""]
    lrows = []
    for lab in result["label_names"]:
        lrows.append([lab] + [f"{_pct(sp[s]['by_label'][lab]['error'])} {_ci(sp[s]['by_label'][lab])} "
                              f"(n={sp[s]['by_label'][lab]['n']})" for s in sp])
    out.append(_table(["label"] + list(sp), lrows))
    out += ["", "## Confusion matrices (rows = actual, columns = predicted)"]
    names = result["label_names"]
    for s, d in sp.items():
        out += ["", f"### {s}", ""]
        out.append(_table(["actual \\ predicted"] + names,
                          [[names[i]] + row for i, row in enumerate(d["confusion"])]))
    return "\n".join(out) + "\n"


def metrics(result: Mapping) -> dict[str, float | int]:
    """Flat numbers for ``metrics.json`` (``dvc metrics show``), in a fixed order.

    ``<split>_error``, ``<split>_error_low``, ``<split>_error_high``, ``<split>_rows`` per
    present split; ``<component>``, ``<component>_low``, ``<component>_high`` per component
    that is not n/a; ``optimal_error``. Keys of missing splits / n/a components are absent.
    """
    out: dict[str, float | int] = {}
    for s, d in result["splits"].items():
        out[f"{s}_error"] = d["error"]
        out[f"{s}_error_low"] = d["low"]
        out[f"{s}_error_high"] = d["high"]
        out[f"{s}_rows"] = d["n"]
    for k, d in result["decomposition"].items():
        if d["status"] != "n/a":
            out[k], out[f"{k}_low"], out[f"{k}_high"] = d["value"], d["low"], d["high"]
    out["optimal_error"] = result["optimal_error"]
    return out


def _confusion_csv(names: list[str], cm: list[list[int]]) -> str:
    """One line per row in DVC's confusion template format: ``actual,predicted``."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["actual", "predicted"])
    for i, row in enumerate(cm):
        for j, cnt in enumerate(row):
            for _ in range(int(cnt)):
                w.writerow([names[i], names[j]])
    return buf.getvalue()


def _save_png(fig, path: Path) -> None:
    with store.atomic_file(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100, metadata={"Software": None})


def _confusion_png(names, cm, title: str, path: Path) -> None:
    from matplotlib.figure import Figure

    m = np.asarray(cm, dtype=np.float64)
    k = len(names)
    frac = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    side = max(4.0, 0.55 * k + 2.0)
    fig = Figure(figsize=(side, side))
    ax = fig.add_subplot()
    ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(k), names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(k), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(title, fontsize=10)
    if k <= 30:
        for i in range(k):
            for j in range(k):
                if m[i, j]:
                    ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center", fontsize=7,
                            color="white" if frac[i, j] > 0.5 else "black")
    fig.tight_layout()
    _save_png(fig, path)


def _decomposition_png(result: Mapping, path: Path) -> None:
    from matplotlib.figure import Figure

    pct = int(round(100 * result["config"]["ci"]))
    fig = Figure(figsize=(10, 4))
    ax1, ax2 = fig.subplots(1, 2)
    sp = result["splits"]
    names = list(sp)
    vals = np.array([100 * sp[s]["error"] for s in names])
    err = np.array([[100 * (sp[s]["error"] - sp[s]["low"]) for s in names],
                    [100 * (sp[s]["high"] - sp[s]["error"]) for s in names]])
    ax1.bar(range(len(names)), vals, yerr=err, capsize=4, color="#4c72b0")
    ax1.axhline(100 * result["optimal_error"], color="k", ls="--", lw=1, label="optimal")
    ax1.set_xticks(range(len(names)), names)
    ax1.set_ylabel("error (%)")
    ax1.set_title(f"error per split ({pct}% CI)", fontsize=10)
    ax1.legend(fontsize=8)
    dec = result["decomposition"]
    comps = list(dec)
    named = set(result["diagnosis"]["named"])
    for i, k in enumerate(comps):
        d = dec[k]
        if d["status"] == "n/a":
            ax2.text(i, 0, "n/a", ha="center", va="bottom", fontsize=9, color="grey")
            continue
        v = 100 * d["value"]
        e = [[100 * (d["value"] - d["low"])], [100 * (d["high"] - d["value"])]]
        ax2.bar(i, v, yerr=e, capsize=4, color="#c44e52" if k in named else "#8c8c8c")
    ax2.axhline(0, color="k", lw=0.8)
    ax2.set_xticks(range(len(comps)), [WORDS[k].replace(" ", "\n", 1) for k in comps], fontsize=8)
    ax2.set_ylabel("points of error")
    ax2.set_title(f"decomposition: {result['diagnosis']['words']}", fontsize=10)
    fig.tight_layout()
    _save_png(fig, path)


def plots(result: Mapping, out_dir: str | Path) -> list[Path]:
    """Write DVC-plot friendly files into ``out_dir``; returns the paths written (sorted).

    * ``confusion_<split>.csv``: one line ``actual,predicted`` per row (label names) -- DVC's
      ``confusion`` template (``x: actual, y: predicted``) counts them into the matrix;
    * ``confusion_<split>.png``: counts, coloured by the row-normalised fraction;
    * ``errors.json``: ``[{split, error, low, high}]`` and ``decomposition.json``:
      ``[{component, value, low, high, status}]`` (n/a components have null values), for
      DVC bar templates;
    * ``decomposition.png``: split errors and the four components as bars with CI error bars
      (named components in red).

    Every file is written atomically; the same result gives byte-identical files.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = list(result["label_names"])
    written = []
    for s, d in result["splits"].items():
        p = out / f"confusion_{s}.csv"
        store.write_text(p, _confusion_csv(names, d["confusion"]))
        q = out / f"confusion_{s}.png"
        _confusion_png(names, d["confusion"], f"{s}: error {_pct(d['error'])} (n={d['n']:,})", q)
        written += [p, q]
    p = out / "errors.json"
    store.write_json(p, [{"split": s, "error": d["error"], "low": d["low"], "high": d["high"]}
                         for s, d in result["splits"].items()])
    q = out / "decomposition.json"
    store.write_json(q, [{"component": k, "value": d["value"], "low": d["low"], "high": d["high"],
                          "status": d["status"]} for k, d in result["decomposition"].items()])
    r = out / "decomposition.png"
    _decomposition_png(result, r)
    written += [p, q, r]
    return sorted(written)


# --------------------------------------------------------------------------- compare


def _seed_key(s):
    return (0, int(s), "") if isinstance(s, (int, np.integer)) and not isinstance(s, bool) else (1, 0, str(s))


def _run_split(run, where: str, split: str, k: int) -> dict[str, np.ndarray]:
    entry = run[split] if isinstance(run, Mapping) and split in run and "y" not in run else run
    if not isinstance(entry, Mapping) or "y" not in entry:
        raise ShiftlabError(f"{where}: no {split!r} predictions "
                            f"(expected the trainer's predictions or their {split} entry)")
    a = _split_arrays(entry, f"{where}.{split}", k)
    if a is None:
        raise ShiftlabError(f"{where}.{split}: 0 rows")
    return a


def compare(runs: Mapping, label_names=None, cfg: Mapping | None = None, *, baseline: str = "nosynth",
            treatment: str = "synth", split: str = "dev") -> dict:
    """Pooled ``split`` error per variant and the paired difference ``treatment - baseline``.

    ``runs``: ``{variant: {seed: predictions}}`` where ``predictions`` is the mapping
    :func:`evaluate` takes (its ``split`` entry is used) or that entry itself. Every run
    must cover the same rows of ``split`` (matched by ``id`` when every run has ids, else by
    position) with the same labels. ``label_names`` defaults to the first run's
    ``label_names``.

    Method (hierarchical bootstrap, ``n_boot`` replicates, level ``ci``): each replicate
    (1) resamples the ``split`` rows once -- or its groups, by the same rule as
    :func:`evaluate` -- and uses that one resample for every run of every variant (so the
    difference is paired on the same rows), then (2) resamples each variant's seeds with
    replacement; a variant's replicate error is the mean, over its resampled seeds, of their
    error on the resampled rows. The CIs therefore cover both sampling of the dev rows and
    seed-to-seed training variation (with one seed per variant only the former: noted).
    Point estimates: the mean over seeds of the per-seed error.

    Verdict (difference = treatment error - baseline error): CI entirely below 0 ->
    "helps", entirely above 0 -> "hurts", else "no measurable effect".
    """
    c = merge_config(cfg)
    if not isinstance(runs, Mapping) or not runs:
        raise ShiftlabError("compare: runs must be a non-empty mapping {variant: {seed: predictions}}")
    for v in (baseline, treatment):
        if v not in runs:
            raise ShiftlabError(f"compare: no variant {v!r} in runs (have {', '.join(map(str, runs))})")
    if baseline == treatment:
        raise ShiftlabError(f"compare: baseline and treatment are both {baseline!r}")
    variants = sorted(runs, key=str)
    first = None
    for v in variants:
        if not isinstance(runs[v], Mapping) or not runs[v]:
            raise ShiftlabError(f"compare: runs[{v!r}] must be a non-empty mapping {{seed: predictions}}")
        if first is None:
            first = runs[v][sorted(runs[v], key=_seed_key)[0]]
    if label_names is None and isinstance(first, Mapping):
        label_names = first.get("label_names")
    names = _labels({}, label_names)
    k = len(names)

    cols: list[tuple[str, Any]] = []
    arrays: list[dict[str, np.ndarray]] = []
    for v in variants:
        for sd in sorted(runs[v], key=_seed_key):
            arrays.append(_run_split(runs[v][sd], f"runs[{v!r}][{sd!r}]", split, k))
            cols.append((v, sd))
    use_ids = all("id" in a for a in arrays)
    ref = arrays[0]
    if use_ids:
        if len(np.unique(ref["id"])) != len(ref["id"]):
            raise ShiftlabError(f"compare: runs[{cols[0][0]!r}][{cols[0][1]!r}].{split}.id has duplicates")
        order0 = np.argsort(ref["id"], kind="stable")
        ids = ref["id"][order0]
    E = np.empty((len(arrays), len(ref["y"])), dtype=np.int64)
    for j, (a, (v, sd)) in enumerate(zip(arrays, cols)):
        where = f"compare: runs[{v!r}][{sd!r}].{split}"
        if len(a["y"]) != len(ref["y"]):
            raise ShiftlabError(f"{where}: {len(a['y'])} rows, the first run has {len(ref['y'])}")
        if use_ids:
            o = np.argsort(a["id"], kind="stable")
            if not np.array_equal(a["id"][o], ids):
                raise ShiftlabError(f"{where}: not the same row ids as the first run")
            y, p = a["y"][o], a["pred"][o]
            same_y = np.array_equal(y, ref["y"][order0])
        else:
            y, p = a["y"], a["pred"]
            same_y = np.array_equal(y, ref["y"])
        if not same_y:
            raise ShiftlabError(f"{where}: labels differ from the first run's on the same rows")
        E[j] = (y != p).astype(np.int64)
    groups = ref.get("group")
    if groups is not None and use_ids:
        groups = groups[order0]
    n = E.shape[1]
    method, note, g = _method(split, groups, n, c)
    rng = _rng(c, "compare", split)
    X = _replicates(E, groups if method == "groups" else None, c["n_boot"], rng)  # (n_boot, runs)

    pooled: dict[str, np.ndarray] = {}
    vout: dict[str, dict] = {}
    notes = [note] if note else []
    for v in variants:
        idx = [j for j, (vv, _) in enumerate(cols) if vv == v]
        s = len(idx)
        C = rng.multinomial(s, np.full(s, 1.0 / s), size=c["n_boot"]).astype(np.float64)
        pooled[v] = (C * X[:, idx]).sum(axis=1) / s
        per_seed = E[idx].mean(axis=1)
        lo, hi = _interval(pooled[v], c["ci"])
        vout[str(v)] = {
            "seeds": [str(cols[j][1]) for j in idx], "n_seeds": s, "error": _r(per_seed.mean()),
            "low": _r(lo), "high": _r(hi),
            "per_seed": {str(cols[j][1]): _r(x) for j, x in zip(idx, per_seed)},
            "seed_sd": _r(per_seed.std(ddof=1)) if s > 1 else None,
        }
        if s == 1:
            notes.append(f"{v}: one seed, so its CI covers dev-row sampling only, not seed-to-seed variation")
    diff = float(E[[j for j, (vv, _) in enumerate(cols) if vv == treatment]].mean(axis=1).mean()
                 - E[[j for j, (vv, _) in enumerate(cols) if vv == baseline]].mean(axis=1).mean())
    dreps = pooled[treatment] - pooled[baseline]
    lo, hi = _interval(dreps, c["ci"])
    verdict = "helps" if hi < 0 else "hurts" if lo > 0 else "no measurable effect"
    pct = int(round(100 * c["ci"]))
    text = (f"{treatment} - {baseline} {split} error: {_pts(diff)} ({pct}% CI {_pts(lo)} to {_pts(hi)}): "
            f"{treatment} {verdict if verdict != 'no measurable effect' else 'has no measurable effect'}.")
    return {
        "split": split, "rows": int(n), "method": method, "groups": g, "n_boot": c["n_boot"], "ci": c["ci"],
        "seed": c["seed"], "paired_by": "id" if use_ids else "position",
        "bootstrap": ("hierarchical: per replicate, " + ("groups" if method == "groups" else "rows")
                      + f" of {split} resampled once and shared by all runs (paired), then each variant's "
                      "seeds resampled with replacement; variant error = mean over resampled seeds"),
        "variants": vout,
        "baseline": str(baseline), "treatment": str(treatment),
        "difference": {"value": _r(diff), "low": _r(lo), "high": _r(hi)},
        "verdict": verdict, "text": text, "notes": notes,
    }


def compare_markdown(comparison: Mapping, title: str = "Does synthetic data help?") -> str:
    """A readable markdown version of :func:`compare`'s result."""
    c = comparison
    pct = int(round(100 * c["ci"]))
    out = [f"# {title}", "", f"**{c['text']}**", ""]
    rows = [[v, d["n_seeds"], _pct(d["error"]), _ci(d), "" if d["seed_sd"] is None else _pct(d["seed_sd"]),
             ", ".join(f"{s}: {_pct(x)}" for s, x in d["per_seed"].items())] for v, d in c["variants"].items()]
    out.append(_table(["variant", "seeds", f"{c['split']} error (mean over seeds)", f"{pct}% CI",
                       "seed sd", "per seed"], rows))
    d = c["difference"]
    out += ["", f"Difference {c['treatment']} - {c['baseline']}: {_pts(d['value'])} ({pct}% CI "
                f"{_pts(d['low'])} to {_pts(d['high'])}) -> **{c['verdict']}**.", "",
            f"Method: {c['bootstrap']}; {c['n_boot']} replicates, seed {c['seed']}, {c['rows']:,} {c['split']} rows"
            + (f" in {c['groups']} groups" if c["groups"] is not None else "")
            + f", runs paired by {c['paired_by']}. The verdict follows from the CI: below 0 helps, above 0 hurts, "
              "containing 0 no measurable effect."]
    out += [f"* {n}" for n in c["notes"]]
    return "\n".join(out) + "\n"


def compare_metrics(comparison: Mapping) -> dict[str, float | int]:
    """Flat numbers of :func:`compare` for a metrics file."""
    out: dict[str, float | int] = {}
    for v, d in comparison["variants"].items():
        out[f"{v}_error"], out[f"{v}_error_low"], out[f"{v}_error_high"] = d["error"], d["low"], d["high"]
        out[f"{v}_seeds"] = d["n_seeds"]
    d = comparison["difference"]
    out["difference"], out["difference_low"], out["difference_high"] = d["value"], d["low"], d["high"]
    return out
