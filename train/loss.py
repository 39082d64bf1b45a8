"""Weighted cross-entropy: the book's ``sum_target L + beta * sum_source L`` per batch.

Every split row carries a ``weight`` (1 for real target rows, ``beta_source`` for real
source rows, ``beta_synthetic`` for synthetic rows; see :mod:`shiftlab.datasets.splits`).
The loss of a batch is the weighted mean

    loss = sum_i w_i * l_i / sum_i w_i

where ``l_i`` is the (optionally label-smoothed) cross-entropy of row ``i``. Up to the
constant factor ``1 / sum(w)`` this is the book's objective, so ``beta = 0`` removes a row
from the gradient exactly, and scaling every weight by the same factor changes nothing.

Edge case: a batch whose weights sum to 0 (every row has weight 0) has loss 0, returned
as ``0 * sum(logits)`` so that ``backward()`` works and gives exactly zero gradients
(the optimizer's weight decay and momentum still act on that step).

Distributed training: pass ``denominator=`` the weight sum of the *global* batch (all
ranks) and ``scale=world_size``; DistributedDataParallel averages gradients over ranks,
so the result is the gradient of the single-process loss on the global batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from shiftlab.errors import ShiftlabError

__all__ = ["weighted_cross_entropy", "per_row_cross_entropy"]


def per_row_cross_entropy(logits: torch.Tensor, target: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy of every row, float32 (computed in float32 even under bf16 autocast)."""
    if logits.ndim != 2:
        raise ShiftlabError(f"loss: logits must be (N, K), got shape {tuple(logits.shape)}")
    if target.shape != logits.shape[:1]:
        raise ShiftlabError(f"loss: target must be (N,) = ({logits.shape[0]},), got shape {tuple(target.shape)}")
    if not 0.0 <= float(label_smoothing) < 1.0:
        raise ShiftlabError(f"loss: label_smoothing must be in [0, 1), got {label_smoothing}")
    return F.cross_entropy(logits.float(), target.long(), reduction="none", label_smoothing=float(label_smoothing))


def weighted_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    *,
    label_smoothing: float = 0.0,
    denominator: torch.Tensor | float | None = None,
    scale: float = 1.0,
) -> torch.Tensor:
    """``scale * sum(w * l) / denominator`` with ``denominator = sum(w)`` by default.

    Args:
        logits: (N, K) scores.
        target: (N,) class indices.
        weight: (N,) non-negative row weights; ``None`` means all 1 (plain mean).
        label_smoothing: as in :func:`torch.nn.functional.cross_entropy`.
        denominator: the weight sum to divide by (the global batch's under DDP); defaults
            to ``weight.sum()`` of this batch. Not differentiated.
        scale: a constant factor (the world size under DDP, whose gradient averaging
            divides by it again).

    Returns a float32 scalar. If the denominator is 0 the loss is ``0 * logits.sum()``
    (zero, with exactly zero gradients).
    """
    losses = per_row_cross_entropy(logits, target, label_smoothing)
    if weight is None:
        weight = torch.ones_like(losses)
    else:
        weight = weight.to(device=losses.device, dtype=torch.float32)
        if weight.shape != losses.shape:
            raise ShiftlabError(f"loss: weight must be (N,) = ({losses.shape[0]},), got shape {tuple(weight.shape)}")
    total = (weight * losses).sum()
    if denominator is None:
        denominator = weight.sum()
    den = torch.as_tensor(denominator, dtype=torch.float32, device=losses.device).detach()
    positive = den > 0
    # torch.where instead of an ``if``: no host-device synchronisation per step on CUDA
    safe = torch.where(positive, den, torch.ones_like(den))
    return torch.where(positive, total * (float(scale) / safe), logits.float().sum() * 0.0)
