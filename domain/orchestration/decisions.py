"""What the deciding agents of a workflow answer with: the output types a supervisor and
a triage agent give pydantic-ai (`output_type=[Delegate, FinalAnswer]`,
`output_type=[Handoff, FinalAnswer]`).

pydantic-ai offers each output type to the model as a tool (`final_result_Delegate`,
...): the supervisor delegates by calling that tool, and the workflow, not the agent's
own run, dispatches the worker as a task of its own. A supervisor's run therefore never
holds a worker slot while its workers run.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, TypeAdapter, ValidationError

__all__ = ["Delegate", "FinalAnswer", "Handoff", "parse_decision"]


class Delegate(BaseModel):
    """Ask one worker agent to do something; its answer comes back in the next prompt."""

    worker: str = Field(description="The worker agent's name.")
    instruction: str = Field(min_length=1, description="What the worker should do.")


class Handoff(BaseModel):
    """Transfer the conversation, with its history, to a specialist agent."""

    to: str = Field(description="The specialist agent's name.")
    reason: str = Field(default="", description="Why this specialist.")


class FinalAnswer(BaseModel):
    """The answer to the user: the workflow ends with it."""

    answer: Any = Field(description="Text or JSON.")


_DECISION: TypeAdapter[Delegate | Handoff | FinalAnswer] = TypeAdapter(
    Delegate | Handoff | FinalAnswer
)


def parse_decision(output: Any) -> Delegate | Handoff | FinalAnswer:
    """A deciding agent's output as a decision. Plain text (an agent without these output
    types) is a final answer; other JSON that is none of them raises `ValueError`."""
    if isinstance(output, str):
        return FinalAnswer(answer=output)
    try:
        return _DECISION.validate_python(output)
    except ValidationError:
        raise ValueError(
            f"the output is not a Delegate, Handoff or FinalAnswer: {str(output)[:200]}"
        ) from None
