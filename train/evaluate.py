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
    *Groups* (cluster bootstrap; ``dev``/``test``, the evaluation-only check splits such as
    ``codrivers`` (:data:`CHECK_SPLITS`), and their breakdowns only): the groups
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

import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from shiftlab import paramschema, seeding, store
from shiftlab.datasets import schema
from shiftlab.errors import ShiftlabError

SPLITS = ("train", "train_dev", "dev", "test")
#: evaluation-only splits (real target rows every run is scored on, reported on their own; never in the
#: decomposition): :data:`shiftlab.datasets.schema.CHECK_SPLITS`
CHECK_SPLITS = tuple(schema.CHECK_SPLITS)
CLUSTER_SPLITS = ("dev", "test") + CHECK_SPLITS
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
VERDICTS = ("helps", "hurts", "equivalent", "inconclusive")

#: the ``evaluate`` params section: the fields of :class:`shiftlab.paramschema.Evaluate` (types, ranges
#: and defaults in one place)
DEFAULTS: dict[str, Any] = paramschema.defaults(paramschema.Evaluate)

_KEY = "evaluate"
_CHUNK_CELLS = 4_000_000  # bootstrap weights drawn per block (n_boot x units)
_ROUND = 8


# --------------------------------------------------------------------------- config


def merge_config(cfg: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``cfg`` over :data:`DEFAULTS`, validated by :class:`shiftlab.paramschema.Evaluate`; a bad key or value
    is a one-line ShiftlabError.

    Keys: ``optimal_error`` [0, 1) or ``{scenario: value}`` (see :func:`for_scenario`);
    ``optimal_error_proxy`` text or ``{scenario: text}``; ``power`` (0.5, 1);
    ``fit_max_chance_share`` (0, 1]; ``n_boot`` int >= 100; ``ci`` (0, 1); ``seed`` int >= 0;
    ``cluster`` auto | rows | groups; ``min_groups`` int >= 2; ``min_effect`` [0, 1];
    ``dominant_share`` (0, 1].
    """
    return paramschema.merge(paramschema.Evaluate, cfg, _KEY)


def for_scenario(cfg: Mapping[str, Any] | None, scenario: str) -> dict[str, Any]:
    """The merged config with ``optimal_error`` / ``optimal_error_proxy`` resolved for
    ``scenario`` (a mapping without it: 0.0 and "none stated")."""
    c = merge_config(cfg)
    opt, prox = c["optimal_error"], c["optimal_error_proxy"]
    if isinstance(opt, Mapping):
        opt = opt.get(scenario, 0.0)
    if isinstance(prox, Mapping):
        prox = prox.get(scenario)
    c["optimal_error"], c["optimal_error_proxy"] = float(opt), prox or "none stated (0)"
    return c


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
    if isinstance(c["optimal_error"], Mapping):
        raise ShiftlabError("evaluate: optimal_error is given per scenario; resolve it with for_scenario(cfg, scenario)")
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
        "optimal_error_proxy": c.get("optimal_error_proxy"),
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
            f"Optimal (Bayes / human-level proxy) error: {_pct(result['optimal_error'])}"
            + (f" ({result['optimal_error_proxy']})" if result.get("optimal_error_proxy") else "") + ".", ""]
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


#: the splits whose confusion matrix is also drawn as a PNG (every split gets its CSV)
PNG_SPLITS = ("test",)


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
    * ``confusion_<split>.png`` for the splits in :data:`PNG_SPLITS` (test, where the verdicts are read):
      counts, coloured by the row-normalised fraction (a PNG per split of every run took most of the
      audio evaluation's minute; the CSVs of every split give the others in ``dvc plots``);
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
        written.append(p)
        if s in PNG_SPLITS:
            q = out / f"confusion_{s}.png"
            _confusion_png(names, d["confusion"], f"{s}: error {_pct(d['error'])} (n={d['n']:,})", q)
            written.append(q)
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


def _error_matrix(runs_v: Mapping, where: str, split: str, k: int, ref_ids: np.ndarray | None,
                  ref_y: np.ndarray | None) -> tuple[list[str], np.ndarray, dict]:
    """(seeds, E (S, N) 0/1 errors in the reference row order, first run's arrays)."""
    seeds = sorted(runs_v, key=_seed_key)
    rows, first = [], None
    for sd in seeds:
        a = _run_split(runs_v[sd], f"{where}[{sd!r}]", split, k)
        if "id" in a:
            if len(np.unique(a["id"])) != len(a["id"]):
                raise ShiftlabError(f"compare: {where}[{sd!r}].{split}.id has duplicates")
            o = np.argsort(a["id"], kind="stable")
            a = {key: v[o] for key, v in a.items()}
        if first is None:
            first = a
        if ref_ids is not None:
            if "id" not in a or not np.array_equal(a["id"], ref_ids):
                raise ShiftlabError(f"compare: {where}[{sd!r}].{split}: not the same row ids as the first run")
        elif ref_y is not None and len(a["y"]) != len(ref_y):
            raise ShiftlabError(f"compare: {where}[{sd!r}].{split}: {len(a['y'])} rows, the first run has {len(ref_y)}")
        if ref_y is not None and not np.array_equal(a["y"], ref_y):
            raise ShiftlabError(f"compare: {where}[{sd!r}].{split}: labels differ from the first run's on the same rows")
        if ref_y is None:
            ref_y = a["y"]
            ref_ids = a.get("id")
        rows.append((a["y"] != a["pred"]).astype(np.float64))
    return [str(sd) for sd in seeds], np.stack(rows), first


def seed_row_variance(M: np.ndarray, groups: np.ndarray | None = None) -> dict:
    """Mean of an (S seeds, N rows) matrix and the variance of that mean, seeds and rows random.

    Two-way random-effects model ``M[s, i] = mu + a_i + b_s + c_si`` (row effect, seed effect,
    interaction/noise): the mean over seeds and rows has variance ``var(a)/N + var(b)/S +
    var(c)/(S N)``, estimated without bias from the ANOVA mean squares as a seed term
    ``MS_seed / (S N)`` (the variance of the per-seed means over S: S - 1 df) plus a row term
    ``(MS_row - MS_interaction) / (S N)`` (floored at 0; N - 1 df). The seed term is floored
    at the 2.5% quantile of what the interaction noise alone gives the per-seed means, so a
    few seeds that agree exactly (it happens with few rows) cannot collapse the interval.
    ``df`` is Satterthwaite's for the sum (informative; intervals use :func:`halfwidth`). With ``groups``
    (speakers, videos), the unit is the group: each seed's errors are summed per group and
    linearised as a ratio estimator (``G/N (T_sg - n_g mu) + mu``), so the row term becomes
    the between-group (cluster-robust) term with G - 1 degrees of freedom. One seed: the
    row term alone. Returns ``mean, se, df, units, seed_se, row_se`` (the two terms as
    standard errors of the mean).
    """
    M = np.asarray(M, dtype=np.float64)
    S, N = M.shape
    mu = float(M.mean())
    if groups is not None:
        _, inv = np.unique(np.asarray(groups), return_inverse=True)
        G = int(inv.max()) + 1
        T = np.stack([np.bincount(inv, weights=M[s], minlength=G) for s in range(S)])
        sizes = np.bincount(inv, minlength=G).astype(np.float64)
        Z = G / N * (T - sizes[None, :] * mu) + mu
    else:
        Z = M
    U = Z.shape[1]
    if U < 2:
        raise ShiftlabError("compare: need at least 2 rows (or groups) for an interval")
    cs, ru = Z.mean(axis=1), Z.mean(axis=0)
    ms_unit = S * float(((ru - mu) ** 2).sum()) / (U - 1)
    if S > 1:
        ms_seed = U * float(((cs - mu) ** 2).sum()) / (S - 1)
        resid = Z - ru[None, :] - cs[:, None] + mu
        ms_int = float((resid ** 2).sum()) / ((S - 1) * (U - 1))
    else:
        ms_seed = ms_int = 0.0
    su = S * U
    # seed term: ms_seed / (S U) = (sample variance of the S per-seed means) / S, which holds
    # var(b)/S + var(c)/(S N): S - 1 df. Row term: the persistent row part var(a)/N, from
    # (MS_row - MS_interaction) / (S U): U - 1 df. Their sum is the unbiased estimate; the
    # t interval takes Satterthwaite's df of the sum (exact t at S - 1 df when seeds dominate).
    # seed term: MS_seed / (S U) = (sample variance of the S per-seed means) / S, which holds
    # var(b)/S + var(c)/(S N): S - 1 df. Row term: the persistent row part var(a)/N, from
    # (MS_row - MS_interaction) / (S U): N - 1 df. Their sum is the unbiased estimate. When a few
    # seeds agree exactly (it happens with few rows), MS_seed is implausibly far below the
    # interaction noise every per-seed mean carries: it is floored at the 2.5% quantile of that
    # noise alone (MS_interaction x chi2(S-1) quantile / (S-1)), so the interval never collapses
    if S > 1:
        from scipy import stats

        q = float(stats.chi2.ppf(0.025, S - 1)) / (S - 1)
        seed_term = max(ms_seed, q * ms_int) / su
        row_term = max(ms_unit - ms_int, 0.0) / su
    else:
        seed_term, row_term = 0.0, ms_unit / su
    var = seed_term + row_term
    den = (seed_term ** 2 / (S - 1) if S > 1 else 0.0) + row_term ** 2 / (U - 1)
    df = var * var / den if den > 0 else float(U - 1)
    return {"mean": mu, "se": float(np.sqrt(var)), "df": float(max(df, 1.0)), "units": U,
            "seed_var": seed_term, "row_var": row_term, "seed_df": S - 1, "row_df": U - 1,
            "seed_se": float(np.sqrt(seed_term)), "row_se": float(np.sqrt(row_term))}


def halfwidth(st: Mapping, q: float) -> float:
    """Half-width of the interval at quantile ``q`` (e.g. 0.975 for a two-sided 95%) for a
    :func:`seed_row_variance` result: Graybill and Wang's modified large-sample form for a
    sum of variance components, ``sqrt(t(q, S-1)^2 seed_var + t(q, N-1)^2 row_var)``. Each
    term keeps its own degrees of freedom, so seed-dominated data get the exact t interval
    on S - 1 df and row-dominated data the large-sample one; Satterthwaite's single df is
    liberal in between (about 93.5% for a nominal 95% at 3 seeds in the tests' simulation)."""
    tot = 0.0
    for var, df in _parts(st):
        tot += _t(q, df) ** 2 * var
    return float(np.sqrt(tot))


def _parts(st: Mapping) -> list[tuple[float, float]]:
    out = [(st["seed_var"], st["seed_df"]), (st["row_var"], st["row_df"])]
    return [(v, d) for v, d in out if d > 0 and v > 0]


def minimum_detectable(st: Mapping, alpha: float, power: float) -> float:
    """Smallest true difference the two-sided test at level ``alpha`` detects with
    probability ``power``, from the observed variance components (each term on its own df,
    as in :func:`halfwidth`): ``sqrt(sum_k (t(1 - alpha/2, df_k) + t(power, df_k))^2 var_k)``."""
    tot = 0.0
    for var, df in _parts(st):
        tot += (_t(1 - alpha / 2, df) + _t(power, df)) ** 2 * var
    return float(np.sqrt(tot))


def _p_value(st: Mapping, d: float) -> float:
    """Two-sided p-value consistent with :func:`halfwidth`: the level at which the interval
    just reaches 0 (bisection on the level; halfwidth decreases as the level drops)."""
    if d == 0:
        return 1.0
    if not _parts(st):
        return 0.0
    lo, hi = 1e-15, 1.0  # alpha
    if halfwidth(st, 1 - lo / 2) < abs(d):
        return lo
    for _ in range(60):
        mid = np.sqrt(lo * hi)
        if halfwidth(st, 1 - mid / 2) >= abs(d):
            lo = mid  # interval still covers 0 at this alpha: p is larger
        else:
            hi = mid
    return float(hi)


def _t(q: float, df: float) -> float:
    from scipy import stats

    return float(stats.t.ppf(q, df))


def _unit(split: str, groups: np.ndarray | None, n: int, c: dict) -> tuple[str, int | None, str | None]:
    """(unit, number of groups, note) for intervals on ``split``: rows or groups."""
    if groups is None:
        return "rows", None, "no group column: rows treated as independent"
    g = int(len(np.unique(groups)))
    if c["cluster"] == "rows" or g == n:
        return "rows", g, None
    if (g < c["min_groups"] and c["cluster"] == "auto") or g < 2:
        return "rows", g, (f"only {g} group(s) (< evaluate.min_groups {c['min_groups']}): the interval treats rows as "
                           "independent and ignores between-group variation, so it understates the uncertainty")
    return "groups", g, None


def variant_error(runs_v: Mapping, label_names=None, cfg: Mapping | None = None, *, split: str = "test",
                  where: str = "runs") -> dict:
    """Mean ``split`` error of one variant over its seeds with a seeds-and-rows t interval.

    ``runs_v``: ``{seed: predictions}``. The interval is :func:`seed_row_variance`'s
    (rows, or groups when the split has a group column with fewer groups than rows).
    """
    c = merge_config(cfg)
    names = _labels({}, label_names if label_names is not None else _first_names(runs_v))
    seeds, E, first = _error_matrix(runs_v, where, split, len(names), None, None)
    groups = first.get("group")
    unit, g, note = _unit(split, groups, E.shape[1], c)
    st = seed_row_variance(E, groups if unit == "groups" else None)
    h = halfwidth(st, 0.5 + c["ci"] / 2)
    per_seed = E.mean(axis=1)
    return {"split": split, "rows": int(E.shape[1]), "unit": unit, "groups": g, "note": note,
            "seeds": seeds, "n_seeds": len(seeds), "error": _r(st["mean"]), "low": _r(max(0.0, st["mean"] - h)),
            "high": _r(min(1.0, st["mean"] + h)), "se": _r(st["se"]), "df": _r(st["df"]),
            "per_seed": {sd: _r(x) for sd, x in zip(seeds, per_seed)},
            "seed_sd": _r(per_seed.std(ddof=1)) if len(seeds) > 1 else None}


def _first_names(runs_v: Mapping):
    for sd in sorted(runs_v, key=_seed_key):
        r = runs_v[sd]
        if isinstance(r, Mapping) and r.get("label_names") is not None:
            return r["label_names"]
    return None


def compare(runs: Mapping, label_names=None, cfg: Mapping | None = None, *, baseline: str = "nosynth",
            treatment: str = "synth", split: str = "test", level: float | None = None,
            unfit: Mapping | None = None) -> dict:
    """Seed-paired difference ``treatment - baseline`` of the ``split`` error, with its verdict.

    ``runs``: ``{variant: {seed: predictions}}`` (the mapping :func:`evaluate` takes, or its
    ``split`` entry). Runs are paired by seed: only the seeds both variants have are used
    (variants trained with one seed share initial weights and real-row order, so the seed
    noise largely cancels in the per-seed difference); rows are matched by ``id`` (else by
    position) and must have the same labels.

    Statistics: the (seeds x rows) matrix of per-row error differences goes through
    :func:`seed_row_variance` (seeds and rows -- or groups -- both random; Satterthwaite df),
    giving the difference, its standard error and a t interval at level ``ci``; the
    two-sided p-value of "no difference"; the minimum detectable effect at ``power`` (80%)
    for a two-sided test at 1 - ``ci``: ``(t(1 - a/2) + t(power)) * se``.

    Verdict at ``level`` (the significance level this comparison is tested at; default
    1 - ``ci``; :func:`compare_all` passes Holm's level): *helps* / *hurts* when p <= level
    (difference below / above 0); else *equivalent* when the two one-sided tests at
    ``level`` put the difference inside +-``min_effect`` (the 1 - 2 level interval lies
    inside the margin); else *inconclusive*. *inconclusive* outright (reason "too few
    groups") when the split has a group column with fewer than ``min_groups`` groups: no
    interval over so few speakers / videos can be trusted. ``unfit``: ``{variant: [seeds]}``
    of runs flagged as not fitted; the comparison lists those it involves.
    """
    c = merge_config(cfg)
    if not isinstance(runs, Mapping) or not runs:
        raise ShiftlabError("compare: runs must be a non-empty mapping {variant: {seed: predictions}}")
    for v in (baseline, treatment):
        if v not in runs:
            raise ShiftlabError(f"compare: no variant {v!r} in runs (have {', '.join(map(str, runs))})")
        if not isinstance(runs[v], Mapping) or not runs[v]:
            raise ShiftlabError(f"compare: runs[{v!r}] must be a non-empty mapping {{seed: predictions}}")
    if baseline == treatment:
        raise ShiftlabError(f"compare: baseline and treatment are both {baseline!r}")
    names = _labels({}, label_names if label_names is not None
                    else (_first_names(runs[baseline]) or _first_names(runs[treatment])))
    k = len(names)
    both = [sd for sd in sorted(runs[baseline], key=_seed_key) if sd in runs[treatment]]
    if not both:
        raise ShiftlabError(f"compare: {treatment} and {baseline} share no seed, so no paired difference")
    sb, Eb, fb = _error_matrix({sd: runs[baseline][sd] for sd in both}, f"runs[{baseline!r}]", split, k, None, None)
    st_, Et, _ = _error_matrix({sd: runs[treatment][sd] for sd in both}, f"runs[{treatment!r}]", split, k,
                               fb.get("id"), fb["y"])
    D = Et - Eb
    groups = fb.get("group")
    n = D.shape[1]
    unit, g, note = _unit(split, groups, n, c)
    st = seed_row_variance(D, groups if unit == "groups" else None)
    alpha = 1.0 - c["ci"]
    lvl = alpha if level is None else float(level)
    d, se, df = st["mean"], st["se"], st["df"]
    h = halfwidth(st, 1 - alpha / 2)
    p = _p_value(st, d)
    mde = minimum_detectable(st, alpha, c["power"])
    ha = halfwidth(st, 1 - lvl / 2)  # the interval the verdict is read from
    tost = halfwidth(st, 1 - lvl)
    equivalent = (d - tost > -c["min_effect"]) and (d + tost < c["min_effect"])
    too_few = g is not None and g < c["min_groups"]
    if too_few:
        verdict, reason = "inconclusive", f"too few groups ({g} < evaluate.min_groups {c['min_groups']})"
    elif p <= lvl and d != 0:
        verdict, reason = ("helps" if d < 0 else "hurts"), f"p = {p:.3g} <= level {lvl:.3g}"
    elif equivalent:
        verdict, reason = "equivalent", (f"the {100 * (1 - 2 * lvl):.4g}% interval lies inside "
                                         f"+-{100 * c['min_effect']:.1f} pts")
    else:
        verdict, reason = "inconclusive", (f"p = {p:.3g} > level {lvl:.3g} and the interval reaches past "
                                           f"+-{100 * c['min_effect']:.1f} pts")
    involved = []
    for v in (baseline, treatment):
        bad = [str(sd) for sd in (unfit or {}).get(v, []) if str(sd) in [str(x) for x in both]]
        involved += [f"{v} s{sd}" for sd in bad]
    notes = [note] if note else []
    if len(both) == 1:
        notes.append("one seed: the interval covers row sampling only, not seed-to-seed variation")
    dropped = sorted(set(map(str, runs[baseline])) ^ set(map(str, runs[treatment])))
    if dropped:
        notes.append(f"seeds without a partner left out: {', '.join(dropped)}")
    pct = int(round(100 * c["ci"]))
    text = (f"{treatment} - {baseline} {split} error: {_pts(d)} ({pct}% CI {_pts(d - h)} to {_pts(d + h)}; "
            f"MDE {_pts(mde).lstrip('+')}): {verdict}")
    if too_few:
        text += f" ({reason})"
    if involved:
        text += f"; involves runs that did not fit: {', '.join(involved)}"
    return {
        "split": split, "rows": int(n), "unit": unit, "groups": g, "seeds": [str(x) for x in both],
        "n_seeds": len(both), "baseline": str(baseline), "treatment": str(treatment), "ci": c["ci"],
        "method": ("seed-paired: per-seed differences on the same rows; variance of the mean difference from a "
                   "two-way random-effects ANOVA over seeds x " + ("groups (cluster-robust)" if unit == "groups" else "rows")
                   + " (seed term on S - 1 df, row term on N - 1 df), interval by Graybill and Wang's "
                   "modified large-sample method"),
        "difference": {"value": _r(d), "low": _r(d - h), "high": _r(d + h), "se": _r(se), "df": _r(df),
                       "seed_se": _r(st["seed_se"]), "row_se": _r(st["row_se"])},
        "per_seed": {sd: _r(x) for sd, x in zip(sb, D.mean(axis=1))},
        "p_value": _r(p), "mde": _r(mde), "power": c["power"], "min_effect": c["min_effect"],
        "level": _r(lvl), "adjusted": {"low": _r(d - ha), "high": _r(d + ha)},
        "equivalence": {"margin": c["min_effect"], "low": _r(d - tost), "high": _r(d + tost),
                        "equivalent": bool(equivalent)},
        "verdict": verdict, "reason": reason, "unfit_runs": involved, "text": text + ".", "notes": notes,
    }


def holm_levels(pvalues: Mapping[str, float], alpha: float) -> dict[str, dict]:
    """Holm's step-down procedure: per name, its rank, level ``alpha / (m - rank + 1)``,
    adjusted p-value and whether it is rejected (every smaller p-value rejected too)."""
    order = sorted(pvalues, key=lambda k: (pvalues[k], k))
    m = len(order)
    out, running, still = {}, 0.0, True
    for j, name in enumerate(order, start=1):
        lvl = alpha / (m - j + 1)
        running = max(running, min(1.0, (m - j + 1) * pvalues[name]))
        still = still and pvalues[name] <= lvl
        out[name] = {"rank": j, "level": lvl, "p_adjusted": running, "rejected": still}
    return out


def compare_all(runs: Mapping, label_names=None, cfg: Mapping | None = None, *,
                pairs: Sequence[tuple[str, str]] = (("synth", "nosynth"),), splits: Sequence[str] = ("test", "dev"),
                unfit: Mapping | None = None) -> dict:
    """Every ``(treatment, baseline)`` comparison of one scenario on every split, with Holm's
    correction across the comparisons of a split: comparison ``j`` (by p-value) is tested at
    ``(1 - ci) / (m - j + 1)`` and can only reject when every smaller p-value did.
    Returns ``{split: {name: compare() result + holm}}`` with names ``<treatment>`` (baseline
    nosynth) or ``<treatment>_vs_<baseline>``."""
    c = merge_config(cfg)
    alpha = 1.0 - c["ci"]
    out: dict[str, dict] = {}
    for split in splits:
        first = {}
        for t, b in pairs:
            name = t if b == "nosynth" else f"{t}_vs_{b}"
            first[name] = compare(runs, label_names, c, baseline=b, treatment=t, split=split, unfit=unfit)
        holm = holm_levels({k: v["p_value"] for k, v in first.items()}, alpha)
        res = {}
        for (t, b), name in zip(pairs, first):
            r = compare(runs, label_names, c, baseline=b, treatment=t, split=split, level=holm[name]["level"],
                        unfit=unfit)
            if r["verdict"] in ("helps", "hurts") and not holm[name]["rejected"]:
                # Holm stops at the first non-rejection: later ones cannot reject either
                r["verdict"], r["reason"] = "inconclusive", (f"p = {r['p_value']:.3g} <= its level, but Holm's "
                                                             "step-down stopped at a larger p-value first")
                r["text"] = r["text"].replace(": helps", ": inconclusive").replace(": hurts", ": inconclusive")
            r["holm"] = {"rank": holm[name]["rank"], "of": len(pairs), "level": _r(holm[name]["level"]),
                         "p_adjusted": _r(holm[name]["p_adjusted"]), "rejected": bool(holm[name]["rejected"])}
            res[name] = r
        out[split] = res
    return out


def unfit_runs(results: Mapping[str, Mapping[str, Mapping]], cfg: Mapping | None = None) -> dict[str, list[str]]:
    """Runs that did not fit, by the rule fixed in params before any result is seen: the
    train error of the selected checkpoint above ``fit_max_chance_share`` x chance error
    (1 - 1/K). ``results``: ``{variant: {seed: evaluate() result}}``. ``{variant: [seeds]}``."""
    c = merge_config(cfg)
    out: dict[str, list[str]] = {}
    for v, by_seed in results.items():
        for sd, res in by_seed.items():
            tr = res["splits"].get("train")
            if tr is None:
                continue
            chance = 1.0 - 1.0 / len(res["label_names"])
            if tr["error"] > c["fit_max_chance_share"] * chance:
                out.setdefault(str(v), []).append(str(sd))
    return out


def compare_markdown(comparisons: Mapping, variants: Mapping | None = None, title: str = "Does synthetic data help?",
                     primary: str = "test") -> str:
    """Markdown of :func:`compare_all`'s result (``{split: {name: comparison}}``) and, when
    given, the per-variant errors ``{split: {variant: variant_error()}}``."""
    out = [f"# {title}", ""]
    splits = list(comparisons)
    first = next(iter(next(iter(comparisons.values())).values()), None) if comparisons else None
    if first is None:
        return "\n".join(out + ["*no comparison*", ""])
    pct = int(round(100 * first["ci"]))
    if variants:
        rows = []
        for v in next(iter(variants.values())):
            cells = [v]
            for sp in splits:
                d = variants.get(sp, {}).get(v)
                cells += ["-", "-"] if d is None else [_pct(d["error"]), _ci(d)]
            d0 = variants[splits[0]][v]
            cells.append(", ".join(f"s{sd}: {_pct(x)}" for sd, x in d0["per_seed"].items()))
            rows.append(cells)
        head = ["variant"] + [h for sp in splits for h in (f"{sp} error", f"{pct}% CI")] + [f"{splits[0]} per seed"]
        out += [_table(head, rows), ""]
    rows = []
    for name, c in comparisons[primary].items():
        d = c["difference"]
        row = [f"{c['treatment']} - {c['baseline']}", _pts(d["value"]), f"{_pts(d['low'])} to {_pts(d['high'])}",
               _pts(c["mde"]).lstrip("+"), f"{c['holm']['level']:.4f}", f"**{c['verdict']}**",
               f"{c['n_seeds']} / {c['rows']:,}" + ("" if c["groups"] is None else f" / {c['groups']:,}")]
        for sp in splits:
            if sp == primary:
                continue
            e = comparisons[sp][name]
            row.append(f"{_pts(e['difference']['value'])} ({_pts(e['difference']['low'])} to "
                       f"{_pts(e['difference']['high'])}): {e['verdict']}")
        row.append(", ".join(c["unfit_runs"]) or "-")
        rows.append(row)
    head = ["difference", primary, f"{pct}% CI", f"MDE ({int(round(100 * first['power']))}% power)", "Holm level",
            "verdict", "seeds / rows / groups"] + [f"{sp} (for reference)" for sp in splits if sp != primary] + \
        ["runs that did not fit"]
    out += [_table(head, rows), ""]
    out.append(f"Verdicts are read on **{primary}**, which no choice touched (checkpoints were chosen on dev). "
               f"Method: {first['method']}. A difference *helps* / *hurts* when its p-value is at or below its "
               f"Holm-adjusted level (the comparisons of this scenario share a {100 - pct}% family-wise error); "
               f"*equivalent* when two one-sided tests at that level put it inside +-{_pts(first['min_effect'])} "
               f"(evaluate.min_effect); otherwise *inconclusive*; and *inconclusive* outright when the split has fewer "
               f"independent groups than evaluate.min_groups. MDE: the smallest true difference this experiment "
               f"detects with {int(round(100 * first['power']))}% power at the {100 - pct}% level.")
    notes = sorted({n for sp in comparisons.values() for c in sp.values() for n in c["notes"]})
    out += [f"* {n}" for n in notes]
    return "\n".join(out) + "\n"


def few_groups_text(split: str, groups: Sequence[str], min_groups: int, word: str = "groups") -> str | None:
    """Why ``split`` can give no verdict (one sentence), or None when it has ``min_groups`` groups or more."""
    g = len(groups)
    if g >= min_groups:
        return None
    names = ", ".join(map(str, groups))
    return (f"{split} has {g} {word} ({names}), fewer than evaluate.min_groups = {min_groups}: no interval over so "
            f"few independent {word} can be trusted (the intervals shown treat rows as independent and understate the "
            f"uncertainty), so every verdict on {split} is inconclusive by rule (\"too few groups\"), whatever its "
            f"rows say.")


def check_markdown(split: str, comparisons: Mapping, variants: Mapping, groups: Sequence[str], cfg: Mapping,
                   rows: int | None = None, word: str = "speakers") -> str:
    """Markdown of an evaluation-only check split (e.g. ``codrivers``): its per-variant errors and
    seed-paired comparisons (:func:`compare_markdown`) and, with fewer than ``min_groups``
    groups, why its verdicts are inconclusive."""
    c = merge_config(cfg)
    title = f"Real-speech check: {split}"
    out = [f"## {title}", ""]
    n = f"{rows:,} " if rows is not None else ""
    out.append(f"`{split}`: {n}real target rows of {len(groups)} {word} ({', '.join(map(str, groups))}), "
               "evaluation only -- never trained on, never synthesised from, never used to choose a checkpoint; "
               "every run's selected checkpoint is scored on it and it is reported here on its own.")
    out.append("")
    if comparisons:
        body = compare_markdown({split: comparisons}, {split: variants} if variants else None,
                                title=f"{split}: does the synthesis help?", primary=split)
        out += ["##" + ln if ln.startswith("# ") else ln for ln in body.rstrip("\n").split("\n")]
    elif variants:
        pct = int(round(100 * c["ci"]))
        rows_ = [[v, _pct(d["error"]), _ci(d), d["n_seeds"]] for v, d in variants.items()]
        out.append(_table(["variant", f"{split} error", f"{pct}% CI", "seeds"], rows_))
    why = few_groups_text(split, groups, c["min_groups"], word)
    if why:
        out += ["", f"**Why inconclusive:** {why}"]
    return "\n".join(out) + "\n"


def compare_metrics(comparison: Mapping) -> dict[str, float | int | str]:
    """Flat numbers of one :func:`compare` result for a metrics file."""
    d = comparison["difference"]
    out: dict[str, float | int | str] = {
        "difference": d["value"], "difference_low": d["low"], "difference_high": d["high"], "se": d["se"],
        "df": d["df"], "p_value": comparison["p_value"], "mde": comparison["mde"], "seeds": comparison["n_seeds"],
        "rows": comparison["rows"], "verdict": comparison["verdict"],
    }
    if comparison.get("holm"):
        out["holm_level"] = comparison["holm"]["level"]
    if comparison["groups"] is not None:
        out["groups"] = comparison["groups"]
    return out
