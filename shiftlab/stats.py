"""Small statistics for diversity, realism and mismatch checks (numpy / scipy / torch).

Generic: used by the image checks (:mod:`shiftlab.synth.diversity`) and meant for the
audio track too. Nothing here depends on scikit-learn.

* :func:`vendi_score` -- effective number of distinct items (Friedman & Dieng 2023),
* :func:`frechet_distance`, :func:`frechet_from_features` -- the FID formula on any features,
* :func:`entropy_bits`, :func:`normalized_entropy` -- coverage of a parameter's range,
* :func:`auc` (Mann-Whitney, ties averaged), :func:`bootstrap_ci` (percentile, optionally
  stratified),
* :func:`group_folds` -- k folds that keep every group whole (stratified by class),
* :func:`cluster_weights`, :func:`cluster_bootstrap`, :func:`weighted_auc` -- the cluster
  (group) bootstrap, vectorised: a replicate is a vector of row weights (how often each row's
  group was drawn), so a statistic that accepts weights is evaluated for a whole block of
  replicates at once (Efron & Tibshirani 1993, "An Introduction to the Bootstrap", ch. 6 and
  13; resampling clusters: Davison & Hinkley 1997, "Bootstrap Methods and their
  Application", sec. 3.8),
* :func:`fit_logistic` -- L2 logistic / softmax regression on standardised features (torch
  L-BFGS, float64, deterministic),
* :func:`domain_classifier_auc` -- can a learner tell A from B? out-of-fold AUC + 95% CI,
  folds and bootstrap by group,
* :func:`frechet_difference` -- ``FD(X, T) - FD(Y, T)`` for paired ``X``, ``Y`` with a
  cluster-bootstrap interval (the Frechet / FID formula of Heusel et al. 2017),
* :func:`near_duplicates` -- rows with a cosine near-duplicate, blockwise.

Why groups. Rows of one group (the copies of one source image and the image itself, the
utterances of one speaker, the segments of one recording) are not independent: a fold split
that puts one group on both sides lets the classifier recognise the group instead of the
domain, and a row bootstrap treats ``k`` near-copies as ``k`` independent observations, so its
interval is too narrow by about ``sqrt(k)``. The functions here take an optional ``groups``
(one label per row; ``None`` = every row its own group).

Every random choice is drawn from a generator seeded by the caller's ``seed`` (never from
global RNG state), so a call is a pure function of its inputs.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Sequence

import numpy as np
import scipy.linalg
import scipy.stats
import torch

from shiftlab.errors import ShiftlabError

__all__ = [
    "CI",
    "vendi_score",
    "frechet_distance",
    "frechet_from_features",
    "entropy_bits",
    "normalized_entropy",
    "effective_number",
    "auc",
    "bootstrap_ci",
    "stratified_folds",
    "group_folds",
    "cluster_weights",
    "cluster_bootstrap",
    "weighted_auc",
    "LogisticModel",
    "fit_logistic",
    "domain_classifier_auc",
    "frechet_difference",
    "near_duplicates",
]


class CI(NamedTuple):
    """A point estimate with a (1 - alpha) percentile-bootstrap interval."""

    estimate: float
    low: float
    high: float


def _as_2d(X, name: str) -> np.ndarray:
    a = np.asarray(X, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ShiftlabError(f"{name}: expected an (n, d) array, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ShiftlabError(f"{name}: has non-finite values")
    return a


# --------------------------------------------------------------------------- Vendi score


def _entropy_exp(eigs: np.ndarray) -> float:
    lam = np.clip(np.asarray(eigs, dtype=np.float64), 0.0, None)
    s = lam.sum()
    if s <= 0:
        return float("nan")
    lam = lam / s
    lam = lam[lam > 1e-15]
    return float(np.exp(-(lam * np.log(lam)).sum()))


def _unit_rows(X: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(X, axis=1, keepdims=True)
    out = np.zeros_like(X)
    ok = norm[:, 0] > 0
    out[ok] = X[ok] / norm[ok]
    if not ok.all():  # all-zero rows: one shared direction (identical to each other)
        out[~ok, 0] = 1.0
    return out


def _sq_dists(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    d = (A * A).sum(1)[:, None] + (B * B).sum(1)[None, :] - 2.0 * A @ B.T
    return np.maximum(d, 0.0)


def _median_bandwidth(X: np.ndarray, rng: np.random.Generator, m: int = 1000) -> float:
    idx = rng.choice(len(X), size=min(m, len(X)), replace=False) if len(X) > m else np.arange(len(X))
    d = _sq_dists(X[idx], X[idx])
    iu = np.triu_indices(len(idx), 1)
    med = float(np.median(d[iu])) if len(iu[0]) else 0.0
    return math.sqrt(med / 2.0) if med > 0 else 1.0


def vendi_score(
    X,
    kernel: str = "cosine",
    *,
    bandwidth: float | None = None,
    method: str = "auto",
    max_exact: int = 2000,
    seed: int = 0,
) -> float:
    """Vendi score of the rows of ``X``: ``exp(-sum(l * log l))`` over the eigenvalues ``l`` of K/n.

    The effective number of distinct items (Friedman & Dieng 2023): 1 for n identical rows,
    n for n mutually orthogonal (cosine) or far-apart (rbf) rows.

    kernel:
        ``"cosine"`` -- ``k(x, y) = <x, y> / (|x| |y|)``. Computed exactly for any n through the
        d x d Gram matrix of the normalised rows (same non-zero eigenvalues as the n x n one).
        ``"rbf"`` -- ``exp(-|x - y|^2 / (2 * bandwidth^2))``, bandwidth by the median heuristic
        (on a seeded subsample) when None.
    method (rbf only): ``"exact"`` (n x n eigenvalues), ``"nystrom"`` (``max_exact`` seeded
        landmarks; the approximate spectrum has rank <= max_exact), ``"subsample"`` (exact on
        ``max_exact`` seeded rows; note the score of a subsample is at most its size), or
        ``"auto"`` = exact up to ``max_exact`` rows, Nystrom above.
    """
    X = _as_2d(X, "vendi_score")
    n = len(X)
    if n == 0:
        return float("nan")
    rng = np.random.default_rng(seed)
    if kernel == "cosine":
        U = _unit_rows(X)
        if U.shape[1] < n:
            return _entropy_exp(np.linalg.eigvalsh(U.T @ U / n))
        return _entropy_exp(np.linalg.eigvalsh(U @ U.T / n))
    if kernel != "rbf":
        raise ShiftlabError(f"vendi_score: kernel must be 'cosine' or 'rbf', got {kernel!r}")
    if method not in ("auto", "exact", "nystrom", "subsample"):
        raise ShiftlabError(f"vendi_score: method must be auto, exact, nystrom or subsample, got {method!r}")
    bw = float(bandwidth) if bandwidth is not None else _median_bandwidth(X, rng)
    if bw <= 0:
        raise ShiftlabError(f"vendi_score: bandwidth must be > 0, got {bw}")
    if method == "auto":
        method = "exact" if n <= max_exact else "nystrom"
    if method == "subsample" and n > max_exact:
        X = X[np.sort(rng.choice(n, size=max_exact, replace=False))]
        method, n = "exact", max_exact
    if method == "exact" or n <= max_exact:
        K = np.exp(-_sq_dists(X, X) / (2.0 * bw * bw))
        return _entropy_exp(np.linalg.eigvalsh(K / n))
    # Nystrom: K ~ C W^+ C^T, non-zero eigenvalues = those of W^{-1/2} C^T C W^{-1/2}
    land = X[np.sort(rng.choice(n, size=max_exact, replace=False))]
    C = np.exp(-_sq_dists(X, land) / (2.0 * bw * bw))
    W = np.exp(-_sq_dists(land, land) / (2.0 * bw * bw))
    w, V = np.linalg.eigh(W)
    keep = w > w.max() * 1e-10
    Wi = (V[:, keep] / np.sqrt(w[keep])) @ V[:, keep].T
    M = Wi @ (C.T @ C) @ Wi / n
    return _entropy_exp(np.linalg.eigvalsh((M + M.T) / 2.0))


# --------------------------------------------------------------------------- Frechet


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))``: Frechet distance of two Gaussians.

    The FID formula. ``scipy.linalg.sqrtm`` may return tiny imaginary parts from rounding: they
    are dropped; a singular product (non-finite root) is retried with ``eps`` added to both
    diagonals. The result is clamped at 0.
    """
    mu1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    s1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    s2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ShiftlabError(
            f"frechet_distance: shapes do not match (mu {mu1.shape} / {mu2.shape}, sigma {s1.shape} / {s2.shape})"
        )
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    if isinstance(covmean, tuple):  # older scipy: (root, error estimate)
        covmean = covmean[0]
    if not np.isfinite(covmean).all():
        off = np.eye(len(s1)) * eps
        covmean = scipy.linalg.sqrtm((s1 + off) @ (s2 + off))
        if isinstance(covmean, tuple):
            covmean = covmean[0]
    covmean = np.real(covmean)
    d = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))
    return max(d, 0.0)


def frechet_from_features(A, B) -> float:
    """Frechet distance between Gaussians fitted to the rows of ``A`` and of ``B`` (n >= 2 each)."""
    A = _as_2d(A, "frechet_from_features(A)")
    B = _as_2d(B, "frechet_from_features(B)")
    if A.shape[1] != B.shape[1]:
        raise ShiftlabError(f"frechet_from_features: {A.shape[1]} vs {B.shape[1]} features")
    if len(A) < 2 or len(B) < 2:
        raise ShiftlabError(f"frechet_from_features: need >= 2 rows each, got {len(A)} and {len(B)}")
    return frechet_distance(
        A.mean(0), np.atleast_2d(np.cov(A, rowvar=False)), B.mean(0), np.atleast_2d(np.cov(B, rowvar=False))
    )


# --------------------------------------------------------------------------- entropy


def entropy_bits(values, bins: int = 10, range: tuple[float, float] | None = None) -> float:  # noqa: A002
    """Shannon entropy (bits) of the histogram of ``values`` (``bins`` equal bins over ``range``).

    Values outside ``range`` are ignored (as ``numpy.histogram`` does). NaN when no value falls
    in range. 0 when every value is in one bin; ``log2(bins)`` for a flat histogram.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return float("nan")
    counts, _ = np.histogram(v, bins=int(bins), range=range)
    total = counts.sum()
    if total == 0:
        return float("nan")
    p = counts[counts > 0] / total
    return float(max(0.0, -(p * np.log2(p)).sum()))


def normalized_entropy(values, bins: int = 10, range: tuple[float, float] | None = None) -> float:  # noqa: A002
    """:func:`entropy_bits` divided by ``log2(bins)``: 0 = one bin, 1 = flat over ``range``."""
    if int(bins) < 2:
        raise ShiftlabError(f"normalized_entropy: bins must be >= 2, got {bins}")
    return entropy_bits(values, bins, range) / math.log2(int(bins))


def effective_number(counts) -> float:
    """``exp(Shannon entropy)`` of a count vector: how many equally used items it is worth."""
    c = np.asarray(counts, dtype=np.float64).ravel()
    c = c[c > 0]
    if len(c) == 0:
        return float("nan")
    p = c / c.sum()
    return float(np.exp(-(p * np.log(p)).sum()))


# --------------------------------------------------------------------------- AUC, bootstrap


def auc(scores, labels) -> float:
    """Area under the ROC curve = P(score of a positive > score of a negative) + 0.5 P(tie).

    Mann-Whitney U from average ranks (ties handled). ``labels``: 1/True = positive. NaN when
    one class is empty.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel().astype(bool)
    if len(s) != len(y):
        raise ShiftlabError(f"auc: {len(s)} scores but {len(y)} labels")
    n1 = int(y.sum())
    n0 = len(y) - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = scipy.stats.rankdata(s)
    u = r[y].sum() - n1 * (n1 + 1) / 2.0
    return float(u / (n1 * n0))


def bootstrap_ci(
    fn: Callable[..., float],
    *arrays,
    n: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    labels=None,
) -> CI:
    """Percentile bootstrap interval of ``fn(*arrays)`` (rows of all arrays resampled together).

    ``labels`` (one per row): resample within each label value, keeping its count (stratified
    bootstrap; use it for AUCs and for comparing two groups). Replicates where ``fn`` is NaN
    are dropped. Returns ``CI(estimate, low, high)``; ``estimate`` is ``fn`` on the data.
    """
    if not arrays:
        raise ShiftlabError("bootstrap_ci: no arrays given")
    arrs = [np.asarray(a) for a in arrays]
    m = len(arrs[0])
    if any(len(a) != m for a in arrs):
        raise ShiftlabError(f"bootstrap_ci: arrays have different lengths {[len(a) for a in arrs]}")
    if not 0 < alpha < 1:
        raise ShiftlabError(f"bootstrap_ci: alpha must be in (0, 1), got {alpha}")
    est = float(fn(*arrs))
    if m == 0 or n <= 0:
        return CI(est, float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    if labels is None:
        strata = [np.arange(m)]
    else:
        lab = np.asarray(labels).ravel()
        if len(lab) != m:
            raise ShiftlabError(f"bootstrap_ci: {len(lab)} labels for {m} rows")
        strata = [np.flatnonzero(lab == v) for v in np.unique(lab)]
    reps = np.empty(int(n))
    for b in range(int(n)):
        idx = np.concatenate([s[rng.integers(0, len(s), len(s))] for s in strata])
        reps[b] = fn(*(a[idx] for a in arrs))
    reps = reps[np.isfinite(reps)]
    if len(reps) == 0:
        return CI(est, float("nan"), float("nan"))
    lo, hi = np.percentile(reps, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return CI(est, float(lo), float(hi))


def stratified_folds(labels, folds: int, seed: int = 0) -> np.ndarray:
    """Fold index (0..folds-1) per row, each class dealt round-robin after a seeded shuffle."""
    y = np.asarray(labels).ravel()
    out = np.empty(len(y), dtype=np.int64)
    rng = np.random.default_rng(seed)
    start = 0
    for v in np.unique(y):
        idx = np.flatnonzero(y == v)
        idx = idx[rng.permutation(len(idx))]
        out[idx] = (np.arange(len(idx)) + start) % folds
        start = (start + len(idx)) % folds
    return out


def _group_index(groups, m: int, where: str) -> np.ndarray:
    """Integer group index per row (0..G-1, in sorted-label order); ``None``: every row its own group."""
    if groups is None:
        return np.arange(m, dtype=np.int64)
    g = np.asarray(groups).ravel()
    if len(g) != m:
        raise ShiftlabError(f"{where}: {len(g)} group labels for {m} rows")
    if g.dtype == object:
        g = g.astype(str)
    return np.unique(g, return_inverse=True)[1].astype(np.int64).ravel()


def group_folds(labels, groups, folds: int, seed: int = 0) -> np.ndarray:
    """Fold index (0..folds-1) per row with every group wholly in one fold.

    Groups are dealt per class (a group whose rows all have one label belongs to that
    class; a group with several labels to a stratum of its own), each stratum in a seeded
    order, largest group first, to the fold with the fewest rows of that stratum so far
    (ties: lowest fold), so the folds stay balanced in rows and class mix. With one row per
    group this is a stratified k-fold split. ``groups`` None: every row its own group.
    """
    y = np.asarray(labels).ravel()
    folds = int(folds)
    if folds < 1:
        raise ShiftlabError(f"group_folds: folds must be >= 1, got {folds}")
    gi = _group_index(groups, len(y), "group_folds")
    if len(y) == 0:
        return np.zeros(0, dtype=np.int64)
    _, yi = np.unique(y, return_inverse=True)
    yi = yi.ravel()
    G, K = int(gi.max()) + 1, int(yi.max()) + 1
    cnt = np.zeros((G, K), dtype=np.int64)
    np.add.at(cnt, (gi, yi), 1)
    pure = (cnt > 0).sum(1) == 1
    stratum = np.where(pure, cnt.argmax(1), K)
    size = cnt.sum(1)
    rng = np.random.default_rng(seed)
    fold_of = np.empty(G, dtype=np.int64)
    for s in range(K + 1):
        gs = np.flatnonzero(stratum == s)
        if len(gs) == 0:
            continue
        gs = gs[rng.permutation(len(gs))]
        gs = gs[np.argsort(-size[gs], kind="stable")]
        load = np.zeros(folds, dtype=np.int64)
        for g in gs:
            f = int(np.argmin(load))
            fold_of[g] = f
            load[f] += size[g]
    return fold_of[gi]


def cluster_weights(groups, n: int, seed: int = 0, *, strata=None, block: int = 256):
    """Bootstrap replicates as row weights, ``block`` replicates at a time (a generator).

    Each replicate draws, within every stratum, as many groups as the stratum has, uniformly
    with replacement (the cluster bootstrap: a drawn group brings all its rows); a row's
    weight is how many times its group was drawn. Yields float64 arrays ``(b, m)`` for ``m``
    rows, ``n`` rows of weights in all. ``groups`` None: every row its own group (the
    ordinary row bootstrap). ``strata`` (one label per row, e.g. the class of an AUC): a
    group is resampled within its stratum, so each stratum keeps its number of groups; a
    group whose rows span several strata forms a stratum of such groups. Vectorised: the
    cost of a block is O(b * m), whatever the statistic.
    """
    if groups is None and strata is None:
        raise ShiftlabError("cluster_weights: give groups or strata (the number of rows)")
    m = len(groups) if groups is not None else len(strata)
    gi = _group_index(groups, m, "cluster_weights")
    if m == 0 or n <= 0:
        return
    G = int(gi.max()) + 1
    if strata is None:
        st_of = np.zeros(G, dtype=np.int64)
    else:
        st = np.asarray(strata).ravel()
        if len(st) != m:
            raise ShiftlabError(f"cluster_weights: {len(st)} strata labels for {m} rows")
        _, si = np.unique(st.astype(str) if st.dtype == object else st, return_inverse=True)
        si = si.ravel()
        lo = np.full(G, np.iinfo(np.int64).max)
        hi = np.full(G, -1)
        np.minimum.at(lo, gi, si)
        np.maximum.at(hi, gi, si)
        st_of = np.where(lo == hi, lo, int(si.max()) + 1)
    members = [np.flatnonzero(st_of == s) for s in np.unique(st_of)]
    rng = np.random.default_rng(seed)
    done = 0
    while done < n:
        b = min(int(block), n - done)
        C = np.zeros((b, G))
        for gs in members:
            k = len(gs)
            draw = rng.integers(0, k, size=(b, k)) + (np.arange(b) * k)[:, None]
            C[:, gs] = np.bincount(draw.ravel(), minlength=b * k).reshape(b, k)
        yield C[:, gi]
        done += b


def cluster_bootstrap(stat: Callable[[np.ndarray], np.ndarray], groups, n: int = 1000, seed: int = 0, *,
                      strata=None, alpha: float = 0.05, block: int = 256) -> tuple[float, float, np.ndarray]:
    """Percentile interval of a weighted statistic under the cluster bootstrap.

    ``stat(W)`` maps a block of row weights ``(b, m)`` (:func:`cluster_weights`) to the
    ``b`` replicate values. Replicates that are NaN are dropped. Returns ``(low, high,
    replicates)``; ``(nan, nan, empty)`` when no replicate is finite or ``n`` is 0.
    """
    if not 0 < alpha < 1:
        raise ShiftlabError(f"cluster_bootstrap: alpha must be in (0, 1), got {alpha}")
    reps = [np.asarray(stat(W), dtype=np.float64).ravel() for W in cluster_weights(groups, n, seed, strata=strata,
                                                                                   block=block)]
    r = np.concatenate(reps) if reps else np.zeros(0)
    r = r[np.isfinite(r)]
    if len(r) == 0:
        return float("nan"), float("nan"), r
    lo, hi = np.percentile(r, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi), r


def weighted_auc(scores, labels, W) -> np.ndarray:
    """:func:`auc` of each row of weights ``W`` (``(b, m)`` or ``(m,)``): rows counted ``W`` times.

    ``P(score of a positive > score of a negative) + 0.5 P(tie)`` with every row weighted,
    from one sort of the scores (ties averaged exactly as :func:`auc` does); all-ones
    weights give :func:`auc`. NaN for a replicate with no positive or no negative weight.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel().astype(bool)
    W = np.asarray(W, dtype=np.float64)
    one = W.ndim == 1
    W = np.atleast_2d(W)
    if len(s) != len(y) or W.shape[1] != len(s):
        raise ShiftlabError(f"weighted_auc: {len(s)} scores, {len(y)} labels, weights of shape {W.shape}")
    order = np.argsort(s, kind="stable")
    ss, ys = s[order], y[order]
    new = np.r_[True, ss[1:] != ss[:-1]] if len(ss) else np.zeros(0, dtype=bool)
    starts = np.flatnonzero(new)
    ends = np.r_[starts[1:], len(ss)]
    Ws = W[:, order]
    zero = np.zeros((len(W), 1))
    cneg = np.concatenate([zero, np.cumsum(Ws * ~ys, axis=1)], axis=1)
    cpos = np.concatenate([zero, np.cumsum(Ws * ys, axis=1)], axis=1)
    below = cneg[:, starts]
    tie = cneg[:, ends] - below
    pos = cpos[:, ends] - cpos[:, starts]
    num = (pos * (below + 0.5 * tie)).sum(1)
    den = cpos[:, -1] * cneg[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    return float(out[0]) if one else out


# --------------------------------------------------------------------------- logistic regression


class LogisticModel:
    """A fitted L2 logistic (2 classes) or softmax regression on standardised features."""

    def __init__(self, mean: np.ndarray, scale: np.ndarray, W: np.ndarray, b: np.ndarray, classes: np.ndarray):
        self.mean, self.scale, self.W, self.b, self.classes = mean, scale, W, b, classes

    def logits(self, X) -> np.ndarray:
        Z = (_as_2d(X, "LogisticModel") - self.mean) / self.scale
        return Z @ self.W + self.b

    def predict_proba(self, X) -> np.ndarray:
        z = self.logits(X)
        z = z - z.max(1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(1, keepdims=True)

    def predict(self, X) -> np.ndarray:
        return self.classes[np.argmax(self.logits(X), axis=1)]

    def decision(self, X) -> np.ndarray:
        """Score of the last class vs the rest (binary: the log-odds of classes[1])."""
        z = self.logits(X)
        return z[:, -1] - z[:, 0] if z.shape[1] == 2 else z[:, -1]


def fit_logistic(X, y, l2: float = 1e-3, max_iter: int = 200) -> LogisticModel:
    """Softmax regression ``min mean CE + l2/2 |W|^2`` on features standardised on ``X``.

    Full-batch L-BFGS in float64 on the CPU: deterministic, no seed needed (zero init).
    """
    X = _as_2d(X, "fit_logistic")
    y = np.asarray(y).ravel()
    if len(y) != len(X):
        raise ShiftlabError(f"fit_logistic: {len(X)} rows but {len(y)} labels")
    classes, yi = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise ShiftlabError(f"fit_logistic: need at least 2 classes, got {len(classes)}")
    mean = X.mean(0)
    scale = X.std(0)
    scale[scale < 1e-12] = 1.0
    Z = torch.from_numpy((X - mean) / scale)
    t = torch.from_numpy(yi.astype(np.int64))
    k = len(classes)
    W = torch.zeros((X.shape[1], k), dtype=torch.float64, requires_grad=True)
    b = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-7,
                            tolerance_change=1e-10, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(Z @ W + b, t) + 0.5 * l2 * (W * W).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return LogisticModel(mean, scale, W.detach().numpy().copy(), b.detach().numpy().copy(), classes)


def domain_classifier_auc(
    A,
    B,
    folds: int = 5,
    seed: int = 0,
    *,
    groups_a=None,
    groups_b=None,
    l2: float = 1e-3,
    n_boot: int = 1000,
    alpha: float = 0.05,
) -> dict:
    """How well a learner tells the rows of ``A`` from those of ``B``.

    k-fold L2 logistic regression on features standardised on each training fold; the
    out-of-fold scores give one AUC (A = positive) with a percentile-bootstrap ``1 - alpha``
    interval. ~0.5: indistinguishable; ~1: separable.

    ``groups_a`` / ``groups_b`` (one label per row of ``A`` / ``B``; ``None`` = every row
    its own group): the folds keep every group whole (:func:`group_folds`; a label used on
    both sides is one group), so the classifier is always scored on groups it never saw, and
    the interval resamples groups within each side (:func:`cluster_bootstrap` on the
    out-of-fold scores, :func:`weighted_auc`; the classifier is not refitted per replicate).
    The number of folds is at most the number of groups of the smaller side; with fewer
    than 2 groups on a side no grouped estimate exists and ``auc`` is NaN with a ``reason``.

    Returns ``{"auc", "ci_low", "ci_high", "n_a", "n_b", "groups_a", "groups_b", "folds",
    "bootstrap"}`` (``bootstrap``: ``"groups"`` or ``"rows"``), plus ``reason`` when NaN.
    """
    A = _as_2d(A, "domain_classifier_auc(A)")
    B = _as_2d(B, "domain_classifier_auc(B)")
    if A.shape[1] != B.shape[1]:
        raise ShiftlabError(f"domain_classifier_auc: {A.shape[1]} vs {B.shape[1]} features")
    folds = int(folds)
    if folds < 2:
        raise ShiftlabError(f"domain_classifier_auc: folds must be >= 2, got {folds}")
    grouped = groups_a is not None or groups_b is not None
    if not grouped and min(len(A), len(B)) < folds:
        raise ShiftlabError(
            f"domain_classifier_auc: need >= {folds} rows per side for {folds} folds, got {len(A)} and {len(B)}"
        )

    def labels(g, m, side):
        if g is None:
            return np.array([f"{side}:{i}" for i in range(m)], dtype=object)
        g = np.asarray(g).ravel()
        if len(g) != m:
            raise ShiftlabError(f"domain_classifier_auc: {len(g)} groups_{side.lower()} for {m} rows")
        return g.astype(str).astype(object)

    ga, gb = labels(groups_a, len(A), "A"), labels(groups_b, len(B), "B")
    n_ga, n_gb = len(np.unique(ga)), len(np.unique(gb))
    out = {"n_a": len(A), "n_b": len(B), "groups_a": int(n_ga), "groups_b": int(n_gb),
           "bootstrap": "groups" if grouped else "rows"}
    k = min(folds, n_ga, n_gb)
    if k < 2:
        return {"auc": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), **out, "folds": int(k),
                "reason": f"a grouped classifier needs >= 2 groups per side, got {n_ga} and {n_gb}"}
    X = np.concatenate([A, B])
    y = np.concatenate([np.ones(len(A), np.int64), np.zeros(len(B), np.int64)])
    g = np.concatenate([ga, gb])
    fold = group_folds(y, g, k, seed)
    scores = np.empty(len(X))
    for f in range(k):
        te = fold == f
        if len(np.unique(y[~te])) < 2:  # a side with one huge group: its fold holds all of it
            return {"auc": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), **out, "folds": int(k),
                    "reason": f"fold {f} leaves one side without training rows"}
        model = fit_logistic(X[~te], y[~te], l2=l2)
        scores[te] = model.decision(X[te])
    est = auc(scores, y)
    lo, hi = float("nan"), float("nan")
    if n_boot > 0:
        lo, hi, _ = cluster_bootstrap(lambda W: weighted_auc(scores, y, W), g, int(n_boot), seed, strata=y,
                                      alpha=alpha)
    return {"auc": est, "ci_low": lo, "ci_high": hi, **out, "folds": int(k)}


def _weighted_moments(X: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (denominator ``sum(w) - 1``, as ``numpy.cov`` with ``fweights``) of rows weighted ``w``."""
    tot = w.sum()
    mu = (w @ X) / tot
    Z = X - mu
    S = (Z.T * w) @ Z / max(tot - 1.0, 1.0)
    return mu, (S + S.T) / 2.0


def _frechet_chol(mu1, S1, mu2, L2, tr2) -> float:
    """Frechet distance with ``L2`` a Cholesky factor of S2 (S2 = L2 L2^T, trace ``tr2``).

    tr (S1 S2)^(1/2) = sum sqrt(eig(L2^T S1 L2)): ``L2^T S1 L2`` is similar to ``S1 S2`` and
    symmetric, so only eigenvalues of a symmetric matrix are needed (no matrix root, no
    eigenvectors: the cheap part of LAPACK for a replicate).
    """
    M = L2.T @ S1 @ L2
    ev = np.linalg.eigvalsh((M + M.T) / 2.0)
    d = mu1 - mu2
    return float(d @ d + np.trace(S1) + tr2 - 2.0 * np.sqrt(np.clip(ev, 0.0, None)).sum())


def _cholesky_psd(S: np.ndarray) -> np.ndarray:
    """Cholesky factor of a PSD matrix, with a ridge of 1e-9 x its mean variance when it is singular."""
    try:
        return np.linalg.cholesky(S)
    except np.linalg.LinAlgError:
        eps = 1e-9 * max(float(np.trace(S)) / len(S), 1e-300)
        return np.linalg.cholesky(S + eps * np.eye(len(S)))


def frechet_difference(
    X,
    Y,
    T,
    *,
    groups=None,
    groups_t=None,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict:
    """``FD(X, T) - FD(Y, T)`` (Frechet distances, :func:`frechet_from_features`) with an interval.

    ``X`` and ``Y`` are paired row by row (e.g. a synthetic row and its sharp parent) and share
    ``groups``; ``T`` (the reference, e.g. target rows) has its own ``groups_t``. Each
    bootstrap replicate resamples the groups of ``X``/``Y`` (the same draw for both: a paired
    comparison) and, independently, those of ``T`` (cluster bootstrap, Efron & Tibshirani
    1993), and recomputes both distances from weighted means and covariances (the trace of
    the matrix root from symmetric eigenvalues). The Frechet distance of Heusel
    et al. 2017 is biased upward at finite n (and a bootstrap replicate, with repeated rows,
    more so); in the difference the bias of the shared reference largely cancels, so the
    interval of the difference is the quantity to read, not those of the two distances.
    A replicate's trace term uses a Cholesky factor of the reference covariance
    (:func:`_frechet_chol`; a ridge of 1e-9 of the mean variance when it is singular).

    Returns ``{"frechet_x", "frechet_y", "difference", "ci_low", "ci_high", "n_boot",
    "groups", "groups_t"}``; a negative difference with ``ci_high < 0`` means ``X`` is closer
    to ``T`` than ``Y`` beyond sampling noise.
    """
    X = _as_2d(X, "frechet_difference(X)")
    Y = _as_2d(Y, "frechet_difference(Y)")
    T = _as_2d(T, "frechet_difference(T)")
    if X.shape != Y.shape:
        raise ShiftlabError(f"frechet_difference: X {X.shape} and Y {Y.shape} must be paired row by row")
    if X.shape[1] != T.shape[1]:
        raise ShiftlabError(f"frechet_difference: {X.shape[1]} vs {T.shape[1]} features")
    n, m = len(X), len(T)
    gx = _group_index(groups, n, "frechet_difference(groups)")
    gt = _group_index(groups_t, m, "frechet_difference(groups_t)")
    fx, fy = frechet_from_features(X, T), frechet_from_features(Y, T)
    out = {"frechet_x": fx, "frechet_y": fy, "difference": fx - fy, "ci_low": float("nan"),
           "ci_high": float("nan"), "n_boot": int(n_boot), "groups": int(gx.max()) + 1 if n else 0,
           "groups_t": int(gt.max()) + 1 if m else 0}
    if n_boot <= 0:
        return out
    g = np.concatenate([gx, gt + (int(gx.max()) + 1)])
    side = np.r_[np.zeros(n, np.int64), np.ones(m, np.int64)]
    # Columns constant in all three sets (dead units) add nothing to either distance: dropped.
    # Weighted moments of a whole block of replicates come from two matrix products, W @ rows
    # and W @ (upper triangles of the rows' outer products), centred on T's mean for accuracy.
    live = np.ptp(np.concatenate([X, Y, T]), axis=0) > 0
    c = T.mean(0)[live]
    d = int(live.sum())
    iu = np.triu_indices(d)

    def prep(Z):
        Z = Z[:, live] - c
        return Z, (Z[:, :, None] * Z[:, None, :])[:, iu[0], iu[1]]

    (Xc, XX), (Yc, YY), (Tc, TT) = prep(X), prep(Y), prep(T)

    def moments(W, Z, ZZ):
        tot = W.sum(1)
        mu = (W @ Z) / tot[:, None]
        R = (W @ ZZ) / tot[:, None]
        S = np.zeros((len(W), d, d))
        S[:, iu[0], iu[1]] = R
        S = S + np.triu(S, 1).transpose(0, 2, 1)
        S = (S - mu[:, :, None] * mu[:, None, :]) * (tot / np.maximum(tot - 1.0, 1.0))[:, None, None]
        return mu, S

    def stat(W):
        wx, wt = W[:, :n], W[:, n:]
        mt, St = moments(wt, Tc, TT)
        mx, Sx = moments(wx, Xc, XX)
        my, Sy = moments(wx, Yc, YY)
        r = np.empty(len(W))
        for b in range(len(W)):
            L, tr = _cholesky_psd(St[b]), float(np.trace(St[b]))
            r[b] = _frechet_chol(mx[b], Sx[b], mt[b], L, tr) - _frechet_chol(my[b], Sy[b], mt[b], L, tr)
        return r

    lo, hi, _ = cluster_bootstrap(stat, g, int(n_boot), seed, strata=side, alpha=alpha, block=128)
    out["ci_low"], out["ci_high"] = lo, hi
    return out


# --------------------------------------------------------------------------- near duplicates


def near_duplicates(
    X,
    threshold: float = 0.95,
    *,
    center: bool = False,
    max_pairs: int = 20,
    block_elems: int = 1 << 24,
) -> dict:
    """Rows of ``X`` whose cosine similarity to some *other* row is >= ``threshold``.

    Rows are L2-normalised (``center=True`` subtracts the column means first, useful for
    non-negative features); similarities are computed a block of rows at a time
    (``block_elems`` similarities per block, 64 MB of float32), so 60,000 x 64 fits easily.
    Returns ``{"fraction", "rows", "n", "pairs", "nearest"}``: the fraction and number of rows
    with a near-duplicate, up to ``max_pairs`` example pairs ``(i, j, similarity)`` (i < j,
    most similar first), and ``nearest`` (float32 (n,), each row's highest similarity to
    another row; -1 for a single row).
    """
    X = _as_2d(X, "near_duplicates").astype(np.float32)
    n = len(X)
    if n == 0:
        return {"fraction": float("nan"), "rows": 0, "n": 0, "pairs": [], "nearest": np.zeros(0, np.float32)}
    if center:
        X = X - X.mean(0, keepdims=True)
    U = _unit_rows(X.astype(np.float64)).astype(np.float32)
    nearest = np.full(n, -1.0, dtype=np.float32)
    pairs: list[tuple[int, int, float]] = []
    step = max(1, int(block_elems) // max(n, 1))
    for s in range(0, n, step):
        e = min(n, s + step)
        S = U[s:e] @ U.T
        S[np.arange(e - s), np.arange(s, e)] = -np.inf  # not itself
        nearest[s:e] = S.max(1)
        ii, jj = np.nonzero(S >= threshold)
        gi = ii + s
        keep = gi < jj
        if keep.any() and max_pairs > 0:
            gi, jj = gi[keep], jj[keep]
            sims = S[ii[keep], jj]
            top = np.argsort(-sims, kind="stable")[:max_pairs]
            pairs += [(int(gi[t]), int(jj[t]), float(sims[t])) for t in top]
            pairs.sort(key=lambda p: (-p[2], p[0], p[1]))
            del pairs[max_pairs:]
    nearest = np.maximum(nearest, -1.0)  # a single row has no other row
    has = nearest >= threshold
    return {
        "fraction": float(has.mean()) if n > 1 else 0.0,
        "rows": int(has.sum()),
        "n": n,
        "pairs": pairs,
        "nearest": nearest,
    }
