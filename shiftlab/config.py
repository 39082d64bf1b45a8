"""params.yaml: the only configuration, validated on load.

Every stage reads its own section. The whole file is checked against :data:`SCHEMA`
whenever any section is loaded, so a typo anywhere is reported at once, as one
line naming the key: ``params.yaml: split_images.dev_fractoin: unknown key (did you
mean dev_fraction?)``. Missing keys take the defaults below; the defaults are also
what ``shiftlab params --defaults`` prints. A section written with nothing under it
(``train_images:`` alone, usually a half-deleted block) also takes the defaults, with
one warning line on stderr.
"""

from __future__ import annotations

import copy
import difflib
import math
import sys
from pathlib import Path
from collections.abc import Mapping
from typing import Any

import yaml

from shiftlab.errors import ShiftlabError

PARAMS_FILE = "params.yaml"


class Spec:
    """One leaf of the schema: a type, a default and the allowed values."""

    def __init__(self, default, check, describe: str, nullable: bool = False):
        self.default = default
        self.check = check  # value -> normalised value, raises ValueError(reason)
        self.describe = describe
        self.nullable = nullable

    def validate(self, value):
        if value is None:
            if self.nullable:
                return None
            raise ValueError(f"must be {self.describe}, got null")
        return self.check(value)


def _range_text(lo, hi, lo_open=False, hi_open=False):
    left = "(" if lo_open else "["
    right = ")" if hi_open else "]"
    return f"{left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{right}"


def _in_range(v, lo, hi, lo_open, hi_open):
    if lo is not None and (v < lo or (lo_open and v == lo)):
        return False
    if hi is not None and (v > hi or (hi_open and v == hi)):
        return False
    return True


def Int(default, lo=None, hi=None, nullable=False):
    desc = f"an integer in {_range_text(lo, hi)}"

    def check(v):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"must be {desc}, got {v!r}")
        if not _in_range(v, lo, hi, False, False):
            raise ValueError(f"{v} is out of range {_range_text(lo, hi)}")
        return v

    return Spec(default, check, desc, nullable)


def Float(default, lo=None, hi=None, lo_open=False, hi_open=False, nullable=False):
    rng = _range_text(lo, hi, lo_open, hi_open)
    desc = f"a number in {rng}"

    def check(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"must be {desc}, got {v!r}")
        v = float(v)
        if not math.isfinite(v) or not _in_range(v, lo, hi, lo_open, hi_open):
            raise ValueError(f"{v:g} is out of range {rng}")
        return v

    return Spec(default, check, desc, nullable)


def Str(default, choices=None, nullable=False):
    desc = "one of " + ", ".join(map(str, choices)) if choices else "a string"

    def check(v):
        if not isinstance(v, str):
            raise ValueError(f"must be {desc}, got {v!r}")
        if choices and v not in choices:
            hint = difflib.get_close_matches(v, choices, 1)
            extra = f" (did you mean {hint[0]}?)" if hint else ""
            raise ValueError(f"{v!r} is not {desc}{extra}")
        return v

    return Spec(default, check, desc, nullable)


def Bool(default):
    def check(v):
        if not isinstance(v, bool):
            raise ValueError(f"must be true or false, got {v!r}")
        return v

    return Spec(default, check, "true or false")


def List(item: Spec, default, min_len=0, max_len=None, nullable=False):
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
                out.append(item.validate(x))
            except ValueError as e:
                raise ValueError(f"item {i}: {e}") from None
        return out

    return Spec(default, check, desc, nullable)


def Range(default, lo=None, hi=None, integer=False):
    """A [low, high] pair with low <= high inside [lo, hi]."""
    leaf = Int(None, lo, hi) if integer else Float(None, lo, hi)
    inner = List(leaf, default, 2, 2)

    def check(v):
        v = inner.check(v)
        if v[0] > v[1]:
            raise ValueError(f"low {v[0]} is above high {v[1]}")
        return v

    return Spec(default, check, f"a [low, high] pair in {_range_text(lo, hi)}")


def Beta(default):
    """A loss weight: a number >= 0, or 'balanced' (MLY rule, see datasets/splits.py)."""

    def check(v):
        if v == "balanced":
            return v
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ValueError(f"must be a number >= 0 or 'balanced', got {v!r}")
        return float(v)

    return Spec(default, check, "a number >= 0 or 'balanced'")


def Any_(default, describe="any value"):
    return Spec(default, lambda v: v, describe, nullable=True)


# --------------------------------------------------------------------------- schema
# One section per stage. Nested dicts are sub-sections.

FMNIST_DIR = "/usr/share/datasets/fashion-mnist"

SCHEMA: dict[str, Any] = {
    "prepare_images": {
        "kind": Str("fashion_mnist", ["fashion_mnist", "folder", "hub"]),
        "seed": Int(0, 0),
        "fashion_mnist": {
            "dir": Str(FMNIST_DIR),
            "source_rows": Int(None, 1, 60000, nullable=True),
            "target_rows": Int(None, 1, 10000, nullable=True),
        },
        "folder": {
            "source": Str(None, nullable=True),
            "target": Str(None, nullable=True),
            "size": List(Int(None, 1, 8192), None, 2, 2, nullable=True),
            "mode": Str("rgb", ["grey", "rgb"]),
            "group_pattern": Str(None, nullable=True),
        },
        "hub": {
            "id": Str(None, nullable=True),
            "name": Str(None, nullable=True),
            "revision": Str(None, nullable=True),
            "source_split": Str("train"),
            "target_split": Str("test"),
            "image_column": Str("image"),
            "label_column": Str("label"),
            "group_column": Str(None, nullable=True),
            "size": List(Int(None, 1, 8192), None, 2, 2, nullable=True),
            "mode": Str("rgb", ["grey", "rgb"]),
            "source_rows": Int(None, 1, nullable=True),
            "target_rows": Int(None, 1, nullable=True),
        },
        # the simulated video-frame target (shiftlab.synth.frames): camera shake unlike the
        # synthesis stage's, defocus and sensor noise
        "frames": {
            "apply": Str("auto", ["auto", "on", "off"]),
            "seed": Int(1234, 0),
            "shake": {
                "max_length": Range([8.0, 16.0], 0.0, 500.0),
                "exposure": Range([0.5, 0.9], 0.001, 1.0),
                "anxiety": Range([0.015, 0.04], 0.0, 1.0),
                "jitter": Range([10.0, 20.0], 0.0, 1000.0),
                "centripetal": Range([0.2, 0.6], 0.0, 100.0),
                "impulse_prob": Range([0.05, 0.3], 0.0, 1000.0),
                "n_steps": Int(512, 2, 100000),
            },
            "defocus_sigma": Range([0.3, 0.9], 0.0, 20.0),
            "photons": Range([150.0, 600.0], 0.001, 1e9),
            "read_noise": Range([0.5, 2.0], 0.0, 255.0),
            # which generator makes the target frames: shiftlab (the keys above, synth/frames.py) or
            # imagemagick (the block below, shiftlab.datasets.videotarget: no code shared with synth/)
            "generator": Str("imagemagick", ["imagemagick", "shiftlab"]),
            "imagemagick": {
                "severity": List(Int(None, 1, 5), [1], 1),
                "angle": Range([-45.0, 45.0], -360.0, 360.0),
                "noise": {
                    "photons": Range([200.0, 1000.0], 0.001, 1e9),
                    "read_noise": Range([0.5, 2.0], 0.0, 255.0),
                },
                "codec": Str("h264", ["h264", "jpeg", "none"]),
                "crf": Range([18, 28], 0, 51, integer=True),
                "preset": Str("medium", ["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow",
                                         "slower", "veryslow", "placebo"]),
                "quality": Range([30, 70], 1, 95, integer=True),
            },
        },
    },
    "prepare_speech": {
        "seed": Int(0, 0),
        "sampling_rate": Int(16000, 4000, 96000),
        "clip_seconds": Float(1.0, 0.1, 30.0),
        # clips quieter (RMS, dBFS) or shorter (s) than these are refused as not speech
        "silence_db": Float(-60.0, -150.0, 0.0),
        "min_seconds": Float(0.05, 0.0, 30.0),
        "vocabulary": Any_("pace_notes", "a preset name (pace_notes, digits) or a list of words"),
        "source": Str("tts", ["tts", "folder"]),
        "target": Str("real", ["real", "folder"]),
        "tts": {
            "espeak_voices": Int(36, 0, 2000),
            "flite_voices": List(Str(None), ["awb", "rms"]),
            "speed": Range([130, 200], 80, 450, integer=True),
            "pitch": Range([25, 75], 0, 99, integer=True),
            "takes": Int(1, 1, 100),
            "workers": Int(0, 0, 256),
        },
        "real": {
            "speakers": List(
                Str(None),
                ["trigger_rally/ab", "trigger_rally/paula", "trigger_rally/tim", "asterisk/allison", "saytime"],
                1,
            ),
            "trigger_rally_zip": Str("/usr/share/games/trigger-rally/data.zip"),
            "asterisk_dir": Str("/usr/share/asterisk/sounds/en_US_f_Allison"),
            "saytime_dir": Str("/usr/share/saytime"),
        },
        "folder": {
            "source": Str(None, nullable=True),
            "target": Str(None, nullable=True),
            "group_pattern": Str(None, nullable=True),
        },
    },
    "prepare_noise": {
        "sampling_rate": Int(16000, 4000, 96000),
        "silence_db": Float(-60.0, -150.0, 0.0),
        "recordings": List(
            Str(None),
            ["trigger_rally/*", "dustracing2d/carEngine", "dustracing2d/skid", "openttd/*", "torcs/*"],
        ),
        "target_recordings": List(
            Str(None), ["torcs/nsx", "torcs/renault-v10", "torcs/gt40", "torcs/porsche_engine", "torcs/corolla1400hi2"]
        ),
        "folder": Str(None, nullable=True),
        "trigger_rally_zip": Str("/usr/share/games/trigger-rally/data.zip"),
        "dustracing2d_dir": Str("/usr/share/games/dustracing2d/sounds"),
        "opensfx_cat": Str("/usr/share/games/openttd/baseset/opensfx/opensfx.cat"),
        "torcs_dir": Str("/usr/share/games/torcs/data/sound"),  # torcs-data: recordings torcs/<name>
    },
}

_SPLIT = {
    "seed": Int(0, 0),
    "target_train_fraction": Float(0.5, 0.0, 1.0, hi_open=True),
    "dev_fraction": Float(0.5, 0.0, 1.0, lo_open=True, hi_open=True),
    "train_dev_fraction": Float(0.05, 0.0, 0.5, lo_open=True),
    "max_source_rows": Int(None, 1, nullable=True),
    "beta_source": Beta(1.0),
    "beta_synthetic": Beta(1.0),
}
SCHEMA["split_images"] = copy.deepcopy(_SPLIT)
SCHEMA["split_audio"] = copy.deepcopy(_SPLIT)
# evaluation-only splits added to the audio splits, each read from data/prepared/<name> (beside the input);
# the names are shiftlab.datasets.schema.CHECK_SPLITS (not imported here: config stays light)
SCHEMA["split_audio"]["check_sets"] = List(Str(None, ["codrivers"]), ["codrivers"])


def _blur_section(families, linear, shake) -> dict:
    """Schema of a ``synth_blur*`` section (see shiftlab.synth.blur and kernels.sample)."""
    return {
        "seed": Int(0, 0),
        "fraction": Float(1.0, 0.0, 1.0),
        "copies": Int(1, 1, 1000),
        "batch_size": Int(512, 1, 1 << 20),
        "device": Str("auto"),
        "workers": Int(0, 0, 256),
        "kernels": {
            "families": {"linear": Float(families[0], 0.0), "shake": Float(families[1], 0.0)},
            "linear": {
                "length": Range(linear[0], 0.0, 500.0),
                "angle": Range(linear[1], -360.0, 360.0),
                "direction": Range(linear[2], -1.0, 1.0),
            },
            "shake": {
                "max_length": Range(shake[0], 0.0, 500.0),
                "exposure": Range(shake[1], 0.001, 1.0),
                "anxiety": Range(shake[2], 0.0, 1.0),
                "jitter": Range(shake[3], 0.0, 1000.0),
                "centripetal": Range(shake[4], 0.0, 100.0),
                "impulse_prob": Range(shake[5], 0.0, 1000.0),
                "n_steps": Int(512, 2, 100000),
            },
        },
    }


# the default synthesis and a deliberately narrow one (one kernel: 9 px at 45 degrees)
SCHEMA["synth_blur"] = _blur_section(
    (0.5, 0.5),
    ([3.0, 15.0], [0.0, 180.0], [-1.0, 1.0]),
    ([5.0, 25.0], [0.3, 1.0], [0.001, 0.01], [0.0, 10.0], [0.0, 0.7], [0.0, 0.2]),
)
SCHEMA["synth_blur_narrow"] = _blur_section(
    (1.0, 0.0),
    ([9.0, 9.0], [45.0, 45.0], [0.0, 0.0]),
    ([5.0, 25.0], [0.3, 1.0], [0.001, 0.01], [0.0, 10.0], [0.0, 0.7], [0.0, 0.2]),
)


# --------------------------------------------------------------------------- loading


def defaults(schema=None) -> dict:
    """The default value of every key, as nested dicts."""
    schema = SCHEMA if schema is None else schema
    out = {}
    for k, v in schema.items():
        if isinstance(v, dict):
            out[k] = defaults(v)
        elif isinstance(v, ModuleSection):
            out[k] = _plain(v.defaults())
        else:
            out[k] = copy.deepcopy(v.default)
    return out


_WARNED_EMPTY: set = set()


def _warn_empty(file: str, name: str) -> None:
    """One warning line (once per file and section) for a section written with nothing under it."""
    if (file, name) in _WARNED_EMPTY:
        return
    _WARNED_EMPTY.add((file, name))
    print(f"shiftlab: warning: {file}: {name}: empty section, every key takes its default "
          f"(a half-deleted block? delete the line or fill it in)", file=sys.stderr)


def _validate(node: dict, schema: dict, where: str, file: str) -> dict:
    if not isinstance(node, dict):
        raise ShiftlabError(f"{file}: {where}: must be a mapping of keys, got {node!r}")
    out = {}
    for key, value in node.items():
        name = f"{where}.{key}" if where else str(key)
        if key not in schema:
            hint = difflib.get_close_matches(str(key), [str(k) for k in schema], 1)
            extra = f" (did you mean {hint[0]}?)" if hint else ""
            raise ShiftlabError(f"{file}: {name}: unknown key{extra}")
        spec = schema[key]
        if value is None and isinstance(spec, (dict, ModuleSection)):
            _warn_empty(file, name)
        if isinstance(spec, ModuleSection):
            try:
                out[key] = _plain(spec.validate(value, name))
            except ValueError as e:
                raise ShiftlabError(f"{file}: {name}: {e}") from None
            except ShiftlabError as e:
                raise ShiftlabError(f"{file}: {e}") from None
        elif isinstance(spec, dict):
            out[key] = _validate(value if value is not None else {}, spec, name, file)
        else:
            try:
                out[key] = spec.validate(value)
            except ValueError as e:
                raise ShiftlabError(f"{file}: {name}: {e}") from None
    for key, spec in schema.items():
        if key not in out:
            if isinstance(spec, ModuleSection):
                out[key] = _plain(spec.defaults())
            else:
                out[key] = defaults(spec) if isinstance(spec, dict) else copy.deepcopy(spec.default)
    return out


def validate(params: dict | None, file: str = PARAMS_FILE, schema: dict | None = None) -> dict:
    """Check a whole params mapping; return it with every default filled in."""
    return _validate(params or {}, SCHEMA if schema is None else schema, "", file)


def _read(path: Path):
    """The raw YAML mapping of a params file (one-line errors for a missing or invalid file)."""
    if not path.is_file():
        raise ShiftlabError(f"{path}: params file not found (run from the project root or pass --params)")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise ShiftlabError(f"{path}: not valid YAML{at}: {getattr(e, 'problem', e)}") from None
    return raw


def load(path: str | Path = PARAMS_FILE) -> dict:
    """Read and validate a params file (all sections)."""
    path = Path(path)
    return validate(_read(path), str(path))


def section(name: str, path: str | Path = PARAMS_FILE) -> dict:
    """The validated section ``name`` of the params file.

    Only this section is validated in depth (a stage reads its own section; validating a
    module section imports that module, and importing every module would cost each stage
    seconds): the other sections are checked for unknown names only. ``shiftlab params``
    and :func:`load` validate the whole file.
    """
    if name not in SCHEMA:
        hint = difflib.get_close_matches(name, list(SCHEMA), 1)
        raise ShiftlabError(f"{path}: no params section {name!r}{f' (did you mean {hint[0]}?)' if hint else ''}")
    path = Path(path)
    raw = _read(path)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ShiftlabError(f"{path}: must be a mapping of params sections, got {raw!r}")
    for key in raw:
        if key not in SCHEMA:
            _validate({key: raw[key]}, SCHEMA, "", str(path))  # raises the unknown-key error
    sub = {name: raw[name]} if name in raw else {}
    return _validate(sub, {name: SCHEMA[name]}, "", str(path))[name]


# --------------------------------------------------------------------------- module sections
# Sections whose knobs belong to one module: the module's DEFAULTS are the schema, its own
# validating merge checks a value (errors name the key). Imported lazily.


class ModuleSection:
    """A params section validated by ``module.func`` over ``module.attr`` (+ ``overrides``)."""

    def __init__(self, module: str, func: str, attr: str = "DEFAULTS", overrides: dict | None = None,
                 key: str | None = None, replace: tuple = ()):
        self.module, self.func, self.attr = module, func, attr
        self.replace = tuple(replace)
        self.overrides = overrides or {}
        self.key = key  # the section name the module's messages use (replaced by the real one)

    def _mod(self):
        import importlib

        return importlib.import_module(self.module)

    def base(self) -> dict:
        return deep_merge(copy.deepcopy(getattr(self._mod(), self.attr)), self.overrides)

    def defaults(self) -> dict:
        return self.validate(None, "")

    def validate(self, value, name: str) -> dict:
        import inspect

        if value is not None and not isinstance(value, dict):
            raise ValueError(f"must be a mapping of keys, got {value!r}")
        base = self.base()
        for k in self.replace:  # keys whose value is one design (model_kwargs): a user's value replaces it whole
            if value and k in value:
                base.pop(k, None)
        merged = deep_merge(base, value or {})
        fn = getattr(self._mod(), self.func)
        if "where" in inspect.signature(fn).parameters and name:
            return fn(merged, where=name)
        try:
            return fn(merged)
        except ShiftlabError as e:
            msg = str(e)
            k = self.key
            if k and name and msg.startswith(k) and msg[len(k):len(k) + 1] in (".", ":"):
                msg = name + msg[len(k):]
            raise ShiftlabError(msg) from None


def deep_merge(base: Mapping, over: Mapping | None) -> dict:
    """A copy of ``base`` with ``over`` merged in key by key (nested mappings recursively)."""
    out = copy.deepcopy(dict(base))
    for k, v in (over or {}).items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _plain(obj):
    """Tuples -> lists, numpy scalars -> Python (so defaults compare equal to YAML)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        return obj.item()
    return obj


#: the in-car target of the audio scenario (shiftlab.mixing.target)
SCHEMA["target_mix"] = ModuleSection("shiftlab.mixing.target", "check_cfg", key="target_mix")
#: car-noise synthesis (shiftlab.mixing.mix): the default and the book's one-recording trap
SCHEMA["synth_mix"] = ModuleSection("shiftlab.mixing.mix", "check_cfg", key="synth_mix")
SCHEMA["synth_mix_narrow"] = ModuleSection("shiftlab.mixing.mix", "check_cfg", "NARROW", key="synth_mix")
#: diversity checks (both the default and the narrow synthesis are checked with the same gates)
SCHEMA["check_images"] = ModuleSection("shiftlab.synth.diversity", "check_cfg", key="check_images")
SCHEMA["check_audio"] = ModuleSection("shiftlab.mixing.diversity", "check_cfg", key="check_audio")


def _lazy(module: str, func: str, default, describe: str) -> Spec:
    """A leaf checked by ``module.func(value)`` (imported on first use; raises ValueError(reason))."""

    def check(v):
        import importlib

        return getattr(importlib.import_module(module), func)(v)

    return Spec(default, check, describe, nullable=True)


#: shiftlab calibrate blur (shiftlab.synth.calibrate): candidate kernel ranges scored against the target rows
#: of train with check_images' realism metrics and gates. grid / candidates / check replace their defaults whole.
SCHEMA["calibrate_blur"] = {
    "seed": Int(0, 0),
    "base": Str("synth_blur", [k for k in SCHEMA if k.startswith("synth_blur")]),
    "source_rows": Int(1000, 20),
    "target_rows": Int(1000, 10),
    "grid": _lazy("shiftlab.synth.calibrate", "check_grid",
                  {"linear.length": [[3.0, 11.0], [3.0, 15.0], [3.0, 19.0]],
                   "shake.max_length": [[5.0, 18.0], [5.0, 25.0], [8.0, 32.0]]},
                  "a mapping of kernel keys (e.g. linear.length) to lists of values"),
    "candidates": _lazy("shiftlab.synth.calibrate", "check_candidates", [], "a list of partial kernel mappings"),
    "criterion": Str("domain_auc", ["domain_auc", "frechet"]),
    "check": _lazy("shiftlab.synth.calibrate", "check_overrides", {}, "a mapping of check_images keys"),
    "workers": Int(0, 0),
    "report": Str("reports/calibrate_blur.md"),
    "plot": Str("reports/calibrate_blur.png"),
    "metrics": Str("metrics/calibrate_blur.json"),
}
_SEED_LIST = List(Int(0, 0), [0, 1, 2], 1)
_SCENARIOS = ("images", "audio")


def _check_seeds(v):
    """experiment.seeds: one list for every scenario, or a mapping scenario -> list."""
    if isinstance(v, dict):
        out = {}
        for k, x in v.items():
            if k not in _SCENARIOS:
                raise ValueError(f"unknown scenario {k!r} (one of {', '.join(_SCENARIOS)})")
            try:
                out[k] = _SEED_LIST.validate(x)
            except ValueError as e:
                raise ValueError(f"{k}: {e}") from None
        missing = [k for k in _SCENARIOS if k not in out]
        if missing:
            raise ValueError(f"no seeds for {', '.join(missing)}")
        return out
    return _SEED_LIST.validate(v)


def seeds(exp: dict, scenario: str) -> list:
    """The seeds of ``scenario`` in a validated ``experiment`` section."""
    s = exp["seeds"]
    return list(s[scenario] if isinstance(s, dict) else s)


#: the comparison matrix: dvc.yaml's train stages run every variant x seed
SCHEMA["experiment"] = {
    "variants": List(Str("nosynth", choices=["nosynth", "synth", "narrow"]), ["nosynth", "synth", "narrow"], 1),
    # one list for both scenarios, or {images: [...], audio: [...]}
    "seeds": Spec([0, 1, 2], _check_seeds, "a list of integers >= 0, or a mapping images/audio -> such a list"),
    # runs trained side by side by `shiftlab train --all` (each with its section's num_threads);
    # 0 = auto: CPU cores // num_threads (1 on CUDA). Results do not depend on it.
    "jobs": Int(0, 0),
}
#: training per scenario (shiftlab.train.trainer); the defaults fit `make demo` on 2 CPU cores
SCHEMA["train_images"] = ModuleSection("shiftlab.train.trainer", "merge", overrides={
    "model": "cbam_resnet", "model_kwargs": {"width": 8, "stem_stride": 2}, "epochs": 10, "batch_size": 128,
    "lr": 0.1, "eval_train_rows": 500, "epoch_rows": "real", "channels_last": "auto", "num_threads": 1,
}, key="train", replace=("model_kwargs",))
SCHEMA["train_audio"] = ModuleSection("shiftlab.train.trainer", "merge", overrides={
    "model": "cbam_resnet", "model_kwargs": {"width": 8, "stem_stride": 2}, "epochs": 10, "batch_size": 64,
    "optimizer": "adamw", "lr": 0.01, "weight_decay": 0.01, "eval_train_rows": 300, "epoch_rows": "real",
    "channels_last": "auto", "grad_clip": 1.0, "num_threads": 1,
    "frontend": {"n_mels": 32, "hop_length": 400},
}, key="train", replace=("model_kwargs",))
SCHEMA["evaluate"] = ModuleSection("shiftlab.train.evaluate", "merge_config", key="evaluate")
#: the report of the whole run (shiftlab.train.report)
SCHEMA["report"] = ModuleSection("shiftlab.train.report", "merge_config", key="report")
#: shiftlab sweep cars (shiftlab.train.sweep): not a dvc.yaml stage; one `dvc exp run` per bank size
SCHEMA["sweep_cars"] = ModuleSection("shiftlab.train.sweep", "check_cfg", key="sweep_cars")
#: shiftlab ladder (shiftlab.ladder): not a dvc.yaml stage; its committed results feed the report and the gates
SCHEMA["ladder"] = ModuleSection("shiftlab.ladder", "check_cfg", key="ladder")
