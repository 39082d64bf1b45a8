"""Motion blur where your training code already augments: albumentations, torch, Hugging Face datasets.

Thin layers over the same per-sample draw as the ``synth blur`` stage and
:class:`~shiftlab.synth.ondemand.OnTheFlyBlur`: a 63-bit row seed, then
``kernels.sample(numpy.random.default_rng(row seed), kernels_cfg)``, applied by
:func:`shiftlab.synth.apply.blur_cpu` (per image, OpenCV, as albumentations' ``MotionBlur``)
or :func:`shiftlab.synth.blur.apply_kernels` (batched torch). Every adapter returns the recipe
of what it applied (JSON fields ``kernel``, ``family``, ``seed``, ...), and
:func:`shiftlab.synth.blur.regenerate` ``(recipe, parent)`` rebuilds the sample exactly.

* albumentations: :class:`LinearMotionBlur`, :class:`ShakeBlur` (one family each, ``*_range``
  parameters) and :class:`SampledMotionBlur` (the stage's whole ``kernels`` cfg), seeded by
  albumentations (``A.Compose(..., seed=...)``: the row seed is drawn from the transform's
  ``random_generator``); the recipe is in the applied params (``params["recipe"]``, see
  ``A.Compose(save_applied_params=True)`` and :func:`applied_recipes`); ``A.to_dict`` /
  ``A.from_dict`` round-trip them.
* torch: :class:`BatchBlur`, an ``nn.Module`` for ``(B, C, H, W)`` batches on any device.
* Hugging Face datasets: :func:`with_blur` returns ``ds.with_transform(...)`` serving, at index
  ``i`` in epoch ``e``, the pixels of the stage's row (parent ``i``, copy ``e``); :func:`set_epoch`
  is the per-epoch reseed hook.
"""

from __future__ import annotations

import copy
import os
from typing import Any, Mapping

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np
import torch
from albumentations.core.transforms_interface import ImageOnlyTransform

from shiftlab import seeding
from shiftlab.errors import ShiftlabError
from shiftlab.synth import apply, kernels
from shiftlab.synth.ondemand import OnTheFlyBlur

__all__ = [
    "LinearMotionBlur",
    "ShakeBlur",
    "SampledMotionBlur",
    "applied_recipes",
    "BatchBlur",
    "with_blur",
    "set_epoch",
    "INDEX_COLUMN",
]

_SEED_MAX = 2**63 - 1
#: column :func:`with_blur` adds to hold each row's original position (its sample index)
INDEX_COLUMN = "shiftlab_index"


def _seed_arg(v, where: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= int(v) <= _SEED_MAX:
        raise ShiftlabError(f"{where}: seed must be an integer in [0, 2**63), got {v!r}")
    return int(v)


def _range(where: str, name: str, v) -> list[float]:
    """``[lo, hi]`` from a pair or a number (``lo == hi``); bounds are checked by the kernel family."""
    spec = list(v) if isinstance(v, (list, tuple)) else [v, v]
    ok = len(spec) == 2 and all(not isinstance(x, bool) and isinstance(x, (int, float, np.integer, np.floating))
                                for x in spec)
    if not ok or not all(np.isfinite(spec)):
        raise ShiftlabError(f"{where}: {name} must be a (lo, hi) pair or a number, got {v!r}")
    lo, hi = float(spec[0]), float(spec[1])
    if hi < lo:
        raise ShiftlabError(f"{where}: {name} ({lo:g}, {hi:g}) has lo > hi")
    return [lo, hi]


# --------------------------------------------------------------------------- albumentations


class _SampledBlurBase(ImageOnlyTransform):
    """A kernel drawn per call from ``self._cfg`` (a :func:`kernels.sample` cfg), applied with OpenCV."""

    _cfg: dict[str, Any]

    def _set_cfg(self, cfg: Mapping[str, Any]) -> None:
        try:
            kernels.check_sample_cfg(cfg)
        except ShiftlabError as e:
            raise ShiftlabError(f"{type(self).__name__}: {e}") from None
        self._cfg = copy.deepcopy(dict(cfg))

    def get_params(self) -> dict[str, Any]:
        """The drawn kernel: ``kernel`` (record), ``family``, ``seed`` (row seed) and ``recipe``.

        The row seed is ``seeding.sample_seed(draw, 0, class name)`` of a draw of the transform's
        ``random_generator`` (seeded by ``A.Compose(seed=...)``), the kernel
        ``kernels.sample(default_rng(row seed), cfg)``.
        """
        # Compose(seed=...) seeds every transform's generator alike: the class name keeps two of
        # ours in one Compose from drawing the same kernel
        raw = int(self.random_generator.integers(0, _SEED_MAX, dtype=np.int64, endpoint=True))
        s = seeding.sample_seed(raw, 0, type(self).__name__)
        rec = kernels.sample(np.random.default_rng(s), self._cfg).to_record()
        recipe = {"stage": "albumentations", "transform": type(self).__name__, "kernel": rec,
                  "family": rec["family"], "seed": s, "apply": "cv2"}
        return {"kernel": rec, "family": rec["family"], "seed": s, "recipe": recipe}

    def apply(self, img: np.ndarray, kernel: Mapping[str, Any] | None = None, **params: Any) -> np.ndarray:
        if kernel is None:
            raise ShiftlabError(f"{type(self).__name__}: apply needs the drawn kernel (call the transform)")
        return apply.blur_cpu(img, kernels.from_record(kernel))


class LinearMotionBlur(_SampledBlurBase):
    """albumentations transform: straight motion blur with a kernel drawn per call.

    Args:
        length_range: blur length in px, drawn uniformly (:class:`kernels.Linear`).
        angle_range: orientation in degrees (0 = horizontal).
        direction_range: in [-1, 1]; 0 is symmetric, +-1 a one-sided fading trail.
        p: probability of applying the transform.

    Like ``A.MotionBlur`` but with sub-pixel, centred kernels (no image shift); uint8 or
    float32 images, grey or RGB. The applied params carry the kernel record and ``recipe``.
    """

    def __init__(self, length_range=(3.0, 15.0), angle_range=(0.0, 180.0), direction_range=(-1.0, 1.0),
                 p: float = 0.5):
        super().__init__(p=p)
        w = "LinearMotionBlur"
        self.length_range = tuple(_range(w, "length_range", length_range))
        self.angle_range = tuple(_range(w, "angle_range", angle_range))
        self.direction_range = tuple(_range(w, "direction_range", direction_range))
        self._set_cfg({"families": {"linear": 1.0}, "linear": {
            "length": list(self.length_range), "angle": list(self.angle_range),
            "direction": list(self.direction_range)}})

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("length_range", "angle_range", "direction_range")


class ShakeBlur(_SampledBlurBase):
    """albumentations transform: camera-shake blur (Boracchi & Foi 2012 trajectories) drawn per call.

    Args:
        max_length_range: path length in px.
        exposure_range: share of the path integrated, (0, 1].
        anxiety_range, jitter_range, centripetal_range, impulse_prob_range: the trajectory
            parameters of :class:`kernels.Shake` (B&F's names).
        n_steps: trajectory points.
        p: probability of applying the transform.
    """

    def __init__(self, max_length_range=(5.0, 25.0), exposure_range=(0.3, 1.0), anxiety_range=(0.001, 0.01),
                 jitter_range=(0.0, 10.0), centripetal_range=(0.0, 0.7), impulse_prob_range=(0.0, 0.2),
                 n_steps: int = 512, p: float = 0.5):
        super().__init__(p=p)
        w = "ShakeBlur"
        names = ("max_length", "exposure", "anxiety", "jitter", "centripetal", "impulse_prob")
        vals = (max_length_range, exposure_range, anxiety_range, jitter_range, centripetal_range, impulse_prob_range)
        for n, v in zip(names, vals):
            setattr(self, f"{n}_range", tuple(_range(w, f"{n}_range", v)))
        if isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)) or n_steps < 2:
            raise ShiftlabError(f"ShakeBlur: n_steps must be an integer >= 2, got {n_steps!r}")
        self.n_steps = int(n_steps)
        cfg = {n: list(getattr(self, f"{n}_range")) for n in names}
        cfg["n_steps"] = self.n_steps
        self._set_cfg({"families": {"shake": 1.0}, "shake": cfg})

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("max_length_range", "exposure_range", "anxiety_range", "jitter_range", "centripetal_range",
                "impulse_prob_range", "n_steps")


class SampledMotionBlur(_SampledBlurBase):
    """albumentations transform drawing from a whole :func:`kernels.sample` cfg (family weights and
    ranges, e.g. ``params.yaml``'s ``synth_blur.kernels``; default
    :data:`kernels.DEFAULT_SAMPLE_CFG`): the stage's kernel distribution inside a ``Compose``."""

    def __init__(self, kernels_cfg: Mapping[str, Any] | None = None, p: float = 0.5):
        super().__init__(p=p)
        self.kernels_cfg = copy.deepcopy(dict(kernels_cfg)) if kernels_cfg is not None else None
        self._set_cfg(kernels.check_sample_cfg(self.kernels_cfg))

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("kernels_cfg",)


def applied_recipes(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The recipes in a ``Compose(..., save_applied_params=True)`` result, in the order applied."""
    if "applied_transforms" not in result:
        raise ShiftlabError("applied_recipes: no 'applied_transforms' in the result "
                            "(build the Compose with save_applied_params=True)")
    return [dict(params["recipe"]) for _, params in result["applied_transforms"] if "recipe" in params]


# --------------------------------------------------------------------------- torch


def _call_seed(generator, seed) -> int | None:
    if generator is not None and seed is not None:
        raise ShiftlabError("pass either generator or seed, not both")
    if seed is not None:
        return _seed_arg(seed, "seed")
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise ShiftlabError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        return int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())
    return None


def _indices(sample_index, n: int, where: str) -> np.ndarray:
    if sample_index is None:
        return np.arange(n, dtype=np.int64)
    idx = np.asarray(sample_index.cpu() if isinstance(sample_index, torch.Tensor) else sample_index).reshape(-1)
    if len(idx) != n:
        raise ShiftlabError(f"{where}: {len(idx)} sample indices for a batch of {n}")
    return idx.astype(np.int64)


class BatchBlur(torch.nn.Module):
    """``nn.Module``: blur a ``(B, C, H, W)`` batch (uint8 or float, CPU or CUDA), one kernel per sample.

    Args:
        kernels_cfg: the :func:`kernels.sample` cfg (``synth_blur.kernels``; default
            :data:`kernels.DEFAULT_SAMPLE_CFG`).
        p: probability that a sample is blurred.
        seed: the module's global seed (used with ``sample_index``).
        keep_recipes: keep every call's recipes in :attr:`last_recipes` (e.g. inside an
            ``nn.Sequential``, where ``return_recipes`` cannot be passed).

    ``forward(images, sample_index=None, epoch=None, *, generator=None, seed=None,
    return_recipes=False)``; the randomness, in order of precedence:

    * ``seed=`` (an int) or ``generator=`` (a ``torch.Generator``: one call seed is drawn from
      it): sample ``j`` of the batch (index ``sample_index[j]``, default ``j``) is drawn from
      (call seed, index, epoch) -- deterministic validation augmentations without touching
      any global RNG;
    * ``sample_index`` alone: from (module seed, index, epoch), exactly
      :class:`~shiftlab.synth.ondemand.OnTheFlyBlur` (independent of batching and workers);
    * nothing: one call seed from torch's default generator (torch's convention, as
      torch-audiomentations; a ``DataLoader`` seeds it per worker).

    ``epoch`` defaults to :attr:`epoch` (:meth:`set_epoch`). Returns the blurred batch (same
    dtype and device), or ``(batch, recipes)`` with ``return_recipes=True`` (one JSON-ready dict
    per sample; ``kernel`` None when left sharp).
    The sampling runs eagerly (numpy) under ``torch.compile``.
    """

    def __init__(self, kernels_cfg: Mapping[str, Any] | None = None, p: float = 1.0, seed: int = 0,
                 keep_recipes: bool = False):
        super().__init__()
        self.kernels_cfg = copy.deepcopy(dict(kernels_cfg)) if kernels_cfg is not None else None
        self.seed = _seed_arg(seed, "BatchBlur")
        self._blur = OnTheFlyBlur(self.kernels_cfg, self.seed, p)  # validates cfg and p
        self.p = self._blur.p
        self.epoch = 0
        self.keep_recipes = bool(keep_recipes)
        self.last_recipes: list[dict[str, Any]] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def forward(self, images, sample_index=None, epoch: int | None = None, *, generator=None, seed=None,
                return_recipes: bool = False):
        return _batch_blur(self, images, sample_index, epoch, generator, seed, return_recipes)

    def extra_repr(self) -> str:
        return f"p={self.p}, seed={self.seed}"


@torch.compiler.disable
def _batch_blur(mod: BatchBlur, images, sample_index, epoch, generator, seed, return_recipes):
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ShiftlabError(f"BatchBlur: images must be a (B, C, H, W) tensor, got {got}")
    if images.dtype not in (torch.uint8, torch.float16, torch.bfloat16, torch.float32, torch.float64):
        raise ShiftlabError(f"BatchBlur: images must be uint8 or float, got {images.dtype}")
    call = _call_seed(generator, seed)
    if call is None and sample_index is None:
        call = int(torch.randint(0, 2**62, (1,)).item())
    e = mod.epoch if epoch is None else epoch
    idx = _indices(sample_index, images.shape[0], "BatchBlur")
    blur = mod._blur if call is None else OnTheFlyBlur(mod.kernels_cfg, call, mod.p)
    out = blur(images, idx, e)
    recs = None
    if return_recipes or mod.keep_recipes:
        recs = [blur.recipe(int(i), int(e)) for i in idx]
        for r in recs:
            r["stage"] = "BatchBlur"
        mod.last_recipes = recs
    return (out, recs) if return_recipes else out


# --------------------------------------------------------------------------- Hugging Face datasets


class _BlurTransform:
    """The ``with_transform`` callable of :func:`with_blur` (holds the epoch)."""

    def __init__(self, cfg: Mapping[str, Any] | None, seed: int, p: float, column: str, recipe_column: str,
                 epoch: int, keep_index: bool):
        from shiftlab.synth.blur import _check_cfg

        c = _check_cfg(cfg)  # the synth_blur section: its kernels (seed given separately)
        self.blur = OnTheFlyBlur(c["kernels"], seed, p, purpose="blur")
        self.column = column
        self.recipe_column = recipe_column
        self.epoch = int(epoch)
        self.keep_index = keep_index

    def set_epoch(self, epoch: int) -> None:
        if isinstance(epoch, bool) or int(epoch) < 0:
            raise ShiftlabError(f"with_blur: epoch must be an integer >= 0, got {epoch!r}")
        self.epoch = int(epoch)

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        from shiftlab import store

        if self.column not in batch or INDEX_COLUMN not in batch:
            raise ShiftlabError(f"with_blur: the batch lacks the {self.column!r} or {INDEX_COLUMN!r} column "
                                f"(keep both when selecting columns)")
        out = dict(batch)
        idx = np.asarray(batch[INDEX_COLUMN], dtype=np.int64)
        pil = [not isinstance(x, (np.ndarray, list, torch.Tensor)) and hasattr(x, "mode") for x in batch[self.column]]
        imgs = [_chw(x, was_pil) for x, was_pil in zip(batch[self.column], pil)]
        res: list = [None] * len(imgs)
        shapes: dict[tuple, list[int]] = {}
        for j, a in enumerate(imgs):
            shapes.setdefault(a.shape, []).append(j)
        for _, js in shapes.items():  # one batched call per image shape
            x = torch.from_numpy(np.stack([imgs[j] for j in js]))
            y = self.blur(x, idx[js], self.epoch).numpy()
            for k, j in enumerate(js):
                res[j] = _unchw(y[k], pil[j])
        out[self.column] = res
        recs = []
        for i in idx.tolist():
            r = self.blur.recipe(i, self.epoch)
            recs.append(store.recipe(stage="with_blur", kernel=r["kernel"], family=r["family"], seed=r["seed"],
                                     index=i, copy=self.epoch))
        out[self.recipe_column] = recs
        if not self.keep_index:
            out.pop(INDEX_COLUMN)
        return out


def _chw(x, was_pil: bool) -> np.ndarray:
    if was_pil:
        a = np.asarray(x)
        a = a[:, :, None] if a.ndim == 2 else a
        a = a.transpose(2, 0, 1)
    elif isinstance(x, list):  # the python formatting of an Array3D column
        a = np.asarray(x)
        if a.dtype.kind in "iu" and a.size and (a.min() < 0 or a.max() > 255):
            raise ShiftlabError(f"with_blur: image values outside [0, 255] ({a.min()}..{a.max()})")
        a = a.astype(np.uint8) if a.dtype.kind in "iu" else a
    else:
        a = np.asarray(x)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[0] not in (1, 3):
        raise ShiftlabError(f"with_blur: images must be uint8 (C, H, W) with C 1 or 3 (the shiftlab schema) or "
                            f"PIL images, got {a.dtype} {a.shape}")
    return np.ascontiguousarray(a)


def _unchw(a: np.ndarray, to_pil: bool):
    if not to_pil:
        return a
    from PIL import Image

    hwc = a.transpose(1, 2, 0)
    return Image.fromarray(hwc[:, :, 0] if hwc.shape[2] == 1 else np.ascontiguousarray(hwc))


def with_blur(ds, cfg: Mapping[str, Any] | None = None, seed: int | None = None, *, p: float = 1.0,
              column: str = "image", recipe_column: str = "blur_recipe", epoch: int = 0, keep_index: bool = False):
    """``ds.with_transform(...)``: every served image motion blurred, seeded per (seed, row, epoch).

    Args:
        ds: a Hugging Face ``Dataset`` whose ``column`` holds uint8 ``(C, H, W)`` images (the
            shiftlab schema) or PIL images.
        cfg: the ``synth_blur`` section (its ``kernels``; default :data:`blur.DEFAULTS`).
        seed: global seed (default ``cfg["seed"]``, else 0).
        p: probability that a sample is blurred (1: every sample, as the stage).
        recipe_column: the served recipe (canonical JSON; :func:`blur.regenerate` takes it).
        epoch: the starting epoch; change it with :func:`set_epoch` (the per-epoch reseed hook).

    Row ``i`` (its position in ``ds``, kept through later ``shuffle`` / ``select`` in the
    :data:`INDEX_COLUMN` column added here) in epoch ``e`` gets ``kernels.sample(
    seeding.sample_rng(seed, i, "blur", e), cfg["kernels"])``: with ``p=1``, the very pixels of
    the ``synth blur`` stage's row (parent position ``i``, copy ``e``) -- of
    :func:`blur.make_copies` on ``ds``, or of :func:`blur.make_synthetic` when ``ds`` holds the
    eligible parents in id order.
    """
    from shiftlab.synth.blur import _check_cfg

    if column not in ds.column_names:
        raise ShiftlabError(f"with_blur: the dataset has no {column!r} column (have: {', '.join(ds.column_names)})")
    s = seed if seed is not None else _check_cfg(cfg)["seed"]
    t = _BlurTransform(cfg, _seed_arg(s, "with_blur"), p, column, recipe_column, epoch, keep_index)
    if INDEX_COLUMN in ds.column_names:  # a dataset wrapped before: index = position in this one
        ds = ds.remove_columns(INDEX_COLUMN)
    ds = ds.add_column(INDEX_COLUMN, np.arange(len(ds), dtype=np.int64))
    return ds.with_transform(t)


def _transform_of(ds):
    t = (ds.format.get("format_kwargs") or {}).get("transform")
    if not hasattr(t, "set_epoch"):
        raise ShiftlabError("set_epoch: the dataset has no with_blur / with_noise transform")
    return t


def set_epoch(ds, epoch: int) -> None:
    """The per-epoch reseed hook of a :func:`with_blur` / :func:`shiftlab.mixing.with_noise`
    dataset: call it at the start of each epoch (before iterating its ``DataLoader``; with
    ``persistent_workers=True`` the workers keep the epoch they started with)."""
    _transform_of(ds).set_epoch(epoch)
