"""Noise mixing where your training code already augments: torch and Hugging Face datasets.

Thin layers over the mixing of the ``synth_mix`` stage (:mod:`shiftlab.mixing.mix`: the SNR mix
with its clipping guard, the reuse-balancing noise plans of :mod:`shiftlab.mixing.bank`):

* :class:`BatchNoise` -- an ``nn.Module`` mixing ``(batch, time)`` or ``(batch, channels, time)``
  waveforms with noise from a bank, on the CPU or CUDA: the draws of
  :class:`~shiftlab.mixing.mix.OnTheFlyMixer` (per (seed, sample index, epoch)), with a
  ``torch.Generator`` or a seed per call for deterministic validation augmentations;
* :func:`with_noise` -- ``ds.with_transform(...)`` serving, in epoch 0, the very samples of the
  stage (:func:`mix.make_copies` on the same Dataset with ``fraction`` 1 and ``copies`` 1);
  :func:`shiftlab.synth.adapters.set_epoch` (also exported here) reseeds it per epoch.

Every adapter returns the recipes of what it mixed, and :func:`shiftlab.mixing.mix.regenerate`
``(recipe, parent waveform, bank)`` rebuilds a sample from one.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from shiftlab import store
from shiftlab.errors import ShiftlabError
from shiftlab.mixing import bank as bank_mod
from shiftlab.mixing import mix as mix_mod
from shiftlab.synth.adapters import INDEX_COLUMN, _call_seed, _indices, _seed_arg, set_epoch

__all__ = ["BatchNoise", "with_noise", "set_epoch"]


class BatchNoise(torch.nn.Module):
    """``nn.Module``: add noise from a bank to a batch of waveforms at a drawn SNR.

    Args:
        bank: the noise bank (a ``Dataset`` from :func:`mix.build_bank` / :mod:`shiftlab.mixing.bank`
            builders, or ``bank.BankArrays``); its sampling rate must be the speech's.
        cfg: the ``synth_mix`` section (``snr_db``, ``peak_limit``, ``bank.max_source_share``,
            ``bank.min_segment_db``).
        seed: the module's global seed (default ``cfg["seed"]``), used with ``sample_index``.
        n_samples: the epoch size, for one balanced noise plan per epoch (see ``OnTheFlyMixer``).

    ``forward(waves, sample_index=None, epoch=None, *, generator=None, seed=None,
    return_recipes=False)``: ``waves`` float ``(B, T)`` or ``(B, C, T)`` on any device (the bank
    follows the input's device). Randomness: ``seed=`` or ``generator=`` (one call seed drawn from
    it) -> draws of (call seed, index, epoch), without touching any global RNG; ``sample_index``
    alone -> (module seed, index, epoch), exactly ``OnTheFlyMixer``; nothing -> a call seed from
    torch's default generator (seeded per ``DataLoader`` worker by torch). Indices default to
    ``0 .. B-1``, ``epoch`` to :attr:`epoch` (:meth:`set_epoch`). Returns the float32 mix, or
    ``(mix, recipes)``. Runs eagerly under ``torch.compile``.
    """

    def __init__(self, bank, cfg: Mapping[str, Any] | None = None, seed: int | None = None,
                 n_samples: int | None = None, keep_recipes: bool = False):
        super().__init__()
        self.cfg = mix_mod.check_cfg(cfg)
        self.seed = _seed_arg(self.cfg["seed"] if seed is None else seed, "BatchNoise")
        self.arrays = bank_mod.arrays(bank)
        if len(self.arrays.lengths) == 0:
            raise ShiftlabError("BatchNoise: the noise bank is empty")
        self.n_samples = n_samples
        self.epoch = 0
        self.keep_recipes = bool(keep_recipes)
        self.last_recipes: list[dict[str, Any]] | None = None
        self._mixers: dict[str, mix_mod.OnTheFlyMixer] = {}
        self.mixer(torch.device("cpu"))  # validates n_samples

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def mixer(self, device) -> mix_mod.OnTheFlyMixer:
        """The :class:`mix.OnTheFlyMixer` holding the bank on ``device`` (made on first use)."""
        key = str(torch.device(device))
        m = self._mixers.get(key)
        if m is None:
            m = self._mixers[key] = mix_mod.OnTheFlyMixer(self.arrays, self.cfg, self.seed, key, self.n_samples)
        return m

    def forward(self, waves, sample_index=None, epoch: int | None = None, *, generator=None, seed=None,
                return_recipes: bool = False):
        return _batch_noise(self, waves, sample_index, epoch, generator, seed, return_recipes)

    def extra_repr(self) -> str:
        return f"clips={len(self.arrays.lengths)}, seed={self.seed}, snr_db={self.cfg['snr_db']}"


@torch.compiler.disable
def _batch_noise(mod: BatchNoise, waves, sample_index, epoch, generator, seed, return_recipes):
    if not isinstance(waves, torch.Tensor):
        raise ShiftlabError(f"BatchNoise: waves must be a torch tensor, got {type(waves).__name__}")
    if waves.ndim not in (2, 3):
        raise ShiftlabError(f"BatchNoise: waves must be (batch, time) or (batch, channels, time), got shape "
                            f"{tuple(waves.shape)}")
    if not waves.dtype.is_floating_point:
        raise ShiftlabError(f"BatchNoise: waves must be float, got {waves.dtype}")
    if waves.shape[-1] < 1:
        raise ShiftlabError("BatchNoise: waves have no samples")
    call = _call_seed(generator, seed)
    if call is None and sample_index is None:
        call = int(torch.randint(0, 2**62, (1,)).item())
    e = mod.epoch if epoch is None else epoch
    idx = _indices(sample_index, waves.shape[0], "BatchNoise")
    m = mod.mixer(waves.device)
    keep = return_recipes or mod.keep_recipes
    y, recs = m(waves, idx, e, return_recipes=keep, seed=call)
    y = y.to(waves.dtype) if waves.dtype != torch.float32 else y
    if keep:
        for r in recs:
            r["stage"] = "BatchNoise"
        mod.last_recipes = recs
    return (y, recs) if return_recipes else y


# --------------------------------------------------------------------------- Hugging Face datasets


class _NoiseTransform:
    """The ``with_transform`` callable of :func:`with_noise` (holds the epoch and its plan)."""

    def __init__(self, ds, bank, cfg, seed: int, column: str, recipe_column: str, epoch: int, keep_index: bool):
        self.cfg = mix_mod.check_cfg(cfg)
        self.cfg["seed"] = seed
        self.arrays = bank_mod.arrays(bank)
        if len(self.arrays.lengths) == 0:
            raise ShiftlabError("with_noise: the noise bank is empty")
        el = mix_mod.all_rows(ds, "with_noise")
        mix_mod._check_rates(el, self.arrays, "with_noise: the speech rows")
        self.ids = el["id"]
        self.lens = mix_mod._SplitAudio(ds).lengths
        if len(self.lens) and self.lens.min() < 1:
            raise ShiftlabError(f"with_noise: speech row {self.ids[int(np.argmin(self.lens))]} has no samples")
        self.column, self.recipe_column, self.keep_index = column, recipe_column, keep_index
        self.epoch = int(epoch)
        self._plan = None
        self._looped = None

    def set_epoch(self, epoch: int) -> None:
        if isinstance(epoch, bool) or int(epoch) < 0:
            raise ShiftlabError(f"with_noise: epoch must be an integer >= 0, got {epoch!r}")
        self.epoch = int(epoch)

    def plan(self):
        """The epoch's noise plan of all rows (:func:`mix.plan_rows`, plan index = epoch, copy = epoch)."""
        if self._plan is None or self._plan[0] != self.epoch:
            n = len(self.lens)
            keys = np.stack([np.arange(n, dtype=np.int64), np.full(n, self.epoch, np.int64)], axis=1)
            self._plan = (self.epoch, *mix_mod.plan_rows(self.arrays, self.lens, keys, self.cfg["seed"], self.cfg,
                                                         plan_index=self.epoch))
        return self._plan[1:]

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        if self.column not in batch or INDEX_COLUMN not in batch:
            raise ShiftlabError(f"with_noise: the batch lacks the {self.column!r} or {INDEX_COLUMN!r} column "
                                f"(keep both when selecting columns)")
        if self._looped is None:
            self._looped = mix_mod._LoopedBank(self.arrays, torch.device("cpu"))
        plan, snr, seeds, loops = self.plan()
        idx = np.asarray(batch[INDEX_COLUMN], dtype=np.int64)
        waves = [np.asarray(x, dtype=np.float32).reshape(-1) for x in batch[self.column]]
        for i, w in zip(idx.tolist(), waves):
            if len(w) != self.lens[i]:
                raise ShiftlabError(f"with_noise: row {i} has {len(w)} samples, the dataset had {self.lens[i]} "
                                    f"(serve the column as stored)")
        limit = self.cfg["peak_limit"]
        y, sg, ng = mix_mod._mix_rows(waves, self._looped, plan.clip[idx], plan.offset[idx], snr[idx], limit,
                                      torch.device("cpu"), [str(self.ids[i]) for i in idx])
        out = dict(batch)
        out[self.column] = y
        recs = []
        a = self.arrays
        for j, i in enumerate(idx.tolist()):
            ci = int(plan.clip[i])
            recs.append(store.recipe(
                stage="with_noise", parent=str(self.ids[i]), noise=a.ids[ci], noise_group=a.groups[ci],
                offset=int(plan.offset[i]), length=int(self.lens[i]), loops=int(loops[i]), snr_db=float(snr[i]),
                speech_gain=float(sg[j]), noise_gain=float(ng[j]), peak_limit=limit, seed=int(seeds[i]), index=i,
                copy=self.epoch, **{"pass": int(plan.pass_[i])}, segment=int(plan.segment[i])))
        out[self.recipe_column] = recs
        if not self.keep_index:
            out.pop(INDEX_COLUMN)
        return out


def with_noise(ds, bank, cfg: Mapping[str, Any] | None = None, seed: int | None = None, *, column: str = "audio",
               recipe_column: str = "noise_recipe", epoch: int = 0, keep_index: bool = False):
    """``ds.with_transform(...)``: every served waveform mixed with noise from ``bank``.

    Args:
        ds: a Hugging Face audio ``Dataset`` in the shiftlab schema (``audio`` float32 samples,
            ``sampling_rate`` the bank's).
        bank: the noise bank (see :class:`BatchNoise`).
        cfg: the ``synth_mix`` section; ``seed`` defaults to ``cfg["seed"]``.
        recipe_column: the served recipe (canonical JSON; :func:`mix.regenerate` takes it).
        epoch: the starting epoch; :func:`set_epoch` changes it (the per-epoch reseed hook).

    Row ``i`` (its position in ``ds``, carried through later ``shuffle`` / ``select`` in
    :data:`~shiftlab.synth.adapters.INDEX_COLUMN`) in epoch ``e`` takes draw ``i`` of one
    reuse-balanced plan of all rows (``seeding.sample_rng(seed, e, "mix_plan")``) and SNR
    ``default_rng(seeding.sample_seed(seed, i, "mix", e)).uniform(*snr_db)``
    (:func:`mix.plan_rows`): in epoch 0, bit for bit the stage's rows of
    :func:`mix.make_copies` ``(ds, bank, cfg)`` with ``fraction`` 1, ``copies`` 1 (and of
    :func:`mix.make_synthetic` when ``ds`` holds its eligible parents in id order).
    """
    if column not in ds.column_names:
        raise ShiftlabError(f"with_noise: the dataset has no {column!r} column (have: {', '.join(ds.column_names)})")
    s = _seed_arg(mix_mod.check_cfg(cfg)["seed"] if seed is None else seed, "with_noise")
    t = _NoiseTransform(ds, bank, cfg, s, column, recipe_column, epoch, keep_index)
    if INDEX_COLUMN in ds.column_names:  # a dataset wrapped before: index = position in this one
        ds = ds.remove_columns(INDEX_COLUMN)
    ds = ds.add_column(INDEX_COLUMN, np.arange(len(ds), dtype=np.int64))
    return ds.with_transform(t)
