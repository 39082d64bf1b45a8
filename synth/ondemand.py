"""On-demand motion blur: a fresh kernel per sample per epoch, seeded, for use inside training.

The ``synth blur`` stage writes a fixed set of synthetic rows (one kernel per copy, forever);
this module instead blurs on the fly, so every epoch sees a new kernel for every sample --
far more kernel diversity for the same disk space. Two entry points:

* :class:`OnTheFlyBlur` -- a callable ``(images, sample_index, epoch) -> images`` for torch
  batches ``(N, C, H, W)`` (uint8 or float, CPU or CUDA): the trainer's ``augment`` hook;
* :class:`BlurredDataset` -- wraps any image dataset (a Hugging Face image Dataset in the
  shiftlab schema, or a sequence of ``(C, H, W)`` arrays) as a ``torch.utils.data.Dataset``
  whose items are blurred; call :meth:`BlurredDataset.set_epoch` at the start of each epoch.

Semantics shared by both: sample ``i`` in epoch ``e`` is blurred with probability ``p`` by
``kernels.sample(seeding.sample_rng(seed, i, "onthefly_blur", e), kernels_cfg)``; whether it
is blurred is drawn from the same generator first. :meth:`OnTheFlyBlur.recipe` returns the
record of (i, e) -- the same JSON fields as a ``synth blur`` row's recipe (``kernel``,
``family``, ``seed``) -- and :func:`shiftlab.synth.blur.regenerate` rebuilds the pixels from
it. The result depends only on (seed, i, e), never on the batch composition, the device
(up to one grey level at rounding ties on CUDA) or the number of data-loader workers.
A batch's kernels are drawn and rendered together (:meth:`OnTheFlyBlur.kernels`, numpy on the
CPU, the per-row path's kernels bit for bit) and applied on the images' device.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping, Sequence

import numpy as np

from shiftlab import seeding
from shiftlab.errors import ShiftlabError
from shiftlab.synth import kernels

__all__ = ["OnTheFlyBlur", "BlurredDataset"]

PURPOSE = "onthefly_blur"
#: kernels up to this side are applied as one (N, k, k) stack, larger ones as a list (memory)
_STACK_MAX = 65


class OnTheFlyBlur:
    """Blur a batch with a fresh, seeded kernel per (sample index, epoch).

    Args:
        kernels_cfg: the kernel ranges (``synth_blur.kernels`` of params.yaml; default
            :data:`shiftlab.synth.kernels.DEFAULT_SAMPLE_CFG`).
        seed: global seed.
        p: probability that a sample is blurred at all (default 1).
        purpose: the seeding purpose tag (default ``"onthefly_blur"``). With ``"blur"`` and
            ``p=1``, sample ``i`` in epoch ``e`` gets exactly the kernel of the ``synth blur``
            stage's row (parent position ``i``, copy ``e``) (:func:`shiftlab.synth.adapters.with_blur`).
    """

    def __init__(self, kernels_cfg: Mapping[str, Any] | None = None, seed: int = 0, p: float = 1.0,
                 purpose: str = PURPOSE):
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ShiftlabError(f"OnTheFlyBlur: seed must be an integer >= 0, got {seed!r}")
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= float(p) <= 1.0:
            raise ShiftlabError(f"OnTheFlyBlur: p must be a number in [0, 1], got {p!r}")
        self.kernels_cfg = copy.deepcopy(dict(kernels_cfg)) if kernels_cfg is not None else None
        kernels.sample(0, self.kernels_cfg)  # validate early (one-line error naming the key)
        self.seed = int(seed)
        self.p = float(p)
        self.purpose = str(purpose)

    def draw(self, index: int, epoch: int) -> tuple[int, kernels.Kernel | None]:
        """(row seed, kernel or None when this sample is left sharp) for sample ``index`` in ``epoch``."""
        s = seeding.sample_seed(self.seed, int(index), self.purpose, int(epoch))
        rng = np.random.default_rng(s)
        if self.p < 1.0 and rng.random() >= self.p:
            return s, None
        return s, kernels.sample(rng, self.kernels_cfg)

    def recipe(self, index: int, epoch: int) -> dict[str, Any]:
        """The recipe of sample ``index`` in ``epoch`` (``kernel`` is None when left sharp)."""
        s, k = self.draw(index, epoch)
        rec = k.to_record() if k is not None else None
        return {"stage": self.purpose, "kernel": rec, "family": rec["family"] if rec else None, "seed": s,
                "index": int(index), "epoch": int(epoch)}

    def __call__(self, images, sample_index: Sequence[int], epoch: int):
        """Blur torch ``images`` (N, C, H, W) on their device; returns a new tensor (same dtype)."""
        import torch

        from shiftlab.synth.blur import apply_kernels

        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            raise ShiftlabError("OnTheFlyBlur: images must be a torch tensor (N, C, H, W)")
        idx = np.asarray(sample_index.cpu() if isinstance(sample_index, torch.Tensor) else sample_index).reshape(-1)
        if len(idx) != images.shape[0]:
            raise ShiftlabError(f"OnTheFlyBlur: {len(idx)} sample indices for {images.shape[0]} images")
        todo, arrays = self._draw_batch(idx, epoch)
        if not len(todo):
            return images.clone()
        ks = kernels.stack_batch(arrays) if max(a.shape[0] for a in arrays) <= _STACK_MAX else arrays
        if len(todo) == len(idx):
            return apply_kernels(images, ks)
        out = images.clone()
        sel = torch.as_tensor(todo, dtype=torch.long, device=images.device)
        out.index_copy_(0, sel, apply_kernels(images.index_select(0, sel), ks))
        return out

    def kernels(self, sample_index: Sequence[int], epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """The kernels of a batch at once: (positions of the samples that are blurred, their
        kernels as one float32 ``(n, k, k)`` stack).

        Batched (:func:`kernels.sample_seeds`, :func:`kernels.sample_batch`,
        :func:`kernels.render_batch`), and equal bit for bit to ``self.draw(i, epoch)[1].render()``
        sample by sample (the per-row recipe path; tested).
        """
        todo, arrays = self._draw_batch(sample_index, epoch)
        return todo, (kernels.stack_batch(arrays) if len(todo) else np.zeros((0, 1, 1), np.float32))

    def _draw_batch(self, sample_index, epoch: int) -> tuple[np.ndarray, list]:
        idx = np.asarray(sample_index, dtype=np.int64).reshape(-1)
        if isinstance(epoch, bool) or int(epoch) < 0 or (len(idx) and idx.min() < 0):
            raise ShiftlabError("OnTheFlyBlur: epoch and sample indices must be non-negative integers")
        seeds = kernels.sample_seeds(self.seed, idx, self.purpose, int(epoch))
        skip = 0
        todo = np.arange(len(idx))
        if self.p < 1.0:  # draw() first tests rng.random() >= p (left sharp)
            u0 = kernels.raw_to_double(kernels.pcg64_raw(seeds.astype(np.uint64), 1))[:, 0]
            todo = np.flatnonzero(u0 < self.p)
            skip = 1
        if not len(todo):
            return todo, []
        kb = kernels.sample_batch(seeds[todo], self.kernels_cfg, skip=skip)
        return todo, kernels.render_batch(kb)


class BlurredDataset:
    """A ``torch.utils.data.Dataset`` of blurred images from any image dataset.

    ``base`` is a Hugging Face image Dataset in the shiftlab schema (items are dicts with a
    ``(C, H, W)`` ``image``; every other column is passed through) or a sequence of
    ``(C, H, W)`` uint8 arrays. Items are dicts ``{"image": uint8 tensor (C, H, W), ...,
    "blur": recipe dict}``; the kernel of item ``i`` depends on (seed, i, epoch) only.
    """

    def __init__(self, base, kernels_cfg: Mapping[str, Any] | None = None, seed: int = 0, p: float = 1.0):
        self.base = base
        self.blur = OnTheFlyBlur(kernels_cfg, seed, p)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict[str, Any]:
        import torch

        item = self.base[int(i)]
        row = dict(item) if isinstance(item, Mapping) else {"image": item}
        img = np.asarray(row["image"])
        if img.dtype != np.uint8 or img.ndim != 3:
            raise ShiftlabError(f"BlurredDataset: item {i}: image must be uint8 (C, H, W), got {img.dtype} {img.shape}")
        x = torch.from_numpy(np.ascontiguousarray(img))[None]
        row["image"] = self.blur(x, [int(i)], self.epoch)[0]
        row["blur"] = self.blur.recipe(int(i), self.epoch)
        return row
