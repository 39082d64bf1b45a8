"""End to end: `dvc repro` of the real dvc.yaml on small params in a temp copy of the repo.

Runs every stage (prepare, split, synthesize, check diversity, the train matrix,
evaluate, report) on the embedded default data with tiny sizes, checks the outputs,
that a second `dvc repro` skips every stage, that re-running a stage reproduces
byte-identical outputs, and that `dvc exp run -S ...` runs a real experiment whose
metrics `dvc exp show` / `dvc metrics diff` report.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from shiftlab import store

NEEDS = [
    "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz",
    "/usr/share/games/trigger-rally/data.zip",
    "/usr/share/games/dustracing2d/sounds/carEngine.ogg",
    "/usr/share/games/openttd/baseset/opensfx/opensfx.cat",
]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.debian_data,
    pytest.mark.skipif(
        not all(os.path.exists(p) for p in NEEDS) or shutil.which("espeak-ng") is None,
        reason="Debian data packages / espeak-ng not installed (make test installs them)",
    ),
]

TINY_TRAIN = {"epochs": 1, "batch_size": 64, "eval_train_rows": 200, "num_threads": 1}
SMALL = {
    "prepare_images": {"fashion_mnist": {"source_rows": 600, "target_rows": 400}},
    "prepare_speech": {"tts": {"espeak_voices": 3, "flite_voices": ["awb"]}},
    "target_mix": {"tts": {"espeak_variants": 12, "flite_voices": [], "festival_voices": ["ked_diphone"], "takes": 1},
                   "torcs_drives": 2, "seconds_per_drive": 5.0},
    "split_images": {"train_dev_fraction": 0.1, "target_train_fraction": 0.2, "max_source_rows": None},
    "synth_mix": {"bank": {"n_cars": 12, "seconds_per_car": 4.0}},
    "check_images": {"max_rows": 300, "max_target": 200, "max_kernels": 300, "realism": {"n_boot": 100},
                     "features": {"train_rows": 400, "epochs": 1}},
    "check_audio": {"n_boot": 100, "max_bank_segments": 200},
    "calibrate_blur": {"source_rows": 100, "grid": {"linear.length": [[3.0, 11.0], [3.0, 15.0]],
                                                    "shake.max_length": [[8.0, 32.0]]}},
    "experiment": {"seeds": [0, 1]},
    "train_images": dict(TINY_TRAIN, model_kwargs={"width": 2, "stem_stride": 2}),
    "train_audio": dict(TINY_TRAIN, model_kwargs={"width": 2, "stem_stride": 2}),
    "evaluate": {"n_boot": 200},
    "report": {"examples": 4},
}


def _merge(base, over):
    for k, v in over.items():
        if isinstance(v, dict):
            _merge(base.setdefault(k, {}), v)
        else:
            base[k] = v
    return base


@pytest.fixture(scope="module")
def project(tmp_path_factory, request):
    root = Path(request.config.rootpath)
    work = tmp_path_factory.mktemp("proj")
    files = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True).stdout.split()
    for rel in files:
        src = root / rel
        if src.is_file():
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, work / rel)
    params = yaml.safe_load((work / "params.yaml").read_text())
    (work / "params.yaml").write_text(yaml.safe_dump(_merge(params, SMALL), sort_keys=False))
    env = dict(
        os.environ,
        DVC_NO_ANALYTICS="1",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t",
    )

    def run(*cmd, check=True):
        r = subprocess.run(list(cmd), cwd=work, env=env, capture_output=True, text=True)
        if check and r.returncode != 0:
            raise AssertionError(f"{cmd} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
        return r

    run("git", "init", "-q")
    run(sys.executable, "-m", "dvc", "config", "core.site_cache_dir", str(work / ".site_cache"))
    run("git", "add", "-A")
    run("git", "commit", "-qm", "init")
    first = run(sys.executable, "-m", "dvc", "repro")
    return work, run, first


def test_repro_builds_every_output(project):
    work, _, first = project
    for stage in ("prepare images", "prepare speech", "prepare noise", "prepare target", "split_images",
                  "split_audio", "synth blur [synth_blur]", "synth blur [synth_blur_narrow]", "mix [synth_mix]",
                  "mix [synth_mix_narrow]", "check images [data/synth/blur]", "check audio [data/synth/mix_narrow]",
                  "train --all [images]: 6 runs", "train --all [audio]: 6 runs", "train: cbam_resnet",
                  "evaluate images: 6 runs", "evaluate audio: 6 runs", "report: "):
        assert stage in first.stdout, first.stdout  # one summary line per stage
    imgs = store.load(work / "data/prepared/images")
    assert len(imgs) == 1000 and set(imgs["domain"]) == {"source", "target"}
    splits = store.load(work / "data/splits/images")
    assert set(splits) == {"train", "train_dev", "dev", "test"}
    assert set(splits["dev"]["domain"]) == {"target"} and set(splits["test"]["domain"]) == {"target"}
    speech = store.load(work / "data/splits/audio")
    assert all(len(speech[s]) > 0 for s in speech)
    assert set(speech["dev"]["group"]).isdisjoint(speech["test"]["group"])
    # the codriver check set: trigger-rally's 3 speakers, evaluation only, under the held-out noise
    assert list(speech) == ["train", "train_dev", "dev", "test", "codrivers"]
    assert set(speech["codrivers"]["group"]) == {"trigger_rally/ab", "trigger_rally/paula", "trigger_rally/tim"}
    assert len(speech["codrivers"]) == 75 and set(speech["codrivers"]["domain"]) == {"target"}
    noise = store.load(work / "data/prepared/noise")
    assert {"source", "target"} == set(noise["domain"])
    # the image target is simulated video frames; synthesis only blurs train/train_dev source rows
    tgt = imgs.filter(lambda d: d == "target", input_columns="domain")
    assert all("frames" in json.loads(r) for r in tgt["recipe"])
    n_src = sum(1 for s in ("train", "train_dev") for d in splits[s]["domain"] if d == "source")
    for name in ("blur", "blur_narrow"):
        syn = store.load(work / "data/synth" / name)
        assert len(syn) == n_src and set(syn["origin"]) == {"synthetic"}
    narrow = store.load(work / "data/synth/blur_narrow")
    assert len({json.dumps(json.loads(r)["kernel"], sort_keys=True) for r in narrow["recipe"]}) == 1
    metrics = json.loads((work / "metrics/split_images.json").read_text())
    assert sum(metrics["rows"].values()) == 1000
    assert (work / "reports/split_audio.md").read_text().strip()
    # audio: the target is held-out voices under held-out real car noise; synthesis never uses that noise
    assert set(incar_groups := store.load(work / "data/prepared/speech_incar")["group"])
    src_speech = store.load(work / "data/prepared/speech")
    assert set(src_speech.filter(lambda d: d == "source", input_columns="domain")["group"]).isdisjoint(
        {g for g, d in zip(incar_groups, store.load(work / "data/prepared/speech_incar")["domain"]) if d == "target"})
    incar = store.load(work / "data/prepared/speech_incar")
    tgt_noise = {json.loads(r)["target_mix"]["noise"] for r, d in zip(incar["recipe"], incar["domain"])
                 if d == "target"}
    bank = store.load(work / "data/synth/mix_bank")
    assert tgt_noise and tgt_noise.isdisjoint(bank["id"])
    assert set(store.load(work / "data/synth/mix_narrow_bank")["id"]) == {"dustracing2d/skid"}
    # diversity checks: the narrow syntheses fail their gates
    for name in ("check_images_narrow", "check_audio_narrow"):
        chk = json.loads((work / f"metrics/{name}.json").read_text())
        assert chk["verdict"] == "fail" and any(not g["passed"] for g in chk["gates"])
        assert (work / f"reports/{name}.md").read_text().startswith("#")
    # every run of the matrix: best checkpoint (weights only) and predictions
    for sc in ("images", "audio"):
        for var in ("nosynth", "synth", "narrow"):
            for seed in (0, 1):
                run_dir = work / "runs" / sc / var / f"s{seed}"
                assert (run_dir / "best.pt").is_file() and (run_dir / "predictions.npz").is_file()
                m = json.loads((run_dir / "metrics.json").read_text())
                assert m["epochs"] == 1 and 0.0 <= m["error"]["dev"] <= 1.0
                assert "train:" in (run_dir / "train.log").read_text()  # train --all keeps each run's log
                assert json.loads((work / f"metrics/train/{sc}.json").read_text())[var][f"s{seed}"] == m
        res = json.loads((work / f"eval/{sc}/results.json").read_text())
        assert set(res["runs"]) == {"nosynth", "synth", "narrow"} and res["primary_split"] == "test"
        assert set(res["compare"]) == ({"test", "dev", "codrivers"} if sc == "audio" else {"test", "dev"})
        if sc == "audio":  # 3 speakers < evaluate.min_groups: inconclusive by rule
            assert res["check_splits"] == ["codrivers"] and len(res["check"]["codrivers"]["groups"]) == 3
            assert all(c["verdict"] == "inconclusive" and c["reason"].startswith("too few groups (3 <")
                       for c in res["compare"]["codrivers"].values())
        for sp in ("test", "dev"):
            assert set(res["compare"][sp]) == {"synth", "narrow", "narrow_vs_synth"}
            for treat, c in res["compare"][sp].items():
                assert c["verdict"] in ("helps", "hurts", "equivalent", "inconclusive")
                assert c["mde"] >= 0 and c["holm"]["of"] == 3 and c["n_seeds"] == 2
        flat = json.loads((work / f"metrics/evaluate_{sc}.json").read_text())
        assert {"compare/test/synth/difference", "compare/test/synth/mde", "compare/test/synth/verdict",
                "compare/dev/narrow_vs_synth/difference"} <= set(flat)
    cal = json.loads((work / "metrics/calibrate_blur.json").read_text())
    # base (= the first grid point: scored once) + 1, scored on target-train only
    assert cal["recommended"] in ("base", "c1") and len(cal["candidates"]) == 2
    md = (work / "reports/report/report.md").read_text()
    html = (work / "reports/report/report.html").read_text()
    assert "Does the synthesis help? (verdicts on test)" in md and "MDE" in md and "Holm level" in md
    assert "Synthesis ranges calibrated on target-train" in md and "ImageMagick" in md
    assert "no measurable effect" not in md
    assert "### Real-speech check: the codrivers" in md and "Why the verdicts are inconclusive" in md
    assert "data:image/png;base64," in html


def test_second_repro_skips_everything(project):
    _, run, _ = project
    again = run(sys.executable, "-m", "dvc", "repro")
    assert "didn't change, skipping" in again.stdout
    assert "Running stage" not in again.stdout, again.stdout
    status = run(sys.executable, "-m", "dvc", "status")
    assert "up to date" in status.stdout


def test_forced_rerun_is_byte_identical(project):
    work, run, _ = project
    outs = ("data/prepared/images", "data/prepared/speech", "data/splits/images", "data/splits/audio", "data/synth/blur",
            "data/prepared/speech_incar", "data/prepared/codrivers", "data/synth/mix", "data/synth/mix_bank")
    before = {p: store.tree_digest(work / p) for p in outs}
    run(sys.executable, "-m", "dvc", "repro", "-f", "prepare_images", "prepare_speech", "split_images", "split_audio",
        "synth_blur", "prepare_target", "synth_mix", "--single-item")
    after = {p: store.tree_digest(work / p) for p in before}
    assert before == after
    status = run(sys.executable, "-m", "dvc", "status")
    assert "up to date" in status.stdout


def test_experiment_run_show_and_diff(project):
    """`dvc exp run -S` reruns what the override touches; exp show / metrics diff report it."""
    work, run, _ = project
    r = run(sys.executable, "-m", "dvc", "exp", "run", "-S", "train_images.lr=0.05", "-n", "lr005")
    ran = set(re.findall(r"Running stage '([^']+)'", r.stdout))
    skipped = set(re.findall(r"Stage '([^']+)' didn't change, skipping", r.stdout))
    # the override reaches the image runs and what reads them ...
    assert {"train@images", "evaluate@images", "report"} <= ran, r.stdout
    # ... but not the image data, synthesis and checks before them
    assert {"split_images", "synth_blur", "check_images@run0"} <= skipped, r.stdout
    # ... and nothing of the audio scenario, which it does not touch
    audio = {"prepare_speech", "prepare_noise", "prepare_target", "split_audio", "synth_mix", "synth_mix_narrow",
             "check_audio@run0", "check_audio@run1", "train@audio", "evaluate@audio"}
    assert not ran & audio, sorted(ran & audio)
    assert {"prepare_speech", "split_audio", "evaluate@audio"} <= skipped, r.stdout
    shown = json.loads(run(sys.executable, "-m", "dvc", "exp", "show", "--json").stdout)
    text = json.dumps(shown)
    assert "lr005" in text and "evaluate_images.json" in text
    diff = run(sys.executable, "-m", "dvc", "metrics", "diff", "HEAD", "lr005", "--json")
    assert diff.returncode == 0
    run(sys.executable, "-m", "dvc", "plots", "diff", "HEAD", "lr005", "-o", str(work / ".plots"))
    assert any((work / ".plots").rglob("*.html"))
