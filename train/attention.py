"""Attention building blocks for CNNs (the papers are named per block below).

Every block maps a float tensor ``(N, C, H, W)`` to a tensor of the same shape
(except the residual units, which may change channels and stride), works on any
spatial size >= 1x1, in contiguous or channels_last memory format, under
``torch.autocast`` (bfloat16), and contains no data-dependent Python control flow
(shapes are only read to size an interpolation), so ``torch.compile(fullgraph=True)``
traces it in one graph.

Blocks
------
* :class:`PreActBlock`, :class:`PreActBottleneck` -- pre-activation residual units
  (He et al. 2016, "Identity mappings"), with an optional attention module applied to
  the residual branch before the addition (the SE / CBAM placement).
* :class:`SEBlock` -- Squeeze-and-Excitation (Hu et al., CVPR 2018).
* :class:`CBAM` -- Convolutional Block Attention Module (Woo et al., ECCV 2018).
* :class:`NonLocalBlock` -- embedded-Gaussian non-local block (Wang et al., CVPR 2018).
* :class:`SoftMaskBranch`, :class:`AttentionModule` -- Residual Attention Network
  (Wang et al., CVPR 2017).
* :class:`SpatialTransformer` -- affine spatial transformer (Jaderberg et al., NIPS 2015).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "PreActBlock",
    "PreActBottleneck",
    "SEBlock",
    "CBAM",
    "ChannelAttention",
    "SpatialAttention",
    "NonLocalBlock",
    "SoftMaskBranch",
    "AttentionModule",
    "SpatialTransformer",
    "mask_levels_for",
]

#: A factory ``f(channels) -> nn.Module`` for an attention module on a residual branch.
AttentionFactory = Optional[Callable[[int], nn.Module]]


def _conv(cin: int, cout: int, k: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=bias)


# --------------------------------------------------------------------------- residual units


class PreActBlock(nn.Module):
    """Pre-activation basic residual unit: ``x + F(x)``.

    ``F`` = BN-ReLU-conv3x3(stride)-BN-ReLU-conv3x3, then ``attention`` (if given) on
    the branch output. When ``stride != 1`` or ``in_channels != out_channels`` the
    shortcut is a 1x1 conv (with the stride) applied to the pre-activated input, as in
    the pre-activation ResNet paper.
    """

    expansion = 1

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1,
                 attention: AttentionFactory = None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = _conv(in_channels, out_channels, 3, stride)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = _conv(out_channels, out_channels, 3)
        self.attention = attention(out_channels) if attention is not None else nn.Identity()
        self.shortcut = (_conv(in_channels, out_channels, 1, stride)
                         if stride != 1 or in_channels != out_channels else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.relu(self.bn1(x))
        shortcut = self.shortcut(a) if self.shortcut is not None else x
        y = self.conv1(a)
        y = self.conv2(F.relu(self.bn2(y)))
        return shortcut + self.attention(y)


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck residual unit: ``x + F(x)``.

    ``F`` = BN-ReLU-conv1x1 (to ``out_channels // expansion``) - BN-ReLU-conv3x3(stride)
    - BN-ReLU-conv1x1 (to ``out_channels``), then ``attention`` (if given). The
    Residual Attention Network builds everything from this unit (expansion 4).
    Shortcut as in :class:`PreActBlock`.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1,
                 attention: AttentionFactory = None, expansion: int = 4):
        super().__init__()
        mid = max(1, out_channels // expansion)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = _conv(in_channels, mid, 1)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv2 = _conv(mid, mid, 3, stride)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv3 = _conv(mid, out_channels, 1)
        self.attention = attention(out_channels) if attention is not None else nn.Identity()
        self.shortcut = (_conv(in_channels, out_channels, 1, stride)
                         if stride != 1 or in_channels != out_channels else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.relu(self.bn1(x))
        shortcut = self.shortcut(a) if self.shortcut is not None else x
        y = self.conv1(a)
        y = self.conv2(F.relu(self.bn2(y)))
        y = self.conv3(F.relu(self.bn3(y)))
        return shortcut + self.attention(y)


# --------------------------------------------------------------------------- SE / CBAM


def _hidden(channels: int, reduction: int, min_hidden: int) -> int:
    return max(channels // reduction, min_hidden)


class SEBlock(nn.Module):
    """Squeeze-and-Excitation: ``x * sigmoid(W2 relu(W1 avgpool(x)))``.

    Squeeze = global average pool per channel over H and W; excitation = FC
    (C -> ``max(C // reduction, min_hidden)``, with bias) - ReLU - FC (-> C) -
    sigmoid; the result rescales each channel of ``x``. Output shape = input shape.
    """

    def __init__(self, channels: int, reduction: int = 16, min_hidden: int = 4):
        super().__init__()
        hidden = _hidden(channels, reduction, min_hidden)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """The per-channel scale in [0, 1], shape ``(N, C, 1, 1)``."""
        s = x.mean(dim=(2, 3))
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(s))))
        return s[:, :, None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x).to(x.dtype)


class ChannelAttention(nn.Module):
    """CBAM channel attention: ``sigmoid(MLP(avgpool(x)) + MLP(maxpool(x)))``, (N, C, 1, 1).

    The MLP (C -> ``max(C // reduction, min_hidden)`` -> C, ReLU between) is shared by
    the average- and max-pooled descriptors.
    """

    def __init__(self, channels: int, reduction: int = 16, min_hidden: int = 4):
        super().__init__()
        hidden = _hidden(channels, reduction, min_hidden)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.mlp(x.mean(dim=(2, 3))) + self.mlp(x.amax(dim=(2, 3)))
        return torch.sigmoid(a)[:, :, None, None]


class SpatialAttention(nn.Module):
    """CBAM spatial attention: ``sigmoid(BN(conv_kxk([mean_c(x), max_c(x)])))``, (N, 1, H, W).

    The channel-wise mean and max maps are concatenated (2 channels) and convolved by a
    ``kernel_size`` x ``kernel_size`` conv (same padding, no bias) followed by BN, as in
    the authors' code.
    """

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        self.conv = _conv(2, 1, kernel_size)
        self.bn = nn.BatchNorm2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.bn(self.conv(maps)))


class CBAM(nn.Module):
    """Convolutional Block Attention Module: channel attention, then spatial attention.

    ``y = x * Mc(x)``; ``out = y * Ms(y)`` with :class:`ChannelAttention` ``Mc`` (avg +
    max descriptors through a shared MLP, reduction ``reduction``, hidden at least
    ``min_hidden``) and :class:`SpatialAttention` ``Ms`` (``spatial_kernel`` x
    ``spatial_kernel`` conv on the channel mean/max maps). Output shape = input shape.
    """

    def __init__(self, channels: int, reduction: int = 16, min_hidden: int = 4,
                 spatial_kernel: int = 7):
        super().__init__()
        self.channel = ChannelAttention(channels, reduction, min_hidden)
        self.spatial = SpatialAttention(spatial_kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x * self.channel(x).to(x.dtype)
        return y * self.spatial(y).to(y.dtype)


# --------------------------------------------------------------------------- non-local


class NonLocalBlock(nn.Module):
    """Embedded-Gaussian non-local block: ``z = x + BN(W y)``.

    ``y_i = sum_j softmax_j(theta(x_i) . phi(x_j)) g(x_j)`` with 1x1 convs ``theta``,
    ``phi``, ``g`` to ``inter_channels`` (default ``max(1, C // 2)``) and ``W`` back to
    C. With ``subsample=True`` (the paper's default) ``phi`` and ``g`` are max-pooled
    2x2 (stride 2, ceil mode, so a 1-pixel side stays 1). The dot products are divided
    by ``sqrt(inter_channels)`` (``scaled=True``, as the reference implementation's
    ``use_scale``; ``scaled=False`` gives the paper's unscaled form).

    Initialisation (:meth:`init_weights_`, which :func:`shiftlab.train.models.init_weights`
    calls with the model's seeded generator): ``theta``, ``phi``, ``g`` and ``W`` weights
    N(0, 0.01), biases 0, as in the reference code (facebookresearch/video-nonlocal-net).
    With that and the scaling the attention starts nearly uniform (largest weight per
    position ~1.1x uniform at init in ``nonlocal_resnet``); Kaiming-initialised ``theta``
    / ``phi`` with unscaled products started saturated (largest weight ~0.9: each position
    attending to one other, with vanishing gradients through the softmax). The BN after
    ``W`` starts with weight 0 and bias 0, so at initialisation the block is exactly the
    identity (and stays so under any later network init, see :meth:`zero_init_`). The
    attention uses ``F.scaled_dot_product_attention``, memory ``O(HW * H'W')`` per sample;
    :meth:`attention` returns the weights.
    """

    INIT_STD = 0.01

    def __init__(self, channels: int, inter_channels: Optional[int] = None,
                 subsample: bool = True, scaled: bool = True):
        super().__init__()
        inter = inter_channels if inter_channels is not None else max(1, channels // 2)
        self.inter_channels = inter
        self.theta = _conv(channels, inter, 1, bias=True)
        self.phi = _conv(channels, inter, 1, bias=True)
        self.g = _conv(channels, inter, 1, bias=True)
        self.pool = nn.MaxPool2d(2, 2, ceil_mode=True) if subsample else nn.Identity()
        self.out = _conv(inter, channels, 1, bias=True)
        self.bn = nn.BatchNorm2d(channels)
        self.scale = inter ** -0.5 if scaled else 1.0
        if not self.theta.weight.is_meta:
            self.init_weights_()
        self.zero_init_()

    def init_weights_(self, generator: Optional[torch.Generator] = None) -> None:
        """The reference initialisation: the four 1x1 convs N(0, :attr:`INIT_STD`), biases 0."""
        with torch.no_grad():
            for conv in (self.theta, self.phi, self.g, self.out):
                nn.init.normal_(conv.weight, 0.0, self.INIT_STD, generator=generator)
                nn.init.zeros_(conv.bias)

    def zero_init_(self) -> None:
        """Zero the final BN's affine parameters, making the block the identity."""
        nn.init.zeros_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The attention weights ``softmax_j(scale * theta(x_i) . phi(x_j))``: (N, HW, H'W'), rows sum to 1."""
        q = self.theta(x).flatten(2).transpose(1, 2)  # (N, HW, C')
        k = self.pool(self.phi(x)).flatten(2)  # (N, C', H'W')
        return torch.softmax((q @ k).float() * self.scale, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        q = self.theta(x).flatten(2).transpose(1, 2)[:, None]  # (N, 1, HW, C')
        k = self.pool(self.phi(x)).flatten(2).transpose(1, 2)[:, None]
        v = self.pool(self.g(x)).flatten(2).transpose(1, 2)[:, None]
        y = F.scaled_dot_product_attention(q, k, v, scale=self.scale)  # (N, 1, HW, C')
        y = y[:, 0].transpose(1, 2).reshape(n, self.inter_channels, h, w)
        return x + self.bn(self.out(y))


# --------------------------------------------------------------------------- Residual Attention Network


def mask_levels_for(size: int, bottom: int, cap: int = 8) -> int:
    """Number of soft-mask down-sampling levels for a feature map of side ``size``.

    The largest ``L`` with ``size / 2**L >= bottom`` (the paper: 56 -> 3, 28 -> 2,
    14 -> 1 for ``bottom=7``), at least 1 and at most ``cap``. Since ``bottom >= 1``
    the nominal bottom map is never smaller than 1x1; a forced single level on a map
    smaller than ``2 * bottom`` pools to ``ceil(size / 2) >= 1``.
    """
    size, bottom = max(1, int(size)), max(1, int(bottom))
    levels = 0
    while levels < cap and size // (2 ** (levels + 1)) >= bottom:
        levels += 1
    return max(1, levels)


def _units(n: int, channels: int, expansion: int) -> nn.Sequential:
    return nn.Sequential(*[PreActBottleneck(channels, channels, expansion=expansion)
                           for _ in range(n)])


class SoftMaskBranch(nn.Module):
    """Soft-mask branch of a Residual Attention Network module, output ``M(x)`` in [0, 1].

    Bottom-up: ``levels`` times max-pool (3x3, stride 2, padding 1: a side of 1 or 2
    becomes 1, never 0) followed by ``r`` residual units; every level above the
    bottom also feeds a one-unit skip connection. The bottom level has ``2 r`` units
    (``r`` down, ``r`` up). Top-down: bilinear up-sampling to the runtime size of the
    matching bottom-up tensor (``F.interpolate(x, size=skip.shape[-2:])``, so odd sizes
    work), plus the skip connection, then ``r`` residual units; a last up-sampling to
    the input size, then BN-ReLU-conv1x1-BN-ReLU-conv1x1-sigmoid. Output shape = input
    shape.
    """

    def __init__(self, channels: int, r: int = 1, levels: int = 1, expansion: int = 4):
        super().__init__()
        if levels < 1:
            raise ValueError("SoftMaskBranch needs at least one level")
        self.levels = levels
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.down = nn.ModuleList(_units(r, channels, expansion) for _ in range(levels))
        self.skips = nn.ModuleList(_units(1, channels, expansion) for _ in range(levels - 1))
        self.bottom = _units(r, channels, expansion)
        self.up = nn.ModuleList(_units(r, channels, expansion) for _ in range(levels - 1))
        self.head = nn.Sequential(
            nn.BatchNorm2d(channels), nn.ReLU(inplace=True), _conv(channels, channels, 1),
            nn.BatchNorm2d(channels), nn.ReLU(inplace=True), _conv(channels, channels, 1),
            nn.Sigmoid(),
        )

    @staticmethod
    def _upsample(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        y = x
        for unit in self.down:
            y = unit(self.pool(y))
            outs.append(y)
        y = self.bottom(y)
        skips = [s(o) for s, o in zip(self.skips, outs[:-1])]
        for i in range(self.levels - 2, -1, -1):
            y = self.up[i](self._upsample(y, outs[i]) + skips[i])
        return self.head(self._upsample(y, x))


class AttentionModule(nn.Module):
    """Residual Attention Network attention module (shape-preserving).

    ``x -> p pre-processing units -> [trunk T: t units | mask M: SoftMaskBranch] ->
    H -> p post-processing units``. ``attention_mode="arl"`` (attention residual
    learning): ``H = (1 + M) * T``; ``"nal"`` (naive attention learning): ``H = M * T``.
    The p post-processing units follow the paper's Caffe models and its trunk depth
    ``36 m + 20`` (each module adds ``(2p + t) * 3`` layers). All units are
    :class:`PreActBottleneck` with ``channels`` in and out.
    """

    def __init__(self, channels: int, p: int = 1, t: int = 2, r: int = 1, levels: int = 1,
                 attention_mode: str = "arl", expansion: int = 4):
        super().__init__()
        if attention_mode not in ("arl", "nal"):
            raise ValueError(f"attention_mode must be 'arl' or 'nal', got {attention_mode!r}")
        self.attention_mode = attention_mode
        self.pre = _units(p, channels, expansion)
        self.trunk = _units(t, channels, expansion)
        self.mask = SoftMaskBranch(channels, r, levels, expansion)
        self.post = _units(p, channels, expansion)

    def combine(self, mask: torch.Tensor, trunk: torch.Tensor) -> torch.Tensor:
        """``(1 + mask) * trunk`` (ARL) or ``mask * trunk`` (NAL)."""
        if self.attention_mode == "arl":
            return (1 + mask) * trunk
        return mask * trunk

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pre(x)
        return self.post(self.combine(self.mask(x), self.trunk(x)))


# --------------------------------------------------------------------------- spatial transformer


class SpatialTransformer(nn.Module):
    """Affine spatial transformer: ``grid_sample(x, affine_grid(theta(x)))``.

    A localization net (conv5x5-maxpool-ReLU-conv3x3-ReLU-adaptive-avg-pool to 4x4-FC-
    ReLU-FC) predicts the 2x3 affine matrix ``theta`` in normalised coordinates; its
    last FC starts at weight 0 and bias = identity transform, so at initialisation the
    module returns its input (up to bilinear sampling, exact on the pixel grid with
    ``align_corners=False``). Sampling is bilinear with zero padding; the output has
    the input's shape.
    """

    def __init__(self, channels: int, hidden: int = 8):
        super().__init__()
        self.loc = nn.Sequential(
            nn.Conv2d(channels, hidden, 5, padding=2), nn.MaxPool2d(2, 2, ceil_mode=True),
            nn.ReLU(inplace=True), nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(hidden * 16, 32),
            nn.ReLU(inplace=True),
        )
        self.theta = nn.Linear(32, 6)
        self.zero_init_()

    def zero_init_(self) -> None:
        """Reset the last FC to the identity transform."""
        nn.init.zeros_(self.theta.weight)
        with torch.no_grad():
            self.theta.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        theta = self.theta(self.loc(x)).view(-1, 2, 3).float()
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="zeros",
                             align_corners=False).to(x.dtype)
