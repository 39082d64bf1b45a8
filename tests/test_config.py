"""params.yaml validation: typos and out-of-range values are one-line errors naming the key."""

from pathlib import Path

import pytest
import yaml

from shiftlab import config
from shiftlab.errors import ShiftlabError


def write(tmp_path, data) -> Path:
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_repo_params_file_is_valid_and_complete(repo_root):
    """params.yaml lists every key (it is the documentation of the knobs) and is valid.

    Values may differ from the built-in defaults where the embedded demo is sized for
    2 CPU cores; those differences are the ones listed here, nothing else.
    """
    raw = yaml.safe_load(Path(repo_root, "params.yaml").read_text())
    got, dflt = config.validate(raw), config.defaults()

    def diff(a, b, prefix=""):
        out = set()
        for k in a:
            if isinstance(a[k], dict) and isinstance(b.get(k), dict):
                out |= diff(a[k], b[k], prefix + k + ".")
            elif a[k] != b.get(k):
                out.add(prefix + k)
        return out

    sized = {
        "split_images.target_train_fraction", "split_images.max_source_rows",
        "check_images.max_rows", "check_images.max_target", "check_images.max_kernels",
        "check_images.features.train_rows", "check_images.features.epochs",
        # the demo's Bayes-error proxies per scenario, and thread counts pinned for bit-stable runs
        "evaluate.optimal_error", "evaluate.optimal_error_proxy",
        "train_images.num_threads", "train_audio.num_threads",
        # blur ranges calibrated on the default data (the calibrate_blur stage's recommendation)
        "synth_blur.kernels.linear.length", "synth_blur.kernels.shake.max_length",
        # ~15 of the ~74 held-out target voices into train, the rest to dev and test (>= 1,000 rows each)
        "split_audio.target_train_fraction",
        # seeds per scenario sized to the demo budget (images: 5 for the MDE; audio: 3), and the fit rule it states
        "experiment.seeds", "evaluate.fit_max_chance_share",
        # calibration reports the probe without gating on it (its interval on source_rows parents is too wide)
        "calibrate_blur.check.gates",
        # the audio model converges in 16 epochs on the default data (10 left runs unfitted)
        "train_audio.epochs",
    }
    assert diff(got, dflt) <= sized, diff(got, dflt) - sized

    def keys(d, prefix=""):
        out = set()
        for k, v in d.items():
            out.add(prefix + k)
            if isinstance(v, dict):
                out |= keys(v, prefix + k + ".")
        return out

    # (per-scenario mappings such as evaluate.optimal_error are values, not sub-sections)
    per_scenario = {"evaluate.optimal_error.images", "evaluate.optimal_error.audio",
                    "evaluate.optimal_error_proxy.images", "evaluate.optimal_error_proxy.audio",
                    "experiment.seeds.images", "experiment.seeds.audio"}
    # (calibrate_blur.check is a mapping of check_images overrides, a value too)
    per_scenario |= {k for k in keys(raw) if k.startswith("calibrate_blur.check.")}
    assert keys(raw) - per_scenario == keys(config.defaults())


def test_missing_keys_take_defaults(tmp_path):
    p = write(tmp_path, {"split_images": {"seed": 3}})
    cfg = config.section("split_images", p)
    assert cfg["seed"] == 3
    assert cfg["dev_fraction"] == config.defaults()["split_images"]["dev_fraction"]


@pytest.mark.parametrize(
    "data, expected",
    [
        ({"split_images": {"dev_fractoin": 0.5}}, "split_images.dev_fractoin: unknown key (did you mean dev_fraction?)"),
        ({"splt_images": {}}, "splt_images: unknown key (did you mean split_images?)"),
        ({"split_images": {"dev_fraction": 1.5}}, "split_images.dev_fraction: 1.5 is out of range"),
        ({"split_images": {"seed": "x"}}, "split_images.seed: must be an integer"),
        ({"split_images": {"seed": 1.5}}, "split_images.seed: must be an integer"),
        ({"split_images": {"beta_source": -1}}, "split_images.beta_source: must be a number >= 0 or 'balanced'"),
        ({"split_audio": {"beta_synthetic": "balance"}}, "split_audio.beta_synthetic"),
        ({"prepare_images": {"kind": "folders"}}, "prepare_images.kind: 'folders' is not one of fashion_mnist, folder, hub (did you mean folder?)"),
        ({"prepare_images": {"folder": {"size": [28]}}}, "prepare_images.folder.size: must have 2 items"),
        ({"prepare_speech": {"tts": {"speed": [200, 100]}}}, "prepare_speech.tts.speed: low 200 is above high 100"),
        ({"prepare_speech": {"sampling_rate": 100}}, "prepare_speech.sampling_rate: 100 is out of range"),
        ({"prepare_speech": {"tts": 5}}, "prepare_speech.tts: must be a mapping"),
        ({"prepare_noise": {"recordings": "engine"}}, "prepare_noise.recordings: must be a list"),
        ({"split_images": {"train_dev_fraction": 0}}, "split_images.train_dev_fraction: 0 is out of range (0.0, 0.5]"),
    ],
)
def test_bad_params_give_one_line_error_naming_the_key(tmp_path, data, expected):
    p = write(tmp_path, data)
    with pytest.raises(ShiftlabError) as e:
        config.load(p)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(str(p))
    assert expected in msg


def test_balanced_and_null_accepted(tmp_path):
    p = write(tmp_path, {"split_images": {"beta_source": "balanced", "max_source_rows": None}})
    cfg = config.section("split_images", p)
    assert cfg["beta_source"] == "balanced" and cfg["max_source_rows"] is None


def test_invalid_yaml_and_missing_file(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("split_images: [unclosed\n")
    with pytest.raises(ShiftlabError, match="not valid YAML at line"):
        config.load(p)
    with pytest.raises(ShiftlabError, match="params file not found"):
        config.load(tmp_path / "nope.yaml")


def test_empty_file_means_all_defaults(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("")
    assert config.load(p) == config.defaults()


def test_section_validates_its_own_section_and_rejects_unknown_sections(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump({"split_images": {"seed": 3}, "train_images": {"lr": -1}}))
    assert config.section("split_images", p)["seed"] == 3  # another section's bad value is that stage's error
    with pytest.raises(ShiftlabError, match=r"train_images\.lr"):
        config.section("train_images", p)
    with pytest.raises(ShiftlabError, match=r"train_images\.lr"):
        config.load(p)  # the whole file (shiftlab params) still checks every section
    p.write_text(yaml.safe_dump({"split_image": {"seed": 3}}))
    with pytest.raises(ShiftlabError, match="split_image: unknown key.*split_images"):
        config.section("split_audio", p)
    p.write_text("[1, 2]\n")
    with pytest.raises(ShiftlabError, match="must be a mapping"):
        config.section("split_audio", p)


def test_experiment_seeds_per_scenario(tmp_path):
    """experiment.seeds: one list for both scenarios, or a mapping images/audio -> list (one-line errors)."""
    exp = config.section("experiment", write(tmp_path, {"experiment": {"seeds": {"images": [0, 1, 2, 3], "audio": [5]}}}))
    assert config.seeds(exp, "images") == [0, 1, 2, 3] and config.seeds(exp, "audio") == [5]
    exp = config.section("experiment", write(tmp_path, {"experiment": {"seeds": [0, 1]}}))
    assert config.seeds(exp, "images") == config.seeds(exp, "audio") == [0, 1]
    for bad, words in (({"images": [0]}, "no seeds for audio"), ({"images": [0], "audio": [0], "video": [1]}, "video"),
                       ({"images": [0], "audio": [-1]}, "audio")):
        with pytest.raises(ShiftlabError, match=words) as e:
            config.section("experiment", write(tmp_path, {"experiment": {"seeds": bad}}))
        assert "experiment.seeds" in str(e.value) and "\n" not in str(e.value)
