"""The schema of ``params.yaml``: one pydantic model per stage section (pydantic v2).

Every knob of a section is a field of its model here: its type, its range (as constraints,
exported to JSON Schema) and its default. ``extra="forbid"`` makes an unknown key an error.
``shiftlab params --schema`` writes :func:`json_schema` so editors can complete and check
``params.yaml``.

The field types below are pydantic types (the JSON Schema shows them) wrapped in one
``BeforeValidator`` each, which checks the value the way params.yaml always has (no
coercion: ``"3"`` is not an integer, ``true`` is not a number, an integer is accepted
for a number) and words the error as one line. :func:`format_error` turns a pydantic
``ValidationError`` into that line: ``params.yaml: split_images.dev_fractoin: unknown key
(did you mean dev_fraction?)``.

Sections a module validates (``config.ModuleSection``, named in :data:`MODULE_SECTIONS`) go through
their module's merge, which calls :func:`merge` with the model here (:data:`MODULE_MODELS`: the mixing,
training, evaluation, check, report, sweep and ladder sections), so the module's extra rules (model
registry, car and drive ranges) run beside it. Every section has a model: the JSON Schema has no open
mapping.

Also here, shared by every section: :func:`deep_merge` (how overrides apply) and
:func:`range_overrides` (the ``[low, high]`` range mappings of shiftlab.mixing.cars and .rpm).
"""

import copy
import difflib
import math
import numbers
from typing import Any, Callable, Literal, Mapping, Optional

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError, WithJsonSchema
from pydantic import create_model, model_validator
from typing_extensions import Annotated

from shiftlab.errors import ShiftlabError

# --------------------------------------------------------------------------- field types


def _range_text(lo, hi, lo_open=False, hi_open=False) -> str:
    left = "(" if lo_open else "["
    right = ")" if hi_open else "]"
    return f"{left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{right}"


def _in_range(v, lo, hi, lo_open, hi_open) -> bool:
    if lo is not None and (v < lo or (lo_open and v == lo)):
        return False
    if hi is not None and (v > hi or (hi_open and v == hi)):
        return False
    return True


class _Leaf:
    """A value check (``value -> normalised value``, ``ValueError(reason)``) and its wording."""

    def __init__(self, check: Callable[[Any], Any], describe: str, nullable: bool = False):
        self.check, self.describe, self.nullable = check, describe, nullable

    def __call__(self, v):
        if v is None:
            if self.nullable:
                return None
            raise ValueError(f"must be {self.describe}, got null")
        return self.check(v)


#: for ``Checked`` fields of models outside this module (e.g. bench/anchor.py's options)
Leaf = _Leaf


class _AnyLeaf(_Leaf):
    """A leaf whose check also decides what null means."""

    def __init__(self, check: Callable[[Any], Any], describe: str):
        super().__init__(check, describe, nullable=True)

    def __call__(self, v):
        return self.check(v)


def _typed(core, leaf: _Leaf):
    """``core`` (the pydantic type, for the JSON Schema) validated by ``leaf`` first."""
    if leaf.nullable:
        core = Optional[core]
    return Annotated[core, BeforeValidator(leaf), Field(description=leaf.describe + (", or null" if leaf.nullable
                                                                                     else ""))]


def _int_leaf(lo=None, hi=None, nullable=False) -> _Leaf:
    desc = f"an integer in {_range_text(lo, hi)}"

    def check(v):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):  # int or numpy integer
            raise ValueError(f"must be {desc}, got {v!r}")
        v = int(v)
        if not _in_range(v, lo, hi, False, False):
            raise ValueError(f"{v} is out of range {_range_text(lo, hi)}")
        return v

    return _Leaf(check, desc, nullable)


def _int_core(lo=None, hi=None):
    return Annotated[int, Field(ge=lo, le=hi)]


def Int(lo=None, hi=None, nullable=False):
    """An integer in [lo, hi] (a bool or a float is not one)."""
    return _typed(_int_core(lo, hi), _int_leaf(lo, hi, nullable))


def _float_leaf(lo=None, hi=None, lo_open=False, hi_open=False, nullable=False) -> _Leaf:
    rng = _range_text(lo, hi, lo_open, hi_open)
    desc = f"a number in {rng}"

    def check(v):
        if isinstance(v, bool) or not isinstance(v, numbers.Real):  # int, float or numpy number
            raise ValueError(f"must be {desc}, got {v!r}")
        v = float(v)
        if not math.isfinite(v) or not _in_range(v, lo, hi, lo_open, hi_open):
            raise ValueError(f"{v:g} is out of range {rng}")
        return v

    return _Leaf(check, desc, nullable)


def _float_core(lo=None, hi=None, lo_open=False, hi_open=False):
    return Annotated[float, Field(ge=None if lo_open else lo, gt=lo if lo_open else None,
                                  le=None if hi_open else hi, lt=hi if hi_open else None)]


def Float(lo=None, hi=None, lo_open=False, hi_open=False, nullable=False):
    """A finite number in the range (an integer is taken as a number; a bool is not one)."""
    return _typed(_float_core(lo, hi, lo_open, hi_open), _float_leaf(lo, hi, lo_open, hi_open, nullable))


def _str_leaf(choices=None, nullable=False) -> _Leaf:
    desc = "one of " + ", ".join(map(str, choices)) if choices else "a string"

    def check(v):
        if not isinstance(v, str):
            raise ValueError(f"must be {desc}, got {v!r}")
        if choices and v not in choices:
            hint = difflib.get_close_matches(v, choices, 1)
            extra = f" (did you mean {hint[0]}?)" if hint else ""
            raise ValueError(f"{v!r} is not {desc}{extra}")
        return v

    return _Leaf(check, desc, nullable)


def Str(choices=None, nullable=False):
    """A string (one of ``choices`` when given)."""
    core = Literal[tuple(choices)] if choices else str
    return _typed(core, _str_leaf(choices, nullable))


def _bool_check(v):
    if not isinstance(v, bool) and not (getattr(v, "dtype", None) is not None and v.dtype.kind == "b"
                                        and getattr(v, "ndim", 1) == 0):  # a numpy bool from a module caller
        raise ValueError(f"must be true or false, got {v!r}")
    return bool(v)


Bool = _typed(bool, _Leaf(_bool_check, "true or false"))


def _list_leaf(item: _Leaf, min_len=0, max_len=None, nullable=False) -> _Leaf:
    desc = f"a list of {item.describe}"

    def check(v):
        if not isinstance(v, (list, tuple)):
            raise ValueError(f"must be {desc}, got {v!r}")
        if len(v) < min_len or (max_len is not None and len(v) > max_len):
            n = f"{min_len}" if max_len == min_len else f"{min_len}..{max_len or 'any'}"
            raise ValueError(f"must have {n} items, got {len(v)}")
        out = []
        for i, x in enumerate(v):
            try:
                out.append(item(x))
            except ValueError as e:
                raise ValueError(f"item {i}: {e}") from None
        return out

    return _Leaf(check, desc, nullable)


def list_check(check: Callable[[Any], Any], describe: str) -> Callable[[Any], list]:
    """A check of a list whose items ``check`` validates (``ValueError`` naming the item: ``item 2: ...``)."""
    return _list_leaf(_Leaf(check, describe))


def List(item: tuple, min_len=0, max_len=None, nullable=False):
    """A list of ``item`` (``IntItem(...)``, ``StrItem(...)``: a (core, leaf) pair) with min_len..max_len items."""
    core, leaf = item
    return _typed(Annotated[list[core], Field(min_length=min_len or None, max_length=max_len)],
                  _list_leaf(leaf, min_len, max_len, nullable))


def IntItem(lo=None, hi=None):
    return _int_core(lo, hi), _int_leaf(lo, hi)


def StrItem(choices=None):
    return (Literal[tuple(choices)] if choices else str), _str_leaf(choices)


def Range(lo=None, hi=None, integer=False):
    """A [low, high] pair with low <= high inside [lo, hi]."""
    core, leaf = (_int_core(lo, hi), _int_leaf(lo, hi)) if integer else (_float_core(lo, hi), _float_leaf(lo, hi))
    inner = _list_leaf(leaf, 2, 2)

    def check(v):
        v = inner(v)
        if v[0] > v[1]:
            raise ValueError(f"low {v[0]} is above high {v[1]}")
        return v

    return _typed(Annotated[list[core], Field(min_length=2, max_length=2)],
                  _Leaf(check, f"a [low, high] pair in {_range_text(lo, hi)}"))


def _beta_check(v):
    if v == "balanced":
        return v
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
        raise ValueError(f"must be a number >= 0 or 'balanced', got {v!r}")
    return float(v)


#: A loss weight: a number >= 0, or 'balanced' (MLY rule, see datasets/splits.py).
Beta = _typed(Annotated[float, Field(ge=0)] | Literal["balanced"], _Leaf(_beta_check, "a number >= 0 or 'balanced'"))


def Checked(leaf: _Leaf, schema_type: Any = Any):
    """A value checked by ``leaf`` alone (pydantic accepts what it returns); ``schema_type`` is what the
    JSON Schema shows."""
    shown = TypeAdapter(Optional[schema_type] if leaf.nullable else schema_type).json_schema()
    return Annotated[Any, BeforeValidator(leaf), WithJsonSchema({**shown, "description": leaf.describe}),
                     Field(description=leaf.describe)]


def _lazy(module: str, func: str) -> Callable[[Any], Any]:
    """``module.func`` imported on first use (a check that belongs to a heavy module)."""

    def check(v):
        import importlib

        return getattr(importlib.import_module(module), func)(v)

    return check


# --------------------------------------------------------------------------- models


class Section(BaseModel):
    """A params section or sub-section: unknown keys forbidden, fields in file order."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), validate_default=False, defer_build=True)


def sub(model: type[Section]):
    """A nested sub-section field (defaults to the sub-section's defaults)."""
    return Field(default_factory=model)


# ---- prepare_images

FMNIST_DIR = "/usr/share/datasets/fashion-mnist"
_MODES = ["grey", "rgb"]


class FashionMnist(Section):
    dir: Str() = FMNIST_DIR
    source_rows: Int(1, 60000, nullable=True) = None
    target_rows: Int(1, 10000, nullable=True) = None


class ImageFolder(Section):
    source: Str(nullable=True) = None
    target: Str(nullable=True) = None
    size: List(IntItem(1, 8192), 2, 2, nullable=True) = None
    mode: Str(_MODES) = "rgb"
    group_pattern: Str(nullable=True) = None


class Hub(Section):
    id: Str(nullable=True) = None
    name: Str(nullable=True) = None
    revision: Str(nullable=True) = None
    source_split: Str() = "train"
    target_split: Str() = "test"
    image_column: Str() = "image"
    label_column: Str() = "label"
    group_column: Str(nullable=True) = None
    size: List(IntItem(1, 8192), 2, 2, nullable=True) = None
    mode: Str(_MODES) = "rgb"
    source_rows: Int(1, nullable=True) = None
    target_rows: Int(1, nullable=True) = None


class FramesShake(Section):
    """Camera shake of the simulated target frames (unlike the synthesis stage's)."""

    max_length: Range(0.0, 500.0) = [8.0, 16.0]
    exposure: Range(0.001, 1.0) = [0.5, 0.9]
    anxiety: Range(0.0, 1.0) = [0.015, 0.04]
    jitter: Range(0.0, 1000.0) = [10.0, 20.0]
    centripetal: Range(0.0, 100.0) = [0.2, 0.6]
    impulse_prob: Range(0.0, 1000.0) = [0.05, 0.3]
    n_steps: Int(2, 100000) = 512


class MagickNoise(Section):
    photons: Range(0.001, 1e9) = [200.0, 1000.0]
    read_noise: Range(0.0, 255.0) = [0.5, 2.0]


_PRESETS = ["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo"]


class Imagemagick(Section):
    """The video-frame target of shiftlab.datasets.videotarget (no code shared with synth/)."""

    severity: List(IntItem(1, 5), 1) = [1]
    angle: Range(-360.0, 360.0) = [-45.0, 45.0]
    noise: MagickNoise = sub(MagickNoise)
    codec: Str(["h264", "jpeg", "none"]) = "h264"
    crf: Range(0, 51, integer=True) = [18, 28]
    preset: Str(_PRESETS) = "medium"
    quality: Range(1, 95, integer=True) = [30, 70]


class Frames(Section):
    """The simulated video-frame target (shiftlab.synth.frames or shiftlab.datasets.videotarget)."""

    apply: Str(["auto", "on", "off"]) = "auto"
    seed: Int(0) = 1234
    shake: FramesShake = sub(FramesShake)
    defocus_sigma: Range(0.0, 20.0) = [0.3, 0.9]
    photons: Range(0.001, 1e9) = [150.0, 600.0]
    read_noise: Range(0.0, 255.0) = [0.5, 2.0]
    generator: Str(["imagemagick", "shiftlab"]) = "imagemagick"
    imagemagick: Imagemagick = sub(Imagemagick)


class PrepareImages(Section):
    """``shiftlab prepare images`` -> data/prepared/images (shiftlab.datasets.images)."""

    kind: Str(["fashion_mnist", "folder", "hub"]) = "fashion_mnist"
    seed: Int(0) = 0
    fashion_mnist: FashionMnist = sub(FashionMnist)
    folder: ImageFolder = sub(ImageFolder)
    hub: Hub = sub(Hub)
    frames: Frames = sub(Frames)


# ---- prepare_speech


class Tts(Section):
    espeak_voices: Int(0, 2000) = 36
    flite_voices: List(StrItem()) = ["awb", "rms"]
    speed: Range(80, 450, integer=True) = [130, 200]
    pitch: Range(0, 99, integer=True) = [25, 75]
    takes: Int(1, 100) = 1
    workers: Int(0, 256) = 0


class RealSpeech(Section):
    speakers: List(StrItem(), 1) = ["trigger_rally/ab", "trigger_rally/paula", "trigger_rally/tim",
                                    "asterisk/allison", "saytime"]
    trigger_rally_zip: Str() = "/usr/share/games/trigger-rally/data.zip"
    asterisk_dir: Str() = "/usr/share/asterisk/sounds/en_US_f_Allison"
    saytime_dir: Str() = "/usr/share/saytime"


class SpeechFolder(Section):
    source: Str(nullable=True) = None
    target: Str(nullable=True) = None
    group_pattern: Str(nullable=True) = None


class PrepareSpeech(Section):
    """``shiftlab prepare speech`` -> data/prepared/speech (shiftlab.datasets.speech)."""

    seed: Int(0) = 0
    sampling_rate: Int(4000, 96000) = 16000
    clip_seconds: Float(0.1, 30.0) = 1.0
    # clips quieter (RMS, dBFS) or shorter (s) than these are refused as not speech
    silence_db: Float(-150.0, 0.0) = -60.0
    min_seconds: Float(0.0, 30.0) = 0.05
    vocabulary: Checked(_Leaf(lambda v: v, "a preset name (pace_notes, digits) or a list of words", nullable=True),
                        str | list[str]) = "pace_notes"
    source: Str(["tts", "folder"]) = "tts"
    target: Str(["real", "folder"]) = "real"
    tts: Tts = sub(Tts)
    real: RealSpeech = sub(RealSpeech)
    folder: SpeechFolder = sub(SpeechFolder)


# ---- prepare_noise


class PrepareNoise(Section):
    """``shiftlab prepare noise`` -> data/prepared/noise (shiftlab.datasets.noise)."""

    sampling_rate: Int(4000, 96000) = 16000
    silence_db: Float(-150.0, 0.0) = -60.0
    recordings: List(StrItem()) = ["trigger_rally/*", "dustracing2d/carEngine", "dustracing2d/skid", "openttd/*",
                                   "torcs/*"]
    target_recordings: List(StrItem()) = ["torcs/nsx", "torcs/renault-v10", "torcs/gt40", "torcs/porsche_engine",
                                          "torcs/corolla1400hi2"]
    folder: Str(nullable=True) = None
    trigger_rally_zip: Str() = "/usr/share/games/trigger-rally/data.zip"
    dustracing2d_dir: Str() = "/usr/share/games/dustracing2d/sounds"
    opensfx_cat: Str() = "/usr/share/games/openttd/baseset/opensfx/opensfx.cat"
    torcs_dir: Str() = "/usr/share/games/torcs/data/sound"  # torcs-data: recordings torcs/<name>


# ---- split_images, split_audio


class Split(Section):
    """``shiftlab split`` (shiftlab.datasets.splits): train / train_dev / dev / test by group."""

    seed: Int(0) = 0
    target_train_fraction: Float(0.0, 1.0, hi_open=True) = 0.5
    dev_fraction: Float(0.0, 1.0, lo_open=True, hi_open=True) = 0.5
    train_dev_fraction: Float(0.0, 0.5, lo_open=True) = 0.05
    max_source_rows: Int(1, nullable=True) = None
    beta_source: Beta = 1.0
    beta_synthetic: Beta = 1.0


class SplitAudio(Split):
    # evaluation-only splits added to the audio splits, each read from data/prepared/<name> (beside the
    # input); the names are shiftlab.datasets.schema.CHECK_SPLITS (not imported here: config stays light)
    check_sets: List(StrItem(["codrivers"])) = ["codrivers"]


# ---- synth_blur, synth_blur_narrow (shiftlab.synth.blur; kernels: shiftlab.synth.kernels.sample)


def _blur_models(name: str, families, linear, shake) -> type[Section]:
    """The model of a ``synth_blur*`` section, with its own default kernel ranges."""
    fam = create_model(f"{name}Families", __base__=Section, __doc__="family mix (weights, normalised; not all 0)",
                       linear=(Float(0.0), families[0]), shake=(Float(0.0), families[1]))
    lin = create_model(f"{name}Linear", __base__=Section,
                       __doc__="straight blur (albumentations MotionBlur semantics): length px, angle degrees, "
                               "direction = weight profile along the segment (0 = symmetric)",
                       length=(Range(0.0, 500.0), linear[0]), angle=(Range(-360.0, 360.0), linear[1]),
                       direction=(Range(-1.0, 1.0), linear[2]))
    shk = create_model(f"{name}Shake", __base__=Section, __doc__="camera shake (Boracchi & Foi 2012)",
                       max_length=(Range(0.0, 500.0), shake[0]), exposure=(Range(0.001, 1.0), shake[1]),
                       anxiety=(Range(0.0, 1.0), shake[2]), jitter=(Range(0.0, 1000.0), shake[3]),
                       centripetal=(Range(0.0, 100.0), shake[4]), impulse_prob=(Range(0.0, 1000.0), shake[5]),
                       n_steps=(Int(2, 100000), 512))
    kern = create_model(f"{name}Kernels", __base__=Section,
                        __doc__="kernel ranges of shiftlab.synth.kernels.sample: [low, high] draws uniformly, "
                                "[v, v] fixes a value",
                        families=(fam, sub(fam)), linear=(lin, sub(lin)), shake=(shk, sub(shk)))
    return create_model(
        name, __base__=Section,
        __doc__="``shiftlab synth blur``: motion-blurred copies of sharp train images (shiftlab.synth.blur).",
        seed=(Int(0), 0), fraction=(Float(0.0, 1.0), 1.0), copies=(Int(1, 1000), 1),
        batch_size=(Int(1, 1 << 20), 512), device=(Str(), "auto"), workers=(Int(0, 256), 0),
        kernels=(kern, sub(kern)))


_SHAKE = ([5.0, 25.0], [0.3, 1.0], [0.001, 0.01], [0.0, 10.0], [0.0, 0.7], [0.0, 0.2])
#: the default synthesis and a deliberately narrow one (one kernel: 9 px at 45 degrees)
SynthBlur = _blur_models("SynthBlur", (0.5, 0.5), ([3.0, 15.0], [0.0, 180.0], [-1.0, 1.0]), _SHAKE)
SynthBlurNarrow = _blur_models("SynthBlurNarrow", (1.0, 0.0), ([9.0, 9.0], [45.0, 45.0], [0.0, 0.0]), _SHAKE)


# ---- calibrate_blur


class CalibrateBlur(Section):
    """``shiftlab calibrate blur`` (shiftlab.synth.calibrate): candidate kernel ranges scored against the target
    rows of train with check_images' realism metrics and gates. grid / candidates / check replace their
    defaults whole."""

    seed: Int(0) = 0
    base: Str(["synth_blur", "synth_blur_narrow"]) = "synth_blur"
    source_rows: Int(20) = 1000
    target_rows: Int(10) = 1000
    grid: Checked(_Leaf(_lazy("shiftlab.synth.calibrate", "check_grid"),
                        "a mapping of kernel keys (e.g. linear.length) to lists of values", nullable=True),
                  dict[str, list]) = {"linear.length": [[3.0, 11.0], [3.0, 15.0], [3.0, 19.0]],
                                                "shake.max_length": [[5.0, 18.0], [5.0, 25.0], [8.0, 32.0]]}
    candidates: Checked(_Leaf(_lazy("shiftlab.synth.calibrate", "check_candidates"),
                              "a list of partial kernel mappings", nullable=True), list[dict]) = []
    criterion: Str(["domain_auc", "frechet"]) = "domain_auc"
    check: Checked(_Leaf(_lazy("shiftlab.synth.calibrate", "check_overrides"), "a mapping of check_images keys",
                         nullable=True), dict) = {}
    workers: Int(0) = 0
    report: Str() = "reports/calibrate_blur.md"
    plot: Str() = "reports/calibrate_blur.png"
    metrics: Str() = "metrics/calibrate_blur.json"


# ---- experiment

_SEED_LIST = _list_leaf(_int_leaf(0), 1)
SCENARIOS = ("images", "audio")


def _check_seeds(v):
    """experiment.seeds: one list for every scenario, or a mapping scenario -> list."""
    if isinstance(v, dict):
        out = {}
        for k, x in v.items():
            if k not in SCENARIOS:
                raise ValueError(f"unknown scenario {k!r} (one of {', '.join(SCENARIOS)})")
            try:
                out[k] = _SEED_LIST(x)
            except ValueError as e:
                raise ValueError(f"{k}: {e}") from None
        missing = [k for k in SCENARIOS if k not in out]
        if missing:
            raise ValueError(f"no seeds for {', '.join(missing)}")
        return out
    return _SEED_LIST(v)


_SeedList = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]


class Experiment(Section):
    """The comparison matrix: dvc.yaml's train stages run every variant x seed."""

    variants: List(StrItem(["nosynth", "synth", "narrow"]), 1) = ["nosynth", "synth", "narrow"]
    # one list for both scenarios, or {images: [...], audio: [...]}
    seeds: Checked(_Leaf(_check_seeds, "a list of integers >= 0, or a mapping images/audio -> such a list"),
                   _SeedList | dict[Literal["images", "audio"], _SeedList]) = [0, 1, 2]
    # runs trained side by side by `shiftlab train --all` (each with its section's num_threads);
    # 0 = auto: CPU cores // num_threads (1 on CUDA). Results do not depend on it.
    jobs: Int(0) = 0


# ---- module options (sub-sections of module-validated sections)


class Frontend(Section):
    """The trainer's front end (``train_*.frontend``; shiftlab.train.frontend): image augmentation and
    normalisation, the audio log-mel features and SpecAugment."""

    # images
    normalize: Bool = True  # (x - train mean) / train std per channel (images) or per mel bin (audio)
    hflip: Bool = False  # random horizontal flip, p = 0.5 (training only)
    vflip: Bool = False  # random vertical flip, p = 0.5 (training only)
    crop_padding: Int(0) = 0  # random crop after padding this many pixels each side; 0 = off
    pad_mode: Str(["constant", "reflect"]) = "constant"  # constant (zeros = black) | reflect
    # audio
    n_mels: Int(1) = 64
    n_fft: Int(2) = 512
    win_length: Int(1, nullable=True) = None  # null = n_fft
    hop_length: Int(1) = 160  # 10 ms at 16 kHz
    f_min: Float(0.0) = 0.0
    f_max: Float(0.0, lo_open=True, nullable=True) = None  # null = sampling_rate / 2
    log: Str(["db", "log"]) = "db"  # db (AmplitudeToDB, top_db floor) | log (log(x + log_eps))
    top_db: Float(0.0, lo_open=True, nullable=True) = 80.0  # null = no floor
    log_eps: Float(0.0, lo_open=True) = 1.0e-6
    audio_seconds: Float(0.0, lo_open=True, nullable=True) = None  # clip length fed to the model; null = longest
    spec_augment: Bool = False  # SpecAugment masks (training only)
    freq_mask: Int(0) = 8  # max width of a frequency mask (bins)
    time_mask: Int(0) = 20  # max width of a time mask (frames)
    n_freq_masks: Int(0) = 2
    n_time_masks: Int(0) = 2

    @model_validator(mode="after")
    def _windows(self):
        if self.win_length is not None and self.win_length > self.n_fft:
            raise KeyProblem("win_length", f"must be <= n_fft ({self.n_fft}), got {self.win_length}")
        if self.f_max is not None and self.f_max <= self.f_min:
            raise KeyProblem("f_max", f"must be above f_min ({self.f_min:g}), got {self.f_max:g}")
        return self


# ---- synth_mix, synth_mix_narrow, target_mix (shiftlab.mixing.mix, .bank, .target)

#: the kinds of noise a bank can hold (``synth_mix.bank.sources``)
SOURCES = ("real", "folder", "virtual", "torcs")
#: the silence floor of noise clips and segments (dBFS)
SILENCE_DB = -60.0
#: most seconds rendered per virtual car (shiftlab.mixing.cars.MAX_SECONDS)
CAR_MAX_SECONDS = 3600.0


def _sources(v):
    src = [v] if isinstance(v, str) else v
    if not isinstance(src, (list, tuple)) or not src or any(s not in SOURCES for s in src):
        raise ValueError(f"must be a non-empty list of {', '.join(SOURCES)}, got {v!r}")
    return sorted(set(src), key=SOURCES.index)


def _patterns(what: str) -> Callable[[Any], list]:
    """A non-empty list of non-empty strings (one string is a list of one)."""

    def check(v):
        rec = [v] if isinstance(v, str) else v
        if not isinstance(rec, (list, tuple)) or not rec or not all(isinstance(p, str) and p for p in rec):
            raise ValueError(f"must be a non-empty list of {what}, got {v!r}")
        return list(rec)

    return check


def _path(v):
    import os

    if not isinstance(v, (str, os.PathLike)) or not str(v):
        raise ValueError(f"must be a folder path, got {v!r}")
    return v


def _path_or_null(v):
    import os

    if v is not None and not isinstance(v, (str, os.PathLike)):
        raise ValueError(f"must be a path or null, got {v!r}")
    return v


def _torcs_road(v):
    if v is not None and (not isinstance(v, str) or not v.startswith("torcs/") or len(v) <= 6):
        raise ValueError(f"must be a TORCS recording id (e.g. torcs/road-ride) or null, got {v!r}")
    return v


def _overrides(v):
    """Range overrides checked by their module (shiftlab.mixing.cars / rpm.check_ranges); null = none."""
    return {} if v is None else v


def _snr(v):
    """An SNR range [lo, hi] dB in [-60, 100] (a number = constant)."""
    spec = v if isinstance(v, (list, tuple)) else [v, v]
    ok = len(spec) == 2 and all(
        not isinstance(x, bool) and isinstance(x, numbers.Real) and math.isfinite(float(x)) for x in spec)
    if not ok:
        raise ValueError(f"must be [lo, hi] dB or a number, got {v!r}")
    lo, hi = float(spec[0]), float(spec[1])
    if hi < lo:
        raise ValueError(f"range [{lo:g}, {hi:g}] has lo > hi")
    if lo < -60.0 or hi > 100.0:
        raise ValueError(f"must lie in [-60, 100] dB, got [{lo:g}, {hi:g}]")
    return [lo, hi]


_SnrDb = Checked(_Leaf(_snr, "an SNR range [low, high] dB in [-60, 100], or a number"),
                 Annotated[list[Annotated[float, Field(ge=-60.0, le=100.0)]], Field(min_length=2, max_length=2)]
                 | Annotated[float, Field(ge=-60.0, le=100.0)])
_Patterns = Checked(_Leaf(_patterns("id patterns"), "a non-empty list of fnmatch patterns over recording ids"),
                    Annotated[list[str], Field(min_length=1)])
_RangeOverrides = Checked(_AnyLeaf(_overrides, "range overrides (module DEFAULT_RANGES keys -> [low, high] or a "
                                             "number); null = none"), dict[str, Any])


_Sources = Checked(_Leaf(_sources, f"a non-empty list of {', '.join(SOURCES)}"),
                   Annotated[list[Literal[SOURCES]], Field(min_length=1)])


class Bank(Section):
    """The noise bank of a car-noise synthesis (``synth_mix.bank``; shiftlab.mixing.bank)."""

    # which noise: real = the source-domain rows of data/prepared/noise, folder = the audio files under
    # `folder`, virtual = n_cars virtual cars (shiftlab.mixing.cars), torcs = real TORCS engine loops driven
    # through seeded RPM trajectories (shiftlab.mixing.rpm)
    sources: _Sources = ["real", "torcs"]
    # fnmatch patterns over the real recording ids (source domain only); the raw TORCS engine loops are left
    # to "torcs", which drives them
    recordings: _Patterns = ["trigger_rally/*", "dustracing2d/*", "openttd/*", "torcs/road-ride",
                             "torcs/out_of_road*", "torcs/skid*", "torcs/axle", "torcs/turbo1", "torcs/backfire_loop"]
    # a folder of noise files (files in one sub-folder form one group)
    folder: Checked(_Leaf(_path_or_null, "a path or null", nullable=True), str) = None
    n_cars: Int(0) = 40  # virtual cars (each its own group)
    seconds_per_car: Float(0.0, CAR_MAX_SECONDS, lo_open=True) = 20.0  # seconds rendered per virtual car / drive
    cars: _RangeOverrides = {}  # car parameter range overrides (shiftlab.mixing.cars.DEFAULT_RANGES keys)
    torcs_dir: Checked(_Leaf(_path, "a folder path"), str) = "/usr/share/games/torcs/data/sound"
    # fnmatch patterns over TORCS car names (cars held out for the target never match)
    torcs_cars: Checked(_Leaf(_patterns("car name patterns"), "a non-empty list of car name patterns"),
                        Annotated[list[str], Field(min_length=1)]) = ["*"]
    trajectories_per_car: Int(1) = 3  # drives per TORCS car, seconds_per_car each
    # a TORCS recording id mixed under every drive as road noise (torcs/road-ride), or null
    torcs_road: Checked(_Leaf(_torcs_road, "a TORCS recording id or null", nullable=True), str) = None
    drive: _RangeOverrides = {}  # RPM trajectory range overrides (shiftlab.mixing.rpm.DEFAULT_RANGES keys)
    silence_db: Float(-200.0, 0.0) = SILENCE_DB  # a clip below this RMS (dBFS) is rejected
    max_source_share: Float(0.0, 1.0, lo_open=True) = 0.1  # most draws any one group may get (share of all)
    min_segment_db: Float(-200.0, 0.0) = SILENCE_DB  # segments quieter than this (dBFS) are never drawn

    @model_validator(mode="after")
    def _sources_need(self):
        if "folder" in self.sources and not self.folder:
            raise KeyProblem("folder", "sources include 'folder' but no folder is set")
        if "virtual" in self.sources and self.n_cars < 1:
            raise KeyProblem("n_cars", f"sources include 'virtual' but n_cars is {self.n_cars}")
        return self


class NarrowBank(Bank):
    """The book's trap: ONE short recording (dustracing2d's 1.5 s skid) reused under all the speech."""

    sources: _Sources = ["real"]
    recordings: _Patterns = ["dustracing2d/skid"]
    max_source_share: Float(0.0, 1.0, lo_open=True) = 1.0


class SynthMix(Section):
    """``shiftlab mix``: clean source speech + car noise at a drawn SNR (shiftlab.mixing.mix)."""

    seed: Int(0) = 0
    fraction: Float(0.0, 1.0) = 1.0  # share of the eligible parents mixed
    copies: Int(1) = 1  # synthetic rows per chosen parent
    snr_db: _SnrDb = [0.0, 20.0]  # SNR range (uniform), dB; a number = constant
    peak_limit: Float(0.0, 1.0, lo_open=True) = 1.0  # clipping guard: rows peaking above this are scaled down
    bank: Bank = sub(Bank)  # noise sources and the draw policy
    device: Str() = "auto"  # auto | cpu | cuda | cuda:N
    batch_size: Int(1) = 256  # rows mixed per batch (no effect on the output)


class SynthMixNarrow(SynthMix):
    __doc__ = NarrowBank.__doc__
    bank: NarrowBank = sub(NarrowBank)


def _espeak_variants(v):
    if v == "all":
        return v
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0:
        raise ValueError(f"must be 'all' or an integer >= 0, got {v!r}")
    return int(v)


def _voices(v):
    names = v if v is not None else []
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"must be a list of voice names, got {v!r}")
    return list(names)


_Voices = Checked(_AnyLeaf(_voices, "a list of voice names (null = none)"), list[str])


class TargetTts(Section):
    """Held-out TTS voices of the target (shiftlab.datasets.speech.heldout_tts_speech)."""

    # espeak-ng variants no source voice uses, one voice (accent drawn) each: 'all' or how many
    espeak_variants: Checked(_Leaf(_espeak_variants, "'all' or an integer >= 0"),
                             Literal["all"] | Annotated[int, Field(ge=0)]) = "all"
    flite_voices: _Voices = ["kal16", "slt"]
    festival_voices: _Voices = ["cmu_us_slt_arctic_hts", "kal_diphone", "ked_diphone"]  # Debian festvox-* voices
    speed: Range(80, 450, integer=True) = [130, 200]  # words per minute, drawn per take
    pitch: Range(0, 99, integer=True) = [25, 75]  # espeak-ng pitch 0-99, drawn per take
    takes: Int(1, 100) = 2  # utterances per word per voice (festival HTS voices: 1, they ignore the speed)
    workers: Int(0, 256) = 0  # synthesis threads; 0 = all cores


class TargetMix(Section):
    """``shiftlab prepare target``: the audio target = held-out speech mixed with real car recordings held out
    from every synthesis bank (shiftlab.mixing.target)."""

    seed: Int(0) = 0
    # tts: held-out TTS voices (tts below) | real: the prepared speech's target rows (codrivers)
    speech: Str(["tts", "real"]) = "tts"
    tts: TargetTts = sub(TargetTts)
    target_snr_db: _SnrDb = [-5.0, 15.0]  # SNR range (uniform) of the target mixes, dB: the target's own prior
    recordings: _Patterns = ["*"]  # fnmatch patterns over the target-domain noise ids
    torcs_drives: Int(0, 1000) = 8  # RPM drives per held-out TORCS car (0 = its raw loops)
    seconds_per_drive: Float(0.0, 3600.0, lo_open=True) = 20.0
    drive: _RangeOverrides = {}  # RPM trajectory range overrides (shiftlab.mixing.rpm.DEFAULT_RANGES keys)
    max_source_share: Float(0.0, 1.0, lo_open=True) = 0.2  # per-group cap of the target draws
    min_segment_db: Float(-200.0, 0.0) = SILENCE_DB
    peak_limit: Float(0.0, 1.0, lo_open=True) = 1.0
    codrivers: Bool = True  # speech tts: the prepared real target rows (codrivers) -> an evaluation-only check set


# ---- train_images, train_audio (shiftlab.train.trainer)

#: which train rows a run uses (shiftlab.train.data.ROWS)
TRAIN_ROWS = ("all", "real", "no_synthetic", "target")


def _auto_bool(v):
    if not (v == "auto" and isinstance(v, str)) and not isinstance(v, bool):
        raise ValueError(f"must be one of auto, true, false, got {v!r}")
    return v


_AutoBool = Checked(_Leaf(_auto_bool, "auto, true or false"), Literal["auto"] | bool)


def _model_name(v):
    if not isinstance(v, str) or not v:
        raise ValueError(f"must be a model name (see shiftlab.train.models.names()), got {v!r}")
    return v


def _kwargs(v):
    if not isinstance(v, Mapping):
        raise ValueError(f"must be a mapping of keyword arguments, got {v!r}")
    return dict(v)


def _betas(v):
    if (not isinstance(v, (list, tuple)) or len(v) != 2 or
            not all(not isinstance(x, bool) and isinstance(x, numbers.Real) and 0 <= x < 1 for x in v)):
        raise ValueError(f"must be a pair of numbers in [0, 1), got {v!r}")
    return [float(x) for x in v]


def _epoch_rows(v):
    if v == "real" and isinstance(v, str):
        return v
    if v is not None and (isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1):
        raise ValueError(f"must be null, a positive integer or real, got {v!r}")
    return v if v is None else int(v)


def _device(v):
    if not isinstance(v, str) or not (v in ("auto", "cpu", "cuda") or (v.startswith("cuda:") and v[5:].isdigit())):
        raise ValueError(f"must be auto, cpu, cuda or cuda:N, got {v!r}")
    return v


def _dir_or_null(v):
    import os

    if v is not None and not isinstance(v, (str, os.PathLike)):
        raise ValueError(f"must be a directory path or null, got {v!r}")
    return v if v is None else str(v)


class Train(Section):
    """``shiftlab train`` (shiftlab.train.trainer): one run of a model on the mismatch splits. ``seed`` is
    replaced by each run's experiment seed; ``model_kwargs`` written in params.yaml replace the default whole."""

    model: Checked(_Leaf(_model_name, "a model name (shiftlab models lists them)"), str) = "attention_small"
    model_kwargs: Checked(_Leaf(_kwargs, "keyword arguments of the model (width, depth, attention_mode, ...)"),
                          dict[str, Any]) = {}
    epochs: Int(1) = 10
    batch_size: Int(1) = 128  # global batch (all DDP ranks together)
    eval_batch_size: Int(1) = 512
    drop_last: Bool = False  # drop the short last training batch of every epoch
    optimizer: Str(["sgd", "adamw"]) = "sgd"
    lr: Float(0.0, lo_open=True) = 0.05  # peak learning rate (after warmup)
    momentum: Float(0.0, 1.0, hi_open=True) = 0.9  # sgd
    nesterov: Bool = True  # sgd
    betas: Checked(_Leaf(_betas, "a pair of numbers in [0, 1)"),
                   Annotated[list[Annotated[float, Field(ge=0.0, lt=1.0)]], Field(min_length=2, max_length=2)]
                   ) = [0.9, 0.999]  # adamw
    weight_decay: Float(0.0) = 5.0e-4
    decay_norm_and_bias: Bool = False  # false: no weight decay on 1-d params (norm weights, biases)
    schedule: Str(["cosine", "constant"]) = "cosine"  # after warmup
    warmup_epochs: Float(0.0) = 1.0  # linear warmup from lr/steps to lr, per step; 0 = none
    min_lr_ratio: Float(0.0, 1.0) = 0.0  # cosine ends at lr * min_lr_ratio
    label_smoothing: Float(0.0, 1.0, hi_open=True) = 0.0
    grad_clip: Float(0.0, lo_open=True, nullable=True) = None  # max global grad norm; null = off
    seed: Int(0) = 0
    rows: Str(list(TRAIN_ROWS)) = "all"  # real = no_synthetic
    # rows drawn per epoch: null = all train rows; N; or "real" = the number of real (non-synthetic) train
    # rows, so adding synthetic rows does not add steps
    epoch_rows: Checked(_Leaf(_epoch_rows, "null, a positive integer or real", nullable=True),
                        Literal["real"] | Annotated[int, Field(ge=1)]) = None
    eval_train_rows: Int(1, nullable=True) = 10000  # per-epoch train error on a fixed seeded subset; null = all
    device: Checked(_Leaf(_device, "auto, cpu, cuda or cuda:N"), str) = "auto"
    amp: _AutoBool = "auto"  # auto (bf16 autocast on CUDA only) | true (also on CPU) | false
    channels_last: _AutoBool = "auto"  # auto (CUDA only) | true | false
    compile: Bool = False  # torch.compile the model
    deterministic: Bool = False  # torch.use_deterministic_algorithms + no cudnn.benchmark (CUDA)
    sync_bn: Bool = False  # SyncBatchNorm under DDP (CUDA)
    num_threads: Int(0) = 0  # torch CPU threads; 0 = leave torch's default
    data_on_device: _AutoBool = "auto"  # auto (whole split on the GPU if <= 2 GiB) | true | false
    resume: Bool = True  # continue a compatible last.pt in checkpoint_dir
    checkpoint_dir: Checked(_Leaf(_dir_or_null, "a directory path or null", nullable=True), str) = None
    frontend: Frontend = sub(Frontend)

    @model_validator(mode="after")
    def _consistent(self):
        if self.optimizer == "sgd" and self.nesterov and self.momentum == 0:
            raise KeyProblem("nesterov", f"needs momentum > 0 (set nesterov: false or a momentum), got {self.nesterov!r}")
        if self.warmup_epochs > self.epochs:
            raise KeyProblem("warmup_epochs", f"must be at most epochs ({self.epochs}), got {self.warmup_epochs!r}")
        return self


def _with_defaults(base: type[Section], name: str, doc: str, /, **defaults) -> type[Section]:
    """A subclass of ``base`` whose fields ``defaults`` have other default values (same types and checks;
    a ``(type, default)`` pair replaces the type too)."""
    fields = {k: (v if isinstance(v, tuple) else (base.__annotations__[k], v)) for k, v in defaults.items()}
    return create_model(name, __base__=base, __doc__=doc, **fields)


_TRAIN_COMMON = dict(model="cbam_resnet", model_kwargs={"width": 8, "stem_stride": 2}, epochs=10,
                     epoch_rows="real", channels_last="auto", num_threads=1)
#: the image and audio training sections: :class:`Train` with the defaults that fit `make demo` on 2 CPU cores
TrainImages = _with_defaults(
    Train, "TrainImages", "``shiftlab train --scenario images``: " + Train.__doc__.split(": ", 1)[1],
    **_TRAIN_COMMON, batch_size=128, lr=0.1, eval_train_rows=500)
TrainAudio = _with_defaults(
    Train, "TrainAudio", "``shiftlab train --scenario audio`` (log-mel front end on the training device): "
    + Train.__doc__.split(": ", 1)[1],
    **_TRAIN_COMMON, batch_size=64, optimizer="adamw", lr=0.01, weight_decay=0.01, eval_train_rows=300,
    grad_clip=1.0,
    frontend=(lambda fe: (fe, sub(fe)))(_with_defaults(Frontend, "AudioFrontend", Frontend.__doc__,
                                                         n_mels=32, hop_length=400)))


# ---- sweep_cars (shiftlab.train.sweep)

#: the 17 TORCS cars of the default bank (the five target cars are held out), in the sweep's order
SWEEP_CARS = ["f360", "viper", "206", "mclarenf1", "lotus", "935", "alpha-romeo", "evo7", "ferrarif50",
              "impreza2002", "944", "clkdtmb2", "engine-1", "ferrarif355", "ford", "lamborghinidiablo", "xj220"]


def _car_names(v):
    if not isinstance(v, list) or not v or not all(isinstance(x, str) and x for x in v):
        raise ValueError(f"must be a non-empty list of TORCS car names, got {v!r}")
    if len(set(v)) != len(v):
        raise ValueError("a car is listed twice")
    return v


def _increasing(v):
    if not isinstance(v, list) or not v or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1
                                                   for n in v):
        raise ValueError(f"must be a list of car counts >= 1, got {v!r}")
    if sorted(set(v)) != v:
        raise ValueError(f"must be increasing without repeats, got {v!r}")
    return v


def _sweep_variants(v):
    if not isinstance(v, list) or "synth" not in v or not set(v) <= {"nosynth", "synth"}:
        raise ValueError(f"must list synth (and optionally nosynth), got {v!r}")
    return v


def _distinct_seeds(v):
    if (not isinstance(v, list) or not v or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0
                                                    for x in v) or len(set(v)) != len(v)):
        raise ValueError(f"must be a list of distinct integers >= 0, got {v!r}")
    return v


def _file(v):
    if not isinstance(v, str) or not v:
        raise ValueError(f"must be a path, got {v!r}")
    return v


_File = Checked(_Leaf(_file, "a path"), str)


def _mapping(v):
    if not isinstance(v, Mapping):
        raise ValueError(f"must be a mapping of kernel ranges over synth_blur.kernels, got {v!r}")
    return copy.deepcopy(dict(v))


class SweepCars(Section):
    """``shiftlab sweep cars`` (shiftlab.train.sweep; not a dvc.yaml stage): the book's trap as a curve, one
    ``dvc exp run`` of the audio chain per bank size, every bank driven for the same total seconds."""

    cars: Checked(_Leaf(_car_names, "a non-empty list of distinct TORCS car names"),
                  Annotated[list[str], Field(min_length=1)]) = list(SWEEP_CARS)  # in the order the bank grows
    # how many of them each point's bank uses
    points: Checked(_Leaf(_increasing, "an increasing list of car counts (each at most the number of cars)"),
                    Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=1)]) = [1, 3, 10, 17]
    seconds: Float(0.0, lo_open=True) = 1020.0  # total seconds of driven noise in every bank
    seconds_per_drive: Float(0.0, lo_open=True) = 20.0  # drives per car = round(seconds / (n x this)) (>= 1)
    # experiment.variants of each point (narrow is not part of the sweep)
    variants: Checked(_Leaf(_sweep_variants, "synth, and optionally nosynth"),
                      list[Literal["nosynth", "synth"]]) = ["nosynth", "synth"]
    seeds: Checked(_Leaf(_distinct_seeds, "a list of distinct integers >= 0"),
                   Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]) = [0, 1, 2]
    dir: _File = "metrics/sweep_cars"  # per-point results (copied after each dvc exp run)
    report: _File = "reports/sweep_cars.md"
    plot: _File = "reports/sweep_cars.png"
    metrics: _File = "metrics/sweep_cars.json"

    @model_validator(mode="after")
    def _points_fit(self):
        if self.points[-1] > len(self.cars):
            raise KeyProblem("points", f"must be a list of car counts in [1, {len(self.cars)}], got {self.points!r}")
        return self


# ---- check_images, check_audio (shiftlab.synth.diversity, .features; shiftlab.mixing.diversity)

_GATE_KEYS = ("min", "max", "action")


def _gates(module: str, defaults: Mapping[str, Any]) -> Callable[[Any], dict]:
    """The check of a ``gates`` mapping (metric -> ``{min|max: threshold, action: fail|warn}``), merged metric by
    metric over ``defaults``: a gate given without min / max keeps the default threshold, ``metric: null``
    switches that gate off, ``gates: null`` switches every gate off. Metric names are ``module.METRICS``."""

    def check(v):
        if v is None:
            return {}
        if not isinstance(v, Mapping):
            raise ValueError(f"must be a mapping metric -> {{min|max, action}}, or null, got {v!r}")
        import importlib

        metrics = list(importlib.import_module(module).METRICS)
        out = copy.deepcopy(dict(defaults))
        for name, spec in v.items():
            if name not in metrics:
                hint = difflib.get_close_matches(str(name), metrics, 1) or [m for m in metrics if str(name) in m][:1]
                raise KeyProblem(str(name), f"unknown metric{f' (did you mean {hint[0]}?)' if hint else ''}")
            if spec is None:
                out.pop(name, None)
                continue
            if not isinstance(spec, Mapping):
                raise KeyProblem(str(name), f"must be a mapping like {{max: 0.1, action: fail}}, or null, got {spec!r}")
            extra = sorted(set(spec) - set(_GATE_KEYS))
            if extra:
                raise KeyProblem(f"{name}.{extra[0]}", "unknown key (a gate has min or max, and action)")
            ops = [k for k in ("min", "max") if k in spec]
            if len(ops) > 1:
                raise KeyProblem(str(name), "give either min or max, not both")
            base = out.get(name, {})
            op = ops[0] if ops else next((k for k in ("min", "max") if k in base), None)
            if op is None:
                raise KeyProblem(str(name), "needs a threshold (min or max)")
            thr = spec.get(op, base.get(op))
            if isinstance(thr, bool) or not isinstance(thr, numbers.Real) or not math.isfinite(float(thr)):
                raise KeyProblem(f"{name}.{op}", f"must be a finite number, got {thr!r}")
            action = spec.get("action", base.get("action", "fail"))
            if action not in ("fail", "warn"):
                raise KeyProblem(f"{name}.action", f"must be fail or warn, got {action!r}")
            out[str(name)] = {op: float(thr), "action": action}
        return out

    return check


_GATE_SCHEMA = dict[str, Optional[dict[Literal["min", "max", "action"], float | Literal["fail", "warn"]]]]


def Gates(module: str, defaults: Mapping[str, Any]):
    """A ``gates`` field: checked by :func:`_gates`, its default ``defaults``."""
    return Checked(_AnyLeaf(_gates(module, defaults), "a mapping metric -> {min|max: threshold, action: fail|warn} "
                                                      "merged over the default gates (metric: null = gate off), "
                                                      "or null (no gates)"), _GATE_SCHEMA)


class Features(Section):
    """The feature network of the image checks (``check_images.features``; shiftlab.synth.features)."""

    size: Int(8) = 32  # working side in px: every image is resized to size x size
    channels: List(IntItem(1), 3, 3) = [16, 32, 64]  # conv widths of the three blocks
    embed_dim: Int(2) = 64  # embedding (penultimate layer) width
    train_rows: Int(20) = 8000  # at most this many real train rows fit the network
    epochs: Int(1) = 4  # passes over those rows
    batch_size: Int(1) = 128
    lr: Float(0.0, lo_open=True) = 0.003  # Adam learning rate
    weight_decay: Float(0.0) = 0.0001  # Adam weight decay


class CheckFeatures(Features):
    # at most this share of parent groups may fit the network (the rest are compared)
    max_parent_share: Float(0.0, 1.0, hi_open=True) = 0.5


class NearDuplicates(Section):
    space: Str(["pixels", "features"]) = "pixels"  # pixels (at features.size) or features
    threshold: Float(0.0, 1.0, lo_open=True) = 0.98  # centred cosine similarity


class Realism(Section):
    folds: Int(2) = 5  # domain classifier folds
    n_boot: Int(0) = 1000  # bootstrap replicates for every interval


def _band_degrees(v):
    v = _float_leaf(0.0, lo_open=True)(v)
    k = 90.0 / v
    if not (k >= 1 and abs(k - round(k)) < 1e-9 and round(k) % 2 == 1):
        raise ValueError(f"must divide 90 an odd number of times (90, 30, 18, 10, ...), got {v:g}")
    return v


class ImageProbe(Section):
    """The image probe: orientation bands dealt alternately to sets A and B; trained on one set, held-out
    kernel = the row's own kernel turned 90 degrees (into the other set)."""

    test_fraction: Float(0.0, 1.0, lo_open=True, hi_open=True) = 0.3  # share of parent groups held out
    min_rows: Int(10) = 50  # training rows an orientation set needs to be probed
    band_degrees: Checked(_Leaf(_band_degrees, "a number of degrees that divides 90 an odd number of times"),
                          float) = 30.0
    max_cosine: Float(0.0, 1.0, lo_open=True) = 0.9  # a held-out kernel's cosine to every training kernel is below
    l2: Float(0.0) = 0.001  # logistic regression L2 penalty


class ImagePlots(Section):
    examples: Int(1) = 8  # columns of the example grids


def _kernel_size(v):
    from shiftlab.synth import kernels

    v = _int_leaf(0)(v)
    if v and (v % 2 == 0 or v > kernels.MAX_AUTO_SIZE):
        raise ValueError(f"must be 0 (auto) or an odd integer <= {kernels.MAX_AUTO_SIZE}, got {v}")
    return v


def _length_range(v):
    v = _list_leaf(_float_leaf(0.0), 2, 2)(v)
    if not v[0] < v[1]:
        raise ValueError(f"must be [low, high] px with 0 <= low < high, got {v!r}")
    return v


# thresholds read off the diversity ladder (``shiftlab ladder images``, reports/ladder.md): rungs of 1, 5, 20,
# 100 kernels and a fresh kernel per row drawn from the same generator at equal rows
IMAGE_GATES: dict[str, dict] = {
    "kernel_effective_share": {"min": 0.5, "action": "fail"},  # 100 kernels 0.05 FAIL, fresh per row 1.0 PASS
    "kernel_vendi_ratio": {"min": 0.75, "action": "fail"},  # 20 kernels 0.53 FAIL, 100 0.85, fresh 1.01
    "top_kernel_share": {"max": 0.05, "action": "warn"},
    "orientation_entropy": {"min": 0.5, "action": "fail"},
    "length_entropy": {"min": 0.2, "action": "warn"},  # a fixed-range histogram: short kernels score ~0.29
    "max_copies_per_parent": {"max": 20.0, "action": "warn"},
    "near_duplicate_share": {"max": 0.1, "action": "fail"},
    "probe_gap": {"max": 0.03, "action": "warn"},
    "probe_gap_ci_high": {"max": 0.08, "action": "fail"},  # 5 / 20 kernels 0.12 / 0.11 FAIL, 100 and fresh 0.05
    "domain_auc": {"max": 0.9, "action": "warn"},
}


class CheckImages(Section):
    """``shiftlab check images`` (shiftlab.synth.diversity): diversity, realism and overfitting probes of the
    synthetic images, with gates (both the default and the narrow synthesis are checked with the same ones)."""

    seed: Int(0) = 0  # every random choice derives from it
    max_rows: Int(50) = 4000  # synthetic rows for the image metrics (subsample by parent)
    max_target: Int(10) = 2000  # target rows for the realism metrics
    max_kernels: Int(10) = 4000  # kernels rendered for orientation and kernel Vendi
    # side of the kernel vectors (odd); 0 = the largest rendered kernel
    kernel_size: Checked(_Leaf(_kernel_size, "0 (auto) or an odd integer (at most synth.kernels.MAX_AUTO_SIZE)"),
                         int) = 0
    bins: Int(2) = 10  # histogram bins per kernel parameter
    length_range: Checked(_Leaf(_length_range, "[low, high] px with 0 <= low < high"),
                          Annotated[list[float], Field(min_length=2, max_length=2)]) = [0.0, 32.0]
    near_duplicates: NearDuplicates = sub(NearDuplicates)
    realism: Realism = sub(Realism)
    probe: ImageProbe = sub(ImageProbe)
    features: CheckFeatures = sub(CheckFeatures)
    plots: ImagePlots = sub(ImagePlots)
    gates: Gates("shiftlab.synth.diversity", IMAGE_GATES) = IMAGE_GATES


class AudioProbe(Section):
    folds: Int(2) = 2  # source folds of the leave-sources-out probe
    test_fraction: Float(0.0, 1.0, lo_open=True, hi_open=True) = 0.25  # share of each source's mixes held out
    min_rows: Int(4) = 40  # fewer usable mixes than this: probe not applicable


# thresholds read off the diversity ladder (``shiftlab ladder audio``, reports/ladder.md): banks of 1, 3, 10 and 17
# real cars at equal seconds of noise, the default bank, and all cars with their noise reused 50x
AUDIO_GATES: dict[str, dict] = {
    "effective_sources_by_use": {"min": 15.0, "action": "fail"},  # 10 cars ~10 FAIL; 17 cars ~17, default ~21
    "vendi_sources_share": {"min": 0.2, "action": "warn"},  # sources that sound alike (near-copies)
    "largest_source_share": {"max": 0.25, "action": "fail"},
    "reuse_ratio": {"max": 20.0, "action": "fail"},
    "max_segment_uses": {"max": 100.0, "action": "fail"},
    "probe_gap": {"max": 0.05, "action": "warn"},
    "probe_gap_ci_high": {"max": 0.10, "action": "fail"},
    "domain_auc": {"max": 0.90, "action": "warn"},
    "noise_domain_auc": {"max": 0.95, "action": "warn"},
}


class CheckAudio(Section):
    """``shiftlab check audio`` (shiftlab.mixing.diversity): reuse, spectral diversity, realism and a
    leave-sources-out probe of the synthetic mixes, with gates."""

    seed: Int(0) = 0  # every random choice of the check derives from it
    # mixes entering the spectral / realism / probe parts (seeded subsample); reuse always counts every mix
    max_rows: Int(20) = 2000
    segment_seconds: Float(0.0, lo_open=True, nullable=True) = None  # segment length; null = median mix length
    segment_hop: Float(0.0, 1.0, lo_open=True) = 1.0  # hop as a fraction of the segment length; 1 = no overlap
    # bank segments entering the features (seeded, spread over the sources, at least one per used source)
    max_bank_segments: Int(2) = 1000
    n_mels: Int(2) = 40  # mel bands
    win_seconds: Float(0.0, lo_open=True) = 0.025  # STFT window
    hop_seconds: Float(0.0, lo_open=True) = 0.01  # STFT hop
    f_min: Float(0.0) = 20.0  # lowest mel edge in Hz
    f_max: Float(0.0, lo_open=True, nullable=True) = None  # highest mel edge in Hz (<= Nyquist); null = Nyquist
    top_db: Float(0.0, lo_open=True) = 80.0  # dB floor below each segment's maximum
    vendi_bandwidth_db: Float(0.0, lo_open=True) = 3.0  # rbf bandwidth of the Vendi scores, RMS dB
    domain_folds: Int(2) = 5  # folds of the domain classifiers
    l2: Float(0.0) = 0.001  # L2 penalty of every logistic fit
    n_boot: Int(0) = 1000  # bootstrap replicates of every CI (0 = no CI)
    probe: AudioProbe = sub(AudioProbe)
    max_plot_sources: Int(1) = 30  # sources drawn in the per-source plots
    gates: Gates("shiftlab.mixing.diversity", AUDIO_GATES) = AUDIO_GATES

    @model_validator(mode="after")
    def _mel_edges(self):
        if self.f_max is not None and self.f_max <= self.f_min:
            raise KeyProblem("f_max", f"must be above f_min ({self.f_min:g}) or null, got {self.f_max:g}")
        return self


# ---- report (shiftlab.train.report)

REPORT_SCENARIOS = ("images", "audio")


def _names(choices=None) -> Callable[[Any], list]:
    def check(v):
        if not isinstance(v, (list, tuple)) or not v or not all(isinstance(x, str) and x for x in v):
            raise ValueError(f"must be a non-empty list of names, got {v!r}")
        if len(set(v)) != len(v):
            raise ValueError(f"has duplicates: {list(v)}")
        bad = [x for x in v if choices is not None and x not in choices]
        if bad:
            raise ValueError(f"unknown scenario {bad[0]!r} (expected some of {', '.join(choices)})")
        return list(v)

    return check


def _name(v):
    if not isinstance(v, str) or not v:
        raise ValueError(f"must be a variant name, got {v!r}")
    return v


class Report(Section):
    """``shiftlab report`` (shiftlab.train.report): the report of the whole run."""

    scenarios: Checked(_Leaf(_names(REPORT_SCENARIOS), "a non-empty list of images / audio"),
                       list[Literal[REPORT_SCENARIOS]]) = ["images", "audio"]
    # display order; other variants found follow, sorted
    variants: Checked(_Leaf(_names(), "a non-empty list of variant names"), list[str]) = ["nosynth", "synth",
                                                                                           "narrow"]
    baseline: Checked(_Leaf(_name, "a variant name"), str) = "nosynth"  # the differences are taken against it
    examples: Int(0, 32) = 8  # columns of the example grids (0 = no grids)
    seed: Int(0) = 0  # seed of the example choice
    confusion_seed: Int(0, nullable=True) = None  # seed whose confusion matrix is shown; null = the lowest seed
    n_mels: Int(8, 256) = 64  # mel bands of the audio example spectrograms
    dpi: Int(50, 300) = 100  # resolution of the report's own PNGs


# ---- ladder (shiftlab.ladder; not a dvc.yaml stage)


class LadderImages(Section):
    rows: Int(50) = 2000  # synthetic rows per rung (one copy of each of the same parents)
    # fixed-kernel rungs; a fresh-kernel-per-row rung and a mild one are added
    kernels: Checked(_Leaf(_increasing, "an increasing list of kernel counts >= 1"),
                     list[Annotated[int, Field(ge=1)]]) = [1, 5, 20, 100]
    # the mild rung: kernel ranges over synth_blur.kernels (checked by shiftlab.synth.kernels)
    mild: Checked(_Leaf(_mapping, "a mapping of kernel ranges over synth_blur.kernels"), dict) = {
        "linear": {"length": [1.0, 5.0]}, "shake": {"max_length": [2.0, 6.0]}}

    @model_validator(mode="after")
    def _fits(self):
        if self.kernels[-1] > self.rows:
            raise KeyProblem("kernels", f"{self.kernels[-1]} kernels exceed images.rows ({self.rows})")
        return self


class LadderAudio(Section):
    # TORCS cars per rung (sweep_cars' default cars, in order)
    cars: Checked(_Leaf(_increasing, f"an increasing list of car counts in [1, {len(SWEEP_CARS)}]"),
                  list[Annotated[int, Field(ge=1, le=len(SWEEP_CARS))]]) = [1, 3, 10, 17]
    seconds: Float(0.0, lo_open=True) = 1020.0  # driven noise per rung (the default bank drives 17 cars x 3 x 20 s)
    seconds_per_drive: Float(0.0, lo_open=True) = 20.0
    reuse: Float(0.0, lo_open=True) = 50.0  # the reused rung: all cars, seconds of mixed speech / this of noise
    default_bank: Bool = True  # a rung with the default bank (synth_mix.bank)

    @model_validator(mode="after")
    def _known_cars(self):
        if self.cars[-1] > len(SWEEP_CARS):
            raise KeyProblem("cars", f"must be car counts in [1, {len(SWEEP_CARS)}], got {self.cars!r}")
        return self


class Ladder(Section):
    """``shiftlab ladder`` (shiftlab.ladder; not a dvc.yaml stage): synthetic sets of graded diversity from the
    same generators at equal rows, checked; the committed results calibrate the gates and feed the report."""

    seed: Int(0) = 0
    images: LadderImages = sub(LadderImages)
    audio: LadderAudio = sub(LadderAudio)
    metrics_images: _File = "metrics/ladder_images.json"
    metrics_audio: _File = "metrics/ladder_audio.json"
    report: _File = "reports/ladder.md"
    plot: _File = "reports/ladder.png"


# ---- evaluate

_FRACTION = _float_leaf(0.0, 1.0, hi_open=True)


def _per_scenario(leaf: _Leaf) -> Callable[[Any], Any]:
    """``leaf`` applied to a value, or to every value of a mapping scenario -> value (errors name the scenario)."""

    def check(v):
        if isinstance(v, Mapping):
            out = {}
            for k, x in v.items():
                try:
                    out[str(k)] = leaf(x)
                except ValueError as e:
                    raise KeyProblem(str(k), str(e)) from None
            return out
        return leaf(v)

    return check


def _text(v):
    if not isinstance(v, str):
        raise ValueError(f"must be a text or a mapping scenario -> text, got {v!r}")
    return v


_FRACTION_SCHEMA = Annotated[float, Field(ge=0.0, lt=1.0)]


class Evaluate(Section):
    """``shiftlab evaluate`` (shiftlab.train.evaluate): per-run bootstrap CIs, the MLY decomposition and
    seed-paired verdicts. Fixed before any result is seen: the equivalence margin (min_effect), the power of
    the MDE, the fewest groups for a verdict, and the rule that flags runs that did not fit."""

    # Bayes / human-level proxy, a fraction in [0, 1), or {scenario: fraction}
    optimal_error: Checked(_Leaf(_per_scenario(_FRACTION), "a fraction in [0, 1), or a mapping scenario -> it"),
                           _FRACTION_SCHEMA | dict[str, _FRACTION_SCHEMA]) = 0.0
    # what the optimal error stands for: text, or {scenario: text}
    optimal_error_proxy: Checked(_Leaf(_per_scenario(_text), "a text or a mapping scenario -> text", nullable=True),
                                 str | dict[str, str]) = None
    n_boot: Int(100) = 2000  # bootstrap replicates
    ci: Float(0.0, 1.0, lo_open=True, hi_open=True) = 0.95  # confidence level
    seed: Int(0) = 0  # bootstrap seed
    cluster: Str(["auto", "rows", "groups"]) = "auto"  # dev/test CI unit
    min_groups: Int(2) = 5  # auto/groups: fewest groups for a cluster bootstrap
    # smallest difference that matters (fraction): equivalence margin, and a decomposition component is
    # never named below it
    min_effect: Float(0.0, 1.0) = 0.01
    power: Float(0.5, 1.0, lo_open=True, hi_open=True) = 0.8  # the power the minimum detectable effect is for
    fit_max_chance_share: Float(0.0, 1.0, lo_open=True) = 0.5  # "did not fit": train error > this x chance error
    dominant_share: Float(0.0, 1.0, lo_open=True) = 0.5  # named when >= this share of the largest component


#: params.yaml section -> its model (the sections validated here), in file order
MODELS: dict[str, type[Section]] = {
    "prepare_images": PrepareImages,
    "prepare_speech": PrepareSpeech,
    "prepare_noise": PrepareNoise,
    "split_images": Split,
    "split_audio": SplitAudio,
    "synth_blur": SynthBlur,
    "synth_blur_narrow": SynthBlurNarrow,
    "calibrate_blur": CalibrateBlur,
    "experiment": Experiment,
}

#: sections still validated by a module of their own (config.ModuleSection), as ``module.function``
MODULE_SECTIONS: dict[str, str] = {
    "target_mix": "shiftlab.mixing.target.check_cfg",
    "synth_mix": "shiftlab.mixing.mix.check_cfg",
    "synth_mix_narrow": "shiftlab.mixing.mix.check_cfg",
    "check_images": "shiftlab.synth.diversity.check_cfg",
    "check_audio": "shiftlab.mixing.diversity.check_cfg",
    "train_images": "shiftlab.train.trainer.merge",
    "train_audio": "shiftlab.train.trainer.merge",
    "evaluate": "shiftlab.train.evaluate.merge_config",
    "report": "shiftlab.train.report.merge_config",
    "sweep_cars": "shiftlab.train.sweep.check_cfg",
    "ladder": "shiftlab.ladder.check_cfg",
}


#: every params.yaml section, in file order
SECTIONS = ("prepare_images", "prepare_speech", "prepare_noise", "split_images", "split_audio", "synth_blur",
            "synth_blur_narrow", "target_mix", "synth_mix", "synth_mix_narrow", "check_images", "check_audio",
            "calibrate_blur", "experiment", "train_images", "train_audio", "evaluate", "report", "sweep_cars", "ladder")

#: module sections whose module validates them with a model here (the JSON Schema shows the model)
MODULE_MODELS: dict[str, type[Section]] = {"target_mix": TargetMix, "synth_mix": SynthMix,
                                           "synth_mix_narrow": SynthMixNarrow, "check_images": CheckImages,
                                           "check_audio": CheckAudio, "train_images": TrainImages,
                                           "train_audio": TrainAudio, "evaluate": Evaluate, "report": Report,
                                           "sweep_cars": SweepCars, "ladder": Ladder}


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any] | None) -> dict:
    """``base`` with ``over`` merged in key by key (nested mappings recursively), as a new dict (deep copies):
    how params overrides apply (``dvc exp run -S``, ``--set``, presets, a module section over its defaults)."""
    out = copy.deepcopy(dict(base))
    for k, v in (over or {}).items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def merge_known(base: Mapping[str, Any], over: Mapping[str, Any] | None, where: str, replace: tuple = ()) -> dict:
    """:func:`deep_merge` that refuses a key ``base`` does not have (``where.key: unknown key (did you mean
    ...?)``) and a plain value where ``base`` has a mapping; keys in ``replace`` take the given value whole.
    For option mappings that are a library's API rather than a params section (a kernel sampler's cfg,
    whose values are numbers or ``[low, high]`` ranges checked by its module)."""
    if over is None:
        return copy.deepcopy(dict(base))
    if not isinstance(over, Mapping):
        raise ParamsError(f"{where}: must be a mapping of keys, got {over!r}")
    out = copy.deepcopy(dict(base))
    for k, v in over.items():
        if k not in out:
            hint = difflib.get_close_matches(str(k), [str(x) for x in out], 1)
            raise ParamsError(f"{where}.{k}: unknown key{f' (did you mean {hint[0]}?)' if hint else ''}")
        if isinstance(out[k], Mapping) and k not in replace:
            out[k] = merge_known(out[k], v, f"{where}.{k}")
        else:
            out[k] = copy.deepcopy(v if not isinstance(v, Mapping) else dict(v))
    return out


# --------------------------------------------------------------------------- range overrides


def range_overrides(ranges: Mapping[str, Any] | None, defaults: Mapping[str, Any], where: str, what: str,
                    int_keys: tuple = (), signed: tuple = (), skip: tuple = (), check_defaults: bool = True) -> dict:
    """``defaults`` (parameter -> ``[lo, hi]`` or a number) with the overrides ``ranges`` merged in, each
    checked as a ``[lo, hi]`` float pair (a number ``v`` is ``[v, v]``): finite, ``lo <= hi``, ``lo >= 0``
    unless the key is in ``signed``, whole numbers ``>= 1`` for ``int_keys``. Keys in ``skip`` are merged,
    not checked (their module checks them). The ranges of shiftlab.mixing.cars and shiftlab.mixing.rpm
    (``synth_mix.bank.cars``, ``.drive``). ``ranges`` None without ``check_defaults``: the defaults as they are.
    Errors are one-line :class:`ParamsError` naming ``where.key`` (an unknown ``what``)."""
    out = {k: (list(v) if isinstance(v, list) else v) for k, v in defaults.items()}
    if ranges is None and not check_defaults:
        return out
    if ranges is None:
        ranges = {}
    if not isinstance(ranges, Mapping):
        raise ParamsError(f"{where}: must be a mapping of {what} ranges, got {ranges!r}")
    for k, v in ranges.items():
        if k not in out:
            hint = difflib.get_close_matches(str(k), list(out), 1)
            raise ParamsError(f"{where}.{k}: unknown {what}{f' (did you mean {hint[0]}?)' if hint else ''}")
        out[k] = list(v) if isinstance(v, (list, tuple)) else v
    for k, v in out.items():
        if k in skip:
            continue
        spec = v if isinstance(v, list) else [v, v]
        if len(spec) != 2 or any(isinstance(s, bool) or not isinstance(s, numbers.Real)
                                 or not math.isfinite(float(s)) for s in spec):
            raise ParamsError(f"{where}.{k}: must be [lo, hi] or a number, got {v!r}")
        lo, hi = float(spec[0]), float(spec[1])
        if hi < lo:
            raise ParamsError(f"{where}.{k}: range [{lo:g}, {hi:g}] has lo > hi")
        if k in int_keys and (lo < 1 or not lo.is_integer() or not hi.is_integer()):
            raise ParamsError(f"{where}.{k}: must be integers >= 1, got {v!r}")
        if k not in signed and lo < 0:
            raise ParamsError(f"{where}.{k}: must be >= 0, got {v!r}")
        out[k] = [lo, hi]
    return out


# --------------------------------------------------------------------------- errors


def _field_names_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """The field names of the (sub-)model reached by following ``loc`` from ``model``."""
    for part in loc:
        f = model.model_fields.get(part) if isinstance(part, str) else None
        ann = getattr(f, "annotation", None)
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        else:
            break
    return list(model.model_fields)


def format_error(err: ValidationError, model: type[BaseModel], where: str) -> str:
    """The first error of ``err`` as one line ``where.key.sub: reason`` (without the file name)."""
    e = err.errors(include_url=False)[0]
    loc = tuple(e["loc"])
    name = ".".join([where, *map(str, loc)]) if where else ".".join(map(str, loc))
    kind = e["type"]
    if kind == "extra_forbidden":
        hint = difflib.get_close_matches(str(loc[-1]), _field_names_at(model, loc[:-1]), 1)
        return f"{name}: unknown key{f' (did you mean {hint[0]}?)' if hint else ''}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"{name}: must be a mapping of keys, got {e['input']!r}"
    if kind == "value_error" and "error" in e.get("ctx", {}):
        err_ = e["ctx"]["error"]
        if isinstance(err_, KeyProblem):
            name = f"{name}.{err_.key}" if name else err_.key
        return f"{name}: {err_}"
    return f"{name}: {e['msg']}"


class KeyProblem(ValueError):
    """A check across fields (a model validator) that names the key at fault: ``where.key: message``."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


class ParamsError(ShiftlabError, ValueError):
    """A section that does not fit its model; ``str()`` is the one-line message without the file name."""


def validate_section(model: type[Section], value, where: str) -> Section:
    """``value`` (a mapping from params.yaml, or None) as a ``model`` instance; :class:`ParamsError` if invalid."""
    if value is not None and not isinstance(value, dict):
        raise ParamsError(f"{where}: must be a mapping of keys, got {value!r}")
    try:
        return model.model_validate(value or {})
    except ValidationError as e:
        raise ParamsError(format_error(e, model, where)) from None


def dump(obj: Section, raw=None) -> dict:
    """A validated section as plain nested dicts: the keys written in ``raw`` first, in their order,
    then the defaults in field order (how params sections have always been returned). Without
    ``raw``: field order throughout."""
    out = {}
    raw = raw if isinstance(raw, dict) else {}
    names = [k for k in raw if k in type(obj).model_fields] + [k for k in type(obj).model_fields if k not in raw]
    for k in names:
        v = getattr(obj, k)
        out[k] = dump(v, raw.get(k)) if isinstance(v, BaseModel) else _copy(v)
    return out


_TOP: dict = {}


def _top_model(model: type[Section], own: tuple) -> type[Section]:
    """``model`` with the fields in ``own`` taking any value (checked by their module instead)."""
    if not own:
        return model
    key = (model, own)
    if key not in _TOP:
        fields = {k: ((Any, None) if k in own else (f.annotation, f)) for k, f in model.model_fields.items()}
        _TOP[key] = create_model(model.__name__, __base__=Section, __doc__=model.__doc__, **fields)
    return _TOP[key]


def merge(model: type[Section], cfg: Mapping[str, Any] | None, where: str, base: Mapping[str, Any] | None = None,
          own: tuple = ()) -> dict:
    """A module's options: ``cfg`` merged key by key over ``base`` (default: the model's defaults) and validated
    by ``model``, as a plain dict in ``base``'s key order. Keys in ``own`` are passed through unchecked (their
    module checks them: e.g. ``synth_blur.kernels``, a :func:`shiftlab.synth.kernels.sample` cfg). Errors are
    :class:`ParamsError` lines naming ``where.key``."""
    if cfg is not None and not isinstance(cfg, Mapping):
        raise ParamsError(f"{where}: must be a mapping of keys, got {cfg!r}")
    merged = copy.deepcopy(dict(defaults(model) if base is None else base))
    for k, v in (cfg or {}).items():
        merged[k] = copy.deepcopy(v)
    own = tuple(own)
    checked = {k: v for k, v in merged.items() if k not in own}
    obj = validate_section(_top_model(model, own), checked, where)
    values = dump(obj, {k: None for k in checked})  # sub-sections in field order (merged over their defaults)
    return {k: (merged[k] if k in own else values[k]) for k in merged}


def _copy(v):
    if isinstance(v, dict):
        return {k: _copy(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_copy(x) for x in v]
    return v


def defaults(model: type[Section]) -> dict:
    """The defaults of a section model as nested dicts."""
    return dump(model())


# --------------------------------------------------------------------------- JSON Schema


def json_schema() -> dict:
    """JSON Schema (draft 2020-12) of the whole params.yaml: one property per section."""
    props: dict[str, Any] = {}
    defs: dict[str, Any] = {}
    models = {**MODELS, **MODULE_MODELS}
    for name in SECTIONS:
        sch = models[name].model_json_schema(ref_template="#/$defs/{model}")
        defs.update(sch.pop("$defs", {}))
        props[name] = sch
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "shiftlab params.yaml",
        "description": "The only configuration of shiftlab: one section per pipeline stage.",
        "type": "object",
        "additionalProperties": False,
        "properties": props,
        "$defs": defs,
    }


def knob_rows(name: str) -> list[tuple[str, str, str]]:
    """(dotted key, what it takes, default) of every knob of a modelled section, sub-sections flattened:
    the rows of a README knob table, read from the schema."""
    import json

    model = {**MODELS, **MODULE_MODELS}[name]
    rows: list[tuple[str, str, str]] = []

    def walk(m: type[BaseModel], prefix: str) -> None:
        for k, f in m.model_fields.items():
            ann = f.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                walk(ann, f"{prefix}{k}.")
                continue
            default = f.get_default(call_default_factory=True)
            rows.append((f"{prefix}{k}", f.description or "", json.dumps(default)))

    walk(model, "")
    return rows


def knob_table(name: str) -> str:
    """A Markdown table of :func:`knob_rows` (``| knob | takes | default |``)."""
    lines = ["| knob | takes | default |", "| --- | --- | --- |"]
    lines += [f"| `{k}` | {d} | `{v}` |" for k, d, v in knob_rows(name)]
    return "\n".join(lines) + "\n"
