"""Motion-blur kernels (synth/kernels.py): invariants, records, sampling, validation."""

import json
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shiftlab.errors import ShiftlabError
from shiftlab.synth import kernels as K

FAST = settings(max_examples=40, deadline=None)

linear_st = st.builds(
    K.Linear,
    length=st.floats(0.0, 30.0),
    angle=st.floats(-360.0, 360.0),
    direction=st.floats(-1.0, 1.0),
)
shake_st = st.builds(
    K.Shake,
    max_length=st.floats(0.0, 30.0),
    exposure=st.floats(0.05, 1.0),
    anxiety=st.floats(0.0, 0.02),
    jitter=st.floats(0.0, 10.0),
    centripetal=st.floats(0.0, 1.0),
    impulse_prob=st.floats(0.0, 0.3),
    n_steps=st.integers(2, 300),
    seed=st.integers(0, 2**32),
)
kernel_st = st.one_of(linear_st, shake_st)


def _centroid(k):
    k = k.astype(np.float64)
    ys, xs = np.indices(k.shape)
    c = k.shape[0] // 2
    return (k * xs).sum() / k.sum() - c, (k * ys).sum() / k.sum() - c


def _one_line(e):
    msg = str(e.value)
    assert "\n" not in msg and msg
    return msg


@FAST
@given(kernel_st)
def test_render_invariants(kern):
    k = kern.render()
    assert k.dtype == np.float32 and k.ndim == 2
    assert k.shape[0] == k.shape[1] and k.shape[0] % 2 == 1
    assert (k >= 0).all() and np.isfinite(k).all()
    assert abs(k.sum(dtype=np.float64) - 1.0) < 1e-5
    cx, cy = _centroid(k)
    assert abs(cx) < 1e-3 and abs(cy) < 1e-3
    # smallest odd square: some mass on the outer ring unless it is a delta
    if k.shape[0] > 1:
        ring = np.concatenate([k[0], k[-1], k[:, 0], k[:, -1]])
        assert ring.max() > 0
    assert kern.natural_size == k.shape[0]


@FAST
@given(kernel_st)
def test_record_json_round_trip_renders_identically(kern):
    rec = kern.to_record()
    text = json.dumps(rec)
    again = K.from_record(json.loads(text))
    assert again == kern
    assert np.array_equal(again.render(), kern.render())
    assert np.array_equal(K.as_kernel(text).render(), kern.render())


@FAST
@given(kernel_st, st.integers(0, 12))
def test_render_fixed_size_pads_or_crops(kern, half):
    size = 2 * half + 1
    k = kern.render(size)
    assert k.shape == (size, size)
    assert abs(k.sum(dtype=np.float64) - 1.0) < 1e-5 and (k >= 0).all()
    nat = kern.render()
    if size >= nat.shape[0]:
        o = (size - nat.shape[0]) // 2
        assert np.array_equal(k[o : o + nat.shape[0], o : o + nat.shape[0]], nat)
        outside = k.copy()
        outside[o : o + nat.shape[0], o : o + nat.shape[0]] = 0
        assert not outside.any()
    assert np.array_equal(K.vector(kern, size), k.ravel())


@pytest.mark.parametrize("L", [1, 3, 7, 15, 24])
def test_linear_horizontal_mass_on_centre_row(L):
    k = K.Linear(L, 0).render()
    c = k.shape[0] // 2
    assert abs(k[c].sum() - 1.0) < 1e-6
    cols = np.flatnonzero(k[c] > 0)
    extent = cols.max() - cols.min() + 1
    assert L <= extent <= L + 2
    # interior of the segment is flat (uniform weight along the path)
    inner = k[c, c - (L - 1) // 2 + 1 : c + (L - 1) // 2]
    if inner.size:
        assert np.allclose(inner, inner[0], rtol=1e-4)


@pytest.mark.parametrize("L", [3, 7.5, 12])
def test_linear_angle_90_is_transpose_of_0(L):
    assert np.array_equal(K.Linear(L, 90).render(), K.Linear(L, 0).render().T)
    # 180 degrees is the same symmetric segment, direction mirrored
    assert np.allclose(K.Linear(L, 180, 0.5).render(), K.Linear(L, 0, -0.5).render(), atol=1e-6)


def test_linear_length_zero_is_delta():
    assert np.array_equal(K.Linear(0, 33).render(), np.ones((1, 1), np.float32))
    assert np.array_equal(K.Shake(max_length=0).render(), np.ones((1, 1), np.float32))


def test_linear_direction_skews_weight_but_stays_centred():
    k = K.Linear(11, 0, 1.0).render()
    c = k.shape[0] // 2
    row = k[c]
    assert row[: c].sum() > row[c + 1 :].sum()  # heavy backward end, fading forward trail
    assert abs(_centroid(k)[0]) < 1e-3
    assert np.allclose(K.Linear(11, 0, -1.0).render(), k[:, ::-1], atol=1e-6)


def test_matches_albumentations_motion_kernel_horizontal():
    from albumentations.augmentations.blur.functional import create_motion_kernel

    for L in (3, 7, 11):
        a = create_motion_kernel(L, 0.0, 0.0, False, random.Random(0)).astype(np.float64)
        a /= a.sum()
        ours = K.Linear(L, 0).render().astype(np.float64)
        ca, co = a.shape[0] // 2, ours.shape[0] // 2
        assert a[ca].sum() == pytest.approx(1.0) and ours[co].sum() == pytest.approx(1.0, abs=1e-6)
        # same spread along the row: variances within the anti-aliasing tent (1/6 px^2) + slack
        xa = np.arange(a.shape[1]) - ca
        xo = np.arange(ours.shape[1]) - co
        va, vo = (a[ca] * xa**2).sum(), (ours[co] * xo**2).sum()
        assert abs(vo - va) < 0.5


def test_shake_exposure_smaller_extent_not_larger():
    for seed in range(6):
        sizes = [K.Shake(max_length=20, exposure=e, seed=seed).natural_size for e in (0.1, 0.3, 0.6, 1.0)]
        assert sizes == sorted(sizes)
        assert sizes[-1] <= 20 + 3


def test_shake_trajectory_deterministic_and_length():
    s = K.Shake(max_length=15, seed=42)
    t1, t2 = s.trajectory(), K.Shake(max_length=15, seed=42).trajectory()
    assert np.array_equal(t1, t2) and t1[0] == 0
    assert np.abs(np.diff(t1)).sum() == pytest.approx(15.0, rel=1e-9)
    assert not np.array_equal(t1, K.Shake(max_length=15, seed=43).trajectory())


@FAST
@given(st.integers(0, 2**40))
def test_sample_is_pure_function_of_seed(seed):
    # the global RNGs are disturbed differently before each draw: the kernel must not change
    random.seed(seed)
    np.random.seed(seed % 2**32)
    a = K.sample(seed)
    random.seed(seed + 1)
    np.random.seed((seed + 1) % 2**32)
    np.random.random(7)
    b = K.sample(seed)
    assert a == b and a.to_record() == b.to_record()
    assert np.array_equal(a.render(), b.render())
    assert K.sample(np.random.default_rng(seed)) == a  # int seed == a Generator seeded with it
    assert K.from_record(json.loads(json.dumps(a.to_record()))) == a  # the record alone rebuilds it


def test_sample_respects_ranges_and_families():
    cfg = {"families": {"linear": 1.0, "shake": 0.0}, "linear": {"length": [4.0, 5.0], "angle": 30.0}}
    for s in range(30):
        k = K.sample(s, cfg)
        assert isinstance(k, K.Linear) and 4.0 <= k.length <= 5.0 and k.angle == 30.0
    fams = {type(K.sample(s)).__name__ for s in range(40)}
    assert fams == {"Linear", "Shake"}
    sh = K.sample(0, {"families": {"shake": 1.0}, "shake": {"n_steps": 64.0, "exposure": [0.5, 0.5]}})
    assert isinstance(sh, K.Shake) and sh.n_steps == 64 and sh.exposure == 0.5


def test_check_sample_cfg_accepts_defaults_and_returns_merged():
    c = K.check_sample_cfg(None)
    assert c == K.DEFAULT_SAMPLE_CFG
    c = K.check_sample_cfg({"linear": {"length": [1, 2]}})
    assert c["linear"]["length"] == [1, 2] and c["shake"] == K.DEFAULT_SAMPLE_CFG["shake"]


@pytest.mark.parametrize(
    "cfg, needle",
    [
        ({"bogus": {}}, "bogus"),
        ({"linear": {"speed": [1, 2]}}, "linear.speed"),
        ({"linear": {"length": [5, 1]}}, "linear.length"),
        ({"linear": {"length": [1, 2, 3]}}, "linear.length"),
        ({"linear": {"length": [-3, 2]}}, "length"),
        ({"shake": {"exposure": [0.0, 1.0]}}, "exposure"),
        ({"families": {"blob": 1.0}}, "families.blob"),
        ({"families": {"linear": 0.0, "shake": 0.0}}, "families"),
        ({"families": {"linear": -1.0}}, "families.linear"),
        ({"linear": "wide"}, "linear"),
    ],
)
def test_check_sample_cfg_errors_one_line(cfg, needle):
    with pytest.raises(ShiftlabError) as e:
        K.check_sample_cfg(cfg)
    assert needle in _one_line(e)


def test_check_sample_cfg_catches_value_sample_would_hit_late():
    # shake weight 0: its (bad) range is never drawn, but still must be well formed
    cfg = {"families": {"linear": 1.0, "shake": 0.0}, "shake": {"anxiety": "lots"}}
    K.sample(0, cfg)  # a draw never reaches it ...
    with pytest.raises(ShiftlabError) as e:  # ... the full check does, and names the key
        K.check_sample_cfg(cfg)
    assert _one_line(e) == "sample cfg kernel: 'shake.anxiety' must be a number, got 'lots'"
    # a valid-looking range with a bad high end only
    with pytest.raises(ShiftlabError) as e:
        K.check_sample_cfg({"shake": {"exposure": [0.5, 1.5]}})
    assert "high end" in _one_line(e)


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda: K.Linear(-1, 0), "length"),
        (lambda: K.Linear(float("nan"), 0), "length"),
        (lambda: K.Linear(3, float("inf")), "angle"),
        (lambda: K.Linear(3, 0, 1.5), "direction"),
        (lambda: K.Linear("3", 0), "length"),
        (lambda: K.Linear(True, 0), "length"),
        (lambda: K.Shake(exposure=0.0), "exposure"),
        (lambda: K.Shake(n_steps=1), "n_steps"),
        (lambda: K.Shake(n_steps=10.5), "n_steps"),
        (lambda: K.Shake(seed=-1), "seed"),
        (lambda: K.from_record({"family": "disk", "r": 2}), "disk"),
        (lambda: K.from_record({"family": "linear", "length": 3, "angle": 0, "speed": 1}), "speed"),
        (lambda: K.from_record({"family": "linear", "length": 3}), "angle"),
        (lambda: K.from_record([1, 2]), "mapping"),
        (lambda: K.as_kernel("{not json"), "JSON"),
        (lambda: K.Linear(3, 0).render(4), "odd"),
        (lambda: K.vector(np.ones((4, 4)), 5), "odd"),
        (lambda: K.sample(-1), "seed"),
    ],
)
def test_bad_input_one_line_error(make, needle):
    with pytest.raises(ShiftlabError) as e:
        make()
    assert needle in _one_line(e)


def test_render_many_and_vector_of_array():
    ks = K.render_many([K.Linear(3, 0), K.Linear(5, 90).to_record()])
    assert [k.shape for k in ks] == [K.Linear(3, 0).render().shape, K.Linear(5, 90).render().shape]
    arr = K.Linear(9, 45).render()
    v = K.vector(arr, 3)
    assert v.shape == (9,) and abs(v.sum() - 1) < 1e-6
    assert np.array_equal(K.vector(K.Linear(9, 45), 3), v)
