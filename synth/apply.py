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

# Cost model for merging kernel-support groups (one conv call per group): a group of n images
# is folded into a larger existing support when the extra multiply-adds cost less than one
# call's overhead. Seconds per call and multiply-adds per second, rough per device type.
_CALL_OVERHEAD_S = {"cpu": 40e-6, "cuda": 60e-6}
_MACS_PER_S = {"cpu": 15e9, "cuda": 500e9}

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


def _stack_kernels(kernels, n: int) -> np.ndarray:
    """(N, kh, kw) float32 stack, every kernel zero-padded around its centre to the largest size."""
    if isinstance(kernels, torch.Tensor):
        kernels = kernels.detach().cpu().numpy()
    if isinstance(kernels, np.ndarray) and kernels.dtype != object:
        k = kernels.astype(np.float32, copy=False)
        if k.ndim == 2:
            k = np.broadcast_to(kernel_array(k)[None], (n,) + k.shape)
        if k.ndim != 3:
            raise ShiftlabError(f"blur_batch: kernels must be (N, k, k) or (k, k), got shape {k.shape}")
        if k.shape[0] != n:
            raise ShiftlabError(f"blur_batch: {k.shape[0]} kernels for {n} images")
        if k.shape[1] % 2 == 0 or k.shape[2] % 2 == 0:
            raise ShiftlabError(f"blur_batch: kernel sides must be odd, got shape {k.shape[1:]}")
        if not np.isfinite(k).all():
            raise ShiftlabError("blur_batch: kernels have non-finite values")
        return k
    if isinstance(kernels, (Kernel, dict, str)):
        return _stack_kernels(kernel_array(kernels), n)
    if not isinstance(kernels, Sequence):
        raise ShiftlabError(f"blur_batch: kernels must be a list, an array or a tensor, got {type(kernels).__name__}")
    if len(kernels) != n:
        raise ShiftlabError(f"blur_batch: {len(kernels)} kernels for {n} images")
    arrs = []
    for i, k in enumerate(kernels):
        if not (isinstance(k, np.ndarray) and k.dtype == np.float32 and k.ndim == 2):
            k = kernel_array(k, name=f"kernels[{i}]")
        elif k.shape[0] % 2 == 0 or k.shape[1] % 2 == 0:
            raise ShiftlabError(f"kernels[{i}]: kernel sides must be odd, got shape {k.shape}")
        arrs.append(k)
    kh = max((a.shape[0] for a in arrs), default=1)
    kw = max((a.shape[1] for a in arrs), default=1)
    out = np.zeros((n, kh, kw), dtype=np.float32)
    for i, a in enumerate(arrs):
        oh, ow = (kh - a.shape[0]) >> 1, (kw - a.shape[1]) >> 1
        out[i, oh : oh + a.shape[0], ow : ow + a.shape[1]] = a
    if not np.isfinite(out).all():
        bad = int(np.nonzero(~np.isfinite(out).all(axis=(1, 2)))[0][0])
        raise ShiftlabError(f"kernels[{bad}]: kernel has non-finite values")
    return out


def _supports(stack: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-kernel centred support half sizes (rh, rw) of an (N, kh, kw) stack."""
    n, kh, kw = stack.shape
    nz = stack != 0
    dh = np.abs(np.arange(kh) - kh // 2)
    dw = np.abs(np.arange(kw) - kw // 2)
    rh = np.where(nz.any(axis=2), dh, 0).max(axis=1, initial=0)
    rw = np.where(nz.any(axis=1), dw, 0).max(axis=1, initial=0)
    return rh.astype(np.int64), rw.astype(np.int64)


#: Planner cost model per device type: seconds of fixed cost per conv call, multiply-adds per
#: second, the channel block a depthwise conv vectorises over (a call is charged for whole
#: blocks: oneDNN computes 16 channels at a time, so 3 channels cost as much as 16), and the
#: most bytes of padded float planes per call (larger calls are split; they fall out of cache).
_COST = {
    "cpu": dict(call_s=50e-6, macs_per_s=25e9, block=16, max_bytes=6 << 20),
    "cuda": dict(call_s=40e-6, macs_per_s=2e12, block=1, max_bytes=1 << 30),
}
_STRIPS = (1, 2, 4, 8, 16)


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
        t = m["call_s"] + lanes * (h0 + 2 * h) * qp * taps / m["macs_per_s"]
        if t < best[0]:
            best = (t, S)
    return best


def _plan(rh: np.ndarray, rw: np.ndarray, planes: int, H: int, Q: int, s: int, device_type: str):
    """Partition the batch into conv calls: list of (rh, rw, image indices, strips).

    Images are grouped by kernel support; groups sorted by support area are swept once, and a
    group joins the current call when one call with the union support is modelled cheaper than
    two (:data:`_COST`). Each call may cut its planes into horizontal strips (with halos) so
    that few large images still fill the conv's channel block. Calls are split to a byte cap.
    """
    m = _COST.get(device_type, _COST["cuda"])
    key = rh * 4096 + rw
    uniq, inv, counts = np.unique(key, return_inverse=True, return_counts=True)
    inv = inv.reshape(-1)
    urh, urw = (uniq // 4096).tolist(), (uniq % 4096).tolist()
    counts = counts.tolist()
    area = [(2 * a + 1) * (2 * b + 1) for a, b in zip(urh, urw)]
    order = sorted(range(len(uniq)), key=lambda g: (area[g], urh[g]))

    def cost(g, h, w):
        return _call_cost(g, h, w, planes, H, Q, s, m)[0]

    calls = []  # [rh, rw, [group ids], count, cost]
    for g in order:
        h, w, c = urh[g], urw[g], counts[g]
        cg = cost(c, h, w)
        if calls:
            ch, cw, gids, cc, ccost = calls[-1]
            uh, uw = max(ch, h), max(cw, w)
            cu = cost(cc + c, uh, uw)
            if cu <= ccost + cg:
                calls[-1] = [uh, uw, gids + [g], cc + c, cu]
                continue
        calls.append([h, w, [g], c, cg])
    out = []
    for h, w, gids, _, _ in calls:
        idx = np.nonzero(inv == gids[0])[0] if len(gids) == 1 else np.nonzero(np.isin(inv, gids))[0]
        per_img = planes * 4 * (H + 2 * h) * (Q + 2 * w * s)
        cap = max(m["block"], m["max_bytes"] // per_img)
        for i in range(0, len(idx), cap):
            part = idx[i : i + cap]
            out.append((h, w, part, _call_cost(len(part), h, w, planes, H, Q, s, m)[1]))
    return out


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
    when one call is cheaper than two. The batch is never transposed: NHWC arrays and
    channels-last tensors are convolved interleaved (dilation C), NCHW tensors per plane.
    Arithmetic is float32; uint8 output is rounded half to even and saturated (as OpenCV);
    float output is not clipped.
    """
    x, s, c, kind, dtype, layout = _as_planes(images)
    if method not in ("auto", "direct", "fft"):
        raise ShiftlabError(f"blur_batch: method must be 'auto', 'direct' or 'fft', got {method!r}")
    n, P, H, Q = x.shape
    stack = _stack_kernels(kernels, n)
    if n == 0 or H == 0 or Q == 0:
        return images.copy() if kind == "numpy" else images.clone()
    dev = x.device
    if fft_min_taps is None:
        fft_min_taps = FFT_MIN_TAPS.get(dev.type, FFT_MIN_TAPS["cuda"])
    rh, rw = _supports(stack)
    calls = _plan(rh, rw, P, H, Q, s, dev.type)
    kc_h, kc_w = stack.shape[1] // 2, stack.shape[2] // 2
    to_u8 = x.dtype == torch.uint8
    out = torch.empty((n, P, H, Q), dtype=torch.uint8 if to_u8 else torch.float32, device=dev)
    for gh, gw, idx, S in calls:
        whole = len(idx) == n
        it = None if whole else torch.from_numpy(idx).to(dev)
        xg = x if whole else x.index_select(0, it)
        k = stack if whole else stack[idx]
        k = torch.from_numpy(np.ascontiguousarray(k[:, kc_h - gh : kc_h + gh + 1, kc_w - gw : kc_w + gw + 1])).to(dev)
        taps = (2 * gh + 1) * (2 * gw + 1)
        use_fft = method == "fft" or (method == "auto" and taps >= fft_min_taps)
        if use_fft:
            S = 1
        xp, h0 = _padded_float(xg, gh, gw, s, S)
        g = len(idx)
        if use_fft:
            y = _correlate_fft(xp, k, s, H, Q)
        else:
            planes = P * S
            w = k.unsqueeze(1) if planes == 1 else k.repeat_interleave(planes, 0).unsqueeze(1)
            y = _correlate_direct(xp, w, s)
            if S > 1:
                y = y.reshape(g, P, S * h0, Q)[:, :, :H]
        if to_u8:
            y = y.round_().clamp_(0, 255)
        if whole:
            out.copy_(y)
        else:
            out.index_copy_(0, it, y.to(out.dtype))
    if kind == "numpy":
        res = out.view(n, H, Q // c, c).cpu().numpy()
        return res if res.dtype == dtype else res.astype(dtype)
    if not to_u8:
        out = out.to(dtype)
    if layout == "interleaved":
        return out.view(n, H, Q // c, c).permute(0, 3, 1, 2)
    return out.view(n, c, H, Q)
