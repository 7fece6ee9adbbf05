"""The lab's one error type."""

__all__ = ["LabError"]


class LabError(RuntimeError):
    """A lab command failed (the message carries the command and its stderr)."""
