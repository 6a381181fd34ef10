"""Cost of a run from its token usage, where the model's price is known."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ModelPrice"]


@dataclass(frozen=True, kw_only=True)
class ModelPrice:
    """A model's price in US dollars per million tokens."""

    input_per_mtok: float
    """Price of one million input (prompt) tokens."""
    output_per_mtok: float
    """Price of one million output (completion) tokens."""

    def cost(self, *, input_tokens: int, output_tokens: int) -> float:
        """The cost in US dollars of the given usage."""
        return (
            input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok
        ) / 1_000_000
