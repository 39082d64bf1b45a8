"""End to end: `dvc repro` of the real dvc.yaml on small params in a temp copy of the repo.

Runs the stages that exist (prepare images/speech/noise, split images/audio) on the
embedded default data with small sizes, checks the outputs, that a second `dvc repro`
skips every stage, and that re-running a stage reproduces byte-identical outputs.
"""

import json
import os
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

SMALL = {
    "prepare_images": {"fashion_mnist": {"source_rows": 600, "target_rows": 200}},
    "prepare_speech": {"tts": {"espeak_voices": 3, "flite_voices": ["slt"]}},
    "split_images": {"train_dev_fraction": 0.1},
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
    for stage in ("prepare images", "prepare speech", "prepare noise", "split_images", "split_audio",
                  "synth blur [synth_blur]", "synth blur [synth_blur_narrow]"):
        assert stage in first.stdout, first.stdout  # one summary line per stage
    imgs = store.load(work / "data/prepared/images")
    assert len(imgs) == 800 and set(imgs["domain"]) == {"source", "target"}
    splits = store.load(work / "data/splits/images")
    assert set(splits) == {"train", "train_dev", "dev", "test"}
    assert set(splits["dev"]["domain"]) == {"target"} and set(splits["test"]["domain"]) == {"target"}
    speech = store.load(work / "data/splits/audio")
    assert all(len(speech[s]) > 0 for s in speech)
    assert set(speech["dev"]["group"]).isdisjoint(speech["test"]["group"])
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
    assert sum(metrics["rows"].values()) == 800
    assert (work / "reports/split_audio.md").read_text().strip()


def test_second_repro_skips_everything(project):
    _, run, _ = project
    again = run(sys.executable, "-m", "dvc", "repro")
    assert "didn't change, skipping" in again.stdout
    assert "Running stage" not in again.stdout, again.stdout
    status = run(sys.executable, "-m", "dvc", "status")
    assert "up to date" in status.stdout


def test_forced_rerun_is_byte_identical(project):
    work, run, _ = project
    outs = ("data/prepared/images", "data/prepared/speech", "data/splits/images", "data/splits/audio", "data/synth/blur")
    before = {p: store.tree_digest(work / p) for p in outs}
    run(sys.executable, "-m", "dvc", "repro", "-f", "prepare_images", "prepare_speech", "split_images", "split_audio",
        "synth_blur", "--single-item")
    after = {p: store.tree_digest(work / p) for p in before}
    assert before == after
    status = run(sys.executable, "-m", "dvc", "status")
    assert "up to date" in status.stdout
