"""The ``shiftlab`` command: one subcommand per pipeline stage.

    shiftlab prepare images|speech|noise   build a data source as a Dataset on disk
    shiftlab split images|audio            train / train_dev / dev / test + weights + report
    shiftlab synth blur [--section S]      motion-blurred synthetic rows of the train source images
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
    cfg = config.section(f"prepare_{what}", args.params)
    from shiftlab import store
    from shiftlab.datasets import schema

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

    default_in = PREPARED / ("images" if what == "images" else "speech")
    src = Path(args.input or default_in)
    ds = store.load(src, "prepared dataset", f"run `shiftlab prepare {src.name}` first")
    schema.check(ds, str(src))
    parts = splits.build(ds, cfg)
    splits.check(parts)
    rep = splits.report(parts)
    out = Path(args.out or SPLITS / what)
    metrics = Path(args.metrics or METRICS / f"{name}.json")
    md = Path(args.report or REPORTS / f"{name}.md")
    store.save(parts, out)
    store.write_json(metrics, rep)
    store.write_text(md, splits.markdown(rep, f"Split report: {what}"))
    sizes = ", ".join(f"{k} {len(v):,}" for k, v in parts.items())
    print(f"{name}: {sizes} -> {out}; report {md} [{time.perf_counter() - t0:.1f} s]")


SYNTH = Path("data/synth")


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
    splits = store.load(src, "split dataset", f"run `shiftlab split {default_in.name}` first")
    ds = mod.make_synthetic(splits, cfg, progress=True)
    out = Path(args.out or SYNTH / section.replace("synth_", "", 1))
    if len(ds):
        schema.check(ds, f"synth {args.what}")
    store.save(ds, out)
    fam = ""
    if len(ds):
        import json

        fam = ", " + _fmt_counts(json.loads(r)["family"] for r in ds["recipe"])
    print(
        f"synth {args.what} [{section}]: {len(ds):,} synthetic rows from "
        f"{len(set(ds['parent'])):,} parents{fam} -> {out} [{time.perf_counter() - t0:.1f} s]"
    )


def cmd_params(args) -> None:
    import yaml

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
    sp.add_argument("what", choices=["images", "speech", "noise"])
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
    sp.add_argument("--input", help="split dataset (default data/splits/images)")
    sp.add_argument("--out", help="output directory (default data/synth/<section without synth_>)")
    sp.set_defaults(func=cmd_synth)

    sp = sub.add_parser("params", help="print the validated params with defaults filled in")
    sp.add_argument("--defaults", action="store_true", help="print the built-in defaults instead")
    sp.add_argument("--section", help="only this section")
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
