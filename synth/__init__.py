"""Image synthesis: motion-blur kernels, batched apply, image diversity checks.

Adapters for your own training code (:mod:`shiftlab.synth.adapters`): albumentations transforms
:class:`LinearMotionBlur`, :class:`ShakeBlur`, :class:`SampledMotionBlur`; the ``nn.Module``
:class:`BatchBlur`; :func:`with_blur` for Hugging Face datasets (per-epoch hook :func:`set_epoch`);
:func:`regenerate` rebuilds any of their samples from its recipe.
"""

_ADAPTERS = {"LinearMotionBlur", "ShakeBlur", "SampledMotionBlur", "applied_recipes", "BatchBlur", "with_blur",
             "set_epoch"}


def __getattr__(name):  # lazy: importing shiftlab.synth stays light (torch, albumentations on first use)
    if name in _ADAPTERS:
        from shiftlab.synth import adapters

        return getattr(adapters, name)
    if name == "regenerate":
        from shiftlab.synth.blur import regenerate

        return regenerate
    raise AttributeError(f"module 'shiftlab.synth' has no attribute {name!r}")


__all__ = sorted(_ADAPTERS | {"regenerate"})
