"""shiftlab.paramschema: the pydantic models of params.yaml, their one-line errors and the JSON Schema export."""

import json

import pytest
import yaml

from shiftlab import cli, config, paramschema
from shiftlab.errors import ShiftlabError


def _resolve(schema, node):
    while "$ref" in node:
        node = schema["$defs"][node["$ref"].rsplit("/", 1)[1]]
    return node


def _schema_defaults(schema, node):
    """The defaults a JSON Schema states, as nested dicts (sub-sections recursively)."""
    node = _resolve(schema, node)
    out = {}
    for k, p in node["properties"].items():
        out[k] = _schema_defaults(schema, p) if "default" not in p else p["default"]
    return out


def test_every_section_is_in_the_schema_and_unknown_keys_are_forbidden():
    s = paramschema.json_schema()
    assert s["additionalProperties"] is False
    assert list(s["properties"]) == list(config.SCHEMA)  # file order
    for name in [*paramschema.MODELS, *paramschema.MODULE_MODELS]:
        node = _resolve(s, s["properties"][name])
        assert node["additionalProperties"] is False, name
    json.dumps(s)  # plain JSON


@pytest.mark.parametrize("name", [*paramschema.MODELS, *paramschema.MODULE_MODELS])
def test_schema_defaults_are_the_model_defaults(name):
    s = paramschema.json_schema()
    assert _schema_defaults(s, s["properties"][name]) == config.defaults()[name]


def test_ranges_are_schema_constraints():
    s = paramschema.json_schema()
    split = _resolve(s, s["properties"]["split_images"])["properties"]
    assert split["dev_fraction"]["exclusiveMinimum"] == 0.0 and split["dev_fraction"]["exclusiveMaximum"] == 1.0
    assert split["train_dev_fraction"]["exclusiveMinimum"] == 0.0 and split["train_dev_fraction"]["maximum"] == 0.5
    assert split["seed"] == {"default": 0, "description": "an integer in [0, inf]", "minimum": 0, "title": "Seed",
                             "type": "integer"}
    speech = _resolve(s, s["properties"]["prepare_speech"])["properties"]
    assert speech["sampling_rate"]["minimum"] == 4000 and speech["sampling_rate"]["maximum"] == 96000
    tts = _resolve(s, speech["tts"])["properties"]
    assert tts["speed"]["minItems"] == tts["speed"]["maxItems"] == 2
    assert tts["speed"]["items"] == {"maximum": 450, "minimum": 80, "type": "integer"}
    kind = _resolve(s, s["properties"]["prepare_images"])["properties"]["kind"]
    assert kind["enum"] == ["fashion_mnist", "folder", "hub"]


def test_params_schema_cli_writes_the_schema(tmp_path, capsys):
    out = tmp_path / "params.schema.json"
    assert cli.main(["params", "--schema", str(out)]) == 0
    assert json.loads(out.read_text()) == paramschema.json_schema()
    capsys.readouterr()
    assert cli.main(["params", "--schema"]) == 0
    assert json.loads(capsys.readouterr().out)["title"] == "shiftlab params.yaml"


def test_models_are_typed_objects():
    m = paramschema.validate_section(paramschema.SynthBlur, {"kernels": {"linear": {"length": [2, 9]}}}, "synth_blur")
    assert m.kernels.linear.length == [2.0, 9.0] and isinstance(m.kernels.linear.length[0], float)
    assert m.kernels.shake.n_steps == 512 and m.copies == 1


@pytest.mark.parametrize("data, expected", [
    ({"synth_blur": {"kernels": {"linear": {"lenght": [1, 2]}}}},
     "synth_blur.kernels.linear.lenght: unknown key (did you mean length?)"),
    ({"synth_blur": {"kernels": {"shake": {"n_steps": 1}}}}, "synth_blur.kernels.shake.n_steps: 1 is out of range [2, 100000]"),
    ({"synth_blur": {"fraction": True}}, "synth_blur.fraction: must be a number in [0.0, 1.0], got True"),
    ({"synth_blur": {"fraction": "0.5"}}, "synth_blur.fraction: must be a number in [0.0, 1.0], got '0.5'"),
    ({"synth_blur": {"copies": None}}, "synth_blur.copies: must be an integer in [1, 1000], got null"),
    ({"synth_blur": {"kernels": 3}}, "synth_blur.kernels: must be a mapping of keys, got 3"),
    ({"prepare_images": {"frames": {"imagemagick": {"severity": [1, 6]}}}},
     "prepare_images.frames.imagemagick.severity: item 1: 6 is out of range [1, 5]"),
    ({"split_audio": {"check_sets": ["codriver"]}},
     "split_audio.check_sets: item 0: 'codriver' is not one of codrivers (did you mean codrivers?)"),
    ({"experiment": {"variants": []}}, "experiment.variants: must have 1..any items, got 0"),
    ({"prepare_images": {"folder": {"mode": True}}}, "prepare_images.folder.mode: must be one of grey, rgb, got True"),
    ({"split_images": {"beta_source": True}}, "split_images.beta_source: must be a number >= 0 or 'balanced', got True"),
])
def test_one_line_errors(tmp_path, data, expected):
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(data))
    with pytest.raises(ShiftlabError) as e:
        config.load(p)
    assert str(e.value) == f"{p}: {expected}"


def test_empty_sub_section_takes_defaults_with_a_warning(tmp_path, capsys):
    p = tmp_path / "params.yaml"
    p.write_text("prepare_images:\n  frames:\n    shake:\n")
    got = config.section("prepare_images", p)
    assert got["frames"]["shake"] == config.defaults()["prepare_images"]["frames"]["shake"]
    assert "prepare_images.frames.shake: empty section" in capsys.readouterr().err


def test_dump_keeps_the_file_order_then_defaults():
    raw = {"dev_fraction": 0.4, "seed": 2}
    got = paramschema.dump(paramschema.validate_section(paramschema.Split, raw, "split_images"), raw)
    assert list(got)[:3] == ["dev_fraction", "seed", "target_train_fraction"] and got["dev_fraction"] == 0.4


def test_module_options_use_the_models():
    """train.frontend and evaluate are validated by their models (one wording for every section)."""
    from shiftlab.train import evaluate, frontend

    assert frontend.DEFAULTS == paramschema.defaults(paramschema.Frontend)
    assert evaluate.DEFAULTS == paramschema.defaults(paramschema.Evaluate)
    got = frontend.merge({"n_mels": 32, "f_min": 1}, "train_audio.frontend")
    assert list(got) == list(frontend.DEFAULTS) and got["f_min"] == 1.0 and isinstance(got["f_min"], float)
    with pytest.raises(ShiftlabError, match=r"^train_audio\.frontend\.win_length: must be <= n_fft \(512\), got 1024$"):
        frontend.merge({"win_length": 1024}, "train_audio.frontend")
    with pytest.raises(ShiftlabError, match=r"^train\.frontend\.f_max: must be above f_min \(20\), got 10$"):
        frontend.merge({"f_min": 20, "f_max": 10})
    with pytest.raises(ShiftlabError, match=r"^train\.frontend\.hfilp: unknown key \(did you mean hflip\?\)$"):
        frontend.merge({"hfilp": True})


def test_merge_passes_module_owned_keys_through():
    from shiftlab.synth import blur

    c = blur._check_cfg({"kernels": {"families": {"linear": 1.0}}, "fraction": 1})
    assert c["kernels"] == {"families": {"linear": 1.0}} and c["fraction"] == 1.0 and list(c) == list(blur.DEFAULTS)
    with pytest.raises(ShiftlabError, match=r"^synth_blur\.kernel: unknown key \(did you mean kernels\?\)$"):
        blur._check_cfg({"kernel": {}})
    with pytest.raises(ShiftlabError, match=r"^synth_blur\.copies: 0 is out of range \[1, 1000\]$"):
        blur._check_cfg({"copies": 0})


def test_range_overrides_shared_by_cars_and_drives():
    defaults = {"a": [1.0, 2.0], "n": [4, 6], "db": [-6.0, 6.0], "special": "x"}
    got = paramschema.range_overrides({"a": 3, "n": (5, 5)}, defaults, "w", "thing", ("n",), ("db",), ("special",))
    assert got == {"a": [3.0, 3.0], "n": [5.0, 5.0], "db": [-6.0, 6.0], "special": "x"}
    assert paramschema.range_overrides(None, defaults, "w", "thing", check_defaults=False, skip=("special",)) == defaults
    for bad, msg in (({"b": 1}, "w.b: unknown thing"), ({"aa": 1}, "w.aa: unknown thing (did you mean a?)"),
                     ({"a": [2, 1]}, "w.a: range [2, 1] has lo > hi"), ({"a": [-1, 1]}, "w.a: must be >= 0"),
                     ({"n": [0.5, 2]}, "w.n: must be integers >= 1"), ({"a": "x"}, "w.a: must be [lo, hi] or a number"),
                     ({"a": [1, 2, 3]}, "w.a: must be [lo, hi] or a number"), (3, "w: must be a mapping of thing ranges")):
        with pytest.raises(ShiftlabError) as e:
            paramschema.range_overrides(bad, defaults, "w", "thing", ("n",), ("db",), ("special",))
        assert str(e.value).startswith(msg), (bad, str(e.value))


def test_train_sections_share_one_model():
    from shiftlab.train import data, trainer

    assert paramschema.TRAIN_ROWS == data.ROWS
    assert trainer.DEFAULTS == paramschema.defaults(paramschema.Train)
    audio = paramschema.defaults(paramschema.TrainAudio)
    assert audio["optimizer"] == "adamw" and audio["frontend"]["n_mels"] == 32 and audio["frontend"]["n_fft"] == 512
    assert list(audio) == list(trainer.DEFAULTS) and list(audio["frontend"]) == list(trainer.DEFAULTS["frontend"])
    with pytest.raises(ShiftlabError, match=r"^train_audio\.frontend\.n_mel: unknown key \(did you mean n_mels\?\)$"):
        trainer.merge({"frontend": {"n_mel": 3}}, "train_audio")
    with pytest.raises(ShiftlabError, match=r"^train\.amp: must be one of auto, true, false, got 1$"):
        trainer.merge({"amp": 1})
    with pytest.raises(ShiftlabError, match=r"^train\.nesterov: needs momentum > 0"):
        trainer.merge({"momentum": 0.0})


def test_mixing_constants_match_their_modules():
    from shiftlab.mixing import bank, cars

    assert paramschema.CAR_MAX_SECONDS == cars.MAX_SECONDS and bank.SOURCES == paramschema.SOURCES


def test_knob_table_lists_every_knob_with_type_and_default():
    table = paramschema.knob_table("split_images")
    assert table.splitlines()[0] == "| knob | takes | default |"
    assert "| `dev_fraction` | a number in (0.0, 1.0) | `0.5` |" in table
    assert "| `max_source_rows` | an integer in [1, inf], or null | `null` |" in table
    keys = [r[0] for r in paramschema.knob_rows("prepare_images")]
    assert "frames.imagemagick.noise.photons" in keys and len(keys) == len(set(keys))
    flat = {r[0] for r in paramschema.knob_rows("train_audio")}
    assert {"lr", "frontend.n_mels", "model_kwargs"} <= flat


def test_deep_merge_is_one_copy_and_does_not_mutate():
    base = {"a": 1, "f": {"x": 1, "y": [1, 2]}, "k": {"w": 8}}
    over = {"f": {"y": [3]}, "k": 5, "new": {"z": 1}}
    got = paramschema.deep_merge(base, over)
    assert got == {"a": 1, "f": {"x": 1, "y": [3]}, "k": 5, "new": {"z": 1}}
    assert base == {"a": 1, "f": {"x": 1, "y": [1, 2]}, "k": {"w": 8}}
    got["new"]["z"] = 2
    assert over["new"]["z"] == 1


def test_typed_sections(tmp_path, repo_root):
    from pathlib import Path

    p = Path(repo_root) / "params.yaml"
    blur = config.typed("synth_blur", p)
    assert blur.kernels.linear.length == config.section("synth_blur", p)["kernels"]["linear"]["length"]
    assert config.typed("train_audio", p).frontend.n_mels == 32
    assert config.typed("synth_mix_narrow", p).bank.recordings == ["dustracing2d/skid"]
    assert config.typed("check_images", p).gates["kernel_vendi_ratio"] == {"min": 0.75, "action": "fail"}
    assert config.typed("ladder", p).audio.cars == [1, 3, 10, 17]
    # every section has a model now: the JSON Schema has no open mappings left
    assert set(paramschema.MODELS) | set(paramschema.MODULE_MODELS) == set(paramschema.SECTIONS)
