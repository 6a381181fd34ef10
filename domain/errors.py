"""Domain errors and the error kinds recorded in failure and rejection events."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["DomainError", "ErrorKind", "InvalidTransition"]


class ErrorKind(StrEnum):
    """Why a task was rejected or a run failed; stable strings, stored in events."""

    INVALID_JSON = "invalid_json"
    INVALID_PAYLOAD = "invalid_payload"
    UNKNOWN_AGENT = "unknown_agent"
    PROMPT_TOO_LARGE = "prompt_too_large"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    USAGE_LIMIT_EXCEEDED = "usage_limit_exceeded"
    MODEL_ERROR = "model_error"
    TOOL_ERROR = "tool_error"
    TRANSIENT_EXHAUSTED = "transient_exhausted"
    INTERNAL_ERROR = "internal_error"
    DEAD_LETTERED = "dead_lettered"
    """Not a stored kind: an outcome's, when the worker kept the message as a dead
    letter because nothing could be recorded (the store was down)."""


class DomainError(Exception):
    """Base class of errors raised by the domain model."""


class InvalidTransition(DomainError):
    """An aggregate method was called in a state where it makes no sense."""

    def __init__(self, what: str, status: str) -> None:
        super().__init__(f"cannot {what}: the run is already {status}")
        self.what = what
        self.status = status
