"""Throughput of motion-blur apply paths (images/s), never part of the tests.

    python bench/blur.py [--quick] [--scenario small|large|all] [--repeats R]

Two scenarios, the same images and kernels for every path of ours:

* ``small``: 28x28 grey uint8 (Fashion-MNIST size), 20,000 images, batches of 1024;
  kernels from ``kernels.sample`` with the default cfg (linear length 3-15 px, shake path 5-25 px);
  albumentations ``MotionBlur(blur_limit=(3, 15))``.
* ``large``: 224x224 RGB uint8, 512 images, batches of 64; kernels up to 31 px
  (linear length 3-29, shake path 5-29); albumentations ``MotionBlur(blur_limit=(3, 31))``.

Paths: albumentations ``MotionBlur`` (kernel drawn per image, as it is used; one thread),
``KernelBlur`` through albumentations (one thread), ``blur_batch`` on CPU with one thread and
with all cores, and on CUDA when available (tensors already on the GPU; plus the time with the
host<->device copies). Kernel rendering (sample + render) is timed separately. The "per core"
column divides by the threads used; the ratio compares with albumentations per core.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import cv2
import numpy as np
import torch
import albumentations as A

from shiftlab.seeding import sample_seed
from shiftlab.synth import kernels as K
from shiftlab.synth.apply import KernelBlur, blur_batch

SCENARIOS = {
    "small": dict(h=28, w=28, c=1, n=20_000, batch=1024, albu_limit=(3, 15), cfg=None),
    "large": dict(
        h=224, w=224, c=3, n=512, batch=64, albu_limit=(3, 31),
        cfg={"linear": {"length": [3, 29]}, "shake": {"max_length": [5, 29]}},
    ),
}


def set_threads(n: int) -> None:
    torch.set_num_threads(n)
    cv2.setNumThreads(n)


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def run_scenario(name: str, quick: bool, repeats: int) -> list[tuple]:
    s = SCENARIOS[name]
    n = s["n"] // (10 if quick else 1)
    n_albu = min(n, 4000 if not quick else 1000)
    rng = np.random.default_rng(0)
    shape = (n, s["h"], s["w"], s["c"])
    images = rng.integers(0, 256, shape, dtype=np.uint8)

    t0 = time.perf_counter()
    recs = [K.sample(sample_seed(0, i, "bench_kernel"), s["cfg"]) for i in range(n)]
    t1 = time.perf_counter()
    kernels = [r.render() for r in recs]
    t2 = time.perf_counter()
    sizes = np.array([k.shape[0] for k in kernels])
    print(
        f"\n[{name}] {n} images {s['h']}x{s['w']}x{s['c']} uint8, batch {s['batch']}; kernel sizes "
        f"{sizes.min()}-{sizes.max()} (median {int(np.median(sizes))}); sample {1e6 * (t1 - t0) / n:.0f} us, "
        f"render {1e6 * (t2 - t1) / n:.0f} us per kernel (one thread, not in the rates below)"
    )
    rows = []

    # albumentations MotionBlur, one image at a time (kernel drawn inside), one thread.
    set_threads(1)
    mb = A.MotionBlur(blur_limit=s["albu_limit"], allow_shifted=False, p=1.0)
    mb.set_random_seed(0)
    imgs_albu = images[:n_albu] if s["c"] > 1 else images[:n_albu, :, :, 0]

    def albu():
        for im in imgs_albu:
            mb(image=im)

    t = best_time(albu, repeats)
    albu_rate = n_albu / t
    rows.append(("albumentations MotionBlur", 1, albu_rate))

    # our KernelBlur through albumentations' __call__, one thread.
    tfs = [KernelBlur(k, p=1.0) for k in kernels[:n_albu]]

    def kblur():
        for tf, im in zip(tfs, imgs_albu):
            tf(image=im)

    rows.append(("KernelBlur (albumentations, cv2)", 1, n_albu / best_time(kblur, repeats)))

    b = s["batch"]
    batches = [(images[i : i + b], kernels[i : i + b]) for i in range(0, n, b)]

    def batched():
        for im, ks in batches:
            blur_batch(im, ks)

    for threads in sorted({1, os.cpu_count() or 1}):
        set_threads(threads)
        rows.append((f"blur_batch CPU numpy->numpy", threads, n / best_time(batched, repeats)))
    set_threads(1)

    if torch.cuda.is_available():
        dev = torch.device("cuda")
        gpu_batches = [
            (torch.from_numpy(im).permute(0, 3, 1, 2).contiguous().to(dev), torch.from_numpy(np.stack(
                [np.pad(k, (sizes.max() - k.shape[0]) // 2) for k in ks])).to(dev))
            for im, ks in batches
        ]

        def on_gpu():
            for im, ks in gpu_batches:
                blur_batch(im, ks)
            torch.cuda.synchronize()

        rows.append(("blur_batch CUDA (on device)", "gpu", n / best_time(on_gpu, repeats)))

        def with_copies():
            for im, ks in batches:
                t = torch.from_numpy(im).permute(0, 3, 1, 2).to(dev)
                blur_batch(t, ks).permute(0, 2, 3, 1).cpu().numpy()
            torch.cuda.synchronize()

        rows.append(("blur_batch CUDA (host copies)", "gpu", n / best_time(with_copies, repeats)))

    print(f"{'path':38s} {'threads':>7s} {'img/s':>12s} {'img/s/core':>12s} {'x albu/core':>11s}")
    for label, thr, rate in rows:
        per_core = rate / thr if isinstance(thr, int) else rate
        print(f"{label:38s} {thr!s:>7s} {rate:12,.0f} {per_core:12,.0f} {per_core / albu_rate:11.1f}")
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a tenth of the images, fewer repeats")
    ap.add_argument("--scenario", choices=["small", "large", "all"], default="all")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats per path (best is kept)")
    args = ap.parse_args(argv)
    repeats = args.repeats or (2 if args.quick else 3)
    print(
        f"torch {torch.__version__}, albumentations {A.__version__}, cv2 {cv2.__version__}, "
        f"{os.cpu_count()} cores, cuda={torch.cuda.is_available()}"
    )
    names = ["small", "large"] if args.scenario == "all" else [args.scenario]
    for name in names:
        run_scenario(name, args.quick, repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
