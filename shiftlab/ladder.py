"""The diversity ladder: synthetic sets of graded diversity from one generator, checked, tabled.

Machine Learning Yearning (ch. 40) names the trap in counts: 20 car designs from a video game,
ten cars, one hour of car noise under 1,000 hours of speech. A diversity check has to flag those
sets and pass a generator that is not limited, and its thresholds have to be set where they
separate the two -- not at a round number that 20 kernels or ten cars just reach. The ladder
builds the sets in between from **the default generator itself**, at equal rows, runs the
check on each and writes the table its default thresholds are read from:

images (:func:`image_rungs`)
    ``rows`` sharp source parents (the same rows for every rung, seeded), blurred with ``k``
    kernels drawn from ``synth_blur.kernels`` (``k`` in ``images.kernels``: 1, 5, 20, 100;
    kernel ``j`` of row ``i`` is ``perm[i] mod k`` of a seeded permutation, so every kernel
    serves ``rows / k`` rows), with a fresh kernel per row (the default generator: unlimited)
    and with a fresh kernel per row from a *mild* range (``images.mild``: short kernels only),
    which must not fail for its kernel size. Every rung is checked by
    :func:`shiftlab.synth.diversity.run` with the ``check_images`` cfg (the feature network is
    fitted once: every rung has the same parents, so the same fit rows).
audio (:func:`audio_rungs`)
    the same speech rows (the default mixer's parents) mixed with banks of ``k`` real TORCS
    cars (``audio.cars``: 1, 3, 10, 17; the cars of :data:`shiftlab.train.sweep.CARS` in
    order, nested) driven for the same total ``audio.seconds`` of noise (``k`` x drives x
    seconds per drive, as the cars sweep does), the default bank (40 sources: the 17 driven
    cars and the other real recordings), and all cars with ``seconds / audio.reuse`` of noise:
    the book's "one hour reused" at the reuse factor ``audio.reuse`` (default 50 s of speech per
    second of noise). Checked by :func:`shiftlab.mixing.diversity.run` with ``check_audio``.

Check vs transfer (:func:`transfer`)
    The ladder's sets are not trained on (training is the pipeline's, 4-5 seeds per variant);
    the models that exist are: images narrow (one kernel) and synth (a fresh kernel per row),
    audio narrow (one recording), synth (the default bank) and the cars sweep's banks of 1, 3,
    10 and 17 cars. :func:`transfer` puts each one's check verdict under the **current**
    thresholds (re-gated from its stored check report; image kernel metrics recomputed from the
    stored recipes when the synthetic rows are there) next to its test error and its
    difference from nosynth with their intervals, and counts how often a FAIL went with
    worse transfer (a difference whose interval lies above 0).

Determinism: every random choice derives from ``seed`` through :mod:`shiftlab.seeding`.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from shiftlab import paramschema, seeding
from shiftlab.errors import ShiftlabError

__all__ = ["DEFAULTS", "check_cfg", "image_rungs", "run_images", "audio_rungs", "run_audio", "transfer",
           "transfer_markdown", "transfer_sentence", "markdown", "plot"]

_KEY = "ladder"
_PURPOSE = "ladder"

#: Defaults of the ``ladder`` params section (its model: :class:`shiftlab.paramschema.Ladder`).
DEFAULTS: dict[str, Any] = paramschema.defaults(paramschema.Ladder)


def check_cfg(cfg: Mapping[str, Any] | None = None, where: str = _KEY) -> dict[str, Any]:
    """:data:`DEFAULTS` with ``cfg`` merged over it (``images`` / ``audio`` key by key), validated by
    :class:`shiftlab.paramschema.Ladder`; errors name ``where.key``."""
    return paramschema.merge(paramschema.Ladder, cfg, where)


# --------------------------------------------------------------------------- images


def _with_images(base, images: np.ndarray, recipes: list[str]):
    """``base`` (rows of :func:`blur.make_synthetic`) with its image and recipe columns replaced."""
    import datasets as hfds
    import pyarrow as pa

    from shiftlab.synth import blur

    t = base.with_format("arrow")[:]
    cols = {n: t.column(n) for n in t.column_names}
    cols["image"] = blur._image_column(images)
    cols["recipe"] = pa.array(recipes, pa.string())
    table = pa.table({k: cols[k] for k in base.features})
    return hfds.Dataset(hfds.table.InMemoryTable(table), info=hfds.DatasetInfo(features=base.features))


def image_rungs(splits, blur_cfg: Mapping[str, Any], cfg: Mapping[str, Any] | None = None) -> list[dict]:
    """The image rungs (module docstring): ``[{"name", "kernels" (int or "fresh"), "design", "rows" (Dataset)}]``.

    ``blur_cfg``: the ``synth_blur`` section (its ``kernels`` is the generator). Every rung has
    the same ``images.rows`` parents (a seeded choice among the eligible source rows) and one
    synthetic row per parent.
    """
    import torch

    from shiftlab import store
    from shiftlab.synth import blur, kernels

    c = check_cfg(cfg)
    seed, n = c["seed"], c["images"]["rows"]
    bc = paramschema.deep_merge(blur.DEFAULTS, blur_cfg or {})
    el = blur.eligible_parents(splits)
    if len(el["id"]) < n:
        raise ShiftlabError(f"{_KEY}.images.rows: {n} rows asked, the splits have {len(el['id'])} eligible source rows")
    gen = kernels.check_sample_cfg(bc["kernels"])
    fresh = {**bc, "seed": seed, "fraction": n / len(el["id"]), "copies": 1, "device": "cpu", "workers": 1,
             "kernels": gen}
    base = blur.make_synthetic(splits, fresh, device="cpu", progress=False)
    if len(base) != n:  # floor(fraction * eligible + 0.5) can miss by one
        base = base.select(range(min(n, len(base))))
    pos_of = {str(i): p for p, i in enumerate(el["id"])}
    pos = np.array([pos_of[str(p)] for p in base["parent"]], dtype=np.int64)
    parents = blur._read_rows(splits, el["split"][pos], el["row"][pos])
    x = torch.from_numpy(parents)
    rungs = []
    for k in c["images"]["kernels"]:
        rng = seeding.sample_rng(seed, k, _PURPOSE, "kernels")
        ks = [kernels.sample(rng, gen) for _ in range(k)]
        which = seeding.sample_rng(seed, k, _PURPOSE, "assign").permutation(len(base)) % k
        imgs = blur.apply_kernels(x, [ks[j] for j in which]).numpy()
        recipes = [store.recipe(stage="ladder", kernel=ks[j].to_record(), family=ks[j].family, parent=str(p),
                                rung=k) for j, p in zip(which, base["parent"])]
        rungs.append({"name": f"{k} kernel{'s' if k > 1 else ''}", "kernels": k,
                      "design": f"{k} kernel(s) drawn from synth_blur.kernels, each on {len(base) // k}+ rows",
                      "rows": _with_images(base, imgs, recipes)})
    rungs.append({"name": "fresh kernel per row (default)", "kernels": "fresh",
                  "design": "synth_blur.kernels, a fresh kernel per row (the default synthesis)", "rows": base})
    mild_cfg = kernels.check_sample_cfg(paramschema.deep_merge(gen, c["images"]["mild"]))
    mild = blur.make_synthetic(splits, {**fresh, "kernels": mild_cfg}, device="cpu", progress=False)
    if len(mild) != n:
        mild = mild.select(range(min(n, len(mild))))
    rng_txt = ", ".join(f"{f} {k} {v}" for f, d in c["images"]["mild"].items() for k, v in d.items())
    rungs.append({"name": "mild, fresh kernel per row", "kernels": "fresh",
                  "design": f"synth_blur.kernels with short kernels only ({rng_txt}), a fresh kernel per row",
                  "rows": mild})
    return rungs


def _image_row(rung: Mapping, rep: Mapping, gates: Sequence[Mapping], verdict: str) -> dict:
    k = rep["kernels"]
    g = {x["name"]: x for x in gates}
    return {
        "rung": rung["name"], "kernels": rung["kernels"], "design": rung["design"], "rows": k["rows"],
        "verdict": verdict,
        "failed": [x["name"] for x in gates if not x["passed"] and x["action"] == "fail"],
        "warned": [x["name"] for x in gates if not x["passed"] and x["action"] != "fail"],
        "metrics": {
            "distinct_kernels": k["distinct"],
            "top_kernel_share": k["top_share"],
            "kernel_effective_share": k.get("effective_share"),
            "kernel_vendi": k["vendi"],
            "kernel_vendi_reference": k.get("vendi_reference"),
            "kernel_vendi_ratio": k.get("vendi_ratio"),
            "orientation_entropy": k["params"]["orientation"]["entropy"],
            "length_entropy": k["params"]["length"]["entropy"],
            "mean_path_length": k["params"]["length"]["mean"],
            "near_duplicate_share": rep["near_duplicates"]["share"],
            "image_vendi_ratio": rep["images"]["ratio"],
            "domain_auc": (rep["realism"].get("domain_auc") or {}).get("auc"),
            "probe_gap": rep["probe"].get("gap"),
            "probe_gap_ci_high": (rep["probe"].get("gap_ci") or [None, None])[1],
        },
        "gates": {n: {"value": x["value"], "passed": x["passed"], "action": x["action"]} for n, x in g.items()},
    }


def run_images(splits, blur_cfg, check_cfg_: Mapping[str, Any] | None = None, cfg: Mapping[str, Any] | None = None,
               progress: bool = False, log=None) -> dict:
    """Build the image rungs and check each one; returns ``{"cfg", "check_cfg", "gates", "rungs": [row]}``."""
    import time

    from shiftlab.synth import diversity

    c = check_cfg(cfg)
    chk = diversity.check_cfg(check_cfg_)
    rungs = image_rungs(splits, blur_cfg, c)
    cache: dict = {}
    rows = []
    for r in rungs:
        t0 = time.perf_counter()
        rep = diversity.run(r["rows"], splits, chk, progress=progress, features_cache=cache)
        gates = diversity.gate(rep, chk)
        row = _image_row(r, rep, gates, diversity.verdict(gates))
        row["seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        if log:
            log(f"ladder images: {r['name']}: {row['verdict'].upper()}"
                + (f" (failed: {', '.join(row['failed'])})" if row["failed"] else "") + f" [{row['seconds']} s]")
    return {"cfg": c, "gates": chk["gates"], "rungs": rows}


# --------------------------------------------------------------------------- audio


def audio_rungs(noise, cfg: Mapping[str, Any] | None = None, default_bank=None, sampling_rate: int = 16000,
                torcs_dir: str | None = None, workers: int = 0) -> list[dict]:
    """The audio rungs' banks: ``[{"name", "sources" (int), "design", "bank" (Dataset), "max_source_share"}]``.

    ``noise``: the prepared noise (its target groups are held out of every bank);
    ``default_bank``: the default bank (``data/synth/mix_bank``), or None to leave that rung out.
    """
    from shiftlab.mixing import bank as bank_mod
    from shiftlab.train import sweep

    c = check_cfg(cfg)
    a = c["audio"]
    seed = c["seed"]
    held = bank_mod._held_groups(noise)
    tdir = torcs_dir or bank_mod.TORCS_DIR
    pts = sweep.points({"cars": list(sweep.CARS), "points": a["cars"], "seconds": a["seconds"],
                        "seconds_per_drive": a["seconds_per_drive"]})
    out = []
    for p in pts:
        b = bank_mod.from_torcs(p["cars"], p["drives_per_car"], p["seconds_per_drive"], sampling_rate, seed, tdir,
                                held_out=held, workers=workers, where=f"{_KEY}.audio")
        out.append({"name": f"{p['n_cars']} car{'s' if p['n_cars'] > 1 else ''}", "sources": p["n_cars"],
                    "design": f"{p['n_cars']} TORCS car(s) x {p['drives_per_car']} drive(s) x "
                              f"{p['seconds_per_drive']:.3g} s = {p['seconds']:.0f} s of noise",
                    "bank": b, "max_source_share": 1.0})
    if default_bank is not None:
        ng = len(set(default_bank["group"]))
        secs = float(bank_mod.audio_arrays(default_bank)[1][-1]) / sampling_rate
        out.append({"name": "default bank", "sources": ng,
                    "design": f"synth_mix.bank: {ng} sources (driven TORCS cars + real recordings), {secs:.0f} s",
                    "bank": default_bank, "max_source_share": None})
    n_all = a["cars"][-1]
    per = a["seconds"] / a["reuse"] / n_all
    b = bank_mod.from_torcs(list(sweep.CARS[:n_all]), 1, per, sampling_rate, seed, tdir, held_out=held,
                            workers=workers, where=f"{_KEY}.audio")
    out.append({"name": f"{n_all} cars, noise reused x{a['reuse']:g}", "sources": n_all,
                "design": f"{n_all} TORCS cars x 1 drive x {per:.3g} s = {per * n_all:.1f} s of noise "
                          f"({a['seconds']:.0f} s / {a['reuse']:g}: the book's one hour under many hours)",
                "bank": b, "max_source_share": 1.0})
    return out


def _audio_row(rung: Mapping, rep: Mapping, gates: Sequence[Mapping], verdict: str) -> dict:
    m = rep["metrics"]
    keys = ("n_sources", "effective_sources_by_use", "largest_source_share", "reuse_ratio", "max_segment_uses",
            "vendi_sources", "vendi_sources_share", "vendi_used_noise", "domain_auc", "noise_domain_auc",
            "probe_gap", "probe_gap_ci_high")
    return {
        "rung": rung["name"], "sources": rung["sources"], "design": rung["design"], "mixes": m["n_mixes"],
        "mixed_seconds": rep["reuse"]["mixed_seconds"], "bank_seconds": rep["reuse"]["bank_seconds"],
        "verdict": verdict,
        "failed": [x["name"] for x in gates if not x["passed"] and x["action"] == "fail"],
        "warned": [x["name"] for x in gates if not x["passed"] and x["action"] != "fail"],
        "metrics": {k: m.get(k) for k in keys},
        "gates": {x["name"]: {"value": x["value"], "passed": x["passed"], "action": x["action"]} for x in gates},
    }


def run_audio(splits, noise, mix_cfg: Mapping[str, Any], check_cfg_: Mapping[str, Any] | None = None,
              cfg: Mapping[str, Any] | None = None, default_bank=None, target_rows=None, target_noise=None,
              progress: bool = False, log=None, workers: int = 0) -> dict:
    """Build the audio rungs, mix the same speech rows with each bank, check each; ``{"cfg", "gates", "rungs"}``."""
    import time

    from shiftlab.mixing import diversity
    from shiftlab.mixing import mix as mix_mod

    c = check_cfg(cfg)
    chk = diversity.check_cfg(check_cfg_)
    mc = mix_mod.check_cfg(mix_cfg)
    sr = int(np.asarray(splits["train"]["sampling_rate"][:1])[0]) if len(splits["train"]) else 16000
    rows = []
    for r in audio_rungs(noise, c, default_bank, sr, workers=workers):
        t0 = time.perf_counter()
        rc = copy.deepcopy(mc)
        rc["device"] = "cpu"
        if r["max_source_share"] is not None:
            rc["bank"]["max_source_share"] = r["max_source_share"]
        syn = mix_mod.make_synthetic(splits, r["bank"], rc, device="cpu", progress=False)
        rep = diversity.run(syn, r["bank"], target_rows, target_noise, chk, progress=progress)
        gates = diversity.gate(rep, chk)
        row = _audio_row(r, rep, gates, diversity.verdict(gates))
        row["seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        if log:
            log(f"ladder audio: {r['name']}: {row['verdict'].upper()}"
                + (f" (failed: {', '.join(row['failed'])})" if row["failed"] else "") + f" [{row['seconds']} s]")
    return {"cfg": c, "gates": chk["gates"], "rungs": rows}


# --------------------------------------------------------------------------- check vs transfer


def _regate_images(stored: Mapping, synthetic, check: Mapping) -> tuple[str, str, list[str]]:
    """(verdict, how, failed) of a stored check_images result under the current gates."""
    from shiftlab.synth import diversity

    rep = copy.deepcopy(dict(stored["report"]))
    how = "stored report, current gates"
    if synthetic is not None and "recipe" in synthetic.column_names:
        recs = [json.loads(r)["kernel"] for r in synthetic["recipe"]]
        rep["kernels"] = diversity.kernel_coverage(recs, list(synthetic["parent"]), {**rep.get("cfg", {}),
                                                                                      "gates": check["gates"]})
        how = "stored report + kernel metrics recomputed from the rows' recipes, current gates"
    elif "vendi_ratio" not in (rep.get("kernels") or {}):
        return str(stored["verdict"]), "stored verdict (its check predates the current gates)", []
    gates = diversity.gate(rep, check)
    return diversity.verdict(gates), how, [g["name"] for g in gates if not g["passed"] and g["action"] == "fail"]


def _regate_audio(stored: Mapping, check: Mapping) -> tuple[str, str, list[str]]:
    from shiftlab.mixing import diversity

    rep = copy.deepcopy(dict(stored["report"]))
    m = rep.setdefault("metrics", {})
    if m.get("vendi_sources_share") is None and m.get("vendi_sources") is not None and m.get("n_sources"):
        m["vendi_sources_share"] = m["vendi_sources"] / m["n_sources"]
    gates = diversity.gate(rep, check)
    return (diversity.verdict(gates), "stored report, current gates",
            [g["name"] for g in gates if not g["passed"] and g["action"] == "fail"])


def _ev(ev: Mapping, variant: str) -> dict:
    k = f"variant/test/{variant}/error"
    d = f"compare/test/{variant}/difference"
    return {"error": ev.get(k), "error_low": ev.get(f"{k}_low"), "error_high": ev.get(f"{k}_high"),
            "difference": ev.get(d), "difference_low": ev.get(f"{d}_low"), "difference_high": ev.get(f"{d}_high"),
            "difference_verdict": ev.get(f"compare/test/{variant}/verdict")}


def transfer(root: str | Path = ".", check_images: Mapping | None = None, check_audio: Mapping | None = None,
             synthetic: Mapping[str, Any] | None = None) -> dict:
    """The check-vs-transfer table from the trained results under ``root`` (module docstring).

    ``check_images`` / ``check_audio``: the current check cfgs; ``synthetic``: optional
    ``{"blur": Dataset, "blur_narrow": Dataset}`` so the image kernel metrics are recomputed.
    Rows: ``scenario``, ``set``, ``design``, ``verdict``, ``how``, ``failed``, test ``error``
    (+ interval), ``difference`` vs nosynth (+ interval); plus the counts.
    """
    from shiftlab import store
    from shiftlab.mixing import diversity as adv
    from shiftlab.synth import diversity as idv

    root = Path(root)
    ci, ca = idv.check_cfg(check_images), adv.check_cfg(check_audio)
    syn = synthetic or {}
    rows = []

    def load(p):
        return store.read_json(root / p, p)

    ev_i = load("metrics/evaluate_images.json")
    if ev_i:
        for variant, name, design, synth in (("narrow", "check_images_narrow", "one kernel (synth_blur_narrow)",
                                              "blur_narrow"),
                                             ("synth", "check_images", "a fresh kernel per row (synth_blur)", "blur")):
            st = load(f"metrics/{name}.json")
            if st is None or ev_i.get(f"variant/test/{variant}/error") is None:
                continue
            v, how, failed = _regate_images(st, syn.get(synth), ci)
            rung = ("1 kernel (its own 9 px kernel at 45 deg)" if variant == "narrow" else "fresh kernel per row")
            rows.append({"scenario": "images", "set": variant, "rung": rung, "design": design, "verdict": v, "how": how,
                         "failed": failed, **_ev(ev_i, variant)})
    ev_a = load("metrics/evaluate_audio.json")
    if ev_a:
        st = load("metrics/check_audio_narrow.json")
        if st is not None and ev_a.get("variant/test/narrow/error") is not None:
            v, how, failed = _regate_audio(st, ca)
            rows.append({"scenario": "audio", "set": "narrow", "rung": "beyond the reused rung (reuse ~640)",
                         "design": "one 1.5 s recording (synth_mix_narrow)",
                         "verdict": v, "how": how, "failed": failed, **_ev(ev_a, "narrow")})
    sw = load("metrics/sweep_cars.json")
    for p in (sw or {}).get("points", []):
        st = load(f"metrics/sweep_cars/{p['name']}/check_audio.json")
        if st is not None:
            v, how, failed = _regate_audio(st, ca)
        else:
            v, how, failed = p["check"]["verdict"], "stored verdict (its check report is not there)", p["check"]["failed"]
        d = p.get("synth_minus_nosynth") or {}
        t = p["test"]["synth"]
        rows.append({"scenario": "audio", "set": f"sweep {p['name']}",
                     "rung": f"{p['n_cars']} car{'s' if p['n_cars'] > 1 else ''}",
                     "design": f"{p['n_cars']} TORCS car(s), {p['seconds']:.0f} s (cars sweep, {d.get('seeds', '?')} seeds)",
                     "verdict": v, "how": how, "failed": failed,
                     "error": t["error"], "error_low": t.get("low"), "error_high": t.get("high"),
                     "difference": d.get("difference"), "difference_low": d.get("low"),
                     "difference_high": d.get("high"), "difference_verdict": d.get("verdict")})
    if ev_a:
        st = load("metrics/check_audio.json")
        if st is not None and ev_a.get("variant/test/synth/error") is not None:
            v, how, failed = _regate_audio(st, ca)
            rows.append({"scenario": "audio", "set": "synth", "rung": "default bank", "design": "the default bank (synth_mix)",
                         "verdict": v, "how": how, "failed": failed, **_ev(ev_a, "synth")})
    for r in rows:
        lo, hi = r.get("difference_low"), r.get("difference_high")
        r["transfer"] = ("worse" if lo is not None and lo > 0 else "better" if hi is not None and hi < 0
                         else "no clear difference")
    fails = [r for r in rows if r["verdict"] == "fail"]
    passes = [r for r in rows if r["verdict"] != "fail"]
    return {
        "rows": rows,
        "fail": len(fails), "fail_worse": sum(r["transfer"] == "worse" for r in fails),
        "fail_better": sum(r["transfer"] == "better" for r in fails),
        "pass": len(passes), "pass_worse": sum(r["transfer"] == "worse" for r in passes),
        "pass_better": sum(r["transfer"] == "better" for r in passes),
    }


def transfer_sentence(t: Mapping) -> str:
    """How often a FAIL went with worse transfer, in words (whatever the data say)."""
    if not t["rows"]:
        return "No trained results to compare with (run the pipeline, and `shiftlab sweep cars --run`)."
    s = (f"Of {t['fail']} set(s) the check FAILs, {t['fail_worse']} transferred worse than training without synthesis "
         f"(the synth - nosynth test-error interval lies above 0), {t['fail_better']} better (interval below 0) and "
         f"{t['fail'] - t['fail_worse'] - t['fail_better']} showed no clear difference; of {t['pass']} set(s) it "
         f"passes (PASS or WARN), {t['pass_worse']} transferred worse and {t['pass_better']} better.")
    if t["fail"] and t["fail_worse"] == 0:
        s += (" So on these runs a FAIL did not predict worse transfer: the check flags the book's trap by design "
              "(how narrow the synthesis is), but the models trained here did not measurably suffer from it "
              "(the intervals are wide, and the test target may not punish the narrow synthesis).")
    return s


# --------------------------------------------------------------------------- markdown and plot


def _f(v, d: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "n/a"
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.{d}f}"
    return str(v)


def _gate_text(gates: Mapping, names: Sequence[str]) -> str:
    out = []
    for n in names:
        g = gates.get(n)
        if g:
            op, thr = ("min", g["min"]) if "min" in g else ("max", g["max"])
            out.append(f"`{n}` {'>=' if op == 'min' else '<='} {thr:g} ({g['action']})")
    return ", ".join(out)


_IMG_COLS = [("kernel_effective_share", "effective kernels / row", 3), ("kernel_vendi", "kernel Vendi", 2),
             ("kernel_vendi_reference", "reference Vendi", 2), ("kernel_vendi_ratio", "Vendi ratio", 3),
             ("distinct_kernels", "distinct", 0), ("top_kernel_share", "top share", 4),
             ("orientation_entropy", "orientation entropy", 3), ("length_entropy", "length entropy", 3),
             ("mean_path_length", "mean path px", 1), ("near_duplicate_share", "near-dup", 3),
             ("domain_auc", "domain AUC", 3), ("probe_gap_ci_high", "probe gap CI high", 3)]
_AUD_COLS = [("n_sources", "sources", 0), ("effective_sources_by_use", "effective sources", 1),
             ("largest_source_share", "largest share", 3), ("reuse_ratio", "reuse s/s", 1),
             ("max_segment_uses", "max uses", 0), ("vendi_sources", "Vendi sources", 2),
             ("vendi_sources_share", "Vendi / sources", 3), ("noise_domain_auc", "noise AUC", 3),
             ("probe_gap", "probe gap", 3), ("probe_gap_ci_high", "probe gap CI high", 3)]


def _ladder_table(res: Mapping, cols) -> list[str]:
    head = ["rung", "verdict", "failed gates"] + [c[1] for c in cols]
    L = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * len(cols)) + "|"]
    for r in res["rungs"]:
        vals = []
        for k, _, d in cols:
            v = r["metrics"].get(k)
            vals.append(_f(int(round(v)) if d == 0 and v is not None else v, d))
        L.append(f"| {r['rung']} | **{r['verdict'].upper()}** | {', '.join(r['failed']) or '-'} | " + " | ".join(vals) + " |")
    return L


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}"


def transfer_markdown(trans: Mapping, level: int = 2) -> list[str]:
    """The check-vs-transfer section (heading at ``level``): each trained synthetic set's check verdict under the
    current gates next to its test error and its difference from nosynth, and :func:`transfer_sentence`."""
    L = [f"{'#' * level} Did a FAIL predict worse transfer?", "",
         "Every trained synthetic set of the default run and of the cars sweep, its check verdict under the "
         "current gates next to its test error and its difference from training without synthesis "
         "(synth - nosynth, percentage points, 95% intervals; seed-paired as in the evaluation).", "",
         "| scenario | set | ladder rung | design | check | failed gates | test error % (95% CI) | vs nosynth, pts (95% CI) | transfer | verdict from |",
         "|---|---|---|---|---|---|---|---|---|---|"]
    for r in trans["rows"]:
        d = r.get("difference")
        L.append(f"| {r['scenario']} | {r['set']} | {r.get('rung', '-')} | {r['design']} | **{r['verdict'].upper()}** | "
                 f"{', '.join(r['failed']) or '-'} | {_pct(r.get('error'))} ({_pct(r.get('error_low'))}-"
                 f"{_pct(r.get('error_high'))}) | {'n/a' if d is None else f'{100 * d:+.1f}'} "
                 f"({_pct(r.get('difference_low'))} to {_pct(r.get('difference_high'))}) | {r['transfer']} | {r['how']} |")
    return L + ["", transfer_sentence(trans), ""]


def markdown(images: Mapping | None, audio: Mapping | None, trans: Mapping | None = None,
             plot_path: str | None = None) -> str:
    """reports/ladder.md: the two ladder tables, the thresholds they set, the check-vs-transfer table."""
    L = ["# Diversity ladder", "",
         "Synthetic sets of graded diversity drawn from the default generator at equal rows, each checked with the "
         "default gates (`shiftlab ladder`; Machine Learning Yearning ch. 40: 20 car designs, ten cars, one hour of "
         "noise are the sets a check must fail, an unlimited generator the set it must pass). The default thresholds "
         "in params.yaml are read off these tables; each gate's comment there names the rungs it separates.", ""]
    if images:
        c = images["cfg"]["images"]
        L += ["## Images", "",
              f"{c['rows']:,} rows per rung: the same sharp parents, one blurred copy each. A k-kernel rung uses k "
              "kernels drawn from `synth_blur.kernels`, dealt to the rows in a seeded order; the mild rung is the "
              f"same sampler with short kernels ({json.dumps(c['mild'])}). Reference Vendi: a fresh kernel per rendered "
              "kernel of the same family and path length (equal n, equal scale).", "",
              "Gates: " + _gate_text(images["gates"], ["kernel_effective_share", "kernel_vendi_ratio",
                                                        "orientation_entropy", "near_duplicate_share",
                                                        "probe_gap_ci_high", "length_entropy", "top_kernel_share",
                                                        "domain_auc"]) + ".", ""]
        L += _ladder_table(images, _IMG_COLS) + [""]
    if audio:
        c = audio["cfg"]["audio"]
        L += ["## Audio", "",
              f"The same speech rows under each bank; the car rungs drive {c['seconds']:.0f} s of noise in total "
              "(cars x drives x seconds, as the cars sweep), the reused rung a "
              f"{c['reuse']:g}th of it.", "",
              "Gates: " + _gate_text(audio["gates"], ["effective_sources_by_use", "largest_source_share",
                                                       "reuse_ratio", "max_segment_uses", "vendi_sources_share",
                                                       "probe_gap_ci_high", "probe_gap", "domain_auc",
                                                       "noise_domain_auc"]) + ".", ""]
        L += _ladder_table(audio, _AUD_COLS) + [""]
    if plot_path:
        L += [f"![ladder]({plot_path})", ""]
    if trans is not None:
        L += transfer_markdown(trans)
    return "\n".join(L) + "\n"


def plot(images: Mapping | None, audio: Mapping | None, path) -> None:
    """reports/ladder.png: the gated scores along each ladder, with their thresholds."""
    import io

    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from shiftlab import store

    panels = []
    if images:
        for k, title in (("kernel_effective_share", "images: effective kernels / row"),
                         ("kernel_vendi_ratio", "images: kernel Vendi / reference")):
            panels.append((images, k, title))
    if audio:
        for k, title in (("effective_sources_by_use", "audio: effective sources"), ("reuse_ratio", "audio: reuse s/s")):
            panels.append((audio, k, title))
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, (res, k, title) in zip(axes[0], panels):
        names = [r["rung"] for r in res["rungs"]]
        vals = [r["metrics"].get(k) for r in res["rungs"]]
        cols = ["tab:red" if r["verdict"] == "fail" else "tab:green" for r in res["rungs"]]
        ax.bar(range(len(names)), [0 if v is None else v for v in vals], color=cols)
        g = res["gates"].get(k)
        if g:
            ax.axhline(g.get("min", g.get("max")), color="k", ls="--", lw=1)
        if k == "reuse_ratio":
            ax.set_yscale("log")
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=40, ha="right", fontsize=7)
        ax.set_title(title + "\n(red: check FAIL; dashed: threshold)", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, metadata={"Software": None})
    plt.close(fig)
    with store.atomic_file(Path(path), "wb") as f:
        f.write(buf.getvalue())
