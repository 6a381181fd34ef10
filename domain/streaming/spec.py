"""An agent's `[agents.<name>.stream]` table: the processors its stream goes through."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agentledger.domain.errors import regexes

__all__ = ["BUILTIN_PROCESSORS", "StreamSpec"]

BUILTIN_PROCESSORS = ("redact", "sentences", "tokens", "json")
"""`redact` (the `redact` patterns become `[redacted]`), `sentences` (text sent a whole
sentence at a time), `tokens` (a running token count on each text chunk), `json` (the
structured output assembled as it streams, as `json` chunks). Anything else is a
`module:attribute` of a processor of your own."""


class StreamSpec(BaseModel):
    """`[agents.<name>.stream]`: `processors = ["redact", "sentences"]`, `redact =
    ["\\\\d{16}"]`, and the default backpressure for tasks that do not choose."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    processors: tuple[str, ...] = ()
    redact: tuple[str, ...] = ()
    """Regular expressions for the `redact` processor."""
    backpressure: Literal["none", "slow_down", "drop_oldest"] | None = None
    window: int | None = Field(default=None, ge=1, le=10_000)
    buffer: int | None = Field(default=None, ge=1, le=100_000)

    @field_validator("processors")
    @classmethod
    def _known(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if name not in BUILTIN_PROCESSORS and ":" not in name:
                raise ValueError(
                    f"processor {name!r}: one of {', '.join(BUILTIN_PROCESSORS)} or a"
                    " module:attribute"
                )
        return value

    @field_validator("redact")
    @classmethod
    def _compiles(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return regexes(value, "redact pattern")
