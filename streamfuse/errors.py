"""Exceptions that carry a message meant for the user.

Anything a user can cause through a config, an input, an output or the command line (a bad config key, a
missing file, a busy port) is raised as a :class:`StreamfuseError` subclass whose message names the thing
and says what to do; a program can catch that one class. The CLI prints that message as one line and exits
non-zero; it never shows a traceback for these. Wrong arguments to a Python function (an array of the
wrong shape given to ``Fuser.fuse``, a value out of range) raise ``ValueError`` or ``TypeError``, as
documented on the function.
"""

from __future__ import annotations


class StreamfuseError(Exception):
    """Base class of all user-facing streamfuse errors."""

    exit_code = 1


class ConfigError(StreamfuseError):
    """Invalid configuration: the message starts with the key path (``sources.ir.uri: ...``)."""

    exit_code = 2


class UsageError(StreamfuseError):
    """A command-line argument that cannot be right (a value out of range, flags that do not go together):
    exit status 2, as for argparse's own argument errors and for config errors."""

    exit_code = 2


class SourceError(StreamfuseError):
    """A source could not be opened or failed while reading (missing file, corrupt video, no camera)."""


class UnreadableImageError(SourceError):
    """An image file that cannot be decoded (corrupt, truncated, not an image at all): one such file in a folder
    is skipped with a warning; an image of a kind streamfuse does not take (floating point) is a plain
    :class:`SourceError`, as the folder's other images are likely the same."""


class TransientSourceError(SourceError):
    """A live source was lost in a way that may heal: refused or timed-out connection, a stalled or
    ended stream. A source with reconnects enabled retries after these; any other
    :class:`SourceError` (bad URL, wrong credentials, missing file) fails it at once."""


class SinkError(StreamfuseError):
    """A sink could not be opened or failed while writing (unwritable path, endpoint in use)."""


class PipelineError(StreamfuseError):
    """A pipeline stage failed; the message names the stage and the cause."""
