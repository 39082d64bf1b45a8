"""Reading and writing the interchange format: Hugging Face datasets saved to disk.

* Writes go to a temporary sibling directory and are renamed into place only when
  complete, so an interrupted stage leaves the previous output intact.
* Outputs are byte-identical for identical content: the random parts that
  ``save_to_disk`` would write (the fingerprint in ``state.json``) are replaced by a
  hash of the Arrow shards, so DVC sees unchanged outputs as unchanged.
* Reads never write cache files into the (DVC-tracked) input directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path

import datasets as hfds

from shiftlab.errors import ShiftlabError

MAX_SHARD_SIZE = "256MB"


def _fix_state(directory: Path) -> None:
    """Replace save_to_disk's fingerprint by a content hash (determinism)."""
    for state in sorted(directory.rglob("state.json")):
        h = hashlib.sha256()
        for shard in sorted(state.parent.glob("*.arrow")):
            with open(shard, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
        doc = json.loads(state.read_text())
        doc["_fingerprint"] = h.hexdigest()[:16]
        state.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | Path):
    """Yield a temporary directory; on success it replaces ``path`` in one rename.

    On any exception (or interruption) the temporary directory is removed and
    ``path`` is left exactly as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # leftovers of a killed earlier run (SIGKILL skips the cleanup below)
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    for stale in path.parent.glob(f".{path.name}.old-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        yield tmp
        old = None
        if path.exists() or path.is_symlink():
            old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(path, old)
        os.rename(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "w", **kw):
    """Open a temporary sibling of ``path`` for writing; rename into place on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, mode, **kw) as f:
            yield f
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | Path, text: str) -> None:
    with atomic_file(path, "w", encoding="utf-8") as f:
        f.write(text)


def write_json(path: str | Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save(ds: hfds.Dataset | hfds.DatasetDict, path: str | Path, max_shard_size=MAX_SHARD_SIZE) -> Path:
    """Save a Dataset or DatasetDict to ``path`` atomically and deterministically."""
    path = Path(path)
    with atomic_dir(path) as tmp:
        target = tmp / "data"
        ds.save_to_disk(str(target), max_shard_size=max_shard_size)
        _fix_state(target)
        # move the contents of tmp/data up to tmp (save_to_disk wants a fresh dir)
        for child in target.iterdir():
            os.rename(child, tmp / child.name)
        target.rmdir()
    return path


def load(path: str | Path, what: str = "dataset", hint: str = "") -> hfds.Dataset | hfds.DatasetDict:
    """Open a saved Dataset/DatasetDict without letting later transforms write into it."""
    path = Path(path)
    if not path.exists():
        raise ShiftlabError(f"{path}: no {what} here{(' (' + hint + ')') if hint else ''}")
    hfds.disable_caching()  # .map() etc. write to temp files, never into `path`
    try:
        return hfds.load_from_disk(str(path))
    except FileNotFoundError as e:
        raise ShiftlabError(f"{path}: not a saved dataset ({e})") from None


def recipe(**fields) -> str:
    """A row's ``recipe`` column: canonical JSON (sorted keys, no spaces)."""
    return json.dumps(fields, sort_keys=True, separators=(",", ":"))


def tree_digest(path: str | Path) -> str:
    """sha256 over every file under ``path`` (relative names and bytes): for determinism tests."""
    path = Path(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()
