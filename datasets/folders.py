"""Reading a user's folders: one subfolder per class, files found recursively, groups by regex.

Shared by :func:`shiftlab.datasets.images.from_folder` (images, one subfolder per class),
:func:`shiftlab.datasets.speech.folder_speech` (audio, one subfolder per word) and the noise
folder of :mod:`shiftlab.datasets.noise`, so every folder source follows the same rules:

* entries whose name starts with ``.`` (hidden files and folders) are skipped, at any depth;
* files are found recursively and sorted by their path relative to the folder (posix);
* ``group_pattern``: a regex searched in a file's path relative to its class folder (posix,
  without extension); the group is ``<domain>/`` + its first capture group (or the whole
  match); a file it does not match is an error. Without a pattern every file is its own group.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Collection

from shiftlab.errors import ShiftlabError


def existing_folder(path, key: str, hint: str = "") -> Path:
    """``path`` as a Path, checked to be a folder (errors name the params ``key``; ``hint`` is added)."""
    root = Path(path)
    if not root.exists():
        raise ShiftlabError(f"{root}: folder not found ({key})")
    if not root.is_dir():
        raise ShiftlabError(f"{root}: not a folder ({key}{hint})")
    return root


def class_folders(path, key: str, unit: str = "class") -> list[Path]:
    """The class subfolders of ``path`` (one per ``unit``), sorted by name; hidden ones skipped."""
    hint = f" must hold one subfolder per {unit}"
    root = existing_folder(path, key, hint)
    entries = [p for p in root.iterdir() if not p.name.startswith(".")]
    classes = sorted((p for p in entries if p.is_dir()), key=lambda p: p.name)
    if not classes:
        empty = "empty folder; " if not entries else ""
        raise ShiftlabError(f"{root}: no class subfolders ({empty}{key}{hint})")
    return classes


def files(folder, extensions: Collection[str]) -> list[Path]:
    """Files under ``folder`` whose suffix (any case) is one of ``extensions`` (``.wav``, ...): recursive,
    sorted by relative posix path, hidden entries skipped."""
    folder = Path(folder)
    out = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in names:
            p = Path(root) / f
            if not f.startswith(".") and p.suffix.lower() in extensions and p.is_file():
                out.append(p)
    return sorted(out, key=lambda p: p.relative_to(folder).as_posix())


def group_regex(pattern: str | None, key: str) -> re.Pattern | None:
    """The compiled ``group_pattern`` (None without one); an invalid regex is an error naming ``key``."""
    if pattern is None:
        return None
    try:
        return re.compile(pattern)
    except re.error as e:
        raise ShiftlabError(f"{key}: invalid regular expression {pattern!r} ({e})") from None


def group_of(regex: re.Pattern | None, domain: str, rel: str, path, row_id: str, key: str) -> str:
    """The group of the file ``path`` at ``rel`` (posix, relative to its class folder): ``row_id`` without
    a pattern, else ``<domain>/<first capture group or whole match>`` (module docstring)."""
    if regex is None:
        return row_id
    suffix = Path(rel).suffix
    stem = rel[: -len(suffix)] if suffix else rel
    m = regex.search(stem)
    value = None if m is None else (m.group(1) if regex.groups else m.group(0))
    if value is None:
        raise ShiftlabError(
            f"{path}: '{stem}' does not match {key} {regex.pattern!r}"
            + (" (its first group did not take part)" if m is not None else "")
        )
    return f"{domain}/{value}"
