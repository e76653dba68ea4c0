"""Multi-task sentence classification: shared encoder, task heads, data, training. No Ray Serve in here."""
