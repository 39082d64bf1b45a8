"""Audio helpers shared by the speech and noise sources.

All audio I/O goes through ``soundfile`` (libsndfile: wav, flac, ogg/vorbis, opus,
au/snd, aiff, caf, w64, mp3 ...); all DSP through ``torchaudio.functional``
(torchaudio 2.9+ has no I/O backends of its own). Waveforms are float32 numpy arrays.

Conversions (:func:`read_audio`):

* samples are decoded to float32 in [-1, 1) by libsndfile (integer PCM is divided by
  its full scale; float files are kept as they are, never clipped);
* **channel mixing**: a multi-channel file becomes mono by the plain mean over its
  channels (no panning law, no channel weighting), so a stereo file with the same
  signal in both channels is unchanged and out-of-phase content cancels;
* a headerless ``.au`` file (the Debian ``saytime`` words are raw 8 kHz mu-law with no
  ``.snd`` header) is decoded as raw 8 kHz mono mu-law, as libsndfile itself does for
  such files when it can see the extension.

Length normalisation (:func:`fix_length`) is documented on the function; the README
quotes it.
"""

from __future__ import annotations

import io
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Sequence

import datasets as hfds
import numpy as np
import pyarrow as pa
import soundfile as sf
import xxhash

from shiftlab.datasets import folders, schema
from shiftlab.errors import ShiftlabError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".au", ".snd", ".aiff", ".aif", ".aifc", ".mp3", ".caf", ".w64")

FRAME_SECONDS = 0.025  # fix_length: short-time energy frame
SMOOTH_SECONDS = 0.100  # fix_length: smoothing of the frame energy
_PROGRESS_MIN = 50  # show a progress bar from this many items on


# --------------------------------------------------------------------------- reading


def _reason(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 200 else text[:197] + "..."


_WAV_HEAD = 1 << 16  # chunks before "data" (fmt, LIST, fact, ...) fit in this
_WAV_STREAMING = 0x7F000000  # declared data sizes from here up are "unknown length" (espeak-ng --stdout: 0x7ffff000)


def _head(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(_WAV_HEAD)


def _wav_shortfall(head: bytes, size: int) -> tuple[int, int] | None:
    """(declared, held) bytes of a RIFF/WAVE file's ``data`` chunk when the file is cut short, else None.

    Walks the chunks of ``head`` (the file's first bytes) to the ``data`` chunk; a
    declared size of 0 or of 0x7F000000 and up is a streamed file's placeholder
    (unknown length) and never counts as truncation. Non-WAV input gives None.
    """
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos = 12
    while pos + 8 <= len(head):
        cid, n = head[pos : pos + 4], int.from_bytes(head[pos + 4 : pos + 8], "little")
        if cid == b"data":
            held = max(0, size - (pos + 8))
            if 0 < n < _WAV_STREAMING and held < n:
                return n, held
            return None
        pos += 8 + n + (n & 1)
    return None


def read_audio(path_or_bytes, name: str | None = None) -> tuple[np.ndarray, int]:
    """Decode an audio file (a path, or the file's bytes) to (float32 mono waveform, sampling rate).

    ``name`` is what error messages call the input (default: the path; for bytes,
    ``"<bytes>"``); its extension also tells a headerless ``.au`` (raw 8 kHz mu-law)
    from a broken file. Multi-channel audio is mixed to mono by the mean over
    channels. Every problem is a one-line :class:`ShiftlabError` naming the file:
    missing file, zero-byte file, a WAV cut off before the end of the audio data its
    header declares, unreadable or corrupt data, no samples, NaN or infinite samples.
    """
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        data = bytes(path_or_bytes)
        where = name or "<bytes>"
        if not data:
            raise ShiftlabError(f"{where}: empty file (0 bytes)")
        source = io.BytesIO(data)
        suffix = Path(name).suffix.lower() if name else ""
        head, size = data[:_WAV_HEAD], len(data)
    else:
        path = Path(os.fspath(path_or_bytes))
        where = name or str(path)
        if not path.exists():
            raise ShiftlabError(f"{where}: file not found")
        if not path.is_file():
            raise ShiftlabError(f"{where}: not a file")
        if path.stat().st_size == 0:
            raise ShiftlabError(f"{where}: empty file (0 bytes)")
        source = str(path)
        suffix = path.suffix.lower()
        head, size = _head(path), path.stat().st_size
    short = _wav_shortfall(head, size)
    if short:
        declared, held = short
        raise ShiftlabError(
            f"{where}: truncated WAV (its header declares {declared:,} bytes of audio data, the file holds {held:,})"
        )
    try:
        x, sr = sf.read(source, dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError / TypeError on bad data
        if suffix == ".au" and isinstance(source, io.BytesIO):
            try:  # headerless .au: raw 8 kHz mono mu-law (libsndfile's own rule for such files)
                source.seek(0)
                x, sr = sf.read(
                    source, dtype="float32", always_2d=True, format="RAW", subtype="ULAW", samplerate=8000, channels=1
                )
            except Exception:
                raise ShiftlabError(f"{where}: cannot read audio ({_reason(e)})") from None
        else:
            raise ShiftlabError(f"{where}: cannot read audio ({_reason(e)})") from None
    if x.shape[0] == 0:
        raise ShiftlabError(f"{where}: audio has no samples (zero length)")
    if sr <= 0:
        raise ShiftlabError(f"{where}: invalid sampling rate {sr}")
    x = x[:, 0] if x.shape[1] == 1 else x.mean(axis=1, dtype=np.float64).astype(np.float32)
    if not np.isfinite(x).all():
        raise ShiftlabError(f"{where}: audio contains NaN or infinite samples")
    return np.ascontiguousarray(x, dtype=np.float32), int(sr)


# --------------------------------------------------------------------------- DSP


def resample(x: np.ndarray, sr_from: int, sr_to: int) -> np.ndarray:
    """Resample a mono waveform with ``torchaudio.functional.resample`` (windowed sinc, deterministic).

    Output is float32 with ``ceil(len(x) * sr_to / sr_from)`` samples; the input is
    returned (as float32) when the rates are equal.
    """
    x = np.asarray(x, dtype=np.float32)
    sr_from, sr_to = int(sr_from), int(sr_to)
    if sr_from <= 0 or sr_to <= 0:
        raise ValueError(f"sampling rates must be positive, got {sr_from} -> {sr_to}")
    if sr_from == sr_to or len(x) == 0:
        return np.ascontiguousarray(x)
    import torch
    import torchaudio.functional as AF

    with torch.no_grad():
        y = AF.resample(torch.from_numpy(np.ascontiguousarray(x)), sr_from, sr_to)
    return np.ascontiguousarray(y.numpy(), dtype=np.float32)


def _box(e: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average of ``e`` over ``width`` samples (zeros outside), same length."""
    width = max(1, int(width))
    if width == 1:
        return e
    padded = np.concatenate([np.zeros(width // 2), e, np.zeros(width - 1 - width // 2)])
    c = np.concatenate([[0.0], np.cumsum(padded)])
    return (c[width:] - c[:-width]) / width


def energy_peak(x: np.ndarray, sampling_rate: int | None = None, n: int | None = None) -> int:
    """Index of the peak of the smoothed short-time energy used by :func:`fix_length`."""
    x = np.asarray(x, dtype=np.float64)
    if sampling_rate is not None:
        frame = round(FRAME_SECONDS * sampling_rate)
        smooth = round(SMOOTH_SECONDS * sampling_rate)
    else:  # no rate given: take n samples as one second
        base = n if n else len(x)
        frame, smooth = base // 40, base // 10
    # 25 ms frame energy, then a 100 ms triangular window (two 50 ms moving averages): a burst
    # shorter than the window gives one clear maximum at its centre, not a plateau
    env = _box(_box(_box(x * x, frame), smooth // 2), smooth - smooth // 2)
    peak = float(env.max()) if len(env) else 0.0
    if peak <= 0.0:
        return len(x) // 2
    return int(np.argmax(env))


def fix_length(x: np.ndarray, n: int, sampling_rate: int | None = None) -> np.ndarray:
    """Pad or trim a clip to exactly ``n`` samples around its energy peak.

    The rule:

    * **short clip** (``len(x) <= n``): the whole clip is kept and centred with zero
      padding, ``(n - len) // 2`` zeros on the left and the rest on the right (an odd
      remainder puts the extra zero on the right);
    * **long clip** (``len(x) > n``): the short-time energy is computed (squared
      samples averaged over 25 ms frames, then smoothed with a 100 ms triangular
      window, i.e. two 50 ms moving averages; all centred), and the ``n``-sample
      window centred on its peak is taken
      (``start = peak - n // 2``), shifted as little as needed to lie inside the clip
      (``0 <= start <= len - n``). The first maximum wins ties; an all-zero clip
      gives the middle window.

    Frame and smoothing lengths are in seconds of ``sampling_rate``; without it they
    are n / 40 and n / 10 samples (i.e. ``n`` is taken as one second). Output float32.
    """
    x = np.asarray(x, dtype=np.float32)
    n = int(n)
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    m = len(x)
    if m <= n:
        left = (n - m) // 2
        out = np.zeros(n, dtype=np.float32)
        out[left : left + m] = x
        return out
    peak = energy_peak(x, sampling_rate, n)
    start = min(max(peak - n // 2, 0), m - n)
    return np.ascontiguousarray(x[start : start + n])


def rms_db(x: np.ndarray) -> float:
    """RMS level in dBFS (full scale = 1.0); ``-inf`` for an empty or all-zero clip."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) == 0:
        return float("-inf")
    rms = float(np.sqrt(np.mean(x * x)))
    return 20.0 * np.log10(rms) if rms > 0 else float("-inf")


def is_silent(x: np.ndarray, threshold_db: float = -60.0) -> bool:
    """True when the clip's RMS level is below ``threshold_db`` dBFS (or the clip is empty)."""
    return rms_db(x) < threshold_db


MAX_DC_RATIO = 1.0  # check_noise_clip: largest |mean| / RMS of the rest of a usable noise clip


def check_noise_clip(x: np.ndarray, where: str, silence_db: float = -60.0, key: str = "silence_db") -> None:
    """One-line :class:`ShiftlabError` naming ``where`` unless ``x`` is usable as noise.

    Refused: a silent clip (RMS below ``silence_db`` dBFS); a constant (DC) clip, whose
    RMS without its mean is below ``silence_db``; and a clip whose DC offset (mean) is
    more than :data:`MAX_DC_RATIO` times the RMS of the rest (it would shift every mix it
    goes into): the offset would carry more power than the noise. Real recordings of the
    default data have |mean| / RMS below 0.003 (torcs-data engine loops: up to 0.45).
    """
    x = np.asarray(x, dtype=np.float64)
    if is_silent(x, silence_db):
        raise ShiftlabError(f"{where}: silent noise clip (RMS {rms_db(x):.1f} dBFS < {key} {silence_db:g})")
    mean = float(x.mean())
    ac = x - mean
    ac_db = rms_db(ac)
    if ac_db < silence_db:
        raise ShiftlabError(
            f"{where}: constant (DC) noise clip: every sample is about {mean:+.4g}, nothing else "
            f"(RMS without the offset {ac_db:.1f} dBFS < {key} {silence_db:g})"
        )
    ratio = abs(mean) / float(np.sqrt(np.mean(ac * ac)))
    if ratio > MAX_DC_RATIO:
        raise ShiftlabError(
            f"{where}: noise clip with a DC offset of {mean:+.4g}, {ratio:.2f} x the RMS of the rest "
            f"(at most {MAX_DC_RATIO:g}); subtract its mean first"
        )


def check_speech_clip(x: np.ndarray, sr: int, where: str, silence_db: float = -60.0, min_seconds: float = 0.05,
                      key: str = "prepare_speech") -> None:
    """One-line :class:`ShiftlabError` naming ``where`` unless ``x`` (at rate ``sr``) can be a spoken word.

    Refused: a clip shorter than ``min_seconds`` (a one-sample file, a file cut off after
    its header), a silent clip (RMS below ``silence_db`` dBFS) and a constant (DC) clip
    (RMS without its mean below ``silence_db``). Such clips would otherwise become
    labelled rows of near-silence after :func:`fix_length` pads them.
    """
    x = np.asarray(x, dtype=np.float64)
    seconds = len(x) / float(sr)
    if seconds < min_seconds:
        raise ShiftlabError(
            f"{where}: {len(x)} samples ({seconds * 1000:.1f} ms) is too short for a spoken word "
            f"({key}.min_seconds {min_seconds:g})"
        )
    if is_silent(x, silence_db):
        raise ShiftlabError(f"{where}: silent speech clip (RMS {rms_db(x):.1f} dBFS < {key}.silence_db {silence_db:g})")
    ac_db = rms_db(x - x.mean())
    if ac_db < silence_db:
        raise ShiftlabError(
            f"{where}: constant (DC) speech clip: RMS without its offset {ac_db:.1f} dBFS < {key}.silence_db {silence_db:g}"
        )


def to_mono_rate(x: np.ndarray, sr: int, sampling_rate: int, n_samples: int | None = None) -> np.ndarray:
    """Resample to ``sampling_rate`` and, if ``n_samples`` is given, :func:`fix_length` to it."""
    y = resample(x, sr, sampling_rate)
    return fix_length(y, n_samples, sampling_rate) if n_samples else y


# --------------------------------------------------------------------------- files and threads


def audio_files(folder: Path) -> list[Path]:
    """Audio files under ``folder`` (recursive, sorted by relative posix path; hidden entries skipped)."""
    return folders.files(folder, AUDIO_EXTENSIONS)


def map_ordered(fn: Callable, items: Sequence, workers: int = 0, desc: str = "", unit: str = "clip") -> list:
    """``[fn(x) for x in items]`` in a thread pool (workers=0 -> os.cpu_count()), results in input order."""
    from tqdm.auto import tqdm

    items = list(items)
    workers = int(workers) or (os.cpu_count() or 1)
    workers = max(1, min(workers, len(items) or 1))
    out = []
    bar = tqdm(total=len(items), desc=desc, unit=unit, disable=len(items) < _PROGRESS_MIN or None, leave=False)
    ex = ThreadPoolExecutor(workers)
    try:
        for r in ex.map(fn, items):
            out.append(r)
            bar.update()
    finally:
        ex.shutdown(wait=True, cancel_futures=True)
        bar.close()
    return out


# --------------------------------------------------------------------------- dataset


def build_dataset(rows: Iterable[dict], label_names: Sequence[str]) -> hfds.Dataset:
    """An audio-schema Dataset from row dicts.

    Each row has ``id``, ``audio`` (1-D float32), ``sampling_rate``, ``label`` (a name
    in ``label_names``), ``domain``, ``group``, ``recipe`` and optionally ``origin``
    (default ``real``) and ``parent`` (default "").
    """
    rows = list(rows)
    names = list(label_names)
    index = {n: i for i, n in enumerate(names)}
    feats = schema.audio_features(names)
    waves = [np.ascontiguousarray(r["audio"], dtype=np.float32).reshape(-1) for r in rows]
    lengths = np.array([len(w) for w in waves], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    flat = np.concatenate(waves) if waves else np.zeros(0, np.float32)
    if offsets[-1] >= 2**31:
        raise ShiftlabError(f"{offsets[-1]:,} audio samples in one dataset: more than an Arrow list column holds (2**31)")
    audio = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(flat, pa.float32()))
    try:
        labels = [index[r["label"]] for r in rows]
    except KeyError as e:
        raise ShiftlabError(f"label {e.args[0]!r} is not one of the label names {names}") from None
    columns = {
        "id": pa.array([r["id"] for r in rows], pa.string()),
        "audio": audio,
        "sampling_rate": pa.array([int(r["sampling_rate"]) for r in rows], pa.int32()),
        "label": pa.array(labels, pa.int64()),
        "domain": pa.array([r["domain"] for r in rows], pa.string()),
        "origin": pa.array([r.get("origin", "real") for r in rows], pa.string()),
        "group": pa.array([r["group"] for r in rows], pa.string()),
        "parent": pa.array([r.get("parent", "") for r in rows], pa.string()),
        "recipe": pa.array([r["recipe"] for r in rows], pa.string()),
    }
    table = pa.table({k: columns[k] for k in feats})
    # a content hash as fingerprint (datasets would otherwise pickle the whole table to hash it):
    # xxh3 (datasets' own hash library; ~20x blake2b's speed) over the sample buffer in place
    h = xxhash.xxh3_64()
    h.update(repr(names).encode())
    h.update(memoryview(flat))
    h.update(memoryview(lengths))
    for k in ("id", "sampling_rate", "label", "domain", "origin", "group", "parent", "recipe"):
        h.update("\x00".join(map(str, columns[k].to_pylist())).encode())
    table = table.cast(feats.arrow_schema)
    return hfds.Dataset(hfds.table.InMemoryTable(table), info=hfds.DatasetInfo(features=feats), fingerprint=h.hexdigest())
