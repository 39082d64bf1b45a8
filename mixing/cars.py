"""Virtual cars: unlimited, seeded, physically motivated car-interior noise.

The real vehicle recordings that install offline add up to about half a minute: exactly
Machine Learning Yearning's trap of "1 hour of car noise under 1,000 hours of speech"
(a model learns those few clips). A *virtual car* is a small frozen parameter record
(:class:`Car`) drawn by :func:`sample_car`; :func:`render` turns a car plus a drive seed
into any number of seconds of cabin noise. Many cars give many distinct noise sources;
one car driven with another seed is the same car on another drive.

What :func:`render` synthesises (all in float64, output float32):

1. **Drive**: a vehicle speed ``v(t)`` (km/h): a bounded random walk with control
   points every :data:`CONTROL_SECONDS` (steps ~ N(0, ``accel`` * step), reflected into
   ``car.speed_kmh``), linearly interpolated and smoothed by a
   :data:`SMOOTH_SECONDS` moving average. Engine load = the positive part of the
   acceleration, scaled to [0, 1].
2. **Engine RPM trajectory**: the car has ``len(car.gears)`` gears, each an
   "rpm per km/h" ratio (first gear largest). At every sample the gear is the lowest
   whose rpm stays at or below ``car.shift_rpm`` (the top gear when none does);
   ``rpm = clip(v * ratio, idle_rpm, redline_rpm)``, smoothed by a
   :data:`CLUTCH_SECONDS` moving average (gear changes take a moment).
3. **Engine harmonics**: firing frequency ``f = rpm / 60 * cylinders / 2``; the engine
   is ``sum_k orders[k-1] * sin(k * phi + theta_k)`` over engine orders ``k = 1..H``
   with ``phi = 2 pi cumsum(f) / sr`` (plus a ``half_order`` component at ``phi / 2``,
   uneven firing / camshaft), each order silenced where ``k f`` exceeds 0.45 ``sr``
   (no aliasing). Its amplitude follows ``(0.6 + 0.4 load) * (1 + roughness * m(t))``
   with ``m`` a slow (lowpassed, unit-RMS) noise: combustion irregularity.
4. **Tyre / road noise**: white noise through two 2nd-order lowpass biquads at
   ``road_cutoff_hz``; amplitude proportional to ``(v / 100) ** 1.5``.
5. **Wind noise**: white noise through a bandpass biquad at ``wind_hz`` (Q 0.6), slowly
   modulated by gusts; amplitude proportional to ``(v / 100) ** 2.5`` (wind power grows
   with about the fifth power of speed), so it is absent at walking pace.
6. **Bumps**: a Poisson train of impulses (rate ``bump_rate * v / 100`` per second,
   log-normal amplitudes) through a damped resonance (bandpass biquad at ``bump_hz``,
   quality ``bump_q``): suspension/body thumps.

Levels: the engine harmonics, the filtered road noise and the filtered wind noise are
each normalised to unit RMS *before* their envelopes (load, ``(v/100)**1.5``,
``(v/100)**2.5``), and a bump of amplitude 1 peaks at 1; the components are summed with
the car's levels ``engine_db``, ``road_db``, ``wind_db``, ``bump_db`` (dB). So at
100 km/h road and wind noise sit at their nominal levels, and a faster drive is
windier relative to the engine. The sum goes through the **cabin response**:
one peaking-EQ biquad per ``cabin`` resonance ``(freq_hz, gain_db, q)`` and a lowpass
biquad at ``cabin_lowpass_hz`` (the body's insulation). Filters are
``torchaudio.functional`` biquads (they clamp to [-1, 1], so the signal is scaled to a
small peak before each filter stage and the scale is removed afterwards; nothing is
ever clamped). Finally the clip is normalised to an RMS of :data:`RMS_DBFS` dBFS; if
that would put a peak above :data:`PEAK_LIMIT` the whole clip is scaled down to that
peak instead (documented, rare: a violent bump).

Determinism: every random number comes from ``numpy.random.default_rng(seed)`` in a fixed
order; the filters run on the CPU in float64. Same car + seconds + sr + seed ->
byte-identical output.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from shiftlab import paramschema
from shiftlab.errors import ShiftlabError

__all__ = [
    "Car",
    "DEFAULT_RANGES",
    "RMS_DBFS",
    "sample_car",
    "from_record",
    "render",
    "plot_spectrograms",
]

#: RMS level of a rendered clip, dBFS.
RMS_DBFS = -20.0
#: Largest absolute sample of a rendered clip.
PEAK_LIMIT = 0.99
#: Drive control-point spacing, seconds.
CONTROL_SECONDS = 0.5
#: Moving average smoothing the speed curve, seconds.
SMOOTH_SECONDS = 0.5
#: Moving average smoothing rpm jumps at gear changes, seconds.
CLUTCH_SECONDS = 0.08
#: Peak level a signal is scaled to before each biquad (torchaudio's biquads clamp to [-1, 1]).
_FILTER_PEAK = 1e-2
MAX_SECONDS = 3600.0


# --------------------------------------------------------------------------- the record


@dataclass(frozen=True)
class Car:
    """One virtual car: every field a plain number or a tuple of numbers (JSON-safe).

    Fields (units): ``cylinders`` (count), ``idle_rpm`` / ``redline_rpm`` / ``shift_rpm``
    (rev/min), ``gears`` (rpm per km/h per gear, first gear first, strictly decreasing),
    ``speed_kmh`` ((min, max) of the drive), ``accel`` (km/h per second, the drive's
    random-walk step scale), ``orders`` (linear amplitudes of engine orders 1..H),
    ``half_order`` (linear amplitude of the half order), ``roughness`` (0..1, combustion
    amplitude modulation), ``engine_db`` / ``road_db`` / ``wind_db`` / ``bump_db``
    (component levels, dB), ``road_cutoff_hz``, ``wind_hz``, ``cabin`` (tuple of
    ``(freq_hz, gain_db, q)`` resonances), ``cabin_lowpass_hz``, ``bump_rate`` (bumps per
    second at 100 km/h), ``bump_hz`` and ``bump_q`` (the bump resonance).
    """

    cylinders: int
    idle_rpm: float
    redline_rpm: float
    shift_rpm: float
    gears: tuple[float, ...]
    speed_kmh: tuple[float, float]
    accel: float
    orders: tuple[float, ...]
    half_order: float
    roughness: float
    engine_db: float
    road_db: float
    wind_db: float
    bump_db: float
    road_cutoff_hz: float
    wind_hz: float
    cabin: tuple[tuple[float, float, float], ...]
    cabin_lowpass_hz: float
    bump_rate: float
    bump_hz: float
    bump_q: float

    def __post_init__(self):
        _validate(self)

    def to_record(self) -> dict[str, Any]:
        """A plain dict (lists for tuples) with ``"kind": "car"``; ``from_record`` inverts it."""
        d = asdict(self)
        d["gears"] = list(self.gears)
        d["speed_kmh"] = list(self.speed_kmh)
        d["orders"] = list(self.orders)
        d["cabin"] = [list(r) for r in self.cabin]
        return {"kind": "car", **d}

    def to_json(self) -> str:
        return json.dumps(self.to_record(), sort_keys=True, separators=(",", ":"))


def _bad(name: str, msg: str) -> ShiftlabError:
    return ShiftlabError(f"car: '{name}' {msg}")


def _num(name, v, lo=None, hi=None, lo_open=False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise _bad(name, f"must be a number, got {v!r}")
    v = float(v)
    if not math.isfinite(v):
        raise _bad(name, f"must be finite, got {v!r}")
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise _bad(name, f"must be {'>' if lo_open else '>='} {lo:g}, got {v:g}")
    if hi is not None and v > hi:
        raise _bad(name, f"must be <= {hi:g}, got {v:g}")
    return v


def _validate(c: Car) -> None:
    if isinstance(c.cylinders, bool) or not isinstance(c.cylinders, (int, np.integer)) or not 1 <= c.cylinders <= 16:
        raise _bad("cylinders", f"must be an integer in [1, 16], got {c.cylinders!r}")
    idle = _num("idle_rpm", c.idle_rpm, 100.0)
    red = _num("redline_rpm", c.redline_rpm, idle, lo_open=True)
    _num("shift_rpm", c.shift_rpm, idle, red)
    if len(c.gears) < 1:
        raise _bad("gears", "needs at least one gear")
    g = [_num(f"gears[{i}]", x, 0.0, lo_open=True) for i, x in enumerate(c.gears)]
    if any(b >= a for a, b in zip(g, g[1:])):
        raise _bad("gears", f"must be strictly decreasing (first gear first), got {list(c.gears)}")
    if len(c.speed_kmh) != 2:
        raise _bad("speed_kmh", f"must be (min, max), got {c.speed_kmh!r}")
    lo = _num("speed_kmh[0]", c.speed_kmh[0], 0.0)
    _num("speed_kmh[1]", c.speed_kmh[1], lo)
    _num("accel", c.accel, 0.0)
    if len(c.orders) < 1:
        raise _bad("orders", "needs at least one engine order amplitude")
    for i, a in enumerate(c.orders):
        _num(f"orders[{i}]", a, 0.0)
    _num("half_order", c.half_order, 0.0)
    _num("roughness", c.roughness, 0.0, 1.0)
    for k in ("engine_db", "road_db", "wind_db", "bump_db"):
        _num(k, getattr(c, k), -120.0, 60.0)
    for k in ("road_cutoff_hz", "wind_hz", "cabin_lowpass_hz", "bump_hz"):
        _num(k, getattr(c, k), 1.0)
    for i, r in enumerate(c.cabin):
        if len(r) != 3:
            raise _bad(f"cabin[{i}]", f"must be (freq_hz, gain_db, q), got {r!r}")
        _num(f"cabin[{i}].freq_hz", r[0], 1.0)
        _num(f"cabin[{i}].gain_db", r[1], -40.0, 24.0)
        _num(f"cabin[{i}].q", r[2], 0.1, 50.0)
    _num("bump_rate", c.bump_rate, 0.0)
    _num("bump_q", c.bump_q, 0.1, 50.0)


def from_record(record: Mapping[str, Any]) -> Car:
    """Rebuild a :class:`Car` from :meth:`Car.to_record` output (or its JSON, parsed)."""
    if isinstance(record, (str, bytes)):
        record = json.loads(record)
    if not isinstance(record, Mapping):
        raise ShiftlabError(f"car record must be a mapping, got {type(record).__name__}")
    rec = dict(record)
    kind = rec.pop("kind", "car")
    if kind != "car":
        raise ShiftlabError(f"car record: kind is {kind!r}, expected 'car'")
    names = [f.name for f in fields(Car)]
    unknown = sorted(set(rec) - set(names))
    missing = [n for n in names if n not in rec]
    if unknown or missing:
        raise ShiftlabError(f"car record: unknown key(s) {unknown or 'none'}, missing key(s) {missing or 'none'}")
    try:
        rec["gears"] = tuple(float(x) for x in rec["gears"])
        rec["speed_kmh"] = tuple(float(x) for x in rec["speed_kmh"])
        rec["orders"] = tuple(float(x) for x in rec["orders"])
        rec["cabin"] = tuple(tuple(float(x) for x in r) for r in rec["cabin"])
    except (TypeError, ValueError) as e:
        raise ShiftlabError(f"car record: malformed list field ({e})") from None
    return Car(**rec)


# --------------------------------------------------------------------------- sampling

#: Parameter ranges of :func:`sample_car`. ``cylinders`` is a list of allowed counts (one
#: drawn uniformly); ``n_gears``, ``n_orders`` and ``n_resonances`` are integer ranges
#: ``[lo, hi]`` (inclusive); every other value is ``[lo, hi]`` (uniform) or a constant.
#: ``*_log`` ranges are drawn log-uniformly. See :func:`sample_car` for the derived fields.
DEFAULT_RANGES: dict[str, Any] = {
    "cylinders": [3, 4, 4, 5, 6, 8],  # 4 twice: the common case twice as likely
    "idle_rpm": [650.0, 950.0],
    "redline_rpm": [5000.0, 7500.0],
    "shift_fraction": [0.45, 0.8],  # shift_rpm = idle + fraction * (redline - idle)
    "n_gears": [4, 6],
    "top_gear_rpm_per_kmh": [18.0, 32.0],  # rpm at 1 km/h in top gear (100 km/h -> 1,800-3,200 rpm)
    "gear_spread": [3.0, 4.5],  # first-gear ratio / top-gear ratio (geometric steps)
    "speed_min_kmh": [0.0, 60.0],
    "speed_span_kmh": [20.0, 100.0],  # speed_kmh = (min, min + span)
    "accel": [1.0, 8.0],
    "n_orders": [4, 10],
    "order_decay": [0.15, 0.7],  # orders[k] = exp(-decay * k) * lognormal(0, order_spread)
    "order_spread": [0.2, 0.8],
    "half_order": [0.0, 0.5],
    "roughness": [0.0, 0.5],
    "engine_db": [-6.0, 6.0],
    "road_db": [-6.0, 6.0],
    "wind_db": [-12.0, 3.0],
    "bump_db": [-12.0, 0.0],
    "road_cutoff_hz_log": [150.0, 1500.0],
    "wind_hz_log": [300.0, 3000.0],
    "n_resonances": [2, 4],
    "resonance_hz_log": [60.0, 2500.0],
    "resonance_gain_db": [-6.0, 12.0],
    "resonance_q": [0.7, 4.0],
    "cabin_lowpass_hz_log": [1500.0, 6000.0],
    "bump_rate": [0.0, 2.0],
    "bump_hz_log": [8.0, 120.0],
    "bump_q": [1.0, 8.0],
}

_INT_KEYS = ("n_gears", "n_orders", "n_resonances")


def check_ranges(ranges: Mapping[str, Any] | None, where: str = "cars") -> dict[str, Any]:
    """Merge ``ranges`` over :data:`DEFAULT_RANGES` and validate it (:func:`shiftlab.paramschema.range_overrides`
    plus the car's own rules); errors name ``where.key``."""
    # *_log ranges are checked > 0 below (before the >= 0 of the plain ranges)
    signed = ("engine_db", "road_db", "wind_db", "bump_db", "resonance_gain_db") + tuple(
        k for k in DEFAULT_RANGES if k.endswith("_log"))
    out = paramschema.range_overrides(ranges, DEFAULT_RANGES, where, "car parameter", _INT_KEYS, signed,
                                      skip=("cylinders",), check_defaults=False)
    if ranges is None:
        return out
    cyl = out["cylinders"]
    if isinstance(cyl, (int, np.integer)) and not isinstance(cyl, bool):
        cyl = out["cylinders"] = [int(cyl)]
    if not isinstance(cyl, list) or not cyl or any(
        isinstance(c, bool) or not isinstance(c, (int, np.integer)) or not 1 <= c <= 16 for c in cyl
    ):
        raise ShiftlabError(f"{where}.cylinders: must be a non-empty list of integers in [1, 16], got {cyl!r}")
    for k in DEFAULT_RANGES:
        if k.endswith("_log") and out[k][0] <= 0:
            raise ShiftlabError(f"{where}.{k}: a log-uniform range must be > 0, got {out[k]!r}")
    if out["shift_fraction"][1] > 1.0:
        raise ShiftlabError(f"{where}.shift_fraction: must lie in [0, 1], got {out['shift_fraction']}")
    if out["gear_spread"][0] < 1.0:
        raise ShiftlabError(f"{where}.gear_spread: must be >= 1, got {out['gear_spread']}")
    if out["redline_rpm"][0] <= out["idle_rpm"][1]:
        raise ShiftlabError(
            f"{where}.redline_rpm: must lie above idle_rpm (got redline {out['redline_rpm']}, idle {out['idle_rpm']})"
        )
    if out["roughness"][1] > 1.0:
        raise ShiftlabError(f"{where}.roughness: must lie in [0, 1], got {out['roughness']}")
    return out


def sample_car(seed, ranges_cfg: Mapping[str, Any] | None = None) -> Car:
    """Draw one :class:`Car` from :data:`DEFAULT_RANGES` (overridden by ``ranges_cfg``).

    ``seed``: a non-negative int (e.g. ``seeding.sample_seed(seed, i, "car")``) or a
    ``numpy.random.Generator`` (consumed). A pure function of the seed and the ranges.
    Derived fields: ``shift_rpm = idle + shift_fraction * (redline - idle)``;
    ``gears[i] = top * spread ** ((n - 1 - i) / (n - 1))`` (geometric from first to top
    gear; a single gear is ``top``); ``speed_kmh = (min, min + span)``;
    ``orders[k] = exp(-order_decay * k) * exp(N(0, order_spread))`` for ``k = 0..n-1``,
    scaled so the largest is 1; ``cabin`` = ``n_resonances`` resonances sorted by
    frequency.
    """
    if isinstance(seed, np.random.Generator):
        rng = seed
    else:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ShiftlabError(f"sample_car: seed must be a non-negative integer, got {seed!r}")
        rng = np.random.default_rng(int(seed))
    r = check_ranges(ranges_cfg)

    def u(k):
        lo, hi = r[k]
        return float(rng.uniform(lo, hi))

    def lu(k):
        lo, hi = r[k]
        return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))

    def ui(k):
        lo, hi = r[k]
        return int(rng.integers(int(lo), int(hi) + 1))

    cyl = int(r["cylinders"][int(rng.integers(0, len(r["cylinders"])))])
    idle = u("idle_rpm")
    red = max(u("redline_rpm"), idle + 100.0)
    shift = idle + u("shift_fraction") * (red - idle)
    n_gears = ui("n_gears")
    top = u("top_gear_rpm_per_kmh")
    spread = u("gear_spread")
    if n_gears == 1:
        gears = (top,)
    else:
        gears = tuple(float(top * spread ** ((n_gears - 1 - i) / (n_gears - 1))) for i in range(n_gears))
        if spread == 1.0:  # degenerate range: keep the ratios strictly decreasing
            gears = tuple(top * (1.0 + 1e-3 * (n_gears - 1 - i)) for i in range(n_gears))
    vmin = u("speed_min_kmh")
    vmax = vmin + u("speed_span_kmh")
    accel = u("accel")
    n_orders = ui("n_orders")
    decay, spread_o = u("order_decay"), u("order_spread")
    amps = np.exp(-decay * np.arange(n_orders)) * np.exp(rng.normal(0.0, spread_o, n_orders))
    amps = amps / amps.max()
    half = u("half_order")
    rough = u("roughness")
    levels = {k: u(k) for k in ("engine_db", "road_db", "wind_db", "bump_db")}
    road_cut = lu("road_cutoff_hz_log")
    wind_hz = lu("wind_hz_log")
    n_res = ui("n_resonances")
    res = sorted((lu("resonance_hz_log"), u("resonance_gain_db"), u("resonance_q")) for _ in range(n_res))
    lowpass = lu("cabin_lowpass_hz_log")
    return Car(
        cylinders=cyl,
        idle_rpm=idle,
        redline_rpm=red,
        shift_rpm=shift,
        gears=gears,
        speed_kmh=(vmin, vmax),
        accel=accel,
        orders=tuple(float(a) for a in amps),
        half_order=half,
        roughness=rough,
        **levels,
        road_cutoff_hz=road_cut,
        wind_hz=wind_hz,
        cabin=tuple(tuple(float(x) for x in t) for t in res),
        cabin_lowpass_hz=lowpass,
        bump_rate=u("bump_rate"),
        bump_hz=lu("bump_hz_log"),
        bump_q=u("bump_q"),
    )


# --------------------------------------------------------------------------- rendering


def _moving_average(x: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average over ``width`` samples with edge values repeated (same length)."""
    width = max(1, int(width))
    if width == 1 or len(x) == 0:
        return x
    left = width // 2
    padded = np.concatenate([np.full(left, x[0]), x, np.full(width - 1 - left, x[-1])])
    c = np.concatenate([[0.0], np.cumsum(padded)])
    return (c[width:] - c[:-width]) / width


def _unit_rms(x: np.ndarray) -> np.ndarray:
    r = float(np.sqrt(np.mean(x * x))) if len(x) else 0.0
    return x / r if r > 0 else np.zeros_like(x)


def _filter(x: np.ndarray, fn, *args) -> np.ndarray:
    """Apply a torchaudio biquad ``fn(waveform, *args)`` to float64 ``x`` without hitting its clamp."""
    import torch

    peak = float(np.abs(x).max()) if len(x) else 0.0
    if peak == 0.0:
        return x.copy()
    scale = _FILTER_PEAK / peak
    with torch.no_grad():
        y = fn(torch.from_numpy(x * scale), *args).numpy()
    if np.abs(y).max() >= 1.0:  # would have been clamped: a filter with > 40 dB of gain
        raise ShiftlabError(f"car render: filter {fn.__name__}{args[1:]} has too much gain (its output clipped)")
    return y / scale


def _drive(car: Car, n: int, sr: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Speed (km/h) and load (0..1) per sample."""
    vmin, vmax = car.speed_kmh
    n_ctrl = int(math.ceil(n / sr / CONTROL_SECONDS)) + 2
    steps = rng.normal(0.0, car.accel * CONTROL_SECONDS, n_ctrl)
    v = np.empty(n_ctrl)
    cur = float(rng.uniform(vmin, vmax))
    span = vmax - vmin
    for i in range(n_ctrl):  # control points only (a few per second)
        v[i] = cur
        cur = cur + steps[i]
        if span > 0:  # reflect into [vmin, vmax]
            t = (cur - vmin) % (2 * span)
            cur = vmin + (t if t <= span else 2 * span - t)
        else:
            cur = vmin
    t_ctrl = np.arange(n_ctrl) * CONTROL_SECONDS * sr
    speed = np.interp(np.arange(n, dtype=np.float64), t_ctrl, v)
    speed = _moving_average(speed, round(SMOOTH_SECONDS * sr))
    accel = np.gradient(speed) * sr if n > 1 else np.zeros(n)  # km/h per second
    load = np.clip(accel / max(car.accel, 1e-9), 0.0, 1.0)
    return np.maximum(speed, 0.0), load


def _rpm(car: Car, speed: np.ndarray, sr: int) -> np.ndarray:
    ratios = np.asarray(car.gears, dtype=np.float64)
    cand = speed[:, None] * ratios[None, :]  # (n, gears)
    ok = cand <= car.shift_rpm
    gear = np.where(ok.any(axis=1), ok.argmax(axis=1), len(ratios) - 1)
    rpm = np.clip(cand[np.arange(len(speed)), gear], car.idle_rpm, car.redline_rpm)
    return _moving_average(rpm, round(CLUTCH_SECONDS * sr))


def render(car: Car, seconds: float, sr: int = 16000, seed: int = 0) -> np.ndarray:
    """``seconds`` of cabin noise of ``car`` on the drive ``seed``: float32 mono at ``sr`` Hz.

    ``round(seconds * sr)`` samples, finite, RMS :data:`RMS_DBFS` dBFS (peak at most
    :data:`PEAK_LIMIT`; see the module docstring). Deterministic: the same arguments give
    byte-identical output.
    """
    import torchaudio.functional as AF

    if not isinstance(car, Car):
        car = from_record(car)
    seconds = _num("seconds", seconds, 0.0, MAX_SECONDS, lo_open=True)
    if isinstance(sr, bool) or not isinstance(sr, (int, np.integer)) or sr < 1000:
        raise ShiftlabError(f"car render: sampling rate must be an integer >= 1000 Hz, got {sr!r}")
    sr = int(sr)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ShiftlabError(f"car render: seed must be a non-negative integer, got {seed!r}")
    n = int(round(seconds * sr))
    if n < 1:
        raise ShiftlabError(f"car render: {seconds:g} s at {sr} Hz is no sample")
    rng = np.random.default_rng(int(seed))
    nyq = 0.45 * sr

    speed, load = _drive(car, n, sr, rng)
    rpm = _rpm(car, speed, sr)
    rel = speed / 100.0

    # engine harmonics
    f0 = rpm / 60.0 * car.cylinders / 2.0
    phi = 2.0 * np.pi * np.cumsum(f0) / sr
    theta = rng.uniform(0.0, 2.0 * np.pi, len(car.orders) + 1)
    engine = np.zeros(n)
    for k, a in enumerate(car.orders, start=1):
        if a > 0:
            engine += a * np.sin(k * phi + theta[k]) * (k * f0 < nyq)
    if car.half_order > 0:
        engine += car.half_order * np.sin(0.5 * phi + theta[0])
    mod_noise = _unit_rms(_filter(rng.standard_normal(n), AF.lowpass_biquad, sr, 8.0))
    engine = _unit_rms(engine) * (0.6 + 0.4 * load) * np.maximum(1.0 + car.roughness * mod_noise, 0.0)

    # tyre / road
    road = rng.standard_normal(n)
    road_cut = min(car.road_cutoff_hz, nyq)
    road = _filter(_filter(road, AF.lowpass_biquad, sr, road_cut), AF.lowpass_biquad, sr, road_cut)
    road = _unit_rms(road) * rel**1.5

    # wind, with slow gusts
    wind = _filter(rng.standard_normal(n), AF.bandpass_biquad, sr, min(car.wind_hz, nyq), 0.6)
    gust = _unit_rms(_filter(rng.standard_normal(n), AF.lowpass_biquad, sr, 2.0))
    wind = _unit_rms(wind) * np.maximum(1.0 + 0.3 * gust, 0.0) * rel**2.5

    # bumps: Poisson impulses through a damped resonance, scaled so a bump of amplitude 1 peaks at 1
    p = np.clip(car.bump_rate * rel / sr, 0.0, 1.0)
    hits = rng.random(n) < p
    amps = np.exp(rng.normal(0.0, 0.5, n))
    impulses = np.where(hits, amps, 0.0)
    bump_hz = min(car.bump_hz, nyq)
    unit = np.zeros(min(n, sr))
    unit[0] = 1.0
    response_peak = float(np.abs(_filter(unit, AF.bandpass_biquad, sr, bump_hz, car.bump_q)).max())
    bumps = _filter(impulses, AF.bandpass_biquad, sr, bump_hz, car.bump_q) / response_peak

    def db(x):
        return 10.0 ** (x / 20.0)

    mix = db(car.engine_db) * engine + db(car.road_db) * road + db(car.wind_db) * wind + db(car.bump_db) * bumps
    for f, g, q in car.cabin:
        if f < nyq:
            mix = _filter(mix, AF.equalizer_biquad, sr, f, g, q)
    mix = _filter(mix, AF.lowpass_biquad, sr, min(car.cabin_lowpass_hz, nyq))

    rms = float(np.sqrt(np.mean(mix * mix)))
    if not np.isfinite(rms) or rms <= 0:
        raise ShiftlabError("car render: the car produced silence (all levels -inf or no speed?)")
    out = mix * (10.0 ** (RMS_DBFS / 20.0) / rms)
    peak = float(np.abs(out).max())
    if peak > PEAK_LIMIT:
        out *= PEAK_LIMIT / peak
    out = out.astype(np.float32)
    if not np.isfinite(out).all():  # cannot happen with validated records; a hard guard
        raise ShiftlabError("car render: non-finite samples")
    return out


# --------------------------------------------------------------------------- plots


def plot_spectrograms(
    cars_: Sequence[Car],
    path: str | Path,
    seconds: float = 4.0,
    sr: int = 16000,
    seed: int = 0,
    titles: Sequence[str] | None = None,
) -> Path:
    """Write a PNG with one log-mel spectrogram (the RPM-driven harmonics visible) per car.

    Car ``i`` is rendered with :func:`render` (``seconds``, ``sr``, drive seed ``seed + i``,
    so the cars do not share one noise realisation); the
    spectrogram is ``torchaudio.transforms.MelSpectrogram`` (1024-point FFT, hop 256,
    80 mels) in dB. Returns the path written (atomically).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch
    import torchaudio

    from shiftlab import store

    cars_ = list(cars_)
    if not cars_:
        raise ShiftlabError("plot_spectrograms: no cars given")
    mel = torchaudio.transforms.MelSpectrogram(sample_rate=sr, n_fft=1024, hop_length=256, n_mels=80)
    fig, axes = plt.subplots(len(cars_), 1, figsize=(8, 2.2 * len(cars_)), squeeze=False)
    for i, car in enumerate(cars_):
        x = render(car, seconds, sr, seed + i)
        with torch.no_grad():
            s = mel(torch.from_numpy(x)).clamp_min(1e-10).log10().mul(10.0).numpy()
        ax = axes[i, 0]
        ax.imshow(s, origin="lower", aspect="auto", cmap="magma", extent=(0, seconds, 0, 80))
        title = titles[i] if titles is not None else (
            f"{car.cylinders} cyl, idle {car.idle_rpm:.0f} rpm, {len(car.gears)} gears, "
            f"{car.speed_kmh[0]:.0f}-{car.speed_kmh[1]:.0f} km/h"
        )
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("mel bin")
    axes[-1, 0].set_xlabel("time (s)")
    fig.tight_layout()
    path = Path(path)
    with store.atomic_file(path, "wb") as f:
        fig.savefig(f, format="png", dpi=90)
    plt.close(fig)
    return path
