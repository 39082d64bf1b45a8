"""Blur adapters (synth/adapters.py) against their host libraries' conventions: albumentations
Compose seeding, applied params and serialisation; an nn.Module under torch.compile and in a
DataLoader with workers; Hugging Face with_transform serving the stage's pixels."""

import json

import albumentations as A
import datasets as hfds
import numpy as np
import pytest
import torch

from shiftlab.datasets import images, schema
from shiftlab.errors import ShiftlabError
from shiftlab.synth import BatchBlur, LinearMotionBlur, SampledMotionBlur, ShakeBlur, applied_recipes, set_epoch
from shiftlab.synth import blur, with_blur
from shiftlab.synth.ondemand import OnTheFlyBlur

SMALL = {"families": {"linear": 0.5, "shake": 0.5}, "linear": {"length": [3.0, 7.0]},
         "shake": {"max_length": [4.0, 9.0], "n_steps": 64}}
CFG = {"seed": 5, "copies": 2, "workers": 1, "device": "cpu", "kernels": SMALL}


def _imgs(n=6, h=16, w=14, c=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, c), dtype=np.uint8)


def _compose(seed, **kw):
    return A.Compose([A.HorizontalFlip(p=0.5), ShakeBlur(max_length_range=(4, 9), n_steps=64, p=0.7),
                      LinearMotionBlur(length_range=(3, 9), p=0.7)], seed=seed, **kw)


def _run(compose, imgs):
    return [compose(image=im)["image"] for im in imgs]


# --------------------------------------------------------------------------- albumentations


def test_compose_seed_gives_the_same_outputs_twice_and_another_seed_differs():
    imgs = _imgs()
    a, b, c = _run(_compose(7), imgs), _run(_compose(7), imgs), _run(_compose(8), imgs)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    assert any(not np.array_equal(x, im) for x, im in zip(a, imgs))  # something was blurred


def test_applied_params_carry_recipes_that_regenerate_the_pixels():
    comp = A.Compose([ShakeBlur(max_length_range=(4, 9), n_steps=64, p=1.0), LinearMotionBlur(p=1.0)], seed=3,
                     save_applied_params=True)
    for im in _imgs(4, c=1)[..., 0]:  # grey (H, W)
        out = comp(image=im)
        recs = applied_recipes(out)
        assert [r["family"] for r in recs] == ["shake", "linear"]
        assert recs[0]["seed"] != recs[1]["seed"]  # one Compose seed, two different kernels
        y = im
        for r in recs:
            y = blur.regenerate(json.loads(json.dumps(r)), y)  # through JSON, as a recipe column
        assert np.array_equal(y, out["image"])
    x = _imgs(1)[0].astype(np.float32) / 255  # float32 images too
    out = A.Compose([LinearMotionBlur(p=1.0)], seed=1, save_applied_params=True)(image=x)
    assert np.array_equal(blur.regenerate(applied_recipes(out)[0], x), out["image"])


def test_to_dict_from_dict_round_trip_gives_the_same_transform():
    comp = A.Compose([ShakeBlur(max_length_range=(4, 9), n_steps=64, p=0.6), LinearMotionBlur(angle_range=(10, 20)),
                      SampledMotionBlur(SMALL, p=1.0)], seed=4)
    d = json.loads(json.dumps(A.to_dict(comp)))  # as A.save writes it
    back = A.from_dict(d)
    assert [type(t).__name__ for t in back.transforms] == ["ShakeBlur", "LinearMotionBlur", "SampledMotionBlur"]
    assert back.transforms[1].angle_range == (10.0, 20.0) and back.transforms[0].n_steps == 64
    back.set_random_seed(4)
    imgs = _imgs(3)
    assert all(np.array_equal(x, y) for x, y in zip(_run(comp, imgs), _run(back, imgs)))


def test_replay_compose_replays_the_kernel():
    comp = A.ReplayCompose([ShakeBlur(max_length_range=(4, 9), n_steps=64, p=1.0)])
    comp.set_random_seed(2)
    im = _imgs(1)[0]
    out = comp(image=im)
    again = A.ReplayCompose.replay(out["replay"], image=im)
    assert np.array_equal(again["image"], out["image"])


def test_bad_albumentations_arguments_are_one_line_errors():
    with pytest.raises(ShiftlabError, match="length_range"):
        LinearMotionBlur(length_range=(9, 3))
    with pytest.raises(ShiftlabError, match="ShakeBlur.*exposure"):
        ShakeBlur(exposure_range=(0.5, 2.0))
    with pytest.raises(ShiftlabError, match="RGBA"):
        A.Compose([LinearMotionBlur(p=1.0)], seed=0)(image=np.zeros((8, 8, 4), np.uint8))


# --------------------------------------------------------------------------- torch


def _batch(n=6, c=3, h=16, w=14):
    return torch.from_numpy(_imgs(n, h, w, c).transpose(0, 3, 1, 2).copy())


def test_batch_blur_seed_or_generator_is_deterministic_without_global_rng():
    m = BatchBlur(SMALL, p=0.8)
    x = _batch()
    torch.manual_seed(0)
    np.random.seed(0)
    state, np_state = torch.get_rng_state(), np.random.get_state()[1].copy()
    a, b = m(x, seed=11), m(x, seed=11)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    c, d = m(x, generator=g1), m(x, generator=g2)
    assert torch.equal(a, b) and torch.equal(c, d) and not torch.equal(a, c)
    assert torch.equal(torch.get_rng_state(), state) and np.array_equal(np.random.get_state()[1], np_state)
    e = m(x, generator=g1)  # the generator advanced: a new draw
    assert not torch.equal(c, e)
    with pytest.raises(ShiftlabError, match="either generator or seed"):
        m(x, seed=1, generator=g1)


def test_batch_blur_with_indices_is_onthefly_blur_and_recipes_regenerate():
    m = BatchBlur(SMALL, p=0.7, seed=9)
    x = _batch(8, c=1)
    idx = [3, 40, 7, 2, 9, 11, 12, 5]
    y, recs = m(x, idx, epoch=2, return_recipes=True)
    assert torch.equal(y, OnTheFlyBlur(SMALL, 9, 0.7)(x, idx, 2))
    assert any(r["kernel"] is None for r in recs) and any(r["kernel"] for r in recs)
    for k in range(8):
        hwc = x[k].numpy().transpose(1, 2, 0)
        assert np.array_equal(blur.regenerate(recs[k], hwc), y[k].numpy().transpose(1, 2, 0))
    y2 = m(x[[1, 0]], [idx[1], idx[0]], epoch=2)  # batch-independent
    assert torch.equal(y2, y[[1, 0]])
    with pytest.raises(ShiftlabError, match=r"\(B, C, H, W\)"):
        m(x[0])
    with pytest.raises(ShiftlabError, match="2 sample indices for a batch of 8"):
        m(x, [1, 2])
    with pytest.raises(ShiftlabError, match="uint8 or float"):
        m(x.to(torch.int16))


def test_batch_blur_under_torch_compile_matches_eager():
    m = BatchBlur(SMALL, seed=1)
    x = _batch(4).float() / 255
    cm = torch.compile(m)
    assert torch.equal(cm(x, seed=3), m(x, seed=3))
    assert torch.equal(cm(x, [0, 1, 2, 3], 1), m(x, [0, 1, 2, 3], 1))


class _Items(torch.utils.data.Dataset):
    def __init__(self, x, module):
        self.x, self.m = x, module

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.m(self.x[i : i + 1], [i])[0]


def test_batch_blur_in_a_dataloader_with_workers_matches_no_workers():
    x = _batch(8)
    ds = _Items(x, BatchBlur(SMALL, seed=2))
    ref = torch.cat(list(torch.utils.data.DataLoader(ds, batch_size=3, num_workers=0)))
    got = torch.cat(list(torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2)))
    assert torch.equal(ref, got)
    assert torch.equal(ref, BatchBlur(SMALL, seed=2)(x, list(range(8))))


# --------------------------------------------------------------------------- Hugging Face datasets


def _splits():
    from shiftlab.datasets import splits

    rng = np.random.default_rng(0)
    n = 24
    imgs = rng.integers(0, 256, (n, 12, 10, 3), dtype=np.uint8)
    ds = images.from_arrays(imgs, rng.integers(0, 3, n), ["source"] * 16 + ["target"] * 8, label_names=["a", "b", "c"],
                            groups=[f"g{i}" for i in range(n)], name="toy")
    return splits.build(ds, {"seed": 0, "target_train_fraction": 0.5, "dev_fraction": 0.5,
                             "train_dev_fraction": 0.2, "max_source_rows": None, "beta_source": 1.0,
                             "beta_synthetic": 1.0})


def test_with_blur_serves_the_stage_pixels_for_the_same_seed_and_index():
    sp = _splits()
    stage = blur.make_synthetic(sp, CFG, device="cpu", progress=False)
    el = blur.eligible_parents(sp)
    parents = hfds.Dataset.from_dict({"image": [sp[s][int(r)]["image"] for s, r in zip(el["split"], el["row"])]},
                                     features=hfds.Features({"image": sp["train"].features["image"]}))
    served = with_blur(parents, CFG)
    by_id = {r: i for i, r in enumerate(stage["id"])}
    for copy in (0, 1):
        set_epoch(served, copy)
        rows = served[:]
        for p, pid in enumerate(el["id"]):
            k = by_id[f"{pid}/blur{copy}"]
            assert np.array_equal(rows["image"][p], np.asarray(stage[k]["image"], np.uint8))
            rec = json.loads(rows["blur_recipe"][p])
            assert rec["kernel"] == json.loads(stage[k]["recipe"])["kernel"]
            assert np.array_equal(blur.regenerate(rec, schema.hwc(parents[p]["image"])),
                                  schema.hwc(rows["image"][p]))


def test_with_blur_equals_make_copies_survives_shuffle_and_feeds_a_dataloader():
    ds = images.from_arrays(_imgs(10, 9, 11, 1), [0, 1] * 5, ["source"] * 10, label_names=["a", "b"], name="t")
    copies = blur.make_copies(ds, CFG, device="cpu", progress=False)
    served = with_blur(ds, CFG)
    set_epoch(served, 1)
    want = {r["parent"]: np.asarray(r["image"], np.uint8) for r in copies if r["id"].endswith("/blur1")}
    shuffled = served.shuffle(seed=0)
    set_epoch(shuffled, 1)
    for row in shuffled:
        assert np.array_equal(row["image"], want[row["id"]])
    loader = torch.utils.data.DataLoader(served.select_columns(["image", "shiftlab_index", "id"]), batch_size=4,
                                         num_workers=2)
    got = torch.cat([b["image"] for b in loader])
    assert got.dtype == torch.uint8 and torch.equal(got, torch.from_numpy(np.stack([want[i] for i in ds["id"]])))
    with pytest.raises(ShiftlabError, match="no 'pixels' column"):
        with_blur(ds, CFG, column="pixels")


# --------------------------------------------------------------------------- the command line


REPO_PARAMS = str(__import__("pathlib").Path(__file__).resolve().parent.parent / "params.yaml")


def _cli(*argv):
    from shiftlab import cli

    return cli.main(["--params", REPO_PARAMS, *argv])


def test_cli_blurs_any_saved_dataset_split_or_image_folder(tmp_path, capsys):
    from PIL import Image

    from shiftlab import store

    ds = images.from_arrays(_imgs(5, 8, 9, 3), [0, 1, 0, 1, 0], ["source"] * 5, label_names=["a", "b"], name="t")
    store.save(ds, tmp_path / "plain")
    store.save(hfds.DatasetDict({"train": ds, "val": ds.select([0, 1])}), tmp_path / "dd")
    assert _cli("synth", "blur", "--input", str(tmp_path / "plain")) == 0
    out = store.load(tmp_path / "plain_blur")  # default: beside the input
    assert len(out) == 5 and set(out["parent"]) == set(ds["id"]) and set(out["origin"]) == {"synthetic"}
    from shiftlab import config

    want = blur.make_copies(ds, {**config.section("synth_blur", REPO_PARAMS), "device": "cpu"}, progress=False)
    assert out["id"] == want["id"] and out["recipe"] == want["recipe"]
    for r in out.select([0, 3]):
        rec = json.loads(r["recipe"])
        parent = schema.hwc(ds[rec["index"]]["image"])
        assert np.array_equal(blur.regenerate(rec, parent), schema.hwc(r["image"]))
    assert _cli("synth", "blur", "--input", str(tmp_path / "dd"), "--split", "val", "--out", str(tmp_path / "v")) == 0
    assert len(store.load(tmp_path / "v")) == 2
    assert _cli("synth", "blur", "--input", str(tmp_path / "dd")) == 2
    assert "choose one with --split" in capsys.readouterr().err
    assert _cli("synth", "blur", "--input", str(tmp_path / "dd"), "--split", "nope") == 2
    assert "no such split" in capsys.readouterr().err
    for cls in ("cat", "dog"):  # a plain class folder of images
        (tmp_path / "photos" / cls).mkdir(parents=True)
        for k in range(2):
            Image.fromarray(_imgs(1, 10, 12, 3, seed=k + len(cls))[0]).save(tmp_path / "photos" / cls / f"{k}.png")
    assert _cli("synth", "blur", "--input", str(tmp_path / "photos")) == 0
    got = store.load(tmp_path / "photos_blur")
    assert len(got) == 4 and all(p.startswith("source/") for p in got["parent"])
