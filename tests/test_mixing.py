"""Audio mixing core: shiftlab.mixing.bank (banks, validation, draw policy), shiftlab.mixing.mix
(exact-SNR mix, clipping guard, make_synthetic, regenerate, OnTheFlyMixer) and
shiftlab.mixing.target (make_target).

Small data made here (tones and seeded noise at 8 kHz, a tmp folder of wavs), plus the
real Debian-package noise/speech (the pipeline's data/ when built, else prepared by a fixture).
"""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import datasets as hfds
import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shiftlab import seeding, store
from shiftlab.datasets import audio, splits as splits_mod
from shiftlab.errors import ShiftlabError
from shiftlab.mixing import bank as B
from shiftlab.mixing import mix as M
from shiftlab.mixing import target as TG

SR = 8000
T = 400  # speech samples (50 ms at 8 kHz)
LABELS = ["left", "right", "stop"]
REPO = Path(__file__).resolve().parent.parent
NOISE_DIR = REPO / "data" / "prepared" / "noise"
SPEECH_DIR = REPO / "data" / "prepared" / "speech"
SPLITS_DIR = REPO / "data" / "splits" / "audio"

#: make_target on the prepared speech's own target rows (the codrivers), TORCS loops raw: the mixing mechanics
REAL = {"speech": "real", "torcs_drives": 0}

RECIPE_KEYS = {
    "stage", "parent", "noise", "noise_group", "offset", "length", "loops", "snr_db", "speech_gain", "noise_gain",
    "peak_limit", "seed", "index", "copy", "pass", "segment",
}


# --------------------------------------------------------------------------- data the tests make


def noise_clip(n: int, seed: int, level: float = 0.1) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(n) * level).astype(np.float32)


def tone(n: int, freq: float, seed: int, level: float = 0.3) -> np.ndarray:
    t = np.arange(n) / SR
    x = level * np.sin(2 * np.pi * freq * t) + 0.01 * np.random.default_rng(seed).standard_normal(n)
    return x.astype(np.float32)


#: clip id -> length: two long clips with slack, one exactly T, one shorter than T (looped)
CLIP_LENGTHS = {"long/a": 5 * T + 150, "long/b": 2 * T + 200, "exact/c": T, "short/d": 250}


def small_bank(lengths=CLIP_LENGTHS, groups=None):
    clips = {cid: (noise_clip(n, k + 1, 0.05 * (k + 1)), SR) for k, (cid, n) in enumerate(sorted(lengths.items()))}
    return B.from_arrays(clips, SR, groups=groups)


def speech_rows(n, domain, group_of, prefix, origin="real", lengths=None, parent=None):
    rows = []
    for i in range(n):
        L = T if lengths is None else lengths[i % len(lengths)]
        rows.append(dict(
            id=f"{prefix}/{i:03d}", audio=tone(L, 200 + 50 * (i % 7), zlib.crc32(prefix.encode()) + i),
            sampling_rate=SR, label=LABELS[i % 3], domain=domain, origin=origin, group=group_of(i),
            parent="" if parent is None else parent, recipe=json.dumps({"made_by": "test", "i": i}),
        ))
    return rows


def make_splits(lengths=None):
    """train: 12 source real (4 voices) + 4 target real (spk0) + 1 synthetic source row;
    train_dev: 4 source real; dev: 4 target (spk1); test: 4 target (spk2)."""
    train = (speech_rows(12, "source", lambda i: f"voice{i % 4}", "tts/tr", lengths=lengths)
             + speech_rows(4, "target", lambda i: "spk0", "real/spk0")
             + speech_rows(1, "source", lambda i: "voice0", "tts/tr/000/blur", origin="synthetic",
                           parent="tts/tr/000"))
    train_dev = speech_rows(4, "source", lambda i: f"voice{i % 4}", "tts/td", lengths=lengths)
    dev = speech_rows(4, "target", lambda i: "spk1", "real/spk1")
    test = speech_rows(4, "target", lambda i: "spk2", "real/spk2")
    return hfds.DatasetDict({k: audio.build_dataset(v, LABELS) for k, v in
                             dict(train=train, train_dev=train_dev, dev=dev, test=test).items()})


def cfg(**kw):
    c = {"seed": 3, "snr_db": [0.0, 20.0], "batch_size": 5, "device": "cpu", "bank": {"max_source_share": 0.5}}
    c.update(kw)
    return c


def rows_of(ds):
    return {r["id"]: r for r in ds}


def waves_of(ds):
    flat, offs = B.audio_arrays(ds)
    return [flat[offs[i]: offs[i + 1]] for i in range(len(ds))]


def snr_from_parts(speech, noise, speech_gain, noise_gain) -> float:
    s = float(speech_gain) * np.asarray(speech, np.float64)
    n = float(noise_gain) * np.asarray(noise, np.float64)
    return 10.0 * math.log10(np.sum(s * s) / np.sum(n * n))


def one_line(e) -> str:
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


@pytest.fixture(scope="module")
def bank():
    return small_bank()


@pytest.fixture(scope="module")
def splits():
    return make_splits()


@pytest.fixture(scope="module")
def synthetic(splits, bank):
    return M.make_synthetic(splits, bank, cfg(copies=2), progress=False)


# --------------------------------------------------------------------------- the mix: exact SNR


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    length=st.integers(1, 3000),
    rows=st.integers(1, 4),
    snr=st.floats(-60.0, 100.0),  # the range synth_mix.snr_db accepts
    speech_db=st.floats(-80.0, 20.0),  # quiet to loud (loud rows trip the clipping guard)
    noise_db=st.floats(-80.0, 20.0),
    seed=st.integers(0, 2**16),
)
def test_mix_has_exact_power_snr(length, rows, snr, speech_db, noise_db, seed):
    rng = np.random.default_rng(seed)
    s = (rng.standard_normal((rows, length)) * 10 ** (speech_db / 20)).astype(np.float32)
    n = (rng.standard_normal((rows, length)) * 10 ** (noise_db / 20)).astype(np.float32)
    snrs = snr + np.arange(rows) * 0.5
    y, g, gn = M.mix(s, n, snrs)
    assert y.dtype == np.float32 and y.shape == s.shape
    assert np.abs(y).max() <= 1.0
    for i in range(rows):
        # the speech and noise components, as the returned gains define them
        assert abs(snr_from_parts(s[i], n[i], g[i], gn[i]) - snrs[i]) < 0.1
        assert 0.0 < g[i] <= 1.0
        # the output is those two components (float32 rounding only)
        sp, npart = g[i] * s[i].astype(np.float64), gn[i] * n[i].astype(np.float64)
        scale = max(np.abs(sp).max(), np.abs(npart).max())  # (the two may cancel)
        assert np.allclose(y[i], sp + npart, rtol=0, atol=1e-6 * scale)
        if snrs[i] <= 40:  # measured from the output itself: noise part = y - speech part
            sp = g[i] * s[i].astype(np.float64)
            npart = y[i].astype(np.float64) - sp
            assert abs(10 * math.log10(np.sum(sp * sp) / np.sum(npart * npart)) - snrs[i]) < 0.1


def test_mix_equals_torchaudio_add_noise_and_is_batch_invariant():
    rng = np.random.default_rng(0)
    s = (rng.standard_normal((6, 1000)) * 0.05).astype(np.float32)
    n = (rng.standard_normal((6, 1000)) * 0.02).astype(np.float32)
    snr = np.linspace(0, 20, 6)
    y, g, gn = M.mix(torch.from_numpy(s), torch.from_numpy(n), torch.from_numpy(snr))
    assert isinstance(y, torch.Tensor) and torch.all(g == 1)  # no row near the limit
    ref = AF.add_noise(torch.from_numpy(s), torch.from_numpy(n), torch.from_numpy(snr).float())
    assert torch.allclose(y, ref, rtol=1e-5, atol=1e-7)
    for i in range(6):  # a row mixed alone is bit-identical to the same row mixed in a batch
        yi, gi, gni = M.mix(s[i: i + 1], n[i: i + 1], snr[i: i + 1])
        assert yi[0].tobytes() == y[i].numpy().tobytes() and gni[0] == gn[i].item()


@settings(max_examples=40, deadline=None)
@given(length=st.integers(1, 50_000), rows=st.integers(2, 9), threads=st.sampled_from([1, 2]),
       seed=st.integers(0, 2**16))
def test_mix_rows_do_not_depend_on_batch_or_threads(length, rows, threads, seed):
    rng = np.random.default_rng(seed)
    s = torch.from_numpy((rng.standard_normal((rows, length)) * 0.3).astype(np.float32))
    n = torch.from_numpy(rng.standard_normal((rows, length)).astype(np.float32))
    n_before = n.clone()
    snr = rng.uniform(-5, 20, rows)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        y, g, gn = M.mix(s, n, snr)
        for i in (0, rows - 1):
            yi, gi, gni = M.mix(s[i: i + 1].clone(), n[i: i + 1].clone(), snr[i: i + 1])
            assert torch.equal(yi[0], y[i]) and gi[0] == g[i] and gni[0] == gn[i]
    finally:
        torch.set_num_threads(old)
    assert torch.equal(n, n_before)  # the caller's noise is not touched


@settings(max_examples=40, deadline=None)
@given(lengths=st.lists(st.integers(1, 900), min_size=1, max_size=5), length=st.integers(1, 1000),
       seed=st.integers(0, 2**16))
def test_gather_reads_clips_circularly(lengths, length, seed):
    rng = np.random.default_rng(seed)
    clips = [rng.standard_normal(L).astype(np.float32) for L in lengths]
    padded = np.zeros((len(clips), max(lengths)), np.float32)
    for i, c in enumerate(clips):
        padded[i, : len(c)] = c
    k = rng.integers(0, len(clips), 12)
    off = np.array([rng.integers(0, lengths[i]) for i in k])
    out = M.gather(torch.from_numpy(padded), torch.tensor(lengths), torch.from_numpy(k), torch.from_numpy(off),
                   length).numpy()
    for r, (i, o) in enumerate(zip(k, off)):
        assert np.array_equal(out[r], clips[i][(o + np.arange(length)) % lengths[i]])


def test_mix_silent_speech_gets_no_noise_and_zero_noise_is_an_error():
    s = np.zeros((2, 50), np.float32)
    s[1] = 0.1
    n = noise_clip(100, 0).reshape(2, 50)
    y, g, gn = M.mix(s, n, 10.0)
    assert gn[0] == 0 and np.all(y[0] == 0) and gn[1] > 0
    with pytest.raises(ShiftlabError) as e:
        M.mix(s, np.zeros_like(s), 10.0)
    assert "noise row 0 has zero energy" in one_line(e)
    bad = s.copy()
    bad[1, 7] = np.nan
    with pytest.raises(ShiftlabError) as e:
        M.mix(bad, n, 10.0)
    assert "speech row 1 has NaN or infinite samples" in one_line(e)
    with pytest.raises(ShiftlabError) as e:
        M.mix(s, np.where(np.arange(50) == 3, np.inf, n), 10.0)
    assert "noise row 0 has NaN or infinite samples" in one_line(e)
    with pytest.raises(ShiftlabError, match="same shape"):
        M.mix(s, n[:, :40], 10.0)
    with pytest.raises(ShiftlabError, match="finite"):
        M.mix(s, n, float("nan"))
    with pytest.raises(ShiftlabError, match="peak_limit"):
        M.mix(s, n, 10.0, peak_limit=1.5)


# --------------------------------------------------------------------------- the clipping guard


@pytest.mark.parametrize("limit", [1.0, 0.5])
def test_clipping_guard_rescales_instead_of_clipping(limit):
    t = np.arange(2000) / SR
    loud = (0.95 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    quiet = (0.01 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    nz = noise_clip(2000, 5, 0.3)
    s = np.stack([loud, quiet])
    n = np.stack([nz, nz])
    snr = np.array([0.0, 10.0])
    y, g, gn = M.mix(s, n, snr, peak_limit=limit)
    a = np.sqrt(np.sum(s.astype(np.float64) ** 2, 1) / (np.sum(n.astype(np.float64) ** 2, 1) * 10 ** (snr / 10)))
    unguarded = s + a[:, None] * n
    assert np.abs(unguarded[0]).max() > limit  # the loud row would clip
    assert np.abs(y).max() <= limit
    assert g[0] == pytest.approx(limit / np.abs(unguarded[0]).max(), rel=1e-6)
    assert gn[0] == pytest.approx(g[0] * a[0], rel=1e-6)
    # scaled, not clipped: the waveform keeps its shape (only the peak sample reaches the limit)
    assert np.allclose(y[0], g[0] * unguarded[0], rtol=1e-5, atol=1e-6)
    assert np.sum(np.abs(y[0]) >= limit * (1 - 1e-6)) <= 2
    # the SNR is unchanged
    assert abs(snr_from_parts(s[0], n[0], g[0], gn[0]) - 0.0) < 0.01
    # a row within the limit is untouched
    assert g[1] == 1.0 and np.allclose(y[1], unguarded[1], rtol=1e-6, atol=1e-8)
    # strided (transposed) tensors get the same guard (norms reduced in another order: float tolerance)
    yt, gt, gnt = M.mix(torch.from_numpy(s.T.copy()).T, torch.from_numpy(n.T.copy()).T, snr, peak_limit=limit)
    assert float(yt.abs().max()) <= limit and gt[0] < 1 and gt[1] == 1
    assert np.allclose(yt.numpy(), y, rtol=0, atol=1e-5) and np.allclose(gnt.numpy(), gn, rtol=1e-5)


# --------------------------------------------------------------------------- segments, offsets, looping


def test_segments_cut_clips_and_loop_only_clips_shorter_than_the_speech(bank):
    a = B.arrays(bank)
    segs = B.segments(bank, T)
    for cid, L in CLIP_LENGTHS.items():
        i = a.index(cid)
        mine = np.flatnonzero(segs.clip == i)
        if L >= T:
            assert len(mine) == L // T
            assert sorted(segs.start[mine]) == [k * T for k in range(L // T)]
            assert not segs.looped[mine].any() and segs.clip_slack[i] == L - (L // T) * T
        else:
            assert len(mine) == 1 and segs.looped[mine].all() and segs.clip_slack[i] == L - 1


def test_plan_offsets_are_random_and_only_short_clips_wrap(bank):
    a = B.arrays(bank)
    plan = B.plan_draws(bank, T, 400, 11, max_source_share=1.0)
    L = a.lengths[plan.clip]
    assert np.array_equal(plan.loops, (plan.offset + T - 1) // L)
    long_ = L >= T
    assert np.all(plan.loops[long_] == 0) and np.all(plan.offset[long_] + T <= L[long_])  # never wraps
    assert np.all(plan.loops[~long_] >= 1) and np.all((plan.offset[~long_] >= 0) & (plan.offset[~long_] < L[~long_]))
    for cid in ("long/a", "long/b", "short/d"):
        m = plan.clip == a.index(cid)
        shift = plan.offset[m] % T if cid.startswith("long") else plan.offset[m]
        assert len(np.unique(shift)) > 10, cid  # offsets are drawn, not fixed at segment starts
        bound = CLIP_LENGTHS[cid] - (CLIP_LENGTHS[cid] // T) * T if cid.startswith("long") else CLIP_LENGTHS[cid] - 1
        assert shift.max() <= bound
    exact = plan.clip == a.index("exact/c")
    assert exact.any() and np.all(plan.offset[exact] == 0) and np.all(plan.loops[exact] == 0)
    # the windows of one pass never overlap within a clip
    for p in np.unique(plan.pass_):
        for c in np.unique(plan.clip[(plan.pass_ == p) & long_]):
            o = np.sort(plan.offset[(plan.pass_ == p) & (plan.clip == c)])
            assert np.all(np.diff(o) >= T)


def test_mixed_rows_contain_the_planned_noise_window_looped_or_not():
    sp = make_splits()
    for lengths, looped in (({"long/x": 7 * T + 33}, False), ({"short/y": 170}, True)):
        bk = small_bank(lengths)
        syn = M.make_synthetic(sp, bk, cfg(bank={"max_source_share": 1.0}), progress=False)
        clip = B.arrays(bk).clip(0).astype(np.float64)
        parents = {r["id"]: w for r, w in zip(sp["train"], waves_of(sp["train"]))}
        parents.update({r["id"]: w for r, w in zip(sp["train_dev"], waves_of(sp["train_dev"]))})
        for r, y in zip(syn, waves_of(syn)):
            rec = json.loads(r["recipe"])
            assert (rec["loops"] >= 1) == looped
            win = clip[(rec["offset"] + np.arange(rec["length"])) % len(clip)]
            assert np.array_equal(win.astype(np.float32), M.noise_window(rec, bk))
            noise_part = (y.astype(np.float64) - rec["speech_gain"] * parents[rec["parent"]]) / rec["noise_gain"]
            assert np.allclose(noise_part, win, atol=1e-4 * np.abs(win).max() / rec["noise_gain"] + 1e-4)


# --------------------------------------------------------------------------- the draw policy


def check_plan(plan, segs, bank, n, share):
    a = B.arrays(bank)
    assert len(plan) == n
    G = len(np.unique(segs.group))
    cap = max(math.ceil(share * n - 1e-9), math.ceil(n / G))
    assert plan.cap == cap and plan.share_enforced == pytest.approx(cap / n)
    counts = np.bincount(a.group_index[plan.clip], minlength=len(a.group_names))
    assert counts.max() <= cap
    for p in range(plan.passes):  # without replacement within a pass
        seg = plan.segment[plan.pass_ == p]
        assert len(seg) == len(np.unique(seg))
    assert np.array_equal(segs.clip[plan.segment], plan.clip)
    return counts


@settings(max_examples=40, deadline=None)
@given(
    lengths=st.lists(st.integers(50, 3000), min_size=1, max_size=6),
    n_groups=st.integers(1, 4),
    n=st.integers(1, 120),
    share=st.floats(0.05, 1.0),
    seed=st.integers(0, 1000),
)
def test_draw_policy_properties(lengths, n_groups, n, share, seed):
    clips = {f"c{i}": (noise_clip(L, i), SR) for i, L in enumerate(lengths)}
    groups = {f"c{i}": f"g{i % n_groups}" for i in range(len(lengths))}
    bk = B.from_arrays(clips, SR, groups=groups)
    segs = B.segments(bk, 200)
    plan = B.plan_draws(bk, 200, n, seed, share)
    check_plan(plan, segs, bk, n, share)
    if share == 1.0 or len(np.unique(segs.group)) == 1:  # no cap binds: every segment used evenly
        uses = np.bincount(plan.segment, minlength=len(segs.clip))
        assert uses.max() - uses.min() <= 1
    again = B.plan_draws(bk, 200, n, seed, share)
    assert all(np.array_equal(getattr(plan, f), getattr(again, f)) for f in ("clip", "offset", "segment", "pass_"))


def test_per_source_cap_balances_a_long_recording_against_short_ones():
    # one 20-segment recording and four 1-segment recordings: by segments (or by seconds, as
    # uniform-with-replacement does) the long one would get 20/24 of all draws
    clips = {"long": (noise_clip(20 * T, 0), SR), **{f"s{i}": (noise_clip(T, i + 1), SR) for i in range(4)}}
    bk = B.from_arrays(clips, SR)
    segs = B.segments(bk, T)
    plan = B.plan_draws(bk, T, 50, 7, max_source_share=0.2)
    counts = check_plan(plan, segs, bk, 50, 0.2)
    assert counts.tolist() == [10] * 5  # cap 10 each: exactly balanced
    a = B.arrays(bk)
    long_uses = np.bincount(plan.segment[plan.clip == a.index("long")])
    assert long_uses.max() == 1  # the long recording's 10 draws are 10 different segments
    assert plan.passes >= 10  # a short recording's only segment: once per pass
    # a share the bank cannot honour (3 groups, 10%) falls back to the most even split
    bk3 = B.from_arrays({f"r{i}": (noise_clip(5 * T, i), SR) for i in range(3)}, SR)
    p3 = B.plan_draws(bk3, T, 30, 1, max_source_share=0.1)
    assert p3.cap == 10 and p3.share_requested == 0.1 and p3.share_enforced == pytest.approx(1 / 3)
    assert np.bincount(B.arrays(bk3).group_index[p3.clip]).tolist() == [10, 10, 10]
    # groups, not clips, are capped: two clips of one source share its cap
    bk_g = B.from_arrays({f"r{i}": (noise_clip(5 * T, i), SR) for i in range(4)}, SR,
                         groups={"r0": "car1", "r1": "car1", "r2": "car2", "r3": "car3"})
    pg = B.plan_draws(bk_g, T, 30, 2, max_source_share=1 / 3)
    assert np.bincount(B.arrays(bk_g).group_index[pg.clip]).tolist() == [10, 10, 10]


def test_plan_is_seeded_and_skips_quiet_segments():
    x = noise_clip(4 * T, 0)
    x[2 * T:] = 0.0  # the second half is digital silence
    bk = B.from_arrays({"half": (x, SR), "other": (noise_clip(2 * T, 1), SR)}, SR)
    segs = B.segments(bk, T, min_segment_db=-60.0)
    assert segs.excluded == 2 and len(segs.clip) == 4
    plan = B.plan_draws(bk, T, 60, 5, 1.0, min_segment_db=-60.0)
    half = plan.clip == B.arrays(bk).index("half")
    assert np.all(plan.offset[half] + T <= 2 * T)  # never a window in the silent half
    p1, p2 = B.plan_draws(bk, T, 60, 5, 1.0), B.plan_draws(bk, T, 60, 6, 1.0)
    assert not (np.array_equal(p1.offset, p2.offset) and np.array_equal(p1.segment, p2.segment))
    with pytest.raises(ShiftlabError) as e:
        B.segments(bk, T, min_segment_db=-1.0)
    assert "min_segment_db" in one_line(e)


# --------------------------------------------------------------------------- make_synthetic


def test_synthetic_rows_come_only_from_train_source_real_rows(splits, synthetic, bank):
    eligible = sorted(r["id"] for s in ("train", "train_dev") for r in splits[s]
                      if r["domain"] == "source" and r["origin"] == "real")
    assert len(eligible) == 16
    assert len(synthetic) == 2 * len(eligible)
    parents = {}
    for s in ("train", "train_dev", "dev", "test"):
        for r in splits[s]:
            parents[r["id"]] = (s, r)
    for r in synthetic:
        split, p = parents[r["parent"]]
        assert split in ("train", "train_dev") and p["domain"] == "source" and p["origin"] == "real"
        assert r["origin"] == "synthetic" and r["id"] in (f"{r['parent']}/mix0", f"{r['parent']}/mix1")
        for col in ("group", "domain", "label", "sampling_rate"):
            assert r[col] == p[col], col
    assert sorted({r["parent"] for r in synthetic}) == eligible
    # the splits accept them: each row joins its parent's split, with the parent's group
    out = splits_mod.attach_synthetic(splits, synthetic, {"beta_source": 1.0, "beta_synthetic": 0.5})
    for s in ("train", "train_dev", "dev", "test"):
        for r in out[s]:
            if r["origin"] == "synthetic" and r["id"].endswith(("/mix0", "/mix1")):
                assert parents[r["parent"]][0] == s and r["group"] == parents[r["parent"]][1]["group"]
    assert len(out["dev"]) == 4 and len(out["test"]) == 4
    assert sum(len(out[s]) for s in out) == sum(len(splits[s]) for s in splits) + len(synthetic)


def test_recipes_record_everything_and_regenerate_byte_identical(splits, synthetic, bank):
    a = B.arrays(bank)
    waves = {}
    for s in ("train", "train_dev"):
        waves.update({r["id"]: w for r, w in zip(splits[s], waves_of(splits[s]))})
    eligible = sorted(i for i in waves if i.startswith("tts/") and "/blur" not in i)  # source, real
    plan_rows = []
    for r, y in zip(synthetic, waves_of(synthetic)):
        rec = json.loads(r["recipe"])
        assert set(rec) == RECIPE_KEYS
        assert rec["stage"] == "synth_mix" and rec["parent"] == r["parent"]
        assert rec["noise_group"] == a.groups[a.index(rec["noise"])]
        assert rec["index"] == eligible.index(r["parent"])
        assert rec["seed"] == seeding.sample_seed(3, rec["index"], "mix", rec["copy"])
        assert 0.0 <= rec["snr_db"] <= 20.0 and rec["peak_limit"] == 1.0
        assert rec["length"] == len(waves[r["parent"]]) == len(y)
        assert rec["loops"] == (rec["offset"] + rec["length"] - 1) // a.lengths[a.index(rec["noise"])]
        # the SNR the recipe claims is the SNR of the row's components
        nz = M.noise_window(rec, bank)
        assert abs(snr_from_parts(waves[r["parent"]], nz, rec["speech_gain"], rec["noise_gain"]) - rec["snr_db"]) < 0.1
        # regenerate from the recipe alone (string or dict): byte-identical samples
        assert M.regenerate(r["recipe"], waves[r["parent"]], bank).tobytes() == y.tobytes()
        assert M.regenerate(rec, waves[r["parent"]], a).tobytes() == y.tobytes()
        plan_rows.append((rec["pass"], rec["segment"]))
    # the recorded plan obeys the policy: no (pass, segment) twice
    assert len(set(plan_rows)) == len(plan_rows)
    recs = [json.loads(x) for x in synthetic["recipe"]]
    assert len({(r["noise"], r["offset"]) for r in recs}) > len(recs) // 2  # offsets vary


def test_regenerate_rejects_a_recipe_that_does_not_fit(synthetic, splits, bank):
    rec = json.loads(synthetic[0]["recipe"])
    w = waves_of(splits["train"])[0]
    with pytest.raises(ShiftlabError) as e:
        M.regenerate(rec, w[:-1], bank)
    assert "samples" in one_line(e)
    other = small_bank(groups={cid: "elsewhere" for cid in CLIP_LENGTHS})
    with pytest.raises(ShiftlabError) as e:
        M.regenerate(rec, w, other)
    assert "another bank" in one_line(e)
    with pytest.raises(ShiftlabError) as e:
        M.regenerate({**rec, "noise": "nope/none"}, w, bank)
    assert "nope/none" in one_line(e)
    with pytest.raises(ShiftlabError) as e:
        M.regenerate({"noise": "long/a"}, w, bank)
    assert "recipe lacks" in one_line(e)


def test_make_synthetic_is_deterministic_and_batch_size_free(splits, synthetic, bank, tmp_path):
    again = M.make_synthetic(splits, bank, cfg(copies=2, batch_size=1), progress=False)
    big = M.make_synthetic(splits, B.arrays(bank), cfg(copies=2, batch_size=256), progress=False)
    for other in (again, big):
        assert other["id"] == synthetic["id"] and other["recipe"] == synthetic["recipe"]
        assert all(x.tobytes() == y.tobytes() for x, y in zip(waves_of(other), waves_of(synthetic)))
    store.save(synthetic, tmp_path / "a")
    store.save(big, tmp_path / "b")
    assert store.tree_digest(tmp_path / "a") == store.tree_digest(tmp_path / "b")
    reseeded = M.make_synthetic(splits, bank, cfg(copies=2, seed=4), progress=False)
    assert reseeded["recipe"] != synthetic["recipe"]


def test_fraction_copies_and_variable_length_parents(bank):
    sp = make_splits(lengths=[T, 300, 371])
    syn = M.make_synthetic(sp, bank, cfg(fraction=0.5, copies=3), progress=False)
    assert len(syn) == 8 * 3  # floor(0.5 * 16 + 0.5) parents, 3 copies each
    per_parent = {}
    for r in syn:
        per_parent.setdefault(r["parent"], []).append(r["id"].rsplit("/", 1)[1])
    assert all(sorted(v) == ["mix0", "mix1", "mix2"] for v in per_parent.values())
    waves = {}
    for s in ("train", "train_dev"):
        waves.update({r["id"]: w for r, w in zip(sp[s], waves_of(sp[s]))})
    lens = set()
    for r, y in zip(syn, waves_of(syn)):
        rec = json.loads(r["recipe"])
        assert len(y) == rec["length"] == len(waves[r["parent"]])
        lens.add(len(y))
        assert M.regenerate(rec, waves[r["parent"]], bank).tobytes() == y.tobytes()
    assert len(lens) > 1
    # copies of one parent get different noise/SNR
    recs = {}
    for r in syn:
        recs.setdefault(r["parent"], []).append(json.loads(r["recipe"]))
    for v in recs.values():
        assert len({x["snr_db"] for x in v}) == 3 and len({x["seed"] for x in v}) == 3
    empty = M.make_synthetic(sp, bank, cfg(fraction=0.0), progress=False)
    assert len(empty) == 0 and "audio" in empty.column_names


def test_make_synthetic_bad_input(splits, bank):
    bank16 = B.from_arrays({"x": (noise_clip(2 * 16000, 0), 16000)}, 16000)
    with pytest.raises(ShiftlabError) as e:
        M.make_synthetic(splits, bank16, cfg(), progress=False)
    assert "16000 Hz" in one_line(e) and "8000 Hz" in str(e.value)
    rows = speech_rows(4, "source", lambda i: "v", "tts/nan")
    rows[2]["audio"][5] = np.nan  # a user-built dataset (the prepare stages refuse NaN files)
    sp = hfds.DatasetDict({**splits, "train_dev": audio.build_dataset(rows, LABELS)})
    with pytest.raises(ShiftlabError) as e:
        M.make_synthetic(sp, bank, cfg(), progress=False)
    assert "speech row tts/nan/002 has NaN or infinite samples" in one_line(e)
    no_dev = hfds.DatasetDict({"train": splits["train"]})
    with pytest.raises(ShiftlabError) as e:
        M.make_synthetic(no_dev, bank, cfg(), progress=False)
    assert "train_dev" in one_line(e)


@pytest.mark.parametrize("section, msg", [
    ({"copies": 0}, "synth_mix.copies: 0 is out of range [1, inf]"),  # shiftlab.paramschema wording
    ({"fraction": 1.5}, "synth_mix.fraction"),
    ({"snr_db": [20, 0]}, "synth_mix.snr_db: range [20, 0] has lo > hi"),
    ({"snr_db": [0, 200]}, "synth_mix.snr_db: must lie in [-60, 100]"),
    ({"peak_limit": 0}, "synth_mix.peak_limit"),
    ({"snr": [0, 20]}, "synth_mix.snr: unknown key (did you mean snr_db?)"),
    ({"bank": {"max_source_share": 0}}, "synth_mix.bank.max_source_share: 0 is out of range (0.0, 1.0]"),
    ({"bank": {"sources": ["tape"]}}, "synth_mix.bank.sources: must be a non-empty list of real, folder"),
    ({"bank": {"sources": ["virtual"], "n_cars": 0}}, "synth_mix.bank.n_cars: sources include 'virtual' but n_cars is 0"),
    ({"bank": {"cars": {"cylindres": [4]}}}, "synth_mix.bank.cars.cylindres: unknown car parameter"),
    ({"bank": {"n_car": 3}}, "synth_mix.bank.n_car: unknown key (did you mean n_cars?)"),
    ({"device": 3}, "synth_mix.device"),
])
def test_config_errors_are_one_line_and_name_the_key(section, msg):
    with pytest.raises(ShiftlabError) as e:
        M.check_cfg(section)
    assert msg in one_line(e)


def test_config_defaults_and_narrow():
    c = M.check_cfg(None)
    assert c["snr_db"] == [0.0, 20.0] and c["copies"] == 1 and c["bank"]["max_source_share"] == 0.1
    assert M.check_cfg({"snr_db": 5})["snr_db"] == [5.0, 5.0]
    n = M.check_cfg(M.NARROW)
    assert n["bank"]["sources"] == ["real"] and n["bank"]["recordings"] == ["dustracing2d/skid"]
    assert M.DEFAULTS["bank"]["max_source_share"] == 0.1  # merging does not mutate the defaults
    assert TG.check_cfg({"target_snr_db": [5, 15]})["target_snr_db"] == [5.0, 15.0]
    with pytest.raises(ShiftlabError, match="target_mix.target_snr_db"):
        TG.check_cfg({"target_snr_db": [15, 5]})


# --------------------------------------------------------------------------- OnTheFlyMixer


def test_on_the_fly_mixer_has_the_stage_semantics(bank, splits, synthetic):
    mixer = M.OnTheFlyMixer(bank, cfg(snr_db=[0, 20]), device="cpu", n_samples=64)
    rng = np.random.default_rng(0)
    speech = torch.from_numpy(np.stack([tone(T, 150 + 20 * i, i) for i in range(16)]))
    idx = rng.choice(64, 16, replace=False)
    y, recs = mixer(speech, idx, epoch=2)
    assert y.shape == (16, T) and y.dtype == torch.float32 and float(y.abs().max()) <= 1.0
    for i, rec in enumerate(recs):
        # the stage's regenerate() rebuilds each on-the-fly sample from its recipe
        assert M.regenerate(rec, speech[i].numpy(), bank).tobytes() == y[i].numpy().tobytes()
        nz = M.noise_window(rec, bank)
        assert abs(snr_from_parts(speech[i].numpy(), nz, rec["speech_gain"], rec["noise_gain"]) - rec["snr_db"]) < 0.1
        assert rec["epoch"] == 2 and rec["index"] == idx[i] and rec["seed"] == 3
    # ... and the mixer's device path (padded bank + gather + mix) rebuilds the stage's rows
    parents = {}
    for s in ("train", "train_dev"):
        parents.update({r["id"]: w for r, w in zip(splits[s], waves_of(splits[s]))})
    recs_s = [json.loads(x) for x in synthetic["recipe"]]
    sp = torch.from_numpy(np.stack([parents[r["parent"]] for r in recs_s]))
    nz = M.gather(mixer.padded, mixer.lengths, torch.tensor([B.arrays(bank).index(r["noise"]) for r in recs_s]),
                  torch.tensor([r["offset"] for r in recs_s]), T)
    ys, _, _ = M.mix(sp, nz, [r["snr_db"] for r in recs_s])
    assert all(a.tobytes() == b.tobytes() for a, b in zip(ys.numpy(), waves_of(synthetic)))


def test_on_the_fly_mixer_is_per_sample_seeded_and_balanced(bank):
    c = cfg(bank={"max_source_share": 0.3})
    mixer = M.OnTheFlyMixer(bank, c, device="cpu", n_samples=40)
    speech = torch.from_numpy(np.stack([tone(T, 150 + 10 * i, i) for i in range(40)]))
    y_all, recs = mixer(speech, np.arange(40), epoch=0)
    # a sample's mix does not depend on the batch it is in, nor on a fresh mixer
    fresh = M.OnTheFlyMixer(bank, c, device="cpu", n_samples=40)
    for i in (0, 17, 39):
        yi, ri = fresh(speech[i: i + 1], [i], epoch=0)
        assert yi[0].numpy().tobytes() == y_all[i].numpy().tobytes() and ri[0] == recs[i]
    # one epoch = one balanced plan: per-source cap and no segment twice in a pass
    a = B.arrays(bank)
    counts = np.bincount([a.group_index[a.index(r["noise"])] for r in recs], minlength=len(a.group_names))
    assert counts.max() <= max(math.ceil(0.3 * 40), math.ceil(40 / 4)) == 12
    assert len({(r["pass"], r["segment"]) for r in recs}) == 40
    # another epoch draws other noise; the same epoch again the same
    y1, r1 = mixer(speech, np.arange(40), epoch=1)
    assert [r["offset"] for r in r1] != [r["offset"] for r in recs]
    y0, _ = mixer(speech, np.arange(40), epoch=0)
    assert torch.equal(y0, y_all)
    _, none = mixer(speech[:2], [0, 1], epoch=0, return_recipes=False)
    assert none is None
    with pytest.raises(ShiftlabError) as e:
        mixer(speech[0], [0])
    assert "(B, T)" in one_line(e)
    with pytest.raises(ShiftlabError) as e:
        mixer(speech[:2], [0])
    assert "sample indices" in one_line(e)


# --------------------------------------------------------------------------- the fast paths (same samples)


@settings(max_examples=40, deadline=None)
@given(lengths=st.lists(st.integers(1, 900), min_size=1, max_size=5), length=st.integers(1, 2000),
       tight=st.booleans(), seed=st.integers(0, 2**16))
def test_looped_bank_windows_equal_gather_looping_once_many_times_or_not(lengths, length, tight, seed):
    rng = np.random.default_rng(seed)
    clips = {f"c/{i}": (rng.standard_normal(L).astype(np.float32) * 0.1 + 0.01, SR) for i, L in enumerate(lengths)}
    a = B.arrays(B.from_arrays(clips, SR))
    k = rng.integers(0, len(a.ids), 12)
    off = np.array([rng.integers(0, a.lengths[i]) for i in k], dtype=np.int64)
    want = M.gather(torch.from_numpy(a.padded()), torch.from_numpy(a.lengths), torch.from_numpy(k),
                    torch.from_numpy(off), length)
    old = M.LOOP_EXTRA_BYTES
    try:
        if tight:  # no room for the cyclic extension: wrapping rows take the index-arithmetic path
            M.LOOP_EXTRA_BYTES = 0
        looped = M._LoopedBank(a, torch.device("cpu"))
        got = looped.windows(k, off, length)
        assert (looped.ext == length - 1) == (not tight or length == 1 or len(a.ids) * (length - 1) <= a.lengths.sum())
    finally:
        M.LOOP_EXTRA_BYTES = old
    assert torch.equal(got, want)
    buf = torch.full((5, length), 7.0)  # and chunk by chunk into a caller's buffer
    looped.filler(k, off, length)(3, 8, buf)
    assert torch.equal(buf, want[3:8])


def test_chunking_and_the_fill_path_do_not_change_a_sample(monkeypatch):
    rng = np.random.default_rng(5)
    level = np.array([[0.4], [0.05]])[:, :, None]  # (..., T) rows: the loud ones clip
    s = torch.from_numpy((rng.standard_normal((2, 3, 700)) * level).astype(np.float32))
    n = torch.from_numpy(rng.standard_normal((2, 3, 700)).astype(np.float32))
    snr = rng.uniform(5, 20, (2, 3))
    y, g, gn = M.mix(s, n, snr)
    assert bool((g < 1).any()) and bool((g == 1).any())  # the guard is exercised
    for chunk in (1, 2800, 3 * 2800, 2**30):  # 1 row (rounded up), 1 row, 3 rows, all rows per chunk
        monkeypatch.setattr(M, "CHUNK_BYTES", chunk)
        y2, g2, gn2 = M.mix(s, n, snr)
        assert torch.equal(y2, y) and torch.equal(g2, g) and torch.equal(gn2, gn)
        rows = n.reshape(6, 700)

        def fill(i, j, buf):
            buf.copy_(rows[i:j])

        out = torch.empty_like(s)
        y3, g3, gn3 = M._mix(s, fill, snr, out=out)  # noise from a callable, into a caller's buffer
        assert y3 is out and torch.equal(y3, y) and torch.equal(gn3, gn)
        inplace = s.clone()
        y4, _, _ = M._mix(inplace, fill, snr, out=inplace)  # in place over the speech (scratch for the noise)
        assert torch.equal(inplace, y)
    # unclipped rows are exactly float32 (a n) + s, a = noise_gain: the bits of the earlier unchunked code
    ok = (g == 1).reshape(-1)
    a = gn.reshape(-1)[ok].unsqueeze(-1)
    assert torch.equal(y.reshape(6, 700)[ok], n.reshape(6, 700)[ok] * a + s.reshape(6, 700)[ok])


def test_on_the_fly_mixer_out_buffer_and_in_place_give_the_same_samples(bank):
    mixer = M.OnTheFlyMixer(bank, cfg(snr_db=[-5, 20]), device="cpu", n_samples=48)
    speech = torch.from_numpy(np.stack([tone(T, 150 + 20 * i, i, level=0.3 + 0.02 * i) for i in range(48)]))
    y, recs = mixer(speech, np.arange(48), epoch=1)
    buf = torch.full_like(speech, 5.0)
    y2, recs2 = mixer(speech, np.arange(48), epoch=1, out=buf)
    assert y2 is buf and torch.equal(buf, y) and recs2 == recs
    work = speech.clone()
    y3, recs3 = mixer(work, np.arange(48), epoch=1, out=work)
    assert y3 is work and torch.equal(work, y) and recs3 == recs
    for i in (0, 47):  # ... and each one is what regenerate() rebuilds from the recipe
        assert M.regenerate(recs3[i], speech[i].numpy(), bank).tobytes() == work[i].numpy().tobytes()
    for bad, msg in ((torch.empty(48, T + 1), "out must be a contiguous float32 (48, 400)"),
                     (torch.empty(48, T, dtype=torch.float64), "float64"),
                     (torch.empty(T, 48).t(), "not contiguous"),
                     (np.zeros((48, T), np.float32), "ndarray")):
        with pytest.raises(ShiftlabError) as e:
            mixer(speech, np.arange(48), epoch=1, out=bad)
        assert msg in one_line(e)
    shifted = torch.zeros(48 * T + 1)
    shifted[:-1] = speech.reshape(-1)
    with pytest.raises(ShiftlabError) as e:  # overlapping the speech, but not the speech itself
        mixer(shifted[:-1].view(48, T), np.arange(48), epoch=1, out=shifted[1:].view(48, T))
    assert "overlaps the speech" in one_line(e)


def test_make_synthetic_fingerprint_is_a_content_hash(splits, bank, synthetic):
    again = M.make_synthetic(splits, bank, cfg(copies=2), progress=False)
    assert again._fingerprint == synthetic._fingerprint
    other = M.make_synthetic(splits, bank, cfg(copies=2, seed=4), progress=False)
    assert other._fingerprint != synthetic._fingerprint


# --------------------------------------------------------------------------- bank: bad input


@pytest.mark.parametrize("clip, kw, msg", [
    (np.zeros(800, np.float32), {}, "clip bad/clip is silent"),
    (np.full(800, 1e-5, np.float32), {}, "clip bad/clip is silent"),
    (np.r_[noise_clip(799, 0), np.nan].astype(np.float32), {}, "clip bad/clip contains NaN"),
    (np.r_[noise_clip(799, 0), np.inf].astype(np.float32), {}, "clip bad/clip contains NaN or infinite"),
    (np.zeros(0, np.float32), {}, "clip bad/clip has no samples (zero length)"),
    (noise_clip(1600, 0).reshape(2, 800), {}, "noise clip bad/clip: 2-D array (2, 800)"),
    (noise_clip(16, 0).reshape(4, 4), {"downmix": True}, "noise clip bad/clip: cannot tell the channel axis"),
    (noise_clip(16, 0).reshape(2, 2, 4), {}, "noise clip bad/clip: array has 3 dimensions"),
    (np.array(["a", "b"]), {}, "noise clip bad/clip: samples must be numbers"),
])
def test_bank_bad_arrays_are_one_line_errors_naming_the_clip(clip, kw, msg):
    with pytest.raises(ShiftlabError) as e:
        B.from_arrays({"ok/clip": (noise_clip(800, 1), SR), "bad/clip": (clip, SR)}, SR, **kw)
    assert msg in one_line(e)


def test_bank_rates_stereo_downmix_and_empty():
    with pytest.raises(ShiftlabError) as e:
        B.from_arrays({"x": (noise_clip(800, 0), 16000)}, SR)
    assert "clip x has sampling rate 16000 Hz, the speech has 8000 Hz" in one_line(e)
    res = B.from_arrays({"x": (noise_clip(1600, 0), 16000)}, SR, resample=True)
    assert res[0]["sampling_rate"] == SR and len(res[0]["audio"]) == 800
    st_ = np.stack([noise_clip(800, 0), noise_clip(800, 1)])
    for arr in (st_, st_.T):  # (channels, samples) or (samples, channels)
        mono = B.from_arrays({"st": (arr, SR)}, SR, downmix=True)
        assert np.allclose(mono[0]["audio"], st_.astype(np.float64).mean(0), atol=1e-7)
    with pytest.raises(ShiftlabError) as e:
        B.from_arrays({}, SR)
    assert "empty" in one_line(e)
    bk = small_bank()
    with pytest.raises(ShiftlabError) as e:
        B.validate(bk, sampling_rate=16000)
    assert "has sampling rate 8000 Hz, the speech has 16000 Hz" in one_line(e)
    with pytest.raises(ShiftlabError) as e:
        B.combine([bk, bk])
    assert "duplicate clip id" in one_line(e)
    with pytest.raises(ShiftlabError) as e:
        B.validate(bk.select([]))
    assert "empty" in one_line(e)


def write_wav(path: Path, x, sr=SR, subtype="PCM_16"):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x, sr, subtype=subtype)


def test_bank_from_folder_groups_downmix_resample_and_bad_files(tmp_path):
    root = tmp_path / "noise"
    write_wav(root / "car_01" / "take1.wav", noise_clip(1000, 0))
    write_wav(root / "car_01" / "take2.wav", noise_clip(900, 1))
    st_ = np.stack([noise_clip(1200, 2), noise_clip(1200, 3)], axis=1)
    write_wav(root / "truck.wav", st_, subtype="FLOAT")
    write_wav(root / "bus.wav", noise_clip(3200, 4), sr=16000)
    bk = B.from_folder(root, SR)
    rows = rows_of(bk)
    assert sorted(rows) == ["folder/bus", "folder/car_01/take1", "folder/car_01/take2", "folder/truck"]
    assert rows["folder/car_01/take1"]["group"] == rows["folder/car_01/take2"]["group"] == "folder/car_01"
    assert rows["folder/truck"]["group"] == "folder/truck"
    # stereo files: the documented downmix (mean over channels)
    assert np.allclose(rows["folder/truck"]["audio"], st_.astype(np.float64).mean(1), atol=1e-7)
    # another rate: resampled to the bank's
    assert len(rows["folder/bus"]["audio"]) == 1600 and rows["folder/bus"]["sampling_rate"] == SR
    assert all(r["domain"] == "source" and r["origin"] == "real" for r in bk)

    bad = [
        ("silent.wav", lambda p: write_wav(p, np.zeros(800, np.float32)), "silent noise clip"),
        ("nan.wav", lambda p: write_wav(p, np.r_[noise_clip(10, 0), np.nan], subtype="FLOAT"), "NaN"),
        ("empty.wav", lambda p: write_wav(p, np.zeros(0, np.float32)), "zero length"),
        ("zero.wav", lambda p: p.write_bytes(b""), "empty file (0 bytes)"),
        ("junk.wav", lambda p: p.write_bytes(b"RIFF not really a wav"), "cannot read audio"),
    ]
    for name, make, msg in bad:
        d = tmp_path / name.split(".")[0]
        write_wav(d / "fine.wav", noise_clip(800, 0))
        make(d / name)
        with pytest.raises(ShiftlabError) as e:
            B.from_folder(d, SR)
        assert msg in one_line(e) and name in str(e.value), (name, str(e.value))
    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "readme.txt").write_text("no audio here")
    with pytest.raises(ShiftlabError) as e:
        B.from_folder(tmp_path / "none", SR)
    assert "no audio files" in one_line(e) and str(tmp_path / "none") in str(e.value)
    with pytest.raises(ShiftlabError) as e:
        B.from_folder(tmp_path / "missing", SR)
    assert "folder not found" in one_line(e)
    with pytest.raises(ShiftlabError) as e:
        B.check_cfg({"sources": ["folder"]})
    assert "synth_mix.bank.folder" in one_line(e)


def test_build_from_a_folder_section(tmp_path):
    root = tmp_path / "n"
    write_wav(root / "a.wav", noise_clip(1000, 0))
    write_wav(root / "b.wav", noise_clip(1000, 1))
    bk = B.build({"sources": ["folder"], "folder": str(root)}, sampling_rate=SR)
    assert bk["id"] == ["folder/a", "folder/b"]
    with pytest.raises(ShiftlabError) as e:
        B.build({"sources": ["real"]}, noise=None, sampling_rate=SR)
    assert "data/prepared/noise" in one_line(e)


# --------------------------------------------------------------------------- make_target


def noise_dataset():
    rows = []
    for k, (cid, dom) in enumerate([("src/a", "source"), ("src/b", "source"),
                                    ("tgt/x", "target"), ("tgt/y", "target"), ("tgt/z", "target")]):
        rows.append(dict(id=cid, audio=noise_clip(3 * T + 50 * k, 10 + k, 0.05 + 0.02 * k), sampling_rate=SR,
                         label=cid.split("/")[1], domain=dom, origin="real", group=cid,
                         recipe=json.dumps({"source": "test"})))
    return audio.build_dataset(rows, ["a", "b", "x", "y", "z"])


def target_speech():
    rows = (speech_rows(5, "source", lambda i: f"voice{i}", "tts")
            + speech_rows(9, "target", lambda i: f"spk{i % 3}", "human", lengths=[T, 350]))
    rows[0]["recipe"] = "not json"  # kept as is on a source row
    return audio.build_dataset(rows, LABELS)


def test_make_target_mixes_only_target_rows_with_held_out_noise():
    speech, noise = target_speech(), noise_dataset()
    bk = B.from_noise(noise, ["*"], "source")
    assert bk["id"] == ["src/a", "src/b"]
    out = TG.make_target(speech, noise, {"seed": 1, "target_snr_db": [0, 10], **REAL}, bank=bk)
    assert out.features == speech.features and out["id"] == speech["id"]
    before, after = waves_of(speech), waves_of(out)
    used = []
    for r0, r1, w0, w1 in zip(speech, out, before, after):
        for col in ("id", "sampling_rate", "label", "domain", "origin", "group", "parent"):
            assert r0[col] == r1[col]
        if r0["domain"] == "source":
            assert w0.tobytes() == w1.tobytes() and r0["recipe"] == r1["recipe"]
            continue
        assert w0.tobytes() != w1.tobytes() and len(w0) == len(w1) and r1["origin"] == "real"
        rec = json.loads(r1["recipe"])
        assert {k: v for k, v in rec.items() if k != "target_mix"} == json.loads(r0["recipe"])
        tm = rec["target_mix"]
        assert tm["simulated"] is True and tm["noise"].startswith("tgt/") and 0 <= tm["snr_db"] <= 10
        used.append(tm["noise"])
        nz = M.noise_window(tm, B.from_noise(noise, ["*"], "target"))
        assert abs(snr_from_parts(w0, nz, tm["speech_gain"], tm["noise_gain"]) - tm["snr_db"]) < 0.1
        assert M.regenerate(tm, w0, B.from_noise(noise, ["*"], "target")).tobytes() == w1.tobytes()
    assert sorted(set(used)) == ["tgt/x", "tgt/y", "tgt/z"] and max(used.count(u) for u in set(used)) == 3
    again = TG.make_target(speech, noise, {"seed": 1, "target_snr_db": [0, 10], **REAL}, bank=bk)
    assert again["recipe"] == out["recipe"]
    assert all(a.tobytes() == b.tobytes() for a, b in zip(waves_of(again), after))
    other = TG.make_target(speech, noise, {"seed": 2, "target_snr_db": [0, 10], **REAL})
    assert other["recipe"] != out["recipe"]


def test_make_target_refuses_leaked_or_missing_noise():
    speech, noise = target_speech(), noise_dataset()
    tn = {r["id"]: np.asarray(r["audio"], np.float32) for r in noise}
    leaks = [
        (B.from_arrays({"tgt/x": (noise_clip(800, 0), SR)}, SR), "target noise tgt/x is also in the synthesis bank"),
        (B.from_arrays({"mine": (noise_clip(800, 0), SR)}, SR, groups={"mine": "tgt/y"}), "shares group tgt/y"),
        (B.from_arrays({"copy": (tn["tgt/z"], SR)}, SR), "tgt/z has the same samples as bank clip copy"),
    ]
    for bk, msg in leaks:
        with pytest.raises(ShiftlabError) as e:
            TG.make_target(speech, noise, REAL, bank=bk)
        assert msg in one_line(e)
    mixed = TG.make_target(speech, noise, REAL)
    with pytest.raises(ShiftlabError) as e:
        TG.make_target(mixed, noise, REAL)
    assert "already mixed" in one_line(e)
    with pytest.raises(ShiftlabError) as e:
        TG.make_target(speech.filter(lambda r: r["domain"] == "source"), noise, REAL)
    assert "no target-domain rows" in one_line(e)
    rows = [dict(r, audio=np.asarray(r["audio"], np.float32)) for r in speech]
    rows[7]["audio"][0] = np.inf
    with pytest.raises(ShiftlabError) as e:
        TG.make_target(audio.build_dataset([{**r, "label": LABELS[r["label"]]} for r in rows], LABELS), noise, REAL)
    assert f"speech row {rows[7]['id']} has NaN or infinite samples" in one_line(e)
    noise16 = audio.build_dataset([{**r, "label": ["a", "b", "x", "y", "z"][r["label"]], "sampling_rate": 16000}
                                   for r in noise], ["a", "b", "x", "y", "z"])
    with pytest.raises(ShiftlabError) as e:
        TG.make_target(speech, noise16, REAL)
    assert "target speech at [8000] Hz but the target noise at 16000 Hz" in one_line(e)
    with pytest.raises(ShiftlabError) as e:
        TG.make_target(speech, noise, {"recordings": ["tgt/w*"], **REAL})
    assert "target_mix.recordings: pattern 'tgt/w*' matches no target-domain" in one_line(e)


# --------------------------------------------------------------------------- the real prepared data


@pytest.fixture(scope="module")
def real_audio(tmp_path_factory):
    """(noise, speech, audio splits) from the real Debian-package data: the pipeline's outputs when
    `dvc repro` has built them, else prepared here with the real loaders (a smaller TTS voice set)."""
    if NOISE_DIR.exists() and SPLITS_DIR.exists() and SPEECH_DIR.exists():
        return store.load(NOISE_DIR), store.load(SPEECH_DIR), store.load(SPLITS_DIR)
    from shiftlab import config
    from shiftlab.datasets import noise as noise_mod
    from shiftlab.datasets import speech as speech_mod
    from shiftlab.datasets import splits as splits_mod

    d = config.defaults()
    noise = noise_mod.prepare(d["prepare_noise"])
    sp_cfg = d["prepare_speech"]
    sp_cfg["tts"] = {**sp_cfg["tts"], "espeak_voices": 4, "flite_voices": ["kal16"]}
    speech = speech_mod.prepare(sp_cfg)
    incar = TG.make_target(speech, noise, {**d["target_mix"], **REAL})
    parts = splits_mod.build(incar, d["split_audio"])
    root = tmp_path_factory.mktemp("real_audio")
    for name, ds in (("noise", noise), ("speech", speech), ("splits", parts)):
        store.save(ds, root / name)
    return store.load(root / "noise"), store.load(root / "speech"), store.load(root / "splits")


def test_real_noise_bank_policy_and_stage(real_audio):
    noise, _, splits = real_audio
    bk = B.from_noise(noise, ["*"], "source", 16000)
    a = B.arrays(bk)
    held = {i for i, d in zip(noise["id"], noise["domain"]) if d == "target"}
    assert held and not held & set(a.ids)  # held-out target noise never in the bank
    sub = hfds.DatasetDict({s: splits[s].select(range(min(len(splits[s]), n)))
                            for s, n in (("train", 120), ("train_dev", 20), ("dev", 5), ("test", 5))})
    syn = M.make_synthetic(sub, bk, {"seed": 0, "device": "cpu"}, progress=False)
    recs = [json.loads(r) for r in syn["recipe"]]
    n = len(recs)
    assert n == sum(1 for s in ("train", "train_dev") for d, o in zip(sub[s]["domain"], sub[s]["origin"])
                    if d == "source" and o == "real")
    G = len(a.group_names)
    counts = np.bincount([a.group_index[a.index(r["noise"])] for r in recs], minlength=G)
    assert counts.max() <= max(math.ceil(0.1 * n), math.ceil(n / G))
    assert len({(r["pass"], r["segment"]) for r in recs}) == n
    for r in recs:  # only the clip shorter than 1 s (the car horn, 0.67 s) is ever looped
        assert (r["loops"] > 0) == (a.lengths[a.index(r["noise"])] < r["length"])
    waves = {r["id"]: w for s in ("train", "train_dev") for r, w in zip(sub[s], waves_of(sub[s]))}
    for r, y in list(zip(syn, waves_of(syn)))[:5]:
        assert M.regenerate(r["recipe"], waves[r["parent"]], bk).tobytes() == y.tobytes()
    # NARROW: the book's failure, one short recording under every row
    narrow = M.build_bank(M.NARROW, noise, 16000)
    assert narrow["id"] == ["dustracing2d/skid"]
    ns = M.make_synthetic(sub, narrow, {**M.NARROW, "device": "cpu"}, progress=False)
    assert {json.loads(r)["noise"] for r in ns["recipe"]} == {"dustracing2d/skid"}


def test_real_make_target_uses_only_held_out_recordings(real_audio):
    noise, speech, _ = real_audio
    dom = np.array(speech["domain"])
    rows = np.r_[np.flatnonzero(dom == "source")[:10], np.flatnonzero(dom == "target")]
    sp = speech.select(rows.tolist())
    bk = B.from_noise(noise, ["*"], "source", 16000)
    out = TG.make_target(sp, noise, REAL, bank=bk)
    for r0, r1, w0, w1 in zip(sp, out, waves_of(sp), waves_of(out)):
        if r0["domain"] == "source":
            assert w0.tobytes() == w1.tobytes() and r0["recipe"] == r1["recipe"]
        else:
            tm = json.loads(r1["recipe"])["target_mix"]
            held = {g for g, d in zip(noise["group"], noise["domain"]) if d == "target"}
            assert tm["noise_group"] in held and tm["noise"] not in bk["id"] and tm["noise_group"] not in bk["group"]
            assert w0.tobytes() != w1.tobytes() and np.abs(w1).max() <= 1.0
