"""Shared helpers of the benchmark scripts: machine description, interleaved timing, checks.

Timing rule of every script: a path of ours and its baseline are timed in the same process,
one repeat of each in turn (interleaved), so load that other processes put on the machine
hits both sides alike; the reported ratio is the median of the per-repeat ratios, the
reported rate the median over repeats. The load average is recorded before and after.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from typing import Callable, Mapping

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class CheckFailed(AssertionError):
    """A benchmark's output check failed: the timed path did not compute what it should."""


def check(ok: bool, msg: str) -> None:
    if not ok:
        raise CheckFailed(msg)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load() -> float:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return float("nan")


def versions(*names: str) -> dict[str, str]:
    """Installed versions of the named distributions ("-" when missing)."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = "-"
    return out


def machine() -> dict:
    import torch

    d = {"cpu": cpu_model(), "cores": os.cpu_count(), "load_avg_1min": load(), "platform": platform.platform(),
         "cuda": torch.cuda.is_available()}
    if d["cuda"]:
        d["gpu"] = torch.cuda.get_device_name(0)
    return d


def set_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)
    try:
        import cv2

        cv2.setNumThreads(n)
    except ImportError:  # pragma: no cover
        pass


def interleaved(paths: Mapping[str, Callable[[], None]], repeats: int, warmup: int = 1,
                setup: Mapping[str, Callable[[], None]] | None = None) -> dict[str, list[float]]:
    """Wall times (s) of every path, ``repeats`` rounds of one run per path in turn, after
    ``warmup`` untimed rounds. ``setup[name]()`` runs untimed before each run of that path."""
    setup = setup or {}
    times: dict[str, list[float]] = {k: [] for k in paths}
    for r in range(warmup + repeats):
        for name, fn in paths.items():
            if name in setup:
                setup[name]()
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
            if r >= warmup:
                times[name].append(dt)
    return times


def rate(times: list[float], work: float) -> float:
    """Median units per second."""
    return work / statistics.median(times)


def ratio(times_a: list[float], work_a: float, times_b: list[float], work_b: float) -> float:
    """Median over repeats of (rate of a) / (rate of b), repeat by repeat."""
    return statistics.median((work_a / ta) / (work_b / tb) for ta, tb in zip(times_a, times_b))


def eprint(*a) -> None:
    print(*a, file=sys.stderr, flush=True)
