"""Realtime factor of noise mixing (seconds of audio mixed per second of wall time), never a test.

    python bench/mix.py [--quick] [--clips N] [--repeats R] [--synthetic-data]

Data: the source-domain speech of ``data/prepared/speech`` (1 s TTS clips, 16 kHz) and the
source-domain noise recordings of ``data/prepared/noise`` (the real synthesis bank: 13
clips, 32 s) when they exist (``dvc repro``); else (or with ``--synthetic-data``) 1 s tones
and 13 seeded noise clips of 0.7-4 s. The same speech clips, the same noise clips and the
same SNR range (``synth_mix.snr_db`` default [0, 20] dB) go to every path:

* ``audiomentations AddBackgroundNoise`` (p=1; the bank's clips written as float wav to a
  temp folder, as it must read them: it picks a file uniformly with replacement and reads
  it on every call), one clip at a time, one thread -- the baseline;
* ``make_synthetic`` (the ``synth_mix`` stage's production path: seeded plan with the
  reuse-balancing policy, batched gather + exact-SNR mix + clipping guard in torch,
  recipes, the output ``Dataset`` built in memory) on the CPU with one thread and with all
  cores (``torch.set_num_threads``), and on CUDA when available;
* ``OnTheFlyMixer`` (the training-time path: speech already a ``(B, T)`` tensor, batches of
  256, recipes built) on the CPU (1 thread, all cores) and CUDA (tensors on the device);
  once with a fresh output tensor per batch (the default) and once in place
  (``out=speech``: the batch tensor is overwritten, no per-batch allocation; the working
  copy is refreshed outside the timer);
* for scale, a plain ``torch`` copy of the same speech batches into a fresh tensor (one
  read and one write per sample, one thread): the memory traffic any mixer has at least.

Each path is timed ``repeats`` times after a warm-up; the best time is kept. "x/core" divides
a path's realtime factor by the threads it used and compares it with audiomentations'.
Caveat: on a shared machine (other jobs running) the numbers move by tens of percent from
run to run, the all-cores rows most; compare ratios from one run, as printed.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

REPO = Path(__file__).resolve().parent.parent
SR = 16000
SNR = (0.0, 20.0)


def best_time(fn, repeats: int, setup=None) -> float:
    """Best wall time of ``fn()`` over ``repeats`` runs after a warm-up; ``setup()`` runs untimed before each."""
    if setup:
        setup()
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        if setup:
            setup()
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def load_data(n_clips: int, synthetic: bool):
    """(speech Dataset of source rows, noise bank Dataset, description)."""
    from shiftlab import store
    from shiftlab.datasets import audio
    from shiftlab.mixing import bank as B

    sp_dir, nz_dir = REPO / "data/prepared/speech", REPO / "data/prepared/noise"
    if not synthetic and sp_dir.exists() and nz_dir.exists():
        speech = store.load(sp_dir)
        dom = np.asarray(speech["domain"])
        rows = np.flatnonzero(dom == "source")
        rows = np.resize(rows, n_clips)  # repeat the 1,000 clips when more are asked for
        speech = speech.select(rows.tolist())
        if len(set(speech["id"])) != len(speech):  # unique ids for the stage
            speech = speech.map(lambda r, i: {"id": f"{r['id']}#{i}"}, with_indices=True, keep_in_memory=True)
        bank = B.from_noise(store.load(nz_dir), ["*"], "source", SR)
        return speech, bank, "data/prepared (real TTS speech, real source noise bank)"
    rng = np.random.default_rng(0)
    t = np.arange(SR) / SR
    rows = [
        dict(id=f"tone/{i:05d}", audio=(0.3 * np.sin(2 * np.pi * (150 + i % 300) * t)
                                        + 0.01 * rng.standard_normal(SR)).astype(np.float32),
             sampling_rate=SR, label="tone", domain="source", origin="real", group=f"v{i % 40}", recipe="{}")
        for i in range(n_clips)
    ]
    speech = audio.build_dataset(rows, ["tone"])
    lens = np.linspace(0.7, 4.0, 13)
    clips = {f"noise/{k:02d}": ((rng.standard_normal(int(s * SR)) * 0.1).astype(np.float32), SR)
             for k, s in enumerate(lens)}
    return speech, B.from_arrays(clips, SR), "synthetic tones + 13 seeded noise clips (0.7-4 s)"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer clips and repeats")
    ap.add_argument("--clips", type=int, default=None, help="speech clips mixed per timed run")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats per path (best is kept)")
    ap.add_argument("--synthetic-data", action="store_true", help="ignore data/prepared")
    args = ap.parse_args(argv)
    repeats = args.repeats or (2 if args.quick else 3)
    n = args.clips or (1000 if args.quick else 4000)
    n_albu = min(n, 200 if args.quick else 1000)

    warnings.filterwarnings("ignore")
    import audiomentations
    import datasets as hfds

    from shiftlab.mixing import bank as B
    from shiftlab.mixing import mix as M

    hfds.disable_progress_bars()
    speech, bank, what = load_data(n, args.synthetic_data)
    a = B.arrays(bank)
    flat, offs = B.audio_arrays(speech)
    waves = [flat[offs[i]: offs[i + 1]] for i in range(len(speech))]
    seconds = float(np.diff(offs).sum()) / SR
    cores = os.cpu_count() or 1
    print(f"torch {torch.__version__}, audiomentations {audiomentations.__version__}, {cores} cores, "
          f"cuda={torch.cuda.is_available()}; load average {os.getloadavg()[0]:.2f}")
    print(f"data: {what}; {n} speech clips ({seconds:.0f} s), bank {len(a.ids)} clips "
          f"({a.lengths.sum() / SR:.1f} s), SNR {SNR[0]:g}-{SNR[1]:g} dB")
    rows: list[tuple[str, object, float]] = []

    # ---- audiomentations, one clip at a time, one thread
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        for i, cid in enumerate(a.ids):
            sf.write(os.path.join(tmp, f"{i:03d}_{cid.replace('/', '_')}.wav"), a.clip(i), SR, subtype="FLOAT")
        aug = audiomentations.AddBackgroundNoise(sounds_path=tmp, min_snr_db=SNR[0], max_snr_db=SNR[1], p=1.0)
        random.seed(0)  # audiomentations draws from the global `random` module
        clips = waves[:n_albu]

        def albu():
            for x in clips:
                aug(samples=x, sample_rate=SR)

        t = best_time(albu, repeats)
    albu_seconds = sum(len(x) for x in clips) / SR
    albu_rtf = albu_seconds / t
    rows.append(("audiomentations AddBackgroundNoise", 1, albu_rtf))

    # ---- make_synthetic: the synth_mix stage
    splits = hfds.DatasetDict({"train": speech, "train_dev": speech.select([])})
    cfg = {"seed": 0, "snr_db": list(SNR), "batch_size": 256, "bank": {"max_source_share": 0.1}}

    def stage(device):
        def run():
            out = M.make_synthetic(splits, a, {**cfg, "device": device}, progress=False)
            assert len(out) == n
        return run

    for threads in sorted({1, cores}):
        torch.set_num_threads(threads)
        rows.append(("make_synthetic CPU (stage, Dataset out)", threads, seconds / best_time(stage("cpu"), repeats)))
    torch.set_num_threads(1)
    if torch.cuda.is_available():
        def stage_cuda():
            stage("cuda")()
            torch.cuda.synchronize()
        rows.append(("make_synthetic CUDA (stage, Dataset out)", "gpu", seconds / best_time(stage_cuda, repeats)))

    # ---- OnTheFlyMixer: the training-time path
    B_ = 256
    lens = np.diff(offs)
    same = lens == np.bincount(lens).argmax()  # one (B, T) tensor needs one length (1 s here)
    X = torch.from_numpy(np.stack([w for w, ok in zip(waves, same) if ok]))
    fly_seconds = X.numel() / SR

    def fly(device):
        mixer = M.OnTheFlyMixer(a, {**cfg, "device": device}, n_samples=len(X))
        Xd = X.to(device)
        idx = np.arange(len(X))

        def run():
            for s in range(0, len(X), B_):
                mixer(Xd[s: s + B_], idx[s: s + B_], epoch=0)
            if Xd.is_cuda:
                torch.cuda.synchronize()
        return run

    for threads in sorted({1, cores}):
        torch.set_num_threads(threads)
        rows.append(("OnTheFlyMixer CPU (tensors, recipes)", threads, fly_seconds / best_time(fly("cpu"), repeats)))
    torch.set_num_threads(1)
    work = X.clone()

    def fly_in_place():
        mixer = M.OnTheFlyMixer(a, {**cfg, "device": "cpu"}, n_samples=len(X))
        idx = np.arange(len(X))

        def run():
            for s in range(0, len(X), B_):
                mixer(work[s: s + B_], idx[s: s + B_], epoch=0, out=work[s: s + B_])
        return run

    rows.append(("OnTheFlyMixer CPU (in place, out=speech)", 1,
                 fly_seconds / best_time(fly_in_place(), repeats, setup=lambda: work.copy_(X))))

    def copy_only():
        for s in range(0, len(X), B_):
            X[s: s + B_].clone()

    rows.append(("(reference: torch copy of the speech)", 1, fly_seconds / best_time(copy_only, repeats)))
    if torch.cuda.is_available():
        rows.append(("OnTheFlyMixer CUDA (on device, recipes)", "gpu",
                     fly_seconds / best_time(fly("cuda"), repeats)))

    print(f"\n{'path':42s} {'threads':>7s} {'x realtime':>11s} {'x rt/core':>10s} {'x albu/core':>11s}")
    for label, thr, rtf in rows:
        per_core = rtf / thr if isinstance(thr, int) else rtf
        print(f"{label:42s} {thr!s:>7s} {rtf:11,.0f} {per_core:10,.0f} {per_core / albu_rtf:11.1f}")
    print(f"\n(audiomentations timed on {n_albu} clips, ours on {n}; best of {repeats}. Shared-machine caveat: "
          f"other load moves these numbers, the all-cores rows most; compare ratios within one run.)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
