"""Noise adapters (mixing/adapters.py) against their host libraries' conventions: an nn.Module for
(batch, time) and (batch, channels, time) waveforms under torch.compile and in a DataLoader with
workers; Hugging Face with_transform serving the stage's samples."""

import json

import datasets as hfds
import numpy as np
import pytest
import torch

from shiftlab.datasets import audio
from shiftlab.errors import ShiftlabError
from shiftlab.mixing import BatchNoise, mix, set_epoch, with_noise
from shiftlab.mixing import bank as B

SR = 8000
LABELS = ["left", "right"]
CFG = {"seed": 3, "snr_db": [0.0, 20.0], "batch_size": 4, "device": "cpu", "bank": {"max_source_share": 0.5}}


def _bank():
    rng = np.random.default_rng(1)
    clips = {f"car{k}/clip": ((rng.standard_normal(n) * 0.05 * (k + 1)).astype(np.float32), SR)
             for k, n in enumerate((2000, 900, 300))}
    return B.from_arrays(clips, SR)


def _speech(n=10, lengths=(400, 350, 400, 500)):
    rows = []
    for i in range(n):
        L = lengths[i % len(lengths)]
        t = np.arange(L) / SR
        x = (0.3 * np.sin(2 * np.pi * (200 + 40 * i) * t)).astype(np.float32)
        rows.append(dict(id=f"tts/{i:03d}", audio=x, sampling_rate=SR, label=LABELS[i % 2], domain="source",
                         origin="real", group=f"v{i % 3}", parent="", recipe="{}"))
    return audio.build_dataset(rows, LABELS)


def _waves(b=5, c=None, t=400, seed=0):
    shape = (b, t) if c is None else (b, c, t)
    return torch.from_numpy((np.random.default_rng(seed).standard_normal(shape) * 0.2).astype(np.float32))


# --------------------------------------------------------------------------- torch


def test_batch_noise_seed_or_generator_is_deterministic_without_global_rng():
    m = BatchNoise(_bank(), CFG)
    x = _waves()
    torch.manual_seed(0)
    state = torch.get_rng_state()
    a, b = m(x, seed=4), m(x, seed=4)
    c = m(x, generator=torch.Generator().manual_seed(9))
    d = m(x, generator=torch.Generator().manual_seed(9))
    assert torch.equal(a, b) and torch.equal(c, d) and not torch.equal(a, c)
    assert torch.equal(torch.get_rng_state(), state)
    assert not torch.equal(a, x)


def test_batch_noise_with_indices_is_the_onthefly_mixer_and_recipes_regenerate():
    bk = _bank()
    m = BatchNoise(bk, CFG, seed=7, n_samples=32)
    x = _waves(6)
    idx = [5, 0, 31, 2, 8, 9]
    y, recs = m(x, idx, epoch=1, return_recipes=True)
    ref, _ = mix.OnTheFlyMixer(bk, CFG, seed=7, device="cpu", n_samples=32)(x, idx, 1)
    assert torch.equal(y, ref)
    for k, r in enumerate(recs):
        assert np.array_equal(mix.regenerate(json.loads(json.dumps(r)), x[k].numpy(), bk), y[k].numpy())
    assert torch.equal(m(x[[2, 3]], [idx[2], idx[3]], epoch=1), y[[2, 3]])  # batch-independent


def test_batch_noise_channels_share_the_sample_draw():
    bk = _bank()
    m = BatchNoise(bk, CFG)
    x = _waves(4, c=2)
    y, recs = m(x, seed=2, return_recipes=True)
    assert y.shape == x.shape and len(recs) == 4 and len(recs[0]["speech_gain"]) == 2
    for k, r in enumerate(recs):
        assert np.array_equal(mix.regenerate(r, x[k].numpy(), bk), y[k].numpy())
    mono, _ = m(x[:, :1], seed=2, return_recipes=True)
    assert torch.equal(mono[:, 0], y[:, 0])  # channel 0 mixed alone: the same samples


def test_batch_noise_bad_input_is_a_one_line_error():
    m = BatchNoise(_bank(), CFG)
    with pytest.raises(ShiftlabError, match=r"\(batch, time\) or \(batch, channels, time\)"):
        m(torch.zeros(400))
    with pytest.raises(ShiftlabError, match="must be float"):
        m(torch.zeros(2, 400, dtype=torch.int16))
    with pytest.raises(ShiftlabError, match="empty"):
        B.from_arrays({}, SR)


def test_batch_noise_under_torch_compile_matches_eager():
    m = BatchNoise(_bank(), CFG)
    x = _waves(3)
    cm = torch.compile(m)
    assert torch.equal(cm(x, seed=5), m(x, seed=5))
    assert torch.equal(cm(x, [4, 5, 6], 2), m(x, [4, 5, 6], 2))


class _Items(torch.utils.data.Dataset):
    def __init__(self, x, module):
        self.x, self.m = x, module

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.m(self.x[i : i + 1], [i])[0]


def test_batch_noise_in_a_dataloader_with_workers_matches_no_workers():
    x = _waves(7)
    ds = _Items(x, BatchNoise(_bank(), CFG, n_samples=7))
    ref = torch.cat(list(torch.utils.data.DataLoader(ds, batch_size=3, num_workers=0)))
    got = torch.cat(list(torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2)))
    assert torch.equal(ref, got)


# --------------------------------------------------------------------------- Hugging Face datasets


def test_with_noise_serves_the_stage_samples_for_the_same_seed_and_index():
    bk, ds = _bank(), _speech()
    stage = mix.make_copies(ds, bk, CFG, device="cpu", progress=False)
    served = with_noise(ds, bk, CFG)
    rows = served[:]
    for i in range(len(ds)):
        assert np.array_equal(np.asarray(rows["audio"][i], np.float32), np.asarray(stage[i]["audio"], np.float32))
        rec, want = json.loads(rows["noise_recipe"][i]), json.loads(stage[i]["recipe"])
        assert {k: rec[k] for k in ("noise", "offset", "snr_db", "seed")} == \
            {k: want[k] for k in ("noise", "offset", "snr_db", "seed")}
        assert np.array_equal(mix.regenerate(rec, np.asarray(ds[i]["audio"], np.float32), bk),
                              np.asarray(rows["audio"][i], np.float32))
    set_epoch(served, 1)
    again = served[:]["audio"]
    assert not all(np.array_equal(a, b) for a, b in zip(again, rows["audio"]))
    set_epoch(served, 0)
    shuffled = served.shuffle(seed=1)
    set_epoch(shuffled, 0)
    got = {r["id"]: np.asarray(r["audio"], np.float32) for r in shuffled}
    assert all(np.array_equal(got[r["parent"]], np.asarray(r["audio"], np.float32)) for r in stage)


def test_with_noise_rejects_a_bank_at_another_rate():
    bk16 = B.from_arrays({"x": (np.ones(1600, np.float32) * 0.1, 16000)}, 16000)
    with pytest.raises(ShiftlabError, match="sampling rate 16000 Hz"):
        with_noise(_speech(2), bk16, CFG)
    with pytest.raises(ShiftlabError, match="no 'wave' column"):
        with_noise(_speech(2), _bank(), CFG, column="wave")
    assert isinstance(_speech(2), hfds.Dataset)


# --------------------------------------------------------------------------- the command line


def test_cli_mixes_any_saved_speech_dataset_with_a_folder_bank(tmp_path, capsys):
    from pathlib import Path

    import soundfile as sf
    import yaml

    from shiftlab import cli, store

    params = yaml.safe_load((Path(__file__).resolve().parent.parent / "params.yaml").read_text())
    (tmp_path / "noise" / "car0").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k in range(2):
        sf.write(tmp_path / "noise" / "car0" / f"n{k}.wav", (rng.standard_normal(3000) * 0.1).astype(np.float32), SR)
    params["synth_mix"]["bank"].update(sources=["folder"], folder=str(tmp_path / "noise"), max_source_share=1.0)
    params["synth_mix"]["device"] = "cpu"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    ds = _speech(6)
    store.save(hfds.DatasetDict({"train": ds}), tmp_path / "speech")
    argv = ["--params", str(tmp_path / "params.yaml"), "mix", "--input", str(tmp_path / "speech")]
    assert cli.main(argv) == 0, capsys.readouterr().err
    out, bk = store.load(tmp_path / "speech_mix"), store.load(tmp_path / "speech_mix_bank")
    assert len(out) == 6 and out["parent"] == ds["id"]
    for r in out:
        rec = json.loads(r["recipe"])
        want = mix.regenerate(rec, np.asarray(ds[rec["index"]]["audio"], np.float32), bk)
        assert np.array_equal(want, np.asarray(r["audio"], np.float32))
    served = with_noise(ds, bk, params["synth_mix"])  # the same samples, served on the fly
    assert all(np.array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))
               for a, b in zip(served[:]["audio"], out["audio"]))
    assert cli.main(argv + ["--split", "dev"]) == 2
    assert "no such split" in capsys.readouterr().err
