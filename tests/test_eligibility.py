"""shiftlab.eligibility: the one rule for which rows may become synthetic (blur and mix use it)."""

import datasets as hfds
import numpy as np
import pytest

from shiftlab import eligibility
from shiftlab.errors import ShiftlabError
from shiftlab.mixing import mix
from shiftlab.synth import blur


def _ds(rows, modality="image"):
    cols = {k: [r[i] for r in rows] for i, k in enumerate(("id", "label", "domain", "origin", "group"))}
    n = len(rows)
    if modality == "image":
        cols["image"] = [[[[0]]]] * n
    else:
        cols["audio"] = [[0.0, 0.1]] * n
        cols["sampling_rate"] = [16000] * n
    return hfds.Dataset.from_dict(cols)


def _splits(modality="image"):
    train = _ds([("s/3", 0, "source", "real", "g3"), ("t/1", 1, "target", "real", "t1"),
                 ("s/1", 1, "source", "real", "g1"), ("x/9", 0, "source", "synthetic", "g1")], modality)
    train_dev = _ds([("s/2", 2, "source", "real", "g2"), ("t/2", 0, "target", "real", "t2")], modality)
    return hfds.DatasetDict(train=train, train_dev=train_dev)


@pytest.mark.parametrize("modality", ["image", "audio"])
def test_parents_are_source_real_rows_of_train_and_train_dev_in_id_order(modality):
    el = eligibility.eligible_parents(_splits(modality), modality,
                                      ("sampling_rate",) if modality == "audio" else ())
    assert list(el["id"]) == ["s/1", "s/2", "s/3"]
    assert list(el["split"]) == ["train", "train_dev", "train"]
    assert list(el["row"]) == [2, 0, 0]
    assert el["label"].dtype == np.int64 and list(el["label"]) == [1, 2, 0]
    assert list(el["group"]) == ["g1", "g2", "g3"]
    if modality == "audio":
        assert el["sampling_rate"].dtype == np.int64 and list(el["sampling_rate"]) == [16000] * 3


def test_blur_and_mix_share_the_rule():
    for stage, modality in ((blur, "image"), (mix, "audio")):
        el = stage.eligible_parents(_splits(modality))
        assert list(el["id"]) == ["s/1", "s/2", "s/3"]


def test_wrong_modality_and_missing_split_are_errors():
    with pytest.raises(ShiftlabError, match="splits: train is not an audio dataset \\(synth mix needs an audio column\\)"):
        mix.eligible_parents(_splits("image"))
    with pytest.raises(ShiftlabError, match="splits: train is not an image dataset \\(synth blur needs an image"):
        blur.eligible_parents(_splits("audio"))
    with pytest.raises(ShiftlabError, match="splits: missing split train_dev \\(have: train\\)"):
        blur.eligible_parents(hfds.DatasetDict(train=_splits()["train"]))


def test_all_rows_keeps_row_order_and_every_row():
    d = _splits("audio")["train"]
    el = mix.all_rows(d, "noisy")
    assert list(el["id"]) == ["s/3", "t/1", "s/1", "x/9"]
    assert list(el["row"]) == [0, 1, 2, 3] and set(el["split"]) == {"noisy"}
    with pytest.raises(ShiftlabError, match="noisy: not an image dataset"):
        blur.all_rows(d, "noisy")


def test_empty_split_has_typed_columns():
    el = eligibility.columns(_splits("audio")["train"].select([]), ("id", "label", "sampling_rate"))
    assert el["label"].dtype == np.int64 and el["sampling_rate"].dtype == np.int64 and el["id"].dtype == object


def test_choose_is_seeded_nested_and_rounds_half_up():
    n = 101
    picks = {f: eligibility.choose(n, f, 7, "blur") for f in (0.1, 0.5, 0.9)}
    assert [len(p) for p in picks.values()] == [10, 51, 91]  # floor(f * n + 0.5)
    assert set(picks[0.1]) <= set(picks[0.5]) <= set(picks[0.9])  # raising fraction keeps earlier choices
    assert np.array_equal(eligibility.choose(n, 0.5, 7, "blur"), picks[0.5])
    assert not np.array_equal(eligibility.choose(n, 0.5, 7, "mix"), picks[0.5])  # stages draw independently
    assert np.array_equal(eligibility.choose(n, 1.0, 7, "blur"), np.arange(n))
    assert len(eligibility.choose(n, 0.0, 7, "blur")) == 0
    assert all(np.all(np.diff(p) > 0) for p in picks.values())
