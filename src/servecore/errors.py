"""Errors with meaning.

Every error servecore raises on behalf of a request derives from :class:`ServecoreError` and
carries the HTTP status it stands for, so the transport maps errors to responses in one place
without the core importing a web framework.
"""

from __future__ import annotations


class ServecoreError(Exception):
    """Root of all servecore errors; ``status_code`` is the HTTP status it maps to."""

    status_code: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInputError(ServecoreError):
    """The request is malformed or does not match the model's signature (400)."""

    status_code = 400


class AuthenticationError(ServecoreError):
    """The caller could not be identified (401)."""

    status_code = 401


class ForbiddenError(ServecoreError):
    """The caller is known but may not do this (403)."""

    status_code = 403


class ModelNotFoundError(ServecoreError):
    """No model or model version of that name is served here (404)."""

    status_code = 404


class RequestTimeoutError(ServecoreError):
    """The client stopped sending the request body before it was complete (408)."""

    status_code = 408


class PayloadTooLargeError(ServecoreError):
    """The request body (or its decompressed form) is over ``--max-body-size`` (413)."""

    status_code = 413


class UnsupportedEncodingError(ServecoreError):
    """The request body uses a ``Content-Encoding`` servecore does not decode (415)."""

    status_code = 415


class TooManyRequestsError(ServecoreError):
    """The model's queue cannot take the request now (429); ``retry_after_s`` says when to retry."""

    status_code = 429

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DeadlineExceededError(ServecoreError):
    """The request's timeout passed while it waited in the queue; it never ran (504)."""

    status_code = 504


class UnavailableError(ServecoreError):
    """The server or model cannot take the request now: not ready, shutting down (503)."""

    status_code = 503


class BackendError(ServecoreError):
    """A backend failed while loading or running a model (500)."""

    status_code = 500


class ModelLoadError(ServecoreError):
    """A model artefact could not be loaded; raised at start-up, never on a request."""

    status_code = 500


class ConfigError(ServecoreError):
    """An invalid configuration value (a CLI option or ``SERVECORE_*`` variable)."""

    status_code = 500
