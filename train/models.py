"""Registry of attention CNNs for 1- or 3-channel inputs of any size.

Every model maps a float tensor ``(N, C, H, W)`` (28x28 images, log-mel spectrograms
``(1, 64, T)`` with any ``T >= 8``, 224x224 RGB, ...) to logits ``(N, num_classes)``;
it ends in a global average pool, so any ``H, W >= 1`` (after the stem) is accepted.
Every model works in channels_last memory format and under
``torch.autocast(device_type, dtype=torch.bfloat16)``, has no data-dependent Python
control flow (``torch.compile(fullgraph=True)`` traces it in one graph), and is
initialised deterministically from ``seed`` with a local ``torch.Generator`` (the
global RNG state is neither read nor changed): conv weights Kaiming-normal
(``fan_out``, ReLU gain), linear weights N(0, 0.01), biases 0, norm layers weight 1 /
bias 0; then the blocks' own zero-inits (non-local output BN, spatial-transformer
identity).

Usage::

    from shiftlab.train import models
    net = models.create("attention_small", in_channels=1, num_classes=10, seed=0)
    models.names()                                    # registry order
    models.summary("attention56", input_shape=(3, 224, 224), num_classes=1000)
    print(models.table((1, 28, 28)))

Families and their options (all validated; a bad one raises a one-line
:class:`~shiftlab.errors.ShiftlabError` naming ``model.<option>``):

* pre-activation ResNet (``preact_resnet``, ``se_resnet``, ``cbam_resnet``,
  ``nonlocal_resnet``, ``stn_resnet``): ``width`` (channels of stage 0; stage ``i`` has
  ``width * 2**i``, times 4 with ``bottleneck``), ``blocks`` (residual units per stage;
  its length is the number of stages, each after the first halves the resolution),
  ``stem`` (``"cifar"``: conv3x3 with stride ``stem_stride`` (1 or 2); ``"imagenet"``:
  conv7x7 stride 2 + max-pool stride 2), ``bottleneck``, ``dropout``, and per attention kind ``reduction`` /
  ``min_hidden`` (SE, CBAM), ``spatial_kernel`` (CBAM), ``nonlocal_stages`` /
  ``nonlocal_subsample`` (non-local blocks after those stages), ``stn_hidden`` (STN).
* Residual Attention Network (``attention56``, ``attention92``, ``attention56_cifar``,
  ``attention92_cifar``, ``attention_small``, ``attention_tiny``): see
  :class:`ResidualAttentionNet`.

All families accept ``in_channels``, ``num_classes``, ``dropout`` and ``input_size``
(nominal ``(H, W)``; the attention networks choose their soft-mask depth from it, the
others ignore it), so a trainer can pass the same keywords to every model.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import torch
from torch import nn
import torch.nn.functional as F

from shiftlab.errors import ShiftlabError

from .attention import (
    CBAM,
    AttentionModule,
    NonLocalBlock,
    PreActBlock,
    PreActBottleneck,
    SEBlock,
    SpatialTransformer,
    mask_levels_for,
)

__all__ = [
    "DEFAULTS",
    "PreActResNet",
    "ResidualAttentionNet",
    "create",
    "describe",
    "init_weights",
    "merge",
    "names",
    "summary",
    "table",
]

#: Config block for the trainer: ``name`` = a registry entry, ``options`` = keyword
#: overrides of that entry's defaults (see :func:`describe`).
DEFAULTS: Dict[str, Any] = {"name": "attention_small", "options": {}}


# --------------------------------------------------------------------------- init


def init_weights(model: nn.Module, generator: Optional[torch.Generator] = None) -> nn.Module:
    """(Re)initialise every parameter and buffer of ``model`` deterministically.

    Conv2d: Kaiming normal (``mode="fan_out"``, ReLU gain), bias 0. Linear: N(0, 0.01),
    bias 0. BatchNorm: weight 1, bias 0, running stats reset. Then each sub-module with
    an ``init_weights_(generator)`` method re-initialises its own parameters (the
    non-local block: N(0, 0.01) as in its reference code), and each one with a
    ``zero_init_()`` method applies it. Raises ``RuntimeError`` if a parameter is
    left uninitialised (a layer type this function does not know).
    """
    done = set()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu",
                                        generator=generator)
                done.add(id(m.weight))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
                    done.add(id(m.bias))
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01, generator=generator)
                done.add(id(m.weight))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
                    done.add(id(m.bias))
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
                if m.affine:
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)
                    done.update((id(m.weight), id(m.bias)))
        for m in model.modules():  # blocks with their own (reference) initialisation, same generator
            own = getattr(m, "init_weights_", None)
            if callable(own):
                own(generator)
        for m in model.modules():
            zero = getattr(m, "zero_init_", None)
            if callable(zero):
                zero()
    missed = [n for n, p in model.named_parameters() if id(p) not in done]
    if missed:
        raise RuntimeError(f"init_weights: no rule for parameters {missed[:5]}")
    return model


# --------------------------------------------------------------------------- networks


def _stem(kind: str, in_channels: int, width: int, stride: int = 1) -> nn.Sequential:
    if kind == "imagenet":
        return nn.Sequential(
            nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(width), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
    return nn.Sequential(nn.Conv2d(in_channels, width, 3, stride=stride, padding=1, bias=False),
                         nn.BatchNorm2d(width), nn.ReLU(inplace=True))


def _stem_out(kind: str, side: int, stride: int = 1) -> int:
    """Spatial side after the stem (both stems keep any side >= 1 at >= 1)."""
    return math.ceil(math.ceil(side / 2) / 2) if kind == "imagenet" else math.ceil(side / stride)


class _Head(nn.Module):
    """BN-ReLU (the last pre-activation), global average pool, dropout, linear."""

    def __init__(self, channels: int, num_classes: int, dropout: float):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(x)).mean(dim=(2, 3))
        return self.fc(self.dropout(x))


class PreActResNet(nn.Module):
    """Pre-activation ResNet with optional SE / CBAM / non-local / STN attention.

    ``stem -> stages -> BN-ReLU -> global avg pool -> dropout -> FC``. Stage ``i`` has
    ``blocks[i]`` residual units with ``width * 2**i`` channels (x4 for bottleneck
    units); its first unit has stride 2 for ``i > 0``. ``attention``: ``"none"``;
    ``"se"`` / ``"cbam"`` (the module on the residual branch of every unit, before the
    addition); ``"nonlocal"`` (a :class:`NonLocalBlock` after each stage listed in
    ``nonlocal_stages``); ``"stn"`` (a :class:`SpatialTransformer` on the input).
    ``stem="cifar"``: conv3x3 stride ``stem_stride``; ``"imagenet"``: conv7x7/2 +
    max-pool/2. ``input_size`` is accepted for a uniform interface and ignored.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 16,
                 blocks: Sequence[int] = (2, 2, 2), stem: str = "cifar",
                 bottleneck: bool = False, attention: str = "none", reduction: int = 16,
                 min_hidden: int = 4, spatial_kernel: int = 7,
                 nonlocal_stages: Sequence[int] = (1, 2), nonlocal_subsample: bool = True,
                 stn_hidden: int = 8, stem_stride: int = 1, dropout: float = 0.0,
                 input_size: Optional[Sequence[int]] = None):
        super().__init__()
        if attention == "se":
            att = lambda c: SEBlock(c, reduction, min_hidden)  # noqa: E731
        elif attention == "cbam":
            att = lambda c: CBAM(c, reduction, min_hidden, spatial_kernel)  # noqa: E731
        else:
            att = None
        self.transform = (SpatialTransformer(in_channels, stn_hidden) if attention == "stn"
                          else nn.Identity())
        self.stem = _stem(stem, in_channels, width, stem_stride)
        expansion = 4 if bottleneck else 1
        layers = []
        cin = width
        for i, n in enumerate(blocks):
            cout = width * (2 ** i) * expansion
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                if bottleneck:
                    layers.append(PreActBottleneck(cin, cout, stride, att))
                else:
                    layers.append(PreActBlock(cin, cout, stride, att))
                cin = cout
            if attention == "nonlocal" and i in tuple(nonlocal_stages):
                layers.append(NonLocalBlock(cout, subsample=nonlocal_subsample))
        self.features = nn.Sequential(*layers)
        self.head = _Head(cin, num_classes, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.stem(self.transform(x))))


class ResidualAttentionNet(nn.Module):
    """Residual Attention Network (Wang et al., CVPR 2017), pre-activation bottlenecks.

    Layout: ``stem`` (``"cifar"``: conv3x3 stride ``stem_stride``; ``"imagenet"``:
    conv7x7/2 + max-pool/2) -> for stage s in 0, 1, 2: one residual unit to
    ``width * expansion * 2**s`` channels (stride 1 for s = 0, else 2), then
    ``modules[s]`` :class:`AttentionModule` s (``p``, ``t``, ``r``, ``attention_mode``,
    soft-mask depth ``levels[s]``) -> ``final_units`` residual units to
    ``width * expansion * 8`` channels (the first with stride ``final_stride``) ->
    BN-ReLU -> global avg pool -> dropout -> FC.

    With ``stem="imagenet"`` (conv7x7/2 + max-pool/2, ``stem_width=64``), ``width=64``,
    ``final_stride=2``, ``final_units=3`` and ``input_size=(224, 224)`` this is the
    paper's Table 2: units 256/512/1024/2048 at 56/28/14/7, mask levels 3/2/1 (every
    mask bottoms out at 7x7); ``modules=(1, 1, 1)`` is Attention-56 and ``(1, 2, 3)``
    Attention-92 (trunk depth ``36 m + 20`` with ``m = sum(modules) / 3``).

    Soft-mask depth: ``mask_levels`` (one per stage) if given, else
    ``mask_levels_for(side_s, mask_bottom)`` from the nominal stage side computed from
    ``input_size`` (smaller of H and W), i.e. as many halvings as keep the nominal
    bottom map at least ``mask_bottom`` wide, at least one. At run time inputs of any
    other size work too: the 3x3/2 max-pools never shrink a side below 1 and the
    top-down path up-samples to each skip tensor's runtime size.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 1000, width: int = 64,
                 stem_width: int = 64, stem: str = "imagenet",
                 modules: Sequence[int] = (1, 1, 1), p: int = 1, t: int = 2, r: int = 1,
                 attention_mode: str = "arl", expansion: int = 4,
                 mask_levels: Optional[Sequence[int]] = None, mask_bottom: int = 7,
                 input_size: Optional[Sequence[int]] = (224, 224), final_units: int = 3,
                 final_stride: int = 2, stem_stride: int = 1, dropout: float = 0.0):
        super().__init__()
        if input_size is None:
            input_size = (224, 224) if stem == "imagenet" else (32, 32)
        side = _stem_out(stem, min(input_size), stem_stride)
        self.stem = _stem(stem, in_channels, stem_width, stem_stride)
        layers = []
        cin = stem_width
        levels = []
        for s in range(3):
            cout = width * expansion * (2 ** s)
            stride = 1 if s == 0 else 2
            if s > 0:
                side = math.ceil(side / 2)
            lv = mask_levels[s] if mask_levels is not None else mask_levels_for(side, mask_bottom)
            levels.append(lv)
            layers.append(PreActBottleneck(cin, cout, stride, expansion=expansion))
            for _ in range(modules[s]):
                layers.append(AttentionModule(cout, p, t, r, lv, attention_mode, expansion))
            cin = cout
        cout = width * expansion * 8
        for j in range(final_units):
            layers.append(PreActBottleneck(cin, cout, final_stride if j == 0 else 1,
                                           expansion=expansion))
            cin = cout
        self.mask_levels = tuple(levels)
        self.features = nn.Sequential(*layers)
        self.head = _Head(cin, num_classes, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.stem(x)))


# --------------------------------------------------------------------------- option validation


def _fail(key: str, what: str, value: Any) -> None:
    raise ShiftlabError(f"{key}: must be {what}, got {value!r}")


def _int(lo: int, hi: Optional[int] = None) -> Callable[[str, Any], int]:
    what = f"an integer >= {lo}" + (f" and <= {hi}" if hi is not None else "")

    def check(key, v):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
            _fail(key, what, v)
        return int(v)
    return check


def _odd(key, v):
    if isinstance(v, bool) or not isinstance(v, int) or v < 1 or v % 2 == 0:
        _fail(key, "an odd integer >= 1", v)
    return int(v)


def _float(lo: float, hi: float) -> Callable[[str, Any], float]:
    def check(key, v):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (lo <= v < hi):
            _fail(key, f"a number in [{lo}, {hi})", v)
        return float(v)
    return check


def _bool(key, v):
    if not isinstance(v, bool):
        _fail(key, "true or false", v)
    return v


def _choice(*options: str) -> Callable[[str, Any], str]:
    def check(key, v):
        if v not in options:
            _fail(key, "one of " + ", ".join(repr(o) for o in options), v)
        return v
    return check


def _ints(lo: int, length: Optional[int] = None, min_len: int = 1, max_len: int = 8,
          optional: bool = False) -> Callable[[str, Any], Optional[Tuple[int, ...]]]:
    if length is not None:
        shape = f"a list of {length} integers"
    else:
        shape = f"a list of {min_len} to {max_len} integers"
    what = f"{shape} >= {lo}" + (" or null" if optional else "")

    def check(key, v):
        if v is None and optional:
            return None
        if not isinstance(v, (list, tuple)) or any(
                isinstance(x, bool) or not isinstance(x, int) or x < lo for x in v):
            _fail(key, what, v)
        if (length is not None and len(v) != length) or not (min_len <= len(v) <= max_len):
            _fail(key, what, v)
        return tuple(int(x) for x in v)
    return check


_COMMON = {
    "in_channels": _int(1),
    "num_classes": _int(1),
    "dropout": _float(0.0, 1.0),
    "input_size": _ints(1, length=2, optional=True),
}

_RESNET = dict(_COMMON, **{
    "width": _int(1),
    "blocks": _ints(1, min_len=1, max_len=6),
    "stem": _choice("cifar", "imagenet"),
    "stem_stride": _int(1, 2),
    "bottleneck": _bool,
})

_RAN = dict(_COMMON, **{
    "width": _int(1),
    "stem_width": _int(1),
    "stem": _choice("cifar", "imagenet"),
    "stem_stride": _int(1, 2),
    "modules": _ints(0, length=3),
    "p": _int(0),
    "t": _int(0),
    "r": _int(1),
    "attention_mode": _choice("arl", "nal"),
    "expansion": _int(1),
    "mask_levels": _ints(1, length=3, optional=True),
    "mask_bottom": _int(1),
    "final_units": _int(1),
    "final_stride": _int(1, 2),
})

_SE_OPTS = {"reduction": _int(1), "min_hidden": _int(1)}


@dataclass(frozen=True)
class _Entry:
    name: str
    builder: Callable[..., nn.Module]
    defaults: Dict[str, Any]
    spec: Dict[str, Callable[[str, Any], Any]]
    description: str
    fixed: Dict[str, Any] = field(default_factory=dict)


_REGISTRY: Dict[str, _Entry] = {}


def _register(name, builder, spec, description, fixed=None, **defaults):
    _REGISTRY[name] = _Entry(name, builder, defaults, spec, description, fixed or {})


_SMALL_RESNET = dict(in_channels=1, num_classes=10, width=16, blocks=(2, 2, 2), stem="cifar",
                     stem_stride=1, bottleneck=False, dropout=0.0, input_size=None)

_register("preact_resnet", PreActResNet, _RESNET,
          "pre-activation ResNet (3 stages 16/32/64, 2 basic units each)",
          fixed={"attention": "none"}, **_SMALL_RESNET)
_register("se_resnet", PreActResNet, dict(_RESNET, **_SE_OPTS),
          "pre-act ResNet + Squeeze-and-Excitation on every unit (r=16, min hidden 4)",
          fixed={"attention": "se"}, reduction=16, min_hidden=4, **_SMALL_RESNET)
_register("cbam_resnet", PreActResNet,
          dict(_RESNET, **_SE_OPTS, spatial_kernel=_odd),
          "pre-act ResNet + CBAM on every unit (channel avg+max MLP, 7x7 spatial)",
          fixed={"attention": "cbam"}, reduction=16, min_hidden=4, spatial_kernel=7,
          **_SMALL_RESNET)
_register("nonlocal_resnet", PreActResNet,
          dict(_RESNET, nonlocal_stages=_ints(0, min_len=0, max_len=6),
               nonlocal_subsample=_bool),
          "pre-act ResNet + embedded-Gaussian non-local blocks after stages 1 and 2",
          fixed={"attention": "nonlocal"}, nonlocal_stages=(1, 2), nonlocal_subsample=True,
          **_SMALL_RESNET)
_register("stn_resnet", PreActResNet, dict(_RESNET, stn_hidden=_int(1)),
          "pre-act ResNet behind an affine spatial transformer (identity at init)",
          fixed={"attention": "stn"}, stn_hidden=8, **_SMALL_RESNET)

_IMAGENET_RAN = dict(in_channels=3, num_classes=1000, width=64, stem_width=64, stem="imagenet",
                     p=1, t=2, r=1, attention_mode="arl", expansion=4, mask_levels=None,
                     mask_bottom=7, input_size=(224, 224), final_units=3, final_stride=2,
                     stem_stride=1, dropout=0.0)
_CIFAR_RAN = dict(_IMAGENET_RAN, num_classes=10, width=32, stem_width=32, stem="cifar",
                  mask_bottom=8, input_size=(32, 32), final_stride=1)

_register("attention56", ResidualAttentionNet, _RAN,
          "Residual Attention Network-56, ImageNet layout of paper Table 2 (stem, units 256-2048)",
          modules=(1, 1, 1), **_IMAGENET_RAN)
_register("attention92", ResidualAttentionNet, _RAN,
          "Residual Attention Network-92, ImageNet layout of paper Table 2 (modules 1/2/3)",
          modules=(1, 2, 3), **_IMAGENET_RAN)
_register("attention56_cifar", ResidualAttentionNet, _RAN,
          "Attention-56, CIFAR layout (3x3 stem, units 128-1024, masks to 8x8/4x4)",
          modules=(1, 1, 1), **_CIFAR_RAN)
_register("attention92_cifar", ResidualAttentionNet, _RAN,
          "Attention-92, CIFAR layout (modules 1/2/3)",
          modules=(1, 2, 3), **_CIFAR_RAN)
_register("attention_small", ResidualAttentionNet, _RAN,
          "small Residual Attention Network for 28x28 (units 32-256, masks 2/1/1 levels)",
          **dict(_IMAGENET_RAN, in_channels=1, num_classes=10, width=8, stem_width=16,
                 stem="cifar", modules=(1, 1, 1), mask_bottom=7, input_size=(28, 28),
                 final_units=1, final_stride=1))
_register("attention_tiny", ResidualAttentionNet, _RAN,
          "attention_small with a stride-2 stem (stages at 14/7/4, ~2.5x faster on CPU)",
          **dict(_IMAGENET_RAN, in_channels=1, num_classes=10, width=8, stem_width=16,
                 stem="cifar", stem_stride=2, modules=(1, 1, 1), mask_bottom=7,
                 input_size=(28, 28), final_units=1, final_stride=1))


# --------------------------------------------------------------------------- public API


def names() -> list:
    """Registry names, in registration order."""
    return list(_REGISTRY)


def _entry(name: Any, key: str = "model.name") -> _Entry:
    if name in _REGISTRY:
        return _REGISTRY[name]
    close = difflib.get_close_matches(str(name), list(_REGISTRY), n=1, cutoff=0.5)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ShiftlabError(f"{key}: unknown model {name!r}{hint}; known: {', '.join(_REGISTRY)}")


def _options(entry: _Entry, options: Dict[str, Any], prefix: str) -> Dict[str, Any]:
    """Validate ``options`` against ``entry`` and return the full keyword dict."""
    out = dict(entry.defaults)
    for key, value in options.items():
        check = entry.spec.get(key)
        if check is None:
            close = difflib.get_close_matches(str(key), list(entry.spec), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ShiftlabError(f"{prefix}.{key}: unknown option for model {entry.name!r}{hint}; "
                                f"known: {', '.join(sorted(entry.spec))}")
        out[key] = check(f"{prefix}.{key}", value)
    if "nonlocal_stages" in out:
        bad = [s for s in out["nonlocal_stages"] if s >= len(out["blocks"])]
        if bad:
            raise ShiftlabError(f"{prefix}.nonlocal_stages: stage {bad[0]} does not exist "
                                f"(the model has {len(out['blocks'])} stages)")
    return out


def describe(name: str) -> Dict[str, Any]:
    """The default options of registry entry ``name`` (a copy; keys = accepted options)."""
    return dict(_entry(name).defaults)


def create(name: str, *, seed: int = 0, device: Any = None, **options: Any) -> nn.Module:
    """Build registry model ``name`` with ``options`` overriding its defaults.

    ``seed`` (int >= 0) fixes the initialisation (same name, options and seed ->
    bit-identical parameters); it uses a local ``torch.Generator`` and never touches
    the global RNG. The model is built on the meta device, initialised on the CPU and
    moved to ``device`` (default CPU; the same weights on every device);
    ``device="meta"`` gives a shape-only model (for :func:`summary`). Unknown names /
    options or bad values raise a one-line :class:`ShiftlabError`. Returns the model
    in training mode.
    """
    entry = _entry(name)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        _fail("model.seed", "an integer >= 0", seed)
    kwargs = _options(entry, options, "model")
    with torch.device("meta"):
        model = entry.builder(**kwargs, **entry.fixed)
    target = torch.device(device) if device is not None else torch.device("cpu")
    if target.type != "meta":
        # initialise on the CPU so the weights do not depend on the target device
        model = init_weights(model.to_empty(device="cpu"), torch.Generator().manual_seed(seed))
        model = model.to(target)
    return model


def merge(cfg: Optional[Dict[str, Any]], key: str = "model") -> Dict[str, Any]:
    """Validate a model config block ``{"name": ..., "options": {...}}`` over :data:`DEFAULTS`.

    Returns ``{"name": name, "options": {all options of that entry, defaults filled}}``.
    Errors name ``<key>.name`` / ``<key>.options.<option>``.
    """
    cfg = {} if cfg is None else cfg
    if not isinstance(cfg, dict):
        raise ShiftlabError(f"{key}: must be a mapping with 'name' and 'options', got {cfg!r}")
    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
        raise ShiftlabError(f"{key}.{unknown[0]}: unknown key (known: name, options)")
    name = cfg.get("name", DEFAULTS["name"])
    entry = _entry(name, f"{key}.name")
    options = cfg.get("options", DEFAULTS["options"])
    options = {} if options is None else options
    if not isinstance(options, dict):
        raise ShiftlabError(f"{key}.options: must be a mapping, got {options!r}")
    return {"name": name, "options": _options(entry, options, f"{key}.options")}


def summary(name: str, input_shape: Sequence[int] = (1, 28, 28), num_classes: int = 10,
            **options: Any) -> Dict[str, Any]:
    """Parameter count, forward FLOPs per sample and output shape of ``name``.

    The model is built on the meta device (no memory, no compute) with
    ``in_channels = input_shape[0]``, ``num_classes`` and, unless given,
    ``input_size = input_shape[1:]``. ``flops`` is counted by
    ``torch.utils.flop_counter.FlopCounterMode`` on one sample: convolutions, matrix
    products and attention, 2 FLOPs per multiply-add (``macs = flops // 2``; papers'
    "FLOPs" are usually multiply-adds); element-wise ops, norms and pooling are not
    counted. Returns ``{"name", "input_shape", "params", "trainable_params", "flops",
    "macs", "output_shape"}``.
    """
    from torch.utils.flop_counter import FlopCounterMode

    shape = tuple(input_shape)
    if len(shape) != 3 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1
                              for s in shape):
        _fail("input_shape", "(C, H, W) with positive integers", input_shape)
    if "in_channels" in options and options["in_channels"] != shape[0]:
        raise ShiftlabError(f"model.in_channels: {options['in_channels']!r} contradicts "
                            f"input_shape {shape!r}")
    options = dict(options, in_channels=shape[0], num_classes=num_classes)
    options.setdefault("input_size", shape[1:])
    model = create(name, device="meta", **options).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        out = model(torch.empty((1,) + shape, device="meta"))
    flops = int(counter.get_total_flops())
    return {
        "name": name,
        "input_shape": shape,
        "params": sum(p.numel() for p in model.parameters()),
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "flops": flops,
        "macs": flops // 2,
        "output_shape": tuple(out.shape[1:]),
    }


def _si(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))


def table(input_shape: Sequence[int] = (1, 28, 28), num_classes: int = 10) -> str:
    """A printable text table of every registry model for ``input_shape`` (C, H, W).

    Every model is built for ``input_shape`` and ``num_classes`` (so a layout "of paper
    Table 2" is counted here at this input, not at the paper's 3x224x224 / 1000 classes
    unless asked for). Columns: name, parameters, forward MACs (multiply-adds) and FLOPs
    (2 per multiply-add) per sample, output shape, description; the two header lines say
    so. Papers' "FLOPs" are usually MACs. Computed on the meta device, so it is fast even
    at 224x224.
    """
    rows = [("model", "params", "MACs", "FLOPs", "output", "description")]
    for name in _REGISTRY:
        s = summary(name, input_shape, num_classes)
        rows.append((name, _si(s["params"]), _si(s["macs"]), _si(s["flops"]),
                     "x".join(str(d) for d in s["output_shape"]),
                     _REGISTRY[name].description))
    ncol = len(rows[0]) - 1
    widths = [max(len(r[i]) for r in rows) for i in range(ncol)]
    shape = "x".join(str(d) for d in input_shape)
    lines = [
        f"every model built for input {shape} and {num_classes} classes (a paper's figures need its input, "
        f"e.g. --input 3,224,224 --classes 1000)",
        "per sample, forward: MACs = multiply-adds (what papers usually call FLOPs), FLOPs = 2 x MACs; "
        "convolutions, matrix products and attention only",
    ]
    for i, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if j == 0 else c.rjust(w)
                               for j, (c, w) in enumerate(zip(r[:ncol], widths))) + "  " + r[ncol])
        if i == 0:
            lines.append("-" * len(lines[-1]))
    return "\n".join(lines)
