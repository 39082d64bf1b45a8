"""``shiftlab report``: one page (markdown + self-contained HTML) per pipeline run.

:func:`build` reads what the pipeline left under ``root`` and writes ``report.md``,
``report.html`` and the PNGs they show into ``out_dir``. It computes no new statistics:
every number printed is read from an input file (or counted from a dataset), formatted as
a percentage with one decimal (errors) or points (differences), like
:mod:`shiftlab.train.evaluate`. A missing input is reported as "not run" for the part
that needs it; it is never an error and never replaced by a guess.

Inputs (paths relative to ``root``; ``<sc>`` = scenario ``images`` | ``audio``)

* ``params.yaml`` (:func:`shiftlab.config.load`): data settings stated in the text;
* ``metrics/split_<sc>.json`` (:func:`shiftlab.datasets.splits.report`): rows per split x
  domain x origin, groups per split;
* ``data/splits/<sc>`` and the synthetic rows ``data/synth/blur``, ``data/synth/blur_narrow``
  (images) / ``data/synth/mix``, ``data/synth/mix_narrow`` (audio): synthetic row counts per
  split (a synthetic row joins its parent's split) and the example grids;
* ``metrics/check_<sc>.json``, ``metrics/check_<sc>_narrow.json``: ``{"verdict", "gates",
  "report"}`` of the diversity checks (gate dicts of ``synth.diversity.gate`` /
  ``mixing.diversity.gate``); their PNGs in ``reports/check_<name>/``;
* ``eval/<sc>/results.json`` (``shiftlab evaluate``): ``{"scenario", "label_names",
  "primary_split", "splits", "runs": {variant: {seed: evaluate() result}}, "variants":
  {split: {variant: evaluate.variant_error() result}}, "compare": {split: {name:
  evaluate.compare() result}}, "unfit": {variant: [seeds]}, "fit_rule", "optimal_error",
  "optimal_error_proxy"}`` and the
  per-run PNGs of :func:`shiftlab.train.evaluate.plots` in ``eval/<sc>/<variant>_s<seed>/``;
* DVCLive learning curves ``runs/<sc>/<variant>/s<seed>/live/plots/metrics/<split>/error.tsv``
  (columns ``step``, ``error``; step 0 = epoch 1), as logged by the trainer.

Content per scenario: data sizes and what is simulated; test (verdict split) and dev error
per variant with their seeds-and-rows intervals, the seed-paired differences with CI, MDE,
Holm level, verdict among helps / hurts / equivalent / inconclusive and the runs that did
not fit, and a chart; the evaluation-only check splits (audio: "Real-speech check: the
codrivers": rows, speakers, noise sources, per-variant error with interval, verdicts and why
they are inconclusive; ``results.json`` keys ``check_splits`` and ``check``, the noise sources
from the split metrics' ``check``); the MLY decomposition (mean over seeds) as a
table and chart; learning curves; one confusion matrix per variant; example grids (images:
sharp source / synthetic default / synthetic narrow / target frames, same parents in every
column; audio: log-mel spectrograms of clean source / mix default / mix narrow / target).
Then a diversity dashboard: every check's gates and verdict, and per scenario whether the
variant whose check failed transferred worse ("did the diversity flags predict
transfer?"), read from the seed-paired narrow - synth comparison on test.

Output files (all written into a temporary directory that replaces ``out_dir`` in one
rename, :func:`shiftlab.store.atomic_dir`): ``report.md``; ``report.html`` (the same text,
converted by :func:`to_html`, every PNG embedded as a base64 ``data:`` URI, so the file
stands alone); ``<sc>_dev_error.png``, ``<sc>_decomposition.png``,
``<sc>_learning_curves.png``, ``<sc>_confusion_<variant>.png`` (copies of evaluate's),
``<sc>_examples.png``, ``check_<name>_<plot>.png`` (copies of the embedded check plots).
Same inputs and cfg -> byte-identical files (matplotlib Agg, no PNG ``Software``
metadata, no dates; examples chosen by a seeded draw).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from shiftlab import paramschema, seeding, store
from shiftlab.errors import ShiftlabError

__all__ = ["DEFAULTS", "SCENARIOS", "merge_config", "build", "summary_lines", "to_html", "results_block",
           "update_readme"]

_KEY = "report"

#: Defaults of the ``report`` params section (its model: :class:`shiftlab.paramschema.Report`).
DEFAULTS: dict[str, Any] = paramschema.defaults(paramschema.Report)

#: Per scenario: the synthetic datasets and diversity checks of the treatment variants,
#: the check plots worth embedding (others are listed), and the domain words.
SCENARIOS: dict[str, dict[str, Any]] = {
    "images": {
        "synthetic": {"synth": "data/synth/blur", "narrow": "data/synth/blur_narrow"},
        "checks": {"synth": "check_images", "narrow": "check_images_narrow"},
        "embed": ("examples.png", "kernel_params.png", "near_duplicates.png"),
        "split_section": "split_images",
    },
    "audio": {
        "synthetic": {"synth": "data/synth/mix", "narrow": "data/synth/mix_narrow"},
        "checks": {"synth": "check_audio", "narrow": "check_audio_narrow"},
        "embed": ("uses_per_source.png", "coverage.png", "embedding.png"),
        "split_section": "split_audio",
    },
}

_COMPONENTS = ("avoidable_bias", "variance", "data_mismatch", "dev_overfitting")
_COMPONENT_WORDS = {"avoidable_bias": "avoidable bias", "variance": "variance",
                    "data_mismatch": "data mismatch", "dev_overfitting": "dev-test gap"}
_SPLITS = ("train", "train_dev", "dev", "test")
_COLORS = ("#4c72b0", "#dd8452", "#c44e52", "#55a868", "#8172b3", "#937860", "#da8bc3", "#8c8c8c")
_STYLES = ("-", "--", ":", "-.")


# --------------------------------------------------------------------------- config


def merge_config(cfg: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``cfg`` over :data:`DEFAULTS`, validated by :class:`shiftlab.paramschema.Report` (every key, its
    range and default are there); a bad key or value is a one-line ShiftlabError."""
    return paramschema.merge(paramschema.Report, cfg, _KEY)


# --------------------------------------------------------------------------- formatting


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _pts(x) -> str:
    return "n/a" if x is None else f"{100 * x:+.1f} pts"


def _ci_pct(d: Mapping) -> str:
    return "n/a" if d.get("low") is None else f"[{_pct(d['low'])}, {_pct(d['high'])}]"


def _ci_pts(d: Mapping) -> str:
    return "n/a" if d.get("low") is None else f"{_pts(d['low'])} to {_pts(d['high'])}"


def _num(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    f = float(v)
    if not math.isfinite(f):
        return "n/a"
    if isinstance(v, (int, np.integer)) or (f.is_integer() and abs(f) >= 1):
        return f"{int(f):,}"
    return f"{f:,.3f}" if abs(f) < 1000 else f"{f:,.1f}"


def _table(header, rows, align=None) -> list[str]:
    align = align or ["l"] + ["r"] * (len(header) - 1)
    rule = "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"
    out = ["| " + " | ".join(str(h) for h in header) + " |", rule]
    out += ["| " + " | ".join("" if v is None else str(v).replace("|", "\\|") for v in r) + " |" for r in rows]
    return out


def _seed_order(s) -> tuple:
    s = str(s)
    return (0, int(s), "") if s.isdigit() else (1, 0, s)


# --------------------------------------------------------------------------- inputs


def _json(root: Path, rel: str):
    """The parsed file, or None when it does not exist; bad JSON is a one-line error."""
    return store.read_json(root / rel, rel)


def _load_ds(root: Path, rel: str):
    p = root / rel
    if not p.exists():
        return None
    return store.load(p, "dataset", "written by the pipeline")


def _cols(ds, names) -> dict[str, np.ndarray]:
    """Metadata columns as numpy arrays without decoding images/audio."""
    if len(ds) == 0:
        return {n: np.array([], dtype=object) for n in names}
    t = ds.select_columns(list(names)).with_format("arrow")[:]
    return {n: t.column(n).to_numpy(zero_copy_only=False) for n in names}


def _structure(rel: str, e: Exception) -> ShiftlabError:
    what = f"missing key {e}" if isinstance(e, KeyError) else str(e).splitlines()[0] if str(e) else type(e).__name__
    return ShiftlabError(f"{rel}: unexpected structure ({what})")


# --------------------------------------------------------------------------- figures


def _figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h))
    FigureCanvasAgg(fig)
    return fig


def _png(fig, dpi: int) -> bytes:
    import matplotlib

    buf = io.BytesIO()
    with matplotlib.rc_context({"svg.hashsalt": "shiftlab", "path.simplify": True}):
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()


class _Doc:
    """Markdown lines plus the files (name -> bytes) they reference."""

    def __init__(self):
        self.lines: list[str] = []
        self.files: dict[str, bytes] = {}

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)

    def image(self, name: str, data: bytes, alt: str) -> None:
        self.files[name] = data
        self.lines += [f"![{alt}]({name})", ""]

    def text(self) -> str:
        text = "\n".join(self.lines).rstrip("\n") + "\n"
        return re.sub(r"\n{3,}", "\n\n", text)


# --------------------------------------------------------------------------- scenario state


class _Scenario:
    """Everything read for one scenario (None where an input is missing)."""

    def __init__(self, root: Path, name: str, cfg: dict, params: dict | None):
        spec = SCENARIOS[name]
        self.name, self.root, self.cfg, self.params = name, root, cfg, params
        self.split_rel = f"metrics/split_{name}.json"
        self.split_metrics = _json(root, self.split_rel)
        self.results_rel = f"eval/{name}/results.json"
        self.results = _json(root, self.results_rel)
        self.check_rel = {v: f"metrics/{c}.json" for v, c in spec["checks"].items()}
        self.checks = {v: _json(root, rel) for v, rel in self.check_rel.items()}
        self.splits_rel = f"data/splits/{name}"
        self.synth_rel = dict(spec["synthetic"])
        self._splits = self._synth = None
        if self.results is not None and not isinstance(self.results, Mapping):
            raise ShiftlabError(f"{self.results_rel}: must be a JSON object")
        for v, c in self.checks.items():
            if c is not None and not isinstance(c, Mapping):
                raise ShiftlabError(f"{self.check_rel[v]}: must be a JSON object")

    # lazily opened datasets
    def splits(self):
        if self._splits is None:
            self._splits = _load_ds(self.root, self.splits_rel) or False
        return self._splits or None

    def synthetic(self, variant: str):
        if self._synth is None:
            self._synth = {v: (_load_ds(self.root, rel) or False) for v, rel in self.synth_rel.items()}
        return self._synth.get(variant) or None

    def variants(self) -> list[str]:
        """Variants in display order: cfg order, then any others found in the results, sorted."""
        found = set()
        if self.results:
            found |= set(self.results.get("runs", {}) or {})
            for by_var in (self.results.get("variants") or {}).values():
                found |= set(by_var or {})
        order = [v for v in self.cfg["variants"] if v in found]
        return order + sorted(found - set(order))

    def comparisons(self, split: str | None = None) -> dict[str, dict]:
        """The comparisons of ``split`` (default: the verdict split), by name."""
        if not self.results:
            return {}
        comp = self.results.get("compare") or {}
        return dict(comp.get(split or self.split_name(), {}) or {})

    def pooled(self, split: str | None = None) -> dict[str, dict]:
        """Per-variant error over seeds (evaluate.variant_error) on ``split`` (default: verdict split)."""
        if not self.results:
            return {}
        return dict((self.results.get("variants") or {}).get(split or self.split_name(), {}) or {})

    def split_name(self) -> str:
        """The split verdicts are read on (test: no choice touched it)."""
        return str((self.results or {}).get("primary_split", "test"))

    def other_splits(self) -> list[str]:
        return [s for s in (self.results or {}).get("splits", []) if s != self.split_name()]

    def unfit(self) -> dict[str, list[str]]:
        return dict((self.results or {}).get("unfit") or {})


# --------------------------------------------------------------------------- sections


def _not_run(doc: _Doc, what: str, missing: str) -> None:
    doc.add(f"*{what}: not run* (no `{missing}`).", "")


def _data_section(doc: _Doc, sc: _Scenario) -> None:
    doc.add("### Data", "")
    doc.add(_what_is_simulated(sc), "")
    m = sc.split_metrics
    synth_counts: dict[str, dict[str, int]] = {}
    synth_missing = []
    for v, rel in sc.synth_rel.items():
        ds = sc.synthetic(v)
        if ds is None:
            synth_missing.append(f"`{rel}`")
            continue
        synth_counts[v] = _synthetic_per_split(ds, sc)
    if m is None:
        _not_run(doc, "split sizes", sc.split_rel)
    else:
        try:
            counts = m["counts"]
            splits = list(m["rows"])
            kinds = []
            for dom in ("source", "target"):
                for org in ("real", "synthetic"):
                    if any(sum(counts[s][dom][org].values()) for s in splits):
                        kinds.append((dom, org))
            header = ["split"] + [f"{d} / {o}" for d, o in kinds] + ["rows", "groups"]
            header += [f"+ {v} synthetic rows" for v in synth_counts]
            rows = []
            tot = {k: 0 for k in kinds}
            tot_syn = {v: 0 for v in synth_counts}
            for s in splits:
                r = [s]
                for k in kinds:
                    n = int(sum(counts[s][k[0]][k[1]].values()))
                    tot[k] += n
                    r.append(f"{n:,}")
                r += [f"{int(m['rows'][s]):,}", f"{int(m['groups'][s]):,}"]
                for v, per in synth_counts.items():
                    n = int(per.get(s, 0))
                    tot_syn[v] += n
                    r.append(f"{n:,}")
                rows.append(r)
            rows.append(["**total**"] + [f"{tot[k]:,}" for k in kinds] + [f"{int(m['total_rows']):,}", ""]
                        + [f"{tot_syn[v]:,}" for v in synth_counts])
            doc.add(*_table(header, rows), "")
            labels = m.get("labels") or []
            checks = [str(k) for k in (m.get("check") or {})]
            doc.add(f"{len(labels)} labels. dev and test hold target rows only; groups never cross "
                    "train+train_dev / dev / test (`" + sc.split_rel + "`)."
                    + (f" {', '.join(checks)}: evaluation only (real target rows, groups of their own; never trained "
                       "on), reported in the real-speech check below." if checks else ""), "")
        except (KeyError, TypeError, AttributeError, ValueError) as e:
            raise _structure(sc.split_rel, e) from None
    extra = [v for v in synth_counts if "unassigned" in synth_counts[v]]
    for v in extra:
        doc.add(f"* {v}: {synth_counts[v]['unassigned']:,} synthetic rows whose parent is in no train/train_dev "
                f"split of `{sc.splits_rel}` (or that dataset is missing).")
    if synth_missing:
        doc.add("* synthetic rows not run: no " + ", ".join(synth_missing))
    if synth_counts or synth_missing:
        doc.add("")
    parts = [f"`{sc.cfg['baseline']}` trains on the real train rows only"]
    for v in sc.synth_rel:
        if v in synth_counts:
            parts.append(f"`{v}` adds the {sum(n for k, n in synth_counts[v].items() if k != 'unassigned'):,} "
                         f"synthetic rows of `{sc.synth_rel[v]}` to their parents' splits")
    doc.add("Variants: " + "; ".join(parts) + ".", "")


def _synthetic_per_split(ds, sc: _Scenario) -> dict[str, int]:
    """Synthetic rows per split of their parent (a DatasetDict counts per key)."""
    if hasattr(ds, "keys") and not hasattr(ds, "column_names"):
        return {str(k): len(ds[k]) for k in ds}
    splits = sc.splits()
    parents = _cols(ds, ["parent"])["parent"].astype(str) if len(ds) else np.array([], dtype=str)
    out: dict[str, int] = {}
    if splits is None:
        if len(parents):
            out["unassigned"] = int(len(parents))
        return out
    where: dict[str, str] = {}
    for s in ("train", "train_dev"):
        if s in splits:
            for i in _cols(splits[s], ["id"])["id"].astype(str):
                where[i] = s
    for p in parents:
        k = where.get(p, "unassigned")
        out[k] = out.get(k, 0) + 1
    return out


def _simulated_rows(sc: _Scenario) -> str:
    """What the dev/test target rows on disk say: how many carry the simulator's recipe record."""
    key = "frames" if sc.name == "images" else "target_mix"
    splits = sc.splits()
    if splits is None:
        return f" (`{sc.splits_rel}` not run, so the rows were not inspected)"
    n = hit = 0
    for s in ("dev", "test"):
        if s in splits and len(splits[s]):
            for r in _cols(splits[s], ["recipe"])["recipe"]:
                n += 1
                try:
                    rec = json.loads(r) if r else {}
                except (TypeError, json.JSONDecodeError):
                    rec = {}
                hit += isinstance(rec, dict) and key in rec
    if not n:
        return f" (`{sc.splits_rel}` has no dev/test rows)"
    return f" In `{sc.splits_rel}`, {hit:,} of the {n:,} dev/test rows carry a `{key}` recipe record (simulated)."


def _tool_versions(sc: _Scenario) -> str:
    """`` (tools: ImageMagick 6.9..., ...)`` from the first dev row's recipe, or ''."""
    splits = sc.splits()
    if splits is None or "dev" not in splits or not len(splits["dev"]):
        return ""
    try:
        rec = json.loads(_cols(splits["dev"].select([0]), ["recipe"])["recipe"][0])
        ver = (rec.get("frames") or {}).get("versions") or {}
    except (TypeError, ValueError, AttributeError):
        return ""
    return (" (versions recorded in every row's recipe: " + ", ".join(f"{k} {v}" for k, v in sorted(ver.items()))
            + ")") if ver else ""


def _calibration_section(doc: _Doc, sc: _Scenario) -> None:
    """Images: what `shiftlab calibrate blur` recommended on target-train, and whether synth_blur uses it."""
    rel = "metrics/calibrate_blur.json"
    cal = _json(sc.root, rel)
    doc.add("### Synthesis ranges calibrated on target-train", "")
    if cal is None:
        _not_run(doc, "the blur calibration", rel)
        return
    try:
        best = cal["recommended"]
        cands = {c["name"]: c for c in cal["candidates"]}
        rec = cands[best]["scores"] if best else None
        par = cal["parents"]["domain_auc"]
        n_tgt = int(cal["target"]["rows"])
        base = cands.get("base")
        desc = cands[best].get("description") if best else None
    except (KeyError, TypeError) as e:
        raise _structure(rel, e) from None
    if rec is None:
        doc.add(f"`shiftlab calibrate blur` found no candidate that passes the fail gates (`{rel}`).", "")
        return
    lo, hi = rec["domain_auc_ci"]
    doc.add(f"`shiftlab calibrate blur` blurred the same {int(cal.get('source_rows', 0)):,} sharp source parents "
            f"with {len(cands)} candidate kernel ranges and scored each against the {n_tgt:,} target rows of "
            "**train** (dev and test are never read) with the realism metrics of `shiftlab check images`. "
            f"Recommended: **{best}** ({desc}): domain AUC {rec['domain_auc']:.3f} (95% CI {lo:.3f}-{hi:.3f}; "
            f"sharp parents {par['auc']:.3f}), Frechet {rec['frechet']:.2f} (sharp parents "
            f"{cal['parents']['frechet']:.2f}), kernel Vendi {rec['kernel_vendi']:.2f}.")
    if base is not None:
        same = best == "base" or base.get("kernels") == cands[best].get("kernels")
        doc.add("")
        doc.add(f"`synth_blur` uses {'these ranges' if same else 'other ranges than the recommendation'} "
                f"(current ranges: domain AUC {base['scores']['domain_auc']:.3f}, Frechet "
                f"{base['scores']['frechet']:.2f}). An AUC well above 0.5 means a classifier still tells the "
                "synthetic rows from the target frames: blur alone does not reproduce the target's sensor noise "
                "and codec artefacts. Every candidate with its gates and the realism/diversity trade-off: "
                "`reports/calibrate_blur.md`.")
    doc.add("")
    png = sc.root / "reports/calibrate_blur.png"
    if png.is_file():
        doc.image("calibrate_blur.png", png.read_bytes(), "realism vs diversity of the calibration candidates")


def _what_is_simulated(sc: _Scenario) -> str:
    return _what_params_say(sc) + _simulated_rows(sc)


def _what_params_say(sc: _Scenario) -> str:
    p = sc.params
    if p is None:
        return "What is simulated: not stated (no `params.yaml`)."
    if sc.name == "images":
        pi = p.get("prepare_images", {})
        kind = pi.get("kind")
        apply = (pi.get("frames") or {}).get("apply", "auto")
        simulated = apply == "on" or (apply == "auto" and kind == "fashion_mnist")
        src = {"fashion_mnist": "sharp Fashion-MNIST training images", "folder": "your source image folder",
               "hub": f"the hub dataset `{(pi.get('hub') or {}).get('id')}` ({(pi.get('hub') or {}).get('source_split')})"}
        tgt = {"fashion_mnist": "the Fashion-MNIST test images", "folder": "your target image folder",
               "hub": f"its {(pi.get('hub') or {}).get('target_split')} split"}
        s = f"Source: {src.get(kind, kind)} (real). Target: {tgt.get(kind, kind)}"
        fr = pi.get("frames") or {}
        if simulated and fr.get("generator", "imagemagick") == "imagemagick":
            im = fr.get("imagemagick") or {}
            codec = im.get("codec", "h264")
            how = {"h264": f"H.264 (libx264 through PyAV, CRF {im.get('crf')}, preset {im.get('preset')}, every "
                           "frame a one-frame intra clip)",
                   "jpeg": f"JPEG (Pillow, quality {im.get('quality')})", "none": "no codec"}.get(codec, codec)
            s += (" passed through a video-frame simulator that shares no code with the synthesis "
                  "(`datasets/videotarget.py`): ImageMagick's motion blur as MNIST-C applies it (Mu & Gilmer 2019; "
                  f"severity {im.get('severity')}, angle {im.get('angle')} degrees drawn per frame), sensor noise "
                  f"(shot noise at {(im.get('noise') or {}).get('photons')} photo-electrons, read noise "
                  f"{(im.get('noise') or {}).get('read_noise')} grey levels), then lossy compression by {how}"
                  f"{_tool_versions(sc)} -- the target is simulated, by other tools than the synthesis.")
        elif simulated:
            s += (" passed through the simulated video-frame degradation of `synth/frames.py` (camera shake unlike "
                  f"the synthesis: anxiety {fr.get('shake', {}).get('anxiety')}, defocus sigma "
                  f"{fr.get('defocus_sigma')} px, shot noise at {fr.get('photons')} photons, read noise "
                  f"{fr.get('read_noise')} grey levels) -- the target is simulated, by the synthesis's own kernel "
                  "code (a gain measured on it overstates transfer).")
        else:
            s += " as given (real frames, no simulation)."
        sb = p.get("synth_blur")
        if sb:
            fam = (sb.get("kernels") or {}).get("families")
            s += (f" Synthesis (`synth`): motion blur of the sharp train/train_dev source images, families {fam}, "
                  f"{sb.get('copies')} cop{'y' if sb.get('copies') == 1 else 'ies'} per chosen image, "
                  f"fraction {sb.get('fraction')}.")
        nb = p.get("synth_blur_narrow")
        if nb:
            lin = (nb.get("kernels") or {}).get("linear") or {}
            s += (f" `narrow`: deliberately low diversity (linear length {lin.get('length')}, angle "
                  f"{lin.get('angle')}).")
        return s
    ps, pn, tm = p.get("prepare_speech", {}), p.get("prepare_noise", {}), p.get("target_mix", {}) or {}
    if ps.get("source") == "tts":
        tts = ps.get("tts") or {}
        src = (f"TTS speech (synthetic: {tts.get('espeak_voices')} espeak-ng voices + flite "
               f"{', '.join(tts.get('flite_voices') or []) or 'none'}), clean")
    else:
        src = "your source speech folder"
    noise = ", ".join(pn.get("target_recordings") or [])
    if tm.get("speech", "tts") == "tts":
        tt = tm.get("tts") or {}
        tgt = (f"synthetic speech from voices the source never uses (espeak-ng variants: "
               f"{tt.get('espeak_variants')}, flite {', '.join(tt.get('flite_voices') or []) or 'none'}, festival "
               f"{', '.join(tt.get('festival_voices') or []) or 'none'}; {tt.get('takes')} takes per word)")
        kind = ("real noise, synthetic voices: both sides are TTS, so the mismatch the synthesis can close (car "
                "noise) is isolated")
    elif ps.get("target") == "real":
        tgt = "real human speech (" + ", ".join((ps.get("real") or {}).get("speakers") or []) + ")"
        kind = "real ingredients, simulated combination"
    else:
        tgt = "your target speech folder"
        kind = "your speech, simulated combination"
    drives = tm.get("torcs_drives")
    s = (f"Source: {src}. Target: {tgt}, mixed (`mixing/target.py`) with held-out real vehicle recordings ({noise}"
         f"{f'; each TORCS car driven {drives} times through seeded RPM trajectories' if drives else ''}) at the "
         f"target's own SNR prior {tm.get('target_snr_db')} dB: {kind}.")
    sm = p.get("synth_mix")
    if isinstance(sm, Mapping):
        bank = sm.get("bank") or {}
        srcs = bank.get("sources") or []
        what = []
        if "torcs" in srcs:
            what.append(f"real TORCS engine loops driven through {bank.get('trajectories_per_car')} seeded RPM "
                        f"trajectories per car (cars {bank.get('torcs_cars')}, never the held-out ones)")
        if "real" in srcs:
            what.append(f"real recordings {bank.get('recordings')}")
        if "virtual" in srcs:
            what.append(f"{bank.get('n_cars')} virtual cars (`mixing/cars.py`)")
        if "folder" in srcs:
            what.append(f"your noise folder {bank.get('folder')}")
        s += (f" Synthesis (`synth`): clean source speech mixed with noise from the synthesis bank ("
              f"{'; '.join(what) or srcs}), SNR {sm.get('snr_db')} dB.")
    else:
        s += (" Synthesis (`synth`): clean source speech mixed with other recordings "
              f"({', '.join(pn.get('recordings') or [])}).")
    nm = p.get("synth_mix_narrow")
    if isinstance(nm, Mapping):
        s += f" `narrow`: noise from {((nm.get('bank') or {}).get('recordings'))} only."
    return s


def _dev_error_section(doc: _Doc, sc: _Scenario) -> None:
    split = sc.split_name()
    doc.add("### Does the synthesis help? (verdicts on test)", "")
    if sc.results is None:
        _not_run(doc, "verdicts", sc.results_rel)
        return
    try:
        comps = sc.comparisons()
        pooled = sc.pooled()
        others = sc.other_splits()
        if not comps:
            doc.add(f"*comparison: not run* (`{sc.results_rel}` has no `compare` entry).", "")
            return
        first = next(iter(comps.values()))
        pct = int(round(100 * first["ci"]))
        unit = (f"{first['rows']:,} {split} rows" + (f" in {first['groups']:,} groups" if first.get("groups") else ""))
        doc.add(f"Error on the {unit}, mean over seeds, with its {pct}% interval over seeds and "
                + ("groups" if first["unit"] == "groups" else "rows") + "; dev (where checkpoints were chosen) "
                "beside it for reference.", "")
        rows = []
        for v in sc.variants():
            d = pooled.get(v)
            if d is None:
                rows.append([v, "", "not run", "", "", "", ""])
                continue
            cells = [v, d["n_seeds"], _pct(d["error"]), _ci_pct(d)]
            for o in others:
                e = sc.pooled(o).get(v)
                cells += ["-", "-"] if e is None else [_pct(e["error"]), _ci_pct(e)]
            cells.append(", ".join(f"s{s}: {_pct(x)}" for s, x in sorted(d["per_seed"].items(),
                                                                       key=lambda kv: _seed_order(kv[0]))))
            rows.append(cells)
        head = ["variant", "seeds", f"{split} error", f"{pct}% CI"]
        for o in others:
            head += [f"{o} error", f"{o} {pct}% CI"]
        head.append(f"{split} per seed")
        doc.add(*_table(head, rows, ["l", "r"] + ["r"] * (len(head) - 3) + ["l"]), "")
        drows = []
        for t in _ordered(comps, sc):
            c = comps[t]
            d = c["difference"]
            cells = [f"{c['treatment']} - {c['baseline']}", _pts(d["value"]), _ci_pts(d), _pts(c["mde"]).lstrip("+"),
                     f"{c['holm']['level']:.4f}" if c.get("holm") else "-", f"**{c['verdict']}**",
                     f"{c['n_seeds']} / {c['rows']:,} / " + ("-" if c["groups"] is None else f"{c['groups']:,}")]
            for o in others:
                e = sc.comparisons(o).get(t)
                cells.append("-" if e is None else f"{_pts(e['difference']['value'])} ({_ci_pts(e['difference'])})")
            cells.append(", ".join(c.get("unfit_runs") or []) or "-")
            drows.append(cells)
        head = ["difference", split, f"{pct}% CI", f"MDE ({int(round(100 * first['power']))}% power)", "Holm level",
                "verdict", "seeds / rows / groups"] + [f"{o} (reference)" for o in others] + ["runs that did not fit"]
        doc.add(*_table(head, drows, ["l", "r", "r", "r", "r", "l", "r"] + ["r"] * len(others) + ["l"]), "")
        for t in _ordered(comps, sc):
            c = comps[t]
            doc.add(f"* {c['text']}" + ("" if c["reason"] in c["text"] else f" ({c['reason']})"))
        unfit = sc.unfit()
        rule = (sc.results.get("fit_rule") or {}).get("text", "")
        doc.add(f"* runs that did not fit ({rule}): "
                + (", ".join(f"{v} s{s}" for v, ss in unfit.items() for s in ss) or "none") + ".")
        notes = sorted({n for c in comps.values() for n in c.get("notes", [])})
        doc.add(*[f"* note: {n}" for n in notes])
        doc.add("")
        doc.add(f"How to read it. Variants trained with the same seed share their initial weights and the order in "
                f"which real rows are drawn, so the per-seed difference cancels most seed-to-seed noise. "
                f"{first['method'][0].upper() + first['method'][1:]}: the interval covers both the seeds and the "
                f"sampling of the {split} rows (a simulation in the tests checks its coverage at 3, 5 and 10 seeds). "
                f"A difference *helps* / *hurts* when its p-value is at or below its Holm level (the "
                f"{len(comps)} comparisons share one {100 - pct}% family-wise error); *equivalent* when two one-sided "
                f"tests at that level put it within +-{_pts(first['min_effect']).lstrip('+')} (evaluate.min_effect); "
                f"*inconclusive* otherwise, and always when the split has fewer independent groups than "
                f"evaluate.min_groups. The MDE is the smallest true difference this design detects with "
                f"{int(round(100 * first['power']))}% power: an *inconclusive* verdict with a large MDE means the "
                f"experiment could not have seen a smaller effect, not that there is none. Verdicts are read on "
                f"{split}, which no choice touched; checkpoints were chosen on dev, so dev errors are optimistic.", "")
        doc.image(f"{sc.name}_dev_error.png", _dev_error_png(sc, comps, pooled), f"{sc.name}: {split} error per variant")
    except (KeyError, TypeError, AttributeError, ValueError, StopIteration) as e:
        raise _structure(sc.results_rel, e) from None


def _ordered(comps: Mapping, sc: _Scenario) -> list[str]:
    order = [v for v in sc.cfg["variants"] if v in comps]
    return order + sorted(set(comps) - set(order))


def _dev_error_png(sc: _Scenario, comps, pooled) -> bytes:
    variants = [v for v in sc.variants() if v in pooled]
    fig = _figure(10, 4)
    ax1, ax2 = fig.subplots(1, 2)
    for i, v in enumerate(variants):
        d = pooled[v]
        col = _COLORS[i % len(_COLORS)]
        ax1.errorbar([i], [100 * d["error"]], yerr=[[100 * (d["error"] - d["low"])], [100 * (d["high"] - d["error"])]],
                     fmt="o", color=col, capsize=6, ms=8, lw=2)
        seeds = sorted(d["per_seed"].items(), key=lambda kv: _seed_order(kv[0]))
        xs = i + 0.18 + 0.04 * np.arange(len(seeds))
        ax1.scatter(xs, [100 * x for _, x in seeds], s=14, color=col, alpha=0.6, marker="x")
    ax1.set_xticks(range(len(variants)), variants)
    ax1.set_xlim(-0.5, len(variants) - 0.3)
    ax1.set_ylabel(f"{sc.split_name()} error (%)")
    ax1.set_title("mean over seeds (CI), seeds (x)", fontsize=10)
    names = _ordered(comps, sc)
    for i, t in enumerate(names):
        c = comps[t]
        d = c["difference"]
        col = {"helps": "#55a868", "hurts": "#c44e52", "equivalent": "#4c72b0"}.get(c["verdict"], "#8c8c8c")
        ax2.errorbar([i], [100 * d["value"]], yerr=[[100 * (d["value"] - d["low"])], [100 * (d["high"] - d["value"])]],
                     fmt="s", color=col, capsize=6, ms=8, lw=2)
        ax2.annotate(c["verdict"], (i, 100 * d["high"]), textcoords="offset points", xytext=(0, 9), ha="center",
                     fontsize=8, color=col)
    ax2.axhline(0, color="k", lw=0.8)
    ax2.set_xticks(range(len(names)), [f"{comps[t]['treatment']} - {comps[t]['baseline']}" for t in names])
    ax2.set_xlim(-0.6, len(names) - 0.4)
    ax2.set_ylabel("difference (points of error)")
    ax2.set_title("seed-paired difference (CI) and verdict", fontsize=10)
    fig.suptitle(f"{sc.name}", fontsize=11)
    return _png(fig, sc.cfg["dpi"])


_CHECK_TITLES = {"codrivers": "Real-speech check: the codrivers"}


def _check_sets_section(doc: _Doc, sc: _Scenario, *, only_present: bool = False) -> None:
    """The evaluation-only check splits (e.g. ``codrivers``): rows, speakers, noise sources, per-variant
    error with its interval, the seed-paired verdicts and why they are inconclusive. Every number is read
    from ``eval/<sc>/results.json`` (``check_splits``, ``check``, ``variants``, ``compare``) and
    ``metrics/split_<sc>.json`` (``check``: group names, noise sources). ``only_present``: write nothing
    when the results have no check split (README's block)."""
    present = list((sc.results or {}).get("check_splits") or []) if isinstance(sc.results, Mapping) else []
    if only_present and not present:
        return
    if not present:
        doc.add(f"### {_CHECK_TITLES['codrivers']}", "")
        if sc.results is None:
            _not_run(doc, "the codriver check", sc.results_rel)
        else:
            doc.add(f"*the codriver check: not run* (`{sc.results_rel}` has no `codrivers` split: "
                    "`target_mix.codrivers` or `split_audio.check_sets` is off, or the runs predate it).", "")
        return
    try:
        for cs in present:
            info = sc.results["check"][cs]
            doc.add(f"### {_CHECK_TITLES.get(cs, f'Check set: {cs}')}", "")
            groups = [str(g) for g in info["groups"]]
            split_check = ((sc.split_metrics or {}).get("check") or {}).get(cs) if isinstance(
                sc.split_metrics, Mapping) else None
            noise = list((split_check or {}).get("noise_groups") or [])
            noise_txt = (f"{len(noise)} held-out vehicle recordings ({', '.join(noise)}; never in a synthesis bank)"
                         if noise else f"held-out noise (its sources are not recorded in `{sc.split_rel}`)")
            doc.add(f"`{cs}`: {int(info['rows']):,} real recordings of {len(groups)} speakers "
                    f"({', '.join(groups)}) mixed with {noise_txt} exactly as the target is, with draws of their "
                    "own. Evaluation only: never trained on, never synthesised from, never used to choose a "
                    "checkpoint; every run's selected checkpoint is scored on it, and it is reported here apart "
                    "from the verdicts on test.", "")
            pooled = sc.pooled(cs)
            comps = sc.comparisons(cs)
            level = next((c["ci"] for c in comps.values()), None) or (sc.results.get("config") or {}).get("ci")
            rows = []
            for v in sc.variants():
                d = pooled.get(v)
                if d is None:
                    continue
                rows.append([v, d["n_seeds"], _pct(d["error"]), _ci_pct(d),
                             "speakers" if d.get("unit") == "groups" else "rows",
                             ", ".join(f"s{k}: {_pct(x)}" for k, x in sorted(d["per_seed"].items(),
                                                                           key=lambda kv: _seed_order(kv[0])))])
            ci_head = f"{int(round(100 * level))}% CI" if level else "CI"
            if rows:
                doc.add(*_table(["variant", "seeds", f"{cs} error", ci_head, "interval over", f"{cs} per seed"],
                                rows, ["l", "r", "r", "r", "l", "l"]), "")
            drows = []
            for t in _ordered(comps, sc):
                c = comps[t]
                d = c["difference"]
                drows.append([f"{c['treatment']} - {c['baseline']}", _pts(d["value"]), _ci_pts(d),
                              _pts(c["mde"]).lstrip("+"), f"**{c['verdict']}**", c["reason"],
                              f"{c['n_seeds']} / {c['rows']:,} / " + ("-" if c["groups"] is None else f"{c['groups']:,}")])
            if drows:
                doc.add(*_table(["difference", cs, ci_head, "MDE", "verdict", "reason", "seeds / rows / speakers"],
                                drows, ["l", "r", "r", "r", "l", "l", "r"]), "")
            notes = sorted({n for d in pooled.values() for n in ([d["note"]] if d.get("note") else [])})
            doc.add(*[f"* note: {n}" for n in notes])
            why = info.get("why_inconclusive")
            if why:
                doc.add("", f"Why the verdicts are inconclusive: {why}")
            doc.add("")
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise _structure(sc.results_rel, e) from None


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return float(np.mean(xs)) if xs else None


def _decomposition_section(doc: _Doc, sc: _Scenario) -> None:
    doc.add("### Error decomposition (MLY ch. 40-41)", "")
    if sc.results is None:
        _not_run(doc, "decomposition", sc.results_rel)
        return
    try:
        runs = sc.results.get("runs") or {}
        if not runs:
            doc.add(f"*decomposition: not run* (`{sc.results_rel}` has no runs).", "")
            return
        header = ["variant", "seeds"] + [f"{s} error" for s in _SPLITS] + [_COMPONENT_WORDS[k] for k in _COMPONENTS] \
            + ["diagnosis per seed"]
        rows, means = [], {}
        opt = None
        for v in sc.variants():
            seeds = sorted(runs.get(v, {}), key=_seed_order)
            if not seeds:
                continue
            res = [runs[v][s] for s in seeds]
            opt = res[0].get("optimal_error", opt)
            errs = [_mean([r["splits"].get(s, {}).get("error") for r in res]) for s in _SPLITS]
            comp = {k: _mean([r["decomposition"][k]["value"] for r in res]) for k in _COMPONENTS}
            per = {k: [r["decomposition"][k]["value"] for r in res] for k in _COMPONENTS}
            means[v] = (comp, per)
            diag = "; ".join(f"s{s}: {r['diagnosis']['words']}" for s, r in zip(seeds, res))
            rows.append([v, len(seeds)] + [_pct(e) for e in errs] + [_pts(comp[k]) for k in _COMPONENTS] + [diag])
        proxy = (sc.results or {}).get("optimal_error_proxy")
        doc.add(f"Mean over seeds of each run's split errors and components (optimal error {_pct(opt)}"
                + (f": {proxy}" if proxy else "") + "): avoidable "
                "bias = train - optimal, variance = train_dev - train, data mismatch = dev - train_dev, "
                "dev-test gap = test - dev. Per-run CIs are in `eval/" + sc.name + "/<variant>_s<seed>/`.", "")
        doc.add(*_table(header, rows, ["l"] + ["r"] * (len(header) - 2) + ["l"]), "")
        doc.image(f"{sc.name}_decomposition.png", _decomposition_png(sc, means), f"{sc.name}: error decomposition")
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise _structure(sc.results_rel, e) from None


def _decomposition_png(sc: _Scenario, means: dict) -> bytes:
    variants = list(means)
    fig = _figure(9, 4)
    ax = fig.add_subplot()
    w = 0.8 / max(1, len(variants))
    for j, v in enumerate(variants):
        comp, per = means[v]
        col = _COLORS[j % len(_COLORS)]
        x = np.arange(len(_COMPONENTS)) - 0.4 + w * (j + 0.5)
        vals = [100 * comp[k] if comp[k] is not None else 0.0 for k in _COMPONENTS]
        ax.bar(x, vals, width=w, color=col, label=v)
        for i, k in enumerate(_COMPONENTS):
            pts = [100 * p for p in per[k] if p is not None]
            if pts:
                ax.scatter(np.full(len(pts), x[i]), pts, s=10, color="k", zorder=3)
            else:
                ax.text(x[i], 0, "n/a", ha="center", va="bottom", fontsize=7, color="grey")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(range(len(_COMPONENTS)), [_COMPONENT_WORDS[k] for k in _COMPONENTS])
    ax.set_ylabel("points of error (mean over seeds; dots = seeds)")
    ax.set_title(f"{sc.name}: error decomposition per variant", fontsize=10)
    if variants:
        ax.legend(fontsize=8)
    return _png(fig, sc.cfg["dpi"])


def _curve_runs(sc: _Scenario) -> list[tuple[str, str, Path]]:
    base = sc.root / "runs" / sc.name
    out = []
    if not base.is_dir():
        return out
    found = sorted(p.name for p in base.iterdir() if p.is_dir())
    order = [v for v in sc.cfg["variants"] if v in found] + [v for v in found if v not in sc.cfg["variants"]]
    for v in order:
        seeds = [p.name[1:] for p in (base / v).iterdir() if p.is_dir() and p.name.startswith("s")
                 and (p / "live").is_dir()]
        for s in sorted(seeds, key=_seed_order):
            out.append((v, s, base / v / f"s{s}" / "live"))
    return out


def _read_tsv(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    if not path.is_file():
        return None
    lines = [ln.split("\t") for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if len(lines) < 2:
        return None
    head = lines[0]
    if len(head) < 2 or head[0] != "step":
        raise ShiftlabError(f"{path}: not a DVCLive metric file (header {head!r}, expected step<TAB><name>)")
    try:
        steps = np.array([int(r[0]) for r in lines[1:]])
        vals = np.array([float(r[1]) for r in lines[1:]])
    except (ValueError, IndexError):
        raise ShiftlabError(f"{path}: bad row (expected step<TAB>value)") from None
    return steps, vals


def _curves_section(doc: _Doc, sc: _Scenario) -> None:
    doc.add("### Learning curves", "")
    runs = _curve_runs(sc)
    metrics = ("train", "train_dev", "dev")
    data = {}
    for v, s, live in runs:
        for m in metrics:
            t = _read_tsv(live / "plots" / "metrics" / m / "error.tsv")
            if t is not None:
                data[(v, s, m)] = t
    if not data:
        _not_run(doc, "learning curves", f"runs/{sc.name}/<variant>/s<seed>/live/plots/metrics/*/error.tsv")
        return
    from matplotlib.ticker import MaxNLocator

    present = [m for m in metrics if any(k[2] == m for k in data)]
    fig = _figure(5 * len(present), 4)
    axes = np.atleast_1d(fig.subplots(1, len(present)))
    variants = list(dict.fromkeys(v for v, _, _ in runs))
    for ax, m in zip(axes, present):
        for v, s, _ in runs:
            if (v, s, m) not in data:
                continue
            steps, vals = data[(v, s, m)]
            seeds_v = [ss for vv, ss, _ in runs if vv == v]
            ax.plot(steps + 1, 100 * vals, color=_COLORS[variants.index(v) % len(_COLORS)],
                    ls=_STYLES[seeds_v.index(s) % len(_STYLES)], lw=1.4, label=f"{v} s{s}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel("error (%)")
        ax.set_title(f"{m} error", fontsize=10)
    axes[-1].legend(fontsize=7, ncol=max(1, len(variants)))
    fig.suptitle(f"{sc.name}: learning curves (one line per variant / seed)", fontsize=11)
    doc.add(f"{len(runs)} runs (DVCLive `runs/{sc.name}/<variant>/s<seed>/live`); the last logged dev "
            "error per run (curves are logged on dev only: test is never looked at during training):", "")
    rows = []
    for v, s, _ in runs:
        last = data.get((v, s, "dev"))
        rows.append([v, s, "" if last is None else len(last[0]), "" if last is None else _pct(float(last[1][-1])),
                     "" if last is None else f"{_pct(float(last[1].min()))} (epoch {int(last[0][last[1].argmin()]) + 1})"])
    doc.add(*_table(["variant", "seed", "epochs", "last dev error", "best dev error"], rows), "")
    doc.image(f"{sc.name}_learning_curves.png", _png(fig, sc.cfg["dpi"]), f"{sc.name}: learning curves")


def _confusion_section(doc: _Doc, sc: _Scenario) -> None:
    split = sc.split_name()
    doc.add(f"### Confusion matrices ({split})", "")
    runs = (sc.results or {}).get("runs") or {}
    want = sc.cfg["confusion_seed"]
    shown = []
    for v in sc.variants() or list(sc.cfg["variants"]):
        seeds = sorted(runs.get(v, {}), key=_seed_order)
        if not seeds:
            d = sc.root / "eval" / sc.name
            seeds = sorted((p.name.rsplit("_s", 1)[1] for p in d.glob(f"{v}_s*") if p.is_dir()),
                           key=_seed_order) if d.is_dir() else []
        seed = str(want) if want is not None else (seeds[0] if seeds else None)
        if seed is None:
            continue
        png = sc.root / "eval" / sc.name / f"{v}_s{seed}" / f"confusion_{split}.png"
        if png.is_file():
            shown.append((v, seed, png))
    if not shown:
        _not_run(doc, "confusion matrices", f"eval/{sc.name}/<variant>_s<seed>/confusion_{split}.png")
        return
    doc.add("One seed per variant (" + ", ".join(f"{v}: seed {s}" for v, s, _ in shown)
            + "); rows = actual, columns = predicted, colour = row-normalised fraction.", "")
    for v, s, png in shown:
        doc.image(f"{sc.name}_confusion_{v}.png", png.read_bytes(), f"{sc.name} {v} seed {s}: confusion ({split})")


# --------------------------------------------------------------------------- examples


def _pick_columns(sc: _Scenario, n: int):
    """Parents shown in the example grid: shared by the synthetic variants, labels spread.

    Candidates: parents present in every synthetic dataset that exists (else the sharp
    train source rows); seeded order (``sample_rng(seed, 0, "report", scenario)``); the
    first candidate of each not-yet-shown label is taken until ``n`` columns (then any).
    Returns (parent ids, per synthetic variant the row index of that parent's first copy).
    """
    splits = sc.splits()
    syn = {v: sc.synthetic(v) for v in sc.synth_rel}
    syn = {v: d for v, d in syn.items() if d is not None and hasattr(d, "column_names") and len(d)}
    first: dict[str, dict[str, int]] = {}
    for v, d in syn.items():
        par = _cols(d, ["parent"])["parent"].astype(str)
        idx: dict[str, int] = {}
        for i, p in enumerate(par):
            idx.setdefault(p, i)
        first[v] = idx
    src: dict[str, tuple[int, int]] = {}  # source id -> (train row, label)
    if splits is not None and "train" in splits:
        m = _cols(splits["train"], ["id", "domain", "origin", "label"])
        for i in np.flatnonzero((m["domain"].astype(str) == "source") & (m["origin"].astype(str) == "real")):
            src[str(m["id"][i])] = (int(i), int(m["label"][i]))
    cands = set(src)
    for idx in first.values():
        cands &= set(idx) if cands else set()
    cands = sorted(cands)
    if not cands:
        return [], {}, src
    rng = seeding.sample_rng(sc.cfg["seed"], 0, "report", sc.name)
    order = [cands[i] for i in rng.permutation(len(cands))]
    chosen, labels = [], set()
    for c in order:
        if len(chosen) == n:
            break
        if src[c][1] not in labels:
            chosen.append(c)
            labels.add(src[c][1])
    for c in order:
        if len(chosen) == n:
            break
        if c not in chosen:
            chosen.append(c)
    chosen.sort(key=lambda c: (src[c][1], c))
    return chosen, {v: [first[v][c] for c in chosen] for v in first}, src


def _target_rows(sc: _Scenario, labels: list[int]) -> list[int | None]:
    """Per column, a dev target row with that column's label (seeded), else any dev row."""
    splits = sc.splits()
    if splits is None or "dev" not in splits or len(splits["dev"]) == 0:
        return [None] * len(labels)
    m = _cols(splits["dev"], ["label"])
    lab = m["label"].astype(np.int64)
    rng = seeding.sample_rng(sc.cfg["seed"], 0, "report", sc.name, "target")
    perm = rng.permutation(len(lab))
    out, used = [], set()
    for want in labels:
        pick = next((int(i) for i in perm if lab[i] == want and int(i) not in used), None)
        if pick is None:
            pick = next((int(i) for i in perm if int(i) not in used), None)
        if pick is not None:
            used.add(pick)
        out.append(pick)
    return out


def _examples_section(doc: _Doc, sc: _Scenario) -> None:
    doc.add("### Examples", "")
    n = sc.cfg["examples"]
    if n == 0:
        doc.add("*examples: off* (`report.examples: 0`).", "")
        return
    if sc.splits() is None:
        _not_run(doc, "examples", sc.splits_rel)
        return
    chosen, syn_rows, src = _pick_columns(sc, n)
    if not chosen:
        doc.add(f"*examples: not run* (no source rows in `{sc.splits_rel}` train that every synthetic "
                "dataset has a copy of).", "")
        return
    splits = sc.splits()
    names = list(splits["train"].features["label"].names)
    labels = [src[c][1] for c in chosen]
    tgt = _target_rows(sc, labels)
    rows: list[tuple[str, list]] = [("clean source" if sc.name == "audio" else "sharp source",
                                     [splits["train"][src[c][0]] for c in chosen])]
    for v in sc.synth_rel:
        if v in syn_rows:
            d = sc.synthetic(v)
            rows.append((f"{v} ({sc.synth_rel[v].rsplit('/', 1)[-1]})", [d[i] for i in syn_rows[v]]))
    rows.append(("target (dev)", [None if i is None else splits["dev"][i] for i in tgt]))
    missing = [f"`{rel}`" for v, rel in sc.synth_rel.items() if v not in syn_rows]
    if sc.name == "images":
        png = _image_grid(sc, rows, names, labels)
        what = ("Columns: the same source images (parents) in every row; the target row shows dev frames of "
                "the same label.")
    else:
        png = _audio_grid(sc, rows, names, labels)
        what = (f"Log-mel spectrograms ({sc.cfg['n_mels']} bands, `torchaudio` MelSpectrogram + AmplitudeToDB, "
                "80 dB range). Columns: the same source clips (parents) in every row; the target row shows dev "
                "clips of the same word.")
    doc.add(what + (" Not run: " + ", ".join(missing) + "." if missing else ""), "")
    doc.image(f"{sc.name}_examples.png", png, f"{sc.name}: examples")


def _image_grid(sc: _Scenario, rows, names, labels) -> bytes:
    cols = len(labels)
    fig = _figure(1.25 * cols + 1.2, 1.35 * len(rows) + 0.4)
    axes = fig.subplots(len(rows), cols, squeeze=False)
    for r, (title, items) in enumerate(rows):
        for j, row in enumerate(items):
            ax = axes[r, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if row is None:
                ax.axis("off")
                continue
            img = np.asarray(row["image"], dtype=np.uint8)
            if img.shape[0] == 1:
                ax.imshow(img[0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            else:
                ax.imshow(img.transpose(1, 2, 0), interpolation="nearest")
            if r == 0:
                ax.set_title(names[labels[j]], fontsize=7)
        axes[r, 0].set_ylabel(title, fontsize=7)
    return _png(fig, sc.cfg["dpi"])


def _logmel(wave: np.ndarray, sr: int, n_mels: int) -> np.ndarray:
    import torch
    import torchaudio

    win = max(16, int(round(0.025 * sr)))
    n_fft = 1 << (win - 1).bit_length()
    mel = torchaudio.transforms.MelSpectrogram(sample_rate=sr, n_fft=n_fft, win_length=win,
                                               hop_length=max(1, int(round(0.010 * sr))), n_mels=n_mels,
                                               f_min=20.0, power=2.0)
    db = torchaudio.transforms.AmplitudeToDB(stype="power", top_db=80.0)
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
        return db(mel(x)).numpy()


def _audio_grid(sc: _Scenario, rows, names, labels) -> bytes:
    cols = len(labels)
    fig = _figure(1.6 * cols + 1.2, 1.5 * len(rows) + 0.4)
    axes = fig.subplots(len(rows), cols, squeeze=False)
    for r, (title, items) in enumerate(rows):
        for j, row in enumerate(items):
            ax = axes[r, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if row is None:
                ax.axis("off")
                continue
            wave = np.asarray(row["audio"], dtype=np.float32)
            S = _logmel(wave, int(row["sampling_rate"]), sc.cfg["n_mels"])
            ax.imshow(S, origin="lower", aspect="auto", cmap="magma", vmin=S.max() - 80.0, vmax=S.max(),
                      interpolation="nearest")
            if r == 0:
                ax.set_title(names[labels[j]], fontsize=7)
        axes[r, 0].set_ylabel(title, fontsize=7)
    return _png(fig, max(50, int(round(0.75 * sc.cfg["dpi"]))))  # noisy spectrograms compress badly


# --------------------------------------------------------------------------- diversity dashboard


def _gate_result(g: Mapping) -> str:
    """A gate's result cell. n/a is not a pass: a gate without a value counts with its action
    (``passed`` False, its ``reason`` in the check's own report); ``passed`` None (checks written
    before that rule) reads n/a."""
    if g.get("passed") is None:
        return "n/a"
    if g["passed"]:
        return "pass"
    res = "**FAIL**" if g.get("action") == "fail" else "warn"
    return res + " (n/a)" if g.get("value") is None else res


def _check_summary(check: Mapping) -> tuple[str, list[str], list[str]]:
    gates = check.get("gates") or []
    failed = [g["name"] for g in gates if g.get("passed") is False and g.get("action") == "fail"]
    warned = [g["name"] for g in gates if g.get("passed") is False and g.get("action") == "warn"]
    return str(check["verdict"]), failed, warned


def _dashboard(doc: _Doc, scs: list[_Scenario]) -> None:
    doc.add("## Diversity dashboard", "")
    rows = []
    for sc in scs:
        for v, rel in sc.check_rel.items():
            c = sc.checks[v]
            if c is None:
                rows.append([sc.name, v, f"`{rel}`", "not run", "", ""])
                continue
            try:
                verdict, failed, warned = _check_summary(c)
            except (KeyError, TypeError, AttributeError) as e:
                raise _structure(rel, e) from None
            rows.append([sc.name, v, f"`{rel}`", f"**{verdict.upper()}**", ", ".join(failed) or "-",
                         ", ".join(warned) or "-"])
    doc.add(*_table(["scenario", "variant", "check", "verdict", "failed gates", "warnings"], rows,
                    ["l", "l", "l", "l", "l", "l"]), "")
    for sc in scs:
        for v, rel in sc.check_rel.items():
            c = sc.checks[v]
            name = SCENARIOS[sc.name]["checks"][v]
            doc.add(f"### {name} ({sc.name}, {v})", "")
            if c is None:
                _not_run(doc, name, rel)
                continue
            try:
                grows = [[g["name"], _num(g.get("value")), f"{g['op']} {_num(g['threshold'])}", g["action"],
                          _gate_result(g)] for g in (c.get("gates") or [])]
            except (KeyError, TypeError) as e:
                raise _structure(rel, e) from None
            doc.add(f"Verdict: **{str(c['verdict']).upper()}**.", "")
            doc.add(*_table(["metric", "value", "threshold", "action", "result"], grows, ["l", "r", "r", "l", "l"]), "")
            _check_plots(doc, sc, name)
    doc.add("### Did the diversity flags predict transfer?", "")
    for sc in scs:
        doc.add(_prediction_paragraph(sc), "")


def _sweep_section(doc: _Doc, root: Path, params) -> None:
    """The cars sweep (``shiftlab sweep cars``), when its results are there: its table and plot."""
    from shiftlab.train import sweep

    cfg = sweep.check_cfg((params or {}).get("sweep_cars"))
    doc.add("### The book's trap as a curve (audio): distinct cars in the noise bank", "")
    path = root / cfg["metrics"]
    if not path.is_file():
        doc.add(f"*the cars sweep: not run* (no `{cfg['metrics']}`; `shiftlab sweep cars --run` makes it: one "
                "`dvc exp run` per bank size, about 3 minutes each on 2 CPU cores).", "")
        return
    try:
        res = json.loads(path.read_text())
        body = sweep.markdown(res).split("\n", 2)[2]  # without its own title
    except (json.JSONDecodeError, KeyError, TypeError, IndexError) as e:
        raise _structure(cfg["metrics"], e) from None
    doc.add(body, "")
    png = root / cfg["plot"]
    if png.is_file():
        doc.image("sweep_cars.png", png.read_bytes(), "test error against distinct cars in the bank")


def _ladder_section(doc: _Doc, root: Path, params, scs: list[_Scenario]) -> None:
    """The diversity ladder and the check-vs-transfer table (``shiftlab ladder``), when its results are there."""
    from shiftlab import ladder

    cfg = ladder.check_cfg((params or {}).get("ladder"))
    doc.add("### The diversity ladder: the checks' thresholds, and did a FAIL predict worse transfer?", "")
    md = root / cfg["report"]
    if not md.is_file():
        doc.add(f"*the diversity ladder: not run* (no `{cfg['report']}`; `shiftlab ladder` makes it: graded synthetic "
                "sets from the default generators, checked with the default gates, about 25 minutes on 2 CPU cores).", "")
        return
    text = md.read_text()
    body = text.split("\n", 2)[2] if text.startswith("# ") else text  # without its own title
    # the committed check-vs-transfer table was made with the results of its time: this run's is computed below
    body = body.split("\n## Did a FAIL predict worse transfer?")[0]
    body = "\n".join(ln for ln in body.splitlines() if not ln.startswith("![ladder]("))
    doc.add(body.replace("\n## ", "\n#### ").rstrip(), "")
    png = root / cfg["plot"]
    if png.is_file():
        doc.image("ladder.png", png.read_bytes(), "the gated scores along the ladder, with their thresholds")
    # the image synthetic rows (the images scenario's, loaded once for its sections too): kernel metrics re-gated
    img = next((sc for sc in scs if sc.name == "images"), None)
    rel = SCENARIOS["images"]["synthetic"]
    synthetic = {}
    for v, name in (("synth", "blur"), ("narrow", "blur_narrow")):
        ds = img.synthetic(v) if img is not None else _load_ds(root, rel[v])
        if ds is not None:
            synthetic[name] = ds
    trans = ladder.transfer(root, (params or {}).get("check_images"), (params or {}).get("check_audio"), synthetic)
    doc.add("\n".join(ladder.transfer_markdown(trans, level=4)), "")


def _check_plots(doc: _Doc, sc: _Scenario, name: str) -> None:
    d = sc.root / "reports" / name
    pngs = sorted(p.name for p in d.glob("*.png")) if d.is_dir() else []
    if not pngs:
        doc.add(f"Plots: not run (no PNG in `reports/{name}/`).", "")
        return
    doc.add("Plots in `reports/" + name + "/`: " + ", ".join(f"`{p}`" for p in pngs) + ".", "")
    for p in SCENARIOS[sc.name]["embed"]:
        if p in pngs:
            doc.image(f"{name}_{p}", (d / p).read_bytes(), f"{name}: {p}")


def _prediction_paragraph(sc: _Scenario) -> str:
    head = f"**{sc.name}.** "
    checks = {v: c for v, c in sc.checks.items() if c is not None}
    if len(checks) < len(sc.checks):
        miss = [f"`{sc.check_rel[v]}`" for v in sc.checks if sc.checks[v] is None]
        return head + "Not run: no " + ", ".join(miss) + "."
    if sc.results is None:
        return head + f"Not run: no `{sc.results_rel}`."
    try:
        pooled = sc.pooled()
        verdicts = {v: str(c["verdict"]) for v, c in checks.items()}
        if "synth" not in pooled or "narrow" not in pooled:
            return head + "Not run: the comparison lacks the synth or narrow variant."
        s, n = pooled["synth"], pooled["narrow"]
        split = sc.split_name()
        comps = sc.comparisons()
        ns = comps.get("narrow_vs_synth")
        nums = (f"{split} error narrow {_pct(n['error'])} {_ci_pct(n)} vs synth {_pct(s['error'])} {_ci_pct(s)}")
        if ns is not None:
            nums += (f"; narrow - synth {_pts(ns['difference']['value'])} ({_ci_pts(ns['difference'])}, MDE "
                     f"{_pts(ns['mde']).lstrip('+')}): {ns['verdict']}")
        nv = ns["verdict"] if ns is not None else None
        flagged = [v for v in ("synth", "narrow") if verdicts[v] == "fail"]
        checks_txt = f"The synth check says {verdicts['synth'].upper()}, the narrow check {verdicts['narrow'].upper()}"
        diffs = []
        for c in (comps[t] for t in _ordered(comps, sc) if t != "narrow_vs_synth"):
            diffs.append(f"{c['treatment']} - {c['baseline']} {_pts(c['difference']['value'])} "
                         f"({_ci_pts(c['difference'])}: {c['verdict']})")
        tail = (" Against the baseline: " + "; ".join(diffs) + ".") if diffs else ""
        if flagged == ["narrow"]:
            verdict = {
                "hurts": "Yes: the flagged variant transferred measurably worse",
                "helps": "No: the flagged variant transferred measurably better",
                "equivalent": "No: the two transferred equally well (within the equivalence margin)",
            }.get(nv, "Not established: the narrow - synth difference is inconclusive at this power")
            return head + f"{checks_txt}; {nums}. {verdict}.{tail}"
        if flagged == ["synth"]:
            return head + f"{checks_txt}: the flag is on synth, not on narrow; {nums}.{tail}"
        if flagged:
            return head + f"{checks_txt}: both failed, so the checks did not single out a variant; {nums}.{tail}"
        return head + f"{checks_txt}: neither failed, so there was no flag to test; {nums}.{tail}"
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise _structure(sc.results_rel, e) from None


# --------------------------------------------------------------------------- summary


def _summary_line(sc: _Scenario) -> str:
    if sc.results is None:
        out = f"{sc.name}: evaluation not run (no {sc.results_rel})"
    else:
        try:
            parts = []
            comps = sc.comparisons()
            for t in _ordered(comps, sc):
                c = comps[t]
                parts.append(f"{c['treatment']} - {c['baseline']} {_pts(c['difference']['value'])} "
                             f"({_ci_pts(c['difference'])}, MDE {_pts(c['mde']).lstrip('+')}): {c['verdict']}")
            out = f"{sc.name} ({sc.split_name()}): " + ("; ".join(parts) if parts else "no comparison in "
                                                          + sc.results_rel)
            for cs in sc.results.get("check_splits") or []:  # the evaluation-only check sets, apart
                cc = sc.comparisons(cs)
                g = len((sc.results.get("check") or {}).get(cs, {}).get("groups") or [])
                out += (f"; {cs} check ({g} speakers): " + (", ".join(
                    f"{cc[t]['treatment']} - {cc[t]['baseline']} {cc[t]['verdict']}" for t in _ordered(cc, sc))
                    or "no comparison"))
        except (KeyError, TypeError, AttributeError) as e:
            raise _structure(sc.results_rel, e) from None
    checks = []
    for v, c in sc.checks.items():
        checks.append(f"{v} {str(c.get('verdict', '?')).upper() if isinstance(c, Mapping) else 'not run'}"
                      if c is not None else f"{v} not run")
    return out + "; checks: " + ", ".join(checks)


README_START = "<!-- results:start (generated by `shiftlab report --readme`; do not edit by hand) -->"
README_END = "<!-- results:end -->"


def results_block(root: str | Path = ".", cfg: Mapping[str, Any] | None = None) -> str:
    """README's results section, generated from the run's metrics files (the same text and
    tables as the report's verdict and decomposition sections, without pictures), so README
    can never disagree with ``eval/<sc>/results.json``."""
    c = merge_config(cfg)
    root = Path(root)
    params = None
    if (root / "params.yaml").is_file():
        from shiftlab import config

        params = config.load(root / "params.yaml")
    doc = _Doc()
    for name in c["scenarios"]:
        sc = _Scenario(root, name, c, params)
        doc.add(f"#### {name}", "")
        doc.add(_summary_line(sc), "")
        sub = _Doc()
        _dev_error_section(sub, sc)
        _check_sets_section(sub, sc, only_present=True)  # nothing when the results have no check split
        _decomposition_section(sub, sc)
        for ln in sub.lines:
            if ln.startswith("### "):
                doc.add("**" + ln[4:] + "**")
            elif not ln.startswith("!["):
                doc.add(ln)
        doc.add("")
    return doc.text()


def update_readme(readme: str | Path, root: str | Path = ".", cfg: Mapping[str, Any] | None = None) -> bool:
    """Replace the text between :data:`README_START` and :data:`README_END` in ``readme`` by
    :func:`results_block`; True when the file changed. A README without the markers is an error."""
    path = Path(readme)
    text = path.read_text(encoding="utf-8")
    if README_START not in text or README_END not in text:
        raise ShiftlabError(f"{path}: no results markers ({README_START} ... {README_END})")
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    new = head + README_START + "\n\n" + results_block(root, cfg) + "\n" + README_END + tail
    if new != text:
        store.write_text(path, new)
    return new != text


def summary_lines(root: str | Path = ".", cfg: Mapping[str, Any] | None = None) -> list[str]:
    """One line per scenario: the differences to the baseline with CI and verdict, the check verdicts.

    E.g. ``images (test): synth - nosynth -2.1 pts (-3.0 pts to -1.2 pts, MDE 1.3 pts): helps;
    narrow - nosynth +0.4 pts (-0.5 pts to +1.3 pts, MDE 1.3 pts): inconclusive; checks: synth
    PASS, narrow FAIL``.
    Missing inputs read "not run". Reads only the JSON inputs (fast).
    """
    c = merge_config(cfg)
    root = Path(root)
    return [_summary_line(_Scenario(root, name, c, None)) for name in c["scenarios"]]


# --------------------------------------------------------------------------- markdown -> html


_CSS = """body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}h1,h2,h3{line-height:1.2}h2{border-bottom:1px solid #ddd;
padding-bottom:.2em;margin-top:2em}table{border-collapse:collapse;margin:.8em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em}th{background:#f3f3f3}td.r,th.r{text-align:right}
code{background:#f3f3f3;padding:0 .2em;border-radius:3px;font-size:.92em}img{max-width:100%}
figure{margin:1em 0}figcaption{color:#666;font-size:.85em}"""

_INLINE = re.compile(r"`([^`]+)`|!\[([^\]]*)\]\(([^)\s]+)\)|\[([^\]]+)\]\(([^)\s]+)\)|\*\*(.+?)\*\*|\*([^*\s][^*]*)\*")


def _inline(text: str, images: Mapping[str, bytes]) -> str:
    out, pos = [], 0
    for m in _INLINE.finditer(text):
        out.append(html.escape(text[pos:m.start()], quote=False))
        pos = m.end()
        if m.group(1) is not None:
            out.append(f"<code>{html.escape(m.group(1), quote=False)}</code>")
        elif m.group(3) is not None:
            out.append(_img(m.group(2), m.group(3), images))
        elif m.group(5) is not None:
            out.append(f'<a href="{html.escape(m.group(5))}">{_inline(m.group(4), images)}</a>')
        elif m.group(6) is not None:
            out.append(f"<strong>{_inline(m.group(6), images)}</strong>")
        else:
            out.append(f"<em>{_inline(m.group(7), images)}</em>")
    out.append(html.escape(text[pos:], quote=False))
    return "".join(out)


def _img(alt: str, src: str, images: Mapping[str, bytes]) -> str:
    if src in images:
        src = "data:image/png;base64," + base64.b64encode(images[src]).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="{html.escape(src)}">'


def _cells(line: str) -> list[str]:
    s = line.strip()
    if s.startswith("|"):
        s = s[1:]
    if s.endswith("|") and not s.endswith("\\|"):
        s = s[:-1]
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", s)]


def to_html(md: str, images: Mapping[str, bytes] | None = None, title: str = "shiftlab report") -> str:
    """Self-contained HTML of the markdown subset :func:`build` writes.

    Supported: ATX headings (``#`` .. ``######``), paragraphs (consecutive lines), ``- ``/``* ``
    bullet lists, pipe tables (header, ``---``/``---:`` rule, rows; ``\\|`` escapes a pipe),
    an image alone on a line (a ``<figure>`` with the alt text as caption), and inline
    ``code``, ``**bold**``, ``*italic*``, ``[text](href)`` and images. Text is HTML-escaped.
    ``images`` maps an image ``src`` to PNG bytes, embedded as a base64 ``data:`` URI; other
    sources stay as they are.
    """
    images = images or {}
    lines = md.splitlines()
    body: list[str] = []
    para: list[str] = []
    i = 0

    def flush():
        if para:
            body.append("<p>" + _inline(" ".join(para), images) + "</p>")
            para.clear()

    while i < len(lines):
        ln = lines[i]
        s = ln.strip()
        h = re.match(r"^(#{1,6})\s+(.*)$", s)
        if not s:
            flush()
            i += 1
        elif h:
            flush()
            k = len(h.group(1))
            slug = re.sub(r"[^a-z0-9]+", "-", h.group(2).lower()).strip("-")
            body.append(f'<h{k} id="{slug}">{_inline(h.group(2), images)}</h{k}>')
            i += 1
        elif re.fullmatch(r"!\[[^\]]*\]\([^)\s]+\)", s):
            flush()
            m = re.fullmatch(r"!\[([^\]]*)\]\(([^)\s]+)\)", s)
            body.append(f"<figure>{_img(m.group(1), m.group(2), images)}"
                        f"<figcaption>{html.escape(m.group(1), quote=False)}</figcaption></figure>")
            i += 1
        elif s.startswith("|") and i + 1 < len(lines) and re.fullmatch(r"\|?(\s*:?-{3,}:?\s*\|)+\s*:?-*:?\s*",
                                                                      lines[i + 1].strip()):
            flush()
            head = _cells(s)
            align = ["r" if c.endswith(":") else "l" for c in _cells(lines[i + 1])]
            cls = lambda j: ' class="r"' if j < len(align) and align[j] == "r" else ""  # noqa: E731
            t = ["<table>", "<thead><tr>" + "".join(f"<th{cls(j)}>{_inline(c, images)}</th>"
                                                    for j, c in enumerate(head)) + "</tr></thead>", "<tbody>"]
            i += 2
            while i < len(lines) and lines[i].strip().startswith("|"):
                t.append("<tr>" + "".join(f"<td{cls(j)}>{_inline(c, images)}</td>"
                                          for j, c in enumerate(_cells(lines[i]))) + "</tr>")
                i += 1
            body.append("\n".join(t + ["</tbody></table>"]))
        elif re.match(r"^[-*]\s+", s) and not s.startswith("**"):
            flush()
            items = []
            while i < len(lines) and re.match(r"^[-*]\s+", lines[i].strip()) and not lines[i].strip().startswith("**"):
                items.append("<li>" + _inline(re.sub(r"^[-*]\s+", "", lines[i].strip()), images) + "</li>")
                i += 1
            body.append("<ul>\n" + "\n".join(items) + "\n</ul>")
        else:
            para.append(s)
            i += 1
    flush()
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")


# --------------------------------------------------------------------------- build


def _inputs_section(doc: _Doc, root: Path, scs: list[_Scenario], params_found: bool) -> None:
    doc.add("## Inputs", "")
    rows = [["`params.yaml`", "found" if params_found else "not run (missing)"]]
    for sc in scs:
        rels = [sc.split_rel, sc.results_rel] + list(sc.check_rel.values()) + [sc.splits_rel] + list(sc.synth_rel.values())
        for rel in rels:
            rows.append([f"`{rel}`", "found" if (root / rel).exists() else "not run (missing)"])
        rows.append([f"`runs/{sc.name}/`", "found" if (root / "runs" / sc.name).is_dir() else "not run (missing)"])
    doc.add(*_table(["input", "status"], rows, ["l", "l"]), "")


def _render(root: Path, c: dict) -> tuple[_Doc, list[str]]:
    params = None
    params_found = (root / "params.yaml").is_file()
    if params_found:
        from shiftlab import config

        params = config.load(root / "params.yaml")
    scs = [_Scenario(root, name, c, params) for name in c["scenarios"]]
    lines = [_summary_line(sc) for sc in scs]
    doc = _Doc()
    doc.add("# shiftlab report", "")
    doc.add("Does synthetic training data that looks like the target lower the error on the target, and did the "
            "diversity checks predict which synthesis would transfer? (Machine Learning Yearning ch. 36-43.) Verdicts "
            "are read on the target's test split, which no choice touched (checkpoints were chosen on dev). Every "
            "number below is read from the pipeline's outputs; errors are fractions of wrong predictions shown in "
            "percent, differences in points; a part whose inputs are missing says *not run*.", "")
    doc.add("## Summary", "")
    doc.add(*[f"- {ln}" for ln in lines], "")
    if not params_found:
        doc.add("*params.yaml: not run* (no `params.yaml` under the root): settings are not stated.", "")
    for sc in scs:
        doc.add(f"## Scenario: {sc.name}", "")
        _data_section(doc, sc)
        if sc.name == "images":
            _calibration_section(doc, sc)
        _dev_error_section(doc, sc)
        if sc.name == "audio" or (sc.results or {}).get("check_splits"):
            _check_sets_section(doc, sc)
        _decomposition_section(doc, sc)
        _curves_section(doc, sc)
        _confusion_section(doc, sc)
        _examples_section(doc, sc)
    _dashboard(doc, scs)
    if "audio" in c["scenarios"]:
        _sweep_section(doc, root, params)
    _ladder_section(doc, root, params, scs)
    _inputs_section(doc, root, scs, params_found)
    return doc, lines


def build(root: str | Path = ".", cfg: Mapping[str, Any] | None = None,
          out_dir: str | Path = "reports/report") -> dict[str, Any]:
    """Write the report (module docstring) into ``out_dir`` (relative paths: under ``root``).

    Returns ``{"out_dir": str, "files": [paths written, sorted], "markdown": path of
    report.md, "html": path of report.html, "summary": summary_lines}``; prints nothing.
    ``out_dir`` is replaced as a whole, in one rename, once every file is rendered. Missing
    inputs give "not run" parts; malformed inputs a one-line ShiftlabError naming the file.
    """
    c = merge_config(cfg)
    root = Path(root)
    out = Path(out_dir)
    if not out.is_absolute():
        out = root / out
    doc, lines = _render(root, c)
    md = doc.text()
    page = to_html(md, doc.files)
    with store.atomic_dir(out) as tmp:
        for name, data in sorted(doc.files.items()):
            (tmp / name).write_bytes(data)
        (tmp / "report.md").write_text(md, encoding="utf-8")
        (tmp / "report.html").write_text(page, encoding="utf-8")
    files = sorted(str(out / n) for n in list(doc.files) + ["report.md", "report.html"])
    return {"out_dir": str(out), "files": files, "markdown": str(out / "report.md"),
            "html": str(out / "report.html"), "summary": lines}
