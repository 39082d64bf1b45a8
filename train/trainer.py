"""Training with weighted loss, per-epoch error tracking, best-on-dev checkpoints, exact resume, DDP.

:func:`train` fits a model on the ``train`` split of a mismatch ``DatasetDict`` (see
:mod:`shiftlab.datasets.splits`) with the weighted loss of :mod:`shiftlab.train.loss`
(row ``weight`` column: 1 target, beta source / synthetic) and, after every epoch,
measures the *unweighted* error on train (a fixed seeded subset of ``eval_train_rows``
rows, eval mode, no augmentation), train_dev and dev -- the three numbers of the book's
bias / variance / data-mismatch decomposition. It keeps

* ``best.pt`` in ``out_dir``: the model of the epoch with the lowest **dev** error (the
  earliest on ties; the test split is never looked at during training);
* ``last.pt`` in ``checkpoint_dir`` (default ``out_dir``) after every epoch: model,
  optimizer, LR scheduler, completed epochs, RNG states, best-so-far and history, all as
  state dicts / plain containers, written atomically, read back only with
  ``torch.load(..., weights_only=True)``.

**Resume**: with ``resume: true`` a compatible ``last.pt`` (same data, same training
options; runtime options such as device, threads or compile may differ) is continued
from its next epoch. All randomness is a function of (seed, epoch, ...): the row order
(:func:`shiftlab.train.data.epoch_permutation`), augmentation (per sample index) and
torch's generator (reseeded at the start of every epoch from (seed, epoch, rank), for
dropout), so an interrupted-and-resumed run computes exactly the same thing as an
uninterrupted one (bit-identical on CPU; on CUDA as far as its kernels are deterministic,
see ``deterministic``). A last.pt written with other options is an error, never silently
overwritten. The caller's global RNG state is restored when :func:`train` returns.

**Devices**: ``device: auto`` takes CUDA when available. On CUDA: bf16 autocast
(``amp``), channels_last (``channels_last``), optional ``torch.compile``, pinned host
memory with ``non_blocking`` copies (or the whole split on the GPU when small); on CPU
the same code path in float32.

**Distributed** (``torchrun --nproc_per_node=N -m shiftlab.train.trainer ...``, or
:func:`train` called inside an initialised process group): backend nccl on CUDA, gloo on
CPU; ``batch_size`` is the *global* batch: every rank draws the same epoch permutation and
takes its share of each global batch (:class:`shiftlab.train.data.Loader`); the loss is
normalised by the global batch's weight sum, so DistributedDataParallel's gradient
average equals the single-process gradient of the global batch (exactly in real
arithmetic; float summation order differs). Two things break that equality and are
documented rather than hidden: BatchNorm statistics are per rank unless ``sync_bn`` (CUDA)
is set, and dropout masks depend on the rank. Evaluation passes are sharded and summed
with ``all_reduce``; only rank 0 writes checkpoints, logs and progress bars.

:func:`predict` turns a checkpoint (or a :func:`train` result) into per-split arrays for
:mod:`shiftlab.train.evaluate`; :func:`main_train` is the pipeline entry (train, predict
with the best checkpoint, write metrics / predictions, one summary line).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from shiftlab import paramschema, seeding, store
from shiftlab.datasets import schema
from shiftlab.errors import ShiftlabError
from shiftlab.train.data import Loader, SplitData, load_splits
from shiftlab.train.frontend import Frontend
from shiftlab.train.loss import per_row_cross_entropy, weighted_cross_entropy

__all__ = [
    "DEFAULTS", "merge", "train", "predict", "load_checkpoint", "save_predictions", "load_predictions",
    "main_train", "main", "resolve_device", "CHECKPOINT_FORMAT", "parse_set",
]

CHECKPOINT_FORMAT = "shiftlab.trainer/1"
BEST, LAST = "best.pt", "last.pt"

#: the ``train`` params section (one per modality in params.yaml, e.g. train_images / train_audio): the fields
#: of :class:`shiftlab.paramschema.Train` (every knob's type, range and default)
DEFAULTS: dict[str, Any] = paramschema.defaults(paramschema.Train)

#: options that may differ between an interrupted run and its resumption
RUNTIME_KEYS = ("device", "num_threads", "compile", "eval_batch_size", "data_on_device", "resume", "checkpoint_dir")

# --------------------------------------------------------------------------- config


def merge(cfg: Mapping[str, Any] | None, where: str = "train") -> dict[str, Any]:
    """DEFAULTS updated by ``cfg`` and validated by :class:`shiftlab.paramschema.Train` (the ``frontend``
    sub-section merged over its own defaults); errors name the key (``train.lr: ...``)."""
    return paramschema.merge(paramschema.Train, cfg, where)


# --------------------------------------------------------------------------- devices, processes


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto``: CUDA (this process's local rank) when available, else CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ShiftlabError(f"train.device: {name} requested but CUDA is not available")
        if name == "cuda":
            name = f"cuda:{local_rank % max(1, torch.cuda.device_count())}"
    return torch.device(name)


class _Dist:
    """This process's place in a (possibly trivial) process group."""

    def __init__(self):
        import torch.distributed as dist

        self.dist = dist
        self.enabled = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if self.enabled else 0
        self.world = dist.get_world_size() if self.enabled else 1
        self.local_rank = int(os.environ.get("LOCAL_RANK", self.rank if self.enabled else 0))

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self):
        if self.enabled:
            self.dist.barrier()

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            self.dist.all_reduce(t, op=self.dist.ReduceOp.SUM)
        return t


def init_distributed(device: str = "auto") -> _Dist:
    """Join the process group that torchrun describes (WORLD_SIZE > 1), if not joined yet.

    Backend nccl when the run uses CUDA, gloo otherwise. Without torchrun's environment
    this is a single process.
    """
    import torch.distributed as dist

    if dist.is_available() and not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return _Dist()


# --------------------------------------------------------------------------- model, optimizer


def build_model(cfg: Mapping[str, Any], in_channels: int, num_classes: int,
                model: nn.Module | Callable[..., nn.Module] | None = None,
                input_size: Sequence[int] | None = None) -> nn.Module:
    """The network: ``model`` if a module; ``model(in_channels=, num_classes=)`` if a factory
    (called with torch's generator seeded from ``seed`` inside ``fork_rng``); otherwise
    ``models.create(cfg.model, in_channels=, num_classes=, seed=, **cfg.model_kwargs)``, with
    ``input_size`` = the model input's (H, W) unless ``model_kwargs`` sets it (the attention
    models plan their mask depth from it)."""
    if isinstance(model, nn.Module):
        return model
    if model is not None:
        if not callable(model):
            raise ShiftlabError(f"train: model must be an nn.Module, a factory or None, got {type(model).__name__}")
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(seeding.sample_seed(cfg["seed"], 0, "trainer", "init"))
            net = model(in_channels=in_channels, num_classes=num_classes)
        if not isinstance(net, nn.Module):
            raise ShiftlabError(f"train: the model factory returned {type(net).__name__}, not an nn.Module")
        return net
    try:
        from shiftlab.train import models
    except ImportError as e:  # pragma: no cover - registry written separately
        raise ShiftlabError(f"train.model: the model registry shiftlab.train.models is not available ({e})") from None
    kwargs = dict(cfg["model_kwargs"])
    if input_size is not None and "input_size" not in kwargs and "input_size" in models.describe(cfg["model"]):
        kwargs["input_size"] = [int(v) for v in input_size]
    return models.create(cfg["model"], in_channels=in_channels, num_classes=num_classes, seed=cfg["seed"], **kwargs)


def make_optimizer(net: nn.Module, cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for _, p in net.named_parameters():
        if not p.requires_grad:
            continue
        (decay if cfg["decay_norm_and_bias"] or p.ndim > 1 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg["weight_decay"]}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    if cfg["optimizer"] == "sgd":
        return torch.optim.SGD(groups, lr=cfg["lr"], momentum=cfg["momentum"],
                               nesterov=cfg["nesterov"] and cfg["momentum"] > 0)
    return torch.optim.AdamW(groups, lr=cfg["lr"], betas=tuple(cfg["betas"]))


def lr_factor(step: int, total: int, warmup: int, schedule: str, min_ratio: float) -> float:
    """Multiplier of the peak lr at optimizer step ``step`` (0-based) of ``total``.

    Linear warmup ``(step + 1) / warmup`` for the first ``warmup`` steps, then constant or
    a half cosine from 1 down to ``min_ratio`` at the last step.
    """
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    span = max(1, total - warmup - 1)
    progress = min(1.0, (step - warmup) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(opt: torch.optim.Optimizer, cfg: Mapping[str, Any], steps_per_epoch: int):
    total = cfg["epochs"] * steps_per_epoch
    warmup = int(round(cfg["warmup_epochs"] * steps_per_epoch))
    sched, ratio = cfg["schedule"], cfg["min_lr_ratio"]
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total, warmup, sched, ratio))


# --------------------------------------------------------------------------- checkpoints


def _save(obj: dict, path: Path) -> None:
    with store.atomic_file(path, "wb") as f:
        torch.save(obj, f)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """A trainer checkpoint, read with ``weights_only=True`` (never unpickles code)."""
    path = Path(path)
    if not path.is_file():
        raise ShiftlabError(f"{path}: no checkpoint here")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file, or something that is not a plain checkpoint
        raise ShiftlabError(f"{path}: not a readable trainer checkpoint ({type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''})") from None
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise ShiftlabError(f"{path}: not a shiftlab trainer checkpoint (format {CHECKPOINT_FORMAT})")
    return ck


def _fingerprint(cfg: Mapping[str, Any], train: SplitData, custom_model: bool) -> str:
    """Digest of what determines the training run: options (minus runtime keys) and data."""
    c = {k: v for k, v in cfg.items() if k not in RUNTIME_KEYS}
    if custom_model:
        c["model"], c["model_kwargs"] = "<custom>", {}
    h = hashlib.sha256(json.dumps(c, sort_keys=True, default=str).encode())
    h.update("\n".join(train.id.tolist()).encode())
    h.update(train.w.numpy().tobytes())
    h.update(train.y.numpy().tobytes())
    h.update(hashlib.sha256(train.x.contiguous().numpy().tobytes()).digest())
    return h.hexdigest()[:32]


# --------------------------------------------------------------------------- passes


def resolve_epoch_rows(value, train: SplitData) -> int | None:
    """Rows per epoch for the ``epoch_rows`` option: None (all rows), an integer, or "real"."""
    if value is None:
        return None
    if value == "real":  # the real rows training draws (rows of loss weight 0 are never drawn)
        n = int(((train.origin != "synthetic") & (train.w.cpu().numpy() > 0)).sum())
        if n == 0:
            raise ShiftlabError("train.epoch_rows: real, but the train split has no real rows")
        return n
    return int(value)


def _autocast(device: torch.device, amp: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp)


@torch.no_grad()
def _forward_all(net: nn.Module, fe: Frontend, loader: Loader, amp: bool, channels_last: bool,
                 dist: _Dist | None = None, collect: bool = False):
    """Eval-mode pass over ``loader`` (this rank's share of a split, in order).

    Returns ``(errors, rows, weighted loss sum, weight sum)`` summed over ranks, and the
    float32 logits of the rows in order when ``collect`` (single process only).
    """
    was = net.training
    net.eval()
    device = loader.device
    acc = torch.zeros(4, dtype=torch.float64, device=device)
    logits_all = []
    for b in loader.epoch(0):
        inp = fe(b.x)
        if channels_last:
            inp = inp.contiguous(memory_format=torch.channels_last)
        with _autocast(device, amp):
            logits = net(inp)
        logits = logits.float()
        l = per_row_cross_entropy(logits, b.y)
        acc += torch.stack([(logits.argmax(1) != b.y).sum().double(), torch.tensor(len(b.y), device=device,
                            dtype=torch.float64), (b.w * l).sum().double(), b.w.sum().double()])
        if collect:
            logits_all.append(logits.cpu())
    if dist is not None:
        dist.sum(acc)
    net.train(was)
    e, n, wl, w = acc.tolist()
    out = (e, n, wl, w)
    if collect:
        k = len(loader.data.label_names)
        return out, (torch.cat(logits_all) if logits_all else torch.zeros((0, k))).numpy()
    return out


def _eval_subset(train: SplitData, k: int | None, seed: int) -> SplitData:
    if k is None or k >= len(train):
        return train
    rows = np.sort(seeding.sample_rng(seed, 0, "trainer", "eval_train_rows").choice(len(train), k, replace=False))
    return train.take(rows)


def _rng_state(device: torch.device) -> dict:
    st = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        st["cuda"] = torch.cuda.get_rng_state(device)
    return st


def _set_rng_state(st: Mapping[str, Any], device: torch.device) -> None:
    if "torch" in st:
        torch.set_rng_state(st["torch"])
    if device.type == "cuda" and "cuda" in st:
        torch.cuda.set_rng_state(st["cuda"], device)


def _seed_epoch(seed: int, epoch: int, rank: int, device: torch.device) -> None:
    """Reseed torch's generators for one epoch (dropout and any other in-model randomness)."""
    torch.random.default_generator.manual_seed(seeding.sample_seed(seed, epoch, "trainer", "torch", rank))
    if device.type == "cuda":
        torch.cuda.manual_seed(seeding.sample_seed(seed, epoch, "trainer", "cuda", rank))


def _fmt_pct(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:.2f}%"


# --------------------------------------------------------------------------- train


def train(
    splits,
    cfg: Mapping[str, Any] | None,
    out_dir: str | os.PathLike,
    live=None,
    *,
    model: nn.Module | Callable[..., nn.Module] | None = None,
    augment: Callable[[torch.Tensor, np.ndarray, int], torch.Tensor] | None = None,
    on_epoch_end: Callable[[int, dict], None] | None = None,
    progress: bool = True,
) -> dict:
    """Train on ``splits['train']``, select on ``splits['dev']``; returns a result dict.

    Args:
        splits: a ``DatasetDict`` (or a path to one) with ``train`` and ``dev`` (``train_dev``
            optional, ``test`` ignored), columns as in :mod:`shiftlab.datasets.schema`.
        cfg: the ``train`` section (see :data:`DEFAULTS`); validated by :func:`merge`.
        out_dir: receives ``best.pt`` (and ``last.pt`` unless ``checkpoint_dir`` is set).
        live: a ``dvclive.Live`` (rank 0 logs ``loss``, ``lr``, ``<split>/error`` and
            ``<split>/loss`` every epoch, one step per epoch), or None.
        model: overrides ``cfg.model``: an ``nn.Module`` (trained in place) or a factory
            ``f(in_channels=, num_classes=) -> nn.Module``.
        augment: on-the-fly synthesis, ``augment(x, sample_index, epoch) -> x`` on each raw
            training batch (uint8 images (N, C, H, W) / float32 audio (N, L) on the device;
            same shape and dtype back), before the frontend; never on evaluation passes.
            ``sample_index`` (int64 numpy) are the rows' positions in the train split, so
            the hook can decide per row and seed per (sample index, epoch).
        on_epoch_end: ``f(epoch, record)`` after each epoch's checkpoint is written
            (``epoch`` 1-based; raising here interrupts the run like a kill would).
        progress: a tqdm bar per epoch (rank 0).

    Returns ``{"model", "frontend", "history", "best_epoch", "best_dev_error",
    "best_checkpoint", "last_checkpoint", "resumed_from", "epochs", "seconds",
    "label_names", "rows"}``; ``model`` holds the last epoch's weights (the best ones
    are in ``best.pt``).
    """
    t0 = time.perf_counter()
    cfg = merge(cfg)
    if isinstance(splits, (str, os.PathLike)):
        splits = store.load(splits, "split datasets")
    for need in ("train", "dev"):
        if need not in splits:
            raise ShiftlabError(f"splits: no {need} split (have: {', '.join(splits) or 'none'}); "
                                f"training needs train, and dev to select the best epoch")
    dist = init_distributed(cfg["device"])
    device = resolve_device(cfg["device"], dist.local_rank)
    if cfg["num_threads"]:
        torch.set_num_threads(cfg["num_threads"])
    cuda = device.type == "cuda"
    amp = cuda if cfg["amp"] == "auto" else bool(cfg["amp"])
    channels_last = cuda if cfg["channels_last"] == "auto" else bool(cfg["channels_last"])
    if cuda:
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = not cfg["deterministic"]
    if cfg["deterministic"]:
        torch.use_deterministic_algorithms(True, warn_only=True)

    fcfg = cfg["frontend"]
    audio_length = None
    if schema.modality(splits["train"]) == "audio" and fcfg["audio_seconds"] is not None:
        rate = int(splits["train"][0]["sampling_rate"])
        audio_length = max(1, int(round(fcfg["audio_seconds"] * rate)))
    data = load_splits(splits, ("train", "train_dev", "dev"), cfg["rows"], audio_length)
    tr = data["train"]
    names = tr.label_names
    active = tr.w.cpu().numpy() > 0  # statistics of the rows training draws (weight-0 rows are never drawn)
    fe = Frontend.fit(tr if active.all() else tr.take(np.flatnonzero(active)), fcfg, cfg["seed"], device)
    in_channels = fe.in_channels
    net = build_model(cfg, in_channels, len(names), model, input_size=fe.output_shape()[1:]).to(device)
    custom = model is not None
    meta = {
        "model": None if custom else cfg["model"], "model_kwargs": {} if custom else dict(cfg["model_kwargs"]),
        "in_channels": in_channels, "num_classes": len(names), "label_names": list(names),
        "modality": tr.modality, "frontend": fe.state(), "cfg": copy.deepcopy(cfg),
        "input_shape": list(fe.output_shape()),
    }
    fp = _fingerprint(cfg, tr, custom)
    if augment is None:  # audio: log-mel once per row, not once per epoch (an augment hook needs the waveforms)
        tr = fe.precompute(tr)
        data = {s: (tr if s == "train" else fe.precompute(d)) for s, d in data.items()}
    epoch_rows = resolve_epoch_rows(cfg["epoch_rows"], tr)
    loader = Loader(tr, cfg["batch_size"], device, shuffle=True, seed=cfg["seed"], rank=dist.rank,
                    world_size=dist.world, drop_last=cfg["drop_last"], data_on_device=cfg["data_on_device"],
                    epoch_rows=epoch_rows)
    steps = len(loader)
    if steps == 0:
        raise ShiftlabError(f"train.batch_size: {cfg['batch_size']} with drop_last leaves no batch "
                            f"({len(tr)} train rows)")
    if dist.enabled and cfg["sync_bn"]:
        if not cuda:
            raise ShiftlabError("train.sync_bn: SyncBatchNorm works on CUDA only; set sync_bn: false on CPU "
                                "(BatchNorm statistics are then per rank)")
        net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    opt = make_optimizer(net, cfg)
    sched = make_scheduler(opt, cfg, steps)

    out_dir = Path(out_dir)
    ck_dir = Path(cfg["checkpoint_dir"]) if cfg["checkpoint_dir"] else out_dir
    last_path, best_path = ck_dir / LAST, out_dir / BEST
    history: list[dict] = []
    best = {"epoch": 0, "dev_error": None}
    best_record: dict = {}
    best_state: dict | None = None
    start = 0
    if cfg["resume"] and last_path.is_file():
        ck = load_checkpoint(last_path)
        if ck.get("fingerprint") != fp:
            raise ShiftlabError(
                f"{last_path}: written by a run with other data or training options; delete it, "
                f"set train.resume: false, or use another checkpoint_dir")
        net.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        start = int(ck["epoch"])
        history = list(ck["history"])
        best = dict(ck["best"])
        best_state, best_record = ck.get("best_model"), dict(ck.get("best_metrics") or {})
        _set_rng_state(ck["rng"], device)
        if dist.main and best_state is not None:  # out_dir may have been cleaned (DVC removes outs)
            have = None
            if best_path.is_file():
                with contextlib.suppress(ShiftlabError):
                    have = load_checkpoint(best_path)
            if have is None or have.get("fingerprint") != fp or have.get("epoch") != best["epoch"]:
                _save({"format": CHECKPOINT_FORMAT, "kind": "best", "model": best_state, "epoch": best["epoch"],
                       "metrics": best_record, "meta": meta, "fingerprint": fp}, best_path)
    resumed_from = start

    train_net: nn.Module = net
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        train_net = DDP(net, device_ids=[device.index] if cuda else None)
    eval_net: nn.Module = net
    if cfg["compile"]:
        train_net = torch.compile(train_net)
        eval_net = torch.compile(net) if dist.enabled else train_net

    eval_sets = {"train": _eval_subset(tr, cfg["eval_train_rows"], cfg["seed"])}
    for s in ("train_dev", "dev"):
        if s in data and len(data[s]):
            eval_sets[s] = data[s]
    if "dev" not in eval_sets:
        raise ShiftlabError("splits: dev split is empty; it is needed to select the best epoch")
    eval_loaders = {s: Loader(d, cfg["eval_batch_size"], device, rank=dist.rank, world_size=dist.world,
                              data_on_device=cfg["data_on_device"]) for s, d in eval_sets.items()}

    from tqdm.auto import tqdm

    cuda_devices = [device.index] if cuda else []
    epoch_seconds: list[float] = []  # this process's epochs (not the resumed ones)
    with torch.random.fork_rng(devices=cuda_devices):
        for epoch in range(start, cfg["epochs"]):
            _seed_epoch(cfg["seed"], epoch, dist.rank, device)
            train_net.train()
            bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{cfg['epochs']}", disable=not (progress and dist.main),
                       leave=True, dynamic_ncols=True, file=sys.stderr)
            acc = torch.zeros(2, dtype=torch.float64, device=device)  # sum(w * l), sum(w) over the epoch
            te = time.perf_counter()
            for i, b in enumerate(loader.epoch(epoch)):
                x = b.x
                if augment is not None:
                    y = augment(x, b.sample_index, epoch)
                    if not isinstance(y, torch.Tensor) or y.shape != x.shape or y.dtype != x.dtype:
                        raise ShiftlabError(
                            f"train: augment must return a tensor of shape {tuple(x.shape)} and dtype {x.dtype}, got "
                            f"{getattr(y, 'shape', type(y).__name__)} {getattr(y, 'dtype', '')}")
                    x = y
                inp = fe(x, b.sample_index, epoch, train=True)
                if channels_last:
                    inp = inp.contiguous(memory_format=torch.channels_last)
                with _autocast(device, amp):
                    logits = train_net(inp)
                loss = weighted_cross_entropy(logits, b.y, b.w, label_smoothing=cfg["label_smoothing"],
                                              denominator=b.denominator, scale=dist.world)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg["grad_clip"] is not None:
                    nn.utils.clip_grad_norm_(net.parameters(), cfg["grad_clip"])
                opt.step()
                sched.step()
                with torch.no_grad():
                    acc[0] += loss.detach().double() * b.denominator.double() / dist.world
                    acc[1] += b.denominator.double() / dist.world
                bar.update(1)
                if progress and dist.main and (i % 50 == 0 or i == steps - 1):
                    bar.set_postfix_str(f"loss {float(loss.detach()):.4f}", refresh=False)
            dist.sum(acc)
            train_seconds = time.perf_counter() - te
            # wall time is printed, never stored: checkpoints, DVCLive files and metrics stay
            # byte-identical between reruns with the same params and seed
            epoch_seconds.append(train_seconds)
            rec: dict[str, Any] = {"epoch": epoch + 1, "lr": float(opt.param_groups[0]["lr"]),
                                   "loss": float(acc[0] / acc[1]) if float(acc[1]) > 0 else 0.0}
            for s, ld in eval_loaders.items():
                e, n, wl, w = _forward_all(eval_net, fe, ld, amp, channels_last, dist)
                rec[f"{s}/error"] = e / n if n else float("nan")
                rec[f"{s}/loss"] = wl / w if w > 0 else float("nan")
            history.append(rec)
            improved = best["dev_error"] is None or rec["dev/error"] < best["dev_error"]
            if improved:
                best = {"epoch": epoch + 1, "dev_error": rec["dev/error"]}
            if dist.main:
                state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
                if improved:
                    best_state, best_record = state, dict(rec)
                    _save({"format": CHECKPOINT_FORMAT, "kind": "best", "model": state, "epoch": epoch + 1,
                           "metrics": best_record, "meta": meta, "fingerprint": fp}, best_path)
                _save({"format": CHECKPOINT_FORMAT, "kind": "last", "model": state, "optimizer": opt.state_dict(),
                       "scheduler": sched.state_dict(), "epoch": epoch + 1, "rng": _rng_state(device),
                       "best": dict(best), "best_model": best_state, "best_metrics": best_record,
                       "history": list(history), "meta": meta, "fingerprint": fp}, last_path)
                if live is not None:
                    for k, v in rec.items():
                        if k != "epoch" and math.isfinite(v):
                            live.log_metric(k, v)
                    live.next_step()
                bar.set_postfix_str(
                    f"loss {rec['loss']:.4f}, train {_fmt_pct(rec['train/error'])}, "
                    f"train_dev {_fmt_pct(rec.get('train_dev/error'))}, dev {_fmt_pct(rec['dev/error'])}"
                    + (" *" if improved else ""))
            bar.close()
            dist.barrier()
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, rec)
    return {
        "model": net, "frontend": fe, "history": history, "best_epoch": best["epoch"],
        "best_dev_error": best["dev_error"], "best_checkpoint": str(best_path), "last_checkpoint": str(last_path),
        "resumed_from": resumed_from, "epochs": cfg["epochs"], "seconds": time.perf_counter() - t0,
        "epoch_seconds": epoch_seconds,
        "label_names": list(names), "rows": {s: len(d) for s, d in data.items()}, "meta": meta,
        "steps": steps * cfg["epochs"], "epoch_rows": len(tr) if epoch_rows is None else epoch_rows,
    }


# --------------------------------------------------------------------------- predict


def predict(
    model_or_ckpt,
    splits,
    *,
    names: Sequence[str] | None = None,
    model: nn.Module | Callable[..., nn.Module] | None = None,
    rows: str | None = None,
    device: str = "auto",
    batch_size: int = 512,
    amp: bool | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """Per-split predictions for :mod:`shiftlab.train.evaluate`.

    Args:
        model_or_ckpt: a checkpoint path (``best.pt`` / ``last.pt``) or the dict returned
            by :func:`train`.
        splits: ``DatasetDict`` or path; every split in ``names`` (default: those of
            train, train_dev, dev, test and the evaluation-only check splits of
            ``schema.CHECK_SPLITS``, e.g. codrivers, that exist) is predicted.
        model: for checkpoints of a custom model: the module or factory to load into.
        rows: row selection for train/train_dev (default: the one the model was trained with).
        amp: bf16 autocast (default: on CUDA).

    Returns ``{split: {"logits" float32 (N, K), "probs" float32 (N, K), "pred" int64,
    "y" int64, "label" str (true label names), "id", "domain", "origin", "group" str,
    "weight" float32}}`` in the split's row order (after selection). Label names are
    ``checkpoint["meta"]["label_names"]`` (= ``schema.label_names(splits["train"])``).
    """
    if isinstance(model_or_ckpt, Mapping) and "frontend" in model_or_ckpt and "model" in model_or_ckpt:
        net, fe, meta = model_or_ckpt["model"], model_or_ckpt["frontend"], model_or_ckpt["meta"]
    elif isinstance(model_or_ckpt, (str, os.PathLike)):
        ck = load_checkpoint(model_or_ckpt)
        meta = ck["meta"]
        fe = Frontend.from_state(meta["frontend"])
        if meta["model"] is None and model is None:
            raise ShiftlabError(f"{model_or_ckpt}: trained with a custom model; pass model= to rebuild it")
        cfg = dict(meta["cfg"])
        shape = meta.get("input_shape")
        net = build_model(cfg, meta["in_channels"], meta["num_classes"], model,
                          input_size=None if not shape else shape[1:])
        net.load_state_dict(ck["model"])
    else:
        raise ShiftlabError("predict: model_or_ckpt must be a checkpoint path or the result of train()")
    if isinstance(splits, (str, os.PathLike)):
        splits = store.load(splits, "split datasets")
    dev = resolve_device(device)
    net = net.to(dev)
    amp = (dev.type == "cuda") if amp is None else bool(amp)
    rows = rows or meta["cfg"]["rows"]
    names = [s for s in (names or (*schema.SPLITS, *schema.CHECK_SPLITS)) if s in splits]
    length = fe.input_shape[0] if fe.modality == "audio" else None
    data = load_splits(splits, names if "train" in names else ["train", *names], rows, length)
    if data["train"].label_names != list(meta["label_names"]):
        raise ShiftlabError(f"predict: the splits' labels {data['train'].label_names} differ from the model's "
                            f"{list(meta['label_names'])}")
    out = {}
    with torch.random.fork_rng(devices=[dev.index] if dev.type == "cuda" else []):
        for s in names:
            d = fe.precompute(data[s])
            _, logits = _forward_all(net, fe, Loader(d, batch_size, dev), amp, False, None, collect=True)
            z = torch.from_numpy(logits)
            out[s] = {
                "logits": logits.astype(np.float32), "probs": torch.softmax(z, 1).numpy().astype(np.float32),
                "pred": logits.argmax(1).astype(np.int64) if len(logits) else np.zeros(0, np.int64),
                "y": d.y.numpy().astype(np.int64),
                "label": np.asarray(d.label_names, dtype=str)[d.y.numpy()] if len(d) else np.zeros(0, str),
                "id": d.id.astype(str), "domain": d.domain.astype(str), "origin": d.origin.astype(str),
                "group": d.group.astype(str), "weight": d.w.numpy().astype(np.float32),
            }
    return out


def save_predictions(path: str | os.PathLike, preds: Mapping[str, Mapping[str, np.ndarray]],
                     label_names: Sequence[str]) -> Path:
    """Write :func:`predict`'s output atomically as one ``.npz`` (keys ``split/field``)."""
    arrays = {"label_names": np.asarray(list(label_names), dtype=str)}
    for s, d in preds.items():
        for k, v in d.items():
            arrays[f"{s}/{k}"] = np.asarray(v)
    path = Path(path)
    with store.atomic_file(path, "wb") as f:
        np.savez_compressed(f, **arrays)
    return path


def load_predictions(path: str | os.PathLike) -> tuple[dict[str, dict[str, np.ndarray]], list[str]]:
    """``(predictions, label_names)`` from :func:`save_predictions` (no pickle)."""
    path = Path(path)
    if not path.is_file():
        raise ShiftlabError(f"{path}: no predictions file here")
    out: dict[str, dict[str, np.ndarray]] = {}
    with np.load(path, allow_pickle=False) as z:
        names = [str(x) for x in z["label_names"]]
        for key in z.files:
            if "/" in key:
                s, k = key.split("/", 1)
                out.setdefault(s, {})[k] = z[key]
    return out, names


# --------------------------------------------------------------------------- pipeline entry


def main_train(cfg: Mapping[str, Any] | None, splits_path: str | os.PathLike, out_dir: str | os.PathLike,
               metrics_path: str | os.PathLike | None = None, *, live_dir: str | os.PathLike | None = None,
               predictions_path: str | os.PathLike | None = None, progress: bool = True,
               model=None, augment=None) -> dict | None:
    """Train, predict every split with ``best.pt``, write metrics / predictions, print a line.

    * ``out_dir``: ``best.pt`` and (unless ``checkpoint_dir``) ``last.pt``;
    * ``metrics_path``: JSON (``dvc metrics``): ``best_epoch``, ``best_dev_error``,
      ``epochs``, ``steps``, ``epoch_rows``, ``rows.<split>``, ``error.<split>`` of the best model on
      train / train_dev / dev / test and the check splits present (e.g. codrivers: predicted
      only here, with ``best.pt``; training and the choice of the checkpoint never read them)
      (plain error rates; confidence intervals and the decomposition are
      :mod:`shiftlab.train.evaluate`'s job);
    * ``live_dir``: DVCLive directory (per-epoch metrics and plots), resumed with the run;
    * ``predictions_path``: :func:`save_predictions` of the best model on every split.

    Under torchrun every rank trains; rank 0 alone predicts and writes. Returns the
    metrics dict on rank 0, None elsewhere.
    """
    t0 = time.perf_counter()
    cfg = merge(cfg)
    if isinstance(splits_path, (str, os.PathLike)):
        splits = store.load(splits_path, "split datasets", "run the split stage first")
    else:  # an in-memory DatasetDict (e.g. the splits with synthetic rows attached)
        splits = splits_path
    dist = init_distributed(cfg["device"])
    live = None
    if live_dir is not None and dist.main:
        from dvclive import Live

        ck_dir = Path(cfg["checkpoint_dir"]) if cfg["checkpoint_dir"] else Path(out_dir)
        resuming = cfg["resume"] and (ck_dir / LAST).is_file()
        live = Live(dir=str(live_dir), resume=resuming, save_dvc_exp=False, dvcyaml=False)
        live.log_params({"train": {k: v for k, v in cfg.items() if k != "frontend"}, "frontend": cfg["frontend"]})
    try:
        res = train(splits, cfg, out_dir, live, model=model, augment=augment, progress=progress)
    finally:
        if live is not None:
            live.end()
    if not dist.main:
        dist.barrier()  # wait for rank 0's predictions before the process group goes away
        return None
    preds = predict(res["best_checkpoint"], splits, model=model, device=cfg["device"],
                    batch_size=cfg["eval_batch_size"])
    errors = {s: float(np.mean(p["pred"] != p["y"])) if len(p["y"]) else None for s, p in preds.items()}
    metrics = {
        "best_epoch": res["best_epoch"], "best_dev_error": res["best_dev_error"], "epochs": res["epochs"],
        "rows": {s: int(len(p["y"])) for s, p in preds.items()},
        "error": errors, "model": res["meta"]["model"] or "<custom>", "rows_selection": cfg["rows"],
        "steps": res["steps"], "epoch_rows": res["epoch_rows"],
    }
    # the run's results (metrics and predictions) commit together: an error or interrupt between
    # them leaves both old (the checkpoints in out_dir are the resumable working state)
    targets = [t for t in (metrics_path, predictions_path) if t is not None]
    if targets:
        with store.outputs(*targets) as tx:
            if metrics_path is not None:
                tx.write_json(metrics_path, metrics)
            if predictions_path is not None:
                save_predictions(tx[predictions_path], preds, res["label_names"])
    dist.barrier()
    resumed = f", resumed after epoch {res['resumed_from']}" if res["resumed_from"] else ""
    print(
        f"train: {metrics['model']}, {res['epochs']} epochs (best {res['best_epoch']}{resumed}), "
        f"dev error {_fmt_pct(errors.get('dev'))}, train {_fmt_pct(errors.get('train'))}, "
        f"train_dev {_fmt_pct(errors.get('train_dev'))}; {res['rows']['train']:,} train rows ({cfg['rows']}), "
        f"{res['epoch_rows']:,} per epoch, {res['steps']:,} steps, last epoch {res['epoch_seconds'][-1] if res['epoch_seconds'] else 0:.1f} s -> {out_dir} "
        f"[{time.perf_counter() - t0:.1f} s]"
    )
    return metrics


def parse_set(items: Sequence[str]) -> dict:
    """``--set KEY=VALUE`` overrides as a nested mapping (``frontend.hflip=true`` -> ``{"frontend": {"hflip": True}}``).

    VALUE is read as YAML (``3`` an int, ``null`` None, ``[1, 2]`` a list). A dotted key that runs
    through a key set to a plain value (``epochs=3 epochs.x=1``, in either order) is an error.
    Used by ``python -m shiftlab.train.trainer`` and ``bench/anchor.py``.
    """
    import yaml

    out: dict = {}
    for it in items:
        if "=" not in it:
            raise ShiftlabError(f"--set {it}: expected KEY=VALUE (e.g. epochs=3 or frontend.hflip=true)")
        key, val = it.split("=", 1)
        node = out
        parts = key.split(".")
        if not all(parts):
            raise ShiftlabError(f"--set {it}: empty name in key {key!r}")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ShiftlabError(f"--set {it}: {p} is set to a value and used as a section")
        if isinstance(node.get(parts[-1]), dict):
            raise ShiftlabError(f"--set {it}: {parts[-1]} is used as a section and set to a value")
        node[parts[-1]] = yaml.safe_load(val)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m shiftlab.train.trainer`` / ``torchrun ... -m shiftlab.train.trainer``."""
    p = argparse.ArgumentParser(prog="python -m shiftlab.train.trainer",
                                description="Train a model on mismatch splits (works under torchrun).")
    p.add_argument("--splits", required=True, help="split DatasetDict directory (e.g. data/splits/images)")
    p.add_argument("--out", required=True, help="output directory for best.pt / last.pt")
    p.add_argument("--params", help="YAML file holding the train section (default: built-in defaults)")
    p.add_argument("--section", default="train", help="section of --params to use (default train)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override an option")
    p.add_argument("--metrics", help="metrics JSON path")
    p.add_argument("--predictions", help="predictions .npz path")
    p.add_argument("--live", help="DVCLive directory")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    try:
        cfg: dict = {}
        if args.params:
            import yaml

            path = Path(args.params)
            if not path.is_file():
                raise ShiftlabError(f"{path}: params file not found")
            doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            if args.section not in doc:
                raise ShiftlabError(f"{path}: no section {args.section}")
            cfg = dict(doc[args.section] or {})
        cfg = paramschema.deep_merge(cfg, parse_set(args.set))
        main_train(merge(cfg, args.section), args.splits, args.out, args.metrics, live_dir=args.live,
                   predictions_path=args.predictions, progress=not args.no_progress)
    except ShiftlabError as e:
        print(f"shiftlab: error: {e}", file=sys.stderr)
        return 2
    finally:
        import torch.distributed as tdist

        if tdist.is_available() and tdist.is_initialized():
            tdist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
