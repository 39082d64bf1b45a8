"""The device of a synthesis stage (``synth_blur.device``, ``synth_mix.device``): one rule for both."""

from __future__ import annotations

from shiftlab.errors import ShiftlabError


def resolve(device, key: str):
    """``"auto"`` (or None) -> CUDA when available, else CPU; ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or a
    ``torch.device`` as given. A bad name, or CUDA asked for where there is none, is an error naming ``key``."""
    import torch

    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, torch.device):
        dev = device
    else:
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError) as e:
            raise ShiftlabError(f"{key}: {device!r} is not a device (auto, cpu, cuda, cuda:N): {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ShiftlabError(f"{key}: {device!r} requested but CUDA is not available (use auto or cpu)")
    return dev
