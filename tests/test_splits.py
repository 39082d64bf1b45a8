"""Mismatch splits (shiftlab.datasets.splits): group-disjoint, target-only dev/test, weights."""

from __future__ import annotations

import json

import datasets as hfds
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shiftlab import config
from shiftlab.datasets import schema, splits
from shiftlab.errors import ShiftlabError

LABELS = ["a", "b", "c", "d"]


def make_rows(rows, labels=LABELS, shape=(2, 2, 1), origin="real", parents=None, prefix=None, ids=None, origins=None):
    """An image dataset from (domain, group, label) triples."""
    n = len(rows)
    ids = ids or [f"{prefix or d}/{i:05d}" for i, (d, _, _) in enumerate(rows)]
    h, w, c = shape  # stored channels-first (schema.image_features)
    img = (np.arange(n, dtype=np.int64) % 256).astype(np.uint8)[:, None, None, None] * np.ones((1, c, h, w), np.uint8)
    data = {
        "id": ids,
        "image": img,
        "label": [int(r[2]) for r in rows],
        "domain": [r[0] for r in rows],
        "origin": origins or [origin] * n,
        "group": [str(r[1]) for r in rows],
        "parent": list(parents) if parents is not None else [""] * n,
        "recipe": ["{}"] * n,
    }
    return hfds.Dataset.from_dict(data, features=schema.image_features(labels, shape))


def make_audio(rows, labels=LABELS):
    n = len(rows)
    data = {
        "id": [f"{d}/{i:05d}" for i, (d, _, _) in enumerate(rows)],
        "audio": [np.full(5 + i % 3, i, np.float32) for i in range(n)],
        "sampling_rate": [8000] * n,
        "label": [int(r[2]) for r in rows],
        "domain": [r[0] for r in rows],
        "origin": ["real"] * n,
        "group": [str(r[1]) for r in rows],
        "parent": [""] * n,
        "recipe": ["{}"] * n,
    }
    return hfds.Dataset.from_dict(data, features=schema.audio_features(labels))


def cfg(**kw):
    c = config.defaults()["split_images"]
    c.update(kw)
    return c


def unique_groups(n_src, n_tgt, n_labels=2, seed=0):
    """Every row its own group; labels cycle so every label is equally common."""
    rows = [("source", f"s{i}", i % n_labels) for i in range(n_src)]
    rows += [("target", f"t{i}", i % n_labels) for i in range(n_tgt)]
    return make_rows(rows)


def col(ds, name):
    return ds.select_columns([name]).with_format("arrow")[:].column(name).to_pylist()


def ids_by_split(parts):
    return {k: col(v, "id") for k, v in parts.items()}


def groups_of(parts, names):
    return set().union(*(col(parts[s], "group") for s in names))


def by_hand(**parts):
    """A DatasetDict from per-split row lists (domain, group, label[, origin, parent, id])."""
    out = {}
    for name, rows in parts.items():
        full = [r + (None,) * (6 - len(r)) for r in rows]
        ds = make_rows(
            [r[:3] for r in full],
            ids=[r[5] or f"{name}/{i}" for i, r in enumerate(full)],
            origins=[r[3] or "real" for r in full],
            parents=[r[4] or "" for r in full],
        )
        out[name] = ds
    return hfds.DatasetDict(out)


def good_rows():
    return dict(
        train=[("source", "s1", 0), ("target", "t1", 1)],
        train_dev=[("source", "s1", 0)],
        dev=[("target", "t2", 0)],
        test=[("target", "t3", 1)],
    )


# --------------------------------------------------------------------------- properties


@st.composite
def scenarios(draw):
    n_labels = draw(st.integers(1, 4))
    n_tgt_groups = draw(st.integers(3, 25))
    n_src_groups = draw(st.integers(1, 25))
    sizes_t = draw(st.lists(st.integers(1, 5), min_size=n_tgt_groups, max_size=n_tgt_groups))
    sizes_s = draw(st.lists(st.integers(1, 5), min_size=n_src_groups, max_size=n_src_groups))
    label_seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(label_seed)
    pure = draw(st.booleans())  # one label per group, or mixed groups
    rows = []
    for dom, sizes in (("target", sizes_t), ("source", sizes_s)):
        for g, size in enumerate(sizes):
            lab = rng.integers(0, n_labels)
            for _ in range(size):
                rows.append((dom, f"{dom[0]}{g}", int(lab if pure else rng.integers(0, n_labels))))
    if sum(sizes_s) < 2:
        rows.append(("source", "s0", 0))
    order = rng.permutation(len(rows))
    rows = [rows[i] for i in order]
    c = cfg(
        seed=draw(st.integers(0, 10_000)),
        target_train_fraction=draw(st.sampled_from([0.0, 0.2, 0.5, 0.8])),
        dev_fraction=draw(st.sampled_from([0.2, 0.5, 0.7])),
        train_dev_fraction=draw(st.sampled_from([0.05, 0.2, 0.5])),
        beta_source=draw(st.sampled_from([1.0, 0.25, "balanced"])),
        beta_synthetic=draw(st.sampled_from([1.0, 0.5])),
    )
    if c["target_train_fraction"] == 0 and c["beta_source"] == "balanced":
        c["beta_source"] = 0.1
    return rows, c


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_split_invariants(scenario):
    rows, c = scenario
    ds = make_rows(rows)
    parts = splits.build(ds, c)
    assert list(parts) == list(schema.SPLITS)
    assert all(len(parts[s]) > 0 for s in parts)

    # every input row lands in exactly one split
    got = ids_by_split(parts)
    flat = [i for v in got.values() for i in v]
    assert sorted(flat) == sorted(col(ds, "id")) and len(set(flat)) == len(flat)

    # no group crosses train(+train_dev) / dev / test
    tr, dv, te = groups_of(parts, ["train", "train_dev"]), groups_of(parts, ["dev"]), groups_of(parts, ["test"])
    assert not (tr & dv) and not (tr & te) and not (dv & te)

    # dev / test: real target rows only
    for s in ("dev", "test"):
        assert set(col(parts[s], "domain")) == {"target"}
        assert set(col(parts[s], "origin")) == {"real"}
    if c["target_train_fraction"] == 0:
        assert "target" not in col(parts["train"], "domain") + col(parts["train_dev"], "domain")

    # weights follow domain / origin; balanced gives equal totals in train
    tr_dom = np.array(col(parts["train"], "domain"))
    tr_w = np.array(col(parts["train"], "weight"), dtype=np.float64)
    n_tt, n_st = int((tr_dom == "target").sum()), int((tr_dom == "source").sum())
    beta = n_tt / n_st if c["beta_source"] == "balanced" else c["beta_source"]
    for s in parts:
        dom = np.array(col(parts[s], "domain"))
        w = np.array(col(parts[s], "weight"))
        assert parts[s].features["weight"] == hfds.Value("float32")
        assert np.all(w[dom == "target"] == 1.0)
        assert np.allclose(w[dom == "source"], np.float32(beta))
    if c["beta_source"] == "balanced" and n_tt:
        assert tr_w[tr_dom == "source"].sum() == pytest.approx(tr_w[tr_dom == "target"].sum(), rel=1e-5)

    # determinism: same seed -> same ids per split
    again = splits.build(ds, c)
    assert ids_by_split(again) == got
    assert splits.report(again) == splits.report(parts)

    # synthetic rows from training rows: same split and group as the parent, weight beta_synthetic
    pool = [(s, i) for s in ("train", "train_dev") for i in col(parts[s], "id")[:2]]
    syn = make_rows([("source", "junk", 0)] * len(pool), origin="synthetic", parents=[i for _, i in pool], prefix="syn")
    c2 = dict(c, beta_synthetic="balanced" if n_tt else 0.5)
    out = splits.attach_synthetic(parts, syn, c2)
    tr, dv, te = groups_of(out, ["train", "train_dev"]), groups_of(out, ["dev"]), groups_of(out, ["test"])
    assert not (tr & dv) and not (tr & te) and not (dv & te)
    n_syn_train = sum(s == "train" for s, _ in pool)
    beta_syn = n_tt / n_syn_train if c2["beta_synthetic"] == "balanced" else 0.5
    for s in out:
        o, w = np.array(col(out[s], "origin")), np.array(col(out[s], "weight"), dtype=np.float64)
        assert int((o == "synthetic").sum()) == sum(p == s for p, _ in pool)
        assert np.allclose(w[o == "synthetic"], np.float32(beta_syn))
        if s == "train" and c2["beta_synthetic"] == "balanced":
            d = np.array(col(out[s], "domain"))
            assert w[o == "synthetic"].sum() == pytest.approx(w[(o == "real") & (d == "target")].sum(), rel=1e-5)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10_000))
def test_report_adds_up(seed):
    rng = np.random.default_rng(seed)
    rows = [("target", f"t{rng.integers(0, 20)}", int(rng.integers(0, 4))) for _ in range(60)]
    rows += [("source", f"s{rng.integers(0, 30)}", int(rng.integers(0, 4))) for _ in range(90)]
    parts = splits.build(make_rows(rows), cfg(seed=seed, beta_source="balanced"))
    rep = splits.report(parts)
    assert json.loads(json.dumps(rep)) == rep
    assert rep["total_rows"] == sum(rep["rows"].values()) == len(rows)
    for s in schema.SPLITS:
        c = rep["counts"][s]
        assert sum(sum(c[d][o].values()) for d in c for o in c[d]) == rep["rows"][s] == len(parts[s])
        assert rep["groups"][s] == len(set(col(parts[s], "group")))
        assert rep["weight_sum"][s] == pytest.approx(sum(rep["weights"][s][d][o] for d in c for o in c[d]), abs=1e-4)
        assert rep["weight_sum"][s] == pytest.approx(float(np.sum(col(parts[s], "weight"))), rel=1e-5)
    assert rep["weights"]["train"]["source"]["real"] == pytest.approx(rep["weights"]["train"]["target"]["real"], rel=1e-5)


# --------------------------------------------------------------------------- build examples


def test_books_numbers_give_beta_one_fortieth():
    # scaled-down MLY example: 200 app photos (100 into training), 4,000 web photos;
    # after the 10% train_dev slice: 90 target vs 3,600 source rows in train = 1:40
    ds = unique_groups(4000, 200, n_labels=2)
    parts = splits.build(ds, cfg(target_train_fraction=0.5, dev_fraction=0.5, train_dev_fraction=0.1,
                                 beta_source="balanced"))
    rep = splits.report(parts)
    assert rep["rows"] == {"train": 3690, "train_dev": 410, "dev": 50, "test": 50}
    assert rep["counts"]["train"]["target"]["real"] == {"a": 45, "b": 45, "c": 0, "d": 0}
    w = np.array(col(parts["train"], "weight"))
    dom = np.array(col(parts["train"], "domain"))
    assert w[dom == "source"][0] == np.float32(1 / 40)
    assert rep["weights"]["train"]["source"]["real"] == pytest.approx(90.0, rel=1e-5)
    assert rep["weights"]["train"]["target"]["real"] == 90.0
    assert rep["beta"]["train"]["source"]["real"] == pytest.approx(1 / 40)


def test_default_fractions_half_into_training():
    parts = splits.build(unique_groups(400, 400, n_labels=4), cfg())  # 0.5 / 0.25 / 0.25
    tgt_train = sum(d == "target" for s in ("train", "train_dev") for d in col(parts[s], "domain"))
    assert (tgt_train, len(parts["dev"]), len(parts["test"])) == (200, 100, 100)


def test_label_stratification_with_many_groups():
    rng = np.random.default_rng(1)
    p = np.array([0.5, 0.3, 0.15, 0.05])
    rows = []
    for g in range(400):
        lab = int(rng.choice(4, p=p))
        rows += [("target", f"t{g}", lab)] * int(rng.integers(1, 4))
    rows += [("source", f"s{g}", g % 4) for g in range(50)]
    parts = splits.build(make_rows(rows), cfg(seed=3))
    overall = np.bincount([r[2] for r in rows if r[0] == "target"], minlength=4) / sum(r[0] == "target" for r in rows)
    for s in ("dev", "test"):
        labs = np.bincount(col(parts[s], "label"), minlength=4) / len(parts[s])
        assert np.abs(labs - overall).max() < 0.02, (s, labs, overall)
    n_t = sum(r[0] == "target" for r in rows)
    assert abs(len(parts["dev"]) - 0.25 * n_t) <= 3 and abs(len(parts["test"]) - 0.25 * n_t) <= 3


def test_train_dev_is_stratified_by_domain_and_label():
    parts = splits.build(unique_groups(2000, 400, n_labels=4), cfg(train_dev_fraction=0.1))
    rep = splits.report(parts)
    td = rep["counts"]["train_dev"]
    assert td["source"]["real"] == {"a": 50, "b": 50, "c": 50, "d": 50}
    assert td["target"]["real"] == {"a": 5, "b": 5, "c": 5, "d": 5}


def test_seed_changes_assignment():
    ds = unique_groups(300, 300, n_labels=3)
    a, b = ids_by_split(splits.build(ds, cfg(seed=0))), ids_by_split(splits.build(ds, cfg(seed=1)))
    assert a["dev"] != b["dev"] and a["train_dev"] != b["train_dev"]
    assert {k: len(v) for k, v in a.items()} == {k: len(v) for k, v in b.items()}


def test_max_source_rows_is_stratified_and_deterministic():
    labels = [0] * 600 + [1] * 300 + [2] * 100
    rows = [("source", f"s{i}", lab) for i, lab in enumerate(labels)] + [("target", f"t{i}", i % 3) for i in range(60)]
    ds = make_rows(rows)
    c = cfg(max_source_rows=100, seed=5)
    parts = splits.build(ds, c)
    src = [lab for s in ("train", "train_dev") for lab, d in zip(col(parts[s], "label"), col(parts[s], "domain"))
           if d == "source"]
    assert np.bincount(src, minlength=3).tolist() == [60, 30, 10]
    assert sum(len(v) for v in parts.values()) == 160
    assert ids_by_split(splits.build(ds, c)) == ids_by_split(parts)
    other = splits.build(ds, cfg(max_source_rows=100, seed=6))
    assert set(col(other["train"], "id")) != set(col(parts["train"], "id"))
    # a cap above the number of source rows changes nothing
    assert sum(len(v) for v in splits.build(ds, cfg(max_source_rows=5000)).values()) == len(ds)


def test_no_target_in_train():
    parts = splits.build(unique_groups(100, 40), cfg(target_train_fraction=0.0, beta_source=0.5))
    assert set(col(parts["train"], "domain")) == {"source"}
    assert len(parts["dev"]) == len(parts["test"]) == 20
    with pytest.raises(ShiftlabError, match="balanced.*no .*target rows"):
        splits.build(unique_groups(100, 40), cfg(target_train_fraction=0.0, beta_source="balanced"))


def test_too_few_target_groups():
    rows = [("source", f"s{i}", 0) for i in range(20)] + [("target", "t0", 0)] * 5 + [("target", "t1", 1)] * 5
    with pytest.raises(ShiftlabError) as e:
        splits.build(make_rows(rows), cfg())
    msg = str(e.value)
    assert "2 target group" in msg and "target_train_fraction=0.5" in msg and "dev_fraction=0.5" in msg
    assert "\n" not in msg
    # two groups are enough when nothing of the target goes into training
    parts = splits.build(make_rows(rows), cfg(target_train_fraction=0.0))
    assert {len(parts["dev"]), len(parts["test"])} == {5}


def test_every_split_gets_a_group_with_few_uneven_groups():
    # five speakers of very different sizes (the audio case): each split still gets one
    sizes = [400, 300, 30, 20, 10]
    rows = [("target", f"spk{g}", i % 2) for g, n in enumerate(sizes) for i in range(n)]
    rows += [("source", f"tts{i % 7}", i % 2) for i in range(300)]
    for seed in range(5):
        parts = splits.build(make_rows(rows), cfg(seed=seed))
        assert all(len(parts[s]) for s in parts)
        assert "target" in col(parts["train"], "domain")


def test_group_shared_by_source_and_target_is_pinned_to_train():
    rows = [("source", "shared", 0)] * 10 + [("target", "shared", 1)] * 10
    rows += [("target", f"t{i}", i % 2) for i in range(20)] + [("source", f"s{i}", 0) for i in range(20)]
    parts = splits.build(make_rows(rows), cfg())
    assert "shared" not in groups_of(parts, ["dev", "test"])
    with pytest.raises(ShiftlabError, match="both source and target rows"):
        splits.build(make_rows(rows), cfg(target_train_fraction=0.0))


def test_audio_dataset():
    rows = [("source", f"tts{i % 9}", i % 3) for i in range(90)] + [("target", f"spk{i % 6}", i % 3) for i in range(60)]
    ds = make_audio(rows)
    parts = splits.build(ds, cfg(beta_source="balanced"))
    assert sum(len(v) for v in parts.values()) == 150
    got = parts["train"][0]
    assert "audio" in got and got["sampling_rate"] == 8000
    by_id = dict(zip(col(ds, "id"), col(ds, "audio")))
    assert all(by_id[i] == a for i, a in zip(col(parts["test"], "id"), col(parts["test"], "audio")))
    splits.check(parts)
    assert "Rows per label" in splits.markdown(splits.report(parts), "audio")


def test_rows_keep_their_data():
    ds = unique_groups(50, 30)
    parts = splits.build(ds, cfg(beta_source=0.5))
    want = {r["id"]: r["image"] for r in ds}
    for s in parts:
        for r in parts[s]:
            assert r["image"] == want[r["id"]]
            assert r["weight"] == (1.0 if r["domain"] == "target" else 0.5)


def test_build_rejects_bad_input():
    ds = unique_groups(10, 10)
    with pytest.raises(ShiftlabError, match="no target rows"):
        splits.build(unique_groups(10, 0), cfg())
    syn = make_rows([("source", "s0", 0)], origin="synthetic", parents=["source/00000"], prefix="syn")
    with pytest.raises(ShiftlabError, match="attach_synthetic"):
        splits.build(hfds.concatenate_datasets([ds, syn]), cfg())
    with pytest.raises(ShiftlabError, match="missing column.*group"):
        splits.build(ds.remove_columns("group"), cfg())


def test_assign_weights_numbers_and_balanced():
    parts = splits.build(unique_groups(80, 40), cfg())
    p2 = splits.assign_weights(parts, 0.125, 1.0)
    rep = splits.report(p2)
    assert rep["beta"]["train"]["source"]["real"] == 0.125 and rep["beta"]["dev"]["target"]["real"] == 1.0
    p3 = splits.assign_weights(p2, "balanced", "balanced")  # rewrites, no duplicate column
    assert p3["train"].column_names.count("weight") == 1
    r3 = splits.report(p3)
    assert r3["weights"]["train"]["source"]["real"] == pytest.approx(r3["weights"]["train"]["target"]["real"], rel=1e-5)
    with pytest.raises(ShiftlabError, match="beta_source"):
        splits.assign_weights(parts, "half", 1.0)
    with pytest.raises(ShiftlabError, match="beta_source"):
        splits.assign_weights(parts, -1.0, 1.0)


# --------------------------------------------------------------------------- synthetic rows


def _synthetic_from(parts, n_per_split=3, split_names=("train", "train_dev")):
    parents = []
    for s in split_names:
        ids, doms = col(parts[s], "id"), col(parts[s], "domain")
        parents += [i for i, d in zip(ids, doms) if d == "source"][:n_per_split]
    rows = [("target", "whatever", 0)] * len(parents)  # wrong group/domain: must be overwritten
    return make_rows(rows, origin="synthetic", parents=parents, prefix="syn"), parents


def test_attach_synthetic_inherits_split_group_and_domain():
    parts = splits.build(unique_groups(200, 40), cfg())
    syn, parents = _synthetic_from(parts)
    out = splits.attach_synthetic(parts, syn, cfg(beta_synthetic="balanced", beta_source=0.5))
    info = {}
    for s in out:
        for i, g, d in zip(col(out[s], "id"), col(out[s], "group"), col(out[s], "domain")):
            info[i] = (s, g, d)
    for sid, p in zip(col(syn, "id"), parents):
        assert info[sid] == info[p]
        assert info[p][2] == "source"
    assert len(out["train"]) == len(parts["train"]) + 3 and len(out["train_dev"]) == len(parts["train_dev"]) + 3
    assert len(out["dev"]) == len(parts["dev"]) and len(out["test"]) == len(parts["test"])
    rep = splits.report(out)
    assert rep["counts"]["train"]["source"]["synthetic"]["a"] == 3
    assert rep["weights"]["train"]["source"]["synthetic"] == pytest.approx(rep["weights"]["train"]["target"]["real"])
    assert rep["beta"]["train"]["source"]["real"] == 0.5
    splits.check(out)


def test_attach_synthetic_rejects_dev_and_unknown_parents():
    parts = splits.build(unique_groups(100, 40), cfg())
    dev_parent = col(parts["dev"], "id")[0]
    bad = make_rows([("source", "x", 0)], origin="synthetic", parents=[dev_parent], prefix="synbad")
    with pytest.raises(ShiftlabError) as e:
        splits.attach_synthetic(parts, bad, cfg())
    assert "synbad/00000" in str(e.value) and dev_parent in str(e.value) and "dev" in str(e.value)
    unknown = make_rows([("source", "x", 0)], origin="synthetic", parents=["nope/1"], prefix="synbad")
    with pytest.raises(ShiftlabError, match="synbad/00000.*nope/1"):
        splits.attach_synthetic(parts, unknown, cfg())
    real = make_rows([("source", "x", 0)], parents=[col(parts["train"], "id")[0]], prefix="r")
    with pytest.raises(ShiftlabError, match="not 'synthetic'"):
        splits.attach_synthetic(parts, real, cfg())


def test_synthetic_label_names_are_unified():
    parts = splits.build(unique_groups(100, 40), cfg())
    p = col(parts["train"], "id")[0]
    syn = make_rows([("source", "x", 1)], labels=["b", "c"], origin="synthetic", parents=[p], prefix="syn")
    out = splits.attach_synthetic(parts, syn, cfg())
    row = out["train"].filter(lambda r: r["id"] == "syn/00000", keep_in_memory=True)[0]
    assert out["train"].features["label"].int2str(row["label"]) == "c"


# --------------------------------------------------------------------------- check()


@pytest.mark.parametrize(
    "change",
    [
        lambda r: None,
        # legal but easy to get wrong: a source group in both train and train_dev (one bucket),
        # synthetic children in train and train_dev of parents in either, target rows in train
        lambda r: r["train_dev"].append(("source", "s1", 1)),
        lambda r: r["train"].append(("source", "s1", 0, "synthetic", "train_dev/0")),
        lambda r: r["train_dev"].append(("source", "s1", 0, "synthetic", "train/0")),
        lambda r: r["train"].append(("target", "t1", 1, "synthetic", "train/1")),
        lambda r: r["train"].extend([("target", "t1", 0), ("target", "t4", 1)]),
    ],
)
def test_check_accepts_good_splits(change):
    rows = {k: list(v) for k, v in good_rows().items()}
    change(rows)
    parts = by_hand(**rows)
    assert splits.check(parts) is None  # no error for any of these
    # zero weights are legal too (a source weighted out); the rows are not touched by check
    w = parts["train"].add_column("weight", [0.0] * len(parts["train"]))
    parts2 = hfds.DatasetDict({**parts, "train": w})
    before = {k: v.to_dict() for k, v in parts2.items()}
    assert splits.check(parts2) is None
    assert {k: v.to_dict() for k, v in parts2.items()} == before


@pytest.mark.parametrize(
    "change, pattern",
    [
        (lambda r: r.pop("test"), "missing split test"),
        (lambda r: r.update(train_dev=[]), "train_dev is empty"),
        (lambda r: r["dev"].append(("target", "t1", 0)), "group 't1' is in both train\\+train_dev and dev"),
        (lambda r: r["test"].append(("target", "t2", 0)), "group 't2' is in both dev and test"),
        (lambda r: r["dev"].append(("source", "s9", 0)), "dev holds row dev/1 with domain source"),
        (lambda r: r["test"].append(("target", "t3", 0, "synthetic", "train/0")), "test holds row test/1 .* synthetic"),
        (lambda r: r["train"].append(("source", "s1", 0, "synthetic", "dev/0")),
         "synthetic row train/2 in train has parent 'dev/0', which is in dev"),
        (lambda r: r["train"].append(("source", "s1", 0, "synthetic", "ghost")), "train/2 .*'ghost', which is in no split"),
        (lambda r: r["train"].append(("source", "s7", 0, "synthetic", "train/0")),
         "synthetic row train/2 in train has group 's7' but its parent train/0 has group 's1'"),
        (lambda r: r["train"].append(("target", "s1", 0, "synthetic", "train/0")), "train/2 .* domain 'target'"),
        (lambda r: r["train"].append(("source", "s1", 0, None, None, "dev/0")), "duplicate id dev/0 \\(in train, dev\\)"),
    ],
)
def test_check_catches(change, pattern):
    rows = good_rows()
    rows = {k: list(v) for k, v in rows.items()}
    change(rows)
    parts = by_hand(**{k: v for k, v in rows.items()}) if all(rows.values()) else _with_empty(rows)
    with pytest.raises(ShiftlabError, match=pattern) as e:
        splits.check(parts)
    assert "\n" not in str(e.value)


def _with_empty(rows):
    parts = by_hand(**{k: v for k, v in rows.items() if v})
    for k, v in rows.items():
        if not v:
            parts[k] = parts["train"].select([])
    return parts


def test_check_catches_negative_weights():
    parts = splits.build(unique_groups(30, 12), cfg())
    bad = dict(parts)
    bad["dev"] = parts["dev"].remove_columns("weight").add_column("weight", [-1.0] * len(parts["dev"]))
    with pytest.raises(ShiftlabError, match="dev has weights"):
        splits.check(hfds.DatasetDict(bad))


# --------------------------------------------------------------------------- markdown


def test_markdown_has_the_tables():
    parts = splits.build(unique_groups(120, 40, n_labels=3), cfg(beta_source="balanced"))
    md = splits.markdown(splits.report(parts), "Split report: images")
    assert md.startswith("# Split report: images\n")
    for head in ("## Rows and groups", "## Rows per label", "## Weights"):
        assert head in md
    assert "| split | rows | groups | source real | source synthetic | target real | target synthetic |" in md
    assert "| label | train | train_dev | dev | test |" in md
    assert "| a |" in md and "| c |" in md and "**total**" in md
    assert "| train | source | real |" in md


# --------------------------------------------------------------------------- on disk


def test_saved_input_is_untouched_and_output_is_byte_identical(tmp_path):
    from shiftlab import store

    store.save(unique_groups(120, 60, n_labels=3), tmp_path / "prepared")
    before = store.tree_digest(tmp_path / "prepared")
    ds = store.load(tmp_path / "prepared")
    for run in ("a", "b"):
        store.save(splits.build(ds, cfg(beta_source="balanced")), tmp_path / run)
    assert store.tree_digest(tmp_path / "prepared") == before
    assert store.tree_digest(tmp_path / "a") == store.tree_digest(tmp_path / "b")

    parts = store.load(tmp_path / "a")
    splits.check(parts)
    parents = col(parts["train"], "id")[:5]
    store.save(make_rows([("source", "x", 1)] * 5, origin="synthetic", parents=parents, prefix="syn"), tmp_path / "syn")
    out = splits.attach_synthetic(parts, store.load(tmp_path / "syn"), cfg(beta_synthetic=0.3))
    store.save(out, tmp_path / "with_syn")
    back = store.load(tmp_path / "with_syn")
    assert splits.report(back) == splits.report(out)
    assert splits.report(back)["counts"]["train"]["source"]["synthetic"]["b"] == 5
    assert store.tree_digest(tmp_path / "a") == store.tree_digest(tmp_path / "b")  # inputs untouched
