"""Evaluation: errors with bootstrap CIs, the MLY decomposition and diagnosis, compare()."""

import csv
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shiftlab import stats
from shiftlab.errors import ShiftlabError
from shiftlab.train import evaluate as ev

NAMES = ["left", "right", "hairpin", "jump"]
K = len(NAMES)


def split(err, n, seed=0, groups=None, domain=None, k=K):
    """Predictions with exactly round(err * n) wrong rows, at seeded positions."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    pred = y.copy()
    wrong = rng.permutation(n)[: int(round(err * n))]
    pred[wrong] = (y[wrong] + 1 + rng.integers(0, k - 1, len(wrong))) % k
    d = {"y": y, "pred": pred, "id": np.array([f"row{i:05d}" for i in range(n)])}
    d["domain"] = np.array(domain if domain is not None else ["target"] * n)
    d["origin"] = np.array(["real"] * n)
    if groups is not None:
        d["group"] = np.asarray(groups)
    return d


def book(train, train_dev, dev, test=None, n=4000, **kw):
    errs = {"train": train, "train_dev": train_dev, "dev": dev, "test": test}
    preds = {s: split(e, n, seed=i) for i, (s, e) in enumerate(errs.items()) if e is not None}
    return ev.evaluate(preds, NAMES, kw or None)


# --------------------------------------------------------------------------- the book's examples


@pytest.mark.parametrize(
    "errors, words, named",
    [
        ((0.01, 0.05, 0.05), "variance", ["variance"]),
        ((0.10, 0.11, 0.12), "avoidable bias", ["avoidable_bias"]),
        ((0.10, 0.11, 0.20), "avoidable bias + data mismatch", ["avoidable_bias", "data_mismatch"]),
    ],
)
def test_book_examples_give_the_books_diagnosis(errors, words, named):
    r = book(*errors)
    assert r["diagnosis"]["words"] == words
    assert r["diagnosis"]["named"] == named
    d = r["decomposition"]
    tr, td, dv = errors
    assert d["avoidable_bias"]["value"] == pytest.approx(tr)
    assert d["variance"]["value"] == pytest.approx(td - tr)
    assert d["data_mismatch"]["value"] == pytest.approx(dv - td)
    assert d["dev_overfitting"]["status"] == "n/a"
    for k in named:
        assert d[k]["status"] == "positive" and d[k]["low"] > 0
    assert r["diagnosis"]["text"].startswith(f"Diagnosis: {words}.")


def test_zero_component_is_not_distinguishable_and_never_named():
    r = book(0.01, 0.05, 0.05)
    dm = r["decomposition"]["data_mismatch"]
    assert dm["value"] == pytest.approx(0.0)
    assert dm["low"] < 0 < dm["high"]
    assert dm["status"] == ev.NOT_DISTINGUISHABLE
    assert "data mismatch +0.0 pts" in r["diagnosis"]["text"]
    assert ev.NOT_DISTINGUISHABLE in r["diagnosis"]["text"]


def test_large_component_on_a_tiny_dev_set_is_undetermined_not_named():
    # 25 dev rows (one speaker, like the default audio dev set): +8 points of mismatch is noise
    preds = {"train": split(0.0, 4000), "train_dev": split(0.04, 4000, seed=1), "dev": split(0.12, 25, seed=2)}
    r = ev.evaluate(preds, NAMES)
    dm = r["decomposition"]["data_mismatch"]
    assert dm["value"] == pytest.approx(0.08)
    assert dm["status"] == ev.NOT_DISTINGUISHABLE
    assert r["diagnosis"]["named"] == ["variance"]
    assert r["diagnosis"]["undetermined"] == ["data_mismatch"]
    assert "Undetermined" in r["diagnosis"]["text"]


def test_optimal_error_shifts_avoidable_bias_and_dev_overfitting_uses_test():
    r = book(0.10, 0.11, 0.12, test=0.20, optimal_error=0.08)
    d = r["decomposition"]
    assert d["avoidable_bias"]["value"] == pytest.approx(0.02)
    assert d["dev_overfitting"]["value"] == pytest.approx(0.08)
    assert d["dev_overfitting"]["status"] == "positive"
    assert r["diagnosis"]["named"] == ["dev_overfitting"]
    # the CI of avoidable bias is the train CI shifted by the (constant) optimal error
    tr = r["splits"]["train"]
    assert d["avoidable_bias"]["low"] == pytest.approx(tr["low"] - 0.08)
    assert d["avoidable_bias"]["high"] == pytest.approx(tr["high"] - 0.08)


def test_negative_component_is_reported_as_negative():
    r = book(0.10, 0.20, 0.05)  # dev much easier than train_dev
    assert r["decomposition"]["data_mismatch"]["status"] == "negative"
    assert "data_mismatch" not in r["diagnosis"]["named"]


# --------------------------------------------------------------------------- confidence intervals


@settings(max_examples=25, deadline=None, derandomize=True)
@given(n=st.integers(1, 400), frac=st.floats(0.0, 1.0), seed=st.integers(0, 1000))
def test_row_ci_contains_the_estimate(n, frac, seed):
    r = ev.evaluate({"train": split(frac, n, seed=seed)}, NAMES, {"n_boot": 200, "seed": seed})
    s = r["splits"]["train"]
    assert s["errors"] == int(round(frac * n))
    assert s["error"] == pytest.approx(s["errors"] / n)
    assert 0.0 <= s["low"] <= s["error"] <= s["high"] <= 1.0


def test_ci_shrinks_with_n():
    widths = []
    for n in (100, 1600, 25600):
        s = ev.evaluate({"train": split(0.2, n)}, NAMES)["splits"]["train"]
        widths.append(s["high"] - s["low"])
    assert widths[0] > 2 * widths[1] > 4 * widths[2] > 0
    # sqrt(n) scaling: 16x the rows -> about 1/4 of the width
    assert widths[0] / widths[1] == pytest.approx(4.0, rel=0.2)


def test_row_bootstrap_matches_stats_bootstrap_ci():
    d = split(0.3, 300, seed=3)
    e = (d["y"] != d["pred"]).astype(float)
    ref = stats.bootstrap_ci(np.mean, e, n=4000, seed=1)
    s = ev.evaluate({"train": d}, NAMES, {"n_boot": 4000})["splits"]["train"]
    assert s["error"] == pytest.approx(ref.estimate)
    assert s["low"] == pytest.approx(ref.low, abs=0.01)
    assert s["high"] == pytest.approx(ref.high, abs=0.01)


def test_ci_level_widens_the_interval():
    d = {"train": split(0.3, 500)}
    w = [(lambda s: s["high"] - s["low"])(ev.evaluate(d, NAMES, {"ci": c})["splits"]["train"]) for c in (0.8, 0.99)]
    assert w[1] > 1.5 * w[0]


def _speakers(n_groups, per, rates, seed=0):
    """Dev rows of n_groups speakers with very different error rates."""
    n = n_groups * per
    g = np.repeat([f"spk{i}" for i in range(n_groups)], per)
    d = split(0.0, n, seed=seed, groups=g)
    rng = np.random.default_rng(seed)
    for i in range(n_groups):
        rows = np.flatnonzero(g == f"spk{i}")
        wrong = rng.permutation(rows)[: int(round(rates[i % len(rates)] * per))]
        d["pred"][wrong] = (d["y"][wrong] + 1) % K
    return d


def test_cluster_bootstrap_for_few_speakers_is_wider_than_rows():
    d = _speakers(8, 50, [0.02, 0.5, 0.1, 0.3])
    r = ev.evaluate({"dev": d, "test": d}, NAMES)
    s = r["splits"]["dev"]
    assert s["method"] == "groups" and s["groups"] == 8 and s["note"] is None
    assert s["low"] <= s["error"] <= s["high"]
    assert (s["high"] - s["low"]) > 1.8 * (s["rows_high"] - s["rows_low"])
    # the same speakers in train: rows (clustering is for dev/test only)
    r2 = ev.evaluate({"train": d}, NAMES)
    assert r2["splits"]["train"]["method"] == "rows"
    # forced rows
    r3 = ev.evaluate({"dev": d}, NAMES, {"cluster": "rows"})
    assert r3["splits"]["dev"]["method"] == "rows"
    assert r3["splits"]["dev"]["low"] == pytest.approx(s["rows_low"], abs=0.02)


def test_cluster_bootstrap_replicates_match_a_naive_loop():
    d = _speakers(6, 20, [0.05, 0.4, 0.2])
    e = (d["y"] != d["pred"]).astype(float)
    groups = d["group"]
    ug = np.unique(groups)
    rng = np.random.default_rng(5)
    naive = []
    for _ in range(4000):
        pick = rng.choice(ug, len(ug), replace=True)
        rows = np.concatenate([np.flatnonzero(groups == g) for g in pick])
        naive.append(e[rows].mean())
    s = ev.evaluate({"dev": d}, NAMES, {"n_boot": 4000, "min_groups": 3})["splits"]["dev"]
    lo, hi = np.quantile(naive, [0.025, 0.975])
    assert s["method"] == "groups"
    assert s["low"] == pytest.approx(lo, abs=0.025)
    assert s["high"] == pytest.approx(hi, abs=0.025)


def test_one_speaker_falls_back_to_rows_with_a_note():
    d = split(0.2, 25, groups=["trigger_rally/tim"] * 25)
    s = ev.evaluate({"dev": d}, NAMES)["splits"]["dev"]
    assert s["method"] == "rows" and s["groups"] == 1
    assert "understates" in s["note"]
    # every row its own group: the bootstraps coincide, rows without a note
    s2 = ev.evaluate({"dev": split(0.2, 50, groups=[f"img{i}" for i in range(50)])}, NAMES)["splits"]["dev"]
    assert s2["method"] == "rows" and s2["note"] is None
    # no group column at all
    assert "no group column" in ev.evaluate({"test": split(0.2, 50)}, NAMES)["splits"]["test"]["note"]


def test_min_groups_and_forced_groups():
    d = _speakers(3, 30, [0.1, 0.3, 0.5])
    assert ev.evaluate({"dev": d}, NAMES)["splits"]["dev"]["method"] == "rows"  # 3 < min_groups 5
    assert ev.evaluate({"dev": d}, NAMES, {"min_groups": 3})["splits"]["dev"]["method"] == "groups"
    assert ev.evaluate({"dev": d}, NAMES, {"cluster": "groups"})["splits"]["dev"]["method"] == "groups"


# --------------------------------------------------------------------------- breakdowns, confusion


def test_breakdowns_and_confusion_matrices():
    dom = ["source"] * 300 + ["target"] * 100
    d = split(0.0, 400, domain=dom, k=3)  # label 3 ("jump") never occurs
    d["pred"][:30] = (d["y"][:30] + 1) % 3  # 30 source errors
    d["pred"][300:340] = 3  # 40 target errors, all predicted "jump"
    r = ev.evaluate({"train": d}, NAMES)
    s = r["splits"]["train"]
    assert s["by_domain"]["source"]["error"] == pytest.approx(30 / 300)
    assert s["by_domain"]["target"]["error"] == pytest.approx(40 / 100)
    assert s["by_domain"]["source"]["n"] == 300 and s["by_origin"]["real"]["n"] == 400
    cm = np.array(s["confusion"])
    assert cm.sum() == 400
    assert cm.trace() == 400 - s["errors"]
    assert list(cm.sum(axis=1)) == [int((d["y"] == i).sum()) for i in range(K)]
    assert list(cm.sum(axis=0)) == [int((d["pred"] == i).sum()) for i in range(K)]
    for i, name in enumerate(NAMES):
        lab = s["by_label"][name]
        if cm[i].sum():
            assert lab["error"] == pytest.approx(1 - cm[i, i] / cm[i].sum())  # 1 - recall
            assert lab["n"] == cm[i].sum()
    assert cm[:, 3].sum() == 40
    assert s["by_label"]["jump"] == {"n": 0, "errors": 0, "error": None, "low": None, "high": None,
                                     "method": None, "groups": None, "note": None}


def test_probs_are_optional_but_checked():
    d = split(0.1, 50)
    d["probs"] = np.full((50, K), 1.0 / K)
    with_probs = ev.evaluate({"dev": d}, NAMES)["splits"]["dev"]  # accepted, and the errors come from pred alone
    without = ev.evaluate({"dev": {k: v for k, v in d.items() if k != "probs"}}, NAMES)["splits"]["dev"]
    assert with_probs["errors"] == 5 and with_probs["error"] == pytest.approx(0.1) and with_probs == without
    d["probs"] = np.full((50, K + 1), 1.0 / K)
    with pytest.raises(ShiftlabError, match=r"predictions\.dev\.probs: shape"):
        ev.evaluate({"dev": d}, NAMES)


# --------------------------------------------------------------------------- missing splits


def test_missing_train_dev_makes_variance_and_mismatch_na():
    preds = {"train": split(0.05, 1000), "dev": split(0.2, 1000, seed=1), "test": split(0.2, 1000, seed=2),
             "label_names": NAMES}
    r = ev.evaluate(preds)  # label names taken from the mapping
    d = r["decomposition"]
    assert r["missing"] == ["train_dev"]
    for k in ("variance", "data_mismatch"):
        assert d[k]["status"] == "n/a" and d[k]["value"] is None
        assert "no train_dev split" in d[k]["reason"]
    assert d["avoidable_bias"]["status"] == "positive"
    assert d["dev_overfitting"]["status"] == ev.NOT_DISTINGUISHABLE
    m = ev.metrics(r)
    assert "variance" not in m and "data_mismatch" not in m and "avoidable_bias" in m
    assert "variance n/a (no train_dev split)" in r["diagnosis"]["text"]
    md = ev.markdown(r)
    assert "n/a (no train_dev split)" in md and "missing splits: train_dev" in md


def test_only_dev_and_empty_splits():
    preds = {"dev": split(0.3, 200), "train": {"y": np.array([], int), "pred": np.array([], int)}}
    r = ev.evaluate(preds, NAMES)
    assert list(r["splits"]) == ["dev"]
    assert r["missing"] == ["train", "train_dev", "test"]
    assert all(d["status"] == "n/a" for d in r["decomposition"].values())
    assert r["diagnosis"]["words"] == "no dominant component"


def test_extra_split_names_are_evaluated_but_not_decomposed():
    r = ev.evaluate({"dev": split(0.3, 200), "dev_night": split(0.5, 100)}, NAMES)
    assert list(r["splits"]) == ["dev", "dev_night"]
    assert r["splits"]["dev_night"]["error"] == pytest.approx(0.5)


# --------------------------------------------------------------------------- reports, files, determinism


def test_metrics_markdown_and_json():
    r = book(0.10, 0.11, 0.20, test=0.21)
    m = ev.metrics(r)
    assert m["dev_error"] == pytest.approx(0.20) and m["dev_rows"] == 4000
    assert m["data_mismatch"] == pytest.approx(0.09) and m["data_mismatch_low"] > 0
    assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in m.values())
    json.dumps(r, allow_nan=False)  # plain JSON
    md = ev.markdown(r)
    assert "**Diagnosis: avoidable bias + data mismatch.**" in md
    assert "| dev | 4,000 | 800 | 20.0% |" in md
    assert "synthesise training data" in md


def test_determinism_and_seed(tmp_path):
    a = book(0.10, 0.11, 0.20, test=0.21)
    b = book(0.10, 0.11, 0.20, test=0.21)
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    c = book(0.10, 0.11, 0.20, test=0.21, seed=1)
    assert c["splits"]["dev"]["error"] == a["splits"]["dev"]["error"]
    ci = lambda r: (r["splits"]["dev"]["low"], r["splits"]["dev"]["high"])  # noqa: E731
    assert ci(c) != ci(a)
    pa = ev.plots(a, tmp_path / "a")
    pb = ev.plots(b, tmp_path / "b")
    assert [p.name for p in pa] == [p.name for p in pb]
    assert {p.name for p in pa} >= {"confusion_dev.csv", "confusion_test.csv", "confusion_test.png",
                                   "decomposition.png", "decomposition.json", "errors.json"}
    assert "confusion_dev.png" not in {p.name for p in pa}  # a PNG for the verdict split only
    for x, y in zip(pa, pb):
        assert x.read_bytes() == y.read_bytes(), x.name
    assert (tmp_path / "a" / "decomposition.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # DVC confusion format: one (actual, predicted) line per row, recounting gives the matrix
    with open(tmp_path / "a" / "confusion_dev.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == a["splits"]["dev"]["n"]
    cm = np.zeros((K, K), int)
    for row in rows:
        cm[NAMES.index(row["actual"]), NAMES.index(row["predicted"])] += 1
    assert cm.tolist() == a["splits"]["dev"]["confusion"]
    dec = json.loads((tmp_path / "a" / "decomposition.json").read_text())
    assert [d["component"] for d in dec] == list(ev.COMPONENTS)


# --------------------------------------------------------------------------- compare


def _run(wrong, n=1000, group=None):
    y = np.arange(n) % K
    pred = y.copy()
    pred[wrong] = (y[wrong] + 1) % K
    d = {"y": y, "pred": pred, "id": np.array([f"dev{i:05d}" for i in range(n)])}
    if group is not None:
        d["group"] = np.asarray(group)
    return {"dev": d, "label_names": NAMES}


def _fixed_subset(n_base, n_fixed, seeds=(0, 1, 2), n=1000):
    """nosynth makes n_base errors per seed; synth fixes n_fixed of them (paired on rows)."""
    runs = {"nosynth": {}, "synth": {}}
    for s in seeds:
        rng = np.random.default_rng(s)
        base = rng.permutation(n)[:n_base]
        runs["nosynth"][s] = _run(base, n)
        runs["synth"][s] = _run(base[n_fixed:], n)
    return runs


def test_compare_helps_with_pairing():
    # 10% -> 8% on 1000 rows: an unpaired test could not tell (SE ~1.3 pts), the paired one can
    c = ev.compare(_fixed_subset(100, 20), split="dev")
    assert c["verdict"] == "helps"
    assert c["difference"]["value"] == pytest.approx(-0.02)
    assert c["difference"]["high"] < 0
    assert c["n_seeds"] == 3 and c["seeds"] == ["0", "1", "2"]
    assert c["per_seed"] == {"0": pytest.approx(-0.02), "1": pytest.approx(-0.02), "2": pytest.approx(-0.02)}
    assert ": helps" in c["text"] and "MDE" in c["text"]
    assert 0 <= c["mde"] < 0.02 and c["p_value"] < 0.05
    m = ev.compare_metrics(c)
    assert m["difference"] == pytest.approx(-0.02) and m["verdict"] == "helps"
    v = ev.variant_error(_fixed_subset(100, 20)["nosynth"], split="dev")
    assert v["error"] == pytest.approx(0.10) and v["n_seeds"] == 3
    # one seed: an unpaired CI (SE ~1.3 pts) would contain 0; paired rows keep it below 0
    one = ev.compare(_fixed_subset(100, 20, seeds=(0,)), split="dev")
    assert one["verdict"] == "helps" and one["difference"]["high"] < -0.005
    assert any("one seed" in n for n in one["notes"])


def test_compare_hurts_and_inconclusive():
    runs = _fixed_subset(100, 20)
    hurts = ev.compare({"nosynth": runs["synth"], "synth": runs["nosynth"]}, split="dev")
    assert hurts["verdict"] == "hurts" and hurts["difference"]["low"] > 0
    # same number of errors on different rows: no detectable difference, and too few rows to call it equivalent
    same = {"nosynth": {0: _run(np.arange(100))}, "synth": {0: _run(np.arange(500, 600))}}
    c = ev.compare(same, split="dev")
    assert c["difference"]["value"] == 0.0
    assert c["difference"]["low"] < 0 < c["difference"]["high"]
    assert c["verdict"] == "inconclusive" and c["mde"] > 0.01
    # the same models on every row: identical predictions -> exactly equivalent
    eq = ev.compare({"nosynth": runs["nosynth"], "synth": runs["nosynth"]}, split="dev")
    assert eq["difference"]["value"] == 0.0 and eq["verdict"] == "equivalent"


def test_compare_ci_includes_seed_spread():
    n = 2000
    steady = {"nosynth": {0: _run(np.arange(400), n), 1: _run(np.arange(400), n)},
              "synth": {0: _run(np.arange(360), n), 1: _run(np.arange(360), n)}}
    noisy = {"nosynth": {0: _run(np.arange(200), n), 1: _run(np.arange(600), n)},
             "synth": {0: _run(np.arange(360), n), 1: _run(np.arange(360), n)}}
    a, b = ev.compare(steady, split="dev"), ev.compare(noisy, split="dev")
    assert a["difference"]["value"] == pytest.approx(b["difference"]["value"]) == pytest.approx(-0.02)
    assert a["verdict"] == "helps"
    assert b["verdict"] == "inconclusive"  # 10% vs 30% over seeds swamps -2 points
    assert b["difference"]["seed_se"] > 0.05
    assert ev.variant_error(noisy["nosynth"], split="dev")["seed_sd"] > 0.1


def test_compare_pairs_by_id_and_checks_rows():
    runs = _fixed_subset(100, 20, seeds=(0,))
    shuffled = {k: np.asarray(v)[::-1] for k, v in runs["synth"][0]["dev"].items()}
    runs2 = {"nosynth": runs["nosynth"], "synth": {0: {"dev": shuffled, "label_names": NAMES}}}
    a, b = ev.compare(runs, split="dev"), ev.compare(runs2, split="dev")
    assert a["difference"] == b["difference"]
    other = _run(np.arange(10))
    other["dev"]["id"] = np.array([f"x{i}" for i in range(1000)])
    with pytest.raises(ShiftlabError, match="not the same row ids"):
        ev.compare({"nosynth": runs["nosynth"], "synth": {0: other}}, split="dev")
    with pytest.raises(ShiftlabError, match="no variant 'synth'"):
        ev.compare({"nosynth": runs["nosynth"], "blur": runs["synth"]}, split="dev")
    with pytest.raises(ShiftlabError, match="share no seed"):
        ev.compare({"nosynth": runs["nosynth"], "synth": {5: runs["synth"][0]}}, split="dev")
    c = ev.compare({"base": runs["nosynth"], "blur": runs["synth"]}, baseline="base", treatment="blur", split="dev")
    assert c["verdict"] == "helps"


def test_compare_uses_speaker_groups_and_min_groups():
    g = np.repeat([f"spk{i}" for i in range(10)], 100)
    runs = {"nosynth": {0: _run(np.arange(0, 1000, 10), group=g)}, "synth": {0: _run(np.arange(0, 1000, 20), group=g)}}
    c = ev.compare(runs, split="dev")
    assert c["unit"] == "groups" and c["groups"] == 10
    assert c["verdict"] == "helps"
    # fewer groups than evaluate.min_groups: no verdict, whatever the rows say
    g3 = np.repeat(["a", "b", "c"], [300, 300, 400])
    few = {"nosynth": {0: _run(np.arange(0, 1000, 10), group=g3)}, "synth": {0: _run(np.arange(0, 1000, 20), group=g3)}}
    f = ev.compare(few, split="dev")
    assert f["verdict"] == "inconclusive" and "too few groups (3 < evaluate.min_groups 5)" in f["reason"]
    assert "too few groups" in f["text"]


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "cfg, match",
    [
        ({"n_bot": 10}, r"^evaluate\.n_bot: unknown key \(did you mean n_boot\?\)$"),
        # (the wording of shiftlab.paramschema, one for every section: "V is out of range [lo, hi]")
        ({"n_boot": 10}, r"^evaluate\.n_boot: 10 is out of range \[100, inf\]$"),
        ({"ci": 1.0}, r"^evaluate\.ci: 1 is out of range \(0\.0, 1\.0\)$"),
        ({"optimal_error": -0.1}, r"^evaluate\.optimal_error: -0\.1 is out of range \[0\.0, 1\.0\)$"),
        ({"cluster": "speakers"}, r"^evaluate\.cluster: 'speakers' is not one of auto, rows, groups"),
        ({"min_groups": 1}, r"^evaluate\.min_groups: 1 is out of range \[2, inf\]$"),
        ({"dominant_share": 0}, r"^evaluate\.dominant_share: 0 is out of range \(0\.0, 1\.0\]$"),
        ({"seed": True}, r"^evaluate\.seed: must be an integer in \[0, inf\], got True$"),
        ({"power": 1.0}, r"^evaluate\.power: 1 is out of range \(0\.5, 1\.0\)$"),
        ({"fit_max_chance_share": 0}, r"^evaluate\.fit_max_chance_share: 0 is out of range \(0\.0, 1\.0\]$"),
        ({"optimal_error": {"images": 1.5}}, r"^evaluate\.optimal_error\.images: 1\.5 is out of range"),
        ({"optimal_error_proxy": 3}, r"^evaluate\.optimal_error_proxy: must be a text"),
        ([1, 2], r"^evaluate: must be a mapping"),
    ],
)
def test_bad_config(cfg, match):
    with pytest.raises(ShiftlabError, match=match):
        ev.merge_config(cfg)


def test_defaults_validate():
    assert ev.merge_config() == ev.DEFAULTS
    assert ev.merge_config({"n_boot": 500})["n_boot"] == 500


@pytest.mark.parametrize(
    "entry, match",
    [
        ({"y": np.array([0, 1]), "pred": np.array([0.0, 1.0])}, r"predictions\.dev\.pred: must hold integer"),
        ({"y": np.array([0, 7]), "pred": np.array([0, 1])}, r"predictions\.dev\.y: label index 7 outside 0\.\.3"),
        ({"y": np.array([0, 1]), "pred": np.array([0])}, r"predictions\.dev: y has 2 rows but pred has 1"),
        ({"y": np.array([0, 1])}, r"predictions\.dev: missing 'pred'"),
        ({"y": np.array([0, 1]), "pred": np.array([0, 1]), "group": ["a"]}, r"predictions\.dev\.group: shape"),
        ([0, 1], r"predictions\.dev: must be a mapping"),
    ],
)
def test_bad_predictions(entry, match):
    with pytest.raises(ShiftlabError, match=match) as e:
        ev.evaluate({"dev": entry}, NAMES)
    assert "\n" not in str(e.value)


def test_bad_label_names_and_empty():
    with pytest.raises(ShiftlabError, match="label_names not given"):
        ev.evaluate({"dev": split(0.1, 10)})
    with pytest.raises(ShiftlabError, match="duplicates"):
        ev.evaluate({"dev": split(0.1, 10)}, ["a", "a", "b", "c"])
    with pytest.raises(ShiftlabError, match="no split with rows"):
        ev.evaluate({}, NAMES)
