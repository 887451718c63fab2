"""The toy CLIP trainer's settings (here, free of torch, so that the command line can show them at once)."""

TRAINING_DEFAULTS = {"steps": 1600, "batch_size": 96, "scenes": 20_000, "seed": 0, "learning_rate": 2e-3,
                     "warm_start": 0.3}
