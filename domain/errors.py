"""Domain errors and the error kinds recorded in failure and rejection events."""

from __future__ import annotations

import re
from enum import StrEnum

from pydantic import ValidationError

__all__ = ["DomainError", "ErrorKind", "InvalidTransition", "first_problem", "regexes"]


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
    UNKNOWN_GRAPH = "unknown_graph"
    UNKNOWN_RUN = "unknown_run"
    """A resume or cancel named a task id with no graph run."""
    RUN_FINISHED = "run_finished"
    """A resume or cancel for a graph run that has already ended (or is not paused)."""
    STEP_ERROR = "step_error"
    """A graph step raised."""
    STEP_LIMIT_EXCEEDED = "step_limit_exceeded"
    GRAPH_DIVERGED = "graph_diverged"
    """The graph took another path than the one recorded (it changed under the run)."""
    CANCELLED = "cancelled"
    NO_ROUTE = "no_route"
    """A route task matched no route above its threshold, and there is no fallback."""
    UNKNOWN_ROUTE = "unknown_route"
    UNKNOWN_DATASET = "unknown_dataset"
    DATASET_INVALID = "dataset_invalid"
    """An evaluation's dataset file cannot be read, or a case is wrong."""
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


def first_problem(error: ValidationError, whole: str) -> str:
    """`<field path>: <message>` of a validation error's first problem (`whole` names
    the value itself when the problem is at its top)."""
    problem = error.errors(include_url=False)[0]
    where = ".".join(str(p) for p in problem["loc"]) or whole
    return f"{where}: {problem['msg']}"


def regexes(patterns: tuple[str, ...], what: str = "pattern") -> tuple[str, ...]:
    """`patterns` if each compiles as a regular expression, else a ValueError naming the
    first that does not (a field validator for settings that hold regexes)."""
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as e:
            raise ValueError(f"{what} {pattern!r}: {e}") from None
    return patterns
