"""Outside the training process: the supervisor that starts, watches and restarts it."""
