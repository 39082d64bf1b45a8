"""Helpers that several stages share: --set parsing, folder scanning, recording selection by pattern."""

import pytest

from shiftlab.datasets import folders, noise
from shiftlab.errors import ShiftlabError
from shiftlab.train import trainer


# --------------------------------------------------------------------------- --set KEY=VALUE


def test_parse_set_nests_dotted_keys_and_reads_yaml():
    got = trainer.parse_set(["epochs=3", "frontend.hflip=true", "frontend.n_mels=32", "lr=0.001", "grad_clip=null",
                             "model_kwargs.widths=[8, 16]", "name=a=b"])
    assert got == {"epochs": 3, "frontend": {"hflip": True, "n_mels": 32}, "lr": 1e-3, "grad_clip": None,
                   "model_kwargs": {"widths": [8, 16]}, "name": "a=b"}
    assert trainer.parse_set([]) == {}


@pytest.mark.parametrize("items, msg", [
    (["epochs"], "--set epochs: expected KEY=VALUE"),
    (["epochs=3", "epochs.x=1"], "--set epochs.x=1: epochs is set to a value and used as a section"),
    (["frontend.hflip=true", "frontend=1"], "--set frontend=1: frontend is used as a section and set to a value"),
    (["frontend..hflip=1"], "--set frontend..hflip=1: empty name in key"),
])
def test_parse_set_errors(items, msg):
    with pytest.raises(ShiftlabError) as e:
        trainer.parse_set(items)
    assert str(e.value).startswith(msg)


# --------------------------------------------------------------------------- folders


def _touch(p, data=b"x"):
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)


def test_class_folders_skip_hidden_and_sort(tmp_path):
    for name in ("b", "a", ".git"):
        (tmp_path / name).mkdir()
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in folders.class_folders(tmp_path, "k")] == ["a", "b"]


def test_class_folder_errors(tmp_path):
    with pytest.raises(ShiftlabError, match=r"nowhere: folder not found \(k\.source\)"):
        folders.class_folders(tmp_path / "nowhere", "k.source")
    _touch(tmp_path / "file.png")
    with pytest.raises(ShiftlabError, match=r"file.png: not a folder \(k must hold one subfolder per word\)"):
        folders.class_folders(tmp_path / "file.png", "k", "word")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ShiftlabError, match=r"empty: no class subfolders \(empty folder; k must hold one"):
        folders.class_folders(tmp_path / "empty", "k")
    _touch(tmp_path / "flat" / "a.png")
    with pytest.raises(ShiftlabError, match=r"flat: no class subfolders \(k must hold one subfolder per class\)"):
        folders.class_folders(tmp_path / "flat", "k")


def test_files_recursive_sorted_by_relative_path_hidden_skipped(tmp_path):
    for rel in ("b.WAV", "a/z.wav", "a/b.flac", ".hidden.wav", ".cache/x.wav", "a/.y.wav", "c/readme.txt", "A.wav"):
        _touch(tmp_path / rel)
    (tmp_path / "dir.wav").mkdir()  # a folder named like a file is not a file
    got = [p.relative_to(tmp_path).as_posix() for p in folders.files(tmp_path, (".wav", ".flac"))]
    assert got == ["A.wav", "a/b.flac", "a/z.wav", "b.WAV"]


def test_group_of(tmp_path):
    assert folders.group_of(None, "source", "spk1/x.png", "p", "source/cat/spk1/x.png", "k") == "source/cat/spk1/x.png"
    rx = folders.group_regex(r"^(spk\d)/", "k")
    assert folders.group_of(rx, "target", "spk2/take.png", "p", "id", "k") == "target/spk2"
    whole = folders.group_regex(r"spk\d", "k")
    assert folders.group_of(whole, "source", "a_spk3.wav", "p", "id", "k") == "source/spk3"
    assert folders.group_regex(None, "k") is None
    with pytest.raises(ShiftlabError, match=r"f.wav: 'other/x' does not match k '\^\(spk\\\\d\)/'$"):
        folders.group_of(rx, "source", "other/x.wav", "f.wav", "id", "k")
    opt = folders.group_regex(r"x(\d)?", "k")
    with pytest.raises(ShiftlabError, match="its first group did not take part"):
        folders.group_of(opt, "source", "x.wav", "f.wav", "id", "k")
    with pytest.raises(ShiftlabError, match=r"^k: invalid regular expression '\('"):
        folders.group_regex("(", "k")


# --------------------------------------------------------------------------- recordings by pattern


def test_select_recordings_by_pattern():
    ids = ["torcs/nsx", "torcs/f360", "openttd/horn", "Torcs/x"]
    assert noise.select(ids, ["torcs/*", "openttd/horn"], "k") == {"torcs/nsx", "torcs/f360", "openttd/horn"}
    assert noise.select(ids, ["torcs/nsx", "torcs/n*"], "k") == {"torcs/nsx"}  # overlapping patterns: once
    with pytest.raises(ShiftlabError) as e:
        noise.select(ids, ["torcs/*", "dust*"], "k.recordings")
    assert str(e.value) == ("k.recordings: pattern 'dust*' matches no recording "
                            "(known: Torcs/x, openttd/horn, torcs/f360, torcs/nsx)")
    with pytest.raises(ShiftlabError) as e:
        noise.select([], ["x"], "k", "no source-domain noise recording")
    assert str(e.value) == "k: pattern 'x' matches no source-domain noise recording (known: none)"
    with pytest.raises(ShiftlabError) as e:
        noise.select(ids, ["y"], "k", "none of the selected recordings", known=False)
    assert str(e.value) == "k: pattern 'y' matches none of the selected recordings"


# --------------------------------------------------------------------------- devices


def test_synthesis_stages_resolve_devices_alike():
    import torch

    from shiftlab import devices
    from shiftlab.mixing import mix
    from shiftlab.synth import blur

    assert devices.resolve("cpu", "k").type == "cpu" and devices.resolve(torch.device("cpu"), "k").type == "cpu"
    assert devices.resolve(None, "k") == devices.resolve("auto", "k")
    for stage, key in ((blur, "synth_blur.device"), (mix, "synth_mix.device")):
        assert stage.resolve_device("cpu").type == "cpu"
        with pytest.raises(ShiftlabError, match=rf"^{key}: 'gpu' is not a device"):
            stage.resolve_device("gpu")
        if not torch.cuda.is_available():
            with pytest.raises(ShiftlabError, match=rf"^{key}: 'cuda' requested but CUDA is not available"):
                stage.resolve_device("cuda")
