"""Deployable copies of a hydrabert model that need no remote code (the `export` extra):

- `export_task`: one task as the encoder family's own `*ForSequenceClassification`;
- `export_sentence_transformer`: the sentence encoder as a sentence-transformers model;
- `export_onnx`: the whole multi-task model as one ONNX graph, run by `OnnxPredictor`.

From the command line: `python -m hydrabert.export --help`. The model's `export_*` methods call these.
"""

from ._common import ExportError
from .onnx_graph import export_onnx, quantize_onnx
from .onnx_predictor import OnnxPredictor
from .sentence_transformer import build_sentence_transformer, export_sentence_transformer
from .task_classifier import build_task_classifier, export_task

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
