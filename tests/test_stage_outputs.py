"""Stages commit all their outputs together: a failure or Ctrl-C over a good earlier output
leaves every old output whole (shiftlab.store.outputs); `shiftlab merge` through the CLI.

Each test runs the stage once for a good output, then again with different inputs or
params and a failure injected after the stage's first output has been written (to its
staging path), and checks every old output byte for byte; then the same rerun without
the failure must change every output (so the comparison can tell old from new).
Small data made here; the heavy diversity computations of `check` are replaced by
stubs (what is tested is how the command writes its outputs).
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import datasets as hfds
import numpy as np
import pytest
import yaml

from shiftlab import cli, store
from shiftlab.datasets import audio, images
from shiftlab.errors import ShiftlabError

SR = 8000
LABELS = ["left", "right", "stop"]


def _digests(*paths):
    return {str(p): (store.tree_digest(p) if Path(p).is_dir() else Path(p).read_bytes()) for p in paths}


def _leftovers(root: Path):
    return sorted(str(p.relative_to(root)) for p in root.rglob(".*") if ".tmp-" in p.name or ".old-" in p.name)


def _params(path: Path, **sections):
    path.write_text(yaml.safe_dump(sections, sort_keys=False))
    return str(path)


def _run(*argv):
    rc = cli.main([str(a) for a in argv])
    assert rc == 0, argv
    return rc


def _image_source(n_src=40, n_tgt=16, seed=0):
    rng = np.random.default_rng(seed)
    n = n_src + n_tgt
    imgs = rng.integers(0, 256, (n, 12, 10, 1), dtype=np.uint8)
    domain = ["source"] * n_src + ["target"] * n_tgt
    groups = [f"g{i // 2}" for i in range(n_src)] + [f"t{i}" for i in range(n_tgt)]
    return images.from_arrays(imgs, rng.integers(0, 3, n), domain, label_names=["a", "b", "c"], groups=groups,
                              name="toy")


def _tone(n, freq, seed, level=0.3):
    t = np.arange(n) / SR
    x = level * np.sin(2 * np.pi * freq * t) + 0.01 * np.random.default_rng(seed).standard_normal(n)
    return x.astype(np.float32)


def _speech(n, domain, group_of, prefix):
    return [dict(id=f"{prefix}/{i:03d}", audio=_tone(400, 200 + 50 * (i % 7), zlib.crc32(prefix.encode()) + i),
                 sampling_rate=SR, label=LABELS[i % 3], domain=domain, group=group_of(i),
                 recipe=json.dumps({"i": i})) for i in range(n)]


def _audio_splits():
    parts = dict(
        train=_speech(12, "source", lambda i: f"voice{i % 4}", "tts/tr") + _speech(4, "target", lambda i: "spk0", "real/s0"),
        train_dev=_speech(4, "source", lambda i: f"voice{i % 4}", "tts/td"),
        dev=_speech(4, "target", lambda i: "spk1", "real/s1"),
        test=_speech(4, "target", lambda i: "spk2", "real/s2"),
    )
    return hfds.DatasetDict({k: audio.build_dataset(v, LABELS) for k, v in parts.items()})


def _noise():
    rows = [dict(id=f"rec/{k}", audio=(np.random.default_rng(k).standard_normal(3000) * 0.05 * (k + 1)).astype(np.float32),
                 sampling_rate=SR, label="engine", domain="source" if k < 3 else "target", group=f"rec/{k}",
                 recipe=json.dumps({"k": k})) for k in range(4)]
    return audio.build_dataset(rows, ["engine"])


@pytest.fixture
def work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store.save(_image_source(), tmp_path / "data/prepared/images")
    return tmp_path


# --------------------------------------------------------------------------- split


@pytest.mark.parametrize("interrupt", [RuntimeError("boom"), KeyboardInterrupt()])
def test_split_failing_after_its_first_output_keeps_every_old_output(work, monkeypatch, interrupt):
    from shiftlab.datasets import splits

    outs = (work / "data/splits/images", work / "metrics/split_images.json", work / "reports/split_images.md")
    _run("--params", _params(work / "p1.yaml", split_images={"seed": 0}), "split", "images")
    old = _digests(*outs)
    p2 = _params(work / "p2.yaml", split_images={"seed": 1, "max_source_rows": 30})
    real_markdown = splits.markdown

    def failing(*a, **k):  # called after the dataset and the metrics have been written
        assert any(p.name.startswith(".images.tmp-") for p in (work / "data/splits").iterdir())
        assert any(p.name.startswith(".split_images.json.tmp-") for p in (work / "metrics").iterdir())
        raise interrupt

    monkeypatch.setattr(splits, "markdown", failing)
    if isinstance(interrupt, KeyboardInterrupt):
        assert cli.main(["--params", p2, "split", "images"]) == 130
    else:
        with pytest.raises(RuntimeError, match="boom"):
            cli.main(["--params", p2, "split", "images"])
    assert _digests(*outs) == old
    assert _leftovers(work) == []
    monkeypatch.setattr(splits, "markdown", real_markdown)
    _run("--params", p2, "split", "images")
    new = _digests(*outs)
    assert all(new[k] != old[k] for k in old)


# --------------------------------------------------------------------------- synth blur


def test_synth_failing_while_saving_keeps_the_old_output(work, monkeypatch):
    _run("--params", _params(work / "p0.yaml"), "split", "images")
    out = work / "data/synth/blur"
    fast = {"workers": 1, "device": "cpu", "batch_size": 16}
    _run("--params", _params(work / "p1.yaml", synth_blur={**fast, "seed": 0}), "synth", "blur")
    old = _digests(out)
    p2 = _params(work / "p2.yaml", synth_blur={**fast, "seed": 5})
    real_save = hfds.Dataset.save_to_disk

    def save_then_die(self, path, **kw):  # the Arrow shards are on disk, then Ctrl-C
        real_save(self, path, **kw)
        raise KeyboardInterrupt

    monkeypatch.setattr(hfds.Dataset, "save_to_disk", save_then_die)
    assert cli.main(["--params", p2, "synth", "blur"]) == 130
    assert _digests(out) == old and _leftovers(work) == []
    monkeypatch.setattr(hfds.Dataset, "save_to_disk", real_save)
    _run("--params", p2, "synth", "blur")
    assert _digests(out) != old


# --------------------------------------------------------------------------- mix


def test_mix_failing_after_the_bank_keeps_rows_and_bank_old(work, monkeypatch):
    store.save(_audio_splits(), work / "data/splits/audio")
    store.save(_noise(), work / "data/prepared/noise")
    outs = (work / "data/synth/mix", work / "data/synth/mix_bank")
    mix = {"device": "cpu", "batch_size": 5, "bank": {"sources": ["real"], "recordings": ["*"], "max_source_share": 1.0}}
    _run("--params", _params(work / "p1.yaml", synth_mix={**mix, "seed": 0}), "mix")
    old = _digests(*outs)
    mix2 = {**mix, "seed": 1, "bank": {**mix["bank"], "recordings": ["rec/0", "rec/1"]}}
    p2 = _params(work / "p2.yaml", synth_mix=mix2)
    real_save = store.save
    saved = []

    def second_save_fails(ds, path, *a, **k):  # the bank is written (staged), the rows fail
        if saved:
            raise OSError("disk full")
        saved.append(path)
        return real_save(ds, path, *a, **k)

    monkeypatch.setattr(store, "save", second_save_fails)
    with pytest.raises(OSError, match="disk full"):
        cli.main(["--params", p2, "mix"])
    assert Path(saved[0]).name.startswith(".mix_bank.tmp-")
    assert _digests(*outs) == old and _leftovers(work) == []
    monkeypatch.setattr(store, "save", real_save)
    _run("--params", p2, "mix")
    new = _digests(*outs)
    assert all(new[k] != old[k] for k in old)


# --------------------------------------------------------------------------- check


def _stub_check(monkeypatch, mod, tag, fail_in_markdown=False):
    """Replace the heavy diversity run by a stub that writes one plot and a small report."""

    def run(*a, plots_dir=None, **k):
        (Path(plots_dir) / "plot.png").write_bytes(f"png {tag}".encode())
        return {"tag": tag, "plots": ["plot.png"]}

    def markdown(rep, gates):
        if fail_in_markdown:  # plots and metrics are written by now
            raise KeyboardInterrupt
        return f"# check {rep['tag']}\n"

    monkeypatch.setattr(mod, "run", run)
    monkeypatch.setattr(mod, "gate", lambda rep, cfg: [{"name": "g", "passed": rep["tag"] == 1, "action": "warn"}])
    monkeypatch.setattr(mod, "markdown", markdown)


@pytest.mark.parametrize("what", ["images", "audio"])
def test_check_interrupted_after_plots_and_metrics_keeps_all_three_old(work, monkeypatch, what):
    if what == "images":
        from shiftlab.synth import diversity as mod

        store.save(hfds.DatasetDict({"train": _image_source(8, 4)}), work / "data/splits/images")
        store.save(_image_source(6, 0, seed=1), work / "data/synth/blur")
    else:
        from shiftlab.mixing import diversity as mod

        store.save(_audio_splits(), work / "data/splits/audio")
        store.save(_noise(), work / "data/prepared/noise")
        store.save(_noise(), work / "data/synth/mix_bank")
        store.save(_audio_splits()["train"], work / "data/synth/mix")
    name = f"check_{what}"
    outs = (work / "reports" / name, work / "metrics" / f"{name}.json", work / "reports" / f"{name}.md")
    params = _params(work / "p.yaml")
    _stub_check(monkeypatch, mod, 1)
    _run("--params", params, "check", what)
    old = _digests(*outs)
    assert (outs[0] / "plot.png").read_bytes() == b"png 1"
    _stub_check(monkeypatch, mod, 2, fail_in_markdown=True)
    assert cli.main(["--params", params, "check", what]) == 130
    assert _digests(*outs) == old and _leftovers(work) == []
    _stub_check(monkeypatch, mod, 2)
    _run("--params", params, "check", what)
    new = _digests(*outs)
    assert all(new[k] != old[k] for k in old)
    assert json.loads(outs[1].read_text())["verdict"] == "warn"


# --------------------------------------------------------------------------- merge (the CLI)


def test_merge_cli_concatenates_in_order_and_refuses_bad_inputs(work, capsys):
    ds = _image_source(10, 6)
    store.save(ds.select(range(0, 7)), work / "a")
    store.save(ds.select(range(7, 16)), work / "b")
    _run("merge", work / "m", work / "a", work / "b")
    assert capsys.readouterr().out.startswith("merge: 16 rows from 2 inputs -> ")
    merged = store.load(work / "m")
    assert merged["id"] == ds["id"] and merged["recipe"] == ds["recipe"]
    assert np.array_equal(np.asarray(merged["image"]), np.asarray(ds["image"]))
    store.save(ds, work / "whole")
    assert store.tree_digest(work / "m") == store.tree_digest(work / "whole")  # byte-identical to unsharded
    _run("merge", work / "m2", work / "b", work / "a")  # order is the order given
    assert store.load(work / "m2")["id"] == ds["id"][7:] + ds["id"][:7]
    before = _digests(work / "m")
    assert cli.main(["merge", str(work / "m"), str(work / "a"), str(work / "a")]) == 2
    assert "merge: the inputs share row ids" in capsys.readouterr().err
    store.save(hfds.DatasetDict({"train": ds}), work / "dd")
    assert cli.main(["merge", str(work / "m"), str(work / "dd")]) == 2
    assert "not split DatasetDicts" in capsys.readouterr().err
    assert cli.main(["merge", str(work / "m"), str(work / "nope")]) == 2
    assert "nope: no dataset to merge here" in capsys.readouterr().err
    assert _digests(work / "m") == before and _leftovers(work) == []
    with pytest.raises(ShiftlabError):  # the command's own error type, for library callers
        cli.cmd_merge(cli.build_parser().parse_args(["merge", str(work / "m"), str(work / "nope")]))


def test_synth_shards_merged_by_the_cli_equal_the_unsharded_stage(work):
    """README: `shiftlab synth blur --shard I/N` x N, then `shiftlab merge` (in shard order) = the unsharded output."""
    p = _params(work / "p.yaml", synth_blur={"workers": 1, "device": "cpu", "batch_size": 8})
    _run("--params", p, "split", "images")
    _run("--params", p, "synth", "blur")
    for i in range(3):
        _run("--params", p, "synth", "blur", "--shard", f"{i}/3")
    shards = [work / f"data/synth/blur.shard{i}of3" for i in range(3)]
    assert all(len(store.load(s)) for s in shards)
    _run("merge", work / "merged", *shards)
    assert store.tree_digest(work / "merged") == store.tree_digest(work / "data/synth/blur")


# --------------------------------------------------------------------------- evaluate


def _fake_runs(root: Path, seed: int):
    from shiftlab.train import trainer

    rng = np.random.default_rng(seed)
    names = ["a", "b", "c"]
    for var, err in (("nosynth", 0.3), ("synth", 0.2), ("narrow", 0.35)):
        for s in (0, 1, 2):
            preds = {}
            for split, n in (("train", 60), ("train_dev", 20), ("dev", 80), ("test", 80)):
                y = np.arange(n) % 3
                pred = np.where(rng.random(n) < err, (y + 1) % 3, y)
                preds[split] = {"y": y, "pred": pred, "id": np.array([f"{split}{i}" for i in range(n)]),
                                "group": np.array([f"{split}{i}" for i in range(n)])}
            trainer.save_predictions(root / var / f"s{s}" / "predictions.npz", preds, names)


def test_evaluate_failing_before_its_report_keeps_all_three_old(work, monkeypatch):
    outs = (work / "eval/images", work / "metrics/evaluate_images.json", work / "reports/evaluate_images.md")
    p = _params(work / "p.yaml", experiment={"variants": ["nosynth", "synth", "narrow"], "seeds": [0, 1, 2]},
                evaluate={"n_boot": 100})
    _fake_runs(work / "runs/images", 0)
    _run("--params", p, "evaluate", "--scenario", "images")
    old = _digests(*outs)
    _fake_runs(work / "runs/images", 1)  # other predictions: every output would change

    def failing(*a, **k):  # called after the eval dir and the metrics were written to staging
        raise KeyboardInterrupt()

    real = cli._evaluate_markdown
    monkeypatch.setattr(cli, "_evaluate_markdown", failing)
    assert cli.main(["--params", p, "evaluate", "--scenario", "images"]) == 130
    assert _digests(*outs) == old
    assert _leftovers(work) == []
    monkeypatch.setattr(cli, "_evaluate_markdown", real)
    _run("--params", p, "evaluate", "--scenario", "images")
    new = _digests(*outs)
    assert all(new[k] != old[k] for k in old)
