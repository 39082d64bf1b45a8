"""The book's trap as a curve: test error against the number of distinct cars in the noise bank.

Machine Learning Yearning (ch. 40) warns that synthesizing from a small noise source ("ten cars",
"one hour of car noise") lets a model overfit to it. ``shiftlab sweep cars`` measures that on the
audio scenario with the pipeline itself: each point of the sweep is one ``dvc exp run`` of the audio
chain with a synthesis bank of ``n`` real TORCS cars driven for the **same total seconds** (``n`` x
drives per car x seconds per drive is constant), every other param the default one. Per point it
keeps the audio diversity check (``metrics/check_audio.json``: verdict, sources, Vendi, reuse) and
the evaluation (``metrics/evaluate_audio.json``: test error of each variant with its interval, the
seed-paired synth - nosynth difference with its interval, MDE and verdict), under
``<dir>/<point>/``; :func:`collect` turns the points into one table, :func:`markdown` and
:func:`plot` into the report's section.

The cars are taken in the order of ``sweep_cars.cars`` (nested: the 3-car bank holds the 1-car
bank's car), so a point differs from the next by cars only, never by seconds of noise.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from shiftlab import paramschema
from shiftlab.errors import ShiftlabError

__all__ = ["DEFAULTS", "check_cfg", "points", "exp_args", "collect", "markdown", "plot"]

_KEY = "sweep_cars"

#: the 17 TORCS cars of the default bank (the five target cars are held out), in the sweep's order
CARS = list(paramschema.SWEEP_CARS)

#: the ``sweep_cars`` params section: the fields of :class:`shiftlab.paramschema.SweepCars`
DEFAULTS: dict[str, Any] = paramschema.defaults(paramschema.SweepCars)


def check_cfg(cfg: Mapping[str, Any] | None = None, where: str = _KEY) -> dict[str, Any]:
    """:data:`DEFAULTS` with ``cfg`` over it, validated by :class:`shiftlab.paramschema.SweepCars` (one-line
    errors naming the key)."""
    return paramschema.merge(paramschema.SweepCars, cfg, where)


def points(cfg: Mapping[str, Any]) -> list[dict]:
    """One dict per point: ``name``, ``n_cars``, ``cars``, ``drives_per_car``, ``seconds_per_drive``,
    ``seconds`` (= n x drives x seconds per drive = ``cfg.seconds`` exactly)."""
    c = check_cfg(cfg)
    out = []
    for n in c["points"]:
        drives = max(1, round(c["seconds"] / (n * c["seconds_per_drive"])))
        per = c["seconds"] / (n * drives)
        out.append({"name": f"cars{n}", "n_cars": n, "cars": c["cars"][:n], "drives_per_car": int(drives),
                    "seconds_per_drive": per, "seconds": n * drives * per})
    return out


def exp_args(point: Mapping[str, Any], cfg: Mapping[str, Any]) -> list[str]:
    """``dvc exp run`` arguments of one point (the ``-S`` overrides and the audio stages it reproduces)."""
    c = check_cfg(cfg)
    cars = ",".join(f"'{x}'" for x in point["cars"])  # quoted: a car named 206 must stay a string
    sets = [
        "synth_mix.bank.sources=[torcs]",  # driven TORCS cars only: every point's noise is cars, nothing else
        f"synth_mix.bank.torcs_cars=[{cars}]",
        f"synth_mix.bank.trajectories_per_car={point['drives_per_car']}",
        f"synth_mix.bank.seconds_per_car={point['seconds_per_drive']:.6g}",
        "synth_mix.bank.max_source_share=1.0",  # a 1-car bank must be buildable: no share cap at any point
        f"experiment.variants=[{','.join(c['variants'])}]",
        f"experiment.seeds.audio=[{','.join(map(str, c['seeds']))}]",
    ]
    args = ["exp", "run", "-n", f"sweep-{point['name']}"]
    for s in sets:
        args += ["-S", s]
    return args + ["check_audio@run0", "evaluate@audio"]


# --------------------------------------------------------------------------- results


def _read(path: Path, what: str) -> dict:
    if not path.is_file():
        raise ShiftlabError(f"{path}: no {what} here (run `shiftlab sweep cars --run` first)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ShiftlabError(f"{path}: not valid JSON ({e.msg})") from None


def _gate(gates: Sequence[Mapping], name: str):
    for g in gates:
        if g.get("name") == name:
            return g
    return None


def collect(directory: str | Path, cfg: Mapping[str, Any] | None = None) -> dict:
    """Every point under ``directory`` (``<point>/point.json``, ``check_audio.json``,
    ``evaluate_audio.json``) as one JSON-able table, in the order of ``cfg.points``."""
    c = check_cfg(cfg)
    d = Path(directory)
    rows = []
    for p in points(c):
        base = d / p["name"]
        meta = _read(base / "point.json", "sweep point record")
        chk = _read(base / "check_audio.json", "audio check metrics")
        ev = _read(base / "evaluate_audio.json", "audio evaluation metrics")
        if meta.get("cars") != p["cars"] or not math.isclose(meta.get("seconds", -1), p["seconds"], rel_tol=1e-9):
            raise ShiftlabError(f"{base / 'point.json'}: recorded for other cars or seconds than params sweep_cars "
                                f"now gives ({meta.get('cars')} vs {p['cars']}): rerun the sweep")
        gates = chk.get("gates", [])
        failed = [g["name"] for g in gates if not g.get("passed") and g.get("action") == "fail"]
        warned = [g["name"] for g in gates if not g.get("passed") and g.get("action") != "fail"]

        def val(name):
            g = _gate(gates, name)
            return None if g is None else g.get("value")

        row = {
            **{k: p[k] for k in ("name", "n_cars", "cars", "drives_per_car", "seconds_per_drive", "seconds")},
            "check": {"verdict": chk.get("verdict"), "failed": failed, "warned": warned,
                      "n_sources": val("n_sources"), "vendi_sources": val("vendi_sources"),
                      "largest_source_share": val("largest_source_share"), "reuse_ratio": val("reuse_ratio"),
                      "probe_gap": val("probe_gap"), "noise_domain_auc": val("noise_domain_auc")},
            "test": {},
        }
        for v in c["variants"]:
            k = f"variant/test/{v}/error"
            if k not in ev:
                raise ShiftlabError(f"{base / 'evaluate_audio.json'}: no test error of variant {v}")
            row["test"][v] = {"error": ev[k], "low": ev.get(f"{k}_low"), "high": ev.get(f"{k}_high")}
        cmp_ = "compare/test/synth/"
        if f"{cmp_}difference" in ev:
            row["synth_minus_nosynth"] = {
                "difference": ev[f"{cmp_}difference"], "low": ev.get(f"{cmp_}difference_low"),
                "high": ev.get(f"{cmp_}difference_high"), "mde": ev.get(f"{cmp_}mde"),
                "verdict": ev.get(f"{cmp_}verdict"), "seeds": ev.get(f"{cmp_}seeds"), "groups": ev.get(f"{cmp_}groups"),
            }
        rows.append(row)
    return {"cfg": c, "points": rows, "predicted_worse_by_check": _agreement(rows)}


def _agreement(rows: Sequence[Mapping]) -> dict:
    """Did the check's FAIL go with a higher synth test error than every passing bank's?"""
    failing = [r for r in rows if r["check"]["failed"]]
    passing = [r for r in rows if not r["check"]["failed"]]
    if not failing or not passing:
        return {"comparable": False, "text": ("every bank " + ("fails" if failing else "passes")
                                              + " the check: nothing to compare")}
    best_pass = min(r["test"]["synth"]["error"] for r in passing)
    hits = [r["name"] for r in failing if r["test"]["synth"]["error"] > best_pass]
    return {"comparable": True, "failing": [r["name"] for r in failing], "passing": [r["name"] for r in passing],
            "failing_worse_than_best_passing": hits,
            "text": (f"{len(hits)} of {len(failing)} failing banks have a higher synth test error than the best "
                     f"passing bank (point estimates; see the intervals)")}


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _pts(x) -> str:
    return "n/a" if x is None else f"{100 * x:+.1f}"


def _num(x, digits: int) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def markdown(result: Mapping, plot_name: str | None = None) -> str:
    """The sweep as a markdown section (every number from :func:`collect`)."""
    c = result["cfg"]
    rows = result["points"]
    out = ["# The book's trap as a curve: distinct cars in the noise bank", "",
           f"Each point is one `dvc exp run` of the audio chain (`shiftlab sweep cars --run`) whose synthesis bank "
           f"holds the first n of {len(c['cars'])} real TORCS cars, driven for the same {c['seconds']:g} s of "
           f"noise in total; every other param is the default run's. Test error over the default audio seeds, "
           f"intervals as in the evaluation (seeds and speakers random).", ""]
    if plot_name:
        out += [f"![test error against cars in the bank]({plot_name})", ""]
    out.append("| cars | drives x s per car | check | failed gates | sources | Vendi | synth test error (CI) | "
               "nosynth test error | synth - nosynth (CI) | MDE | verdict |")
    out.append("|---:|---|---|---|---:|---:|---|---|---|---:|---|")
    for r in rows:
        s = r["test"]["synth"]
        n = r["test"].get("nosynth")
        d = r.get("synth_minus_nosynth") or {}
        ch = r["check"]
        out.append(
            f"| {r['n_cars']} | {r['drives_per_car']} x {r['seconds_per_drive']:.3g} | {ch['verdict']} | "
            f"{', '.join(ch['failed']) or '-'} | {ch['n_sources'] if ch['n_sources'] is not None else 'n/a'} | "
            f"{_num(ch['vendi_sources'], 1)} | "
            f"{_pct(s['error'])} ({_pct(s['low'])} to {_pct(s['high'])}) | "
            f"{_pct(n['error']) if n else 'n/a'} | "
            f"{_pts(d.get('difference'))} ({_pts(d.get('low'))} to {_pts(d.get('high'))}) | "
            f"{_num(None if d.get('mde') is None else 100 * d['mde'], 1)} | {d.get('verdict', 'n/a')} |")
    out += ["", f"Did a FAIL of the check predict worse transfer? {result['predicted_worse_by_check']['text']}.", ""]
    return "\n".join(out)


def plot(result: Mapping, path: str | Path) -> Path:
    """Synth test error (with interval) against cars in the bank; nosynth as a reference band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["points"]
    x = [r["n_cars"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for v, color in (("synth", "tab:blue"), ("nosynth", "tab:gray")):
        if not all(v in r["test"] for r in rows):
            continue
        y = [100 * r["test"][v]["error"] for r in rows]
        lo = [100 * (r["test"][v]["error"] - (r["test"][v]["low"] if r["test"][v]["low"] is not None else r["test"][v]["error"])) for r in rows]
        hi = [100 * ((r["test"][v]["high"] if r["test"][v]["high"] is not None else r["test"][v]["error"]) - r["test"][v]["error"]) for r in rows]
        ax.errorbar(x, y, yerr=[lo, hi], marker="o", capsize=3, color=color, label=f"{v} (95% CI)")
    for r in rows:
        if r["check"]["failed"]:
            ax.annotate("check FAIL", (r["n_cars"], 100 * r["test"]["synth"]["error"]), textcoords="offset points",
                        xytext=(4, 6), fontsize=7, color="tab:red")
    ax.set_xscale("log")
    ax.set_xticks(x)
    ax.set_xticklabels([str(n) for n in x])
    ax.set_xlabel(f"distinct cars in the bank (same {result['cfg']['seconds']:g} s of noise)")
    ax.set_ylabel("test error (%)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    from shiftlab import store

    with store.atomic_file(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return path
