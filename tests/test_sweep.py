"""shiftlab sweep cars (train/sweep.py): equal-seconds banks, dvc exp arguments, the collected table and plot."""

import json

import pytest
import yaml

from shiftlab import cli, config, store
from shiftlab.errors import ShiftlabError
from shiftlab.train import report, sweep


def test_every_point_has_the_same_seconds_and_nested_cars():
    pts = sweep.points(None)
    assert [p["n_cars"] for p in pts] == [1, 3, 10, 17]
    for p in pts:
        assert p["seconds"] == pytest.approx(1020.0, rel=1e-12)
        assert p["n_cars"] * p["drives_per_car"] * p["seconds_per_drive"] == pytest.approx(1020.0)
        assert p["cars"] == sweep.CARS[: p["n_cars"]]  # nested: each bank holds the smaller ones' cars
    assert [p["drives_per_car"] for p in pts] == [51, 17, 5, 3]


def test_default_cars_are_the_bank_cars_and_none_is_held_out():
    held_out = {n.split("/", 1)[1] for n in config.section("prepare_noise")["target_recordings"]}
    assert not held_out & set(sweep.CARS)
    assert sweep.check_cfg(config.section("sweep_cars"))["cars"] == sweep.CARS


def test_exp_args_set_only_the_bank_variants_and_seeds():
    p = sweep.points(None)[1]
    args = sweep.exp_args(p, None)
    assert args[:4] == ["exp", "run", "-n", "sweep-cars3"]
    sets = [args[i + 1] for i, a in enumerate(args) if a == "-S"]
    assert all(s.split("=", 1)[0].startswith(("synth_mix.bank.", "experiment.variants", "experiment.seeds.audio")) for s in sets)
    cars = next(s for s in sets if s.startswith("synth_mix.bank.torcs_cars="))
    assert yaml.safe_load(cars.split("=", 1)[1]) == ["f360", "viper", "206"]  # 206 stays a string
    assert "experiment.seeds.audio=[0,1,2]" in sets
    assert args[-2:] == ["check_audio@run0", "evaluate@audio"]


@pytest.mark.parametrize("cfg, key", [
    ({"points": [3, 1]}, "points"), ({"points": [0]}, "points"), ({"points": [18]}, "points"),
    ({"seconds": 0}, "seconds"), ({"cars": ["a", "a"]}, "cars"), ({"variants": ["nosynth"]}, "variants"),
    ({"pionts": [1]}, "pionts"), ({"seeds": [1, 1]}, "seeds"), ({"seeds": [-1]}, "seeds"),
])
def test_bad_cfg_is_one_line_error_naming_key(cfg, key):
    with pytest.raises(ShiftlabError, match=f"sweep_cars.{key}") as e:
        sweep.check_cfg(cfg)
    assert "\n" not in str(e.value)


def _fake_points(d, cfg, errors, failing):
    for p, err in zip(sweep.points(cfg), errors):
        base = d / p["name"]
        base.mkdir(parents=True)
        store.write_json(base / "point.json", p)
        fail = p["n_cars"] in failing
        gates = [{"name": "n_sources", "op": ">=", "threshold": 10.0, "action": "fail", "passed": not fail,
                  "value": float(p["n_cars"] * p["drives_per_car"])},
                 {"name": "vendi_sources", "op": ">=", "threshold": 5.0, "action": "fail", "passed": True, "value": 6.0}]
        store.write_json(base / "check_audio.json", {"verdict": "fail" if fail else "pass", "gates": gates})
        ev = {}
        for v, e in (("synth", err), ("nosynth", 0.30)):
            ev[f"variant/test/{v}/error"] = e
            ev[f"variant/test/{v}/error_low"] = e - 0.02
            ev[f"variant/test/{v}/error_high"] = e + 0.02
        ev.update({"compare/test/synth/difference": err - 0.30, "compare/test/synth/difference_low": err - 0.33,
                   "compare/test/synth/difference_high": err - 0.27, "compare/test/synth/mde": 0.025,
                   "compare/test/synth/verdict": "helps", "compare/test/synth/seeds": 3,
                   "compare/test/synth/groups": 30})
        store.write_json(base / "evaluate_audio.json", ev)
        store.write_json(base / "train_audio.json", {})


def test_collect_markdown_plot_and_the_check_vs_transfer_line(tmp_path):
    _fake_points(tmp_path / "pts", None, [0.28, 0.22, 0.20, 0.19], failing={1})
    res = sweep.collect(tmp_path / "pts")
    assert [r["n_cars"] for r in res["points"]] == [1, 3, 10, 17]
    assert res["points"][0]["check"]["failed"] == ["n_sources"]
    assert res["points"][2]["test"]["synth"]["error"] == 0.20
    assert res["points"][3]["synth_minus_nosynth"]["difference"] == pytest.approx(-0.11)
    agree = res["predicted_worse_by_check"]
    assert agree["comparable"] and agree["failing_worse_than_best_passing"] == ["cars1"]
    md = sweep.markdown(res, "sweep_cars.png")
    assert "| 1 | 51 x 20 | fail | n_sources |" in md and "28.0% (26.0% to 30.0%)" in md
    assert "1 of 1 failing banks" in md
    png = sweep.plot(res, tmp_path / "s.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    json.dumps(res)


def test_collect_refuses_points_recorded_for_other_cars(tmp_path):
    _fake_points(tmp_path / "pts", None, [0.28, 0.22, 0.20, 0.19], failing=set())
    with pytest.raises(ShiftlabError, match="other cars"):
        sweep.collect(tmp_path / "pts", {"cars": list(reversed(sweep.CARS))})
    with pytest.raises(ShiftlabError, match="cars17.*no sweep point record|point.json"):
        (tmp_path / "pts" / "cars17" / "point.json").unlink()
        sweep.collect(tmp_path / "pts")


def test_cli_collects_and_the_report_shows_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _fake_points(tmp_path / "metrics" / "sweep_cars", None, [0.28, 0.22, 0.20, 0.19], failing={1, 3})
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"sweep_cars": {"points": [1, 3, 10, 17]}}))
    assert cli.main(["--params", str(params), "sweep", "cars"]) in (0, None)
    out = capsys.readouterr().out
    assert "sweep cars: 4 points" in out and (tmp_path / "reports" / "sweep_cars.png").is_file()
    res = json.loads((tmp_path / "metrics" / "sweep_cars.json").read_text())
    assert res["predicted_worse_by_check"]["failing_worse_than_best_passing"] == ["cars1", "cars3"]
    doc = report._Doc()
    report._sweep_section(doc, tmp_path, config.load(params))
    text = doc.text()
    assert "distinct cars in the noise bank" in text and "| 3 | 17 x 20 | fail |" in text
    assert "sweep_cars.png" in doc.files


def test_report_says_not_run_without_the_sweep(tmp_path):
    doc = report._Doc()
    report._sweep_section(doc, tmp_path, None)
    assert "*the cars sweep: not run*" in doc.text()
