"""Audio diversity checks (shiftlab.mixing.diversity) on data the tests make.

"Cars" are coloured noise with a per-car random spectral tilt, three resonances and an
engine hum (harmonics of a wobbling fundamental); "speech" is a short chirp word (the
label sets its pitch and direction) with per-utterance jitter; mixes are plain SNR mixes
whose recipes follow the mixer's contract (noise, noise_group, offset, length, loops,
snr_db, parent). Target rows: another "speaker" mixed with three held-out cars.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shiftlab import store
from shiftlab.datasets import audio
from shiftlab.errors import ShiftlabError
from shiftlab.mixing import diversity as dv

SR = 8000
N = 4000  # 0.5 s words
WORDS = [f"w{i}" for i in range(8)]
N_MIXES = 400


def car(seed: int, k: int, seconds: float) -> np.ndarray:
    rng = np.random.default_rng([seed, k, 7])
    n = int(round(seconds * SR))
    f = np.fft.rfftfreq(n, 1 / SR)
    lf = np.log2(np.maximum(f, 20.0) / 500.0)
    env = rng.uniform(-9.0, 0.0) * lf  # tilt, dB per octave
    for _ in range(3):  # cabin resonances
        fc = np.log2(rng.uniform(100, 3500) / 500.0)
        env += rng.uniform(8, 24) * np.exp(-0.5 * ((lf - fc) / rng.uniform(0.1, 0.4)) ** 2)
    x = np.fft.irfft(np.fft.rfft(rng.standard_normal(n)) * 10 ** (env / 20), n)
    x /= np.sqrt(np.mean(x * x))
    t = np.arange(n) / SR
    f0 = rng.uniform(25, 110)  # engine hum
    ph = 2 * np.pi * np.cumsum(f0 * (1 + 0.08 * np.sin(2 * np.pi * rng.uniform(0.1, 0.5) * t))) / SR
    hum = sum(rng.uniform(0, 1) / h * np.sin(h * ph) for h in range(1, 7))
    x = x + rng.uniform(0.5, 2.0) * hum / np.sqrt(np.mean(hum * hum))
    return (0.1 * x / np.sqrt(np.mean(x * x))).astype(np.float32)


def word(w: int, seed: int, i: int, speaker: int = 0) -> np.ndarray:
    rng = np.random.default_rng([seed, i, 11])
    t = np.arange(N) / SR
    fa = 300 + 180 * w
    fb = fa * (1.5 if w % 2 else 0.7)
    dur, start = 0.3, rng.uniform(0.05, 0.15)
    tt = np.clip(t - start, 0, dur)
    ph = 2 * np.pi * np.cumsum(rng.uniform(0.95, 1.05) * (fa + (fb - fa) * tt / dur)) / SR
    env = np.where((t >= start) & (t < start + dur), np.sin(np.pi * (t - start) / dur) ** 2, 0.0)
    amps = (1.0, 0.5, 0.25) if speaker == 0 else (1.0, 0.8, 0.6)
    x = env * sum(a * np.sin((h + 1) * ph) for h, a in enumerate(amps))
    return (0.3 * x / np.sqrt(np.mean(x * x))).astype(np.float32)


def cars(n: int, seconds: float, seed: int = 0, prefix: str = "virtual/car") -> list[tuple[str, str, np.ndarray]]:
    return [(f"{prefix}{k:03d}", f"{prefix}{k:03d}", car(seed, k, seconds)) for k in range(n)]


def make_bank(clips, domain="source", origin="synthetic"):
    rows = [dict(id=cid, audio=w, sampling_rate=SR, label="noise", domain=domain, origin=origin, group=g,
                 recipe=store.recipe(kind="test")) for cid, g, w in clips]
    return audio.build_dataset(rows, ["noise"])


def make_mixes(clips, n=N_MIXES, seed=0, speaker=0, domain="source", origin="synthetic", prefix="mix"):
    """SNR mixes, sources drawn round robin in seeded order (balanced), random offsets."""
    rng = np.random.default_rng([seed, 99])
    by_group: dict[str, list] = {}
    for cid, g, w in clips:
        by_group.setdefault(g, []).append((cid, w))
    groups = sorted(by_group)
    order: list[int] = []
    while len(order) < n:
        order += list(rng.permutation(len(groups)))
    rows = []
    for i in range(n):
        g = groups[order[i]]
        cid, w = by_group[g][rng.integers(len(by_group[g]))]
        L, off, lab = len(w), int(rng.integers(len(w))), int(rng.integers(len(WORDS)))
        sp = word(lab, seed, i, speaker).astype(np.float64)
        nz = w[(off + np.arange(N)) % L].astype(np.float64)
        snr = float(rng.uniform(0, 15))
        gain = np.sqrt(np.mean(sp**2) / (np.mean(nz**2) * 10 ** (snr / 10)))
        rows.append(dict(
            id=f"{prefix}/{i:05d}", audio=(sp + gain * nz).astype(np.float32), sampling_rate=SR, label=WORDS[lab],
            domain=domain, origin=origin, group=f"spk{i % 10}", parent=f"speech/{i:05d}",
            recipe=store.recipe(noise=cid, noise_group=g, offset=off, length=N, loops=(off + N - 1) // L,
                                snr_db=snr, parent=f"speech/{i:05d}"),
        ))
    return audio.build_dataset(rows, WORDS)


@pytest.fixture(scope="module")
def target():
    clips = cars(3, 4.0, seed=1000, prefix="target/car")
    return make_bank(clips, domain="target", origin="real"), make_mixes(clips, 60, seed=5, speaker=1,
                                                                          domain="target", origin="real", prefix="tgt")


_CACHE: dict = {}


def scenario(name, target):
    """(report, gates) of a named bank, computed once per module."""
    if name not in _CACHE:
        clips = {
            "one": [("rec/skid", "rec/skid", car(3, 0, 1.5))],
            "cars1": cars(1, 4.0),
            "cars3": cars(3, 4.0),
            "cars40": cars(40, 4.0),
        }[name]
        rep = dv.run(make_mixes(clips, seed=1), make_bank(clips), target[1], target[0], progress=False)
        _CACHE[name] = (rep, dv.gate(rep))
    return _CACHE[name]


# --------------------------------------------------------------------------- the requirement


def test_one_short_recording_under_all_speech_is_flagged(target):
    rep, gates = scenario("one", target)
    failed = {g["name"] for g in dv.failures(gates)}
    assert {"reuse_ratio", "effective_sources_by_use", "max_segment_uses"} <= failed
    m = rep["metrics"]
    # every mix uses N samples of one 1.5 s clip, and the whole clip gets heard
    assert m["bank_coverage"] == 1.0
    assert m["reuse_ratio"] == pytest.approx(N_MIXES * N / (1.5 * SR), rel=1e-12)
    assert m["max_segment_uses"] >= m["reuse_ratio"]
    assert m["vendi_sources"] == pytest.approx(1.0)
    assert rep["probe"]["applicable"] is False and "noise source" in rep["probe"]["reason"]
    assert m["probe_gap"] is None
    # n/a is not a pass: the probe cannot be run on one recording, so its fail gate fails
    g = next(g for g in gates if g["name"] == "probe_gap_ci_high")
    assert g["passed"] is False and g["action"] == "fail" and "needs >= 2 noise sources" in g["reason"]
    assert "probe_gap_ci_high" in failed and dv.verdict(gates) == "fail"
    md = dv.markdown(rep, gates)
    assert "**FAIL**" in md and "| probe_gap_ci_high | n/a | <= 0.1 | fail | **FAIL** (n/a) |" in md
    # the noise-domain classifier is grouped by recording: one recording on a side has no grouped AUC
    nd = rep["spectral"]["noise_domain"]
    assert nd["auc"] is None and "2 groups per side" in nd["reason"]


@pytest.mark.parametrize("name,k", [("cars1", 1), ("cars3", 3)])
def test_few_cars_are_flagged(target, name, k):
    rep, gates = scenario(name, target)
    failed = {g["name"] for g in dv.failures(gates)}
    assert "effective_sources_by_use" in failed and "largest_source_share" in failed
    assert rep["metrics"]["n_sources"] == k
    assert rep["metrics"]["vendi_sources"] <= k + 1e-9
    assert rep["metrics"]["largest_source_share"] == pytest.approx(1.0 / k, abs=0.01)


def test_many_balanced_cars_pass_every_fail_gate(target, tmp_path):
    rep, gates = scenario("cars40", target)
    assert dv.failures(gates) == [], dv.failures(gates)
    m = rep["metrics"]
    assert m["n_sources"] == 40 and m["largest_source_share"] == pytest.approx(1 / 40)
    assert m["reuse_ratio"] < 3 and m["max_segment_uses"] < 15
    assert m["vendi_sources"] > 20  # the cars are spectrally distinct
    assert rep["probe"]["applicable"] and rep["probe"]["sources"] == 40
    assert json.loads(json.dumps(rep, allow_nan=False)) == rep  # strict JSON
    assert "**PASS" in dv.markdown(rep, gates)


def test_probe_sees_overfitting_to_few_sources(target):
    few = scenario("cars3", target)[0]["probe"]
    many = scenario("cars40", target)[0]["probe"]
    assert few["applicable"] and few["gap_ci_low"] > 0  # held-out cars hurt
    assert many["gap"] < few["gap"]
    assert many["error_in"] < many["chance_error"]  # the probe learns the words
    # the intervals resample the noise sources of the test mixes (3 vs 40): few sources, wide interval
    assert few["test_sources"] == 3 and many["test_sources"] == 40
    assert few["gap_ci_high"] - few["gap_ci_low"] > many["gap_ci_high"] - many["gap_ci_low"]
    g = {x["name"]: x for x in scenario("cars3", target)[1]}
    assert not g["probe_gap_ci_high"]["passed"]  # its upper end is above 0.1


def test_realism_and_noise_metrics_are_reported(target):
    rep, _ = scenario("cars40", target)
    rl = rep["realism"]
    assert rl["n_a"] == N_MIXES and rl["n_b"] == 60 and rl["ci_low"] <= rl["auc"] <= rl["ci_high"]
    # grouped by speaker: the test mixes name 10 speakers spk0..spk9 on each side
    assert rl["bootstrap"] == "groups" and rl["groups_a"] == 10 and rl["groups_b"] == 10
    nd = rep["spectral"]["noise_domain"]
    assert nd["groups_a"] == 40 and nd["groups_b"] == 3  # noise by car: 40 bank cars, 3 target cars
    assert rep["spectral"]["target_noise_segments"] == 3 * 8  # 3 clips of 4 s in 0.5 s segments
    assert rep["metrics"]["frechet_noise"] > 0 and 0 <= rep["metrics"]["noise_domain_auc"] <= 1


# --------------------------------------------------------------------------- exact accounting


def _tiny(clips, recs, length=None):
    """Mixes of silence-free noise with given (clip id, offset, length) recipes."""
    rng = np.random.default_rng(0)
    group = {cid: g for cid, g, _ in clips}
    rows = [dict(id=f"m{i}", audio=rng.standard_normal(n if length is None else length).astype(np.float32) * 0.1,
                 sampling_rate=SR, label=WORDS[i % 2], domain="source", origin="synthetic", group="s", parent="",
                 recipe=store.recipe(noise=cid, noise_group=group[cid], offset=o, length=n))
            for i, (cid, o, n) in enumerate(recs)]
    return audio.build_dataset(rows, WORDS)


def test_reuse_ratio_and_max_uses_exact_on_a_hand_built_case():
    rng = np.random.default_rng(1)
    clips = [("a", "A", rng.standard_normal(1000).astype(np.float32)),
             ("b", "B", rng.standard_normal(500).astype(np.float32))]
    # on clip a: [0,300), [200,500), [900,1000)+[0,200) (wraps); on clip b: [100,400) twice
    recs = [("a", 0, 300), ("a", 200, 300), ("a", 900, 300), ("b", 100, 300), ("b", 100, 300)]
    rep = dv.run(_tiny(clips, recs), make_bank(clips), None, progress=False)
    r = rep["reuse"]
    assert r["mixed_seconds"] == pytest.approx(1500 / SR)
    assert r["distinct_noise_seconds"] == pytest.approx((600 + 300) / SR)
    assert r["reuse_ratio"] == pytest.approx(1500 / 900)
    assert r["max_segment_uses"] == 2
    assert r["looped_share"] == pytest.approx(0.2)
    assert r["loops_mismatch"] == 0  # no loops field given
    by = {s["group"]: s for s in r["sources"]}
    assert by["A"]["reuse_ratio"] == pytest.approx(900 / 600) and by["B"]["reuse_ratio"] == pytest.approx(2.0)
    assert by["A"]["max_uses"] == 2 and by["B"]["max_uses"] == 2
    assert by["A"]["share"] == pytest.approx(0.6) and rep["metrics"]["largest_source_share"] == pytest.approx(0.6)
    hist = dict(zip(r["uses_histogram"]["uses"], r["uses_histogram"]["seconds"]))
    assert hist == pytest.approx({0: (400 + 200) / SR, 1: 300 / SR, 2: (300 + 300) / SR})
    assert rep["realism"]["auc"] is None and rep["metrics"]["frechet_noise"] is None


def test_max_uses_counts_every_wrap_of_a_looping_mix():
    bounds, counts = dv.coverage_runs([500], [2500], 1000)  # [500,1000) + [0,1000) + [0,1000)
    assert bounds.tolist() == [0, 500, 1000] and counts.tolist() == [2, 3]
    bounds, counts = dv.coverage_runs([1700, 0], [100, 0], 1000)  # offset beyond the clip: mod 1000
    assert bounds.tolist() == [0, 700, 800, 1000] and counts.tolist() == [0, 1, 0]


@settings(max_examples=150, deadline=None)
@given(
    L=st.integers(1, 60),
    mixes=st.lists(st.tuples(st.integers(0, 300), st.integers(0, 200)), min_size=0, max_size=12),
)
def test_coverage_runs_equals_per_sample_count(L, mixes):
    brute = np.zeros(L, np.int64)
    for o, n in mixes:
        np.add.at(brute, (o + np.arange(n)) % L, 1)
    offs = [o for o, _ in mixes]
    lens = [n for _, n in mixes]
    bounds, counts = dv.coverage_runs(offs, lens, L)
    assert bounds[0] == 0 and bounds[-1] == L and (np.diff(bounds) > 0).all()
    assert np.repeat(counts, np.diff(bounds)).tolist() == brute.tolist()


def test_vendi_of_identical_sources_is_one_and_of_distinct_cars_near_their_number():
    w = car(0, 0, 2.0)
    same = [(f"copy{k}", f"copy{k}", w.copy()) for k in range(6)]
    recs = [(f"copy{k % 6}", 37 * k, N) for k in range(24)]
    rep = dv.run(_tiny(same, recs, N), make_bank(same), None, progress=False)
    assert rep["metrics"]["n_sources"] == 6
    assert rep["metrics"]["vendi_sources"] == pytest.approx(1.0, abs=1e-9)
    distinct = cars(6, 2.0, seed=3)
    recs = [(f"virtual/car{k % 6:03d}", 37 * k, N) for k in range(24)]
    rep = dv.run(_tiny(distinct, recs, N), make_bank(distinct), None, progress=False)
    assert 4.5 < rep["metrics"]["vendi_sources"] <= 6 + 1e-9


def test_logmel_stats_are_gain_invariant():
    x = np.stack([car(0, 1, 0.5), word(3, 0, 0)])
    a = dv.logmel_stats(x, SR)
    b = dv.logmel_stats(x * 7.5, SR)
    assert a.shape == (2, 2 * dv.DEFAULTS["n_mels"])
    np.testing.assert_allclose(a, b, atol=1e-3)  # dB; float32 spectrogram
    assert np.abs(a[0] - a[1]).max() > 1  # and they do tell signals apart


# --------------------------------------------------------------------------- determinism, plots


def test_deterministic_report_and_plots(target, tmp_path):
    clips = cars(5, 2.0)
    syn, bank = make_mixes(clips, 120, seed=2), make_bank(clips)
    cfg = {"max_rows": 100, "max_bank_segments": 12}
    r1 = dv.run(syn, bank, target[1], target[0], cfg=cfg, plots_dir=tmp_path / "a", progress=False)
    r2 = dv.run(syn, bank, target[1], target[0], cfg=cfg, plots_dir=tmp_path / "b", progress=False)
    assert json.dumps(r1, sort_keys=True) == json.dumps(r2, sort_keys=True)
    assert r1["subsample"]["rows"] == 100 and r1["spectral"]["bank_segments_used"] == 12
    assert r1["plots"] == ["uses_per_source.png", "coverage.png", "spectra.png", "embedding.png"]
    for p in r1["plots"]:
        a, b = (tmp_path / "a" / p).read_bytes(), (tmp_path / "b" / p).read_bytes()
        assert a[:8] == b"\x89PNG\r\n\x1a\n" and a == b
    r3 = dv.run(syn, bank, target[1], target[0], cfg={**cfg, "seed": 1}, progress=False)
    assert r3["reuse"] == r1["reuse"]  # reuse counts every mix: no randomness
    assert r3["probe"] != r1["probe"]  # the probe's split follows the seed


# --------------------------------------------------------------------------- gates and config


def test_gate_semantics():
    rep = {"metrics": {"n_sources": 12, "reuse_ratio": 25.0, "probe_gap": None},
           "probe": {"applicable": False, "reason": "needs >= 2 noise sources, got 1"}}
    cfg = {"gates": {"n_sources": {"min": 12}, "reuse_ratio": {"max": 20, "action": "warn"},
                     "probe_gap": {"max": 0.1, "action": "fail"}, "vendi_sources": None, "probe_gap_ci_high": None,
                     "largest_source_share": None, "max_segment_uses": None, "domain_auc": None,
                     "noise_domain_auc": None, "effective_sources_by_use": None, "vendi_sources_share": None}}
    g = {x["name"]: x for x in dv.gate(rep, cfg)}
    assert set(g) == {"n_sources", "reuse_ratio", "probe_gap"}
    assert g["n_sources"] == {"name": "n_sources", "value": 12.0, "op": ">=", "threshold": 12.0, "action": "fail",
                              "passed": True}
    assert g["reuse_ratio"]["passed"] is False and g["reuse_ratio"]["op"] == "<="
    # n/a is not a pass: a fail gate without a value fails, with the reason
    assert g["probe_gap"]["passed"] is False and g["probe_gap"]["reason"] == "n/a: needs >= 2 noise sources, got 1"
    assert [x["name"] for x in dv.failures(list(g.values()))] == ["probe_gap"]
    assert dv.verdict(list(g.values())) == "fail"
    warn_only = dv.gate(rep, {"gates": {**cfg["gates"], "probe_gap": {"max": 0.1, "action": "warn"}}})
    assert dv.failures(warn_only) == [] and dv.verdict(warn_only) == "warn"  # an n/a warn gate warns
    # the probe gate on the interval's upper end: a small estimate with a wide interval does not pass
    both = dv.gate({"metrics": {"probe_gap": 0.0, "probe_gap_ci_high": 0.15}})
    b = {x["name"]: x for x in both}
    assert b["probe_gap"]["passed"] and not b["probe_gap_ci_high"]["passed"] and b["probe_gap_ci_high"]["action"] == "fail"
    assert dv.gate(rep, {"gates": None}) == []


@pytest.mark.parametrize("cfg,msg", [
    ({"max_row": 10}, "check_audio.max_row: unknown key (did you mean max_rows?)"),
    ({"max_rows": 5}, "check_audio.max_rows: 5 is out of range [20, inf]"),
    ({"seed": -1}, "check_audio.seed: -1 is out of range [0, inf]"),
    ({"segment_hop": 0}, "check_audio.segment_hop: 0 is out of range (0.0, 1.0]"),
    ({"f_min": 500.0, "f_max": 100.0}, "check_audio.f_max: must be above f_min (500) or null, got 100"),
    ({"vendi_bandwidth_db": True}, "check_audio.vendi_bandwidth_db: must be a number in (0.0, inf], got True"),
    ({"probe": {"fold": 3}}, "check_audio.probe.fold: unknown key (did you mean folds?)"),
    ({"probe": {"test_fraction": 1.0}}, "check_audio.probe.test_fraction: 1 is out of range (0.0, 1.0)"),
    ({"gates": {"reuse": {"max": 3}}}, "check_audio.gates.reuse: unknown metric (did you mean reuse_ratio?)"),
    ({"gates": {"reuse_ratio": {"max": 3, "min": 1}}}, "check_audio.gates.reuse_ratio: give either min or max, not both"),
    ({"gates": {"reuse_ratio": {"max": "x"}}}, "check_audio.gates.reuse_ratio.max: must be a finite number"),
    ({"gates": {"reuse_ratio": {"max": 3, "action": "stop"}}}, "check_audio.gates.reuse_ratio.action: must be fail or warn"),
    ({"gates": [1]}, "check_audio.gates: must be a mapping"),
])
def test_bad_config_is_one_line_error(cfg, msg):
    with pytest.raises(ShiftlabError) as e:
        dv.check_cfg(cfg)
    assert str(e.value).startswith(msg) and "\n" not in str(e.value)


def test_config_merges_over_defaults():
    c = dv.check_cfg({"probe": {"folds": 3}, "gates": {"reuse_ratio": {"max": 5.0, "action": "warn"}}})
    assert c["probe"] == {**dv.DEFAULTS["probe"], "folds": 3}
    assert c["gates"]["reuse_ratio"] == {"max": 5.0, "action": "warn"}
    assert c["gates"]["effective_sources_by_use"] == dv.DEFAULTS["gates"]["effective_sources_by_use"]
    assert "n_sources" not in c["gates"] and "vendi_sources" not in c["gates"]  # counts: reported, not gated
    assert dv.check_cfg(dv.check_cfg(None)) == dv.check_cfg(None)  # a validated cfg is a fixed point
    assert set(dv.DEFAULTS["gates"]) <= set(dv.METRICS)


# --------------------------------------------------------------------------- bad input


def _bad_mix(recipe: dict, sr=SR, origin="synthetic"):
    return audio.build_dataset([dict(id="m0", audio=np.ones(N, np.float32) * 0.1, sampling_rate=sr, label="w0",
                                     domain="source", origin=origin, group="s", recipe=json.dumps(recipe))], WORDS)


@pytest.mark.parametrize("recipe,kw,msg", [
    ({"offset": 0, "length": N}, {}, "synthetic row m0: recipe has no 'noise'"),
    ({"noise": "nope", "offset": 0, "length": N}, {}, "synthetic row m0: noise clip 'nope' is not in the bank"),
    ({"noise": "c0", "noise_group": "X", "offset": 0, "length": N}, {}, "synthetic row m0: recipe noise_group 'X' differs"),
    ({"noise": "c0", "offset": -3, "length": N}, {}, "synthetic row m0: recipe offset must be an integer >= 0"),
    ({"noise": "c0", "offset": 0}, {}, "synthetic row m0: recipe length must be an integer >= 1"),
    ({"noise": "held", "offset": 0, "length": N}, {}, "synthetic row m0: uses noise clip held, which is held-out"),
    ({"noise": "c0", "offset": 0, "length": N}, {"sr": 16000}, "synthetic: sampling_rate 16000 differs from the bank's 8000"),
    ({"noise": "c0", "offset": 0, "length": N}, {"origin": "real"}, "synthetic: no rows with origin 'synthetic'"),
])
def test_bad_input_is_one_line_error(recipe, kw, msg):
    bank = make_bank([("c0", "c0", car(0, 0, 1.0))])
    held = make_bank([("held", "held", car(0, 1, 1.0))], domain="target", origin="real")
    with pytest.raises(ShiftlabError) as e:
        dv.run(_bad_mix(recipe, **kw), bank, None, held, progress=False)
    assert str(e.value).startswith(msg) and "\n" not in str(e.value)


def test_bad_recipe_json_and_missing_columns():
    bank = make_bank([("c0", "c0", car(0, 0, 1.0))])
    ds = _bad_mix({"noise": "c0", "offset": 0, "length": N})
    broken = ds.remove_columns("recipe").add_column("recipe", ["{oops"])
    with pytest.raises(ShiftlabError, match=r"^synthetic row m0: recipe is not valid JSON"):
        dv.run(broken, bank, None, progress=False)
    with pytest.raises(ShiftlabError, match=r"^bank: missing column\(s\) group$"):
        dv.run(ds, bank.remove_columns("group"), None, progress=False)
    with pytest.raises(ShiftlabError, match=r"^bank: no noise clips"):
        dv.run(ds, make_bank([("c0", "c0", car(0, 0, 1.0))], domain="target"), None, progress=False)
