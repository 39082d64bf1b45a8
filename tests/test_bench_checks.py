"""The benchmarks' own checks and report (bench/*.py): no timing here, only that a benchmark
rejects output that is wrong and renders what it measured."""

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _load(name):
    spec = importlib.util.spec_from_file_location(f"shiftlab_bench_{name}", REPO / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


common = _load("common")
bench_blur = _load("blur")
bench_train = _load("train")
bench_run = _load("run")


def test_blur_check_accepts_ours_and_rejects_garbage():
    from shiftlab.synth import kernels as K
    from shiftlab.synth.apply import blur_batch

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (40, 28, 28, 1), dtype=np.uint8)
    st = bench_blur._batched_kernels(0, np.arange(40), None)
    assert st.shape[0] == 40 and st.dtype == np.float32
    assert bench_blur._check_outputs(x, blur_batch(x, st), st, "ours") <= 1
    with pytest.raises(AssertionError, match="grey levels"):
        bench_blur._check_outputs(x, np.clip(blur_batch(x, st).astype(int) + 2, 0, 255).astype(np.uint8), st, "bad")
    with pytest.raises(AssertionError, match="not blurred"):
        bench_blur._check_outputs(x, x.copy(), np.tile(K.Linear(0.0, 0.0).render()[None], (40, 1, 1)), "identity")
    # the per-row path of the benchmark is the recipe path, and equals the batched one
    rows = bench_blur._per_row_kernels(0, np.arange(40), None)
    assert all(np.array_equal(K.stack_batch([r], st.shape[1])[0], s) for r, s in zip(rows, st))


def test_mix_check_accepts_ours_and_rejects_a_wrong_snr():
    bench_mix = _load("mix")
    from shiftlab.mixing import bank as B
    from shiftlab.mixing import mix as M

    rng = np.random.default_rng(1)
    clips = {f"n/{k}": ((rng.standard_normal(8000 + 3000 * k) * 0.1).astype(np.float32), 16000) for k in range(3)}
    bank = B.from_arrays(clips, 16000)
    a = B.arrays(bank)
    x = torch.from_numpy((rng.standard_normal((8, 16000)) * 0.2).astype(np.float32))
    mixer = M.OnTheFlyMixer(a, {"snr_db": [0, 20], "device": "cpu"}, n_samples=8)
    y, recs = mixer(x, np.arange(8), epoch=0)
    assert bench_mix.check_ours(y.numpy(), x.numpy(), recs, bank, "ours") <= 0.1
    bad = [dict(r, snr_db=r["snr_db"] + 0.5) for r in recs]
    with pytest.raises(AssertionError, match="SNR off"):
        bench_mix.check_ours(y.numpy(), x.numpy(), bad, bank, "bad")
    with pytest.raises(AssertionError, match="speech_gain"):
        bench_mix.check_ours(y.numpy() * 1.01, x.numpy(), recs, bank, "scaled")


def test_torchaudio_shim_reads_with_soundfile(tmp_path):
    bench_mix = _load("mix")
    import soundfile as sf
    import torchaudio

    had = {k: getattr(torchaudio, k, None) for k in ("info", "load")}
    try:
        bench_mix.shim_torchaudio()
        p = tmp_path / "a.wav"
        w = np.linspace(-0.5, 0.5, 1000, dtype=np.float32)
        sf.write(p, w, 16000, subtype="FLOAT")
        i = torchaudio.info(str(p))
        assert (i.num_frames, i.sample_rate, i.num_channels) == (1000, 16000, 1)
        t, sr = torchaudio.load(str(p), frame_offset=10, num_frames=20)
        assert sr == 16000 and t.shape == (1, 20) and torch.equal(t[0], torch.from_numpy(w[10:30]))
    finally:
        for k, v in had.items():
            if v is None:
                if hasattr(torchaudio, k):
                    delattr(torchaudio, k)
            else:
                setattr(torchaudio, k, v)


def test_train_loss_check_and_compile_counter():
    bench_train.check_losses([2.3, 2.1, 1.9], "ok")
    with pytest.raises(AssertionError, match="non-finite"):
        bench_train.check_losses([2.3, math.nan], "nan")
    with pytest.raises(AssertionError, match="did not decrease"):
        bench_train.check_losses([2.3, 2.4, 2.35], "flat")
    assert isinstance(bench_train.compile_count(), int)


def test_train_eager_variant_reports_warmup_and_checks(monkeypatch):
    r = bench_train.time_variant("preact_resnet", torch.device("cpu"), (1, 28, 28), 10, 8, False, False, 1, 2)
    assert r.samples_per_s > 0 and r.extra["warmup_steps"] == 1 and r.extra["compiles_while_timed"] == 0
    assert r.extra["loss_last"] < r.extra["loss_first"]


def _fake_results():
    row = lambda key, rate, x: {"path": key, "key": key, "threads": 1, "img_per_s": rate,  # noqa: E731
                                "x_motionblur_per_core": x}
    sc = {"image": "28x28x1 uint8", "batch": 1024, "kernel_sizes": {"min": 3, "median": 9, "max": 21},
          "rows": [row("albu", 10000.0, 1.0), row("ours_bb", 50000.0, 5.0)],
          "target": {"target": 20.0, "measured": 5.0, "met": False, "miss_factor": 4.0},
          "profile": {"us_per_image": {"apply": 6.0, "total": 20.0}, "batch": 1024}}
    mrow = lambda key, x: {"path": key, "key": key, "threads": 1, "x_realtime": 1000.0 * x,  # noqa: E731
                           "x_audiomentations_per_core": x, "x_torch_audiomentations": 3 * x}
    t = lambda target, got: {"target": target, "measured": got, "met": got >= target,  # noqa: E731
                             "miss_factor": None if got >= target else round(target / got, 2)}
    return {
        "date": "2026-01-01 00:00 UTC", "command": "python bench/run.py --quick",
        "machine": {"cpu": "AMD EPYC", "cores": 2, "cuda": False}, "versions": {"torch": "2.11.0"},
        "load_avg": [0.5, 0.7], "checks": ["blur outputs checked"],
        "blur": {"scenarios": [sc], "stage": {"what": "rows", "rows_per_s": 900.0, "rows_per_s_before": 300.0,
                                              "speedup": 3.0, "output_byte_identical_to_per_row": True}},
        "mix": {"clip_seconds": 1.0, "bank_clips": 13, "bank_seconds": 32.4, "snr_db": [0, 20],
                "rows": [mrow("albu", 1.0), mrow("fly", 6.0), mrow("stage", 2.0)],
                "targets": {"mixer_x_audiomentations": t(10.0, 6.0), "mixer_x_torch_audiomentations": t(1.0, 18.0),
                            "stage_x_audiomentations": t(3.0, 2.0)},
                "profile": {"us_per_clip": {"plan": 1.0}, "batch": 256}},
        "anchor": {"preset": "cpu", "model": "attention_tiny", "train_config": {"epochs": 8},
                   "test_error": 0.0767, "test_error_ci": [0.0715, 0.0819], "target_error": 0.08,
                   "_file": "metrics/anchor_cpu.json"},
    }


def test_markdown_table_and_readme_markers(tmp_path):
    md = bench_run.markdown(_fake_results())
    assert "2026-01-01" in md and "AMD EPYC" in md and "1 thread" in md and "torch 2.11.0" in md
    assert "| benchmark | path |" in md
    assert ">= 20x: **not met** (4x short)" in md
    assert "5.00x MotionBlur" in md and "3.00x the per-row stage" in md
    assert "(95% CI 7.15-8.19%)" in md and "**not met**" in md.split("anchor")[-1]  # straddling interval
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n## Benchmarks\n\nintro\n<!-- bench:begin -->\nold table\n<!-- bench:end -->\nafter\n")
    assert bench_run.update_readme(md, str(readme))
    text = readme.read_text()
    assert "old table" not in text and md in text and text.endswith("<!-- bench:end -->\nafter\n")
    assert text.startswith("# x\n\n## Benchmarks\n\nintro\n<!-- bench:begin -->\n")
    nomark = tmp_path / "R2.md"
    nomark.write_text("no markers\n")
    assert not bench_run.update_readme(md, str(nomark)) and nomark.read_text() == "no markers\n"
    json.dumps(_fake_results())  # the results are plain JSON
