"""Noise banks and the reuse-balancing draw policy.

A **noise bank** is a ``Dataset`` in the audio schema (:mod:`shiftlab.datasets.schema`)
with one row per noise clip: ``id`` (``openttd/modern_bus_start``, ``virtual/car007``,
``folder/car_03/take1``, ``torcs/f360/drive2``), ``audio`` (float32 mono),
``sampling_rate``, ``label`` (the noise kind), ``domain`` ``source``, ``origin`` ``real``
for recordings (a TORCS drive too: a real recording, re-pitched) and ``synthetic`` for
virtual cars, ``group`` = the clip's *physical source* (the recording, the folder
sub-directory, the virtual car, the TORCS car), ``parent`` "" and ``recipe`` (JSON: where
the clip came from; for a virtual car the whole car record and its seeds, for a TORCS
drive the recording and the whole drive recipe, so the clip can be re-rendered).
Builders: :func:`from_noise` (the prepared noise dataset, filtered by domain and id
patterns), :func:`from_folder`, :func:`from_arrays`, :func:`from_cars`,
:func:`from_torcs` (real TORCS engine loops driven through seeded RPM trajectories,
:mod:`shiftlab.mixing.rpm`), :func:`combine`, and :func:`build` from the
``synth_mix.bank`` params section (:data:`DEFAULTS`). Every builder ends with
:func:`validate`. :func:`names` resolves, without rendering anything, which recordings
and groups a bank section draws from (``shiftlab prepare target`` refuses a target
recording or car among them).

Validation (:func:`validate`, one-line :class:`ShiftlabError` naming the clip): an empty
bank, a zero-length clip, NaN or infinite samples, a silent clip (RMS below
``silence_db`` dBFS), a sampling rate that differs from the speech's, duplicate ids;
noise files (:func:`from_folder`) are also refused when constant (DC) or when their DC
offset is large against the rest of the clip.
Arrays given to :func:`from_arrays` must be 1-D; a 2-D (multi-channel) array is an error
unless ``downmix=True``, which averages over the channel axis (the axis of length <= 8;
an array where that is ambiguous is still an error) -- the same mean-over-channels rule
as :func:`shiftlab.datasets.audio.read_audio`.

The draw policy (:func:`plan_draws`)
    Speech clips of ``T`` samples need noise segments of ``T`` samples. Each clip of
    length ``L`` is cut into **candidate segments**: ``L // T`` back-to-back segments when
    ``L >= T`` (starting at ``k * T``), or one *looped* segment when ``L < T`` (the clip
    is read circularly: sample ``i`` of the segment is ``clip[(offset + i) % L]``; a clip
    is looped only when it is shorter than the speech). Segments whose every possible
    window (every offset they can take, below) is quieter than ``min_segment_db`` dBFS are
    never candidates (no silent noise under speech).

    Draws are made in **passes**. A pass visits the candidate segments in a seeded random
    order and takes each at most once (so no segment is used twice within a pass); every
    pass also draws one random **offset shift** per clip: ``u`` uniform in
    ``[0, L - (L // T) * T]`` added to every segment start of that clip (the segments stay
    disjoint within the pass; a looped clip's offset is a random phase in ``[0, L)``). A
    **per-source cap** limits how many draws one group (physical source) may get in
    total: ``cap = max(ceil(max_source_share * n), ceil(n / G))`` for ``n`` draws from ``G``
    groups -- the requested share where the bank allows it, else the most even split it
    allows (one group can never have less than a ``1/G`` share). A pass skips the segments
    of groups that reached the cap; passes continue until ``n`` draws are made.
    Uniform-with-replacement (what audiomentations and most mixers do) would instead give
    a 30 s recording 30 times the use of a 1 s one and repeat segments at random.

    The result (:class:`Plan`) lists per draw: bank row (``clip``), ``offset`` (samples,
    into the clip), ``loops`` (how many times the read wrapped past the clip's end:
    ``(offset + T - 1) // L``), ``segment`` (candidate index) and ``pass``. A plan is a
    pure function of (bank, T, n, the generator's seed, cap, threshold).
"""

from __future__ import annotations

import fnmatch
import hashlib
import math
from dataclasses import dataclass
from typing import Any, Collection, Mapping, Sequence

import numpy as np

from shiftlab import paramschema, seeding, store
from shiftlab.errors import ShiftlabError

__all__ = [
    "DEFAULTS",
    "SOURCES",
    "check_cfg",
    "build",
    "from_noise",
    "from_folder",
    "from_arrays",
    "from_cars",
    "from_torcs",
    "Names",
    "names",
    "combine",
    "take",
    "validate",
    "audio_arrays",
    "BankArrays",
    "arrays",
    "Segments",
    "segments",
    "Plan",
    "plan_draws",
]

SILENCE_DB = paramschema.SILENCE_DB
MAX_CHANNELS = 8
#: The kinds of noise a bank can hold (``sources`` key).
SOURCES = paramschema.SOURCES
TORCS_DIR = "/usr/share/games/torcs/data/sound"
_KEY = "synth_mix.bank"

#: The ``synth_mix.bank`` params section: the fields of :class:`shiftlab.paramschema.Bank` (every knob's
#: type, range and default, with what it does).
DEFAULTS: dict[str, Any] = paramschema.defaults(paramschema.Bank)


# --------------------------------------------------------------------------- config


def check_cfg(cfg: Mapping[str, Any] | None, where: str = _KEY) -> dict[str, Any]:
    """Merge ``cfg`` over :data:`DEFAULTS` and validate every key with :class:`shiftlab.paramschema.Bank`
    (errors name ``where.key``); ``cars`` and ``drive`` by their modules' ``check_ranges`` (the user's short
    overrides are kept)."""
    from shiftlab.mixing import cars, rpm

    c = paramschema.merge(paramschema.Bank, cfg, where, DEFAULTS)
    cars.check_ranges(c["cars"], f"{where}.cars")
    c["cars"] = dict(c["cars"])
    rpm.check_ranges(c["drive"], f"{where}.drive")
    c["drive"] = dict(c["drive"])
    return c


# --------------------------------------------------------------------------- arrays


def audio_arrays(ds) -> tuple[np.ndarray, np.ndarray]:
    """The ``audio`` column as (flat float32 samples, int64 offsets of length rows + 1).

    Row ``i`` is ``flat[offsets[i]:offsets[i + 1]]``. Reads Arrow buffers directly (no
    per-row Python lists), honouring a ``select`` indices mapping.
    """
    if len(ds) == 0:
        return np.zeros(0, np.float32), np.zeros(1, np.int64)
    col = ds.select_columns(["audio"]).with_format("arrow")[:].column("audio")
    arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    offs = np.asarray(arr.offsets.to_numpy(zero_copy_only=False), dtype=np.int64)
    values = arr.values.to_numpy(zero_copy_only=False)
    flat = np.ascontiguousarray(values[offs[0] : offs[-1]], dtype=np.float32)
    return flat, offs - offs[0]


def _meta(ds, names: Sequence[str]) -> dict[str, np.ndarray]:
    table = ds.select_columns(list(names)).with_format("arrow")[:]
    return {n: table.column(n).to_numpy(zero_copy_only=False) for n in names}


@dataclass(frozen=True)
class BankArrays:
    """A bank in memory: ``flat`` samples, per-clip ``starts`` / ``lengths``, ids, groups.

    ``group_index[i]`` numbers the groups in sorted-name order (``group_names``).
    """

    ids: tuple[str, ...]
    groups: tuple[str, ...]
    group_names: tuple[str, ...]
    group_index: np.ndarray
    starts: np.ndarray
    lengths: np.ndarray
    flat: np.ndarray
    sampling_rate: int

    def clip(self, i: int) -> np.ndarray:
        s = int(self.starts[i])
        return self.flat[s : s + int(self.lengths[i])]

    def index(self, clip_id: str) -> int:
        try:
            return self._lookup()[clip_id]
        except KeyError:
            raise ShiftlabError(f"noise bank: no clip with id {clip_id!r}") from None

    def _lookup(self) -> dict[str, int]:
        d = self.__dict__.get("_ids_map")
        if d is None:
            d = {k: i for i, k in enumerate(self.ids)}
            object.__setattr__(self, "_ids_map", d)
        return d

    def padded(self) -> np.ndarray:
        """(clips, max length) float32, zero padded."""
        out = np.zeros((len(self.ids), int(self.lengths.max())), dtype=np.float32)
        for i in range(len(self.ids)):
            out[i, : self.lengths[i]] = self.clip(i)
        return out


def arrays(bank) -> BankArrays:
    """:class:`BankArrays` of a validated bank ``Dataset`` (or a BankArrays, returned as is)."""
    if isinstance(bank, BankArrays):
        return bank
    validate(bank)
    flat, offs = audio_arrays(bank)
    m = _meta(bank, ("id", "group", "sampling_rate"))
    groups = tuple(str(g) for g in m["group"])
    names, gidx = np.unique(np.array(groups, dtype=object).astype(str), return_inverse=True)
    return BankArrays(
        ids=tuple(str(i) for i in m["id"]),
        groups=groups,
        group_names=tuple(str(n) for n in names),
        group_index=gidx.astype(np.int64),
        starts=offs[:-1].copy(),
        lengths=np.diff(offs),
        flat=flat,
        sampling_rate=int(m["sampling_rate"][0]),
    )


# --------------------------------------------------------------------------- validation


def _rms_db(x: np.ndarray) -> float:
    from shiftlab.datasets import audio

    return audio.rms_db(x)


def validate(bank, sampling_rate: int | None = None, silence_db: float = SILENCE_DB, where: str = "noise bank"):
    """Raise a one-line ShiftlabError unless ``bank`` is a usable noise bank; returns ``bank``.

    Checked: audio-schema columns, at least one clip, unique ids, one sampling rate for
    all clips (equal to ``sampling_rate`` when given), no zero-length clip, only finite
    samples, no clip quieter than ``silence_db`` dBFS. (Constant or DC-shifted clips
    are refused when read from files: :func:`from_folder`, ``shiftlab prepare noise``.)
    """
    from shiftlab.datasets import schema

    if bank is None or len(bank) == 0:
        raise ShiftlabError(f"{where}: empty (no noise clips); check the bank's sources and recordings")
    missing = [c for c in schema.AUDIO_COLUMNS if c not in bank.column_names]
    if missing:
        raise ShiftlabError(f"{where}: missing column(s) {', '.join(missing)} (not an audio-schema dataset)")
    m = _meta(bank, ("id", "sampling_rate"))
    ids = [str(i) for i in m["id"]]
    if len(set(ids)) != len(ids):
        dup = sorted(i for i in set(ids) if ids.count(i) > 1)[0]
        raise ShiftlabError(f"{where}: duplicate clip id {dup}")
    rates = np.asarray(m["sampling_rate"], dtype=np.int64)
    want = int(sampling_rate) if sampling_rate is not None else int(rates[0])
    bad = np.flatnonzero(rates != want)
    if len(bad):
        i = int(bad[0])
        raise ShiftlabError(
            f"{where}: clip {ids[i]} has sampling rate {rates[i]} Hz, the speech has {want} Hz "
            f"(resample it, e.g. with shiftlab.datasets.audio.resample)"
        )
    flat, offs = audio_arrays(bank)
    lengths = np.diff(offs)
    zero = np.flatnonzero(lengths == 0)
    if len(zero):
        raise ShiftlabError(f"{where}: clip {ids[int(zero[0])]} has no samples (zero length)")
    if not np.isfinite(flat).all():
        bad = int(np.searchsorted(offs, int(np.flatnonzero(~np.isfinite(flat))[0]), side="right") - 1)
        raise ShiftlabError(f"{where}: clip {ids[bad]} contains NaN or infinite samples")
    sq = np.add.reduceat(flat.astype(np.float64) ** 2, offs[:-1]) / lengths
    with np.errstate(divide="ignore"):
        db = 10.0 * np.log10(sq)
    quiet = np.flatnonzero(db < silence_db)
    if len(quiet):
        i = int(quiet[0])
        raise ShiftlabError(f"{where}: clip {ids[i]} is silent (RMS {db[i]:.1f} dBFS < silence_db {silence_db:g})")
    return bank


# --------------------------------------------------------------------------- builders


def _dataset(rows: list[dict], label_names: Sequence[str] | None = None):
    from shiftlab.datasets import audio

    names = sorted({r["label"] for r in rows}) if label_names is None else list(label_names)
    return audio.build_dataset(rows, names)


def from_noise(noise, recordings: Sequence[str] = ("*",), domain: str = "source", sampling_rate: int | None = None,
               silence_db: float = SILENCE_DB, where: str = _KEY):
    """The rows of a prepared noise dataset with ``domain`` whose id matches one of ``recordings``.

    Rows keep their columns (and id order). A pattern that matches no recording of that
    domain is an error naming it and listing the candidates.
    """
    rows = [r for r, _, _ in _match_noise(noise, recordings, domain, where)]
    return validate(take(noise, rows), sampling_rate, silence_db, f"noise bank ({domain} recordings)")


def _match_noise(noise, recordings: Sequence[str], domain: str, where: str) -> list[tuple[int, str, str]]:
    """(row, id, group) of the rows of ``noise`` with ``domain`` whose id matches a pattern (see :func:`from_noise`)."""
    from shiftlab.datasets import noise as noise_mod

    if domain not in ("source", "target"):
        raise ShiftlabError(f"from_noise: domain must be source or target, got {domain!r}")
    m = _meta(noise, ("id", "domain", "group"))
    ids = np.array([str(i) for i in m["id"]], dtype=object)
    dom = np.asarray(m["domain"]).astype(str)
    cand = [i for i, d in zip(ids, dom) if d == domain]
    keep = noise_mod.select(cand, recordings, f"{where}.recordings", f"no {domain}-domain noise recording")
    return [(int(k), str(ids[k]), str(m["group"][k])) for k in np.flatnonzero([i in keep for i in ids])]


def take(ds, rows: Sequence[int]):
    """Rows ``rows`` of ``ds`` as a new in-memory Dataset without an indices mapping.

    (``select`` + ``flatten_indices`` would do the same with a progress bar and a
    pickled fingerprint.) The fingerprint hashes the parent's and the row numbers.
    """
    import datasets as hfds

    rows = np.asarray(rows, dtype=np.int64)
    table = ds.with_format("arrow")[rows.tolist()] if len(rows) else ds.with_format("arrow")[:0]
    h = hashlib.blake2b(digest_size=8)
    h.update(str(ds._fingerprint).encode())
    h.update(rows.tobytes())
    table = table.cast(ds.features.arrow_schema)
    return hfds.Dataset(hfds.table.InMemoryTable(table), info=hfds.DatasetInfo(features=ds.features.copy()),
                        fingerprint=h.hexdigest())


def from_folder(folder, sampling_rate: int, silence_db: float = SILENCE_DB):
    """Every audio file under ``folder`` as a real source-domain clip.

    Ids, labels and groups follow :mod:`shiftlab.datasets.noise` (``folder/<relative path
    without extension>``; a file inside a sub-folder has group ``folder/<first
    sub-folder>``); files are read with :func:`shiftlab.datasets.audio.read_audio` (mono
    by channel mean) and resampled to ``sampling_rate``.
    """
    from shiftlab.datasets import audio, noise

    cat = noise.catalogue({"recordings": [], "folder": str(folder)}, patterns=[])
    ids = sorted(cat)

    def work(rid):
        path = cat[rid]["ref"][1]
        x, sr = audio.read_audio(path)
        audio.check_noise_clip(x, str(path), silence_db)  # silent, constant (DC) or DC-shifted
        return audio.resample(x, sr, sampling_rate), sr, len(x)

    results = audio.map_ordered(work, ids, 0, "reading noise folder")
    rows = []
    for rid, (y, sr, m) in zip(ids, results):
        d = cat[rid]
        rows.append(dict(
            id=rid, audio=y, sampling_rate=int(sampling_rate), label=d["kind"], domain="source", origin="real",
            group=d["group"], recipe=store.recipe(**d["recipe"], recording=rid, sampling_rate=sr,
                                                  seconds=round(m / sr, 6)),
        ))
    return validate(_dataset(rows), sampling_rate, silence_db, f"noise bank ({folder})")


def _mono(x, name: str, downmix: bool) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype.kind not in "fiu":
        raise ShiftlabError(f"noise clip {name}: samples must be numbers, got dtype {a.dtype}")
    if a.ndim == 1:
        return a.astype(np.float32)
    if a.ndim != 2:
        raise ShiftlabError(f"noise clip {name}: array has {a.ndim} dimensions; expected 1 (mono) or 2 (channels)")
    small = [ax for ax in (0, 1) if a.shape[ax] <= MAX_CHANNELS]
    if not downmix:
        raise ShiftlabError(
            f"noise clip {name}: 2-D array {a.shape} (multi-channel?); pass a mono 1-D array or downmix=True "
            f"(mean over the channel axis)"
        )
    if len(small) != 1:
        raise ShiftlabError(
            f"noise clip {name}: cannot tell the channel axis of a {a.shape} array (exactly one axis must have "
            f"<= {MAX_CHANNELS} entries)"
        )
    return a.astype(np.float64).mean(axis=small[0]).astype(np.float32)


def from_arrays(clips: Mapping[str, tuple[Any, int]], sampling_rate: int, groups: Mapping[str, str] | None = None,
                labels: Mapping[str, str] | None = None, origin: str = "real", downmix: bool = False,
                resample: bool = False, silence_db: float = SILENCE_DB):
    """A bank from in-memory clips ``{id: (samples, rate)}`` (rows in sorted id order).

    ``groups`` / ``labels`` map ids to their group (default: the id) and noise kind
    (default ``noise``). A rate other than ``sampling_rate`` is an error unless
    ``resample=True`` (``torchaudio.functional.resample``); 2-D arrays follow the module
    docstring (``downmix``).
    """
    from shiftlab.datasets import audio

    if origin not in ("real", "synthetic"):
        raise ShiftlabError(f"from_arrays: origin must be real or synthetic, got {origin!r}")
    if not clips:
        raise ShiftlabError("noise bank: empty (no noise clips given)")
    rows = []
    for cid in sorted(clips):
        item = clips[cid]
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise ShiftlabError(f"noise clip {cid}: expected (samples, sampling rate), got {type(item).__name__}")
        x, sr = item
        x = _mono(x, cid, downmix)
        if isinstance(sr, bool) or not isinstance(sr, (int, np.integer)) or sr <= 0:
            raise ShiftlabError(f"noise clip {cid}: sampling rate must be a positive integer, got {sr!r}")
        if len(x) == 0:
            raise ShiftlabError(f"noise bank: clip {cid} has no samples (zero length)")
        if not np.isfinite(x).all():
            raise ShiftlabError(f"noise bank: clip {cid} contains NaN or infinite samples")
        if int(sr) != int(sampling_rate):
            if not resample:
                raise ShiftlabError(
                    f"noise bank: clip {cid} has sampling rate {sr} Hz, the speech has {sampling_rate} Hz "
                    f"(resample it, or pass resample=True)"
                )
            x = audio.resample(x, int(sr), int(sampling_rate))
        rows.append(dict(
            id=str(cid), audio=x, sampling_rate=int(sampling_rate), label=(labels or {}).get(cid, "noise"),
            domain="source", origin=origin, group=(groups or {}).get(cid, str(cid)),
            recipe=store.recipe(source="arrays", sampling_rate=int(sr)),
        ))
    return validate(_dataset(rows), sampling_rate, silence_db)


def car_seeds(seed: int, i: int) -> tuple[int, int]:
    """(parameter seed, drive seed) of virtual car ``i`` of a bank built with ``seed``."""
    return seeding.sample_seed(seed, i, "car"), seeding.sample_seed(seed, i, "car_drive")


def from_cars(n_cars: int, seconds_per_car: float, sampling_rate: int, seed: int = 0,
              ranges: Mapping[str, Any] | None = None, workers: int = 0):
    """``n_cars`` virtual cars (:mod:`shiftlab.mixing.cars`), ``seconds_per_car`` each.

    Car ``i``: ``id`` = group = ``virtual/car<i>`` (zero-padded to 3+ digits), label
    ``virtual_car``, origin ``synthetic``, domain ``source``; parameters
    ``sample_car(car_seed, ranges)``, audio ``render(car, seconds_per_car, sampling_rate,
    drive_seed)`` with ``(car_seed, drive_seed) = car_seeds(seed, i)``. The recipe holds the
    car record, both seeds, the seconds and the rate. Rendering runs in ``workers`` threads
    (0 = all cores); the result does not depend on it.
    """
    from shiftlab.datasets import audio
    from shiftlab.mixing import cars

    if isinstance(n_cars, bool) or not isinstance(n_cars, (int, np.integer)) or n_cars < 1:
        raise ShiftlabError(f"{_KEY}.n_cars: must be an integer >= 1, got {n_cars!r}")
    width = max(3, len(str(int(n_cars) - 1)))
    ranges = cars.check_ranges(ranges, f"{_KEY}.cars")

    def work(i):
        cs, ds = car_seeds(seed, i)
        car = cars.sample_car(cs, ranges)
        return car, cs, ds, cars.render(car, seconds_per_car, sampling_rate, ds)

    results = audio.map_ordered(work, range(int(n_cars)), workers, "rendering virtual cars", unit="car")
    rows = []
    for i, (car, cs, ds, x) in enumerate(results):
        cid = f"virtual/car{i:0{width}d}"
        rows.append(dict(
            id=cid, audio=x, sampling_rate=int(sampling_rate), label="virtual_car", domain="source",
            origin="synthetic", group=cid,
            recipe=store.recipe(source="virtual_car", car=car.to_record(), car_seed=cs, drive_seed=ds,
                                seconds=float(seconds_per_car), sampling_rate=int(sampling_rate), index=i),
        ))
    return validate(_dataset(rows), sampling_rate)


def torcs_drive_seed(seed: int, car: str, j: int) -> int:
    """The seed of drive ``j`` of TORCS car ``car`` in a bank built with ``seed`` (independent of the other cars)."""
    return seeding.sample_seed(seed, j, "torcs_drive", car)


def _held_groups(noise) -> set[str]:
    """Groups of the target-domain rows of a prepared noise dataset (held out for the target)."""
    if noise is None:
        return set()
    m = _meta(noise, ("domain", "group"))
    return {str(g) for g, d in zip(m["group"], m["domain"]) if str(d) == "target"}


def _torcs_selection(patterns: Sequence[str], torcs_dir, road: str | None, held_out: Collection[str] = (),
                     where: str = _KEY) -> tuple[dict[str, list[tuple[str, dict]]], tuple[str, dict] | None]:
    """(car -> sorted [(recording id, description)] of its engine loops, (road id, description) or None).

    A car is selected when a ``patterns`` entry matches its name and its group
    (``torcs/<car>``) is not in ``held_out``; a pattern that selects nothing is an error
    naming the cars it could have meant (and the held-out car, when it names one).
    """
    from shiftlab.datasets import noise as noise_mod

    held = set(held_out)
    cat = noise_mod.torcs_catalogue(torcs_dir, [], kinds=("engine",), key=f"{where}.torcs_dir")
    by_car: dict[str, list[tuple[str, dict]]] = {}
    for rid in sorted(cat):
        by_car.setdefault(cat[rid]["car"], []).append((rid, cat[rid]))
    free = sorted(c for c in by_car if f"torcs/{c}" not in held)
    chosen = set()
    for p in patterns:
        hit = [c for c in free if fnmatch.fnmatchcase(c, p)]
        if not hit:
            blocked = [c for c in sorted(by_car) if fnmatch.fnmatchcase(c, p)]
            why = (f"{', '.join(blocked)} {'is' if len(blocked) == 1 else 'are'} held out for the target "
                   f"(prepare_noise.target_recordings)") if blocked else f"known: {', '.join(sorted(by_car)) or 'none'}"
            raise ShiftlabError(f"{where}.torcs_cars: pattern {p!r} matches no TORCS car ({why})")
        chosen.update(hit)
    road_sel = None
    if road is not None:
        if road.removeprefix("torcs/") not in noise_mod.TORCS_SOUNDS:
            known = ", ".join(f"torcs/{k}" for k in sorted(noise_mod.TORCS_SOUNDS))
            raise ShiftlabError(f"{where}.torcs_road: {road} is not a TORCS recording (known: {known})")
        rc = noise_mod.torcs_catalogue(torcs_dir, [road], key=f"{where}.torcs_dir", only=[road])
        if rc[road]["group"] in held:
            raise ShiftlabError(f"{where}.torcs_road: {road} is held out for the target "
                                f"(prepare_noise.target_recordings)")
        road_sel = (road, rc[road])
    return {c: by_car[c] for c in sorted(chosen)}, road_sel


def from_torcs(cars: Sequence[str] = ("*",), trajectories_per_car: int = 3, seconds_per_car: float = 20.0,
               sampling_rate: int = 16000, seed: int = 0, torcs_dir=TORCS_DIR, drive: Mapping[str, Any] | None = None,
               road: str | None = None, held_out: Collection[str] = (), workers: int = 0, where: str = _KEY):
    """Real TORCS engine loops, each selected car driven through ``trajectories_per_car`` RPM trajectories.

    Cars: the TORCS cars (:data:`shiftlab.datasets.noise.TORCS_SOUNDS`) whose name matches
    a ``cars`` pattern and whose group ``torcs/<car>`` is not in ``held_out`` (the groups
    held out for the target). Drive ``j`` of a car (``j = 0 .. trajectories_per_car - 1``)
    voices the car's engine loop ``j mod (number of its loops)`` (sorted by id) with
    :func:`shiftlab.mixing.rpm.render` of ``rpm.sample_recipe(torcs_drive_seed(seed, car, j),
    seconds_per_car, sampling_rate, drive, recording, road)``; ``road``: a TORCS recording
    id for the road underlay, or None. Rows: ``id`` ``torcs/<car>/drive<j>``, group
    ``torcs/<car>``, label ``torcs_car``, origin ``real`` (a real recording, re-pitched),
    domain ``source``; the recipe holds the car, the recording file and the whole drive
    recipe (every drawn number), so the clip can be re-rendered. Cars are rendered in
    ``workers`` threads (0 = all cores); the result does not depend on it.
    """
    from shiftlab.datasets import audio
    from shiftlab.mixing import rpm

    k = trajectories_per_car
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ShiftlabError(f"{where}.trajectories_per_car: must be an integer >= 1, got {k!r}")
    drive = rpm.check_ranges(drive, f"{where}.drive")
    sel, road_sel = _torcs_selection(list(cars), torcs_dir, road, held_out, where)
    road_levels = None
    if road_sel is not None:
        x, sr = audio.read_audio(road_sel[1]["ref"][1])
        road_levels = rpm.LoopLevels(x, sr, int(sampling_rate), road_sel[0])

    def work(car):
        levels = {}
        out = []
        for j in range(int(k)):
            rid, d = sel[car][j % len(sel[car])]
            if rid not in levels:
                x, sr = audio.read_audio(d["ref"][1])
                levels[rid] = rpm.LoopLevels(x, sr, int(sampling_rate), rid)
            s = torcs_drive_seed(seed, car, j)
            recipe = rpm.sample_recipe(s, seconds_per_car, int(sampling_rate), drive, rid,
                                       road_sel[0] if road_sel else None)
            out.append((j, rid, d, s, recipe, rpm.render(recipe, levels[rid], road=road_levels)))
        return out

    results = audio.map_ordered(work, list(sel), workers, "rendering TORCS drives", unit="car")
    rows = []
    for car, drives in zip(sel, results):
        for j, rid, d, s, recipe, x in drives:
            rows.append(dict(
                id=f"torcs/{car}/drive{j}", audio=x, sampling_rate=int(sampling_rate), label="torcs_car",
                domain="source", origin="real", group=f"torcs/{car}",
                recipe=store.recipe(source="torcs_drive", car=car, recording=rid, file=d["ref"][1], drive_seed=s,
                                    index=j, drive=recipe,
                                    road_file=road_sel[1]["ref"][1] if road_sel else None),
            ))
    return validate(_dataset(rows), sampling_rate)


def combine(parts: Sequence):
    """Concatenate banks (label names unified); duplicate ids are an error."""
    from shiftlab.datasets import schema

    parts = [p for p in parts if p is not None and len(p)]
    if not parts:
        raise ShiftlabError("noise bank: empty (no noise clips from any source)")
    out = schema.concat(parts)
    if out._indices is not None:
        out = take(out, range(len(out)))
    return validate(out)


def build(cfg: Mapping[str, Any] | None, noise=None, sampling_rate: int = 16000, seed: int = 0, workers: int = 0):
    """The bank described by a ``synth_mix.bank`` section (:data:`DEFAULTS`).

    ``noise``: the prepared noise dataset (needed when ``sources`` has ``real``; only its
    source-domain rows matching ``recordings`` are used, so the held-out target
    recordings never enter the bank; its target-domain groups are also held out of
    ``torcs``: a TORCS car held out for the target is never driven). Parts are
    concatenated in the order real, folder, virtual, torcs.
    """
    c = check_cfg(cfg)
    parts = []
    if "real" in c["sources"]:
        if noise is None:
            raise ShiftlabError(f"{_KEY}.sources: 'real' needs the prepared noise dataset (data/prepared/noise)")
        parts.append(from_noise(noise, c["recordings"], "source", sampling_rate, c["silence_db"]))
    if "folder" in c["sources"]:
        parts.append(from_folder(c["folder"], sampling_rate, c["silence_db"]))
    if "virtual" in c["sources"]:
        parts.append(from_cars(c["n_cars"], c["seconds_per_car"], sampling_rate, seed, c["cars"], workers))
    if "torcs" in c["sources"]:
        parts.append(from_torcs(c["torcs_cars"], c["trajectories_per_car"], c["seconds_per_car"], sampling_rate, seed,
                                c["torcs_dir"], c["drive"], c["torcs_road"], _held_groups(noise), workers))
    out = combine(parts)
    return validate(out, sampling_rate, c["silence_db"])


@dataclass(frozen=True)
class Names:
    """What a bank draws from: ``recordings`` (ids of the recordings its clips are made
    of: real and folder recordings, TORCS engine loops and road underlay, virtual cars)
    and ``groups`` (their physical sources: recordings, folder sub-folders, cars)."""

    recordings: frozenset
    groups: frozenset


def names(cfg: Mapping[str, Any] | None, noise=None, where: str = _KEY) -> Names:
    """The :class:`Names` of the bank a ``synth_mix.bank`` section builds, resolved as
    :func:`build` resolves them (same patterns, same held-out exclusions) without reading
    or rendering any audio of the bank. ``noise``: the prepared noise dataset (needed for
    ``real``; its target-domain groups are held out of ``torcs``)."""
    c = check_cfg(cfg, where)
    recs, groups = set(), set()
    if "real" in c["sources"]:
        if noise is None:
            raise ShiftlabError(f"{where}.sources: 'real' needs the prepared noise dataset (data/prepared/noise)")
        for _, rid, g in _match_noise(noise, c["recordings"], "source", where):
            recs.add(rid), groups.add(g)
    if "folder" in c["sources"]:
        from shiftlab.datasets import noise as noise_mod

        for rid, d in noise_mod.catalogue({"recordings": [], "folder": str(c["folder"])}, patterns=[]).items():
            recs.add(rid), groups.add(d["group"])
    if "virtual" in c["sources"]:
        width = max(3, len(str(c["n_cars"] - 1)))
        ids = {f"virtual/car{i:0{width}d}" for i in range(c["n_cars"])}
        recs |= ids
        groups |= ids
    if "torcs" in c["sources"]:
        sel, road = _torcs_selection(c["torcs_cars"], c["torcs_dir"], c["torcs_road"], _held_groups(noise), where)
        for car, loops in sel.items():
            groups.add(f"torcs/{car}")
            recs.update(rid for rid, _ in loops)
        if road is not None:
            recs.add(road[0]), groups.add(road[1]["group"])
    return Names(frozenset(recs), frozenset(groups))


def digest(bank) -> str:
    """A short content hash of a bank (ids, groups and samples): for recipes and caches."""
    a = arrays(bank)
    h = hashlib.blake2b(digest_size=8)
    h.update("\x00".join(a.ids).encode())
    h.update("\x00".join(a.groups).encode())
    h.update(a.lengths.tobytes())
    h.update(a.flat.tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------- the draw policy


@dataclass(frozen=True)
class Segments:
    """Candidate segments of length ``length``: per segment its bank row, group, first
    start, the largest extra shift (``slack``), and whether it is a looped clip."""

    length: int
    clip: np.ndarray
    group: np.ndarray
    start: np.ndarray
    looped: np.ndarray
    clip_slack: np.ndarray  # per bank row: shifts are 0..clip_slack (looped: 0..L-1)
    excluded: int  # segments dropped as too quiet


def _window_energy(x: np.ndarray, length: int, circular: bool) -> np.ndarray:
    """Mean square of every ``length``-sample window (start 0..L-length, or 0..L-1 circularly)."""
    x = x.astype(np.float64)
    if circular:
        x = np.resize(x, len(x) + length)  # circular extension
        n_starts = len(x) - length
    else:
        n_starts = len(x) - length + 1
    cs = np.concatenate([[0.0], np.cumsum(x * x)])
    return (cs[length : length + n_starts] - cs[:n_starts]) / length


def segments(bank, length: int, min_segment_db: float = SILENCE_DB) -> Segments:
    """The candidate segments of ``bank`` for speech of ``length`` samples (module docstring)."""
    a = arrays(bank)
    length = int(length)
    if length < 1:
        raise ShiftlabError(f"segment length must be >= 1 sample, got {length}")
    thr = 10.0 ** (float(min_segment_db) / 10.0)
    clip, group, start, looped = [], [], [], []
    slack = np.zeros(len(a.ids), dtype=np.int64)
    excluded = 0
    for i in range(len(a.ids)):
        x = a.clip(i)
        L = len(x)
        if L >= length:
            n_seg = L // length
            slack[i] = L - n_seg * length
            e = _window_energy(x, length, circular=False)
            for k in range(n_seg):
                s0 = k * length
                if e[s0 : s0 + slack[i] + 1].min() < thr:
                    excluded += 1
                    continue
                clip.append(i), group.append(a.group_index[i]), start.append(s0), looped.append(False)
        else:
            slack[i] = L - 1
            if _window_energy(x, length, circular=True).min() < thr:
                excluded += 1
                continue
            clip.append(i), group.append(a.group_index[i]), start.append(0), looped.append(True)
    if not clip:
        raise ShiftlabError(
            f"noise bank: no segment of {length} samples is louder than min_segment_db {min_segment_db:g} dBFS "
            f"({excluded} excluded)"
        )
    return Segments(
        length=length,
        clip=np.asarray(clip, dtype=np.int64),
        group=np.asarray(group, dtype=np.int64),
        start=np.asarray(start, dtype=np.int64),
        looped=np.asarray(looped, dtype=bool),
        clip_slack=slack,
        excluded=excluded,
    )


@dataclass(frozen=True)
class Plan:
    """``n`` draws: per draw ``clip`` (bank row), ``offset``, ``loops``, ``segment``, ``pass_``.

    ``cap``: the per-group cap in draws that was enforced; ``share_requested`` and
    ``share_enforced`` (= cap / n); ``passes``: number of passes used.
    """

    length: int
    clip: np.ndarray
    offset: np.ndarray
    loops: np.ndarray
    segment: np.ndarray
    pass_: np.ndarray
    cap: int
    share_requested: float
    share_enforced: float
    passes: int

    def __len__(self) -> int:
        return len(self.clip)


def plan_draws(
    bank,
    length: int,
    n: int,
    rng: np.random.Generator | int,
    max_source_share: float = DEFAULTS["max_source_share"],
    min_segment_db: float = SILENCE_DB,
    segs: Segments | None = None,
) -> Plan:
    """Plan ``n`` noise draws of ``length`` samples with the reuse-balancing policy (module docstring).

    ``rng``: a ``numpy.random.Generator`` (consumed) or an int seed (then
    ``seeding.sample_rng(seed, 0, "mix_plan")``). ``segs``: precomputed :func:`segments`
    (must match ``length``).
    """
    a = arrays(bank)
    if not isinstance(rng, np.random.Generator):
        rng = seeding.sample_rng(int(rng), 0, "mix_plan")
    share = float(max_source_share)
    if not 0.0 < share <= 1.0:
        raise ShiftlabError(f"{_KEY}.max_source_share: must be in (0, 1], got {share:g}")
    n = int(n)
    segs = segments(a, length, min_segment_db) if segs is None else segs
    if segs.length != int(length):
        raise ShiftlabError(f"plan_draws: segments are for {segs.length} samples, not {length}")
    if n <= 0:
        e = np.zeros(0, dtype=np.int64)
        return Plan(int(length), e, e, e, e, e, 0, share, 0.0, 0)
    S = len(segs.clip)
    groups_present = np.unique(segs.group)
    G = len(groups_present)
    n_groups = len(a.group_names)
    cap = max(math.ceil(share * n - 1e-9), math.ceil(n / G))
    remaining = np.zeros(n_groups, dtype=np.int64)
    remaining[groups_present] = cap
    lengths = a.lengths
    out_seg, out_off, out_pass = [], [], []
    need, p = n, 0
    while need > 0:
        perm = rng.permutation(S)
        shift = np.floor(rng.random(len(lengths)) * (segs.clip_slack + 1)).astype(np.int64)
        gp = segs.group[perm]
        order = np.argsort(gp, kind="stable")
        sg = gp[order]
        rank = np.empty(S, dtype=np.int64)
        rank[order] = np.arange(S) - np.searchsorted(sg, sg, side="left")
        sel = perm[rank < remaining[gp]][:need]
        remaining -= np.bincount(segs.group[sel], minlength=n_groups)
        out_seg.append(sel)
        out_off.append(segs.start[sel] + shift[segs.clip[sel]])
        out_pass.append(np.full(len(sel), p, dtype=np.int64))
        need -= len(sel)
        p += 1
    seg = np.concatenate(out_seg)
    clip = segs.clip[seg]
    offset = np.concatenate(out_off)
    loops = (offset + int(length) - 1) // lengths[clip]
    return Plan(
        length=int(length), clip=clip, offset=offset, loops=loops, segment=seg, pass_=np.concatenate(out_pass),
        cap=int(cap), share_requested=share, share_enforced=cap / n, passes=p,
    )
