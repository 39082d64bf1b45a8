"""The independent video-frame target (datasets/videotarget.py, generator imagemagick) and its wiring."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import yaml

from shiftlab import cli, config
from shiftlab.datasets import images, schema, videotarget
from shiftlab.errors import ShiftlabError


def _sharp(n=5, h=20, w=24, c=1, seed=0):
    rng = np.random.default_rng(seed)
    x = np.zeros((n, c, h, w), np.uint8)
    t, l = h // 5, w // 5
    x[:, :, t:h - t, l:w - l] = rng.integers(90, 255, (n, c, h - 2 * t, w - 2 * l), dtype=np.uint8)
    return x


def test_defaults_match_params_schema():
    d = config.defaults(config.SCHEMA["prepare_images"])["frames"]
    assert d["generator"] == "imagemagick"  # the independent generator is the default; shiftlab stays an option
    assert d["imagemagick"] == videotarget.DEFAULTS
    assert videotarget.check_cfg(d["imagemagick"]) == videotarget.DEFAULTS


@pytest.mark.parametrize("codec, c, h, w", [("h264", 1, 20, 24), ("h264", 3, 17, 23), ("jpeg", 1, 20, 24),
                                           ("jpeg", 3, 16, 16), ("none", 1, 9, 11)])
def test_deterministic_and_regenerates_from_recipe(codec, c, h, w):
    x = _sharp(5, h, w, c)
    cfg = {"codec": codec, "severity": [1, 2]}
    a, ra = videotarget.simulate(x, [3, 4, 5, 6, 7], cfg, seed=11, progress=False)
    b, rb = videotarget.simulate(x[::-1].copy(), [7, 6, 5, 4, 3], cfg, seed=11, progress=False)  # order-free
    assert a.dtype == np.uint8 and a.shape == x.shape
    assert a.tobytes() == b[::-1].tobytes() and ra == rb[::-1]
    for i in range(len(x)):
        assert videotarget.regenerate(ra[i], x[i]).tobytes() == a[i].tobytes()  # same bytes from the recipe alone
    assert not np.array_equal(a, x)
    c2, _ = videotarget.simulate(x, [3, 4, 5, 6, 7], cfg, seed=12, progress=False)
    assert not np.array_equal(a, c2)  # the seed matters


def test_recipe_records_generator_versions_and_parameters():
    x = _sharp(3)
    _, recs = videotarget.simulate(x, [0, 1, 2], {"severity": [2], "crf": [20, 22]}, seed=1, progress=False)
    for r in map(json.loads, recs):
        assert r["generator"] == "imagemagick"
        v = r["versions"]
        assert {"imagemagick", "wand", "pyav", "libavcodec", "x264", "numpy"} <= set(v)
        assert v["x264"].startswith("core ") and "Q" in v["imagemagick"]
        assert r["blur"]["op"] == "MagickMotionBlurImage"
        assert (r["blur"]["radius"], r["blur"]["sigma"]) == videotarget.SEVERITY[2] == (15.0, 5.0)
        assert -45 <= r["blur"]["angle"] <= 45
        assert r["codec"]["encoder"] == "libx264" and 20 <= r["codec"]["crf"] <= 22
        assert r["codec"]["clip"] == "1 frame (IDR)"
        assert r["noise"]["photons"] > 0 and r["seed"] >= 0
    _, jrec = videotarget.simulate(x[:1], [0], {"codec": "jpeg"}, progress=False)
    j = json.loads(jrec[0])
    assert j["codec"]["encoder"] == "pillow" and "pillow" in j["versions"] and "libjpeg" in j["versions"]


def test_blur_streaks_a_point_and_noise_codec_leave_flat_grey_nearly_flat():
    x = np.zeros((1, 1, 32, 32), np.uint8)
    x[0, 0, 16, 16] = 255
    y, _ = videotarget.simulate(x, [0], {"codec": "none", "noise": {"photons": [1e9, 1e9], "read_noise": [0, 0]}},
                                progress=False)
    assert (y[0, 0] > 0).sum() >= 3  # a streak, not a point
    flat = np.full((1, 1, 32, 32), 128, np.uint8)
    z, _ = videotarget.simulate(flat, [0], progress=False)
    assert abs(float(z.mean()) - 128) < 3 and 0 < z.std() < 12


def test_module_imports_nothing_from_the_synthesis_fresh_interpreter():
    code = textwrap.dedent("""
        import sys
        import numpy as np
        from shiftlab.datasets import videotarget, images
        x = np.zeros((2, 1, 12, 12), np.uint8); x[:, :, 3:9, 3:9] = 200
        videotarget.simulate(x, [0, 1], progress=False)
        videotarget.simulate(x, [0, 1], {"codec": "jpeg"}, progress=False)
        ds = images.from_arrays(x.transpose(0, 2, 3, 1), [0, 1], ["source", "target"])
        images.simulate_target_frames(ds, {"generator": "imagemagick"}, progress=False)
        bad = sorted(m for m in sys.modules if m.startswith("shiftlab.synth") or m == "synth" or m.startswith("synth."))
        print("SYNTH:" + ",".join(bad))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "SYNTH:\n" in out.stdout, out.stdout


def test_dispatch_in_prepare_images_and_old_generator_unchanged():
    x = _sharp(8, 20, 24, 1).transpose(0, 2, 3, 1)
    ds = images.from_arrays(x, np.arange(8) % 2, ["source"] * 4 + ["target"] * 4)
    new = images.simulate_target_frames(ds, {"generator": "imagemagick", "seed": 5}, progress=False)
    schema.check(new)
    a, b = schema.chw_batch(ds), schema.chw_batch(new)
    assert np.array_equal(a[:4], b[:4]) and not np.array_equal(a[4:], b[4:])
    for i in range(4, 8):
        rec = json.loads(new[i]["recipe"])
        assert rec["frames"]["generator"] == "imagemagick"
        assert videotarget.regenerate(new[i]["recipe"], a[i]).tobytes() == b[i].tobytes()
    # the old generator ignores the new keys: same bytes and recipes as before they existed
    old = images.simulate_target_frames(ds, {"generator": "shiftlab"}, progress=False)
    old2 = images.simulate_target_frames(ds, {"generator": "shiftlab", "imagemagick": {"severity": [3]}},
                                         progress=False)
    assert schema.chw_batch(old).tobytes() == schema.chw_batch(old2).tobytes()
    assert old["recipe"] == old2["recipe"]
    assert all("generator" not in json.loads(r).get("frames", {}) for r in old["recipe"][4:])


@pytest.mark.parametrize("cfg, key", [
    ({"severity": [6]}, "severity"),
    ({"severity": []}, "severity"),
    ({"crf": [10, 60]}, "crf"),
    ({"codec": "vp9"}, "codec"),
    ({"noise": {"photons": [5, 1]}}, "noise.photons"),
    ({"noise": {"shot": 1}}, "noise.shot"),
    ({"colour": 1}, "colour"),
])
def test_bad_cfg_is_one_line_error_naming_key(cfg, key):
    with pytest.raises(ShiftlabError, match=r"prepare_images\.frames\.imagemagick\." + key.replace(".", r"\.")) as e:
        videotarget.check_cfg(cfg)
    assert "\n" not in str(e.value)


def test_params_validation_of_the_new_keys():
    sch = {"prepare_images": config.SCHEMA["prepare_images"]}
    with pytest.raises(ShiftlabError, match=r"prepare_images\.frames\.generator"):
        config.validate({"prepare_images": {"frames": {"generator": "gimp"}}}, schema=sch)
    with pytest.raises(ShiftlabError, match=r"prepare_images\.frames\.imagemagick\.crf"):
        config.validate({"prepare_images": {"frames": {"imagemagick": {"crf": [1, 99]}}}}, schema=sch)
    p = config.validate({"prepare_images": {"frames": {"generator": "imagemagick", "imagemagick": {"codec": "jpeg"}}}},
                        schema=sch)
    assert p["prepare_images"]["frames"]["imagemagick"]["codec"] == "jpeg"


@pytest.fixture
def no_imagemagick(monkeypatch):
    """Wand's library lookup finds nothing (as on a machine without ImageMagick)."""
    import ctypes.util

    saved = {k: v for k, v in sys.modules.items() if k == "wand" or k.startswith("wand.")}
    for k in saved:
        del sys.modules[k]
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    monkeypatch.delenv("MAGICK_HOME", raising=False)
    monkeypatch.delenv("WAND_MAGICK_LIBRARY_SUFFIX", raising=False)
    try:
        yield
    finally:
        for k in [k for k in sys.modules if k == "wand" or k.startswith("wand.")]:
            del sys.modules[k]
        sys.modules.update(saved)


def test_cli_missing_imagemagick_is_one_clear_line(tmp_path, capsys, no_imagemagick):
    from PIL import Image

    for dom in ("src", "tgt"):
        for cls in ("a", "b"):
            d = tmp_path / dom / cls
            d.mkdir(parents=True)
            Image.fromarray(np.full((8, 8), 100, np.uint8)).save(d / "x.png")
    params = {"prepare_images": {"kind": "folder", "folder": {"source": str(tmp_path / "src"),
                                                              "target": str(tmp_path / "tgt"), "mode": "grey"},
                                 "frames": {"apply": "on", "generator": "imagemagick"}}}
    pfile = tmp_path / "params.yaml"
    pfile.write_text(yaml.safe_dump(params))
    rc = cli.main(["--params", str(pfile), "prepare", "images", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1, err
    assert err.startswith("shiftlab: error: ") and "ImageMagick" in err and "apt-get install imagemagick" in err
    assert not (tmp_path / "out").exists()
