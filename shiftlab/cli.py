"""The ``shiftlab`` command: one subcommand per pipeline stage.

    shiftlab prepare images|speech|noise   build a data source as a Dataset on disk
    shiftlab split images|audio            train / train_dev / dev / test + weights + report
    shiftlab prepare target                the audio target under held-out real car noise (+ the codriver check set)
    shiftlab synth blur [--section S]      motion-blurred synthetic rows of the train source images
                  [--input DIR [--split NAME]]   ... or blurred copies of any saved dataset / image folder
    shiftlab mix [--section S]             car noise mixed into the clean train source speech
                  [--input DIR [--split NAME]]   ... or noisy copies of any saved dataset / speech folder
    shiftlab check images|audio            diversity report + gates of the synthetic rows
    shiftlab calibrate blur                score candidate blur ranges against the target rows of train
    shiftlab train --scenario S --variant V --seed N   one training run of the comparison matrix
    shiftlab train --scenario S --all      every variant x seed of params experiment, side by side
    shiftlab evaluate --scenario S         errors with CIs, decomposition, synth vs nosynth verdicts
    shiftlab report                        the report of the whole run (markdown, HTML, PNGs)
    shiftlab sweep cars [--run]            test error against distinct cars in the noise bank (dvc exp per point)
    shiftlab ladder [images|audio|all|report]  the diversity ladder: graded synthetic sets checked, + check vs transfer
    shiftlab models [--input C,H,W]        the model registry: parameters, MACs and FLOPs (2 per MAC)
    shiftlab params [--defaults]           print the validated params (all defaults filled)

Every stage reads its own section of params.yaml (validated on load), writes its
outputs atomically, and prints one summary line. User errors print one line,
``shiftlab: error: ...``, and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

from shiftlab import config
from shiftlab.errors import ShiftlabError

PREPARED = Path("data/prepared")
SPLITS = Path("data/splits")
METRICS = Path("metrics")
REPORTS = Path("reports")


def _fmt_counts(values) -> str:
    c = Counter(values)
    return ", ".join(f"{k} {v:,}" for k, v in sorted(c.items()))


def _summary(stage: str, ds, out: Path, t0: float, extra: str = "") -> str:
    from shiftlab.datasets import schema

    line = (
        f"{stage}: {len(ds):,} rows ({_fmt_counts(ds['domain'])}), "
        f"{len(schema.label_names(ds))} labels, {len(set(ds['group'])):,} groups"
        f"{extra} -> {out} [{time.perf_counter() - t0:.1f} s]"
    )
    return line


# --------------------------------------------------------------------------- stages


def cmd_prepare(args) -> None:
    t0 = time.perf_counter()
    what = args.what
    cfg = config.section("target_mix" if what == "target" else f"prepare_{what}", args.params)
    from shiftlab import store
    from shiftlab.datasets import schema

    if what == "target":
        return _prepare_target(args, cfg, t0)
    if what == "images":
        from shiftlab.datasets import images as mod
    elif what == "speech":
        from shiftlab.datasets import speech as mod
    else:
        from shiftlab.datasets import noise as mod
    ds = mod.prepare(cfg)
    schema.check(ds, f"prepare {what}")
    out = Path(args.out or PREPARED / what)
    store.save(ds, out)
    extra = ""
    if "audio" in ds.column_names:
        import numpy as np

        secs = float(np.sum([len(a) for a in ds.with_format("numpy")["audio"]]) / max(1, ds[0]["sampling_rate"]))
        extra = f", {secs:,.1f} s of audio"
    print(_summary(f"prepare {what}", ds, out, t0, extra))


def cmd_split(args) -> None:
    t0 = time.perf_counter()
    what = args.what
    name = f"split_{what}"
    cfg = config.section(name, args.params)
    from shiftlab import store
    from shiftlab.datasets import schema, splits

    default_in = PREPARED / ("images" if what == "images" else "speech_incar")
    src = Path(args.input or default_in)
    hint = "run `shiftlab prepare images` first" if what == "images" else "run `shiftlab prepare target` first"
    ds = store.load(src, "prepared dataset", hint)
    schema.check(ds, str(src))
    parts = splits.build(ds, cfg)
    left_out = []
    if cfg.get("check_sets"):  # evaluation-only splits (split_audio.check_sets), each beside the input
        sets = {}
        for cname in cfg["check_sets"]:
            p = src.parent / cname
            if not p.exists():  # not made (an older `shiftlab prepare target`, or your own prepared input)
                left_out.append(f"{cname} (no {p})")
                continue
            cs = store.load(p, f"check set {cname}")
            if len(cs) == 0:  # e.g. target_mix.codrivers: false
                left_out.append(f"{cname} (empty: {p})")
                continue
            schema.check(cs, str(p))
            sets[cname] = cs
        parts = splits.add_check_sets(parts, sets)
    splits.check(parts)
    rep = splits.report(parts)
    out = Path(args.out or SPLITS / what)
    metrics = Path(args.metrics or METRICS / f"{name}.json")
    md = Path(args.report or REPORTS / f"{name}.md")
    with store.outputs(out, metrics, md) as tx:  # all three or none
        store.save(parts, tx[out])
        store.write_json(tx[metrics], rep)
        store.write_text(tx[md], splits.markdown(rep, f"Split report: {what}"))
    sizes = ", ".join(f"{k} {len(v):,}" for k, v in parts.items())
    skipped = f"; check sets left out: {', '.join(left_out)}" if left_out else ""
    print(f"{name}: {sizes}{skipped} -> {out}; report {md} [{time.perf_counter() - t0:.1f} s]")


SYNTH = Path("data/synth")


def _any_input(args, modality: str):
    """``--input DIR [--split NAME]`` of ``synth blur`` / ``mix``: ``(splits, None)`` for a split dataset
    with every split of the pipeline and no ``--split`` (the pipeline's rule), else ``(None, Dataset)``:
    one split of a saved DatasetDict, a saved Dataset, or a class folder of images / speech read
    with the project's folder loaders (``prepare_images.folder`` / ``prepare_speech`` settings)."""
    import datasets as hfds

    from shiftlab import store
    from shiftlab.datasets import schema

    src = Path(args.input)
    if not src.exists():
        raise ShiftlabError(f"--input {src}: not found")
    saved = any((src / f).exists() for f in ("dataset_dict.json", "dataset_info.json", "state.json"))
    if saved:
        obj = store.load(src, "dataset")
        if isinstance(obj, hfds.DatasetDict):
            if args.split is None:
                if all(s in obj for s in schema.SPLITS):
                    return obj, None
                if len(obj) != 1:
                    raise ShiftlabError(f"--input {src}: a DatasetDict with splits {', '.join(obj)}: "
                                        f"choose one with --split NAME")
                return None, next(iter(obj.values()))
            if args.split not in obj:
                raise ShiftlabError(f"--split {args.split}: no such split in {src} (have: {', '.join(obj)})")
            return None, obj[args.split]
        if args.split is not None:
            raise ShiftlabError(f"--split {args.split}: {src} is a single Dataset, not a DatasetDict")
        return None, obj
    if not src.is_dir():
        raise ShiftlabError(f"--input {src}: neither a saved dataset nor a folder")
    if args.split is not None:
        raise ShiftlabError(f"--split {args.split}: {src} is a plain folder (one subfolder per class), not a "
                            f"DatasetDict")
    if modality == "image":
        from shiftlab.datasets import images

        f = config.section("prepare_images", args.params).get("folder") or {}
        return None, images.from_folder(source=src, size=f.get("size"), mode=f.get("mode") or "rgb")
    from shiftlab.datasets import speech

    c = config.section("prepare_speech", args.params)
    sr = int(c["sampling_rate"])
    return None, speech.folder_speech(src, "source", sr, int(round(c["clip_seconds"] * sr)))


def cmd_synth(args) -> None:
    """shiftlab synth blur: synthetic rows made from the train/train_dev source rows of the splits."""
    t0 = time.perf_counter()
    from shiftlab import store
    from shiftlab.datasets import schema

    if args.what == "blur":
        section = args.section or "synth_blur"
        if not section.startswith("synth_blur"):
            raise ShiftlabError(f"--section {section}: synth blur reads a synth_blur* section")
        from shiftlab.synth import blur as mod

        default_in = SPLITS / "images"
    else:  # pragma: no cover - argparse restricts the choices
        raise ShiftlabError(f"unknown synthesis {args.what!r}")
    cfg = config.section(section, args.params)
    src = Path(args.input or default_in)
    shard = _parse_shard(args.shard)
    source = _any_input(args, "image") if args.input else None
    if source is None or source[1] is None:  # the pipeline: the split-aware rule (train/train_dev source rows)
        splits = source[0] if source else store.load(src, "split dataset",
                                                     f"run `shiftlab split {default_in.name}` first")
        ds = mod.make_synthetic(splits, cfg, progress=True, shard=shard)
        out = Path(args.out or SYNTH / section.replace("synth_", "", 1))
    else:  # any dataset or image folder: every row of it is a parent
        ds = mod.make_copies(source[1], cfg, progress=True, shard=shard)
        out = Path(args.out or src.with_name(f"{src.name}_{section.replace('synth_', '', 1)}"))
    if shard is not None and not args.out:
        out = out.with_name(f"{out.name}.shard{shard[0]}of{shard[1]}")
    if len(ds):
        schema.check(ds, f"synth {args.what}")
    with store.outputs(out) as tx:
        store.save(ds, tx[out])
    fam = ""
    if len(ds):
        import json

        fam = ", " + _fmt_counts(json.loads(r)["family"] for r in ds["recipe"])
    print(
        f"synth {args.what} [{section}]: {len(ds):,} synthetic rows from "
        f"{len(set(ds['parent'])):,} parents{fam} -> {out} [{time.perf_counter() - t0:.1f} s]"
    )


def _prepare_target(args, cfg, t0) -> None:
    """shiftlab prepare target: target speech rows mixed with the held-out target noise."""
    from shiftlab import store
    from shiftlab.datasets import schema
    from shiftlab.mixing import target

    speech = store.load(PREPARED / "speech", "prepared speech", "run `shiftlab prepare speech` first")
    noise = store.load(PREPARED / "noise", "prepared noise", "run `shiftlab prepare noise` first")
    from shiftlab.mixing import bank as bank_mod

    # every synthesis bank, resolved as `shiftlab mix` resolves it: none may draw from a target recording or car
    banks = {s: bank_mod.names(config.section(s, args.params)["bank"], noise, f"{s}.bank")
             for s in config.SCHEMA if s.startswith("synth_mix")}
    tb = target.target_noise(noise, cfg)  # the held-out cars driven once, for the target and the codrivers
    ds = target.make_target(speech, noise, cfg, bank_names=banks, target_bank=tb)
    schema.check(ds, "prepare target")
    out = Path(args.out or PREPARED / "speech_incar")
    # the codriver check set, beside the target (shiftlab split audio reads it from there); always written,
    # empty when there is none, so the stage's outputs are the same whatever target_mix says
    co_out = out.parent / "codrivers"
    why = target.codrivers_reason(cfg)
    if why is None:
        co = target.make_codrivers(speech, noise, cfg, bank_names=banks, target_bank=tb)
        schema.check(co, "prepare target (codrivers)")
        co_line = (f"; codrivers: {len(co):,} real rows of {len(set(co['group'])):,} speakers under held-out car "
                   f"noise -> {co_out}")
    else:
        co = ds.select([])
        co_line = f"; codrivers: none ({why}) -> {co_out} (empty)"
    with store.outputs(out, co_out) as tx:  # both or neither
        store.save(ds, tx[out])
        store.save(co, tx[co_out])
    nt = sum(1 for d in ds["domain"] if d == "target")
    print(_summary("prepare target", ds, out, t0, f", {nt:,} target rows mixed with held-out car noise") + co_line)


def cmd_mix(args) -> None:
    """shiftlab mix: clean train/train_dev source speech mixed with a noise bank."""
    t0 = time.perf_counter()
    from shiftlab import store
    from shiftlab.datasets import schema
    from shiftlab.mixing import mix

    section = args.section or "synth_mix"
    if not section.startswith("synth_mix"):
        raise ShiftlabError(f"--section {section}: mix reads a synth_mix* section")
    cfg = config.section(section, args.params)
    src = Path(args.input or SPLITS / "audio")
    name = section.replace("synth_", "", 1)
    source = _any_input(args, "audio") if args.input else None
    if source is None or source[1] is None:  # the pipeline: the split-aware rule (train/train_dev source rows)
        splits = source[0] if source else store.load(src, "split dataset", "run `shiftlab split audio` first")
        noise = store.load(Path(args.noise or PREPARED / "noise"), "prepared noise",
                           "run `shiftlab prepare noise` first")
        sr = int(splits["train"][0]["sampling_rate"])
        bank = mix.build_bank(cfg, noise=noise, sampling_rate=sr)
        ds = mix.make_synthetic(splits, bank, cfg, device=cfg["device"], progress=True)
        out = Path(args.out or SYNTH / name)
    else:  # any dataset or speech folder: every row of it is a parent
        part = source[1]
        if not len(part):
            raise ShiftlabError(f"{src}: no rows to mix")
        noise = None
        if "real" in cfg["bank"]["sources"]:  # only the "real" source reads the prepared noise
            noise = store.load(Path(args.noise or PREPARED / "noise"), "prepared noise",
                               "run `shiftlab prepare noise` first, or use other synth_mix.bank.sources")
        bank = mix.build_bank(cfg, noise=noise, sampling_rate=int(part[0]["sampling_rate"]))
        ds = mix.make_copies(part, bank, cfg, device=cfg["device"], progress=True)
        out = Path(args.out or src.with_name(f"{src.name}_{name}"))
    bank_out = Path(args.bank_out or (SYNTH / f"{name}_bank" if source is None or source[1] is None
                                      else out.with_name(f"{out.name}_bank")))
    if len(ds):
        schema.check(ds, "mix")
    with store.outputs(bank_out, out) as tx:  # the rows and the bank they were mixed from: both or neither
        store.save(bank, tx[bank_out])
        store.save(ds, tx[out])
    print(
        f"mix [{section}]: {len(ds):,} synthetic rows from {len(set(ds['parent'])):,} parents, bank of "
        f"{len(bank):,} clips from {len(set(bank['group'])):,} sources -> {out}, {bank_out} "
        f"[{time.perf_counter() - t0:.1f} s]"
    )


def _check_paths(what: str, name: str) -> dict:
    return {
        "metrics": METRICS / f"{name}.json",
        "report": REPORTS / f"{name}.md",
        "plots": REPORTS / name,
    }


def cmd_check(args) -> None:
    """shiftlab check images|audio: diversity report of synthetic rows, gated by params thresholds."""
    t0 = time.perf_counter()
    from shiftlab import store

    what = args.what
    cfg = config.section(f"check_{what}", args.params)
    if what == "images":
        from shiftlab.synth import diversity as mod

        syn_path = Path(args.synthetic or SYNTH / "blur")
        name = args.name or ("check_images" if syn_path.name == "blur" else f"check_images_{syn_path.name.replace('blur_', '')}")
        splits = store.load(Path(args.input or SPLITS / "images"), "split dataset", "run `shiftlab split images` first")
        syn = store.load(syn_path, "synthetic rows", "run `shiftlab synth blur` first")
        paths = _check_paths(what, name)

        def run(plots):
            return mod.run(syn, splits, cfg, plots_dir=plots, progress=True)
    else:
        from shiftlab.mixing import diversity as mod

        syn_path = Path(args.synthetic or SYNTH / "mix")
        name = args.name or ("check_audio" if syn_path.name == "mix" else f"check_audio_{syn_path.name.replace('mix_', '')}")
        splits = store.load(Path(args.input or SPLITS / "audio"), "split dataset", "run `shiftlab split audio` first")
        syn = store.load(syn_path, "synthetic rows", "run `shiftlab mix` first")
        bank = store.load(Path(args.bank or f"{syn_path}_bank"), "noise bank", "run `shiftlab mix` first")
        noise = store.load(PREPARED / "noise", "prepared noise", "run `shiftlab prepare noise` first")
        tr = splits["train"]
        tgt = tr.select([i for i, d in enumerate(tr["domain"]) if d == "target"])
        tnoise = noise.select([i for i, d in enumerate(noise["domain"]) if d == "target"])
        paths = _check_paths(what, name)

        def run(plots):
            return mod.run(syn, bank, tgt, target_noise=tnoise if len(tnoise) else None, cfg=cfg,
                           plots_dir=plots, progress=True)

    # plots, metrics and report are committed together: all new, or (error, interruption) all old
    with store.outputs(paths["plots"], paths["metrics"], paths["report"]) as tx:
        rep = run(tx.dir(paths["plots"]))
        gates = mod.gate(rep, cfg)
        failed = [g["name"] for g in gates if not g["passed"] and g["action"] == "fail"]
        warned = [g["name"] for g in gates if not g["passed"] and g["action"] != "fail"]
        verdict = "fail" if failed else ("warn" if warned else "pass")
        store.write_json(tx[paths["metrics"]], {"verdict": verdict, "gates": gates, "report": rep})
        store.write_text(tx[paths["report"]], mod.markdown(rep, gates))
    detail = (f"; failed: {', '.join(failed)}" if failed else "") + (f"; warnings: {', '.join(warned)}" if warned else "")
    print(f"check {what} [{syn_path}]: {verdict.upper()}{detail} -> {paths['report']} "
          f"[{time.perf_counter() - t0:.1f} s]")
    if args.strict and failed:
        raise ShiftlabError(f"check {what}: diversity gates failed ({', '.join(failed)}); see {paths['report']}")


def cmd_calibrate(args) -> None:
    """shiftlab calibrate blur: score candidate kernel ranges against the target rows of train."""
    t0 = time.perf_counter()
    from shiftlab import store
    from shiftlab.synth import calibrate

    section = args.section or "calibrate_blur"
    if not section.startswith("calibrate_blur"):
        raise ShiftlabError(f"--section {section}: calibrate blur reads a calibrate_blur* section")
    cfg = config.section(section, args.params)
    base = config.section(cfg["base"], args.params)
    chk = config.section("check_images", args.params)
    src = Path(args.input or SPLITS / "images")
    splits = store.load(src, "split dataset", "run `shiftlab split images` first")
    res = calibrate.run(splits, cfg, chk, base, progress=True)
    md, png, metrics = Path(args.report or cfg["report"]), Path(args.plot or cfg["plot"]), Path(args.metrics or cfg["metrics"])
    calibrate.plot(res, png)
    store.write_json(metrics, res)
    rel = png.name if png.parent == md.parent else str(png)
    store.write_text(md, calibrate.markdown(res, rel))
    for line in calibrate.summary_table(res):
        print(f"calibrate blur: {line}")
    rec = res["recommended"]
    what = (f"recommended {rec}" + (f" ({' '.join(res['overrides'])})" if res["overrides"] else " (the current ranges)")
            if rec else "no candidate passes the fail gates")
    print(f"calibrate blur [{section}]: {len(res['candidates'])} candidates against {res['target']['rows']:,} "
          f"target-train rows; {what} -> {md}, {png}, {metrics} [{time.perf_counter() - t0:.1f} s]")


RUNS = Path("runs")
EVAL = Path("eval")
_SYNTH_OF = {"images": {"synth": "blur", "narrow": "blur_narrow"}, "audio": {"synth": "mix", "narrow": "mix_narrow"}}


def _train_jobs(exp_jobs: int, cfg: dict) -> tuple[int, list[str] | None]:
    """(runs side by side, GPU ids to pin them to or None) for ``shiftlab train --all``.

    ``experiment.jobs`` 0 = auto: one run per GPU when CUDA is used (``device`` auto/cuda), else
    CPU cores // ``num_threads``. On CUDA each slot gets its own GPU (``CUDA_VISIBLE_DEVICES``)."""
    import os

    import torch

    gpus = None
    if str(cfg.get("device", "auto")) in ("auto", "cuda") and torch.cuda.is_available():
        visible = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
        gpus = visible or [str(i) for i in range(torch.cuda.device_count())]
    if exp_jobs:
        return int(exp_jobs), gpus
    if gpus:
        return len(gpus), gpus
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, int(cfg.get("num_threads") or cores))), None


def cmd_train_all(args) -> None:
    """shiftlab train --all: every variant x seed of ``experiment`` for one scenario, ``jobs`` at a time.

    Each run is its own ``shiftlab train`` process pinned to its section's ``num_threads``
    (results depend on the thread count, never on how many runs share the machine): on 2
    cores two single-thread runs side by side finish the matrix sooner than one 2-thread
    run after another (measured figure in README, "The comparison matrix, side by side").
    A run's output goes to its ``train.log``;
    this command prints one line per finished run and writes ``metrics/train/SCENARIO.json``.
    """
    import json
    import os
    import queue
    import subprocess
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from shiftlab import store

    t0 = time.perf_counter()
    sc = args.scenario
    exp = config.section("experiment", args.params)
    cfg = config.section(f"train_{sc}", args.params)
    runs = [(var, int(seed)) for var in exp["variants"] for seed in config.seeds(exp, sc)]
    jobs, gpus = _train_jobs(exp["jobs"], cfg)
    jobs = min(len(runs), jobs)
    slots: queue.Queue = queue.Queue()
    for i in range(jobs):
        slots.put(i)
    root = Path(args.out or RUNS / sc)
    logs = root.parent / f".{root.name}.logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    threads = str(cfg.get("num_threads") or "")
    if threads:  # the child pins torch itself; keep OpenMP/MKL pools at the same size
        env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)

    def one(var: str, seed: int):
        out = root / var / f"s{seed}"
        cmd = [sys.executable, "-m", "shiftlab", "--params", str(args.params), "train", "--scenario", sc,
               "--variant", var, "--seed", str(seed), "--out", str(out), "--metrics", str(out / "metrics.json")]
        if args.input:
            cmd += ["--input", args.input]
        log = logs / f"{var}_s{seed}.log"
        slot = slots.get()
        try:
            env_run = dict(env)
            if gpus:  # slot i -> GPU i (round robin when there are more slots than GPUs)
                env_run["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
            with open(log, "w") as fh:
                rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env_run).returncode
        finally:
            slots.put(slot)
        text = log.read_text(errors="replace").replace("\r", "\n").strip().splitlines()
        return var, seed, rc, log, (text[-1] if text else "")

    print(f"train --all [{sc}]: {len(runs)} runs ({', '.join(exp['variants'])} x seeds "
          f"{', '.join(map(str, config.seeds(exp, sc)))}), {jobs} at a time, {threads or 'default'} thread(s) each",
          flush=True)
    failed = []
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futs = [pool.submit(one, var, seed) for var, seed in runs]
        for i, fut in enumerate(as_completed(futs), 1):
            var, seed, rc, log, last = fut.result()
            print(f"  [{i}/{len(runs)}] {var} s{seed}: {last if rc == 0 else f'FAILED (exit {rc}), see {log}'}",
                  flush=True)
            if rc != 0:
                failed.append((var, seed, log, last))
    if failed:
        var, seed, log, last = failed[0]
        raise ShiftlabError(f"train --all [{sc}]: {len(failed)} of {len(runs)} runs failed; first {var} s{seed}: "
                            f"{last.removeprefix('shiftlab: error: ')} (log {log})")
    summary = {var: {f"s{seed}": json.loads((root / var / f"s{seed}" / "metrics.json").read_text())
                     for seed in config.seeds(exp, sc)} for var in exp["variants"]}
    metrics = Path(args.metrics or METRICS / "train" / f"{sc}.json")
    with store.outputs(metrics) as tx:
        tx.write_json(metrics, summary)
    for var, seed in runs:  # the logs travel with their runs
        os.replace(logs / f"{var}_s{seed}.log", root / var / f"s{seed}" / "train.log")
    logs.rmdir()
    print(f"train --all [{sc}]: {len(runs)} runs -> {root}, {metrics} [{time.perf_counter() - t0:.1f} s]")


def cmd_train(args) -> None:
    """shiftlab train: one run (scenario x variant x seed) of the comparison matrix."""
    from shiftlab import store
    from shiftlab.datasets import splits as splits_mod
    from shiftlab.train import trainer

    if args.all:
        if args.variant or args.seed is not None or args.synthetic:
            raise ShiftlabError("train: --all trains every variant x seed of params experiment; "
                                "drop --variant / --seed / --synthetic")
        return cmd_train_all(args)
    if not args.variant:
        raise ShiftlabError("train: give --variant (one run) or --all (every variant x seed of experiment)")
    sc, var = args.scenario, args.variant
    cfg = dict(config.section(f"train_{sc}", args.params))
    split_cfg = config.section(f"split_{sc}", args.params)
    if args.seed is not None:
        cfg["seed"] = int(args.seed)
    src = Path(args.input or SPLITS / sc)
    parts = store.load(src, "split dataset", f"run `shiftlab split {sc}` first")
    if var != "nosynth":
        syn_path = Path(args.synthetic or SYNTH / _SYNTH_OF[sc][var])
        syn = store.load(syn_path, "synthetic rows", "run the synthesis stage first")
        parts = splits_mod.attach_synthetic(parts, syn, split_cfg)
        splits_mod.check(parts)
    else:
        cfg["rows"] = "real"
    out = Path(args.out or RUNS / sc / var / f"s{cfg['seed']}")
    metrics = Path(args.metrics or METRICS / "train" / f"{sc}_{var}_s{cfg['seed']}.json")
    trainer.main_train(cfg, parts, out, metrics, live_dir=out / "live", predictions_path=out / "predictions.npz",
                       progress=True)


def cmd_evaluate(args) -> None:
    """shiftlab evaluate: every run of a scenario, the decomposition and the seed-paired verdicts (on test)."""
    t0 = time.perf_counter()
    from shiftlab import store
    from shiftlab.train import evaluate, trainer

    sc = args.scenario
    cfg = evaluate.for_scenario(config.section("evaluate", args.params), sc)
    exp = config.section("experiment", args.params)
    runs_dir = Path(args.runs or RUNS / sc)
    out_dir = Path(args.out or EVAL / sc)
    preds: dict = {}
    results: dict = {}
    names = None
    for var in exp["variants"]:
        for seed in config.seeds(exp, sc):
            p, names = trainer.load_predictions(runs_dir / var / f"s{seed}" / "predictions.npz")
            preds.setdefault(var, {})[str(seed)] = p
    splits = ("test", "dev")
    # evaluation-only check splits (schema.CHECK_SPLITS, e.g. the codrivers): scored and compared like test, reported
    # on their own; every run must have them, or none
    checks = []
    for cs in evaluate.CHECK_SPLITS:
        have = [(v, sd) for v, by in preds.items() for sd, p in by.items() if cs in p and len(p[cs]["y"])]
        if not have:
            continue
        lack = [f"{v} s{sd}" for v, by in preds.items() for sd, p in by.items() if (v, sd) not in have]
        if lack:
            raise ShiftlabError(f"evaluate {sc}: runs {', '.join(lack)} have no {cs} predictions but other runs do; "
                                f"retrain them on the current splits, so every run is scored on the same sets")
        checks.append(cs)
    check_info = {}
    for cs in checks:
        v0, sd0 = next((v, sd) for v, by in preds.items() for sd in by)
        grp = preds[v0][sd0][cs].get("group")
        check_info[cs] = {"rows": int(len(preds[v0][sd0][cs]["y"])),
                          "groups": sorted({str(g) for g in grp}) if grp is not None else [],
                          "min_groups": cfg["min_groups"]}
        check_info[cs]["why_inconclusive"] = evaluate.few_groups_text(cs, check_info[cs]["groups"],
                                                                      cfg["min_groups"], "speakers")
    all_splits = splits + tuple(checks)
    metrics_path = Path(args.metrics or METRICS / f"evaluate_{sc}.json")
    report_path = Path(args.report or REPORTS / f"evaluate_{sc}.md")
    # all three outputs (eval dir, metrics, report) commit together or not at all
    with store.outputs(out_dir, metrics_path, report_path) as tx:
        tmp = tx.dir(out_dir)
        flat: dict = {}
        for var, by_seed in preds.items():
            for seed, p in by_seed.items():
                res = evaluate.evaluate(p, names, cfg)
                results.setdefault(var, {})[seed] = res
                evaluate.plots(res, Path(tmp) / f"{var}_s{seed}")
                for k, v in evaluate.metrics(res).items():
                    flat[f"{var}/s{seed}/{k}"] = v
        unfit = evaluate.unfit_runs(results, cfg)
        variants = {sp: {var: evaluate.variant_error(by_seed, names, cfg, split=sp, where=f"runs[{var!r}]")
                         for var, by_seed in preds.items()} for sp in all_splits}
        pairs = [(v, "nosynth") for v in preds if v != "nosynth"] if "nosynth" in preds else []
        if "synth" in preds and "narrow" in preds:  # did the narrow synthesis transfer worse than the default?
            pairs.append(("narrow", "synth"))
        compare = evaluate.compare_all(preds, names, cfg, pairs=pairs, splits=all_splits, unfit=unfit) if pairs else {}
        for sp, by_name in compare.items():
            for name, c in by_name.items():
                for k, v in evaluate.compare_metrics(c).items():
                    flat[f"compare/{sp}/{name}/{k}"] = v
        for sp, by_var in variants.items():
            for var, d in by_var.items():
                flat[f"variant/{sp}/{var}/error"] = d["error"]
                flat[f"variant/{sp}/{var}/error_low"] = d["low"]
                flat[f"variant/{sp}/{var}/error_high"] = d["high"]
        flat["unfit_runs"] = sum(len(v) for v in unfit.values())
        for cs, info in check_info.items():
            flat[f"check/{cs}/rows"] = info["rows"]
            flat[f"check/{cs}/groups"] = len(info["groups"])
        doc = {"scenario": sc, "label_names": names, "primary_split": splits[0], "splits": list(splits),
               "check_splits": list(checks), "check": check_info,
               "config": cfg, "optimal_error": cfg["optimal_error"], "optimal_error_proxy": cfg["optimal_error_proxy"],
               "fit_rule": {"fit_max_chance_share": cfg["fit_max_chance_share"],
                            "text": (f"a run did not fit when the train error of its selected checkpoint is above "
                                     f"{cfg['fit_max_chance_share']:g} x chance error (1 - 1/{len(names)} = "
                                     f"{100 * (1 - 1 / len(names)):.1f}%), i.e. above "
                                     f"{100 * cfg['fit_max_chance_share'] * (1 - 1 / len(names)):.1f}%")},
               "unfit": unfit, "runs": results, "variants": variants, "compare": compare}
        store.write_json(Path(tmp) / "results.json", doc)
        tx.write_json(metrics_path, flat)
        tx.write_text(report_path, _evaluate_markdown(sc, compare, variants, unfit, doc, results, splits, cfg))
    n = sum(len(v) for v in preds.values())
    lines = [f"{c['treatment']} - {c['baseline']} {c['verdict']}" for c in compare.get(splits[0], {}).values()]
    extra = ""
    for cs in checks:
        cl = [f"{c['treatment']} - {c['baseline']} {c['verdict']}" for c in compare.get(cs, {}).values()]
        extra += (f"; {cs} ({check_info[cs]['rows']:,} rows, {len(check_info[cs]['groups'])} speakers) verdicts: "
                  + ("; ".join(cl) or "none"))
    print(f"evaluate {sc}: {n} runs; test verdicts: " + ("; ".join(lines) or "none") + extra
          + f"; unfit runs: {flat['unfit_runs']} -> {out_dir} [{time.perf_counter() - t0:.1f} s]")


def _evaluate_markdown(sc, compare, variants, unfit, doc, results, splits, cfg=None) -> str:
    from shiftlab.train import evaluate

    md = [f"# Evaluation: {sc}", ""]
    if compare:
        md.append(evaluate.compare_markdown({sp: compare[sp] for sp in splits if sp in compare},
                                            {sp: variants[sp] for sp in splits if sp in variants},
                                            title=f"Verdicts ({sc}): does the synthesis help?", primary=splits[0]))
        md.append("")
    for cs in doc.get("check_splits", []):  # the evaluation-only check sets, each on its own
        info = doc["check"][cs]
        md.append(evaluate.check_markdown(cs, compare.get(cs, {}), variants.get(cs, {}), info["groups"],
                                          cfg or doc["config"], rows=info["rows"]))
        md.append("")
    md.append(f"Runs that did not fit ({doc['fit_rule']['text']}): "
              + (", ".join(f"{v} s{s}" for v, ss in unfit.items() for s in ss) or "none") + ".")
    md.append("")
    for var, by_seed in results.items():
        first = next(iter(by_seed))
        md.append(evaluate.markdown(by_seed[first], title=f"{var}, seed {first}"))
        md.append("")
    return "\n".join(md)


def cmd_report(args) -> None:
    t0 = time.perf_counter()
    from shiftlab.train import report

    cfg = config.section("report", args.params)
    if args.readme:  # README's results section from the committed metrics files (no report rebuilt)
        changed = report.update_readme(args.readme, ".", cfg)
        print(f"report: {args.readme} results section {'updated' if changed else 'already up to date'}")
        return
    out = Path(args.out or REPORTS / "report")
    res = report.build(root=".", cfg=cfg, out_dir=out)
    for line in res["summary"]:
        print(f"report: {line}")
    print(f"report: {out / 'report.md'}, {out / 'report.html'} [{time.perf_counter() - t0:.1f} s]")


def cmd_sweep(args) -> None:
    """shiftlab sweep cars: one ``dvc exp run`` per bank size (``--run``), then the table, plot and metrics."""
    import shutil
    import subprocess

    from shiftlab import store
    from shiftlab.train import sweep

    t0 = time.perf_counter()
    cfg = sweep.check_cfg(config.section("sweep_cars", args.params))
    out_dir = Path(cfg["dir"])
    if args.run:
        dvc = shutil.which("dvc")
        if dvc is None:
            raise ShiftlabError("sweep cars --run: the dvc command is not on PATH (make setup installs it)")
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, check=False)
        if dirty.returncode != 0 or dirty.stdout.strip():
            raise ShiftlabError("sweep cars --run: the git workspace has uncommitted changes to tracked files; "
                                "commit or stash them first (each point runs `dvc exp run` in the workspace, and the "
                                "sweep restores it afterwards with `git checkout` + `dvc checkout`)")
        try:
            for p in sweep.points(cfg):
                print(f"sweep cars: {p['name']}: {p['n_cars']} car(s) x {p['drives_per_car']} drive(s) x "
                      f"{p['seconds_per_drive']:.3g} s -> dvc {' '.join(sweep.exp_args(p, cfg))}", flush=True)
                r = subprocess.run([dvc, *sweep.exp_args(p, cfg)], check=False)
                if r.returncode != 0:
                    raise ShiftlabError(f"sweep cars: dvc exp run of {p['name']} failed (exit {r.returncode})")
                dest = out_dir / p["name"]
                with store.outputs(dest) as tx:
                    tmp = Path(tx.dir(dest))
                    for f in ("check_audio.json", "evaluate_audio.json"):
                        shutil.copyfile(METRICS / f, tmp / f)
                    shutil.copyfile(METRICS / "train" / "audio.json", tmp / "train_audio.json")
                    store.write_json(tmp / "point.json", p)
        finally:
            subprocess.run(["git", "checkout", "--", "."], check=False)
            subprocess.run([shutil.which("dvc") or "dvc", "checkout", "-q"], check=False)
    res = sweep.collect(out_dir, cfg)
    md, png, metrics = Path(cfg["report"]), Path(cfg["plot"]), Path(cfg["metrics"])
    sweep.plot(res, png)
    store.write_json(metrics, res)
    rel = png.name if png.parent == md.parent else str(png)
    store.write_text(md, sweep.markdown(res, rel))
    for r in res["points"]:
        d = r.get("synth_minus_nosynth") or {}
        print(f"sweep cars: {r['n_cars']:>2} car(s): check {r['check']['verdict']}, synth test error "
              f"{100 * r['test']['synth']['error']:.1f}%"
              + (f", synth - nosynth {100 * d['difference']:+.1f} pts ({d.get('verdict')})" if d else ""))
    print(f"sweep cars: {len(res['points'])} points -> {md}, {png}, {metrics} [{time.perf_counter() - t0:.1f} s]")


def cmd_ladder(args) -> None:
    """shiftlab ladder: synthetic sets of graded diversity from the default generators, checked; + check vs transfer."""
    import json

    from shiftlab import ladder, store

    t0 = time.perf_counter()
    cfg = ladder.check_cfg(config.section("ladder", args.params))
    what = args.what
    paths = {"images": Path(cfg["metrics_images"]), "audio": Path(cfg["metrics_audio"])}
    res = {}

    def log(msg):
        print(msg, flush=True)

    if what in ("images", "all"):
        splits = store.load(Path(args.input_images or SPLITS / "images"), "split dataset",
                            "run `shiftlab split images` first")
        res["images"] = ladder.run_images(splits, config.section("synth_blur", args.params),
                                          config.section("check_images", args.params), cfg, log=log)
        store.write_json(paths["images"], res["images"])
    if what in ("audio", "all"):
        splits = store.load(Path(args.input_audio or SPLITS / "audio"), "split dataset", "run `shiftlab split audio` first")
        noise = store.load(PREPARED / "noise", "prepared noise", "run `shiftlab prepare noise` first")
        bank_path = SYNTH / "mix_bank"
        default_bank = (store.load(bank_path, "noise bank", "run `shiftlab mix` first")
                        if cfg["audio"]["default_bank"] else None)
        tr = splits["train"]
        tgt = tr.select([i for i, d in enumerate(tr["domain"]) if d == "target"])
        tnoise = noise.select([i for i, d in enumerate(noise["domain"]) if d == "target"])
        res["audio"] = ladder.run_audio(splits, noise, config.section("synth_mix", args.params),
                                        config.section("check_audio", args.params), cfg, default_bank=default_bank,
                                        target_rows=tgt, target_noise=tnoise if len(tnoise) else None, log=log)
        store.write_json(paths["audio"], res["audio"])
    for k in ("images", "audio"):  # the other half: the committed results, when there
        if k not in res and paths[k].is_file():
            res[k] = json.loads(paths[k].read_text())
    synthetic = {}
    for name in ("blur", "blur_narrow"):
        if (SYNTH / name).is_dir():
            synthetic[name] = store.load(SYNTH / name, "synthetic rows", "")
    trans = ladder.transfer(".", config.section("check_images", args.params),
                            config.section("check_audio", args.params), synthetic)
    md, png = Path(cfg["report"]), Path(cfg["plot"])
    ladder.plot(res.get("images"), res.get("audio"), png)
    rel = png.name if png.parent == md.parent else str(png)
    store.write_text(md, ladder.markdown(res.get("images"), res.get("audio"), trans, rel))
    store.write_json(paths["images"].parent / "ladder_transfer.json", trans)
    print(f"ladder: {ladder.transfer_sentence(trans)}")
    print(f"ladder [{what}]: -> {md}, {png}, {', '.join(str(paths[k]) for k in res)} [{time.perf_counter() - t0:.1f} s]")


def cmd_models(args) -> None:
    from shiftlab.train import models

    try:
        shape = tuple(int(x) for x in args.input.split(","))
    except ValueError:
        raise ShiftlabError(f"--input {args.input!r}: expected C,H,W, e.g. 1,28,28") from None
    if len(shape) != 3:
        raise ShiftlabError(f"--input {args.input!r}: expected C,H,W, e.g. 1,28,28")
    print(models.table(shape, num_classes=args.classes))


def _parse_shard(text):
    if not text:
        return None
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ShiftlabError(f"--shard {text!r}: expected I/N, e.g. 0/4") from None
    if not (n >= 1 and 0 <= i < n):
        raise ShiftlabError(f"--shard {text!r}: expected 0 <= I < N")
    return i, n


def cmd_merge(args) -> None:
    """shiftlab merge OUT IN...: concatenate datasets (e.g. synthesis shards, in shard order)."""
    t0 = time.perf_counter()
    import datasets as hfds

    from shiftlab import store

    parts = [store.load(Path(p), "dataset to merge") for p in args.inputs]
    if any(isinstance(p, hfds.DatasetDict) for p in parts):
        raise ShiftlabError("merge: inputs must be datasets of rows (e.g. synthesis shards), not split DatasetDicts")
    ds = hfds.concatenate_datasets(parts).with_format(None)  # no format state: same bytes as one unsharded save
    ids = ds["id"]
    if len(set(ids)) != len(ids):
        raise ShiftlabError("merge: the inputs share row ids (the same shard twice?)")
    with store.outputs(args.out) as tx:
        store.save(ds, tx[args.out])
    print(f"merge: {len(ds):,} rows from {len(parts)} inputs -> {args.out} [{time.perf_counter() - t0:.1f} s]")


def cmd_params(args) -> None:
    import yaml

    if args.schema is not None:  # JSON Schema of params.yaml (pydantic), for editors and the README's knob tables
        import json

        from shiftlab import paramschema

        text = json.dumps(paramschema.json_schema(), indent=2) + "\n"
        if args.schema == "-":
            sys.stdout.write(text)
        else:
            Path(args.schema).write_text(text, encoding="utf-8")
            print(f"params: JSON Schema -> {args.schema}")
        return
    data = config.defaults() if args.defaults else config.load(args.params)
    if args.section:
        if args.section not in data:
            raise ShiftlabError(f"no params section {args.section!r}; sections: {', '.join(data)}")
        data = {args.section: data[args.section]}
    print(yaml.safe_dump(data, sort_keys=False, default_flow_style=False).rstrip())


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shiftlab", description=__doc__.split("\n\n")[0])
    p.add_argument("--params", default=config.PARAMS_FILE, help="params file (default: params.yaml)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sp = sub.add_parser("prepare", help="build a data source (images, speech, noise) as a Dataset on disk")
    sp.add_argument("what", choices=["images", "speech", "noise", "target"])
    sp.add_argument("--out", help="output directory (default data/prepared/WHAT)")
    sp.set_defaults(func=cmd_prepare)

    sp = sub.add_parser("split", help="train / train_dev / dev / test splits with weights and a report")
    sp.add_argument("what", choices=["images", "audio"])
    sp.add_argument("--input", help="prepared dataset (default data/prepared/images or data/prepared/speech)")
    sp.add_argument("--out", help="output directory (default data/splits/WHAT)")
    sp.add_argument("--metrics", help="metrics JSON (default metrics/split_WHAT.json)")
    sp.add_argument("--report", help="markdown report (default reports/split_WHAT.md)")
    sp.set_defaults(func=cmd_split)

    sp = sub.add_parser("synth", help="synthetic training rows (blur: motion-blurred copies of sharp source images)")
    sp.add_argument("what", choices=["blur"])
    sp.add_argument("--section", help="params section (default synth_blur; e.g. synth_blur_narrow)")
    sp.add_argument("--input", help="split dataset (default data/splits/images); or ANY saved image dataset or "
                    "class folder of images: every row gets blurred copies")
    sp.add_argument("--split", help="with --input: the split of a saved DatasetDict to copy (every row of it)")
    sp.add_argument("--out", help="output directory (default data/synth/<section without synth_>; for any other "
                    "--input: <input>_<section without synth_>)")
    sp.add_argument("--shard", help="I/N: make only the I-th of N blocks of rows (merge with `shiftlab merge`)")
    sp.set_defaults(func=cmd_synth)

    sp = sub.add_parser("merge", help="concatenate datasets, e.g. synthesis shards in shard order")
    sp.add_argument("out", help="output directory")
    sp.add_argument("inputs", nargs="+", help="datasets to concatenate, in order")
    sp.set_defaults(func=cmd_merge)

    sp = sub.add_parser("mix", help="synthetic training speech: car noise mixed into clean source speech")
    sp.add_argument("--section", help="params section (default synth_mix; e.g. synth_mix_narrow)")
    sp.add_argument("--input", help="split dataset (default data/splits/audio); or ANY saved speech dataset or "
                    "class folder of speech: every row gets noisy copies")
    sp.add_argument("--split", help="with --input: the split of a saved DatasetDict to copy (every row of it)")
    sp.add_argument("--noise", help="prepared noise dataset (default data/prepared/noise)")
    sp.add_argument("--out", help="output directory (default data/synth/<section without synth_>; for any other "
                    "--input: <input>_<section without synth_>)")
    sp.add_argument("--bank-out", help="where the noise bank is saved (default <out>_bank)")
    sp.set_defaults(func=cmd_mix)

    sp = sub.add_parser("check", help="diversity report of synthetic rows, gated by params thresholds")
    sp.add_argument("what", choices=["images", "audio"])
    sp.add_argument("--synthetic", help="synthetic rows (default data/synth/blur or data/synth/mix)")
    sp.add_argument("--input", help="split dataset (default data/splits/images or data/splits/audio)")
    sp.add_argument("--bank", help="audio: the noise bank (default <synthetic>_bank)")
    sp.add_argument("--name", help="output name (default check_<what>[_<variant>])")
    sp.add_argument("--strict", action="store_true", help="exit with status 2 when a fail gate fails")
    sp.set_defaults(func=cmd_check)

    sp = sub.add_parser("calibrate", help="score candidate synthesis ranges against the target rows of train")
    sp.add_argument("what", choices=["blur"])
    sp.add_argument("--section", help="params section (default calibrate_blur)")
    sp.add_argument("--input", help="split dataset (default data/splits/images); only train and train_dev are read")
    sp.add_argument("--report", help="markdown (default: the section's report)")
    sp.add_argument("--plot", help="PNG of the realism/diversity trade-off (default: the section's plot)")
    sp.add_argument("--metrics", help="JSON (default: the section's metrics)")
    sp.set_defaults(func=cmd_calibrate)

    sp = sub.add_parser("train", help="train one run of the comparison (scenario x variant x seed), or --all")
    sp.add_argument("--scenario", choices=["images", "audio"], required=True)
    sp.add_argument("--variant", choices=["nosynth", "synth", "narrow"])
    sp.add_argument("--all", action="store_true",
                    help="every variant x seed of params experiment, experiment.jobs at a time (the dvc.yaml stage)")
    sp.add_argument("--seed", type=int, help="run seed (default: the section's seed)")
    sp.add_argument("--input", help="split dataset (default data/splits/SCENARIO)")
    sp.add_argument("--synthetic", help="synthetic rows to attach (default data/synth/<blur|mix>[_narrow])")
    sp.add_argument("--out", help="run directory (default runs/SCENARIO/VARIANT/sSEED; with --all runs/SCENARIO)")
    sp.add_argument("--metrics", help="metrics JSON (default metrics/train/SCENARIO_VARIANT_sSEED.json; "
                    "with --all metrics/train/SCENARIO.json)")
    sp.set_defaults(func=cmd_train)

    sp = sub.add_parser("evaluate", help="errors with CIs, MLY decomposition, synth vs nosynth verdicts")
    sp.add_argument("--scenario", choices=["images", "audio"], required=True)
    sp.add_argument("--runs", help="runs directory (default runs/SCENARIO)")
    sp.add_argument("--out", help="output directory (default eval/SCENARIO)")
    sp.add_argument("--metrics", help="metrics JSON (default metrics/evaluate_SCENARIO.json)")
    sp.add_argument("--report", help="markdown (default reports/evaluate_SCENARIO.md)")
    sp.set_defaults(func=cmd_evaluate)

    sp = sub.add_parser("report", help="the run's report: markdown + self-contained HTML + PNGs")
    sp.add_argument("--out", help="output directory (default reports/report)")
    sp.add_argument("--readme", metavar="FILE", help="instead: regenerate FILE's results section (between its "
                    "results markers) from the run's metrics files, e.g. --readme README.md")
    sp.set_defaults(func=cmd_report)

    sp = sub.add_parser("sweep", help="the book's trap as a curve: test error against distinct cars in the noise bank")
    sp.add_argument("what", choices=["cars"])
    sp.add_argument("--run", action="store_true",
                    help="run every point (one `dvc exp run` each, in the workspace, restored afterwards); "
                         "without it: only rebuild the table and plot from the saved points")
    sp.set_defaults(func=cmd_sweep)

    sp = sub.add_parser("ladder", help="the diversity ladder: graded synthetic sets from the default generators, "
                        "checked with the default gates, and the check's verdicts next to the trained test errors")
    sp.add_argument("what", nargs="?", choices=["images", "audio", "all", "report"], default="all",
                    help="which ladder to build and check (default all); report: only rebuild the report, plot and "
                         "check-vs-transfer table from the saved ladder results")
    sp.add_argument("--input-images", help="image split dataset (default data/splits/images)")
    sp.add_argument("--input-audio", help="audio split dataset (default data/splits/audio)")
    sp.set_defaults(func=cmd_ladder)

    sp = sub.add_parser("models", help="the model registry: parameters, MACs and FLOPs (2 per MAC) per model")
    sp.add_argument("--input", default="1,28,28", help="input shape C,H,W (default 1,28,28)")
    sp.add_argument("--classes", type=int, default=10, help="number of classes (default 10)")
    sp.set_defaults(func=cmd_models)

    sp = sub.add_parser("params", help="print the validated params with defaults filled in")
    sp.add_argument("--defaults", action="store_true", help="print the built-in defaults instead")
    sp.add_argument("--section", help="only this section")
    sp.add_argument("--schema", nargs="?", const="-", metavar="FILE",
                    help="write the JSON Schema of params.yaml to FILE (default: stdout) instead")
    sp.set_defaults(func=cmd_params)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except ShiftlabError as e:
        print(f"shiftlab: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `shiftlab params | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("shiftlab: interrupted; previous outputs are left intact", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
