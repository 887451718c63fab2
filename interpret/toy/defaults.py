"""The toy CLIP trainer's settings (here, free of torch, so that the command line can show them at once)."""

# steps by the image tower's readout: the attention-pooled tower (`toy-pooled`) learns shape and its held-out colour x
# shape pairs only in a schedule twice as long (1600 steps: shape 0.68, held-out pairs 0.43; 3200: 0.99 and 0.96)
STEPS = {"class-token": 1600, "attention": 3200}
TRAINING_DEFAULTS = {"steps": 1600, "batch_size": 96, "scenes": 20_000, "seed": 0, "learning_rate": 2e-3,
                     "warm_start": 0.3}
