"""Small statistics for diversity, realism and mismatch checks (numpy / scipy / torch).

Generic: used by the image checks (:mod:`shiftlab.synth.diversity`) and meant for the
audio track too. Nothing here depends on scikit-learn.

* :func:`vendi_score` -- effective number of distinct items (Friedman & Dieng 2023),
* :func:`frechet_distance`, :func:`frechet_from_features` -- the FID formula on any features,
* :func:`entropy_bits`, :func:`normalized_entropy` -- coverage of a parameter's range,
* :func:`auc` (Mann-Whitney, ties averaged), :func:`bootstrap_ci` (percentile, optionally
  stratified),
* :func:`fit_logistic` -- L2 logistic / softmax regression on standardised features (torch
  L-BFGS, float64, deterministic),
* :func:`domain_classifier_auc` -- can a learner tell A from B? out-of-fold AUC + 95% CI,
* :func:`near_duplicates` -- rows with a cosine near-duplicate, blockwise.

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
    "LogisticModel",
    "fit_logistic",
    "domain_classifier_auc",
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
    l2: float = 1e-3,
    n_boot: int = 1000,
    alpha: float = 0.05,
) -> dict:
    """How well a learner tells the rows of ``A`` from those of ``B``.

    k-fold (stratified, seeded) L2 logistic regression on features standardised on each
    training fold; the out-of-fold scores give one AUC (A = positive) with a stratified
    percentile-bootstrap ``1 - alpha`` interval. ~0.5: indistinguishable; ~1: separable.
    Returns ``{"auc", "ci_low", "ci_high", "n_a", "n_b", "folds"}``.
    """
    A = _as_2d(A, "domain_classifier_auc(A)")
    B = _as_2d(B, "domain_classifier_auc(B)")
    if A.shape[1] != B.shape[1]:
        raise ShiftlabError(f"domain_classifier_auc: {A.shape[1]} vs {B.shape[1]} features")
    folds = int(folds)
    if folds < 2:
        raise ShiftlabError(f"domain_classifier_auc: folds must be >= 2, got {folds}")
    if min(len(A), len(B)) < folds:
        raise ShiftlabError(
            f"domain_classifier_auc: need >= {folds} rows per side for {folds} folds, got {len(A)} and {len(B)}"
        )
    X = np.concatenate([A, B])
    y = np.concatenate([np.ones(len(A), np.int64), np.zeros(len(B), np.int64)])
    fold = stratified_folds(y, folds, seed)
    scores = np.empty(len(X))
    for f in range(folds):
        te = fold == f
        model = fit_logistic(X[~te], y[~te], l2=l2)
        scores[te] = model.decision(X[te])
    ci = bootstrap_ci(auc, scores, y, n=n_boot, seed=seed, alpha=alpha, labels=y)
    return {"auc": ci.estimate, "ci_low": ci.low, "ci_high": ci.high, "n_a": len(A), "n_b": len(B), "folds": folds}


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
