"""`shiftlab train --all` (the dvc.yaml train stage): every variant x seed of params experiment,
``experiment.jobs`` runs side by side, each its own process pinned to ``num_threads``.

What is checked: every run is there with its metrics, predictions and log; the summary
metrics equal the per-run files; the runs are byte-identical to one-at-a-time runs (the
result does not depend on how many run at once); a failing run names itself and its log.
Tiny images and a tiny model made here (seconds on one core).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from shiftlab import cli, store
from shiftlab.datasets import images

TINY = {"model": "cbam_resnet", "model_kwargs": {"width": 2, "stem_stride": 2}, "epochs": 1, "batch_size": 16,
        "eval_train_rows": 20, "num_threads": 1, "device": "cpu", "channels_last": False}


def _source(n_src=48, n_tgt=24, seed=0):
    rng = np.random.default_rng(seed)
    n = n_src + n_tgt
    imgs = rng.integers(0, 256, (n, 12, 12, 1), dtype=np.uint8)
    domain = ["source"] * n_src + ["target"] * n_tgt
    groups = [f"s{i}" for i in range(n_src)] + [f"t{i}" for i in range(n_tgt)]
    return images.from_arrays(imgs, np.arange(n) % 3, domain, label_names=["a", "b", "c"], groups=groups,
                              name="toy")


@pytest.fixture
def work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store.save(_source(), tmp_path / "data/prepared/images")
    return tmp_path


def _params(path: Path, **sections) -> str:
    path.write_text(yaml.safe_dump(sections, sort_keys=False))
    return str(path)


def _digest(run: Path) -> dict:
    return {n: (run / n).read_bytes() for n in ("predictions.npz", "metrics.json")}


def test_train_all_runs_every_variant_and_seed_side_by_side(work, capsys):
    exp = {"variants": ["nosynth", "synth"], "seeds": [0, 1], "jobs": 2}
    p = _params(work / "p.yaml", train_images=TINY, experiment=exp, split_images={"target_train_fraction": 0.25},
                synth_blur={"workers": 1, "device": "cpu"})
    assert cli.main(["--params", p, "split", "images"]) == 0
    assert cli.main(["--params", p, "synth", "blur", "--section", "synth_blur"]) == 0
    capsys.readouterr()
    assert cli.main(["--params", p, "train", "--scenario", "images", "--all"]) == 0
    out = capsys.readouterr().out
    assert "4 runs" in out and "2 at a time" in out and out.count("train: cbam_resnet") == 4
    summary = json.loads((work / "metrics/train/images.json").read_text())
    assert set(summary) == set(exp["variants"])
    for var in exp["variants"]:
        for seed in exp["seeds"]:
            run = work / "runs/images" / var / f"s{seed}"
            m = json.loads((run / "metrics.json").read_text())
            assert summary[var][f"s{seed}"] == m and m["epochs"] == 1
            assert (run / "best.pt").is_file() and "train: cbam_resnet" in (run / "train.log").read_text()
    assert not list(work.glob("runs/.*logs*"))
    # one at a time (jobs 1): the same bytes -- the result never depends on how many run at once
    before = {(v, 1): _digest(work / "runs/images" / v / "s1") for v in exp["variants"]}
    p1 = _params(work / "p1.yaml", train_images=TINY, experiment=dict(exp, seeds=[1], jobs=1),
                 split_images={"target_train_fraction": 0.25}, synth_blur={"workers": 1, "device": "cpu"})
    assert cli.main(["--params", p1, "train", "--scenario", "images", "--all", "--out", "runs1",
                     "--metrics", "m1.json"]) == 0
    after = {(v, 1): _digest(work / "runs1" / v / "s1") for v in exp["variants"]}
    for k in before:
        assert before[k]["predictions.npz"] == after[k]["predictions.npz"], k


def test_train_all_names_the_failing_run_and_its_log(work, capsys):
    exp = {"variants": ["nosynth", "synth"], "seeds": [0], "jobs": 2}
    p = _params(work / "p.yaml", train_images=TINY, experiment=exp, split_images={"target_train_fraction": 0.25})
    assert cli.main(["--params", p, "split", "images"]) == 0
    capsys.readouterr()
    # no synthetic rows were made: the synth run fails, nosynth still trains
    assert cli.main(["--params", p, "train", "--scenario", "images", "--all"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "1 of 2 runs failed" in err[0] and "synth s0" in err[0] and "train.log" not in err[0]
    assert "synthetic rows" in err[0] and ".logs/synth_s0.log" in err[0]
    assert (work / "runs/images/nosynth/s0/predictions.npz").is_file()
    assert not (work / "metrics/train/images.json").exists()


def test_train_needs_a_variant_or_all(work, capsys):
    assert cli.main(["train", "--scenario", "images"]) == 2
    assert "--variant" in capsys.readouterr().err
    assert cli.main(["train", "--scenario", "images", "--all", "--variant", "synth"]) == 2
    assert "drop --variant" in capsys.readouterr().err
