"""Motion blur end to end (kernel sampling + rendering + apply, uint8 in and out), never a test.

    python bench/blur.py [--quick] [--scenario small|large|all] [--repeats R] [--json OUT]

What is compared, per image, on ONE thread (``torch``/``cv2`` set to 1 thread), in one
process with interleaved repeats (``bench/common.py``):

* ``albumentations MotionBlur`` -- the baseline: one image at a time, drawing and rendering
  its kernel inside every call (``allow_shifted=False``, ``blur_limit`` as below);
* ``ours end to end (blur_batch)`` -- per batch: row seeds (``kernels.sample_seeds``), kernel
  draws (``kernels.sample_batch``), rendering (``kernels.render_batch``), stacking, and
  ``apply.blur_batch`` on the uint8 batch; nothing is prepared outside the timer;
* ``ours end to end (stage apply)`` -- the same, applied as the ``synth blur`` stage and
  ``OnTheFlyBlur`` apply (``blur.apply_kernels``: grouped by exact kernel support, so that
  an image's pixels never depend on its batch);
* ``ours per-row kernels (before)`` -- the previous end-to-end path: ``seeding.sample_seed``,
  ``kernels.sample(default_rng(s))`` and ``.render()`` per row, then ``blur_batch``;
* like for like on pre-rendered kernels (apply only): ``KernelBlur`` (albumentations'
  ``cv2.filter2D`` per image) vs ``blur_batch``;
* what users run: ``OnTheFlyBlur`` on uint8 tensors (a fresh epoch every repeat) and, for
  the 28x28 scenario, the ``synth blur`` stage function (``blur.make_synthetic``: reading
  the rows, kernels, apply, recipes, the output Dataset) on Fashion-MNIST rows, next to the
  same stage with the previous per-row kernel generation (its output must be byte-identical).

Scenarios: ``small`` 28x28 grey, default kernel ranges (linear 3-15 px, shake path 5-25 px),
batches of 1,024, ``MotionBlur(blur_limit=(3, 15))``; ``large`` 224x224 RGB, kernels up to 31 px
(linear 3-29, shake 5-29), batches of 64, ``MotionBlur(blur_limit=(3, 31))``. CUDA rows (kernels
made on the CPU, images on the GPU) when a GPU is present.

Checks (a failing check aborts the run): every output of ours within 1 grey level of
``apply.blur_cpu`` (OpenCV) on the same kernels, and blurred (not the input); the batched
kernels bit-identical to the per-row recipe path; ``OnTheFlyBlur`` rows equal to
``blur.regenerate`` of their recipes; the stage's output byte-identical to the per-row stage.

Also printed: where the time of one end-to-end batch goes (seeds + draws, shake paths,
rasterising, stacking, apply).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import common  # noqa: E402
from common import check  # noqa: E402

LARGE_CFG = {"linear": {"length": [3, 29]}, "shake": {"max_length": [5, 29]}}
SCENARIOS = {
    "small": dict(h=28, w=28, c=1, n=(4096, 20480), albu=(1000, 4000), batch=1024, albu_limit=(3, 15), cfg=None,
                  per_row=(1024, 2048)),
    "large": dict(h=224, w=224, c=3, n=(256, 1024), albu=(96, 256), batch=64, albu_limit=(3, 31), cfg=LARGE_CFG,
                  per_row=(128, 256)),
}
TARGETS = {"small": 20.0, "large": 2.0}  # x MotionBlur per core, end to end
FMNIST = "/usr/share/datasets/fashion-mnist"


def _per_row_kernels(seed: int, idx, cfg, purpose="bench_blur"):
    """The previous path: one SeedSequence + Generator + render per row."""
    from shiftlab import seeding
    from shiftlab.synth import kernels as K

    return [K.sample(np.random.default_rng(seeding.sample_seed(seed, int(i), purpose, 0)), cfg).render() for i in idx]


def _batched_kernels(seed: int, idx, cfg, purpose="bench_blur"):
    from shiftlab.synth import kernels as K

    seeds = K.sample_seeds(seed, np.asarray(idx), purpose, 0)
    kb = K.sample_batch(seeds, cfg)
    kb.records()  # the recipes a stage stores (built, as the stage does)
    return K.stack_batch(K.render_batch(kb))


def _check_outputs(x: np.ndarray, y: np.ndarray, stack: np.ndarray, what: str) -> int:
    """y (N, H, W, C) uint8 within 1 grey level of OpenCV on the same kernels; mostly blurred."""
    from shiftlab.synth.apply import blur_cpu

    worst = 0
    for i in range(len(x)):
        ref = blur_cpu(x[i], stack[i])
        worst = max(worst, int(np.abs(ref.astype(np.int16) - y[i].reshape(ref.shape).astype(np.int16)).max()))
    check(worst <= 1, f"{what}: output differs from OpenCV on the same kernels by {worst} grey levels")
    changed = float(np.mean([not np.array_equal(a, b) for a, b in zip(x, y)]))
    check(changed > 0.9, f"{what}: only {changed:.0%} of the images changed (not blurred?)")
    return worst


def run_scenario(name: str, quick: bool, repeats: int, seed: int = 0) -> dict:
    import albumentations as A

    from shiftlab.synth import blur as B
    from shiftlab.synth import kernels as K
    from shiftlab.synth.apply import KernelBlur, blur_batch
    from shiftlab.synth.ondemand import OnTheFlyBlur

    s = SCENARIOS[name]
    q = 0 if quick else 1
    n, n_albu, n_row, bs, cfg = s["n"][q], s["albu"][q], s["per_row"][q], s["batch"], s["cfg"]
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, s["h"], s["w"], s["c"]), dtype=np.uint8)
    load0 = common.load()
    common.set_threads(1)
    out: dict = {"scenario": name, "image": f"{s['h']}x{s['w']}x{s['c']} uint8", "images": n, "batch": bs,
                 "kernel_cfg": cfg or "default", "albu_blur_limit": list(s["albu_limit"]), "threads": 1}

    # --- checks first (untimed): batched kernels == per-row kernels; outputs vs OpenCV
    idx0 = np.arange(min(n, 256))
    st_b = _batched_kernels(seed, idx0, cfg)
    ks_r = _per_row_kernels(seed, idx0, cfg)
    check(all(np.array_equal(K.stack_batch([k], st_b.shape[1])[0], st_b[i]) for i, k in enumerate(ks_r)),
          "batched kernels differ from the per-row recipe path")
    x0 = images[: len(idx0)]
    y_bb = blur_batch(x0, st_b)
    worst = _check_outputs(x0, y_bb, st_b, "blur_batch end to end")
    y_st = B.apply_kernels(torch.from_numpy(x0).permute(0, 3, 1, 2), st_b).permute(0, 2, 3, 1).numpy()
    worst = max(worst, _check_outputs(x0, y_st, st_b, "stage apply end to end"))
    sizes = np.array([k.shape[0] for k in ks_r])
    out["kernel_sizes"] = {"min": int(sizes.min()), "median": int(np.median(sizes)), "max": int(sizes.max())}

    # --- the timed paths
    mb = A.MotionBlur(blur_limit=s["albu_limit"], allow_shifted=False, p=1.0)
    mb.set_random_seed(0)
    imgs_albu = images[:n_albu] if s["c"] > 1 else images[:n_albu, :, :, 0]
    yb = mb(image=imgs_albu[0])["image"]
    check(yb.shape == imgs_albu[0].shape and yb.dtype == np.uint8, "MotionBlur output shape/dtype")
    pre = _batched_kernels(seed + 1, np.arange(n), cfg)  # pre-rendered kernels for the apply-only rows
    tfs = [KernelBlur(k, p=1.0) for k in pre[:n_albu]]
    batches = [(i, images[i: i + bs]) for i in range(0, n, bs)]
    tensors = [torch.from_numpy(b).permute(0, 3, 1, 2) for _, b in batches]
    epoch = [0]
    fly = OnTheFlyBlur(cfg, seed=seed)

    def albu():
        for im in imgs_albu:
            mb(image=im)

    def kblur():
        for tf, im in zip(tfs, imgs_albu):
            tf(image=im)

    def ours_bb():
        for i, b in batches:
            blur_batch(b, _batched_kernels(seed, np.arange(i, i + len(b)), cfg))

    def ours_stage():
        for (i, b), t in zip(batches, tensors):
            B.apply_kernels(t, _batched_kernels(seed, np.arange(i, i + len(b)), cfg)).permute(0, 2, 3, 1).numpy()

    def per_row():
        for i in range(0, n_row, bs):
            b = images[i: min(n_row, i + bs)]
            blur_batch(b, list(_per_row_kernels(seed, np.arange(i, i + len(b)), cfg)))

    def apply_only():
        for i, b in batches:
            blur_batch(b, pre[i: i + len(b)])

    def onthefly():
        epoch[0] += 1
        for (i, _), t in zip(batches, tensors):
            fly(t, np.arange(i, i + t.shape[0]), epoch[0])

    paths = {"albu": albu, "ours_bb": ours_bb, "ours_stage": ours_stage, "per_row": per_row, "kblur": kblur,
             "apply_only": apply_only, "onthefly": onthefly}
    work = {"albu": n_albu, "ours_bb": n, "ours_stage": n, "per_row": n_row, "kblur": n_albu, "apply_only": n,
            "onthefly": n}
    times = common.interleaved(paths, repeats)
    rates = {k: common.rate(v, work[k]) for k, v in times.items()}
    rel = {k: common.ratio(times[k], work[k], times["albu"], work["albu"]) for k in paths}
    labels = {
        "albu": "albumentations MotionBlur (kernel drawn per call)",
        "ours_bb": "ours end to end: batched kernels + blur_batch",
        "ours_stage": "ours end to end: batched kernels + stage apply",
        "per_row": "ours end to end, per-row kernels (before)",
        "onthefly": "OnTheFlyBlur (uint8 tensors, fresh epoch)",
        "kblur": "apply only: KernelBlur (cv2.filter2D) on our kernels",
        "apply_only": "apply only: blur_batch on pre-rendered kernels",
    }
    out["rows"] = [{"path": labels[k], "key": k, "threads": 1, "img_per_s": round(rates[k], 1),
                    "x_motionblur_per_core": round(rel[k], 2)} for k in paths]
    out["apply_only_vs_kernelblur"] = round(common.ratio(times["apply_only"], n, times["kblur"], n_albu), 2)
    # OnTheFlyBlur: its rows equal blur.regenerate of their recipes
    t = tensors[0][:64]
    y = fly(t, np.arange(64), 10**6)
    for j in range(0, 64, 9):
        rec = fly.recipe(j, 10**6)
        g = B.regenerate(rec, t[j].permute(1, 2, 0).numpy())
        check(np.array_equal(g, y[j].permute(1, 2, 0).numpy()), "OnTheFlyBlur row differs from regenerate")

    if torch.cuda.is_available():
        out["rows"] += _cuda_rows(batches, seed, cfg, times["albu"], n_albu, n, repeats, labels)

    out["profile"] = profile_batch(images[:bs], seed, cfg, repeats)
    out["checks"] = {"kernels_bit_identical_to_per_row": True, "max_grey_level_diff_vs_opencv": worst,
                     "onthefly_equals_regenerate": True}
    target = TARGETS[name]
    got = rel["ours_bb"]
    out["target"] = {"target": target, "of": "x MotionBlur per core, end to end", "measured": round(got, 2),
                     "met": bool(got >= target),
                     "miss_factor": None if got >= target else round(target / got, 2)}
    out["load_avg"] = [load0, common.load()]
    return out


def _cuda_rows(batches, seed, cfg, t_albu, n_albu, n, repeats, labels):
    from shiftlab.synth.apply import blur_batch

    dev = torch.device("cuda")
    gpu = [(i, torch.from_numpy(b).permute(0, 3, 1, 2).contiguous().to(dev)) for i, b in batches]
    st0 = _batched_kernels(seed, np.arange(gpu[0][1].shape[0]), cfg)
    y = blur_batch(gpu[0][1], st0)
    ref = blur_batch(batches[0][1], st0)
    d = int(np.abs(y.permute(0, 2, 3, 1).cpu().numpy().astype(np.int16) - ref.astype(np.int16)).max())
    check(d <= 1, f"CUDA blur_batch differs from the CPU by {d} grey levels")

    def e2e():
        for i, t in gpu:  # kernels made on the CPU (numpy), images on the GPU
            blur_batch(t, _batched_kernels(seed, np.arange(i, i + t.shape[0]), cfg))
        torch.cuda.synchronize()

    pre = [_batched_kernels(seed, np.arange(i, i + t.shape[0]), cfg) for i, t in gpu]

    def apply_gpu():
        for (_, t), k in zip(gpu, pre):
            blur_batch(t, k)
        torch.cuda.synchronize()

    times = common.interleaved({"e2e": e2e, "apply": apply_gpu}, repeats)
    return [{"path": "CUDA: batched kernels (CPU) + blur_batch on the GPU", "key": "cuda_e2e", "threads": "gpu",
             "img_per_s": round(common.rate(times["e2e"], n), 1),
             "x_motionblur_per_core": round(common.rate(times["e2e"], n) / common.rate(t_albu, n_albu), 2)},
            {"path": "CUDA: apply only (pre-rendered kernels)", "key": "cuda_apply", "threads": "gpu",
             "img_per_s": round(common.rate(times["apply"], n), 1),
             "x_motionblur_per_core": round(common.rate(times["apply"], n) / common.rate(t_albu, n_albu), 2)}]


def profile_batch(batch: np.ndarray, seed: int, cfg, repeats: int) -> dict:
    """Median microseconds per image of each step of one end-to-end batch (one thread)."""
    from shiftlab.synth import kernels as K
    from shiftlab.synth.apply import blur_batch

    n = len(batch)
    idx = np.arange(n)
    steps = {"seeds + draws + records": [], "shake paths (RNG + B&F recurrence)": [], "rasterise (both families)": [],
             "stack": [], "apply (blur_batch)": []}
    rng_only = []  # the floor: only the numpy generator calls a shake path's recipe requires
    bg = np.random.PCG64(0)
    gen = np.random.Generator(bg)
    for r in range(repeats + 1):
        t0 = time.perf_counter()
        seeds = K.sample_seeds(seed + 7 + r, idx, "bench_blur", 0)
        kb = K.sample_batch(seeds, cfg)
        kb.records()
        t1 = time.perf_counter()
        sh = kb.params.get("shake")
        if sh is not None and len(sh["seed"]):
            K._shake_paths({k: v[sh["max_length"] > 0] for k, v in sh.items()})
        t2 = time.perf_counter()
        arrs = K.render_batch(kb)
        t3 = time.perf_counter()
        st = K.stack_batch(arrs)
        t4 = time.perf_counter()
        blur_batch(batch, st)
        t5 = time.perf_counter()
        if sh is not None and len(sh["seed"]):
            buf = np.empty((int(sh["n_steps"].max()) - 1) * 2)
            states = _states(sh["seed"])
            t6 = time.perf_counter()
            for st_, ns in zip(states, sh["n_steps"].tolist()):
                bg.state = st_
                gen.random()
                gen.standard_normal(out=buf[: 2 * (ns - 1)])
                gen.random(out=buf[: 2 * (ns - 1)])
            rng_only.append(1e6 * (time.perf_counter() - t6) / n)
        if r:
            for k, v in zip(steps, (t1 - t0, t2 - t1, (t3 - t2) - (t2 - t1), t4 - t3, t5 - t4)):
                steps[k].append(1e6 * v / n)
    med = {k: round(statistics.median(v), 2) for k, v in steps.items()}
    med["total"] = round(sum(med.values()), 2)
    out = {"us_per_image": med, "batch": n}
    if rng_only:
        out["rng_floor_us_per_image"] = round(statistics.median(rng_only[1:] or rng_only), 2)
    return out


def _states(seeds) -> list[dict]:
    """PCG64 states of ``default_rng(seed)`` (the vectorised seeding of the batched path)."""
    from shiftlab.synth import kernels as K

    h, lo, ih, il = (v.tolist() for v in K.pcg64_seed_state(np.asarray(seeds, dtype=np.uint64)))
    return [{"bit_generator": "PCG64", "state": {"state": (a << 64) | b, "inc": (c << 64) | d},
             "has_uint32": 0, "uinteger": 0} for a, b, c, d in zip(h, lo, ih, il)]


def run_stage(quick: bool, repeats: int) -> dict:
    """The ``synth blur`` stage function (rows/s): batched kernels vs the previous per-row ones."""
    import datasets as hfds

    from shiftlab import seeding, store
    from shiftlab.datasets import images as img_mod
    from shiftlab.datasets import splits as split_mod
    from shiftlab.synth import blur as B
    from shiftlab.synth import kernels as K

    hfds.disable_progress_bars()
    n_src = 2048 if quick else 8192
    if os.path.exists(os.path.join(FMNIST, "train-images-idx3-ubyte.gz")):
        ds = img_mod.from_fashion_mnist(FMNIST, source_rows=n_src, target_rows=200, seed=0)
        what = "Fashion-MNIST rows (28x28 grey)"
    else:
        rng = np.random.default_rng(0)
        m = n_src + 200
        ds = img_mod.from_arrays(rng.integers(0, 256, (m, 28, 28, 1), dtype=np.uint8), rng.integers(0, 10, m),
                                 ["source"] * n_src + ["target"] * 200, label_names=[str(i) for i in range(10)],
                                 groups=[f"g{i}" for i in range(m)], name="bench")
        what = "random 28x28 grey rows (Fashion-MNIST not installed)"
    sp = split_mod.build(ds, {"seed": 0, "target_train_fraction": 0.5, "dev_fraction": 0.5, "train_dev_fraction": 0.1,
                              "max_source_rows": None, "beta_source": 1.0, "beta_synthetic": 1.0})
    cfg = dict(copy.deepcopy(B.DEFAULTS), device="cpu", workers=1)
    common.set_threads(1)
    new_chunk = B._sample_chunk

    def old_chunk(task):  # the previous worker: one SeedSequence, Generator and render per row
        seed, keys, kcfg, purpose = task
        seeds, recs, arrs = [], [], []
        for p, c in keys:
            s = seeding.sample_seed(seed, int(p), purpose, int(c))
            k = K.sample(np.random.default_rng(s), kcfg)
            seeds.append(s)
            recs.append(k.to_record())
            arrs.append(k.render())
        return np.array(seeds, dtype=np.int64), recs, arrs

    res = {}

    def stage(which):
        def fn():
            B._sample_chunk = new_chunk if which == "new" else old_chunk
            try:
                res[which] = B.make_synthetic(sp, cfg, device="cpu", progress=False)
            finally:
                B._sample_chunk = new_chunk
        return fn

    load0 = common.load()
    times = common.interleaved({"new": stage("new"), "old": stage("old")}, max(1, repeats - 1), warmup=0)
    rows = len(res["new"])
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        store.save(res["new"], f"{tmp}/new")
        store.save(res["old"], f"{tmp}/old")
        same = store.tree_digest(f"{tmp}/new") == store.tree_digest(f"{tmp}/old")
    check(same, "synth blur stage: batched output differs from the per-row output")
    return {"what": what, "rows": rows, "threads": 1,
            "rows_per_s": round(common.rate(times["new"], rows), 1),
            "rows_per_s_before": round(common.rate(times["old"], rows), 1),
            "speedup": round(common.ratio(times["new"], rows, times["old"], rows), 2),
            "output_byte_identical_to_per_row": same, "load_avg": [load0, common.load()]}


def print_scenario(r: dict) -> None:
    print(f"\n[{r['scenario']}] {r['images']} images {r['image']}, batch {r['batch']}, kernels {r['kernel_sizes']}, "
          f"1 thread; load {r['load_avg'][0]} -> {r['load_avg'][1]}")
    print(f"{'path':56s} {'img/s':>11s} {'x MotionBlur/core':>18s}")
    for row in r["rows"]:
        print(f"{row['path']:56s} {row['img_per_s']:11,.0f} {row['x_motionblur_per_core']:18.2f}")
    t = r["target"]
    print(f"target >= {t['target']}x end to end: {'met' if t['met'] else 'NOT met'} "
          f"({t['measured']}x" + ("" if t["met"] else f", {t['miss_factor']}x short") + ")")
    print("where one end-to-end batch goes (us per image): "
          + ", ".join(f"{k} {v}" for k, v in r["profile"]["us_per_image"].items())
          + f"; numpy RNG calls alone (the floor of the shake recipes): {r['profile'].get('rng_floor_us_per_image')}")


def run(quick: bool = True, repeats: int | None = None, scenarios=("small", "large"), stage: bool = True) -> dict:
    repeats = repeats or (3 if quick else 5)
    out = {"scenarios": [], "stage": None}
    for name in scenarios:
        r = run_scenario(name, quick, repeats)
        print_scenario(r)
        out["scenarios"].append(r)
    if stage:
        st = run_stage(quick, repeats)
        print(f"\nsynth blur stage function ({st['what']}, {st['rows']} rows, 1 thread): {st['rows_per_s']:,.0f} rows/s; "
              f"with the per-row kernels (before) {st['rows_per_s_before']:,.0f} rows/s ({st['speedup']}x); "
              f"output byte-identical: {st['output_byte_identical_to_per_row']}")
        out["stage"] = st
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer images and repeats")
    ap.add_argument("--scenario", choices=["small", "large", "all"], default="all")
    ap.add_argument("--repeats", type=int, default=None, help="interleaved timed repeats per path")
    ap.add_argument("--no-stage", action="store_true", help="skip the synth blur stage rows")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    print(json.dumps({"machine": common.machine(), "versions": common.versions(
        "torch", "numpy", "albumentations", "opencv-python-headless")}))
    names = ("small", "large") if args.scenario == "all" else (args.scenario,)
    res = run(args.quick, args.repeats, names, stage=not args.no_stage and "small" in names)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
