"""An OpenAI-compatible `/embeddings` endpoint (OpenAI, vLLM, Ollama, llama.cpp, TEI...).

Plain HTTP with the standard library (no SDK), blocking: embedders are called off the
event loop. The vector size is probed with one request when the embedder is built, so
the memory view can size its column.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import numpy as np

from agentledger.domain.memory.embedding import EmbeddingError
from agentledger.infra.embedders.base import BaseEmbedder

__all__ = ["OpenAICompatibleEmbedder"]


class OpenAICompatibleEmbedder(BaseEmbedder):
    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        batch: int = 64,
        timeout_s: float = 30.0,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise EmbeddingError(f"embeddings URL must be http(s)://..., got {base_url!r}")
        self._url = base_url.rstrip("/") + "/embeddings"
        self._model = model
        self._api_key = api_key
        self._timeout_s = timeout_s
        probe = self._request(["dimension probe"])
        super().__init__(f"openai:{model}@{base_url.rstrip('/')}", int(probe.shape[1]), batch)

    def _embed(self, texts: list[str]) -> np.ndarray:
        vectors = self._request(texts)
        if vectors.shape != (len(texts), self.dim):
            raise EmbeddingError(
                f"the embeddings endpoint returned shape {vectors.shape},"
                f" expected {(len(texts), self.dim)}"
            )
        return vectors

    def _request(self, texts: list[str]) -> np.ndarray:
        body = json.dumps({"model": self._model, "input": texts}).encode()
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        request = urllib.request.Request(self._url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
                payload: Any = json.loads(response.read())
        except urllib.error.HTTPError as e:
            raise EmbeddingError(
                f"embeddings endpoint {self._url} answered {e.code}",
                transient=e.code == 429 or e.code >= 500,
            ) from None
        except (urllib.error.URLError, TimeoutError, OSError) as e:
            raise EmbeddingError(
                f"embeddings endpoint {self._url} unreachable: {e}", transient=True
            ) from None
        except json.JSONDecodeError:
            raise EmbeddingError(f"embeddings endpoint {self._url} sent no JSON") from None
        try:
            data = sorted(payload["data"], key=lambda item: item["index"])
            return np.asarray([item["embedding"] for item in data], dtype=np.float32)
        except (KeyError, TypeError, ValueError) as e:
            raise EmbeddingError(
                f"embeddings endpoint {self._url} answered an unexpected shape: {e}"
            ) from None
