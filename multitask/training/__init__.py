"""Training: config, the joint training loop, calibration, reports, and the Ray Train launcher."""
