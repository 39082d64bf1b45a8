"""The diversity ladder (shiftlab.ladder) on real data, and the check-vs-transfer table.

A small ladder: images from Fashion-MNIST (the Debian package the pipeline reads) as parents,
blurred with 1, 5, 20 kernels drawn from the default generator, a fresh kernel per row and
a mild (short-kernel) sampler; audio from real TORCS engine recordings (torcs-data) driven
through RPM trajectories, 1, 3 and 10 cars and all 17 at equal seconds of noise, and the
17 cars with their noise reused 50 times, under the same speech rows. The default gates must
fail the book's cases and pass the default generators. Sizes are reduced to fit the tests'
time budget; the committed ladder (reports/ladder.md) uses 2,000 rows per rung.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from shiftlab import config, ladder
from shiftlab.errors import ShiftlabError
from shiftlab.mixing import diversity as adv
from shiftlab.synth import diversity as idv

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
TORCS_DIR = Path("/usr/share/games/torcs/data/sound")
needs_fmnist = pytest.mark.skipif(not FMNIST_DIR.is_dir(), reason=f"{FMNIST_DIR} not installed")
needs_torcs = pytest.mark.skipif(not TORCS_DIR.is_dir(), reason=f"{TORCS_DIR} not installed")
ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "params.yaml"

# the default gates (params.yaml), with the check's sample sizes reduced to the tests' budget. At 400 rows
# the probe's interval is about twice as wide as at the default run's 2,000 (its upper end can exceed 0.05
# for a diverse set by chance alone), so the test's probe fail gate allows a gap up to 0.15: the kernel and
# reuse gates the ladder calibrates are the ones under test here.
IMG_SMALL = {"max_rows": 400, "max_target": 200, "max_kernels": 400,
             "features": {"train_rows": 600, "epochs": 4}, "realism": {"folds": 2, "n_boot": 50},
             "probe": {"l2": 0.01},  # the logistic fits dominate the time: fewer folds, faster convergence
             "gates": {"probe_gap_ci_high": {"max": 0.15}}}


def _img_cfg():
    c = copy.deepcopy(config.section("check_images", PARAMS))
    for k, v in IMG_SMALL.items():
        c[k] = {**c[k], **v} if isinstance(v, dict) and isinstance(c.get(k), dict) else v
    return c


@pytest.fixture(scope="module")
def image_ladder():
    import datasets as hfds

    from shiftlab.datasets import images

    ds = images.from_fashion_mnist(FMNIST_DIR, source_rows=1000, target_rows=400, seed=0)
    empty = ds.select([])
    splits = hfds.DatasetDict(train=ds, train_dev=empty, dev=empty, test=empty)
    cfg = {"images": {"rows": 400, "kernels": [1, 5, 20]}}
    return ladder.run_images(splits, config.section("synth_blur", PARAMS), _img_cfg(), cfg)


@needs_fmnist
def test_image_ladder_fails_few_kernels_and_passes_the_generator(image_ladder):
    by = {r["rung"]: r for r in image_ladder["rungs"]}
    assert list(by) == ["1 kernel", "5 kernels", "20 kernels", "fresh kernel per row (default)",
                        "mild, fresh kernel per row"]
    for name in ("1 kernel", "5 kernels", "20 kernels"):
        r = by[name]
        assert r["verdict"] == "fail", r
        # failed by the calibrated kernel gates, not only by something else
        assert {"kernel_effective_share", "kernel_vendi_ratio"} & set(r["failed"]), r["failed"]
    # the book's 20 designs: fail both kernel gates although they pass the old count gates
    r20 = by["20 kernels"]
    assert r20["metrics"]["distinct_kernels"] == 20 and r20["metrics"]["top_kernel_share"] == pytest.approx(0.05)
    assert r20["metrics"]["kernel_vendi_ratio"] < 0.75 and r20["metrics"]["kernel_effective_share"] < 0.5
    fresh = by["fresh kernel per row (default)"]
    assert fresh["verdict"] in ("pass", "warn") and fresh["failed"] == [], fresh
    assert fresh["metrics"]["kernel_vendi_ratio"] > 0.9
    assert fresh["metrics"]["kernel_effective_share"] == pytest.approx(1.0)


@needs_fmnist
def test_a_mild_continuous_sampler_is_not_failed_for_its_kernel_size(image_ladder):
    by = {r["rung"]: r for r in image_ladder["rungs"]}
    mild, fresh = by["mild, fresh kernel per row"], by["fresh kernel per row (default)"]
    assert mild["metrics"]["mean_path_length"] < fresh["metrics"]["mean_path_length"] / 2
    # its raw kernel Vendi is low (short kernels all look alike: the old gate failed it) ...
    assert mild["metrics"]["kernel_vendi"] < 5.0
    # ... but against a reference draw at its own scale it is as diverse as the generator
    assert mild["metrics"]["kernel_vendi_ratio"] > 0.9
    assert not {"kernel_vendi_ratio", "kernel_effective_share", "length_entropy"} & set(mild["failed"] + mild["warned"])
    assert mild["verdict"] != "fail", mild


def test_reference_kernels_match_family_and_scale():
    from shiftlab.synth import kernels

    recs = [kernels.Linear(7.0, 30.0, 0.2).to_record(),
            kernels.Shake(max_length=12.0, exposure=0.5, seed=3).to_record()]
    ref = idv.reference_kernels(recs * 50, seed=1)
    assert len(ref) == 100
    assert {r.family for r in ref[0::2]} == {"linear"} and {r.family for r in ref[1::2]} == {"shake"}
    assert all(r.length == 7.0 for r in ref[0::2])
    assert all(r.max_length == 12.0 and r.exposure == 0.5 for r in ref[1::2])
    assert len({r.angle for r in ref[0::2]}) == 50  # fresh orientations
    # one kernel reused has Vendi 1; its reference at the same scale is far above
    cov = idv.kernel_coverage([recs[0]] * 200)
    assert cov["vendi"] == pytest.approx(1.0) and cov["vendi_reference"] > 3 and cov["vendi_ratio"] < 0.35
    assert cov["effective_share"] == pytest.approx(1 / 200)


# --------------------------------------------------------------------------- audio

SR = 16000
WORDS = [f"w{i}" for i in range(6)]


def _word(w: int, i: int, speaker: int) -> np.ndarray:
    rng = np.random.default_rng([i, speaker, 5])
    t = np.arange(SR // 2) / SR
    fa = 300 + 160 * w
    fb = fa * (1.5 if w % 2 else 0.7)
    start = rng.uniform(0.02, 0.1)
    tt = np.clip(t - start, 0, 0.3)
    ph = 2 * np.pi * np.cumsum(rng.uniform(0.95, 1.05) * (fa + (fb - fa) * tt / 0.3)) / SR
    env = np.where((t >= start) & (t < start + 0.3), np.sin(np.pi * (t - start) / 0.3) ** 2, 0.0)
    amps = (1.0, 0.5, 0.25) if speaker < 100 else (1.0, 0.8, 0.6)
    x = env * sum(a * np.sin((h + 1) * ph) for h, a in enumerate(amps))
    return (0.3 * x / np.sqrt(np.mean(x * x))).astype(np.float32)


def _speech_splits(n: int):
    import datasets as hfds

    from shiftlab import store
    from shiftlab.datasets import audio

    rows = [dict(id=f"spk{i % 12}/{i:05d}", audio=_word(i % len(WORDS), i, i % 12), sampling_rate=SR,
                 label=WORDS[i % len(WORDS)], domain="source", origin="real", group=f"spk{i % 12}",
                 recipe=store.recipe(kind="test")) for i in range(n)]
    ds = audio.build_dataset(rows, WORDS)
    empty = ds.select([])
    return hfds.DatasetDict(train=ds, train_dev=empty, dev=empty, test=empty)


def _target(n: int):
    """Target mixes: another speaker group under two held-out TORCS cars, and that noise."""
    from shiftlab import store
    from shiftlab.datasets import audio
    from shiftlab.mixing import bank, mix

    tn = bank.from_torcs(["nsx", "gt40"], 1, 4.0, SR, seed=7, workers=1)
    clips = bank.audio_arrays(tn)
    flat, offs = clips
    rows = []
    rng = np.random.default_rng(3)
    for i in range(n):
        k = i % 2
        c = flat[offs[k]:offs[k + 1]]
        off = int(rng.integers(len(c) - SR // 2))
        s = _word(i % len(WORDS), 10_000 + i, 100 + i % 8)
        y = mix.mix(s[None], c[off:off + SR // 2][None], np.array([rng.uniform(0, 15)]))[0][0]
        rows.append(dict(id=f"tgt/{i:04d}", audio=y, sampling_rate=SR, label=WORDS[i % len(WORDS)], domain="target",
                         origin="real", group=f"tspk{i % 8}", recipe=store.recipe(kind="test")))
    tnoise = tn.map(lambda r: {"domain": "target"})
    return audio.build_dataset(rows, WORDS), tnoise


@pytest.fixture(scope="module")
def audio_ladder():
    splits = _speech_splits(240)
    tgt, tnoise = _target(60)
    cfg = {"audio": {"cars": [1, 3, 10, 17], "seconds": 119.0, "seconds_per_drive": 7.0, "reuse": 50.0,
                     "default_bank": False}}
    chk = copy.deepcopy(config.section("check_audio", PARAMS))
    chk["n_boot"] = 100
    return ladder.run_audio(splits, None, config.section("synth_mix", PARAMS), chk, cfg, target_rows=tgt,
                            target_noise=tnoise, workers=1)


@needs_torcs
def test_audio_ladder_fails_few_cars_and_reused_noise(audio_ladder):
    by = {r["rung"]: r for r in audio_ladder["rungs"]}
    assert list(by) == ["1 car", "3 cars", "10 cars", "17 cars", "17 cars, noise reused x50"]
    for name, k in (("1 car", 1), ("3 cars", 3), ("10 cars", 10)):
        r = by[name]
        assert r["verdict"] == "fail", r
        assert "effective_sources_by_use" in r["failed"], r["failed"]
        assert r["metrics"]["n_sources"] == k
    # ten cars: the old gates (n_sources >= 10, Vendi >= 5 or so, share <= 0.25, reuse <= 20) would pass the count
    ten = by["10 cars"]["metrics"]
    assert ten["largest_source_share"] <= 0.25 and ten["reuse_ratio"] < 20
    reused = by["17 cars, noise reused x50"]
    assert reused["verdict"] == "fail" and "reuse_ratio" in reused["failed"]
    assert reused["metrics"]["reuse_ratio"] > 20
    # all the cars at equal seconds: the source gates pass
    allc = by["17 cars"]
    assert not {"effective_sources_by_use", "largest_source_share", "reuse_ratio"} & set(allc["failed"]), allc


@needs_torcs
def test_audio_ladder_equal_rows_and_seconds(audio_ladder):
    rs = audio_ladder["rungs"]
    assert len({r["mixes"] for r in rs}) == 1  # the same speech rows under every bank
    cars = [r for r in rs if "reused" not in r["rung"]]
    assert max(r["bank_seconds"] for r in cars) == pytest.approx(min(r["bank_seconds"] for r in cars), rel=0.02)


# --------------------------------------------------------------------------- config, transfer, markdown


def test_cfg_validation_is_one_line():
    with pytest.raises(ShiftlabError, match=r"ladder\.images\.rowz: unknown key \(did you mean rows\?\)"):
        ladder.check_cfg({"images": {"rowz": 10}})
    with pytest.raises(ShiftlabError, match=r"ladder\.audio\.cars: must be increasing without repeats"):
        ladder.check_cfg({"audio": {"cars": [3, 1]}})
    with pytest.raises(ShiftlabError, match=r"ladder\.images\.kernels: 5000 kernels exceed"):
        ladder.check_cfg({"images": {"kernels": [5000]}})
    assert ladder.check_cfg(config.section("ladder", PARAMS))["images"]["rows"] == 2000


def test_transfer_table_regates_stored_checks_and_counts(tmp_path):
    """The default run's committed results: re-gated with the current gates, next to the test errors."""
    t = ladder.transfer(ROOT, config.section("check_images", PARAMS), config.section("check_audio", PARAMS))
    rows = {(r["scenario"], r["set"]): r for r in t["rows"]}
    if not rows:
        pytest.skip("no committed evaluation results")
    # the book's traps fail, the default syntheses do not
    assert rows[("audio", "narrow")]["verdict"] == "fail"
    assert rows[("audio", "synth")]["verdict"] != "fail"
    for k in ("sweep cars1", "sweep cars3", "sweep cars10"):
        if ("audio", k) in rows:
            assert rows[("audio", k)]["verdict"] == "fail"
    for r in t["rows"]:
        lo, hi = r["difference_low"], r["difference_high"]
        assert r["transfer"] == ("worse" if lo > 0 else "better" if hi < 0 else "no clear difference")
    assert t["fail"] + t["pass"] == len(t["rows"])
    assert t["fail_worse"] == sum(r["verdict"] == "fail" and r["transfer"] == "worse" for r in t["rows"])
    md = ladder.markdown(None, None, t)
    assert "Did a FAIL predict worse transfer?" in md and ladder.transfer_sentence(t) in md
    json.loads(json.dumps(t, allow_nan=False))


def test_committed_report_shows_this_runs_check_vs_transfer_table():
    """The report recomputes the check-vs-transfer rows from the run's own evaluation metrics (the table in the
    committed reports/ladder.md is of the results of its time): each row's test error and difference in the
    committed report equal what the committed metrics give now."""
    report_md = ROOT / "reports" / "report" / "report.md"
    t = ladder.transfer(ROOT, config.section("check_images", PARAMS), config.section("check_audio", PARAMS))
    if not t["rows"] or not report_md.is_file():
        pytest.skip("no committed evaluation results or report")
    text = report_md.read_text()
    section = text.split("Did a FAIL predict worse transfer?")[1]
    pct = lambda v: "n/a" if v is None else f"{100 * v:.1f}"  # noqa: E731
    for r in t["rows"]:
        d = r["difference"]
        cells = (f"| {pct(r['error'])} ({pct(r['error_low'])}-{pct(r['error_high'])}) | "
                 f"{'n/a' if d is None else f'{100 * d:+.1f}'} ({pct(r['difference_low'])} to {pct(r['difference_high'])}) |")
        assert f"| {r['scenario']} | {r['set']} |" in section and cells in section, (r["scenario"], r["set"], cells)
    assert ladder.transfer_sentence(t) in section


def test_transfer_names_a_corrupt_metrics_file(tmp_path):
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "evaluate_images.json").write_text("{bad")
    with pytest.raises(ShiftlabError, match=r"^metrics/evaluate_images\.json: not valid JSON") as e:
        ladder.transfer(tmp_path)
    assert "\n" not in str(e.value)


def test_transfer_sentence_states_a_miss():
    rows = [{"verdict": "fail", "transfer": "no clear difference"}, {"verdict": "pass", "transfer": "better"}]
    t = {"rows": rows, "fail": 1, "fail_worse": 0, "fail_better": 0, "pass": 1, "pass_worse": 0, "pass_better": 1}
    s = ladder.transfer_sentence(t)
    assert "Of 1 set(s) the check FAILs, 0 transferred worse" in s and "did not predict worse transfer" in s


def test_old_count_gates_are_gone_from_the_defaults():
    g = idv.check_cfg(config.section("check_images", PARAMS))["gates"]
    assert "distinct_kernels" not in g and "kernel_vendi" not in g
    assert g["kernel_effective_share"]["min"] == 0.5 and g["kernel_vendi_ratio"]["min"] == 0.75
    a = adv.check_cfg(config.section("check_audio", PARAMS))["gates"]
    assert "n_sources" not in a and "vendi_sources" not in a
    assert a["effective_sources_by_use"]["action"] == "fail"
