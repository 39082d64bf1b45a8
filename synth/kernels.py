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

Batches. :func:`sample_batch` and :func:`render_batch` draw and render the kernels of a whole
batch at once (numpy, vectorised over the batch; see the section "batched generation" below)
and give exactly the records and float32 arrays of the per-row path
``sample(default_rng(seed), cfg).render()``, bit for bit; :func:`sample_seeds` is
:func:`shiftlab.seeding.sample_seed` over arrays. The ``synth blur`` stage and
``OnTheFlyBlur`` use them; :func:`shiftlab.synth.blur.regenerate` keeps the per-row path.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

from shiftlab import paramschema
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
    "KernelBatch",
    "sample_seeds",
    "sample_batch",
    "render_batch",
    "stack_batch",
    "seed_sequence_state",
    "pcg64_seed_state",
    "pcg64_raw",
    "raw_to_double",
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
    """``cfg`` over :data:`DEFAULT_SAMPLE_CFG` (``families`` replaces the weights whole; each family's ranges
    merge key by key); an unknown key is a one-line error."""
    return paramschema.merge_known(DEFAULT_SAMPLE_CFG, cfg, "kernel sample cfg", replace=("families",))


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
    if not isinstance(fam_w, Mapping):
        raise ShiftlabError(f"kernel sample cfg.families: must be a mapping family -> weight, got {fam_w!r}")
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


# --------------------------------------------------------------------------- batched generation
#
# Sampling and rendering a whole batch of kernels at once, giving exactly (bit for bit) the
# records and float32 arrays of the per-row path ``sample(default_rng(s), cfg).render()``:
#
# * numpy's ``SeedSequence`` and ``PCG64`` seeding are re-implemented on uint32 / uint64 arrays
#   (:func:`seed_sequence_state`, :func:`pcg64_seed_state`), so the per-row seeds
#   (:func:`sample_seeds` = :func:`shiftlab.seeding.sample_seed` element-wise) and the first
#   draws of every row's generator (the family and the parameters) cost a few vector operations
#   per batch instead of two ``SeedSequence`` objects per row;
# * a camera-shake path needs ~2,000 draws of its own generator (Gaussian jitter through numpy's
#   ziggurat, uniforms), which stay numpy's C code: one reused ``PCG64`` whose state is set per
#   kernel (the state computed vectorised), so they are the same numbers as ``default_rng(seed)``;
# * the B&F recurrence runs vectorised over the batch (one loop over the path steps, not over
#   kernels) with the same IEEE operations, in the same order, as the Python complex arithmetic
#   of :func:`_shake_path` (products with the zero imaginary part of a real scalar are exact
#   zeros, the modulus is libm ``hypot`` as in ``abs(complex)``, cos/sin come from ``math``);
# * rasterising is :func:`_rasterise` on padded ``(kernels, points)`` arrays: sequential sums
#   where numpy's reduction is sequential (the centroid), row-wise pairwise sums where it is
#   pairwise (a grouped ``sum(axis=1)`` reproduces numpy's 1-D pairwise summation), one
#   ``bincount`` per corner over all kernels (a bin only ever receives its own kernel's points,
#   in the same order), and the crop / normalisation of :func:`_finish` per group of equal size.
#
# ``tests/test_kernels_batched.py`` checks the equality over thousands of recipes and cfgs.

_M32 = 0xFFFFFFFF
_M64 = 0xFFFFFFFFFFFFFFFF
# numpy/random/bit_generator.pyx (SeedSequence)
_SS_POOL = 4
_SS_INIT_A, _SS_MULT_A = 0x43B0D7E5, 0x931E8875
_SS_INIT_B, _SS_MULT_B = 0x8B51F9DD, 0x58F38DED
_SS_MIX_L, _SS_MIX_R = 0xCA01F9DD, 0x4973F715
# numpy/random/src/pcg64 (PCG_DEFAULT_MULTIPLIER_128)
_PCG_MULT = (2549297995355413924 << 64) + 4865540595714422341


def _u32(v: int) -> np.uint32:
    return np.uint32(v & _M32)


def _hashmix(value: np.ndarray, hc: list) -> np.ndarray:
    value = value ^ _u32(hc[0])
    hc[0] = (hc[0] * _SS_MULT_A) & _M32
    value = value * _u32(hc[0])
    return value ^ (value >> np.uint32(16))


def _mix(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    r = x * _u32(_SS_MIX_L) - y * _u32(_SS_MIX_R)
    return r ^ (r >> np.uint32(16))


def seed_sequence_state(words: np.ndarray, n_words: int) -> np.ndarray:
    """``SeedSequence(entropy).generate_state(n_words, np.uint32)`` for every row of ``words``.

    ``words``: ``(B, W)`` uint32, the entropy of each row as numpy assembles it (every int of
    the entropy split into 32-bit words, least significant first, ``0`` as one word). Returns
    ``(B, n_words)`` uint32. Row-wise equal to numpy's ``SeedSequence`` (no spawn key).
    """
    words = np.asarray(words, dtype=np.uint32)
    if words.ndim != 2:
        raise ShiftlabError(f"seed_sequence_state: words must be (B, W), got shape {words.shape}")
    B, W = words.shape
    hc = [_SS_INIT_A]
    zero = np.zeros(B, dtype=np.uint32)
    with np.errstate(over="ignore"):
        pool = [_hashmix(words[:, i] if i < W else zero, hc) for i in range(_SS_POOL)]
        for i_src in range(_SS_POOL):
            for i_dst in range(_SS_POOL):
                if i_src != i_dst:
                    pool[i_dst] = _mix(pool[i_dst], _hashmix(pool[i_src], hc))
        for i_src in range(_SS_POOL, W):
            for i_dst in range(_SS_POOL):
                pool[i_dst] = _mix(pool[i_dst], _hashmix(words[:, i_src], hc))
        out = np.empty((B, n_words), dtype=np.uint32)
        h = _SS_INIT_B
        for i in range(n_words):
            v = pool[i % _SS_POOL] ^ _u32(h)
            h = (h * _SS_MULT_B) & _M32
            v = v * _u32(h)
            out[:, i] = v ^ (v >> np.uint32(16))
    return out


def _words64(seeds: np.ndarray) -> np.ndarray:
    """Entropy words of non-negative ints < 2**64 (zero-padded to 2 words: numpy's mixing of a
    missing word and of a 0 word is the same, so the padding does not change the state)."""
    s = np.asarray(seeds, dtype=np.uint64)
    return np.stack([(s & np.uint64(_M32)).astype(np.uint32), (s >> np.uint64(32)).astype(np.uint32)], axis=1)


def sample_seeds(seed: int, index, *purpose) -> np.ndarray:
    """:func:`shiftlab.seeding.sample_seed` element-wise over arrays: int64 array of 63-bit seeds.

    ``index`` and every ``purpose`` part may be an int array (broadcast together) or a scalar;
    strings are hashed as :func:`shiftlab.seeding.sample_seed` hashes them. Int parts must be
    non-negative; values of 2**32 or more take the per-element path (same result).
    """
    import zlib

    parts = [seed, index, *purpose]
    cols = []
    for part in parts:
        if isinstance(part, str):
            cols.append(np.int64(zlib.crc32(part.encode("utf-8"))))
        else:
            a = np.asarray(part)
            if a.dtype.kind not in "iu":
                raise ShiftlabError(f"sample_seeds: parts must be ints or strings, got {a.dtype}")
            if a.size and int(a.min()) < 0:
                raise ShiftlabError("sample_seeds: int parts must be non-negative")
            cols.append(a.astype(np.int64))
    cols = np.broadcast_arrays(*cols)
    shape = cols[0].shape
    flat = [c.reshape(-1) for c in cols]
    n = flat[0].size
    if n == 0:
        return np.zeros(shape, dtype=np.int64)
    if max(int(c.max()) for c in flat) > _M32:
        from shiftlab import seeding

        args = [p if isinstance(p, str) else None for p in parts]
        out = np.array([seeding.sample_seed(*[a if a is not None else int(c[i]) for a, c in zip(args, flat)])
                        for i in range(n)], dtype=np.int64)
        return out.reshape(shape)
    words = np.stack([c.astype(np.uint32) for c in flat], axis=1)
    st = seed_sequence_state(words, 2).astype(np.uint64)
    s = (st[:, 0] | (st[:, 1] << np.uint64(32))) >> np.uint64(1)
    return s.astype(np.int64).reshape(shape)


# 128-bit arithmetic on (hi, lo) pairs of uint64 arrays, modulo 2**128.
def _mulhi64(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    m = np.uint64(_M32)
    s = np.uint64(32)
    a0, a1 = a & m, a >> s
    b0, b1 = b & m, b >> s
    p00, p01, p10, p11 = a0 * b0, a0 * b1, a1 * b0, a1 * b1
    mid = (p00 >> s) + (p01 & m) + (p10 & m)
    return p11 + (p01 >> s) + (p10 >> s) + (mid >> s)


def _mul128(ah, al, bh: int, bl: int):
    bh, bl = np.uint64(bh), np.uint64(bl)
    return _mulhi64(al, np.full_like(al, bl)) + al * bh + ah * bl, al * bl


def _add128(ah, al, bh, bl):
    lo = al + bl
    return ah + bh + (lo < al).astype(np.uint64), lo


_PCG_MH, _PCG_ML = _PCG_MULT >> 64, _PCG_MULT & _M64


def pcg64_seed_state(seeds) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The internal state of ``numpy.random.PCG64(seed)`` for every seed (ints in [0, 2**64)).

    Returns ``(state_hi, state_lo, inc_hi, inc_lo)`` uint64 arrays: ``PCG64(s).state["state"]``
    is ``state_hi << 64 | state_lo`` and ``["inc"]`` likewise.
    """
    st = seed_sequence_state(_words64(seeds), 8).astype(np.uint64)
    v = st[:, 0::2] | (st[:, 1::2] << np.uint64(32))  # generate_state(4, uint64)
    sh, sl, ih, il = v[:, 0], v[:, 1], v[:, 2], v[:, 3]
    with np.errstate(over="ignore"):
        inc_h = (ih << np.uint64(1)) | (il >> np.uint64(63))
        inc_l = (il << np.uint64(1)) | np.uint64(1)
        # state = 0; step (state = inc); state += seed; step
        h, l = _add128(inc_h, inc_l, sh, sl)
        h, l = _mul128(h, l, _PCG_MH, _PCG_ML)
        h, l = _add128(h, l, inc_h, inc_l)
    return h, l, inc_h, inc_l


def pcg64_raw(seeds, k: int) -> np.ndarray:
    """The first ``k`` outputs of ``PCG64(seed).random_raw()`` for every seed: ``(B, k)`` uint64."""
    h, l, ih, il = pcg64_seed_state(seeds)
    out = np.empty((len(h), k), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(k):
            h, l = _mul128(h, l, _PCG_MH, _PCG_ML)
            h, l = _add128(h, l, ih, il)
            rot = h >> np.uint64(58)
            x = h ^ l
            out[:, j] = (x >> rot) | (x << ((np.uint64(64) - rot) & np.uint64(63)))
    return out


def raw_to_double(raw: np.ndarray) -> np.ndarray:
    """numpy's ``next_double``: ``(raw >> 11) * 2**-53`` (what ``Generator.random()`` returns)."""
    return (raw >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


class KernelBatch:
    """Kernels drawn by :func:`sample_batch`: parameter arrays per family, in row order.

    ``family``: int array of indices into :attr:`names` (sorted family names); ``params[name]``:
    dict of float64 arrays (``n_steps`` and ``seed`` int64) over the rows of that family, in row
    order (``rows[name]`` are those rows). :meth:`records` gives ``kernel.to_record()`` of every
    row, :meth:`kernels` the kernel objects, :func:`render_batch` the arrays.
    """

    def __init__(self, n: int, names: list[str], family: np.ndarray, params: dict[str, dict[str, np.ndarray]]):
        self.n = n
        self.names = names
        self.family = family
        self.params = params
        self.rows = {f: np.flatnonzero(family == i) for i, f in enumerate(names)}

    def __len__(self) -> int:
        return self.n

    def records(self) -> list[dict[str, Any]]:
        """``to_record()`` of every kernel (plain Python floats / ints, the per-row values)."""
        out: list = [None] * self.n
        for fam, rows in self.rows.items():
            if not len(rows):
                continue
            fnames = [f.name for f in fields(FAMILIES[fam])]  # type: ignore[arg-type]
            cols = [self.params[fam][k].tolist() for k in fnames]
            for r, vals in zip(rows.tolist(), zip(*cols)):
                rec = {"family": fam}
                rec.update(zip(fnames, vals))
                out[r] = rec
        return out

    def kernels(self) -> list[Kernel]:
        """The kernel objects (validated dataclasses, as :func:`sample` returns them)."""
        return [FAMILIES[r["family"]](**{k: v for k, v in r.items() if k != "family"}) for r in self.records()]

    def select(self, rows) -> "KernelBatch":
        """The sub-batch of the given rows (in that order)."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        fam = self.family[rows]
        params = {}
        for i, f in enumerate(self.names):
            pos = np.searchsorted(self.rows[f], rows[fam == i])
            params[f] = {k: v[pos] for k, v in self.params[f].items()}
        return KernelBatch(len(rows), self.names, fam, params)


@functools.lru_cache(maxsize=64)
def _cfg_plan(cfg_json: str):
    """(names, cdf of the family draw, per family [(field, lo, hi, drawn)]) of a cfg.

    Validated as far as draws can reach (a family of weight 0 is never drawn, so, as with
    :func:`sample`, its values are not looked at): the form of every value of a weighted family,
    and the family built at both ends of its ranges (so no draw can fail later)."""
    c = _merge_cfg(json.loads(cfg_json))
    names, w = _family_weights(c)
    p = w / w.sum()
    cdf = p.cumsum()  # Generator.choice(len(names), p=p)
    cdf /= cdf[-1]
    specs = {}
    for fam, wf in zip(names, w):
        if wf <= 0:
            specs[fam] = []
            continue
        specs[fam] = [(name, *_spec_range(f"{fam}.{name}", c[fam][name]), isinstance(c[fam][name], (list, tuple)))
                      for name in _SAMPLED_FIELDS[fam]]
        for end, which in ((1, "low"), (2, "high")):  # t = (name, lo, hi, drawn)
            params = {t[0]: (int(round(t[end])) if t[0] == "n_steps" else t[end]) for t in specs[fam]}
            try:
                FAMILIES[fam](**params)
            except ShiftlabError as e:
                raise ShiftlabError(f"kernel sample cfg: {e} (at the {which} end of the '{fam}' ranges)") from None
    return names, cdf, specs


def _cfg_key(cfg) -> str:
    try:
        return json.dumps(cfg, sort_keys=True)
    except TypeError:
        raise ShiftlabError(f"kernel sample cfg must be a mapping of numbers and lists, got {cfg!r}") from None


def sample_batch(seeds, cfg: Mapping[str, Any] | None = None, *, skip: int = 0) -> KernelBatch:
    """``[sample(np.random.default_rng(s), cfg) for s in seeds]`` as one :class:`KernelBatch`.

    ``seeds``: non-negative ints (< 2**64), e.g. :func:`sample_seeds`. ``skip``: doubles drawn
    from each row's generator before the kernel (``OnTheFlyBlur`` draws one for ``p`` first).
    The whole cfg is validated (:func:`check_sample_cfg`) once. Equal, field for field, to the
    per-row :func:`sample` (tested).
    """
    seeds = np.asarray(seeds).reshape(-1)
    if seeds.size and (seeds.dtype.kind not in "iu" or int(seeds.min()) < 0):
        raise ShiftlabError("sample_batch: seeds must be non-negative integers")
    names, cdf, specs = _cfg_plan(_cfg_key(cfg))
    n = len(seeds)
    drawn = {f: sum(d for *_, d in s) for f, s in specs.items()}
    k = skip + 1 + max(drawn[f] + (f == "shake") for f in names)
    raw = pcg64_raw(seeds.astype(np.uint64), k) if n else np.zeros((0, k), np.uint64)
    dbl = raw_to_double(raw)
    fam = np.searchsorted(cdf, dbl[:, skip], side="right").astype(np.int64) if n else np.zeros(0, np.int64)
    params: dict[str, dict[str, np.ndarray]] = {}
    for i, f in enumerate(names):
        rows = np.flatnonzero(fam == i)
        p: dict[str, np.ndarray] = {}
        j = skip + 1
        for name, lo, hi, is_range in specs[f]:
            if is_range:
                v = lo + (hi - lo) * dbl[rows, j]  # Generator.uniform: low + range * next_double
                j += 1
            else:
                v = np.full(len(rows), lo)
            p[name] = np.rint(v).astype(np.int64) if name == "n_steps" else v
        if f == "shake":
            p["seed"] = (raw[rows, j] & np.uint64(_M32)).astype(np.int64)  # integers(0, 2**32): next_uint32
        params[f] = p
    return KernelBatch(n, list(names), fam, params)


def _batch_from_kernels(kernels_) -> KernelBatch:
    ks = [as_kernel(k) for k in kernels_]
    names = sorted(FAMILIES)
    fam = np.array([names.index(k.family) for k in ks], dtype=np.int64)
    params = {}
    for i, f in enumerate(names):
        sel = [k for k in ks if k.family == f]
        p = {}
        for fl in fields(FAMILIES[f]):  # type: ignore[arg-type]
            vals = [getattr(k, fl.name) for k in sel]
            p[fl.name] = np.array(vals, dtype=np.int64 if fl.name in ("n_steps", "seed") else np.float64)
        params[f] = p
    return KernelBatch(len(ks), names, fam, params)


_SHAKE_STATE_DICT = {"bit_generator": "PCG64", "state": {"state": 0, "inc": 0}, "has_uint32": 0, "uinteger": 0}


def _shake_paths(p: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """B&F paths of shake kernels (vectorised :func:`_shake_path`): (X, Y) of shape (B, steps+1).

    Row ``b`` holds the path of kernel ``b`` in its first ``n_steps[b]`` entries.
    """
    B = len(p["seed"])
    steps = p["n_steps"] - 1
    T = int(steps.max()) if B else 0
    # the kernels' own generators: heading, Gaussian jitter, impulse test and turn per step
    bg = np.random.PCG64(0)
    gen = np.random.Generator(bg)
    h, l, ih, il = pcg64_seed_state(p["seed"].astype(np.uint64))
    states = [(a << 64) | b for a, b in zip(h.tolist(), l.tolist())]
    incs = [(a << 64) | b for a, b in zip(ih.tolist(), il.tolist())]
    xi = np.zeros((B, T, 2))
    ut = np.empty((B, 2 * T))
    heading = np.empty(B)
    d = dict(_SHAKE_STATE_DICT)
    for b, (s, inc, n) in enumerate(zip(states, incs, steps.tolist())):
        d["state"] = {"state": s, "inc": inc}
        bg.state = d
        heading[b] = gen.random()
        gen.standard_normal(out=xi[b, :n])
        gen.random(out=ut[b, : 2 * n])
    heading *= 2.0 * math.pi  # uniform(0, 2 pi) = 0 + 2 pi * next_double
    u = ut[:, :T]
    short = T and (steps < T).any()
    if short:  # rows of shorter paths: their turn draws sit right after their n draws of u
        turn_raw = np.empty((B, T))
        for b, n in enumerate(steps.tolist()):
            turn_raw[b, :n] = ut[b, n : 2 * n]
            turn_raw[b, n:] = 0.0
            u[b, n:] = 2.0  # never an impulse past the end
    else:
        turn_raw = ut[:, T : 2 * T]
    scale = BF_STEPS / steps
    p_imp = np.minimum(1.0, p["impulse_prob"] * p["anxiety"] * scale)
    noise = p["anxiety"] * p["jitter"] * np.sqrt(scale)
    pull = p["anxiety"] * p["centripetal"] * scale
    step = p["max_length"] / steps
    # impulses: events (t, b) with u < p_imp; the turn factor 2 (cos, sin)(pi + turn) from libm
    ev_t, ev_b = np.nonzero(u.T < p_imp[None, :])
    ang = (math.pi + (turn_raw[ev_b, ev_t] - 0.5)).tolist()  # turn = random(steps) - 0.5
    ev_cs = np.array([[2.0 * math.cos(a) for a in ang], [2.0 * math.sin(a) for a in ang]]).reshape(2, -1)
    bounds = np.searchsorted(ev_t, np.arange(T + 1)).tolist()
    # the paths, (2, B, T + 1): each kernel's x and y contiguous (as the interpolation reads them);
    # step t writes column t + 1 (strided, but the lines of a few steps stay in cache)
    XYT = np.empty((2, B, T + 1))
    XYT[:, :, 0] = 0.0
    Xc = np.zeros((2, B))  # the current position x
    V = np.empty((2, B))
    V[0] = [math.cos(a) for a in heading.tolist()]
    V[1] = [math.sin(a) for a in heading.tolist()]
    V *= step
    D = np.empty((2, B))
    a = np.empty(B)
    q = np.empty(B)
    blk = 64
    with np.errstate(all="ignore"):
        for t in range(T):
            if t % blk == 0:  # noise * xi for the next steps, (blk, 2, B): small transposed blocks
                NXY = (xi[:, t : t + blk, :] * noise[:, None, None]).transpose(1, 2, 0).copy()
            # dv = (noise xi_t - pull x) * step
            np.multiply(pull, Xc, out=D)
            np.subtract(NXY[t % blk], D, out=D)
            D *= step
            e0, e1 = bounds[t], bounds[t + 1]
            if e1 > e0:  # dv += 2 v (cos, sin)(pi + turn), for the kernels with an impulse now
                ix = ev_b[e0:e1]
                vv = V[:, ix]
                cs = ev_cs[:, e0:e1]
                D[0, ix] += vv[0] * cs[0] - vv[1] * cs[1]
                D[1, ix] += vv[0] * cs[1] + vv[1] * cs[0]
            D += V  # nv = v + dv
            np.hypot(D[0], D[1], out=a)  # abs(nv)
            np.divide(step, a, out=q)
            np.multiply(D, q, out=V)  # v = nv * (step / |nv|)
            Xc += V  # x = x + v
            XYT[:, :, t + 1] = Xc
    X, Y = XYT[0], XYT[1]  # (B, T + 1)
    # |nv| == 0 (an exact cancellation: the scalar code keeps the old v) gives NaN here: redo those
    # kernels with the scalar code (never seen with sampled kernels)
    bad = np.flatnonzero(~np.isfinite(Xc).all(axis=0))
    for b in bad.tolist():
        path = _shake_path(float(p["max_length"][b]), float(p["anxiety"][b]), float(p["jitter"][b]),
                           float(p["centripetal"][b]), float(p["impulse_prob"][b]), int(p["n_steps"][b]),
                           int(p["seed"][b]))
        X[b] = 0.0
        Y[b] = 0.0
        X[b, : len(path)] = path.real
        Y[b, : len(path)] = path.imag
    return X, Y


def _pairwise_rows(w: np.ndarray, m: np.ndarray) -> np.ndarray:
    """``w[i, :m[i]].sum()`` (numpy's pairwise summation) for every row: grouped by ``m``."""
    out = np.empty(len(m))
    for mm in np.unique(m).tolist():
        rows = np.flatnonzero(m == mm)
        out[rows] = np.ascontiguousarray(w[rows, :mm]).sum(axis=1)
    return out


def _rasterise_batch(P: np.ndarray, W: np.ndarray, m: np.ndarray, total: np.ndarray) -> list:
    """:func:`_rasterise` of many kernels: P (B, M, 2) points, W (B, M) weights, m (B,) valid
    counts, total (B,) the weights' sums. Returns the float32 kernels (list of 2-D arrays).

    Callers pass kernels of similar ``m`` together (the padded arrays are ``max(m)`` wide)."""
    B, M = W.shape
    if B == 0:
        return []
    w = W / total[:, None]
    # centroid: numpy sums the (m, 2) products over axis 0 sequentially, as cumsum does
    wp = w[:, :, None] * P
    c = np.cumsum(wp, axis=1)[np.arange(B), m - 1]
    # from here on, the valid points only, kernel after kernel, in point order
    starts = np.concatenate(([0], np.cumsum(m)[:-1]))
    kb = np.repeat(np.arange(B), m)
    kp = np.arange(len(kb)) - starts[kb]
    flat = kb * M + kp
    p = P.reshape(B * M, 2)[flat]
    p -= c[kb]
    p *= 1e9  # np.round(p, 9): multiply by 10**9, rint, divide
    np.rint(p, out=p)
    p /= 1e9
    ext = np.maximum.reduceat(np.abs(p).max(axis=1), starts)
    half = np.ceil(ext).astype(np.int64) + 1
    if (2 * half + 1 > MAX_AUTO_SIZE).any():
        b = int(np.argmax(2 * half + 1 > MAX_AUTO_SIZE))
        raise ShiftlabError(f"kernel extent {2 * ext[b]:.1f} px exceeds the {MAX_AUTO_SIZE} px limit")
    size = 2 * half + 1
    region = size * size + size + 1
    off = np.concatenate(([0], np.cumsum(region)[:-1]))
    g = p + half[kb, None].astype(np.float64)
    g0 = np.floor(g)
    f = g - g0
    fx, fy = f[:, 0], f[:, 1]
    sz = size[kb]
    idx = off[kb] + g0[:, 1].astype(np.intp) * sz + g0[:, 0].astype(np.intp)
    wv = w.reshape(-1)[flat]
    gx, gy = 1 - fx, 1 - fy
    tot = int(region.sum())
    acc = np.bincount(idx, wv * gx * gy, minlength=tot)
    acc += np.bincount(idx + 1, wv * fx * gy, minlength=tot)[:tot]
    acc += np.bincount(idx + sz, wv * gx * fy, minlength=tot)[:tot]
    acc += np.bincount(idx + sz + 1, wv * fx * fy, minlength=tot)[:tot]
    out: list = [None] * B
    for s in np.unique(size).tolist():
        rows = np.flatnonzero(size == s)
        k = acc[off[rows][:, None] + np.arange(s * s)].reshape(len(rows), s, s)
        k[k < _DUST] = 0.0
        for r_, kk in zip(rows.tolist(), _finish_batch(k)):
            out[r_] = kk
    return out


#: kernels per rasterising bucket (kernels sorted by point count, so little padding)
_BUCKET = 256


def _buckets(m: np.ndarray):
    order = np.argsort(m, kind="stable")
    for i in range(0, len(order), _BUCKET):
        yield order[i : i + _BUCKET]


def _finish_batch(k: np.ndarray) -> list:
    """:func:`_finish` of a stack (g, size, size) of float64 kernels."""
    g, size, _ = k.shape
    c = size // 2
    dist = np.abs(np.arange(size) - c)
    rr = np.where(k.any(axis=2), dist, 0).max(axis=1)
    rc = np.where(k.any(axis=1), dist, 0).max(axis=1)
    r = np.maximum(rr, rc)
    out: list = [None] * g
    for rv in np.unique(r).tolist():
        sel = np.flatnonzero(r == rv)
        S = 2 * rv + 1
        if S * S > 8192:  # beyond numpy's reduction buffer: the per-kernel code (its summation order)
            for i in sel.tolist():
                out[i] = _finish(k[i].copy())
            continue
        crop = k[sel, c - rv : c + rv + 1, c - rv : c + rv + 1].reshape(len(sel), S * S)
        crop = crop / crop.sum(axis=1)[:, None]  # numpy sums a 2-D crop pairwise over its S*S values
        f = crop.astype(np.float32)
        s2 = f.astype(np.float64).sum(axis=1)
        f = (f / s2[:, None]).astype(np.float32)
        for i, kk in zip(sel.tolist(), f.reshape(len(sel), S, S)):
            out[i] = kk
    return out


def _render_linear(p: dict[str, np.ndarray]) -> list:
    L, d = p["length"], p["direction"]
    B = len(L)
    out: list = [None] * B
    for i in np.flatnonzero(L <= 0).tolist():
        out[i] = np.ones((1, 1), dtype=np.float32)
    pos = np.flatnonzero(L > 0)
    if not len(pos):
        return out
    a = np.radians(p["angle"])
    n_all = np.maximum(2, np.ceil(L * SAMPLES_PER_PX)).astype(np.int64)
    for sel in _buckets(n_all[pos]):
        rows = pos[sel]
        n, Lb, db = n_all[rows], L[rows], d[rows]
        M = int(n.max())
        s = (np.arange(M)[None, :] + 0.5) / n[:, None] * 2.0 - 1.0
        w = 1.0 - db[:, None] * s
        ab = a[rows].tolist()
        dx = np.array([math.cos(v) for v in ab])
        dy = np.array([math.sin(v) for v in ab])
        t = s * (Lb / 2.0)[:, None]
        P = np.stack([t * dx[:, None], t * dy[:, None]], axis=2)
        total = _pairwise_rows(w, n)
        for i, kk in zip(rows.tolist(), _rasterise_batch(P, w, n, total)):
            out[i] = kk
    return out


def _render_shake(p: dict[str, np.ndarray]) -> list:
    B = len(p["seed"])
    out: list = [None] * B
    ml = p["max_length"]
    for i in np.flatnonzero(ml <= 0).tolist():
        out[i] = np.ones((1, 1), dtype=np.float32)
    pos = np.flatnonzero(ml > 0)
    if not len(pos):
        return out
    q = {k: v[pos] for k, v in p.items()}
    X, Y = _shake_paths(q)
    n_all = q["n_steps"]
    step_len = q["max_length"] / (n_all - 1)
    span_all = q["exposure"] * (n_all - 1)
    m_all = np.maximum(2, np.ceil(span_all * step_len * SAMPLES_PER_PX)).astype(np.int64)
    for sel in _buckets(m_all):
        m, n, span = m_all[sel], n_all[sel], span_all[sel]
        M = int(m.max())
        tau = (np.arange(M)[None, :] + 0.5) / m[:, None] * span[:, None]
        # np.interp on the grid 0 .. n-1: slope (y[j+1] - y[j]) / 1 at j = floor(tau)
        j = np.minimum(np.floor(tau).astype(np.int64), (n - 2)[:, None])
        j = np.where(np.arange(M)[None, :] < m[:, None], j, 0)
        frac = tau - j
        flat = j + (sel * X.shape[1])[:, None]
        P = np.empty((len(sel), M, 2))
        for k_, Z in enumerate((X, Y)):
            y0 = np.take(Z, flat)
            y1 = np.take(Z, flat + 1)
            y1 -= y0
            y1 *= frac
            y1 += y0
            P[:, :, k_] = y1
        W = np.ones((len(sel), M))
        for i, kk in zip(pos[sel].tolist(), _rasterise_batch(P, W, m, m.astype(np.float64))):
            out[i] = kk
    return out


_HEAP_WARM = False


def _keep_heap() -> None:
    """Once per process: allocate and free one 16 MiB block, so that glibc's malloc raises its
    mmap threshold and keeps the megabyte-sized temporaries of a batch on the heap instead of
    page-faulting fresh pages in on every call (see ``apply._keep_heap``)."""
    global _HEAP_WARM
    if not _HEAP_WARM:
        _HEAP_WARM = True
        block = np.ones(16 << 20, dtype=np.uint8)
        del block


def render_batch(batch, size: int | None = None) -> list[np.ndarray]:
    """The arrays of many kernels at once: ``[k.render(size) for k in kernels]``, bit for bit.

    ``batch``: a :class:`KernelBatch` (from :func:`sample_batch`) or a sequence of kernels /
    records. Returns a list of float32 2-D arrays (natural size, or ``size`` as in
    :meth:`Kernel.render`). See also :func:`stack_batch`.
    """
    if not isinstance(batch, KernelBatch):
        batch = _batch_from_kernels(batch)
    _keep_heap()
    out: list = [None] * batch.n
    for f, fn in (("linear", _render_linear), ("shake", _render_shake)):
        rows = batch.rows.get(f)
        if rows is None or not len(rows):
            continue
        for r, kk in zip(rows.tolist(), fn(batch.params[f])):
            out[r] = kk
    if size is not None:
        out = [_fit(k, size) for k in out]
    return out


def stack_batch(arrays: Sequence[np.ndarray], size: int | None = None) -> np.ndarray:
    """Odd square kernels zero-padded around their centres into one float32 ``(N, k, k)`` stack
    (``k`` = the largest side, or ``size``; larger kernels must not exceed it)."""
    k = max((a.shape[0] for a in arrays), default=1) if size is None else int(size)
    out = np.zeros((len(arrays), k, k), dtype=np.float32)
    by: dict[int, list[int]] = {}
    for i, a in enumerate(arrays):
        by.setdefault(a.shape[0], []).append(i)
    for s, ids in by.items():
        if s > k:
            raise ShiftlabError(f"stack_batch: a {s}x{s} kernel does not fit in {k}x{k}")
        o = (k - s) // 2
        out[ids, o : o + s, o : o + s] = np.stack([arrays[i] for i in ids])
    return out
