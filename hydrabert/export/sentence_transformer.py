"""The encoder and sentence embedding of a hydrabert model as a sentence-transformers model:
Transformer -> Pooling (cls or mean) -> Dense (tanh or identity) [-> Normalize].

Each hydrabert step has a sentence-transformers module computing the same function, so
`SentenceTransformer(folder).encode(...)` equals `model.encode(...)` with no remote code. The adapter
(a LayerNorm -> down -> GELU -> up bottleneck plus a residual from its input) has no such module:
a residual around a chain of modules is not expressible, so a model with one is refused.
"""

from __future__ import annotations

import os
import tempfile

import torch
from torch import nn
from transformers import AutoModel

from ._common import ExportError, check_hydrabert_model, require, source_name

# Embeddings of the export and of hydrabert may differ by at most this (float32).
EMBEDDING_TOLERANCE = 1e-5


def build_sentence_transformer(
    model, tokenizer, normalize: bool = False, source: str | None = None, model_id=None
):
    """A `SentenceTransformer` (in memory) computing `model.encode(..., normalize=normalize)`."""
    check_hydrabert_model(model)
    st = require("sentence_transformers", "Exporting a sentence-transformers model")
    modules_of = require(
        "sentence_transformers.sentence_transformer.modules", "Exporting a sentence-transformers model"
    )
    config = model.config
    if config.adapter_size:
        raise ExportError(
            f"This model has an adapter (adapter_size={config.adapter_size}): its residual bottleneck "
            "(x + up(GELU(down(LayerNorm(x))))) has no sentence-transformers module, so the embedding cannot be "
            "exported exactly; export_onnx exports the whole model, sentence embedding included."
        )
    if tokenizer is None:
        raise ValueError("export_sentence_transformer needs the model's tokenizer (tokenizer=...)")
    source = source or source_name(model)
    with tempfile.TemporaryDirectory() as encoder_dir:
        # The Transformer module loads a standard checkpoint folder: the encoder and its tokenizer.
        standard_encoder(model).save_pretrained(encoder_dir)
        tokenizer.save_pretrained(encoder_dir)
        transformer = modules_of.Transformer(encoder_dir, max_seq_length=_max_seq_length(model, tokenizer))
    dense = model.pooler.dense
    modules = [
        transformer,
        modules_of.Pooling(config.encoder.hidden_size, pooling_mode=config.pooling),
        modules_of.Dense(
            dense.in_features,
            dense.out_features,
            activation_function=nn.Tanh() if config.embedding_activation == "tanh" else nn.Identity(),
            init_weight=nn.Parameter(dense.weight.detach().clone()),
            init_bias=nn.Parameter(dense.bias.detach().clone()),
        ),
    ]
    if normalize:
        modules.append(modules_of.Normalize())
    card_data = st.SentenceTransformerModelCardData(
        local_files_only=True,  # the card names the source itself: no Hub look-ups at export time
        model_id=model_id,
        model_name=f"Sentence encoder of the multi-task hydrabert model {source}" if source else None,
        tags=["sentence-transformers", "sentence-similarity", "feature-extraction", "hydrabert"],
    )
    if source and source.count("/") == 1 and not os.path.exists(source):
        card_data.base_model = source
    sentence_model = st.SentenceTransformer(
        modules=modules, device=str(model.device), model_card_data=card_data
    )
    return sentence_model.to(dense.weight.dtype).eval()


def export_sentence_transformer(
    model, save_directory, tokenizer=None, normalize: bool = False, source: str | None = None, model_id=None
):
    """Write a folder that `SentenceTransformer(folder)` loads with no remote code; its `encode()` equals
    `model.encode(..., normalize=normalize)`. The card is sentence-transformers' own. Returns the model."""
    sentence_model = build_sentence_transformer(model, tokenizer, normalize, source, model_id)
    sentence_model.save(str(save_directory))
    return sentence_model


def standard_encoder(model):
    """The encoder as its family's plain `AutoModel`, a complete checkpoint of it. Where hydrabert's projection is
    exactly the family's pooler (cls pooling, tanh, same width) it becomes that pooler, as in a BERT checkpoint,
    so `pooler_output` is the sentence embedding. Otherwise the family's pooler is there with zero weights: the
    sentence-transformers pipeline never reads it, and a checkpoint without it is reported at every load as
    missing weights "newly initialized" at random (zeros, not random: a `pooler_output` of zeros cannot pass
    for an embedding). A family without a pooler gets the encoder as it is."""
    config = model.config
    full = AutoModel.from_config(config.encoder).to(model.pooler.dense.weight.dtype)
    pooler_dense = getattr(getattr(full, "pooler", None), "dense", None)
    if not isinstance(pooler_dense, nn.Linear):
        return model.encoder
    exact = (
        config.pooling == "cls"
        and config.embedding_activation == "tanh"
        and pooler_dense.weight.shape == model.pooler.dense.weight.shape
    )
    state = dict(model.encoder.state_dict())
    for name, param in pooler_dense.named_parameters():
        state[f"pooler.dense.{name}"] = (
            getattr(model.pooler.dense, name) if exact else torch.zeros_like(param)
        )
    full.load_state_dict(state, strict=True)
    return full


def _max_seq_length(model, tokenizer) -> int | None:
    """Where `model.encode` truncates: the tokenizer's limit (tokenizers without one report a huge
    sentinel, int(1e30); then the encoder's position limit)."""
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and limit < 1_000_000:
        return limit
    return getattr(model.config.encoder, "max_position_embeddings", None)


__all__ = [
    "EMBEDDING_TOLERANCE",
    "build_sentence_transformer",
    "export_sentence_transformer",
    "standard_encoder",
]
