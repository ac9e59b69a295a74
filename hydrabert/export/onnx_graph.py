"""The whole multi-task model as one ONNX graph: one encoder pass, every task's logits and the
sentence embedding as outputs, dynamic batch and sequence axes; optional int8 dynamic quantization.

Any hydrabert configuration exports (mean pooling and adapters included), so this is the fallback
whenever a standard architecture cannot express the model.
"""

from __future__ import annotations

import contextlib
import json
import logging
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
    session_kwargs,
)

logger = logging.getLogger(__name__)

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
    # Fused operator -> count in the written graph (empty when fusion was off or not applicable).
    fused_nodes: dict | None = None


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


@contextlib.contextmanager
def _quiet_logger(name: str):
    """`name`'s warnings left out for the duration: for another library's notes that never apply here."""
    log = logging.getLogger(name)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def export_onnx(
    model,
    save_directory,
    tokenizer=None,
    quantize: bool = False,
    validation_sentences: list[str] | None = None,
    fuse: bool = True,
    save_tokenizer: bool = True,
) -> OnnxExport:
    """Write `model.onnx` (and `model_quantized.onnx` with `quantize=True`, quantized from it) to
    `save_directory`, with the tokenizer when given. With `fuse` (the default) the graph is ONNX Runtime's
    fused one (`fuse_transformer_graph`). The graph is checked with ONNX Runtime against PyTorch on real
    sentences (with a tokenizer) or a padded random batch; a difference above 1e-4 or a different label
    raises. `save_tokenizer=False` uses the tokenizer for the check only (the graph finds it elsewhere, as
    in `<model>/onnx/`)."""
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
        with warnings.catch_warnings(), _quiet_logger("torch.onnx._internal.exporter._registration"):
            # torch.onnx notes that axes sharing a constraint keep one name: that is the intent here.
            warnings.filterwarnings("ignore", message=".*will not be used, since it shares the same shape")
            # torch 2.13's exporter calls its own deprecated pytree API; nothing a caller can change.
            warnings.filterwarnings("ignore", message="`isinstance\\(treespec, LeafSpec\\)` is deprecated")
            # (the quiet logger: "torchvision is not installed. Skipping torchvision::nms", one line per
            # torchvision operator, which a BERT graph never contains)
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
    fused_nodes = fuse_transformer_graph(path, model.config.encoder) if fuse else {}
    if tokenizer is not None and save_tokenizer:
        tokenizer.save_pretrained(save_directory)

    validation = _example_batch(model, input_names, tokenizer, validation_sentences or VALIDATION_SENTENCES)
    max_abs_diff, label_mismatches = _compare(model, path, validation)
    if not max_abs_diff <= ONNX_TOLERANCE or any(label_mismatches.values()):
        raise RuntimeError(
            f"{path}: ONNX Runtime differs from PyTorch by {max_abs_diff:.2e} (tolerance {ONNX_TOLERANCE}), "
            f"labels differing per task {label_mismatches}, on the validation "
            f"{'sentences' if tokenizer is not None else 'random ids'}; the export is wrong, please report "
            "it with your encoder's model type."
        )
    quantized_path = None
    if quantize:
        quantized_path = quantize_onnx(path, os.path.join(save_directory, QUANTIZED_ONNX_FILE))
    return OnnxExport(
        path=path, max_abs_diff=max_abs_diff, quantized_path=quantized_path, fused_nodes=fused_nodes
    )


# The fused operators ONNX Runtime's BERT optimizer writes, counted after fusion (LayerNormalization: the
# residual layer norms the graph keeps unfused, see NO_SKIP_LAYER_NORM_FUSION).
FUSED_OPERATORS = (
    "Attention",
    "SkipLayerNormalization",
    "LayerNormalization",
    "BiasGelu",
    "EmbedLayerNormalization",
)

# Families whose layers the optimizer's "bert" pattern matches (same LayerNorm/Gelu/MatMul layout).
_BERT_LIKE = {"bert", "roberta", "xlm-roberta", "camembert", "distilbert", "electra", "mpnet"}


def fuse_transformer_graph(path, encoder_config) -> dict[str, int]:
    """Rewrite the graph at `path` in place with ONNX Runtime's transformer optimizer and return the number of
    each fused operator; a BiasGelu count below one per layer warns, so an exporter change that breaks the
    pattern is seen. SkipLayerNormalization is not fused (slower on CPU: NO_SKIP_LAYER_NORM_FUSION).

    Why ONNX Runtime's optimizer and not optimum's ORTOptimizer: ORTOptimizer calls this same
    `optimize_model`, but it needs an optimum ONNX config for the model type and works on optimum's own
    export, and hydrabert's graph (several task heads, an embedding output) is not one of its architectures;
    optimum-onnx 0.1.0 also pins transformers<4.58.
    `opt_level=0`: only the fusions are written; the generic graph optimisations are left to the session
    (ORT_ENABLE_ALL by default), which keeps the file portable across ONNX Runtime versions and CPUs.

    Measured on the demo model (docs/deploy.md): the dynamo export fuses every BiasGelu but not the Attention
    block (transformers 5's mask and score scaling are not the pattern ORT matches); a prototype that made them
    match fused all of them and ran under 5% faster on one CPU thread. So the Attention count is logged, not
    required."""
    optimizer = require("onnxruntime.transformers.optimizer", "Fusing the ONNX graph")
    model_type = getattr(encoder_config, "model_type", "bert")
    if model_type not in _BERT_LIKE:
        logger.warning("ONNX fusion skipped: %s is not a BERT-like encoder ONNX Runtime fuses", model_type)
        return {}
    from onnxruntime.transformers.fusion_options import FusionOptions

    options = FusionOptions("bert")
    options.enable_skip_layer_norm = False
    fused = optimizer.optimize_model(
        str(path),
        model_type="bert",
        num_heads=encoder_config.num_attention_heads,
        hidden_size=encoder_config.hidden_size,
        opt_level=0,
        optimization_options=options,
    )
    counts = {op: sum(node.op_type == op for node in fused.model.graph.node) for op in FUSED_OPERATORS}
    fused.save_model_to_file(str(path))
    logger.info("ONNX graph %s fused: %s", path, counts)
    layers = encoder_config.num_hidden_layers
    if counts["BiasGelu"] < layers:
        warnings.warn(
            f"ONNX Runtime fused {counts['BiasGelu']} BiasGelu nodes, expected one per layer "
            f"({layers}): the exported graph no longer matches its BERT pattern, so the "
            "ONNX model runs slower than it should. Please report it with your torch/onnxruntime versions.",
            stacklevel=2,
        )
    return counts


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
        # Per-channel int8 weights: on the demo model per-tensor lost 0.71 pt of SST-2 test accuracy,
        # per-channel 0.33 pt, at the same speed (docs/deploy.md).
        quantization.quantize_dynamic(
            prepared, str(output_path), weight_type=quantization.QuantType.QInt8, per_channel=True
        )
    return str(output_path)


def compare_with_pytorch(model, onnx_path, batch: dict[str, torch.Tensor]) -> float:
    """Max abs difference, over every output, between ONNX Runtime on `onnx_path` and `model`."""
    return _compare(model, onnx_path, batch)[0]


@torch.inference_mode()
def _compare(model, onnx_path, batch: dict[str, torch.Tensor]) -> tuple[float, dict[str, int]]:
    """Max abs difference over every output between ONNX Runtime on `onnx_path` and `model`, and per task
    the rows whose label (argmax of the logits) differs."""
    ort = require("onnxruntime", "Running an ONNX model")
    options = ort.SessionOptions()
    # Set explicitly: ONNX Runtime's default is every core, which a small check batch does not need and
    # which oversubscribes a CPU shared with torch.
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    providers = ["CPUExecutionProvider"]
    session = ort.InferenceSession(str(onnx_path), options, providers=providers, **session_kwargs(providers))
    names = [i.name for i in session.get_inputs()]
    got = session.run(None, {name: batch[name].cpu().numpy() for name in names})
    was_training = model.training
    model.eval()
    try:
        outputs = model(**{name: batch[name].to(model.device) for name in names})
    finally:
        model.train(was_training)
    tasks = model.config.head_task_names
    expected = [outputs.logits[name] for name in tasks] + [outputs.sentence_embedding]
    got = [torch.from_numpy(g) for g in got]
    max_abs_diff = max((g - e.float().cpu()).abs().max().item() for g, e in zip(got, expected, strict=True))
    label_mismatches = {
        # Multi-label tasks threshold each logit at 0; the others take the argmax.
        name: int(
            ((g > 0) != (e.float().cpu() > 0)).any(-1).sum().item()
            if model.config.tasks[name].get("problem_type") == "multi_label_classification"
            else (g.argmax(-1) != e.float().cpu().argmax(-1)).sum().item()
        )
        for name, g, e in zip(tasks, got, expected, strict=False)
    }
    return max_abs_diff, label_mismatches


def _example_batch(model, input_names, tokenizer, sentences) -> dict[str, torch.Tensor]:
    """A padded batch of at least 2 rows (torch.export specialises dimensions of size 0 and 1)."""
    if tokenizer is not None:
        # Right padding with a 0/1 mask: the layout ONNX Runtime's fused kernels expect, and the one
        # OnnxPredictor feeds.
        encoded = tokenizer(
            list(sentences), padding=True, truncation=True, padding_side="right", return_tensors="pt"
        )
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
    "FUSED_OPERATORS",
    "ONNX_FILE",
    "ONNX_TOLERANCE",
    "QUANTIZED_ONNX_FILE",
    "TASKS_METADATA_KEY",
    "OnnxExport",
    "compare_with_pytorch",
    "export_onnx",
    "fuse_transformer_graph",
    "logits_output_name",
    "onnx_input_names",
    "quantize_onnx",
]
