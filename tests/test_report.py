"""shiftlab report: a fake pipeline root with small but structurally real inputs."""

import base64
import json
import re
from pathlib import Path

import datasets as hfds
import numpy as np
import pytest

from shiftlab import store
from shiftlab.datasets import audio as audio_mod
from shiftlab.datasets import schema
from shiftlab.datasets import splits as splits_mod
from shiftlab.errors import ShiftlabError
from shiftlab.mixing import diversity as mix_div
from shiftlab.synth import diversity as img_div
from shiftlab.train import evaluate as ev
from shiftlab.train import report

NAMES = ["left", "right", "jump", "flat"]
EV_CFG = {"n_boot": 200}
SEEDS = (0, 1, 2)
# dev error per (variant, seed): synth clearly better, narrow clearly worse than synth
ERR = {"nosynth": (0.30, 0.32, 0.31), "synth": (0.12, 0.14, 0.13), "narrow": (0.40, 0.42, 0.41)}


# --------------------------------------------------------------------------- fake inputs


def _image_ds(rows, shape=(8, 8, 1)):
    feats = schema.image_features(NAMES, shape)
    cols = {k: [r[k] for r in rows] for k in ("id", "image", "label", "domain", "origin", "group", "parent", "recipe")}
    return hfds.Dataset.from_dict(cols, features=feats)


def _img(i):
    rng = np.random.default_rng(i)
    return rng.integers(0, 256, (1, 8, 8), dtype=np.uint8)


def _image_splits():
    def row(i, split, dom, recipe="{}"):
        return {"id": f"img/{split}/{i:03d}", "image": _img(i), "label": i % 4, "domain": dom, "origin": "real",
                "group": f"img/{split}/{i:03d}", "parent": "", "recipe": recipe}

    frames = json.dumps({"frames": {"seed": 1}})
    parts = {
        "train": [row(i, "train", "source") for i in range(16)] + [row(100 + i, "train", "target", frames)
                                                                  for i in range(4)],
        "train_dev": [row(200 + i, "train_dev", "source") for i in range(4)],
        "dev": [row(300 + i, "dev", "target", frames) for i in range(8)],
        "test": [row(400 + i, "test", "target", frames) for i in range(8)],
    }
    return hfds.DatasetDict({k: _image_ds(v) for k, v in parts.items()})


def _image_synth(splits, limit=None, tag="blur"):
    rows = []
    for s in ("train", "train_dev"):
        d = splits[s]
        for i in range(len(d) if limit is None else min(limit, len(d))):
            r = d[i]
            if r["domain"] != "source":
                continue
            rows.append({"id": f"{r['id']}/{tag}0", "image": (np.asarray(r["image"], np.uint8) // 2),
                         "label": r["label"], "domain": "source", "origin": "synthetic", "group": r["group"],
                         "parent": r["id"], "recipe": store.recipe(stage=tag)})
    return _image_ds(rows)


def _audio_rows(n, split, dom, sr=8000, origin="real", parent=""):
    t = np.arange(int(0.25 * sr)) / sr
    out = []
    for i in range(n):
        w = (0.3 * np.sin(2 * np.pi * (200 + 100 * (i % 4)) * t)).astype(np.float32)
        out.append({"id": f"sp/{split}/{i:03d}", "audio": w, "sampling_rate": sr, "label": NAMES[i % 4],
                    "domain": dom, "origin": origin, "group": f"spk{i % 3}" if dom == "source" else f"tgt_{split}",
                    "parent": parent, "recipe": json.dumps({"target_mix": {}}) if dom == "target" else "{}"})
    return out


def _audio_splits():
    parts = {"train": _audio_rows(12, "train", "source"), "train_dev": _audio_rows(2, "train_dev", "source"),
             "dev": _audio_rows(4, "dev", "target"), "test": _audio_rows(4, "test", "target")}
    return hfds.DatasetDict({k: audio_mod.build_dataset(v, NAMES) for k, v in parts.items()})


def _audio_synth(splits, scale):
    rows = []
    for s in ("train", "train_dev"):
        for r in splits[s]:
            w = np.asarray(r["audio"], np.float32) + scale * np.random.default_rng(len(rows)).standard_normal(
                len(r["audio"])).astype(np.float32)
            rows.append({"id": r["id"] + "/mix0", "audio": w, "sampling_rate": r["sampling_rate"],
                         "label": NAMES[r["label"]], "domain": "source", "origin": "synthetic", "group": r["group"],
                         "parent": r["id"], "recipe": "{}"})
    return audio_mod.build_dataset(rows, NAMES)


def _preds(err, n, seed, groups=None):
    rng = np.random.default_rng(1000 + seed)
    y = np.arange(n) % len(NAMES)
    pred = y.copy()
    wrong = rng.permutation(n)[: int(round(err * n))]
    pred[wrong] = (y[wrong] + 1) % len(NAMES)
    d = {"y": y, "pred": pred, "id": np.array([f"row{i:04d}" for i in range(n)])}
    if groups is not None:
        d["group"] = np.asarray(groups)
    return d


def _results(scenario, dev_rows):
    runs_pred, runs_eval = {}, {}
    for v, errs in ERR.items():
        runs_pred[v], runs_eval[v] = {}, {}
        for s, e in zip(SEEDS, errs):
            p = {"train": _preds(0.05, 200, 10 + s), "train_dev": _preds(0.08, 100, 20 + s),
                 "dev": _preds(e, dev_rows, s + 3 * list(ERR).index(v)), "test": _preds(e + 0.02, dev_rows, 50 + s)}
            runs_pred[v][s] = p
            runs_eval[v][str(s)] = ev.evaluate(p, NAMES, EV_CFG)
    pairs = [("synth", "nosynth"), ("narrow", "nosynth"), ("narrow", "synth")]
    unfit = ev.unfit_runs(runs_eval, EV_CFG)
    comp = ev.compare_all(runs_pred, NAMES, EV_CFG, pairs=pairs, splits=("test", "dev"), unfit=unfit)
    variants = {sp: {v: ev.variant_error(runs_pred[v], NAMES, EV_CFG, split=sp) for v in ERR} for sp in ("test", "dev")}
    return {"scenario": scenario, "label_names": NAMES, "primary_split": "test", "splits": ["test", "dev"],
            "runs": runs_eval, "variants": variants, "compare": comp, "unfit": unfit,
            "fit_rule": {"text": "train error above 0.5 x chance"}, "optimal_error": 0.0,
            "optimal_error_proxy": "none stated (0)"}


def _write_png(path: Path, colour: str):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 1.5))
    FigureCanvasAgg(fig)
    fig.add_subplot().bar([0, 1], [1, 2], color=colour)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=40, metadata={"Software": None})


IMG_GOOD = {"kernels": {"distinct": 500, "vendi": 40.0, "effective_number": 400.0, "top_share": 0.01,
                        "effective_share": 0.8, "vendi_ratio": 1.0,
                        "params": {"orientation": {"entropy": 0.9}, "length": {"entropy": 0.8}},
                        "copies_per_parent": {"max": 1}},
            "near_duplicates": {"share": 0.0}, "probe": {"gap": 0.01, "gap_ci": [-0.01, 0.02]},
            "realism": {"domain_auc": {"auc": 0.7}}}
IMG_NARROW = {"kernels": {"distinct": 1, "vendi": 1.0, "effective_number": 1.0, "top_share": 1.0,
                          "effective_share": 0.001, "vendi_ratio": 0.3,
                          "params": {"orientation": {"entropy": 0.0}, "length": {"entropy": 0.0}},
                          "copies_per_parent": {"max": 1}},
              "near_duplicates": {"share": 0.02}, "probe": {"gap": 0.2, "gap_ci": [0.1, 0.3]},
              "realism": {"domain_auc": {"auc": 0.95}}}
AUD_GOOD = {"metrics": {"n_sources": 53, "vendi_sources": 25.7, "effective_sources_by_use": 45.0,
                        "vendi_sources_share": 0.48, "largest_source_share": 0.03, "reuse_ratio": 1.2,
                        "max_segment_uses": 2, "probe_gap": -0.03, "probe_gap_ci_high": 0.02, "domain_auc": 0.8,
                        "noise_domain_auc": 0.9}}
AUD_NARROW = {"metrics": {"n_sources": 1, "vendi_sources": 1.0, "effective_sources_by_use": 1.0,
                          "vendi_sources_share": 1.0, "largest_source_share": 1.0, "reuse_ratio": 677.5,
                          "max_segment_uses": 1000, "probe_gap": None, "domain_auc": 1.0, "noise_domain_auc": 1.0}}


def _check(gates, report_dict):
    failed = any(g["passed"] is False and g["action"] == "fail" for g in gates)
    warned = any(g["passed"] is False and g["action"] == "warn" for g in gates)
    return {"verdict": "fail" if failed else "warn" if warned else "pass", "gates": gates, "report": report_dict}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = tmp_path_factory.mktemp("root")
    (r / "params.yaml").write_text("split_images:\n  seed: 0\n")
    isp = _image_splits()
    store.save(isp, r / "data/splits/images")
    store.save(_image_synth(isp), r / "data/synth/blur")
    store.save(_image_synth(isp, limit=8, tag="narrow"), r / "data/synth/blur_narrow")
    asp = _audio_splits()
    store.save(asp, r / "data/splits/audio")
    store.save(_audio_synth(asp, 0.1), r / "data/synth/mix")
    store.save(_audio_synth(asp, 0.3), r / "data/synth/mix_narrow")
    store.write_json(r / "metrics/split_images.json", splits_mod.report(isp))
    store.write_json(r / "metrics/split_audio.json", splits_mod.report(asp))
    store.write_json(r / "metrics/check_images.json", _check(img_div.gate(IMG_GOOD), IMG_GOOD))
    store.write_json(r / "metrics/check_images_narrow.json", _check(img_div.gate(IMG_NARROW), IMG_NARROW))
    store.write_json(r / "metrics/check_audio.json", _check(mix_div.gate(AUD_GOOD), AUD_GOOD))
    store.write_json(r / "metrics/check_audio_narrow.json", _check(mix_div.gate(AUD_NARROW), AUD_NARROW))
    _write_png(r / "reports/check_images/examples.png", "tab:blue")
    _write_png(r / "reports/check_images/other.png", "tab:green")
    _write_png(r / "reports/check_audio_narrow/coverage.png", "tab:red")
    res_i = _results("images", 400)
    store.write_json(r / "eval/images/results.json", res_i)
    store.write_json(r / "eval/audio/results.json", _results("audio", 50))
    for v in ERR:  # evaluate's own PNGs for seed 0 of the image runs
        ev.plots(res_i["runs"][v]["0"], r / f"eval/images/{v}_s0")
    for v, errs in ERR.items():  # DVCLive learning curves of the image runs (audio: none)
        for s, e in zip(SEEDS, errs):
            for m, scale in (("train", 0.3), ("train_dev", 0.5), ("dev", 1.0)):
                p = r / f"runs/images/{v}/s{s}/live/plots/metrics/{m}/error.tsv"
                p.parent.mkdir(parents=True, exist_ok=True)
                vals = [e * scale + 0.2 / (k + 1) for k in range(4)]
                p.write_text("step\terror\n" + "".join(f"{k}\t{x}\n" for k, x in enumerate(vals)))
    return r


@pytest.fixture(scope="module")
def built(root):
    out = report.build(root, None, "reports/report")
    return out, Path(out["markdown"]).read_text(), Path(out["html"]).read_text()


# --------------------------------------------------------------------------- content


def test_markdown_states_verdicts_and_exact_cis(root, built):
    _, md, _ = built
    for sc in ("images", "audio"):
        res = json.loads((root / f"eval/{sc}/results.json").read_text())
        for t in ("synth", "narrow"):
            c = res["compare"]["test"][t]
            d = c["difference"]
            assert c["text"] in md
            row = (f"| {t} - nosynth | {100 * d['value']:+.1f} pts | {100 * d['low']:+.1f} pts to "
                   f"{100 * d['high']:+.1f} pts | {100 * c['mde']:.1f} pts | {c['holm']['level']:.4f} | "
                   f"**{c['verdict']}** |")
            assert row in md
        for v, vd in res["variants"]["test"].items():
            assert f"| {vd['error'] * 100:.1f}% | [{100 * vd['low']:.1f}%, {100 * vd['high']:.1f}%] |" in md
        if sc == "images":  # 400 test rows: the fake errors were made to separate clearly
            assert res["compare"]["test"]["synth"]["verdict"] == "helps"
            assert res["compare"]["test"]["narrow"]["verdict"] == "hurts"
    assert "images (test): synth - nosynth" in md and ": helps;" in md
    assert "Does the synthesis help? (verdicts on test)" in md and "Holm level" in md


def test_decomposition_is_the_mean_over_seeds(root, built):
    _, md, _ = built
    res = json.loads((root / "eval/images/results.json").read_text())
    for v in ERR:
        vals = [res["runs"][v][str(s)]["decomposition"]["data_mismatch"]["value"] for s in SEEDS]
        dev = [res["runs"][v][str(s)]["splits"]["dev"]["error"] for s in SEEDS]
        section = md.split("### Error decomposition")[1].split("### Learning curves")[0]
        line = next(ln for ln in section.splitlines() if ln.startswith(f"| {v} | 3 |"))
        assert f"{100 * np.mean(vals):+.1f} pts" in line
        assert f"{100 * np.mean(dev):.1f}%" in line


def test_data_sizes_count_synthetic_rows_per_parent_split(built):
    _, md, _ = built
    # images: 16 train source + 4 train target; synth blurs every source row, narrow the first 8 per split
    assert "| train | 16 | 4 | 20 | 20 | 16 | 8 |" in md
    assert "| train_dev | 4 | 0 | 4 | 4 | 4 | 4 |" in md
    assert "16 of the 16 dev/test rows carry a `frames` recipe record" in md
    assert "8 of the 8 dev/test rows carry a `target_mix` recipe record" in md


def test_dashboard_gates_and_prediction_paragraph(root, built):
    _, md, _ = built
    assert "| images | narrow | `metrics/check_images_narrow.json` | **FAIL** | kernel_vendi_ratio" in md
    assert "| kernel_vendi_ratio | 0.300 | >= 0.750 | fail | **FAIL** |" in md
    assert "| reuse_ratio | 677.500 | <= 20 | fail | **FAIL** |" in md
    # n/a is not a pass: the narrow bank's probe cannot run, its gates count with their action
    assert "| probe_gap | n/a | <= 0.050 | warn | warn (n/a) |" in md
    assert "| probe_gap_ci_high | n/a | <= 0.100 | fail | **FAIL** (n/a) |" in md
    res = json.loads((root / "eval/images/results.json").read_text())
    n, s = res["variants"]["test"]["narrow"], res["variants"]["test"]["synth"]
    para = next(ln for ln in md.splitlines() if ln.startswith("**images.**"))
    assert f"narrow {100 * n['error']:.1f}% [{100 * n['low']:.1f}%, {100 * n['high']:.1f}%]" in para
    assert f"synth {100 * s['error']:.1f}% [{100 * s['low']:.1f}%, {100 * s['high']:.1f}%]" in para
    assert res["compare"]["test"]["narrow_vs_synth"]["verdict"] == "hurts"  # fake data: clearly worse
    assert "Yes: the flagged variant transferred measurably worse" in para
    assert "narrow check FAIL" in para
    # check plots: the preferred one is embedded, the other only listed
    assert "![check_images: examples.png](check_images_examples.png)" in md
    assert "`other.png`" in md and "check_images_other.png" not in md


def test_learning_curves_confusion_and_examples(root, built):
    out, md, _ = built
    files = {Path(f).name for f in out["files"]}
    assert {"images_learning_curves.png", "images_examples.png", "audio_examples.png",
            "images_dev_error.png", "audio_dev_error.png", "images_decomposition.png"} <= files
    for v in ERR:
        got = (Path(out["out_dir"]) / f"images_confusion_{v}.png").read_bytes()
        assert got == (root / f"eval/images/{v}_s0/confusion_test.png").read_bytes()  # the verdict split
    # audio has results but no DVCLive dirs and no evaluate PNGs
    audio = md.split("## Scenario: audio")[1].split("## Diversity dashboard")[0]
    assert "*learning curves: not run*" in audio and "*confusion matrices: not run*" in audio
    assert "| nosynth | 0 | 4 | " in md  # 4 epochs logged
    for name in files:
        if name.endswith(".png"):
            assert (Path(out["out_dir"]) / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_example_columns_share_parents(root):
    sc = report._Scenario(root, "images", report.merge_config({"examples": 4}), None)
    chosen, rows, src = report._pick_columns(sc, 4)
    assert len(chosen) == 4
    assert len({src[c][1] for c in chosen}) == 4  # one per label while labels last
    narrow = store.load(root / "data/synth/blur_narrow")
    blur = store.load(root / "data/synth/blur")
    for v, ds in (("synth", blur), ("narrow", narrow)):
        assert [ds[i]["parent"] for i in rows[v]] == chosen
    again = report._pick_columns(sc, 4)
    assert again[0] == chosen


def test_html_embeds_every_png_and_stands_alone(built):
    out, md, page = built
    refs = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    uris = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(uris) == len(refs) >= 10
    first = base64.b64decode(uris[0])
    assert first == (Path(out["out_dir"]) / refs[0]).read_bytes()
    assert not re.search(r'src="(?!data:)', page)
    assert "<table>" in page and "<strong>helps</strong>" in page


def test_two_builds_are_byte_identical(root, built, tmp_path):
    out, _, _ = built
    before = store.tree_digest(out["out_dir"])
    again = report.build(root, None, out["out_dir"])
    assert store.tree_digest(again["out_dir"]) == before
    other = report.build(root, None, root / "reports/report_copy")
    assert store.tree_digest(other["out_dir"]) == before


# --------------------------------------------------------------------------- missing and bad inputs


def test_empty_root_reports_not_run(tmp_path):
    out = report.build(tmp_path, None, "out")
    md = Path(out["markdown"]).read_text()
    for part in ("split sizes: not run", "verdicts: not run", "decomposition: not run",
                 "learning curves: not run", "confusion matrices: not run", "examples: not run",
                 "check_images_narrow: not run", "*params.yaml: not run*"):
        assert part in md
    assert "**images.** Not run" in md and "**audio.** Not run" in md
    assert not re.search(r"\d+\.\d%", md)  # no number invented
    assert out["summary"] == ["images: evaluation not run (no eval/images/results.json); checks: synth not run, "
                              "narrow not run",
                              "audio: evaluation not run (no eval/audio/results.json); checks: synth not run, "
                              "narrow not run"]
    assert sorted(Path(f).name for f in out["files"]) == ["report.html", "report.md"]


def test_results_without_data_still_report_numbers(root, tmp_path):
    (tmp_path / "eval/images").mkdir(parents=True)
    (tmp_path / "eval/images/results.json").write_bytes((root / "eval/images/results.json").read_bytes())
    out = report.build(tmp_path, {"scenarios": ["images"]}, "out")
    md = Path(out["markdown"]).read_text()
    assert "*examples: not run*" in md and "*split sizes: not run*" in md
    assert "**hurts**" in md and "Not run: no `metrics/check_images.json`" in md


def test_summary_lines(root):
    lines = report.summary_lines(root)
    res = json.loads((root / "eval/audio/results.json").read_text())
    c = res["compare"]["test"]["narrow"]
    d = c["difference"]
    assert len(lines) == 2 and lines[0].startswith("images (test): synth - nosynth ")
    assert lines[0].endswith("checks: synth PASS, narrow FAIL")
    assert (f"narrow - nosynth {100 * d['value']:+.1f} pts ({100 * d['low']:+.1f} pts to {100 * d['high']:+.1f} pts, "
            f"MDE {100 * c['mde']:.1f} pts): {c['verdict']}") in lines[1]


def test_bad_json_is_a_one_line_error(tmp_path):
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics/check_audio.json").write_text("{not json")
    with pytest.raises(ShiftlabError, match=r"^metrics/check_audio.json: not valid JSON") as e:
        report.build(tmp_path, None, "out")
    assert "\n" not in str(e.value)
    (tmp_path / "metrics/check_audio.json").write_text('{"gates": []}')
    with pytest.raises(ShiftlabError, match=r"metrics/check_audio.json: unexpected structure \(missing key 'verdict'\)"):
        report.build(tmp_path, None, "out")
    assert not (tmp_path / "out").exists()  # nothing half-written


@pytest.mark.parametrize("cfg, msg", [
    ({"exampels": 4}, r"^report.exampels: unknown key \(did you mean examples\?\)$"),
    ({"examples": 40}, r"^report.examples: 40 is out of range \[0, 32\]$"),
    ({"examples": True}, r"^report.examples: must be an integer"),
    ({"scenarios": ["video"]}, r"^report.scenarios: unknown scenario 'video'"),
    ({"scenarios": []}, r"^report.scenarios: must be a non-empty list"),
    ({"variants": ["a", "a"]}, r"^report.variants: has duplicates"),
    ({"confusion_seed": -1}, r"^report.confusion_seed: -1 is out of range \[0, inf\]$"),
    ({"dpi": 10}, r"^report.dpi: 10 is out of range \[50, 300\]$"),
    ("x", r"^report: must be a mapping"),
])
def test_bad_config_names_the_key(cfg, msg):
    with pytest.raises(ShiftlabError, match=msg):
        report.merge_config(cfg)


def test_merge_config_defaults():
    assert report.merge_config(None) == report.DEFAULTS
    assert report.merge_config({"examples": 0})["examples"] == 0


# --------------------------------------------------------------------------- markdown -> html


def test_to_html_subset():
    md = ("# Title <x>\n\nSome *it* and **bold** `a<b` [link](http://e.x).\n\n- one\n- two\n\n"
          "| a | b |\n|---|---:|\n| 1 \\| 2 | 3 |\n\n![cap](p.png)\n\n![ext](other.png)\n")
    page = report.to_html(md, {"p.png": b"\x89PNG"})
    assert '<h1 id="title-x">Title &lt;x&gt;</h1>' in page
    assert "<em>it</em>" in page and "<strong>bold</strong>" in page and "<code>a&lt;b</code>" in page
    assert '<a href="http://e.x">link</a>' in page
    assert "<ul>\n<li>one</li>\n<li>two</li>\n</ul>" in page
    assert '<td>1 | 2</td><td class="r">3</td>' in page and '<th class="r">b</th>' in page
    assert 'src="data:image/png;base64,' + base64.b64encode(b"\x89PNG").decode() + '"' in page
    assert 'src="other.png"' in page and "<figcaption>cap</figcaption>" in page
