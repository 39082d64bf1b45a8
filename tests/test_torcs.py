"""Real car recordings (issue 13, item 1): the TORCS noise source, RPM-driven loops, the torcs
bank source and the target's refusal of a bank that shares a recording or car with it.

Most tests use a small fake TORCS folder (synthetic WAVs under TORCS names, plus an unreadable
``locked.wav``), so they run without torcs-data; one checks the real package when installed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from shiftlab import config, store
from shiftlab.datasets import audio, noise
from shiftlab.errors import ShiftlabError
from shiftlab.mixing import bank, rpm, target

SR = 16000
TORCS = "/usr/share/games/torcs/data/sound"


def _engine(sr: int, seconds: float, f0: float, seed: int) -> np.ndarray:
    """An engine-like loop: harmonics of f0 with a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    x = sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 6.28)) / k for k in range(1, 8))
    return (0.2 * x + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.fixture(scope="module")
def torcs_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("torcs_sound")
    for i, (stem, sr, f0) in enumerate([("f360", 44100, 90.0), ("nsx", 22050, 70.0), ("viper2", 44100, 60.0),
                                        ("cleanviper", 44100, 65.0), ("gt40", 32000, 80.0)]):
        sf.write(d / f"{stem}.wav", _engine(sr, 0.8 + 0.1 * i, f0, i), sr, subtype="PCM_16")
    rng = np.random.default_rng(9)
    sf.write(d / "road-ride.wav", (0.1 * rng.standard_normal(44100)).astype(np.float32), 44100, subtype="PCM_16")
    sf.write(d / "skid_tyres.wav", (0.1 * rng.standard_normal(20000)).astype(np.float32), 40000, subtype="PCM_16")
    sf.write(d / "crash1.wav", (0.1 * rng.standard_normal(4000)).astype(np.float32), 44100, subtype="PCM_16")
    (d / "locked.wav").write_bytes(rng.integers(0, 255, 5000, dtype=np.uint8).tobytes())  # raw, no header
    return d


def _noise_cfg(torcs_dir, recordings, targets):
    cfg = config.defaults(config.SCHEMA["prepare_noise"])  # this section only (all of them import every stage)
    cfg.update(recordings=list(recordings), target_recordings=list(targets), torcs_dir=str(torcs_dir))
    return cfg


#: the target mixing mechanics on the given target rows with the raw held-out loops (no TTS, no drives)
RAW = {"max_source_share": 1.0, "speech": "real", "torcs_drives": 0}


def _warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if "warning" in line]


# --------------------------------------------------------------------------- the TORCS loader


def test_torcs_catalogue_kinds_cars_and_locked_warning(torcs_dir, capsys):
    cat = noise.torcs_catalogue(torcs_dir, ["torcs/*"])
    assert sorted(cat) == ["torcs/cleanviper", "torcs/f360", "torcs/gt40", "torcs/nsx", "torcs/road-ride",
                           "torcs/skid_tyres", "torcs/viper2"]  # no crash1 (one-shot), no locked (unreadable)
    assert cat["torcs/f360"]["kind"] == "engine" and cat["torcs/f360"]["group"] == "torcs/f360"
    assert cat["torcs/viper2"]["group"] == cat["torcs/cleanviper"]["group"] == "torcs/viper"
    assert cat["torcs/road-ride"]["kind"] == "road" and cat["torcs/road-ride"]["car"] is None
    assert cat["torcs/skid_tyres"]["kind"] == "skid"
    warn = _warnings(capsys.readouterr().err)
    assert len(warn) == 1 and "torcs/locked" in warn[0] and "locked.wav" in warn[0]
    engines = noise.torcs_catalogue(torcs_dir, [], kinds=("engine",))
    assert all(d["kind"] == "engine" for d in engines.values()) and len(engines) == 5
    assert _warnings(capsys.readouterr().err) == []  # locked.wav is not an engine: not even opened


def test_torcs_locked_requested_by_name_is_one_line_error(torcs_dir):
    with pytest.raises(ShiftlabError, match=r"torcs/locked: .*locked\.wav: cannot read audio") as e:
        noise.prepare(_noise_cfg(torcs_dir, ["torcs/locked", "torcs/f360"], ["torcs/f360"]))
    assert "\n" not in str(e.value)


def test_torcs_missing_dir_names_the_package(tmp_path):
    with pytest.raises(ShiftlabError, match="torcs-data"):
        noise.prepare(_noise_cfg(tmp_path / "nope", ["torcs/*"], ["torcs/f360"]))


def test_prepare_noise_with_torcs(torcs_dir, capsys):
    ds = noise.prepare(_noise_cfg(torcs_dir, ["torcs/*"], ["torcs/f360", "torcs/road-ride"]))
    rows = {r["id"]: r for r in ds}
    names = ds.features["label"].names
    assert "torcs/locked" not in rows and "torcs/crash1" not in rows
    assert rows["torcs/f360"]["domain"] == "target" and rows["torcs/nsx"]["domain"] == "source"
    assert rows["torcs/viper2"]["group"] == "torcs/viper" and names[rows["torcs/viper2"]["label"]] == "engine"
    rec = json.loads(rows["torcs/nsx"]["recipe"])
    assert rec["source"] == "torcs" and rec["car"] == "nsx" and rec["sampling_rate"] == 22050
    assert all(r["sampling_rate"] == SR for r in rows.values())
    assert len(_warnings(capsys.readouterr().err)) == 1  # locked.wav, once
    # a car is held out whole or not at all
    with pytest.raises(ShiftlabError, match="TORCS car viper but not its other recording"):
        noise.prepare(_noise_cfg(torcs_dir, ["torcs/*"], ["torcs/viper2"]))


@pytest.mark.skipif(not os.path.isdir("/usr/share/games/dustracing2d/sounds"), reason="dustracing2d-data not installed")
def test_other_patterns_never_open_torcs(tmp_path):
    """Only a pattern that can match torcs/... opens torcs_dir: the default noise does not depend on it."""
    cfg = {**config.defaults(config.SCHEMA["prepare_noise"]), "torcs_dir": str(tmp_path / "missing")}
    cat = noise.catalogue(cfg, ["dustracing2d/*"])
    assert cat and not any(k.startswith("torcs/") for k in cat)
    with pytest.raises(ShiftlabError, match="torcs-data"):
        noise.catalogue(cfg, ["torcs/f*"])


@pytest.mark.debian_data
@pytest.mark.skipif(not os.path.isdir(TORCS), reason="torcs-data not installed")
def test_real_torcs_recordings(capsys):
    cat = noise.torcs_catalogue(TORCS, ["torcs/*"])
    engines = {k: d for k, d in cat.items() if d["kind"] == "engine"}
    assert len(engines) == 26 and len({d["car"] for d in engines.values()}) == 22
    assert {"torcs/f360", "torcs/nsx", "torcs/gt40", "torcs/porsche_engine", "torcs/renault-v10"} <= set(engines)
    assert {"torcs/road-ride", "torcs/skid_tyres"} <= set(cat) and "torcs/locked" not in cat
    warn = _warnings(capsys.readouterr().err)
    assert len(warn) == 1 and "locked.wav" in warn[0]


# --------------------------------------------------------------------------- the RPM-driven loop


def test_rpm_recipe_and_render_are_deterministic():
    r = rpm.sample_recipe(3, 6.0, SR, recording="torcs/f360", road="torcs/road-ride")
    assert r == rpm.sample_recipe(3, 6.0, SR, recording="torcs/f360", road="torcs/road-ride")
    assert r != rpm.sample_recipe(4, 6.0, SR, recording="torcs/f360", road="torcs/road-ride")
    back = json.loads(json.dumps(r))
    assert back == r and back["model"] == rpm.MODEL and back["phases"][0]["kind"] == "accelerate"
    loop, road = _engine(44100, 1.3, 85.0, 1), np.random.default_rng(2).standard_normal(30000).astype(np.float32)
    y = rpm.render(r, loop, 44100, road, 44100)
    assert y.dtype == np.float32 and len(y) == 6 * SR and np.isfinite(y).all()
    assert 20 * np.log10(np.sqrt(np.mean(y.astype(np.float64) ** 2))) == pytest.approx(rpm.RMS_DBFS, abs=0.01)
    levels = rpm.LoopLevels(loop, 44100, SR)  # shared, cached levels give the same bytes
    rpm.render(rpm.sample_recipe(9, 2.0, SR), levels)
    assert rpm.render(back, levels, road=rpm.LoopLevels(road, 44100, SR)).tobytes() == y.tobytes()
    assert rpm.render(back, loop, 44100, road, 44100).tobytes() == y.tobytes()
    with pytest.raises(ShiftlabError, match="road"):
        rpm.render(r, loop, 44100)


def test_rpm_trajectory_accelerates_through_gears_with_shift_drops():
    fixed = {"n_gears": [5, 5], "upshift_fraction": [0.8, 0.8], "accel_kmh_s": [14.0, 14.0],
             "throttle": [1.0, 1.0], "start_kmh": [0.0, 0.0], "speed_kmh": [150.0, 160.0]}
    r = rpm.sample_recipe(0, 12.0, SR, ranges=fixed)
    assert r["phases"][0]["kind"] == "accelerate" and r["start_kmh"] == 0.0
    r = {**r, "seconds": 20.0, "phases": [{"kind": "accelerate", "to_kmh": 160.0, "throttle": 1.0}]}
    tr = rpm.trajectory(r)
    assert (tr["rpm"] >= r["idle_rpm"] - 1e-9).all() and (tr["rpm"] <= r["redline_rpm"] + 1e-9).all()
    g = tr["gear"]
    assert (np.diff(g) >= 0).all() and g[-1] >= 3  # up through the gears, never down, while accelerating
    ups = np.flatnonzero(np.diff(g) > 0)
    for i in ups:  # each upshift: the RPM drops from about upshift_rpm
        start = i - int(round(r["shift_seconds"] * rpm.CONTROL_HZ))
        assert tr["rpm"][start] == pytest.approx(r["upshift_rpm"], rel=0.02)
        assert tr["rpm"][i + 1] < 0.9 * tr["rpm"][start]
    assert (np.diff(tr["speed"]) >= -rpm.COAST_KMH_S / rpm.CONTROL_HZ - 1e-9).all()


def test_rpm_trajectory_decelerates_with_downshifts_and_cruises():
    kinds = set()
    for seed in range(30):
        r = rpm.sample_recipe(seed, 30.0, SR)
        kinds |= {p["kind"] for p in r["phases"]}
        tr = rpm.trajectory(r)
        assert tr["phase"].max() + 1 >= len(r["phases"])  # the recipe lists exactly the phases the drive reaches
        down = np.flatnonzero(np.diff(tr["gear"]) < 0)
        for i in down:
            ph = r["phases"][min(tr["phase"][i], len(r["phases"]) - 1)]
            assert ph["kind"] in ("decelerate", "cruise")
    assert kinds == {"accelerate", "cruise", "decelerate"}


def _const_recipe(rpm_value: float, seconds: float = 1.0) -> dict:
    r = rpm.sample_recipe(0, seconds, SR)
    r.update(gears=[30.0], start_kmh=rpm_value / 30.0, idle_rpm=500.0, redline_rpm=9000.0, ref_rpm=3000.0,
             upshift_rpm=8900.0, downshift_rpm=600.0, cruise_rpm=700.0, loop_start=0.0, road=None,
             phases=[{"kind": "cruise", "seconds": 100.0, "slope_kmh_s": 0.0}])
    return r


def _peak_hz(y: np.ndarray) -> float:
    Y = np.abs(np.fft.rfft(y.astype(np.float64) * np.hanning(len(y))))
    return float(np.fft.rfftfreq(len(y), 1 / SR)[int(np.argmax(Y))])


def test_rpm_pitch_follows_rpm_without_aliasing():
    sr_in = 44100
    t = np.arange(sr_in) / sr_in  # 1 s: 200 Hz and 3 kHz are exactly periodic in it
    loop = (np.sin(2 * np.pi * 200 * t) + 0.5 * np.sin(2 * np.pi * 3000 * t)).astype(np.float32)
    y = rpm.render(_const_recipe(4500.0), loop, sr_in)  # rate 1.5: 300 Hz and 4.5 kHz
    assert _peak_hz(y) == pytest.approx(300.0, abs=2.0)
    Y = np.abs(np.fft.rfft(y.astype(np.float64) * np.hanning(len(y)))) ** 2
    f = np.fft.rfftfreq(len(y), 1 / SR)
    assert Y[np.abs(f - 4500) < 5].sum() > 0.1 * Y[np.abs(f - 300) < 5].sum()
    y = rpm.render(_const_recipe(9000.0), loop, sr_in)  # rate 3: 600 Hz, and 9 kHz is above Nyquist: removed
    Y = np.abs(np.fft.rfft(y.astype(np.float64) * np.hanning(len(y)))) ** 2
    assert _peak_hz(y) == pytest.approx(600.0, abs=2.0)
    alias = Y[np.abs(f - 7000) < 50].sum()  # 9 kHz would fold to 7 kHz
    assert alias < 1e-6 * Y[np.abs(f - 600) < 5].sum()


def test_seamless_loop_has_no_jump():
    x = np.linspace(-1.0, 1.0, 1000)  # a ramp: its plain loop jumps by 2
    y = rpm.seamless(x, 100)
    assert len(y) == 900
    assert abs(y[0] - y[-1]) < 0.05 and np.abs(np.diff(y)).max() < 0.05


def _section(tmp_path, name, value):
    p = tmp_path / "params.yaml"
    p.write_text(json.dumps({name: value}))
    return config.section(name, p)


def test_drive_ranges_are_validated(tmp_path):
    with pytest.raises(ShiftlabError, match=r"drive\.bogus: unknown drive parameter"):
        rpm.check_ranges({"bogus": 1})
    with pytest.raises(ShiftlabError, match=r"drive\.throttle: must lie in \[0, 1\]"):
        rpm.check_ranges({"throttle": [0.5, 2.0]})
    with pytest.raises(ShiftlabError, match=r"synth_mix\.bank\.trajectories_per_car: 0 is out of range \[1, inf\]"):
        _section(tmp_path, "synth_mix", {"bank": {"trajectories_per_car": 0}})
    with pytest.raises(ShiftlabError, match=r"synth_mix\.bank\.drive\.idel_rpm: unknown .*did you mean idle_rpm"):
        _section(tmp_path, "synth_mix", {"bank": {"drive": {"idel_rpm": [700, 800]}}})
    with pytest.raises(ShiftlabError, match=r"synth_mix_narrow\.bank\.torcs_road: must be a TORCS recording id"):
        _section(tmp_path, "synth_mix_narrow", {"bank": {"torcs_road": "road-ride"}})
    with pytest.raises(ShiftlabError, match=r"synth_mix\.bank\.sources"):
        _section(tmp_path, "synth_mix", {"bank": {"sources": ["torcs", "tocrs"]}})
    with pytest.raises(ShiftlabError, match=r"prepare_noise\.torcs_dir: must be a string"):
        _section(tmp_path, "prepare_noise", {"torcs_dir": 3})
    got = _section(tmp_path, "synth_mix", {"bank": {"sources": ["torcs"], "drive": {"ref_rpm": 2500}}})["bank"]
    assert got["sources"] == ["torcs"] and got["drive"] == {"ref_rpm": 2500} and got["torcs_cars"] == ["*"]


# --------------------------------------------------------------------------- the torcs bank source


def test_torcs_bank_source(torcs_dir):
    cfg = {"sources": ["torcs"], "torcs_dir": str(torcs_dir), "torcs_cars": ["*"], "trajectories_per_car": 2,
           "seconds_per_car": 1.5, "torcs_road": "torcs/road-ride"}
    b = bank.build(cfg, sampling_rate=SR, seed=5, workers=1)
    ids = list(b["id"])
    assert ids == [f"torcs/{c}/drive{j}" for c in ("f360", "gt40", "nsx", "viper") for j in range(2)]
    assert list(b["group"]) == [f"torcs/{c}" for c in ("f360", "gt40", "nsx", "viper") for _ in range(2)]
    assert set(b["origin"]) == {"real"} and b.features["label"].names == ["torcs_car"]
    rec = json.loads(b[ids.index("torcs/viper/drive1")]["recipe"])
    assert rec["recording"] == "torcs/viper2" and rec["drive"]["recording"] == "torcs/viper2"  # loops taken in turn
    assert json.loads(b[ids.index("torcs/viper/drive0")]["recipe"])["recording"] == "torcs/cleanviper"
    # re-render one clip from its recipe alone
    x, sr = audio.read_audio(rec["file"])
    rx, rsr = audio.read_audio(rec["road_file"])
    again = rpm.render(rec["drive"], x, sr, rx, rsr)
    assert again.tobytes() == np.asarray(b[ids.index("torcs/viper/drive1")]["audio"], np.float32).tobytes()
    # the same bank with another thread count, and a car's drives do not depend on the other cars
    assert bank.digest(bank.build(cfg, sampling_rate=SR, seed=5, workers=2)) == bank.digest(b)
    only = bank.build({**cfg, "torcs_cars": ["nsx"]}, sampling_rate=SR, seed=5, workers=1)
    assert list(only["audio"]) == [b[ids.index(i)]["audio"] for i in only["id"]]


def test_torcs_bank_excludes_held_out_cars(torcs_dir):
    nds = noise.prepare(_noise_cfg(torcs_dir, ["torcs/*"], ["torcs/f360", "torcs/viper2", "torcs/cleanviper"]))
    cfg = {"sources": ["torcs"], "torcs_dir": str(torcs_dir), "torcs_cars": ["*"], "trajectories_per_car": 1,
           "seconds_per_car": 1.0}
    b = bank.build(cfg, noise=nds, sampling_rate=SR, workers=1)
    assert sorted(set(b["group"])) == ["torcs/gt40", "torcs/nsx"]
    nm = bank.names(cfg, nds)
    assert nm.groups == {"torcs/gt40", "torcs/nsx"} and nm.recordings == {"torcs/gt40", "torcs/nsx"}
    with pytest.raises(ShiftlabError, match=r"torcs_cars: pattern 'f360' matches no TORCS car \(f360 is held out"):
        bank.build({**cfg, "torcs_cars": ["f360"]}, noise=nds, sampling_rate=SR)
    with pytest.raises(ShiftlabError, match=r"torcs_road: torcs/road-ride is held out"):
        nd2 = noise.prepare(_noise_cfg(torcs_dir, ["torcs/*"], ["torcs/road-ride"]))
        bank.names({**cfg, "torcs_road": "torcs/road-ride"}, nd2)


# --------------------------------------------------------------------------- the overlap refusal


def _speech(n_target: int = 6):
    rng = np.random.default_rng(0)
    rows = [dict(id=f"s{i:02d}", audio=(0.1 * rng.standard_normal(SR)).astype(np.float32), sampling_rate=SR,
                 label="a", domain="target" if i < n_target else "source", group=f"g{i % 2}", recipe="{}")
            for i in range(n_target + 2)]
    return audio.build_dataset(rows, ["a"])


def test_prepare_target_refuses_a_bank_that_shares_a_car(torcs_dir):
    nds = noise.prepare(_noise_cfg(torcs_dir, ["torcs/*"], ["torcs/f360", "torcs/viper2", "torcs/cleanviper"]))
    sp = _speech()
    # a bank resolved without the noise dataset does not know what is held out: it drives f360
    nm = bank.names({"sources": ["torcs"], "torcs_dir": str(torcs_dir), "torcs_cars": ["f*"]})
    with pytest.raises(ShiftlabError, match=r"target_mix: target noise torcs/f360 is also in the synth_mix bank") as e:
        target.make_target(sp, nds, RAW, bank_names={"synth_mix": nm})
    assert "\n" not in str(e.value)
    # same car, another recording of it (the group is the car)
    nm = bank.Names(frozenset({"torcs/cleanviper"}), frozenset({"torcs/viper"}))
    nm2 = bank.Names(frozenset({"torcs/other_take"}), frozenset({"torcs/viper"}))
    with pytest.raises(ShiftlabError, match=r"also in the synth_mix_narrow bank|torcs/viper, which"):
        target.make_target(sp, nds, RAW, bank_names={"synth_mix_narrow": nm})
    with pytest.raises(ShiftlabError, match=r"target noise torcs/\w+ comes from torcs/viper, which the x bank"):
        target.make_target(sp, nds, RAW, bank_names={"x": nm2})
    # resolved with the noise dataset, the bank leaves the held-out cars alone: accepted, same rows as without
    cfgs = {"synth_mix": {"sources": ["torcs", "real"], "torcs_dir": str(torcs_dir), "recordings": ["torcs/*"]}}
    names = {s: bank.names(c, nds) for s, c in cfgs.items()}
    got = target.make_target(sp, nds, RAW, bank_names=names)
    ref = target.make_target(sp, nds, RAW)
    assert list(got["audio"]) == list(ref["audio"]) and list(got["recipe"]) == list(ref["recipe"])


def test_cli_prepare_target_refuses_overlap(torcs_dir, tmp_path, monkeypatch, capsys):
    from shiftlab import cli

    monkeypatch.chdir(tmp_path)
    store.save(_speech(), tmp_path / "data/prepared/speech")
    store.save(noise.prepare(_noise_cfg(torcs_dir, ["torcs/*"], ["torcs/nsx"])), tmp_path / "data/prepared/noise")
    capsys.readouterr()
    bank_cfg = {"sources": ["real", "torcs"], "recordings": ["torcs/gt40"], "torcs_dir": str(torcs_dir),
                "torcs_cars": ["*"]}
    params = {"target_mix": RAW, "synth_mix": {"bank": bank_cfg},
              "synth_mix_narrow": {"bank": {"sources": ["real"], "recordings": ["torcs/nsx"]}}}
    (tmp_path / "params.yaml").write_text(json.dumps(params))
    assert cli.main(["prepare", "target"]) == 2  # the narrow bank names the held-out nsx: refused
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "synth_mix_narrow.bank.recordings: pattern 'torcs/nsx' matches no source-domain" in err[0]
    params["synth_mix_narrow"]["bank"]["recordings"] = ["torcs/gt40"]
    (tmp_path / "params.yaml").write_text(json.dumps(params))
    assert cli.main(["prepare", "target"]) == 0  # disjoint by car: accepted
    out = store.load(tmp_path / "data/prepared/speech_incar")
    mixed = [json.loads(r)["target_mix"]["noise"] for r, d in zip(out["recipe"], out["domain"]) if d == "target"]
    assert set(mixed) == {"torcs/nsx"}
