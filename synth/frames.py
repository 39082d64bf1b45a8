"""The embedded default's target: sharp images degraded into simulated "video frames".

Machine Learning Yearning's video case: the dev frames come from a video camera (motion
blurred, noisy, a little out of focus); the training photos are sharp. Fashion-MNIST has
no such frames, so the default image scenario *simulates* them from its test split. The
simulator is deliberately a different process from the synthesis stage
(:mod:`shiftlab.synth.blur`), so that the comparison "does synthetic blur help?" measures
transfer from one blur process to another, not the recovery of an identical one:

1. **camera shake** with settings the synthesis defaults never use: Boracchi & Foi
   trajectories (:class:`shiftlab.synth.kernels.Shake`) with a higher ``anxiety``
   (``[0.015, 0.04]`` against the synthesis range ``[0.001, 0.01]``), stronger jitter and a
   short exposure, i.e. small, curly, erratic paths instead of long sweeps;
2. **defocus**: the shake PSF is convolved with a Gaussian of ``defocus_sigma`` px (the
   synthesis stage has no defocus term);
3. **sensor noise** (the synthesis stage adds none): Poisson shot noise at ``photons``
   photo-electrons for full white plus Gaussian read noise of ``read_noise`` grey levels,
   then rounding to uint8.

Every frame is a pure function of (seed, row index) through
:func:`shiftlab.seeding.sample_rng` ``(seed, index, "frames")``, and its ``recipe`` records
the shake record, the defocus sigma, the noise levels and that per-row seed, so a frame can
be regenerated from the sharp image and its recipe alone (:func:`regenerate`).
The README states that the default image target is simulated this way.
"""

from __future__ import annotations

import copy
import json
import math
from typing import Any, Mapping, Sequence

import numpy as np

from shiftlab import seeding
from shiftlab.errors import ShiftlabError
from shiftlab.synth import kernels

__all__ = ["DEFAULTS", "check_cfg", "draw", "simulate", "regenerate"]

PURPOSE = "frames"
_KEY = "prepare_images.frames"

#: Defaults of the ``prepare_images.frames`` params section. Ranges are ``[lo, hi]`` (uniform).
DEFAULTS: dict[str, Any] = {
    "apply": "auto",  # auto (= on for fashion_mnist, off for your own folders / hub data) | on | off
    "seed": 1234,
    "shake": {
        "max_length": [8.0, 16.0],
        "exposure": [0.5, 0.9],
        "anxiety": [0.015, 0.04],
        "jitter": [10.0, 20.0],
        "centripetal": [0.2, 0.6],
        "impulse_prob": [0.05, 0.3],
        "n_steps": 512,
    },
    "defocus_sigma": [0.3, 0.9],  # px, Gaussian
    "photons": [150.0, 600.0],  # photo-electrons at full white (lower = noisier)
    "read_noise": [0.5, 2.0],  # grey levels, std of the Gaussian read noise
}

_SHAKE_KEYS = ("max_length", "exposure", "anxiety", "jitter", "centripetal", "impulse_prob", "n_steps")


def _pair(where: str, v, lo: float, hi: float | None = None) -> list[float]:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        v = [v, v]
    if not isinstance(v, (list, tuple)) or len(v) != 2:
        raise ShiftlabError(f"{where}: must be [low, high] or a number, got {v!r}")
    try:
        a, b = float(v[0]), float(v[1])
    except (TypeError, ValueError):
        raise ShiftlabError(f"{where}: must be numbers, got {v!r}") from None
    if not (math.isfinite(a) and math.isfinite(b)) or a > b or a < lo or (hi is not None and b > hi):
        rng = f"[{lo:g}, {'inf' if hi is None else f'{hi:g}'}]"
        raise ShiftlabError(f"{where}: [{a:g}, {b:g}] must be an increasing pair inside {rng}")
    return [a, b]


def check_cfg(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """``cfg`` merged over :data:`DEFAULTS` and validated (one-line errors naming the key)."""
    out = copy.deepcopy(DEFAULTS)
    for k, v in (cfg or {}).items():
        if k not in out:
            raise ShiftlabError(f"{_KEY}.{k}: unknown key (expected one of {', '.join(out)})")
        if k == "shake":
            for sk, sv in (v or {}).items():
                if sk not in _SHAKE_KEYS:
                    raise ShiftlabError(f"{_KEY}.shake.{sk}: unknown key (expected one of {', '.join(_SHAKE_KEYS)})")
                out["shake"][sk] = sv
        else:
            out[k] = v
    if out["apply"] not in ("auto", "on", "off"):
        raise ShiftlabError(f"{_KEY}.apply: must be auto, on or off, got {out['apply']!r}")
    if isinstance(out["seed"], bool) or not isinstance(out["seed"], int) or out["seed"] < 0:
        raise ShiftlabError(f"{_KEY}.seed: must be an integer >= 0, got {out['seed']!r}")
    out["defocus_sigma"] = _pair(f"{_KEY}.defocus_sigma", out["defocus_sigma"], 0.0, 20.0)
    out["photons"] = _pair(f"{_KEY}.photons", out["photons"], 1e-3)
    out["read_noise"] = _pair(f"{_KEY}.read_noise", out["read_noise"], 0.0, 255.0)
    try:
        kernels.sample(0, {"families": {"shake": 1.0}, "shake": out["shake"]})
    except ShiftlabError as e:
        raise ShiftlabError(f"{_KEY}.shake: {e}") from None
    return out


def _gaussian(sigma: float) -> np.ndarray:
    if sigma <= 0:
        return np.ones((1, 1), dtype=np.float64)
    r = max(1, int(math.ceil(3.0 * sigma)))
    x = np.arange(-r, r + 1, dtype=np.float64)
    g = np.exp(-0.5 * (x / sigma) ** 2)
    g /= g.sum()
    return np.outer(g, g)


def _psf(shake: kernels.Shake, sigma: float) -> np.ndarray:
    """The frame's PSF: shake kernel convolved with the defocus Gaussian (odd, centred, sum 1)."""
    import scipy.signal

    k = scipy.signal.convolve2d(shake.render().astype(np.float64), _gaussian(sigma), mode="full")
    k[k < 1e-9 * k.max()] = 0.0
    return (k / k.sum()).astype(np.float32)


def draw(seed: int, index: int, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The degradation record of row ``index``: shake record, defocus sigma, noise levels, row seed."""
    s = seeding.sample_seed(seed, index, PURPOSE)
    rng = np.random.default_rng(s)
    shake = kernels.sample(rng, {"families": {"shake": 1.0}, "shake": cfg["shake"]})
    return {
        "shake": shake.to_record(),
        "defocus_sigma": float(rng.uniform(*cfg["defocus_sigma"])),
        "photons": float(rng.uniform(*cfg["photons"])),
        "read_noise": float(rng.uniform(*cfg["read_noise"])),
        "seed": int(s),
    }


def _noise(blurred: np.ndarray, rec: Mapping[str, Any]) -> np.ndarray:
    """Poisson-Gaussian sensor noise on a float32 image in grey levels; uint8 out."""
    rng = np.random.default_rng([int(rec["seed"]), 1])
    photons = float(rec["photons"])
    lam = np.clip(blurred.astype(np.float64), 0.0, 255.0) / 255.0 * photons
    y = rng.poisson(lam) / photons * 255.0 + rng.normal(0.0, float(rec["read_noise"]), size=blurred.shape)
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)


def _apply(chw: np.ndarray, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
    import torch

    from shiftlab.synth.blur import apply_kernels

    psfs = [_psf(kernels.from_record(r["shake"]), r["defocus_sigma"]) for r in records]
    x = torch.from_numpy(np.ascontiguousarray(chw, dtype=np.float32))
    blurred = apply_kernels(x, psfs).numpy()  # float32, not rounded: the noise goes on first
    return np.stack([_noise(b, r) for b, r in zip(blurred, records)])


def simulate(chw: np.ndarray, indices: Sequence[int], cfg: Mapping[str, Any] | None = None,
             batch_size: int = 1024, progress: bool = True) -> tuple[np.ndarray, list[str]]:
    """Turn sharp uint8 ``(N, C, H, W)`` images into simulated video frames.

    ``indices[i]`` is row i's stable index (e.g. its position in the Fashion-MNIST test file),
    which with ``cfg["seed"]`` fixes its degradation. Returns the frames (uint8, same shape) and
    one JSON recipe fragment per row (``{"frames": record}``: see :func:`draw`).
    """
    from tqdm.auto import tqdm

    c = check_cfg(cfg)
    chw = np.asarray(chw)
    if chw.dtype != np.uint8 or chw.ndim != 4:
        raise ShiftlabError(f"frames: images must be uint8 (N, C, H, W), got {chw.dtype} {chw.shape}")
    if len(indices) != len(chw):
        raise ShiftlabError(f"frames: {len(indices)} indices for {len(chw)} images")
    out = np.empty_like(chw)
    recipes: list[str] = []
    bar = tqdm(total=len(chw), desc="video frames", unit="img", disable=not progress or len(chw) < 200)
    for start in range(0, len(chw), batch_size):
        recs = [draw(c["seed"], int(i), c) for i in indices[start : start + batch_size]]
        out[start : start + len(recs)] = _apply(chw[start : start + len(recs)], recs)
        recipes += [json.dumps(r, sort_keys=True, separators=(",", ":")) for r in recs]
        bar.update(len(recs))
    bar.close()
    return out, recipes


def regenerate(record: str | Mapping[str, Any], sharp_chw: np.ndarray) -> np.ndarray:
    """The frame of one sharp uint8 ``(C, H, W)`` image from its degradation record (or JSON)."""
    rec = json.loads(record) if isinstance(record, (str, bytes)) else dict(record)
    if "frames" in rec and "shake" not in rec:
        rec = rec["frames"]
    return _apply(np.asarray(sharp_chw, dtype=np.uint8)[None], [rec])[0]
