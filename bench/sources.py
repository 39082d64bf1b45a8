"""Speed of the data sources (wall seconds), never part of the tests.

    python bench/sources.py [--repeats R]

* ``from_fashion_mnist``: the Debian package's 70,000 images as one Dataset (target:
  well under 30 s on a 2-core VM);
* ``from_hub`` of an unknown id with ``HF_HUB_OFFLINE=1`` set after import: must fail at
  once (target: under 10 s; without the call-time override it retried an unreachable hub
  for ~20 s).

The tests check what these do (tests/test_sources_images.py); this script only times them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


def _time(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    import datasets as hfds

    from shiftlab.datasets import images
    from shiftlab.errors import ShiftlabError

    rows = []
    if FMNIST_DIR.is_dir():
        t = _time(lambda: images.from_fashion_mnist(FMNIST_DIR), args.repeats)
        rows.append(("from_fashion_mnist (70,000 images)", t, 30.0))
    else:
        print(f"skipped from_fashion_mnist: {FMNIST_DIR} not installed (Debian package dataset-fashion-mnist)")

    def offline_unknown_id():
        saved = hfds.config.HF_HUB_OFFLINE, os.environ.get("HF_HUB_OFFLINE")
        hfds.config.HF_HUB_OFFLINE = False  # as if the variable was set only after import
        os.environ["HF_HUB_OFFLINE"] = "1"
        try:
            images.from_hub("shiftlab-bench/no-such-dataset-xyz")
        except ShiftlabError:
            pass
        else:  # pragma: no cover
            raise SystemExit("from_hub of an unknown id did not fail")
        finally:
            hfds.config.HF_HUB_OFFLINE = saved[0]
            if saved[1] is None:
                os.environ.pop("HF_HUB_OFFLINE", None)
            else:
                os.environ["HF_HUB_OFFLINE"] = saved[1]

    rows.append(("from_hub unknown id, HF_HUB_OFFLINE=1", _time(offline_unknown_id, args.repeats), 10.0))

    print(f"{'what':<42} {'median s':>9} {'min s':>7} {'target s':>9}")
    worst = 0
    for what, t, target in rows:
        med = statistics.median(t)
        flag = "" if med < target else "  (over target)"
        worst |= med >= target
        print(f"{what:<42} {med:9.2f} {min(t):7.2f} {'< ' + format(target, 'g'):>9}{flag}")
    return 1 if worst else 0


if __name__ == "__main__":
    sys.exit(main())
