"""The model factory: catalog model strings to pydantic-ai models.

`model = "openai:gpt-4o-mini"` uses pydantic-ai's provider inference (keys come from the
provider's usual environment variables, read by its SDK). With `base_url`, the model is
served by an OpenAI-compatible server (vLLM, llama.cpp, Ollama, a gateway): the key, if
the server wants one, is `AGENTLEDGER_MODEL_API_KEY`.

The openai SDK is an optional extra (`pip install 'agentledger[openai]'`).
"""

from __future__ import annotations

from pydantic_ai.models import Model, infer_model

__all__ = ["ModelConfigError", "build_model"]


class ModelConfigError(Exception):
    """A catalog model setting cannot be turned into a model."""


def build_model(model: str, *, base_url: str | None = None, api_key: str | None = None) -> Model:
    """The pydantic-ai model for a catalog entry's `model` (and `base_url`)."""
    if base_url is None:
        try:
            return infer_model(model)
        except Exception as e:
            raise ModelConfigError(f"cannot build model {model!r}: {e}") from None
    provider, _, name = model.partition(":")
    if not name:
        provider, name = "openai", model
    if provider != "openai":
        raise ModelConfigError(
            f"base_url is for OpenAI-compatible servers: use 'openai:<model>', not {model!r}"
        )
    try:
        from pydantic_ai.models.openai import OpenAIChatModel
        from pydantic_ai.providers.openai import OpenAIProvider
    except ImportError:
        raise ModelConfigError(
            "OpenAI-compatible models need the openai extra: pip install 'agentledger[openai]'"
        ) from None
    from openai import AsyncOpenAI

    # A local server usually wants no key, but the SDK insists on one being set. The
    # SDK's own retries are off: a failed request fails the step, and the worker
    # redelivers the task with backoff, durably (the run resumes from its last step).
    client = AsyncOpenAI(base_url=base_url, api_key=api_key or "not-needed", max_retries=0)
    return OpenAIChatModel(name, provider=OpenAIProvider(openai_client=client))
