"""Errors of the drift core: a reference profile or a state snapshot that cannot be used.

Both derive from :class:`servecore.errors.ConfigError`: a bad profile is a configuration
problem found at model load, and a snapshot that does not belong to the running profile (or is
corrupt) is rejected and counted by whoever merges it, never on a request.
"""

from __future__ import annotations

from servecore.errors import ConfigError


class ProfileError(ConfigError):
    """A reference profile is malformed, of an unknown format version, or not what was expected."""


class SnapshotError(ConfigError):
    """A state snapshot is torn, corrupt (CRC), of another format version, or of another layout."""
