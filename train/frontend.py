"""Raw batches -> model input, on the training device.

* **Images** (uint8 ``(N, C, H, W)``): to float in [0, 1]; training only, optional random
  horizontal / vertical flips and random crops after padding (``crop_padding`` pixels each
  side, zeros or reflection); then per-channel normalisation ``(x - mean) / std`` with the
  mean and std of the (selected) train rows, measured once by :meth:`Frontend.fit`.
* **Audio** (float32 ``(N, L)`` waveforms): ``torchaudio.transforms.MelSpectrogram``
  (``n_fft``, ``win_length``, ``hop_length``, ``n_mels``, ``f_min``, ``f_max``, power 2)
  then ``log: db`` (``torchaudio.transforms.AmplitudeToDB``, per-clip ``top_db`` floor) or
  ``log: log`` (``log(x + log_eps)``); per-mel-bin normalisation by the train rows' mean and
  std; training only, optional SpecAugment (``torchaudio.transforms.FrequencyMasking`` /
  ``TimeMasking``, ``n_freq_masks`` x width < ``freq_mask`` bins, ``n_time_masks`` x width
  < ``time_mask`` frames, masked to 0 = the train mean). Output ``(N, 1, n_mels, T)``.
  The log-mel features are computed in float64 and rounded to multiples of 1/1024 dB
  (:data:`FEATURE_GRID`) before float32: MKL's FFT and the vectorised kernels choose their
  code path by CPU, so float32 features (and, through training, every prediction) used to
  differ between machines of one kind; now they are the same bytes (tests/test_trainer.py).

All random choices derive from (seed, epoch, sample index): flips and crop offsets via
:func:`shiftlab.train.data.uniforms` (vectorised); SpecAugment seeds torch's CPU generator
per clip inside ``torch.random.fork_rng`` (torchaudio's masking draws ``torch.rand(1)`` from the
global CPU generator; only that generator is seeded and restored), so the global RNG state is untouched and a clip's masks do not depend on its
batch. The frontend runs in float32 outside autocast; its state (statistics and
options) is a plain dict of tensors and numbers, saved in every checkpoint.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio

from shiftlab import paramschema, seeding
from shiftlab.errors import ShiftlabError
from shiftlab.train.data import SplitData, uniforms

__all__ = ["DEFAULTS", "FEATURE_GRID", "merge", "Frontend"]

#: audio features (log-mel dB, or log) are rounded to multiples of 1 / FEATURE_GRID: bit-stable across CPUs
FEATURE_GRID = 1024.0
#: at most this many audio rows' features are memoised per process (~8 KB each at 40 x 51)
_CACHE_ROWS = 100_000
#: the front-end keys that decide an audio row's log-mel (the memo's key, with the sampling rate)
_FEATURE_KEYS = ("n_fft", "win_length", "hop_length", "f_min", "f_max", "n_mels", "log", "top_db", "log_eps")
_FEATURES: dict[tuple, dict[bytes, torch.Tensor]] = {}

#: the ``frontend`` sub-section of the trainer's params: the fields of :class:`shiftlab.paramschema.Frontend`
#: (types, ranges and defaults in one place)
DEFAULTS: dict[str, Any] = paramschema.defaults(paramschema.Frontend)


def merge(cfg: Mapping[str, Any] | None, where: str = "train.frontend") -> dict[str, Any]:
    """DEFAULTS updated by ``cfg``, validated by :class:`shiftlab.paramschema.Frontend` (one-line error naming
    the key)."""
    return paramschema.merge(paramschema.Frontend, cfg, where)


class Frontend:
    """Turns raw batches into normalised float model input (see the module docstring).

    Build with :meth:`fit` (measures the train statistics) or :meth:`from_state` (from a
    checkpoint). Call as ``frontend(x, sample_index, epoch, train=True)`` for training
    batches and ``frontend(x)`` for evaluation (no augmentation).
    """

    def __init__(self, modality: str, cfg: Mapping[str, Any], seed: int = 0, *, sampling_rate: int | None = None,
                 input_shape: tuple[int, ...] = (), mean: torch.Tensor | None = None, std: torch.Tensor | None = None):
        if modality not in ("image", "audio"):
            raise ShiftlabError(f"frontend: modality must be image or audio, got {modality!r}")
        self.modality, self.cfg, self.seed = modality, merge(cfg), int(seed)
        self.sampling_rate = None if sampling_rate is None else int(sampling_rate)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.mean = None if mean is None else mean.detach().float().cpu()
        self.std = None if std is None else std.detach().float().cpu()
        self._mods: dict[str, Any] = {}
        self._cache: dict[bytes, torch.Tensor] | None = None
        if modality == "audio":
            # one memo per feature setting, shared by the front ends of a process (training's and
            # predict's, which is rebuilt from the checkpoint)
            fkey = (self.sampling_rate,) + tuple(repr(self.cfg[k]) for k in _FEATURE_KEYS)
            self._cache = _FEATURES.setdefault(fkey, {})
            c = self.cfg
            if not self.sampling_rate:
                raise ShiftlabError("frontend: audio needs a sampling rate")
            f_max = c["f_max"]
            if f_max is not None and f_max > self.sampling_rate / 2:
                raise ShiftlabError(f"train.frontend.f_max: {f_max:g} Hz is above the Nyquist frequency "
                                    f"{self.sampling_rate / 2:g} Hz")
            # built in float64 throughout: a float32 window and mel filterbank, made by vectorised
            # kernels, already differ in the last bits between CPUs (and would then be converted)
            prev = torch.get_default_dtype()
            torch.set_default_dtype(torch.float64)
            try:
                self._mel64 = torchaudio.transforms.MelSpectrogram(
                    sample_rate=self.sampling_rate, n_fft=c["n_fft"], win_length=c["win_length"],
                    hop_length=c["hop_length"], f_min=c["f_min"], f_max=f_max, n_mels=c["n_mels"], power=2.0,
                )
            finally:
                torch.set_default_dtype(prev)
            self._db = torchaudio.transforms.AmplitudeToDB(stype="power", top_db=c["top_db"])
            self._fmask = torchaudio.transforms.FrequencyMasking(c["freq_mask"]) if c["freq_mask"] > 0 else None
            self._tmask = torchaudio.transforms.TimeMasking(c["time_mask"]) if c["time_mask"] > 0 else None

    # ------------------------------------------------------------------ construction

    @classmethod
    def fit(cls, train: SplitData, cfg: Mapping[str, Any], seed: int = 0, device: torch.device | str = "cpu",
            batch_size: int = 1024) -> "Frontend":
        """A frontend whose normalisation statistics come from the rows of ``train``."""
        fe = cls(train.modality, cfg, seed, sampling_rate=train.sampling_rate, input_shape=tuple(train.x.shape[1:]))
        if not fe.cfg["normalize"] or len(train) == 0:
            return fe
        device = torch.device(device)
        s1 = s2 = None
        count = 0
        for s in range(0, len(train), batch_size):
            f = fe._features(train.x[s:s + batch_size].to(device)).double()  # (n, C, A, B)
            dims = (0, 2, 3) if fe.modality == "image" else (0, 1, 3)
            a, b = f.sum(dim=dims), (f * f).sum(dim=dims)
            s1 = a if s1 is None else s1 + a
            s2 = b if s2 is None else s2 + b
            count += f.numel() // a.numel()
        mean = s1 / count
        var = (s2 / count - mean * mean).clamp_min(0.0)
        fe.mean = mean.float().cpu()
        fe.std = var.sqrt().clamp_min(1e-6).float().cpu()
        return fe

    def state(self) -> dict[str, Any]:
        """Plain dict (tensors, numbers, strings): loadable with ``torch.load(weights_only=True)``."""
        return {
            "modality": self.modality, "cfg": copy.deepcopy(self.cfg), "seed": self.seed,
            "sampling_rate": self.sampling_rate, "input_shape": list(self.input_shape),
            "mean": self.mean, "std": self.std,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> "Frontend":
        return cls(state["modality"], state["cfg"], state["seed"], sampling_rate=state["sampling_rate"],
                   input_shape=tuple(state["input_shape"]), mean=state["mean"], std=state["std"])

    # ------------------------------------------------------------------ properties

    @property
    def in_channels(self) -> int:
        return int(self.input_shape[0]) if self.modality == "image" else 1

    def output_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the model input."""
        if self.modality == "image":
            return tuple(self.input_shape)  # type: ignore[return-value]
        frames = self.input_shape[0] // self.cfg["hop_length"] + 1  # center=True
        return (1, self.cfg["n_mels"], frames)

    # ------------------------------------------------------------------ transforms

    def _module(self, name: str, device: torch.device):
        mod = getattr(self, name)
        key = f"{name}:{device}"
        if key not in self._mods:
            self._mods[key] = copy.deepcopy(mod).to(device) if mod is not None else None
        return self._mods[key]

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        """Unnormalised, unaugmented features: images float [0, 1]; audio log-mel (N, 1, M, T)."""
        if self.modality == "image":
            if x.dtype == torch.uint8:
                return x.float().div_(255.0)
            return x.float()
        if x.ndim == 4:  # audio features already computed (:meth:`precompute`)
            return x.float()
        if x.device.type == "cpu" and x.ndim == 2 and self._cache is not None:
            return self._cached_logmel(x)
        return self._logmel(x)

    def precompute(self, data: SplitData, batch_size: int = 512) -> SplitData:
        """``data`` with its waveforms replaced by their log-mel features (audio; images as is).

        A row's features depend on that row alone, so they are computed once per split instead
        of once per epoch and evaluation (through the same per-row memo as batches, so the same
        bytes); :meth:`__call__` then only normalises and augments them. The features of a
        split of N clips take N x n_mels x frames float32 (about 5 KB a clip by default).
        """
        if self.modality != "audio" or data.x.ndim != 2:
            return data
        parts = [self._features(data.x[s:s + batch_size]) for s in range(0, len(data), batch_size)]
        x = torch.cat(parts) if parts else torch.zeros((0, *self.output_shape()), dtype=torch.float32)
        return dataclasses.replace(data, x=x.contiguous())

    def _cached_logmel(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`_logmel` row by row through a memo keyed by each waveform's bytes (CPU).

        A row's log-mel depends on that row alone (the top_db floor is per clip), and training
        computes the same rows again every epoch (train batches, dev, train_dev, the train
        subset): on 2 CPU cores the float64 front end was ~40% of an audio run. Bounded by
        ``_CACHE_ROWS`` rows; beyond it rows are computed as before.
        """
        arr = np.ascontiguousarray(x.numpy())
        keys = [hashlib.blake2b(row.data, digest_size=16).digest() for row in arr]
        cache = self._cache
        missing = [i for i, k in enumerate(keys) if k not in cache]
        if missing:
            f = self._logmel(x[missing] if len(missing) < len(keys) else x)
            if sum(len(v) for v in _FEATURES.values()) + len(missing) > _CACHE_ROWS:
                if len(missing) == len(keys):
                    return f
                out = [None] * len(keys)
                for j, i in enumerate(missing):
                    out[i] = f[j]
                return torch.stack([o if o is not None else cache[k] for o, k in zip(out, keys)])
            for j, i in enumerate(missing):
                cache[keys[i]] = f[j].clone()
        return torch.stack([cache[k] for k in keys])

    def _logmel(self, x: torch.Tensor) -> torch.Tensor:
        # float64, then rounded to a grid of 1/1024 dB (or nat): the FFT and matmul libraries pick
        # their code path by CPU (MKL, vector width), which moves float32 results in the last bits
        # and, through training, every prediction; float64 differences are ~1e-13 dB, far below the
        # grid, so the features are the same bytes on every CPU (and on CUDA) except for values
        # within ~1e-13 of a grid boundary
        spec = self._module("_mel64", x.device)(x.double().unsqueeze(1))  # (N, 1, M, T)
        if self.cfg["log"] == "db":
            f = self._module("_db", x.device)(spec)  # 4-D: top_db floor per clip
        else:
            f = torch.log(spec + self.cfg["log_eps"])
        return torch.round(f * FEATURE_GRID).div_(FEATURE_GRID).float()

    def _normalise(self, f: torch.Tensor) -> torch.Tensor:
        if not self.cfg["normalize"] or self.mean is None:
            return f
        shape = (1, -1, 1, 1) if self.modality == "image" else (1, 1, -1, 1)
        mean = self.mean.to(f.device).view(shape)
        std = self.std.to(f.device).view(shape)
        return (f - mean) / std

    def _augment_image(self, x: torch.Tensor, sample_index: np.ndarray, epoch: int) -> torch.Tensor:
        c = self.cfg
        n = x.shape[0]
        u = uniforms(self.seed, epoch, sample_index, "frontend/image", 4)
        if c["hflip"]:
            m = torch.from_numpy(u[:, 0] < 0.5).to(x.device).view(n, 1, 1, 1)
            x = torch.where(m, x.flip(-1), x)
        if c["vflip"]:
            m = torch.from_numpy(u[:, 1] < 0.5).to(x.device).view(n, 1, 1, 1)
            x = torch.where(m, x.flip(-2), x)
        p = c["crop_padding"]
        if p > 0:
            h, w = x.shape[-2:]
            if c["pad_mode"] == "reflect" and (p >= h or p >= w):
                raise ShiftlabError(f"train.frontend.crop_padding: {p} must be smaller than the image ({h}x{w}) "
                                    f"for pad_mode reflect")
            xp = F.pad(x, (p, p, p, p), mode=c["pad_mode"])
            oy = torch.from_numpy(np.floor(u[:, 2] * (2 * p + 1)).astype(np.int64)).to(x.device)
            ox = torch.from_numpy(np.floor(u[:, 3] * (2 * p + 1)).astype(np.int64)).to(x.device)
            rows = (oy[:, None] + torch.arange(h, device=x.device)[None, :])[:, :, None]  # (N, H, 1)
            cols = (ox[:, None] + torch.arange(w, device=x.device)[None, :])[:, None, :]  # (N, 1, W)
            nidx = torch.arange(n, device=x.device)[:, None, None]
            x = xp.permute(0, 2, 3, 1)[nidx, rows, cols].permute(0, 3, 1, 2).contiguous()
        return x

    def _spec_augment(self, f: torch.Tensor, sample_index: np.ndarray, epoch: int) -> torch.Tensor:
        c = self.cfg
        fm, tm = self._module("_fmask", f.device), self._module("_tmask", f.device)
        if (fm is None or c["n_freq_masks"] == 0) and (tm is None or c["n_time_masks"] == 0):
            return f
        out = []
        with torch.random.fork_rng(devices=[]):
            for i in range(f.shape[0]):
                torch.random.default_generator.manual_seed(
                    seeding.sample_seed(self.seed, int(sample_index[i]), "frontend/specaugment", epoch))
                g = f[i]
                for _ in range(c["n_freq_masks"] if fm is not None else 0):
                    g = fm(g)
                for _ in range(c["n_time_masks"] if tm is not None else 0):
                    g = tm(g)
                out.append(g)
        return torch.stack(out)

    def __call__(self, x: torch.Tensor, sample_index: np.ndarray | None = None, epoch: int = 0,
                 train: bool = False) -> torch.Tensor:
        """Model input (N, C, H, W) float32 for a raw batch on any device."""
        train = train and sample_index is not None
        with torch.autocast(x.device.type, enabled=False):
            f = self._features(x)
            if train and self.modality == "image" and (self.cfg["hflip"] or self.cfg["vflip"] or self.cfg["crop_padding"]):
                f = self._augment_image(f, np.asarray(sample_index), epoch)
            f = self._normalise(f)
            if train and self.modality == "audio" and self.cfg["spec_augment"]:
                f = self._spec_augment(f, np.asarray(sample_index), epoch)
        return f
