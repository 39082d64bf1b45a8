"""Audio sources: shared helpers, speech (folder, real, TTS) and noise (folder, OpenSFX, Debian)."""

from __future__ import annotations

import io
import json
import shutil
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from shiftlab import config, store
from shiftlab.datasets import audio, noise, schema, speech
from shiftlab.errors import ShiftlabError

SR = 8000


def tone(seconds=0.5, sr=SR, freq=440.0, amp=0.5, channels=1):
    t = np.arange(int(round(seconds * sr))) / sr
    x = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def burst(n, at, width, sr=SR):
    """Quiet noise floor with a loud tone burst of ``width`` samples starting at ``at``."""
    rng = np.random.default_rng(at)
    x = (0.001 * rng.standard_normal(n)).astype(np.float32)
    x[at : at + width] += tone(width / sr, sr, 300.0, 0.8)[:width]
    return x


def write(path: Path, x, sr=SR, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x, sr, **kw)
    return path


def wav_bytes(x, sr=SR) -> bytes:
    b = io.BytesIO()
    sf.write(b, x, sr, format="WAV", subtype="PCM_16")
    return b.getvalue()


def make_cat(entries, flag=True) -> bytes:
    """A fake OpenSFX container: offset table, then (length byte, name NUL, RIFF blob) entries."""
    table = 8 * len(entries)
    body, offsets = b"", []
    for name, blob in entries:
        nb = name.encode() + b"\x00"
        offsets.append((table + len(body), len(blob)))
        body += bytes([len(nb)]) + nb + blob
    head = b"".join(struct.pack("<II", o | (0x80000000 if flag else 0), s) for o, s in offsets)
    return head + body


def speech_cfg(**over):
    cfg = config.defaults()["prepare_speech"]
    cfg.update(sampling_rate=SR, clip_seconds=0.25)
    for k, v in over.items():
        if isinstance(v, dict):
            cfg[k].update(v)
        else:
            cfg[k] = v
    return cfg


def noise_cfg(**over):
    cfg = config.defaults()["prepare_noise"]
    cfg.update(sampling_rate=SR)
    cfg.update(over)
    return cfg


@pytest.fixture
def word_folders(tmp_path):
    """source/ and target/ speech folders: words left, right, jump (+ an extra class not in the vocabulary)."""
    root = tmp_path / "speech"
    for d, (domain, rate) in enumerate((("source", 16000), ("target", 22050))):
        for w, word in enumerate(("left", "right", "jump", "other")):
            for s, spk in enumerate(("spk1", "spk2")):
                x = tone(0.15 + 0.05 * s, rate, 200 + 50 * w, 0.3, channels=1 + (s % 2))
                write(root / domain / word / f"{spk}_take{d}.wav", x, rate)
    return root


# --------------------------------------------------------------------------- read_audio


def test_read_audio_formats_and_channel_mean(tmp_path):
    st_ = np.stack([tone(0.2, SR, 300, 0.5), -tone(0.2, SR, 300, 0.25)], axis=1)
    x, sr = audio.read_audio(write(tmp_path / "stereo.wav", st_, SR, subtype="FLOAT"))
    assert sr == SR and x.dtype == np.float32 and x.ndim == 1
    np.testing.assert_allclose(x, st_.mean(axis=1), atol=1e-7)
    for name, kw in (("a.flac", {}), ("a.ogg", {}), ("a.au", {"subtype": "ULAW"}), ("a.aiff", {})):
        y, r = audio.read_audio(write(tmp_path / name, tone(0.2, 11025), 11025, **kw))
        assert r == 11025 and y.dtype == np.float32 and abs(len(y) - 2205) <= 2
    # headerless .au (saytime style): raw 8 kHz mu-law, by path and by bytes with a name
    raw = tmp_path / "raw.au"
    buf = io.BytesIO()
    sf.write(buf, tone(0.1), SR, format="RAW", subtype="ULAW")
    raw.write_bytes(buf.getvalue())
    a, ra = audio.read_audio(raw)
    b, rb = audio.read_audio(raw.read_bytes(), name="raw.au")
    assert ra == rb == 8000 and len(a) == len(b) == 800
    np.testing.assert_array_equal(a, b)
    # bytes input
    c, rc = audio.read_audio(wav_bytes(tone(0.1)), name="mem.wav")
    assert rc == SR and len(c) == 800


@pytest.mark.parametrize("case", ["missing", "zero_byte", "corrupt", "nan", "no_samples", "empty_bytes", "folder"])
def test_read_audio_errors_name_the_file(tmp_path, case):
    p = tmp_path / f"bad_{case}.wav"
    if case == "zero_byte":
        p.write_bytes(b"")
    elif case == "corrupt":
        p.write_bytes(b"RIFF\x00\x00garbage" * 20)
    elif case == "nan":
        x = tone(0.1)
        x[10] = np.nan
        write(p, x, subtype="FLOAT")
    elif case == "no_samples":
        write(p, np.zeros(0, np.float32))
    elif case == "folder":
        p.mkdir()
    with pytest.raises(ShiftlabError, match=f"bad_{case}.wav"):
        if case == "empty_bytes":
            audio.read_audio(b"", name=p.name)
        else:
            audio.read_audio(p)


# --------------------------------------------------------------------------- DSP


def test_resample_rate_length_and_frequency():
    x = tone(1.0, 22050, 1000.0)
    y = audio.resample(x, 22050, 16000)
    assert y.dtype == np.float32 and len(y) == 16000
    spec = np.abs(np.fft.rfft(y))
    assert abs(np.argmax(spec) * 16000 / len(y) - 1000.0) < 2
    assert audio.resample(x[:1001], 22050, 8000).shape == (int(np.ceil(1001 * 8000 / 22050)),)
    np.testing.assert_array_equal(audio.resample(x, 22050, 22050), x)
    np.testing.assert_array_equal(audio.resample(x, 22050, 16000), y)  # deterministic


def test_fix_length_pads_symmetrically():
    x = np.arange(1, 6, dtype=np.float32)
    out = audio.fix_length(x, 10)
    assert out.tolist() == [0, 0, 1, 2, 3, 4, 5, 0, 0, 0]  # odd remainder: extra zero on the right
    assert audio.fix_length(x, 9).tolist() == [0, 0, 1, 2, 3, 4, 5, 0, 0]
    assert audio.fix_length(x, 5).tolist() == x.tolist()


def test_fix_length_window_centred_on_energy_peak():
    n = 2000  # 0.25 s at 8 kHz
    x = burst(8000, 5000, 400)  # burst centred at 5200
    out = audio.fix_length(x, n, SR)
    start = int(np.flatnonzero(np.isin(x, out[:50]))[0])
    np.testing.assert_array_equal(out, x[start : start + n])
    assert abs((start + n // 2) - 5200) <= 80  # centred on the burst (within a frame)
    # near the edges the window is clamped inside the clip
    np.testing.assert_array_equal(audio.fix_length(burst(8000, 0, 100), n, SR), burst(8000, 0, 100)[:n])
    tail = burst(8000, 7900, 100)
    np.testing.assert_array_equal(audio.fix_length(tail, n, SR), tail[-n:])
    # an all-zero clip gives the middle window
    assert audio.energy_peak(np.zeros(8000, np.float32), SR) == 4000


@settings(max_examples=60, deadline=None)
@given(
    m=st.integers(1, 3000),
    n=st.integers(1, 2500),
    seed=st.integers(0, 2**16),
    sr=st.sampled_from([None, 4000, 8000]),
)
def test_fix_length_property(m, n, seed, sr):
    x = np.random.default_rng(seed).uniform(-1, 1, m).astype(np.float32)
    out = audio.fix_length(x, n, sr)
    assert out.shape == (n,) and out.dtype == np.float32
    if m <= n:
        left = (n - m) // 2
        np.testing.assert_array_equal(out[left : left + m], x)  # the clip is intact
        assert not out[:left].any() and not out[left + m :].any()
    else:
        starts = [s for s in range(m - n + 1) if np.array_equal(x[s : s + n], out)]
        assert starts  # a contiguous window of the clip


def test_is_silent():
    assert audio.is_silent(np.zeros(100, np.float32))
    assert audio.is_silent(np.zeros(0, np.float32))
    assert audio.is_silent(np.full(100, 1e-4, np.float32))  # -80 dBFS
    assert not audio.is_silent(tone(0.1, amp=0.01))  # about -43 dBFS
    assert audio.is_silent(tone(0.1, amp=0.01), threshold_db=-30)


# --------------------------------------------------------------------------- folder speech


def test_folder_speech_columns_labels_groups(word_folders):
    n = 2000
    ds = speech.folder_speech(word_folders / "source", "source", SR, n, ["jump", "left", "right"])
    schema.check(ds)
    assert list(ds.features) == list(schema.AUDIO_COLUMNS)
    assert schema.label_names(ds) == ["jump", "left", "right"]
    assert len(ds) == 6 and set(ds["domain"]) == {"source"} and set(ds["origin"]) == {"real"}
    assert set(ds["parent"]) == {""} and set(ds["sampling_rate"]) == {SR}
    assert {len(a) for a in ds["audio"]} == {n}
    assert ds[0]["id"] == "source/jump/spk1_take0.wav"
    assert ds["group"] == ds["id"]  # default: every file its own group
    rec = json.loads(ds[0]["recipe"])
    assert rec["file"] == "jump/spk1_take0.wav" and rec["sampling_rate"] == 16000 and rec["source"] == "folder"
    # without a vocabulary: every class folder, sorted names
    all_ = speech.folder_speech(word_folders / "target", "target", SR, n)
    assert schema.label_names(all_) == ["jump", "left", "other", "right"] and len(all_) == 8
    # group_pattern: first capture group, prefixed by the domain
    g = speech.folder_speech(word_folders / "target", "target", SR, n, "pace_notes", r"^(spk\d)_")
    assert Counter(g["group"]) == {"target/spk1": 3, "target/spk2": 3}
    whole = speech.folder_speech(word_folders / "target", "target", SR, n, ["left"], r"spk\d")
    assert set(whole["group"]) == {"target/spk1", "target/spk2"}


def test_folder_speech_errors(word_folders, tmp_path):
    n = 2000
    with pytest.raises(ShiftlabError, match=r"spk1_take0.wav.*prepare_speech.folder.group_pattern"):
        speech.folder_speech(word_folders / "source", "source", SR, n, ["left"], r"^speaker(\d)")
    with pytest.raises(ShiftlabError, match="prepare_speech.folder.group_pattern: invalid"):
        speech.folder_speech(word_folders / "source", "source", SR, n, ["left"], r"(")
    with pytest.raises(ShiftlabError, match="nowhere: folder not found"):
        speech.folder_speech(tmp_path / "nowhere", "source", SR, n)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ShiftlabError, match="empty: no class subfolders"):
        speech.folder_speech(tmp_path / "empty", "source", SR, n)
    (tmp_path / "noaudio" / "left").mkdir(parents=True)
    (tmp_path / "noaudio" / "left" / "notes.txt").write_text("hi")
    with pytest.raises(ShiftlabError, match="left: no audio files"):
        speech.folder_speech(tmp_path / "noaudio", "source", SR, n)
    with pytest.raises(ShiftlabError, match="is a word of prepare_speech.vocabulary"):
        speech.folder_speech(word_folders / "source", "source", SR, n, ["water"])
    for bad, make in (("zero.wav", lambda p: p.write_bytes(b"")), ("junk.wav", lambda p: p.write_bytes(b"\x01" * 99))):
        d = tmp_path / f"bad_{bad[:-4]}" / "left"
        write(d / "ok.wav", tone(0.1))
        make(d / bad)
        with pytest.raises(ShiftlabError, match=bad):
            speech.folder_speech(d.parent, "source", SR, n)
    x = tone(0.1)
    x[3] = np.inf
    write(tmp_path / "bad_inf" / "left" / "inf.wav", x, subtype="FLOAT")
    with pytest.raises(ShiftlabError, match=r"inf.wav: audio contains NaN"):
        speech.folder_speech(tmp_path / "bad_inf", "source", SR, n)


def test_vocabulary_resolution():
    assert speech.resolve_vocabulary("digits")[0] == "zero" and len(speech.VOCABULARIES["pace_notes"]) == 25
    assert speech.resolve_vocabulary(["a", "b"]) == ["a", "b"]
    for bad in ("colours", [], ["a", "a"], ["a/b"], [3], None):
        with pytest.raises(ShiftlabError, match="prepare_speech.vocabulary"):
            speech.resolve_vocabulary(bad)


def test_prepare_speech_folders(word_folders):
    cfg = speech_cfg(
        vocabulary=["left", "right", "jump"],
        source="folder",
        target="folder",
        folder={"source": str(word_folders / "source"), "target": str(word_folders / "target"), "group_pattern": r"(spk\d)"},
    )
    ds = speech.prepare(cfg)
    schema.check(ds)
    assert schema.label_names(ds) == ["left", "right", "jump"]
    assert Counter(ds["domain"]) == {"source": 6, "target": 6}
    assert set(ds["group"]) == {"source/spk1", "source/spk2", "target/spk1", "target/spk2"}
    assert {len(a) for a in ds["audio"]} == {round(0.25 * SR)}
    with pytest.raises(ShiftlabError, match="prepare_speech.folder.target: required"):
        speech.prepare(speech_cfg(source="folder", target="folder", folder={"source": str(word_folders / "source")}))
    with pytest.raises(ShiftlabError, match="prepare_speech.vocabulary"):
        speech.prepare(dict(cfg, vocabulary="nope"))


def test_prepare_speech_deterministic(word_folders, tmp_path):
    cfg = speech_cfg(
        vocabulary=["left", "jump"],
        source="folder",
        target="folder",
        folder={"source": str(word_folders / "source"), "target": str(word_folders / "target")},
    )
    a = store.save(speech.prepare(cfg), tmp_path / "a")
    b = store.save(speech.prepare(cfg), tmp_path / "b")
    assert store.tree_digest(a) == store.tree_digest(b)


def test_real_speech_arguments(tmp_path):
    with pytest.raises(ShiftlabError, match="prepare_speech.real.speakers: unknown speaker 'bob'"):
        speech.real_speech(["bob"], "digits", SR, 2000)
    with pytest.raises(ShiftlabError, match=r"nope.zip: file not found \(install the Debian package trigger-rally-data"):
        speech.real_speech(["trigger_rally/tim"], "pace_notes", SR, 2000, trigger_rally_zip=str(tmp_path / "nope.zip"))
    with pytest.raises(ShiftlabError, match=r"no_allison: folder not found \(install the Debian package asterisk-core"):
        speech.real_speech(["asterisk/allison"], "digits", SR, 2000, asterisk_dir=str(tmp_path / "no_allison"))
    with pytest.raises(ShiftlabError, match=r"no_saytime: folder not found \(install the Debian package saytime"):
        speech.real_speech(["saytime"], "digits", SR, 2000, saytime_dir=str(tmp_path / "no_saytime"))


def test_real_speech_from_made_packages(tmp_path):
    """The three layouts, rebuilt small: a codriver zip (CamelCase + compounds), Allison, saytime."""
    import zipfile

    zpath = tmp_path / "data.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for name in ("Left.wav", "LeftLongCut.wav", "Jump.wav"):
            z.writestr(f"sounds/codriver/ab/{name}", wav_bytes(tone(0.2)))
        z.writestr("sounds/codriver/tim/left.wav", wav_bytes(tone(0.2, channels=2)))
        z.writestr("sounds/codriver/paula/right.wav", wav_bytes(tone(0.2)))  # not in the vocabulary
    allison = tmp_path / "allison"
    write(allison / "digits" / "1.wav", tone(0.2))
    write(allison / "digits" / "h-1.wav", tone(0.2))
    write(allison / "silence" / "1.wav", np.zeros(100, np.float32))
    write(allison / "left.wav", tone(0.2))
    saytime = tmp_path / "saytime"
    buf = io.BytesIO()
    sf.write(buf, tone(0.2), SR, format="RAW", subtype="ULAW")
    saytime.mkdir()
    (saytime / "1.au").write_bytes(buf.getvalue())
    ds = speech.real_speech(
        list(speech.SPEAKERS), ["left", "one", "leftlongcut"], SR, 2000, str(zpath), str(allison), str(saytime)
    )
    assert ds["id"] == [
        "trigger_rally/ab/left",
        "trigger_rally/tim/left",
        "asterisk/allison/left",
        "asterisk/allison/one",
        "saytime/one",
    ]
    assert set(ds["domain"]) == {"target"} and ds["group"][0] == "trigger_rally/ab"
    rec = json.loads(ds[0]["recipe"])
    assert rec["member"] == "sounds/codriver/ab/Left.wav" and rec["file"] == str(zpath)


def test_tts_missing_binary_names_package(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ShiftlabError, match="espeak-ng: command not found .*Debian package espeak-ng"):
        speech.tts_speech(["left"], SR, 2000, 1, [])
    with pytest.raises(ShiftlabError, match="flite: command not found .*Debian package flite"):
        speech.tts_speech(["left"], SR, 2000, 0, ["slt"])


# --------------------------------------------------------------------------- noise


@pytest.fixture
def noise_folder(tmp_path):
    root = tmp_path / "noise"
    rng = np.random.default_rng(0)
    write(root / "carA" / "engine_01.wav", (0.2 * rng.standard_normal((16000, 2))).astype(np.float32), 16000)
    write(root / "carA" / "road.flac", (0.1 * rng.standard_normal(12000)).astype(np.float32), 12000)
    write(root / "carB" / "engine_02.ogg", (0.2 * rng.standard_normal(8000)).astype(np.float32), 8000)
    write(root / "rain.wav", (0.05 * rng.standard_normal(4000)).astype(np.float32), 8000)
    (root / "README.txt").write_text("not audio")
    return root


def test_noise_folder_columns_labels_groups(noise_folder):
    cfg = noise_cfg(recordings=[], target_recordings=["folder/carB/*"], folder=str(noise_folder))
    ds = noise.prepare(cfg)
    schema.check(ds)
    assert ds["id"] == ["folder/carA/engine_01", "folder/carA/road", "folder/carB/engine_02", "folder/rain"]
    assert ds["group"] == ["folder/carA", "folder/carA", "folder/carB", "folder/rain"]
    assert schema.label_names(ds) == ["engine", "rain", "road"]
    assert [schema.label_names(ds)[i] for i in ds["label"]] == ["engine", "road", "engine", "rain"]
    assert ds["domain"] == ["source", "source", "target", "source"]
    assert set(ds["sampling_rate"]) == {SR}
    assert [len(a) for a in ds["audio"]] == [8000, 8000, 8000, 4000]  # full length, resampled
    rec = json.loads(ds[0]["recipe"])
    assert rec["file"] == "carA/engine_01.wav" and rec["sampling_rate"] == 16000 and rec["seconds"] == 1.0
    a = store.save(noise.prepare(cfg), noise_folder.parent / "out_a")
    b = store.save(noise.prepare(cfg), noise_folder.parent / "out_b")
    assert store.tree_digest(a) == store.tree_digest(b)


def test_noise_errors(noise_folder, tmp_path):
    base = dict(recordings=[], target_recordings=["folder/carB/*"], folder=str(noise_folder))
    write(noise_folder / "quiet.wav", np.full(4000, 1e-5, np.float32), subtype="FLOAT")
    with pytest.raises(ShiftlabError, match="quiet.wav: silent noise clip"):
        noise.prepare(noise_cfg(**base))
    (noise_folder / "quiet.wav").unlink()
    (noise_folder / "broken.wav").write_bytes(b"")
    with pytest.raises(ShiftlabError, match="broken.wav: empty file"):
        noise.prepare(noise_cfg(**base))
    (noise_folder / "broken.wav").unlink()
    with pytest.raises(ShiftlabError, match="prepare_noise.recordings: pattern 'folder/nope\\*' matches no recording"):
        noise.prepare(noise_cfg(**dict(base, recordings=["folder/nope*"])))
    with pytest.raises(ShiftlabError, match="prepare_noise.target_recordings: pattern 'x' matches none"):
        noise.prepare(noise_cfg(**dict(base, target_recordings=["x"])))
    with pytest.raises(ShiftlabError, match="none is left for synthesis"):
        noise.prepare(noise_cfg(**dict(base, target_recordings=["folder/*"])))
    with pytest.raises(ShiftlabError, match=r"nope.zip: file not found \(install the Debian package trigger-rally-data"):
        noise.prepare(noise_cfg(recordings=["trigger_rally/*"], trigger_rally_zip=str(tmp_path / "nope.zip")))
    with pytest.raises(ShiftlabError, match="nothing: folder not found"):
        noise.prepare(noise_cfg(**dict(base, folder=str(tmp_path / "nothing"))))


def test_read_opensfx_and_openttd_recordings(tmp_path):
    rng = np.random.default_rng(1)
    bus = wav_bytes((0.2 * rng.standard_normal(4410)).astype(np.float32), 44100)
    ship = wav_bytes((0.2 * rng.standard_normal(2205)).astype(np.float32), 44100)
    cat = tmp_path / "opensfx.cat"
    cat.write_bytes(make_cat([('"Old bus start". By someone. CC0.', bus), ('"Ship horn". By someone.', ship)]))
    entries = noise.read_opensfx(cat)
    assert [noise.opensfx_title(n) for n, _ in entries] == ["Old bus start", "Ship horn"]
    assert entries[0][1] == bus and entries[1][1] == ship
    assert noise.is_vehicle_sound("Truck/old bus start, pull away") and not noise.is_vehicle_sound("Ship horn")
    assert not noise.is_vehicle_sound("Toyland: Comedy bus start (1)") and not noise.is_vehicle_sound("Train/ship breakdown")
    ds = noise.prepare(
        noise_cfg(
            recordings=["openttd/*", "folder/*"],
            target_recordings=["folder/*"],
            opensfx_cat=str(cat),
            folder=str(_one_noise(tmp_path)),
        )
    )
    assert ds["id"] == ["folder/n", "openttd/old_bus_start"] and ds["domain"] == ["target", "source"]
    assert json.loads(ds[1]["recipe"])["title"] == "Old bus start" and len(ds[1]["audio"]) == 800

    # malformed containers
    good = make_cat([('"Old bus start"', bus), ('"Ship horn"', ship)])
    cases = {
        "short.cat": b"\x08\x00",
        "table.cat": struct.pack("<I", 7) + good[4:],
        "offset.cat": good[:8] + struct.pack("<II", len(good) + 5, 10) + good[16:],
        "truncated.cat": good[:-100],
        "notriff.cat": good.replace(b"RIFF", b"RIFX", 1),
        "size.cat": good[:4] + struct.pack("<I", 20) + good[8:],
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ShiftlabError, match=f"{name}: malformed opensfx container"):
            noise.read_opensfx(tmp_path / name)
    with pytest.raises(ShiftlabError, match="missing.cat: file not found .*openttd-opensfx"):
        noise.read_opensfx(tmp_path / "missing.cat")


def _one_noise(tmp_path) -> Path:
    d = tmp_path / "one"
    write(d / "n.wav", (0.1 * np.random.default_rng(2).standard_normal(800)).astype(np.float32))
    return d


# --------------------------------------------------------------------------- real Debian data

TR_ZIP = Path(config.defaults()["prepare_speech"]["real"]["trigger_rally_zip"])
ALLISON = Path(config.defaults()["prepare_speech"]["real"]["asterisk_dir"])
SAYTIME = Path(config.defaults()["prepare_speech"]["real"]["saytime_dir"])
NOISE = config.defaults()["prepare_noise"]


def _have(*paths) -> bool:
    return all(Path(p).exists() for p in paths)


@pytest.mark.debian_data
@pytest.mark.skipif(not _have(TR_ZIP), reason="trigger-rally-data not installed")
def test_real_trigger_rally_codrivers():
    spk = ["trigger_rally/ab", "trigger_rally/paula", "trigger_rally/tim"]
    ds = speech.real_speech(spk, "pace_notes", 16000, 16000, trigger_rally_zip=str(TR_ZIP))
    schema.check(ds)
    assert len(ds) == 75 and Counter(ds["group"]) == {s: 25 for s in spk}
    assert Counter(ds["label"]) == {i: 3 for i in range(25)}
    assert {len(a) for a in ds["audio"]} == {16000} and set(ds["domain"]) == {"target"}


@pytest.mark.debian_data
@pytest.mark.skipif(not _have(ALLISON, SAYTIME), reason="asterisk-core-sounds-en-wav or saytime not installed")
def test_real_allison_and_saytime_digits():
    ds = speech.real_speech(
        ["asterisk/allison", "saytime"], "digits", 8000, 8000, asterisk_dir=str(ALLISON), saytime_dir=str(SAYTIME)
    )
    assert len(ds) == 20 and Counter(ds["group"]) == {"asterisk/allison": 10, "saytime": 10}
    assert schema.label_names(ds) == speech.DIGITS and ds["id"][0] == "asterisk/allison/zero"
    assert not any(audio.is_silent(np.asarray(a), -40) for a in ds["audio"])


@pytest.mark.debian_data
@pytest.mark.skipif(
    not _have(NOISE["trigger_rally_zip"], NOISE["dustracing2d_dir"], NOISE["opensfx_cat"]),
    reason="trigger-rally-data, dustracing2d-data or openttd-opensfx not installed",
)
def test_real_noise_default_cfg():
    """params.yaml's prepare_noise (the pipeline's): real TORCS cars, five of them held out for the target."""
    ds = noise.prepare(config.section("prepare_noise", Path(__file__).resolve().parent.parent / "params.yaml"))
    schema.check(ds)
    secs = {r: json.loads(rec)["seconds"] for r, rec in zip(ds["id"], ds["recipe"])}
    fixed = ["trigger_rally/engine", "trigger_rally/gravel", "trigger_rally/wind", "dustracing2d/carEngine", "dustracing2d/skid"]
    assert set(fixed) <= set(secs)
    assert "openttd/truck_old_bus_start_pull_away" in secs and "openttd/ship_horn" not in secs
    assert {r for r, d in zip(ds["id"], ds["domain"]) if d == "target"} == {  # five TORCS cars held out
        "torcs/nsx", "torcs/renault-v10", "torcs/gt40", "torcs/porsche_engine", "torcs/corolla1400hi2",
    }
    assert "torcs/f360" in secs and "torcs/locked" not in secs  # locked.wav (no header): skipped with a warning
    assert abs(secs["trigger_rally/engine"] - 4.0) < 0.01 and abs(secs["trigger_rally/gravel"] - 4.34) < 0.01
    assert 100 < sum(secs.values()) < 200
    assert all(abs(len(a) - s * 16000) <= 2 for a, s in zip(ds["audio"], secs.values()))


@pytest.mark.debian_data
@pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("flite") is None, reason="espeak-ng/flite not installed")
def test_tts_small_run_groups_rates_determinism():
    words = ["left", "right", "jump"]
    a = speech.tts_speech(words, 16000, 16000, 2, ["slt"], (130, 200), (25, 75), 1, 7, 0)
    b = speech.tts_speech(words, 16000, 16000, 2, ["slt"], (130, 200), (25, 75), 1, 7, 1)
    assert len(a) == 9 and len(set(a["group"])) == 3 and "flite/slt" in a["group"]
    assert all(g.startswith(("espeak/en", "flite/")) for g in a["group"])
    assert set(a["sampling_rate"]) == {16000} and {len(x) for x in a["audio"]} == {16000}
    assert a["audio"] == b["audio"] and a["recipe"] == b["recipe"]
    recs = [json.loads(r) for r in a["recipe"]]
    assert all(130 <= r["speed"] <= 200 for r in recs) and all(r["pitch"] is None for r in recs if r["engine"] == "flite")
    assert all(25 <= r["pitch"] <= 75 for r in recs if r["engine"] == "espeak")
    assert not any(audio.is_silent(np.asarray(x), -40) for x in a["audio"])
    # the same seed chooses the same voices; a bigger count keeps them
    assert set(speech.choose_espeak_voices(2, 7)) <= set(speech.choose_espeak_voices(5, 7))
    with pytest.raises(ShiftlabError, match="prepare_speech.tts.espeak_voices: 100000 asked"):
        speech.choose_espeak_voices(100000, 7)
    with pytest.raises(ShiftlabError, match="prepare_speech.tts.flite_voices: unknown flite voice"):
        speech.tts_speech(words, 16000, 16000, 0, ["nobody"])
