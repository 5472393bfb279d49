"""Training the brain model: the loop, its runtime, data, losses, checkpoints, processes."""
