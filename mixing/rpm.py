"""RPM-driven engine loops: one real engine recording becomes a car that accelerates,
shifts gears, cruises and slows down -- the way racing games voice their cars.

A recorded engine loop (e.g. TORCS's ``f360.wav``, :mod:`shiftlab.datasets.noise`) holds
a few seconds of one engine at one, unknown, engine speed. Its pitch is taken as a
**reference RPM** (``ref_rpm``, 3,000 by default); playing the loop back at the rate
``rpm / ref_rpm`` moves every engine order with the RPM, so an RPM trajectory turns the
one recording into a drive. Three pure functions:

:func:`sample_recipe` (seed -> recipe)
    Draws a car-and-drive **recipe** (a plain JSON-safe dict) from :data:`DEFAULT_RANGES`
    (overridden by ``ranges``): the engine (``idle_rpm``, ``redline_rpm``, ``ref_rpm``),
    the gearbox (``gears``: rpm per km/h per gear, first gear first, geometric from
    ``top_gear_rpm_per_kmh * gear_spread`` down to ``top_gear_rpm_per_kmh``), the shift
    points (``upshift_rpm`` = idle + ``upshift_fraction`` * (redline - idle);
    ``downshift_rpm`` likewise, lowered where needed so that an upshift never lands below
    it; ``cruise_rpm``: while cruising the driver shifts up as long as the next gear stays
    at or above it), ``accel_kmh_s`` (first gear at full throttle), ``shift_seconds``,
    ``load_db``, ``start_kmh``, ``loop_start`` (where in the loop playback starts, a
    fraction), the optional road underlay (``road``: ``recording``, ``db``, ``start``),
    and a list of driving **phases**, drawn until their (under-)estimated durations cover
    ``seconds``, then cut to the phases the drive actually reaches:

    * ``{"kind": "accelerate", "to_kmh", "throttle"}``: speed rises at
      ``accel_kmh_s * throttle * gears[g] / gears[0]`` km/h per second in gear ``g``
      (the wheel torque falls with the gear ratio) until ``to_kmh``; at ``upshift_rpm``
      the driver shifts up;
    * ``{"kind": "cruise", "seconds", "slope_kmh_s"}``: a slow drift of the speed; the
      driver shifts up while the next gear keeps ``cruise_rpm``, down below
      ``downshift_rpm``;
    * ``{"kind": "decelerate", "to_kmh", "brake_kmh_s"}``: speed falls to ``to_kmh``;
      below ``downshift_rpm`` the driver shifts down (the RPM jumps up).

    The first phase accelerates (from ``start_kmh``); the next kind follows the previous
    one (after accelerate: cruise 0.6, decelerate 0.2, accelerate 0.2; after cruise:
    accelerate 0.5, decelerate 0.5; after decelerate: accelerate 0.6, cruise 0.4);
    targets are uniform in ``speed_kmh`` (capped at 95% of the top-gear redline speed),
    at least 5 and at most :data:`MAX_STEP_KMH` km/h from the speed the phase starts at.

:func:`trajectory` (recipe -> per-control-step speed, gear, RPM, throttle)
    A deterministic simulation at :data:`CONTROL_HZ`: a **shift** takes
    ``shift_seconds``, during which the effective ratio moves smoothly (smoothstep) from
    the old gear's to the new gear's (upshift: throttle lifted, the car coasts at
    :data:`COAST_KMH_S`: the RPM *drops*; downshift: a throttle blip, the RPM *rises*);
    ``rpm = clip(speed * ratio, idle_rpm, redline_rpm)`` (the clutch slips at walking
    pace). Throttle: the phase's ``throttle`` when accelerating, :data:`CRUISE_THROTTLE`,
    0 when decelerating, :data:`UPSHIFT_THROTTLE` / :data:`DOWNSHIFT_THROTTLE` in a shift.
    When the phases run out the car cruises at constant speed.

:func:`render` (recipe + recording -> float32 audio)
    The loop is made **seamless** (its last :data:`CROSSFADE_SECONDS` are cross-faded,
    equal power, into its start, so looping does not click) and its DC removed. The
    playback is a **phase accumulator** over the looped recording: per output sample the
    read position advances by ``rate * (loop rate / output rate)`` recording samples,
    ``rate = rpm / ref_rpm`` (RPM interpolated linearly from the control steps).
    Anti-aliasing: the loop is held at :data:`OVERSAMPLE` times the output rate in
    band-limited versions ("mip levels", :class:`LoopLevels`): level ``k`` is for playback
    rates up to ``2 ** ((k + 1) / LEVELS_PER_OCTAVE)`` and keeps only frequencies that
    stay below :data:`CUTOFF` times the output rate at that rate; because the loop is
    periodic, each level is an exact circular FFT resampling of it (numpy's pocketfft,
    float64: deterministic, no edge effects). A sample reads the two levels that bracket
    its rate (linear interpolation in position in each, then a linear blend between the
    two levels in log-rate), so the output neither aliases nor clicks when the rate crosses
    a level. All of it is vectorised numpy (no Python loop per sample). The engine is
    scaled to unit RMS and by the throttle (``10 ** (-load_db * (1 - throttle) / 20)``,
    smoothed over :data:`THROTTLE_SMOOTH_SECONDS`: louder on throttle than coasting). The
    optional **road underlay** (a road recording, looped from ``road.start`` at its own
    pitch) is scaled to unit RMS, by ``(speed / 100) ** 1.5`` and by ``road.db``, and
    added. Finally the clip is normalised to :data:`RMS_DBFS` dBFS (scaled down instead
    if that would put a peak above :data:`PEAK_LIMIT`).

Determinism: the recipe holds every drawn number; :func:`render` draws nothing, so the
output is a pure function of (recording samples and rate, recipe): byte-identical on
every run (tested). ``json.loads(json.dumps(recipe))`` renders the same samples.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from shiftlab import paramschema
from shiftlab.errors import ShiftlabError

__all__ = [
    "DEFAULT_RANGES",
    "MODEL",
    "check_ranges",
    "sample_recipe",
    "trajectory",
    "LoopLevels",
    "seamless",
    "render",
]

#: Name and version of the model a recipe is for (rendering refuses others).
MODEL = "rpm_loop/1"
#: Simulation steps per second of :func:`trajectory`.
CONTROL_HZ = 100
#: Working rate of the mip levels, as a multiple of the output rate.
OVERSAMPLE = 4
#: Mip levels per octave of playback rate.
LEVELS_PER_OCTAVE = 4
#: Band limit of a mip level, as a fraction of the output rate (0.5 = Nyquist), at the level's top rate.
CUTOFF = 0.45
#: Cross-fade that makes a loop seamless, seconds (at most a quarter of the loop).
CROSSFADE_SECONDS = 0.02
#: Moving average over the throttle before it sets the engine level, seconds.
THROTTLE_SMOOTH_SECONDS = 0.1
#: Throttle while cruising, lifting for an upshift, blipping for a downshift.
CRUISE_THROTTLE = 0.35
UPSHIFT_THROTTLE = 0.1
DOWNSHIFT_THROTTLE = 0.5
#: Speed lost per second while the clutch is out for an upshift, km/h.
COAST_KMH_S = 1.0
#: Largest speed change of one accelerate / decelerate phase, km/h (targets: at least 5 km/h away).
MAX_STEP_KMH = 80.0
#: Output level, dBFS RMS, and the largest absolute sample.
RMS_DBFS = -20.0
PEAK_LIMIT = 0.99
MAX_SECONDS = 3600.0

#: Ranges of :func:`sample_recipe`: ``[lo, hi]`` drawn uniformly (``[v, v]`` or a number
#: fixes a value); ``n_gears`` an inclusive integer range.
DEFAULT_RANGES: dict[str, Any] = {
    "ref_rpm": [3000.0, 3000.0],  # the RPM the recording is taken to be at (its pitch = rate 1)
    "idle_rpm": [700.0, 1000.0],
    "redline_rpm": [6000.0, 8000.0],
    "upshift_fraction": [0.6, 0.95],  # upshift_rpm = idle + fraction * (redline - idle)
    "downshift_fraction": [0.15, 0.35],  # downshift_rpm likewise
    "cruise_fraction": [0.25, 0.45],  # cruise_rpm likewise
    "n_gears": [4, 6],
    "top_gear_rpm_per_kmh": [18.0, 32.0],  # rpm per km/h in top gear (100 km/h -> 1,800-3,200 rpm)
    "gear_spread": [3.0, 4.5],  # first-gear ratio / top-gear ratio (geometric steps)
    "accel_kmh_s": [8.0, 16.0],  # first gear, full throttle
    "throttle": [0.5, 1.0],  # per accelerate phase
    "brake_kmh_s": [2.0, 10.0],  # per decelerate phase
    "cruise_seconds": [1.0, 6.0],  # per cruise phase
    "cruise_drift_kmh_s": [0.0, 1.0],  # |slope| of a cruise phase (sign drawn)
    "shift_seconds": [0.15, 0.5],
    "start_kmh": [0.0, 20.0],
    "speed_kmh": [10.0, 160.0],  # targets of the accelerate / decelerate phases
    "load_db": [3.0, 9.0],  # engine level on full throttle above coasting
    "road_db": [-18.0, -6.0],  # road underlay level relative to the engine (when a road recording is given)
}

_INT_KEYS = ("n_gears",)
_SIGNED = ("road_db",)
_FRACTIONS = ("upshift_fraction", "downshift_fraction", "cruise_fraction", "throttle")


# --------------------------------------------------------------------------- ranges


def check_ranges(ranges: Mapping[str, Any] | None, where: str = "drive") -> dict[str, list[float]]:
    """Merge ``ranges`` over :data:`DEFAULT_RANGES` and validate them (:func:`shiftlab.paramschema.range_overrides`
    plus the drive's own rules); errors name ``where.key``."""
    out = paramschema.range_overrides(ranges, DEFAULT_RANGES, where, "drive parameter", _INT_KEYS, _SIGNED)
    for k in _FRACTIONS:
        if out[k][1] > 1.0:
            raise ShiftlabError(f"{where}.{k}: must lie in [0, 1], got {(ranges or {}).get(k, out[k])!r}")
    for k in ("ref_rpm", "idle_rpm", "accel_kmh_s", "top_gear_rpm_per_kmh"):
        if out[k][0] <= 0:
            raise ShiftlabError(f"{where}.{k}: must be > 0, got {out[k]}")
    if out["idle_rpm"][0] < 100:
        raise ShiftlabError(f"{where}.idle_rpm: must be >= 100, got {out['idle_rpm']}")
    if out["redline_rpm"][0] <= out["idle_rpm"][1]:
        raise ShiftlabError(
            f"{where}.redline_rpm: must lie above idle_rpm (got redline {out['redline_rpm']}, idle {out['idle_rpm']})"
        )
    if out["gear_spread"][0] < 1.0:
        raise ShiftlabError(f"{where}.gear_spread: must be >= 1, got {out['gear_spread']}")
    if out["shift_seconds"][0] < 1.0 / CONTROL_HZ:
        raise ShiftlabError(f"{where}.shift_seconds: must be >= {1.0 / CONTROL_HZ:g}, got {out['shift_seconds']}")
    if out["road_db"][1] > 40.0 or out["road_db"][0] < -120.0:
        raise ShiftlabError(f"{where}.road_db: must lie in [-120, 40] dB, got {out['road_db']}")
    for k in ("accel_kmh_s", "brake_kmh_s"):
        if out[k][1] > 100.0:
            raise ShiftlabError(f"{where}.{k}: must lie in [0, 100] km/h per second, got {out[k]}")
    if out["load_db"][1] > 60.0:
        raise ShiftlabError(f"{where}.load_db: must lie in [0, 60] dB, got {out['load_db']}")
    return out


# --------------------------------------------------------------------------- recipe


def _num(name, v, lo=None, hi=None, lo_open=False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not math.isfinite(float(v)):
        raise ShiftlabError(f"rpm loop: {name} must be a finite number, got {v!r}")
    v = float(v)
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise ShiftlabError(f"rpm loop: {name} must be {'>' if lo_open else '>='} {lo:g}, got {v:g}")
    if hi is not None and v > hi:
        raise ShiftlabError(f"rpm loop: {name} must be <= {hi:g}, got {v:g}")
    return v


def sample_recipe(seed, seconds: float, sampling_rate: int = 16000, ranges: Mapping[str, Any] | None = None,
                  recording: str = "", road: str | None = None) -> dict[str, Any]:
    """Draw one drive recipe (module docstring) from ``seed`` (a non-negative int).

    ``recording`` / ``road``: the ids of the engine loop and of the road recording (or
    None: no underlay), recorded in the recipe (they name the inputs :func:`render` needs).
    A pure function of its arguments.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ShiftlabError(f"rpm loop: seed must be a non-negative integer, got {seed!r}")
    seconds = _num("seconds", seconds, 0.0, MAX_SECONDS, lo_open=True)
    if isinstance(sampling_rate, bool) or not isinstance(sampling_rate, (int, np.integer)) or sampling_rate < 1000:
        raise ShiftlabError(f"rpm loop: sampling rate must be an integer >= 1000 Hz, got {sampling_rate!r}")
    r = check_ranges(ranges)
    rng = np.random.default_rng(int(seed))

    def u(k):
        lo, hi = r[k]
        return float(rng.uniform(lo, hi))

    ref = u("ref_rpm")
    idle = u("idle_rpm")
    red = max(u("redline_rpm"), idle + 100.0)
    span = red - idle
    n_gears = int(rng.integers(int(r["n_gears"][0]), int(r["n_gears"][1]) + 1))
    top, spread = u("top_gear_rpm_per_kmh"), u("gear_spread")
    if n_gears == 1:
        gears = [top]
    else:
        gears = [float(top * spread ** ((n_gears - 1 - i) / (n_gears - 1))) for i in range(n_gears)]
        if spread == 1.0:  # degenerate range: keep the ratios strictly decreasing
            gears = [top * (1.0 + 1e-3 * (n_gears - 1 - i)) for i in range(n_gears)]
    step = max(gears[i] / gears[i + 1] for i in range(n_gears - 1)) if n_gears > 1 else 1.0
    up = idle + u("upshift_fraction") * span
    down = min(idle + u("downshift_fraction") * span, 0.9 * up / step)
    cruise = min(max(idle + u("cruise_fraction") * span, 1.1 * down), 0.95 * up)
    accel = u("accel_kmh_s")
    shift_s = u("shift_seconds")
    load_db = u("load_db")
    vtop = 0.95 * red / gears[-1]
    vlo, vhi = min(r["speed_kmh"][0], vtop), min(r["speed_kmh"][1], vtop)
    v = min(u("start_kmh"), vtop)
    start_kmh = v
    loop_start = float(rng.random())
    road_rec = None
    if road is not None:
        road_rec = {"recording": str(road), "db": u("road_db"), "start": float(rng.random())}

    phases: list[dict[str, Any]] = []
    t_est, kind = 0.0, "accelerate"
    follow = {
        "accelerate": (("cruise", "decelerate", "accelerate"), (0.6, 0.2, 0.2)),
        "cruise": (("accelerate", "decelerate"), (0.5, 0.5)),
        "decelerate": (("accelerate", "cruise"), (0.6, 0.4)),
    }
    while t_est < seconds + 1.0 / CONTROL_HZ:
        if kind == "accelerate" and v + 5.0 > vhi:
            kind = "cruise" if v - 5.0 < vlo else "decelerate"
        if kind == "decelerate" and v - 5.0 < vlo:
            kind = "cruise" if v + 5.0 > vhi else "accelerate"
        if kind == "accelerate":
            to, thr = float(rng.uniform(v + 5.0, min(vhi, v + MAX_STEP_KMH))), u("throttle")
            if thr <= 0:
                thr = 1e-3
            phases.append({"kind": kind, "to_kmh": to, "throttle": thr})
            t_est += (to - v) / (accel * thr)  # first-gear acceleration: an underestimate
            v = to
        elif kind == "decelerate":
            to, b = float(rng.uniform(max(vlo, v - MAX_STEP_KMH), v - 5.0)), max(u("brake_kmh_s"), 1e-3)
            phases.append({"kind": kind, "to_kmh": to, "brake_kmh_s": b})
            t_est += (v - to) / b
            v = to
        else:
            d = max(u("cruise_seconds"), 1.0 / CONTROL_HZ)
            slope = u("cruise_drift_kmh_s") * (1.0 if rng.random() < 0.5 else -1.0)
            phases.append({"kind": kind, "seconds": d, "slope_kmh_s": slope})
            t_est += d
            v = min(max(v + slope * d, 0.0), vtop)
        kinds, p = follow[kind]
        kind = kinds[int(rng.choice(len(kinds), p=p))]

    recipe = {
        "model": MODEL,
        "seed": int(seed),
        "seconds": float(seconds),
        "sampling_rate": int(sampling_rate),
        "recording": str(recording),
        "ref_rpm": ref,
        "idle_rpm": idle,
        "redline_rpm": red,
        "upshift_rpm": up,
        "downshift_rpm": down,
        "cruise_rpm": cruise,
        "gears": gears,
        "accel_kmh_s": accel,
        "shift_seconds": shift_s,
        "load_db": load_db,
        "start_kmh": start_kmh,
        "loop_start": loop_start,
        "road": road_rec,
        "phases": phases,
    }
    used = int(trajectory(recipe)["phase"].max()) + 1
    recipe["phases"] = phases[:used]
    return recipe


def _check_recipe(recipe: Mapping[str, Any]) -> None:
    if not isinstance(recipe, Mapping):
        raise ShiftlabError(f"rpm loop: recipe must be a mapping, got {type(recipe).__name__}")
    if recipe.get("model") != MODEL:
        raise ShiftlabError(f"rpm loop: recipe model is {recipe.get('model')!r}, expected {MODEL!r}")
    need = ("seconds", "sampling_rate", "ref_rpm", "idle_rpm", "redline_rpm", "upshift_rpm", "downshift_rpm",
            "cruise_rpm", "gears", "accel_kmh_s", "shift_seconds", "load_db", "start_kmh", "loop_start", "phases")
    missing = [k for k in need if k not in recipe]
    if missing:
        raise ShiftlabError(f"rpm loop: recipe lacks {', '.join(missing)}")
    _num("idle_rpm", recipe["idle_rpm"], 1.0)
    _num("redline_rpm", recipe["redline_rpm"], float(recipe["idle_rpm"]), lo_open=True)
    _num("ref_rpm", recipe["ref_rpm"], 0.0, lo_open=True)
    g = recipe["gears"]
    if not isinstance(g, (list, tuple)) or not g or any(_num("gears[i]", x, 0.0, lo_open=True) <= 0 for x in g):
        raise ShiftlabError(f"rpm loop: gears must be a non-empty list of ratios > 0, got {g!r}")
    _num("shift_seconds", recipe["shift_seconds"], 0.0, lo_open=True)


# --------------------------------------------------------------------------- trajectory


def trajectory(recipe: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Simulate the drive of ``recipe`` (module docstring) at :data:`CONTROL_HZ`.

    Returns arrays of ``ceil(seconds * CONTROL_HZ) + 1`` steps: ``t`` (s), ``speed``
    (km/h), ``rpm``, ``gear`` (0 = first; during a shift the gear being left),
    ``throttle`` (0..1), ``phase`` (index into ``recipe["phases"]``; ``len(phases)`` once
    they are used up) and ``shifting`` (bool).
    """
    _check_recipe(recipe)
    dt = 1.0 / CONTROL_HZ
    n = int(math.ceil(float(recipe["seconds"]) * CONTROL_HZ)) + 1
    ratios = [float(x) for x in recipe["gears"]]
    top = len(ratios) - 1
    idle, red = float(recipe["idle_rpm"]), float(recipe["redline_rpm"])
    up, down, cruise_rpm = float(recipe["upshift_rpm"]), float(recipe["downshift_rpm"]), float(recipe["cruise_rpm"])
    accel, shift_s = float(recipe["accel_kmh_s"]), float(recipe["shift_seconds"])
    vtop = red / ratios[-1]
    phases = list(recipe["phases"])
    v = float(recipe["start_kmh"])
    g = 0
    while g < top and v * ratios[g] > up:  # the gear a driver would be in at the start speed
        g += 1
    k, tp = 0, 0.0
    shift = None  # (from gear, to gear, elapsed seconds)
    out_v, out_rpm, out_g, out_thr, out_ph, out_sh = (np.empty(n) for _ in range(6))
    for i in range(n):  # control steps only (CONTROL_HZ per second), never per audio sample
        ph = phases[k] if k < len(phases) else {"kind": "cruise", "seconds": math.inf, "slope_kmh_s": 0.0}
        kind = ph["kind"]
        if shift is not None:
            g0, g1, e = shift
            s = min(e / shift_s, 1.0)
            w = s * s * (3.0 - 2.0 * s)
            ratio = ratios[g0] * (1.0 - w) + ratios[g1] * w
            thr = UPSHIFT_THROTTLE if g1 > g0 else DOWNSHIFT_THROTTLE
            if kind == "decelerate":
                v = max(v - float(ph["brake_kmh_s"]) * dt, float(ph["to_kmh"]))
            else:
                v = max(v - COAST_KMH_S * dt, 0.0)
            e += dt
            shift = (g0, g1, e)
            gear = g0
            if e >= shift_s - 1e-12:
                g, shift = g1, None
        else:
            gear = g
            ratio = ratios[g]
            if kind == "accelerate":
                thr = float(ph["throttle"])
                to = min(float(ph["to_kmh"]), vtop)
                v = min(v + accel * thr * ratios[g] / ratios[0] * dt, to, red / ratios[g])
                if g < top and v * ratios[g] >= up:
                    shift = (g, g + 1, 0.0)
                elif v >= to - 1e-9 or (g == top and v * ratios[g] >= red * (1.0 - 1e-9)):
                    k, tp = k + 1, 0.0
            elif kind == "decelerate":
                thr = 0.0
                to = float(ph["to_kmh"])
                v = max(v - float(ph["brake_kmh_s"]) * dt, to)
                if g > 0 and v * ratios[g] < down:
                    shift = (g, g - 1, 0.0)
                if v <= to + 1e-9:
                    k, tp = k + 1, 0.0
            else:
                thr = CRUISE_THROTTLE
                v = min(max(v + float(ph["slope_kmh_s"]) * dt, 0.0), vtop)
                tp += dt
                if g < top and (v * ratios[g + 1] >= cruise_rpm or v * ratios[g] > up):
                    shift = (g, g + 1, 0.0)
                elif g > 0 and v * ratios[g] < down:
                    shift = (g, g - 1, 0.0)
                if tp >= float(ph["seconds"]) - 1e-9:
                    k, tp = k + 1, 0.0
        out_v[i] = v
        out_rpm[i] = min(max(v * ratio, idle), red)
        out_g[i] = gear
        out_thr[i] = thr
        out_ph[i] = k
        out_sh[i] = shift is not None
    return {
        "t": np.arange(n) * dt,
        "speed": out_v,
        "rpm": out_rpm,
        "gear": out_g.astype(np.int64),
        "throttle": out_thr,
        "phase": out_ph.astype(np.int64),
        "shifting": out_sh.astype(bool),
    }


# --------------------------------------------------------------------------- loop playback


def seamless(x: np.ndarray, crossfade: int) -> np.ndarray:
    """``x`` as a click-free loop: its last ``crossfade`` samples cross-faded (equal power) into its start.

    Returns ``len(x) - crossfade`` samples (float64): ``x[crossfade:]`` whose tail is
    ``x[-c:] * cos + x[:c] * sin``, so the wrap from the end back to the start continues
    the recording. ``crossfade`` is capped at a quarter of the loop.
    """
    x = np.asarray(x, dtype=np.float64)
    c = min(int(crossfade), len(x) // 4)
    if c < 1:
        return x.copy()
    y = x[c:].copy()
    t = (np.arange(c) + 0.5) / c
    y[-c:] = x[len(x) - c :] * np.cos(0.5 * np.pi * t) + x[:c] * np.sin(0.5 * np.pi * t)
    return y


class LoopLevels:
    """A recording prepared for playback at any rate into ``out_sr`` Hz (module docstring).

    ``x`` (mono) at ``sr`` Hz is made seamless (:func:`seamless`, :data:`CROSSFADE_SECONDS`)
    and DC-free; :meth:`level` ``k`` is the loop, circularly FFT-resampled to ``M``
    samples (about :data:`OVERSAMPLE` x ``out_sr`` per second) and band-limited for the
    rate ``2 ** ((k + 1) / LEVELS_PER_OCTAVE)``; levels are computed on first use and
    kept, so one object serves many drives of the same recording (the samples do not
    depend on which levels were computed before).
    """

    def __init__(self, x: np.ndarray, sr: int, out_sr: int, name: str = "recording"):
        x = np.asarray(x)
        if x.ndim != 1 or len(x) < 8:
            raise ShiftlabError(f"rpm loop: {name}: needs a mono recording of at least 8 samples, got shape {x.shape}")
        if not np.isfinite(x).all():
            raise ShiftlabError(f"rpm loop: {name}: NaN or infinite samples")
        self.name = name
        self.sr, self.out_sr = int(sr), int(out_sr)
        loop = seamless(x, round(CROSSFADE_SECONDS * self.sr))
        self.length = len(loop)
        self.spectrum = np.fft.rfft(loop)
        self.spectrum[0] = 0.0  # no DC
        if not np.any(np.abs(self.spectrum) > 0):
            raise ShiftlabError(f"rpm loop: {name}: the recording is silent")
        # working length: at least OVERSAMPLE x out_sr per second, rounded up to a 5-smooth size (fast FFTs)
        self.size = _smooth_size(max(8, int(math.ceil(self.length * OVERSAMPLE * self.out_sr / self.sr))))
        self._levels: dict[int, np.ndarray] = {}

    def cutoff(self, k: int) -> float:
        """Band limit of level ``k`` in Hz of the recording (at its own pitch)."""
        top_rate = 2.0 ** ((k + 1) / LEVELS_PER_OCTAVE)
        return min(CUTOFF * self.out_sr / top_rate, 0.5 * self.sr, OVERSAMPLE * self.out_sr / 4.0)

    def level(self, k: int) -> np.ndarray:
        k = int(k)
        y = self._levels.get(k)
        if y is None:
            c = self.cutoff(k)
            freqs = np.arange(len(self.spectrum)) * (self.sr / self.length)
            lo = 0.85 * c
            w = np.clip((c - freqs) / (c - lo), 0.0, 1.0)
            w = 0.5 - 0.5 * np.cos(np.pi * w)  # raised-cosine taper from 0.85 c to c
            nb = min(len(self.spectrum), self.size // 2 + 1)
            spec = np.zeros(self.size // 2 + 1, dtype=np.complex128)
            spec[:nb] = self.spectrum[:nb] * w[:nb]
            y = (np.fft.irfft(spec, n=self.size) * (self.size / self.length)).astype(np.float32)
            self._levels[k] = y
        return y

    def play(self, rate: np.ndarray, start: float = 0.0) -> np.ndarray:
        """The loop read from ``start`` (a fraction of the loop) at ``rate[i]`` for output sample ``i`` (float64)."""
        rate = np.asarray(rate, dtype=np.float64)
        if rate.ndim != 1 or not len(rate):
            raise ShiftlabError("rpm loop: playback rates must be a non-empty 1-D array")
        if not (np.isfinite(rate).all() and rate.min() > 0):
            raise ShiftlabError(f"rpm loop: {self.name}: playback rates must be finite and > 0")
        M = self.size
        inc = rate * (M / self.length) * (self.sr / self.out_sr)  # level samples per output sample
        pos = np.empty(len(rate))
        pos[0] = 0.0
        np.cumsum(inc[:-1], out=pos[1:])
        pos += (float(start) % 1.0) * M
        pos %= M
        i0 = np.floor(pos).astype(np.int64)
        frac = pos - i0
        i0 %= M
        i1 = (i0 + 1) % M
        q = np.log2(rate) * LEVELS_PER_OCTAVE
        k0 = np.floor(q).astype(np.int64)
        wq = q - k0
        out = np.empty(len(rate))
        for k in np.unique(k0):  # one pass per level pair (a few), vectorised over the samples
            sel = np.flatnonzero(k0 == k)
            a, b = self.level(k), self.level(k + 1)
            j0, j1, f = i0[sel], i1[sel], frac[sel]
            ya = a[j0] + (a[j1].astype(np.float64) - a[j0]) * f
            yb = b[j0] + (b[j1].astype(np.float64) - b[j0]) * f
            out[sel] = ya + (yb - ya) * wq[sel]
        return out


def _smooth_size(n: int) -> int:
    """The smallest integer >= ``n`` whose prime factors are 2, 3 and 5."""
    best = 1 << max(0, int(n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def _moving_average(x: np.ndarray, width: int) -> np.ndarray:
    from shiftlab.mixing import cars

    return cars._moving_average(x, width)


def _unit_rms(x: np.ndarray) -> np.ndarray:
    r = float(np.sqrt(np.mean(x * x))) if len(x) else 0.0
    return x / r if r > 0 else np.zeros_like(x)


def _levels(x, sr, out_sr, name) -> LoopLevels:
    if isinstance(x, LoopLevels):
        if x.out_sr != int(out_sr):
            raise ShiftlabError(f"rpm loop: {x.name} was prepared for {x.out_sr} Hz, the recipe renders {out_sr} Hz")
        return x
    if sr is None:
        raise ShiftlabError(f"rpm loop: {name}: the recording's sampling rate is needed")
    return LoopLevels(np.asarray(x, dtype=np.float64), int(sr), int(out_sr), name)


def render(recipe: Mapping[str, Any], loop, loop_sr: int | None = None, road=None,
           road_sr: int | None = None) -> np.ndarray:
    """The drive of ``recipe`` voiced by the engine recording ``loop`` (module docstring).

    ``loop`` / ``road``: mono arrays at ``loop_sr`` / ``road_sr`` Hz, or
    :class:`LoopLevels` built for the recipe's sampling rate (reused across drives).
    ``road`` is needed exactly when the recipe has a road underlay. Returns float32,
    ``round(seconds * sampling_rate)`` samples.
    """
    _check_recipe(recipe)
    sr = int(recipe["sampling_rate"])
    n = int(round(float(recipe["seconds"]) * sr))
    if n < 1:
        raise ShiftlabError(f"rpm loop: {recipe['seconds']} s at {sr} Hz is no sample")
    eng = _levels(loop, loop_sr, sr, recipe.get("recording") or "engine loop")
    tr = trajectory(recipe)
    ts = np.arange(n, dtype=np.float64) / sr
    rpm = np.interp(ts, tr["t"], tr["rpm"])
    speed = np.interp(ts, tr["t"], tr["speed"])
    thr = np.interp(ts, tr["t"], _moving_average(tr["throttle"], round(THROTTLE_SMOOTH_SECONDS * CONTROL_HZ)))
    engine = _unit_rms(eng.play(rpm / float(recipe["ref_rpm"]), float(recipe["loop_start"])))
    engine *= 10.0 ** (-float(recipe["load_db"]) * (1.0 - thr) / 20.0)
    mix = engine
    rr = recipe.get("road")
    if rr:
        if road is None:
            raise ShiftlabError(f"rpm loop: the recipe has a road underlay ({rr.get('recording')}) but no road "
                                f"recording was given")
        rl = _levels(road, road_sr, sr, rr.get("recording") or "road recording")
        under = _unit_rms(rl.play(np.ones(n), float(rr["start"])))
        mix = mix + under * (np.maximum(speed, 0.0) / 100.0) ** 1.5 * 10.0 ** (float(rr["db"]) / 20.0)
    elif road is not None:
        raise ShiftlabError("rpm loop: a road recording was given but the recipe has no road underlay")
    rms = float(np.sqrt(np.mean(mix * mix)))
    if not np.isfinite(rms) or rms <= 0:
        raise ShiftlabError("rpm loop: the drive rendered silence")
    out = mix * (10.0 ** (RMS_DBFS / 20.0) / rms)
    peak = float(np.abs(out).max())
    if peak > PEAK_LIMIT:
        out *= PEAK_LIMIT / peak
    return out.astype(np.float32)
