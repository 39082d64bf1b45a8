"""shiftlab.stats: grouped folds, the cluster bootstrap, weighted AUC, Frechet differences.

Data the tests make. The cluster bootstrap (Efron & Tibshirani 1993; resampling clusters:
Davison & Hinkley 1997, sec. 3.8) must widen an interval when rows are copies of each other,
and grouped folds must never put a group on both sides of a split.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shiftlab import stats
from shiftlab.errors import ShiftlabError


# --------------------------------------------------------------------------- grouped folds


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 120), n_groups=st.integers(1, 30), folds=st.integers(2, 6), seed=st.integers(0, 2**31),
       data=st.data())
def test_group_folds_never_put_a_group_in_two_folds(n, n_groups, folds, seed, data):
    groups = np.array(data.draw(st.lists(st.integers(0, n_groups - 1), min_size=n, max_size=n)))
    labels = np.array(data.draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)))
    f = stats.group_folds(labels, groups, folds, seed)
    assert f.shape == (n,) and f.min() >= 0 and f.max() < folds
    for g in np.unique(groups):
        assert len(np.unique(f[groups == g])) == 1  # a group is wholly in one test fold ...
    for k in range(folds):  # ... so no group is in the training and the test part of any fold
        assert not set(groups[f == k]) & set(groups[f != k])


def test_group_folds_with_one_row_per_group_are_stratified_and_balanced():
    y = np.r_[np.ones(50), np.zeros(23)]
    f = stats.group_folds(y, None, 5, seed=3)
    for k in range(5):
        assert (f[y == 1] == k).sum() == 10 and (f[y == 0] == k).sum() in (4, 5)
    assert np.array_equal(f, stats.group_folds(y, np.arange(73), 5, seed=3))


def test_domain_classifier_with_grouped_folds_does_not_learn_the_groups():
    """A and B come from one distribution; every group is 8 near-copies of one point.

    Row folds put copies of a group in training and test: the classifier recognises the
    group (AUC far above 0.5). Group folds never do: AUC ~0.5, and the cluster-bootstrap
    interval is wider than the row one.
    """
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(40, 60))  # 40 points in 60-d: a linear classifier can memorise any labelling
    rows = np.repeat(centres, 8, axis=0) + 0.01 * rng.normal(size=(320, 60))
    g = np.repeat(np.arange(40), 8)
    A, B = rows[g < 20], rows[g >= 20]
    ga, gb = g[g < 20], g[g >= 20]
    leak = stats.domain_classifier_auc(A, B, 5, 0, l2=1e-6, n_boot=200)
    grouped = stats.domain_classifier_auc(A, B, 5, 0, groups_a=ga, groups_b=gb, l2=1e-6, n_boot=200)
    assert leak["auc"] > 0.9 and leak["bootstrap"] == "rows"
    assert grouped["bootstrap"] == "groups" and grouped["groups_a"] == 20 and grouped["groups_b"] == 20
    assert grouped["ci_low"] < 0.5 < grouped["ci_high"] or abs(grouped["auc"] - 0.5) < 0.25
    assert grouped["auc"] < leak["auc"] - 0.3
    assert grouped["ci_high"] - grouped["ci_low"] > leak["ci_high"] - leak["ci_low"]


def test_grouped_domain_classifier_needs_two_groups_a_side():
    rng = np.random.default_rng(1)
    A, B = rng.normal(size=(30, 3)), rng.normal(size=(24, 3)) + 1
    d = stats.domain_classifier_auc(A, B, 5, 0, groups_b=["one speaker"] * 24, n_boot=50)
    assert np.isnan(d["auc"]) and "2 groups per side" in d["reason"] and d["groups_b"] == 1
    d = stats.domain_classifier_auc(A, B, 5, 0, groups_b=np.arange(24) % 3, n_boot=50)
    assert d["folds"] == 3 and d["groups_b"] == 3 and 0.5 < d["auc"] <= 1.0  # folds <= groups of a side
    with pytest.raises(ShiftlabError, match="groups_a for 30 rows"):
        stats.domain_classifier_auc(A, B, groups_a=[1, 2])


# --------------------------------------------------------------------------- cluster bootstrap


def test_weighted_auc_equals_auc_on_repeated_rows():
    rng = np.random.default_rng(2)
    s = np.round(rng.normal(size=300), 1)  # ties
    y = rng.integers(0, 2, 300)
    assert stats.weighted_auc(s, y, np.ones(300)) == pytest.approx(stats.auc(s, y), abs=1e-12)
    W = rng.integers(0, 4, (5, 300)).astype(float)
    ref = [stats.auc(np.repeat(s, w.astype(int)), np.repeat(y, w.astype(int))) for w in W]
    np.testing.assert_allclose(stats.weighted_auc(s, y, W), ref, atol=1e-12)
    assert np.isnan(stats.weighted_auc(s, y, np.where(y == 1, 0.0, 1.0)))  # no positive weight


def test_cluster_weights_keep_each_stratum_and_group_whole():
    groups = np.repeat(np.arange(12), [1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 4])
    strata = (groups >= 8).astype(int)  # 8 groups in stratum 0, 4 in stratum 1
    for W in stats.cluster_weights(groups, 300, seed=5, strata=strata, block=64):
        for g in range(12):  # a group's rows share one weight (the group's draw count)
            assert (W[:, groups == g] == W[:, groups == g][:, :1]).all()
        per_group = np.stack([W[:, groups == g][:, 0] for g in range(12)], axis=1)
        assert (per_group[:, :8].sum(1) == 8).all() and (per_group[:, 8:].sum(1) == 4).all()


def test_cluster_bootstrap_widens_when_rows_within_a_group_are_duplicated():
    """Five copies of every row: the row bootstrap shrinks the interval by ~sqrt(5), the
    cluster bootstrap over the copies' group keeps the width of the original rows."""
    rng = np.random.default_rng(7)
    s = rng.normal(size=200) + 0.6 * (y := rng.integers(0, 2, 200))
    s5, y5, g5 = np.repeat(s, 5), np.repeat(y, 5), np.repeat(np.arange(200), 5)

    def width(scores, labels, groups):
        lo, hi, _ = stats.cluster_bootstrap(lambda W: stats.weighted_auc(scores, labels, W), groups, 2000, 0,
                                            strata=labels)
        return hi - lo

    original = width(s, y, None)
    rows = width(s5, y5, None)  # treats the copies as independent
    clusters = width(s5, y5, g5)
    assert rows < 0.6 * original
    assert clusters > 1.8 * rows
    assert clusters == pytest.approx(original, rel=0.15)
    # the mean of a 0/1 variable: same picture
    e5 = np.repeat((rng.random(200) < 0.3).astype(float), 5)
    lo_r, hi_r, _ = stats.cluster_bootstrap(lambda W: W @ e5 / W.sum(1), np.arange(1000), 2000, 1)  # rows
    lo_c, hi_c, _ = stats.cluster_bootstrap(lambda W: W @ e5 / W.sum(1), g5, 2000, 1)
    assert hi_c - lo_c > 1.8 * (hi_r - lo_r)


# --------------------------------------------------------------------------- Frechet difference


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # sqrtm of the singular point estimate
def test_frechet_difference_interval_and_its_formula():
    rng = np.random.default_rng(11)
    T = rng.normal(size=(300, 5)) + 1.0
    Y = rng.normal(size=(400, 5))  # far from T
    X = Y + 0.8  # the same rows moved toward T (paired with Y row by row)
    d = stats.frechet_difference(X, Y, T, n_boot=300, seed=0)
    assert d["frechet_x"] == pytest.approx(stats.frechet_from_features(X, T))
    assert d["frechet_y"] == pytest.approx(stats.frechet_from_features(Y, T))
    assert d["difference"] == pytest.approx(d["frechet_x"] - d["frechet_y"])
    assert d["ci_low"] <= d["difference"] <= d["ci_high"] < 0  # X is closer, beyond sampling noise
    same = stats.frechet_difference(Y, Y.copy(), T, n_boot=100, seed=0)
    assert same["difference"] == 0 and abs(same["ci_low"]) < 1e-9 and abs(same["ci_high"]) < 1e-9
    # a tiny shift: the interval straddles 0 (no "moved toward the target" from noise)
    tiny = stats.frechet_difference(Y + 0.01 * rng.normal(size=Y.shape), Y, T, n_boot=300, seed=0)
    assert tiny["ci_low"] < 0 < tiny["ci_high"]
    # the replicate formula (eigenvalues of L^T S1 L, S2 = L L^T) equals the scipy sqrtm one
    mu1, S1 = stats._weighted_moments(X, np.ones(len(X)))
    mu2, S2 = stats._weighted_moments(T, np.ones(len(T)))
    assert stats._frechet_chol(mu1, S1, mu2, stats._cholesky_psd(S2), np.trace(S2)) == pytest.approx(
        stats.frechet_distance(mu1, S1, mu2, S2), rel=1e-9)
    # a singular reference (a dead unit: a constant column) is handled
    Td = np.c_[T, np.zeros(len(T))]
    dead = stats.frechet_difference(np.c_[X, np.zeros(len(X))], np.c_[Y, np.zeros(len(Y))], Td, n_boot=50, seed=0)
    assert dead["difference"] == pytest.approx(d["difference"], rel=1e-6)
    with pytest.raises(ShiftlabError, match="paired row by row"):
        stats.frechet_difference(X[:10], Y, T)


def test_frechet_difference_cluster_interval_is_wider_for_copies():
    rng = np.random.default_rng(12)
    T = rng.normal(size=(4000, 3)) + 0.5  # a large reference: the X/Y side dominates the interval
    Y = rng.normal(size=(150, 3))
    X = Y + 0.2 * rng.normal(size=Y.shape) + 0.1
    X3, Y3, g3 = np.repeat(X, 3, axis=0), np.repeat(Y, 3, axis=0), np.repeat(np.arange(150), 3)
    rows = stats.frechet_difference(X3, Y3, T, n_boot=400, seed=2)
    clusters = stats.frechet_difference(X3, Y3, T, groups=g3, n_boot=400, seed=2)
    assert rows["difference"] == pytest.approx(clusters["difference"])
    assert clusters["ci_high"] - clusters["ci_low"] > 1.3 * (rows["ci_high"] - rows["ci_low"])
    assert clusters["groups"] == 150 and rows["groups"] == 450
