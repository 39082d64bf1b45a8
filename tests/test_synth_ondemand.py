"""On-the-fly blur (synth/ondemand.py): fresh seeded kernel per sample and epoch."""

import numpy as np
import pytest
import torch

from shiftlab.errors import ShiftlabError
from shiftlab.synth import blur
from shiftlab.synth.ondemand import BlurredDataset, OnTheFlyBlur


def _batch(n=8, c=1, h=28, w=28):
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, c, h, w), generator=g, dtype=torch.uint8)


def test_independent_of_batch_composition():
    x = _batch()
    f = OnTheFlyBlur(seed=3)
    whole = f(x, list(range(10, 18)), epoch=2)
    parts = torch.cat([f(x[:3], [10, 11, 12], 2), f(x[3:], [13, 14, 15, 16, 17], 2)])
    assert torch.equal(whole, parts)
    perm = [5, 1, 7, 0, 2, 6, 4, 3]
    shuffled = f(x[perm], [10 + i for i in perm], 2)
    assert torch.equal(shuffled, whole[perm])


def test_fresh_kernel_per_epoch_and_seed():
    x = _batch(4)
    f = OnTheFlyBlur(seed=0)
    e0, e1 = f(x, [0, 1, 2, 3], 0), f(x, [0, 1, 2, 3], 1)
    assert not torch.equal(e0, e1)
    assert f.recipe(0, 0) != f.recipe(0, 1)
    assert f.recipe(0, 0) == OnTheFlyBlur(seed=0).recipe(0, 0)
    assert f.recipe(0, 0) != OnTheFlyBlur(seed=1).recipe(0, 0)


def test_recipe_regenerates_pixels():
    x = _batch(3, c=3, h=17, w=23)
    f = OnTheFlyBlur(seed=5)
    y = f(x, [7, 8, 9], epoch=4)
    for j, i in enumerate([7, 8, 9]):
        img = x[j].permute(1, 2, 0).numpy()
        again = blur.regenerate(f.recipe(i, 4), img)
        assert np.array_equal(again, y[j].permute(1, 2, 0).numpy())


def test_probability_and_float_input():
    x = _batch(16).float() / 255
    assert torch.equal(OnTheFlyBlur(p=0.0)(x, range(16), 0), x)
    f = OnTheFlyBlur(p=0.5, seed=1)
    y = f(x, list(range(16)), 0)
    same = [bool(torch.equal(y[i], x[i])) for i in range(16)]
    sharp = [f.recipe(i, 0)["kernel"] is None for i in range(16)]
    assert same == sharp and 0 < sum(sharp) < 16
    assert y.dtype == torch.float32


def test_narrow_cfg_gives_one_kernel():
    f = OnTheFlyBlur(blur.NARROW["kernels"], seed=0)
    assert len({str(f.recipe(i, e)["kernel"]) for i in range(5) for e in range(3)}) == 1


def test_blurred_dataset_matches_callable():
    imgs = [_batch(1)[0].numpy() for _ in range(4)]
    ds = BlurredDataset(imgs, seed=2)
    ds.set_epoch(3)
    item = ds[1]
    ref = OnTheFlyBlur(seed=2)(torch.from_numpy(imgs[1])[None], [1], 3)[0]
    assert torch.equal(item["image"], ref) and item["blur"]["epoch"] == 3
    assert len(ds) == 4


def test_errors():
    with pytest.raises(ShiftlabError, match="p must"):
        OnTheFlyBlur(p=2)
    with pytest.raises(ShiftlabError, match="unknown key"):
        OnTheFlyBlur({"linear": {"lenght": [1, 2]}})
    with pytest.raises(ShiftlabError, match="indices"):
        OnTheFlyBlur()(_batch(2), [0], 0)
    with pytest.raises(ShiftlabError, match="uint8"):
        BlurredDataset([np.zeros((4, 4), np.float32)])[0]


def test_shards_concatenated_equal_the_unsharded_output():
    """synth blur --shard I/N: blocks of rows that merge back into the unsharded dataset."""
    import datasets as hfds

    from shiftlab import store
    from shiftlab.datasets import images
    from shiftlab.synth import blur

    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (30, 12, 12), dtype=np.uint8)
    ds = images.from_arrays(arr, np.arange(30) % 3, domain=["source"] * 20 + ["target"] * 10)
    splits = hfds.DatasetDict(train=ds.select(range(16)), train_dev=ds.select(range(16, 20)),
                              dev=ds.select(range(20, 25)), test=ds.select(range(25, 30)))
    cfg = {"copies": 2, "fraction": 1.0}
    whole = blur.make_synthetic(splits, cfg, device="cpu", progress=False)
    parts = [blur.make_synthetic(splits, cfg, device="cpu", progress=False, shard=(i, 3)) for i in range(3)]
    assert sum(len(p) for p in parts) == len(whole) == 40
    merged = hfds.concatenate_datasets(parts)
    assert merged["id"] == whole["id"] and merged["recipe"] == whole["recipe"]
    assert np.array_equal(np.asarray(merged.with_format("numpy")["image"]), np.asarray(whole.with_format("numpy")["image"]))
    with pytest.raises(ShiftlabError, match="shard"):
        blur.make_synthetic(splits, cfg, device="cpu", progress=False, shard=(3, 3))
