"""DistributedDataParallel on CPU (gloo): 2 processes equal single-process training on the global batch.

Each rank draws the same epoch permutation, takes its share of every global batch and
divides its weighted loss by the *global* batch's weight sum times the world size, so
DDP's gradient average is the single-process gradient. Float summation order differs
(per-rank partial sums, then the all-reduce), hence allclose rather than bit-equality.
The model has no BatchNorm and no dropout: per-rank BatchNorm statistics and per-rank
dropout masks are the two documented sources of difference (see trainer's docstring).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp

from shiftlab import store
from shiftlab.train import trainer

from test_trainer import Tiny, cfg, image_splits

# 161 train rows: 5 full global batches of 32 and a last batch of 1 row, so rank 1 also
# exercises the weight-0 stand-in for an empty share.
N_TRAIN = 161
CFG = cfg(epochs=2, batch_size=32, lr=0.1, warmup_epochs=0.5, eval_train_rows=50)


def _worker(rank: int, world: int, rdzv: str, splits_path: str, out_dir: str, result: str) -> None:
    os.environ["LOCAL_RANK"] = str(rank)
    torch.set_num_threads(1)
    tdist.init_process_group("gloo", init_method=f"file://{rdzv}", rank=rank, world_size=world)
    try:
        res = trainer.train(splits_path, CFG, out_dir, model=Tiny, progress=False)
        torch.save({"state": res["model"].state_dict(), "history": res["history"], "rows": res["rows"]},
                   f"{result}.{rank}")
    finally:
        tdist.destroy_process_group()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    s = image_splits(n_train=N_TRAIN)
    store.save(s, tmp / "splits")
    single = trainer.train(tmp / "splits", CFG, tmp / "single", model=Tiny, progress=False)
    mp.spawn(_worker, args=(2, str(tmp / "rdzv"), str(tmp / "splits"), str(tmp / "ddp"), str(tmp / "res")),
             nprocs=2, join=True)
    ranks = [torch.load(f"{tmp / 'res'}.{r}", weights_only=True) for r in range(2)]
    return tmp, single, ranks


def test_ddp_equals_single_process_on_the_global_batch(runs):
    _, single, ranks = runs
    ref = single["model"].state_dict()
    for r in ranks:
        assert r["state"].keys() == ref.keys()
        for k in ref:
            torch.testing.assert_close(r["state"][k], ref[k], rtol=1e-4, atol=1e-5)
    # the model moved: the comparison is not between two untouched initialisations
    init = trainer.build_model(trainer.merge(CFG), 1, 3, Tiny).state_dict()
    assert all(not torch.allclose(init[k], ref[k], atol=1e-3) for k in ref)
    # ranks hold identical parameters (DDP keeps them in sync)
    for k in ref:
        assert torch.equal(ranks[0]["state"][k], ranks[1]["state"][k])


def test_ddp_sharded_evaluation_matches_single_process(runs):
    _, single, ranks = runs
    for r in ranks:
        assert r["rows"] == single["rows"]
        for a, b in zip(r["history"], single["history"]):
            for k in ("loss", "train/loss", "dev/loss", "train_dev/loss"):
                assert a[k] == pytest.approx(b[k], rel=1e-4), k
            for k in ("train/error", "dev/error", "train_dev/error"):
                assert abs(a[k] - b[k]) <= 1.0 / 20 + 1e-9, k  # at most one borderline row may flip


def test_ddp_only_rank0_writes_and_checkpoint_matches(runs):
    tmp, single, ranks = runs
    files = sorted(p.name for p in (tmp / "ddp").iterdir())
    assert files == ["best.pt", "last.pt"]
    last = trainer.load_checkpoint(tmp / "ddp" / "last.pt")
    for k, v in ranks[0]["state"].items():
        assert torch.equal(last["model"][k], v)
    assert last["epoch"] == 2
