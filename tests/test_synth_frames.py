"""The simulated video-frame target (synth/frames.py) and its wiring into prepare_images."""

import json

import numpy as np
import pytest

from shiftlab import config
from shiftlab.datasets import images, schema
from shiftlab.errors import ShiftlabError
from shiftlab.synth import blur, frames, kernels


def _sharp(n=6, h=20, w=24, c=1, seed=0):
    rng = np.random.default_rng(seed)
    x = np.zeros((n, c, h, w), np.uint8)
    x[:, :, 5:15, 6:18] = rng.integers(120, 255, (n, c, 10, 12), dtype=np.uint8)
    return x


def test_defaults_match_params_schema():
    # the frames section also selects the generator (and holds the independent one's own block)
    got = {k: v for k, v in config.defaults()["prepare_images"]["frames"].items() if k not in ("generator", "imagemagick")}
    assert got == frames.DEFAULTS
    assert config.defaults()["prepare_images"]["frames"]["generator"] == "imagemagick"


def test_simulate_is_deterministic_and_regenerates():
    x = _sharp()
    a, ra = frames.simulate(x, [3, 4, 5, 6, 7, 8], progress=False)
    b, rb = frames.simulate(x[::-1].copy(), [8, 7, 6, 5, 4, 3], progress=False)  # order does not matter
    assert np.array_equal(a, b[::-1]) and ra == rb[::-1]
    for i in range(len(x)):
        assert np.array_equal(frames.regenerate(ra[i], x[i]), a[i])
    assert a.dtype == np.uint8 and a.shape == x.shape
    assert not np.array_equal(a, x)


def test_frames_are_blurred_and_noisy():
    x = np.zeros((1, 1, 32, 32), np.uint8)
    x[0, 0, 16, 16] = 255  # a point: its image is the PSF (plus noise)
    cfg = {"photons": [1e9, 1e9], "read_noise": [0.0, 0.0]}  # noise off: the pure PSF
    y, rec = frames.simulate(x, [0], cfg, progress=False)
    assert (y[0, 0] > 0).sum() > 4  # spread over several pixels
    flat = np.full((1, 1, 32, 32), 128, np.uint8)
    z, _ = frames.simulate(flat, [0], progress=False)  # a flat grey field only gets noise
    assert 0.3 < z.astype(float).std() < 10 and abs(z.mean() - 128) < 2


def test_target_process_differs_from_synthesis_defaults():
    # the frame simulator's anxiety range lies outside the synthesis defaults: the synthesis
    # stage cannot draw the target's shake kernels
    syn = kernels.DEFAULT_SAMPLE_CFG["shake"]["anxiety"]
    tgt = frames.DEFAULTS["shake"]["anxiety"]
    assert tgt[0] > syn[1]
    rec = frames.draw(1234, 0, frames.check_cfg(None))
    assert syn[1] < rec["shake"]["anxiety"] and rec["defocus_sigma"] > 0 and rec["read_noise"] > 0


@pytest.mark.parametrize(
    "cfg, key",
    [
        ({"defocus": [1, 2]}, "prepare_images.frames.defocus"),
        ({"photons": [5, 1]}, "prepare_images.frames.photons"),
        ({"shake": {"anxiety": [-1, 0]}}, "prepare_images.frames.shake"),
        ({"apply": "maybe"}, "prepare_images.frames.apply"),
    ],
)
def test_bad_cfg_is_one_line_error_naming_key(cfg, key):
    with pytest.raises(ShiftlabError, match=key.replace(".", r"\.")) as e:
        frames.check_cfg(cfg)
    assert "\n" not in str(e.value)


def test_simulate_rejects_bad_images():
    with pytest.raises(ShiftlabError, match="uint8"):
        frames.simulate(np.zeros((1, 1, 8, 8), np.float32), [0], progress=False)
    with pytest.raises(ShiftlabError, match="indices"):
        frames.simulate(np.zeros((2, 1, 8, 8), np.uint8), [0], progress=False)


def test_prepare_applies_frames_to_target_rows_only():
    x = _sharp(8, 20, 24, 3).transpose(0, 2, 3, 1)
    ds = images.from_arrays(x, np.arange(8) % 2, ["source"] * 4 + ["target"] * 4)
    out = images.simulate_target_frames(ds, {"generator": "shiftlab"}, progress=False)
    schema.check(out)
    a, b = schema.chw_batch(ds), schema.chw_batch(out)
    assert np.array_equal(a[:4], b[:4])  # source rows untouched
    assert not np.array_equal(a[4:], b[4:])
    for i in range(4, 8):
        rec = json.loads(out[i]["recipe"])
        assert "frames" in rec
        assert np.array_equal(frames.regenerate(rec["frames"], a[i]), b[i])
    assert out["recipe"][:4] == ds["recipe"][:4]


def test_narrow_synthesis_section_is_one_kernel():
    c = config.defaults()["synth_blur_narrow"]
    ks = {json.dumps(kernels.sample(s, c["kernels"]).to_record(), sort_keys=True) for s in range(20)}
    assert len(ks) == 1
    assert blur._check_cfg(c)["kernels"]["linear"]["length"] == [9.0, 9.0]
