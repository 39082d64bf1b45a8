"""params.yaml: the only configuration, validated on load.

Every stage reads its own section. The schema is :mod:`shiftlab.paramschema`: one pydantic
model per section, with every knob's type, range and default (``shiftlab params --schema``
exports it as JSON Schema). The whole file is checked whenever any section is loaded, so
a typo anywhere is reported at once, as one line naming the key: ``params.yaml:
split_images.dev_fractoin: unknown key (did you mean dev_fraction?)``. Missing keys take
the defaults; the defaults are also what ``shiftlab params --defaults`` prints. A section
written with nothing under it (``train_images:`` alone, usually a half-deleted block) also
takes the defaults, with one warning line on stderr.

Sections still validated by their module (:class:`ModuleSection`) are listed in
:data:`shiftlab.paramschema.MODULE_SECTIONS`.
"""

from __future__ import annotations

import copy
import difflib
import sys
from pathlib import Path
from typing import Any

import yaml

from shiftlab import paramschema
from shiftlab.errors import ShiftlabError

PARAMS_FILE = "params.yaml"
FMNIST_DIR = paramschema.FMNIST_DIR

# --------------------------------------------------------------------------- loading


def _is_model(spec) -> bool:
    return isinstance(spec, type) and issubclass(spec, paramschema.Section)


def defaults(schema=None) -> dict:
    """The default value of every key, as nested dicts (of the whole file, a mapping of sections, or one
    section's model)."""
    schema = SCHEMA if schema is None else schema
    if _is_model(schema):
        return paramschema.defaults(schema)
    out = {}
    for k, v in schema.items():
        if isinstance(v, ModuleSection):
            out[k] = _plain(v.defaults())
        else:
            out[k] = paramschema.defaults(v)
    return out


_WARNED_EMPTY: set = set()


def _warn_empty(file: str, name: str) -> None:
    """One warning line (once per file and section) for a section written with nothing under it."""
    if (file, name) in _WARNED_EMPTY:
        return
    _WARNED_EMPTY.add((file, name))
    print(f"shiftlab: warning: {file}: {name}: empty section, every key takes its default "
          f"(a half-deleted block? delete the line or fill it in)", file=sys.stderr)


def _fill_empty(model, value, where: str, file: str):
    """``value`` with every sub-section written empty (``key:`` alone) replaced by ``{}`` (one warning each)."""
    if not isinstance(value, dict):
        return value
    out = dict(value)
    for k, v in value.items():
        f = model.model_fields.get(k) if isinstance(k, str) else None
        sub = getattr(f, "annotation", None)
        if _is_model(sub):
            if v is None:
                _warn_empty(file, f"{where}.{k}")
                v = {}
            out[k] = _fill_empty(sub, v, f"{where}.{k}", file)
    return out


def _validate_section(spec, value, name: str, file: str) -> dict:
    if value is None:
        _warn_empty(file, name)
    if isinstance(spec, ModuleSection):
        try:
            return _plain(spec.validate(value, name))
        except ShiftlabError as e:  # (paramschema.ParamsError too: its line names the key already)
            raise ShiftlabError(f"{file}: {e}") from None
        except ValueError as e:
            raise ShiftlabError(f"{file}: {name}: {e}") from None
    value = _fill_empty(spec, value, name, file)
    try:
        obj = paramschema.validate_section(spec, value, name)
    except paramschema.ParamsError as e:
        raise ShiftlabError(f"{file}: {e}") from None
    return paramschema.dump(obj, value)


def _unknown_section(key, schema: dict, file: str) -> ShiftlabError:
    hint = difflib.get_close_matches(str(key), [str(k) for k in schema], 1)
    return ShiftlabError(f"{file}: {key}: unknown key{f' (did you mean {hint[0]}?)' if hint else ''}")


def validate(params: dict | None, file: str = PARAMS_FILE, schema: dict | None = None) -> dict:
    """Check a whole params mapping; return it with every default filled in."""
    schema = SCHEMA if schema is None else schema
    params = params or {}
    if not isinstance(params, dict):
        raise ShiftlabError(f"{file}: must be a mapping of keys, got {params!r}")
    out = {}
    for key, value in params.items():
        if key not in schema:
            raise _unknown_section(key, schema, file)
        out[key] = _validate_section(schema[key], value, str(key), file)
    for key, spec in schema.items():
        if key not in out:
            out[key] = _plain(spec.defaults()) if isinstance(spec, ModuleSection) else paramschema.defaults(spec)
    return out


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
            raise _unknown_section(key, SCHEMA, str(path))
    sub = {name: raw[name]} if name in raw else {}
    return validate(sub, str(path), {name: SCHEMA[name]})[name]


def typed(name: str, path: str | Path = PARAMS_FILE):
    """The validated section ``name`` as its typed pydantic object (``typed("synth_blur").kernels.linear.length``);
    every section has a model in :mod:`shiftlab.paramschema`."""
    models = {**paramschema.MODELS, **paramschema.MODULE_MODELS}
    if name not in models:
        raise ShiftlabError(f"{path}: no params section {name!r} (one of {', '.join(models)})")
    return paramschema.validate_section(models[name], section(name, path), name)


def seeds(exp: dict, scenario: str) -> list:
    """The seeds of ``scenario`` in a validated ``experiment`` section."""
    s = exp["seeds"]
    return list(s[scenario] if isinstance(s, dict) else s)


# --------------------------------------------------------------------------- module sections
# Sections whose knobs still belong to one module: the module's DEFAULTS are the schema, its own
# validating merge checks a value (errors name the key). Imported lazily.


class ModuleSection:
    """A params section validated by ``module.func`` over ``module.attr`` (+ ``overrides``)."""

    def __init__(self, module: str, func: str, attr: str = "DEFAULTS", overrides: dict | None = None,
                 key: str | None = None, replace: tuple = (), model=None):
        self.module, self.func, self.attr = module, func, attr
        self.model = model  # a paramschema model whose defaults are the base (instead of module.attr)
        self.replace = tuple(replace)
        self.overrides = overrides or {}
        self.key = key  # the section name the module's messages use (replaced by the real one)

    def _mod(self):
        import importlib

        return importlib.import_module(self.module)

    def base(self) -> dict:
        if self.model is not None:
            return paramschema.deep_merge(paramschema.defaults(self.model), self.overrides)
        return paramschema.deep_merge(copy.deepcopy(getattr(self._mod(), self.attr)), self.overrides)

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
        merged = paramschema.deep_merge(base, value or {})
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


#: one deep merge for params overrides, calibrate and ladder (the schema's)
deep_merge = paramschema.deep_merge


def _plain(obj):
    """Tuples -> lists, numpy scalars -> Python (so defaults compare equal to YAML)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        return obj.item()
    return obj


#: params section -> its model (shiftlab.paramschema) or the module that validates it, in file order
SCHEMA: dict[str, Any] = {
    "prepare_images": paramschema.PrepareImages,
    "prepare_speech": paramschema.PrepareSpeech,
    "prepare_noise": paramschema.PrepareNoise,
    "split_images": paramschema.Split,
    "split_audio": paramschema.SplitAudio,
    "synth_blur": paramschema.SynthBlur,
    "synth_blur_narrow": paramschema.SynthBlurNarrow,
    #: the in-car target of the audio scenario (shiftlab.mixing.target)
    "target_mix": ModuleSection("shiftlab.mixing.target", "check_cfg", key="target_mix"),
    #: car-noise synthesis (shiftlab.mixing.mix): the default and the book's one-recording trap
    "synth_mix": ModuleSection("shiftlab.mixing.mix", "check_cfg", key="synth_mix"),
    "synth_mix_narrow": ModuleSection("shiftlab.mixing.mix", "check_cfg", "NARROW", key="synth_mix"),
    #: diversity checks (both the default and the narrow synthesis are checked with the same gates)
    "check_images": ModuleSection("shiftlab.synth.diversity", "check_cfg", key="check_images"),
    "check_audio": ModuleSection("shiftlab.mixing.diversity", "check_cfg", key="check_audio"),
    "calibrate_blur": paramschema.CalibrateBlur,
    "experiment": paramschema.Experiment,
    #: training per scenario (shiftlab.train.trainer); the defaults fit `make demo` on 2 CPU cores
    "train_images": ModuleSection("shiftlab.train.trainer", "merge", model=paramschema.TrainImages, key="train",
                                  replace=("model_kwargs",)),
    "train_audio": ModuleSection("shiftlab.train.trainer", "merge", model=paramschema.TrainAudio, key="train",
                                 replace=("model_kwargs",)),
    "evaluate": ModuleSection("shiftlab.train.evaluate", "merge_config", key="evaluate"),
    #: the report of the whole run (shiftlab.train.report)
    "report": ModuleSection("shiftlab.train.report", "merge_config", key="report"),
    #: shiftlab sweep cars (shiftlab.train.sweep): not a dvc.yaml stage; one `dvc exp run` per bank size
    "sweep_cars": ModuleSection("shiftlab.train.sweep", "check_cfg", key="sweep_cars"),
    #: shiftlab ladder (shiftlab.ladder): not a dvc.yaml stage; its committed results feed the report and the gates
    "ladder": ModuleSection("shiftlab.ladder", "check_cfg", key="ladder"),
}
assert tuple(SCHEMA) == paramschema.SECTIONS and set(SCHEMA) == set(paramschema.MODELS) | set(paramschema.MODULE_SECTIONS)
