"""Trainer: weighted loss, data loading and batching, frontend, checkpoints, exact resume, predict."""

from __future__ import annotations

import json
import math

import datasets as hfds
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from shiftlab.datasets import schema
from shiftlab.errors import ShiftlabError
from shiftlab.train import data as tdata
from shiftlab.train import frontend as tfe
from shiftlab.train import loss as tloss
from shiftlab.train import trainer

LABELS = ["a", "b", "c"]


# --------------------------------------------------------------------------- fixtures


class Tiny(nn.Module):
    """A small CNN (conv - ReLU - global mean - linear); no BatchNorm, no dropout."""

    def __init__(self, in_channels: int = 1, num_classes: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 6, 3, padding=1)
        self.fc = nn.Linear(6, num_classes)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


class TinyBNDrop(Tiny):
    """With BatchNorm and dropout: exercises buffers and the per-epoch torch RNG on resume."""

    def __init__(self, in_channels: int = 1, num_classes: int = 3):
        super().__init__(in_channels, num_classes)
        self.bn = nn.BatchNorm2d(6)
        self.drop = nn.Dropout(0.3)

    def forward(self, x):
        return self.fc(self.drop(torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3))))


def image_split(n, prefix, domain=None, origin=None, seed=0, hw=8, weights=None, parents=None):
    """Learnable images: class k has brightness around 60 k + noise; channels-first uint8."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(LABELS), n)
    img = (rng.integers(0, 70, (n, 1, hw, hw)) + 70 * y[:, None, None, None]).astype(np.uint8)
    dom = domain if isinstance(domain, list) else [domain or "target"] * n
    org = origin if isinstance(origin, list) else [origin or "real"] * n
    d = {
        "id": [f"{prefix}/{i:04d}" for i in range(n)], "image": img, "label": y.tolist(), "domain": dom,
        "origin": org, "group": [f"{prefix}{i}" for i in range(n)], "parent": parents or [""] * n,
        "recipe": ["{}"] * n,
    }
    ds = hfds.Dataset.from_dict(d, features=schema.image_features(LABELS, (hw, hw, 1)))
    w = np.ones(n, np.float32) if weights is None else np.asarray(weights, np.float32)
    return ds.add_column("weight", w.tolist(), feature=hfds.Value("float32"))


def image_splits(n_train=120, n_syn=0, seed=0):
    n = n_train + n_syn
    dom = ["source" if i % 3 else "target" for i in range(n)]
    org = ["real"] * n_train + ["synthetic"] * n_syn
    w = [0.5 if (o == "synthetic" or d == "source") else 1.0 for d, o in zip(dom, org)]
    return hfds.DatasetDict({
        "train": image_split(n, "tr", dom, org, seed, weights=w),
        "train_dev": image_split(20, "td", "source", seed=seed + 1),
        "dev": image_split(30, "dv", seed=seed + 2),
        "test": image_split(30, "te", seed=seed + 3),
    })


def audio_split(n, prefix, seed=0, rate=2000, lengths=(1800, 2000, 2100)):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(LABELS), n)
    audio = []
    for i in range(n):
        t = np.arange(lengths[i % len(lengths)]) / rate
        audio.append((0.3 * np.sin(2 * np.pi * (150 + 250 * y[i]) * t) + 0.01 * rng.standard_normal(len(t)))
                     .astype(np.float32))
    d = {"id": [f"{prefix}/{i}" for i in range(n)], "audio": audio, "sampling_rate": [rate] * n,
         "label": y.tolist(), "domain": ["target"] * n, "origin": ["real"] * n,
         "group": [f"{prefix}{i}" for i in range(n)], "parent": [""] * n, "recipe": ["{}"] * n}
    return hfds.Dataset.from_dict(d, features=schema.audio_features(LABELS))


FAST = {"epochs": 3, "batch_size": 32, "lr": 0.05, "warmup_epochs": 1.0, "eval_train_rows": None,
        "num_threads": 1}


def cfg(**kw):
    c = dict(FAST)
    c.update(kw)
    return c


# --------------------------------------------------------------------------- loss


def test_weighted_loss_hand_computed():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.5, 0.5, 3.0]])
    y = torch.tensor([0, 2, 2])
    w = torch.tensor([1.0, 0.25, 0.0])

    def ce(row, k):
        return -row[k] + math.log(sum(math.exp(v) for v in row))

    l0, l1 = ce([2, 0, 0], 0), ce([0, 1, 0], 2)
    expected = (1.0 * l0 + 0.25 * l1) / 1.25
    got = tloss.weighted_cross_entropy(logits, y, w)
    assert abs(float(got) - expected) < 1e-6
    # None weights = plain mean; equals torch's reduction, label smoothing passed through
    assert torch.allclose(tloss.weighted_cross_entropy(logits, y), F.cross_entropy(logits, y))
    assert torch.allclose(tloss.weighted_cross_entropy(logits, y, torch.ones(3), label_smoothing=0.1),
                          F.cross_entropy(logits, y, label_smoothing=0.1))
    # explicit denominator and scale
    got2 = tloss.weighted_cross_entropy(logits, y, w, denominator=2.5, scale=2.0)
    assert abs(float(got2) - 2.0 * (l0 + 0.25 * l1) / 2.5) < 1e-6


def test_zero_weight_batch_has_zero_loss_and_zero_grads():
    net = Tiny()
    x = torch.randn(4, 1, 8, 8)
    loss = tloss.weighted_cross_entropy(net(x), torch.tensor([0, 1, 2, 0]), torch.zeros(4))
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert all(torch.count_nonzero(p.grad) == 0 for p in net.parameters())


def _grads(net, x, y, w):
    net.zero_grad()
    tloss.weighted_cross_entropy(net(x), y, w).backward()
    return [p.grad.clone() for p in net.parameters()]


def test_beta_zero_rows_do_not_change_gradients():
    torch.manual_seed(0)
    net = Tiny()
    x, y = torch.randn(10, 1, 8, 8), torch.randint(0, 3, (10,))
    w = torch.tensor([1, 1, 0, 1, 0, 0, 1, 1, 0, 1], dtype=torch.float32)  # beta = 0 for the source rows
    keep = w > 0
    with_rows = _grads(net, x, y, w)
    without = _grads(net, x[keep], y[keep], torch.ones(int(keep.sum())))
    for a, b in zip(with_rows, without):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    # and a non-zero beta does change them
    changed = _grads(net, x, y, torch.where(keep, 1.0, 0.3))
    assert any(not torch.allclose(a, b) for a, b in zip(changed, without))


def test_ddp_style_denominator_reproduces_global_batch_gradient():
    torch.manual_seed(1)
    net = Tiny()
    x, y, w = torch.randn(9, 1, 8, 8), torch.randint(0, 3, (9,)), torch.rand(9)
    full = _grads(net, x, y, w)
    parts = []
    for sl in (slice(0, 5), slice(5, 9)):  # two "ranks", their gradients averaged as DDP does
        net.zero_grad()
        tloss.weighted_cross_entropy(net(x[sl]), y[sl], w[sl], denominator=w.sum(), scale=2).backward()
        parts.append([p.grad.clone() for p in net.parameters()])
    for f, a, b in zip(full, *parts):
        torch.testing.assert_close(f, (a + b) / 2, rtol=1e-5, atol=1e-7)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0.01, 10.0), min_size=1, max_size=8), st.floats(0.01, 100.0))
def test_loss_invariant_to_weight_scale(ws, c):
    n = len(ws)
    g = torch.Generator().manual_seed(n)
    logits = torch.randn(n, 3, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    w = torch.tensor(ws)
    a = tloss.weighted_cross_entropy(logits, y, w)
    b = tloss.weighted_cross_entropy(logits, y, w * c)
    assert torch.allclose(a, b, rtol=1e-5)


def test_loss_bad_shapes():
    with pytest.raises(ShiftlabError, match="weight must be"):
        tloss.weighted_cross_entropy(torch.zeros(3, 2), torch.zeros(3, dtype=torch.long), torch.ones(2))
    with pytest.raises(ShiftlabError, match="logits must be"):
        tloss.weighted_cross_entropy(torch.zeros(3), torch.zeros(3, dtype=torch.long))


# --------------------------------------------------------------------------- config


def test_merge_defaults_and_errors():
    c = trainer.merge(None)
    assert c["epochs"] == trainer.DEFAULTS["epochs"] and c["frontend"]["n_mels"] == 64
    assert trainer.merge({"lr": 1})["lr"] == 1.0
    cases = [
        ({"epoch": 3}, r"^train\.epoch: unknown key \(did you mean epochs\?\)$"),
        # (the wording of shiftlab.paramschema, one for every section)
        ({"lr": 0}, r"^train\.lr: 0 is out of range \(0\.0, inf\]$"),
        ({"optimizer": "adam"}, r"^train\.optimizer: 'adam' is not one of sgd, adamw \(did you mean adamw\?\)$"),
        ({"rows": "synthetic"}, r"^train\.rows: 'synthetic' is not one of all, real, no_synthetic, target"),
        ({"batch_size": 0}, r"^train\.batch_size:"),
        ({"device": "gpu"}, r"^train\.device:"),
        ({"warmup_epochs": 20, "epochs": 5}, r"^train\.warmup_epochs: must be at most epochs"),
        ({"amp": "yes"}, r"^train\.amp:"),
        ({"frontend": {"n_mel": 3}}, r"^train\.frontend\.n_mel: unknown key \(did you mean n_mels\?\)$"),
        ({"frontend": {"crop_padding": -1}}, r"^train\.frontend\.crop_padding:"),
        ({"momentum": 0.0}, r"^train\.nesterov: needs momentum"),
    ]
    for bad, pattern in cases:
        with pytest.raises(ShiftlabError, match=pattern):
            trainer.merge(bad)
    with pytest.raises(ShiftlabError, match=r"^train_audio\.seed:"):
        trainer.merge({"seed": -1}, "train_audio")


def test_lr_schedule_warmup_then_cosine():
    f = [trainer.lr_factor(s, 100, 10, "cosine", 0.1) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert f[10] == pytest.approx(1.0) and f[99] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(f[10:], f[11:]))
    assert trainer.lr_factor(50, 100, 0, "constant", 0.0) == 1.0


# --------------------------------------------------------------------------- data


def test_load_split_images_and_row_selection():
    s = image_splits(n_train=60, n_syn=12)
    d = tdata.load_split(s["train"], "train")
    assert d.x.dtype == torch.uint8 and tuple(d.x.shape) == (72, 1, 8, 8)
    assert np.array_equal(d.x.numpy(), schema.chw_batch(s["train"]))
    assert d.y.dtype == torch.int64 and d.w.dtype == torch.float32
    real = tdata.load_split(s["train"], "train", rows="no_synthetic")
    assert len(real) == 60 and set(real.origin) == {"real"}
    assert np.array_equal(real.index, np.arange(60))
    assert len(tdata.load_split(s["train"], "train", rows="real")) == 60
    tgt = tdata.load_split(s["train"], "train", rows="target")
    assert set(tgt.domain) == {"target"} and set(tgt.origin) == {"real"} and len(tgt) == 20
    assert np.array_equal(tgt.x.numpy(), d.x.numpy()[tgt.index])
    # rows filters train/train_dev only, never dev/test
    all_ = tdata.load_splits(s, rows="target")
    assert len(all_["dev"]) == 30 and len(all_["test"]) == 30 and len(all_["train_dev"]) == 0
    with pytest.raises(ShiftlabError, match="rows: must be one of"):
        tdata.load_split(s["train"], "train", rows="nope")


def test_load_split_audio_pads_and_crops_centred():
    ds = audio_split(3, "a", lengths=(4, 6, 9))
    d = tdata.load_split(ds, "train", audio_length=6)
    assert d.x.shape == (3, 6) and d.sampling_rate == 2000
    raw = [np.asarray(a, np.float32) for a in ds["audio"]]
    assert np.array_equal(d.x[0].numpy(), np.concatenate([[0], raw[0], [0]]).astype(np.float32))
    assert np.array_equal(d.x[1].numpy(), raw[1])
    assert np.array_equal(d.x[2].numpy(), raw[2][1:7])
    assert tdata.load_split(ds, "train").x.shape == (3, 9)  # default: the longest clip


def test_load_splits_rejects_mismatched_labels():
    s = image_splits(30)
    other = image_split(10, "dv").cast_column("label", hfds.ClassLabel(names=["x", "y", "z"]))
    s["dev"] = other
    with pytest.raises(ShiftlabError, match="split dev: label names"):
        tdata.load_splits(s)


def test_uniforms_are_per_sample_and_batch_independent():
    idx = np.array([5, 17, 3, 1000, 17])
    u = tdata.uniforms(3, 2, idx, "p", 4)
    assert u.shape == (5, 4) and (u >= 0).all() and (u < 1).all()
    assert np.array_equal(u[1], u[4])  # same sample, same values
    assert np.array_equal(tdata.uniforms(3, 2, idx[2:4], "p", 4), u[2:4])
    assert not np.array_equal(tdata.uniforms(3, 3, idx, "p", 4), u)  # another epoch
    assert not np.array_equal(tdata.uniforms(4, 2, idx, "p", 4), u)  # another seed
    big = tdata.uniforms(0, 0, np.arange(20000), "q")[:, 0]
    assert abs(big.mean() - 0.5) < 0.01 and abs((big < 0.25).mean() - 0.25) < 0.015


def test_loader_epochs_cover_rows_once_and_shards_match_global_batches():
    d = tdata.load_split(image_split(41, "tr", weights=np.linspace(0.1, 1, 41)), "train")
    one = tdata.Loader(d, 8, shuffle=True, seed=1)
    batches = list(one.epoch(0))
    # 41 = 5 x 8 + 1: the 1-row tail is merged into the batch before (BatchNorm cannot train on 1 row)
    assert len(batches) == len(one) == 5 and [len(b.rows) for b in batches] == [8, 8, 8, 8, 9]
    rows = np.concatenate([b.rows for b in batches])
    assert sorted(rows.tolist()) == list(range(41))
    assert np.array_equal(rows, tdata.epoch_permutation(41, 1, 0))
    assert not np.array_equal(rows, np.concatenate([b.rows for b in one.epoch(1)]))
    for b in batches:
        assert torch.equal(b.x, d.x[torch.from_numpy(b.rows)])
        assert float(b.denominator) == pytest.approx(float(d.w[torch.from_numpy(b.rows)].sum()))
    # two ranks: each global batch split between them, same denominators
    r0 = list(tdata.Loader(d, 8, shuffle=True, seed=1, rank=0, world_size=2).epoch(0))
    r1 = list(tdata.Loader(d, 8, shuffle=True, seed=1, rank=1, world_size=2).epoch(0))
    assert len(r0) == len(r1) == 5
    for g, a, b in zip(batches, r0, r1):
        assert np.array_equal(np.concatenate([a.rows, b.rows]), g.rows)
        assert float(a.denominator) == float(b.denominator) == float(g.denominator)
    assert [len(b.rows) for b in r1] == [4, 4, 4, 4, 4]  # every rank >= 2 rows in every batch
    # a tail of 2 rows per rank stays a batch of its own
    d42 = tdata.load_split(image_split(44, "tr"), "train")
    assert [len(b.rows) for b in tdata.Loader(d42, 8, shuffle=True).epoch(0)] == [8, 8, 8, 8, 8, 4]
    assert [len(b.rows) for b in tdata.Loader(d42, 8, shuffle=True, world_size=2, rank=1).epoch(0)] == \
        [4, 4, 4, 4, 4, 2]  # 44 = 5 x 8 + 4: 2 rows per rank are enough
    d43 = tdata.load_split(image_split(43, "tr"), "train")
    assert [len(b.rows) for b in tdata.Loader(d43, 8, shuffle=True, world_size=2, rank=1).epoch(0)] == \
        [4, 4, 4, 4, 5]  # 43 = 5 x 8 + 3: one rank would get 1 row, so the tail joins the last batch (11 rows)
    assert len(tdata.Loader(d, 8, shuffle=True, drop_last=True)) == 5
    # evaluation order: contiguous shares
    e0 = np.concatenate([b.rows for b in tdata.Loader(d, 8, rank=0, world_size=2).epoch()])
    e1 = np.concatenate([b.rows for b in tdata.Loader(d, 8, rank=1, world_size=2).epoch()])
    assert np.array_equal(np.concatenate([e0, e1]), np.arange(41))


def test_loader_epoch_rows_stream_covers_every_row_before_repeating():
    d = tdata.load_split(image_split(10, "tr"), "train")
    ld = tdata.Loader(d, 4, shuffle=True, seed=3, epoch_rows=4)
    assert len(ld) == 1
    epochs = [np.concatenate([b.rows for b in ld.epoch(e)]) for e in range(5)]
    assert all(len(e) == 4 for e in epochs)
    stream = np.concatenate(epochs)  # 20 items = two full passes over the 10 rows
    assert sorted(stream[:10].tolist()) == list(range(10)) and sorted(stream[10:].tolist()) == list(range(10))
    assert np.array_equal(stream, np.concatenate([tdata.stream_rows(10, 3, e, 4) for e in range(5)]))
    assert not np.array_equal(stream[:10], stream[10:])  # a fresh permutation per pass
    # more rows per epoch than the data: wraps into the next pass; 2 ranks share each global batch
    big = tdata.Loader(d, 8, shuffle=True, seed=3, epoch_rows=25)
    assert len(big) == 3 and sum(len(b.rows) for b in big.epoch(0)) == 25  # 25 = 8 + 8 + (8 + 1)
    r0, r1 = (list(tdata.Loader(d, 8, shuffle=True, seed=3, epoch_rows=25, rank=k, world_size=2).epoch(0))
              for k in (0, 1))
    for g, a, b in zip(list(big.epoch(0)), r0, r1):
        assert np.array_equal(np.concatenate([a.rows, b.rows]), g.rows)
    with pytest.raises(ShiftlabError, match="epoch_rows"):
        tdata.Loader(d, 4, shuffle=True, epoch_rows=0)


def test_epoch_rows_real_gives_synthetic_variants_the_same_steps(tmp_path):
    s = image_splits(n_train=60, n_syn=40)
    seen: list = []

    def hook(x, sample_index, epoch):
        seen.append((epoch, np.asarray(sample_index).copy()))
        return x

    res = trainer.train(s, cfg(epochs=2, epoch_rows="real", batch_size=16), tmp_path, model=Tiny, augment=hook,
                        progress=False)
    assert res["rows"]["train"] == 100 and res["epoch_rows"] == 60 and res["steps"] == 2 * 4
    per_epoch = [np.concatenate([i for ep, i in seen if ep == e]) for e in (0, 1)]
    assert [len(p) for p in per_epoch] == [60, 60]
    both = np.concatenate(per_epoch)
    real, syn = both[both < 60], both[both >= 60]
    # real rows: every one once before any repeats, in the order a real-only run with this seed draws them
    assert len(set(real[:60].tolist())) == min(60, len(real))
    assert np.array_equal(real, np.concatenate([tdata.stream_rows(60, 0, e, 60) for e in (0, 1)])[:len(real)])
    assert len(set(syn[:40].tolist())) == min(40, len(syn)) and 0.25 < len(syn) / len(both) < 0.55
    res = trainer.train(s, cfg(epochs=1, epoch_rows=None, batch_size=16), tmp_path / "all", model=Tiny,
                        progress=False)
    assert res["epoch_rows"] == 100 and res["steps"] == 7
    for bad in (0, -3, "half", True, 2.5):
        with pytest.raises(ShiftlabError, match=r"train\.epoch_rows"):
            trainer.merge({"epoch_rows": bad})


# --------------------------------------------------------------------------- frontend


def test_image_frontend_normalises_and_augments_per_sample():
    d = tdata.load_split(image_split(64, "tr"), "train")
    fe = tfe.Frontend.fit(d, {"hflip": True, "crop_padding": 2}, seed=7)
    out = fe(d.x)
    assert out.dtype == torch.float32 and out.shape == (64, 1, 8, 8)
    assert abs(float(out.mean())) < 1e-4 and abs(float(out.std(unbiased=False)) - 1) < 1e-3
    a = fe(d.x, d.index, epoch=0, train=True)
    assert not torch.equal(a, out)
    # per-sample: the same row gets the same augmentation in another batch composition
    sub = np.array([10, 3, 50])
    b = fe(d.x[torch.from_numpy(sub)], d.index[sub], epoch=0, train=True)
    assert torch.equal(b, a[torch.from_numpy(sub)])
    assert not torch.equal(fe(d.x, d.index, epoch=1, train=True), a)
    # plain flips: about half of the rows flipped, exactly mirrored
    flip = tfe.Frontend.fit(d, {"hflip": True, "normalize": False}, seed=7)
    f = flip(d.x, d.index, 0, train=True)
    base = d.x.float() / 255
    mirrored = [torch.equal(f[i], base[i].flip(-1)) and not torch.equal(f[i], base[i]) for i in range(64)]
    same = [torch.equal(f[i], base[i]) for i in range(64)]
    assert all(m or s for m, s in zip(mirrored, same)) and 16 < sum(mirrored) < 48
    # crops: shifted copies with zero borders
    crop = tfe.Frontend.fit(d, {"crop_padding": 2, "normalize": False}, seed=7)
    c = crop(d.x, d.index, 0, train=True)
    u = tdata.uniforms(7, 0, d.index, "frontend/image", 4)
    for i in (0, 5, 9):
        oy, ox = int(u[i, 2] * 5), int(u[i, 3] * 5)
        padded = F.pad(base[i], (2, 2, 2, 2))
        assert torch.equal(c[i], padded[:, oy:oy + 8, ox:ox + 8])
    # state round trip
    fe2 = tfe.Frontend.from_state(fe.state())
    assert torch.equal(fe2(d.x), out)


def test_audio_frontend_logmel_and_specaugment():
    ds = audio_split(6, "a", lengths=(2000,))
    d = tdata.load_split(ds, "train")
    c = {"n_mels": 16, "n_fft": 128, "hop_length": 64, "spec_augment": True, "freq_mask": 4, "time_mask": 6}
    fe = tfe.Frontend.fit(d, c, seed=1)
    out = fe(d.x)
    assert out.shape == (6, 1, 16, 2000 // 64 + 1) == (6, *fe.output_shape())
    mel = fe._features(d.x)
    assert torch.allclose(mel.mean(dim=(0, 1, 3)), fe.mean, atol=1e-3)
    state = torch.get_rng_state()
    a = fe(d.x, d.index, epoch=0, train=True)
    assert torch.equal(torch.get_rng_state(), state)  # global RNG untouched
    assert torch.equal(fe(d.x[2:4], d.index[2:4], epoch=0, train=True), a[2:4])  # per sample
    masked = (a == 0) & (out != 0)
    assert masked.any() and torch.equal(a[~masked], out[~masked])
    # a masked frequency band is a full row of the spectrogram
    rows_masked = (a[0, 0] == 0).all(dim=1)
    assert rows_masked.sum() <= 2 * 3
    # log(x + eps) variant
    fl = tfe.Frontend.fit(d, {"n_mels": 16, "n_fft": 128, "hop_length": 64, "log": "log", "normalize": False})
    ref = torch.log(fl._mel64(d.x.double().unsqueeze(1)) + 1e-6)
    assert torch.allclose(fl(d.x).double(), ref, atol=1 / 2048)  # rounded to the 1/1024 grid
    assert torch.equal(torch.round(fl(d.x) * tfe.FEATURE_GRID), fl(d.x) * tfe.FEATURE_GRID)
    with pytest.raises(ShiftlabError, match="f_max"):
        tfe.Frontend.fit(d, {"f_max": 5000.0})


# --------------------------------------------------------------------------- training


def test_train_selects_best_on_dev_and_writes_checkpoints(tmp_path):
    s = image_splits()
    del s["test"]  # training never needs (or reads) test
    res = trainer.train(s, cfg(), tmp_path, model=Tiny, progress=False)
    hist = res["history"]
    assert [h["epoch"] for h in hist] == [1, 2, 3]
    dev = [h["dev/error"] for h in hist]
    assert res["best_epoch"] == 1 + int(np.argmin(dev)) and res["best_dev_error"] == min(dev)
    best = trainer.load_checkpoint(tmp_path / "best.pt")
    last = torch.load(tmp_path / "last.pt", map_location="cpu", weights_only=True)
    assert best["epoch"] == res["best_epoch"] and last["epoch"] == 3
    assert set(last) >= {"model", "optimizer", "scheduler", "epoch", "rng", "best", "history"}
    for k, v in res["model"].state_dict().items():
        assert torch.equal(last["model"][k], v)
    assert hist[-1]["train/error"] < 0.5  # it learns (3 classes: chance is 2/3)
    # the best checkpoint reproduces its recorded dev error
    p = trainer.predict(tmp_path / "best.pt", s, model=Tiny)
    assert set(p) == {"train", "train_dev", "dev"}
    assert float(np.mean(p["dev"]["pred"] != p["dev"]["y"])) == pytest.approx(best["metrics"]["dev/error"])
    assert np.allclose(p["dev"]["probs"].sum(1), 1, atol=1e-5)
    assert list(p["dev"]["id"]) == s["dev"]["id"] and p["dev"]["label"][0] == LABELS[p["dev"]["y"][0]]


def _interrupt_after(n):
    def hook(epoch, rec):
        if epoch == n:
            raise KeyboardInterrupt

    return hook


@pytest.mark.parametrize("factory, fe_cfg", [(TinyBNDrop, {"hflip": True, "crop_padding": 1}), (Tiny, {})])
def test_resume_gives_the_same_model(tmp_path, factory, fe_cfg):
    s = image_splits(n_train=100)
    c = cfg(frontend=fe_cfg, eval_train_rows=40)
    straight = trainer.train(s, c, tmp_path / "a", model=factory, progress=False)
    with pytest.raises(KeyboardInterrupt):
        trainer.train(s, c, tmp_path / "b", model=factory, progress=False, on_epoch_end=_interrupt_after(2))
    assert trainer.load_checkpoint(tmp_path / "b" / "last.pt")["epoch"] == 2
    (tmp_path / "b" / "best.pt").unlink()  # e.g. DVC cleaned the outputs: rebuilt from last.pt
    resumed = trainer.train(s, c, tmp_path / "b", model=factory, progress=False)
    assert resumed["resumed_from"] == 2
    a, b = straight["model"].state_dict(), resumed["model"].state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert resumed["history"] == straight["history"]
    ba = trainer.load_checkpoint(tmp_path / "a" / "best.pt")
    bb = trainer.load_checkpoint(tmp_path / "b" / "best.pt")
    assert ba["epoch"] == bb["epoch"] and all(torch.equal(ba["model"][k], bb["model"][k]) for k in ba["model"])


def test_resume_refuses_other_options_and_global_rng_is_restored(tmp_path):
    s = image_splits(n_train=60)
    state = torch.get_rng_state()
    trainer.train(s, cfg(epochs=1), tmp_path, model=TinyBNDrop, progress=False)
    assert torch.equal(torch.get_rng_state(), state)
    with pytest.raises(ShiftlabError, match="last.pt: written by a run with other data or training options"):
        trainer.train(s, cfg(epochs=1, lr=0.2), tmp_path, model=Tiny, progress=False)
    # runtime options may differ, and a finished run is not trained again
    res = trainer.train(s, cfg(epochs=1, eval_batch_size=7), tmp_path, model=TinyBNDrop, progress=False)
    assert res["resumed_from"] == 1
    (tmp_path / "last.pt").write_bytes(b"garbage")
    with pytest.raises(ShiftlabError, match="not a readable trainer checkpoint"):
        trainer.train(s, cfg(epochs=1), tmp_path, model=Tiny, progress=False)


def test_rows_selection_and_augment_hook(tmp_path):
    s = image_splits(n_train=60, n_syn=20)
    seen: list = []

    def hook(x, sample_index, epoch):
        seen.append((epoch, np.asarray(sample_index).copy()))
        return 255 - x

    res = trainer.train(s, cfg(epochs=2, rows="no_synthetic"), tmp_path, model=Tiny, augment=hook, progress=False)
    assert res["rows"]["train"] == 60
    for e in (0, 1):
        idx = np.concatenate([i for ep, i in seen if ep == e])
        assert sorted(idx.tolist()) == list(range(60))  # every selected row once, no synthetic row
    seen.clear()
    trainer.train(s, cfg(epochs=1), tmp_path / "all", model=Tiny, augment=hook, progress=False)
    assert sorted(np.concatenate([i for _, i in seen]).tolist()) == list(range(80))

    with pytest.raises(ShiftlabError, match="augment must return a tensor of shape"):
        trainer.train(s, cfg(epochs=1), tmp_path / "bad", model=Tiny, augment=lambda x, i, e: x[:1],
                      progress=False)


def test_audio_training_and_predict(tmp_path):
    s = hfds.DatasetDict({"train": audio_split(36, "tr"), "dev": audio_split(9, "dv", seed=1),
                          "test": audio_split(9, "te", seed=2)})
    c = cfg(epochs=2, batch_size=12, frontend={"n_mels": 16, "n_fft": 128, "hop_length": 64,
                                               "spec_augment": True, "audio_seconds": 1.0})
    res = trainer.train(s, c, tmp_path, model=Tiny, progress=False)
    assert res["meta"]["input_shape"] == [1, 16, 2000 // 64 + 1]
    p = trainer.predict(res, s)
    assert set(p) == {"train", "dev", "test"} and p["test"]["logits"].shape == (9, 3)


def test_precomputed_audio_features_train_exactly_as_per_batch_ones(tmp_path):
    """Audio features computed once per split (the default) give the same weights and logits
    as computing them per batch (the path an augment hook takes: it needs the waveforms)."""
    s = hfds.DatasetDict({"train": audio_split(36, "tr"), "dev": audio_split(9, "dv", seed=1),
                          "test": audio_split(9, "te", seed=2)})
    c = cfg(epochs=2, batch_size=12, frontend={"n_mels": 16, "n_fft": 128, "hop_length": 64,
                                               "spec_augment": True, "audio_seconds": 1.0})
    calls = []

    def identity(x, i, e):
        calls.append(x.ndim)
        return x

    pre = trainer.train(s, c, tmp_path / "pre", model=Tiny, progress=False)
    raw = trainer.train(s, c, tmp_path / "raw", model=Tiny, augment=identity, progress=False)
    assert calls and set(calls) == {2}  # the hook saw waveforms, so that run computed features per batch
    a, b = pre["model"].state_dict(), raw["model"].state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    pa, pb = trainer.predict(pre, s), trainer.predict(raw, s)
    assert all(np.array_equal(pa[k]["logits"], pb[k]["logits"]) for k in pa)


def test_main_train_writes_metrics_predictions_and_dvclive(tmp_path, capsys):
    s = image_splits(n_train=60)
    from shiftlab import store

    store.save(s, tmp_path / "splits")
    m = trainer.main_train(cfg(epochs=2), tmp_path / "splits", tmp_path / "model", tmp_path / "m.json",
                           live_dir=tmp_path / "live", predictions_path=tmp_path / "p.npz", model=Tiny,
                           progress=False)
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("train: <custom>, 2 epochs (best ") and "dev error" in line
    doc = json.loads((tmp_path / "m.json").read_text())
    assert doc == m and set(doc["error"]) == {"train", "train_dev", "dev", "test"}
    assert doc["error"]["dev"] == pytest.approx(doc["best_dev_error"])
    preds, names = trainer.load_predictions(tmp_path / "p.npz")
    assert names == LABELS and preds["test"]["id"].tolist() == s["test"]["id"]
    assert preds["dev"]["probs"].dtype == np.float32
    tsv = tmp_path / "live" / "plots" / "metrics" / "dev" / "error.tsv"
    assert tsv.is_file() and len(tsv.read_text().strip().splitlines()) == 3  # header + 2 epochs


def test_rerun_writes_byte_identical_outputs(tmp_path):
    """Same params + seed: checkpoints, metrics, predictions and DVCLive files are byte-identical
    (no wall-clock time is stored), so DVC sees unchanged outputs."""
    from shiftlab import store

    s = image_splits(n_train=60)
    store.save(s, tmp_path / "splits")
    for run in ("a", "b"):
        d = tmp_path / run
        trainer.main_train(cfg(epochs=2), tmp_path / "splits", d / "model", d / "m.json", live_dir=d / "live",
                           predictions_path=d / "p.npz", model=Tiny, progress=False)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert {"model/best.pt", "model/last.pt", "m.json", "p.npz"} <= {str(f) for f in files}
    assert any(str(f).startswith("live/") for f in files)
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    assert "seconds" not in json.loads((tmp_path / "a" / "m.json").read_text())


def test_module_cli_reports_config_errors(tmp_path, capsys):
    rc = trainer.main(["--splits", str(tmp_path), "--out", str(tmp_path / "o"), "--set", "epochs=0"])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err == "shiftlab: error: train.epochs: 0 is out of range [1, inf]"
    assert trainer.main(["--splits", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2
    assert "no split datasets here" in capsys.readouterr().err


def test_boolean_options_are_accepted_where_listed():
    """amp / channels_last / data_on_device take auto, true or false (and nothing else)."""
    from shiftlab.train import trainer as tr

    c = tr.merge({"amp": False, "channels_last": True, "data_on_device": False})
    assert c["amp"] is False and c["channels_last"] is True and c["data_on_device"] is False
    for bad in ("maybe", 1, 0):
        with pytest.raises(ShiftlabError, match="train.amp: must be one of auto, true, false"):
            tr.merge({"amp": bad})
