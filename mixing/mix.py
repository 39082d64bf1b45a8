"""The ``synth_mix`` stage: clean source speech mixed with car noise at a drawn SNR.

Machine Learning Yearning's speech case (ch. 39-40): dev speech is recorded in cars, the
training speech is clean, so car noise is added to clean speech until it sounds recorded
in a car -- and the trap: one hour of car noise reused under a thousand hours of speech
(or noise from only ten cars) lets the model learn those few noise sources.
:func:`make_synthetic` takes the mismatch splits and a noise bank
(:mod:`shiftlab.mixing.bank`) and returns the synthetic rows, ready for
:func:`shiftlab.datasets.splits.attach_synthetic`; :class:`OnTheFlyMixer` mixes training
batches on the fly (CPU or CUDA) with the same recipe semantics.

The mix (:func:`mix`)
    ``y = s + a n`` with ``a = ||s|| / (||n|| 10^(snr/20))`` per row: exactly the formula
    of ``torchaudio.functional.add_noise`` (exact power SNR, batched, any device), with
    its float32 L2 norms (``torch.linalg.vector_norm``; relative error about 1e-6 for 1 s
    at 16 kHz, 6e-5 for 10 s, i.e. well under 0.001 dB), but ``10^(snr/20)`` and the
    ratio taken in float64, because ``add_noise`` itself is not batch-invariant on the
    CPU (its float32 ``log10``/``pow`` take different SIMD paths for different batch
    sizes, so a clip mixed alone differs in the last bits from the same clip mixed in a
    batch). The norms, ``y = a n`` then ``y += s`` (each rounded once; not a fused
    multiply-add, whose rounding would depend on the CPU's FMA support) are per-row and
    elementwise ops whose result does not depend on the batch, the thread count or the
    chunking below, so a row mixed alone is
    bit-identical to the same row mixed in any batch (tested; a float64 ``sum`` of
    squares, by contrast, splits long rows across threads differently). Then a
    **clipping guard**: a row whose peak exceeds ``peak_limit`` is scaled by ``g =
    peak_limit / peak`` (speech and noise alike, so the SNR is unchanged) instead of
    being clipped; ``g`` is recorded (``speech_gain = g``, ``noise_gain = g a``) and a
    final clamp to ``+-peak_limit`` only removes float32 rounding (at most one ulp).

Speed (the batched paths, :func:`make_synthetic` and :class:`OnTheFlyMixer`)
    The work is a handful of memory passes per sample, so it is organised around memory:
    the bank is held as one flat tensor in which every clip is continued cyclically
    (:class:`_LoopedBank`), so every noise window, looping or not, is a plain slice and a
    batch of windows one ``index_select``; on the CPU the batch is mixed in chunks of about
    :data:`CHUNK_BYTES` per tensor (noise window, the two norms, ``a n + s``, the peak:
    the passes of a chunk run from cache); the noise is written straight into
    the output, and ``OnTheFlyMixer(..., out=)`` (a caller's buffer, or the speech itself)
    saves even the allocation of a fresh output (on the CPU a multi-MB tensor costs page
    faults on every call). ``bench/mix.py`` measures it.

Which rows are mixed
    *Eligible parents* are the rows of ``train`` and ``train_dev`` with domain ``source``
    and origin ``real``, numbered by id order (parent position ``p`` = rank of the id).
    ``floor(fraction * eligible + 0.5)`` of them are used (rank below that in the
    permutation ``seeding.sample_rng(seed, 0, "mix", "select").permutation(eligible)``),
    each ``copies`` times (``c = 0 .. copies-1``); rows come in (p, c) order.

Noise and SNR per row
    Row ``j`` (in (p, c) order) takes draw ``j`` of one :func:`bank.plan_draws` plan of
    all rows (``rng = seeding.sample_rng(seed, 0, "mix_plan")``, segments of ``T`` = the
    longest parent, the bank's ``max_source_share`` and ``min_segment_db``): the
    reuse-balancing policy, not uniform draws with replacement. A row shorter than ``T``
    uses the first ``len`` samples of its window. The row's SNR is
    ``default_rng(row seed).uniform(*snr_db)`` with ``row seed = seeding.sample_seed(seed,
    p, "mix", c)``.

Output rows (audio schema): ``id`` = ``<parent id>/mix<c>``, origin ``synthetic``,
``parent``, and ``group`` / ``domain`` / ``label`` / ``sampling_rate`` of the parent;
``recipe`` = canonical JSON with ``stage`` ("synth_mix"), ``parent``, ``noise`` (clip id),
``noise_group``, ``offset`` and ``length`` (samples), ``loops``, ``snr_db``,
``speech_gain``, ``noise_gain``, ``peak_limit``, ``seed`` (row seed), ``index`` (p),
``copy`` (c), ``pass`` and ``segment`` (of the plan). :func:`regenerate` rebuilds the
samples from the recipe, the parent's waveform and the bank, byte-identical on the CPU;
the output does not depend on ``batch_size`` (tested with store digests).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from shiftlab import devices, eligibility, paramschema, seeding
from shiftlab.errors import ShiftlabError
from shiftlab.mixing import bank as bank_mod

__all__ = [
    "DEFAULTS",
    "NARROW",
    "check_cfg",
    "build_bank",
    "mix",
    "gather",
    "make_synthetic",
    "regenerate",
    "OnTheFlyMixer",
    "eligible_parents",
    "resolve_device",
    "make_copies",
    "all_rows",
    "plan_rows",
]

_KEY = "synth_mix"
PURPOSE = "mix"
_PROGRESS_MIN = 200
#: Sample indices planned together by an :class:`OnTheFlyMixer` without ``n_samples``.
PLAN_BLOCK = 4096

#: Defaults of the ``synth_mix`` params section: the fields of :class:`shiftlab.paramschema.SynthMix`.
DEFAULTS: dict[str, Any] = paramschema.defaults(paramschema.SynthMix)

#: The book's failure: every row gets noise from ONE short recording (dustracing2d's
#: 1.5 s skid), reused under the whole speech set. For the diversity checks' "low
#: diversity" example and tests (:class:`shiftlab.paramschema.SynthMixNarrow`).
NARROW: dict[str, Any] = paramschema.defaults(paramschema.SynthMixNarrow)


# --------------------------------------------------------------------------- config


def _peak_limit(v, where: str) -> float:
    """A :func:`mix` argument: a number in (0, 1] (the ``peak_limit`` knob of :class:`shiftlab.paramschema.SynthMix`)."""
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not 0.0 < float(v) <= 1.0:
        raise ShiftlabError(f"{where}: must be a number in (0, 1], got {v!r}")
    return float(v)


def check_cfg(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """Merge ``cfg`` over :data:`DEFAULTS` (the ``bank`` section key by key) and validate it with
    :class:`shiftlab.paramschema.SynthMix`; the bank by :func:`shiftlab.mixing.bank.check_cfg`.

    Errors are one line naming the key: ``synth_mix.copies: 0 is out of range [1, inf]``.
    """
    c = paramschema.merge(paramschema.SynthMix, cfg, _KEY, DEFAULTS, own=("bank",))
    c["bank"] = bank_mod.check_cfg(c["bank"], f"{_KEY}.bank")
    return c


def resolve_device(device: str | None = "auto"):
    """``"auto"`` -> CUDA when available, else CPU; ``"cpu"``, ``"cuda"``, ``"cuda:1"`` as given
    (:func:`shiftlab.devices.resolve`)."""
    return devices.resolve(device, f"{_KEY}.device")


def build_bank(cfg: Mapping[str, Any] | None, noise=None, sampling_rate: int = 16000, workers: int = 0):
    """The noise bank of a ``synth_mix`` section: ``bank.build(cfg["bank"], noise, sampling_rate, seed=cfg["seed"])``."""
    c = check_cfg(cfg)
    return bank_mod.build(c["bank"], noise, sampling_rate, seed=c["seed"], workers=workers)


# --------------------------------------------------------------------------- the mix


def mix(speech, noise, snr_db, peak_limit: float = 1.0):
    """Mix ``noise`` under ``speech`` at ``snr_db`` (exact power SNR per row), with a clipping guard.

    Args:
        speech, noise: same shape ``(..., T)``; torch tensors (any device, cast to
            float32) or numpy arrays (then the results are numpy).
        snr_db: a number or one value per row (shape ``(...)``).
        peak_limit: rows whose peak would exceed it are scaled down (module docstring).

    Returns:
        ``(mixed, speech_gain, noise_gain)``: float32 ``(..., T)`` with no ``|x| >
        peak_limit``, and the per-row float32 gains, so that ``mixed ~= speech_gain *
        speech + noise_gain * noise`` and the power ratio of those two components is
        ``snr_db``. A noise row with zero energy is an error (the SNR is undefined); a
        silent speech row gets ``noise_gain`` 0; NaN or infinite samples in either input
        are an error naming the row.
    """
    return _mix(speech, noise, snr_db, peak_limit)


def _array_tensor(x):
    """A tensor of a numpy array (or anything array-like); read-only arrays are copied."""
    import torch

    a = np.asarray(x)
    if not a.flags.writeable:  # torch warns about (and may not honour) read-only buffers
        a = a.copy()
    return torch.as_tensor(a)


#: CPU mixes run over chunks of rows holding about this many bytes per tensor (speech,
#: noise, output) and torch thread, so that the passes of a chunk (two norms, ``a n + s``,
#: the peak) read from cache, not memory; per-row results do not depend on the chunking.
CHUNK_BYTES = 2 * 2**20


def _mix(speech, noise, snr_db, peak_limit: float = 1.0, names: Sequence[str] | None = None,
         own_noise: bool = False, out=None, scratch=None):
    """:func:`mix`, with options for the batched paths (the samples are the same with or without them).

    ``names`` (one per row, flattened) name the rows in errors. ``noise`` may also be a
    callable ``fill(i, j, buf)`` that writes noise rows ``i .. j-1`` (of the flattened
    ``(N, T)`` batch) into the contiguous float32 tensor ``buf`` (``(j - i, T)``): the noise
    is then produced chunk by chunk, in cache, never as a whole. ``own_noise``: ``noise``
    is a float32 tensor the caller hands over, overwritten with the result. ``out``: a
    contiguous float32 tensor of the speech's shape, on its device, for the result (may be
    ``speech`` itself; its content is undefined after an error). ``own_noise`` and ``out``
    save the allocation of a fresh output (on the CPU a multi-MB tensor costs page faults
    on every call); ``scratch``: a float32 tensor of at least one chunk for a ``fill`` when
    ``out`` is ``speech`` (else a chunk is allocated).
    """
    import torch

    as_numpy = not isinstance(speech, torch.Tensor)
    s = (_array_tensor(speech) if as_numpy else speech).to(torch.float32)
    fill = noise if callable(noise) and not isinstance(noise, torch.Tensor) else None
    if fill is None:
        n = noise if isinstance(noise, torch.Tensor) else _array_tensor(noise)
        n = n.to(device=s.device, dtype=torch.float32)
        if s.shape != n.shape or s.ndim < 1:
            raise ShiftlabError(
                f"mix: speech {tuple(s.shape)} and noise {tuple(n.shape)} must have the same shape (..., T)")
    elif s.ndim < 1:
        raise ShiftlabError(f"mix: speech {tuple(s.shape)} must have the shape (..., T)")
    if isinstance(snr_db, torch.Tensor):
        snr = snr_db.detach().to("cpu", torch.float64).numpy()
    else:
        snr = np.asarray(snr_db, dtype=np.float64)
    try:
        snr = np.broadcast_to(snr, s.shape[:-1])
    except ValueError:
        raise ShiftlabError(f"mix: snr_db of shape {snr.shape} does not match {tuple(s.shape[:-1])} rows") from None
    if not np.isfinite(snr).all():
        raise ShiftlabError("mix: snr_db must be finite")
    limit = _peak_limit(peak_limit, "mix: peak_limit")
    T = s.shape[-1]
    N = int(np.prod(s.shape[:-1], dtype=np.int64))
    dev = s.device
    with torch.no_grad():
        s2 = s.reshape(N, T)
        n2 = n.reshape(N, T) if fill is None else None
        if out is not None:
            y2 = out.view(N, T)
        elif own_noise and fill is None:
            y2 = n2
        else:
            y2 = torch.empty((N, T), dtype=torch.float32, device=dev)
        # rows per chunk: the whole batch on accelerators (one launch per op), cache-sized on the CPU
        R = _chunk_rows(N, T, dev)
        alias_s = out is not None and _overlaps(y2, s2)
        in_place = fill is not None and alias_s
        own_n = fill is not None or own_noise
        if in_place and scratch is None:
            scratch = torch.empty(R * T, dtype=torch.float32, device=dev)
        root = torch.from_numpy(np.ascontiguousarray(np.power(10.0, snr.reshape(N) / 20.0))).to(dev)
        ns = torch.empty(N, dtype=torch.float32, device=dev)  # ||s||, ||n||: float32 L2 norms per row,
        nn = torch.empty(N, dtype=torch.float32, device=dev)  # as add_noise computes them
        a = torch.empty(N, dtype=torch.float32, device=dev)
        if dev.type == "cpu":  # numpy views: the per-chunk gain takes ~1 us ops instead of torch's ~5 us
            ns_np, nn_np, a_np, root_np = ns.numpy(), nn.numpy(), a.numpy(), root.numpy()
        hi = torch.empty(N, dtype=torch.float32, device=dev)
        lo = torch.empty(N, dtype=torch.float32, device=dev)
        for i in range(0, N, R):
            j = min(N, i + R)
            s_c, y_c = s2[i:j], y2[i:j]
            if fill is None:
                n_c = n2[i:j]
            else:
                n_c = scratch.view(-1)[: (j - i) * T].view(j - i, T) if in_place else y_c
                fill(i, j, n_c)
            ns_c, nn_c, a_c = ns[i:j], nn[i:j], a[i:j]
            torch.linalg.vector_norm(s_c, dim=-1, out=ns_c)
            torch.linalg.vector_norm(n_c, dim=-1, out=nn_c)
            # a = ||s|| / (||n|| 10^(snr/20)): computed in float64 (root is float64), rounded once to float32
            # (IEEE multiply, divide and rounding: numpy and torch give the same bits)
            if dev.type == "cpu":
                with np.errstate(all="ignore"):  # zero / NaN norms: reported below
                    a_np[i:j] = ns_np[i:j] / (nn_np[i:j] * root_np[i:j])
            else:
                torch.div(ns_c, nn_c * root[i:j], out=a_c)
            # y = a n, then y += s: each rounded once, the bits of every earlier version (a fused
            # torch.addcmul would round once and be no faster here: the chunk is in cache)
            if own_n:  # the noise chunk is ours (the output itself, scratch, or handed over)
                torch.add(s_c, n_c.mul_(a_c.unsqueeze(-1)), out=y_c)
            elif not alias_s:
                torch.mul(n_c, a_c.unsqueeze(-1), out=y_c).add_(s_c)
            else:  # the caller's noise and the output over the speech: a product of our own
                torch.add(s_c, n_c * a_c.unsqueeze(-1), out=y_c)
            if T:
                torch.amax(y_c, -1, out=hi[i:j])
                torch.amin(y_c, -1, out=lo[i:j])

        def row(mask) -> str:
            k = int(torch.nonzero(mask.reshape(-1))[0])
            return f"row {names[k]}" if names is not None else f"row {k}"

        for what, e in (("speech", ns), ("noise", nn)):
            bad = ~torch.isfinite(e)  # NaN/inf samples make the norm NaN/inf
            if bool(bad.any()):
                raise ShiftlabError(f"mix: {what} {row(bad)} has NaN or infinite samples")
        if bool((nn <= 0).any()):
            raise ShiftlabError(f"mix: noise {row(nn <= 0)} has zero energy; the SNR is undefined")
        peak = torch.maximum(hi, lo.neg_()) if T else torch.zeros_like(a)
        over = peak > limit
        g = torch.where(over, limit / peak.to(torch.float64), 1.0).to(torch.float32)
        if bool(over.any()):  # scale (and clamp) only the rows over the limit
            w = torch.nonzero(over).squeeze(1)
            y2.index_copy_(0, w, y2.index_select(0, w).mul_(g[w].unsqueeze(-1)).clamp_(-limit, limit))
        gn = g * a
        shape = s.shape[:-1]
        y, g, gn = (out if out is not None else y2.view(s.shape)), g.view(shape), gn.view(shape)
    if as_numpy:
        return y.cpu().numpy(), g.cpu().numpy(), gn.cpu().numpy()
    return y, g, gn


def _chunk_rows(N: int, T: int, device) -> int:
    """Rows per chunk of a batched mix: all ``N`` on accelerators; on the CPU about :data:`CHUNK_BYTES`
    per tensor and torch thread (each op of a chunk is split over the threads)."""
    if device.type != "cpu":
        return max(1, N)
    import torch

    return max(1, min(N, CHUNK_BYTES * torch.get_num_threads() // max(1, 4 * T)))


def _overlaps(x, y) -> bool:
    """Whether two tensors' memory ranges intersect."""
    if x.device != y.device or x.numel() == 0 or y.numel() == 0:
        return False
    ex = x.element_size()
    x0, x1 = x.data_ptr(), x.data_ptr() + x.numel() * ex
    y0, y1 = y.data_ptr(), y.data_ptr() + y.numel() * y.element_size()
    return x0 < y1 and y0 < x1


def _gather_mod(padded, L, clip, offset, length: int):
    import torch

    t = torch.arange(int(length), device=padded.device, dtype=torch.int64)
    idx = (offset.unsqueeze(1) + t.unsqueeze(0)) % L.unsqueeze(1)
    return torch.take(padded, clip.unsqueeze(1) * padded.shape[1] + idx)


def gather(padded, lengths, clip, offset, length: int):
    """Noise windows: row ``i`` is ``clip_i[(offset_i + t) % L_i]`` for ``t < length``.

    ``padded``: (clips, Lmax) tensor of the bank, ``lengths`` (clips,) int64 tensor on
    the same device, ``clip`` / ``offset``: (B,) int64 tensors. Windows that do not wrap
    (``offset + length <= L``, every window of a clip at least as long as the speech) are
    one ``index_select`` of rows of an overlapping strided view of the bank (each row a
    contiguous copy); the wrapping ones take index arithmetic and ``torch.take``. No
    per-row Python.
    """
    import torch

    length = int(length)
    L = lengths.index_select(0, clip)
    W = padded.shape[1]
    if W < length:  # every clip is shorter than the window: all wrap
        return _gather_mod(padded, L, clip, offset, length)
    wrap = offset + length > L
    flat = padded.contiguous().view(-1)
    windows = flat.as_strided((flat.numel() - length + 1, length), (1, 1))  # row p = flat[p : p + length]
    out = windows.index_select(0, clip * W + torch.clamp(offset, max=W - length))
    if bool(wrap.any()):
        w = torch.nonzero(wrap).squeeze(1)
        out[w] = _gather_mod(padded, L[w], clip[w], offset[w], length)
    return out


#: Largest cyclic extension (bytes) a :class:`_LoopedBank` adds to the bank beyond the
#: bank's own size; longer speech with many clips falls back to index arithmetic for the
#: windows that wrap.
LOOP_EXTRA_BYTES = 64 * 2**20


class _LoopedBank:
    """The bank on a device, laid out for fast window gathers (:class:`OnTheFlyMixer`, :func:`make_synthetic`).

    One flat tensor in which every clip ``c`` (``L`` samples, from ``start[c]``) is followed by
    ``ext`` samples that continue it cyclically (``np.resize``), so for ``length <= ext + 1``
    the window ``clip[(o + t) % L]``, ``t < length``, of any offset ``o < L`` -- looping once,
    many times or not at all -- is the plain slice ``flat[start[c] + o :][:length]``, and a
    batch of windows is ONE ``index_select`` of rows of an overlapping strided view: one
    pass that writes the output, no ``(B, T)`` index tensor, no ``%``. Same samples as
    :func:`gather`. ``ext`` grows to ``length - 1`` on demand while the extension stays under
    ``max(LOOP_EXTRA_BYTES, bank bytes)``; beyond that the rows that wrap are taken by index
    arithmetic (few: only clips shorter than ``offset + length`` wrap).
    """

    def __init__(self, arrays: "bank_mod.BankArrays", device):
        self.arrays = arrays
        self.device = device
        self.lengths = np.asarray(arrays.lengths, dtype=np.int64)
        self.ext = -1
        self.flat = None
        self.start = None
        self._fit(1)

    def _fit(self, length: int) -> None:
        import torch

        want = max(0, int(length) - 1)
        if want <= self.ext:
            return
        n_clips, bank_bytes = len(self.lengths), int(self.lengths.sum()) * 4
        if self.flat is not None and n_clips * want * 4 > max(LOOP_EXTRA_BYTES, bank_bytes):
            return  # over budget: keep the current layout, wrapping rows take the slow path
        a = self.arrays
        parts = [np.resize(a.clip(i), int(L) + want) for i, L in enumerate(self.lengths)]
        self.start = np.concatenate([[0], np.cumsum(self.lengths + want)[:-1]]).astype(np.int64)
        self.flat = torch.from_numpy(np.concatenate(parts).astype(np.float32, copy=False)).to(self.device)
        self.ext = want

    def filler(self, clip: np.ndarray, offset: np.ndarray, length: int):
        """A ``fill(i, j, buf)`` for :func:`_mix`: writes the noise windows of rows ``i .. j-1``
        (row ``r`` = ``clip_r[(offset_r + t) % L_r]``, ``t < length``) into ``buf``, a contiguous
        ``(j - i, length)`` float32 tensor on the device. ``clip`` / ``offset``: int64 numpy
        arrays, ``0 <= offset < L``."""
        import torch

        length = int(length)
        self._fit(length)
        clip = np.asarray(clip, dtype=np.int64)
        offset = np.asarray(offset, dtype=np.int64)
        flat, n = self.flat, self.flat.numel()
        start = self.start[clip] + offset
        if length - 1 <= self.ext:  # every window is a slice: one index_select per chunk
            rows = flat.as_strided((n - length + 1, length), (1, 1))
            index = torch.from_numpy(start).to(self.device)

            def fill(i: int, j: int, buf) -> None:
                torch.index_select(rows, 0, index[i:j], out=buf)

            return fill
        # over budget: the rows that fit their clip + extension are slices, the others index arithmetic
        L = self.lengths[clip]
        wrap = offset + length > L + self.ext

        def fill_slow(i: int, j: int, buf) -> None:
            w = wrap[i:j]
            k = np.flatnonzero(~w)
            if len(k):
                rows = flat.as_strided((n - length + 1, length), (1, 1))
                buf[torch.from_numpy(k).to(self.device)] = rows.index_select(
                    0, torch.from_numpy(start[i:j][k]).to(self.device))
            k = np.flatnonzero(w)
            if len(k):
                t = torch.arange(length, device=self.device, dtype=torch.int64)
                Lk = torch.from_numpy(L[i:j][k]).to(self.device)
                base = torch.from_numpy(self.start[clip[i:j][k]]).to(self.device)
                off = torch.from_numpy(offset[i:j][k]).to(self.device)
                buf[torch.from_numpy(k).to(self.device)] = torch.take(
                    flat, base.unsqueeze(1) + (off.unsqueeze(1) + t) % Lk.unsqueeze(1))

        return fill_slow

    def windows(self, clip: np.ndarray, offset: np.ndarray, length: int):
        """The noise windows as one new ``(B, length)`` tensor on the device (see :meth:`filler`)."""
        import torch

        out = torch.empty((len(clip), int(length)), dtype=torch.float32, device=self.device)
        if len(clip):
            self.filler(clip, offset, length)(0, len(clip), out)
        return out


# --------------------------------------------------------------------------- the stage


def eligible_parents(splits) -> dict[str, np.ndarray]:
    """The eligible parents in id order: arrays ``id``, ``split``, ``row``, ``label``, ``domain``, ``group``,
    ``sampling_rate`` (the rule of :mod:`shiftlab.eligibility`: source-domain real rows of train and train_dev)."""
    return eligibility.eligible_parents(splits, "audio", ("sampling_rate",))


class _SplitAudio:
    """The ``audio`` column of a Dataset, read once: row ``i`` is a zero-copy float32 view of its
    Arrow chunk (no per-batch ``select``, whose fingerprinting costs more than the mix)."""

    def __init__(self, ds):
        n = len(ds)
        self.chunks: list[np.ndarray] = []
        self.chunk = np.zeros(n, np.int64)
        self.start = np.zeros(n, np.int64)
        self.lengths = np.zeros(n, np.int64)
        if n == 0:
            return
        col = ds.select_columns(["audio"]).with_format("arrow")[:].column("audio")
        row = 0
        for c, arr in enumerate(col.chunks):
            offs = np.asarray(arr.offsets.to_numpy(zero_copy_only=False), dtype=np.int64)
            k = len(offs) - 1
            self.chunks.append(np.asarray(arr.values.to_numpy(zero_copy_only=False), dtype=np.float32))
            self.chunk[row: row + k] = c
            self.start[row: row + k] = offs[:-1]
            self.lengths[row: row + k] = np.diff(offs)
            row += k

    def wave(self, i: int) -> np.ndarray:
        s = int(self.start[i])
        return self.chunks[int(self.chunk[i])][s: s + int(self.lengths[i])]


def _read_waves(audio: Mapping[str, _SplitAudio], split_names: np.ndarray, rows: np.ndarray) -> list[np.ndarray]:
    """float32 waveforms (views) of (split, row) pairs, in the given order."""
    return [audio[str(s)].wave(int(r)) for s, r in zip(split_names, rows)]


def _lengths(audio: Mapping[str, _SplitAudio], el: dict[str, np.ndarray], pos: np.ndarray) -> np.ndarray:
    out = np.zeros(len(pos), dtype=np.int64)
    for s in np.unique(el["split"][pos]):
        sel = np.flatnonzero(el["split"][pos] == s)
        out[sel] = audio[str(s)].lengths[el["row"][pos][sel]]
    return out


def _mix_rows(speech: list[np.ndarray], looped: _LoopedBank, clip, offset, snr, limit, dev,
              names: Sequence[str] | None = None):
    """Mix a batch of (possibly different-length) rows; rows of equal length go together.

    ``names``: the rows' ids, for error messages."""
    import torch

    lens = np.array([len(x) for x in speech], dtype=np.int64)
    out: list[np.ndarray | None] = [None] * len(speech)
    sg = np.zeros(len(speech), np.float32)
    ng = np.zeros(len(speech), np.float32)
    for T in np.unique(lens):
        idx = np.flatnonzero(lens == T)
        s = torch.from_numpy(np.stack([speech[i] for i in idx])).to(dev)  # our copy: mixed in place
        y, g1, g2 = _mix(s, looped.filler(clip[idx], offset[idx], int(T)), snr[idx], limit,
                         None if names is None else [names[i] for i in idx], out=s)
        y = y.cpu().numpy()
        for k, i in enumerate(idx):
            out[i] = y[k]
        sg[idx] = g1.cpu().numpy()
        ng[idx] = g2.cpu().numpy()
    return out, sg, ng


def make_synthetic(splits, bank, cfg: Mapping[str, Any] | None = None, device: str = "auto", progress: bool = True):
    """Noisy synthetic rows for the eligible train/train_dev parents (module docstring).

    Args:
        splits: the audio mismatch splits (``DatasetDict`` with train, train_dev, dev, test).
        bank: the noise bank (a ``Dataset``, e.g. :func:`build_bank`; or ``bank.BankArrays``).
            Its sampling rate must be the speech's.
        cfg: the ``synth_mix`` section (plain dict; missing keys take :data:`DEFAULTS`).
            Of its ``bank`` section only ``max_source_share`` and ``min_segment_db`` are
            used here (the bank is given).
        device: ``"auto"`` (then ``cfg["device"]`` decides), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        progress: show a tqdm bar (from 200 rows on).

    Returns:
        An in-memory ``Dataset`` in the audio schema (content-hash fingerprint) with
        ``round(fraction * eligible) * copies`` rows, accepted by
        :func:`shiftlab.datasets.splits.attach_synthetic`.
    """
    from shiftlab.datasets import schema

    c = check_cfg(cfg)
    dev = resolve_device(c["device"] if device in (None, "auto") else device)
    if "train" not in splits:
        raise ShiftlabError("splits: missing split train")
    names = schema.label_names(splits["train"])
    a = bank_mod.arrays(bank)
    el = eligible_parents(splits)
    _check_rates(el, a)
    return _synthesize(splits, el, a, c, dev, names, progress)


def all_rows(ds, split: str = "input") -> dict[str, np.ndarray]:
    """Every row of one audio Dataset as parents, in row order (parent position = row number): the
    arrays of :func:`eligible_parents`."""
    return eligibility.all_rows(ds, "audio", split, ("sampling_rate",))


def _check_rates(el: dict[str, np.ndarray], a, where: str = "splits: the eligible speech rows") -> None:
    rates = np.unique(el["sampling_rate"])
    if len(rates) > 1:
        raise ShiftlabError(f"{where} have several sampling rates {rates.tolist()}")
    if len(rates) and int(rates[0]) != a.sampling_rate:
        raise ShiftlabError(
            f"noise bank: sampling rate {a.sampling_rate} Hz, the speech has {int(rates[0])} Hz (build the bank at "
            f"the speech's rate)"
        )


def make_copies(ds, bank, cfg: Mapping[str, Any] | None = None, device: str = "auto", progress: bool = True):
    """Noisy copies of ANY audio Dataset in the shiftlab schema (``shiftlab mix --input DIR``).

    Every row is a parent (whatever its split, domain or origin), numbered by row position ``p``;
    fraction, copies, noise plan, SNRs and output rows are those of :func:`make_synthetic`, so
    :func:`shiftlab.mixing.adapters.with_noise` on the same Dataset serves in epoch 0 the
    samples of this output with ``fraction`` 1 and ``copies`` 1.
    """
    from shiftlab.datasets import schema

    c = check_cfg(cfg)
    dev = resolve_device(c["device"] if device in (None, "auto") else device)
    a = bank_mod.arrays(bank)
    el = all_rows(ds)
    _check_rates(el, a, "input: the speech rows")
    return _synthesize({"input": ds}, el, a, c, dev, schema.label_names(ds), progress)


def plan_rows(a, lens: np.ndarray, keys: np.ndarray, seed: int, c: Mapping[str, Any], plan_index: int = 0):
    """Noise draws and SNRs of rows ``keys`` ((p, c) pairs, in order) of lengths ``lens``: one
    :func:`bank.plan_draws` plan of all rows (``rng = seeding.sample_rng(seed, plan_index,
    "mix_plan")``, segments of the longest row) and SNR ``default_rng(seeding.sample_seed(seed, p,
    "mix", c)).uniform(*snr_db)`` per row. The stage uses ``plan_index`` 0.

    Returns ``(plan, snr, row seeds (int64), loops)``.
    """
    from shiftlab.synth.kernels import pcg64_raw, raw_to_double, sample_seeds

    n = len(keys)
    T = int(lens.max()) if n else 1
    plan = bank_mod.plan_draws(a, T, n, seeding.sample_rng(seed, plan_index, "mix_plan"),
                               c["bank"]["max_source_share"], c["bank"]["min_segment_db"])
    # row seeds and SNRs for all rows at once: seeding.sample_seed(seed, p, "mix", c) and
    # default_rng(row seed).uniform(*snr_db) (= lo + (hi - lo) * next_double), the same bits
    pk = np.asarray(keys, dtype=np.int64).reshape(-1, 2)
    seeds_np = sample_seeds(seed, pk[:, 0], PURPOSE, pk[:, 1])
    lo, hi = c["snr_db"]
    snr = lo + (hi - lo) * raw_to_double(pcg64_raw(seeds_np.astype(np.uint64), 1))[:, 0] if n else np.zeros(0)
    loops = (plan.offset + lens - 1) // a.lengths[plan.clip] if n else plan.loops
    return plan, snr, seeds_np, loops


def _synthesize(splits, el: dict[str, np.ndarray], a, c: dict[str, Any], dev, names: Sequence[str], progress: bool):
    """The mixed rows of parents ``el`` (parent position = array position): the stage's body, shared by
    :func:`make_synthetic` and :func:`make_copies`."""
    from tqdm.auto import tqdm

    from shiftlab import store
    from shiftlab.datasets import audio, schema

    seed, copies, bs, limit = c["seed"], c["copies"], c["batch_size"], c["peak_limit"]
    chosen = eligibility.choose(len(el["id"]), c["fraction"], seed, PURPOSE)
    keys = [(int(p), k) for p in chosen for k in range(copies)]
    n = len(keys)
    pos = np.array([p for p, _ in keys], dtype=np.int64)
    audio_cols = {str(sp): _SplitAudio(splits[str(sp)]) for sp in np.unique(el["split"][pos])} if n else {}
    lens = _lengths(audio_cols, el, pos) if n else np.zeros(0, np.int64)
    if n and lens.min() < 1:
        raise ShiftlabError(f"splits: speech row {el['id'][pos[int(np.argmin(lens))]]} has no samples")
    plan, snr, seeds_np, loops = plan_rows(a, lens, np.asarray(keys, dtype=np.int64).reshape(-1, 2), seed, c)
    row_seeds = seeds_np.tolist()

    looped = _LoopedBank(a, dev)
    waves: list[np.ndarray] = []
    sgain = np.zeros(n, np.float32)
    ngain = np.zeros(n, np.float32)
    bar = tqdm(total=n, desc="synth mix", unit="clip", disable=not progress or n < _PROGRESS_MIN)
    try:
        for start in range(0, n, bs):
            sl = slice(start, min(n, start + bs))
            sp = _read_waves(audio_cols, el["split"][pos[sl]], el["row"][pos[sl]])
            y, g1, g2 = _mix_rows(sp, looped, plan.clip[sl], plan.offset[sl], snr[sl], limit, dev,
                                  [str(el['id'][p]) for p in pos[sl]])
            waves.extend(y)
            sgain[sl], ngain[sl] = g1, g2
            bar.update(len(sp))
    finally:
        bar.close()

    rows = []
    for j, ((p, k), s) in enumerate(zip(keys, row_seeds)):
        parent = str(el["id"][p])
        ci = int(plan.clip[j])
        rec = store.recipe(
            stage=_KEY, parent=parent, noise=a.ids[ci], noise_group=a.groups[ci], offset=int(plan.offset[j]),
            length=int(lens[j]), loops=int(loops[j]), snr_db=float(snr[j]), speech_gain=float(sgain[j]),
            noise_gain=float(ngain[j]), peak_limit=limit, seed=int(s), index=p, copy=k,
            **{"pass": int(plan.pass_[j])}, segment=int(plan.segment[j]),
        )
        rows.append(dict(
            id=f"{parent}/mix{k}", audio=waves[j], sampling_rate=a.sampling_rate, label=names[int(el["label"][p])],
            domain=str(el["domain"][p]), origin="synthetic", group=str(el["group"][p]), parent=parent, recipe=rec,
        ))
    if not rows:  # keep the schema (and the label names) for an empty result
        import datasets as hfds

        return hfds.Dataset.from_dict({k: [] for k in schema.audio_features(names)},
                                      features=schema.audio_features(names))
    return audio.build_dataset(rows, names)


def _recipe(recipe) -> dict[str, Any]:
    import json

    rec = json.loads(recipe) if isinstance(recipe, (str, bytes)) else dict(recipe)
    need = ("noise", "offset", "length", "snr_db")
    missing = [k for k in need if k not in rec]
    if missing:
        raise ShiftlabError(f"regenerate: recipe lacks {', '.join(missing)} (not a synth mix row?)")
    return rec


def noise_window(recipe, bank) -> np.ndarray:
    """The noise samples a recipe used (before scaling): ``clip[(offset + t) % L]``, ``t < length``.

    Checks the recipe against the bank: the clip id exists, its group matches
    ``noise_group`` and ``loops`` equals ``(offset + length - 1) // L``.
    """
    rec = _recipe(recipe)
    a = bank_mod.arrays(bank)
    i = a.index(str(rec["noise"]))
    if "noise_group" in rec and rec["noise_group"] != a.groups[i]:
        raise ShiftlabError(
            f"regenerate: clip {rec['noise']} is in group {a.groups[i]} in this bank, the recipe says "
            f"{rec['noise_group']} (another bank?)"
        )
    x = a.clip(i)
    L, off, n = len(x), int(rec["offset"]), int(rec["length"])
    if off < 0 or off >= L or n < 1:
        raise ShiftlabError(f"regenerate: offset {off} / length {n} do not fit clip {rec['noise']} of {L} samples")
    if "loops" in rec and int(rec["loops"]) != (off + n - 1) // L:
        raise ShiftlabError(
            f"regenerate: recipe loops {rec['loops']} does not match clip {rec['noise']} of {L} samples (another bank?)"
        )
    return x[(off + np.arange(n)) % L]


def regenerate(recipe: str | Mapping[str, Any], speech_wave, bank) -> np.ndarray:
    """The samples of a synthetic row from its recipe, its parent's waveform and the bank.

    Byte-identical to :func:`make_synthetic`'s output computed on the CPU (and equal to
    the :class:`OnTheFlyMixer`'s for the same recipe up to float32 rounding on other
    devices). ``speech_wave``: the parent's float32 samples (``len == recipe["length"]``), or
    ``(channels, T)``: every channel mixed with the same noise window at the same SNR (each
    channel's own power), as :class:`OnTheFlyMixer` mixes a ``(B, C, T)`` batch. Any adapter's
    recipe works (:mod:`shiftlab.mixing.adapters`).
    """
    rec = _recipe(recipe)
    s = np.asarray(speech_wave, dtype=np.float32)
    if s.ndim not in (1, 2):
        raise ShiftlabError(f"regenerate: the speech must be (T,) or (channels, T), got shape {s.shape}")
    two_d = s.ndim == 2
    s = s.reshape(-1, s.shape[-1])
    if s.shape[1] != int(rec["length"]):
        raise ShiftlabError(f"regenerate: the speech has {s.shape[1]} samples, the recipe's length is {rec['length']}")
    nz = np.broadcast_to(noise_window(rec, bank).astype(np.float32), s.shape)  # one window for every channel
    y, _, _ = mix(s, nz, np.full(len(s), float(rec["snr_db"])), float(rec.get("peak_limit", 1.0)))
    return y if two_d else y[0]


# --------------------------------------------------------------------------- on the fly


class OnTheFlyMixer:
    """Batched noise mixing for training loops (CPU or CUDA), seeded per (seed, sample index, epoch).

    ``mixer(speech, sample_index, epoch)`` mixes a ``(B, T)`` batch: sample ``i`` of epoch
    ``e`` gets draw ``i % block`` of the plan of block ``i // block`` of that epoch, a
    :func:`bank.plan_draws` plan of ``block`` draws (``block = n_samples`` when given, so
    the whole epoch is one balanced plan; else :data:`PLAN_BLOCK`) with ``rng =
    seeding.sample_rng(seed, e, "mix_fly", block_no)``, and SNR ``seeding.sample_rng(seed,
    e, "mix_fly_snr", block_no).uniform(*snr_db, block)[i % block]``. So a sample's mix
    does not depend on the batch it is in, nor on the order of batches. Plans are made
    on the CPU once per (epoch, block) and cached (the current epoch only); the bank is
    held on the device as one flat, cyclically continued tensor (:class:`_LoopedBank`;
    the same windows as :func:`gather` on :attr:`padded`), the mix is :func:`mix`'s.

    ``out``: a contiguous float32 ``(B, T)`` tensor on the device to write the mix into,
    e.g. a buffer reused across batches, or ``speech`` itself (in place: the clean batch
    is overwritten; its content is undefined after an error) -- the same samples as
    without it, minus the allocation of a fresh ``(B, T)`` output per call (on the CPU
    its page faults cost about as much as the mix). In-place use keeps a scratch buffer
    of one chunk in the mixer; a mixer is not meant for concurrent calls from threads.

    Returns ``(mixed (B, T) float32 on the device (``out`` when given), recipes)``: one dict per sample with
    the synth-mix recipe fields (``noise``, ``noise_group``, ``offset``, ``length``,
    ``loops``, ``snr_db``, ``speech_gain``, ``noise_gain``, ``peak_limit``, ``seed``,
    ``index``, ``epoch``, ``pass``, ``segment``); :func:`regenerate` rebuilds a sample
    from one. ``return_recipes=False`` skips building them (``None``).

    A ``(B, C, T)`` batch mixes every channel of sample ``i`` with sample ``i``'s noise window at
    its SNR (each channel's own power; ``speech_gain`` / ``noise_gain`` are then per-channel
    lists). ``seed=`` on a call replaces the mixer's seed for that call (plans cached per seed).
    """

    def __init__(self, bank, cfg: Mapping[str, Any] | None = None, seed: int | None = None, device: str = "auto",
                 n_samples: int | None = None):
        import torch

        c = check_cfg(cfg)
        self.cfg = c
        self.seed = c["seed"] if seed is None else int(seed)
        if self.seed < 0:
            raise ShiftlabError(f"OnTheFlyMixer: seed must be >= 0, got {seed}")
        self.device = resolve_device(c["device"] if device in (None, "auto") else device)
        self.arrays = bank_mod.arrays(bank)
        if n_samples is not None and (isinstance(n_samples, bool) or int(n_samples) < 1):
            raise ShiftlabError(f"OnTheFlyMixer: n_samples must be a positive integer, got {n_samples!r}")
        self.block = int(n_samples) if n_samples is not None else PLAN_BLOCK
        self.lengths = torch.from_numpy(self.arrays.lengths).to(self.device)
        self._lengths_np = self.arrays.lengths
        self._looped = _LoopedBank(self.arrays, self.device)
        self._padded = None
        self._buf = None  # scratch for the noise windows when the caller gives ``out``
        self._segs: dict[int, bank_mod.Segments] = {}
        self._plans: dict[tuple[int, int, int, int], dict[str, np.ndarray]] = {}
        self._epoch: tuple[int, int] | None = None

    def _scratch(self, n: int):
        """A flat float32 buffer of at least ``n`` samples on the device, reused across calls."""
        import torch

        if self._buf is None or self._buf.numel() < n:
            self._buf = None
            self._buf = torch.empty(n, dtype=torch.float32, device=self.device)
        return self._buf[:n]

    def _check_out(self, out, s) -> None:
        import torch

        shape = tuple(s.shape)
        if not isinstance(out, torch.Tensor) or out.dtype != torch.float32 or tuple(out.shape) != shape \
                or out.device != self.device or not out.is_contiguous():
            if isinstance(out, torch.Tensor):
                got = f"{out.dtype} {tuple(out.shape)} on {out.device}" + (
                    "" if out.is_contiguous() else ", not contiguous")
            else:
                got = type(out).__name__
            raise ShiftlabError(f"OnTheFlyMixer: out must be a contiguous float32 {shape} tensor on {self.device}, "
                                f"got {got}")
        if _overlaps(out, s) and (out.data_ptr() != s.data_ptr() or s.stride() != out.stride()):
            raise ShiftlabError("OnTheFlyMixer: out overlaps the speech without being the speech tensor itself")

    @property
    def padded(self):
        """The bank as one zero-padded ``(clips, Lmax)`` tensor on the device (for :func:`gather`;
        built on first use: the mixer itself gathers from a cyclically extended flat copy)."""
        import torch

        if self._padded is None:
            self._padded = torch.from_numpy(self.arrays.padded()).to(self.device)
        return self._padded

    def plan(self, epoch: int, block: int, length: int, seed: int | None = None) -> dict[str, np.ndarray]:
        """The cached plan arrays (``clip``, ``offset``, ``snr``, ``pass``, ``segment``) of one block
        (under ``seed``, default the mixer's)."""
        seed = self.seed if seed is None else int(seed)
        key = (int(epoch), int(block), int(length), seed)
        got = self._plans.get(key)
        if got is not None:
            return got
        if self._epoch != (epoch, seed):
            self._plans.clear()
            self._epoch = (epoch, seed)
        b = self.cfg["bank"]
        segs = self._segs.get(length)
        if segs is None:
            segs = self._segs[length] = bank_mod.segments(self.arrays, length, b["min_segment_db"])
        p = bank_mod.plan_draws(self.arrays, length, self.block,
                                seeding.sample_rng(seed, epoch, "mix_fly", block), b["max_source_share"],
                                b["min_segment_db"], segs=segs)
        lo, hi = self.cfg["snr_db"]
        snr = seeding.sample_rng(seed, epoch, "mix_fly_snr", block).uniform(lo, hi, self.block)
        got = {"clip": p.clip, "offset": p.offset, "snr": snr, "pass": p.pass_, "segment": p.segment}
        self._plans[key] = got
        return got

    def draws(self, sample_index, epoch: int, length: int, seed: int | None = None) -> dict[str, np.ndarray]:
        """The per-sample draws (``clip``, ``offset``, ``snr``, ``pass``, ``segment``) of samples
        ``sample_index`` in ``epoch`` for speech of ``length`` samples (class docstring)."""
        idx = np.asarray(sample_index, dtype=np.int64).reshape(-1)
        B = len(idx)
        blocks, within = np.divmod(idx, self.block)
        ublocks = np.unique(blocks)
        if len(ublocks) == 1:  # the usual case: the whole batch in one plan block
            p = self.plan(epoch, int(ublocks[0]), int(length), seed)
            return {k: p[k][within] for k in ("clip", "offset", "snr", "pass", "segment")}
        out = {"clip": np.empty(B, np.int64), "offset": np.empty(B, np.int64), "snr": np.empty(B, np.float64),
               "pass": np.empty(B, np.int64), "segment": np.empty(B, np.int64)}
        for blk in ublocks:  # a loop over plan blocks, not over samples
            m = blocks == blk
            p = self.plan(epoch, int(blk), int(length), seed)
            w = within[m]
            for k in out:
                out[k][m] = p[k][w]
        return out

    def __call__(self, speech, sample_index, epoch: int = 0, return_recipes: bool = True, out=None,
                 seed: int | None = None):
        import torch

        if not isinstance(speech, torch.Tensor):
            speech = torch.as_tensor(np.asarray(speech, dtype=np.float32))
        if speech.ndim not in (2, 3):
            raise ShiftlabError(f"OnTheFlyMixer: speech must be a (B, T) or (B, C, T) tensor, got shape "
                                f"{tuple(speech.shape)}")
        B, T = speech.shape[0], speech.shape[-1]
        C = speech.shape[1] if speech.ndim == 3 else 1
        idx = np.asarray(sample_index.cpu() if isinstance(sample_index, torch.Tensor) else sample_index,
                         dtype=np.int64).reshape(-1)
        if len(idx) != B:
            raise ShiftlabError(f"OnTheFlyMixer: {len(idx)} sample indices for {B} rows")
        if isinstance(epoch, bool) or int(epoch) < 0 or (len(idx) and idx.min() < 0):
            raise ShiftlabError("OnTheFlyMixer: epoch and sample indices must be non-negative integers")
        if seed is not None and (isinstance(seed, bool) or int(seed) < 0):
            raise ShiftlabError(f"OnTheFlyMixer: seed must be >= 0, got {seed}")
        epoch = int(epoch)
        d = self.draws(idx, epoch, int(T), seed)
        clip, offset, snr, pas, seg = d["clip"], d["offset"], d["snr"], d["pass"], d["segment"]
        s = speech.to(self.device, torch.float32)
        if speech.ndim == 3:  # every channel of a sample: its noise window at its SNR
            if out is not None:
                self._check_out(out, s)
                out = out.view(B * C, T)
            s = s.reshape(B * C, T)
        rc, ro, rs = (np.repeat(clip, C), np.repeat(offset, C), np.repeat(snr, C)) if C != 1 else (clip, offset, snr)
        fill = self._looped.filler(rc, ro, T)  # the noise rows, chunk by chunk (see _mix)
        scratch = None
        if out is not None:
            self._check_out(out, s)
            if _overlaps(out, s):  # in place: the noise chunks need a buffer of their own
                scratch = self._scratch(_chunk_rows(B * C, T, self.device) * T)
        y, g1, g2 = _mix(s, fill, rs, self.cfg["peak_limit"], out=out, scratch=scratch)
        if speech.ndim == 3:
            y, g1, g2 = y.view(B, C, T), g1.view(B, C), g2.view(B, C)
        if not return_recipes:
            return y, None
        loops = (offset + T - 1) // self._lengths_np[clip]
        ids, groups = self.arrays.ids, self.arrays.groups
        g1l, g2l = g1.cpu().tolist(), g2.cpu().tolist()
        limit, seed, T = self.cfg["peak_limit"], self.seed if seed is None else int(seed), int(T)
        recipes = [
            {"stage": _KEY, "noise": ids[c], "noise_group": groups[c], "offset": o, "length": T, "loops": lp,
             "snr_db": r, "speech_gain": a, "noise_gain": b, "peak_limit": limit, "seed": seed, "index": i,
             "epoch": epoch, "pass": ps, "segment": sg}
            for c, o, lp, r, a, b, i, ps, sg in zip(clip.tolist(), offset.tolist(), loops.tolist(), snr.tolist(),
                                                     g1l, g2l, idx.tolist(), pas.tolist(), seg.tolist())
        ]
        return y, recipes
