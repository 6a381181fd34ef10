"""Build an embedder from its spec (`AGENTLEDGER_EMBEDDER`), once per process."""

from __future__ import annotations

import threading

from agentledger.domain.memory.embedding import Embedder, EmbeddingError

__all__ = ["EMBEDDER_SPECS", "load_embedder"]

EMBEDDER_SPECS = (
    "wordllama",
    "wordllama:128",
    "wordllama:64",
    "minilm",
    "minilm-torch",
    "openai:<model>",
)
"""What `load_embedder` understands (shown in errors and `--help`)."""

_loaded: dict[tuple[str, str | None, int], Embedder] = {}
_lock = threading.Lock()


def load_embedder(
    spec: str,
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    batch: int = 64,
) -> Embedder:
    """The embedder `spec` names, loaded once per process (models are big and slow to
    load; they are safe to share: calls are serialised). Raises `EmbeddingError` with
    the reason (unknown spec, an extra not installed, an endpoint unreachable)."""
    key = (spec, base_url, batch)
    with _lock:
        found = _loaded.get(key)
        if found is None:
            found = _build(spec, base_url=base_url, api_key=api_key, batch=batch)
            _loaded[key] = found
        return found


def _build(spec: str, *, base_url: str | None, api_key: str | None, batch: int) -> Embedder:
    kind, _, argument = spec.strip().partition(":")
    if kind == "wordllama":
        from agentledger.infra.embedders.wordllama import WordLlamaEmbedder

        try:
            dim = int(argument) if argument else 256
        except ValueError:
            raise EmbeddingError(f"wordllama:<dim> needs a number, got {argument!r}") from None
        return WordLlamaEmbedder(dim=dim, batch=batch)
    if kind == "minilm" and not argument:
        from agentledger.infra.embedders.minilm import OnnxMiniLM

        return OnnxMiniLM(batch=batch)
    if kind == "minilm-torch" and not argument:
        from agentledger.infra.embedders.minilm import TorchMiniLM

        return TorchMiniLM(batch=batch)
    if kind == "openai" and argument:
        if not base_url:
            raise EmbeddingError("openai:<model> needs AGENTLEDGER_EMBEDDINGS_URL (an .../v1 URL)")
        from agentledger.infra.embedders.openai_compatible import OpenAICompatibleEmbedder

        return OpenAICompatibleEmbedder(base_url, argument, api_key=api_key, batch=batch)
    raise EmbeddingError(f"unknown embedder {spec!r}; one of: {', '.join(EMBEDDER_SPECS)}")
