"""Packaging: `shiftlab.*` sub-packages map to the repo folders and never shadow Hugging Face `datasets`."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = "import datasets, shiftlab.datasets.schema as s; print(datasets.__file__); print(s.__file__)"


def _check_probe_output(out: str, repo_root: str):
    hf, ours = out.strip().splitlines()[-2:]
    assert "site-packages" in hf and hf.endswith(os.path.join("datasets", "__init__.py")), hf
    assert Path(ours).resolve() == Path(repo_root, "datasets", "schema.py").resolve()


def test_import_datasets_is_hugging_face_under_pytest(repo_root):
    import datasets

    import shiftlab.datasets.schema as s

    assert hasattr(datasets, "load_dataset") and hasattr(datasets, "Dataset")
    assert Path(s.__file__).resolve() == Path(repo_root, "datasets", "schema.py").resolve()
    assert not Path(repo_root, "datasets", "__init__.py").exists(), "datasets/__init__.py would shadow HF datasets"


@pytest.mark.parametrize("how", ["-c", "-m"])
def test_import_datasets_is_hugging_face_from_repo_root(repo_root, how, tmp_path):
    # `python -c` and `python -m` both put the repo root first on sys.path
    if how == "-c":
        cmd = [sys.executable, "-c", PROBE]
    else:
        mod = tmp_path / "probe_mod.py"
        mod.write_text(PROBE.replace("; ", "\n"))
        cmd = [sys.executable, "-m", "probe_mod"]
    env = dict(os.environ, PYTHONPATH=str(tmp_path) if how == "-m" else "")
    out = subprocess.run(cmd, cwd=repo_root, env=env, capture_output=True, text=True, check=True).stdout
    _check_probe_output(out, repo_root)


def test_import_datasets_is_hugging_face_inside_a_dvc_stage(repo_root, tmp_path):
    """A DVC stage runs from the repo root, where datasets/ is a folder."""
    work = tmp_path / "proj"
    files = subprocess.run(["git", "ls-files"], cwd=repo_root, capture_output=True, text=True, check=True)
    for rel in files.stdout.split():
        if rel.startswith("datasets/"):
            dst = work / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(Path(repo_root, rel).read_bytes())
    (work / "dvc.yaml").write_text(
        "stages:\n  probe:\n"
        f"    cmd: {sys.executable} -c \"{PROBE}\" > probe.txt\n"
        "    outs:\n      - probe.txt:\n          cache: false\n"
    )
    env = dict(os.environ, DVC_NO_ANALYTICS="1", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    dvc = [sys.executable, "-m", "dvc"]
    subprocess.run(["git", "init", "-q"], cwd=work, check=True, env=env)
    subprocess.run(dvc + ["init", "-q"], cwd=work, check=True, env=env)
    subprocess.run(dvc + ["config", "core.site_cache_dir", str(tmp_path / "site")], cwd=work, check=True, env=env)
    subprocess.run(dvc + ["repro", "-q"], cwd=work, check=True, env=env, capture_output=True)
    _check_probe_output((work / "probe.txt").read_text(), repo_root)


def test_console_command_and_params_errors(repo_root, tmp_path):
    exe = Path(sys.executable).with_name("shiftlab")
    assert exe.exists(), "console script `shiftlab` is not installed"
    ok = subprocess.run([exe, "params", "--section", "split_images"], cwd=repo_root, capture_output=True, text=True)
    assert ok.returncode == 0 and "dev_fraction: 0.5" in ok.stdout
    bad = tmp_path / "params.yaml"
    bad.write_text("split_images:\n  beta_sorce: 0.1\n")
    r = subprocess.run([exe, "--params", str(bad), "split", "images"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip() == (
        f"shiftlab: error: {bad}: split_images.beta_sorce: unknown key (did you mean beta_source?)"
    )
    # sections validated by their module (train, checks, mixing) name the key the same way
    for text, msg in (
        ("train_audio:\n  epoch: 3\n", "train_audio.epoch: unknown key (did you mean epochs?)"),
        ("check_images:\n  max_rows: 3\n", "check_images.max_rows"),
        ("synth_mix_narrow:\n  copies: 0\n", "synth_mix_narrow.copies"),
        ("experiment:\n  variants: [nosynth, sinth]\n", "experiment.variants"),
    ):
        bad.write_text(text)
        r = subprocess.run([exe, "--params", str(bad), "params"], cwd=tmp_path, capture_output=True, text=True)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert r.stderr.startswith(f"shiftlab: error: {bad}: {msg}"), r.stderr
    r = subprocess.run([exe, "split", "images", "--params", "x"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 2  # argparse usage error
    r = subprocess.run([exe, "--params", str(tmp_path / "none.yaml"), "params"], capture_output=True, text=True)
    assert r.returncode == 2 and "params file not found" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_split_without_prepared_input_names_the_missing_path(tmp_path):
    exe = Path(sys.executable).with_name("shiftlab")
    (tmp_path / "params.yaml").write_text("")
    r = subprocess.run([exe, "split", "audio"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 2
    assert "data/prepared/speech_incar: no prepared dataset here (run `shiftlab prepare target` first)" in r.stderr
