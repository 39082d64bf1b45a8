"""The ``shiftlab synth blur`` stage: motion-blurred copies of sharp source training images.

Machine Learning Yearning's video case (ch. 39-40): dev frames are motion blurred, the
training photos are sharp, so we add simulated motion blur to the sharp training images
so that they look like dev. :func:`make_synthetic` takes the mismatch splits and returns
the synthetic rows, ready for :func:`shiftlab.datasets.splits.attach_synthetic`.

Which rows are blurred
    *Eligible parents* are the rows of ``train`` and ``train_dev`` with domain ``source``
    and origin ``real`` (never dev/test, never target rows, never synthetic rows).
    They are numbered by **id order** (sorted ids): the *parent position* ``p`` of a row
    is its rank among the eligible ids, so it does not depend on row order or on how the
    rows are divided between train and train_dev. A seeded ``fraction`` of them is used:
    ``n = floor(fraction * eligible + 0.5)`` parents, namely those whose rank in the
    permutation ``seeding.sample_rng(seed, 0, "blur", "select").permutation(eligible)``
    is below ``n`` (raising ``fraction`` keeps every earlier choice). Each chosen parent
    gets ``copies`` synthetic rows ``c = 0 .. copies-1``.

Kernels
    Row (p, c) is blurred with ``kernels.sample(seeding.sample_rng(seed, p, "blur", c),
    cfg["kernels"])``; its recipe stores the kernel record and that per-row seed
    (``seeding.sample_seed(seed, p, "blur", c)``), so :func:`regenerate` rebuilds the
    pixels from the recipe and the parent image alone. Kernels are sampled and rendered
    :data:`_CHUNK` rows at a time (:func:`kernels.sample_batch`, :func:`kernels.render_batch`:
    the per-row path's records and float32 kernels, bit for bit), in ``workers`` processes
    for large stages.

Determinism
    Every image is blurred by :func:`apply_kernels`, which groups a batch by the exact
    support of each kernel and picks the convolution method (direct or FFT) from that
    support alone, so an image's pixels never depend on which other images share its
    batch: the output is the same for every ``batch_size`` and ``workers``, and the same
    params + seed give byte-identical :func:`shiftlab.store.save` output. On CUDA the
    pixels can differ from the CPU's by one grey level where the exact value is a
    rounding tie (cuDNN vs oneDNN summation order); :func:`regenerate` runs on the CPU.

Output rows (image schema, see :mod:`shiftlab.datasets.schema`): ``id`` =
``<parent id>/blur<c>``, ``origin`` ``synthetic``, ``parent`` = the parent's id,
``group`` / ``domain`` / ``label`` = the parent's, ``recipe`` = canonical JSON with
``stage`` ("synth_blur"), ``kernel`` (record), ``family``, ``seed`` (per-row), ``index``
(p), ``copy`` (c) and ``parent``. Rows come in (p, c) order.

Heavy modules (torch, Hugging Face datasets) are imported inside the functions that
need them, so the kernel worker processes start in a fraction of a second.
"""

from __future__ import annotations

import copy
import hashlib
import json
import multiprocessing
import os
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from shiftlab import devices, eligibility, paramschema
from shiftlab.errors import ShiftlabError
from shiftlab.synth import kernels

__all__ = [
    "DEFAULTS",
    "NARROW",
    "make_synthetic",
    "regenerate",
    "apply_kernels",
    "resolve_device",
    "eligible_parents",
    "make_copies",
    "all_rows",
]

#: Defaults of the ``synth_blur`` params section. ``kernels`` is the :func:`kernels.sample`
#: cfg (family weights and ranges), by default :data:`kernels.DEFAULT_SAMPLE_CFG`.
DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "fraction": 1.0,
    "copies": 1,
    "batch_size": 512,
    "device": "auto",
    "workers": 0,
    "kernels": copy.deepcopy(kernels.DEFAULT_SAMPLE_CFG),
}

#: A deliberately narrow cfg (one straight kernel: 9 px at 45 degrees, symmetric): every
#: synthetic row gets the same kernel. For tests and for the diversity checks' "low
#: diversity" example.
NARROW: dict[str, Any] = {
    **copy.deepcopy(DEFAULTS),
    "kernels": {
        "families": {"linear": 1.0},
        "linear": {"length": [9.0, 9.0], "angle": [45.0, 45.0], "direction": [0.0, 0.0]},
    },
}

PURPOSE = "blur"
_KEY = "synth_blur"
_CHUNK = 2048  # kernels per worker task (generated as one batch)
_POOL_MIN = 16384  # workers=0 (auto) uses processes from this many kernels on
_PROGRESS_MIN = 200
_STACK_MAX = 65  # kernels up to this side go to apply_kernels as one (N, k, k) stack


# --------------------------------------------------------------------------- config


def _check_cfg(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """``cfg`` merged over :data:`DEFAULTS`, its knobs validated by :class:`shiftlab.paramschema.SynthBlur`;
    ``kernels`` (a :func:`kernels.sample` cfg: partial mappings, constants allowed) by
    :func:`kernels.check_sample_cfg`."""
    c = paramschema.merge(paramschema.SynthBlur, cfg, _KEY, DEFAULTS, own=("kernels",))
    try:  # fail early, with the params key, on a bad kernel cfg (every family, both range ends)
        kernels.check_sample_cfg(c["kernels"])
    except ShiftlabError as e:
        raise ShiftlabError(f"{_KEY}.kernels: {e}") from None
    return c


def resolve_device(device: str | None = "auto"):
    """``"auto"`` -> CUDA when available, else CPU; ``"cpu"``, ``"cuda"``, ``"cuda:1"`` as given
    (:func:`shiftlab.devices.resolve`)."""
    return devices.resolve(device, f"{_KEY}.device")


# --------------------------------------------------------------------------- kernels in worker processes


def _workers(workers: int, total: int) -> int:
    if workers and workers > 0:
        return int(workers)
    if total < _POOL_MIN:
        return 1
    return max(1, min(8, os.cpu_count() or 1))


def map_ordered(fn: Callable, tasks: Sequence, workers: int) -> Iterator:
    """``map(fn, tasks)`` in order; in ``workers`` spawned processes when ``workers > 1``.

    ``fn`` must be a picklable top-level function of a module that imports quickly
    (no torch). Spawned, not forked: the parent holds torch and Arrow threads.
    """
    if workers <= 1 or len(tasks) <= 1:
        for t in tasks:
            yield fn(t)
        return
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(min(workers, len(tasks))) as pool:
        yield from pool.imap(fn, tasks)


def _sample_chunk(task) -> tuple[np.ndarray, list[dict], list[np.ndarray]]:
    """Worker: (seed, [(p, c), ...], kernel cfg, purpose) -> (row seeds, records, kernel arrays).

    The whole chunk at once (:func:`kernels.sample_batch`, :func:`kernels.render_batch`): the
    same seeds, records and float32 kernels, bit for bit, as ``seeding.sample_seed(seed, p,
    purpose, c)`` and ``kernels.sample(default_rng(row seed), cfg).render()`` row by row."""
    seed, keys, kcfg, purpose = task
    if not len(keys):
        return np.zeros(0, np.int64), [], []
    pc = np.asarray(keys, dtype=np.int64).reshape(-1, 2)
    seeds = kernels.sample_seeds(seed, pc[:, 0], purpose, pc[:, 1])
    kb = kernels.sample_batch(seeds, kcfg)
    return seeds, kb.records(), kernels.render_batch(kb)


def _kernel_stream(seed: int, keys: Sequence[tuple[int, int]], kcfg, purpose: str, workers: int) -> Iterator:
    """Blocks ``(row seeds, records, kernel arrays)`` of up to :data:`_CHUNK` rows, in row order."""
    tasks = [(seed, list(keys[i : i + _CHUNK]), kcfg, purpose) for i in range(0, len(keys), _CHUNK)]
    yield from map_ordered(_sample_chunk, tasks, _workers(workers, len(keys)))


class _Rows:
    """The next ``n`` rows of a block stream (:func:`_kernel_stream`), across block boundaries."""

    def __init__(self, blocks: Iterator):
        self.blocks = blocks
        self.cur: tuple = (np.zeros(0, np.int64), [], [])
        self.pos = 0

    def take(self, n: int) -> tuple[list[int], list[dict], list[np.ndarray]]:
        seeds: list[int] = []
        recs: list[dict] = []
        arrs: list[np.ndarray] = []
        while len(recs) < n:
            s, r, a = self.cur
            if self.pos >= len(r):
                self.cur, self.pos = next(self.blocks), 0
                continue
            j = min(len(r), self.pos + n - len(recs))
            seeds.extend(s[self.pos : j].tolist())
            recs.extend(r[self.pos : j])
            arrs.extend(a[self.pos : j])
            self.pos = j
        return seeds, recs, arrs

    def close(self) -> None:
        close = getattr(self.blocks, "close", None)
        if close is not None:
            close()


# --------------------------------------------------------------------------- applying kernels


def _crop_support(k: np.ndarray) -> np.ndarray:
    from shiftlab.synth import apply

    rh, rw = apply.kernel_support(k)
    ch, cw = k.shape[0] // 2, k.shape[1] // 2
    return np.ascontiguousarray(k[ch - rh : ch + rh + 1, cw - rw : cw + rw + 1], dtype=np.float32)


def apply_kernels(images, kernel_list: Sequence) -> Any:
    """Blur image ``i`` of a torch ``(N, C, H, W)`` batch with ``kernel_list[i]``, batch-independently.

    ``kernel_list`` items: :class:`kernels.Kernel` objects, records or 2-D odd arrays; or one
    ``(N, k, k)`` array (e.g. :func:`kernels.stack_batch`), the same pixels. The
    images are grouped by the exact support of their kernel (its smallest centred odd
    rectangle) and each group goes through :func:`apply.blur_batch` with a method chosen
    from the support alone (FFT from ``apply.FFT_MIN_TAPS["cpu"]`` taps on, on every device),
    so no image's pixels depend on the other images in the batch. Returns a tensor of the
    input's dtype on the input's device (uint8 rounded half to even and saturated; float
    not clipped).
    """
    import torch

    from shiftlab.synth import apply

    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ShiftlabError("apply_kernels: images must be a torch tensor (N, C, H, W)")
    n = images.shape[0]
    if len(kernel_list) != n:
        raise ShiftlabError(f"apply_kernels: {len(kernel_list)} kernels for {n} images")
    if n == 0:
        return images.clone()
    if isinstance(kernel_list, np.ndarray) and kernel_list.ndim == 3 and kernel_list.dtype != object:
        return _apply_stack(images, kernel_list)
    arrs = [_crop_support(apply.kernel_array(k, name=f"kernels[{i}]")) for i, k in enumerate(kernel_list)]
    groups: dict[tuple[int, int], list[int]] = {}
    for i, a in enumerate(arrs):
        groups.setdefault(a.shape, []).append(i)
    fft_min = apply.FFT_MIN_TAPS["cpu"]
    if len(groups) == 1:
        (shape, _), = groups.items()
        method = "fft" if shape[0] * shape[1] >= fft_min else "direct"
        return apply.blur_batch(images, np.stack(arrs), method=method)
    out = torch.empty_like(images)
    for shape in sorted(groups):
        idx = groups[shape]
        method = "fft" if shape[0] * shape[1] >= fft_min else "direct"
        it = torch.as_tensor(idx, dtype=torch.long, device=images.device)
        y = apply.blur_batch(images.index_select(0, it), np.stack([arrs[i] for i in idx]), method=method)
        out.index_copy_(0, it, y)
    return out


def _apply_stack(images, stack: np.ndarray):
    """:func:`apply_kernels` for an ``(N, k, k)`` kernel array: the same groups (exact support,
    ascending) and the same :func:`apply.blur_batch` calls, without per-kernel Python."""
    import torch

    from shiftlab.synth import apply

    k = np.asarray(stack, dtype=np.float32)
    if k.shape[1] % 2 == 0 or k.shape[2] % 2 == 0:
        raise ShiftlabError(f"apply_kernels: kernel sides must be odd, got shape {k.shape[1:]}")
    if not np.isfinite(k).all():
        raise ShiftlabError("apply_kernels: kernels have non-finite values")
    rh, rw = apply._supports(k)
    ch, cw = k.shape[1] // 2, k.shape[2] // 2
    key = rh * 4096 + rw
    uniq, inv = np.unique(key, return_inverse=True)
    fft_min = apply.FFT_MIN_TAPS["cpu"]

    def call(x, sel, h, w):
        crop = np.ascontiguousarray(k[sel, ch - h : ch + h + 1, cw - w : cw + w + 1])
        method = "fft" if (2 * h + 1) * (2 * w + 1) >= fft_min else "direct"
        return apply.blur_batch(x, crop, method=method)

    if len(uniq) == 1:
        return call(images, slice(None), int(rh[0]), int(rw[0]))
    out = torch.empty_like(images)
    for g, u in enumerate(uniq.tolist()):  # ascending (2h + 1, 2w + 1), as sorted(shapes)
        idx = np.flatnonzero(inv.reshape(-1) == g)
        it = torch.as_tensor(idx, dtype=torch.long, device=images.device)
        out.index_copy_(0, it, call(images.index_select(0, it), idx, u // 4096, u % 4096))
    return out


# --------------------------------------------------------------------------- the stage


def eligible_parents(splits) -> dict[str, np.ndarray]:
    """The eligible parents in id order: arrays ``id``, ``split`` (name), ``row``, ``label``, ``domain``, ``group``
    (the rule of :mod:`shiftlab.eligibility`: source-domain real rows of train and train_dev)."""
    return eligibility.eligible_parents(splits, "image")


def _read_rows(splits, split_names: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """uint8 (N, C, H, W) images of (split, row) pairs, in the given order."""
    from shiftlab.datasets import schema

    out = None
    for s in np.unique(split_names):
        sel = np.flatnonzero(split_names == s)
        uniq, inv = np.unique(rows[sel], return_inverse=True)
        imgs = schema.chw_batch(splits[str(s)].select(uniq.tolist()))
        if out is None:
            out = np.empty((len(rows),) + imgs.shape[1:], dtype=np.uint8)
        out[sel] = imgs[inv.reshape(-1)]
    return out


def _image_column(chw: np.ndarray):
    from shiftlab.datasets import images as img_mod

    return img_mod._image_column(chw.transpose(0, 2, 3, 1))  # (N, H, W, C) view; stored (C, H, W)


def make_synthetic(splits, cfg: Mapping[str, Any] | None = None, device: str = "auto", progress: bool = True,
                   shard: tuple[int, int] | None = None):
    """Motion-blurred synthetic rows for the eligible train/train_dev parents (module docstring).

    Args:
        splits: the mismatch splits (a ``DatasetDict`` with train, train_dev, dev, test).
        cfg: the ``synth_blur`` section (plain dict; missing keys take :data:`DEFAULTS`).
        device: ``"auto"`` (then ``cfg["device"]`` decides; its ``"auto"`` is CUDA when
            available), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        progress: show a tqdm bar (from 200 rows on).
        shard: ``(i, n)``: only the ``i``-th of ``n`` contiguous blocks of the output rows
            (0 <= i < n). Every row's kernel derives from (seed, parent index, copy), so the
            shards, concatenated in order ``0..n-1`` (``shiftlab merge``), equal the
            unsharded output row for row: run shards on several machines or GPUs.

    Returns:
        A ``Dataset`` in the image schema (same features as the splits, no ``weight``) with
        ``round(fraction * eligible) * copies`` rows (rounded half up), accepted by
        :func:`shiftlab.datasets.splits.attach_synthetic`.
    """
    from shiftlab.datasets import schema

    c = _check_cfg(cfg)
    dev = resolve_device(c["device"] if device in (None, "auto") else device)
    train = splits["train"] if "train" in splits else None
    if train is None:
        raise ShiftlabError("splits: missing split train")
    names = schema.label_names(train)
    h, w, ch = schema.image_shape(train)

    el = eligible_parents(splits)
    return _synthesize(splits, el, c, dev, names, (h, w, ch), progress, shard)


def _synthesize(splits, el: dict[str, np.ndarray], c: dict[str, Any], dev, names: Sequence[str],
                shape: tuple[int, int, int], progress: bool, shard: tuple[int, int] | None):
    """The blurred rows of parents ``el`` (:func:`eligible_parents` arrays; parent position = array
    position) read from ``splits[el["split"][p]]`` at row ``el["row"][p]``: the stage's body,
    shared by :func:`make_synthetic` and :func:`make_copies`."""
    import datasets as hfds
    import pyarrow as pa
    import torch
    from tqdm.auto import tqdm

    from shiftlab import store
    from shiftlab.datasets import schema

    seed, copies, bs = c["seed"], c["copies"], c["batch_size"]
    h, w, ch = shape
    feats = schema.image_features(names, (h, w, ch))
    chosen = eligibility.choose(len(el["id"]), c["fraction"], seed, PURPOSE)
    keys = [(int(p), k) for p in chosen for k in range(copies)]
    if shard is not None:
        i, k_sh = shard
        if not (isinstance(i, int) and isinstance(k_sh, int) and k_sh >= 1 and 0 <= i < k_sh):
            raise ShiftlabError(f"shard: expected i/n with 0 <= i < n, got {i}/{k_sh}")
        keys = keys[len(keys) * i // k_sh : len(keys) * (i + 1) // k_sh]
    n = len(keys)
    images = np.empty((n, ch, h, w), dtype=np.uint8)
    recipes: list[str] = []
    stream = _Rows(_kernel_stream(seed, keys, c["kernels"], PURPOSE, c["workers"]))
    bar = tqdm(total=n, desc="synth blur", unit="img", disable=not progress or n < _PROGRESS_MIN)
    try:
        for start in range(0, n, bs):
            batch = keys[start : start + bs]
            seeds_b, recs_b, arrs_b = stream.take(len(batch))
            pos = np.array([p for p, _ in batch], dtype=np.int64)
            x = _read_rows(splits, el["split"][pos], el["row"][pos])
            xt = torch.from_numpy(x).to(dev)
            big = max(a.shape[0] for a in arrs_b) > _STACK_MAX  # a stack of huge kernels: memory
            y = apply_kernels(xt, arrs_b if big else kernels.stack_batch(arrs_b))
            images[start : start + len(batch)] = y.cpu().numpy()
            for (p, k), s, rec in zip(batch, seeds_b, recs_b):
                recipes.append(
                    store.recipe(stage=_KEY, kernel=rec, family=rec["family"], seed=int(s), index=p, copy=k,
                                 parent=str(el["id"][p]))
                )
            bar.update(len(batch))
    finally:
        bar.close()
        stream.close()

    pos = np.array([p for p, _ in keys], dtype=np.int64)
    parent_ids = [str(i) for i in el["id"][pos]]
    ids = [f"{pid}/blur{k}" for pid, (_, k) in zip(parent_ids, keys)]
    labels = el["label"][pos].astype(np.int64)
    domains = [str(d) for d in el["domain"][pos]]
    groups = [str(g) for g in el["group"][pos]]
    columns = {
        "id": pa.array(ids, pa.string()),
        "image": _image_column(images),
        "label": pa.array(labels, pa.int64()),
        "domain": pa.array(domains, pa.string()),
        "origin": pa.array(["synthetic"] * n, pa.string()),
        "group": pa.array(groups, pa.string()),
        "parent": pa.array(parent_ids, pa.string()),
        "recipe": pa.array(recipes, pa.string()),
    }
    table = pa.table({k: columns[k] for k in feats})
    fp = hashlib.blake2b(digest_size=8)
    fp.update(repr((names, images.shape)).encode())
    fp.update(images.data)
    fp.update(labels.tobytes())
    for col in (ids, domains, groups, parent_ids, recipes):
        fp.update("\x00".join(col).encode())
    return hfds.Dataset(hfds.table.InMemoryTable(table), info=hfds.DatasetInfo(features=feats),
                        fingerprint=fp.hexdigest())


def all_rows(ds, split: str = "input") -> dict[str, np.ndarray]:
    """Every row of one image Dataset as parents, in row order (parent position = row number):
    the arrays of :func:`eligible_parents` (``id``, ``split``, ``row``, ``label``, ``domain``, ``group``)."""
    return eligibility.all_rows(ds, "image", split)


def make_copies(ds, cfg: Mapping[str, Any] | None = None, device: str = "auto", progress: bool = True,
                shard: tuple[int, int] | None = None):
    """Motion-blurred copies of ANY image Dataset in the shiftlab schema (``shiftlab synth blur --input DIR``).

    Every row is a parent (whatever its split, domain or origin), numbered by row position
    ``p``; the fraction, copies, kernels and output rows are those of :func:`make_synthetic`
    (row (p, c) blurred with ``kernels.sample(seeding.sample_rng(seed, p, "blur", c), ...)``),
    so :func:`shiftlab.synth.adapters.with_blur` on the same Dataset serves, at index ``p`` in
    epoch ``c``, the pixels of row (p, c).
    """
    from shiftlab.datasets import schema

    c = _check_cfg(cfg)
    dev = resolve_device(c["device"] if device in (None, "auto") else device)
    el = all_rows(ds)
    return _synthesize({"input": ds}, el, c, dev, schema.label_names(ds), schema.image_shape(ds), progress, shard)


def regenerate(recipe: str | Mapping[str, Any], parent_image_hwc) -> np.ndarray:
    """The pixels of a synthetic row from its recipe and its parent's image.

    ``parent_image_hwc``: uint8 ``(H, W, C)`` (or ``(H, W)``), e.g.
    ``schema.hwc(parent_row["image"])``. Returns uint8 of the same shape, byte-identical
    to :func:`make_synthetic`'s pixels computed on the CPU. Any adapter's recipe works
    (:mod:`shiftlab.synth.adapters`, :class:`~shiftlab.synth.ondemand.OnTheFlyBlur`): a recipe
    with ``"apply": "cv2"`` (the albumentations transforms) is replayed with their OpenCV
    convolution (uint8 or float32 images), ``"kernel": null`` (left sharp) returns the parent.
    """
    import torch

    try:
        rec = json.loads(recipe) if isinstance(recipe, (str, bytes)) else dict(recipe)
    except (ValueError, TypeError) as e:  # JSONDecodeError is a ValueError
        raise ShiftlabError(f"regenerate: recipe is not a JSON object: {e}") from None
    if not isinstance(rec, dict) or "kernel" not in rec:
        raise ShiftlabError("regenerate: recipe has no 'kernel' record (not a synth blur row?)")
    img = np.asarray(parent_image_hwc)
    if rec["kernel"] is None:  # an adapter's p < 1 left this sample sharp
        return img.copy()
    kern = kernels.from_record(rec["kernel"])
    if rec.get("apply") == "cv2":  # made by an albumentations transform: its own convolution
        from shiftlab.synth import apply

        return apply.blur_cpu(np.ascontiguousarray(img), kern)
    if img.dtype != np.uint8:
        raise ShiftlabError(f"regenerate: parent image must be uint8, got {img.dtype}")
    two_d = img.ndim == 2
    if two_d:
        img = img[:, :, None]
    if img.ndim != 3:
        raise ShiftlabError(f"regenerate: parent image must be (H, W) or (H, W, C), got shape {img.shape}")
    x = torch.from_numpy(np.array(img.transpose(2, 0, 1), order="C")[None])  # a writable copy
    y = apply_kernels(x, [kern])[0].numpy().transpose(1, 2, 0)
    y = np.ascontiguousarray(y)
    return y[:, :, 0] if two_d else y
