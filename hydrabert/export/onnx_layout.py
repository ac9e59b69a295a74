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


__all__ = [
    "EMBEDDING_OUTPUT",
    "MAX_SEQ_LENGTH_METADATA_KEY",
    "ONNX_FILE",
    "QUANTIZED_ONNX_FILE",
    "TASKS_METADATA_KEY",
    "logits_output_name",
]
