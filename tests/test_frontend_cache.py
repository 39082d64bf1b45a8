"""The audio front end memoises each row's log-mel (train/frontend.py): same features, computed once."""

from __future__ import annotations

import torch

from shiftlab.train import frontend as fe_mod
from shiftlab.train.frontend import Frontend

CFG = {"n_mels": 16, "n_fft": 256, "hop_length": 128}


def _fe(**over):
    return Frontend("audio", dict(CFG, **over), 0, sampling_rate=8000, input_shape=(4000,))


def test_cached_features_equal_fresh_ones_whatever_the_batch(monkeypatch):
    monkeypatch.setattr(fe_mod, "_FEATURES", {})
    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, 4000, generator=g) * 0.1
    fresh = _fe()._logmel(x)
    fe = _fe()
    calls = []
    real = Frontend._logmel
    monkeypatch.setattr(Frontend, "_logmel", lambda self, b: calls.append(len(b)) or real(self, b))
    a = fe._features(x[:5])
    b = fe._features(x[[7, 2, 9, 0]])  # two of these are new: only they are computed
    assert calls == [5, 2]
    assert torch.equal(a, fresh[:5]) and torch.equal(b, fresh[[7, 2, 9, 0]])
    # a new front end with the same feature settings (predict's, rebuilt from a checkpoint) shares the memo
    assert torch.equal(_fe()._features(x[:5]), fresh[:5]) and calls == [5, 2]
    # other settings: another memo
    assert _fe(n_mels=8)._features(x[:3]).shape[-2] == 8 and calls == [5, 2, 3]


def test_the_memo_is_bounded(monkeypatch):
    monkeypatch.setattr(fe_mod, "_FEATURES", {})
    monkeypatch.setattr(fe_mod, "_CACHE_ROWS", 4)
    x = torch.randn(10, 4000, generator=torch.Generator().manual_seed(1)) * 0.1
    fe = _fe()
    full = fe._logmel(x)
    assert torch.equal(fe._features(x[:3]), full[:3])
    assert torch.equal(fe._features(x[2:8]), full[2:8])  # over the bound: computed, not stored
    assert sum(len(v) for v in fe_mod._FEATURES.values()) == 3
