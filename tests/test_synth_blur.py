"""The synth blur stage (synth/blur.py): rows, recipes, regeneration, determinism, cfg errors."""

import json

import datasets as hfds
import numpy as np
import pytest
import torch

from shiftlab import store
from shiftlab.datasets import images, schema, splits
from shiftlab.errors import ShiftlabError
from shiftlab.synth import apply as A
from shiftlab.synth import blur
from shiftlab.synth import kernels as K

SPLIT_CFG = {
    "seed": 0,
    "target_train_fraction": 0.5,
    "dev_fraction": 0.5,
    "train_dev_fraction": 0.1,
    "max_source_rows": None,
    "beta_source": 1.0,
    "beta_synthetic": 1.0,
}
FAST = {"workers": 1}


def _splits(n_src=40, n_tgt=16, c=3, h=12, w=10, seed=0):
    rng = np.random.default_rng(seed)
    n = n_src + n_tgt
    imgs = rng.integers(0, 256, (n, h, w, c), dtype=np.uint8)
    labels = rng.integers(0, 3, n)
    domain = ["source"] * n_src + ["target"] * n_tgt
    groups = [f"g{i // 2}" for i in range(n_src)] + [f"t{i}" for i in range(n_tgt)]
    ds = images.from_arrays(imgs, labels, domain, label_names=["a", "b", "c"], groups=groups, name="toy")
    return splits.build(ds, SPLIT_CFG)


@pytest.fixture(scope="module")
def toy():
    return _splits()


@pytest.fixture(scope="module")
def toy_grey():
    return _splits(n_src=12, n_tgt=8, c=1, h=7, w=9, seed=1)


def _rows(ds, idx=None):
    return ds.to_dict() if idx is None else ds.select(idx).to_dict()


def _parents(sp):
    out = {}
    for s in ("train", "train_dev"):
        d = sp[s].to_dict()
        for i in range(len(sp[s])):
            out[d["id"][i]] = (s, {k: d[k][i] for k in ("label", "group", "domain", "origin")}, i)
    return out


def test_rows_counts_parents_and_recipes(toy):
    cfg = {**FAST, "fraction": 0.5, "copies": 2, "seed": 3}
    syn = blur.make_synthetic(toy, cfg, device="cpu", progress=False)
    el = blur.eligible_parents(toy)
    eligible = len(el["id"])
    assert eligible == sum(
        1 for s in ("train", "train_dev") for d, o in zip(toy[s]["domain"], toy[s]["origin"])
        if d == "source" and o == "real"
    )
    assert len(syn) == int(np.floor(0.5 * eligible + 0.5)) * 2
    assert syn.features == schema.image_features(schema.label_names(toy["train"]), schema.image_shape(toy["train"]))
    schema.check(syn)
    par = _parents(toy)
    d = syn.to_dict()
    dev_test = set(toy["dev"]["id"]) | set(toy["test"]["id"])
    seen = set()
    for i in range(len(syn)):
        p = d["parent"][i]
        assert p in par and p not in dev_test
        split, meta, _ = par[p]
        assert meta["domain"] == "source" and meta["origin"] == "real"
        assert d["label"][i] == meta["label"] and d["group"][i] == meta["group"]
        assert d["domain"][i] == "source" and d["origin"][i] == "synthetic"
        rec = json.loads(d["recipe"][i])
        assert rec["stage"] == "synth_blur" and rec["parent"] == p
        assert d["id"][i] == f"{p}/blur{rec['copy']}"
        assert rec["family"] == rec["kernel"]["family"]
        assert K.from_record(rec["kernel"]) == K.sample(rec["seed"], blur.DEFAULTS["kernels"])
        seen.add((p, rec["copy"]))
    assert len(seen) == len(syn)  # every (parent, copy) once
    assert {c for _, c in seen} == {0, 1}


def test_recipes_regenerate_pixels_exactly(toy, toy_grey):
    for sp in (toy, toy_grey):
        syn = blur.make_synthetic(sp, {**FAST, "fraction": 1.0, "seed": 1}, device="cpu", progress=False)
        par = _parents(sp)
        chw = schema.chw_batch(syn)
        for i, (rid, p, rec) in enumerate(zip(syn["id"], syn["parent"], syn["recipe"])):
            split, _, row = par[p]
            parent = schema.chw_batch(sp[split].select([row]))[0].transpose(1, 2, 0)
            again = blur.regenerate(rec, parent)
            assert np.array_equal(again, chw[i].transpose(1, 2, 0)), rid
            if parent.shape[2] == 1:
                assert np.array_equal(blur.regenerate(json.loads(rec), parent[:, :, 0]), again[:, :, 0])
            # and the albumentations path gives the same pixels within one grey level
            cpu = A.blur_cpu(parent, json.loads(rec)["kernel"])
            assert np.abs(cpu.astype(int) - again.astype(int)).max() <= 1


def test_byte_identical_across_batch_size_and_workers(toy, tmp_path, monkeypatch):
    base = {"fraction": 0.75, "copies": 2, "seed": 5}
    monkeypatch.setattr(blur, "_CHUNK", 16)  # several kernel tasks, so workers=2 really spawns a pool
    digests = {}
    for bs, wk in ((512, 1), (7, 1), (7, 2)):
        syn = blur.make_synthetic(toy, {**base, "batch_size": bs, "workers": wk}, device="cpu", progress=False)
        path = store.save(syn, tmp_path / f"bs{bs}_w{wk}")
        digests[(bs, wk)] = store.tree_digest(path)
    assert len(set(digests.values())) == 1, digests
    # another seed -> other kernels and pixels
    other = blur.make_synthetic(toy, {**base, "seed": 6, **FAST}, device="cpu", progress=False)
    assert store.tree_digest(store.save(other, tmp_path / "seed6")) != digests[(512, 1)]


def test_fraction_is_nested_and_zero_gives_no_rows(toy):
    small = blur.make_synthetic(toy, {**FAST, "fraction": 0.25, "seed": 2}, device="cpu", progress=False)
    big = blur.make_synthetic(toy, {**FAST, "fraction": 0.75, "seed": 2}, device="cpu", progress=False)
    assert set(small["parent"]) < set(big["parent"])
    # the rows of a parent in both are identical (kernel depends on parent position, not fraction)
    rs = dict(zip(small["id"], small["recipe"]))
    rb = dict(zip(big["id"], big["recipe"]))
    assert all(rb[i] == r for i, r in rs.items())
    none = blur.make_synthetic(toy, {**FAST, "fraction": 0.0}, device="cpu", progress=False)
    assert len(none) == 0


def test_independent_of_row_order(toy):
    """Parents are numbered by id order, so shuffling split rows does not change the output."""
    shuffled = hfds.DatasetDict({k: v.shuffle(seed=1) if k in ("train", "train_dev") else v for k, v in toy.items()})
    a = blur.make_synthetic(toy, {**FAST, "fraction": 0.5}, device="cpu", progress=False)
    b = blur.make_synthetic(shuffled, {**FAST, "fraction": 0.5}, device="cpu", progress=False)
    assert a["id"] == b["id"] and a["recipe"] == b["recipe"]
    assert np.array_equal(schema.chw_batch(a), schema.chw_batch(b))


def test_attach_synthetic_and_check(toy):
    syn = blur.make_synthetic(toy, {**FAST, "fraction": 1.0, "copies": 1}, device="cpu", progress=False)
    full = splits.attach_synthetic(toy, syn, SPLIT_CFG)
    splits.check(full)
    for s in ("train", "train_dev"):
        n_syn = sum(1 for o in full[s]["origin"] if o == "synthetic")
        n_par = sum(1 for d, o in zip(toy[s]["domain"], toy[s]["origin"]) if d == "source" and o == "real")
        assert n_syn == n_par
    for s in ("dev", "test"):
        assert "synthetic" not in set(full[s]["origin"])


def test_narrow_cfg_one_kernel(toy):
    syn = blur.make_synthetic(toy, {**blur.NARROW, **FAST, "fraction": 0.25}, device="cpu", progress=False)
    recs = {json.dumps(json.loads(r)["kernel"], sort_keys=True) for r in syn["recipe"]}
    assert len(recs) == 1
    assert json.loads(recs.pop()) == K.Linear(9.0, 45.0, 0.0).to_record()


def test_apply_kernels_batch_independent():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (9, 3, 15, 13), generator=g, dtype=torch.uint8)
    ks = [K.sample(i) for i in range(8)] + [K.Linear(45, 10)]  # the last one takes the FFT path
    whole = blur.apply_kernels(x, ks)
    for i in range(9):
        assert torch.equal(blur.apply_kernels(x[i : i + 1], ks[i : i + 1]), whole[i : i + 1])
    with pytest.raises(ShiftlabError, match="2 kernels for 9 images"):
        blur.apply_kernels(x, ks[:2])
    with pytest.raises(ShiftlabError, match=r"^apply_kernels: images must be a torch tensor \(N, C, H, W\)$"):
        blur.apply_kernels(x.numpy(), ks)  # a numpy batch
    with pytest.raises(ShiftlabError, match=r"^apply_kernels: images must be a torch tensor \(N, C, H, W\)$"):
        blur.apply_kernels(x[0], ks[:1])  # one (C, H, W) image, not a batch


def _one_line(e):
    msg = str(e.value)
    assert msg and "\n" not in msg
    return msg


@pytest.mark.parametrize(
    "cfg, needle",
    [
        ({"copise": 2}, "synth_blur.copise"),
        ({"copies": 0}, "synth_blur.copies"),
        ({"copies": 1.5}, "synth_blur.copies"),
        ({"seed": -1}, "synth_blur.seed"),
        ({"batch_size": 0}, "synth_blur.batch_size"),
        ({"workers": -2}, "synth_blur.workers"),
        ({"fraction": 1.5}, "synth_blur.fraction"),
        ({"fraction": True}, "synth_blur.fraction"),
        ({"kernels": {"linear": {"length": [5, 1]}}}, "synth_blur.kernels"),
        ({"kernels": {"shake": {"exposure": [0.5, 2.0]}}}, "synth_blur.kernels"),
        ({"device": "tpu"}, "synth_blur.device"),
    ],
)
def test_bad_cfg_one_line_error(toy, cfg, needle):
    with pytest.raises(ShiftlabError) as e:
        blur.make_synthetic(toy, cfg, device="auto", progress=False)
    assert needle in _one_line(e)


def test_bad_inputs_one_line(toy):
    with pytest.raises(ShiftlabError) as e:
        blur.make_synthetic(hfds.DatasetDict({"train": toy["train"]}), FAST, device="cpu", progress=False)
    assert "train_dev" in _one_line(e)
    with pytest.raises(ShiftlabError) as e:
        blur.regenerate("not json", np.zeros((4, 4, 3), np.uint8))
    _one_line(e)
    with pytest.raises(ShiftlabError) as e:
        blur.regenerate({"stage": "x"}, np.zeros((4, 4, 3), np.uint8))
    assert "kernel" in _one_line(e)
    rec = store.recipe(kernel=K.Linear(3, 0).to_record())
    with pytest.raises(ShiftlabError) as e:
        blur.regenerate(rec, np.zeros((4, 4, 3), np.uint16))
    assert "uint8" in _one_line(e)
    with pytest.raises(ShiftlabError) as e:
        blur.regenerate(rec, np.zeros((4, 4, 4), np.uint8))
    assert "RGBA" in _one_line(e)


def test_resolve_device():
    assert blur.resolve_device("cpu").type == "cpu"
    assert blur.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ShiftlabError) as e:
            blur.resolve_device("cuda")
        assert "synth_blur.device" in _one_line(e)
