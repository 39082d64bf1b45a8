"""The codriver check: real speech (3 speakers) under held-out car noise, a second, evaluation-only set.

`shiftlab prepare target` writes it (shiftlab.mixing.target.make_codrivers), `shiftlab split audio`
adds it as the check split `codrivers` (never trained on, never synthesised from), the trainer
predicts it at the end, `shiftlab evaluate` scores and compares it on its own (3 speakers < evaluate.
min_groups: inconclusive by rule) and `shiftlab report` has its section. Small data made here
(test_mixing's tones and seeded noise at 8 kHz; the target's TTS voices replaced by a stand-in).
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import datasets as hfds
import numpy as np
import pytest
import yaml

from shiftlab import cli, config, store
from shiftlab.datasets import audio, schema, splits
from shiftlab.errors import ShiftlabError
from shiftlab.mixing import target
from shiftlab.train import evaluate as ev
from shiftlab.train import report, trainer
from test_mixing import LABELS, noise_dataset, speech_rows, target_speech, waves_of
from test_trainer import Tiny, image_split, image_splits
from test_trainer import cfg as train_cfg

HELD_OUT = {"tgt/x", "tgt/y", "tgt/z"}  # noise_dataset()'s target-domain recordings
SPEAKERS = {"spk0", "spk1", "spk2"}  # target_speech()'s 9 real target rows: 3 speakers x 3


def _one_line(e) -> str:
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


def _fake_tts_target(speech, c):
    """Stand-in for the held-out TTS voices (target_mix.speech: tts): 18 target rows of 6 voices."""
    src = [i for i, d in enumerate(speech["domain"]) if d == "source"]
    voices = audio.build_dataset(speech_rows(18, "target", lambda i: f"heldout{i % 6}", "heldout"), LABELS)
    return schema.concat([speech.select(src), voices])


# --------------------------------------------------------------------------- (a) the codriver set


def test_make_codrivers_mixes_the_real_target_rows_with_held_out_noise_only():
    speech, noise = target_speech(), noise_dataset()
    cfg = {"seed": 1, "torcs_drives": 0, "target_snr_db": [0, 10]}
    assert target.codrivers_reason(cfg) is None  # speech tts + codrivers true (the defaults)
    co = target.make_codrivers(speech, noise, cfg)
    assert len(co) == 9 and set(co["group"]) == SPEAKERS
    assert set(co["domain"]) == {"target"} and set(co["origin"]) == {"real"}
    real = speech.filter(lambda d: d == "target", input_columns="domain")
    assert co["id"] == real["id"] and co["label"] == real["label"]  # the prepared rows, in their order
    tms = [json.loads(r)["target_mix"] for r in co["recipe"]]
    assert {t["noise"] for t in tms} <= HELD_OUT and {t["noise_group"] for t in tms} <= HELD_OUT
    assert all(t["purpose"] == "codrivers" and t["simulated"] and 0 <= t["snr_db"] <= 10 for t in tms)
    for w0, w1 in zip(waves_of(real), waves_of(co)):
        assert len(w0) == len(w1) and w0.tobytes() != w1.tobytes()
    # deterministic; draws of its own (not the target's seeds); another seed, other draws
    again = target.make_codrivers(speech, noise, cfg)
    assert again["recipe"] == co["recipe"]
    assert all(a.tobytes() == b.tobytes() for a, b in zip(waves_of(again), waves_of(co)))
    as_target = target.make_target(speech, noise, {**cfg, "speech": "real"})
    snr_target = [json.loads(r)["target_mix"]["snr_db"] for r, d in zip(as_target["recipe"], as_target["domain"])
                  if d == "target"]
    assert [t["snr_db"] for t in tms] != snr_target
    assert "purpose" not in json.loads(as_target[len(as_target) - 1]["recipe"])["target_mix"]  # target unchanged
    assert target.make_codrivers(speech, noise, {**cfg, "seed": 2})["recipe"] != co["recipe"]


def test_codrivers_off_or_real_speech_and_config_errors():
    assert "codrivers is false" in target.codrivers_reason({"codrivers": False})
    why = target.codrivers_reason({"speech": "real"})
    assert "the codrivers are the target itself" in why
    with pytest.raises(ShiftlabError) as e:
        target.make_codrivers(target_speech(), noise_dataset(), {"speech": "real", "torcs_drives": 0})
    assert "target_mix.codrivers:" in _one_line(e)
    with pytest.raises(ShiftlabError) as e:
        target.check_cfg({"codrivers": "yes"})
    assert "target_mix.codrivers: must be true or false" in _one_line(e)
    only_source = target_speech().filter(lambda d: d == "source", input_columns="domain")
    with pytest.raises(ShiftlabError) as e:
        target.make_codrivers(only_source, noise_dataset(), {"torcs_drives": 0})
    assert "no real target rows" in _one_line(e)
    assert config.defaults()["target_mix"]["codrivers"] is True
    assert config.defaults()["split_audio"]["check_sets"] == list(schema.CHECK_SPLITS) == ["codrivers"]
    assert "check_sets" not in config.defaults()["split_images"]


# --------------------------------------------------------------------------- the mini pipeline


PARAMS = {
    "target_mix": {"seed": 1, "torcs_drives": 0, "target_snr_db": [0, 10]},
    "synth_mix": {"bank": {"sources": ["real"], "recordings": ["src/*"]}},
    "synth_mix_narrow": {"bank": {"sources": ["real"], "recordings": ["src/a"]}},
    "split_audio": {"target_train_fraction": 0.2, "dev_fraction": 0.5},
    "experiment": {"variants": ["nosynth", "synth"], "seeds": [0, 1]},
    "evaluate": {"n_boot": 200},
}


def _run(*argv) -> str:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert cli.main(list(argv)) == 0
    return buf.getvalue()


def _fake_predictions(parts, variant: str, seed: int) -> dict:
    """Every split predicted; on codrivers nosynth is wrong on every row, synth on none (an effect
    no row interval could miss); elsewhere ~20% seeded errors, the same for both variants."""
    out = {}
    for s in parts:
        d = parts[s]
        y = np.asarray(d["label"], np.int64)
        pred = y.copy()
        if s == "codrivers":
            if variant == "nosynth":
                pred = (y + 1) % len(LABELS)
        else:
            wrong = np.random.default_rng(seed).random(len(y)) < 0.2
            pred[wrong] = (y[wrong] + 1) % len(LABELS)
        k = len(LABELS)
        out[s] = {"y": y, "pred": pred, "logits": np.eye(k, dtype=np.float32)[pred],
                  "probs": np.eye(k, dtype=np.float32)[pred], "label": np.asarray(LABELS)[y],
                  "id": np.asarray(d["id"]), "domain": np.asarray(d["domain"]), "origin": np.asarray(d["origin"]),
                  "group": np.asarray(d["group"]), "weight": np.ones(len(y), np.float32)}
    return out


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    """prepare target -> split audio (with and without the check set) -> fake runs -> evaluate -> report."""
    r = tmp_path_factory.mktemp("mini")
    store.save(target_speech(), r / "data/prepared/speech")
    store.save(noise_dataset(), r / "data/prepared/noise")
    (r / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    (r / "nocheck.yaml").write_text(yaml.safe_dump({**PARAMS, "split_audio": {**PARAMS["split_audio"],
                                                                               "check_sets": []}}))
    out = {"root": r}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(r)
        mp.setattr(target, "_tts_target", _fake_tts_target)
        out["prepare"] = _run("prepare", "target")
        out["split"] = _run("split", "audio")
        out["nocheck"] = _run("--params", "nocheck.yaml", "split", "audio", "--out", "nocheck",
                              "--metrics", "nocheck.json", "--report", "nocheck.md")
        parts = store.load(r / "data/splits/audio")
        for v in PARAMS["experiment"]["variants"]:
            for s in PARAMS["experiment"]["seeds"]:
                trainer.save_predictions(r / f"runs/audio/{v}/s{s}/predictions.npz", _fake_predictions(parts, v, s),
                                         LABELS)
        out["evaluate"] = _run("evaluate", "--scenario", "audio")
        out["report"] = report.build(r, {"scenarios": ["audio"], "examples": 0}, "reports/report")
    return out


def test_prepare_target_writes_the_codriver_set(mini):
    r = mini["root"]
    co = store.load(r / "data/prepared/codrivers")
    assert len(co) == 9 and set(co["group"]) == SPEAKERS and set(co["domain"]) == {"target"}
    assert {json.loads(x)["target_mix"]["noise"] for x in co["recipe"]} <= HELD_OUT
    incar = store.load(r / "data/prepared/speech_incar")
    assert not set(co["id"]) & set(incar["id"]) and not set(co["group"]) & set(incar["group"])
    assert "codrivers: 9 real rows of 3 speakers" in mini["prepare"]


def test_prepare_target_writes_an_empty_set_when_off(mini, tmp_path, monkeypatch):
    r = mini["root"]
    for d in ("speech", "noise"):
        store.save(store.load(r / f"data/prepared/{d}"), tmp_path / f"data/prepared/{d}")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({**PARAMS, "target_mix": {**PARAMS["target_mix"],
                                                                                   "codrivers": False}}))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(target, "_tts_target", _fake_tts_target)
    line = _run("prepare", "target")
    assert "codrivers: none (target_mix.codrivers is false)" in line
    assert len(store.load(tmp_path / "data/prepared/codrivers")) == 0
    assert "check sets left out: codrivers (empty" in _run("split", "audio")
    assert "codrivers" not in store.load(tmp_path / "data/splits/audio")


# --------------------------------------------------------------------------- (b) the check split


def test_split_adds_the_check_split_and_leaves_the_rest_unchanged(mini):
    r = mini["root"]
    parts, plain = store.load(r / "data/splits/audio"), store.load(r / "nocheck")
    assert list(parts) == [*schema.SPLITS, "codrivers"] and list(plain) == list(schema.SPLITS)
    for s in schema.SPLITS:  # train, train_dev, dev, test: byte for byte the same with or without it
        assert store.tree_digest(r / "data/splits/audio" / s) == store.tree_digest(r / "nocheck" / s), s
    co = parts["codrivers"]
    assert len(co) == 9 and set(co["group"]) == SPEAKERS and set(co["weight"]) == {1.0}
    other = set().union(*(set(parts[s]["group"]) for s in schema.SPLITS))
    assert not SPEAKERS & other
    m = json.loads((r / "metrics/split_audio.json").read_text())
    assert m["rows"]["codrivers"] == 9 and m["groups"]["codrivers"] == 3
    assert m["check"]["codrivers"]["groups"] == sorted(SPEAKERS)
    assert set(m["check"]["codrivers"]["noise_groups"]) <= HELD_OUT and m["check"]["codrivers"]["noise_groups"]
    assert "check" not in json.loads((r / "nocheck.json").read_text())
    assert "## Check sets (evaluation only)" in (r / "reports/split_audio.md").read_text()
    assert "codrivers 9" in mini["split"]


def test_check_split_is_never_a_parent_and_never_shares_a_group(mini):
    parts = store.load(mini["root"] / "data/splits/audio")
    # synthesis from train keeps the check split as it is; from a codriver row it is refused
    parent = parts["train"][0]
    ok = audio.build_dataset([dict(id=parent["id"] + "/mix", audio=np.asarray(parent["audio"], np.float32),
                                   sampling_rate=parent["sampling_rate"], label=LABELS[parent["label"]],
                                   domain="source", origin="synthetic", group="x", parent=parent["id"],
                                   recipe="{}")], LABELS)
    out = splits.attach_synthetic(parts, ok, {})
    assert list(out) == list(parts) and out["codrivers"]["id"] == parts["codrivers"]["id"]
    cid = parts["codrivers"][0]["id"]
    bad = ok.map(lambda r: {"parent": cid, "id": cid + "/mix"})
    with pytest.raises(ShiftlabError) as e:
        splits.attach_synthetic(parts, bad, {})
    assert f"parent {cid} in codrivers" in _one_line(e) and "never from dev/test/codrivers" in _one_line(e)
    # a speaker heard in training, or a synthetic / source row, is refused in a check split
    train_group = parts["train"][0]["group"]
    leaked = parts["codrivers"].map(lambda r, i: {"group": train_group} if i == 0 else {}, with_indices=True)
    with pytest.raises(ShiftlabError) as e:
        splits.check(hfds.DatasetDict({**parts, "codrivers": leaked}))
    assert f"group {train_group!r} is in both train+train_dev and codrivers" in _one_line(e)
    src = parts["codrivers"].map(lambda r, i: {"domain": "source"} if i == 0 else {}, with_indices=True)
    with pytest.raises(ShiftlabError) as e:
        splits.check(hfds.DatasetDict({**parts, "codrivers": src}))
    assert "check split codrivers holds row" in _one_line(e)
    plain = hfds.DatasetDict({s: parts[s] for s in schema.SPLITS})
    with pytest.raises(ShiftlabError) as e:
        splits.add_check_sets(plain, {"codrivers": leaked.remove_columns("weight")})
    assert "is in both train+train_dev and codrivers" in _one_line(e)
    with pytest.raises(ShiftlabError) as e:
        splits.add_check_sets(plain, {"night": parts["codrivers"]})
    assert "check set 'night': unknown" in _one_line(e)
    assert list(splits.add_check_sets(plain, {"codrivers": parts["codrivers"].select([])})) == list(schema.SPLITS)


def test_training_never_reads_the_check_split(tmp_path):
    """Same training (checkpoint bytes) with or without the check split; it is predicted at the end."""
    base = image_splits(n_train=60)
    co = image_split(12, "co", seed=9)
    store.save(base, tmp_path / "plain")
    store.save(hfds.DatasetDict({**base, "codrivers": co}), tmp_path / "with")
    m = {}
    for name in ("plain", "with"):
        m[name] = trainer.main_train(train_cfg(epochs=2), tmp_path / name, tmp_path / f"{name}_model",
                                     tmp_path / f"{name}.json", predictions_path=tmp_path / f"{name}.npz",
                                     model=Tiny, progress=False)
    assert (tmp_path / "plain_model/best.pt").read_bytes() == (tmp_path / "with_model/best.pt").read_bytes()
    assert m["with"]["best_epoch"] == m["plain"]["best_epoch"]
    assert {k: v for k, v in m["with"]["error"].items() if k != "codrivers"} == m["plain"]["error"]
    assert m["with"]["rows"]["codrivers"] == 12 and "codrivers" not in m["plain"]["rows"]
    preds, _ = trainer.load_predictions(tmp_path / "with.npz")
    assert preds["codrivers"]["id"].tolist() == co["id"]


# --------------------------------------------------------------------------- (c) evaluate


def test_evaluate_scores_the_codrivers_apart_and_calls_three_speakers_inconclusive(mini):
    r = mini["root"]
    res = json.loads((r / "eval/audio/results.json").read_text())
    assert res["splits"] == ["test", "dev"] and res["check_splits"] == ["codrivers"]
    assert res["check"]["codrivers"]["rows"] == 9 and res["check"]["codrivers"]["groups"] == sorted(SPEAKERS)
    c = res["compare"]["codrivers"]["synth"]
    assert c["difference"]["value"] == pytest.approx(-1.0) and c["groups"] == 3
    assert c["verdict"] == "inconclusive" and c["reason"] == "too few groups (3 < evaluate.min_groups 5)"
    why = res["check"]["codrivers"]["why_inconclusive"]
    assert "3 speakers (spk0, spk1, spk2), fewer than evaluate.min_groups = 5" in why
    v = res["variants"]["codrivers"]
    assert v["nosynth"]["error"] == pytest.approx(1.0) and v["synth"]["error"] == pytest.approx(0.0)
    assert v["synth"]["unit"] == "rows" and "only 3 group(s)" in v["synth"]["note"]
    run = res["runs"]["synth"]["0"]["splits"]["codrivers"]
    assert run["n"] == 9 and run["groups"] == 3 and "only 3 group(s)" in run["note"]
    assert set(res["runs"]["synth"]["0"]["decomposition"]) == set(ev.COMPONENTS)  # decomposition untouched
    flat = json.loads((r / "metrics/evaluate_audio.json").read_text())
    assert flat["compare/codrivers/synth/verdict"] == "inconclusive" and flat["check/codrivers/groups"] == 3
    assert flat["variant/codrivers/nosynth/error"] == pytest.approx(1.0)
    md = (r / "reports/evaluate_audio.md").read_text()
    assert "## Real-speech check: codrivers" in md and "**Why inconclusive:**" in md
    head = md.split("## Real-speech check")[0]
    assert "codrivers" not in head  # the verdict table on test/dev does not mix it in
    assert "codrivers (9 rows, 3 speakers) verdicts: synth - nosynth inconclusive" in mini["evaluate"]


def test_the_group_rule_and_nothing_else_makes_it_inconclusive(mini):
    r = mini["root"]
    runs = {v: {str(s): trainer.load_predictions(r / f"runs/audio/{v}/s{s}/predictions.npz")[0]
                for s in PARAMS["experiment"]["seeds"]} for v in PARAMS["experiment"]["variants"]}
    # the same predictions with evaluate.min_groups at 3: the effect is plain
    ok = ev.compare(runs, LABELS, {"min_groups": 3}, split="codrivers")
    assert ok["verdict"] == "helps" and ok["unit"] == "groups"
    few = ev.compare(runs, LABELS, {}, split="codrivers")
    assert few["verdict"] == "inconclusive" and few["reason"].startswith("too few groups")


def test_a_check_split_with_enough_groups_gets_a_verdict():
    """Six speakers (>= min_groups 5): cluster intervals over speakers and a real verdict."""
    n, g = 600, np.repeat([f"spk{i}" for i in range(6)], 100)
    y = np.arange(n) % len(LABELS)
    ids = np.array([f"co/{i:04d}" for i in range(n)])
    runs = {}
    for v, rate in (("nosynth", 0.5), ("synth", 0.1)):
        runs[v] = {}
        for s in range(3):
            wrong = np.random.default_rng(10 * s + (v == "synth")).random(n) < rate
            pred = np.where(wrong, (y + 1) % len(LABELS), y)
            runs[v][s] = {"codrivers": {"y": y, "pred": pred, "id": ids, "group": g}, "label_names": LABELS}
    res = ev.compare_all(runs, LABELS, {"n_boot": 200}, splits=("codrivers",))
    c = res["codrivers"]["synth"]
    assert c["unit"] == "groups" and c["groups"] == 6 and c["verdict"] == "helps"
    e = ev.evaluate(runs["synth"][0], LABELS, {"n_boot": 200})["splits"]["codrivers"]
    assert e["method"] == "groups" and e["note"] is None
    assert ev.few_groups_text("codrivers", [f"spk{i}" for i in range(6)], 5) is None


# --------------------------------------------------------------------------- (d) the report


def test_report_has_the_codriver_section(mini):
    md = Path(mini["report"]["markdown"]).read_text()
    assert "### Real-speech check: the codrivers" in md
    sec = md.split("### Real-speech check: the codrivers", 1)[1].split("\n### ", 1)[0]
    res = json.loads((mini["root"] / "eval/audio/results.json").read_text())
    m = json.loads((mini["root"] / "metrics/split_audio.json").read_text())
    assert "9 real recordings of 3 speakers (spk0, spk1, spk2)" in sec
    assert ", ".join(m["check"]["codrivers"]["noise_groups"]) in sec
    for v, d in res["variants"]["codrivers"].items():
        assert f"| {v} | 2 | {100 * d['error']:.1f}% | [{100 * d['low']:.1f}%, {100 * d['high']:.1f}%] |" in sec
    assert "**inconclusive** | too few groups (3 < evaluate.min_groups 5)" in sec
    assert "Why the verdicts are inconclusive: codrivers has 3 speakers" in sec
    assert "codrivers check (3 speakers): synth - nosynth inconclusive" in md  # the summary line
    block = report.results_block(mini["root"], {"scenarios": ["audio"]})
    assert "**Real-speech check: the codrivers**" in block and "Why the verdicts are inconclusive" in block


def test_report_without_the_check_says_not_run(mini, tmp_path):
    res = json.loads((mini["root"] / "eval/audio/results.json").read_text())
    for k in ("check_splits", "check"):
        res.pop(k)
    store.write_json(tmp_path / "eval/audio/results.json", res)
    out = report.build(tmp_path, {"scenarios": ["audio"], "examples": 0}, "out")
    md = Path(out["markdown"]).read_text()
    assert "*the codriver check: not run*" in md
    assert "Real-speech check" not in report.results_block(tmp_path, {"scenarios": ["audio"]})  # README: as before
