"""Shared test set-up.

* No network, no DVC telemetry.
* Under ``CI=true`` (``.ci/run``, any CI service) a test skipped because embedded data is
  missing FAILS instead: a test marked ``debian_data``, or one whose skip reason says
  something is "not installed" or names a Debian package. A Debian data package that
  failed to install must turn CI red, not quietly skip its tests. Other skips (no CUDA)
  stay skips.
* Hypothesis: profile ``ci`` (loaded under ``CI=true``) is derandomized (the same examples
  on every run, so a failure reproduces) with no example database; ``dev`` (otherwise)
  draws fresh examples. Both print the reproduction blob of a failure and set no deadline
  (no timed assertions in tests: bench/ times things). ``HYPOTHESIS_PROFILE`` picks one.
"""

import os
import re

import pytest
from hypothesis import settings

# Tests never talk to the network or to DVC's telemetry.
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes", "on")

settings.register_profile("ci", derandomize=True, database=None, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if CI else "dev"))

#: a skip reason that means "embedded data (a Debian package) is missing"
MISSING_DATA = re.compile(r"not installed|debian (data )?package", re.I)


def _skip_reason(report) -> str:
    lr = report.longrepr
    if isinstance(lr, tuple) and len(lr) == 3:
        return str(lr[2])
    return str(lr or "")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not (CI and report.skipped) or hasattr(report, "wasxfail"):
        return
    reason = _skip_reason(report)
    if item.get_closest_marker("debian_data") is not None or MISSING_DATA.search(reason):
        report.outcome = "failed"
        report.longrepr = (f"CI=true: this test was skipped for missing embedded data, which CI must have "
                           f"(make setup installs the Debian packages): {reason.removeprefix('Skipped: ')}")


@pytest.fixture
def repo_root():
    return REPO
