"""Reading and writing the interchange format: Hugging Face datasets saved to disk.

* Writes go to a temporary sibling directory and are renamed into place only when
  complete, so an interrupted stage leaves the previous output intact.
* A stage with several outputs commits them together (:func:`outputs`): all of them
  are staged in temporary siblings and swapped in only when every one is complete, so
  an error or interruption leaves either every new output or every old one.
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
import signal
import threading
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


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _clean_stale(path: Path) -> None:
    """Remove the temporaries a killed earlier run left next to ``path``.

    A run killed (SIGKILL) between moving the old ``path`` aside and moving the new one
    in leaves no ``path`` but a ``.<name>.old-*`` sibling: that old output is put back.
    """
    olds = sorted(path.parent.glob(f".{path.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if olds and not (path.exists() or path.is_symlink()):
        os.rename(olds.pop(), path)
    for stale in [*path.parent.glob(f".{path.name}.tmp-*"), *olds]:
        _remove(stale)


@contextlib.contextmanager
def _deferred_signals():
    """Hold SIGINT / SIGTERM (main thread only) until the block is done, then deliver them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, lambda s, f: pending.append(s))
        except (ValueError, OSError):  # pragma: no cover - no signal support here
            pass
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)  # None: set outside Python
        for sig in dict.fromkeys(pending):
            os.kill(os.getpid(), sig)  # delivered now, to the handler the caller had


class Outputs:
    """The staged outputs of one stage (see :func:`outputs`): ``tx[target]`` is where to write."""

    def __init__(self, targets):
        self.targets: list[Path] = []
        self._tmp: dict[Path, Path] = {}
        for t in targets:
            t = Path(t)
            if t in self._tmp:
                raise ValueError(f"outputs: {t} is listed twice")
            for other in self.targets:
                if other in t.parents or t in other.parents:
                    raise ValueError(f"outputs: {t} and {other} are nested; list only the outer one")
            self.targets.append(t)
            self._tmp[t] = t.parent / f".{t.name}.tmp-{uuid.uuid4().hex[:8]}"

    def __getitem__(self, target: str | Path) -> Path:
        try:
            return self._tmp[Path(target)]
        except KeyError:
            raise KeyError(f"{target} is not one of this stage's outputs ({', '.join(map(str, self.targets))})") from None

    path = __getitem__

    def dir(self, target: str | Path) -> Path:
        """The staging path of ``target``, created as an empty directory."""
        p = self[target]
        p.mkdir(exist_ok=True)
        return p

    # conveniences: the module-level writers, aimed at the staging path
    def save(self, ds, target: str | Path, max_shard_size=MAX_SHARD_SIZE) -> Path:
        save(ds, self[target], max_shard_size)
        return Path(target)

    def write_json(self, target: str | Path, obj) -> Path:
        write_json(self[target], obj)
        return Path(target)

    def write_text(self, target: str | Path, text: str) -> Path:
        write_text(self[target], text)
        return Path(target)

    def _discard(self) -> None:
        for tmp in self._tmp.values():
            _remove(tmp)

    def _commit(self) -> None:
        missing = [str(t) for t in self.targets if not (self._tmp[t].exists() or self._tmp[t].is_symlink())]
        if missing:
            raise RuntimeError(f"outputs: the stage did not write {', '.join(missing)}; nothing was replaced")
        done: list[tuple[Path, Path | None]] = []
        committed = False
        try:
            with _deferred_signals():
                self._swap(done)
                committed = True
        finally:  # a signal held during the swap is raised on leaving the with: still clean up
            if committed:
                for _, backup in done:
                    if backup is not None:
                        _remove(backup)

    def _swap(self, done: list) -> None:
        """Swap every staged output in; on any failure put every old output back."""
        try:
            for t in self.targets:
                backup = None
                if t.exists() or t.is_symlink():
                    backup = t.parent / f".{t.name}.old-{uuid.uuid4().hex[:8]}"
                    os.rename(t, backup)
                try:
                    os.rename(self._tmp[t], t)
                except BaseException:
                    if backup is not None:
                        os.rename(backup, t)
                    raise
                done.append((t, backup))
        except BaseException:
            for t, backup in reversed(done):  # roll back: the new outputs out, the old ones in
                _remove(t)
                if backup is not None:
                    os.rename(backup, t)
            done.clear()
            raise


@contextlib.contextmanager
def outputs(*targets: str | Path):
    """Write every output of a stage, then commit them all together (all or nothing).

    ::

        with store.outputs(out_dir, metrics_json, report_md) as tx:
            store.save(ds, tx[out_dir])              # or tx.save(ds, out_dir)
            store.write_json(tx[metrics_json], rep)  # or tx.write_json(metrics_json, rep)
            (tx.dir(plots_dir) / "a.png").write_bytes(png)   # a directory output

    * ``targets``: the final paths (files or directories; distinct and not nested in
      one another; parents are created). Nothing is written to them inside the block.
    * ``tx[target]`` (or ``tx.path(target)``): a fresh temporary sibling of ``target``
      (``.<name>.tmp-<hex>``, same filesystem) that does not exist yet; write the
      output there under any name-agnostic writer (``store.save``, ``write_json``,
      ``write_text``, ``np.save``, ``torch.save`` ...). ``tx.dir(target)`` creates it
      as an empty directory first. ``tx.save`` / ``tx.write_json`` / ``tx.write_text``
      are shorthands.
    * When the block completes, every target must have been written (else
      ``RuntimeError`` and nothing is replaced); then each old output is renamed to a
      ``.<name>.old-<hex>`` sibling and its new one renamed into place, target by
      target; if a rename fails midway, the targets already swapped are rolled back, so
      every old output is whole again. SIGINT / SIGTERM arriving during the swap (a
      few renames) are held and delivered right after it. Old outputs are deleted only
      after every target is in place.
    * When the block raises (any exception, ``KeyboardInterrupt`` included) the
      temporaries are removed and no target is touched.
    * Temporaries left by a killed (SIGKILL) earlier run are removed on entry; an old
      output such a run had moved aside without putting the new one in is restored.
      (A SIGKILL inside the swap itself can still leave some targets new and some old:
      DVC then sees outputs that do not match ``dvc.lock`` and reruns the stage.)
    """
    tx = Outputs(targets)
    for t in tx.targets:
        t.parent.mkdir(parents=True, exist_ok=True)
        _clean_stale(t)
    try:
        yield tx
        tx._commit()
    finally:
        tx._discard()


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


def read_json(path: str | Path, name: str | None = None):
    """The parsed JSON file, or None when it does not exist; bad JSON is a one-line ShiftlabError naming
    ``name`` (default: the path)."""
    p = Path(path)
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ShiftlabError(f"{name or p}: not valid JSON ({e.msg} at line {e.lineno})") from None
    except UnicodeDecodeError:
        raise ShiftlabError(f"{name or p}: not UTF-8 text") from None


def write_json(path: str | Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _save_one(ds: hfds.Dataset, target: Path, max_shard_size) -> None:
    # a dataset of 0 rows gets one (empty) shard: with 0 shards `load_from_disk` cannot read it back
    if len(ds) == 0:
        ds.save_to_disk(str(target), num_shards=1)
    else:
        ds.save_to_disk(str(target), max_shard_size=max_shard_size)


def save(ds: hfds.Dataset | hfds.DatasetDict, path: str | Path, max_shard_size=MAX_SHARD_SIZE) -> Path:
    """Save a Dataset or DatasetDict to ``path`` atomically and deterministically."""
    path = Path(path)
    with atomic_dir(path) as tmp:
        target = tmp / "data"
        if not isinstance(ds, hfds.DatasetDict):
            _save_one(ds, target, max_shard_size)
        elif all(len(d) for d in ds.values()):
            ds.save_to_disk(str(target), max_shard_size=max_shard_size)
        else:  # as DatasetDict.save_to_disk writes it, an empty split with one shard
            target.mkdir()
            (target / "dataset_dict.json").write_text(json.dumps({"splits": list(ds)}), encoding="utf-8")
            for k, d in ds.items():
                _save_one(d, target / k, max_shard_size)
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
