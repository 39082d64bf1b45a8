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
    batch). The norms, ``y = a n`` then ``y += s`` are per-row and elementwise ops whose
    result does not depend on the batch or the thread count, so a row mixed alone is
    bit-identical to the same row mixed in any batch (tested; a float64 ``sum`` of
    squares, by contrast, splits long rows across threads differently). Then a
    **clipping guard**: a row whose peak exceeds ``peak_limit`` is scaled by ``g =
    peak_limit / peak`` (speech and noise alike, so the SNR is unchanged) instead of
    being clipped; ``g`` is recorded (``speech_gain = g``, ``noise_gain = g a``) and a
    final clamp to ``+-peak_limit`` only removes float32 rounding (at most one ulp).

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

import copy
import math
from typing import Any, Mapping, Sequence

import numpy as np

from shiftlab import seeding
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
]

_KEY = "synth_mix"
PURPOSE = "mix"
_PROGRESS_MIN = 200
#: Sample indices planned together by an :class:`OnTheFlyMixer` without ``n_samples``.
PLAN_BLOCK = 4096

#: Defaults of the ``synth_mix`` params section.
DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "fraction": 1.0,  # share of the eligible parents mixed, [0, 1]
    "copies": 1,  # synthetic rows per chosen parent, >= 1
    "snr_db": [0.0, 20.0],  # SNR range (uniform), dB; a number = constant
    "peak_limit": 1.0,  # clipping guard: rows whose peak exceeds this are scaled down, (0, 1]
    "bank": copy.deepcopy(bank_mod.DEFAULTS),  # noise sources and the draw policy (mixing.bank)
    "device": "auto",  # auto | cpu | cuda | cuda:N
    "batch_size": 256,  # rows mixed per batch (no effect on the output)
}

#: The book's failure: every row gets noise from ONE short recording (dustracing2d's
#: 1.5 s skid), reused under the whole speech set. For the diversity checks' "low
#: diversity" example and tests.
NARROW: dict[str, Any] = {
    **copy.deepcopy(DEFAULTS),
    "bank": {
        **copy.deepcopy(bank_mod.DEFAULTS),
        "sources": ["real"],
        "recordings": ["dustracing2d/skid"],
        "max_source_share": 1.0,
    },
}


# --------------------------------------------------------------------------- config


def _snr_range(v, where: str) -> list[float]:
    spec = v if isinstance(v, (list, tuple)) else [v, v]
    ok = len(spec) == 2 and all(
        not isinstance(x, bool) and isinstance(x, (int, float, np.integer, np.floating)) and math.isfinite(float(x))
        for x in spec
    )
    if not ok:
        raise ShiftlabError(f"{where}: must be [lo, hi] dB or a number, got {v!r}")
    lo, hi = float(spec[0]), float(spec[1])
    if hi < lo:
        raise ShiftlabError(f"{where}: range [{lo:g}, {hi:g}] has lo > hi")
    if lo < -60.0 or hi > 100.0:
        raise ShiftlabError(f"{where}: must lie in [-60, 100] dB, got [{lo:g}, {hi:g}]")
    return [lo, hi]


def _peak_limit(v, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not 0.0 < float(v) <= 1.0:
        raise ShiftlabError(f"{where}: must be a number in (0, 1], got {v!r}")
    return float(v)


def check_cfg(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """Merge ``cfg`` over :data:`DEFAULTS` (the ``bank`` section key by key) and validate it.

    Errors are one line naming the key: ``synth_mix.copies: must be an integer >= 1, got 0``.
    """
    c = bank_mod._merge(DEFAULTS, cfg, _KEY)
    for key, lo in (("seed", 0), ("copies", 1), ("batch_size", 1)):
        v = c[key]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ShiftlabError(f"{_KEY}.{key}: must be an integer >= {lo}, got {v!r}")
        c[key] = int(v)
    f = c["fraction"]
    if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0.0 <= float(f) <= 1.0:
        raise ShiftlabError(f"{_KEY}.fraction: must be a number in [0, 1], got {f!r}")
    c["fraction"] = float(f)
    c["snr_db"] = _snr_range(c["snr_db"], f"{_KEY}.snr_db")
    c["peak_limit"] = _peak_limit(c["peak_limit"], f"{_KEY}.peak_limit")
    if not isinstance(c["device"], str):
        raise ShiftlabError(f"{_KEY}.device: must be auto, cpu, cuda or cuda:N, got {c['device']!r}")
    c["bank"] = bank_mod.check_cfg(c["bank"], f"{_KEY}.bank")
    return c


def resolve_device(device: str | None = "auto"):
    """``"auto"`` -> CUDA when available, else CPU; ``"cpu"``, ``"cuda"``, ``"cuda:1"`` as given."""
    import torch

    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, torch.device):
        dev = device
    else:
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError) as e:
            raise ShiftlabError(f"{_KEY}.device: {device!r} is not a device (auto, cpu, cuda, cuda:N): {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ShiftlabError(f"{_KEY}.device: {device!r} requested but CUDA is not available (use auto or cpu)")
    return dev


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


def _mix(speech, noise, snr_db, peak_limit: float = 1.0, names: Sequence[str] | None = None,
         own_noise: bool = False):
    """:func:`mix`; ``names`` (one per row, flattened) name the rows in errors; ``own_noise``:
    the caller hands over a float32 ``noise`` tensor that may be overwritten with the result
    (saves an allocation; the samples are the same either way)."""
    import torch

    as_numpy = not isinstance(speech, torch.Tensor)
    s = (_array_tensor(speech) if as_numpy else speech).to(torch.float32)
    n = noise if isinstance(noise, torch.Tensor) else _array_tensor(noise)
    n = n.to(device=s.device, dtype=torch.float32)
    if s.shape != n.shape or s.ndim < 1:
        raise ShiftlabError(f"mix: speech {tuple(s.shape)} and noise {tuple(n.shape)} must have the same shape (..., T)")
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
    with torch.no_grad():
        # ||s||, ||n||: float32 L2 norms over the last axis, as add_noise computes them
        ns = torch.linalg.vector_norm(s, dim=-1)
        nn = torch.linalg.vector_norm(n, dim=-1)

        def row(mask) -> str:
            i = int(torch.nonzero(mask.reshape(-1))[0])
            return f"row {names[i]}" if names is not None else f"row {i}"

        for what, e in (("speech", ns), ("noise", nn)):
            bad = ~torch.isfinite(e)  # NaN/inf samples make the norm NaN/inf
            if bool(bad.any()):
                raise ShiftlabError(f"mix: {what} {row(bad)} has NaN or infinite samples")
        if bool((nn <= 0).any()):
            raise ShiftlabError(f"mix: noise {row(nn <= 0)} has zero energy; the SNR is undefined")
        root = torch.from_numpy(np.ascontiguousarray(np.power(10.0, snr / 20.0))).to(s.device)
        a = (ns.to(torch.float64) / (nn.to(torch.float64) * root)).to(torch.float32)
        y = n.mul_(a.unsqueeze(-1)) if own_noise else n * a.unsqueeze(-1)
        y.add_(s)  # y = s + a n, each product and sum rounded once (the same bits in place or not)
        y = y.contiguous()  # (strided inputs give strided results; the guard below writes rows of a view)
        peak = torch.maximum(y.amax(-1), y.amin(-1).neg_()) if y.shape[-1] else torch.zeros_like(a)
        over = peak > limit
        g = torch.where(over, limit / peak.to(torch.float64), 1.0).to(torch.float32)
        if bool(over.any()):  # scale (and clamp) only the rows over the limit
            flat_y, flat_g = y.reshape(-1, y.shape[-1]), g.reshape(-1)
            w = torch.nonzero(over.reshape(-1)).squeeze(1)
            flat_y.index_copy_(0, w, flat_y.index_select(0, w).mul_(flat_g[w].unsqueeze(-1)).clamp_(-limit, limit))
        gn = g * a
    if as_numpy:
        return y.cpu().numpy(), g.cpu().numpy(), gn.cpu().numpy()
    return y, g, gn


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


# --------------------------------------------------------------------------- the stage


def _meta(ds, names: Sequence[str]) -> dict[str, np.ndarray]:
    if len(ds) == 0:
        return {n: np.array([], dtype=np.int64 if n == "label" else object) for n in names}
    table = ds.select_columns(list(names)).with_format("arrow")[:]
    out = {}
    for n in names:
        a = table.column(n).to_numpy(zero_copy_only=False)
        out[n] = a.astype(np.int64) if n in ("label", "sampling_rate") else a.astype(object)
    return out


def eligible_parents(splits) -> dict[str, np.ndarray]:
    """The eligible parents in id order: arrays ``id``, ``split``, ``row``, ``label``, ``domain``, ``group``,
    ``sampling_rate``. Eligible = rows of train and train_dev with domain ``source`` and origin ``real``."""
    from shiftlab.datasets import schema

    parts = []
    for s in ("train", "train_dev"):
        if s not in splits:
            raise ShiftlabError(f"splits: missing split {s} (have: {', '.join(splits) or 'none'})")
        d = splits[s]
        if schema.modality(d) != "audio":
            raise ShiftlabError(f"splits: {s} is not an audio dataset (synth mix needs an audio column)")
        m = _meta(d, ("id", "label", "domain", "origin", "group", "sampling_rate"))
        ok = np.flatnonzero((m["domain"] == "source") & (m["origin"] == "real"))
        parts.append({
            "id": m["id"][ok].astype(str),
            "split": np.full(len(ok), s, dtype=object),
            "row": ok.astype(np.int64),
            "label": m["label"][ok],
            "domain": m["domain"][ok],
            "group": m["group"][ok],
            "sampling_rate": m["sampling_rate"][ok],
        })
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    order = np.argsort(out["id"], kind="stable")
    return {k: v[order] for k, v in out.items()}


def _choose(n: int, fraction: float, seed: int) -> np.ndarray:
    k = int(math.floor(fraction * n + 0.5))
    if k >= n:
        return np.arange(n, dtype=np.int64)
    rank = seeding.sample_rng(seed, 0, PURPOSE, "select").permutation(n)
    return np.flatnonzero(rank < k).astype(np.int64)


def _read_waves(splits, split_names: np.ndarray, rows: np.ndarray) -> list[np.ndarray]:
    """float32 waveforms of (split, row) pairs, in the given order."""
    out: list[np.ndarray | None] = [None] * len(rows)
    for s in np.unique(split_names):
        sel = np.flatnonzero(split_names == s)
        uniq, inv = np.unique(rows[sel], return_inverse=True)
        flat, offs = bank_mod.audio_arrays(splits[str(s)].select(uniq.tolist()))
        for j, u in zip(sel, inv.reshape(-1)):
            out[j] = flat[offs[u] : offs[u + 1]]
    return out  # type: ignore[return-value]


def _lengths(splits, el: dict[str, np.ndarray], pos: np.ndarray) -> np.ndarray:
    out = np.zeros(len(pos), dtype=np.int64)
    for s in np.unique(el["split"][pos]):
        sel = np.flatnonzero(el["split"][pos] == s)
        table = splits[str(s)].select_columns(["audio"]).with_format("arrow")[:]
        col = table.column("audio")
        arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
        lens = np.diff(np.asarray(arr.offsets.to_numpy(zero_copy_only=False), dtype=np.int64))
        out[sel] = lens[el["row"][pos][sel]]
    return out


def _mix_rows(speech: list[np.ndarray], a: "bank_mod.BankArrays", clip, offset, snr, limit, dev, padded, lengths_t,
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
        s = torch.from_numpy(np.stack([speech[i] for i in idx])).to(dev)
        nz = gather(padded, lengths_t, torch.from_numpy(clip[idx]).to(dev), torch.from_numpy(offset[idx]).to(dev),
                    int(T))
        y, g1, g2 = _mix(s, nz, snr[idx], limit, None if names is None else [names[i] for i in idx], own_noise=True)
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
    import torch
    from tqdm.auto import tqdm

    from shiftlab import store
    from shiftlab.datasets import audio, schema

    c = check_cfg(cfg)
    dev = resolve_device(c["device"] if device in (None, "auto") else device)
    seed, copies, bs, limit = c["seed"], c["copies"], c["batch_size"], c["peak_limit"]
    if "train" not in splits:
        raise ShiftlabError("splits: missing split train")
    names = schema.label_names(splits["train"])
    a = bank_mod.arrays(bank)
    el = eligible_parents(splits)
    rates = np.unique(el["sampling_rate"])
    if len(rates) > 1:
        raise ShiftlabError(f"splits: the eligible speech rows have several sampling rates {rates.tolist()}")
    if len(rates) and int(rates[0]) != a.sampling_rate:
        raise ShiftlabError(
            f"noise bank: sampling rate {a.sampling_rate} Hz, the speech has {int(rates[0])} Hz (build the bank at "
            f"the speech's rate)"
        )
    chosen = _choose(len(el["id"]), c["fraction"], seed)
    keys = [(int(p), k) for p in chosen for k in range(copies)]
    n = len(keys)
    pos = np.array([p for p, _ in keys], dtype=np.int64)
    lens = _lengths(splits, el, pos) if n else np.zeros(0, np.int64)
    if n and lens.min() < 1:
        raise ShiftlabError(f"splits: speech row {el['id'][pos[int(np.argmin(lens))]]} has no samples")
    T = int(lens.max()) if n else 1
    plan = bank_mod.plan_draws(a, T, n, seeding.sample_rng(seed, 0, "mix_plan"), c["bank"]["max_source_share"],
                               c["bank"]["min_segment_db"])
    row_seeds = [seeding.sample_seed(seed, p, PURPOSE, k) for p, k in keys]
    lo, hi = c["snr_db"]
    snr = np.array([float(np.random.default_rng(s).uniform(lo, hi)) for s in row_seeds], dtype=np.float64)
    loops = (plan.offset + lens - 1) // a.lengths[plan.clip] if n else plan.loops

    padded = torch.from_numpy(a.padded()).to(dev)
    lengths_t = torch.from_numpy(a.lengths).to(dev)
    waves: list[np.ndarray] = []
    sgain = np.zeros(n, np.float32)
    ngain = np.zeros(n, np.float32)
    bar = tqdm(total=n, desc="synth mix", unit="clip", disable=not progress or n < _PROGRESS_MIN)
    try:
        for start in range(0, n, bs):
            sl = slice(start, min(n, start + bs))
            sp = _read_waves(splits, el["split"][pos[sl]], el["row"][pos[sl]])
            y, g1, g2 = _mix_rows(sp, a, plan.clip[sl], plan.offset[sl], snr[sl], limit, dev, padded, lengths_t,
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
    devices). ``speech_wave``: the parent's float32 samples (``len == recipe["length"]``).
    """
    rec = _recipe(recipe)
    s = np.asarray(speech_wave, dtype=np.float32).reshape(-1)
    if len(s) != int(rec["length"]):
        raise ShiftlabError(f"regenerate: the speech has {len(s)} samples, the recipe's length is {rec['length']}")
    nz = noise_window(rec, bank)
    y, _, _ = mix(s[None], nz[None].astype(np.float32), [float(rec["snr_db"])], float(rec.get("peak_limit", 1.0)))
    return y[0]


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
    held on the device as one zero-padded ``(clips, Lmax)`` tensor and the segments are
    gathered by index arithmetic (:func:`gather`), the mix is :func:`mix`.

    Returns ``(mixed (B, T) float32 on the device, recipes)``: one dict per sample with
    the synth-mix recipe fields (``noise``, ``noise_group``, ``offset``, ``length``,
    ``loops``, ``snr_db``, ``speech_gain``, ``noise_gain``, ``peak_limit``, ``seed``,
    ``index``, ``epoch``, ``pass``, ``segment``); :func:`regenerate` rebuilds a sample
    from one. ``return_recipes=False`` skips building them (``None``).
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
        self.padded = torch.from_numpy(self.arrays.padded()).to(self.device)
        self.lengths = torch.from_numpy(self.arrays.lengths).to(self.device)
        self._lengths_np = self.arrays.lengths
        self._segs: dict[int, bank_mod.Segments] = {}
        self._plans: dict[tuple[int, int, int], dict[str, np.ndarray]] = {}
        self._epoch: int | None = None

    def plan(self, epoch: int, block: int, length: int) -> dict[str, np.ndarray]:
        """The cached plan arrays (``clip``, ``offset``, ``snr``, ``pass``, ``segment``) of one block."""
        key = (int(epoch), int(block), int(length))
        got = self._plans.get(key)
        if got is not None:
            return got
        if self._epoch != epoch:
            self._plans.clear()
            self._epoch = epoch
        b = self.cfg["bank"]
        segs = self._segs.get(length)
        if segs is None:
            segs = self._segs[length] = bank_mod.segments(self.arrays, length, b["min_segment_db"])
        p = bank_mod.plan_draws(self.arrays, length, self.block,
                                seeding.sample_rng(self.seed, epoch, "mix_fly", block), b["max_source_share"],
                                b["min_segment_db"], segs=segs)
        lo, hi = self.cfg["snr_db"]
        snr = seeding.sample_rng(self.seed, epoch, "mix_fly_snr", block).uniform(lo, hi, self.block)
        got = {"clip": p.clip, "offset": p.offset, "snr": snr, "pass": p.pass_, "segment": p.segment}
        self._plans[key] = got
        return got

    def __call__(self, speech, sample_index, epoch: int = 0, return_recipes: bool = True):
        import torch

        if not isinstance(speech, torch.Tensor):
            speech = torch.as_tensor(np.asarray(speech, dtype=np.float32))
        if speech.ndim != 2:
            raise ShiftlabError(f"OnTheFlyMixer: speech must be a (B, T) tensor, got shape {tuple(speech.shape)}")
        B, T = speech.shape
        idx = np.asarray(sample_index.cpu() if isinstance(sample_index, torch.Tensor) else sample_index,
                         dtype=np.int64).reshape(-1)
        if len(idx) != B:
            raise ShiftlabError(f"OnTheFlyMixer: {len(idx)} sample indices for {B} rows")
        if isinstance(epoch, bool) or int(epoch) < 0 or (len(idx) and idx.min() < 0):
            raise ShiftlabError("OnTheFlyMixer: epoch and sample indices must be non-negative integers")
        epoch = int(epoch)
        blocks, within = np.divmod(idx, self.block)
        clip = np.empty(B, np.int64)
        offset = np.empty(B, np.int64)
        snr = np.empty(B, np.float64)
        pas = np.empty(B, np.int64)
        seg = np.empty(B, np.int64)
        for blk in np.unique(blocks):  # a loop over plan blocks (usually one), not over samples
            m = blocks == blk
            p = self.plan(epoch, int(blk), int(T))
            w = within[m]
            clip[m], offset[m], snr[m] = p["clip"][w], p["offset"][w], p["snr"][w]
            pas[m], seg[m] = p["pass"][w], p["segment"][w]
        s = speech.to(self.device, torch.float32)
        nz = gather(self.padded, self.lengths, torch.from_numpy(clip).to(self.device),
                    torch.from_numpy(offset).to(self.device), int(T))
        y, g1, g2 = _mix(s, nz, snr, self.cfg["peak_limit"], own_noise=True)
        if not return_recipes:
            return y, None
        loops = (offset + T - 1) // self._lengths_np[clip]
        ids, groups = self.arrays.ids, self.arrays.groups
        g1l, g2l = g1.cpu().tolist(), g2.cpu().tolist()
        limit = self.cfg["peak_limit"]
        recipes = [
            {"stage": _KEY, "noise": ids[c], "noise_group": groups[c], "offset": o, "length": int(T), "loops": lp,
             "snr_db": r, "speech_gain": a, "noise_gain": b, "peak_limit": limit, "seed": self.seed, "index": i,
             "epoch": epoch, "pass": ps, "segment": sg}
            for c, o, lp, r, a, b, i, ps, sg in zip(clip.tolist(), offset.tolist(), loops.tolist(), snr.tolist(),
                                                     g1l, g2l, idx.tolist(), pas.tolist(), seg.tolist())
        ]
        return y, recipes
