"""Vehicle noise recordings: the scarce resource that synthesis mixes under clean speech.

:func:`prepare` builds one ``Dataset`` in the audio schema from the ``prepare_noise``
params section: one row per recording, at full length (mono by channel mean,
resampled to ``sampling_rate``, *not* length-normalised). Recordings that match
``target_recordings`` get domain ``target`` (held out: only ``shiftlab prepare target``
uses them, under every target row -- those that go to train as target-train and those of
dev and test --, and no synthesis bank ever does: :func:`shiftlab.mixing.bank.build`
reads source-domain rows only and never drives a held-out TORCS car, and ``prepare
target`` refuses a bank that shares a recording or car with them); every other selected
recording gets domain ``source`` (the bank that synthesis draws from). Keeping the two
disjoint is the point: a model must not be scored on car noise its synthetic rows were
made from (Machine Learning Yearning ch. 39: synthesised data must not overfit to a
noise the dev/test set shares).

Recording ids (select them with fnmatch patterns in ``recordings``):

* ``trigger_rally/engine``, ``trigger_rally/gravel``, ``trigger_rally/wind`` --
  ``sounds/<name>.wav`` inside the trigger-rally ``data.zip`` (44.1 kHz stereo; the
  one-shot ``bang`` and ``gear`` effects are not noise beds and are left out);
* ``dustracing2d/carEngine``, ``dustracing2d/skid`` -- ``<name>.ogg`` in the
  dustracing2d sounds folder (its other sounds are crowd, bell, menu and crash effects);
* ``openttd/<slug>`` -- road and rail vehicle sounds inside OpenSFX's ``opensfx.cat``
  (:func:`read_opensfx`), kept by :func:`is_vehicle_sound`; the slug is the sound's
  quoted title, lower-cased, runs of other characters -> ``_``
  (``"Truck/old bus start, pull away"`` -> ``openttd/truck_old_bus_start_pull_away``);
* ``torcs/<name>`` -- the recordings of Debian's ``torcs-data`` in ``torcs_dir``
  (``<name>.wav``; :data:`TORCS_SOUNDS`): 26 engine loops of 22 named cars (kind
  ``engine``, group ``torcs/<car>``: ``viper2``, ``viper_long`` and ``cleanviper`` are one
  car, so are ``evo7_engine`` / ``evo7_engine_f`` and ``ford1b`` / ``ford2c``) and the
  road, off-road, tyre-skid, scrape, axle, turbo and backfire loops (their kind; group =
  the recording id); the one-shot crash, boom, backfire and gear-change effects are left
  out. A listed file that cannot be read (``locked.wav`` of torcs-data 1.3.7 is raw
  samples without a header) is skipped with ONE warning line naming it, unless a
  ``recordings`` pattern names its id exactly: then it is a one-line error;
* ``folder/<relative path without extension>`` -- every audio file under
  ``prepare_noise.folder`` (always selected when the folder is set).

Labels (``ClassLabel``, sorted names) are noise kinds: ``engine``, ``gravel``,
``wind`` (trigger-rally), ``engine``, ``skid`` (dustracing2d), the slug (openttd), the
kind of :data:`TORCS_SOUNDS` (torcs), and for folder files the file stem lower-cased
with a trailing number removed (``engine_02.wav`` -> ``engine``). Groups: the recording
id, except for TORCS engine loops (``torcs/<car>``: a car is held out whole, or not at
all) and for folder files inside a subfolder, whose group is ``folder/<first subfolder>`` (one subfolder per car
or per recording session: its files must never be split apart); files directly in
the folder are their own group.
"""

from __future__ import annotations

import fnmatch
import re
import struct
import sys
import zipfile
from pathlib import Path
from typing import Sequence

import datasets as hfds
import numpy as np

from shiftlab import store
from shiftlab.datasets import audio, folders
from shiftlab.errors import ShiftlabError

_KEY = "prepare_noise"

TRIGGER_RALLY = {"engine": "engine", "gravel": "gravel", "wind": "wind"}  # member stem -> kind
DUSTRACING2D = {"carEngine": "engine", "skid": "skid"}  # file stem -> kind
PACKAGES = {"trigger_rally": "trigger-rally-data", "dustracing2d": "dustracing2d-data", "openttd": "openttd-opensfx",
            "torcs": "torcs-data"}
TORCS_DIR = "/usr/share/games/torcs/data/sound"

#: TORCS recordings (``<stem>.wav`` in ``torcs_dir``): stem -> (kind, car). Engine loops
#: name their car (several loops of one car share it: one physical source); effects have
#: no car. The one-shots (crash1-6, boom, bottom_crash, backfire, gear_change1) are left out.
TORCS_SOUNDS: dict[str, tuple[str, str | None]] = {
    **{stem: ("engine", car) for stem, car in {
        "206_engine": "206", "935": "935", "944": "944", "alpha-romeo": "alpha-romeo", "cleanviper": "viper",
        "clkdtmb2": "clkdtmb2", "corolla1400hi2": "corolla1400hi2", "engine-1": "engine-1", "evo7_engine": "evo7",
        "evo7_engine_f": "evo7", "f360": "f360", "ferrarif355": "ferrarif355", "ferrarif50": "ferrarif50",
        "ford1b": "ford", "ford2c": "ford", "gt40": "gt40", "impreza2002_engine": "impreza2002",
        "lamborghinidiablo": "lamborghinidiablo", "lotus": "lotus", "mclarenf1": "mclarenf1", "nsx": "nsx",
        "porsche_engine": "porsche", "renault-v10": "renault-v10", "viper2": "viper", "viper_long": "viper",
        "xj220": "xj220",
    }.items()},
    "road-ride": ("road", None),
    "out_of_road": ("offroad", None),
    "out_of_road-3": ("offroad", None),
    "skid": ("skid", None),
    "skid_tyres": ("skid", None),
    "locked": ("skid", None),  # locked wheels; raw samples without a header in torcs-data 1.3.7: unreadable
    "skid_metal": ("scrape", None),
    "axle": ("axle", None),
    "turbo1": ("turbo", None),
    "backfire_loop": ("backfire", None),
}

# OpenSFX titles kept: a road or rail vehicle word ...
OPENSFX_KEEP = re.compile(r"\b(bus|truck|lorry|car|tram|train|locomotive|engine)\b", re.I)
# ... and none of these (cartoon "Toyland" effects, crashes and breakdowns, ships, aircraft)
OPENSFX_DROP = re.compile(r"^(toyland|tropical):|breakdown|crash|ship|ferry|plane|jet|helicopter", re.I)
SILENCE_DB = -60.0


# --------------------------------------------------------------------------- OpenSFX


def read_opensfx(path) -> list[tuple[str, bytes]]:
    """The (name, wav bytes) entries of an OpenTTD sound container (``opensfx.cat``).

    Layout (little-endian): an offset table of ``count`` (uint32 offset, uint32 size)
    pairs, where ``count`` = first offset / 8 and bit 31 of every offset is a format
    flag (masked off); at each offset one byte ``L``, ``L`` bytes of name (NUL
    terminated), then a RIFF/WAVE blob of ``size`` bytes. Every field is checked; a
    malformed container is a :class:`ShiftlabError` naming the file and the entry.
    """
    path = Path(path)
    if not path.is_file():
        raise ShiftlabError(f"{path}: file not found (install the Debian package {PACKAGES['openttd']})")
    data = path.read_bytes()
    bad = f"{path}: malformed opensfx container"
    if len(data) < 8:
        raise ShiftlabError(f"{bad}: {len(data)} bytes is too short for an offset table")
    table = struct.unpack_from("<I", data, 0)[0] & 0x7FFFFFFF
    if table == 0 or table % 8 or table > len(data):
        raise ShiftlabError(f"{bad}: first offset {table} is not a table size (a non-zero multiple of 8 inside the file)")
    out = []
    for i in range(table // 8):
        raw_off, size = struct.unpack_from("<II", data, 8 * i)
        off = raw_off & 0x7FFFFFFF
        if off < table or off >= len(data):
            raise ShiftlabError(f"{bad}: entry {i}: offset {off} lies outside the data area ({table}..{len(data)})")
        n = data[off]
        name_end = off + 1 + n
        blob_end = name_end + size
        if blob_end > len(data):
            raise ShiftlabError(f"{bad}: entry {i}: {size} bytes at offset {name_end} run past the end of the file")
        name = data[off + 1 : name_end].split(b"\x00", 1)[0].decode("utf-8", "replace")
        blob = data[name_end:blob_end]
        if len(blob) < 12 or blob[:4] != b"RIFF" or blob[8:12] != b"WAVE":
            raise ShiftlabError(f"{bad}: entry {i} ({name[:40]!r}): not a RIFF/WAVE blob")
        riff = struct.unpack_from("<I", blob, 4)[0] + 8
        if riff > size:
            raise ShiftlabError(f"{bad}: entry {i} ({name[:40]!r}): RIFF size {riff} exceeds the entry size {size}")
        out.append((name, blob[:riff]))
    return out


def opensfx_title(name: str) -> str:
    """The quoted title at the start of an OpenSFX entry name (the whole name when unquoted)."""
    m = re.match(r'\s*"([^"]*)"', name)
    return (m.group(1) if m else name).strip()


def is_vehicle_sound(title: str) -> bool:
    """The OpenSFX filter: road or rail vehicles only.

    Kept when the title contains one of the words bus, truck, lorry, car, tram,
    train, locomotive, engine, and none of: a ``Toyland:`` or ``Tropical:`` prefix,
    breakdown, crash, ship, ferry, plane, jet, helicopter. In OpenSFX 1.0.3 this keeps
    the truck/bus starts, the modern car horn and the steam, diesel/electric, maglev
    and monorail train sounds.
    """
    return bool(OPENSFX_KEEP.search(title)) and not OPENSFX_DROP.search(title)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "sound"


# --------------------------------------------------------------------------- catalogue

# A recording: id -> dict(kind, group, load, recipe fields)


def _need_file(path, package: str, key: str, is_dir: bool = False) -> Path:
    p = Path(path)
    if not (p.is_dir() if is_dir else p.is_file()):
        what = "folder" if is_dir else "file"
        raise ShiftlabError(f"{p}: {what} not found (install the Debian package {package}, or set {key})")
    return p


def _trigger_rally(cfg) -> dict:
    path = _need_file(cfg["trigger_rally_zip"], PACKAGES["trigger_rally"], f"{_KEY}.trigger_rally_zip")
    try:
        with zipfile.ZipFile(path) as z:
            members = set(z.namelist())
    except (zipfile.BadZipFile, OSError) as e:
        raise ShiftlabError(f"{path}: not a readable zip file ({e})") from None
    out = {}
    for stem, kind in TRIGGER_RALLY.items():
        member = f"sounds/{stem}.wav"
        if member not in members:
            raise ShiftlabError(f"{path}: has no {member} (is it the data.zip of {PACKAGES['trigger_rally']}?)")
        out[f"trigger_rally/{stem}"] = dict(
            kind=kind,
            ref=("zip", str(path), member),
            recipe=dict(source="trigger_rally", file=str(path), member=member),
        )
    return out


def _dustracing2d(cfg) -> dict:
    root = _need_file(cfg["dustracing2d_dir"], PACKAGES["dustracing2d"], f"{_KEY}.dustracing2d_dir", is_dir=True)
    out = {}
    for stem, kind in DUSTRACING2D.items():
        f = _need_file(root / f"{stem}.ogg", PACKAGES["dustracing2d"], f"{_KEY}.dustracing2d_dir")
        out[f"dustracing2d/{stem}"] = dict(
            kind=kind, ref=("file", str(f), None), recipe=dict(source="dustracing2d", file=str(f))
        )
    return out


def _openttd(cfg) -> dict:
    path = Path(cfg["opensfx_cat"])
    entries = read_opensfx(path)
    out = {}
    for i, (name, blob) in enumerate(entries):
        title = opensfx_title(name)
        if not is_vehicle_sound(title):
            continue
        s = slug(title)
        rid = f"openttd/{s}"
        if rid in out:
            s = f"{s}_{i}"
            rid = f"openttd/{s}"
        out[rid] = dict(
            kind=s,
            ref=("bytes", blob, f"{path}:{i}"),
            recipe=dict(source="openttd", file=str(path), member=i, title=title),
        )
    return out


def _exact(patterns: Sequence[str]) -> set[str]:
    """The patterns without a wildcard: ids asked for by name."""
    return {p for p in patterns if not re.search(r"[*?\[]", p)}


def select(ids: Sequence[str], patterns: Sequence[str], key: str, what: str = "no recording",
           known: bool = True) -> set[str]:
    """The ids matching one of the fnmatch ``patterns`` (case-sensitive). A pattern that matches none is an
    error: ``KEY: pattern 'P' matches WHAT (known: ...)`` (the candidates listed when ``known``)."""
    out: set[str] = set()
    for p in patterns:
        hit = [i for i in ids if fnmatch.fnmatchcase(i, p)]
        if not hit:
            listed = f" (known: {', '.join(sorted(ids)) or 'none'})" if known else ""
            raise ShiftlabError(f"{key}: pattern {p!r} matches {what}{listed}")
        out.update(hit)
    return out


def torcs_catalogue(root, patterns: Sequence[str] = (), kinds: Sequence[str] | None = None,
                    key: str = f"{_KEY}.torcs_dir", only: Sequence[str] | None = None) -> dict:
    """Recording id -> description of the readable TORCS recordings in ``root`` (:data:`TORCS_SOUNDS`).

    ``kinds``: keep only these kinds (e.g. ``("engine",)``); ``only``: only these ids
    (the others are not even opened). Descriptions carry ``kind``,
    ``car`` (None for effects), ``group`` (``torcs/<car>``, or the id), ``ref`` and
    ``recipe``. Every listed file is decoded once here: an unreadable one is left out with
    one warning line on stderr naming it, a missing one silently (another torcs-data
    version) -- unless ``patterns`` names its id exactly (no wildcard): then either is a
    one-line :class:`ShiftlabError`.
    """
    from shiftlab.datasets import audio as audio_mod

    root = _need_file(root, PACKAGES["torcs"], key, is_dir=True)
    asked = _exact(patterns)
    out = {}
    for stem, (kind, car) in sorted(TORCS_SOUNDS.items()):
        rid = f"torcs/{stem}"
        if (kinds is not None and kind not in kinds) or (only is not None and rid not in only):
            continue
        f = root / f"{stem}.wav"
        if not f.exists() and rid not in asked:  # not in this version of torcs-data
            continue
        try:
            audio_mod.read_audio(f)
        except ShiftlabError as e:
            if rid in asked:
                raise ShiftlabError(f"{rid}: {e}") from None
            print(f"shiftlab: warning: {rid} skipped: {e}", file=sys.stderr)
            continue
        out[rid] = dict(
            kind=kind,
            car=car,
            group=f"torcs/{car}" if car else rid,
            ref=("file", str(f), None),
            recipe=dict(source="torcs", file=str(f), kind=kind, **({"car": car} if car else {})),
        )
    return out


def _folder_kind(stem: str) -> str:
    k = re.sub(r"[\s_.-]*\d+$", "", stem).lower()
    return k or stem.lower()


def _folder(folder) -> dict:
    root = folders.existing_folder(folder, f"{_KEY}.folder")
    files = audio.audio_files(root)
    if not files:
        raise ShiftlabError(
            f"{root}: no audio files ({_KEY}.folder; looked for {', '.join(e[1:] for e in audio.AUDIO_EXTENSIONS)})"
        )
    out = {}
    for f in files:
        rel = f.relative_to(root).as_posix()
        stem_rel = rel[: -len(f.suffix)]
        rid = f"folder/{stem_rel}"
        if rid in out:
            raise ShiftlabError(f"{f}: two files share the recording id {rid!r} (same name, different extension)")
        parts = stem_rel.split("/")
        group = f"folder/{parts[0]}" if len(parts) > 1 else rid
        out[rid] = dict(
            kind=_folder_kind(f.stem),
            group=group,
            ref=("file", str(f), None),
            recipe=dict(source="folder", folder=str(folder), file=rel),
        )
    return out


_SOURCES = {"trigger_rally/": _trigger_rally, "dustracing2d/": _dustracing2d, "openttd/": _openttd}


def _head(pattern: str) -> str:
    """The literal part of an fnmatch pattern before its first wildcard."""
    m = re.search(r"[*?\[]", pattern)
    return pattern if m is None else pattern[: m.start()]


def catalogue(cfg: dict, patterns: Sequence[str] | None = None) -> dict:
    """Recording id -> description, for the sources that ``patterns`` may select (default: all).

    Only sources whose id prefix could match a pattern are opened, so a missing Debian
    package matters only when it is asked for (and is then named in the error).
    """
    patterns = list(cfg["recordings"]) if patterns is None else list(patterns)
    out = {}
    for prefix, fn in _SOURCES.items():
        if any(prefix.startswith(_head(p)) or _head(p).startswith(prefix) for p in patterns):
            out.update(fn(cfg))
    if any("torcs/".startswith(_head(p)) or _head(p).startswith("torcs/") for p in patterns):
        out.update(torcs_catalogue(cfg.get("torcs_dir") or TORCS_DIR, patterns))
    if cfg.get("folder"):
        out.update(_folder(cfg["folder"]))
    return out


def _load(ref) -> tuple[np.ndarray, int]:
    kind, a, b = ref
    if kind == "zip":
        with zipfile.ZipFile(a) as z:
            data = z.read(b)
        return audio.read_audio(data, name=f"{a}:{b}")
    if kind == "bytes":
        return audio.read_audio(a, name=b)
    return audio.read_audio(a)


def _where(ref) -> str:
    kind, a, b = ref
    return f"{a}:{b}" if kind == "zip" else (b if kind == "bytes" else a)


# --------------------------------------------------------------------------- prepare


def prepare(cfg: dict) -> hfds.Dataset:
    """Build the noise dataset described by the ``prepare_noise`` params section (module docstring)."""
    sr = int(cfg["sampling_rate"])
    silence_db = float(cfg.get("silence_db", SILENCE_DB))
    patterns = list(cfg["recordings"])
    targets = list(cfg["target_recordings"])
    cat = catalogue(cfg, patterns)
    ids = sorted(cat)
    selected = select(ids, patterns, f"{_KEY}.recordings")
    if cfg.get("folder"):
        selected.update(i for i in ids if i.startswith("folder/"))
    if not selected:
        raise ShiftlabError(f"{_KEY}.recordings: no recordings selected (and no {_KEY}.folder)")
    chosen = sorted(selected)
    held = select(chosen, targets, f"{_KEY}.target_recordings", "none of the selected recordings", known=False)
    if not held:
        raise ShiftlabError(f"{_KEY}.target_recordings: no recording is held out for the target domain")
    if held == set(chosen):
        raise ShiftlabError(
            f"{_KEY}.target_recordings: every selected recording is held out for the target; none is left for synthesis"
        )
    for rid in sorted(held):  # a TORCS car is held out whole: never some of its loops in the target, some not
        car = cat[rid].get("car") if rid.startswith("torcs/") else None
        rest = [i for i in chosen if car and i not in held and i.startswith("torcs/") and cat[i].get("car") == car]
        if rest:
            raise ShiftlabError(f"{_KEY}.target_recordings: {rid} holds out the TORCS car {car} but not its other "
                                f"recording(s) {', '.join(rest)} (hold out all of a car's recordings)")

    def work(rid):
        ref = cat[rid]["ref"]
        x, orig = _load(ref)
        audio.check_noise_clip(x, _where(ref), silence_db, f"{_KEY}.silence_db")  # silent, constant or DC-shifted
        return audio.resample(x, orig, sr), orig, len(x)

    results = audio.map_ordered(work, chosen, 0, "reading noise")
    names = sorted({cat[i]["kind"] for i in chosen})
    rows = []
    for rid, (y, orig, m) in zip(chosen, results):
        d = cat[rid]
        rows.append(
            dict(
                id=rid,
                audio=y,
                sampling_rate=sr,
                label=d["kind"],
                domain="target" if rid in held else "source",
                group=d.get("group", rid),
                recipe=store.recipe(**d["recipe"], recording=rid, sampling_rate=orig, seconds=round(m / orig, 6)),
            )
        )
    return audio.build_dataset(rows, names)
