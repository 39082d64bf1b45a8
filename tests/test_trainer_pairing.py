"""Seed pairing, weight-0 rows, short last batches and run-to-run reproducibility of the trainer."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap

import datasets as hfds
import numpy as np
import pytest
import torch

from shiftlab.datasets import schema
from shiftlab.train import data as tdata
from shiftlab.train import models, trainer

LABELS = ["a", "b", "c"]


def images(n, prefix, hw=28, seed=0, domain="target", origin="real", weights=None):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    img = (rng.integers(0, 70, (n, 1, hw, hw)) + 70 * y[:, None, None, None]).astype(np.uint8)
    d = {"id": [f"{prefix}/{i:04d}" for i in range(n)], "image": img, "label": y.tolist(),
         "domain": domain if isinstance(domain, list) else [domain] * n,
         "origin": origin if isinstance(origin, list) else [origin] * n,
         "group": [f"{prefix}{i}" for i in range(n)], "parent": [""] * n, "recipe": ["{}"] * n}
    ds = hfds.Dataset.from_dict(d, features=schema.image_features(LABELS, (hw, hw, 1)))
    w = np.ones(n, np.float32) if weights is None else np.asarray(weights, np.float32)
    return ds.add_column("weight", w.tolist(), feature=hfds.Value("float32"))


def test_paired_rows_real_order_is_the_real_only_order():
    real, syn = np.arange(50), np.arange(50, 90)
    for epoch_rows in (50, 37, None):
        alone = np.concatenate([tdata.paired_rows(real, [], 4, e, epoch_rows) for e in range(4)])
        mixed = np.concatenate([tdata.paired_rows(real, syn, 4, e, epoch_rows) for e in range(4)])
        r = mixed[mixed < 50]
        assert np.array_equal(r, alone[:len(r)])  # the real rows a synth run sees: a prefix of the real-only stream
        assert 0.3 < (mixed >= 50).mean() < 0.6  # synthetic share ~ 40 / 90
    # no synthetic rows: exactly the historical orders
    assert np.array_equal(tdata.paired_rows(real, [], 4, 2, None), tdata.epoch_permutation(50, 4, 2))
    assert np.array_equal(tdata.paired_rows(real, [], 4, 2, 20), tdata.stream_rows(50, 4, 2, 20))
    # another seed, another order
    assert not np.array_equal(tdata.paired_rows(real, syn, 5, 0, 50), tdata.paired_rows(real, syn, 4, 0, 50))


FAST = {"epochs": 1, "batch_size": 16, "lr": 0.05, "warmup_epochs": 0.0, "eval_train_rows": None, "num_threads": 1}


def test_beta_zero_is_exactly_dropping_the_rows_with_a_batchnorm_model(tmp_path):
    # a registry model with BatchNorm, over two whole epochs: weight-0 rows are never batched, so the
    # model is bit-identical to one trained without those rows (same init, same order of the rest)
    n = 90
    dom = ["source" if i % 3 else "target" for i in range(n)]
    w = [0.0 if d == "source" else 1.0 for d in dom]
    keep = [i for i in range(n) if w[i] > 0]
    full = images(n, "tr", domain=dom, weights=w)
    dropped = full.select(keep)
    rest = {"train_dev": images(10, "td", seed=1, domain="source"), "dev": images(12, "dv", seed=2),
            "test": images(12, "te", seed=3)}
    cfg = dict(FAST, epochs=2, model="attention_tiny", model_kwargs={"width": 4, "stem_width": 8})
    a = trainer.train(hfds.DatasetDict({"train": full, **rest}), cfg, tmp_path / "a", progress=False)
    b = trainer.train(hfds.DatasetDict({"train": dropped, **rest}), cfg, tmp_path / "b", progress=False)
    sa, sb = a["model"].state_dict(), b["model"].state_dict()
    assert set(sa) == set(sb)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    assert a["steps"] == b["steps"] == 2 * 2  # 30 rows of weight 1 per epoch, batches of 16 (16 + 14)
    # every row at weight 0 is a clear error, not a silent no-op
    with pytest.raises(Exception, match="loss weight 0"):
        trainer.train(hfds.DatasetDict({"train": images(8, "z", weights=[0.0] * 8), **rest}), cfg, tmp_path / "c",
                      progress=False)


@pytest.mark.parametrize("name", models.names())
def test_every_registry_model_trains_through_a_last_batch_of_one_row(tmp_path, name):
    # 17 rows in batches of 16: the 1-row tail is merged into the batch before, so BatchNorm never
    # sees a single row, even where a feature map reaches 1x1 (the RANs on 8x8)
    side = 8 if "attention" in name else 4
    ch = models.describe(name)["in_channels"]
    rng = np.random.default_rng(0)
    n = 17
    d = {"id": [f"tr/{i}" for i in range(n)], "label": rng.integers(0, 3, n).tolist(), "domain": ["target"] * n,
         "origin": ["real"] * n, "group": [f"g{i}" for i in range(n)], "parent": [""] * n, "recipe": ["{}"] * n,
         "image": rng.integers(0, 255, (n, ch, side, side)).astype(np.uint8)}
    train = hfds.Dataset.from_dict(d, features=schema.image_features(LABELS, (side, side, ch)))
    train = train.add_column("weight", [1.0] * n, feature=hfds.Value("float32"))
    dev = train.select(range(4))
    cfg = dict(FAST, model=name, batch_size=16, model_kwargs={"width": 8, "stem_width": 8}
               if "attention" in name and name not in ("attention_small", "attention_tiny") else {})
    res = trainer.train(hfds.DatasetDict({"train": train, "dev": dev}), cfg, tmp_path, progress=False)
    assert res["steps"] == 1 and np.isfinite(res["history"][-1]["loss"])


def _audio_splits(root):
    rng = np.random.default_rng(0)
    rate, n = 4000, 48

    def split(k, prefix):
        y = rng.integers(0, 3, k)
        t = np.arange(rate) / rate
        audio = [(0.3 * np.sin(2 * np.pi * (200 + 300 * y[i]) * t) + 0.05 * rng.standard_normal(rate))
                 .astype(np.float32) for i in range(k)]
        d = {"id": [f"{prefix}/{i}" for i in range(k)], "audio": audio, "sampling_rate": [rate] * k,
             "label": y.tolist(), "domain": ["target"] * k, "origin": ["real"] * k,
             "group": [f"{prefix}{i}" for i in range(k)], "parent": [""] * k, "recipe": ["{}"] * k}
        ds = hfds.Dataset.from_dict(d, features=schema.audio_features(LABELS))
        return ds.add_column("weight", [1.0] * k, feature=hfds.Value("float32"))

    hfds.DatasetDict({"train": split(n, "tr"), "dev": split(12, "dv"), "test": split(12, "te")}).save_to_disk(root)


_SCRIPT = textwrap.dedent("""
    import sys
    from shiftlab.train import trainer
    cfg = {"epochs": 2, "batch_size": 16, "lr": 0.01, "optimizer": "adamw", "grad_clip": 1.0, "num_threads": 1,
           "eval_train_rows": None, "model": "attention_tiny", "model_kwargs": {"width": 4, "stem_width": 8},
           "frontend": {"n_mels": 20, "n_fft": 256, "hop_length": 128}}
    trainer.main_train(cfg, sys.argv[1], sys.argv[2], sys.argv[2] + "/metrics.json",
                       predictions_path=sys.argv[2] + "/predictions.npz", progress=False)
""")


def test_audio_training_gives_byte_identical_predictions_in_fresh_processes(tmp_path):
    _audio_splits(tmp_path / "splits")
    digests = []
    for k in range(2):
        out = tmp_path / f"run{k}"
        subprocess.run([sys.executable, "-c", _SCRIPT, str(tmp_path / "splits"), str(out)], check=True,
                       capture_output=True, text=True)
        digests.append(hashlib.sha256((out / "predictions.npz").read_bytes()).hexdigest())
    assert digests[0] == digests[1]


_FEATURES = textwrap.dedent("""
    import hashlib, sys, torch
    from shiftlab import store
    from shiftlab.train.data import load_splits
    from shiftlab.train.frontend import Frontend
    tr = load_splits(store.load(sys.argv[1], "splits"), ("train",), "all")["train"]
    fe = Frontend.fit(tr, {"n_mels": 20, "n_fft": 256, "hop_length": 128}, 0, "cpu")
    f = torch.cat([fe(tr.x[i:i + 7]) for i in range(0, len(tr), 7)])
    print(hashlib.sha256(f.numpy().tobytes() + fe.mean.numpy().tobytes() + fe.std.numpy().tobytes()).hexdigest())
""")


def test_audio_features_do_not_depend_on_the_cpus_code_paths(tmp_path):
    # float32 log-mel features used to change with MKL's code path (chosen per CPU) and with ATen's
    # vector width; computed in float64 and rounded to a 1/1024 dB grid they are the same bytes when
    # MKL takes its conservative path and when ATen is held to scalar code (as on a CPU without AVX2)
    _audio_splits(tmp_path / "splits")
    out = set()
    for extra in ({}, {"MKL_CBWR": "COMPATIBLE"}, {"ATEN_CPU_CAPABILITY": "default"}, {"OMP_NUM_THREADS": "1"}):
        r = subprocess.run([sys.executable, "-c", _FEATURES, str(tmp_path / "splits")], check=True,
                           capture_output=True, text=True, env=dict(os.environ, **extra))
        out.add(r.stdout.strip().splitlines()[-1])
    assert len(out) == 1


def test_train_interrupted_while_writing_results_keeps_metrics_and_predictions_old(tmp_path, monkeypatch):
    # a run's metrics and predictions commit together: a Ctrl-C after the metrics were staged leaves both old
    from shiftlab import store

    rest = {"train_dev": images(10, "td", seed=1, domain="source"), "dev": images(12, "dv", seed=2),
            "test": images(12, "te", seed=3)}
    store.save(hfds.DatasetDict({"train": images(40, "tr"), **rest}), tmp_path / "s1")
    store.save(hfds.DatasetDict({"train": images(40, "tr", seed=9), **rest}), tmp_path / "s2")
    m, p = tmp_path / "m.json", tmp_path / "p.npz"
    cfg = dict(FAST, model="attention_tiny", model_kwargs={"width": 4, "stem_width": 8}, resume=False)
    trainer.main_train(cfg, tmp_path / "s1", tmp_path / "run1", m, predictions_path=p, progress=False)
    old = (m.read_bytes(), p.read_bytes())
    real = trainer.save_predictions

    def interrupted(path, *a, **k):
        assert any(q.name.startswith(".m.json.tmp-") for q in tmp_path.iterdir())  # metrics already staged
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "save_predictions", interrupted)
    with pytest.raises(KeyboardInterrupt):
        trainer.main_train(cfg, tmp_path / "s2", tmp_path / "run2", m, predictions_path=p, progress=False)
    assert (m.read_bytes(), p.read_bytes()) == old
    assert not [q for q in tmp_path.iterdir() if ".tmp-" in q.name or ".old-" in q.name]
    monkeypatch.setattr(trainer, "save_predictions", real)
    trainer.main_train(cfg, tmp_path / "s2", tmp_path / "run2", m, predictions_path=p, progress=False)
    assert m.read_bytes() != old[0] and p.read_bytes() != old[1]
