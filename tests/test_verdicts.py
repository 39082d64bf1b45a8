"""Seed-paired verdicts: interval coverage by simulation, power of the MDE, Holm, equivalence, fit flags."""

import numpy as np
import pytest

from shiftlab.train import evaluate as ev

NAMES = ["a", "b"]


def _simulate(rng, seeds, rows, delta, seed_sd, groups=None, group_sd=0.0):
    """(seeds, rows) 0/1 errors of a baseline and a treatment whose population difference is ``delta``.

    Row error rates vary (row noise), the treatment's effect varies by row around ``delta``
    (mean 0 over the population), every (variant, seed) run gets its own shift (seed noise
    that pairing does not cancel) plus a shift shared by the two variants of a seed (which
    it does), then errors are Bernoulli draws (interaction noise).
    """
    p = rng.uniform(0.2, 0.45, rows)
    a = rng.uniform(-0.1, 0.1, rows)
    if groups is not None:
        g = int(groups.max()) + 1
        p = p + rng.normal(0, group_sd, g)[groups]
        a = a + rng.normal(0, group_sd, g)[groups]
    shared = rng.normal(0, 0.02, (seeds, 1))
    base = rng.random((seeds, rows)) < np.clip(p + shared + rng.normal(0, seed_sd, (seeds, 1)), 0, 1)
    treat = rng.random((seeds, rows)) < np.clip(p + delta + a + shared + rng.normal(0, seed_sd, (seeds, 1)), 0, 1)
    return base.astype(np.int64), treat.astype(np.int64)


def _runs(base, treat, groups=None):
    rows = base.shape[1]
    ids = np.array([f"r{i:05d}" for i in range(rows)])
    y = np.zeros(rows, np.int64)
    out = {}
    for name, E in (("nosynth", base), ("synth", treat)):
        out[name] = {}
        for s in range(E.shape[0]):
            d = {"y": y, "pred": E[s], "id": ids}
            if groups is not None:
                d["group"] = np.asarray(groups).astype(str)
            out[name][s] = {"test": d, "label_names": NAMES}
    return out


@pytest.mark.parametrize("seeds, seed_sd, grouped", [(3, 0.02, False), (5, 0.02, False), (10, 0.02, False),
                                                     (3, 0.05, False), (3, 0.0, False), (5, 0.0, True)])
def test_nominal_95_intervals_cover_the_true_difference(seeds, seed_sd, grouped):
    # 1,000 simulated experiments per setting; the interval is the one compare() reports
    rng = np.random.default_rng(1000 + seeds + int(100 * seed_sd) + grouped)
    delta, hits = 0.03, 0
    groups = np.repeat(np.arange(20), 10) if grouped else None
    for _ in range(1000):
        b, t = _simulate(rng, seeds, 200, delta, seed_sd, groups, 0.05 if grouped else 0.0)
        st = ev.seed_row_variance((t - b).astype(float), groups)
        h = ev.halfwidth(st, 0.975)
        hits += abs(st["mean"] - delta) <= h
    assert hits / 1000 >= 0.93


def test_compare_reports_the_simulated_interval():
    rng = np.random.default_rng(5)
    b, t = _simulate(rng, 3, 300, 0.03, 0.02)
    c = ev.compare(_runs(b, t), NAMES, split="test")
    st = ev.seed_row_variance((t - b).astype(float))
    h = ev.halfwidth(st, 0.975)
    assert c["difference"]["value"] == pytest.approx(st["mean"])
    assert c["difference"]["low"] == pytest.approx(st["mean"] - h)
    assert c["difference"]["high"] == pytest.approx(st["mean"] + h)
    # p-value consistent with the interval: at level p the interval just touches 0
    p = c["p_value"]
    assert ev.halfwidth(st, 1 - p / 2) == pytest.approx(abs(st["mean"]), rel=1e-3)


def test_mde_is_the_difference_found_with_80_percent_power():
    # the MDE from the variance components (averaged over 200 null experiments, so the planning
    # value is not one noisy draw); then simulate the true difference = MDE: ~80% rejections
    rng = np.random.default_rng(11)
    pilots = [ev.seed_row_variance(np.subtract(*_simulate(rng, 5, 400, 0.0, 0.01)[::-1]).astype(float))
              for _ in range(200)]
    plan = dict(pilots[0], seed_var=np.mean([p["seed_var"] for p in pilots]),
                row_var=np.mean([p["row_var"] for p in pilots]))
    mde = ev.minimum_detectable(plan, 0.05, 0.8)
    assert 0.01 < mde < 0.2
    rejected = 0
    for _ in range(600):
        b, t = _simulate(rng, 5, 400, mde, 0.01)
        st = ev.seed_row_variance((t - b).astype(float))
        rejected += abs(st["mean"]) > ev.halfwidth(st, 0.975)
    assert 0.65 <= rejected / 600 <= 0.95


def test_holm_levels_follow_the_step_down_rule():
    h = ev.holm_levels({"a": 0.01, "b": 0.04, "c": 0.03}, 0.05)
    assert [h[k]["rank"] for k in "acb"] == [1, 2, 3]
    assert h["a"]["level"] == pytest.approx(0.05 / 3) and h["a"]["rejected"]
    assert h["c"]["level"] == pytest.approx(0.025) and not h["c"]["rejected"]  # 0.03 > 0.025
    assert h["b"]["level"] == pytest.approx(0.05) and not h["b"]["rejected"]  # 0.04 <= 0.05, but the step-down stopped
    assert h["a"]["p_adjusted"] == pytest.approx(0.03) and h["c"]["p_adjusted"] == pytest.approx(0.06)
    assert h["b"]["p_adjusted"] == pytest.approx(0.06)  # monotone


def _variant(E, ids, y, name="test"):
    return {s: {name: {"y": y, "pred": E[s], "id": ids}, "label_names": NAMES} for s in range(E.shape[0])}


def test_compare_all_applies_holm_and_marks_unfit_runs():
    rng = np.random.default_rng(3)
    rows, seeds = 4000, 3
    prob = rng.uniform(0.2, 0.45, rows)  # three variants on the same rows: -8 points, 0, 0
    base, strong, same = ((rng.random((seeds, rows)) < prob + d).astype(np.int64) for d in (0.0, -0.08, 0.0))
    ids = np.array([f"r{i:05d}" for i in range(rows)])
    y = np.zeros(rows, np.int64)
    runs = {"nosynth": _variant(base, ids, y), "synth": _variant(strong, ids, y), "narrow": _variant(same, ids, y)}
    res = ev.compare_all(runs, NAMES, {}, pairs=[("synth", "nosynth"), ("narrow", "nosynth"), ("narrow", "synth")],
                         splits=("test",), unfit={"narrow": ["1"]})
    t = res["test"]
    assert set(t) == {"synth", "narrow", "narrow_vs_synth"}
    assert t["synth"]["verdict"] == "helps" and t["narrow_vs_synth"]["verdict"] == "hurts"
    assert t["synth"]["holm"]["rank"] in (1, 2) and t["narrow"]["holm"]["rank"] == 3
    assert t["narrow"]["holm"]["level"] == pytest.approx(0.05)
    assert sorted(c["holm"]["level"] for c in t.values()) == pytest.approx([0.05 / 3, 0.025, 0.05])
    assert t["narrow"]["verdict"] in ("inconclusive", "equivalent")
    assert t["narrow"]["unfit_runs"] == ["narrow s1"] and "did not fit" in t["narrow"]["text"]
    assert t["synth"]["unfit_runs"] == []


def test_equivalence_needs_the_interval_inside_the_margin():
    rng = np.random.default_rng(8)
    b, t = _simulate(rng, 5, 20000, 0.0, 0.0)
    big = ev.compare(_runs(b, t), NAMES, {"min_effect": 0.01}, split="test")
    assert big["verdict"] == "equivalent" and -0.01 < big["equivalence"]["low"] <= big["equivalence"]["high"] < 0.01
    small = ev.compare(_runs(b[:, :300], t[:, :300]), NAMES, {"min_effect": 0.01}, split="test")
    assert small["verdict"] == "inconclusive" and small["mde"] > 0.05


def test_unfit_rule_uses_chance_error():
    def res(train_error, k=10):
        return {"label_names": [str(i) for i in range(k)], "splits": {"train": {"error": train_error}}}

    results = {"nosynth": {"0": res(0.2), "1": res(0.46)}, "synth": {"0": res(0.44)}}
    # chance error 0.9; 0.5 x 0.9 = 0.45
    assert ev.unfit_runs(results, {"fit_max_chance_share": 0.5}) == {"nosynth": ["1"]}
    assert ev.unfit_runs(results, {"fit_max_chance_share": 0.4}) == {"nosynth": ["1"], "synth": ["0"]}


def test_optimal_error_per_scenario():
    cfg = {"optimal_error": {"images": 0.077}, "optimal_error_proxy": {"images": "anchor"}}
    assert ev.for_scenario(cfg, "images")["optimal_error"] == pytest.approx(0.077)
    assert ev.for_scenario(cfg, "images")["optimal_error_proxy"] == "anchor"
    assert ev.for_scenario(cfg, "audio")["optimal_error"] == 0.0
    with pytest.raises(Exception, match="per scenario"):
        ev.evaluate({"dev": {"y": np.array([0, 1]), "pred": np.array([0, 1])}}, NAMES, cfg)


def test_seeds_that_agree_exactly_do_not_collapse_the_interval():
    # 25 rows, three seeds whose per-seed differences happen to be equal (+2 rows each, on other rows):
    # the seed term is floored at what the per-row noise alone gives, so the interval keeps a width
    rows = 25
    ids = np.array([f"r{i}" for i in range(rows)])
    y = np.zeros(rows, np.int64)
    base = np.zeros((3, rows), np.int64)
    treat = np.zeros((3, rows), np.int64)
    for s in range(3):
        base[s, [s, s + 3, s + 6]] = 1
        treat[s, [s + 10, s + 13, s + 16, s + 19, s + 22]] = 1
    c = ev.compare({"nosynth": _variant(base, ids, y), "synth": _variant(treat, ids, y)}, NAMES, split="test")
    assert c["per_seed"] == {"0": pytest.approx(0.08), "1": pytest.approx(0.08), "2": pytest.approx(0.08)}
    assert c["difference"]["high"] - c["difference"]["low"] > 0.05 and c["mde"] > 0.05  # was 0 before the floor
