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
        if dtype == np.uint8:
            assert (out == v).all()
        else:
            np.testing.assert_allclose(out, v, atol=1e-6)
    assert (A.blur_cpu(imgs[0], ks[0]) == imgs[0]).all() if dtype == np.uint8 else True


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

    pal = Image.new("P", (6, 5))
    # a palette image as numpy is (H, W) uint8 of indices: 2-D grey is accepted, so the
    # documented way is converting first; RGBA conversion must be refused
    rgba = np.asarray(pal.convert("RGBA"))
    with pytest.raises(ShiftlabError):
        A.blur_cpu(rgba, K.Linear(3, 0))
    with pytest.raises(ShiftlabError):
        A.blur_cpu(np.asarray(Image.new("I;16", (6, 5))), K.Linear(3, 0))


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
