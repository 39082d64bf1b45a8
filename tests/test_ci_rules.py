"""tests/conftest.py under CI=true: a skip for missing embedded data fails; Hypothesis is derandomized.

Runs pytest on a small made-up test file with this repository's conftest, with and
without ``CI=true``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

SAMPLE = '''
import pytest
from hypothesis import given, settings, strategies as st

SEEN = []


@pytest.mark.debian_data
@pytest.mark.skipif(True, reason="/usr/share/games/trigger-rally/data.zip not installed")
def test_marked_debian_data():
    pass


@pytest.mark.skipif(True, reason="Debian package dataset-fashion-mnist not installed")
def test_reason_names_a_debian_package():
    pass


@pytest.mark.skipif(True, reason="needs CUDA")
def test_needs_cuda():
    pass


def test_skip_inside_the_test_for_missing_data():
    pytest.skip("espeak-ng not installed")


@settings(max_examples=5)
@given(st.integers())
def test_examples(x):
    SEEN.append(x)


def test_profile_and_examples():
    s = settings.default
    print("PROFILE", s.derandomize, s.database is None, s.deadline, SEEN)
'''


def _run(tmp_path, ci: bool):
    for name in ("conftest.py",):
        shutil.copy(HERE / name, tmp_path / name)
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    debian_data: needs Debian data\n")
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "HYPOTHESIS_PROFILE")}
    if ci:
        env["CI"] = "true"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rfEs", "-s", "-p", "no:cacheprovider", str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True)


def _profile_line(out: str) -> str:
    return re.search(r"PROFILE .*", out).group(0)  # (after the progress characters on its line)


def test_without_ci_missing_data_skips_and_hypothesis_is_random(tmp_path):
    r = _run(tmp_path, ci=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "4 skipped" in r.stdout and "failed" not in r.stdout
    assert _profile_line(r.stdout).startswith("PROFILE False False None")


def test_under_ci_a_skip_for_missing_data_fails(tmp_path):
    r = _run(tmp_path, ci=True)
    assert r.returncode == 1, r.stdout + r.stderr
    # a skip at set-up (skipif) becomes a set-up error, one inside the test a failure: CI is red either way
    assert "1 failed, 2 passed, 1 skipped, 2 errors" in r.stdout, r.stdout
    for name in ("test_marked_debian_data", "test_reason_names_a_debian_package",
                 "test_skip_inside_the_test_for_missing_data"):
        assert re.search(rf"(FAILED|ERROR) test_sample.py::{name}\b", r.stdout), r.stdout
    assert "CI=true: this test was skipped for missing embedded data" in r.stdout
    assert "SKIPPED" in r.stdout and "needs CUDA" in r.stdout  # not data: still a skip
    line = _profile_line(r.stdout)
    assert line.startswith("PROFILE True True None")
    again = _profile_line(_run(tmp_path, ci=True).stdout)
    assert again == line  # derandomized: the same examples on every run


@pytest.mark.parametrize("reason, missing", [
    ("Debian data packages / espeak-ng not installed (make test installs them)", True),
    ("/usr/share/datasets/fashion-mnist not installed", True),
    ("needs CUDA", False),
    ("hypothesis found no example", False),
])
def test_missing_data_reasons(reason, missing):
    sys.path.insert(0, str(HERE))
    try:
        import conftest
    finally:
        sys.path.remove(str(HERE))
    assert bool(conftest.MISSING_DATA.search(reason)) is missing


# --------------------------------------------------------------------------- .ci/run on an image without make


def _stub(path: Path, body: str) -> None:
    path.write_text("#!" + shutil.which("bash") + "\n" + body)
    path.chmod(0o755)


@pytest.mark.parametrize("uid", [0, 1000])
def test_ci_run_installs_make_when_missing_then_runs_make_test(tmp_path, uid):
    """`.ci/run` with no `make` on PATH: apt-get installs it (DEBIAN_FRONTEND kept, through sudo
    when not root), then `make test` runs with CI=true. Stubs stand in for id, sudo, apt-get, make."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    log = tmp_path / "log"
    for tool in ("bash", "env", "dirname"):
        (bin_ / tool).symlink_to(shutil.which(tool))
    _stub(bin_ / "id", f'[ "$1" = -u ] && echo {uid}\n')
    _stub(bin_ / "sudo", f'echo "sudo $*" >> {log}\nexec "$@"\n')
    _stub(bin_ / "apt-get", f'echo "apt-get $* [DEBIAN_FRONTEND=$DEBIAN_FRONTEND]" >> {log}\n'
                            f'if [ "$1" = install ]; then printf \'%s\\n\' "#!{shutil.which("bash")}" '
                            f'"echo \\"make \\$* [CI=\\$CI] in \\$PWD\\" >> {log}" > {bin_}/make; '
                            f'{shutil.which("chmod")} +x {bin_}/make; fi\n')
    env = {"PATH": str(bin_), "HOME": str(tmp_path)}
    r = subprocess.run([str(HERE.parent / ".ci" / "run")], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = log.read_text().splitlines()
    apt = [line for line in lines if line.startswith("apt-get")]
    assert [a.split(" [")[0] for a in apt] == ["apt-get update -q",
                                              "apt-get install -y -q --no-install-recommends make"]
    assert all("DEBIAN_FRONTEND=noninteractive" in a for a in apt)
    sudo = [line for line in lines if line.startswith("sudo")]
    assert sudo == ([] if uid == 0 else [
        "sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q",
        "sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends make"])
    assert lines[-1] == f"make test [CI=true] in {HERE.parent}"
    # with make present, nothing is installed
    log.unlink()
    r = subprocess.run([str(HERE.parent / ".ci" / "run")], env=env, capture_output=True, text=True)
    assert r.returncode == 0 and log.read_text().splitlines() == [f"make test [CI=true] in {HERE.parent}"]
