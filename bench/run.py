"""Run the benchmarks, write ``bench/results.json`` and the markdown table README shows.

    python bench/run.py [--quick] [--only blur,mix,train] [--anchor] [--readme] [--out-dir bench]
    make bench            # = python bench/run.py --quick --readme

Runs ``bench/blur.py``, ``bench/mix.py`` and ``bench/train.py`` (each in this process, in that
order, ``--quick`` when given; ``train.py`` with ``--threads 1``), each of which checks what it
timed and stops on a failed check. ``--anchor`` also runs ``bench/anchor.py --preset cpu``
(about 18 minutes on one thread; ``--anchor-args`` adds options); without it the table shows
the last anchor result found in ``metrics/anchor_cpu.json``, marked as not rerun.

Writes ``<out-dir>/results.json`` (everything, with the machine, library versions and load
averages) and ``<out-dir>/results.md`` (the table); ``--readme`` also replaces README's speed
table, between the ``<!-- bench:begin -->`` and ``<!-- bench:end -->`` markers, with it. CUDA
rows appear when a GPU is present (each script adds them).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import common  # noqa: E402

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
LIBS = ("torch", "torchaudio", "numpy", "albumentations", "opencv-python-headless", "audiomentations",
        "torch-audiomentations")


def _f(v, spec=",.0f") -> str:
    return "-" if v is None else format(v, spec)


def _target(t: dict, unit: str = "x") -> str:
    if t["met"]:
        return f">= {t['target']:g}{unit}: **met**"
    return f">= {t['target']:g}{unit}: **not met** ({t['miss_factor']:g}x short)"


def markdown(res: dict) -> str:
    m, v = res["machine"], res["versions"]
    lines = [
        f"Measured {res['date']} with `{res['command']}` on {m['cpu']} ({m['cores']} cores"
        + (f", GPU: {m['gpu']}" if m.get("cuda") else ", no GPU") + "); every CPU row on **1 thread**; "
        f"load average {res['load_avg'][0]} at the start, {res['load_avg'][1]} at the end (other jobs share this "
        "machine: compare ratios, which come from interleaved repeats in one process, not absolute rates). "
        + ", ".join(f"{k} {val}" for k, val in v.items()) + ".",
        "",
        "| benchmark | path | result | vs baseline (per core) | target |",
        "|---|---|---:|---:|---|",
    ]
    blur = res.get("blur")
    if blur:
        for sc in blur["scenarios"]:
            ks = sc["kernel_sizes"]
            head = (f"blur {sc['image']}, kernels {ks['min']}-{ks['max']} px (median {ks['median']}), "
                    f"batches of {sc['batch']}, end to end = sample + render + apply")
            for i, row in enumerate(sc["rows"]):
                tgt = _target(sc["target"]) if row["key"] == "ours_bb" else ""
                lines.append(f"| {head if i == 0 else ''} | {row['path']}"
                             f"{' (GPU)' if row['threads'] == 'gpu' else ''} | {_f(row['img_per_s'])} img/s | "
                             f"{row['x_motionblur_per_core']:.2f}x MotionBlur | {tgt} |")
        st = blur.get("stage")
        if st:
            lines.append(f"| `synth blur` stage function ({st['what']}) | batched kernels (now) | "
                         f"{_f(st['rows_per_s'])} rows/s | {st['speedup']:.2f}x the per-row stage "
                         f"({_f(st['rows_per_s_before'])} rows/s) | output byte-identical: "
                         f"{'yes' if st['output_byte_identical_to_per_row'] else '**no**'} |")
    mix = res.get("mix")
    if mix:
        head = (f"mix {mix['clip_seconds']:g} s clips at 16 kHz, bank {mix['bank_clips']} clips "
                f"({mix['bank_seconds']:g} s), SNR {mix['snr_db'][0]:g}-{mix['snr_db'][1]:g} dB")
        t = mix["targets"]
        for i, row in enumerate(mix["rows"]):
            tgt = ""
            if row["key"] == "fly":
                tgt = (_target(t["mixer_x_audiomentations"]) + "; ahead of torch-audiomentations: "
                       + ("**met**" if t["mixer_x_torch_audiomentations"]["met"] else "**not met**"))
            elif row["key"] == "stage":
                tgt = _target(t["stage_x_audiomentations"])
            lines.append(f"| {head if i == 0 else ''} | {row['path']} | {_f(row['x_realtime'])}x realtime | "
                         f"{row['x_audiomentations_per_core']:.2f}x audiomentations, "
                         f"{row['x_torch_audiomentations']:.2f}x torch-audiomentations | {tgt} |")
    tr = res.get("train")
    if tr:
        by = {(r["device"], r["model"], r["compile"], r["channels_last"]): r for r in tr["results"]}
        for (dev, model, comp, cl), r in by.items():
            e = r.get("extra") or {}
            what = f"{'compiled' if comp else 'eager'}, {'channels_last' if cl else 'contiguous'}"
            if r.get("skipped"):
                res_s, rel = r["skipped"], ""
            else:
                base = by.get((dev, model, False, False))
                res_s = (f"{_f(r['samples_per_s'])} samples/s (warm-up {e.get('warmup_steps')} steps, "
                         f"{e.get('compiles_in_warmup')} compiles; {e.get('compiles_while_timed')} while timed)")
                rel = (f"{r['samples_per_s'] / base['samples_per_s']:.2f}x eager contiguous"
                       if base and base.get("samples_per_s") else "")
            lines.append(f"| train step, batch {tr['batch']}, {dev} | {model} {what} | {res_s} | {rel} | |")
    an = res.get("anchor")
    if an:
        lo, hi = an["test_error_ci"]
        verdict = an.get("target_verdict") or ("met" if hi <= an["target_error"] else "inconclusive")
        src = "" if an.get("_rerun") else f" (from `{an.get('_file')}`, not rerun)"
        lines.append(f"| Fashion-MNIST anchor, {an['preset']} preset{src} | {an['model']}, "
                     f"{an['train_config']['epochs']} epochs | test error {100 * an['test_error']:.2f}% "
                     f"(95% CI {100 * lo:.2f}-{100 * hi:.2f}%) | | <= {100 * an['target_error']:.1f}% for the whole "
                     f"interval: **{'met' if verdict == 'met' else 'not met'}** |")
    prof = []
    if blur:
        for sc in blur["scenarios"]:
            p = sc["profile"]["us_per_image"]
            floor = sc["profile"].get("rng_floor_us_per_image")
            prof.append(f"* blur {sc['image']}, one end-to-end batch of {sc['profile']['batch']}, us per image: "
                        + ", ".join(f"{k} {val:g}" for k, val in p.items())
                        + (f"; the numpy generator calls alone that the shake recipes require (seed the "
                           f"generator, ~1,000 normals, ~1,000 uniforms per shake kernel): {floor:g}" if floor else ""))
    if mix:
        p = mix["profile"]["us_per_clip"]
        prof.append(f"* mix, one fresh-epoch batch of {mix['profile']['batch']} clips, us per clip: "
                    + ", ".join(f"{k} {val:g}" for k, val in p.items()))
    if prof:
        lines += ["", "Where the time goes (same run):", ""] + prof
    lines += ["", "Checks in the same run: " + "; ".join(res["checks"]) + "."]
    return "\n".join(lines) + "\n"


def _anchor_from_file() -> dict | None:
    path = os.path.join(common.REPO, "metrics", "anchor_cpu.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        doc = json.load(f)
    doc["_file"] = os.path.relpath(path, common.REPO)
    return doc


def update_readme(md: str, path: str) -> bool:
    with open(path) as f:
        text = f.read()
    if BEGIN not in text or END not in text:
        common.eprint(f"bench/run.py: {path} has no {BEGIN} ... {END} markers; README not updated")
        return False
    a = text.index(BEGIN) + len(BEGIN)
    b = text.index(END)
    with open(path, "w") as f:
        f.write(text[:a] + "\n" + md + text[b:])
    return True


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="each script's --quick")
    ap.add_argument("--only", default="blur,mix,train", help="comma-separated: blur, mix, train")
    ap.add_argument("--anchor", action="store_true", help="also run bench/anchor.py --preset cpu (~18 min)")
    ap.add_argument("--anchor-args", default="", help="extra arguments for bench/anchor.py")
    ap.add_argument("--out-dir", default=HERE)
    ap.add_argument("--readme", action="store_true", help="replace README's speed table with the result")
    args = ap.parse_args(argv)
    only = [s for s in args.only.split(",") if s]
    bad = set(only) - {"blur", "mix", "train"}
    if bad:
        ap.error(f"--only: unknown {', '.join(sorted(bad))}")
    cmd = "python bench/run.py " + " ".join(argv if argv is not None else sys.argv[1:])
    import torch

    res: dict = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "command": cmd.strip(),
                 "machine": common.machine(), "versions": common.versions(*LIBS), "checks": []}
    load0 = common.load()
    t0 = time.perf_counter()
    if "blur" in only:
        import blur

        print("== bench/blur.py", flush=True)
        res["blur"] = blur.run(quick=args.quick)
        res["checks"].append("blur outputs within 1 grey level of OpenCV on the same kernels, batched kernels "
                             "bit-identical to the per-row recipe path, OnTheFlyBlur rows = regenerate, stage "
                             "output byte-identical to the per-row stage")
    if "mix" in only:
        import mix

        print("\n== bench/mix.py", flush=True)
        res["mix"] = mix.run(quick=args.quick)
        mix.print_result(res["mix"])
        res["checks"].append(f"mix outputs = gains x (speech, noise) of their recipes, SNR within "
                             f"{max(res['mix']['checks']['max_snr_error_db_ours'], 0):.1g} dB of the request "
                             "(<= 0.1 dB required), stage rows = regenerate, baselines' SNR within 0.1 dB")
    if "train" in only:
        import train

        print("\n== bench/train.py", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "train.json")
            targs = (["--quick"] if args.quick else []) + ["--threads", "1", "--out", out]
            rc = train.main(targs)
            if rc:
                return rc
            with open(out) as f:
                res["train"] = json.load(f)
        torch.set_num_threads(1)
        res["checks"].append("training losses finite and decreasing, compiled variants warmed up until a step "
                             "compiled nothing")
    if args.anchor:
        import anchor

        print("\n== bench/anchor.py", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "anchor.json")
            rc = anchor.main(["--preset", "cpu", "--threads", "1", "--out", out, *args.anchor_args.split()])
            if rc:
                return rc
            with open(out) as f:
                res["anchor"] = json.load(f)
            res["anchor"]["_rerun"] = True
    else:
        res["anchor"] = _anchor_from_file()
    res["load_avg"] = [load0, common.load()]
    res["seconds"] = round(time.perf_counter() - t0, 1)
    md = markdown(res)
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, "results.json"), "w") as f:
        json.dump(res, f, indent=1)
    with open(os.path.join(args.out_dir, "results.md"), "w") as f:
        f.write(md)
    print("\n" + md)
    if args.readme:
        update_readme(md, os.path.join(common.REPO, "README.md"))
    print(f"wrote {os.path.join(args.out_dir, 'results.json')} and results.md in {res['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
