"""Noise mixing throughput (seconds of audio mixed per second of wall time), never a test.

    python bench/mix.py [--quick] [--clips N] [--repeats R] [--synthetic-data] [--json OUT]

Data: 1 s speech clips at 16 kHz (``data/prepared/speech`` when the pipeline has run, else
seeded tones) and the real synthesis noise bank: ``data/prepared/noise``, else the same
recordings read in memory from the Debian packages (``datasets.noise.prepare``: 13 clips,
32 s), else 13 seeded noise clips. Every path gets the same speech, the same bank and the
same SNR range (``synth_mix.snr_db`` default [0, 20] dB). One thread (``torch``), all paths
timed in one process with interleaved repeats (``bench/common.py``):

* ``audiomentations AddBackgroundNoise`` (0.43: no noise cache, so a file read per call,
  as its users get it), one clip at a time -- the per-clip baseline;
* ``torch-audiomentations AddBackgroundNoise`` (the batched peer for training on tensors):
  ``(256, 1, T)`` batches; it reads a segment of a background file per example per call;
  on CPU, and on CUDA when present (``torchaudio.info`` / ``torchaudio.load``, which
  torchaudio 2.11 no longer provides as 0.12 expects, are shimmed with ``soundfile`` here);
* ``OnTheFlyMixer`` (ours, batched, 256 per call) with a **fresh epoch every repeat** (so
  the seeded, reuse-balancing plan of the epoch is made inside the timer), a fresh output
  per call; and in place (``out=speech``, the batch refreshed outside the timer);
* ``make_synthetic`` -- the ``shiftlab mix`` stage's function (plan, mix, recipes, the output
  ``Dataset``);
* for scale, a plain torch copy of the speech batches (the memory traffic any mixer has).

Checks (a failing one aborts the run): for ours (mixer and stage) the output equals
``speech_gain * speech + noise_gain * noise`` of its recipe and the SNR of those two parts
is within 0.1 dB of the recipe's ``snr_db``, and stage rows equal ``mix.regenerate``; for
the baselines the SNR of ``output - input`` to the input is within 0.1 dB of the SNR they
drew. "x audiomentations/core" divides rates per thread and compares with audiomentations.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import warnings
from types import SimpleNamespace

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402

import common  # noqa: E402
from common import check  # noqa: E402

SR = 16000
SNR = (0.0, 20.0)
BATCH = 256
TARGETS = {"mixer_x_audiomentations": 10.0, "stage_x_audiomentations": 3.0}


def shim_torchaudio() -> None:
    """torch-audiomentations 0.12 calls ``torchaudio.info`` and ``torchaudio.load(path, frame_offset,
    num_frames)``; torchaudio 2.11 dropped ``info`` and moved decoding to torchcodec. For this
    benchmark only: both backed by ``soundfile`` (float32, channels first)."""
    import torchaudio

    def info(path, *a, **k):
        i = sf.info(str(path))
        return SimpleNamespace(num_frames=i.frames, sample_rate=i.samplerate, num_channels=i.channels)

    def load(path, frame_offset: int = 0, num_frames: int = -1, *a, **k):
        x, sr = sf.read(str(path), start=int(frame_offset), frames=int(num_frames), dtype="float32", always_2d=True)
        return torch.from_numpy(np.ascontiguousarray(x.T)), sr

    torchaudio.info = info
    torchaudio.load = load


def load_data(n_clips: int, synthetic: bool):
    """(speech Dataset of 1 s source rows, noise bank, description)."""
    from shiftlab import store
    from shiftlab.datasets import audio
    from shiftlab.mixing import bank as B

    sp_dir, nz_dir = os.path.join(common.REPO, "data/prepared/speech"), os.path.join(common.REPO, "data/prepared/noise")
    rng = np.random.default_rng(0)
    what = []
    speech = None
    if not synthetic and os.path.isdir(sp_dir):
        sp = store.load(sp_dir)
        lens = np.array([len(a) for a in sp.with_format("numpy")["audio"]])
        rows = np.flatnonzero((np.asarray(sp["domain"]) == "source") & (lens == SR))
        if len(rows):
            sp = sp.select(np.resize(rows, n_clips).tolist())
            speech = sp.map(lambda r, i: {"id": f"{r['id']}#{i}"}, with_indices=True, keep_in_memory=True)
            what.append("real TTS speech (1 s clips)")
    if speech is None:
        t = np.arange(SR) / SR
        rows = [dict(id=f"tone/{i:05d}", audio=(0.3 * np.sin(2 * np.pi * (150 + i % 300) * t)
                                                + 0.01 * rng.standard_normal(SR)).astype(np.float32),
                     sampling_rate=SR, label="tone", domain="source", origin="real", group=f"v{i % 40}", recipe="{}")
                for i in range(n_clips)]
        speech = audio.build_dataset(rows, ["tone"])
        what.append("seeded 1 s tones as speech")
    bank = None
    if not synthetic:
        try:
            if os.path.isdir(nz_dir):
                bank = B.from_noise(store.load(nz_dir), ["*"], "source", SR)
                what.append("real noise bank (data/prepared/noise)")
            else:
                from shiftlab import config
                from shiftlab.datasets import noise

                bank = B.from_noise(noise.prepare(config.section("prepare_noise")), ["*"], "source", SR)
                what.append("real noise bank (Debian recordings, read in memory)")
        except Exception as e:  # packages missing: fall back to seeded noise
            common.eprint(f"bench/mix.py: real noise bank unavailable ({type(e).__name__}: {e}); seeded noise")
            bank = None
    if bank is None:
        lens = np.linspace(0.7, 4.0, 13)
        clips = {f"noise/{k:02d}": ((rng.standard_normal(int(s * SR)) * 0.1).astype(np.float32), SR)
                 for k, s in enumerate(lens)}
        bank = B.from_arrays(clips, SR)
        what.append("13 seeded noise clips (0.7-4 s)")
    return speech, bank, "; ".join(what)


def _snr_db(signal: np.ndarray, noise: np.ndarray) -> np.ndarray:
    s = np.sum(np.square(signal.astype(np.float64)), axis=-1)
    n = np.sum(np.square(noise.astype(np.float64)), axis=-1)
    return 10.0 * np.log10(s / n)


def check_ours(y: np.ndarray, speech: np.ndarray, recipes, bank, what: str) -> float:
    """Output == g1 s + g2 n of the recipe (float32 rounding) and SNR(g1 s, g2 n) == snr_db (0.1 dB)."""
    from shiftlab.mixing import mix as M

    worst = 0.0
    for j, rec in enumerate(recipes):
        n = M.noise_window(rec, bank).astype(np.float64)
        s = speech[j].astype(np.float64)
        g1, g2 = float(rec["speech_gain"]), float(rec["noise_gain"])
        err = np.abs(y[j] - (g1 * s + g2 * n)).max()
        check(err < 1e-5, f"{what}: row {j} is not speech_gain * speech + noise_gain * noise (max err {err:.2e})")
        d = abs(float(_snr_db(g1 * s, g2 * n)) - float(rec["snr_db"]))
        check(d <= 0.1, f"{what}: row {j} SNR off by {d:.3f} dB from the requested {rec['snr_db']:.2f} dB")
        worst = max(worst, d)
    return worst


def run(quick: bool = True, clips: int | None = None, repeats: int | None = None, synthetic: bool = False) -> dict:
    warnings.filterwarnings("ignore")
    import audiomentations
    import datasets as hfds
    import torch_audiomentations as ta

    from shiftlab.mixing import bank as B
    from shiftlab.mixing import mix as M

    shim_torchaudio()
    hfds.disable_progress_bars()
    repeats = repeats or (3 if quick else 5)
    n = clips or (2048 if quick else 8192)
    n_albu = min(n, 256 if quick else 1024)
    n_ta = min(n, 1024 if quick else 4096)
    speech, bank, what = load_data(n, synthetic)
    a = B.arrays(bank)
    flat, offs = B.audio_arrays(speech)
    X = torch.from_numpy(np.stack([flat[offs[i]: offs[i + 1]] for i in range(len(speech))]))
    T = X.shape[1]
    common.set_threads(1)
    load0 = common.load()
    cfg = {"seed": 0, "snr_db": list(SNR), "batch_size": BATCH, "bank": {"max_source_share": 0.1}}
    tmp = tempfile.TemporaryDirectory()
    paths_wav = []
    for i, cid in enumerate(a.ids):
        p = os.path.join(tmp.name, f"{i:03d}_{cid.replace('/', '_')}.wav")
        sf.write(p, a.clip(i), SR, subtype="FLOAT")
        paths_wav.append(p)

    # ---- baselines
    aug = audiomentations.AddBackgroundNoise(sounds_path=tmp.name, min_snr_db=SNR[0], max_snr_db=SNR[1], p=1.0)
    random.seed(0)
    clips_albu = [X[i].numpy() for i in range(n_albu)]
    y0 = aug(samples=clips_albu[0], sample_rate=SR)
    d = abs(float(_snr_db(clips_albu[0], y0 - clips_albu[0])) - aug.parameters["snr_db"])
    check(d <= 0.1, f"audiomentations: SNR off by {d:.3f} dB")
    tam = ta.AddBackgroundNoise(background_paths=paths_wav, min_snr_in_db=SNR[0], max_snr_in_db=SNR[1], p=1.0,
                                sample_rate=SR, output_type="dict")
    torch.manual_seed(0)
    xb = X[:BATCH].unsqueeze(1)
    yb = tam(xb, sample_rate=SR).samples
    snr_ta = tam.transform_parameters["snr_in_db"].numpy()
    d = np.abs(_snr_db(xb[:, 0].numpy(), (yb - xb)[:, 0].numpy()) - snr_ta).max()
    check(d <= 0.1, f"torch-audiomentations: SNR off by {d:.3f} dB")

    # ---- ours: checks on one batch (untimed)
    mixer = M.OnTheFlyMixer(a, {**cfg, "device": "cpu"}, n_samples=n)
    y, recs = mixer(X[:BATCH], np.arange(BATCH), epoch=10**6)
    worst = check_ours(y.numpy(), X[:BATCH].numpy(), recs, bank, "OnTheFlyMixer")
    splits = hfds.DatasetDict({"train": speech, "train_dev": speech.select([])})
    st = M.make_synthetic(splits, a, {**cfg, "device": "cpu"}, progress=False)
    sub = st.select(range(0, len(st), max(1, len(st) // 64)))
    recs_st = [json.loads(r) for r in sub["recipe"]]
    y_st = np.stack([np.asarray(w, dtype=np.float32) for w in sub.with_format("numpy")["audio"]])
    ids = {sid: i for i, sid in enumerate(speech["id"])}
    s_st = np.stack([X[ids[r["parent"]]].numpy() for r in recs_st])
    worst = max(worst, check_ours(y_st, s_st, recs_st, bank, "make_synthetic"))
    for j in range(0, len(recs_st), 16):
        check(np.array_equal(M.regenerate(recs_st[j], s_st[j], bank), y_st[j]), "make_synthetic row != regenerate")

    # ---- timed, interleaved
    epoch = [0]
    work_x = X.clone()
    batches = [(s, min(n, s + BATCH)) for s in range(0, n, BATCH)]

    def albu():
        for x in clips_albu:
            aug(samples=x, sample_rate=SR)

    def tam_cpu():
        for s in range(0, n_ta, BATCH):
            tam(X[s: s + BATCH].unsqueeze(1), sample_rate=SR)

    def fly():
        epoch[0] += 1
        for s, e in batches:
            mixer(X[s:e], np.arange(s, e), epoch=epoch[0])

    def fly_in_place():
        epoch[0] += 1
        for s, e in batches:
            mixer(work_x[s:e], np.arange(s, e), epoch=epoch[0], out=work_x[s:e])

    def stage():
        M.make_synthetic(splits, a, {**cfg, "device": "cpu"}, progress=False)

    def copy_only():
        for s, e in batches:
            X[s:e].clone()

    paths = {"albu": albu, "tam": tam_cpu, "fly": fly, "fly_inplace": fly_in_place, "stage": stage, "copy": copy_only}
    work = {"albu": n_albu, "tam": n_ta, "fly": n, "fly_inplace": n, "stage": n, "copy": n}
    sec = T / SR
    times = common.interleaved(paths, repeats, setup={"fly_inplace": lambda: work_x.copy_(X)})
    labels = {"albu": "audiomentations AddBackgroundNoise (per clip)",
              "tam": f"torch-audiomentations AddBackgroundNoise ({BATCH} per batch)",
              "fly": f"OnTheFlyMixer ({BATCH} per batch, fresh epoch)",
              "fly_inplace": "OnTheFlyMixer in place (out=speech, fresh epoch)",
              "stage": "make_synthetic (the shiftlab mix stage, Dataset out)",
              "copy": "(reference: torch copy of the speech)"}
    rows = []
    for k in paths:
        rows.append({"path": labels[k], "key": k, "threads": 1,
                     "x_realtime": round(common.rate(times[k], work[k]) * sec, 1),
                     "x_audiomentations_per_core": round(common.ratio(times[k], work[k], times["albu"], work["albu"]), 2),
                     "x_torch_audiomentations": round(common.ratio(times[k], work[k], times["tam"], work["tam"]), 2)})
    if torch.cuda.is_available():
        rows += _cuda_rows(X, a, cfg, tam, times["albu"], n_albu, repeats, sec)
    by = {r["key"]: r for r in rows}
    res = {
        "data": what, "clips": n, "clip_seconds": sec, "bank_clips": len(a.ids),
        "bank_seconds": round(float(a.lengths.sum()) / SR, 1), "snr_db": list(SNR), "threads": 1,
        "rows": rows,
        "checks": {"max_snr_error_db_ours": round(worst, 5), "stage_equals_regenerate": True,
                   "baselines_snr_within_0.1_db": True},
        "targets": {
            "mixer_x_audiomentations": {"target": TARGETS["mixer_x_audiomentations"],
                                        "measured": by["fly"]["x_audiomentations_per_core"]},
            "mixer_x_torch_audiomentations": {"target": 1.0, "measured": by["fly"]["x_torch_audiomentations"]},
            "stage_x_audiomentations": {"target": TARGETS["stage_x_audiomentations"],
                                        "measured": by["stage"]["x_audiomentations_per_core"]},
        },
        "load_avg": [load0, common.load()],
    }
    for t in res["targets"].values():
        t["met"] = bool(t["measured"] >= t["target"]) if t["target"] > 1 else bool(t["measured"] > t["target"])
        t["miss_factor"] = None if t["met"] else round(t["target"] / t["measured"], 2)
    res["profile"] = profile_mixer(X, a, cfg, repeats)
    tmp.cleanup()
    return res


def _cuda_rows(X, a, cfg, tam, t_albu, n_albu, repeats, sec):
    from shiftlab.mixing import mix as M

    dev = torch.device("cuda")
    n = min(len(X), 4096)
    Xd = X[:n].to(dev)
    mixer = M.OnTheFlyMixer(a, {**cfg, "device": "cuda"}, n_samples=n)
    tam = tam.to(dev)
    epoch = [10**5]

    def fly():
        epoch[0] += 1
        for s in range(0, n, BATCH):
            mixer(Xd[s: s + BATCH], np.arange(s, min(n, s + BATCH)), epoch=epoch[0])
        torch.cuda.synchronize()

    def tam_gpu():
        for s in range(0, n, BATCH):
            tam(Xd[s: s + BATCH].unsqueeze(1), sample_rate=SR)
        torch.cuda.synchronize()

    times = common.interleaved({"fly": fly, "tam": tam_gpu}, repeats)
    albu_rate = common.rate(t_albu, n_albu)
    return [{"path": "CUDA: OnTheFlyMixer (fresh epoch)", "key": "cuda_fly", "threads": "gpu",
             "x_realtime": round(common.rate(times["fly"], n) * sec, 1),
             "x_audiomentations_per_core": round(common.rate(times["fly"], n) / albu_rate, 2),
             "x_torch_audiomentations": round(common.ratio(times["fly"], n, times["tam"], n), 2)},
            {"path": "CUDA: torch-audiomentations AddBackgroundNoise", "key": "cuda_tam", "threads": "gpu",
             "x_realtime": round(common.rate(times["tam"], n) * sec, 1),
             "x_audiomentations_per_core": round(common.rate(times["tam"], n) / albu_rate, 2),
             "x_torch_audiomentations": 1.0}]


def profile_mixer(X, a, cfg, repeats: int) -> dict:
    """Median microseconds per 1 s clip of the parts of the fresh-epoch mixer path: the epoch's
    plan (``n_samples`` = all clips, as timed above), then one batch mixed without and with recipes."""
    import statistics
    import time

    from shiftlab.mixing import mix as M

    n, B = len(X), min(BATCH, len(X))
    Xb, idx = X[:B], np.arange(B)
    plan, bare, full = [], [], []
    mixer = M.OnTheFlyMixer(a, {**cfg, "device": "cpu"}, n_samples=n)
    for r in range(repeats + 1):
        t0 = time.perf_counter()
        mixer.plan(10**7 + r, 0, X.shape[1])
        t1 = time.perf_counter()
        mixer(Xb, idx, epoch=10**7 + r, return_recipes=False)
        t2 = time.perf_counter()
        mixer(Xb, idx, epoch=10**7 + r)
        t3 = time.perf_counter()
        if r:
            plan.append((t1 - t0) / n)
            bare.append((t2 - t1) / B)
            full.append((t3 - t2) / B)
    med = {k: statistics.median(v) for k, v in (("plan", plan), ("bare", bare), ("full", full))}
    parts = {f"plan of the epoch ({n} draws)": med["plan"], "mix (gather, norms, a n + s, peak)": med["bare"],
             "recipes": max(0.0, med["full"] - med["bare"])}
    return {"us_per_clip": {k: round(1e6 * v, 2) for k, v in parts.items()}, "batch": B}


def print_result(r: dict) -> None:
    print(f"\ndata: {r['data']}; {r['clips']} clips of {r['clip_seconds']:g} s, bank {r['bank_clips']} clips "
          f"({r['bank_seconds']} s), SNR {r['snr_db'][0]:g}-{r['snr_db'][1]:g} dB, 1 thread; "
          f"load {r['load_avg'][0]} -> {r['load_avg'][1]}")
    print(f"{'path':54s} {'x realtime':>11s} {'x audiomentations/core':>23s} {'x torch-audiomentations':>24s}")
    for row in r["rows"]:
        print(f"{row['path']:54s} {row['x_realtime']:11,.0f} {row['x_audiomentations_per_core']:23.2f} "
              f"{row['x_torch_audiomentations']:24.2f}")
    for k, t in r["targets"].items():
        print(f"target {k} >= {t['target']}: {'met' if t['met'] else 'NOT met'} ({t['measured']}"
              + ("" if t["met"] else f", {t['miss_factor']}x short") + ")")
    print("where a fresh-epoch batch of the mixer goes (us per clip): "
          + ", ".join(f"{k} {v}" for k, v in r["profile"]["us_per_clip"].items()))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer clips and repeats")
    ap.add_argument("--clips", type=int, default=None, help="speech clips per timed run of ours")
    ap.add_argument("--repeats", type=int, default=None, help="interleaved timed repeats per path")
    ap.add_argument("--synthetic-data", action="store_true", help="seeded tones and noise, no real recordings")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    print(json.dumps({"machine": common.machine(), "versions": common.versions(
        "torch", "torchaudio", "numpy", "audiomentations", "torch-audiomentations")}))
    r = run(args.quick, args.clips, args.repeats, args.synthetic_data)
    print_result(r)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
