"""The names an exported ONNX graph is written and read by: shared by the exporter (onnx_graph.py, which needs
torch) and `OnnxPredictor` (which must not), so they live apart from both."""

from __future__ import annotations

ONNX_FILE = "model.onnx"
# The names optimum and transformers.js use for a dynamically quantized copy.
QUANTIZED_ONNX_FILE = "model_quantized.onnx"
EMBEDDING_OUTPUT = "sentence_embedding"
# Stored in the graph's metadata_props: what OnnxPredictor needs besides the tokenizer.
TASKS_METADATA_KEY = "hydrabert_tasks"
MAX_SEQ_LENGTH_METADATA_KEY = "hydrabert_max_seq_length"


def logits_output_name(task: str) -> str:
    return f"logits_{task}"


# ONNX Runtime's CPU SkipLayerNormalization kernel is a scalar loop with a division per element: on the demo
# model it took 1.21 s of the SST-2 test set where Add + LayerNormalization take 0.29 s (profiled, 1 thread,
# ORT 1.32; docs/deploy.md). The graph keeps them apart, and CPU sessions are told not to fuse them either
# (ONNX Runtime's session optimizer would otherwise redo the fusion at load time).
NO_SKIP_LAYER_NORM_FUSION = {"disabled_optimizers": ["SkipLayerNormFusion"]}


def session_kwargs(providers) -> dict:
    """Extra `InferenceSession` arguments for `providers`: CPU-only sessions skip the SkipLayerNormalization
    fusion (slower on CPU); other providers keep ONNX Runtime's defaults."""
    cpu_only = all(
        (provider[0] if isinstance(provider, tuple) else provider) == "CPUExecutionProvider"
        for provider in providers
    )
    return dict(NO_SKIP_LAYER_NORM_FUSION) if cpu_only else {}


__all__ = [
    "EMBEDDING_OUTPUT",
    "MAX_SEQ_LENGTH_METADATA_KEY",
    "NO_SKIP_LAYER_NORM_FUSION",
    "ONNX_FILE",
    "QUANTIZED_ONNX_FILE",
    "TASKS_METADATA_KEY",
    "logits_output_name",
    "session_kwargs",
]
