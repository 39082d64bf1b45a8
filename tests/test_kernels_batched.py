"""Batched kernel generation (synth/kernels.py: sample_batch, render_batch) equals the per-row
recipe path bit for bit: the same seeds, records and float32 kernels as
``kernels.sample(default_rng(seeding.sample_seed(...)), cfg).render()`` row by row, so the
``synth blur`` stage output (hashed in dvc.lock) and ``blur.regenerate`` stay unchanged."""

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from shiftlab import seeding, store
from shiftlab.synth import blur
from shiftlab.synth import kernels as K
from shiftlab.synth.ondemand import OnTheFlyBlur

CFGS = {
    "default": (None, 3000),
    "narrow": (blur.NARROW["kernels"], 200),
    "large": ({"linear": {"length": [3, 29]}, "shake": {"max_length": [5, 29]}}, 800),
    "odd": ({"families": {"linear": 0.3, "shake": 0.7},
             "linear": {"length": [0.0, 3.0], "angle": [-400.0, 400.0]},
             "shake": {"max_length": [0.0, 40.0], "n_steps": [2, 700], "jitter": 0.0, "anxiety": [0.0, 0.02],
                       "impulse_prob": [0.0, 5.0], "exposure": [0.01, 1.0]}}, 600),
    "shake_only_fixed": ({"families": {"linear": 0.0, "shake": 1.0},
                          "shake": {"max_length": 12.0, "exposure": 1.0, "anxiety": 0.005, "jitter": 5.0,
                                    "centripetal": 0.35, "impulse_prob": 0.1, "n_steps": 64}}, 300),
}


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype == np.float32 and a.shape == b.shape and np.array_equal(a.view(np.uint32),
                                                                                      b.view(np.uint32))


def test_sample_seeds_equal_seeding():
    idx = np.arange(4000)
    got = K.sample_seeds(0, idx, "blur", 0)
    assert got.dtype == np.int64
    assert got.tolist() == [seeding.sample_seed(0, int(i), "blur", 0) for i in idx]
    c = idx % 3
    got = K.sample_seeds(11, idx[:300], "onthefly_blur", c[:300])
    assert got.tolist() == [seeding.sample_seed(11, int(i), "onthefly_blur", int(k)) for i, k in zip(idx, c[:300])]
    # zero, 32-bit edges, and parts of 2**32 and more (per-element path)
    odd = np.array([0, 1, 2**32 - 1, 2**32, 2**40 + 5, 2**62])
    got = K.sample_seeds(2**33, odd, "x", 7)
    assert got.tolist() == [seeding.sample_seed(2**33, int(i), "x", 7) for i in odd]
    assert K.sample_seeds(3, 5, "blur", "select").item() == seeding.sample_seed(3, 5, "blur", "select")


def test_pcg64_seeding_and_raw_stream():
    seeds = [0, 1, 2, 2**32 - 1, 2**32, 2**63 - 1, 2**64 - 1, 123456789012345]
    h, lo, ih, il = K.pcg64_seed_state(np.array(seeds, dtype=np.uint64))
    raw = K.pcg64_raw(np.array(seeds, dtype=np.uint64), 6)
    for i, s in enumerate(seeds):
        bg = np.random.PCG64(s)
        st_ = bg.state["state"]
        assert st_["state"] == (int(h[i]) << 64 | int(lo[i]))
        assert st_["inc"] == (int(ih[i]) << 64 | int(il[i]))
        assert raw[i].tolist() == bg.random_raw(6).tolist()
    g = np.random.default_rng(99)
    assert K.raw_to_double(np.random.PCG64(99).random_raw(4)).tolist() == g.random(4).tolist()


@pytest.mark.parametrize("name", sorted(CFGS))
def test_batch_equals_per_row_recipe_path(name):
    cfg, n = CFGS[name]
    seeds = K.sample_seeds(5, np.arange(n), "blur", 0)
    kb = K.sample_batch(seeds, cfg)
    recs = kb.records()
    arrs = K.render_batch(kb)
    for s, rec, arr in zip(seeds.tolist(), recs, arrs):
        k = K.sample(np.random.default_rng(s), cfg)
        assert rec == k.to_record()
        assert json.dumps(rec, sort_keys=True) == json.dumps(k.to_record(), sort_keys=True)  # recipe text
        assert _same(arr, k._render()), (name, rec)  # uncached render of the per-row path
    assert [type(k) for k in kb.kernels()] == [K.FAMILIES[r["family"]] for r in recs]


def test_render_batch_of_records_and_sizes():
    ks = [K.Linear(0.0, 10.0), K.Shake(max_length=0.0), K.Linear(7.3, -33.0, 0.4), K.Shake(seed=2**32),
          K.Shake(max_length=3.0, n_steps=2, seed=5), K.Linear(200.0, 12.0)]
    recs = [k.to_record() for k in ks]
    for got, k in zip(K.render_batch(recs), ks):
        assert _same(got, k._render())
    for got, k in zip(K.render_batch(ks, size=9), ks):
        assert _same(got, k.render(9))
    st_ = K.stack_batch(K.render_batch(ks[:5]))
    assert st_.shape[1] == st_.shape[2] == max(k.natural_size for k in ks[:5])
    assert K.render_batch([]) == []


kernel_st = st.one_of(
    st.builds(K.Linear, length=st.floats(0.0, 30.0), angle=st.floats(-360.0, 360.0),
              direction=st.floats(-1.0, 1.0)),
    st.builds(K.Shake, max_length=st.floats(0.0, 30.0), exposure=st.floats(0.05, 1.0),
              anxiety=st.floats(0.0, 0.02), jitter=st.floats(0.0, 10.0), centripetal=st.floats(0.0, 1.0),
              impulse_prob=st.floats(0.0, 0.3), n_steps=st.integers(2, 300), seed=st.integers(0, 2**32)),
)


@settings(max_examples=25, deadline=None)
@given(st.lists(kernel_st, min_size=1, max_size=12))
def test_render_batch_any_kernels(ks):
    for got, k in zip(K.render_batch(ks), ks):
        assert _same(got, k._render())


@pytest.mark.parametrize("p", [1.0, 0.55])
def test_onthefly_batch_equals_draw(p):
    f = OnTheFlyBlur(seed=4, p=p)
    idx = np.arange(400) * 13 + 1
    todo, stack = f.kernels(idx, 3)
    ref = [f.draw(int(i), 3)[1] for i in idx]
    assert todo.tolist() == [j for j, k in enumerate(ref) if k is not None]
    for t, k in zip(todo.tolist(), stack):
        r = ref[t].render()
        o = (k.shape[0] - r.shape[0]) // 2
        assert _same(np.ascontiguousarray(k[o: o + r.shape[0], o: o + r.shape[0]]), r)
        assert np.count_nonzero(k) == np.count_nonzero(r)
    x = torch.randint(0, 256, (len(idx), 1, 9, 11), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    y = f(x, idx, 3)
    for j in range(0, len(idx), 41):
        rec = f.recipe(int(idx[j]), 3)
        want = x[j] if rec["kernel"] is None else torch.from_numpy(
            blur.regenerate(rec, x[j].numpy().transpose(1, 2, 0)).transpose(2, 0, 1).copy())
        assert torch.equal(y[j], want)


def test_apply_kernels_stack_equals_list():
    rng = np.random.default_rng(0)
    ks = K.render_batch(K.sample_batch(K.sample_seeds(1, np.arange(300), "t"), CFGS["large"][0]))
    for shape in [(300, 1, 28, 28), (300, 3, 17, 23)]:
        x = torch.from_numpy(rng.integers(0, 256, shape, dtype=np.uint8))
        assert torch.equal(blur.apply_kernels(x, K.stack_batch(ks)), blur.apply_kernels(x, ks))
    xf = torch.rand((300, 1, 12, 12), generator=torch.Generator().manual_seed(1))
    assert torch.equal(blur.apply_kernels(xf, K.stack_batch(ks, 61)), blur.apply_kernels(xf, ks))


def test_stage_rows_equal_per_row_reference(monkeypatch):
    """The stage (batched kernels, chunked) gives each row the per-row recipe path's kernel and pixels."""
    from shiftlab.datasets import images, schema, splits

    rng = np.random.default_rng(2)
    n = 90
    ds = images.from_arrays(rng.integers(0, 256, (n, 10, 9, 1), dtype=np.uint8), rng.integers(0, 3, n),
                            ["source"] * 70 + ["target"] * 20, label_names=["a", "b", "c"],
                            groups=[f"g{i}" for i in range(n)], name="toy")
    sp = splits.build(ds, {"seed": 0, "target_train_fraction": 0.5, "dev_fraction": 0.5, "train_dev_fraction": 0.1,
                           "max_source_rows": None, "beta_source": 1.0, "beta_synthetic": 1.0})
    cfg = {"copies": 2, "batch_size": 13, "workers": 1, "device": "cpu"}
    monkeypatch.setattr(blur, "_CHUNK", 17)  # chunk boundaries inside apply batches
    out = blur.make_synthetic(sp, cfg, device="cpu", progress=False)
    monkeypatch.setattr(blur, "_CHUNK", 4096)
    again = blur.make_synthetic(sp, dict(cfg, batch_size=512), device="cpu", progress=False)
    assert out["recipe"] == again["recipe"]
    assert np.array_equal(np.asarray(out["image"]), np.asarray(again["image"]))
    parents = {}
    for s in ("train", "train_dev"):
        for row in sp[s]:
            parents[row["id"]] = row
    for row in out.select(range(0, len(out), 7)):
        rec = json.loads(row["recipe"])
        s = seeding.sample_seed(0, rec["index"], "blur", rec["copy"])
        k = K.sample(np.random.default_rng(s), None)
        assert rec["seed"] == s and rec["kernel"] == k.to_record()
        par = schema.hwc(parents[rec["parent"]]["image"])
        assert np.array_equal(blur.regenerate(rec, par), schema.hwc(row["image"]))
    assert store.recipe(a=1) == '{"a":1}'  # recipes stay canonical JSON


def test_large_kernels_take_the_list_path_with_the_same_pixels():
    cfg = {"families": {"linear": 1.0}, "linear": {"length": [66.0, 90.0]}}
    f = OnTheFlyBlur(cfg, seed=1)
    x = torch.randint(0, 256, (6, 3, 20, 30), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    y = f(x, np.arange(6), 0)
    todo, stack = f.kernels(np.arange(6), 0)
    assert stack.shape[1] > 65
    for j in range(6):
        g = blur.regenerate(f.recipe(j, 0), x[j].permute(1, 2, 0).numpy())
        assert np.array_equal(g, y[j].permute(1, 2, 0).numpy())


def test_batch_validates_what_draws_can_reach():
    # a family of weight 0 is never drawn: its values are not looked at (as with kernels.sample)
    cfg = {"families": {"linear": 1.0, "shake": 0.0}, "shake": {"anxiety": "lots"}}
    seeds = K.sample_seeds(0, np.arange(20), "t")
    assert K.sample_batch(seeds, cfg).records() == [K.sample(np.random.default_rng(s), cfg).to_record()
                                                    for s in seeds.tolist()]
    from shiftlab.errors import ShiftlabError

    with pytest.raises(ShiftlabError, match="high end of the 'shake' ranges"):
        K.sample_batch(seeds, {"shake": {"exposure": [0.5, 1.5]}})
    with pytest.raises(ShiftlabError, match="linear.length"):
        K.sample_batch(seeds, {"linear": {"length": [1, "a"]}})
    with pytest.raises(ShiftlabError, match="non-negative"):
        K.sample_batch(np.array([-1]))
