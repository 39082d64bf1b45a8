"""Split datasets as in-memory tensors, row selection, seeded batching (single process or DDP).

* :func:`load_split` / :func:`load_splits` read a split ``Dataset`` into tensors in one
  pass over its Arrow table (no per-row Python for images: :func:`schema.chw_batch`;
  audio: one slice per row of the flat value buffer): images uint8 ``(N, C, H, W)``, audio
  float32 ``(N, L)`` padded or cropped to one length ``L`` (centred, as the prepare stage
  centres speech), labels, weights and the metadata columns.
* ``rows`` selects training rows (train and train_dev only; dev and test are always
  complete): ``all`` every row; ``real`` (alias ``no_synthetic``) drops synthetic rows: the
  "without synthesis" baseline; ``target`` keeps only real target rows (MLY ch. 37:
  train on the data you care about only).
* Each row keeps its *sample index*, its position in the split dataset before selection;
  all per-sample randomness (augmentation, on-the-fly synthesis) derives from (seed,
  sample index, epoch, purpose), so the same row gets the same augmentation whatever the
  selection, batch composition, batch size or number of processes.
* :class:`Loader` yields batches of a seeded per-epoch permutation (no global RNG):
  ``numpy.random.Generator`` from :func:`shiftlab.seeding.sample_rng` ``(seed, epoch,
  "trainer", "permutation")``. Under DDP every rank draws the same permutation, cuts it into
  the same *global* batches of ``batch_size`` rows, and takes its contiguous share of each
  (``numpy.array_split``), like ``DistributedSampler`` but batch-aligned so the gradient
  equals single-process training on the global batch (see :mod:`shiftlab.train.loss`).
  A rank whose share of a short last batch is empty gets one row with weight 0.
* On CUDA the data stay pinned on the host (or the whole split moves to the GPU once when
  it is small, ``data_on_device``) and batches are copied with ``non_blocking=True``.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Sequence

import datasets as hfds
import numpy as np
import torch

from shiftlab import seeding
from shiftlab.datasets import schema
from shiftlab.errors import ShiftlabError

__all__ = [
    "ROWS", "SplitData", "Batch", "Loader", "row_mask", "load_split", "load_splits",
    "epoch_permutation", "stream_rows", "paired_rows", "uniforms", "fit_length",
]

#: accepted values of the ``rows`` option
ROWS = ("all", "real", "no_synthetic", "target")
#: splits that ``rows`` filters (dev and test are real target rows and always complete)
TRAINING_SPLITS = ("train", "train_dev")


@dataclasses.dataclass
class SplitData:
    """One split in memory. ``x``: uint8 (N, C, H, W) images or float32 (N, L) audio."""

    name: str
    modality: str
    x: torch.Tensor
    y: torch.Tensor  # int64 (N,)
    w: torch.Tensor  # float32 (N,)
    index: np.ndarray  # int64 (N,): sample index = row position in the split dataset
    id: np.ndarray
    domain: np.ndarray
    origin: np.ndarray
    group: np.ndarray
    label_names: list[str]
    sampling_rate: int | None = None

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def take(self, rows: np.ndarray) -> "SplitData":
        """The rows at positions ``rows`` (or a boolean mask) of this SplitData."""
        rows = np.asarray(rows)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        t = torch.from_numpy(rows.astype(np.int64))
        return dataclasses.replace(
            self, x=self.x.index_select(0, t), y=self.y[t], w=self.w[t], index=self.index[rows],
            id=self.id[rows], domain=self.domain[rows], origin=self.origin[rows], group=self.group[rows],
        )

    def meta(self) -> dict[str, np.ndarray]:
        return {"id": self.id, "domain": self.domain, "origin": self.origin, "group": self.group}


# --------------------------------------------------------------------------- loading


def row_mask(domain: np.ndarray, origin: np.ndarray, rows: str, where: str = "rows") -> np.ndarray:
    """Boolean mask of the rows kept by the ``rows`` option (see module docstring)."""
    if rows not in ROWS:
        raise ShiftlabError(f"{where}: must be one of {', '.join(ROWS)}, got {rows!r}")
    domain = np.asarray(domain).astype(str)
    origin = np.asarray(origin).astype(str)
    if rows == "all":
        return np.ones(len(domain), dtype=bool)
    real = origin == "real"
    if rows in ("real", "no_synthetic"):
        return real
    return real & (domain == "target")


def _columns(ds: hfds.Dataset, names: Sequence[str]) -> dict[str, np.ndarray]:
    table = ds.select_columns(list(names)).with_format("arrow")[:]
    return {n: table.column(n).to_numpy(zero_copy_only=False) for n in names}


def fit_length(chunks: Sequence[np.ndarray], length: int) -> np.ndarray:
    """Float32 (N, length): each clip centred with zero padding, or centre-cropped."""
    out = np.zeros((len(chunks), int(length)), dtype=np.float32)
    for i, a in enumerate(chunks):
        n = len(a)
        if n <= length:
            s = (length - n) // 2
            out[i, s:s + n] = a
        else:
            s = (n - length) // 2
            out[i] = a[s:s + length]
    return out


def _audio(ds: hfds.Dataset, where: str) -> tuple[list[np.ndarray], int]:
    table = ds.select_columns(["audio", "sampling_rate"]).with_format("arrow")[:]
    col = table.column("audio").combine_chunks()
    offsets = np.asarray(col.offsets.to_numpy(), dtype=np.int64)
    values = np.asarray(col.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
    base = int(offsets[0]) if len(offsets) else 0
    chunks = [values[offsets[i] - base:offsets[i + 1] - base] for i in range(len(offsets) - 1)]
    rates = np.unique(table.column("sampling_rate").to_numpy(zero_copy_only=False))
    if len(rates) > 1:
        raise ShiftlabError(f"{where}: rows have different sampling rates ({', '.join(map(str, rates))}); resample first")
    return chunks, int(rates[0]) if len(rates) else 0


def load_split(ds: hfds.Dataset, name: str = "split", rows: str = "all", audio_length: int | None = None,
               label_names: Sequence[str] | None = None) -> SplitData:
    """Read one split into a :class:`SplitData`, keeping the rows selected by ``rows``.

    ``audio_length``: samples per clip (audio only); ``None`` = the longest selected clip.
    ``label_names``: expected label names (a mismatch is an error, e.g. train vs dev).
    A missing ``weight`` column means weight 1 for every row.
    """
    where = f"split {name}"
    kind = schema.modality(ds)
    need = ["label", "domain", "origin", "group", "id"]
    missing = [c for c in need if c not in ds.column_names]
    if missing:
        raise ShiftlabError(f"{where}: missing column(s) {', '.join(missing)}")
    names = schema.label_names(ds)
    if label_names is not None and list(label_names) != list(names):
        raise ShiftlabError(f"{where}: label names {names} differ from the train split's {list(label_names)}")
    cols = _columns(ds, need + (["weight"] if "weight" in ds.column_names else []))
    mask = row_mask(cols["domain"], cols["origin"], rows, "rows")
    keep = np.flatnonzero(mask)
    sub = ds if len(keep) == len(ds) else ds.select(keep, keep_in_memory=True)
    y = np.asarray(cols["label"], dtype=np.int64)[keep]
    w = (np.asarray(cols["weight"], dtype=np.float32)[keep] if "weight" in cols
         else np.ones(len(keep), dtype=np.float32))
    if len(w) and not np.all(np.isfinite(w) & (w >= 0)):
        raise ShiftlabError(f"{where}: column weight has negative or non-finite values")
    if len(y) and (y.min() < 0 or y.max() >= len(names)):
        raise ShiftlabError(f"{where}: column label has values outside 0..{len(names) - 1}")
    rate = None
    if kind == "image":
        if len(keep):
            a = schema.chw_batch(sub)  # may be a read-only view of the Arrow buffer: copy once
            x = torch.from_numpy(np.array(a, copy=True) if not a.flags.writeable else np.ascontiguousarray(a))
        else:
            x = torch.zeros((0, *ds.features["image"].shape), dtype=torch.uint8)
    else:
        chunks, rate = _audio(sub, where)
        length = int(audio_length) if audio_length is not None else max((len(c) for c in chunks), default=1)
        x = torch.from_numpy(fit_length(chunks, max(1, length)))
    return SplitData(
        name=name, modality=kind, x=x, y=torch.from_numpy(y), w=torch.from_numpy(w),
        index=keep.astype(np.int64),
        id=np.asarray(cols["id"]).astype(str)[keep], domain=np.asarray(cols["domain"]).astype(str)[keep],
        origin=np.asarray(cols["origin"]).astype(str)[keep], group=np.asarray(cols["group"]).astype(str)[keep],
        label_names=list(names), sampling_rate=rate,
    )


def load_splits(splits: hfds.DatasetDict, names: Sequence[str] = schema.SPLITS, rows: str = "all",
                audio_length: int | None = None) -> dict[str, SplitData]:
    """Load several splits; ``rows`` filters train/train_dev only; one audio length for all
    (``audio_length`` or the longest selected train clip); label names must agree."""
    if "train" not in splits:
        raise ShiftlabError(f"splits: no train split (have: {', '.join(splits) or 'none'})")
    train = load_split(splits["train"], "train", rows, audio_length)
    if len(train) == 0:
        raise ShiftlabError(f"split train: no rows left after rows={rows}")
    length = train.x.shape[1] if train.modality == "audio" else None
    out = {}
    for n in names:
        if n not in splits:
            continue
        if n == "train":
            out[n] = train
            continue
        d = load_split(splits[n], n, rows if n in TRAINING_SPLITS else "all", length, train.label_names)
        if d.modality != train.modality:
            raise ShiftlabError(f"split {n}: holds {d.modality} but train holds {train.modality}")
        if d.modality == "image" and d.x.shape[1:] != train.x.shape[1:]:
            raise ShiftlabError(f"split {n}: images are {tuple(d.x.shape[1:])}, train's are {tuple(train.x.shape[1:])}")
        if d.modality == "audio" and len(d) and d.sampling_rate != train.sampling_rate:
            raise ShiftlabError(f"split {n}: sampling rate {d.sampling_rate} differs from train's {train.sampling_rate}")
        out[n] = d
    return out


# --------------------------------------------------------------------------- randomness


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The seeded order of ``n`` rows in ``epoch`` (same on every rank)."""
    return seeding.sample_rng(seed, epoch, "trainer", "permutation").permutation(n)


def stream_rows(n: int, seed: int, epoch: int, epoch_rows: int) -> np.ndarray:
    """The rows of ``epoch`` when every epoch draws ``epoch_rows`` rows (same on every rank).

    The epochs cut one endless stream: seeded permutations of the ``n`` rows laid end to end
    (pass ``k`` is ``sample_rng(seed, k, "trainer", "stream")``), epoch ``e`` takes items
    ``[e * epoch_rows, (e + 1) * epoch_rows)``. So no row repeats before every row was seen,
    and an epoch shorter than the data still covers all rows over the following epochs.
    """
    if n == 0:
        return np.zeros(0, np.int64)
    lo, hi = epoch * epoch_rows, (epoch + 1) * epoch_rows
    parts = [seeding.sample_rng(seed, k, "trainer", "stream").permutation(n) for k in range(lo // n, -(-hi // n))]
    cat = np.concatenate(parts)
    start = lo - (lo // n) * n
    return cat[start:start + epoch_rows]


def _stream_slice(n: int, seed: int, start: int, count: int, tag: str) -> np.ndarray:
    """Items ``[start, start + count)`` of the endless stream of seeded permutations of ``n``
    rows (pass ``k`` is ``sample_rng(seed, k, "trainer", tag)``); tag "stream" is the stream
    of :func:`stream_rows`."""
    if n == 0 or count == 0:
        return np.zeros(0, np.int64)
    lo, hi = start, start + count
    parts = [seeding.sample_rng(seed, k, "trainer", tag).permutation(n) for k in range(lo // n, -(-hi // n))]
    cat = np.concatenate(parts)
    off = lo - (lo // n) * n
    return cat[off:off + count]


def paired_rows(real: np.ndarray, synthetic: np.ndarray, seed: int, epoch: int,
                epoch_rows: int | None) -> np.ndarray:
    """Seed-paired row order of one epoch over a pool of real and synthetic rows.

    ``real`` and ``synthetic`` are the row indices (in split order) that training may draw;
    ``epoch_rows`` None means one epoch = as many draws as the pool holds. Built so that
    variants trained with the same seed draw their *real* rows in the same order:

    * with no synthetic rows this is exactly the row order of a real-only run
      (``real[epoch_permutation(...)]`` when ``epoch_rows`` is None, else
      ``real[stream_rows(...)]``), so a real-only variant and "all rows but the synthetic
      ones at weight 0" draw the same rows in the same order;
    * with synthetic rows, each draw position ``t`` of the endless stream is synthetic with
      probability ``n_syn / (n_real + n_syn)`` (a counter-based uniform of (seed, t), so
      independent of the epoch length split), real draws take the next items of the *same*
      real stream a real-only run with this seed takes (its seeded permutations laid end to
      end), synthetic draws the next items of their own stream. So the real rows a synth
      variant sees are, in order, a prefix of the real-only variant's sequence: seed-to-seed
      noise of the row order cancels in the seed-paired difference (and so does the initial
      model, which depends on the seed only).
    """
    real = np.asarray(real, np.int64)
    synthetic = np.asarray(synthetic, np.int64)
    nr, ns = len(real), len(synthetic)
    if ns == 0:
        if epoch_rows is None:
            return real[epoch_permutation(nr, seed, epoch)]
        return real[stream_rows(nr, seed, epoch, epoch_rows)]
    per = nr + ns if epoch_rows is None else int(epoch_rows)
    lo, hi = epoch * per, (epoch + 1) * per
    is_syn = uniforms(seed, 0, np.arange(hi, dtype=np.int64), "pair/mix")[:, 0] < ns / (nr + ns)
    if nr == 0:
        is_syn[:] = True
    r0, s0 = int((~is_syn[:lo]).sum()), int(is_syn[:lo].sum())
    mine = is_syn[lo:hi]
    out = np.empty(per, np.int64)
    # the real-only run's stream: its seeded permutations end to end (epoch_permutation's per epoch
    # when epochs are whole passes, stream_rows' otherwise)
    tag = "permutation" if epoch_rows is None else "stream"
    out[~mine] = real[_stream_slice(nr, seed, r0, int((~mine).sum()), tag)]
    out[mine] = synthetic[_stream_slice(ns, seed, s0, int(mine.sum()), "stream/synthetic")]
    return out


_M1, _M2, _GOLD = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB), np.uint64(0x9E3779B97F4A7C15)


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser (bijective on uint64, good avalanche)."""
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def uniforms(seed: int, epoch: int, index: np.ndarray, purpose: str, k: int = 1) -> np.ndarray:
    """Float64 (len(index), k) uniforms in [0, 1) for the given sample indices.

    Counter-based: entry (i, j) depends only on (seed, epoch, index[i], purpose, j), via a
    key from :func:`shiftlab.seeding.sample_seed` and the splitmix64 mix; vectorised, so
    per-sample randomness costs no Python per row. Independent of batching and ranks.
    """
    key = np.uint64(seeding.sample_seed(seed, epoch, "trainer", purpose))
    idx = np.asarray(index, dtype=np.uint64).reshape(-1, 1)
    j = np.arange(k, dtype=np.uint64).reshape(1, -1)
    with np.errstate(over="ignore"):
        z = _mix(_mix(idx * _GOLD + key) + (j + np.uint64(1)) * _GOLD)
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


# --------------------------------------------------------------------------- batching


@dataclasses.dataclass
class Batch:
    """One step's rows on the device. ``denominator``: weight sum of the global batch."""

    x: torch.Tensor
    y: torch.Tensor
    w: torch.Tensor
    sample_index: np.ndarray
    rows: np.ndarray  # positions in the SplitData
    denominator: torch.Tensor  # float32 scalar on the device


class Loader:
    """Batches of one :class:`SplitData` on ``device``.

    ``shuffle=True`` (training): the epoch's seeded row order (:func:`paired_rows`: rows of
    loss weight 0 are never drawn; real rows follow the real-only order of the same seed),
    cut into global batches of ``batch_size`` rows (the last one shorter unless
    ``drop_last``; merged into the one before when it would leave a rank fewer than 2 rows,
    which BatchNorm cannot train on); this rank takes its ``numpy.array_split`` share of each. ``shuffle=False`` (evaluation): the rank's
    contiguous ``array_split`` share of all rows, in order, in batches of ``batch_size``.
    """

    def __init__(self, data: SplitData, batch_size: int, device: torch.device | str = "cpu", *,
                 shuffle: bool = False, seed: int = 0, rank: int = 0, world_size: int = 1,
                 drop_last: bool = False, data_on_device: str | bool = "auto", max_device_bytes: int = 2 << 30,
                 epoch_rows: int | None = None):
        if batch_size < 1:
            raise ShiftlabError(f"batch_size: must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ShiftlabError(f"rank {rank} is outside world size {world_size}")
        self.data, self.batch_size, self.device = data, int(batch_size), torch.device(device)
        self.shuffle, self.seed, self.rank, self.world = shuffle, int(seed), int(rank), int(world_size)
        self.drop_last = bool(drop_last)
        if epoch_rows is not None and (isinstance(epoch_rows, bool) or int(epoch_rows) < 1):
            raise ShiftlabError(f"epoch_rows: must be a positive integer or null, got {epoch_rows!r}")
        self.epoch_rows = None if epoch_rows is None or not shuffle else int(epoch_rows)
        # the rows training draws: weight-0 rows are dropped before batching (so beta = 0 is
        # exactly "without those rows": no BatchNorm statistics, no optimizer step from them)
        w_np = data.w.numpy() if data.w.device.type == "cpu" else data.w.cpu().numpy()
        active = w_np > 0
        syn = np.asarray(data.origin).astype(str) == "synthetic" if len(data) else np.zeros(0, bool)
        self._real_pool = np.flatnonzero(active & ~syn)
        self._syn_pool = np.flatnonzero(active & syn)
        self._plain = bool(active.all()) and not syn.any()  # the historical order: a permutation of all rows
        if shuffle and len(data) and not active.any():
            raise ShiftlabError(f"split {data.name}: every row has loss weight 0, nothing to train on")
        cuda = self.device.type == "cuda"
        nbytes = data.x.numel() * data.x.element_size()
        on_dev = cuda and (data_on_device is True or (data_on_device == "auto" and nbytes <= max_device_bytes))
        self._x = data.x.to(self.device) if on_dev else data.x
        self._y, self._w = data.y.to(self.device), data.w.to(self.device)
        self._pinned = cuda and not on_dev
        if self._pinned and not self._x.is_pinned():
            self._x = self._x.pin_memory()
        self._bufs: list = [None, None]
        self._events: list = [None, None]
        self._turn = 0

    def _epoch_len(self) -> int:
        if self.epoch_rows is not None:
            return self.epoch_rows
        return len(self._real_pool) + len(self._syn_pool)

    def _merge_tail(self, n: int) -> bool:
        """True when the epoch's last global batch is merged into the one before: it would
        give some rank fewer than 2 rows (BatchNorm cannot normalise one row per channel)."""
        tail = n % self.batch_size
        return (self.shuffle and not self.drop_last and n > self.batch_size and 0 < tail < 2 * self.world)

    def __len__(self) -> int:
        if not self.shuffle:
            n = len(np.array_split(np.arange(len(self.data)), self.world)[self.rank])
            return -(-n // self.batch_size)
        n = self._epoch_len()
        if self.drop_last:
            return n // self.batch_size
        return -(-n // self.batch_size) - int(self._merge_tail(n))

    def _plan(self, epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray, torch.Tensor]]:
        """(local rows, weight multiplier or None, global-batch weight sum) per step."""
        n = len(self.data)
        w_cpu = self.data.w
        if not self.shuffle:
            mine = np.array_split(np.arange(n), self.world)[self.rank]
            for s in range(0, len(mine), self.batch_size):
                rows = mine[s:s + self.batch_size]
                yield rows, None, w_cpu[torch.from_numpy(rows)].sum()
            return
        if self._plain:
            perm = epoch_permutation(n, self.seed, epoch) if self.epoch_rows is None else \
                stream_rows(n, self.seed, epoch, self.epoch_rows)
        else:
            perm = paired_rows(self._real_pool, self._syn_pool, self.seed, epoch, self.epoch_rows)
        starts = list(range(0, len(perm), self.batch_size))
        ends = starts[1:] + [len(perm)]
        if self._merge_tail(len(perm)):
            starts, ends = starts[:-1], ends[:-2] + [len(perm)]
        for s, e in zip(starts, ends):
            glob = perm[s:e]
            if len(glob) < self.batch_size and self.drop_last:
                return
            den = w_cpu[torch.from_numpy(glob)].sum()
            mine = np.array_split(glob, self.world)[self.rank]
            if len(mine) == 0:  # short last batch, fewer rows than ranks: a weight-0 stand-in
                yield glob[:1], np.zeros(1, np.float32), den
            else:
                yield mine, None, den

    def _fetch(self, rows: np.ndarray) -> torch.Tensor:
        idx = torch.from_numpy(rows.astype(np.int64))
        if not self._pinned:
            return self._x.index_select(0, idx.to(self._x.device))
        # gather into one of two pinned buffers, copy asynchronously; wait before reusing a buffer
        k = self._turn
        self._turn ^= 1
        shape = (len(rows), *self._x.shape[1:])
        buf = self._bufs[k]
        if self._events[k] is not None:
            self._events[k].synchronize()
        if buf is None or buf.shape[0] < len(rows):
            buf = torch.empty((self.batch_size, *self._x.shape[1:]), dtype=self._x.dtype).pin_memory()
            self._bufs[k] = buf
        view = buf[: len(rows)]
        torch.index_select(self._x, 0, idx, out=view)
        out = view.to(self.device, non_blocking=True)
        ev = torch.cuda.Event()
        ev.record()
        self._events[k] = ev
        assert out.shape == shape
        return out

    def epoch(self, epoch: int = 0) -> Iterator[Batch]:
        for rows, mult, den in self._plan(epoch):
            t = torch.from_numpy(rows.astype(np.int64)).to(self.device)
            w = self._w.index_select(0, t)
            if mult is not None:
                w = w * torch.from_numpy(mult).to(self.device)
            yield Batch(
                x=self._fetch(rows), y=self._y.index_select(0, t), w=w,
                sample_index=self.data.index[rows], rows=rows,
                denominator=den.to(self.device, non_blocking=True),
            )
