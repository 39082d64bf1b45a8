"""bench/anchor.py: the Fashion-MNIST anchor's splits and a tiny run of its CPU preset."""

import gzip
import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from shiftlab.datasets import schema
from shiftlab.errors import ShiftlabError

REPO = Path(__file__).resolve().parents[1]
FMNIST = Path("/usr/share/datasets/fashion-mnist")

pytestmark = pytest.mark.skipif(not (FMNIST / "t10k-images-idx3-ubyte.gz").is_file(),
                                reason="Debian package dataset-fashion-mnist not installed")


def _load_anchor():
    spec = importlib.util.spec_from_file_location("shiftlab_bench_anchor", REPO / "bench" / "anchor.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # as an import does: pydantic resolves the option model's annotations there
    spec.loader.exec_module(mod)
    return mod


anchor = _load_anchor()


def _idx(name: str, ndim: int) -> np.ndarray:
    with gzip.open(FMNIST / name, "rb") as f:
        data = f.read()
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", ndim, 4))
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


@pytest.fixture(scope="module")
def small():
    return anchor.build_splits(dev_rows=100, train_dev_rows=40, train_rows=300, test_rows=200, seed=3)


def _ids(d):
    return np.asarray(d["id"]).astype(str)


def test_sizes_disjoint_and_all_target(small):
    assert {k: len(v) for k, v in small.items()} == {"train": 300, "train_dev": 40, "dev": 100, "test": 200}
    ids = {k: set(_ids(v)) for k, v in small.items()}
    for a in ids:
        for b in ids:
            if a < b:
                assert not ids[a] & ids[b], (a, b)
    for k in ("train", "train_dev", "dev"):
        assert all(i.startswith("fashion_mnist/train/") for i in ids[k])
    assert all(i.startswith("fashion_mnist/test/") for i in ids["test"])
    for k, d in small.items():
        assert set(d["domain"]) == {"target"}
        assert set(d["origin"]) == {"real"}
        assert np.all(np.asarray(d["weight"]) == 1.0)
        assert schema.label_names(d) == list(anchor.images_mod.FASHION_MNIST_LABELS)
    # dev is label-stratified: 100 rows over 10 balanced classes -> 10 each
    assert np.bincount(np.asarray(small["dev"]["label"]), minlength=10).tolist() == [10] * 10


def test_test_split_is_the_official_test_images(small):
    images = _idx("t10k-images-idx3-ubyte.gz", 3)
    labels = _idx("t10k-labels-idx1-ubyte.gz", 1)
    idx = np.array([int(i.rsplit("/", 1)[1]) for i in _ids(small["test"])])
    assert np.all(np.diff(idx) > 0)  # file order kept
    got = schema.chw_batch(small["test"])[:, 0]
    np.testing.assert_array_equal(got, images[idx])
    np.testing.assert_array_equal(np.asarray(small["test"]["label"]), labels[idx])
    # training-side rows come from the training file
    tr_images = _idx("train-images-idx3-ubyte.gz", 3)
    tidx = np.array([int(i.rsplit("/", 1)[1]) for i in _ids(small["dev"])])
    np.testing.assert_array_equal(schema.chw_batch(small["dev"])[:, 0], tr_images[tidx])


def test_full_test_split_and_seeded_dev_slice():
    a = anchor.build_splits(dev_rows=50, train_dev_rows=20, train_rows=100, seed=0)
    b = anchor.build_splits(dev_rows=50, train_dev_rows=20, train_rows=100, seed=0)
    c = anchor.build_splits(dev_rows=50, train_dev_rows=20, train_rows=100, seed=1)
    assert len(a["test"]) == 10_000  # test_rows None: the whole official test set
    assert _ids(a["test"])[0] == "fashion_mnist/test/00000" and _ids(a["test"])[-1] == "fashion_mnist/test/09999"
    for k in a:
        assert _ids(a[k]).tolist() == _ids(b[k]).tolist()
    assert set(_ids(a["dev"])) != set(_ids(c["dev"]))


def test_bad_options_are_one_line_errors():
    with pytest.raises(ShiftlabError, match=r"^anchor\.dev_rowz: unknown key \(did you mean dev_rows\?\)$"):
        anchor.merge({"dev_rowz": 10})
    with pytest.raises(ShiftlabError, match=r"^anchor\.train_rows: 3 is out of range \[10, inf\]$"):
        anchor.merge({"train_rows": 3})
    with pytest.raises(ShiftlabError, match=r"^anchor\.preset: 'tpu' is not one of cpu, gpu"):
        anchor.merge({"preset": "tpu"})
    with pytest.raises(ShiftlabError, match=r"^anchor\.train\.lrr: unknown key \(did you mean lr\?\)"):
        anchor.preset_config("cpu", {"lrr": 0.1})
    with pytest.raises(ShiftlabError, match=r"^anchor\.dev_rows: .*leaves no training rows"):
        anchor.build_splits(dev_rows=60_000, train_dev_rows=10)
    with pytest.raises(ShiftlabError) as e:
        anchor.build_splits(directory="/nonexistent/fmnist")
    assert "\n" not in str(e.value) and "/nonexistent/fmnist" in str(e.value)


def test_presets_validate_and_meet_the_brief():
    cpu, gpu = anchor.preset_config("cpu"), anchor.preset_config("gpu")
    assert cpu["device"] == "cpu" and cpu["model"].startswith("attention_")
    assert gpu["device"] == "cuda" and gpu["model"].startswith("attention_")
    assert anchor.TARGETS == {"cpu": 0.08, "gpu": 0.055}


def test_target_met_only_when_the_whole_interval_is_below():
    assert anchor.target_verdict(0.0715, 0.0819, 0.08) == "inconclusive"  # the README's cpu run: not met
    assert anchor.target_verdict(0.070, 0.080, 0.08) == "met"  # upper end at the target: met
    assert anchor.target_verdict(0.081, 0.090, 0.08) == "missed"
    assert anchor.target_verdict(0.080, 0.090, 0.08) == "inconclusive"


def test_one_epoch_cpu_preset_writes_the_json(tmp_path):
    out = tmp_path / "anchor.json"
    cfg = {"train_rows": 300, "dev_rows": 100, "train_dev_rows": 50, "test_rows": 100, "bootstrap": 200,
           "train": {"epochs": 1, "warmup_epochs": 0.5, "num_threads": 1, "eval_train_rows": 100}}
    r = anchor.run(cfg, out, tmp_path / "work", progress=False)
    doc = json.loads(out.read_text())
    assert doc == json.loads(json.dumps(r))
    for k in ("preset", "model", "test_error", "test_error_ci", "target_error", "meets_target", "errors", "rows",
              "best_epoch", "best_dev_error", "history", "seconds", "threads", "device", "config", "train_config"):
        assert k in doc, k
    assert doc["preset"] == "cpu" and doc["target_error"] == 0.08
    assert doc["rows"] == {"train_dev": 50, "dev": 100, "test": 100} and doc["train_rows"] == 300
    assert doc["train_config"]["epochs"] == 1 and len(doc["history"]) == 1 and doc["best_epoch"] == 1
    lo, hi = doc["test_error_ci"]
    assert 0.0 <= lo <= doc["test_error"] <= hi <= 1.0
    assert doc["target_verdict"] == anchor.target_verdict(lo, hi, 0.08)
    assert doc["meets_target"] == (hi <= 0.08)
    assert doc["errors"]["test"] == doc["test_error"]
    assert doc["errors"]["dev"] == pytest.approx(doc["best_dev_error"])
    assert doc["threads"] >= 1 and set(doc["seconds"]) == {"data", "train", "predict", "total"}
    assert (tmp_path / "work" / "best.pt").is_file()
    assert os.cpu_count() == doc["cpu_count"]
