"""Image synthesis: motion-blur kernels, batched apply, image diversity checks."""
