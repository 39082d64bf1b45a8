"""Audio diversity checks (``shiftlab check audio``): is the car noise under the speech diverse?

The trap (Machine Learning Yearning ch. 40): one hour of car noise reused
under 1,000 hours of speech, or noise from only ten cars, sounds fine to a person, but a
model overfits those few noise sources and fails on new cars. :func:`run` measures, from the
synthetic mixes, their recipes and the noise bank, how often every piece of noise is heard,
how many distinct sources the noise really comes from, how far it is from the target noise,
whether a learner can tell the mixes from target mixes, and whether a word classifier trained
on some noise sources gets worse on held-out sources. :func:`gate` turns the report into
pass / warn / fail verdicts, :func:`markdown` into a report page.

Inputs (Hugging Face ``Dataset`` objects in the audio schema, see README "The data format")

``synthetic``
    the mixes: ``id``, ``audio``, ``sampling_rate``, ``label`` (the spoken word) and
    ``recipe`` (JSON) with ``noise`` (bank clip id), ``offset`` (start sample in the clip),
    ``length`` (samples of noise used), and optionally ``noise_group`` (must equal the
    clip's bank ``group``), ``loops``, ``snr_db``, ``parent``. With an ``origin`` column only
    ``origin == "synthetic"`` rows are used (so a whole train split can be passed).
``bank``
    the noise clips: ``id``, ``audio``, ``sampling_rate``, ``group`` (the physical source:
    recording or virtual car). Rows with ``domain == "target"`` are not part of the bank
    (held-out noise); a mix that uses one -- or any clip of ``target_noise`` -- is an error.
``target_rows``
    target training mixes (real speech + held-out real car noise). With a ``domain`` column
    only ``domain == "target"`` rows are used, so ``splits["train"]`` can be passed. ``None``:
    the realism part is reported as not applicable.
``target_noise``
    optional held-out target noise clips (with a ``domain`` column only target rows).

Noise geometry (exact, at sample resolution)
    The noise under a mix is ``clip[(offset + t) mod L]`` for ``t = 0 .. length-1``
    (``L`` = clip length): a mix that runs past the end of the clip wraps to its start
    (``wraps = ceil((offset mod L + length) / L) - 1``). Every sample of every clip gets a
    *use count*: how many times it is heard under all mixes together (a sample heard twice
    inside one looping mix counts twice). From the counts: ``distinct_noise_seconds``
    (samples with count >= 1), ``max_segment_uses`` (the largest count: no noise segment,
    however short, is heard more often), ``reuse_ratio`` = seconds of mixed speech
    (``sum(length)`` / rate) per second of distinct noise used (1 = every mix has fresh
    noise; the book's trap is 1,000), and the histogram of bank seconds by use count. All
    mixes are counted (no subsampling).

Spectral features (:func:`logmel_stats`)
    ``torchaudio.transforms.MelSpectrogram`` (power, Hann window of ``win_seconds``,
    hop ``hop_seconds``, FFT size the next power of 2 >= the window, ``n_mels`` HTK-mel bands
    from ``f_min`` to ``f_max`` (None: Nyquist)), in dB (``10 log10(max(P, 1e-10))``, floored
    at ``top_db`` below the segment's maximum). Per segment: the mean over frames of each band
    minus the mean over all bands (gain invariant: the mixer sets levels freely) and the std
    over frames of each band: ``2 * n_mels`` numbers in dB. Bank and target-noise clips are
    cut into segments of ``segment_seconds`` (None: the median mix length) every
    ``segment_hop`` segments; a clip shorter than one segment gives one segment, looped.

Spectral diversity
    Distances are RMS differences in dB over the ``2 * n_mels`` features; the Vendi score
    (``stats.vendi_score``, rbf kernel, fixed bandwidth ``vendi_bandwidth_db``) counts items
    closer than about that as one. ``vendi_sources``: over the per-source mean feature vectors
    of the bank sources the mixes use (1 for identical sources, up to the number of sources
    when they are all far apart) -- the *effective number of distinct noise sources*.
    ``vendi_bank_segments``: over bank segments of those sources (at most
    ``max_bank_segments``, a seeded subsample spread evenly over the sources, at least one
    segment per source). ``vendi_used_noise``: over the noise actually
    under the mixes (one row per mix, at most ``max_rows``): low when the mixes reuse little
    noise. ``frechet_noise``: Frechet distance between the noise under the mixes and the
    target noise segments (descriptive: the target noise is a few seconds, so its covariance
    is rank deficient). ``noise_domain_auc``: domain classifier noise-under-mixes vs target
    noise segments (``stats.domain_classifier_auc``), grouped by recording: the noise under a
    mix belongs to its bank source (``group``: the recording or car), a target noise segment
    to its clip's ``group`` (its id without one).

Realism gap
    ``domain_auc`` (+ 95% CI): out-of-fold logistic domain classifier, synthetic mixes vs
    target training mixes, on :func:`logmel_stats` of the whole rows. ~0.5: a learner cannot
    tell them apart; ~1: it can (speech and noise differences alike). Grouped by speaker (the
    rows' ``group`` column; a row without one is its own group): the folds keep every
    speaker whole, and the interval is a cluster bootstrap over speakers on the
    out-of-fold scores (Efron & Tibshirani 1993), so 24 utterances of one speaker count as
    one speaker, not 24 independent rows. With fewer than 2 speakers on a side the grouped
    AUC does not exist and is reported n/a with the reason.

Leave-sources-out probe
    A word classifier (``stats.fit_logistic`` on :func:`logmel_stats` of the mixes) is trained
    on mixes of some noise sources and tested on held-out mixes of the training sources (in)
    and on mixes of held-out sources (out). A seeded ``probe.test_fraction`` of every source's
    mixes is held out once (the test rows); sources are dealt into ``probe.folds`` folds
    (seeded order, largest first to the fold with fewest mixes); for every fold a model is
    fitted on the non-test mixes of the other folds' sources. Each test row thus gets one
    out-of-source prediction and ``folds - 1`` in-source ones (its error is their mean).
    ``probe_gap`` = mean(out error - in error) over the test rows with a paired percentile
    interval from a cluster bootstrap over the noise sources (the held-out unit: test rows
    of one source share its noise). A large gap means the classifier learned the noise
    sources. Not applicable (``None`` with a reason) with one noise source or too few rows.

Gates (:func:`gate`, :func:`verdict`)
    The default thresholds come from the diversity ladder (:mod:`shiftlab.ladder`): banks of
    1, 3, 10 and 17 real cars at equal seconds of noise, the default bank and all cars with
    their noise reused 50x, under the same speech. ``n_sources`` and ``vendi_sources`` are
    reported but not gated (Vendi over sources cannot exceed their number: a second count);
    the number of sources is gated as ``effective_sources_by_use`` (uneven use counts less)
    and their spectral distinctness as ``vendi_sources_share``.
    A gate passes when its value meets its rule. **n/a is not a pass**: a gate whose metric
    does not apply or was not computed has ``passed`` False and a ``reason``, and counts with
    its action (an n/a fail gate fails the check: a bank whose probe cannot be run, e.g. one
    recording, cannot show that a model trained on it transfers). The probe's fail gate is
    on the *upper* end of the gap's interval (``probe_gap_ci_high``): it passes only when the
    data rule out a gap above the threshold.

Determinism: every random choice derives from ``seed`` via :mod:`shiftlab.seeding`; the
logistic fits are deterministic (L-BFGS, zero init); the report is a pure function of the
inputs, cfg and the torch build / thread count (float reductions in the mel features).
Numbers that do not apply are ``None`` in the report (it is strict JSON: no NaN).
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from shiftlab import paramschema, seeding, stats
from shiftlab.errors import ShiftlabError
from shiftlab.stats import CI

__all__ = [
    "DEFAULTS",
    "METRICS",
    "check_cfg",
    "coverage_runs",
    "logmel_stats",
    "run",
    "gate",
    "failures",
    "verdict",
    "markdown",
]

_KEY = "check_audio"
_PURPOSE = "check_audio"

#: Defaults of the ``check_audio`` params section (its model: :class:`shiftlab.paramschema.CheckAudio`).
DEFAULTS: dict[str, Any] = paramschema.defaults(paramschema.CheckAudio)

#: The scalar metrics of ``report["metrics"]`` (the names a gate may use) and their meaning.
METRICS: dict[str, str] = {
    "n_mixes": "synthetic mixes checked",
    "n_sources": "distinct noise sources (bank groups) under the mixes",
    "n_bank_sources": "noise sources in the bank",
    "effective_sources_by_use": "exp(entropy) of the sources' shares of mixed seconds",
    "largest_source_share": "share of mixed seconds over the most used source",
    "reuse_ratio": "seconds of mixed speech per second of distinct noise used",
    "max_segment_uses": "most times any noise sample is heard under the mixes",
    "bank_coverage": "share of bank seconds heard at least once",
    "looped_share": "share of mixes whose noise wraps around its clip",
    "vendi_sources": "effective number of spectrally distinct noise sources (Vendi)",
    "vendi_sources_share": "vendi_sources / n_sources: 1 = the sources all sound different, low = near-copies",
    "vendi_bank_segments": "effective number of distinct bank segments of the used sources (Vendi)",
    "vendi_used_noise": "effective number of distinct noise segments under the mixes (Vendi)",
    "frechet_noise": "Frechet distance, noise under the mixes vs target noise (dB features)",
    "noise_domain_auc": "AUC of a classifier telling the noise under the mixes from target noise",
    "domain_auc": "AUC of a classifier telling synthetic mixes from target training mixes",
    "domain_auc_ci_low": "domain_auc 95% CI low",
    "domain_auc_ci_high": "domain_auc 95% CI high",
    "probe_error_in": "word error on held-out mixes of the training noise sources",
    "probe_error_out": "word error on mixes of held-out noise sources",
    "probe_gap": "probe_error_out - probe_error_in",
    "probe_gap_ci_low": "probe_gap 95% CI low",
    "probe_gap_ci_high": "probe_gap 95% CI high",
}

_PLOTS = ("uses_per_source.png", "coverage.png", "spectra.png", "embedding.png")


# --------------------------------------------------------------------------- config


def _is_num(v) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float, np.integer, np.floating)) and math.isfinite(float(v))


def check_cfg(cfg: Mapping[str, Any] | None = None, where: str = _KEY) -> dict[str, Any]:
    """:data:`DEFAULTS` with ``cfg`` merged over it, validated by :class:`shiftlab.paramschema.CheckAudio`;
    errors name ``where.key``.

    ``probe`` merges key by key; ``gates`` merges metric by metric over the default gates
    (a gate given as ``None`` is switched off; ``gates: None`` switches all off). A gate is
    ``{"min": x}`` or ``{"max": x}`` plus ``"action": "fail" | "warn"`` (default fail) on a
    metric of :data:`METRICS`.
    """
    return paramschema.merge(paramschema.CheckAudio, cfg, where)


# --------------------------------------------------------------------------- input helpers


def _fnum(x) -> float | None:
    """float, or None for NaN / inf / None (strict JSON)."""
    if x is None:
        return None
    f = float(x)
    return f if math.isfinite(f) else None


def _need_columns(ds, cols: Sequence[str], where: str) -> None:
    names = getattr(ds, "column_names", None)
    if names is None:
        raise ShiftlabError(f"{where}: expected a Hugging Face Dataset in the audio schema, got {type(ds).__name__}")
    missing = [c for c in cols if c not in names]
    if missing:
        raise ShiftlabError(f"{where}: missing column(s) {', '.join(missing)}")


def _filter(ds, column: str, value: str):
    """Indices of rows with ``column == value`` (all rows when the column is absent)."""
    if column not in ds.column_names:
        return np.arange(len(ds))
    vals = np.asarray(ds[column], dtype=object) if len(ds) else np.zeros(0, dtype=object)
    return np.flatnonzero(vals == value)


def _waves(ds, idx: np.ndarray) -> list[np.ndarray]:
    """float32 waveforms of rows ``idx`` (index order), read from Arrow without per-sample Python."""
    if len(idx) == 0:
        return []
    idx = np.asarray(idx, dtype=np.int64)
    whole = len(idx) == len(ds) and bool((idx == np.arange(len(ds))).all())
    sub = ds if whole else ds.select(idx.tolist())
    col = sub.with_format("arrow")[:].column("audio").combine_chunks()
    offsets = np.asarray(col.offsets.to_numpy(zero_copy_only=False), dtype=np.int64)
    values = col.values
    if hasattr(values, "type") and str(values.type).startswith(("list", "large_list", "fixed_size_list")):
        raise ShiftlabError("audio column: expected one mono float waveform per row, got nested lists (stereo?)")
    flat = values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return [flat[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]


def _rate(ds, idx: np.ndarray, where: str) -> int:
    rates = np.unique(np.asarray(ds.select(np.asarray(idx).tolist())["sampling_rate"] if len(idx) else [], dtype=np.int64))
    if len(rates) != 1:
        raise ShiftlabError(f"{where}: rows must share one sampling_rate, got {rates.tolist()}")
    if rates[0] <= 0:
        raise ShiftlabError(f"{where}: sampling_rate must be > 0, got {int(rates[0])}")
    return int(rates[0])


def _int_field(rec: dict, key: str, rid: str, lo: int) -> int:
    v = rec.get(key)
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ShiftlabError(f"synthetic row {rid}: recipe {key} must be an integer >= {lo}, got {v!r}")
    return int(v)


# --------------------------------------------------------------------------- noise geometry


def coverage_runs(offsets, lengths, clip_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Use counts of the samples of one clip under mixes ``(offset, length)``.

    Mix ``i`` hears ``clip[(offsets[i] + t) mod clip_length]`` for ``t < lengths[i]``.
    Returns ``(bounds, counts)``: ``bounds`` (int64, ``k + 1`` sample positions from 0 to
    ``clip_length``) cut the clip into ``k`` runs; run ``j`` (samples ``bounds[j]`` to
    ``bounds[j+1] - 1``) is heard ``counts[j]`` times in all (a sample heard twice inside one
    wrapping mix counts twice). Exact, ``O(n log n)`` for ``n`` mixes.
    """
    L = int(clip_length)
    if L <= 0:
        raise ShiftlabError(f"coverage_runs: clip_length must be > 0, got {clip_length}")
    o = np.asarray(offsets, dtype=np.int64).ravel()
    n = np.asarray(lengths, dtype=np.int64).ravel()
    if o.shape != n.shape:
        raise ShiftlabError(f"coverage_runs: {len(o)} offsets but {len(n)} lengths")
    if (o < 0).any() or (n < 0).any():
        raise ShiftlabError("coverage_runs: offsets and lengths must be >= 0")
    keep = n > 0
    o, n = o[keep] % L, n[keep]
    end = o + n  # unrolled end (exclusive)
    cycles = -(-end // L)  # clip periods touched, >= 1
    base = int(np.maximum(cycles - 2, 0).sum())  # full periods inside the mixes
    first_end = np.minimum(end, L)
    wrap = cycles >= 2
    last_end = end[wrap] - (cycles[wrap] - 1) * L
    pos = np.concatenate([o, first_end, np.zeros(int(wrap.sum()), np.int64), last_end, [0, L]])
    delta = np.concatenate([np.ones(len(o), np.int64), -np.ones(len(o), np.int64),
                            np.ones(int(wrap.sum()), np.int64), -np.ones(int(wrap.sum()), np.int64), [0, 0]])
    bounds, inv = np.unique(pos, return_inverse=True)
    d = np.zeros(len(bounds), np.int64)
    np.add.at(d, inv, delta)
    counts = np.cumsum(d)[:-1] + base
    return bounds.astype(np.int64), counts.astype(np.int64)


def _wraps(offsets: np.ndarray, lengths: np.ndarray, L: int) -> np.ndarray:
    return np.maximum(-(-((offsets % L) + lengths) // L) - 1, 0)


# --------------------------------------------------------------------------- features


def _feature_params(sr: int, cfg: dict) -> dict:
    win = max(2, int(round(cfg["win_seconds"] * sr)))
    hop = max(1, int(round(cfg["hop_seconds"] * sr)))
    n_fft = 1 << (win - 1).bit_length()
    f_max = cfg["f_max"] if cfg["f_max"] is not None else sr / 2.0
    if f_max > sr / 2.0 + 1e-9:
        raise ShiftlabError(f"{_KEY}.f_max: {f_max:g} Hz is above the Nyquist frequency {sr / 2.0:g} Hz")
    return {"win": win, "hop": hop, "n_fft": n_fft, "f_max": float(f_max)}


_MEL_CACHE: dict = {}


def logmel_stats(waves, sr: int, cfg: Mapping[str, Any] | None = None, batch_size: int = 256) -> np.ndarray:
    """Log-mel statistics of each waveform: float64 ``(N, 2 * n_mels)`` (module docstring).

    ``waves``: an ``(N, T)`` array or a list of 1-D arrays (any lengths; equal lengths are
    batched). Column ``j < n_mels``: mean over frames of band ``j`` in dB minus the mean of
    those band means; column ``n_mels + j``: std over frames of band ``j`` in dB.
    """
    import torch
    import torchaudio

    c = check_cfg(cfg)
    fp = _feature_params(int(sr), c)
    key = (int(sr), fp["n_fft"], fp["win"], fp["hop"], c["n_mels"], float(c["f_min"]), fp["f_max"])
    mel = _MEL_CACHE.get(key)
    if mel is None:
        mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=int(sr), n_fft=fp["n_fft"], win_length=fp["win"], hop_length=fp["hop"],
            f_min=float(c["f_min"]), f_max=fp["f_max"], n_mels=c["n_mels"], power=2.0, center=True,
        )
        _MEL_CACHE.clear()
        _MEL_CACHE[key] = mel
    if isinstance(waves, np.ndarray) and waves.ndim == 2:
        items = [waves[i] for i in range(len(waves))]
    else:
        items = list(waves)
    out = np.empty((len(items), 2 * c["n_mels"]), dtype=np.float64)
    lengths = np.array([len(w) for w in items], dtype=np.int64)
    if (lengths == 0).any():
        raise ShiftlabError(f"logmel_stats: waveform {int(np.flatnonzero(lengths == 0)[0])} is empty")
    top = float(c["top_db"])
    with torch.inference_mode():
        for L in np.unique(lengths):
            rows = np.flatnonzero(lengths == L)
            for s in range(0, len(rows), batch_size):
                r = rows[s : s + batch_size]
                x = torch.from_numpy(np.stack([np.asarray(items[i], dtype=np.float32) for i in r]))
                p = mel(x).to(torch.float64)  # (B, n_mels, frames)
                db = 10.0 * torch.log10(p.clamp_min(1e-10))
                floor = db.amax(dim=(1, 2), keepdim=True) - top
                db = torch.maximum(db, floor)
                m = db.mean(dim=2)
                sd = db.std(dim=2, unbiased=False)
                m = m - m.mean(dim=1, keepdim=True)
                out[r] = torch.cat([m, sd], dim=1).numpy()
    return out


def _segments(wave: np.ndarray, seg: int, hop: int) -> list[np.ndarray]:
    """Segments of ``seg`` samples every ``hop``; a clip shorter than ``seg`` gives one, looped."""
    L = len(wave)
    if L < seg:
        return [np.resize(wave, seg)]
    return [wave[s : s + seg] for s in range(0, L - seg + 1, hop)]


def _row_groups(ds) -> np.ndarray:
    """The ``group`` of every row (speaker of a mix, recording of a clip); a row without one is its own group (id)."""
    ids = np.asarray(ds["id"], dtype=object) if len(ds) else np.zeros(0, dtype=object)
    if "group" not in ds.column_names:
        return ids.astype(str).astype(object)
    g = np.asarray(ds["group"], dtype=object)
    empty = np.array([v is None or str(v) == "" for v in g], dtype=bool)
    g = g.astype(str).astype(object)
    g[empty] = ids[empty].astype(str)
    return g


def _noise_under(clip: np.ndarray, offset: int, length: int) -> np.ndarray:
    L = len(clip)
    return clip[(offset % L + np.arange(length)) % L]


# --------------------------------------------------------------------------- the check


def _subsample(n: int, m: int, seed: int, purpose: str) -> np.ndarray:
    if n <= m:
        return np.arange(n)
    return np.sort(seeding.sample_rng(seed, 0, _PURPOSE, purpose).choice(n, m, replace=False))


def _balanced_pick(source: np.ndarray, m: int, seed: int) -> np.ndarray:
    """Indices (sorted) of at most ``max(m, sources)`` items, spread evenly over the sources.

    Items are ranked within their source in a seeded order and taken rank by rank (rank 0 of
    every source first, ...; within a rank in a seeded order), so every source keeps at
    least one item and no source is cut before a smaller one.
    """
    n = len(source)
    if n <= m:
        return np.arange(n)
    rng = seeding.sample_rng(seed, 0, _PURPOSE, "bank_segments")
    key = rng.random(n)
    rank = np.empty(n, np.int64)
    for s in np.unique(source):
        rows = np.flatnonzero(source == s)
        rank[rows[np.argsort(key[rows], kind="stable")]] = np.arange(len(rows))
    order = np.lexsort((key, rank))
    keep = max(int(m), len(np.unique(source)))
    return np.sort(order[:keep])


def _rms_db(X: np.ndarray) -> np.ndarray:
    """Features scaled so Euclidean distance = RMS difference in dB."""
    return X / math.sqrt(X.shape[1])


def _bar(progress: bool, total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", disable=not progress, leave=False)


def run(synthetic, bank, target_rows, target_noise=None, cfg=None, plots_dir=None, progress: bool = True) -> dict:
    """Check the diversity and realism of audio mixes; return the report (a JSON-able dict).

    Inputs, metrics and their exact semantics: see the module docstring. ``plots_dir``: when
    given, the PNGs ``uses_per_source.png``, ``coverage.png``, ``spectra.png`` and
    ``embedding.png`` are written there (matplotlib Agg). Report keys: ``metrics`` (the flat
    scalars of :data:`METRICS`, ``None`` where not applicable), ``reuse`` (totals, use-count
    histogram, per-source table), ``spectral``, ``realism``, ``probe``, ``snr_db``,
    ``subsample``, ``plots``, ``config``.
    """
    c = check_cfg(cfg)
    seed = c["seed"]
    bar = _bar(progress, 6, "check audio")
    try:
        return _run(synthetic, bank, target_rows, target_noise, c, seed, plots_dir, bar)
    finally:
        bar.close()


def _run(synthetic, bank, target_rows, target_noise, c, seed, plots_dir, bar) -> dict:
    # ---- inputs
    _need_columns(synthetic, ("id", "audio", "sampling_rate", "label", "recipe"), "synthetic")
    _need_columns(bank, ("id", "audio", "sampling_rate", "group"), "bank")
    syn_idx = _filter(synthetic, "origin", "synthetic")
    if len(syn_idx) == 0:
        raise ShiftlabError("synthetic: no rows" + (" with origin 'synthetic'" if "origin" in synthetic.column_names else ""))
    bank_all = np.arange(len(bank))
    bank_dom = np.asarray(bank["domain"], dtype=object) if "domain" in bank.column_names else np.full(len(bank), "source", dtype=object)
    bank_ids_all = list(bank["id"])
    if len(set(bank_ids_all)) != len(bank_ids_all):
        raise ShiftlabError("bank: column id has duplicate values")
    held_ids = {bank_ids_all[i] for i in bank_all if bank_dom[i] == "target"}
    bank_idx = np.flatnonzero(bank_dom != "target")
    if len(bank_idx) == 0:
        raise ShiftlabError("bank: no noise clips (empty, or only domain target)")
    sr = _rate(bank, bank_idx, "bank")
    sr_syn = _rate(synthetic, syn_idx, "synthetic")
    if sr_syn != sr:
        raise ShiftlabError(f"synthetic: sampling_rate {sr_syn} differs from the bank's {sr}")
    tn_idx = None
    if target_noise is not None:
        _need_columns(target_noise, ("id", "audio", "sampling_rate"), "target_noise")
        tn_idx = _filter(target_noise, "domain", "target")
        if len(tn_idx) == 0:
            raise ShiftlabError("target_noise: no rows" + (" with domain 'target'" if "domain" in target_noise.column_names else ""))
        sr_t = _rate(target_noise, tn_idx, "target_noise")
        if sr_t != sr:
            raise ShiftlabError(f"target_noise: sampling_rate {sr_t} differs from the bank's {sr}")
        held_ids |= set(np.asarray(target_noise["id"], dtype=object)[tn_idx].tolist())
    tr_idx = None
    if target_rows is not None:
        _need_columns(target_rows, ("id", "audio", "sampling_rate"), "target_rows")
        tr_idx = _filter(target_rows, "domain", "target")
        if len(tr_idx) == 0:
            raise ShiftlabError("target_rows: no rows" + (" with domain 'target'" if "domain" in target_rows.column_names else ""))
        sr_r = _rate(target_rows, tr_idx, "target_rows")
        if sr_r != sr:
            raise ShiftlabError(f"target_rows: sampling_rate {sr_r} differs from the bank's {sr}")

    bank_ids = [bank_ids_all[i] for i in bank_idx]
    bank_groups = [str(g) for g in np.asarray(bank["group"], dtype=object)[bank_idx]]
    clips = _waves(bank, bank_idx)
    clip_len = np.array([len(w) for w in clips], dtype=np.int64)
    for i, L in enumerate(clip_len):
        if L == 0:
            raise ShiftlabError(f"bank: clip {bank_ids[i]} has no samples")
    clip_of = {rid: i for i, rid in enumerate(bank_ids)}

    # ---- recipes (every mix)
    sub = synthetic.select(syn_idx.tolist()) if len(syn_idx) != len(synthetic) else synthetic
    ids = list(sub["id"])
    labels = np.asarray(sub["label"])
    speakers = _row_groups(sub)
    recipes = list(sub["recipe"])
    n = len(ids)
    m_clip = np.empty(n, np.int64)
    m_off = np.empty(n, np.int64)
    m_len = np.empty(n, np.int64)
    m_loops = np.full(n, -1, np.int64)
    snr = np.full(n, np.nan)
    for i, (rid, text) in enumerate(zip(ids, recipes)):
        try:
            rec = json.loads(text)
        except (TypeError, ValueError) as e:
            raise ShiftlabError(f"synthetic row {rid}: recipe is not valid JSON ({e})") from None
        if not isinstance(rec, dict):
            raise ShiftlabError(f"synthetic row {rid}: recipe must be a JSON object")
        if "noise" not in rec:
            raise ShiftlabError(f"synthetic row {rid}: recipe has no 'noise' (noise clip id)")
        nid = rec["noise"]
        if nid in held_ids:
            raise ShiftlabError(f"synthetic row {rid}: uses noise clip {nid}, which is held-out target noise")
        if nid not in clip_of:
            raise ShiftlabError(f"synthetic row {rid}: noise clip {nid!r} is not in the bank")
        k = clip_of[nid]
        grp = rec.get("noise_group")
        if grp is not None and str(grp) != bank_groups[k]:
            raise ShiftlabError(
                f"synthetic row {rid}: recipe noise_group {grp!r} differs from the bank group {bank_groups[k]!r} of {nid}"
            )
        m_clip[i] = k
        m_off[i] = _int_field(rec, "offset", rid, 0)
        m_len[i] = _int_field(rec, "length", rid, 1)
        if "loops" in rec and rec["loops"] is not None:
            m_loops[i] = _int_field(rec, "loops", rid, 0)
        if rec.get("snr_db") is not None and _is_num(rec["snr_db"]):
            snr[i] = float(rec["snr_db"])
    bar.update(1)

    report: dict[str, Any] = {"n_mixes": n, "sampling_rate": sr}
    reuse = _reuse(m_clip, m_off, m_len, m_loops, clip_len, bank_groups, sr)
    report["reuse"] = reuse
    bar.update(1)

    # ---- spectral features
    mix_pick = _subsample(n, c["max_rows"], seed, "rows")
    seg_s = c["segment_seconds"] if c["segment_seconds"] is not None else float(np.median(m_len)) / sr
    seg = max(1, int(round(seg_s * sr)))
    hop = max(1, int(round(seg * c["segment_hop"])))
    used_groups = sorted({bank_groups[k] for k in np.unique(m_clip)})
    seg_clip, seg_waves = [], []
    for k, w in enumerate(clips):
        if bank_groups[k] in used_groups:
            for s in _segments(w, seg, hop):
                seg_clip.append(k)
                seg_waves.append(s)
    seg_clip = np.asarray(seg_clip, np.int64)
    seg_src = np.asarray([used_groups.index(bank_groups[k]) for k in seg_clip], np.int64)
    spick = _balanced_pick(seg_src, c["max_bank_segments"], seed)
    F_bank = logmel_stats([seg_waves[i] for i in spick], sr, c)
    seg_group = np.asarray([bank_groups[seg_clip[i]] for i in spick], dtype=object)
    under = [_noise_under(clips[m_clip[i]], int(m_off[i]), int(m_len[i])) for i in mix_pick]
    F_used = logmel_stats(under, sr, c)
    del under
    F_tn, tn_segments_group, tn_rec = None, None, None
    if tn_idx is not None:
        tclips = _waves(target_noise, tn_idx)
        tids = np.asarray(target_noise["id"], dtype=object)[tn_idx]
        trec = _row_groups(target_noise)[tn_idx]
        tw, tg, tr_ = [], [], []
        for tid, rec_g, w in zip(tids, trec, tclips):
            if len(w) == 0:
                raise ShiftlabError(f"target_noise: clip {tid} has no samples")
            for s in _segments(w, seg, hop):
                tw.append(s)
                tg.append(str(tid))
                tr_.append(str(rec_g))
        F_tn = logmel_stats(tw, sr, c)
        tn_segments_group = np.asarray(tg, dtype=object)
        tn_rec = np.asarray(tr_, dtype=object)
    bar.update(1)
    mix_waves = _waves(sub, mix_pick)
    F_mix = logmel_stats(mix_waves, sr, c)
    del mix_waves
    F_tr, g_tr = None, None
    if tr_idx is not None:
        F_tr = logmel_stats(_waves(target_rows, tr_idx), sr, c)
        g_tr = _row_groups(target_rows)[tr_idx]
    bar.update(1)
    groups_mix = np.asarray([bank_groups[k] for k in m_clip[mix_pick]], dtype=object)

    spectral = _spectral(F_bank, seg_group, used_groups, F_used, F_tn, c, seed, groups_mix, tn_rec)
    spectral.update(segment_seconds=seg / sr, segment_hop=c["segment_hop"], bank_segments=int(len(seg_waves)),
                    bank_segments_used=int(len(spick)))
    report["spectral"] = spectral
    report["realism"] = _realism(F_mix, F_tr, c, seed, speakers[mix_pick], g_tr)
    bar.update(1)
    report["probe"] = _probe(F_mix, labels[mix_pick], groups_mix, c, seed)
    bar.update(1)

    finite = snr[np.isfinite(snr)]
    report["snr_db"] = (
        {"n": int(len(finite)), "min": float(finite.min()), "mean": float(finite.mean()), "max": float(finite.max()),
         "std": float(finite.std())}
        if len(finite) else {"n": 0, "min": None, "mean": None, "max": None, "std": None}
    )
    report["subsample"] = {"rows": int(len(mix_pick)), "of": n, "max_rows": c["max_rows"],
                           "note": "reuse counts every mix; spectral, realism and probe parts use the subsample"}
    r, s, rl, p = reuse, spectral, report["realism"], report["probe"]
    report["metrics"] = {
        "n_mixes": n,
        "n_sources": r["n_sources"],
        "n_bank_sources": r["n_bank_sources"],
        "effective_sources_by_use": r["effective_sources_by_use"],
        "largest_source_share": r["largest_source_share"],
        "reuse_ratio": r["reuse_ratio"],
        "max_segment_uses": r["max_segment_uses"],
        "bank_coverage": r["bank_coverage"],
        "looped_share": r["looped_share"],
        "vendi_sources": s["vendi_sources"],
        "vendi_sources_share": (s["vendi_sources"] / r["n_sources"]
                                if s["vendi_sources"] is not None and r["n_sources"] else None),
        "vendi_bank_segments": s["vendi_bank_segments"],
        "vendi_used_noise": s["vendi_used_noise"],
        "frechet_noise": s["frechet_noise"],
        "noise_domain_auc": (s["noise_domain"] or {}).get("auc"),
        "domain_auc": rl.get("auc"),
        "domain_auc_ci_low": rl.get("ci_low"),
        "domain_auc_ci_high": rl.get("ci_high"),
        "probe_error_in": p.get("error_in"),
        "probe_error_out": p.get("error_out"),
        "probe_gap": p.get("gap"),
        "probe_gap_ci_low": p.get("gap_ci_low"),
        "probe_gap_ci_high": p.get("gap_ci_high"),
    }
    report["plots"] = []
    if plots_dir is not None:
        report["plots"] = _plots(Path(plots_dir), reuse, F_bank, seg_group, F_tn, tn_segments_group, c)
    report["config"] = copy.deepcopy(c)
    return report


def _reuse(m_clip, m_off, m_len, m_loops, clip_len, bank_groups, sr) -> dict:
    n_clips = len(clip_len)
    distinct = np.zeros(n_clips, np.int64)
    max_uses = np.zeros(n_clips, np.int64)
    hist: dict[int, int] = {}
    wraps = np.zeros(len(m_clip), np.int64)
    for k in range(n_clips):
        sel = np.flatnonzero(m_clip == k)
        L = int(clip_len[k])
        if len(sel) == 0:
            hist[0] = hist.get(0, 0) + L
            continue
        bounds, counts = coverage_runs(m_off[sel], m_len[sel], L)
        widths = np.diff(bounds)
        distinct[k] = int(widths[counts > 0].sum())
        max_uses[k] = int(counts.max())
        agg = np.bincount(counts, weights=widths.astype(np.float64))
        for u in np.flatnonzero(agg):
            hist[int(u)] = hist.get(int(u), 0) + int(round(agg[u]))
        wraps[sel] = _wraps(m_off[sel], m_len[sel], L)
    total_len = int(m_len.sum())
    total_distinct = int(distinct.sum())
    groups = sorted(set(bank_groups))
    g_of_clip = np.asarray([groups.index(g) for g in bank_groups], np.int64)
    g_mix = g_of_clip[m_clip]
    rows = []
    for gi, g in enumerate(groups):
        kk = np.flatnonzero(g_of_clip == gi)
        sel = g_mix == gi
        mixed = int(m_len[sel].sum())
        dist = int(distinct[kk].sum())
        rows.append({
            "group": g,
            "clips": int(len(kk)),
            "bank_seconds": float(clip_len[kk].sum()) / sr,
            "mixes": int(sel.sum()),
            "mixed_seconds": mixed / sr,
            "distinct_seconds": dist / sr,
            "reuse_ratio": (mixed / dist) if dist else None,
            "max_uses": int(max_uses[kk].max()) if len(kk) else 0,
            "share": mixed / total_len if total_len else 0.0,
        })
    rows.sort(key=lambda r: (-r["mixed_seconds"], r["group"]))
    used = [r for r in rows if r["mixes"] > 0]
    shares = np.array([r["mixed_seconds"] for r in used], dtype=np.float64)
    known = m_loops >= 0
    return {
        "mixed_seconds": total_len / sr,
        "distinct_noise_seconds": total_distinct / sr,
        "bank_seconds": float(clip_len.sum()) / sr,
        "bank_coverage": total_distinct / float(clip_len.sum()),
        "reuse_ratio": total_len / total_distinct if total_distinct else None,
        "max_segment_uses": int(max_uses.max()),
        "looped_share": float((wraps > 0).mean()) if len(wraps) else 0.0,
        "loops_mismatch": int((m_loops[known] != wraps[known]).sum()),
        "n_sources": len(used),
        "n_bank_sources": len(groups),
        "effective_sources_by_use": _fnum(stats.effective_number(shares)) if len(shares) else None,
        "largest_source_share": float(shares.max() / shares.sum()) if len(shares) and shares.sum() > 0 else None,
        "uses_histogram": {"uses": sorted(hist), "seconds": [hist[u] / sr for u in sorted(hist)]},
        "sources": rows,
    }


def _spectral(F_bank, seg_group, used_groups, F_used, F_tn, c, seed, g_used=None, g_tn=None) -> dict:
    bw = c["vendi_bandwidth_db"]
    cents = np.stack([F_bank[seg_group == g].mean(0) for g in used_groups]) if len(used_groups) else np.zeros((0, F_bank.shape[1]))
    out: dict[str, Any] = {"vendi_bandwidth_db": bw, "n_features": int(F_bank.shape[1])}
    out["vendi_sources"] = _fnum(stats.vendi_score(_rms_db(cents), kernel="rbf", bandwidth=bw, seed=seed)) if len(cents) else None
    out["vendi_bank_segments"] = _fnum(stats.vendi_score(_rms_db(F_bank), kernel="rbf", bandwidth=bw, seed=seed))
    out["vendi_used_noise"] = _fnum(stats.vendi_score(_rms_db(F_used), kernel="rbf", bandwidth=bw, seed=seed))
    out["frechet_noise"] = None
    out["noise_domain"] = None
    out["target_noise_segments"] = 0 if F_tn is None else int(len(F_tn))
    if F_tn is not None:
        if len(F_tn) >= 2 and len(F_used) >= 2:
            out["frechet_noise"] = _fnum(stats.frechet_from_features(F_used, F_tn))
        folds = c["domain_folds"]
        if min(len(F_used), len(F_tn)) >= folds:
            d = stats.domain_classifier_auc(F_used, F_tn, folds=folds, seed=seed, groups_a=g_used, groups_b=g_tn,
                                            l2=c["l2"], n_boot=c["n_boot"])
            out["noise_domain"] = {k: (_fnum(v) if isinstance(v, float) else v) for k, v in d.items()}
        else:
            out["noise_domain"] = {"auc": None, "reason": f"needs >= {folds} segments per side, got {len(F_used)} and {len(F_tn)}"}
    return out


def _realism(F_mix, F_tr, c, seed, g_mix=None, g_tr=None) -> dict:
    folds = c["domain_folds"]
    if F_tr is None:
        return {"auc": None, "reason": "no target rows given"}
    if min(len(F_mix), len(F_tr)) < folds:
        return {"auc": None, "reason": f"needs >= {folds} rows per side, got {len(F_mix)} synthetic and {len(F_tr)} target"}
    d = stats.domain_classifier_auc(F_mix, F_tr, folds=folds, seed=seed, groups_a=g_mix, groups_b=g_tr, l2=c["l2"],
                                    n_boot=c["n_boot"])
    return {k: (_fnum(v) if isinstance(v, float) else v) for k, v in d.items()}


def _probe(X, y, groups, c, seed) -> dict:
    pc = c["probe"]
    na = {"applicable": False, "error_in": None, "error_out": None, "gap": None, "gap_ci_low": None, "gap_ci_high": None}
    names, gi = np.unique(groups, return_inverse=True)
    if len(names) < 2:
        return {**na, "reason": f"needs >= 2 noise sources, got {len(names)}"}
    if len(y) < pc["min_rows"]:
        return {**na, "reason": f"needs >= {pc['min_rows']} mixes, got {len(y)}"}
    # test rows: a seeded share of each source's mixes
    test = np.zeros(len(y), bool)
    for g in range(len(names)):
        rows = np.flatnonzero(gi == g)
        k = int(round(len(rows) * pc["test_fraction"]))
        k = min(max(k, 1), len(rows) - 1) if len(rows) >= 2 else 0
        if k:
            test[seeding.sample_rng(seed, g, _PURPOSE, "probe_test").choice(rows, k, replace=False)] = True
    # sources into folds: seeded order, largest first, to the fold with fewest mixes
    k = min(pc["folds"], len(names))
    sizes = np.bincount(gi, minlength=len(names))
    order = seeding.sample_rng(seed, 0, _PURPOSE, "probe_folds").permutation(len(names))
    order = order[np.argsort(-sizes[order], kind="stable")]
    fold_of = np.empty(len(names), np.int64)
    load = np.zeros(k, np.int64)
    for g in order:
        f = int(np.argmin(load))
        fold_of[g] = f
        load[f] += sizes[g]
    rf = fold_of[gi]
    err_out = np.full(len(y), np.nan)
    err_in_sum = np.zeros(len(y))
    err_in_n = np.zeros(len(y))
    for f in range(k):
        tr = ~test & (rf != f)
        if len(np.unique(y[tr])) < 2:
            return {**na, "reason": f"fold {f}: training mixes hold fewer than 2 words"}
        model = stats.fit_logistic(X[tr], y[tr], l2=c["l2"])
        te = np.flatnonzero(test)
        wrong = (model.predict(X[te]) != y[te]).astype(np.float64)
        out = rf[te] == f
        err_out[te[out]] = wrong[out]
        err_in_sum[te[~out]] += wrong[~out]
        err_in_n[te[~out]] += 1
    rows = np.flatnonzero(test & (err_in_n > 0) & np.isfinite(err_out))
    if len(rows) < 2:
        return {**na, "reason": "too few test rows"}
    e_in = err_in_sum[rows] / err_in_n[rows]
    e_out = err_out[rows]
    diff = e_out - e_in
    g_rows = groups[rows]

    def ci_of(v):  # cluster bootstrap over the noise sources (paired: one draw for in, out and their gap)
        lo, hi, _ = stats.cluster_bootstrap(lambda W: (W @ v) / W.sum(1), g_rows, c["n_boot"], seed)
        return CI(float(v.mean()), lo, hi)

    ci, ci_in, ci_out = ci_of(diff), ci_of(e_in), ci_of(e_out)
    counts = np.bincount(np.unique(y, return_inverse=True)[1])
    return {
        "applicable": True,
        "folds": int(k),
        "sources": int(len(names)),
        "test_rows": int(len(rows)),
        "test_sources": int(len(np.unique(g_rows))),
        "train_rows_per_fold": [int((~test & (rf != f)).sum()) for f in range(k)],
        "chance_error": float(1.0 - counts.max() / counts.sum()),
        "error_in": float(e_in.mean()),
        "error_in_ci": [_fnum(ci_in.low), _fnum(ci_in.high)],
        "error_out": float(e_out.mean()),
        "error_out_ci": [_fnum(ci_out.low), _fnum(ci_out.high)],
        "gap": float(diff.mean()),
        "gap_ci_low": _fnum(ci.low),
        "gap_ci_high": _fnum(ci.high),
    }


# --------------------------------------------------------------------------- plots


def _figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> None:
    from shiftlab.store import atomic_file

    fig.tight_layout()
    with atomic_file(path, "wb") as f:
        fig.savefig(f, format="png", metadata={"Software": None})


def _pca2(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, components (2, d)) of X (features share one unit, dB: centred, not scaled).

    Signs are fixed (largest |loading| positive), so the plot is deterministic.
    """
    mu = X.mean(0)
    _, _, vt = np.linalg.svd(X - mu, full_matrices=False)
    comp = vt[:2]
    if comp.shape[0] < 2:
        comp = np.vstack([comp, np.zeros((2 - comp.shape[0], X.shape[1]))])
    for i in range(len(comp)):
        j = int(np.argmax(np.abs(comp[i])))
        if comp[i, j] < 0:
            comp[i] = -comp[i]
    return mu, comp


def _plots(d: Path, reuse, F_bank, seg_group, F_tn, tn_group, c) -> list[str]:
    d.mkdir(parents=True, exist_ok=True)
    top = c["max_plot_sources"]
    n_mels = c["n_mels"]
    used = [r for r in reuse["sources"] if r["mixes"] > 0][:top]
    # 1. uses per source
    fig = _figure(max(6.0, 0.3 * len(used) + 2), 4.5)
    ax = fig.add_subplot(111)
    names = [r["group"] for r in used]
    ax.bar(range(len(used)), [r["mixes"] for r in used], color="tab:blue")
    if used:
        ax.axhline(sum(r["mixes"] for r in reuse["sources"]) / max(reuse["n_sources"], 1), color="k", ls="--", lw=1,
                   label="balanced")
        ax.legend(loc="upper right")
    ax.set_xticks(range(len(used)))
    ax.set_xticklabels(names, rotation=80, fontsize=7)
    ax.set_ylabel("mixes")
    more = reuse["n_sources"] - len(used)
    ax.set_title(f"mixes per noise source ({reuse['n_sources']} used" + (f", top {len(used)} shown)" if more > 0 else ")"))
    _save(fig, d / _PLOTS[0])
    # 2. coverage histogram
    fig = _figure(6.5, 4.0)
    ax = fig.add_subplot(111)
    h = reuse["uses_histogram"]
    ax.bar(h["uses"], h["seconds"], width=0.8, color="tab:orange")
    ax.set_yscale("log")
    ax.set_xlabel("times heard under the mixes (0 = never)")
    ax.set_ylabel("bank seconds (log scale)")
    ax.set_title(f"noise coverage: reuse ratio {_fmt(reuse['reuse_ratio'])}, max uses {reuse['max_segment_uses']}")
    _save(fig, d / _PLOTS[1])
    # 3. mean log-mel spectra per source (+ target noise)
    fig = _figure(7.0, 4.5)
    ax = fig.add_subplot(111)
    for g in names:
        sel = seg_group == g
        if sel.any():
            ax.plot(F_bank[sel, :n_mels].mean(0), lw=1, alpha=0.7)
    if F_tn is not None:
        for tid in sorted(set(tn_group)):
            ax.plot(F_tn[tn_group == tid, :n_mels].mean(0), "k--", lw=1.5, label=f"target {tid}")
        ax.legend(fontsize=7, loc="lower left")
    ax.set_xlabel("mel band")
    ax.set_ylabel("mean level (dB, relative)")
    ax.set_title(f"log-mel spectra of {len(names)} noise sources")
    _save(fig, d / _PLOTS[2])
    # 4. PCA scatter of bank segments vs target noise
    fig = _figure(6.5, 5.5)
    ax = fig.add_subplot(111)
    both = F_bank if F_tn is None else np.concatenate([F_bank, F_tn])
    ms, comp = _pca2(both)
    Zb = (F_bank - ms) @ comp.T
    groups = sorted(set(seg_group))
    codes = np.asarray([groups.index(g) for g in seg_group])
    ax.scatter(Zb[:, 0], Zb[:, 1], c=codes, cmap="tab20", s=10, alpha=0.7, label="bank segments (colour = source)")
    if F_tn is not None:
        Zt = (F_tn - ms) @ comp.T
        ax.scatter(Zt[:, 0], Zt[:, 1], marker="x", c="k", s=30, label="target noise")
    ax.legend(fontsize=7, loc="best")
    ax.set_xlabel("PC 1 (dB)")
    ax.set_ylabel("PC 2 (dB)")
    ax.set_title(f"log-mel statistics, PCA ({len(groups)} sources)")
    _save(fig, d / _PLOTS[3])
    return list(_PLOTS)


# --------------------------------------------------------------------------- gates and report


def gate(report: dict, cfg: Mapping[str, Any] | None = None) -> list[dict]:
    """Verdicts of the gates of ``cfg`` (default: the report's own config) on ``report["metrics"]``.

    One dict per gate, in config order: ``name`` (the metric), ``value``, ``op`` (``>=`` for a
    ``min`` gate, ``<=`` for ``max``), ``threshold``, ``action`` (``fail`` | ``warn``) and
    ``passed``. **n/a is not a pass**: when the metric does not apply or was not computed
    (value ``None``, e.g. the probe with a single noise source) ``passed`` is False and
    ``reason`` says why, so the gate counts with its action (module docstring, "Gates").
    """
    if cfg is None:
        cfg = report.get("config")
    c = check_cfg(cfg)
    metrics = report.get("metrics") or {}
    out = []
    for name, g in c["gates"].items():
        op = "min" if "min" in g else "max"
        thr = g[op]
        v = metrics.get(name)
        v = _fnum(v) if v is not None else None
        passed = v is not None and bool(v >= thr if op == "min" else v <= thr)
        d = {"name": name, "value": v, "op": ">=" if op == "min" else "<=", "threshold": thr,
             "action": g["action"], "passed": passed}
        if v is None:
            d["reason"] = _na_reason(report, name)
        out.append(d)
    return out


def _na_reason(report: Mapping, name: str) -> str:
    """Why a gate's metric is None: the reason its part of the report gives."""
    if name.startswith("probe_"):
        part = report.get("probe")
    elif name.startswith("domain_auc"):
        part = report.get("realism")
    elif name == "noise_domain_auc":
        part = (report.get("spectral") or {}).get("noise_domain")
        if part is None:
            return "n/a: no target noise given"
    elif name == "frechet_noise":
        return "n/a: no target noise given"
    else:
        part = None
    if isinstance(part, Mapping) and part.get("reason"):
        return f"n/a: {part['reason']}"
    return "n/a: not computed"


def failures(gates: Sequence[dict]) -> list[dict]:
    """The gates with action ``fail`` that did not pass (n/a included: ``passed`` is False)."""
    return [g for g in gates if g["action"] == "fail" and not g["passed"]]


def verdict(gates: Sequence[dict]) -> str:
    """``"fail"`` (a fail gate did not pass, n/a included), ``"warn"`` (a warn gate did not), else ``"pass"``."""
    if failures(gates):
        return "fail"
    return "warn" if any(not g["passed"] for g in gates) else "pass"


def _fmt(v, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return str(int(v))
    f = float(v)
    if not math.isfinite(f):
        return "n/a"
    if f != 0 and (abs(f) >= 1e4 or abs(f) < 1e-3):
        return f"{f:.{digits}g}"
    return f"{f:.{digits}f}".rstrip("0").rstrip(".") if "." in f"{f:.{digits}f}" else f"{f:.{digits}f}"


def markdown(report: dict, gates: Sequence[dict]) -> str:
    """The report as a Markdown page: verdict, gates, reuse, per-source table, spectral, realism, probe."""
    m = report["metrics"]
    r = report["reuse"]
    s = report["spectral"]
    fails = failures(gates)
    warns = [g for g in gates if g["action"] == "warn" and not g["passed"]]
    word = {"fail": "FAIL", "warn": "PASS with warnings", "pass": "PASS"}[verdict(gates)]
    L = ["# Audio diversity check", ""]
    L.append(f"**{word}**: {len(fails)} failing gate(s), {len(warns)} warning(s), {len(gates)} gate(s) in all.")
    L.append("")
    L.append(f"{report['n_mixes']} mixes at {report['sampling_rate']} Hz; {report['subsample']['rows']} of them in "
             f"the spectral, realism and probe parts (max_rows {report['subsample']['max_rows']}); "
             f"the reuse accounting counts every mix.")
    L += ["", "## Gates", "", "| metric | value | rule | action | result |", "|---|---:|---|---|---|"]
    for g in gates:
        res = "pass" if g["passed"] else ("**FAIL**" if g["action"] == "fail" else "warn")
        if g["value"] is None:
            res += " (n/a)"
        L.append(f"| {g['name']} | {_fmt(g['value'])} | {g['op']} {_fmt(g['threshold'])} | {g['action']} | {res} |")
    nas = [g for g in gates if g["value"] is None]
    if nas:
        L += ["", "Not available, so not passed (an n/a gate counts with its action): "
              + "; ".join(f"{g['name']}: {g.get('reason', 'n/a')}" for g in nas) + "."]
    L += ["", "## Noise reuse", ""]
    L.append(f"- mixed speech: {_fmt(r['mixed_seconds'])} s over {_fmt(r['distinct_noise_seconds'])} s of distinct noise "
             f"(bank: {_fmt(r['bank_seconds'])} s, {_fmt(100 * r['bank_coverage'], 1)}% heard)")
    L.append(f"- reuse ratio: **{_fmt(r['reuse_ratio'])}** s of speech per s of noise; most-heard noise sample: "
             f"**{r['max_segment_uses']}** times; mixes that loop their clip: {_fmt(100 * r['looped_share'], 1)}%")
    L.append(f"- sources used: **{r['n_sources']}** of {r['n_bank_sources']} in the bank; effective number by use "
             f"{_fmt(r['effective_sources_by_use'])}; largest share {_fmt(r['largest_source_share'])}")
    if r["loops_mismatch"]:
        L.append(f"- note: {r['loops_mismatch']} recipe(s) give a `loops` that differs from the wraps implied by "
                 f"offset/length/clip length")
    L += ["", "| source | clips | bank s | mixes | share | distinct s | reuse | max uses |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    top = report["config"]["max_plot_sources"]
    L[-2] = L[-2].replace("| source |", "| source (most reused first) |")
    worst = sorted(r["sources"], key=lambda x: (-(x["reuse_ratio"] or 0.0), -x["mixes"], x["group"]))
    for row in worst[:top]:
        L.append(f"| {row['group']} | {row['clips']} | {_fmt(row['bank_seconds'])} | {row['mixes']} | {_fmt(row['share'])} | "
                 f"{_fmt(row['distinct_seconds'])} | {_fmt(row['reuse_ratio'])} | {row['max_uses']} |")
    if len(r["sources"]) > top:
        L.append(f"| ... {len(r['sources']) - top} more | | | | | | | |")
    L += ["", "## Spectral diversity", ""]
    L.append(f"Log-mel statistics ({s['n_features']} dB features) of {s['bank_segments_used']} bank segments of "
             f"{_fmt(s['segment_seconds'])} s; Vendi scores with an rbf bandwidth of {_fmt(s['vendi_bandwidth_db'])} dB RMS.")
    L.append("")
    share = report.get("metrics", {}).get("vendi_sources_share")
    L.append(f"- effective number of distinct noise sources (Vendi): **{_fmt(s['vendi_sources'])}** (of {r['n_sources']} used; "
             f"per source {_fmt(share)}: it cannot exceed the number of sources, so it is gated as a share, not a count)")
    L.append(f"- effective number of distinct bank segments: {_fmt(s['vendi_bank_segments'])}; "
             f"of distinct noise under the mixes: {_fmt(s['vendi_used_noise'])}")
    if s["target_noise_segments"]:
        nd = s["noise_domain"] or {}
        ci = f" [{_fmt(nd.get('ci_low'))}, {_fmt(nd.get('ci_high'))}]" if nd.get("auc") is not None else ""
        L.append(f"- vs {s['target_noise_segments']} target noise segments: Frechet distance {_fmt(s['frechet_noise'])}; "
                 f"noise domain-classifier AUC {_fmt(nd.get('auc'))}{ci}" + (f" ({nd['reason']})" if nd.get("reason") else ""))
    else:
        L.append("- no target noise given: Frechet distance and noise domain classifier not computed")
    rl = report["realism"]
    L += ["", "## Realism gap", ""]
    if rl.get("auc") is None:
        L.append(f"Not computed: {rl.get('reason')}.")
    else:
        L.append(f"A logistic domain classifier tells synthetic mixes ({rl['n_a']} of {rl.get('groups_a', 'n/a')} "
                 f"speakers) from target training mixes ({rl['n_b']} of {rl.get('groups_b', 'n/a')} speakers) with "
                 f"out-of-fold AUC **{_fmt(rl['auc'])}** (95% CI {_fmt(rl['ci_low'])} to {_fmt(rl['ci_high'])}; "
                 f"{rl.get('folds')} folds that keep every speaker whole, interval by resampling speakers; "
                 f"0.5 = indistinguishable).")
    p = report["probe"]
    L += ["", "## Leave-sources-out probe", ""]
    if not p.get("applicable"):
        L.append(f"Not applicable: {p.get('reason')}.")
    else:
        L.append(f"Word classifier on log-mel statistics, {p['sources']} noise sources in {p['folds']} folds, "
                 f"{p['test_rows']} test mixes (chance error {_fmt(p['chance_error'])}):")
        L.append("")
        L.append(f"- error on held-out mixes of the training sources: {_fmt(p['error_in'])} "
                 f"(95% CI {_fmt(p['error_in_ci'][0])} to {_fmt(p['error_in_ci'][1])})")
        L.append(f"- error on mixes of held-out sources: {_fmt(p['error_out'])} "
                 f"(95% CI {_fmt(p['error_out_ci'][0])} to {_fmt(p['error_out_ci'][1])})")
        L.append(f"- gap: **{_fmt(p['gap'])}** (95% CI {_fmt(p['gap_ci_low'])} to {_fmt(p['gap_ci_high'])}; intervals "
                 f"resample the {p['test_sources']} noise sources of the test mixes; the fail gate is on the upper end)")
    sn = report["snr_db"]
    if sn["n"]:
        L += ["", f"SNR of the mixes: {_fmt(sn['min'])} to {_fmt(sn['max'])} dB (mean {_fmt(sn['mean'])})."]
    if report.get("plots"):
        L += ["", "## Plots", ""] + [f"- `{p}`" for p in report["plots"]]
    return "\n".join(L) + "\n"
