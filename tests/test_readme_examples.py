"""README section "Use it in your own training code": every example in it runs.

The Python blocks are executed as they are written; the shell block's `shiftlab` commands run
through the command line's ``main`` in a scratch project (made-up photos, images and speech,
a params.yaml whose noise bank is a folder of made-up noise).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
TITLE = "## Use it in your own training code"


def _section() -> str:
    text = (REPO / "README.md").read_text()
    assert text.count(TITLE) == 1, f"README: section {TITLE!r} missing or repeated"
    body = text.split(TITLE, 1)[1]
    return body.split("\n## ", 1)[0]


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", _section(), flags=re.S)


def test_the_section_has_one_example_per_adapter():
    py = _blocks("python")
    assert len(py) == 3 and len(_blocks("bash")) == 1
    joined = "\n".join(py)
    for name in ("ShakeBlur", "LinearMotionBlur", "BatchBlur", "BatchNoise", "with_blur", "set_epoch"):
        assert name in joined


@pytest.mark.parametrize("k", range(3))
def test_python_example_runs(k):
    code = _blocks("python")[k]
    exec(compile(code, f"README.md example {k + 1}", "exec"), {"__name__": f"readme_example_{k + 1}"})


def test_shell_example_runs(tmp_path, monkeypatch, capsys):
    import datasets as hfds
    import soundfile as sf
    from PIL import Image

    from shiftlab import cli, store
    from shiftlab.datasets import audio, images

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / "my_photos" / cls).mkdir(parents=True)
        for j in range(2):
            Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(
                tmp_path / "my_photos" / cls / f"{j}.png")
    store.save(images.from_arrays(rng.integers(0, 256, (4, 8, 8, 1), dtype=np.uint8), [0, 1, 0, 1],
                                  ["source"] * 4, label_names=["a", "b"], name="p"),
               tmp_path / "data" / "prepared" / "images")
    rows = [dict(id=f"s/{i}", audio=(0.2 * np.sin(np.arange(800) * (0.05 + 0.01 * i))).astype(np.float32),
                 sampling_rate=8000, label="yes", domain="source", origin="real", group=f"v{i}", parent="",
                 recipe="{}") for i in range(3)]
    store.save(hfds.DatasetDict({"validation": audio.build_dataset(rows, ["yes"])}), tmp_path / "my_speech_dd")
    (tmp_path / "noise" / "car").mkdir(parents=True)
    sf.write(tmp_path / "noise" / "car" / "n.wav", (rng.standard_normal(4000) * 0.1).astype(np.float32), 8000)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["synth_mix"]["bank"].update(sources=["folder"], folder=str(tmp_path / "noise"), max_source_share=1.0)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)

    commands = [line.split("#", 1)[0].strip() for line in _blocks("bash")[0].splitlines()]
    commands = [c for c in commands if c]
    assert len(commands) == 3
    for c in commands:
        argv = shlex.split(c)
        assert argv[0] == "shiftlab"
        assert cli.main(argv[1:]) == 0, f"{c}: {capsys.readouterr().err}"
    assert len(store.load(tmp_path / "my_photos_blur")) == 4
    assert len(store.load(tmp_path / "data" / "prepared" / "images_blurred")) == 4
    assert len(store.load(tmp_path / "my_speech_dd_mix")) == 3
    assert (tmp_path / "my_speech_dd_mix_bank").exists()
