"""Broken inputs fed to `shiftlab prepare` over an earlier good output: a one-line error
naming the file, and the earlier output left whole. Plus the warning line for a params
section written with nothing under it.

Each case: a good run writes the output; one broken file is added; the rerun exits with
status 2 and prints exactly one line, ``shiftlab: error: <the file>: ...``; the output is
byte-identical to the good run's. Small data made here (tones, noise, in tmp folders).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
import yaml

from shiftlab import cli, config, store
from shiftlab.datasets import audio
from shiftlab.errors import ShiftlabError

SR = 8000


def tone(seconds=0.3, sr=SR, freq=300.0, amp=0.3):
    t = np.arange(int(round(seconds * sr))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write(path, x, sr=SR, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x, sr, **kw)
    return path


def wav_bytes(x, sr=SR):
    b = io.BytesIO()
    sf.write(b, x, sr, format="WAV", subtype="PCM_16")
    return b.getvalue()


def _rerun_fails_naming(capsys, argv, bad_file, out, why):
    """Run `shiftlab argv`: status 2, one stderr line naming ``bad_file`` and saying ``why``; ``out`` unchanged."""
    before = store.tree_digest(out)
    capsys.readouterr()
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"shiftlab: error: {bad_file}: "), err
    assert why in lines[0], err
    assert store.tree_digest(out) == before
    return lines[0]


# --------------------------------------------------------------------------- speech folders


@pytest.fixture
def speech_project(tmp_path, monkeypatch, capsys):
    """A params file whose speech source and target are folders, and a good `prepare speech` output."""
    monkeypatch.chdir(tmp_path)
    for domain in ("source", "target"):
        for w, word in enumerate(("left", "right")):
            for k in range(2):
                write(tmp_path / domain / word / f"spk{k}.wav", tone(0.2 + 0.05 * k, SR, 200 + 80 * w + 20 * k))
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"prepare_speech": {
        "sampling_rate": SR, "clip_seconds": 0.25, "vocabulary": ["left", "right"], "source": "folder",
        "target": "folder", "folder": {"source": str(tmp_path / "source"), "target": str(tmp_path / "target")},
    }}))
    assert cli.main(["prepare", "speech"]) == 0
    out = tmp_path / "data/prepared/speech"
    assert len(store.load(out)) == 8
    capsys.readouterr()
    return tmp_path, out


@pytest.mark.parametrize("case, why", [
    ("silent", "silent speech clip (RMS -inf dBFS < prepare_speech.silence_db -60)"),
    ("one_sample", "1 samples (0.1 ms) is too short for a spoken word (prepare_speech.min_seconds 0.05)"),
    ("cut_after_header", "truncated WAV (its header declares 4,000 bytes of audio data, the file holds 16)"),
    ("constant", "constant (DC) speech clip"),
])
def test_prepare_speech_refuses_a_clip_that_is_not_speech(speech_project, capsys, case, why):
    root, out = speech_project
    bad = root / "target" / "left" / f"{case}.wav"
    if case == "silent":
        write(bad, np.zeros(SR // 2, np.float32))
    elif case == "one_sample":
        write(bad, np.array([0.5], np.float32))
    elif case == "cut_after_header":
        bad.write_bytes(wav_bytes(tone(0.25))[:60])  # 44-byte header + 16 bytes of a declared 4,000
        assert bad.stat().st_size == 60
    else:
        write(bad, np.full(SR // 2, 0.25, np.float32), subtype="FLOAT")
    _rerun_fails_naming(capsys, ["prepare", "speech"], bad, out, why)


def test_speech_gate_is_configurable_and_passes_real_looking_words(tmp_path):
    x = tone(0.06, SR, amp=0.01)  # 60 ms at -43 dBFS: short and quiet, but a word
    audio.check_speech_clip(x, SR, "w.wav")
    with pytest.raises(ShiftlabError, match=r"^w.wav: silent speech clip \(RMS -43.0 dBFS < k.silence_db -30\)$"):
        audio.check_speech_clip(x, SR, "w.wav", silence_db=-30, key="k")
    with pytest.raises(ShiftlabError, match=r"^w.wav: 480 samples \(60.0 ms\) is too short .*k.min_seconds 0.1\)$"):
        audio.check_speech_clip(x, SR, "w.wav", min_seconds=0.1, key="k")
    cfg = config.defaults()["prepare_speech"]
    assert cfg["silence_db"] == -60.0 and cfg["min_seconds"] == 0.05


def test_truncated_wav_detection_ignores_streamed_headers():
    good = wav_bytes(tone(0.1))
    assert audio._wav_shortfall(good, len(good)) is None
    assert audio._wav_shortfall(good[:60], 60) == (1600, 16)
    streamed = bytearray(good)
    streamed[40:44] = (0x7FFFF000).to_bytes(4, "little")  # espeak-ng --stdout writes this placeholder
    assert audio._wav_shortfall(bytes(streamed), len(streamed)) is None
    x, _ = audio.read_audio(bytes(streamed), name="espeak.wav")
    assert len(x) == 800
    assert audio._wav_shortfall(b"fLaC" + bytes(40), 44) is None  # not a WAV: not checked here
    with pytest.raises(ShiftlabError, match=r"^cut.wav: truncated WAV \(its header declares 1,600 bytes"):
        audio.read_audio(good[:100], name="cut.wav")


# --------------------------------------------------------------------------- noise folder


@pytest.fixture
def noise_project(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    for name in ("carA/engine_01", "carA/road", "carB/engine_02"):
        write(tmp_path / "noise" / f"{name}.wav", (0.1 * rng.standard_normal(SR)).astype(np.float32), subtype="FLOAT")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"prepare_noise": {
        "sampling_rate": SR, "recordings": [], "target_recordings": ["folder/carB/*"], "folder": str(tmp_path / "noise"),
    }}))
    assert cli.main(["prepare", "noise"]) == 0
    out = tmp_path / "data/prepared/noise"
    assert len(store.load(out)) == 3
    capsys.readouterr()
    return tmp_path, out


@pytest.mark.parametrize("case, why", [
    ("constant", "constant (DC) noise clip: every sample is about +0.3"),
    ("dc_shifted", "noise clip with a DC offset of +0.4989, 5.00 x the RMS of the rest (at most 1)"),
    ("silent", "silent noise clip"),
])
def test_prepare_noise_refuses_a_constant_or_dc_shifted_clip(noise_project, capsys, case, why):
    root, out = noise_project
    bad = root / "noise" / "carA" / f"{case}.wav"
    if case == "constant":
        x = np.full(SR, 0.3, np.float32)
    elif case == "dc_shifted":
        x = (0.5 + 0.1 * np.random.default_rng(1).standard_normal(SR)).astype(np.float32)
    else:
        x = np.zeros(SR, np.float32)
    write(bad, x, subtype="FLOAT")
    _rerun_fails_naming(capsys, ["prepare", "noise"], bad, out, why)


def test_noise_bank_folder_refuses_a_constant_clip(tmp_path):
    from shiftlab.mixing import bank

    rng = np.random.default_rng(2)
    write(tmp_path / "n" / "ok.wav", (0.1 * rng.standard_normal(SR)).astype(np.float32), subtype="FLOAT")
    assert len(bank.from_folder(tmp_path / "n", SR)) == 1
    write(tmp_path / "n" / "dc.wav", np.full(SR, -0.2, np.float32), subtype="FLOAT")
    with pytest.raises(ShiftlabError, match=r"dc.wav: constant \(DC\) noise clip: every sample is about -0.2"):
        bank.from_folder(tmp_path / "n", SR)


def test_noise_dc_gate_accepts_a_small_real_offset():
    x = (0.1 * np.random.default_rng(3).standard_normal(SR) + 0.04).astype(np.float32)  # |mean| / rms 0.4
    audio.check_noise_clip(x, "ok.wav")
    with pytest.raises(ShiftlabError, match=r"^hum.wav: noise clip with a DC offset of \+0.1503, 1.50 x the RMS"):
        audio.check_noise_clip(x + np.float32(0.11), "hum.wav")


# --------------------------------------------------------------------------- params


@pytest.mark.parametrize("section", ["train_images", "split_images", "synth_mix"])
def test_empty_params_section_takes_defaults_with_one_warning_line(tmp_path, capsys, section):
    p = tmp_path / "params.yaml"
    p.write_text(f"{section}:\nsplit_audio:\n  seed: 3\n")
    capsys.readouterr()
    got = config.section(section, p)
    assert got == config.defaults()[section]
    err = capsys.readouterr().err.splitlines()
    assert err == [f"shiftlab: warning: {p}: {section}: empty section, every key takes its default "
                   f"(a half-deleted block? delete the line or fill it in)"]
    config.section(section, p)  # once per file and section
    assert capsys.readouterr().err == ""
    assert config.section("split_audio", p)["seed"] == 3 and capsys.readouterr().err == ""


def test_empty_sub_section_warns_and_the_cli_prints_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("prepare_speech:\n  tts:\n  seed: 1\n")
    assert cli.main(["params", "--section", "prepare_speech"]) == 0
    out = capsys.readouterr()
    assert out.err == ("shiftlab: warning: params.yaml: prepare_speech.tts: empty section, every key takes its "
                       "default (a half-deleted block? delete the line or fill it in)\n")
    assert yaml.safe_load(out.out)["prepare_speech"]["tts"] == config.defaults()["prepare_speech"]["tts"]
