"""Image features for the diversity checks: a compact CNN trained inside the check.

No pretrained weights can be downloaded on the project's machines, and pixel-space
statistics (FID on pixels, cosine on pixels) mostly measure brightness and position.
:func:`fit` therefore trains a small CNN on the *labels* of real training rows and
:meth:`Extractor.embed` returns its penultimate layer: features that carry what a classifier
of this task looks at. The check (:func:`shiftlab.synth.diversity.run`) chooses those rows
disjoint, by group, from every row it then compares (the analysed target rows, synthetic
rows and their parents; :func:`shiftlab.synth.diversity.feature_fit_rows`): a network that
has seen a row embeds it differently from an unseen one (as FID's Inception network never
saw the images it scores, Heusel et al. 2017), which would bias the distances and AUCs.

Inputs
    uint8 (or float in [0, 1]) arrays / tensors shaped ``(N, C, H, W)``, ``C`` = 1 or 3,
    any ``H, W``. Every image is scaled to [0, 1] and resized to ``size x size`` (default
    32 x 32; bilinear with antialiasing, ``torch.nn.functional.interpolate``), then each
    channel is standardised with the mean / std of the training images. An extractor
    fitted on ``C`` channels embeds only ``C``-channel images.

Network (``channels = [c1, c2, c3]``, ``embed_dim = D``; strided convolutions instead of
pooling layers, which are slow on one CPU core)::

    conv3x3 stride 2 (c1) -> BatchNorm -> ReLU          size/2
    conv3x3 stride 2 (c2) -> BatchNorm -> ReLU          size/4
    conv3x3 stride 1 (c3) -> BatchNorm -> ReLU -> global average pool
    Linear(c3, D) -> ReLU   = the embedding (D floats, >= 0)
    Linear(D, classes)      = the head (cross-entropy)

Training: Adam (``lr``, ``weight_decay``), ``epochs`` passes over a seeded subsample of at
most ``train_rows`` rows in ``batch_size`` mini-batches, no augmentation. On 28 x 28 grey
images with the defaults (8,000 rows x 4 epochs) it takes ~10-20 s on one CPU core.

Determinism
    Weight init runs inside ``torch.random.fork_rng`` with ``torch.manual_seed`` derived
    from ``seed``; the row subsample and every epoch's order come from
    :func:`shiftlab.seeding.sample_rng`. Global RNG state is neither used nor changed, and
    nothing is cached on disk. With the same inputs, seed, torch build and number of CPU
    threads the features are bit-identical (float reductions may change with the thread
    count). Embeddings are computed in eval mode (BatchNorm running statistics), so an
    image's features never depend on the other images of its batch.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from shiftlab import paramschema, seeding
from shiftlab.errors import ShiftlabError

__all__ = ["DEFAULTS", "check_cfg", "fit", "Extractor", "to_float"]

#: Defaults of the feature network (the ``check_images.features`` params section; its model:
#: :class:`shiftlab.paramschema.Features`).
DEFAULTS: dict[str, Any] = paramschema.defaults(paramschema.Features)

_KEY = "check_images.features"
_PURPOSE = "check_images_features"


def check_cfg(cfg: Mapping[str, Any] | None, where: str = _KEY) -> dict[str, Any]:
    """:data:`DEFAULTS` with ``cfg`` merged over it, validated; errors name ``where.key``."""
    return paramschema.merge(paramschema.Features, cfg, where)


def to_float(images, size: int):
    """``(N, C, H, W)`` uint8 / float images -> float32 torch tensor in [0, 1], resized to ``size``."""
    import torch
    import torch.nn.functional as F

    if isinstance(images, torch.Tensor):
        x = images
    else:
        a = np.ascontiguousarray(images)
        x = torch.from_numpy(a if a.flags.writeable else a.copy())
    if x.ndim != 4:
        raise ShiftlabError(f"features: images must be (N, C, H, W), got shape {tuple(x.shape)}")
    if x.shape[1] not in (1, 3):
        raise ShiftlabError(f"features: images must have 1 or 3 channels, got {x.shape[1]}")
    if x.dtype == torch.uint8:
        x = x.to(torch.float32) / 255.0
    elif x.dtype.is_floating_point:
        x = x.to(torch.float32)
    else:
        raise ShiftlabError(f"features: images must be uint8 or float, got {x.dtype}")
    x = x.cpu()
    if x.shape[0] and tuple(x.shape[2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x.contiguous()


def _net(in_ch: int, channels, embed_dim: int, classes: int):
    import torch.nn as nn

    c1, c2, c3 = channels

    def block(i, o, stride):
        return [nn.Conv2d(i, o, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]

    body = nn.Sequential(
        *block(in_ch, c1, 2),
        *block(c1, c2, 2),
        *block(c2, c3, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(c3, embed_dim),
        nn.ReLU(inplace=True),
    )
    head = nn.Linear(embed_dim, classes)
    return nn.ModuleDict({"body": body, "head": head})


class Extractor:
    """A fitted feature network: :meth:`embed` gives penultimate-layer features.

    Attributes: ``size`` (working side), ``in_channels``, ``classes`` (the label values, in
    head order), ``mean`` / ``std`` (per-channel standardisation, float32), ``history``
    (mean training loss per epoch), ``train_rows`` (rows used to fit), ``train_accuracy``
    (accuracy on those rows after training).
    """

    def __init__(self, net, size: int, in_channels: int, classes: np.ndarray, mean, std):
        self.net = net
        self.size = int(size)
        self.in_channels = int(in_channels)
        self.classes = np.asarray(classes)
        self.mean = mean
        self.std = std
        self.history: list[float] = []
        self.train_rows = 0
        self.train_accuracy = float("nan")

    @property
    def dim(self) -> int:
        return int(self.net["head"].in_features)

    def _prep(self, images):
        x = to_float(images, self.size)
        if x.shape[1] != self.in_channels:
            raise ShiftlabError(
                f"features: extractor was fitted on {self.in_channels}-channel images, got {x.shape[1]} channels"
            )
        return (x - self.mean) / self.std

    def _forward(self, images, batch_size: int, head: bool) -> np.ndarray:
        import torch

        n = len(images)
        out = np.empty((n, len(self.classes) if head else self.dim), dtype=np.float32)
        self.net.eval()
        with torch.inference_mode():
            for s in range(0, n, batch_size):
                z = self.net["body"](self._prep(images[s : s + batch_size]))
                if head:
                    z = self.net["head"](z)
                out[s : s + len(z)] = z.numpy()
        return out

    def embed(self, images, batch_size: int = 1024) -> np.ndarray:
        """float32 ``(N, embed_dim)`` penultimate-layer features of ``(N, C, H, W)`` images."""
        return self._forward(images, batch_size, head=False)

    def logits(self, images, batch_size: int = 1024) -> np.ndarray:
        """float32 ``(N, classes)`` head outputs."""
        return self._forward(images, batch_size, head=True)

    def predict(self, images, batch_size: int = 1024) -> np.ndarray:
        """Predicted label values (from :attr:`classes`)."""
        return self.classes[np.argmax(self.logits(images, batch_size), axis=1)]

    def predict_embedded(self, embeddings) -> np.ndarray:
        """Predicted label values from :meth:`embed` output (the head alone, no second pass)."""
        import torch

        with torch.inference_mode():
            z = self.net["head"](torch.from_numpy(np.ascontiguousarray(embeddings, dtype=np.float32)))
        return self.classes[np.argmax(z.numpy(), axis=1)]


def fit(images, labels, cfg: Mapping[str, Any] | None = None, seed: int = 0, progress: bool = False) -> Extractor:
    """Train the feature CNN on ``images`` (N, C, H, W) and their ``labels`` (module docstring).

    At most ``cfg["train_rows"]`` rows are used: a seeded uniform subsample
    (``seeding.sample_rng(seed, 0, "check_images_features", "rows")``), taken in index
    order. Returns an :class:`Extractor`. Needs >= 2 distinct labels.
    """
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    c = check_cfg(cfg)
    labels = np.asarray(labels).ravel()
    n = len(labels)
    if len(images) != n:
        raise ShiftlabError(f"features: {len(images)} images but {n} labels")
    classes, y_all = np.unique(labels, return_inverse=True)
    if len(classes) < 2:
        raise ShiftlabError(f"features: need at least 2 distinct labels to train the feature network, got {len(classes)}")
    if n > c["train_rows"]:
        pick = np.sort(seeding.sample_rng(seed, 0, _PURPOSE, "rows").choice(n, c["train_rows"], replace=False))
    else:
        pick = np.arange(n)
    x = to_float(images[pick] if not isinstance(images, torch.Tensor) else images[torch.from_numpy(pick)], c["size"])
    y = torch.from_numpy(y_all[pick].astype(np.int64))
    mean = x.mean(dim=(0, 2, 3), keepdim=True)[0:1]
    std = x.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-3)
    x = (x - mean) / std
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seeding.sample_seed(seed, 0, _PURPOSE, "init") % (2**63))
        net = _net(x.shape[1], c["channels"], c["embed_dim"], len(classes))
    opt = torch.optim.Adam(net.parameters(), lr=c["lr"], weight_decay=c["weight_decay"])
    ext = Extractor(net, c["size"], x.shape[1], classes, mean, std)
    bs = c["batch_size"]
    m = len(x)
    bar = tqdm(total=c["epochs"] * m, desc="feature net", unit="img", disable=not progress)
    try:
        with torch.enable_grad():
            for ep in range(c["epochs"]):
                net.train()
                order = torch.from_numpy(seeding.sample_rng(seed, ep, _PURPOSE, "order").permutation(m))
                total, count = 0.0, 0
                for s in range(0, m, bs):
                    idx = order[s : s + bs]
                    if len(idx) < 2 and m >= 2:  # BatchNorm needs 2+ rows in train mode
                        continue
                    logits = net["head"](net["body"](x[idx]))
                    loss = F.cross_entropy(logits, y[idx])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total += float(loss.detach()) * len(idx)
                    count += len(idx)
                    bar.update(len(idx))
                ext.history.append(total / max(count, 1))
    finally:
        bar.close()
    net.eval()
    ext.train_rows = int(m)
    with torch.inference_mode():
        pred = torch.cat([net["head"](net["body"](x[s : s + 1024])).argmax(1) for s in range(0, m, 1024)])
    ext.train_accuracy = float((pred == y).double().mean())
    return ext
