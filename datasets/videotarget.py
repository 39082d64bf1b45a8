"""An independent video-frame target: ImageMagick motion blur, sensor noise, a real video codec.

Why a second target generator
    :mod:`shiftlab.synth.frames` (generator ``shiftlab``) simulates the embedded default's
    target with the synthesis stage's own code (its camera-shake kernels and its
    convolution), so a gain measured on it partly measures the recovery of a process the
    synthesis shares. This module (generator ``imagemagick``, selected by
    ``prepare_images.frames.generator``) makes the target with tools the synthesis never
    uses and **imports nothing from** ``shiftlab.synth`` (a test checks it in a fresh
    interpreter): what transfers to it is transfer to a different degradation process.

What it does to each sharp image, in camera order
    1. **Motion blur by ImageMagick** (``MagickMotionBlurImage`` through Wand, the way
       MNIST-C's ``motion_blur`` corruption does it, Mu & Gilmer 2019): a one-sided
       Gaussian-weighted streak of ``radius``/``sigma`` from the MNIST-C severity table
       (:data:`SEVERITY`: 1 = (10, 3) ... 5 = (20, 15)), at an angle drawn per image from
       ``angle`` (MNIST-C: uniform in [-45, 45] degrees); one ``severity`` level drawn per
       image from the configured list. Pixels go in and out of ImageMagick as raw 8-bit
       samples (``import_pixels`` / ``export_pixels``; MNIST-C goes through a PNG blob, the
       same blur up to one grey level of rounding).
    2. **Sensor noise** (what the sensor adds before the camera encodes): Poisson shot
       noise at ``noise.photons`` photo-electrons for full white plus Gaussian read noise
       of ``noise.read_noise`` grey levels, rounded to 8 bits.
    3. **Lossy compression by a real codec**: ``codec: h264`` encodes the frame with
       **libx264** (FFmpeg's, bundled in the PyAV wheel; no system FFmpeg) at a constant
       rate factor ``crf`` drawn per image and ``preset``, in ``yuv420p`` (grey images:
       the luma plane, neutral chroma; RGB: BT.601 full-range YCbCr with 2x2-averaged
       chroma, nearest-neighbour upsampled back), then decodes it with FFmpeg's H.264
       decoder. ``codec: jpeg`` uses Pillow's libjpeg at a ``quality`` drawn per image;
       ``codec: none`` skips this step.

Each frame is its own 1-frame clip, i.e. an intra-coded IDR frame
    A real stream codes most frames as P/B frames predicted from their neighbours. The
    target rows here are independent still images with no temporal neighbours: packing
    unrelated images into one clip would make motion compensation predict one garment
    from another, which no camera does, and would make a row's pixels depend on which
    other rows share its clip (a row could not be regenerated alone, and changing
    ``target_rows`` would change other rows). So every frame is encoded as a one-frame
    clip with a fresh encoder (``threads=1``): exactly what a camera's keyframes go
    through (intra prediction, DCT, quantisation, deblocking, chroma subsampling), and
    not the inter-frame artefacts of P/B frames. Odd heights/widths are padded to even
    by edge replication for the 4:2:0 planes and cropped back.

Determinism and regeneration
    Every random choice of row ``index`` derives from :func:`shiftlab.seeding.sample_rng`
    ``(seed, index, "videotarget")`` (never global RNG state); the noise uses its own
    generator seeded by that row seed. The row's recipe (:func:`draw`, stored under
    ``frames`` in the dataset's ``recipe`` column) records the generator, the versions of
    every tool that touched the pixels (ImageMagick, Wand, PyAV, libavcodec, x264 core,
    Pillow / libjpeg, numpy) and every drawn parameter, so :func:`regenerate` rebuilds the
    frame from the sharp image and the recipe alone, byte for byte (tested) on the same
    tool versions. x264's and FFmpeg's integer pipelines are bit-exact across CPUs; the
    ImageMagick blur is floating point, so another ImageMagick build may differ by a grey
    level.

Missing tools are a one-line :class:`ShiftlabError` naming what to install (Debian:
``apt-get install imagemagick``, which brings ``libmagickwand-6.q16-6``; PyPI: ``Wand``, ``av``).
"""

from __future__ import annotations

import copy
import fractions
import io
import json
import math
import re
from typing import Any, Mapping, Sequence

import numpy as np

from shiftlab import seeding
from shiftlab.errors import ShiftlabError

__all__ = ["DEFAULTS", "SEVERITY", "GENERATOR", "check_cfg", "require", "versions", "draw", "degrade",
           "simulate", "regenerate", "describe"]

GENERATOR = "imagemagick"
PURPOSE = "videotarget"
_KEY = "prepare_images.frames.imagemagick"

#: MNIST-C ``motion_blur``: (radius, sigma) of ImageMagick's motion blur per severity level.
SEVERITY: dict[int, tuple[float, float]] = {1: (10.0, 3.0), 2: (15.0, 5.0), 3: (15.0, 8.0), 4: (15.0, 12.0),
                                            5: (20.0, 15.0)}
CODECS = ("h264", "jpeg", "none")
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
           "placebo")

#: Defaults of the ``prepare_images.frames.imagemagick`` params block. Ranges are ``[low, high]``.
DEFAULTS: dict[str, Any] = {
    "severity": [1],  # MNIST-C motion-blur levels (1..5), one drawn per image; MNIST-C's own level is 1
    "angle": [-45.0, 45.0],  # degrees, uniform per image (MNIST-C)
    "noise": {
        "photons": [200.0, 1000.0],  # photo-electrons at full white (lower = noisier)
        "read_noise": [0.5, 2.0],  # grey levels, std of the Gaussian read noise
    },
    "codec": "h264",  # h264 (libx264 through PyAV) | jpeg (Pillow) | none
    "crf": [18, 28],  # h264 constant rate factor (0..51, integer), uniform per image
    "preset": "medium",  # x264 preset
    "quality": [30, 70],  # jpeg quality (1..95, integer), uniform per image
}

INSTALL_HINT = ("install ImageMagick (Debian/Ubuntu: apt-get install imagemagick, which brings its MagickWand "
                "library, libmagickwand-6.q16-6 on Debian 12) and the Python binding (pip install Wand)")


# --------------------------------------------------------------------------- config


def _pair(where: str, v, lo: float, hi: float, integer: bool = False) -> list:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        v = [v, v]
    if not isinstance(v, (list, tuple)) or len(v) != 2:
        raise ShiftlabError(f"{where}: must be [low, high] or a number, got {v!r}")
    if any(isinstance(x, bool) or not isinstance(x, (int, float)) for x in v):
        raise ShiftlabError(f"{where}: must be numbers, got {v!r}")
    if integer and any(isinstance(x, float) and not float(x).is_integer() for x in v):
        raise ShiftlabError(f"{where}: must be integers, got {v!r}")
    a, b = (int(v[0]), int(v[1])) if integer else (float(v[0]), float(v[1]))
    if not (math.isfinite(a) and math.isfinite(b)) or a > b or a < lo or b > hi:
        raise ShiftlabError(f"{where}: [{a:g}, {b:g}] must be an increasing pair inside [{lo:g}, {hi:g}]")
    return [a, b]


def check_cfg(cfg: Mapping[str, Any] | None = None, where: str = _KEY) -> dict[str, Any]:
    """``cfg`` merged over :data:`DEFAULTS` and validated (one-line errors naming the key)."""
    out = copy.deepcopy(DEFAULTS)
    if cfg is not None and not isinstance(cfg, Mapping):
        raise ShiftlabError(f"{where}: must be a mapping of keys, got {cfg!r}")
    for k, v in (cfg or {}).items():
        if k not in out:
            raise ShiftlabError(f"{where}.{k}: unknown key (expected one of {', '.join(out)})")
        if k == "noise":
            if v is not None and not isinstance(v, Mapping):
                raise ShiftlabError(f"{where}.noise: must be a mapping of keys, got {v!r}")
            for nk, nv in (v or {}).items():
                if nk not in DEFAULTS["noise"]:
                    raise ShiftlabError(f"{where}.noise.{nk}: unknown key (expected one of photons, read_noise)")
                out["noise"][nk] = nv
        else:
            out[k] = v
    sev = out["severity"]
    if isinstance(sev, int) and not isinstance(sev, bool):
        sev = [sev]
    if (not isinstance(sev, (list, tuple)) or not sev
            or any(isinstance(s, bool) or not isinstance(s, int) or s not in SEVERITY for s in sev)):
        raise ShiftlabError(f"{where}.severity: must be a non-empty list of levels 1..5, got {out['severity']!r}")
    out["severity"] = [int(s) for s in sev]
    out["angle"] = _pair(f"{where}.angle", out["angle"], -360.0, 360.0)
    out["noise"]["photons"] = _pair(f"{where}.noise.photons", out["noise"]["photons"], 1e-3, 1e9)
    out["noise"]["read_noise"] = _pair(f"{where}.noise.read_noise", out["noise"]["read_noise"], 0.0, 255.0)
    if out["codec"] not in CODECS:
        raise ShiftlabError(f"{where}.codec: must be one of {', '.join(CODECS)}, got {out['codec']!r}")
    out["crf"] = _pair(f"{where}.crf", out["crf"], 0, 51, integer=True)
    if out["preset"] not in PRESETS:
        raise ShiftlabError(f"{where}.preset: must be one of {', '.join(PRESETS)}, got {out['preset']!r}")
    out["quality"] = _pair(f"{where}.quality", out["quality"], 1, 95, integer=True)
    return out


# --------------------------------------------------------------------------- tools


def _load_wand():
    """(wand.image.Image, wand.version) or a one-line ShiftlabError naming what to install."""
    try:
        import wand.api  # noqa: F401  (loads libMagickWand; ImportError when it is missing)
        import wand.image
        import wand.resource
        import wand.version
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] == "wand":
            raise ShiftlabError(
                f"the imagemagick frame generator needs the Python package Wand: {INSTALL_HINT}") from None
        raise
    except (ImportError, OSError):
        raise ShiftlabError(
            f"the imagemagick frame generator needs ImageMagick, whose MagickWand library was not found: {INSTALL_HINT}"
        ) from None
    wand.resource.limits["thread"] = 1  # 28x28 images: threads cost more than they give
    return wand.image.Image, wand.version


def _load_av():
    try:
        import av
    except ImportError:
        raise ShiftlabError(
            "the imagemagick frame generator with codec h264 needs PyAV (pip install av; its wheels bundle "
            "FFmpeg with libx264), or set prepare_images.frames.imagemagick.codec: jpeg"
        ) from None
    if "libx264" not in av.codecs_available:
        raise ShiftlabError("this PyAV build has no libx264 encoder: install PyAV's wheel (pip install av) "
                            "or set prepare_images.frames.imagemagick.codec: jpeg")
    return av


def require(cfg: Mapping[str, Any] | None = None) -> None:
    """Raise the one-line install error now if a tool the generator needs is missing."""
    c = check_cfg(cfg)
    _load_wand()
    if c["codec"] == "h264":
        _load_av()


_VERSIONS: dict[str, dict[str, str]] = {}


def versions(codec: str = "h264") -> dict[str, str]:
    """The versions of every tool that touches a frame's pixels under ``codec``."""
    if codec in _VERSIONS:
        return dict(_VERSIONS[codec])
    _, wv = _load_wand()
    m = re.match(r"ImageMagick (\S+ Q\d+)", str(wv.MAGICK_VERSION))
    v = {"imagemagick": m.group(1) if m else str(wv.MAGICK_VERSION), "wand": str(wv.VERSION),
         "numpy": np.__version__}
    if codec == "h264":
        av = _load_av()
        v["pyav"] = str(av.__version__)
        v["libavcodec"] = ".".join(map(str, av.library_versions["libavcodec"]))
        data = _h264_encode(np.zeros((16, 16), np.uint8), None, 30, "medium", av)
        x = re.search(rb"x264 - core (\d+)(?: r(\d+))?", data)
        v["x264"] = f"core {x.group(1).decode()}" if x else "unknown"
    elif codec == "jpeg":
        import PIL
        from PIL import features

        v["pillow"] = str(PIL.__version__)
        v["libjpeg"] = str(features.version("jpg"))
    _VERSIONS[codec] = v
    return dict(v)


# --------------------------------------------------------------------------- the row's record


def draw(seed: int, index: int, cfg: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The recipe record of row ``index`` under ``seed``: generator, versions, every drawn parameter."""
    return _draw(seed, index, check_cfg(cfg))


def _draw(seed: int, index: int, c: Mapping[str, Any]) -> dict[str, Any]:
    s = seeding.sample_seed(seed, index, PURPOSE)
    rng = np.random.default_rng(s)
    sev = int(c["severity"][int(rng.integers(0, len(c["severity"])))])
    angle = float(rng.uniform(*c["angle"]))
    photons = float(rng.uniform(*c["noise"]["photons"]))
    read = float(rng.uniform(*c["noise"]["read_noise"]))
    crf = int(rng.integers(c["crf"][0], c["crf"][1] + 1))
    quality = int(rng.integers(c["quality"][0], c["quality"][1] + 1))
    radius, sigma = SEVERITY[sev]
    if c["codec"] == "h264":
        codec = {"name": "h264", "encoder": "libx264", "decoder": "h264", "crf": crf, "preset": c["preset"],
                 "pix_fmt": "yuv420p", "clip": "1 frame (IDR)", "threads": 1}
    elif c["codec"] == "jpeg":
        codec = {"name": "jpeg", "encoder": "pillow", "quality": quality, "subsampling": "4:2:0"}
    else:
        codec = {"name": "none"}
    return {
        "generator": GENERATOR,
        "versions": versions(c["codec"]),
        "seed": int(s),
        "blur": {"op": "MagickMotionBlurImage", "severity": sev, "radius": radius, "sigma": sigma, "angle": angle},
        "noise": {"photons": photons, "read_noise": read},
        "codec": codec,
    }


# --------------------------------------------------------------------------- the three steps


def _motion_blur(hwc: np.ndarray, radius: float, sigma: float, angle: float, WandImage) -> np.ndarray:
    h, w, ch = hwc.shape
    cmap = "I" if ch == 1 else "RGB"
    with WandImage(width=w, height=h) as img:
        img.import_pixels(channel_map=cmap, storage="char", data=np.ascontiguousarray(hwc).tobytes())
        img.motion_blur(radius=float(radius), sigma=float(sigma), angle=float(angle))
        out = bytes(img.export_pixels(channel_map=cmap, storage="char"))
    return np.frombuffer(out, np.uint8).reshape(h, w, ch).copy()


def _sensor_noise(hwc: np.ndarray, photons: float, read_noise: float, row_seed: int) -> np.ndarray:
    rng = np.random.default_rng([int(row_seed), 7])
    lam = hwc.astype(np.float64) / 255.0 * photons
    y = rng.poisson(lam) * (255.0 / photons) + rng.normal(0.0, read_noise, size=hwc.shape)
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)


def _to_ycbcr(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = rgb.astype(np.float64)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = 128.0 - 0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 128.0 + 0.5 * r - 0.418688 * g - 0.081312 * b
    return y, cb, cr


def _from_ycbcr(y, cb, cr) -> np.ndarray:
    y, cb, cr = (np.asarray(a, np.float64) for a in (y, cb, cr))
    r = y + 1.402 * (cr - 128.0)
    g = y - 0.344136 * (cb - 128.0) - 0.714136 * (cr - 128.0)
    b = y + 1.772 * (cb - 128.0)
    return np.clip(np.rint(np.stack([r, g, b], -1)), 0, 255).astype(np.uint8)


def _u8(a) -> np.ndarray:
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def _h264_encode(y: np.ndarray, chroma, crf: int, preset: str, av) -> bytes:
    """One IDR frame of even-sized planes as an Annex-B H.264 stream."""
    h, w = y.shape
    if chroma is None:
        cb = cr = np.full((h // 2, w // 2), 128, np.uint8)
    else:
        cb, cr = chroma
    packed = np.concatenate([y.ravel(), cb.ravel(), cr.ravel()]).reshape(h * 3 // 2, w)
    enc = av.CodecContext.create("libx264", "w")
    enc.width, enc.height = w, h
    enc.pix_fmt = "yuv420p"
    enc.time_base = fractions.Fraction(1, 25)
    enc.thread_count = 1
    enc.options = {"crf": str(int(crf)), "preset": preset, "threads": "1"}
    frame = av.VideoFrame.from_ndarray(packed, format="yuv420p")
    frame.pts = 0
    packets = list(enc.encode(frame)) + list(enc.encode(None))
    return b"".join(bytes(p) for p in packets)


def _h264_decode(data: bytes, h: int, w: int, av) -> list[np.ndarray]:
    dec = av.CodecContext.create("h264", "r")
    dec.thread_count = 1
    frames = list(dec.decode(av.Packet(data))) + list(dec.decode(None))  # the whole clip is one access unit
    if len(frames) != 1:
        raise ShiftlabError(f"videotarget: the H.264 decoder returned {len(frames)} frames for a 1-frame clip")
    f = frames[0]

    def plane(i, ph, pw):
        p = f.planes[i]
        return np.frombuffer(memoryview(p), np.uint8).reshape(-1, p.line_size)[:ph, :pw].copy()

    return [plane(0, h, w), plane(1, h // 2, w // 2), plane(2, h // 2, w // 2)]


def _h264(hwc: np.ndarray, crf: int, preset: str) -> np.ndarray:
    av = _load_av()
    h, w, ch = hwc.shape
    ph, pw = h + h % 2, w + w % 2
    x = np.pad(hwc, ((0, ph - h), (0, pw - w), (0, 0)), mode="edge") if (ph, pw) != (h, w) else hwc
    if ch == 1:
        data = _h264_encode(np.ascontiguousarray(x[..., 0]), None, crf, preset, av)
        out = _h264_decode(data, ph, pw, av)[0][..., None]
    else:
        y, cb, cr = _to_ycbcr(x)
        sub = [_u8(c.reshape(ph // 2, 2, pw // 2, 2).mean(axis=(1, 3))) for c in (cb, cr)]
        data = _h264_encode(_u8(y), sub, crf, preset, av)
        yd, cbd, crd = _h264_decode(data, ph, pw, av)
        up = [np.repeat(np.repeat(c, 2, 0), 2, 1) for c in (cbd, crd)]
        out = _from_ycbcr(yd, *up)
    return np.ascontiguousarray(out[:h, :w])


def _jpeg(hwc: np.ndarray, quality: int) -> np.ndarray:
    from PIL import Image

    img = Image.fromarray(hwc[..., 0] if hwc.shape[2] == 1 else hwc, "L" if hwc.shape[2] == 1 else "RGB")
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(quality), subsampling=2, optimize=False)
    out = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert(img.mode))
    return out.reshape(hwc.shape).copy()


def degrade(sharp_chw: np.ndarray, record: Mapping[str, Any]) -> np.ndarray:
    """The frame of one sharp uint8 ``(C, H, W)`` image (C = 1 or 3) under ``record`` (:func:`draw`)."""
    x = np.asarray(sharp_chw)
    if x.dtype != np.uint8 or x.ndim != 3 or x.shape[0] not in (1, 3):
        raise ShiftlabError(f"videotarget: image must be uint8 (C, H, W) with C 1 or 3, got {x.dtype} {x.shape}")
    if record.get("generator") != GENERATOR:
        raise ShiftlabError(f"videotarget: not an {GENERATOR} frame record: generator {record.get('generator')!r}")
    WandImage, _ = _load_wand()
    b, n, c = record["blur"], record["noise"], record["codec"]
    hwc = np.ascontiguousarray(x.transpose(1, 2, 0))
    hwc = _motion_blur(hwc, b["radius"], b["sigma"], b["angle"], WandImage)
    hwc = _sensor_noise(hwc, float(n["photons"]), float(n["read_noise"]), int(record["seed"]))
    if c["name"] == "h264":
        hwc = _h264(hwc, int(c["crf"]), str(c["preset"]))
    elif c["name"] == "jpeg":
        hwc = _jpeg(hwc, int(c["quality"]))
    elif c["name"] != "none":
        raise ShiftlabError(f"videotarget: unknown codec {c['name']!r} in the frame record")
    return np.ascontiguousarray(hwc.transpose(2, 0, 1))


# --------------------------------------------------------------------------- batches


def simulate(chw: np.ndarray, indices: Sequence[int], cfg: Mapping[str, Any] | None = None, seed: int = 1234,
             progress: bool = True) -> tuple[np.ndarray, list[str]]:
    """Turn sharp uint8 ``(N, C, H, W)`` images into video frames of this generator.

    ``indices[i]`` is row i's stable index (e.g. the crc32 of its id), which with ``seed``
    fixes its degradation, whatever other rows are processed with it. Returns the frames
    (uint8, same shape) and one canonical JSON record per row (:func:`draw`).
    """
    from tqdm.auto import tqdm

    c = check_cfg(cfg)
    require(c)
    chw = np.asarray(chw)
    if chw.dtype != np.uint8 or chw.ndim != 4:
        raise ShiftlabError(f"videotarget: images must be uint8 (N, C, H, W), got {chw.dtype} {chw.shape}")
    if len(indices) != len(chw):
        raise ShiftlabError(f"videotarget: {len(indices)} indices for {len(chw)} images")
    out = np.empty_like(chw)
    recipes: list[str] = []
    for i, idx in enumerate(tqdm(indices, desc="video frames (imagemagick)", unit="img",
                                 disable=not progress or len(chw) < 200)):
        rec = _draw(seed, int(idx), c)
        out[i] = degrade(chw[i], rec)
        recipes.append(json.dumps(rec, sort_keys=True, separators=(",", ":")))
    return out, recipes


def regenerate(record: str | Mapping[str, Any], sharp_chw: np.ndarray) -> np.ndarray:
    """The frame of one sharp uint8 ``(C, H, W)`` image from its record (or JSON, or a whole row recipe)."""
    rec = json.loads(record) if isinstance(record, (str, bytes)) else dict(record)
    if "frames" in rec and "generator" not in rec:
        rec = rec["frames"]
    return degrade(sharp_chw, rec)


def describe(cfg: Mapping[str, Any] | None = None) -> str:
    """One plain sentence: what the target is and what simulated it (for reports)."""
    c = check_cfg(cfg)
    levels = ", ".join(f"{s} (radius {SEVERITY[s][0]:g}, sigma {SEVERITY[s][1]:g})" for s in c["severity"])
    codec = {"h264": f"H.264 by libx264 through PyAV/FFmpeg (one intra-coded frame per image, CRF {c['crf'][0]}-"
                     f"{c['crf'][1]}, preset {c['preset']})",
             "jpeg": f"JPEG by Pillow/libjpeg (quality {c['quality'][0]}-{c['quality'][1]})",
             "none": "no compression"}[c["codec"]]
    return ("The target frames are simulated, by code that shares nothing with the synthesis: ImageMagick motion "
            f"blur as MNIST-C applies it (severity {levels}, angle {c['angle'][0]:g} to {c['angle'][1]:g} degrees), "
            f"Poisson shot noise at {c['noise']['photons'][0]:g}-{c['noise']['photons'][1]:g} photo-electrons plus "
            f"Gaussian read noise of {c['noise']['read_noise'][0]:g}-{c['noise']['read_noise'][1]:g} grey levels, "
            f"then {codec}.")
