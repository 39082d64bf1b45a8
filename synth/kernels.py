"""Motion-blur kernels described by small, JSON-serialisable parameter records.

Two families:

* :class:`Linear` -- straight motion blur with albumentations ``MotionBlur`` conventions for
  ``length`` and ``angle``, rasterised sub-pixel and anti-aliased.
* :class:`Shake` -- camera-shake trajectories after Boracchi & Foi 2012 ("Modeling the
  performance of image restoration from motion blur"; the generator DeblurGAN uses).

Every kernel is a frozen dataclass; ``to_record()`` gives a plain dict with a ``"family"`` key
and :func:`from_record` rebuilds the kernel, so a blurred sample can be regenerated from the
record alone. ``render()`` returns a float32 ``(k, k)`` array with ``k`` odd that is

* **non-negative and sums to 1** (float32 tolerance),
* **centred**: its centroid lies on the centre pixel (to ~1e-6 px), because the continuous
  path is shifted by a sub-pixel amount so that its centroid is at the origin before it is
  rasterised, and bilinear splatting preserves the centroid exactly,
* **as small as possible**: the smallest odd square around the centre holding all its mass.

Rasterisation: the path is sampled densely (:data:`SAMPLES_PER_PX` points per pixel of path)
and every sample is splatted bilinearly onto the pixel grid ("tent" anti-aliasing, the same
footprint as B&F's PSF code). A straight horizontal kernel of integer length ``L`` therefore
carries all its mass on the centre row, with half-pixel soft ends.

Orientation. Kernels are used as OpenCV ``filter2D`` kernels, exactly as albumentations
``MotionBlur`` uses its kernel (correlation, anchor at the centre); ``x`` is the column index
(to the right) and ``y`` the row index (downwards), and a direction ``angle`` in degrees is
the unit vector ``(cos a, sin a)`` in those ``(x, y)`` coordinates -- the formula of
albumentations' ``create_motion_kernel``.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Mapping

import numpy as np

from shiftlab.errors import ShiftlabError

__all__ = [
    "Kernel",
    "Linear",
    "Shake",
    "FAMILIES",
    "DEFAULT_SAMPLE_CFG",
    "from_record",
    "as_kernel",
    "sample",
    "check_sample_cfg",
    "vector",
    "render_many",
]

#: Path samples per pixel of path length used for rasterising (bilinear splatting).
SAMPLES_PER_PX = 16
#: Kernel entries below this fraction of the total mass are dropped (then renormalised), so
#: floating-point dust from the splatting does not grow the kernel by a pixel.
_DUST = 1e-7
#: Largest kernel side render() will produce automatically (a guard against absurd records).
MAX_AUTO_SIZE = 511
#: Boracchi & Foi's trajectory length in steps; per-step rates are rescaled from it.
BF_STEPS = 2000


# --------------------------------------------------------------------------- validation
def _err(family: str, name: str, msg: str) -> ShiftlabError:
    return ShiftlabError(f"{family} kernel: '{name}' {msg}")


def _check_float(family, name, v, lo=None, hi=None, lo_open=False):
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise _err(family, name, f"must be a number, got {v!r}")
    v = float(v)
    if not math.isfinite(v):
        raise _err(family, name, f"must be finite, got {v!r}")
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise _err(family, name, f"must be {'>' if lo_open else '>='} {lo:g}, got {v:g}")
    if hi is not None and v > hi:
        raise _err(family, name, f"must be <= {hi:g}, got {v:g}")
    return v


def _check_int(family, name, v, lo=None, hi=None):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        if isinstance(v, (float, np.floating)) and float(v).is_integer():
            v = int(v)
        else:
            raise _err(family, name, f"must be an integer, got {v!r}")
    v = int(v)
    if lo is not None and v < lo:
        raise _err(family, name, f"must be >= {lo}, got {v}")
    if hi is not None and v > hi:
        raise _err(family, name, f"must be <= {hi}, got {v}")
    return v


# --------------------------------------------------------------------------- rasteriser
def _rasterise(points: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Centre ``points`` (M, 2) [x, y] on their weighted centroid and splat them bilinearly.

    Returns the smallest odd, centred, float32 kernel holding the mass, normalised to sum 1.
    """
    w = np.asarray(weights, dtype=np.float64)
    total = w.sum()
    if not np.isfinite(total) or total <= 0:
        raise ShiftlabError("kernel path has no positive weight")
    w = w / total
    p = np.asarray(points, dtype=np.float64)
    p = p - (w[:, None] * p).sum(axis=0)
    # Snap float dust (cos 90 deg = 6e-17) so exact cases stay exact.
    p = np.round(p, 9)
    half = int(math.ceil(np.abs(p).max(initial=0.0))) + 1
    if 2 * half + 1 > MAX_AUTO_SIZE:
        raise ShiftlabError(
            f"kernel extent {2 * np.abs(p).max():.1f} px exceeds the {MAX_AUTO_SIZE} px limit"
        )
    size = 2 * half + 1
    gx = p[:, 0] + half
    gy = p[:, 1] + half
    x0 = np.floor(gx)
    y0 = np.floor(gy)
    fx = gx - x0
    fy = gy - y0
    x0 = x0.astype(np.intp)
    y0 = y0.astype(np.intp)
    idx = y0 * size + x0
    acc = np.bincount(idx, w * (1 - fx) * (1 - fy), minlength=size * size + size + 1)
    acc += np.bincount(idx + 1, w * fx * (1 - fy), minlength=acc.size)[: acc.size]
    acc += np.bincount(idx + size, w * (1 - fx) * fy, minlength=acc.size)[: acc.size]
    acc += np.bincount(idx + size + 1, w * fx * fy, minlength=acc.size)[: acc.size]
    k = acc[: size * size].reshape(size, size)
    k[k < _DUST] = 0.0
    return _finish(k)


def _finish(k: np.ndarray) -> np.ndarray:
    """Crop to the smallest centred odd square holding the mass; float32, sum 1."""
    size = k.shape[0]
    c = size // 2
    rows = np.nonzero(k.any(axis=1))[0]
    cols = np.nonzero(k.any(axis=0))[0]
    r = int(max(np.abs(rows - c).max(initial=0), np.abs(cols - c).max(initial=0)))
    k = k[c - r : c + r + 1, c - r : c + r + 1]
    k = (k / k.sum()).astype(np.float32)
    k /= k.sum(dtype=np.float64)
    return k


def _fit(k: np.ndarray, size: int | None) -> np.ndarray:
    """Pad (or centrally crop and renormalise) a rendered kernel to ``size``."""
    if size is None:
        return k.copy()
    size = _check_int("render", "size", size, lo=1)
    if size % 2 == 0:
        raise ShiftlabError(f"kernel size must be odd, got {size}")
    n = k.shape[0]
    if size == n:
        return k.copy()
    if size > n:
        out = np.zeros((size, size), dtype=np.float32)
        o = (size - n) // 2
        out[o : o + n, o : o + n] = k
        return out
    o = (n - size) // 2
    # a copy: the cached render is read-only, and a 1x1 crop is already contiguous (no copy)
    out = np.array(k[o : o + size, o : o + size], dtype=np.float32, order="C", copy=True)
    s = out.sum(dtype=np.float64)
    if s <= 0:  # all mass outside the window: keep a delta so the result is still a blur kernel
        out[size // 2, size // 2] = 1.0
        return out
    out /= s
    return out


# --------------------------------------------------------------------------- families
class Kernel:
    """Base class of the kernel families (frozen dataclasses)."""

    family: ClassVar[str] = ""

    def to_record(self) -> dict[str, Any]:
        """A JSON-serialisable dict with a ``"family"`` key; :func:`from_record` inverts it."""
        rec: dict[str, Any] = {"family": self.family}
        for f in fields(self):  # type: ignore[arg-type]
            rec[f.name] = getattr(self, f.name)
        return rec

    def render(self, size: int | None = None) -> np.ndarray:
        """The kernel as float32 ``(k, k)``, ``k`` odd, centred, non-negative, summing to 1.

        ``size=None`` gives the smallest odd size that holds the whole kernel. A larger odd
        ``size`` zero-pads around the centre; a smaller one crops centrally and renormalises
        (the centring guarantee then holds only approximately).
        """
        return _fit(_render_cached(self), size)

    @property
    def natural_size(self) -> int:
        """Side of ``render()`` with ``size=None``."""
        return _render_cached(self).shape[0]

    def _render(self) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


@functools.lru_cache(maxsize=8192)
def _render_cached(kernel: Kernel) -> np.ndarray:
    k = kernel._render()
    k.setflags(write=False)
    return k


@dataclass(frozen=True)
class Linear(Kernel):
    """Straight motion blur, sub-pixel and anti-aliased.

    Args:
        length: blur extent in pixels (>= 0): the continuous path runs over ``length`` px, so
            ``Linear(L, 0)`` for odd integer ``L`` has the mass of albumentations' ``L``-pixel
            horizontal line on the centre row (plus half-pixel soft ends from the
            anti-aliasing). ``length=0`` is the identity (a delta).
        angle: orientation in degrees, ``(cos a, sin a)`` in (column, row) coordinates as in
            albumentations ``create_motion_kernel`` (0 = horizontal, 90 = vertical).
        direction: in [-1, 1]; 0 spreads the weight evenly along the segment. Toward +1 the
            blur extends one-sidedly in the ``+angle`` direction: the weight ramps linearly
            from the backward end (heaviest) to the forward end (zero at +1), i.e. a fading
            trail "•→" as albumentations draws it; -1 is the mirror image ("←•").

    Why not albumentations' exact meaning of ``direction``: there, a one-sided kernel is a
    uniform segment from the centre pixel to one end, i.e. a blur plus a translation of the
    image by up to ``length / 2``. Our kernels are centred (no translation: labels, boxes and
    the train/dev alignment stay put), and a centred uniform segment is symmetric whatever its
    placement, so the asymmetry is expressed as the weight profile instead.
    """

    length: float
    angle: float
    direction: float = 0.0

    family: ClassVar[str] = "linear"

    def __post_init__(self):
        f = "linear"
        object.__setattr__(self, "length", _check_float(f, "length", self.length, lo=0.0, hi=MAX_AUTO_SIZE - 4))
        object.__setattr__(self, "angle", _check_float(f, "angle", self.angle))
        object.__setattr__(self, "direction", _check_float(f, "direction", self.direction, lo=-1.0, hi=1.0))

    def _render(self) -> np.ndarray:
        L = self.length
        if L <= 0:
            return np.ones((1, 1), dtype=np.float32)
        n = max(2, int(math.ceil(L * SAMPLES_PER_PX)))
        s = (np.arange(n) + 0.5) / n * 2.0 - 1.0  # midpoints in [-1, 1]
        w = 1.0 - self.direction * s
        a = math.radians(self.angle)
        dx, dy = math.cos(a), math.sin(a)
        t = s * (L / 2.0)
        pts = np.stack([t * dx, t * dy], axis=1)
        return _rasterise(pts, w)


@dataclass(frozen=True)
class Shake(Kernel):
    """Camera-shake blur after Boracchi & Foi 2012 (DeblurGAN's trajectory generator).

    The camera path is a 2-D random walk of ``n_steps`` points at constant speed whose
    velocity is carried over from step to step (inertia) and changed by

    * Gaussian jitter: ``anxiety * jitter * N(0, 1)`` (complex) per step,
    * a centripetal pull back toward the start: ``-anxiety * centripetal * x`` (x in px),
    * impulsive reversals (abrupt shakes) with probability ``impulse_prob * anxiety`` per step:
      the velocity turns by 180 deg +- 0.5 rad.

    These are B&F's update rules with B&F's parameter names (B&F's "expl" is ``anxiety``,
    "gaussian_shake" is ``jitter``, "prob_big_shake" is ``impulse_prob``). B&F use 2000 steps;
    for other ``n_steps`` the per-step rates are rescaled (jitter std by sqrt(2000/(n-1)),
    centripetal pull and impulse probability by 2000/(n-1)) so the statistics of the path do not
    depend on ``n_steps``. The whole path has length ``max_length`` px (B&F's ``max_len``); the
    PSF integrates the first ``exposure`` fraction of it (B&F's T), so the blur path is
    ``exposure * max_length`` px long and its extent is at most that.

    The path is a deterministic function of the record: every random draw comes from
    ``numpy.random.default_rng(seed)`` (initial heading uniform in [0, 360) degrees).
    """

    max_length: float = 15.0
    exposure: float = 1.0
    anxiety: float = 0.005
    jitter: float = 5.0
    centripetal: float = 0.35
    impulse_prob: float = 0.1
    n_steps: int = 512
    seed: int = 0

    family: ClassVar[str] = "shake"

    def __post_init__(self):
        f = "shake"
        chk = [
            ("max_length", dict(lo=0.0, hi=MAX_AUTO_SIZE - 4)),
            ("exposure", dict(lo=0.0, hi=1.0, lo_open=True)),
            ("anxiety", dict(lo=0.0, hi=1.0)),
            ("jitter", dict(lo=0.0, hi=1000.0)),
            ("centripetal", dict(lo=0.0, hi=100.0)),
            ("impulse_prob", dict(lo=0.0, hi=1000.0)),
        ]
        for name, kw in chk:
            object.__setattr__(self, name, _check_float(f, name, getattr(self, name), **kw))
        object.__setattr__(self, "n_steps", _check_int(f, "n_steps", self.n_steps, lo=2, hi=100_000))
        object.__setattr__(self, "seed", _check_int(f, "seed", self.seed, lo=0, hi=2**63 - 1))

    def trajectory(self) -> np.ndarray:
        """The full camera path: complex array (n_steps,), x + iy in px, starting at 0."""
        return _shake_path(self.max_length, self.anxiety, self.jitter, self.centripetal,
                           self.impulse_prob, self.n_steps, self.seed).copy()

    def _render(self) -> np.ndarray:
        path = _shake_path(self.max_length, self.anxiety, self.jitter, self.centripetal,
                           self.impulse_prob, self.n_steps, self.seed)
        if self.max_length <= 0:
            return np.ones((1, 1), dtype=np.float32)
        n = self.n_steps
        # Dense, uniform-in-time samples over [0, exposure * (n - 1)] steps (constant speed,
        # so uniform along the path too), linearly interpolated between path points.
        step_len = self.max_length / (n - 1)
        span = self.exposure * (n - 1)
        m = max(2, int(math.ceil(span * step_len * SAMPLES_PER_PX)))
        tau = (np.arange(m) + 0.5) / m * span
        grid = np.arange(n, dtype=np.float64)
        xs = np.interp(tau, grid, path.real)
        ys = np.interp(tau, grid, path.imag)
        return _rasterise(np.stack([xs, ys], axis=1), np.ones(m))


@functools.lru_cache(maxsize=4096)
def _shake_path(max_length, anxiety, jitter, centripetal, impulse_prob, n_steps, seed) -> np.ndarray:
    rng = np.random.default_rng(seed)
    steps = n_steps - 1
    heading = rng.uniform(0.0, 2.0 * math.pi)
    xi = rng.standard_normal((steps, 2))
    u = rng.random(steps)
    turn = rng.random(steps) - 0.5
    scale = BF_STEPS / steps
    p_imp = min(1.0, impulse_prob * anxiety * scale)
    noise = anxiety * jitter * math.sqrt(scale)
    pull = anxiety * centripetal * scale
    step = max_length / steps if steps else 0.0
    out = np.zeros(n_steps, dtype=np.complex128)
    if step <= 0:
        out.setflags(write=False)
        return out
    v = complex(math.cos(heading), math.sin(heading)) * step
    x = 0j
    xi_c = (xi[:, 0] + 1j * xi[:, 1]).tolist()
    u = u.tolist()
    turn = turn.tolist()
    for t in range(steps):
        dv = (noise * xi_c[t] - pull * x) * step
        if u[t] < p_imp:
            dv += 2.0 * v * complex(math.cos(math.pi + turn[t]), math.sin(math.pi + turn[t]))
        nv = v + dv
        a = abs(nv)
        if a > 0:  # (an exact cancellation keeps the old velocity)
            v = nv * (step / a)
        x = x + v
        out[t + 1] = x
    out.setflags(write=False)
    return out


FAMILIES: dict[str, type[Kernel]] = {"linear": Linear, "shake": Shake}


def from_record(record: Mapping[str, Any]) -> Kernel:
    """Rebuild a kernel from ``to_record()`` output (e.g. after a JSON round trip)."""
    if isinstance(record, Kernel):
        return record
    if not isinstance(record, Mapping):
        raise ShiftlabError(f"kernel record must be a mapping, got {type(record).__name__}")
    fam = record.get("family")
    if fam not in FAMILIES:
        raise ShiftlabError(
            f"kernel record: unknown family {fam!r} (expected one of {', '.join(sorted(FAMILIES))})"
        )
    cls = FAMILIES[fam]
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    extra = sorted(set(record) - names - {"family"})
    if extra:
        raise ShiftlabError(f"{fam} kernel record: unknown key(s) {', '.join(map(repr, extra))}")
    try:
        return cls(**{k: v for k, v in record.items() if k != "family"})
    except TypeError as e:  # missing required field
        raise ShiftlabError(f"{fam} kernel record: {e}") from None


def as_kernel(obj) -> Kernel:
    """A :class:`Kernel` from a kernel, a record dict or its JSON text."""
    if isinstance(obj, Kernel):
        return obj
    if isinstance(obj, str):
        try:
            obj = json.loads(obj)
        except json.JSONDecodeError as e:
            raise ShiftlabError(f"kernel record is not valid JSON: {e}") from None
    return from_record(obj)


def vector(kernel, size: int) -> np.ndarray:
    """The kernel rendered at a fixed odd ``size`` and flattened: float32 ``(size * size,)``.

    ``kernel`` is a :class:`Kernel`, a record dict, or an already rendered 2-D array (padded or
    cropped the same way). Kernels larger than ``size`` are cropped centrally and renormalised.
    """
    if isinstance(kernel, np.ndarray):
        k = np.asarray(kernel, dtype=np.float32)
        if k.ndim != 2 or k.shape[0] != k.shape[1] or k.shape[0] % 2 == 0:
            raise ShiftlabError(f"kernel array must be square with odd side, got shape {k.shape}")
        return _fit(k, size).ravel()
    return as_kernel(kernel).render(size).ravel()


def render_many(kernels, size: int | None = None) -> list[np.ndarray]:
    """Render a sequence of kernels / records (each at its natural size when ``size`` is None)."""
    return [as_kernel(k).render(size) for k in kernels]


# --------------------------------------------------------------------------- sampling
#: Default ranges for :func:`sample` (proposed for params.yaml). ``[lo, hi]`` draws uniformly,
#: a scalar is used as is. Sized for small images (28x28 .. 64x64); scale lengths with the
#: image for larger ones.
DEFAULT_SAMPLE_CFG: dict[str, Any] = {
    "families": {"linear": 0.5, "shake": 0.5},
    "linear": {
        "length": [3.0, 15.0],
        "angle": [0.0, 180.0],
        "direction": [-1.0, 1.0],
    },
    "shake": {
        "max_length": [5.0, 25.0],
        "exposure": [0.3, 1.0],
        "anxiety": [0.001, 0.01],
        "jitter": [0.0, 10.0],
        "centripetal": [0.0, 0.7],
        "impulse_prob": [0.0, 0.2],
        "n_steps": 512,
    },
}

_SAMPLED_FIELDS = {
    "linear": ["length", "angle", "direction"],
    "shake": ["max_length", "exposure", "anxiety", "jitter", "centripetal", "impulse_prob", "n_steps"],
}


def _merge_cfg(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in DEFAULT_SAMPLE_CFG.items()}
    if cfg is None:
        return out
    if not isinstance(cfg, Mapping):
        raise ShiftlabError(f"kernel sample cfg must be a mapping, got {type(cfg).__name__}")
    for key, val in cfg.items():
        if key not in out:
            raise ShiftlabError(
                f"kernel sample cfg: unknown key {key!r} (expected families, {', '.join(_SAMPLED_FIELDS)})"
            )
        if not isinstance(val, Mapping):
            raise ShiftlabError(f"kernel sample cfg: {key!r} must be a mapping, got {val!r}")
        if key == "families":
            out[key] = dict(val)  # replaces the weights wholesale
            continue
        for name, rng_spec in val.items():
            if name not in _SAMPLED_FIELDS[key]:
                raise ShiftlabError(
                    f"kernel sample cfg: unknown key '{key}.{name}' "
                    f"(expected one of {', '.join(_SAMPLED_FIELDS[key])})"
                )
            out[key][name] = rng_spec
    return out


def _spec_range(key: str, spec) -> tuple[float, float]:
    """``(lo, hi)`` of a cfg value: ``[lo, hi]`` or a constant (``lo == hi``), validated."""
    if isinstance(spec, (list, tuple)):
        if len(spec) != 2:
            raise ShiftlabError(f"kernel sample cfg: '{key}' must be [lo, hi] or a number, got {spec!r}")
        lo, hi = (_check_float("sample cfg", key, s) for s in spec)
        if hi < lo:
            raise ShiftlabError(f"kernel sample cfg: '{key}' range [{lo:g}, {hi:g}] has lo > hi")
        return lo, hi
    v = _check_float("sample cfg", key, spec)
    return v, v


def _draw(rng: np.random.Generator, key: str, spec) -> float:
    if isinstance(spec, (list, tuple)):
        lo, hi = _spec_range(key, spec)
        return float(rng.uniform(lo, hi))
    return _check_float("sample cfg", key, spec)


def _family_weights(c: Mapping[str, Any]) -> tuple[list[str], np.ndarray]:
    """Sorted family names of a merged cfg and their validated weights (not all 0)."""
    fam_w = c["families"]
    names = sorted(fam_w)
    for n in names:
        if n not in FAMILIES:
            raise ShiftlabError(
                f"kernel sample cfg: unknown family 'families.{n}' (expected {', '.join(FAMILIES)})"
            )
    w = np.array([_check_float("sample cfg", f"families.{n}", fam_w[n], lo=0.0) for n in names])
    if w.sum() <= 0:
        raise ShiftlabError("kernel sample cfg: 'families' weights must not all be 0")
    return names, w


def check_sample_cfg(cfg: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Validate a :func:`sample` cfg completely; return it merged over :data:`DEFAULT_SAMPLE_CFG`.

    :func:`sample` only validates what one draw touches (the family it picked, the values it
    drew). This checks the form of every value of every family and builds every family of
    positive weight at both ends of every range (each parameter's valid set is an interval, so
    both ends valid means every draw is valid): a cfg that passes here never makes
    :func:`sample` fail. Errors are one line naming the key.
    """
    c = _merge_cfg(cfg)
    names, w = _family_weights(c)
    weight = dict(zip(names, w))
    for fam in FAMILIES:  # every family's values must be well formed; built only when weighted
        ranges = {name: _spec_range(f"{fam}.{name}", c[fam][name]) for name in _SAMPLED_FIELDS[fam]}
        if weight.get(fam, 0.0) <= 0:
            continue
        for end in (0, 1):
            params = {}
            for name, r in ranges.items():
                params[name] = int(round(r[end])) if name == "n_steps" else r[end]
            try:
                FAMILIES[fam](**params)
            except ShiftlabError as e:
                which = "low" if end == 0 else "high"
                raise ShiftlabError(f"kernel sample cfg: {e} (at the {which} end of the '{fam}' ranges)") from None
    return c


def sample(rng_or_seed, cfg: Mapping[str, Any] | None = None) -> Kernel:
    """Draw one kernel from the ranges in ``cfg``: a pure function of the seed.

    ``rng_or_seed`` is a ``numpy.random.Generator`` (consumed) or a non-negative int seed
    (use :func:`shiftlab.seeding.sample_seed` ``(seed, index, "blur_kernel")`` per sample).
    ``cfg`` keys (missing ones take :data:`DEFAULT_SAMPLE_CFG`):

    * ``families``: weight per family, e.g. ``{"linear": 0.5, "shake": 0.5}`` (normalised),
    * ``linear``: ``length`` px [3, 15], ``angle`` deg [0, 180], ``direction`` [-1, 1],
    * ``shake``: ``max_length`` px [5, 25], ``exposure`` [0.3, 1], ``anxiety`` [0.001, 0.01],
      ``jitter`` [0, 10], ``centripetal`` [0, 0.7], ``impulse_prob`` [0, 0.2] (B&F's ranges
      for the last three, DeblurGAN's for anxiety), ``n_steps`` 512.

    Each value is ``[lo, hi]`` (uniform) or a constant. Angles [0, 180) with direction in
    [-1, 1] cover every orientation once. The shake ``seed`` is drawn from ``rng``.
    """
    if isinstance(rng_or_seed, np.random.Generator):
        rng = rng_or_seed
    else:
        seed = _check_int("sample", "seed", rng_or_seed, lo=0)
        rng = np.random.default_rng(seed)
    c = _merge_cfg(cfg)
    names, w = _family_weights(c)
    fam = names[int(rng.choice(len(names), p=w / w.sum()))]
    params = {}
    for name in _SAMPLED_FIELDS[fam]:
        v = _draw(rng, f"{fam}.{name}", c[fam][name])
        params[name] = int(round(v)) if name == "n_steps" else v
    if fam == "shake":
        params["seed"] = int(rng.integers(0, 2**32))
    try:
        return FAMILIES[fam](**params)
    except ShiftlabError as e:
        raise ShiftlabError(f"kernel sample cfg: {e}") from None
