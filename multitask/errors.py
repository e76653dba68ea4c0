"""The errors the model package raises, so callers (CLI, deployments) can tell a bad artifact from a bug."""


class MultitaskError(Exception):
    """Base class of every error this package raises on purpose."""


class CheckpointError(MultitaskError):
    """A checkpoint or encoder that cannot be loaded: missing, corrupt, invalid or mismatched."""


class EncoderMismatchError(CheckpointError):
    """Heads trained on one encoder were asked to run on another."""


class DataError(MultitaskError):
    """Bad training or evaluation data; the message names the file and line."""
