"""Speech sources: clean TTS words (source domain) and real recorded words (target domain).

:func:`prepare` builds one ``Dataset`` in the audio schema
(:func:`shiftlab.datasets.schema.audio_features`) from the ``prepare_speech`` params
section: rows of domain ``source`` (``prepare_speech.source``: ``tts`` or ``folder``)
and ``target`` (``prepare_speech.target``: ``real`` or ``folder``), only words of the
vocabulary, label names = the vocabulary words in their given order. Every clip is
mono float32 (:func:`shiftlab.datasets.audio.read_audio`: channels are averaged),
resampled to ``sampling_rate`` and length-normalised to
``round(clip_seconds * sampling_rate)`` samples by
:func:`shiftlab.datasets.audio.fix_length` (centred zero padding; long clips keep the
window centred on the energy peak).

Every clip read or synthesised must be speech-like before it becomes a row
(:func:`shiftlab.datasets.audio.check_speech_clip`): at least ``min_seconds`` long,
not silent or constant (RMS, also without its mean, at or above ``silence_db``
dBFS); a WAV cut off before the end of its declared data is refused on reading. Each
refusal is a one-line error naming the file.

* :func:`tts_speech` -- espeak-ng accents x variants and flite voices, seeded speed/pitch;
* :func:`real_speech` -- the Debian packages ``trigger-rally-data`` (three rally
  codrivers), ``asterisk-core-sounds-en-wav`` (Allison) and ``saytime``;
* :func:`folder_speech` -- a user folder with one subfolder per word.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path
from typing import Sequence

import datasets as hfds
import numpy as np

from shiftlab import seeding, store
from shiftlab.datasets import audio, folders
from shiftlab.errors import ShiftlabError

_KEY = "prepare_speech"

PACE_NOTES = [
    "chicane", "cut", "dirt", "dont", "easy", "finish", "flat", "grass", "gravel", "hairpin",
    "hard", "ice", "into", "jump", "left", "long", "medium", "mud", "over", "right",
    "sand", "snow", "square", "tarmac", "water",
]  # fmt: skip
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
VOCABULARIES = {"pace_notes": PACE_NOTES, "digits": DIGITS}

# file stems that are numbers (Allison's digits/, saytime) -> words
NUMBER_WORDS = {
    **{str(i): w for i, w in enumerate(DIGITS)},
    **dict(zip(map(str, range(10, 21)), [
        "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
        "eighteen", "nineteen", "twenty",
    ])),
    **dict(zip(map(str, range(30, 100, 10)), ["thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"])),
}  # fmt: skip

SPEAKERS = ("trigger_rally/ab", "trigger_rally/paula", "trigger_rally/tim", "asterisk/allison", "saytime")
PACKAGES = {
    "trigger_rally": "trigger-rally-data",
    "asterisk": "asterisk-core-sounds-en-wav",
    "saytime": "saytime",
    "espeak-ng": "espeak-ng",
    "flite": "flite",
}
ALLISON_FOLDERS = ("digits", ".", "phonetic", "letters")  # searched in this order

SILENCE_DB = -60.0  # quieter clips are refused (real words of the default data: -38 dBFS and up)
MIN_SECONDS = 0.05  # shorter clips are refused (shortest real word of the default data: 0.15 s)

ESPEAK_DEFAULT_SPEED = 175  # espeak-ng's default words per minute: flite duration_stretch = 175 / speed


# --------------------------------------------------------------------------- vocabulary


def resolve_vocabulary(vocabulary) -> list[str]:
    """A preset name (``pace_notes``, ``digits``) or a list of words -> the list of words."""
    key = f"{_KEY}.vocabulary"
    if isinstance(vocabulary, str):
        if vocabulary not in VOCABULARIES:
            raise ShiftlabError(
                f"{key}: unknown preset {vocabulary!r}; use one of {', '.join(VOCABULARIES)} or a list of words"
            )
        return list(VOCABULARIES[vocabulary])
    if not isinstance(vocabulary, (list, tuple)) or not vocabulary:
        raise ShiftlabError(
            f"{key}: must be a preset name ({', '.join(VOCABULARIES)}) or a non-empty list of words, got {vocabulary!r}"
        )
    words = []
    for w in vocabulary:
        if not isinstance(w, str) or not w.strip() or "/" in w or w.startswith("-") or w != w.strip():
            raise ShiftlabError(f"{key}: {w!r} is not a word (non-empty text without '/', no leading '-' or spaces)")
        if w in words:
            raise ShiftlabError(f"{key}: word {w!r} is listed twice")
        words.append(w)
    return words


# --------------------------------------------------------------------------- prepare


def prepare(cfg: dict) -> hfds.Dataset:
    """Build the speech dataset described by the ``prepare_speech`` params section."""
    vocab = resolve_vocabulary(cfg["vocabulary"])
    sr = int(cfg["sampling_rate"])
    n = int(round(cfg["clip_seconds"] * sr))
    folder = cfg["folder"]
    gate = dict(silence_db=float(cfg.get("silence_db", SILENCE_DB)), min_seconds=float(cfg.get("min_seconds", MIN_SECONDS)))

    if cfg["source"] == "tts":
        t = cfg["tts"]
        src = tts_speech(
            vocab, sr, n, t["espeak_voices"], t["flite_voices"], t["speed"], t["pitch"], t["takes"], cfg["seed"], t["workers"],
            **gate,
        )
    elif cfg["source"] == "folder":
        if not folder["source"]:
            raise ShiftlabError(f"{_KEY}.folder.source: required when {_KEY}.source is folder")
        src = folder_speech(folder["source"], "source", sr, n, vocab, folder["group_pattern"], **gate)
    else:
        raise ShiftlabError(f"{_KEY}.source: unknown source {cfg['source']!r} (tts, folder)")

    if cfg["target"] == "real":
        r = cfg["real"]
        tgt = real_speech(r["speakers"], vocab, sr, n, r["trigger_rally_zip"], r["asterisk_dir"], r["saytime_dir"], **gate)
    elif cfg["target"] == "folder":
        if not folder["target"]:
            raise ShiftlabError(f"{_KEY}.folder.target: required when {_KEY}.target is folder")
        tgt = folder_speech(folder["target"], "target", sr, n, vocab, folder["group_pattern"], **gate)
    else:
        raise ShiftlabError(f"{_KEY}.target: unknown target {cfg['target']!r} (real, folder)")

    if len(src) == 0:
        raise ShiftlabError(f"{_KEY}.tts: no source rows: espeak_voices is 0 and flite_voices is empty")
    if len(tgt) == 0:
        if cfg["target"] == "real":
            raise ShiftlabError(
                f"{_KEY}.real.speakers: no target rows: none of {', '.join(cfg['real']['speakers'])} "
                f"says a word of {_KEY}.vocabulary"
            )
        raise ShiftlabError(f"{_KEY}.target: no target rows for the words of {_KEY}.vocabulary")
    return hfds.concatenate_datasets([src, tgt])


# --------------------------------------------------------------------------- real speech


def _need(path: str | os.PathLike, package: str, key: str, is_dir: bool) -> Path:
    p = Path(path)
    ok = p.is_dir() if is_dir else p.is_file()
    if not ok:
        raise ShiftlabError(
            f"{p}: {'folder' if is_dir else 'file'} not found (install the Debian package {package}, or set {key})"
        )
    return p


def _trigger_rally_items(speaker: str, vocab: set, zip_path: str) -> list[tuple]:
    name = speaker.split("/", 1)[1]
    path = _need(zip_path, PACKAGES["trigger_rally"], f"{_KEY}.real.trigger_rally_zip", False)
    try:
        with zipfile.ZipFile(path) as z:
            members = z.namelist()
    except (zipfile.BadZipFile, OSError) as e:
        raise ShiftlabError(f"{path}: not a readable zip file ({e})") from None
    prefix = f"sounds/codriver/{name}/"
    out = []
    for m in sorted(members):
        if not m.startswith(prefix) or not m.lower().endswith(".wav") or "/" in m[len(prefix) :]:
            continue
        stem = m[len(prefix) : -4]
        # ab's files are CamelCase (Hairpin.wav) and include compounds (LeftLongCut.wav): one capital = one word
        if sum(c.isupper() for c in stem) > 1:
            continue
        word = stem.lower()
        if word in vocab:
            out.append((word, ("zip", str(path), m)))
    if not out and not any(m.startswith(prefix) for m in members):
        raise ShiftlabError(f"{path}: has no {prefix} (is it the data.zip of {PACKAGES['trigger_rally']}?)")
    return out


def _stem_word(stem: str) -> str | None:
    if stem in NUMBER_WORDS:
        return NUMBER_WORDS[stem]
    if re.fullmatch(r"[a-z]+", stem):
        return stem
    return None


def _allison_items(vocab: set, folder: str) -> list[tuple]:
    root = _need(folder, PACKAGES["asterisk"], f"{_KEY}.real.asterisk_dir", True)
    out = []
    for sub in ALLISON_FOLDERS:
        d = root / sub
        if not d.is_dir():
            continue
        for f in sorted(d.glob("*.wav")):
            # only digits/ holds number files; elsewhere numeric stems are other things (silence/1.wav)
            word = _stem_word(f.stem) if (sub == "digits" or not f.stem.isdigit()) else None
            if word in vocab:
                out.append((word, ("file", str(f), None)))
    return out


def _saytime_items(vocab: set, folder: str) -> list[tuple]:
    root = _need(folder, PACKAGES["saytime"], f"{_KEY}.real.saytime_dir", True)
    out = []
    for f in sorted(root.glob("*.au")):
        word = _stem_word(f.stem)
        if word in vocab:
            out.append((word, ("file", str(f), None)))
    return out


def _load_item(ref) -> tuple[np.ndarray, int]:
    kind, file, member = ref
    if kind == "zip":
        with zipfile.ZipFile(file) as z:
            try:
                data = z.read(member)
            except (KeyError, zipfile.BadZipFile, OSError) as e:
                raise ShiftlabError(f"{file}:{member}: cannot read zip member ({e})") from None
        return audio.read_audio(data, name=f"{file}:{member}")
    return audio.read_audio(file)


def _item_name(ref) -> str:
    kind, file, member = ref
    return f"{file}:{member}" if kind == "zip" else str(file)


def real_speech(
    speakers: Sequence[str],
    vocabulary,
    sampling_rate: int,
    n_samples: int,
    trigger_rally_zip: str = "/usr/share/games/trigger-rally/data.zip",
    asterisk_dir: str = "/usr/share/asterisk/sounds/en_US_f_Allison",
    saytime_dir: str = "/usr/share/saytime",
    silence_db: float = SILENCE_DB,
    min_seconds: float = MIN_SECONDS,
) -> hfds.Dataset:
    """Recorded words of real speakers from Debian packages (domain ``target``).

    Speakers: ``trigger_rally/ab``, ``trigger_rally/paula``, ``trigger_rally/tim``
    (``sounds/codriver/<name>/*.wav`` read straight from the trigger-rally ``data.zip``;
    ab's CamelCase names are lower-cased and his compounds such as ``LeftLongCut`` are
    skipped), ``asterisk/allison`` (``digits/<n>.wav`` for numbers 0-20, 30..90 as
    words; other files whose stem is a plain lower-case word in ``digits/``, the top
    folder, ``phonetic/``, ``letters/``) and ``saytime`` (``<n>.au`` raw 8 kHz mu-law,
    same number and word rule). A speaker contributes only words of the vocabulary.

    Rows in speaker order (as given, duplicates dropped), then vocabulary order; id
    ``<speaker>/<word>`` (``/<k>`` appended, k = 0, 1, ..., when a speaker has several
    files for a word); group = speaker; recipe = source, file and zip member.
    """
    vocab = resolve_vocabulary(vocabulary)
    order = {w: i for i, w in enumerate(vocab)}
    wanted = set(vocab)
    seen = []
    for s in speakers:
        if s not in SPEAKERS:
            raise ShiftlabError(f"{_KEY}.real.speakers: unknown speaker {s!r}; known: {', '.join(SPEAKERS)}")
        if s not in seen:
            seen.append(s)
    jobs = []  # (speaker, word, k, ref)
    for s in seen:
        if s.startswith("trigger_rally/"):
            items = _trigger_rally_items(s, wanted, trigger_rally_zip)
        elif s == "asterisk/allison":
            items = _allison_items(wanted, asterisk_dir)
        else:
            items = _saytime_items(wanted, saytime_dir)
        items.sort(key=lambda it: order[it[0]])  # stable: keeps file order within a word
        per_word: dict[str, int] = {}
        for word, ref in items:
            per_word[word] = per_word.get(word, 0) + 1
        counter: dict[str, int] = {}
        for word, ref in items:
            k = counter.get(word, 0)
            counter[word] = k + 1
            jobs.append((s, word, k if per_word[word] > 1 else None, ref))

    def work(job):
        x, sr = _load_item(job[3])
        audio.check_speech_clip(x, sr, _item_name(job[3]), silence_db, min_seconds, _KEY)
        return audio.to_mono_rate(x, sr, sampling_rate, n_samples), sr, len(x)

    results = audio.map_ordered(work, jobs, 0, "reading real speech")
    rows = []
    for (s, word, k, ref), (y, sr, m) in zip(jobs, results):
        kind, file, member = ref
        rec = dict(source=s.split("/")[0], speaker=s, word=word, file=file, sampling_rate=sr, seconds=round(m / sr, 6))
        if member is not None:
            rec["member"] = member
        rows.append(
            dict(
                id=f"{s}/{word}" + (f"/{k}" if k is not None else ""),
                audio=y,
                sampling_rate=sampling_rate,
                label=word,
                domain="target",
                group=s,
                recipe=store.recipe(**rec),
            )
        )
    return audio.build_dataset(rows, vocab)


# --------------------------------------------------------------------------- TTS


def _binary(name: str) -> str:
    exe = shutil.which(name)
    if exe is None:
        raise ShiftlabError(f"{name}: command not found (install the Debian package {PACKAGES[name]})")
    return exe


def _run(cmd: list[str], what: str) -> bytes:
    try:
        p = subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ShiftlabError(f"{what}: failed to run ({e})") from None
    if p.returncode != 0:
        err = " ".join(p.stderr.decode("utf-8", "replace").split())[:200]
        raise ShiftlabError(f"{what}: exited with status {p.returncode} ({err})")
    return p.stdout


def _espeak_listing(exe: str, arg: str) -> list[tuple[str, str]]:
    """(language, file) pairs of ``espeak-ng --voices=<arg>``."""
    text = _run([exe, f"--voices={arg}"], f"espeak-ng --voices={arg}").decode("utf-8", "replace")
    out = []
    for line in text.splitlines()[1:]:
        m = re.match(r"\s*\d+\s+(\S+)\s+\S+\s+\S+\s+(.+?)\s*(\(.*\))?\s*$", line)
        if m:
            out.append((m.group(1), m.group(2)))
    return out


@functools.lru_cache(maxsize=4)
def _espeak_catalogue(exe: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    accents = sorted(
        {lang for lang, file in _espeak_listing(exe, "en") if lang.startswith("en") and not file.startswith(("mb/", "!v/"))}
    )
    variants = sorted({file[3:] for _, file in _espeak_listing(exe, "variant") if file.startswith("!v/")})
    return tuple(accents), tuple(variants)


def list_espeak_voices(exe: str | None = None) -> list[str]:
    """Every ``<accent>+<variant>`` espeak-ng voice, sorted.

    Accents: the English voices of ``espeak-ng --voices=en`` (their language codes,
    e.g. ``en-gb``, ``en-us``, ``en-gb-scotland``, ``en-029``); MBROLA voices (``mb/``,
    need extra data) and variants are left out. Variants: the files of
    ``espeak-ng --voices=variant`` (``m1``..``m8``, ``f1``..``f5``, ``klatt``, ...).
    """
    accents, variants = _espeak_catalogue(exe or _binary("espeak-ng"))
    return [f"{a}+{v}" for a in accents for v in variants]


@functools.lru_cache(maxsize=4)
def list_flite_voices(exe: str | None = None) -> tuple[str, ...]:
    """Voices of ``flite -lv``."""
    exe = exe or _binary("flite")
    text = _run([exe, "-lv"], "flite -lv").decode("utf-8", "replace")
    return tuple(text.split(":", 1)[1].split()) if ":" in text else tuple(text.split())


def choose_espeak_voices(k: int, seed: int, exe: str | None = None) -> list[str]:
    """``k`` espeak-ng voices: a seeded permutation of the sorted voice list, first ``k``, sorted.

    Increasing ``k`` keeps the voices chosen for a smaller ``k``.
    """
    if k <= 0:
        return []
    voices = list_espeak_voices(exe)
    if k > len(voices):
        raise ShiftlabError(f"{_KEY}.tts.espeak_voices: {k} asked, but only {len(voices)} espeak-ng voices exist")
    perm = seeding.sample_rng(seed, 0, "espeak_voices").permutation(len(voices))
    return sorted(voices[i] for i in perm[:k])


def tts_draw(seed: int, engine: str, voice: str, word: str, take: int, speed, pitch) -> tuple[int, int]:
    """The (speed, pitch) of one TTS clip: integers from the inclusive ranges.

    Drawn from ``seeding.sample_rng(seed, take, "tts", engine, voice, word)``: a clip's
    draw does not depend on which other voices or words are synthesised.
    """
    rng = seeding.sample_rng(seed, take, "tts", engine, voice, word)
    s = int(rng.integers(int(speed[0]), int(speed[1]) + 1))
    p = int(rng.integers(int(pitch[0]), int(pitch[1]) + 1))
    return s, p


def _synth(job, exes, tmpdir: str) -> tuple[np.ndarray, int]:
    engine, voice, word, take, speed, pitch = job
    if engine == "espeak":
        cmd = [exes["espeak"], "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", word]
        data = _run(cmd, f"espeak-ng -v {voice} {word!r}")
        return audio.read_audio(data, name=f"espeak-ng -v {voice} -s {speed} -p {pitch} {word!r}")
    fd, name = tempfile.mkstemp(suffix=".wav", dir=tmpdir)
    os.close(fd)
    out = Path(name)
    stretch = ESPEAK_DEFAULT_SPEED / speed
    cmd = [exes["flite"], "-voice", voice, "--setf", f"duration_stretch={stretch:.6f}", "-t", word, "-o", str(out)]
    _run(cmd, f"flite -voice {voice} {word!r}")
    try:
        return audio.read_audio(out, name=f"flite -voice {voice} {word!r}")
    finally:
        out.unlink(missing_ok=True)


def tts_speech(
    vocabulary,
    sampling_rate: int,
    n_samples: int,
    espeak_voices: int = 36,
    flite_voices: Sequence[str] = ("kal16", "awb", "rms", "slt"),
    speed: Sequence[int] = (130, 200),
    pitch: Sequence[int] = (25, 75),
    takes: int = 1,
    seed: int = 0,
    workers: int = 0,
    silence_db: float = SILENCE_DB,
    min_seconds: float = MIN_SECONDS,
) -> hfds.Dataset:
    """Clean synthetic words (domain ``source``, origin ``real``: they are source data, not mixes).

    * espeak-ng: ``espeak_voices`` voices chosen by :func:`choose_espeak_voices`;
      ``espeak-ng -v <accent>+<variant> -s <speed> -p <pitch> --stdout <word>``.
    * flite: the named voices (checked against ``flite -lv``); ``flite -voice <v>
      --setf duration_stretch=<175/speed> -t <word> -o <file>``. The installed flite
      2.2 has no pitch control that works for every voice (``int_f0_target_mean`` is
      ignored by rms and voice-relative elsewhere), so flite rows record ``pitch``
      null; speed is applied.
    * Per (engine, voice, word, take) speed and pitch come from :func:`tts_draw`.

    Rows are sorted by (engine, voice, word in vocabulary order, take) whatever order
    the ``workers`` threads finish in (0 = one per CPU); id
    ``<engine>/<voice>/<word>/<take>``; group ``<engine>/<voice>``; recipe = engine,
    voice, word, speed, pitch, take, seed, native sampling rate.
    """
    vocab = resolve_vocabulary(vocabulary)
    fl = list(flite_voices or [])
    exes = {}
    voices_e = []
    if espeak_voices:
        exes["espeak"] = _binary("espeak-ng")
        voices_e = choose_espeak_voices(int(espeak_voices), seed, exes["espeak"])
    if fl:
        exes["flite"] = _binary("flite")
        known = list_flite_voices(exes["flite"])
        bad = [v for v in fl if v not in known]
        if bad:
            raise ShiftlabError(
                f"{_KEY}.tts.flite_voices: unknown flite voice(s) {', '.join(bad)}; installed: {', '.join(known)}"
            )
        if len(set(fl)) != len(fl):
            raise ShiftlabError(f"{_KEY}.tts.flite_voices: a voice is listed twice")
    jobs = []
    for engine, voices in (("espeak", voices_e), ("flite", sorted(fl))):
        for voice in voices:
            for word in vocab:
                for take in range(int(takes)):
                    s, p = tts_draw(seed, engine, voice, word, take, speed, pitch)
                    jobs.append((engine, voice, word, take, s, p))

    with tempfile.TemporaryDirectory(prefix="shiftlab-tts-") as tmp:

        def work(job):
            x, sr = _synth(job, exes, tmp)
            engine, voice, word, _, speed, pitch = job
            audio.check_speech_clip(x, sr, f"{engine} voice {voice} (speed {speed}, pitch {pitch}) saying {word!r}",
                                    silence_db, min_seconds, _KEY)
            return audio.to_mono_rate(x, sr, sampling_rate, n_samples), sr

        results = audio.map_ordered(work, jobs, workers, "synthesising speech")
    rows = []
    for (engine, voice, word, take, s, p), (y, sr) in zip(jobs, results):
        group = f"{engine}/{voice}"
        rows.append(
            dict(
                id=f"{group}/{word}/{take}",
                audio=y,
                sampling_rate=sampling_rate,
                label=word,
                domain="source",
                group=group,
                recipe=store.recipe(
                    source="tts",
                    engine=engine,
                    voice=voice,
                    word=word,
                    speed=s,
                    pitch=p if engine == "espeak" else None,
                    take=take,
                    seed=seed,
                    sampling_rate=sr,
                ),
            )
        )
    return audio.build_dataset(rows, vocab)


# --------------------------------------------------------------------------- folders


def folder_speech(
    path,
    domain: str,
    sampling_rate: int,
    n_samples: int,
    vocabulary=None,
    group_pattern: str | None = None,
    silence_db: float = SILENCE_DB,
    min_seconds: float = MIN_SECONDS,
) -> hfds.Dataset:
    """Words from a folder with one subfolder per class (the word).

    Audio files are found recursively under each class folder (wav, flac, ogg, oga,
    opus, au, snd, aiff, aif, aifc, mp3, caf, w64, any case; hidden entries skipped;
    other files ignored) in sorted order. With a ``vocabulary`` only class folders
    named by one of its words are used and the label names are the vocabulary;
    without, every class folder is used and the label names are the sorted folder
    names.

    ``group_pattern``: a regex searched in the file's path relative to its class
    folder (posix, without extension); the group is ``<domain>/`` + its first capture
    group (or the whole match); a file it does not match is an error. By default
    every file is its own group (its row id ``<domain>/<class>/<relative path>``).
    """
    key = f"{_KEY}.folder.group_pattern"
    if domain not in ("source", "target"):
        raise ValueError(f"domain must be source or target, got {domain!r}")
    regex = folders.group_regex(group_pattern, key)
    root = Path(path)
    classes = [d.name for d in folders.class_folders(root, f"{_KEY}.folder.{domain}", "word")]
    if vocabulary is not None:
        names = resolve_vocabulary(vocabulary)
        used = [c for c in classes if c in set(names)]
        if not used:
            raise ShiftlabError(
                f"{root}: none of its class folders ({', '.join(classes[:8])}{', ...' if len(classes) > 8 else ''}) "
                f"is a word of {_KEY}.vocabulary"
            )
        used.sort(key=names.index)
    else:
        names = used = classes
    jobs = []  # (class, rel, path, group)
    for cls in used:
        files = audio.audio_files(root / cls)
        if not files:
            raise ShiftlabError(
                f"{root / cls}: no audio files (looked for {', '.join(e[1:] for e in audio.AUDIO_EXTENSIONS)})"
            )
        for f in files:
            rel = f.relative_to(root / cls).as_posix()
            row_id = f"{domain}/{cls}/{rel}"
            jobs.append((cls, rel, f, folders.group_of(regex, domain, rel, f, row_id, key), row_id))

    def work(job):
        x, sr = audio.read_audio(job[2])
        audio.check_speech_clip(x, sr, str(job[2]), silence_db, min_seconds, _KEY)
        return audio.to_mono_rate(x, sr, sampling_rate, n_samples), sr, len(x)

    results = audio.map_ordered(work, jobs, 0, f"reading {domain} speech")
    rows = [
        dict(
            id=row_id,
            audio=y,
            sampling_rate=sampling_rate,
            label=cls,
            domain=domain,
            group=group,
            recipe=store.recipe(
                source="folder", folder=str(path), file=f"{cls}/{rel}", sampling_rate=sr, seconds=round(m / sr, 6)
            ),
        )
        for (cls, rel, f, group, row_id), (y, sr, m) in zip(jobs, results)
    ]
    return audio.build_dataset(rows, names)


# --------------------------------------------------------------------------- held-out TTS voices (the target)

#: The recorded person behind each flite / festival voice. Voices built from one person's
#: recordings (flite's kal16 and festival's kal_diphone: the CMU "kal" diphone database;
#: flite's slt and festival's cmu_us_slt_arctic_hts: the CMU ARCTIC "slt" speaker) are ONE
#: identity: a voice held out for the target must not share its person with a source voice.
SPEAKER_OF = {
    "flite": {"kal": "kal", "kal16": "kal", "awb": "awb", "awb_time": "awb", "rms": "rms", "slt": "slt"},
    "festival": {"kal_diphone": "kal", "ked_diphone": "ked", "rab_diphone": "rab", "cmu_us_slt_arctic_hts": "slt",
                 "cmu_us_awb_cg": "awb", "cmu_us_rms_cg": "rms", "cmu_us_slt_cg": "slt"},
}
PACKAGES["festival"] = "festival"


def voice_identity(engine: str, voice: str) -> str:
    """Who a TTS voice is: ``espeak-variant/<variant>`` for espeak-ng (the variant sets the
    timbre: pitch, formants, breathiness; the accent only the pronunciation),
    ``speaker/<person>`` for flite and festival voices made from a person's recordings
    (:data:`SPEAKER_OF`), else ``<engine>/<voice>``."""
    if engine == "espeak":
        return f"espeak-variant/{voice.split('+', 1)[1] if '+' in voice else voice}"
    person = SPEAKER_OF.get(engine, {}).get(voice)
    return f"speaker/{person}" if person else f"{engine}/{voice}"


@functools.lru_cache(maxsize=4)
def list_festival_voices(exe: str | None = None) -> tuple[str, ...]:
    """Voices of ``festival`` (``(voice.list)``)."""
    exe = exe or _binary("festival")
    text = _run([exe, "-b", "(print (voice.list))"], "festival (voice.list)").decode("utf-8", "replace")
    return tuple(re.findall(r"[A-Za-z0-9_]+", text))


def _festival_can_stretch(voice: str) -> bool:
    """HTS voices ignore festival's Duration_Stretch (measured: festival 2.5, cmu_us_slt_arctic_hts)."""
    return not voice.endswith("_hts")


def _festival_batch(exe: str, voice: str, items: Sequence[tuple[str, int]], tmpdir: str) -> list[tuple[np.ndarray, int]]:
    """Render ``items`` ((word, speed) pairs) with ONE festival process (its start-up costs ~0.3 s).

    ``festival -b script.scm``: ``(voice_<voice>)``, then per item
    ``(Parameter.set 'Duration_Stretch 175/speed)`` (diphone voices) and
    ``(utt.save.wave (utt.synth (Utterance Text "<word>")) "<file>" 'riff)``.
    """
    d = Path(tempfile.mkdtemp(prefix=f"festival-{voice}-", dir=tmpdir))
    lines = [f"(voice_{voice})"]
    files = []
    for k, (word, speed) in enumerate(items):
        f = d / f"{k}.wav"
        files.append(f)
        if _festival_can_stretch(voice):
            lines.append(f"(Parameter.set 'Duration_Stretch {ESPEAK_DEFAULT_SPEED / speed:.6f})")
        text = word.replace("\\", "\\\\").replace('"', '\\"')
        lines.append(f'(utt.save.wave (utt.synth (Utterance Text "{text}")) "{f}" \'riff)')
    script = d / "render.scm"
    script.write_text("\n".join(lines) + "\n")
    _run([exe, "-b", str(script)], f"festival voice {voice}")
    out = []
    for (word, speed), f in zip(items, files):
        if not f.is_file():
            raise ShiftlabError(f"festival voice {voice} saying {word!r}: wrote no audio (is the voice installed?)")
        out.append(audio.read_audio(f, name=f"festival voice {voice} saying {word!r}"))
    shutil.rmtree(d, ignore_errors=True)
    return out


def heldout_espeak_voices(source_identities, k: int | None, seed: int, exe: str | None = None,
                          key: str = "target_mix.tts") -> list[str]:
    """espeak-ng voices for the target: ONE voice per variant that no source voice uses.

    The variants whose identity (:func:`voice_identity`) is not in ``source_identities``,
    sorted; ``k`` of them (None = all) by a seeded permutation; each gets one accent, drawn
    per variant from ``seeding.sample_rng(seed, 0, "target_accent", variant)`` (so the
    voices are disjoint from the source by variant, and from each other).
    """
    accents, variants = _espeak_catalogue(exe or _binary("espeak-ng"))
    src = set(source_identities)
    free = [v for v in variants if voice_identity("espeak", f"x+{v}") not in src]
    if k is not None:
        if k > len(free):
            raise ShiftlabError(f"{key}.espeak_variants: {k} asked, but only {len(free)} espeak-ng variants are not "
                                f"used by a source voice")
        perm = seeding.sample_rng(seed, 0, "target_variants").permutation(len(free))
        free = sorted(free[i] for i in perm[:k])
    return [f"{accents[int(seeding.sample_rng(seed, 0, 'target_accent', v).integers(len(accents)))]}+{v}" for v in free]


def heldout_tts_speech(
    vocabulary,
    sampling_rate: int,
    n_samples: int,
    source_voices: Sequence[tuple[str, str]] = (),
    espeak_variants: int | str = "all",
    flite_voices: Sequence[str] = (),
    festival_voices: Sequence[str] = (),
    speed: Sequence[int] = (130, 200),
    pitch: Sequence[int] = (25, 75),
    takes: int = 1,
    seed: int = 0,
    workers: int = 0,
    silence_db: float = SILENCE_DB,
    min_seconds: float = MIN_SECONDS,
    key: str = "target_mix.tts",
) -> hfds.Dataset:
    """Target-domain words from TTS voices the source never uses (disjoint by voice identity).

    ``source_voices``: the (engine, voice) pairs of the source rows; a voice whose
    :func:`voice_identity` is one of theirs is refused (a one-line error naming it), and so
    is a named voice that is not installed. Voices: :func:`heldout_espeak_voices`
    (``espeak_variants``: ``all`` = every free variant, or how many; 0 = none), the named flite voices and festival
    voices (Debian ``festival`` + ``festvox-*``: kal_diphone, ked_diphone,
    cmu_us_slt_arctic_hts). Every voice says every word ``takes`` times, speed and pitch
    drawn per take by :func:`tts_draw` (espeak-ng: ``-s``/``-p``; flite and festival
    diphone voices: duration stretch ``175/speed``, no pitch; festival HTS voices ignore the
    stretch, so they get ONE take and record speed null).

    Rows: domain ``target``, origin ``real`` (synthetic voices, but the target's speech
    as given: nothing of the source made them), id ``<engine>/<voice>/<word>/<take>``,
    group = the voice identity's group: ``espeak/<accent>+<variant>`` (one voice per
    variant) or ``speaker/<person>`` (e.g. speaker/kal = flite kal16 + festival
    kal_diphone: one person, one group); recipe = engine, voice, identity, word, speed,
    pitch, take, seed, native sampling rate, ``"heldout": true``. Sorted by (engine, voice,
    word in vocabulary order, take) whatever order the ``workers`` threads finish in.
    """
    vocab = resolve_vocabulary(vocabulary)
    src_ids = {voice_identity(e, v) for e, v in source_voices}
    exes = {}
    voices: list[tuple[str, str]] = []
    if espeak_variants == "all" or espeak_variants:
        exes["espeak"] = _binary("espeak-ng")
        k = None if espeak_variants == "all" else int(espeak_variants)
        voices += [("espeak", v) for v in heldout_espeak_voices(src_ids, k, seed, exes["espeak"], key)]
    for engine, names, lister in (("flite", flite_voices, list_flite_voices),
                                  ("festival", festival_voices, list_festival_voices)):
        names = list(names or [])
        if not names:
            continue
        exes[engine] = _binary(engine)
        known = lister(exes[engine])
        bad = [v for v in names if v not in known]
        if bad:
            raise ShiftlabError(f"{key}.{engine}_voices: unknown {engine} voice(s) {', '.join(bad)}; installed: "
                                f"{', '.join(known)}")
        if len(set(names)) != len(names):
            raise ShiftlabError(f"{key}.{engine}_voices: a voice is listed twice")
        for v in sorted(names):
            ident = voice_identity(engine, v)
            if ident in src_ids:
                raise ShiftlabError(f"{key}.{engine}_voices: {v} is {ident}, a voice the source uses "
                                    f"(prepare_speech.tts); target voices must be held out")
            voices.append((engine, v))
    if not voices:
        raise ShiftlabError(f"{key}: no voices (espeak_variants 0 and no flite or festival voices)")
    units = []  # festival voices first (one process each, the longest units), then one unit per clip
    clips = []  # (engine, voice, word, take, speed, pitch) in row order
    for engine, voice in voices:
        n_takes = 1 if engine == "festival" and not _festival_can_stretch(voice) else int(takes)
        batch = []
        for word in vocab:
            for take in range(n_takes):
                s, p = tts_draw(seed, engine, voice, word, take, speed, pitch)
                if engine != "espeak":
                    p = None
                if engine == "festival" and not _festival_can_stretch(voice):
                    s = None
                job = (engine, voice, word, take, s, p)
                clips.append(job)
                batch.append(job)
        if engine == "festival":
            units.insert(0, ("festival", voice, batch))
        else:
            units += [("clip", None, [job]) for job in batch]

    with tempfile.TemporaryDirectory(prefix="shiftlab-tts-target-") as tmp:

        def work(unit):
            kind, voice, jobs = unit
            if kind == "festival":
                outs = _festival_batch(exes["festival"], voice, [(j[2], j[4] or ESPEAK_DEFAULT_SPEED) for j in jobs],
                                       tmp)
            else:
                j = jobs[0]
                outs = [_synth((j[0], j[1], j[2], j[3], j[4], j[5] if j[5] is not None else 50), exes, tmp)]
            res = {}
            for j, (x, sr) in zip(jobs, outs):
                audio.check_speech_clip(x, sr, f"{j[0]} voice {j[1]} (speed {j[4]}, pitch {j[5]}) saying {j[2]!r}",
                                        silence_db, min_seconds, key)
                res[j] = (audio.to_mono_rate(x, sr, sampling_rate, n_samples), sr)
            return res

        done = {}
        for r in audio.map_ordered(work, units, workers, "synthesising held-out voices"):
            done.update(r)
    rows = []
    for job in clips:
        engine, voice, word, take, s, p = job
        y, sr = done[job]
        ident = voice_identity(engine, voice)
        rows.append(dict(
            id=f"{engine}/{voice}/{word}/{take}", audio=y, sampling_rate=sampling_rate, label=word, domain="target",
            group=f"espeak/{voice}" if engine == "espeak" else ident,
            recipe=store.recipe(source="tts", engine=engine, voice=voice, identity=ident, word=word, speed=s, pitch=p,
                                take=take, seed=seed, sampling_rate=sr, heldout=True),
        ))
    return audio.build_dataset(rows, vocab)
