"""Exception types.

Every error annrec raises on bad input is an :class:`AnnrecError` whose message says what was
wrong and how to fix it. The subclasses also derive from the matching built-in exception, so
callers that catch ``ValueError`` / ``KeyError`` / ``FileNotFoundError`` keep working.
"""

from __future__ import annotations


class AnnrecError(Exception):
    """Base class of every error annrec raises on purpose."""


class InputError(AnnrecError, ValueError):
    """An argument is malformed: wrong shape or dimension, NaN/Inf, k <= 0, bad parameter."""


class DataError(AnnrecError, ValueError):
    """A data file is missing columns, empty, malformed or fails its checksum."""


class DataNotFoundError(AnnrecError, FileNotFoundError):
    """A data set or artifact is not where it was looked for (and could not be downloaded)."""


class UnknownIdError(AnnrecError, KeyError):
    """A user or item id is not known to the model or index."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class ArtifactError(AnnrecError, ValueError):
    """An artifact folder is corrupt, of another kind/backend, or of a newer format version."""
