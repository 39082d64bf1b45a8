"""``shiftlab calibrate blur``: choose the synthesis's kernel ranges from the target-train rows.

The synthesis defaults were set by eye, and the realism check (:mod:`shiftlab.synth.diversity`)
only says afterwards how far the result is from the target. This module scores a grid of
candidate kernel ranges *before* anything is trained:

1. **Candidates.** Every combination of ``grid`` (dotted keys into the ``synth_blur``
   ``kernels`` cfg, e.g. ``linear.length`` -> list of ``[low, high]`` ranges) applied over the
   ``base`` section's kernels, plus the explicit ``candidates`` (partial kernels mappings)
   and the base itself (what the pipeline uses now). Duplicates are scored once.
2. **Synthetic rows.** For each candidate, :func:`shiftlab.synth.blur.make_synthetic` blurs
   the same ``source_rows`` sharp source parents of ``train``/``train_dev`` (same parents,
   same per-row seeds for every candidate: common random numbers, so differences between
   candidates are differences of the ranges, not of the draw).
3. **Scores**, with the check's own code and gates: :func:`shiftlab.synth.diversity.run` on
   those rows against the **target rows of ``train``** (the check's realism metrics: domain
   classifier AUC with its 95% interval, Frechet distance of the features) and
   :func:`shiftlab.synth.diversity.gate` with the ``check_images`` gates (kernel Vendi ratio
   and effective kernels per row, orientation entropy, near-duplicates, held-out kernel
   probe, ...: relative to a reference at equal n and scale, so a candidate of short kernels
   is not failed for its kernel size alone).
   The feature network is fitted once (same rows, seed and cfg for every candidate, so the
   candidates are measured in one feature space) and reused.
4. **Recommendation.** Candidates that fail a ``fail`` gate are never recommended (the
   diversity gates still apply). Among the others: with ``criterion: domain_auc`` the
   lowest AUC, except that every candidate whose 95% interval reaches that AUC counts as
   tied with it (AUC differences inside the noise are not evidence); a tie that includes
   the current ranges (``base``) keeps them (nothing shows another candidate is closer, and
   the Frechet distance of ~1,000 rows moves by more than the gaps between tied
   candidates), otherwise the tie goes to the lowest Frechet distance; with ``criterion: frechet`` the lowest Frechet distance
   (AUC breaks ties). The report flags a recommendation at the edge of the grid (the best
   ranges may lie beyond it).

Only ``splits["train"]`` and ``splits["train_dev"]`` are read (their source rows are the
parents, the target rows of ``train`` are the reference); dev and test are never touched
(a test checks that changing them changes nothing). The scores are measured on
``source_rows`` parents and at most ``target_rows`` target rows, so they are comparable
across the candidates of one run, not equal to the numbers of a full ``check_images`` run.

Outputs (:func:`markdown`, :func:`plot`): a table of every candidate (ranges, AUC and CI,
Frechet, the gated diversity metrics, the verdict), the recommended ranges as
``dvc exp run -S`` overrides, and a PNG of the realism/diversity trade-off (domain AUC and
Frechet against kernel Vendi; failing candidates crossed out).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import itertools
import json
import math
import os
from typing import Any, Mapping, Sequence

import numpy as np

from shiftlab import paramschema
from shiftlab.errors import ShiftlabError

__all__ = ["DEFAULTS", "check_cfg", "candidates", "run", "markdown", "plot"]

_KEY = "calibrate_blur"

#: Defaults of the ``calibrate_blur`` params section.
DEFAULTS: dict[str, Any] = {
    "seed": 0,  # synthesis and check seed (the same parents and per-row draws for every candidate)
    "base": "synth_blur",  # params section the candidates start from (its kernels are what "base" scores)
    "source_rows": 1000,  # sharp source parents blurred per candidate (1 copy each)
    "target_rows": 1000,  # at most this many target rows of train as the realism reference
    "grid": {  # every combination; keys are dotted paths into synth_blur.kernels
        "linear.length": [[3.0, 11.0], [3.0, 15.0], [3.0, 19.0]],
        "shake.max_length": [[5.0, 18.0], [5.0, 25.0], [8.0, 32.0]],
    },
    "candidates": [],  # extra candidates: partial synth_blur.kernels mappings
    "criterion": "domain_auc",  # domain_auc | frechet: lower = closer to the target
    "check": {},  # overrides of the check_images section for the scoring (its gates decide eligibility)
    "workers": 0,  # candidates scored side by side in forked processes (0 = one per CPU core; 1 = in-process)
    "report": "reports/calibrate_blur.md",
    "plot": "reports/calibrate_blur.png",
    "metrics": "metrics/calibrate_blur.json",
}

_KERNEL_KEYS = {
    "families": ("linear", "shake"),
    "linear": ("length", "angle", "direction"),
    "shake": ("max_length", "exposure", "anxiety", "jitter", "centripetal", "impulse_prob", "n_steps"),
}
_CRITERIA = ("domain_auc", "frechet")


# --------------------------------------------------------------------------- config


def _dotted(key: str) -> tuple[str, str]:
    parts = str(key).split(".")
    if len(parts) != 2 or parts[0] not in _KERNEL_KEYS or parts[1] not in _KERNEL_KEYS[parts[0]]:
        known = ", ".join(f"{a}.{b}" for a, bs in _KERNEL_KEYS.items() for b in bs)
        raise ValueError(f"{key}: unknown kernel key (expected one of {known})")
    return parts[0], parts[1]


def check_grid(grid) -> dict:
    """Validate a ``grid`` value: dotted kernel key -> non-empty list of values (ValueError with the reason).

    The values themselves are checked per candidate (:func:`candidates`), where a bad one
    is reported with the kernel sampler's message.
    """
    if grid is None:
        return {}
    if not isinstance(grid, Mapping):
        raise ValueError(f"must be a mapping of kernel keys (e.g. linear.length) to lists of values, got {grid!r}")
    from shiftlab.synth import kernels

    out = {}
    for k, vals in grid.items():
        sec, name = _dotted(k)
        if not isinstance(vals, (list, tuple)) or not vals:
            raise ValueError(f"{k}: must be a non-empty list of values, got {vals!r}")
        for i, v in enumerate(vals):
            if sec == "families":
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                    raise ValueError(f"{k}: item {i}: a family weight must be a number >= 0, got {v!r}")
                continue
            try:  # the value on its own, over the sampler's defaults (both range ends are built)
                kernels.check_sample_cfg({sec: {name: v}})
            except ShiftlabError as e:
                raise ValueError(f"{k}: item {i}: {e}") from None
        out[str(k)] = copy.deepcopy(list(vals))
    return out


def _check_partial(kern) -> dict:
    """A partial kernels mapping: known sections and keys only (ValueError with the reason)."""
    if not isinstance(kern, Mapping) or not kern:
        raise ValueError(
            f"must be a non-empty mapping of kernel settings, e.g. {{linear: {{length: [2, 7]}}}}, got {kern!r}")
    out: dict = {}
    for sec, sub in kern.items():
        if sec not in _KERNEL_KEYS:
            raise ValueError(f"{sec}: unknown key (expected one of {', '.join(_KERNEL_KEYS)})")
        if not isinstance(sub, Mapping):
            raise ValueError(f"{sec}: must be a mapping, got {sub!r}")
        for k, v in sub.items():
            if k not in _KERNEL_KEYS[sec]:
                raise ValueError(f"{sec}.{k}: unknown key (expected one of {', '.join(_KERNEL_KEYS[sec])})")
            out.setdefault(sec, {})[k] = copy.deepcopy(v)
    return out


def check_candidates(cands) -> list:
    """Validate a ``candidates`` value: a list of partial kernels mappings (ValueError with the reason)."""
    if cands is None:
        return []
    return paramschema.list_check(_check_partial, "kernel mappings")(cands)


def check_overrides(check) -> dict:
    """Validate a ``check`` value: keys of the ``check_images`` section (ValueError with the reason)."""
    from shiftlab.synth import diversity

    if check is None:
        return {}
    if not isinstance(check, Mapping):
        raise ValueError(f"must be a mapping of check_images keys, got {check!r}")
    try:
        diversity.check_cfg(check)
    except ShiftlabError as e:
        msg = str(e)
        raise ValueError(msg[len("check_images."):] if msg.startswith("check_images.") else msg) from None
    return copy.deepcopy(dict(check))


def check_cfg(cfg: Mapping[str, Any] | None = None, where: str = _KEY) -> dict[str, Any]:
    """:data:`DEFAULTS` with ``cfg`` merged over it, validated (one-line errors naming the key).

    ``grid`` and ``candidates`` replace the defaults whole (a grid is one design, not a merge).
    """
    c = copy.deepcopy(DEFAULTS)
    if cfg is not None and not isinstance(cfg, Mapping):
        raise ShiftlabError(f"{where}: must be a mapping of keys, got {cfg!r}")
    for k, v in (cfg or {}).items():
        if k not in c:
            import difflib

            hint = difflib.get_close_matches(str(k), list(c), 1)
            raise ShiftlabError(f"{where}.{k}: unknown key{f' (did you mean {hint[0]}?)' if hint else ''}")
        c[k] = copy.deepcopy(v)
    for k, lo in (("seed", 0), ("source_rows", 20), ("target_rows", 10), ("workers", 0)):
        v = c[k]
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ShiftlabError(f"{where}.{k}: must be an integer >= {lo}, got {v!r}")
    if not isinstance(c["base"], str) or not c["base"].startswith("synth_blur"):
        raise ShiftlabError(f"{where}.base: must name a synth_blur* params section, got {c['base']!r}")
    if c["criterion"] not in _CRITERIA:
        raise ShiftlabError(f"{where}.criterion: must be one of {', '.join(_CRITERIA)}, got {c['criterion']!r}")
    for k, fn in (("grid", check_grid), ("candidates", check_candidates), ("check", check_overrides)):
        try:
            c[k] = fn(c[k])
        except ValueError as e:
            raise ShiftlabError(f"{where}.{k}: {e}") from None
    for k in ("report", "plot", "metrics"):
        if not isinstance(c[k], str) or not c[k]:
            raise ShiftlabError(f"{where}.{k}: must be a file path, got {c[k]!r}")
    return c


# --------------------------------------------------------------------------- candidates


def _canon(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def _fmt_val(v) -> str:
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt_val(x) for x in v) + "]"
    if isinstance(v, float) and v.is_integer():
        return f"{int(v)}"
    return f"{v:g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)


def candidates(cfg: Mapping[str, Any], base_kernels: Mapping[str, Any]) -> list[dict]:
    """The candidate list: ``{"name", "overrides" (dotted key -> value), "kernels" (full cfg), "is_base"}``.

    The base first, then the grid in row-major order of its keys (as written), then the
    explicit candidates; a candidate whose full kernels cfg equals an earlier one is dropped.
    Every candidate is validated by :func:`shiftlab.synth.kernels.check_sample_cfg`.
    """
    from shiftlab.synth import kernels

    c = check_cfg(cfg)
    base = kernels.check_sample_cfg(copy.deepcopy(dict(base_kernels)))
    out: list[dict] = []
    seen: set[str] = set()

    def add(overrides: dict, is_base: bool, where: str):
        nested: dict = {}
        for key, v in overrides.items():
            sec, k = _dotted(key)
            nested.setdefault(sec, {})[k] = v
        try:
            full = kernels.check_sample_cfg(paramschema.deep_merge(base, nested))
        except ShiftlabError as e:
            raise ShiftlabError(f"{where}: {e}") from None
        key = _canon(full)
        if key in seen:
            return
        seen.add(key)
        out.append({"name": "base" if is_base else f"c{len(out)}", "overrides": overrides, "kernels": full,
                    "is_base": is_base})

    add({}, True, f"{_KEY}.base")
    keys = list(c["grid"])
    for combo in itertools.product(*(c["grid"][k] for k in keys)):
        add(dict(zip(keys, combo)), False, f"{_KEY}.grid")
    for i, cand in enumerate(c["candidates"]):
        add({f"{sec}.{k}": v for sec, sub in cand.items() for k, v in sub.items()}, False,
            f"{_KEY}.candidates[{i}]")
    return out


def _describe(cand: Mapping) -> str:
    if cand["is_base"]:
        return "base (current ranges)"
    return ", ".join(f"{k}={_fmt_val(v)}" for k, v in cand["overrides"].items())


# --------------------------------------------------------------------------- scoring


def _digest(*parts) -> str:
    h = hashlib.blake2b(digest_size=16)
    for p in parts:
        if isinstance(p, np.ndarray) or hasattr(p, "__array__"):
            a = np.ascontiguousarray(np.asarray(p))
            h.update(repr((a.shape, str(a.dtype))).encode())
            h.update(a.tobytes())
        else:
            h.update(_canon(p).encode())
        h.update(b"\x00")
    return h.hexdigest()


@contextlib.contextmanager
def _shared_work():
    """Compute what is the same for every candidate once.

    The check fits its feature network on the real train rows (the same rows, cfg and seed
    for every candidate) and measures the sharp parents against the target (the same parents
    for every candidate): both are memoised on their exact inputs for the duration of the
    calibration, so every candidate is measured in one feature space and the results equal
    uncached ones.
    """
    from shiftlab import stats
    from shiftlab.synth import features

    orig_fit, orig_auc = features.fit, stats.domain_classifier_auc
    cache: dict[str, Any] = {}

    def fit(images, labels, cfg=None, seed=0, progress=False):
        key = _digest("fit", images, labels, features.check_cfg(cfg), int(seed))
        if key not in cache:
            cache[key] = orig_fit(images, labels, cfg, seed=seed, progress=progress)
        return cache[key]

    def auc(A, B, folds=5, seed=0, **kw):
        arrays = [np.asarray(kw[k]).astype(str) if kw[k] is not None else "none" for k in ("groups_a", "groups_b")
                  if k in kw]  # group labels: hashed as arrays
        rest = sorted((k, v) for k, v in kw.items() if k not in ("groups_a", "groups_b"))
        key = _digest("auc", A, B, int(folds), int(seed), rest, *arrays)
        if key not in cache:
            cache[key] = orig_auc(A, B, folds, seed, **kw)
        return copy.deepcopy(cache[key])

    features.fit, stats.domain_classifier_auc = fit, auc
    try:
        yield
    finally:
        features.fit, stats.domain_classifier_auc = orig_fit, orig_auc


def _train_only(splits):
    """A DatasetDict of train and train_dev only: dev and test are never read."""
    import datasets as hfds

    if splits is None or not hasattr(splits, "keys") or "train" not in splits:
        raise ShiftlabError("calibrate blur: splits must be a DatasetDict with a train split (shiftlab split images)")
    if "train_dev" not in splits:
        raise ShiftlabError("calibrate blur: splits has no train_dev split (shiftlab split images makes one)")
    return hfds.DatasetDict({"train": splits["train"], "train_dev": splits["train_dev"]})


def _target_summary(train) -> dict:
    """What the target rows of train are: how many, and which generator (if any) made them."""
    t = train.select_columns(["domain", "origin", "recipe"]).with_format("arrow")[:]
    dom = np.asarray(t.column("domain").to_pylist(), dtype=object)
    ori = np.asarray(t.column("origin").to_pylist(), dtype=object)
    rec = t.column("recipe").to_pylist()
    gens: dict[str, int] = {}
    for i in np.flatnonzero((dom == "target") & (ori == "real")):
        try:
            doc = json.loads(rec[i]) if rec[i] else {}
        except (TypeError, json.JSONDecodeError):
            doc = {}
        fr = doc.get("frames") if isinstance(doc, dict) else None
        if isinstance(fr, dict):
            g = fr.get("generator", "shiftlab")
            name = {"shiftlab": "simulated by synth/frames.py (generator shiftlab)",
                    "imagemagick": "simulated by ImageMagick motion blur + sensor noise + codec "
                                   "(generator imagemagick, shiftlab.datasets.videotarget)"}.get(g, f"generator {g}")
        else:
            name = "real (no frames record: not simulated by shiftlab)"
        gens[name] = gens.get(name, 0) + 1
    return {"rows": int(sum(gens.values())), "kinds": gens}


#: what the candidate scorer reads (set by :func:`run` before the workers fork)
_POOL: dict[str, Any] = {}


def _uses_cuda(base: Mapping) -> bool:
    """A CUDA synthesis device cannot be forked: candidates are then scored in-process."""
    dev = str(base.get("device", "auto"))
    if dev.startswith("cuda"):
        return True
    if dev == "auto":
        import torch

        return bool(torch.cuda.is_available())
    return False


def _score_one(i: int) -> dict:
    """Blur the calibration parents with candidate ``i``'s kernels and score them with the check."""
    from shiftlab.synth import blur, diversity

    parts, base, chk, c = (_POOL[k] for k in ("parts", "base", "chk", "c"))
    cand = _POOL["cands"][i]
    scfg = dict(base, seed=c["seed"], fraction=_POOL["fraction"], copies=1, kernels=cand["kernels"])
    if _mp_child():
        scfg["workers"] = 1  # no process pool inside a pool worker (kernel draws do not depend on it)
    syn = blur.make_synthetic(parts, scfg, progress=False)
    rep = diversity.run(syn, parts, chk, plots_dir=None, progress=False)
    gates = diversity.gate(rep, chk)
    failed = [g["name"] for g in gates if not g["passed"] and g["action"] == "fail"]
    warned = [g["name"] for g in gates if not g["passed"] and g["action"] != "fail"]
    r = rep["realism"]
    if r.get("skipped"):
        raise ShiftlabError(f"calibrate blur: realism not measurable: {r['skipped']}")
    k = rep["kernels"]
    scores = {
        "domain_auc": r["domain_auc"]["auc"],
        "domain_auc_ci": [r["domain_auc"]["ci_low"], r["domain_auc"]["ci_high"]],
        "frechet": r["frechet"], "kernel_vendi": k["vendi"], "distinct_kernels": k["distinct"],
        "orientation_entropy": k["params"]["orientation"]["entropy"],
        "length_mean": k["params"]["length"]["mean"],
        "near_duplicate_share": rep["near_duplicates"]["share"],
        "probe_gap": rep["probe"].get("gap"),
        "probe_gap_ci_high": (rep["probe"].get("gap_ci") or [None, None])[1],
    }
    return {
        "name": cand["name"], "description": _describe(cand), "is_base": cand["is_base"],
        "overrides": cand["overrides"], "kernels": cand["kernels"], "scores": scores,
        "gates": gates, "failed": failed, "warned": warned, "eligible": not failed,
        "synthetic_rows": int(len(syn)),
        "_parents": {"domain_auc": r["domain_auc_parents"], "frechet": r["frechet_parents"]},
    }


def _mp_child() -> bool:
    import multiprocessing as mp

    return mp.parent_process() is not None


def _progress(res: Mapping, done: int, total: int, progress: bool) -> None:
    if progress:
        s = res["scores"]
        print(f"calibrate blur: {done}/{total} {res['name']} ({res['description']}): domain AUC "
              f"{s['domain_auc']:.3f}, Frechet {s['frechet']:.3f}, kernel Vendi "
              f"{s['kernel_vendi']:.2f}{', FAIL ' + ', '.join(res['failed']) if res['failed'] else ''}", flush=True)


def run(splits, cfg: Mapping[str, Any] | None = None, check_cfg_: Mapping[str, Any] | None = None,
        base_cfg: Mapping[str, Any] | None = None, progress: bool = True) -> dict:
    """Score every candidate (module docstring) and pick the recommended one.

    Args:
        splits: the mismatch splits (``DatasetDict``); only ``train`` and ``train_dev`` are read.
        cfg: the ``calibrate_blur`` section.
        check_cfg_: the ``check_images`` section (gates, features, realism); ``cfg["check"]``
            is merged over it.
        base_cfg: the ``synth_blur*`` section named by ``cfg["base"]`` (its kernels, device,
            batch size and workers are used; seed, fraction and copies are set here).
        progress: progress lines per candidate.

    Returns:
        A JSON-able dict: ``cfg``, ``target`` (rows and what made them), ``parents``
        (realism of the sharp parents), ``candidates`` (per candidate: name, description,
        overrides, kernels, scores, gates, failed, warned, eligible), ``recommended``
        (name, or None when every candidate fails a fail gate), ``overrides`` (the
        recommended ranges as ``dvc exp run -S`` arguments).
    """
    from shiftlab.synth import blur, diversity

    c = check_cfg(cfg)
    parts = _train_only(splits)
    train = parts["train"]
    target = _target_summary(train)
    if target["rows"] == 0:
        raise ShiftlabError("calibrate blur: splits train has no target rows to calibrate against "
                            "(raise split_images.target_train_fraction)")
    chk = diversity.check_cfg(paramschema.deep_merge(dict(check_cfg_ or {}), c["check"]))
    chk["seed"] = c["seed"]
    chk["max_target"] = c["target_rows"]
    base = paramschema.deep_merge(blur.DEFAULTS, dict(base_cfg or {}))  # make_synthetic validates it
    cands = candidates(c, base["kernels"])
    n_parents = len(blur.eligible_parents(parts)["id"])
    if n_parents == 0:
        raise ShiftlabError("calibrate blur: splits train/train_dev have no sharp source rows to blur")
    fraction = min(1.0, c["source_rows"] / n_parents)
    chk["max_rows"] = max(50, min(n_parents, c["source_rows"]))
    workers = c["workers"] or (os.cpu_count() or 1)
    import torch

    # every candidate is scored single-threaded, in this process or a forked one: the scores never depend on
    # how many cores or workers there are (a reduction split over threads would change the last digits)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    _POOL.update(cands=cands, parts=parts, base=base, chk=chk, c=c, fraction=fraction)
    results: list = []
    try:
        with _shared_work():
            # the first candidate in this process: it fits the feature network and scores the parents once;
            # forked workers inherit both (memoised) and score the rest
            results.append(_score_one(0))
            _progress(results[-1], 1, len(cands), progress)
            rest = list(range(1, len(cands)))
            if workers > 1 and len(rest) > 1 and not _uses_cuda(base):
                import multiprocessing as mp

                with mp.get_context("fork").Pool(min(workers, len(rest))) as pool:
                    for res in pool.imap(_score_one, rest):
                        results.append(res)
                        _progress(res, len(results), len(cands), progress)
            else:
                for i in rest:
                    results.append(_score_one(i))
                    _progress(results[-1], len(results), len(cands), progress)
    finally:
        torch.set_num_threads(threads)
        _POOL.clear()
    parents_realism = results[0].pop("_parents")
    for r in results[1:]:
        r.pop("_parents", None)
    crit = c["criterion"]
    rec, tied, eligible, rank_key = recommend(results, crit)
    # rank = the order of the rule: the recommended, the rest of its tie, the other eligible, then the failing
    head = ([r for n in tied for r in results if r["name"] == n] if tied else ([rec] if rec else []))
    failing = sorted((r for r in results if not r["eligible"]), key=rank_key)
    order = head + [r for r in eligible if r not in head] + failing
    for rank, r in enumerate(order):
        r["rank"] = rank + 1
    out = {
        "cfg": c,
        "criterion": crit,
        "target": target,
        "parents": parents_realism,
        "source_rows": int(results[0]["synthetic_rows"]) if results else 0,
        "eligible_parents": int(n_parents),
        "candidates": results,
        "recommended": rec["name"] if rec else None,
        "tied": tied,
        "overrides": _exp_overrides(c["base"], rec) if rec else [],
        "grid_edges": _grid_edges(c["grid"], rec) if rec else [],
        "gates_used": {g["name"]: {"op": g["op"], "threshold": g["threshold"], "action": g["action"]}
                       for g in results[0]["gates"]} if results else {},
    }
    return _clean(out)


def _clean(obj):
    """JSON-able copy: numpy scalars -> Python, NaN/inf -> None, tuples -> lists."""
    if isinstance(obj, Mapping):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [_clean(v) for v in (obj.tolist() if isinstance(obj, np.ndarray) else obj)]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(float(obj)) else None
    return obj


def _grid_edges(grid: Mapping[str, Sequence], rec: Mapping) -> list[str]:
    """Grid keys at whose first or last listed value the recommended candidate sits (extend the grid there)."""
    out = []
    for key, vals in grid.items():
        if len(vals) < 2:
            continue
        sec, name = _dotted(key)
        v = rec["kernels"].get(sec, {}).get(name)
        if v is None:
            continue
        if _canon(v) == _canon(vals[0]) or _canon(v) == _canon(vals[-1]):
            out.append(f"{key}={_fmt_val(v)}")
    return out


def _exp_overrides(section: str, rec: Mapping) -> list[str]:
    """The recommended ranges as ``dvc exp run -S`` arguments (empty when it is the base itself)."""
    out = []
    for key, v in rec["overrides"].items():
        out.append(f"{section}.kernels.{key}={json.dumps(v, separators=(',', ':'))}")
    return out


# --------------------------------------------------------------------------- report


def _f(v, d: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    return f"{v:.{d}f}"


def markdown(result: Mapping, plot_name: str | None = None) -> str:
    """The calibration report: target, verdict, the candidates table, the trade-off plot."""
    c = result["cfg"]
    crit = result["criterion"]
    cands = result["candidates"]
    rec = next((r for r in cands if r["name"] == result["recommended"]), None)
    L = ["# Blur calibration: synthesis ranges scored against the target-train rows", ""]
    t = result["target"]
    kinds = "; ".join(f"{n:,} {k}" for k, n in t["kinds"].items())
    L += [f"Reference: the {t['rows']:,} target rows of the **train** split ({kinds}); dev and test are never "
          f"read. Each candidate blurs the same {result['source_rows']:,} sharp source parents (seed {c['seed']}); "
          f"scores are the realism metrics and gates of `shiftlab check images`, on these rows (comparable across "
          f"candidates, not equal to a full check).", ""]
    if rec is not None:
        s = rec["scores"]
        L += [f"**Recommended: {rec['name']}** ({rec['description']}): domain AUC {_f(s['domain_auc'])} "
              f"({_f(s['domain_auc_ci'][0])}-{_f(s['domain_auc_ci'][1])}), Frechet {_f(s['frechet'])}, kernel Vendi "
              f"{_f(s['kernel_vendi'], 2)}.", ""]
        if crit == "domain_auc":
            tied = [n for n in result.get("tied", []) if n != rec["name"]]
            L += [f"Rule: among the candidates that pass every fail gate, the lowest domain AUC; candidates whose 95% "
                  f"interval reaches that AUC count as tied; a tie that includes the current ranges (base) keeps them, "
                  f"otherwise the lowest Frechet distance among them wins"
                  + (f" (tied here: {', '.join([rec['name']] + tied)})." if tied else "."), ""]
        else:
            L += ["Rule: the lowest Frechet distance among the candidates that pass every fail gate (domain AUC breaks "
                  "ties).", ""]
        if result["overrides"]:
            L += ["Try it: `dvc exp run " + " ".join(f"-S '{o}'" for o in result["overrides"]) + "`", ""]
        else:
            L += ["The current ranges (base) are already the best eligible candidate.", ""]
        if result.get("grid_edges"):
            L += [f"The recommended candidate sits at the edge of the grid ({', '.join(result['grid_edges'])}): the "
                  "best ranges may lie beyond it; extend `calibrate_blur.grid` in that direction and rerun.", ""]
    else:
        L += ["**No candidate recommended**: every candidate fails at least one fail gate of `check_images`.", ""]
    p = result.get("parents") or {}
    if p:
        pa = p.get("domain_auc") or {}
        L += [f"Sharp parents (no blur) vs target: domain AUC {_f(pa.get('auc'))}, Frechet {_f(p.get('frechet'))}.", ""]
    L += ["| rank | candidate | ranges | domain AUC (95% CI) | Frechet | kernel Vendi | distinct kernels | "
          "orientation entropy | mean path (px) | near-dup share | probe gap CI high | verdict |",
          "|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in sorted(cands, key=lambda r: r["rank"]):
        s = r["scores"]
        verdict = ("FAIL " + ", ".join(r["failed"]) if r["failed"]
                   else ("warn " + ", ".join(r["warned"]) if r["warned"] else "pass"))
        name = f"**{r['name']}**" if r["name"] == result["recommended"] else r["name"]
        L.append(f"| {r['rank']} | {name} | {r['description']} | {_f(s['domain_auc'])} ({_f(s['domain_auc_ci'][0])}-"
                 f"{_f(s['domain_auc_ci'][1])}) | {_f(s['frechet'])} | {_f(s['kernel_vendi'], 2)} | "
                 f"{_f(s['distinct_kernels'])} | {_f(s['orientation_entropy'])} | {_f(s['length_mean'], 1)} | "
                 f"{_f(s['near_duplicate_share'])} | {_f(s.get('probe_gap_ci_high'))} | {verdict} |")
    g = result.get("gates_used") or {}
    fails = ", ".join(f"{n} {v['op']} {v['threshold']:g}" for n, v in g.items() if v["action"] == "fail")
    L += ["", f"Fail gates (from `check_images`): {fails or 'none'}. Lower domain AUC (0.5 = indistinguishable) and "
          "lower Frechet = closer to the target; higher kernel Vendi = more diverse kernels. The trade-off: ranges "
          "that make the synthetic rows look most like the target can be too narrow to pass the diversity gates.", ""]
    if plot_name:
        L += [f"![realism vs diversity]({plot_name})", ""]
    return "\n".join(L)


def plot(result: Mapping, path) -> None:
    """PNG: domain AUC and Frechet against kernel Vendi, one point per candidate."""
    import io

    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from shiftlab import store

    cands = result["candidates"]
    vendi_gate = (result.get("gates_used") or {}).get("kernel_vendi")
    parents = result.get("parents") or {}
    with plt.rc_context({"figure.max_open_warning": 0}):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        for ax, key, label, ref in (
            (axes[0], "domain_auc", "domain AUC synthetic vs target (lower = closer)",
             (parents.get("domain_auc") or {}).get("auc")),
            (axes[1], "frechet", "Frechet distance to target (lower = closer)", parents.get("frechet")),
        ):
            for r in cands:
                s = r["scores"]
                x, y = s["kernel_vendi"], s[key]
                if x is None or y is None:
                    continue
                best = r["name"] == result["recommended"]
                color = "tab:red" if r["failed"] else ("tab:green" if best else "tab:blue")
                marker = "x" if r["failed"] else ("*" if best else "o")
                ax.scatter([x], [y], c=color, marker=marker, s=120 if marker == "*" else 40, zorder=3)
                if key == "domain_auc" and s.get("domain_auc_ci") and None not in s["domain_auc_ci"]:
                    ax.plot([x, x], s["domain_auc_ci"], color=color, alpha=0.4, lw=1, zorder=2)
                ax.annotate(r["name"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
            if ref is not None:  # as text: a line that far away would squeeze the candidates together
                ax.set_title(f"sharp parents (no blur): {ref:.3f}", fontsize=8, color="grey")
            if vendi_gate is not None:
                ax.axvline(vendi_gate["threshold"], color="tab:red", ls="--", lw=1)
            ax.set_xlabel("kernel Vendi score (diversity; dashed: fail gate)")
            ax.set_ylabel(label, fontsize=8)
            ax.grid(alpha=0.3)
        fig.suptitle("Blur calibration: realism vs diversity (x = fails a fail gate, * = recommended)", fontsize=9)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=80, metadata={"Software": None})
        plt.close(fig)
    with store.atomic_file(path, "wb") as f:
        f.write(buf.getvalue())


def summary_table(result: Mapping) -> Sequence[str]:
    """Short text lines (name, ranges, AUC, Frechet, Vendi, verdict) for the command line."""
    lines = []
    for r in sorted(result["candidates"], key=lambda r: r["rank"]):
        s = r["scores"]
        mark = "*" if r["name"] == result["recommended"] else " "
        lines.append(f"{mark}{r['name']:>5} AUC {_f(s['domain_auc'])} FD {_f(s['frechet'])} Vendi "
                     f"{_f(s['kernel_vendi'], 2)} {'FAIL ' + ','.join(r['failed']) if r['failed'] else 'ok'}  "
                     f"{r['description']}")
    return lines


def recommend(results: list[dict], crit: str = "domain_auc"):
    """The recommendation rule (module docstring, 4): ``(recommended or None, tied names, eligible
    sorted, rank key)`` for scored candidates (``name``, ``is_base``, ``eligible``, ``scores`` with
    ``domain_auc``, ``domain_auc_ci``, ``frechet``)."""
    other = "frechet" if crit == "domain_auc" else "domain_auc"

    def rank_key(res):
        s = res["scores"]
        a, b = s[crit], s[other]
        return (math.inf if a is None else a, math.inf if b is None else b, res["name"])

    eligible = sorted((r for r in results if r["eligible"]), key=rank_key)
    tied: list[str] = []
    if eligible and crit == "domain_auc":
        # AUC differences inside the best's noise are not evidence: every eligible candidate whose 95% interval
        # reaches the best AUC is tied with it, and the tie goes to the lowest Frechet distance.
        best = eligible[0]["scores"]["domain_auc"]
        tie = [r for r in eligible if r["scores"]["domain_auc_ci"][0] is not None
               and r["scores"]["domain_auc_ci"][0] <= best] or eligible[:1]
        # a tie that includes the current ranges keeps them; otherwise the lowest Frechet distance
        tie.sort(key=lambda r: (not r.get("is_base"),
                                math.inf if r["scores"]["frechet"] is None else r["scores"]["frechet"], r["name"]))
        tied = [r["name"] for r in tie]
        rec = tie[0]
    else:
        rec = eligible[0] if eligible else None
    return rec, tied, eligible, rank_key
