"""shiftlab calibrate blur (synth/calibrate.py): candidate kernel ranges scored on target-train rows only."""

import json

import datasets as hfds
import numpy as np
import pytest
import yaml

from shiftlab import cli, config, store
from shiftlab.datasets import images
from shiftlab.errors import ShiftlabError
from shiftlab.synth import calibrate

NAMES = ["hbar", "vbar", "box"]

# small and fast: a tiny feature network, few bootstrap replicates; the gates are check_images' defaults
# but the probe's fail gate: 60 parents cannot rule out any gap (the gate passes only on the upper end of
# the gap's interval), so with it every candidate would fail (tests/test_synth_diversity.py tests that gate)
CHECK = {
    "features": {"size": 16, "channels": [4, 8, 8], "embed_dim": 8, "train_rows": 300, "epochs": 1, "batch_size": 64},
    "realism": {"folds": 2, "n_boot": 50},
    "probe": {"min_rows": 10},
    "max_kernels": 200,
    "gates": {"probe_gap_ci_high": None},
}
NARROW = {"families": {"linear": 1.0, "shake": 0.0},
          "linear": {"length": [9.0, 9.0], "angle": [45.0, 45.0], "direction": [0.0, 0.0]}}
CFG = {
    "source_rows": 60,
    "target_rows": 100,
    "grid": {"linear.length": [[2.0, 5.0], [3.0, 15.0]]},
    "candidates": [NARROW],
    "check": CHECK,
}


def _images(n, seed, blurred):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = np.zeros((n, 16, 16), np.float64)
    for i, lab in enumerate(y):
        r, c = rng.integers(3, 9, 2)
        v = rng.uniform(150, 255)
        if lab == 0:
            x[i, r:r + 2, 2:14] = v
        elif lab == 1:
            x[i, 2:14, c:c + 2] = v
        else:
            x[i, r:r + 5, c:c + 5] = v
    if blurred:  # the "target": a horizontal 5-px box blur and noise, made with numpy only
        k = np.ones(5) / 5
        x = np.apply_along_axis(lambda row: np.convolve(row, k, mode="same"), 2, x)
        x = x + rng.normal(0, 6, x.shape)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8), y


def _part(name, n_src, n_tgt, seed):
    parts = []
    if n_src:
        xs, ys = _images(n_src, seed, False)
        parts.append(images.from_arrays(xs, ys, "source", NAMES, ids=[f"{name}/s{i:03d}" for i in range(n_src)]))
    if n_tgt:
        xt, yt = _images(n_tgt, seed + 1, True)
        parts.append(images.from_arrays(xt, yt, "target", NAMES, ids=[f"{name}/t{i:03d}" for i in range(n_tgt)]))
    return hfds.concatenate_datasets(parts) if len(parts) > 1 else parts[0]


@pytest.fixture(scope="module")
def splits():
    return hfds.DatasetDict({"train": _part("train", 100, 80, 0), "train_dev": _part("train_dev", 10, 4, 10),
                             "dev": _part("dev", 0, 30, 20), "test": _part("test", 0, 30, 30)})


@pytest.fixture(scope="module")
def result(splits):
    return calibrate.run(splits, CFG, check_cfg_=None, base_cfg=None, progress=False)


def test_defaults_match_params_schema():
    d = config.defaults({"calibrate_blur": config.SCHEMA["calibrate_blur"]})["calibrate_blur"]
    assert d == calibrate.DEFAULTS == calibrate.check_cfg(d)


def test_candidates_are_base_plus_grid_without_duplicates():
    from shiftlab.synth import kernels

    c = calibrate.candidates(calibrate.DEFAULTS, kernels.DEFAULT_SAMPLE_CFG)
    # base = linear [3, 15] + shake [5, 25], which is also a grid point (c5): scored once
    assert [x["name"] for x in c] == ["base"] + [f"c{i}" for i in range(1, 9)]
    assert c[0]["is_base"] and c[0]["overrides"] == {}
    assert c[1]["overrides"] == {"linear.length": [3.0, 11.0], "shake.max_length": [5.0, 18.0]}
    assert c[1]["kernels"]["linear"]["length"] == [3.0, 11.0] and c[1]["kernels"]["linear"]["angle"] == [0.0, 180.0]
    assert {"linear.length": [3.0, 15.0], "shake.max_length": [5.0, 25.0]} not in [x["overrides"] for x in c]


def test_run_scores_candidates_and_never_recommends_a_failing_one(result):
    names = [r["name"] for r in result["candidates"]]
    assert names == ["base", "c1", "c2"]  # base, grid [2, 5] ([3, 15] = base), the narrow extra candidate
    narrow = result["candidates"][2]
    assert not narrow["eligible"] and "kernel_effective_share" in narrow["failed"]
    assert result["recommended"] in ("base", "c1")
    assert result["recommended"] != "c2"
    rec = next(r for r in result["candidates"] if r["name"] == result["recommended"])
    assert rec["eligible"] and rec["rank"] == 1
    for r in result["candidates"]:
        s = r["scores"]
        assert 0.0 <= s["domain_auc"] <= 1.0 and s["frechet"] >= 0 and s["kernel_vendi"] >= 1
        assert s["domain_auc_ci"][0] <= s["domain_auc"] <= s["domain_auc_ci"][1]
        assert r["synthetic_rows"] == 60
    assert result["target"]["rows"] == 80  # the target rows of train only (train_dev, dev, test excluded)
    assert result["parents"]["domain_auc"]["auc"] is not None
    json.dumps(result)  # JSON-able
    if result["recommended"] == "c1":
        assert result["overrides"] == ["synth_blur.kernels.linear.length=[2.0,5.0]"]


def test_scores_do_not_depend_on_workers(splits, result):
    """Candidates scored in forked workers (the fixture: workers 0 = one per core) equal the in-process ones."""
    one = calibrate.run(splits, dict(CFG, workers=1), check_cfg_=None, base_cfg=None, progress=False)
    two = calibrate.run(splits, dict(CFG, workers=2), check_cfg_=None, base_cfg=None, progress=False)
    for r in (result, two):
        assert [c["scores"] for c in r["candidates"]] == [c["scores"] for c in one["candidates"]]
        assert [c["failed"] for c in r["candidates"]] == [c["failed"] for c in one["candidates"]]
        assert r["recommended"] == one["recommended"] and r["parents"] == one["parents"]


def test_dev_and_test_are_never_read(splits, result):
    other = hfds.DatasetDict({"train": splits["train"], "train_dev": splits["train_dev"],
                              "dev": _part("dev", 0, 30, 99), "test": _part("test", 0, 5, 77)})
    again = calibrate.run(other, CFG, progress=False)
    assert json.dumps(again, sort_keys=True) == json.dumps(result, sort_keys=True)  # also: deterministic
    no_dev = hfds.DatasetDict({"train": splits["train"], "train_dev": splits["train_dev"]})
    assert json.dumps(calibrate.run(no_dev, CFG, progress=False), sort_keys=True) == json.dumps(result, sort_keys=True)


def test_report_and_plot(result, tmp_path):
    md = calibrate.markdown(result, "calibrate_blur.png")
    assert "| rank | candidate |" in md and "**train** split" in md and "dev and test are never read" in md
    assert f"**Recommended: {result['recommended']}**" in md
    assert "kernel_effective_share" in md and "![realism vs diversity](calibrate_blur.png)" in md
    png = tmp_path / "x.png"
    calibrate.plot(result, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_calibrate_blur(splits, tmp_path, capsys):
    src = tmp_path / "splits"
    store.save(splits, src)
    out = tmp_path / "out"
    params = {"calibrate_blur": {**CFG, "report": str(out / "cal.md"), "plot": str(out / "cal.png"),
                                 "metrics": str(out / "cal.json")},
              "check_images": {"seed": 0}}
    pfile = tmp_path / "params.yaml"
    pfile.write_text(yaml.safe_dump(params))
    rc = cli.main(["--params", str(pfile), "calibrate", "blur", "--input", str(src)])
    printed = capsys.readouterr().out
    assert rc == 0
    assert "calibrate blur [calibrate_blur]: 3 candidates against 80 target-train rows" in printed
    doc = json.loads((out / "cal.json").read_text())
    assert [c["name"] for c in doc["candidates"]] == ["base", "c1", "c2"] and doc["recommended"] != "c2"
    assert (out / "cal.png").is_file() and "cal.png" in (out / "cal.md").read_text()


def test_no_target_rows_in_train_is_a_clear_error(splits):
    only_src = hfds.DatasetDict({"train": _part("train", 100, 0, 0), "train_dev": splits["train_dev"]})
    with pytest.raises(ShiftlabError, match="no target rows"):
        calibrate.run(only_src, CFG, progress=False)


@pytest.mark.parametrize("cfg, key", [
    ({"grid": {"linear.lenght": [[1, 2]]}}, "calibrate_blur.grid"),
    ({"grid": {"linear.length": [[-3, 2]]}}, "calibrate_blur.grid"),
    ({"grid": {"linear.length": []}}, "calibrate_blur.grid"),
    ({"candidates": [{"linear": {"x": 1}}]}, "calibrate_blur.candidates"),
    ({"check": {"realism": {"n_bot": 3}}}, "calibrate_blur.check"),
    ({"criterion": "vibes"}, "calibrate_blur.criterion"),
    ({"base": "synth_mix"}, "calibrate_blur.base"),
    ({"source_rows": 3}, "calibrate_blur.source_rows"),
])
def test_bad_cfg_is_one_line_error_naming_key(cfg, key):
    sch = {"calibrate_blur": config.SCHEMA["calibrate_blur"]}
    for check in (lambda: config.validate({"calibrate_blur": cfg}, schema=sch), lambda: calibrate.check_cfg(cfg)):
        with pytest.raises(ShiftlabError, match=key.replace(".", r"\.")) as e:
            check()
        assert "\n" not in str(e.value)


def test_a_tie_that_includes_the_current_ranges_keeps_them():
    def cand(name, auc, lo, fd, base=False, ok=True):
        return {"name": name, "is_base": base, "eligible": ok,
                "scores": {"domain_auc": auc, "domain_auc_ci": [lo, auc + 0.02], "frechet": fd}}

    best, near, far = cand("c1", 0.84, 0.82, 1.3), cand("base", 0.85, 0.83, 0.71, base=True), cand("c5", 0.86, 0.84, 0.67)
    rec, tied, _, _ = calibrate.recommend([far, near, best])
    assert rec["name"] == "base" and set(tied) == {"base", "c1", "c5"}  # c5's lower Frechet is not enough
    # the current ranges outside the tie: the tie goes to the lowest Frechet distance
    rec, tied, _, _ = calibrate.recommend([far, best, cand("base", 0.95, 0.93, 0.5, base=True),
                                           cand("c2", 0.83, 0.81, 9.0, ok=False)])
    assert rec["name"] == "c5" and tied == ["c5", "c1"]
