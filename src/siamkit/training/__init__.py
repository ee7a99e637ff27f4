"""Training: the fit loop, optimisers and schedulers, checkpoints."""
