"""Deployable copies of a hydrabert model that need no remote code (the `export` extra):

- `export_task`: one task as the encoder family's own `*ForSequenceClassification`;
- `export_sentence_transformer`: the sentence encoder as a sentence-transformers model;
- `export_onnx`: the whole multi-task model as one ONNX graph, run by `OnnxPredictor`.

From the command line: `python -m hydrabert.export --help`. The model's `export_*` methods call these.
"""

import importlib

from ._common import ExportError
from .onnx_predictor import OnnxPredictor

# The exporters need torch; OnnxPredictor does not (it runs where only onnxruntime, numpy and a tokenizer are
# installed), so they load on first use.
_EXPORTERS = {
    "export_onnx": "onnx_graph",
    "quantize_onnx": "onnx_graph",
    "build_sentence_transformer": "sentence_transformer",
    "export_sentence_transformer": "sentence_transformer",
    "build_task_classifier": "task_classifier",
    "export_task": "task_classifier",
}


def __getattr__(name):
    if name in _EXPORTERS:
        return getattr(importlib.import_module(f".{_EXPORTERS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ExportError",
    "OnnxPredictor",
    "build_sentence_transformer",
    "build_task_classifier",
    "export_onnx",
    "export_sentence_transformer",
    "export_task",
    "quantize_onnx",
]
