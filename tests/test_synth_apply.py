"""Apply paths (synth/apply.py): albumentations per image vs batched torch, layouts, errors."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from shiftlab.errors import ShiftlabError
from shiftlab.synth import apply as A
from shiftlab.synth import kernels as K

FAST = settings(max_examples=30, deadline=None)

kernel_st = st.one_of(
    st.builds(K.Linear, length=st.floats(0.0, 25.0), angle=st.floats(0.0, 180.0), direction=st.floats(-1.0, 1.0)),
    st.builds(K.Shake, max_length=st.floats(0.0, 25.0), exposure=st.floats(0.2, 1.0),
              n_steps=st.just(128), seed=st.integers(0, 1000)),
)


def _images(seed, n, h, w, c, dtype=np.uint8):
    rng = np.random.default_rng(seed)
    if dtype == np.uint8:
        return rng.integers(0, 256, (n, h, w, c), dtype=np.uint8)
    return rng.random((n, h, w, c), dtype=np.float32)


def _cpu(imgs, ks):
    return np.stack([A.blur_cpu(im, k) for im, k in zip(imgs, ks)])


def _close(a, b, dtype):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype
    if dtype == np.uint8:
        assert np.abs(a.astype(int) - b.astype(int)).max(initial=0) <= 1
    else:
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)


@FAST
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(1, 4),
    h=st.integers(1, 19),
    w=st.integers(1, 19),
    c=st.sampled_from([1, 3]),
    dtype=st.sampled_from([np.uint8, np.float32]),
    kern=st.lists(kernel_st, min_size=4, max_size=4),
)
def test_cpu_and_batch_agree_all_layouts(seed, n, h, w, c, dtype, kern):
    imgs = _images(seed, n, h, w, c, dtype)
    ks = kern[:n]
    ref = _cpu(imgs, ks)
    for method in ("direct", "fft", "auto"):
        nhwc = A.blur_batch(imgs, ks, method=method)
        _close(nhwc, ref, dtype)
        t = torch.from_numpy(imgs).permute(0, 3, 1, 2)
        nchw = A.blur_batch(t.contiguous(), ks, method=method)
        assert nchw.is_contiguous() and nchw.dtype == t.dtype
        _close(nchw.permute(0, 2, 3, 1).numpy(), ref, dtype)
        cl = A.blur_batch(t.contiguous(memory_format=torch.channels_last), ks, method=method)
        if c > 1:
            assert cl.is_contiguous(memory_format=torch.channels_last)
        _close(cl.permute(0, 2, 3, 1).numpy(), ref, dtype)


@pytest.mark.parametrize("shape", [(1, 9), (9, 1), (5, 3), (1, 1), (2, 2)])
@pytest.mark.parametrize("c", [1, 3])
def test_kernel_larger_than_image(shape, c):
    h, w = shape
    imgs = _images(7, 2, h, w, c)
    ks = [K.Linear(29, 30), K.Shake(max_length=40, anxiety=0.001, seed=3)]
    assert all(K.as_kernel(k).natural_size > max(h, w) for k in ks)
    ref = _cpu(imgs, ks)
    for method in ("direct", "fft"):
        _close(A.blur_batch(imgs, ks, method=method), ref, np.uint8)


def test_grey_2d_image_cpu():
    img = _images(1, 1, 12, 10, 1)[0, :, :, 0]
    out = A.blur_cpu(img, K.Linear(5, 0))
    assert out.shape == (12, 10) and out.dtype == np.uint8
    assert np.array_equal(out, A.blur_cpu(img[:, :, None], K.Linear(5, 0))[:, :, 0])


def test_direct_and_fft_agree_float():
    imgs = _images(3, 5, 23, 31, 3, np.float32)
    ks = [K.sample(i) for i in range(5)]
    d = A.blur_batch(imgs, ks, method="direct")
    f = A.blur_batch(imgs, ks, method="fft")
    np.testing.assert_allclose(d, f, atol=1e-5, rtol=0)
    # auto with a zero threshold takes the FFT path
    np.testing.assert_allclose(A.blur_batch(imgs, ks, fft_min_taps=1), f, atol=1e-6, rtol=0)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_constant_image_stays_constant(dtype):
    v = 137 if dtype == np.uint8 else 0.4
    imgs = np.full((3, 11, 14, 3), v, dtype=dtype)
    ks = [K.Linear(9, 20), K.Shake(max_length=18, seed=1), K.Linear(0, 0)]
    for method in ("direct", "fft"):
        out = A.blur_batch(imgs, ks, method=method)
        assert out.dtype == dtype and out.shape == imgs.shape
        if dtype == np.uint8:
            assert (out == v).all()
        else:
            np.testing.assert_allclose(out, v, atol=1e-6)
    for k in ks:  # the per-image CPU path too, for both dtypes (it takes float32 as well)
        one = A.blur_cpu(imgs[0], k)
        assert one.dtype == dtype and one.shape == imgs[0].shape
        if dtype == np.uint8:
            assert (one == v).all()
        else:
            np.testing.assert_allclose(one, v, atol=1e-6)


def test_delta_kernel_is_identity():
    imgs = _images(4, 3, 8, 9, 3)
    assert np.array_equal(A.blur_batch(imgs, [K.Linear(0, 0)] * 3), imgs)
    assert np.array_equal(A.blur_cpu(imgs[0], np.ones((1, 1), np.float32)), imgs[0])


def test_batch_result_independent_of_batch_composition():
    imgs = _images(5, 12, 16, 16, 3)
    ks = [K.sample(i) for i in range(12)]
    whole = A.blur_batch(imgs, ks, method="direct")
    for i in range(12):
        one = A.blur_batch(imgs[i : i + 1], ks[i : i + 1], method="direct")
        assert np.abs(one.astype(int) - whole[i : i + 1].astype(int)).max() <= 1
    perm = np.random.default_rng(0).permutation(12)
    shuffled = A.blur_batch(imgs[perm], [ks[i] for i in perm], method="direct")
    assert np.abs(shuffled.astype(int) - whole[perm].astype(int)).max() <= 1


def test_kernel_inputs_equivalent():
    imgs = _images(6, 3, 10, 12, 1)
    kern = K.Linear(7, 45)
    arr = kern.render()
    ref = A.blur_batch(imgs, [kern] * 3)
    assert np.array_equal(A.blur_batch(imgs, kern), ref)  # one kernel for all
    assert np.array_equal(A.blur_batch(imgs, arr), ref)
    assert np.array_equal(A.blur_batch(imgs, np.stack([arr] * 3)), ref)
    assert np.array_equal(A.blur_batch(imgs, torch.from_numpy(np.stack([arr] * 3))), ref)
    assert np.array_equal(A.blur_batch(imgs, [kern.to_record()] * 3), ref)
    # kernels of different sizes in one list are padded around their centre
    mixed = [K.Linear(3, 0), K.Linear(15, 90), K.Linear(0, 0)]
    out = A.blur_batch(imgs, mixed)
    _close(out, _cpu(imgs, mixed), np.uint8)


def test_float_dtypes_round_trip():
    imgs = _images(8, 2, 9, 9, 3, np.float32)
    ks = [K.Linear(5, 10), K.Linear(3, 80)]
    ref = A.blur_batch(imgs, ks)
    t = torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous()
    for dt, tol in ((torch.float64, 1e-6), (torch.float16, 2e-3), (torch.bfloat16, 2e-2)):
        out = A.blur_batch(t.to(dt), ks)
        assert out.dtype == dt
        np.testing.assert_allclose(out.float().permute(0, 2, 3, 1).numpy(), ref, atol=tol)
    out64 = A.blur_batch(imgs.astype(np.float64), ks)
    assert out64.dtype == np.float64
    np.testing.assert_allclose(out64, ref, atol=1e-6)


def test_kernel_blur_transform_matches_blur_cpu():
    import albumentations as alb

    img = _images(9, 1, 20, 17, 3)[0]
    kern = K.Shake(max_length=12, seed=5)
    t = A.KernelBlur(kern)
    out = alb.Compose([t])(image=img)["image"]
    assert np.array_equal(out, A.blur_cpu(img, kern))
    assert t.kernel == kern.to_record()
    assert np.array_equal(A.KernelBlur(kern.render())(image=img)["image"], out)


def test_kernel_support():
    k = K.Linear(7, 0).render(15)
    assert A.kernel_support(k) == (0, 4)
    assert A.kernel_support(k.T) == (4, 0)
    assert A.kernel_support(np.ones((1, 1))) == (0, 0)


def _one_line(e):
    msg = str(e.value)
    assert msg and "\n" not in msg
    return msg


@pytest.mark.parametrize(
    "call, needle",
    [
        (lambda: A.blur_cpu(np.zeros((5, 5, 4), np.uint8), K.Linear(3, 0)), "RGBA"),
        (lambda: A.blur_cpu(np.zeros((5, 5, 3), np.uint16), K.Linear(3, 0)), "uint16"),
        (lambda: A.blur_cpu(np.zeros((5, 5, 2), np.uint8), K.Linear(3, 0)), "channels"),
        (lambda: A.blur_cpu(np.zeros((1, 5, 5, 3), np.uint8), K.Linear(3, 0)), "shape"),
        (lambda: A.blur_cpu(np.zeros(5, np.uint8), K.Linear(3, 0)), "shape"),
        (lambda: A.blur_cpu([[1, 2]], K.Linear(3, 0)), "numpy"),
        (lambda: A.blur_cpu(np.zeros((5, 5), np.uint8), np.ones((2, 3))), "odd"),
        (lambda: A.blur_cpu(np.zeros((5, 5), np.uint8), np.full((3, 3), np.nan)), "non-finite"),
        (lambda: A.blur_cpu(np.zeros((5, 5), np.uint8), np.ones(3)), "2-D"),
        (lambda: A.blur_batch(np.zeros((2, 5, 5, 4), np.uint8), K.Linear(3, 0)), "RGBA"),
        (lambda: A.blur_batch(torch.zeros((2, 4, 5, 5), dtype=torch.uint8), K.Linear(3, 0)), "RGBA"),
        (lambda: A.blur_batch(np.zeros((2, 5, 5, 3), np.uint16), K.Linear(3, 0)), "uint16"),
        (lambda: A.blur_batch(torch.zeros((2, 3, 5, 5), dtype=torch.int16), K.Linear(3, 0)), "int16"),
        (lambda: A.blur_batch(np.zeros((5, 5, 3), np.uint8), K.Linear(3, 0)), "(N, H, W, C)"),
        (lambda: A.blur_batch(torch.zeros((3, 5, 5), dtype=torch.uint8), K.Linear(3, 0)), "(N, C, H, W)"),
        (lambda: A.blur_batch(torch.zeros((2, 5, 5, 3), dtype=torch.uint8), K.Linear(3, 0)), "channels last"),
        (lambda: A.blur_batch([np.zeros((5, 5, 3), np.uint8)], K.Linear(3, 0)), "list"),
        (lambda: A.blur_batch(np.zeros((2, 5, 5, 3), np.uint8), [K.Linear(3, 0)]), "1 kernels for 2 images"),
        (lambda: A.blur_batch(np.zeros((2, 5, 5, 3), np.uint8), np.ones((3, 3, 3))), "3 kernels for 2 images"),
        (lambda: A.blur_batch(np.zeros((2, 5, 5, 3), np.uint8), np.ones((2, 4, 3))), "odd"),
        (lambda: A.blur_batch(np.zeros((2, 5, 5, 3), np.uint8), [np.ones((3, 3), np.float32), np.ones((2, 2), np.float32)]), "kernels[1]"),
        (lambda: A.blur_batch(np.zeros((1, 5, 5, 3), np.uint8), np.full((1, 3, 3), np.inf)), "non-finite"),
        (lambda: A.blur_batch(np.zeros((2, 5, 5, 3), np.uint8), [np.ones((3, 3)), np.full((3, 3), np.nan)]), "kernels[1]"),
        (lambda: A.blur_batch(np.zeros((1, 5, 5, 3), np.uint8), K.Linear(3, 0), method="spline"), "method"),
        (lambda: A.KernelBlur(np.ones((4, 3))), "odd"),
        (lambda: A.KernelBlur(K.Linear(3, 0))(image=np.zeros((5, 5, 4), np.uint8)), "RGBA"),
    ],
)
def test_odd_modes_and_bad_input_one_line_error(call, needle):
    with pytest.raises(ShiftlabError) as e:
        call()
    assert needle in _one_line(e)


def test_palette_image_via_pil_is_rejected_or_converted():
    from PIL import Image

    pal = Image.new("P", (6, 5), color=1)
    pal.putpalette([0, 0, 0, 200, 10, 30] + [0] * (3 * 254))  # index 1 = (200, 10, 30)
    k = K.Linear(3, 0)
    # the PIL palette image itself is refused, with the reason
    with pytest.raises(ShiftlabError, match=r"^blur_cpu: image must be a numpy array, got Image$"):
        A.blur_cpu(pal, k)
    # as numpy a palette image is its (H, W) indices, which would blur as grey: the documented way
    # is converting it first, and then the colours (not the indices) are blurred
    assert np.asarray(pal).shape == (5, 6) and (np.asarray(pal) == 1).all()
    out = A.blur_cpu(np.asarray(pal.convert("RGB")), k)
    assert out.shape == (5, 6, 3) and out.dtype == np.uint8 and (out == [200, 10, 30]).all()
    # converting to RGBA, or a 16-bit image, is refused with the reason
    with pytest.raises(ShiftlabError, match=r"^blur_cpu: RGBA image \(4 channels, shape \(5, 6, 4\)\) not supported: "
                                            r"drop or composite the alpha channel first$"):
        A.blur_cpu(np.asarray(pal.convert("RGBA")), k)
    with pytest.raises(ShiftlabError, match=r"^blur_cpu: image dtype uint16 not supported, expected uint8 or float32 "
                                            r"\(16-bit images: convert to uint8 or float32 in \[0, 1\] first\)$"):
        A.blur_cpu(np.asarray(Image.new("I;16", (6, 5))), k)


def test_empty_batch():
    imgs = np.zeros((0, 5, 5, 3), np.uint8)
    out = A.blur_batch(imgs, [])
    assert out.shape == (0, 5, 5, 3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    imgs = _images(10, 6, 21, 18, 3)
    ks = [K.sample(i) for i in range(5)] + [K.Linear(41, 20)]
    t = torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous()
    ref = A.blur_batch(t, ks)
    for method in ("direct", "fft", "auto"):
        out = A.blur_batch(t.cuda(), ks, method=method)
        assert out.device.type == "cuda"
        assert (out.cpu().int() - ref.int()).abs().max() <= 1


# --------------------------------------------------------------- batched path internals (perf work)
sparse_kernel_st = st.builds(
    lambda h, w, seed, density, scale: np.where(
        np.random.default_rng(seed).random((2 * h + 1, 2 * w + 1)) < density,
        np.random.default_rng(seed + 1).normal(size=(2 * h + 1, 2 * w + 1)) * scale,
        0.0,
    ).astype(np.float32),
    st.integers(0, 6), st.integers(0, 6), st.integers(0, 10_000), st.floats(0.0, 0.3),
    st.sampled_from([1.0, 1e-20, 1e20]),
)


@FAST
@given(ks=st.lists(sparse_kernel_st, min_size=1, max_size=12))
def test_stacked_supports_match_kernel_support(ks):
    stack, rh, rw = A._stack_kernels(ks, len(ks))
    kh, kw = stack.shape[1:]
    for i, k in enumerate(ks):
        assert (int(rh[i]), int(rw[i])) == A.kernel_support(k)
        oh, ow = (kh - k.shape[0]) // 2, (kw - k.shape[1]) // 2
        assert np.array_equal(stack[i, oh : oh + k.shape[0], ow : ow + k.shape[1]], k)
        assert np.count_nonzero(stack[i]) == np.count_nonzero(k)


def test_kernel_list_fast_and_slow_paths_agree():
    recs = [K.sample(i) for i in range(9)]
    arrs = [r.render() for r in recs]
    fast = A._stack_kernels(arrs, 9)
    mixed = [arrs[0], arrs[1].astype(np.float64), recs[2], recs[3].to_record(), torch.from_numpy(arrs[4])] + arrs[5:]
    slow = A._stack_kernels(mixed, 9)
    for a, b in zip(fast, slow):
        assert np.array_equal(a, b)


@FAST
@given(
    sup=st.lists(st.tuples(st.integers(0, 12), st.integers(0, 12)), min_size=1, max_size=200),
    planes=st.sampled_from([1, 3]),
    hw=st.sampled_from([(28, 28), (9, 40), (224, 224)]),
    s=st.sampled_from([1, 3]),
)
def test_plan_covers_every_image_once_and_fills_blocks(sup, planes, hw, s):
    rh = np.array([a for a, _ in sup], dtype=np.int64)
    rw = np.array([b for _, b in sup], dtype=np.int64)
    H, W = hw
    calls = A._plan(rh, rw, planes, H, W * s, s, "cpu", 33 * 33)
    seen = np.concatenate([idx for _, _, idx, _, _, _ in calls])
    assert np.array_equal(np.sort(seen), np.arange(len(sup)))
    for h, w, idx, S, spare, fft in calls:
        assert (rh[idx] <= h).all() and (rw[idx] <= w).all()  # the call's support holds every kernel
        if not fft:
            lanes, filled = len(idx) * planes * S, (len(idx) + spare) * planes * S
            assert filled <= -(-lanes // 16) * 16  # spare copies never add a channel block
            if 16 % (planes * S) == 0:
                assert filled % 16 == 0
            elif spare:
                assert filled % 16 == 0
            assert S == 1 or -(-H // S) >= max(4, 2 * h)


def test_uint8_is_round_half_even_and_saturated_float_result():
    # exact .5 results: (1 + 2) / 2 = 1.5 -> 2 and (2 + 3) / 2 = 2.5 -> 2 (half to even)
    img = np.array([[1, 2, 3, 4, 5, 6, 7, 8]], np.uint8)[None, :, :, None]
    half = np.array([[0.5, 0.5, 0.0]], np.float32)
    out = A.blur_batch(img, half)[0, 0, :, 0]
    assert out.tolist() == [2, 2, 2, 4, 4, 6, 6, 8]  # x[0] reflects x[1]: (2 + 1) / 2 = 1.5 -> 2
    assert np.array_equal(out, A.blur_cpu(img[0], half)[0, :, 0])
    # saturation both ways, and the uint8 result is exactly rint-and-clip of the float one
    imgs = _images(11, 40, 13, 13, 1)
    ks = [K.sample(i) for i in range(38)] + [np.full((1, 1), 2.0, np.float32), np.full((3, 3), -1.0, np.float32)]
    u8 = A.blur_batch(imgs, ks)
    f32 = A.blur_batch(imgs.astype(np.float32), ks)
    assert np.array_equal(u8, np.clip(np.rint(f32), 0, 255).astype(np.uint8))
    assert (u8[38] == np.clip(imgs[38].astype(int) * 2, 0, 255)).all() and (u8[39] == 0).all()


def test_many_support_groups_match_cpu_every_layout():
    # more distinct supports than the fine planner takes (coarse groups), spare-filled blocks
    # and (with a low threshold) the FFT path in one batch
    imgs = _images(12, 70, 17, 17, 3)
    ks = [np.full((2 * (i // 9) + 1, 2 * (i % 9) + 1), 1 / ((2 * (i // 9) + 1) * (2 * (i % 9) + 1)), np.float32)
          for i in range(63)] + [K.sample(i) for i in range(6)] + [K.Linear(45, 30)]
    rh, rw = A._stack_kernels(ks, len(ks))[1:]
    assert len(set(zip(rh.tolist(), rw.tolist()))) > A._FINE_GROUPS
    ref = _cpu(imgs, ks)
    _close(A.blur_batch(imgs, ks), ref, np.uint8)
    assert any(c[5] for c in A._plan(rh, rw, 1, 17, 51, 3, "cpu", 300)) and any(c[4] for c in A._plan(rh, rw, 1, 17, 51, 3, "cpu", 300))
    _close(A.blur_batch(imgs, ks, fft_min_taps=300), ref, np.uint8)
    t = torch.from_numpy(imgs).permute(0, 3, 1, 2)
    _close(A.blur_batch(t.contiguous(), ks).permute(0, 2, 3, 1).numpy(), ref, np.uint8)
    _close(A.blur_batch(t.contiguous(memory_format=torch.channels_last), ks).permute(0, 2, 3, 1).numpy(), ref, np.uint8)
    # deterministic: each row's pixels do not depend on the rest of the batch, its order or the threads
    whole = A.blur_batch(imgs, ks)
    halves = np.concatenate([A.blur_batch(imgs[:35], ks[:35]), A.blur_batch(imgs[35:], ks[35:])])
    assert np.array_equal(halves, whole)
    assert np.array_equal(A.blur_batch(imgs[::-1].copy(), ks[::-1])[::-1], whole)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1 if old > 1 else 2)
        assert np.array_equal(A.blur_batch(imgs, ks), whole)
    finally:
        torch.set_num_threads(old)


def test_few_images_cut_into_strips_match_cpu():
    imgs = _images(13, 2, 64, 61, 1)
    ks = [K.Linear(3, 0), K.Linear(5, 90)]
    rh, rw = A._stack_kernels(ks, 2)[1:]
    assert any(c[3] > 1 for c in A._plan(rh, rw, 1, 64, 61, 1, "cpu", 33 * 33))
    _close(A.blur_batch(imgs, ks), _cpu(imgs, ks), np.uint8)
    t = torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous()
    _close(A.blur_batch(t, ks).permute(0, 2, 3, 1).numpy(), _cpu(imgs, ks), np.uint8)
