"""One base error; each subclass is a failure the caller can act on, with a stable reason."""

from __future__ import annotations


class ServerError(Exception):
    """Base of every error this package raises on purpose."""

    reason = "Error"
    exit_code = 1
    status_code = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(ServerError):
    """A command-line argument is malformed."""

    reason, exit_code = "InvalidArgument", 2


class FetchFailed(ServerError):
    """The artifact could not be downloaded or read."""

    reason, exit_code = "FetchFailed", 3


class ChecksumMismatch(ServerError):
    """The artifact's sha256 differs from the expected one (nothing is written)."""

    reason, exit_code = "ChecksumMismatch", 4


class UnsafePath(ServerError):
    """A path escapes the folder it must stay in (.., absolute, symlink, external data)."""

    reason, exit_code = "UnsafePath", 5


class TooLarge(ServerError):
    """The artifact is bigger than the configured limit."""

    reason, exit_code = "TooLarge", 6


class InvalidModel(ServerError):
    """The file is not a model onnxruntime can load."""

    reason, exit_code = "InvalidModel", 7


class BadRequest(ServerError):
    """An inference request the model cannot take (shape, dtype, data, JSON): HTTP 400."""

    reason, status_code = "BadRequest", 400


class NotFound(ServerError):
    """Unknown model or version: HTTP 404."""

    reason, status_code = "NotFound", 404


class PayloadTooLarge(ServerError):
    """The body (or its decompressed form, or the response) exceeds a limit: HTTP 413."""

    reason, status_code = "PayloadTooLarge", 413


class NotReady(ServerError):
    """The model is still loading or warming up: HTTP 503."""

    reason, status_code = "NotReady", 503


class Busy(ServerError):
    """Too many request bytes are held already and none were released in time: HTTP 503."""

    reason, status_code = "Busy", 503
