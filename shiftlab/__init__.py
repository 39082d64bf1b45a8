"""shiftlab: data-centric tools for train/dev distribution mismatch.

Sub-packages (each a top-level folder of the repository):
``shiftlab.synth`` (image synthesis), ``shiftlab.mixing`` (audio mixing),
``shiftlab.datasets`` (sources and mismatch splits), ``shiftlab.train`` (models).
"""

import os as _os
import sys as _sys

__version__ = "0.1.0"

# albumentations would otherwise try a network update check on import (no network here).
_os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

# The folder datasets/ has no __init__.py (a regular package named `datasets` at the
# repo root would shadow Hugging Face's whenever the root is on sys.path), so in an
# editable install `shiftlab.datasets` is a namespace package served by setuptools'
# editable path hook. That hook is reached through a placeholder entry on sys.path;
# a namespace *child* of a regular package needs the placeholder on the parent's
# __path__ too. In a normal (wheel) install there is no placeholder and nothing changes.
__path__ += [  # noqa: F821 (module __path__)
    p
    for p in _sys.path
    if isinstance(p, str) and p.startswith("__editable__.shiftlab") and p.endswith(".__path_hook__")
]

from shiftlab.errors import ShiftlabError  # noqa: E402,F401
