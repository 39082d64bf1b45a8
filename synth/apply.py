"""Apply blur kernels to images: per image on the CPU (albumentations) or batched in torch.

Both paths compute the same pixels: an OpenCV ``filter2D`` correlation (anchor at the kernel
centre, exactly how albumentations ``MotionBlur`` applies its kernel) with OpenCV's default
border ``BORDER_REFLECT_101`` (``gfedcb|abcdefgh|gfedcba``), float32 arithmetic, and for uint8
output rounding half to even (``cvRound``) then saturating to [0, 255]. They can differ by one
grey level where the exact value sits at .5 and the two float32 summation orders round apart
(OpenCV also switches to a DFT for kernels of 130+ taps).

* :func:`blur_cpu` / :class:`KernelBlur`: one image at a time through albumentations'
  ``convolve`` helper (``cv2.filter2D``), the one ``MotionBlur`` uses.
* :func:`blur_batch`: a batch with one kernel per image, in torch on the input's device.

Both crop every kernel to its support (the smallest centred, odd-by-odd rectangle holding all
non-zero taps) before convolving: a horizontal 17x17 line kernel costs 1x17 taps.

Kernel larger than the image: the reflect-101 border is continued periodically (reflect again
off the far edge), which is what ``cv2.filter2D`` does, so any kernel size works on any image
size and both paths agree (a 31x31 kernel on a 5x3 image included).

Accepted images: uint8 or float32 (``blur_batch`` also takes float16/bfloat16/float64 tensors and
float64 arrays, computed in float32, returned in the input dtype), grey (1 channel) or RGB (3).
A 2-D ``(H, W)`` image is treated as ``(H, W, 1)`` and returned 2-D. Anything else (RGBA, 16-bit
or other integer types, other channel counts) raises :class:`ShiftlabError` naming the problem.
Float images are not clipped by :func:`blur_batch` (a kernel that is non-negative and sums to 1
cannot leave the input range); :func:`blur_cpu` / :class:`KernelBlur` clip float32 to [0, 1] as
albumentations does.
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any, Sequence

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np
import torch
import torch.nn.functional as F
from albumentations.augmentations.pixel.functional import convolve as _albu_convolve
from albumentations.core.transforms_interface import ImageOnlyTransform

from shiftlab.errors import ShiftlabError
from shiftlab.synth.kernels import Kernel, as_kernel

__all__ = [
    "KernelBlur",
    "blur_cpu",
    "blur_batch",
    "kernel_array",
    "kernel_support",
    "FFT_MIN_TAPS",
]

#: ``method="auto"`` uses the FFT for a group of kernels whose support has at least this many
#: taps (kh * kw), per device type. CPU: measured on this project's 2-core AMD EPYC (torch 2.11,
#: oneDNN depthwise conv vs MKL FFT): cropped direct convolution wins up to ~31x31 even on
#: 224x224 images, so the FFT takes over above 33x33. CUDA: not measured (no GPU was available);
#: 15x15 is a conservative guess -- tune with ``bench/blur.py``.
FFT_MIN_TAPS: dict[str, int] = {"cpu": 33 * 33, "cuda": 15 * 15}

_FLOAT_TORCH = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


# --------------------------------------------------------------------------- kernels
def kernel_array(kernel, name: str = "kernel") -> np.ndarray:
    """A float32 2-D kernel from a :class:`Kernel`, a record dict/JSON, an array or a tensor.

    Arrays must be 2-D with odd height and width and finite values; they are not normalised.
    """
    if isinstance(kernel, (Kernel, dict, str)):
        return as_kernel(kernel).render()
    if isinstance(kernel, torch.Tensor):
        kernel = kernel.detach().cpu().numpy()
    try:
        k = np.asarray(kernel, dtype=np.float32)
    except (TypeError, ValueError):
        raise ShiftlabError(f"{name}: not a kernel (got {type(kernel).__name__})") from None
    if k.ndim != 2:
        raise ShiftlabError(f"{name}: kernel must be 2-D, got shape {tuple(k.shape)}")
    if k.shape[0] % 2 == 0 or k.shape[1] % 2 == 0:
        raise ShiftlabError(f"{name}: kernel sides must be odd, got shape {tuple(k.shape)}")
    if not np.isfinite(k).all():
        raise ShiftlabError(f"{name}: kernel has non-finite values")
    return k


def kernel_support(kernel: np.ndarray) -> tuple[int, int]:
    """Half-height and half-width ``(rh, rw)`` of the centred support of a 2-D odd kernel."""
    kh, kw = kernel.shape
    rows = np.nonzero(kernel.any(axis=1))[0]
    cols = np.nonzero(kernel.any(axis=0))[0]
    rh = int(np.abs(rows - kh // 2).max(initial=0))
    rw = int(np.abs(cols - kw // 2).max(initial=0))
    return rh, rw


def _crop(kernel: np.ndarray) -> np.ndarray:
    rh, rw = kernel_support(kernel)
    ch, cw = kernel.shape[0] // 2, kernel.shape[1] // 2
    return np.ascontiguousarray(kernel[ch - rh : ch + rh + 1, cw - rw : cw + rw + 1])


# --------------------------------------------------------------------------- CPU path
def _check_hwc(image, where: str) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise ShiftlabError(f"{where}: image must be a numpy array, got {type(image).__name__}")
    if image.dtype not in (np.uint8, np.float32):
        hint = " (16-bit images: convert to uint8 or float32 in [0, 1] first)" if image.dtype in (np.uint16, np.int16) else ""
        raise ShiftlabError(f"{where}: image dtype {image.dtype} not supported, expected uint8 or float32{hint}")
    if image.ndim == 2:
        return image
    if image.ndim != 3:
        raise ShiftlabError(f"{where}: image must be (H, W) or (H, W, C), got shape {image.shape}")
    _check_channels(image.shape[2], where, image.shape)
    return image


def _check_channels(c: int, where: str, shape) -> None:
    if c == 4:
        raise ShiftlabError(
            f"{where}: RGBA image (4 channels, shape {tuple(shape)}) not supported: drop or composite the alpha channel first"
        )
    if c not in (1, 3):
        raise ShiftlabError(f"{where}: expected 1 (grey) or 3 (RGB) channels, got {c} (shape {tuple(shape)})")


def blur_cpu(image: np.ndarray, kernel) -> np.ndarray:
    """Blur one image with albumentations' ``convolve`` (``cv2.filter2D``, reflect-101).

    ``image``: uint8 or float32, ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)``; the result has the
    same shape and dtype. ``kernel``: a :class:`Kernel`, a record, or a 2-D odd array.
    """
    img = _check_hwc(image, "blur_cpu")
    k = _crop(kernel_array(kernel))
    return _albu_convolve(np.ascontiguousarray(img), kernel=k)


class KernelBlur(ImageOnlyTransform):
    """albumentations transform that blurs with a fixed kernel of ours.

    Args:
        kernel: a :class:`~shiftlab.synth.kernels.Kernel`, its record (dict or JSON), or a 2-D
            odd array (used as is, not normalised).
        p: probability of applying the transform (default 1).

    ``apply`` is albumentations' ``convolve`` helper, as in ``MotionBlur`` (same border, same
    rounding); uint8 and float32 images, grey or RGB.
    """

    def __init__(self, kernel, p: float = 1.0):
        super().__init__(p=p)
        if isinstance(kernel, (Kernel, dict, str)):
            kern = as_kernel(kernel)
            self.kernel = kern.to_record()  # JSON-friendly for A.to_dict
            arr = kern.render()
        else:
            arr = kernel_array(kernel)
            self.kernel = arr.tolist()
        self._array = _crop(arr)

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        img = _check_hwc(img, "KernelBlur")
        return _albu_convolve(np.ascontiguousarray(img), kernel=self._array)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("kernel",)


# --------------------------------------------------------------------------- batched path
#
# Layout. The batch is processed in the memory layout it arrives in, never transposed:
#
# * "interleaved" -- numpy (N, H, W, C) arrays and channels-last tensors: every image is one
#   plane of H x (W * C) values and the kernel is applied with a horizontal dilation of C, so
#   tap (u, v) reads the same channel v pixels to the right;
# * "planar" -- contiguous (N, C, H, W) tensors: every channel is a plane of H x W.
#
# A group of n images becomes one depthwise ``conv2d`` over n (interleaved) or n * C (planar)
# channels. oneDNN vectorises depthwise convolutions across blocks of 16 channels, which is
# why the planner below prefers groups of 16+ planes on the CPU.


def _reflect101_index(n: int, r: int, device) -> torch.Tensor:
    """Source index of every padded position for BORDER_REFLECT_101, any pad size."""
    i = torch.arange(-r, n + r, device=device)
    if n == 1:
        return torch.zeros_like(i)
    period = 2 * (n - 1)
    m = torch.remainder(i, period)
    return torch.where(m < n, m, period - m)


def _fast_len(n: int) -> int:
    """Smallest 5-smooth integer >= n (a fast FFT size)."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def _strip_rows(H: int, rh: int, S: int, device) -> tuple[torch.Tensor, int]:
    """Source rows of S horizontal strips of h0 = ceil(H / S) output rows, each with rh halo
    rows on both sides, reflect-101 at the image border (any size). Returns (rows, h0)."""
    h0 = -(-H // S)
    base = torch.arange(-rh, h0 + rh, device=device)
    rows = (torch.arange(S, device=device)[:, None] * h0 + base).reshape(-1)
    if H == 1:
        return torch.zeros_like(rows), h0
    period = 2 * (H - 1)
    m = torch.remainder(rows, period)
    return torch.where(m < H, m, period - m), h0


def _padded_float(x: torch.Tensor, rh: int, rw: int, s: int, S: int = 1) -> tuple[torch.Tensor, int]:
    """Reflect-101 padded float32 planes, optionally cut into S horizontal strips.

    x: (n, P, H, Q) planes of W = Q / s pixels of s values. Returns ((n, P * S, h0 + 2 rh,
    Q + 2 rw s), h0): strip j of a plane holds output rows [j h0, (j + 1) h0) plus halos. Rows are
    gathered in the source dtype (cheap for uint8), then converted and padded sideways in one
    copy; side borders are flipped slice copies (or index gathers when rw >= W).
    """
    n, P, H, Q = x.shape
    W = Q // s
    if S == 1 and rh < H:
        h0 = H
        rows = None
    else:
        rows, h0 = _strip_rows(H, rh, S, x.device)
    if rw >= W:
        iw = _reflect101_index(W, rw, x.device)
        iq = (iw[:, None] * s + torch.arange(s, device=x.device)).reshape(-1)
        xr = x if rows is None else x.index_select(2, rows)
        xr = xr.index_select(3, iq).to(torch.float32)
        if rows is None:
            xr = _pad_rows(xr, rh, H)
        return xr.view(n, P * S, h0 + 2 * rh, xr.shape[-1]), h0
    Hs = S * (h0 + 2 * rh) if rows is not None else H + 2 * rh
    buf = torch.empty((n, P, Hs, Q + 2 * rw * s), dtype=torch.float32, device=x.device)
    if rows is None:
        buf[:, :, rh : rh + H, rw * s : rw * s + Q].copy_(x)
        lo, hi = rh, rh + H
    else:
        buf[:, :, :, rw * s : rw * s + Q].copy_(x.index_select(2, rows))
        lo, hi = 0, Hs
    if rw:
        px = buf[:, :, lo:hi].unflatten(-1, (W + 2 * rw, s))
        px[:, :, :, :rw].copy_(px[:, :, :, rw + 1 : 2 * rw + 1].flip(3))
        px[:, :, :, rw + W :].copy_(px[:, :, :, W - 1 : W - 1 + rw].flip(3))
    if rows is None:
        buf = _pad_rows(buf, rh, H, inplace=True)
    return buf.view(n, P * S, h0 + 2 * rh, buf.shape[-1]), h0


def _pad_rows(buf: torch.Tensor, rh: int, H: int, inplace: bool = False) -> torch.Tensor:
    """Fill (inplace) or add rh reflect-101 rows above and below planes (rh < H)."""
    if not inplace:
        full = buf.new_empty(buf.shape[:2] + (H + 2 * rh, buf.shape[-1]))
        full[:, :, rh : rh + H].copy_(buf)
        buf = full
    if rh:
        buf[:, :, :rh].copy_(buf[:, :, rh + 1 : 2 * rh + 1].flip(2))
        buf[:, :, rh + H :].copy_(buf[:, :, H - 1 : H - 1 + rh].flip(2))
    return buf


def _correlate_direct(xp: torch.Tensor, w: torch.Tensor, s: int) -> torch.Tensor:
    """xp (n, P, Hp, Qp) padded planes; w (n*P, 1, kh, kw); valid correlation per plane."""
    n, P, Hp, Qp = xp.shape
    kh, kw = w.shape[-2:]
    if kh == 1 and kw == 1:
        return xp * w.view(n, P, 1, 1)
    out = F.conv2d(xp.view(1, n * P, Hp, Qp), w, dilation=(1, s), groups=n * P)
    return out.view(n, P, out.shape[-2], out.shape[-1])


def _correlate_fft(xp: torch.Tensor, k: torch.Tensor, s: int, H: int, Q: int) -> torch.Tensor:
    """FFT correlation: xp (n, P, Hp, Qp), k (n, kh, kw) shared by the P planes of an image.

    The circular correlation of the padded planes is exact on the H x Q valid region when the
    FFT size is at least the padded size, so no extra zero border is needed.
    """
    n, P, Hp, Qp = xp.shape
    kh, kw = k.shape[-2:]
    if s > 1:  # dilate: tap v sits s columns from tap v-1
        kd = k.new_zeros((n, kh, (kw - 1) * s + 1))
        kd[:, :, ::s] = k
        k = kd
    size = (_fast_len(Hp), _fast_len(Qp))
    X = torch.fft.rfft2(xp, s=size)
    X.mul_(torch.fft.rfft2(k, s=size).conj_physical().unsqueeze(1))
    return torch.fft.irfft2(X, s=size)[..., :H, :Q]


def _as_planes(images, where="blur_batch"):
    """Validate the batch; return (x (N, P, H, Q), s, C, kind, dtype, layout)."""
    if isinstance(images, np.ndarray):
        if images.ndim != 4:
            raise ShiftlabError(
                f"{where}: numpy images must be (N, H, W, C), got shape {images.shape}"
                + (" (add a channel axis for grey: images[..., None])" if images.ndim == 3 else "")
            )
        _check_channels(images.shape[3], where, images.shape)
        if images.dtype not in (np.uint8, np.float32, np.float64):
            raise ShiftlabError(
                f"{where}: image dtype {images.dtype} not supported, expected uint8 or float (16-bit: convert first)"
            )
        a = np.ascontiguousarray(images)
        if a.dtype == np.float64:
            a = a.astype(np.float32)
        n, h, w, c = a.shape
        return torch.from_numpy(a).view(n, 1, h, w * c), c, c, "numpy", images.dtype, "interleaved"
    if isinstance(images, torch.Tensor):
        if images.ndim != 4:
            raise ShiftlabError(f"{where}: tensor images must be (N, C, H, W), got shape {tuple(images.shape)}")
        c1, cl = images.shape[1], images.shape[-1]
        # channels-last hint, unless it is (N, 4, H, 4): then say RGBA (below), the likely case
        if c1 not in (1, 3) and cl in (1, 3, 4) and not (c1 == 4 and cl == 4):
            raise ShiftlabError(
                f"{where}: tensor images must be (N, C, H, W), got shape {tuple(images.shape)} "
                "(channels last? use images.permute(0, 3, 1, 2))"
            )
        _check_channels(images.shape[1], where, images.shape)
        if images.dtype != torch.uint8 and images.dtype not in _FLOAT_TORCH:
            raise ShiftlabError(f"{where}: image dtype {images.dtype} not supported, expected uint8 or float")
        n, c, h, w = images.shape
        if c > 1 and not images.is_contiguous() and images.is_contiguous(memory_format=torch.channels_last):
            return images.permute(0, 2, 3, 1).reshape(n, 1, h, w * c), c, c, "torch", images.dtype, "interleaved"
        return images.contiguous(), 1, c, "torch", images.dtype, "planar"
    raise ShiftlabError(
        f"{where}: images must be a torch tensor (N, C, H, W) or numpy array (N, H, W, C), got {type(images).__name__}"
    )


def _stack_kernels(kernels, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validated kernels as one (N, kh, kw) float32 stack plus their supports.

    Every kernel is zero-padded around its centre to the largest height and width. Returns
    ``(stack, rh, rw)`` with ``rh``/``rw`` the int64 half sizes of each kernel's centred support
    (:func:`kernel_support`). A list is stacked one kernel shape at a time (one copy per shape),
    so the per-kernel Python work is a few attribute reads.
    """
    if isinstance(kernels, torch.Tensor):
        kernels = kernels.detach().cpu().numpy()
    if isinstance(kernels, np.ndarray) and kernels.dtype != object:
        k = kernels.astype(np.float32, copy=False)
        if k.ndim == 2:
            k = kernel_array(k)
            rh, rw = _supports(k[None])
            return np.broadcast_to(k[None], (n,) + k.shape), np.repeat(rh, n), np.repeat(rw, n)
        if k.ndim != 3:
            raise ShiftlabError(f"blur_batch: kernels must be (N, k, k) or (k, k), got shape {k.shape}")
        if k.shape[0] != n:
            raise ShiftlabError(f"blur_batch: {k.shape[0]} kernels for {n} images")
        if k.shape[1] % 2 == 0 or k.shape[2] % 2 == 0:
            raise ShiftlabError(f"blur_batch: kernel sides must be odd, got shape {k.shape[1:]}")
        if not np.isfinite(k).all():
            raise ShiftlabError("blur_batch: kernels have non-finite values")
        return (k,) + _supports(k)
    if isinstance(kernels, (Kernel, dict, str)):
        return _stack_kernels(kernel_array(kernels), n)
    if not isinstance(kernels, Sequence):
        raise ShiftlabError(f"blur_batch: kernels must be a list, an array or a tensor, got {type(kernels).__name__}")
    if len(kernels) != n:
        raise ShiftlabError(f"blur_batch: {len(kernels)} kernels for {n} images")
    arrs = kernels
    try:  # every kernel an array: stacked one shape class at a time, dtype checked per class
        shapes = [k.shape for k in arrs]
        classes = _shape_classes(shapes)
        mats = [np.concatenate([arrs[i] for i in ids]) for ids in classes.values()]
        fast = all(m.dtype == np.float32 for m in mats)
    except (AttributeError, TypeError, ValueError):
        fast = False
    if not fast:
        arrs = [
            k if type(k) is np.ndarray and k.dtype == np.float32 and k.ndim == 2 else kernel_array(k, name=f"kernels[{i}]")
            for i, k in enumerate(arrs)
        ]
        shapes = [k.shape for k in arrs]
        classes = _shape_classes(shapes)
        mats = None
    for sh, ids in classes.items():
        if len(sh) != 2:
            raise ShiftlabError(f"kernels[{ids[0]}]: kernel must be 2-D, got shape {tuple(sh)}")
        if sh[0] % 2 == 0 or sh[1] % 2 == 0:
            raise ShiftlabError(f"kernels[{ids[0]}]: kernel sides must be odd, got shape {tuple(sh)}")
    if mats is None:
        mats = [np.concatenate([arrs[i] for i in ids]) for ids in classes.values()]
    kh = max((s[0] for s in classes), default=1)
    kw = max((s[1] for s in classes), default=1)
    out = np.zeros((n, kh, kw), dtype=np.float32)
    bad = []
    for ((h, w), ids), a in zip(classes.items(), mats):
        a = a.reshape(len(ids), h, w)
        if not np.isfinite(a).all():
            bad.append(ids[int(np.argmin(np.isfinite(a).all(axis=(1, 2))))])
            continue
        oh, ow = (kh - h) >> 1, (kw - w) >> 1
        idx = slice(None) if len(ids) == n else np.asarray(ids, dtype=np.int64)
        out[idx, oh : oh + h, ow : ow + w] = a
    if bad:
        raise ShiftlabError(f"kernels[{min(bad)}]: kernel has non-finite values")
    rh, rw = _supports(out)
    return out, rh, rw


def _shape_classes(shapes: list) -> dict:
    """{shape: ascending list of the indices with that shape}, shapes in first-seen order."""
    classes = dict.fromkeys(shapes)
    if len(classes) == 1:
        classes[shapes[0]] = range(len(shapes))
        return classes
    for sh in classes:
        classes[sh] = []
    for i, sh in enumerate(shapes):
        classes[sh].append(i)
    return classes


@functools.lru_cache(maxsize=64)
def _dist(k: int) -> np.ndarray:
    """|i - k // 2| for i in range(k)."""
    return np.abs(np.arange(k) - k // 2)


def _supports(stack: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-kernel centred support half sizes (rh, rw) of an (N, kh, kw) stack (int64).

    ``stack`` must be finite. Non-zero rows and columns are found with two matrix products (numpy's boolean reductions
    over short axes are ~10x slower), then rh = max |row - centre| over non-zero rows.
    """
    n, kh, kw = stack.shape
    ab = np.abs(stack)  # finite: a row of |k| sums to > 0 iff it has a non-zero tap
    rows = (ab @ np.ones(kw, np.float32)) > 0  # (n, kh)
    cols = (np.ones((1, kh), np.float32) @ ab)[:, 0] > 0  # (n, kw)
    rh = (rows * _dist(kh)).max(axis=1, initial=0)
    rw = (cols * _dist(kw)).max(axis=1, initial=0)
    return rh.astype(np.int64), rw.astype(np.int64)


#: Planner cost model per device type, seconds of one conv call over ``lanes`` planes of
#: ``h0`` output rows: ``call_s + lanes * (px_s * padded plane size + mac_s * h0 * Q * taps)``,
#: ``lanes`` being the plane count rounded up to ``block``. CPU: fitted on 28x28 calls (input
#: conversion, reflect pad and ``conv2d``; torch 2.11, oneDNN, one thread of the project's
#: AVX-512 AMD EPYC): ~55 us per call, ~0.6 ns per padded pixel, ~42 G multiply-adds/s.
#: oneDNN's depthwise convolution works on blocks of 16 channels and a channel count that is
#: not a multiple of 16 takes a slow reorder path (a call of 18 planes costs ~35% more than one
#: of 32), so every direct call is filled up to whole blocks with spare copies of one of its
#: images whose results are dropped. ``max_bytes``: the most bytes of padded float planes per
#: call (larger calls are split). CUDA: not measured (no GPU was available).
_COST = {
    "cpu": dict(call_s=55e-6, px_s=0.6e-9, mac_s=0.024e-9, block=16, max_bytes=6 << 20),
    "cuda": dict(call_s=40e-6, px_s=0.005e-9, mac_s=0.0005e-9, block=1, max_bytes=1 << 30),
}
_STRIPS = (1, 2, 4, 8, 16)
_FINE_GROUPS = 48  # the planner's run search is quadratic in the number of support groups


def _call_cost(g: int, h: int, w: int, planes: int, H: int, Q: int, s: int, m: dict) -> tuple[float, int]:
    """Modelled seconds of one conv call over g images with support (h, w); best strip count."""
    taps = (2 * h + 1) * (2 * w + 1)
    qp = Q + 2 * w * s
    block = m["block"]
    best = (math.inf, 1)
    for S in _STRIPS:
        h0 = -(-H // S)
        if S > 1 and (h0 < 2 * h or h0 < 4):  # halos would dominate
            break
        lanes = -(-(g * planes * S) // block) * block
        t = m["call_s"] + lanes * ((h0 + 2 * h) * qp * m["px_s"] + h0 * Q * taps * m["mac_s"])
        if t < best[0]:
            best = (t, S)
    return best


def _call_cost_grid(g, h, w, planes: int, H: int, Q: int, s: int, m: dict) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_call_cost` element-wise over equal-shape int arrays: (seconds, strips)."""
    taps = (2 * h + 1) * (2 * w + 1)
    qp = Q + 2 * w * s
    block = m["block"]
    best = best_s = None
    hmin = int(h.min())
    for S in _STRIPS:
        h0 = -(-H // S)
        if S > 1 and (h0 < 2 * hmin or h0 < 4):
            break
        lanes = -(-(g * (planes * S)) // block) * block
        t = m["call_s"] + lanes * ((h0 + 2 * h) * qp * m["px_s"] + (h0 * Q * m["mac_s"]) * taps)
        if best is None:
            best, best_s = t, np.ones(t.shape, dtype=np.int64)
            continue
        better = (t < best) & (h0 >= 2 * h)
        best = np.where(better, t, best)
        best_s[better] = S
    return best, best_s


def _spare(g: int, lane: int, block: int) -> int:
    """Images to add to g images of ``lane`` planes each so that the plane count is a multiple
    of ``block`` without taking more blocks than ``g * lane`` planes already do; 0 if impossible."""
    q = block // math.gcd(block, lane)
    filled = -(-g // q) * q
    return filled - g if filled * lane <= -(-(g * lane) // block) * block else 0


def _plan(rh: np.ndarray, rw: np.ndarray, planes: int, H: int, Q: int, s: int, device_type: str, fft_min_taps):
    """Partition the batch into calls: list of ``(rh, rw, image indices, strips, spare, fft)``.

    Images are grouped by kernel support (rh, rw) (with more than ``_FINE_GROUPS`` distinct
    supports: by max(rh, rw) and whether rh <, = or > rw). The groups are ordered by max(rh, rw), then
    min(rh, rw), then rh, and cut into consecutive runs, one call per run with the union
    support, by dynamic programming on the modelled cost (:data:`_COST`): the cheapest such
    partition. Each direct call may cut its planes into horizontal strips (with halos) so that
    few large images still fill the conv's channel block, and gets ``spare`` extra images (copies)
    to fill its last block (:func:`_spare`). Calls are split to a byte cap. ``fft``: the call's support has at
    least ``fft_min_taps`` taps.
    """
    m = _COST.get(device_type, _COST["cuda"])
    block = m["block"]
    key = rh * 4096 + rw
    uniq, inv, counts = np.unique(key, return_inverse=True, return_counts=True)
    inv = inv.reshape(-1)
    G = len(uniq)
    urh, urw = uniq // 4096, uniq % 4096
    if G > _FINE_GROUPS:
        # many distinct supports: plan on coarse groups (max radius, orientation) with their
        # union support, keeping the run search small (within ~1% of the fine plan on 28x28)
        ckey = np.maximum(urh, urw) * 3 + np.sign(urw - urh) + 1
        ckeys, cinv = np.unique(ckey, return_inverse=True)
        cinv = cinv.reshape(-1)
        G = len(ckeys)
        crh = np.zeros(G, dtype=np.int64)
        crw = np.zeros(G, dtype=np.int64)
        np.maximum.at(crh, cinv, urh)
        np.maximum.at(crw, cinv, urw)
        counts = np.bincount(cinv, weights=counts, minlength=G).astype(np.int64)
        urh, urw, inv = crh, crw, cinv[inv]

    def cap_of(h, w):
        per_img = planes * 4 * (H + 2 * h) * (Q + 2 * w * s)
        return np.maximum(block, m["max_bytes"] // per_img // block * block)

    if G == 1:
        segs = [(0, 0, int(urh[0]), int(urw[0]), None)]
        members = np.arange(len(rh))
        starts = [0, len(rh)]
    else:
        order = np.lexsort((urh, np.minimum(urh, urw), np.maximum(urh, urw)))
        urh, urw, counts = urh[order], urw[order], counts[order]
        # union support and image count of every run i..j of groups (upper triangle)
        tri = np.arange(G)[None, :] >= np.arange(G)[:, None]
        uh = np.maximum.accumulate(np.where(tri, urh[None, :], 0), axis=1)
        uw = np.maximum.accumulate(np.where(tri, urw[None, :], 0), axis=1)
        cn = np.cumsum(np.where(tri, counts[None, :], 0), axis=1)
        chunks = np.maximum(1, -(-cn // cap_of(uh, uw)))
        cost, strips = _call_cost_grid(-(-cn // chunks), uh, uw, planes, H, Q, s, m)
        cost = (cost * chunks).T.tolist()  # cost[j][i]: run i..j
        best = [0.0] * (G + 1)
        arg = [0] * G
        for j in range(G):
            row = cost[j]
            bj, bi = math.inf, 0
            for i in range(j + 1):
                v = best[i] + row[i]
                if v < bj:
                    bj, bi = v, i
            best[j + 1], arg[j] = bj, bi
        segs = []
        j = G - 1
        while j >= 0:
            i = arg[j]
            segs.append((i, j, int(uh[i, j]), int(uw[i, j]), int(strips[i, j]) if chunks[i, j] == 1 else None))
            j = i - 1
        segs.reverse()
        rank = np.empty(G, dtype=np.int64)
        rank[order] = np.arange(G)
        members = np.argsort(rank[inv], kind="stable")  # images by group rank
        starts = np.concatenate(([0], np.cumsum(counts))).tolist()
    out = []
    for i, j, h, w, S in segs:
        idx = members[starts[i] : starts[j + 1]]
        fft = (2 * h + 1) * (2 * w + 1) >= fft_min_taps
        k = -(-len(idx) // int(cap_of(h, w)))
        step = -(-len(idx) // k)
        for a in range(0, len(idx), step):
            part = idx[a : a + step]
            if fft:
                S = 1
            elif S is None or k > 1:
                S = _call_cost(len(part), h, w, planes, H, Q, s, m)[1]
            out.append((h, w, part, S, 0 if fft else _spare(len(part), planes * S, block), fft))
    return out


_ROUND_MAGIC = 8388608.0  # 2**23: x + 2**23 rounds x to an integer, half to even (float32)


def _round_u8_(y: torch.Tensor) -> torch.Tensor:
    """Round float32 values half to even and saturate to [0, 255] (``cvRound`` + saturate_cast),
    in place; returns an int32 view whose values are the results (copy it into uint8).

    Adding 2**23 makes float32 round at unit precision (the FPU rounds half to even); after
    clamping to [2**23, 2**23 + 255] the low byte of each float's bit pattern is the result,
    and an int32 -> uint8 copy keeps exactly that byte. Clobbers ``y``.
    """
    y.add_(_ROUND_MAGIC).clamp_(_ROUND_MAGIC, _ROUND_MAGIC + 255.0)
    return y.view(torch.int32)


_HEAP_WARM = False


def _keep_heap() -> None:
    """Once per process: allocate and free one 16 MiB block so that glibc keeps freed heap.

    glibc's malloc serves blocks above its mmap threshold (128 KiB at start) with fresh
    ``mmap`` pages and trims the heap top whenever more than twice that threshold is free, so
    the megabyte-sized temporaries of every batch (padded planes, oneDNN's reorder buffers,
    outputs) are page-faulted in again on each call: ~1000 minor faults per 1024-image 28x28
    batch, ~40% of its time. Freeing an mmapped block raises both thresholds to its size (the
    documented dynamic-threshold rule; it never lowers them), after which such temporaries are
    reused from the heap and at most ~32 MiB of free heap is kept. No effect on other allocators.
    """
    global _HEAP_WARM
    if not _HEAP_WARM:
        _HEAP_WARM = True
        block = torch.empty(16 << 20, dtype=torch.uint8)
        del block


def blur_batch(images, kernels, *, method: str = "auto", fft_min_taps: int | None = None):
    """Blur every image of a batch with its own kernel, in torch on the images' device.

    Args:
        images: torch ``(N, C, H, W)`` uint8 or float (contiguous or channels-last), or numpy
            ``(N, H, W, C)`` uint8 or float; C is 1 or 3. The result has the same type, shape,
            dtype, device and memory format.
        kernels: one kernel per image -- a list of 2-D odd arrays (sizes may differ; each is
            padded around its centre), :class:`Kernel` objects or records; or an ``(N, k, k)``
            array/tensor; or a single ``(k, k)`` kernel for all images. Used as ``cv2.filter2D``
            kernels (correlation), not normalised.
        method: ``"direct"`` (grouped depthwise ``conv2d``), ``"fft"`` (FFT correlation) or
            ``"auto"``: FFT for calls whose kernel support has >= ``fft_min_taps`` taps (default
            :data:`FFT_MIN_TAPS` for the device type), direct otherwise.
        fft_min_taps: override the FFT threshold of ``method="auto"``.

    Images are grouped by the support of their kernel (the smallest centred rectangle holding
    the non-zero taps) so small kernels are not padded to the largest one; groups are merged
    when one call is cheaper than two. The batch is reordered once so that every call reads a
    contiguous slice, and put back in order once at the end. The batch is never transposed:
    NHWC arrays and channels-last tensors are convolved interleaved (dilation C), NCHW tensors
    per plane. Arithmetic is float32; uint8 output is rounded half to even and saturated (as
    OpenCV); float output is not clipped. The result depends only on the inputs (deterministic).
    """
    x, s, c, kind, dtype, layout = _as_planes(images)
    if method not in ("auto", "direct", "fft"):
        raise ShiftlabError(f"blur_batch: method must be 'auto', 'direct' or 'fft', got {method!r}")
    n, P, H, Q = x.shape
    stack, rh, rw = _stack_kernels(kernels, n)
    if n == 0 or H == 0 or Q == 0:
        return images.copy() if kind == "numpy" else images.clone()
    dev = x.device
    if dev.type == "cpu":
        _keep_heap()
    if fft_min_taps is None:
        fft_min_taps = FFT_MIN_TAPS.get(dev.type, FFT_MIN_TAPS["cuda"])
    if method != "auto":
        fft_min_taps = 0 if method == "fft" else math.inf
    calls = _plan(rh, rw, P, H, Q, s, dev.type, fft_min_taps)
    kc_h, kc_w = stack.shape[1] // 2, stack.shape[2] // 2
    to_u8 = x.dtype == torch.uint8
    W = Q // s
    # one gather puts every call's images (and spare copies filling its last block) in a row
    parts = [np.concatenate((idx, np.full(spare, idx[0], idx.dtype))) if spare else idx for _, _, idx, _, spare, _ in calls]
    src = np.concatenate(parts) if len(parts) > 1 else parts[0]
    inorder = len(src) == n and bool((src[1:] > src[:-1]).all()) if n > 1 else len(src) == 1
    xs = x if inorder else x.index_select(0, torch.from_numpy(src).to(dev))
    # results land in call order, converted while still in cache: uint8 via _round_u8_
    out = torch.empty((len(src), P, H, Q), dtype=torch.uint8 if to_u8 else torch.float32, device=dev)
    a = 0
    for (gh, gw, idx, S, spare, use_fft), part in zip(calls, parts):
        g = len(part)
        xg = xs[a : a + g]
        k = stack[part, kc_h - gh : kc_h + gh + 1, kc_w - gw : kc_w + gw + 1]
        k = torch.from_numpy(k).to(dev)
        if use_fft:
            xp, _ = _padded_float(xg, gh, gw, s, 1)
            y = _correlate_fft(xp, k, s, H, Q)
        else:
            if S == 1 and s == 1 and gh < H and gw < W:
                xp = F.pad(xg.to(torch.float32), (gw, gw, gh, gh), mode="reflect")
                h0 = H
            else:
                xp, h0 = _padded_float(xg, gh, gw, s, S)
            planes = P * S
            w = k.unsqueeze(1) if planes == 1 else k.repeat_interleave(planes, 0).unsqueeze(1)
            y = _correlate_direct(xp, w, s)
            if S > 1:
                y = y.reshape(g, P, S * h0, Q)[:, :, :H]
        out[a : a + g].copy_(_round_u8_(y) if to_u8 else y)
        a += g
    if inorder:
        y = out
    else:
        pos = np.empty(n, dtype=np.int64)
        off = 0
        for (_, _, idx, _, _, _), part in zip(calls, parts):
            pos[idx] = np.arange(off, off + len(idx))
            off += len(part)
        y = out.index_select(0, torch.from_numpy(pos).to(dev))
    if not to_u8 and kind != "numpy" and dtype != torch.float32:
        y = y.to(dtype)
    if kind == "numpy":
        res = y.reshape(n, H, W, c).cpu().numpy()
        return res if res.dtype == dtype else res.astype(dtype)
    if layout == "interleaved":
        return y.reshape(n, H, W, c).permute(0, 3, 1, 2)
    return y.reshape(n, c, H, W)
