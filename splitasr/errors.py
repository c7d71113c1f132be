"""Error types that carry a one-line, user-facing message.

The CLI prints ``str(error)`` for any :class:`SplitASRError` and exits with code 2; anything
else is a bug and keeps its traceback.
"""


class SplitASRError(Exception):
    """Base class: a problem with the user's input or environment, not a bug."""


class AudioError(SplitASRError):
    """An audio file is missing, unreadable, empty, too long or in an unsupported format."""


class ManifestError(SplitASRError):
    """A manifest line is malformed or points at something unusable."""


class CheckpointError(SplitASRError):
    """A checkpoint is missing, corrupt or for another model."""


class ConfigError(SplitASRError):
    """A configuration file or option is invalid."""


class MissingDependencyError(SplitASRError):
    """An optional dependency is not installed."""
