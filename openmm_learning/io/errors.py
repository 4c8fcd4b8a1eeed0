"""Errors of the CP2K readers and runners: each message says which file, where, and what to do."""

#: how to read a run whose last frame was cut off (a run still going, or killed)
_TRUNCATED_HINT = "pass allow_truncated=True (CLI: --allow-truncated) to drop the incomplete frame"


class Cp2kFormatError(ValueError):
    """A CP2K file that cannot be read as asked; the message says where and what to do."""


class Cp2kRunError(RuntimeError):
    """CP2K is missing, failed, or timed out."""
