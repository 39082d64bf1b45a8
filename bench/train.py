"""Training throughput (samples/s) of every registry model: eager vs torch.compile, channels_last on/off.

    python bench/train.py [--quick] [--models a,b] [--device cpu|cuda] [--batch 128]
                          [--steps N] [--warmup N] [--threads N] [--max-gflop N] [--budget S] [--out JSON]

What is timed: one optimisation step of the model alone, as the trainer takes it --
``zero_grad``, forward, cross-entropy, backward, SGD (momentum 0.9, nesterov, weight
decay) ``step`` -- on a fixed random batch of ``--batch`` (128) inputs already on the
device (no data loading, no frontend). On CUDA the forward runs under bf16 autocast
(the trainer's ``amp: auto``), on CPU in float32. Each variant builds a fresh model
(``models.create(..., seed=0)``), runs ``--warmup`` steps that are not timed (the first
one includes torch.compile's compilation, reported as ``first s``) and, for compiled
variants, more untimed steps until one whole step compiled nothing (compilations counted
with ``torch._dynamo``'s counters: frames, graphs, AOTAutograd graphs; the backward is
compiled at the first backward, and guards may recompile), then ``--steps`` timed steps
(CUDA synchronised around each); ``samples/s = batch / median step time`` (the median
resists other processes on a shared machine). Compilations during the timed steps are
reported (``compiles_while_timed``; 0 expected). Check: every step's loss is finite and
the fixed batch's loss falls over the run (else the script stops: a fast step that does
not train is not a result).

Variants per model: eager / ``torch.compile`` (default mode, inductor) x contiguous /
``channels_last`` (model and input). A model's variants are all built and warmed up first,
then timed together, one step of each in turn (interleaved: load from other processes hits
them alike). Ratios printed per model come from this one run:
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


@dataclass
class Prepared:
    """A built and warmed-up variant: its result record, one training step, the losses so far."""

    r: Result
    step: object
    losses: list
    device: torch.device
    compile_: bool


def prepare_variant(name: str, device: torch.device, shape, classes: int, batch: int, compile_: bool,
                    channels_last: bool, warmup: int) -> Prepared:
    """Build one (model, device, compile, channels_last) variant and warm it up (module docstring)."""
    r = Result(str(device), name, "x".join(map(str, shape)), compile_, channels_last)
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
    losses: list[float] = []

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = fwd(x)
        loss = F.cross_entropy(out.float(), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))

    p = Prepared(r, step, losses, device, compile_)
    # warm-up: at least ``warmup`` steps, then on until a whole step compiled nothing (torch.compile
    # compiles the forward at the first call, the backward at the first backward, and may recompile
    # on guards such as a changed shape or a new grad mode): the timed steps must not pay for it
    compiles = []
    i = 0
    while True:
        c = compile_count()
        dt = _timed(p)
        compiles.append(compile_count() - c)
        if i == 0:
            r.first_s = round(dt, 3)
        i += 1
        if i >= warmup and (compiles[-1] == 0 or not compile_):
            break
        if i >= warmup + MAX_EXTRA_WARMUP:
            r.extra["note"] = f"still compiling after {i} warm-up steps"
            break
    r.extra["warmup_steps"] = i
    r.extra["compiles_in_warmup"] = int(sum(compiles))
    return p


def _timed(p: Prepared) -> float:
    _sync(p.device)
    t = time.perf_counter()
    p.step()
    _sync(p.device)
    return time.perf_counter() - t


def time_interleaved(preps: list[Prepared], batch: int, steps: int) -> list[Result]:
    """Time ``steps`` steps of every prepared variant, one step of each in turn (so that load from
    other processes hits all variants alike), count compilations while timed, check the losses."""
    times: list[list[float]] = [[] for _ in preps]
    late = [0] * len(preps)
    for _ in range(steps):
        for i, p in enumerate(preps):
            c = compile_count()
            times[i].append(_timed(p))
            late[i] += compile_count() - c
    out = []
    for p, ts, n_late in zip(preps, times, late):
        r = p.r
        r.extra["compiles_while_timed"] = int(n_late)
        r.extra["loss_first"], r.extra["loss_last"] = round(p.losses[0], 5), round(p.losses[-1], 5)
        # the check: every step's loss finite, and the fixed batch's loss went down over the run
        check_losses(p.losses, f"{r.model} {r.device} compile={r.compile} channels_last={r.channels_last}")
        med = statistics.median(ts)
        r.steps = steps
        r.step_ms = round(1e3 * med, 2)
        r.samples_per_s = round(batch / med, 1)
        out.append(r)
    return out


def time_variant(name: str, device: torch.device, shape, classes: int, batch: int, compile_: bool,
                 channels_last: bool, warmup: int, steps: int) -> Result:
    """Prepare and time one variant alone (see :func:`prepare_variant`, :func:`time_interleaved`)."""
    return time_interleaved([prepare_variant(name, device, shape, classes, batch, compile_, channels_last, warmup)],
                            batch, steps)[0]


#: extra warm-up steps allowed for compilation to settle before a variant is timed anyway
MAX_EXTRA_WARMUP = 20


def compile_count() -> int:
    """Dynamo/AOTAutograd compilations so far (frames compiled, graphs made, autograd graphs):
    any change between two points means something was (re)compiled in between."""
    from torch._dynamo.utils import counters

    return int(counters["frames"]["total"] + counters["stats"]["unique_graphs"] + counters["aot_autograd"]["total"])


class CheckFailed(AssertionError):
    """A timed training step did not train (non-finite or non-decreasing loss)."""


def check_losses(losses: list[float], what: str) -> None:
    """Every loss finite and the last one below the first (a fixed batch, SGD: it must fall)."""
    if not all(math.isfinite(v) for v in losses):
        raise CheckFailed(f"{what}: non-finite loss {losses}")
    if len(losses) > 1 and not losses[-1] < losses[0]:
        raise CheckFailed(f"{what}: loss did not decrease ({losses[0]:.4f} -> {losses[-1]:.4f})")


def _fmt(v, spec: str) -> str:
    """``format(v, spec)``, or a right-aligned ``-`` of the spec's width for a missing value."""
    width = int("".join(ch for ch in spec.split(".")[0] if ch.isdigit()) or 0)
    return "-".rjust(width) if v is None else format(v, spec)


def print_table(results: list[Result]) -> None:
    print(f"\n{'device':7s} {'model':18s} {'input':9s} {'compile':7s} {'ch_last':7s} {'step ms':>9s} "
          f"{'samples/s':>10s} {'first s':>8s} {'warmup':>6s} {'compiles':>8s} {'timed':>5s}  note")
    for r in results:
        e = r.extra or {}
        print(f"{r.device:7s} {r.model:18s} {r.input:9s} {str(r.compile).lower():7s} "
              f"{str(r.channels_last).lower():7s} {_fmt(r.step_ms, '9.1f')} {_fmt(r.samples_per_s, '10.0f')} "
              f"{_fmt(r.first_s, '8.1f')} {_fmt(e.get('warmup_steps'), '6d')} {_fmt(e.get('compiles_in_warmup'), '8d')} "
              f"{_fmt(e.get('compiles_while_timed'), '5d')}  {r.skipped or e.get('note', '')}")


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
    torch._dynamo.reset()
    for dev_name in devices:
        device = torch.device(dev_name)
        k = steps * (3 if device.type == "cuda" else 1)
        # build and warm up: eager variants of every model first, compiled ones last (a spent budget
        # cuts compilation first); then every model's variants are timed together, interleaved
        plan = [(name, c, cl) for c, cl in variants for name in names]
        plan.sort(key=lambda p: p[1])
        prepared: dict[str, list[Prepared]] = {}
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
                    p = prepare_variant(name, device, shape, classes, args.batch, c, cl, warmup)
                    p.r.extra["gflop_per_step"] = gflop
                    prepared.setdefault(name, []).append(p)
                    print(f"  {device} {name} compile={str(c).lower()} channels_last={str(cl).lower()}: warmed up "
                          f"({p.r.extra['warmup_steps']} steps, first {p.r.first_s:.1f} s, "
                          f"{p.r.extra['compiles_in_warmup']} compiles)", flush=True)
                    continue
                except CheckFailed:
                    raise
                except Exception as e:  # e.g. no C++ compiler for inductor: report, keep going
                    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
                    r.skipped = f"failed: {type(e).__name__}: {msg[:100]}"
            results.append(r)
            print(f"  {r.device} {r.model} compile={str(c).lower()} channels_last={str(cl).lower()}: {r.skipped}",
                  flush=True)
        for name, preps in prepared.items():
            done = time_interleaved(preps, args.batch, k)
            results += done
            print(f"  {device} {name}: " + ", ".join(
                f"{'compiled' if r.compile else 'eager'}/{'channels_last' if r.channels_last else 'contiguous'} "
                f"{r.samples_per_s:,.0f} samples/s" for r in done), flush=True)
        del prepared
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
