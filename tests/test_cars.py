"""Virtual cars (shiftlab.mixing.cars): records, sampling, rendering physics, determinism."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from shiftlab.errors import ShiftlabError
from shiftlab.mixing import cars

SR = 16000


def quiet_car(**kw) -> cars.Car:
    """A car with only the engine audible, one gear, constant speed: a clean test signal."""
    base = dict(
        cylinders=4, idle_rpm=800.0, redline_rpm=6000.0, shift_rpm=5000.0, gears=(30.0,), speed_kmh=(60.0, 60.0),
        accel=0.0, orders=(1.0, 0.3), half_order=0.0, roughness=0.0, engine_db=0.0, road_db=-120.0, wind_db=-120.0,
        bump_db=-120.0, road_cutoff_hz=500.0, wind_hz=1000.0, cabin=(), cabin_lowpass_hz=6000.0, bump_rate=0.0,
        bump_hz=20.0, bump_q=2.0,
    )
    base.update(kw)
    return cars.Car(**base)


def spectrum(x):
    X = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
    return np.fft.rfftfreq(len(x), 1 / SR), X


def test_record_json_round_trip():
    for seed in range(5):
        car = cars.sample_car(seed)
        back = cars.from_record(json.loads(car.to_json()))
        assert back == car
        assert cars.from_record(car.to_json()) == car
        assert json.loads(car.to_json())["kind"] == "car"


def test_sample_car_is_a_function_of_the_seed():
    # the same car after disturbing the global RNGs, and in a fresh process with another hash seed
    np.random.seed(1)
    car = cars.sample_car(3)
    np.random.seed(2)
    np.random.random(5)
    assert cars.sample_car(3) == car
    code = ("import random, numpy as np; random.seed(7); np.random.seed(7); "
            "from shiftlab.mixing import cars; print(cars.sample_car(3).to_json())")
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONHASHSEED="4321"),
                         capture_output=True, text=True, check=True).stdout
    assert cars.from_record(out.strip()) == car
    assert cars.sample_car(3) != cars.sample_car(4)
    g = np.random.default_rng(3)
    assert cars.sample_car(g) == cars.sample_car(3)


def test_sample_car_respects_ranges():
    ranges = {"cylinders": [6], "n_gears": [5, 5], "idle_rpm": [700, 700], "n_resonances": [3, 3]}
    for s in range(10):
        car = cars.sample_car(s, ranges)
        assert car.cylinders == 6 and len(car.gears) == 5 and car.idle_rpm == 700.0 and len(car.cabin) == 3
        assert all(a > b for a, b in zip(car.gears, car.gears[1:]))
        assert car.idle_rpm <= car.shift_rpm <= car.redline_rpm
        assert max(car.orders) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "ranges, needle",
    [
        ({"idle_rmp": [600, 900]}, "cars.idle_rmp: unknown car parameter (did you mean idle_rpm?)"),
        ({"accel": [5, 1]}, "cars.accel: range [5, 1] has lo > hi"),
        ({"cylinders": []}, "cars.cylinders"),
        ({"n_gears": [0, 3]}, "cars.n_gears"),
        ({"wind_hz_log": [0, 100]}, "cars.wind_hz_log"),
        ({"roughness": "a lot"}, "cars.roughness"),
    ],
)
def test_bad_ranges_are_one_line_errors(ranges, needle):
    with pytest.raises(ShiftlabError) as e:
        cars.sample_car(0, ranges)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_bad_records_are_one_line_errors():
    rec = cars.sample_car(0).to_record()
    with pytest.raises(ShiftlabError, match="unknown key"):
        cars.from_record({**rec, "turbo": 1})
    with pytest.raises(ShiftlabError, match="strictly decreasing"):
        cars.from_record({**rec, "gears": [10.0, 20.0]})
    with pytest.raises(ShiftlabError, match="redline_rpm"):
        cars.from_record({**rec, "redline_rpm": rec["idle_rpm"] - 1})
    with pytest.raises(ShiftlabError, match="kind"):
        cars.from_record({**rec, "kind": "plane"})


def test_render_is_deterministic_float32_finite_and_normalised():
    car = cars.sample_car(11)
    x = cars.render(car, 1.5, SR, 7)
    assert x.dtype == np.float32 and x.shape == (int(1.5 * SR),)
    assert np.isfinite(x).all()
    assert np.array_equal(x, cars.render(car, 1.5, SR, 7))
    assert np.array_equal(x, cars.render(car.to_record(), 1.5, SR, 7))  # a record works too
    assert not np.array_equal(x, cars.render(car, 1.5, SR, 8))  # another drive
    rms_db = 10 * np.log10(np.mean(x.astype(np.float64) ** 2))
    peak = np.abs(x).max()
    assert peak <= cars.PEAK_LIMIT + 1e-6
    if peak < cars.PEAK_LIMIT - 1e-3:  # the peak guard did not act
        assert rms_db == pytest.approx(cars.RMS_DBFS, abs=0.01)


def test_bad_render_arguments():
    car = cars.sample_car(0)
    for kw, needle in (({"seconds": 0}, "seconds"), ({"sr": 100}, "sampling rate"), ({"seed": -1}, "seed")):
        args = {"seconds": 1.0, "sr": SR, "seed": 0, **kw}
        with pytest.raises(ShiftlabError, match=needle):
            cars.render(car, args["seconds"], args["sr"], args["seed"])


def test_engine_fires_at_rpm_times_cylinders():
    # one gear of 30 rpm per km/h at a constant 60 km/h -> 1,800 rpm; 4 cylinders fire at 1800/60*2 = 60 Hz
    f, X = spectrum(cars.render(quiet_car(), 2.0, SR, 0))
    assert f[X.argmax()] == pytest.approx(60.0, abs=1.0)
    f, X = spectrum(cars.render(quiet_car(cylinders=6), 2.0, SR, 0))
    assert f[X.argmax()] == pytest.approx(90.0, abs=1.0)
    # below idle speed the engine idles: 1 km/h * 30 = 30 rpm -> clipped to idle 800 rpm -> 26.7 Hz
    f, X = spectrum(cars.render(quiet_car(speed_kmh=(1.0, 1.0)), 2.0, SR, 0))
    assert f[X.argmax()] == pytest.approx(800 / 60 * 2, abs=1.0)


def test_gears_shift_the_rpm_down():
    # two gears (60, 20 rpm per km/h), shift at 3000 rpm: at 80 km/h first gear would be 4,800 rpm,
    # so the car is in second: 1,600 rpm -> 53.3 Hz for 4 cylinders
    f, X = spectrum(cars.render(quiet_car(gears=(60.0, 20.0), shift_rpm=3000.0, speed_kmh=(80.0, 80.0)), 2.0, SR, 0))
    assert f[X.argmax()] == pytest.approx(1600 / 60 * 2, abs=1.0)


def test_wind_rises_with_speed():
    def hf_share(v):
        f, X = spectrum(cars.render(quiet_car(speed_kmh=(v, v), wind_db=0.0, wind_hz=2000.0), 2.0, SR, 0))
        return X[f > 500].sum() / X.sum()

    slow, fast = hf_share(20.0), hf_share(120.0)
    assert slow < 0.05 < 0.5 < fast


def test_bumps_are_transients():
    car = quiet_car(engine_db=-40.0, bump_db=0.0, bump_rate=2.0, bump_hz=40.0, bump_q=3.0)
    x = cars.render(car, 4.0, SR, 1).astype(np.float64)
    crest = np.abs(x).max() / np.sqrt(np.mean(x**2))
    assert crest > 5.0  # impulsive, unlike the steady engine tone (crest ~1.4-2)
    steady = cars.render(quiet_car(), 4.0, SR, 1).astype(np.float64)
    assert np.abs(steady).max() / np.sqrt(np.mean(steady**2)) < 3.0


def test_different_cars_differ_spectrally():
    import torch
    import torchaudio

    mel = torchaudio.transforms.MelSpectrogram(SR, n_fft=512, hop_length=256, n_mels=40)

    def feat(x):
        with torch.no_grad():
            return 10 * mel(torch.from_numpy(x)).clamp_min(1e-10).log10().mean(-1).numpy()

    n = 6
    fleet = [cars.sample_car(i) for i in range(n)]
    a = np.array([feat(cars.render(c, 1.5, SR, 100 + i)) for i, c in enumerate(fleet)])
    b = np.array([feat(cars.render(c, 1.5, SR, 200 + i)) for i, c in enumerate(fleet)])
    d = np.sqrt(((a[:, None] - b[None]) ** 2).mean(-1))  # dB RMS distance of mean log-mel spectra
    within = np.diag(d).mean()
    between = d[~np.eye(n, dtype=bool)].mean()
    assert between > 1.5 * within  # another car is further away than another drive of the same car


def test_cabin_resonance_boosts_its_band():
    flat = quiet_car(road_db=0.0, engine_db=-60.0)
    boosted = dataclasses.replace(flat, cabin=((1000.0, 12.0, 2.0),))
    f, X0 = spectrum(cars.render(flat, 2.0, SR, 3))
    _, X1 = spectrum(cars.render(boosted, 2.0, SR, 3))
    band = (f > 900) & (f < 1100)
    low = f < 300
    assert (X1[band].sum() / X1[low].sum()) > 5 * (X0[band].sum() / X0[low].sum())


def test_plot_spectrograms(tmp_path):
    out = cars.plot_spectrograms([cars.sample_car(0), cars.sample_car(1)], tmp_path / "cars.png", seconds=1.0)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    with pytest.raises(ShiftlabError, match=r"^plot_spectrograms: no cars given$"):
        cars.plot_spectrograms([], tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()
