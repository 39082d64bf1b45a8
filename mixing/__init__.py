"""Audio synthesis: noise banks, SNR mixing, virtual car noise, audio diversity checks.

Adapters for your own training code (:mod:`shiftlab.mixing.adapters`): the ``nn.Module``
:class:`BatchNoise` and :func:`with_noise` for Hugging Face datasets (per-epoch hook
:func:`set_epoch`); :func:`regenerate` rebuilds any of their samples from its recipe.
"""

_ADAPTERS = {"BatchNoise", "with_noise", "set_epoch"}


def __getattr__(name):  # lazy: importing shiftlab.mixing stays light (torch on first use)
    if name in _ADAPTERS:
        from shiftlab.mixing import adapters

        return getattr(adapters, name)
    if name == "regenerate":
        from shiftlab.mixing.mix import regenerate

        return regenerate
    raise AttributeError(f"module 'shiftlab.mixing' has no attribute {name!r}")


__all__ = sorted(_ADAPTERS | {"regenerate"})
