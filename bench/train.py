"""Training throughput (samples/s) of every registry model: eager vs torch.compile, channels_last on/off.

    python bench/train.py [--quick] [--models a,b] [--device cpu|cuda] [--batch 128]
                          [--steps N] [--warmup N] [--threads N] [--max-gflop N] [--budget S] [--out JSON]

What is timed: one optimisation step of the model alone, as the trainer takes it --
``zero_grad``, forward, cross-entropy, backward, SGD (momentum 0.9, nesterov, weight
decay) ``step`` -- on a fixed random batch of ``--batch`` (128) inputs already on the
device (no data loading, no frontend). On CUDA the forward runs under bf16 autocast
(the trainer's ``amp: auto``), on CPU in float32. Each variant builds a fresh model
(``models.create(..., seed=0)``), runs ``--warmup`` steps that are not timed (the first
one includes torch.compile's compilation, reported as ``first s``), then ``--steps``
timed steps (CUDA synchronised around each); ``samples/s = batch / median step time``
(the median resists other processes on a shared machine).

Variants per model: eager / ``torch.compile`` (default mode, inductor) x contiguous /
``channels_last`` (model and input). Ratios printed per model come from this one run:
``compile`` = compiled / eager samples/s (same memory format), ``channels_last`` =
channels_last / contiguous (same compile setting); > 1 means faster.

Inputs (the layout each model is meant for, from :func:`shiftlab.train.models.describe`):
the small ResNets and ``attention_small`` / ``attention_tiny`` 1x28x28, 10 classes;
``attention56_cifar`` / ``attention92_cifar`` 3x32x32, 10 classes; ``attention56`` /
``attention92`` 3x224x224, 1000 classes. On CPU a model whose training step costs more
than ``--max-gflop`` GFLOPs (forward FLOPs x 3 x batch, from :func:`models.summary`;
default 60, i.e. the ~14-51 MFLOP small models run and the CIFAR/ImageNet layouts are
skipped) is skipped with the reason printed; raise it to time them with few steps.
``--budget`` seconds (``--quick``: 170) skip what is left, with a printed reason, once
spent (checked before each variant; eager variants run before compiled ones).
``--quick``: ``attention_tiny`` and ``preact_resnet`` (the default small attention model
and its plain baseline), 2 warmup + 5 timed steps; on CPU only the first model's
contiguous variant is compiled (a CPU inductor compile of a training step takes 1-3
minutes on 2 busy cores; a warm inductor cache in ``/tmp/torchinductor_$USER`` makes
later runs' ``first s`` much shorter).

Threads: torch's default (one per core) unless ``--threads``. On a machine shared with
other CPU-bound processes, 2 threads can be several times *slower* than 1 (OpenMP
threads wait on a descheduled sibling at every op); compare ``--threads 1``.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from shiftlab.errors import ShiftlabError
from shiftlab.train import models

QUICK_MODELS = ("attention_tiny", "preact_resnet")
VARIANTS = ((False, False), (False, True), (True, False), (True, True))  # (compile, channels_last)


@dataclass
class Result:
    device: str
    model: str
    input: str
    compile: bool
    channels_last: bool
    samples_per_s: float | None = None
    step_ms: float | None = None
    first_s: float | None = None  # first warmup step (includes compilation)
    steps: int = 0
    skipped: str | None = None
    extra: dict = field(default_factory=dict)


def natural_input(name: str) -> tuple[tuple[int, int, int], int]:
    """((C, H, W), num_classes) a registry model is meant for (28x28 when it has no input_size)."""
    d = models.describe(name)
    size = d.get("input_size") or (28, 28)
    return (int(d["in_channels"]), int(size[0]), int(size[1])), int(d["num_classes"])


def train_gflop_per_step(name: str, shape, classes: int, batch: int) -> float:
    """Forward FLOPs per sample x 3 (forward + backward) x batch, in GFLOPs."""
    return models.summary(name, shape, classes)["flops"] * 3 * batch / 1e9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_variant(name: str, device: torch.device, shape, classes: int, batch: int, compile_: bool,
                 channels_last: bool, warmup: int, steps: int) -> Result:
    """Time one (model, device, compile, channels_last) variant; see the module docstring."""
    r = Result(str(device), name, "x".join(map(str, shape)), compile_, channels_last)
    torch._dynamo.reset()
    net = models.create(name, in_channels=shape[0], num_classes=classes, seed=0, input_size=shape[1:]).to(device)
    g = torch.Generator().manual_seed(0)
    x = torch.randn((batch, *shape), generator=g).to(device)
    y = torch.randint(0, classes, (batch,), generator=g).to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    fwd = torch.compile(net) if compile_ else net
    amp = device.type == "cuda"

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = fwd(x)
        loss = F.cross_entropy(out.float(), y)
        loss.backward()
        opt.step()

    times = []
    for i in range(warmup + steps):
        _sync(device)
        t = time.perf_counter()
        step()
        _sync(device)
        dt = time.perf_counter() - t
        if i == 0:
            r.first_s = round(dt, 3)
        if i >= warmup:
            times.append(dt)
    med = statistics.median(times)
    r.steps = steps
    r.step_ms = round(1e3 * med, 2)
    r.samples_per_s = round(batch / med, 1)
    return r


def _fmt(v, spec: str) -> str:
    """``format(v, spec)``, or a right-aligned ``-`` of the spec's width for a missing value."""
    width = int("".join(ch for ch in spec.split(".")[0] if ch.isdigit()) or 0)
    return "-".rjust(width) if v is None else format(v, spec)


def print_table(results: list[Result]) -> None:
    print(f"\n{'device':7s} {'model':18s} {'input':9s} {'compile':7s} {'ch_last':7s} {'step ms':>9s} "
          f"{'samples/s':>10s} {'first s':>8s}  note")
    for r in results:
        print(f"{r.device:7s} {r.model:18s} {r.input:9s} {str(r.compile).lower():7s} "
              f"{str(r.channels_last).lower():7s} {_fmt(r.step_ms, '9.1f')} {_fmt(r.samples_per_s, '10.0f')} "
              f"{_fmt(r.first_s, '8.1f')}  {r.skipped or ''}")


def ratios(results: list[Result]) -> dict:
    """``{device: {model: {"compile/eager": {contiguous, channels_last}, "channels_last/contiguous":
    {eager, compiled}}}}`` from samples/s of one run (None where a side is missing)."""
    by = {(r.device, r.model, r.compile, r.channels_last): r.samples_per_s for r in results}
    out: dict = {}
    for dev, name in dict.fromkeys((r.device, r.model) for r in results):
        def q(a, b):
            va, vb = by.get((dev, name, *a)), by.get((dev, name, *b))
            return round(va / vb, 3) if va and vb else None

        out.setdefault(dev, {})[name] = {
            "compile/eager": {"contiguous": q((True, False), (False, False)),
                              "channels_last": q((True, True), (False, True))},
            "channels_last/contiguous": {"eager": q((False, True), (False, False)),
                                         "compiled": q((True, True), (True, False))},
        }
    return out


def print_ratios(rat: dict) -> None:
    print(f"\n{'device':7s} {'model':18s} {'compile/eager':>22s} {'channels_last/contiguous':>26s}")
    print(f"{'':7s} {'':18s} {'contig':>10s} {'ch_last':>11s} {'eager':>12s} {'compiled':>13s}")
    for dev, per in rat.items():
        for name, d in per.items():
            c, m = d["compile/eager"], d["channels_last/contiguous"]
            print(f"{dev:7s} {name:18s} {_fmt(c['contiguous'], '10.2f')} {_fmt(c['channels_last'], '11.2f')} "
                  f"{_fmt(m['eager'], '12.2f')} {_fmt(m['compiled'], '13.2f')}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help=f"models {', '.join(QUICK_MODELS)}, 2 + 5 steps, "
                    "170 s budget")
    ap.add_argument("--models", help="comma-separated registry names (default: all; --quick: "
                    f"{','.join(QUICK_MODELS)})")
    ap.add_argument("--device", choices=["cpu", "cuda"], action="append",
                    help="repeatable; default cpu, plus cuda when available")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, help="timed steps per variant (default 10, --quick 5; CUDA x3)")
    ap.add_argument("--warmup", type=int, help="untimed steps per variant (default 3, --quick 2)")
    ap.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's own choice)")
    ap.add_argument("--max-gflop", type=float, default=60.0,
                    help="CPU: skip models whose training step exceeds this many GFLOPs (default 60)")
    ap.add_argument("--no-compile", action="store_true", help="eager variants only")
    ap.add_argument("--budget", type=float, help="seconds; skip what is left once spent (--quick: 170)")
    ap.add_argument("--out", help="also write the results as JSON here")
    args = ap.parse_args(argv)
    try:
        names = args.models.split(",") if args.models else list(QUICK_MODELS if args.quick else models.names())
        known = models.names()
        for n in names:
            if n not in known:
                raise ShiftlabError(f"--models: unknown model {n!r}; known: {', '.join(known)}")
        devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
        if "cuda" in devices and not torch.cuda.is_available():
            raise ShiftlabError("--device cuda: CUDA is not available on this machine")
        if args.batch < 1:
            raise ShiftlabError(f"--batch: must be >= 1, got {args.batch}")
    except ShiftlabError as e:
        print(f"bench/train.py: error: {e}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    steps = args.steps or (5 if args.quick else 10)
    warmup = args.warmup if args.warmup is not None else (2 if args.quick else 3)
    budget = args.budget if args.budget is not None else (170.0 if args.quick else math.inf)
    variants = [v for v in VARIANTS if not (args.no_compile and v[0])]
    print(f"torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} CPUs, torch threads "
          f"{torch.get_num_threads()} (interop {torch.get_num_interop_threads()}), OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')}, cuda={torch.cuda.is_available()}"
          + (f" ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else ""))
    print(f"batch {args.batch}, {warmup} warmup + {steps} timed steps per variant (CUDA: x3 timed), "
          f"budget {budget:.0f} s")
    t0 = time.perf_counter()
    results: list[Result] = []
    for dev_name in devices:
        device = torch.device(dev_name)
        # eager variants of every model first, compiled ones last: a spent budget cuts compilation first
        plan = [(name, c, cl) for c, cl in variants for name in names]
        plan.sort(key=lambda p: p[1])
        for name, c, cl in plan:
            shape, classes = natural_input(name)
            gflop = train_gflop_per_step(name, shape, classes, args.batch)
            r = Result(str(device), name, "x".join(map(str, shape)), c, cl, extra={"gflop_per_step": gflop})
            if device.type == "cpu" and gflop > args.max_gflop:
                r.skipped = (f"skipped on CPU: {gflop:.0f} GFLOPs per training step > --max-gflop "
                             f"{args.max_gflop:g}")
            elif args.quick and c and device.type == "cpu" and (cl or name != names[0]):
                r.skipped = (f"skipped: --quick compiles only {names[0]} contiguous on CPU "
                             "(a CPU compile takes minutes)")
            elif time.perf_counter() - t0 > budget:
                r.skipped = f"skipped: time budget of {budget:.0f} s spent"
            else:
                try:
                    k = steps * (3 if device.type == "cuda" else 1)
                    r = time_variant(name, device, shape, classes, args.batch, c, cl, warmup, k)
                    r.extra = {"gflop_per_step": gflop}
                except Exception as e:  # e.g. no C++ compiler for inductor: report, keep going
                    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
                    r.skipped = f"failed: {type(e).__name__}: {msg[:100]}"
            results.append(r)
            print(f"  {r.device} {r.model} compile={str(c).lower()} channels_last={str(cl).lower()}: "
                  + (r.skipped or f"{r.samples_per_s:,.0f} samples/s (first step {r.first_s:.1f} s)"),
                  flush=True)
    order = {(n, c, cl): i for i, (n, (c, cl)) in enumerate((n, v) for n in names for v in VARIANTS)}
    results.sort(key=lambda r: (devices.index(r.device.split(":")[0]), order[(r.model, r.compile, r.channels_last)]))
    print_table(results)
    rat = ratios(results)
    print_ratios(rat)
    print(f"\ntorch threads {torch.get_num_threads()}; total {time.perf_counter() - t0:.0f} s")
    if args.out:
        from shiftlab import store

        store.write_json(args.out, {"torch": torch.__version__, "threads": torch.get_num_threads(),
                                    "cpus": os.cpu_count(), "batch": args.batch, "steps": steps, "warmup": warmup,
                                    "results": [asdict(r) for r in results], "ratios": rat})
    return 0


if __name__ == "__main__":
    sys.exit(main())
