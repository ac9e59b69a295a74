"""The whole multi-task model as one ONNX graph: one encoder pass, every task's logits and the
sentence embedding as outputs, dynamic batch and sequence axes; optional int8 dynamic quantization.

Any hydrabert configuration exports (mean pooling and adapters included), so this is the fallback
whenever a standard architecture cannot express the model.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from ._common import check_hydrabert_model, require
from .onnx_layout import (
    EMBEDDING_OUTPUT,
    MAX_SEQ_LENGTH_METADATA_KEY,
    ONNX_FILE,
    QUANTIZED_ONNX_FILE,
    TASKS_METADATA_KEY,
    logits_output_name,
)

# ONNX Runtime and PyTorch may differ by at most this on real sentences (float32).
ONNX_TOLERANCE = 1e-4
# Real sentences of different lengths: the validation batch pads, so the attention mask matters.
VALIDATION_SENTENCES = [
    "a gripping, beautifully shot film.",
    "What is the capital of Australia?",
    "the plot is thin and the jokes fall flat, but the cast carries it to the end with charm",
    "Who wrote Hamlet?",
]


@dataclass
class OnnxExport:
    """What `export_onnx` wrote, and how far ONNX Runtime was from PyTorch on the validation batch."""

    path: str
    max_abs_diff: float
    quantized_path: str | None = None


class _AllOutputs(nn.Module):
    """hydrabert's forward with tensor outputs in a fixed order (ONNX has no dicts)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        outputs = self.model(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        )
        return (
            *(outputs.logits[name] for name in self.model.config.head_task_names),
            outputs.sentence_embedding,
        )


def onnx_input_names(model, tokenizer=None) -> list[str]:
    """input_ids, attention_mask, and token_type_ids where the tokenizer (or the encoder) uses them."""
    if tokenizer is not None:
        uses_token_types = "token_type_ids" in tokenizer.model_input_names
    else:
        uses_token_types = getattr(model.config.encoder, "type_vocab_size", 0) > 1
    return ["input_ids", "attention_mask"] + (["token_type_ids"] if uses_token_types else [])


def export_onnx(
    model,
    save_directory,
    tokenizer=None,
    quantize: bool = False,
    validation_sentences: list[str] | None = None,
) -> OnnxExport:
    """Write `model.onnx` (and `model_quantized.onnx` with `quantize=True`) to `save_directory`, with the
    tokenizer when given. The graph is checked with ONNX Runtime against PyTorch on real sentences (with a
    tokenizer) or a padded random batch; a difference above 1e-4 raises."""
    check_hydrabert_model(model)
    require("onnxscript", "Exporting to ONNX")  # torch.onnx's exporter translates through it
    os.makedirs(save_directory, exist_ok=True)
    input_names = onnx_input_names(model, tokenizer)
    output_names = [logits_output_name(name) for name in model.config.head_task_names] + [EMBEDDING_OUTPUT]
    example = _example_batch(model, input_names, tokenizer, VALIDATION_SENTENCES)
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings():
            # torch.onnx notes that axes sharing a constraint keep one name: that is the intent here.
            warnings.filterwarnings("ignore", message=".*will not be used, since it shares the same shape")
            program = torch.onnx.export(
                _AllOutputs(model).eval(),
                tuple(example[name].to(model.device) for name in input_names),
                input_names=input_names,
                output_names=output_names,
                dynamic_shapes={name: {0: batch, 1: sequence} for name in input_names},
                dynamo=True,
                optimize=True,
                verbose=False,
            )
    finally:
        model.train(was_training)
    program.model.metadata_props[TASKS_METADATA_KEY] = json.dumps(model.config.tasks, sort_keys=True)
    if getattr(model.config, "max_seq_length", None) is not None:  # the length OnnxPredictor truncates at
        program.model.metadata_props[MAX_SEQ_LENGTH_METADATA_KEY] = str(model.config.max_seq_length)
    path = os.path.join(save_directory, ONNX_FILE)
    program.save(path)
    if tokenizer is not None:
        tokenizer.save_pretrained(save_directory)

    validation = _example_batch(model, input_names, tokenizer, validation_sentences or VALIDATION_SENTENCES)
    max_abs_diff = compare_with_pytorch(model, path, validation)
    if not max_abs_diff <= ONNX_TOLERANCE:
        raise RuntimeError(
            f"{path}: ONNX Runtime differs from PyTorch by {max_abs_diff:.2e} (> {ONNX_TOLERANCE}) on the "
            "validation sentences; the export is wrong, please report it with your encoder's model type."
        )
    quantized_path = None
    if quantize:
        quantized_path = quantize_onnx(path, os.path.join(save_directory, QUANTIZED_ONNX_FILE))
    return OnnxExport(path=path, max_abs_diff=max_abs_diff, quantized_path=quantized_path)


def quantize_onnx(onnx_path, output_path) -> str:
    """int8 dynamic quantization (weights int8, activations quantized on the fly): about 4x smaller and
    usually faster on CPU, at some accuracy cost (docs/deploy.md measures it on the demo model). The graph
    first goes through ONNX Runtime's own pre-processing (shape inference, graph optimisation), as its
    quantization guide recommends."""
    quantization = require("onnxruntime.quantization", "Quantizing an ONNX model")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as scratch:
        prepared = os.path.join(scratch, "prepared.onnx")
        # Symbolic shape inference does not follow the exporter's dynamic dims; ONNX's own inference does.
        quant_pre_process(str(onnx_path), prepared, skip_symbolic_shape=True)
        quantization.quantize_dynamic(prepared, str(output_path), weight_type=quantization.QuantType.QInt8)
    return str(output_path)


@torch.inference_mode()
def compare_with_pytorch(model, onnx_path, batch: dict[str, torch.Tensor]) -> float:
    """Max abs difference, over every output, between ONNX Runtime on `onnx_path` and `model`."""
    ort = require("onnxruntime", "Running an ONNX model")
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    got = session.run(None, {name: batch[name].cpu().numpy() for name in names})
    was_training = model.training
    model.eval()
    try:
        outputs = model(**{name: batch[name].to(model.device) for name in names})
    finally:
        model.train(was_training)
    expected = [outputs.logits[name] for name in model.config.head_task_names] + [outputs.sentence_embedding]
    return max(
        (torch.from_numpy(g) - e.float().cpu()).abs().max().item() for g, e in zip(got, expected, strict=True)
    )


def _example_batch(model, input_names, tokenizer, sentences) -> dict[str, torch.Tensor]:
    """A padded batch of at least 2 rows (torch.export specialises dimensions of size 0 and 1)."""
    if tokenizer is not None:
        encoded = tokenizer(list(sentences), padding=True, truncation=True, return_tensors="pt")
        return {name: encoded[name] for name in input_names}
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, model.config.encoder.vocab_size, (3, 9), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 5:] = 0
    batch = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "token_type_ids": torch.zeros_like(input_ids),
    }
    return {name: batch[name] for name in input_names}


__all__ = [
    "EMBEDDING_OUTPUT",
    "ONNX_FILE",
    "ONNX_TOLERANCE",
    "QUANTIZED_ONNX_FILE",
    "TASKS_METADATA_KEY",
    "OnnxExport",
    "compare_with_pytorch",
    "export_onnx",
    "logits_output_name",
    "onnx_input_names",
    "quantize_onnx",
]
