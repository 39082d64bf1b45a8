"""The audio target of issue 13 (item 2): speech from TTS voices the source never uses, under held-out
real TORCS cars driven through their own RPM trajectories; `shiftlab split audio` keeps every voice in
one split.

The TTS tests need espeak-ng, flite and festival with its festvox voices (Debian packages, installed by
`make setup`); the TORCS cars are a small fake folder made here (synthetic WAVs under TORCS names, plus
an unreadable ``locked.wav``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from shiftlab import config, store
from shiftlab.datasets import audio, noise, speech
from shiftlab.errors import ShiftlabError
from shiftlab.mixing import bank, target
from test_torcs import _engine  # the engine-like loops of the TORCS tests

SR = 16000
WORDS = ["left", "right"]
TTS = bool(shutil.which("espeak-ng") and shutil.which("flite") and shutil.which("festival"))


def needs_tts(fn):
    """Needs the Debian TTS packages (under CI=true, conftest turns this skip into a failure)."""
    return pytest.mark.debian_data(pytest.mark.skipif(not TTS, reason="espeak-ng/flite/festival not installed")(fn))


def _one_line(e) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


@pytest.fixture(scope="module")
def torcs_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("torcs_sound")
    for i, (stem, sr, f0) in enumerate([("f360", 44100, 90.0), ("nsx", 22050, 70.0), ("gt40", 32000, 80.0)]):
        sf.write(d / f"{stem}.wav", _engine(sr, 0.8 + 0.1 * i, f0, i), sr, subtype="PCM_16")
    (d / "locked.wav").write_bytes(np.random.default_rng(9).integers(0, 255, 5000, dtype=np.uint8).tobytes())
    return d


@pytest.fixture(scope="module")
def noise_ds(torcs_dir):
    cfg = config.defaults(config.SCHEMA["prepare_noise"])
    cfg.update(recordings=["torcs/*"], target_recordings=["torcs/nsx", "torcs/gt40"], torcs_dir=str(torcs_dir))
    return noise.prepare(cfg)


@pytest.fixture(scope="module")
def prepared_speech():
    """Source: 3 espeak-ng voices + flite awb (as prepare speech makes them); target: one 'codriver' row."""
    src = speech.tts_speech(WORDS, SR, SR, 3, ["awb"], (130, 200), (25, 75), 1, 0, 0)
    rng = np.random.default_rng(0)
    codriver = audio.build_dataset([dict(id="trigger_rally/tim/left", audio=(0.1 * rng.standard_normal(SR)).astype(
        np.float32), sampling_rate=SR, label="left", domain="target", group="trigger_rally/tim", recipe="{}")], WORDS)
    from shiftlab.datasets import schema

    return schema.concat([src, codriver])


def _tts_cfg(**over):
    tts = {"espeak_variants": 8, "flite_voices": ["kal16"], "festival_voices": ["kal_diphone", "ked_diphone",
                                                                                "cmu_us_slt_arctic_hts"],
           "takes": 2, "workers": 2}
    tts.update(over)
    return {"seed": 3, "speech": "tts", "tts": tts, "torcs_drives": 2, "seconds_per_drive": 1.5,
            "max_source_share": 0.5, "target_snr_db": [-5.0, 15.0]}


def _source_identities(ds) -> set[str]:
    out = set()
    for r, d in zip(ds["recipe"], ds["domain"]):
        rec = json.loads(r) if r.startswith("{") else {}
        if d == "source" and rec.get("engine"):
            out.add(speech.voice_identity(rec["engine"], rec["voice"]))
    return out


# --------------------------------------------------------------------------- voices held out from the source


@needs_tts
def test_default_target_voices_are_disjoint_from_the_default_source():
    """params.yaml (without synthesising anything): no target voice shares its identity (espeak variant,
    or the person behind a flite/festival voice) with a source voice; >= 20 voices, enough rows."""
    params = Path(__file__).resolve().parent.parent / "params.yaml"
    d = {k: config.section(k, params) for k in ("prepare_speech", "target_mix", "split_audio", "synth_mix")}
    t, s = d["target_mix"]["tts"], d["prepare_speech"]["tts"]
    src = [("espeak", v) for v in speech.choose_espeak_voices(s["espeak_voices"], d["prepare_speech"]["seed"])]
    src += [("flite", v) for v in s["flite_voices"]]
    src_ids = {speech.voice_identity(*v) for v in src}
    held = speech.heldout_espeak_voices(src_ids, None, d["target_mix"]["seed"])
    tgt = [("espeak", v) for v in held] + [("flite", v) for v in t["flite_voices"]]
    tgt += [("festival", v) for v in t["festival_voices"]]
    tgt_ids = {speech.voice_identity(*v) for v in tgt}
    assert not tgt_ids & src_ids
    assert len({v.split("+")[1] for v in held}) == len(held) >= 60  # one voice per held-out variant
    groups = {f"espeak/{v}" for v in held} | {speech.voice_identity(e, v) for e, v in tgt if e != "espeak"}
    assert len(groups) >= 20
    # rows per split: (1 - target_train_fraction) * dev_fraction of the groups, 25 words x takes each
    sp = d["split_audio"]
    per_group = len(speech.resolve_vocabulary(d["prepare_speech"]["vocabulary"])) * t["takes"]
    assert len(groups) * (1 - sp["target_train_fraction"]) * sp["dev_fraction"] * per_group > 1200
    # the target's SNR prior is its own
    assert d["target_mix"]["target_snr_db"] != d["synth_mix"]["snr_db"]


@needs_tts
def test_heldout_tts_voices_groups_takes_and_refusals(prepared_speech):
    src = sorted({(json.loads(r)["engine"], json.loads(r)["voice"]) for r, d in
                  zip(prepared_speech["recipe"], prepared_speech["domain"]) if d == "source"})
    kw = dict(espeak_variants=3, flite_voices=["kal16"], festival_voices=["kal_diphone", "cmu_us_slt_arctic_hts"],
              takes=2, seed=1)
    a = speech.heldout_tts_speech(WORDS, SR, SR, src, workers=1, **kw)
    b = speech.heldout_tts_speech(WORDS, SR, SR, src, workers=2, **kw)
    assert a["id"] == b["id"] and a["recipe"] == b["recipe"]
    assert all(x.tobytes() == y.tobytes() for x, y in zip(map(np.asarray, a["audio"]), map(np.asarray, b["audio"])))
    recs = [json.loads(r) for r in a["recipe"]]
    assert set(a["domain"]) == {"target"} and {len(x) for x in a["audio"]} == {SR}
    assert not {r["identity"] for r in recs} & {speech.voice_identity(*v) for v in src}
    # flite kal16 and festival kal_diphone are one person: one group; HTS ignores the speed: one take
    kal = {r["voice"] for r, g in zip(recs, a["group"]) if g == "speaker/kal"}
    assert kal == {"kal16", "kal_diphone"}
    hts = [r for r in recs if r["voice"] == "cmu_us_slt_arctic_hts"]
    assert len(hts) == len(WORDS) and all(r["speed"] is None for r in hts)
    esp = [r for r in recs if r["engine"] == "espeak"]
    assert len(esp) == 3 * len(WORDS) * 2 and len({(r["speed"], r["pitch"]) for r in esp}) > len(esp) // 2
    # a voice whose person the source uses is refused, with one line naming it
    with pytest.raises(ShiftlabError) as e:
        speech.heldout_tts_speech(WORDS, SR, SR, src, espeak_variants=0, flite_voices=["awb_time"])
    assert "target_mix.tts.flite_voices: awb_time is speaker/awb, a voice the source uses" in _one_line(e)
    with pytest.raises(ShiftlabError) as e:
        speech.heldout_tts_speech(WORDS, SR, SR, src + [("flite", "slt")], espeak_variants=0,
                                  festival_voices=["cmu_us_slt_arctic_hts"])
    assert "cmu_us_slt_arctic_hts is speaker/slt" in _one_line(e)
    with pytest.raises(ShiftlabError) as e:
        speech.heldout_tts_speech(WORDS, SR, SR, src, espeak_variants=0, festival_voices=["nobody_diphone"])
    assert "target_mix.tts.festival_voices: unknown festival voice(s) nobody_diphone" in _one_line(e)


# --------------------------------------------------------------------------- make_target, drives, split


@needs_tts
def test_make_target_tts_under_driven_held_out_cars_and_split_by_voice(prepared_speech, noise_ds, tmp_path,
                                                                       monkeypatch):
    from shiftlab import cli

    cfg = _tts_cfg()
    out = target.make_target(prepared_speech, noise_ds, cfg)
    again = target.make_target(prepared_speech, noise_ds, cfg)
    assert out["id"] == again["id"] and out["recipe"] == again["recipe"]
    assert all(np.asarray(x).tobytes() == np.asarray(y).tobytes() for x, y in zip(out["audio"], again["audio"]))
    dom = np.array(out["domain"])
    assert "trigger_rally/tim/left" not in out["id"]  # the codrivers' rows are replaced (speech: tts)
    src_before = [i for i, d in zip(prepared_speech["id"], prepared_speech["domain"]) if d == "source"]
    assert [i for i, d in zip(out["id"], dom) if d == "source"] == src_before
    recs = [json.loads(r) for r, d in zip(out["recipe"], dom) if d == "target"]
    # (8 espeak + flite kal16 + festival kal, ked) x 2 words x 2 takes + festival slt (HTS) x 2 words x 1 take
    assert len(recs) == 11 * 2 * 2 + 2
    assert not {r["identity"] for r in recs} & _source_identities(out)  # no target voice in the source
    tm = [r["target_mix"] for r in recs]
    assert {t["noise_group"] for t in tm} == {"torcs/nsx", "torcs/gt40"}  # the held-out cars, driven
    assert {t["noise"] for t in tm} <= {f"torcs/{c}/drive{j}" for c in ("nsx", "gt40") for j in range(2)}
    assert {t["noise_recording"] for t in tm} == {"torcs/nsx", "torcs/gt40"}
    assert all(-5.0 <= t["snr_db"] <= 15.0 for t in tm)
    # another target seed: other drives and other voices' takes
    other = target.make_target(prepared_speech, noise_ds, {**cfg, "seed": 4})
    assert other["recipe"] != out["recipe"]

    # `shiftlab split audio`: every voice (group) in exactly one split, none of them a source voice
    monkeypatch.chdir(tmp_path)
    store.save(out, tmp_path / "data/prepared/speech_incar")
    (tmp_path / "params.yaml").write_text(json.dumps({"split_audio": {"target_train_fraction": 0.2,
                                                                      "dev_fraction": 0.5, "seed": 0}}))
    assert cli.main(["split", "audio"]) == 0
    parts = store.load(tmp_path / "data/splits/audio")
    where: dict[str, set] = {}
    for name in parts:
        for g, d in zip(parts[name]["group"], parts[name]["domain"]):
            if d == "target":
                where.setdefault(g, set()).add("train" if name in ("train", "train_dev") else name)
    assert all(len(s) == 1 for s in where.values()), {g: s for g, s in where.items() if len(s) > 1}
    assert {"train", "dev", "test"} <= set().union(*where.values())
    assert "speaker/kal" in where  # flite kal16 + festival kal_diphone: one person, one split
    src_groups = {g for name in parts for g, d in zip(parts[name]["group"], parts[name]["domain"]) if d == "source"}
    assert not src_groups & set(where)
    for name in ("dev", "test"):
        assert set(parts[name]["domain"]) == {"target"}


@needs_tts
def test_target_drive_shares_a_loop_with_a_bank_is_refused(noise_ds, prepared_speech):
    """A target drive voices a held-out loop: a bank drawing from that loop (or its car) is refused, one line."""
    cfg = {**_tts_cfg(), "speech": "real"}
    nm = bank.Names(frozenset({"torcs/nsx"}), frozenset({"some/other_group"}))
    with pytest.raises(ShiftlabError) as e:
        target.make_target(prepared_speech, noise_ds, cfg, bank_names={"synth_mix": nm})
    assert "target_mix: target noise torcs/nsx/drive0 voices torcs/nsx, which the synth_mix bank also draws" \
        in _one_line(e)
    nm = bank.Names(frozenset({"torcs/other"}), frozenset({"torcs/gt40"}))
    with pytest.raises(ShiftlabError) as e:
        target.make_target(prepared_speech, noise_ds, cfg, bank_names={"synth_mix_narrow": nm})
    assert "target noise torcs/gt40/drive0 comes from torcs/gt40, which the synth_mix_narrow bank" in _one_line(e)
    # the real bank resolved with the noise dataset leaves the held-out cars alone: accepted
    names = {"synth_mix": bank.names({"sources": ["torcs"], "torcs_dir": str(Path(
        json.loads(noise_ds[0]["recipe"])["file"]).parent)}, noise_ds)}
    assert names["synth_mix"].groups == {"torcs/f360"}
    ok = target.make_target(prepared_speech, noise_ds, cfg, bank_names=names)
    assert json.loads(ok[len(ok) - 1]["recipe"])["target_mix"]["noise_group"] in {"torcs/nsx", "torcs/gt40"}


@needs_tts
def test_target_drive_of_an_unreadable_loop_names_the_file(noise_ds, prepared_speech, tmp_path):
    rows = []
    for r in noise_ds:
        rec = json.loads(r["recipe"])
        if r["id"] == "torcs/nsx":
            bad = tmp_path / "nsx.wav"
            bad.write_bytes(b"not a wav")
            rec["file"] = str(bad)
        rows.append({**r, "label": noise_ds.features["label"].names[r["label"]],
                     "audio": np.asarray(r["audio"], np.float32), "recipe": json.dumps(rec)})
    broken = audio.build_dataset(rows, noise_ds.features["label"].names)
    with pytest.raises(ShiftlabError) as e:
        target.make_target(prepared_speech, broken, {**_tts_cfg(), "speech": "real"})
    assert "nsx.wav" in _one_line(e)


@pytest.mark.parametrize("cfg, msg", [
    ({"tts": {"foo": 1}}, "target_mix.tts.foo: unknown key"),
    ({"speech": "codrivers"}, "target_mix.speech: 'codrivers' is not one of tts, real"),  # shiftlab.paramschema wording
    ({"tts": {"espeak_variants": -1}}, "target_mix.tts.espeak_variants: must be 'all' or an integer"),
    ({"tts": {"speed": [200, 100]}}, "target_mix.tts.speed: low 200 is above high 100"),
    ({"tts": {"speed": [20, 100]}}, "target_mix.tts.speed: item 0: 20 is out of range [80, 450]"),
    ({"torcs_drives": 1.5}, "target_mix.torcs_drives: must be an integer"),
    ({"drive": {"nope": [1, 2]}}, "target_mix.drive.nope"),
    ({"snr_db": [0, 1]}, "target_mix.snr_db: unknown key"),
])
def test_target_mix_config_errors_are_one_line_and_name_the_key(cfg, msg):
    with pytest.raises(ShiftlabError) as e:
        target.check_cfg(cfg)
    assert msg in _one_line(e)
    c = target.check_cfg({"tts": {"takes": 3}})  # a partial sub-section keeps the other defaults
    assert c["tts"]["takes"] == 3 and c["tts"]["festival_voices"] == target.TTS_DEFAULTS["festival_voices"]
