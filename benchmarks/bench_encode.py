#!/usr/bin/env python
"""Sentence embeddings: `HydraBertModel.encode()` vs sentence-transformers' `SentenceTransformer.encode()`.

    python benchmarks/bench_encode.py | tee benchmarks/results/speed_encode.json

Same MiniLM weights, the same sentences (the 1821 of the labelled SST-2 test set), batch 32, the same
max_length, one process. For the same math the sentence-transformers model is built as Transformer +
CLS pooling + Dense(384 -> 384, tanh) initialised with the checkpoint's pooler weights: exactly what a
fresh hydrabert model's embedding is (`tanh(Linear(h_[CLS]))`, the projection initialised from the
pooler). The two sides run in turns, `--rounds` times each (A B B A ...), so drift in a shared machine's
load hits both alike; each side's time is its total over the rounds.

Check (exit 1 when it fails): the embeddings match (max |difference| <= 1e-4).
"""

from __future__ import annotations

import argparse

import _speed
import torch


def sentence_transformer(path: str, max_length: int):
    """Transformer + CLS pooling + Dense(tanh) with the checkpoint's pooler weights: hydrabert's embedding."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Dense, Pooling, Transformer
    from transformers import AutoModel

    pooler = AutoModel.from_pretrained(path).pooler.dense
    transformer = Transformer(path, max_seq_length=max_length)
    dense = Dense(
        transformer.get_embedding_dimension(),
        pooler.out_features,
        activation_function=torch.nn.Tanh(),
        init_weight=pooler.weight.detach().clone(),
        init_bias=pooler.bias.detach().clone(),
    )
    pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="cls")
    return SentenceTransformer(modules=[transformer, pooling, dense], device="cpu").eval()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2)
    _speed.add_common_arguments(parser)
    args = parser.parse_args()
    _speed.setup(args)

    from transformers import AutoTokenizer

    path = _speed.minilm_path()
    sentences = _speed.sst2_test_sentences(args.data_root)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = _speed.hydrabert_model(path, {}).eval()
    st_model = sentence_transformer(path, args.max_length)
    batch = {"batch_size": args.batch_size, "show_progress_bar": False}

    # Warm-up on a few sentences (thread pools, allocator), both sides alike.
    model.encode(sentences[:64], tokenizer, **batch)
    st_model.encode(sentences[:64], **batch)
    outputs, seconds, cpu_seconds = _speed.alternate(
        {
            "hydrabert": lambda: model.encode(sentences, tokenizer, max_length=args.max_length, **batch),
            "peer": lambda: st_model.encode(sentences, convert_to_tensor=True, **batch),
        },
        args.rounds,
    )

    failures = []
    diff = (outputs["hydrabert"] - outputs["peer"].to(outputs["hydrabert"].dtype)).abs().max().item()
    if outputs["hydrabert"].shape != outputs["peer"].shape or diff > 1e-4:
        failures.append(
            f"embeddings differ: shapes {tuple(outputs['hydrabert'].shape)} vs {tuple(outputs['peer'].shape)}, "
            f"max |diff| {diff:.2e}"
        )
    _speed.emit(
        {
            "benchmark": "encode",
            "what": "sentences/s: HydraBertModel.encode vs SentenceTransformer.encode (CLS + Dense tanh)",
            **_speed.throughput(len(sentences), seconds),
            "target": 1.0,
            **_speed.round_times(seconds, cpu_seconds),
            "sentences": len(sentences),
            "embedding_max_abs_diff": diff,
            "settings": {
                "batch_size": args.batch_size,
                "max_length": args.max_length,
                "rounds": args.rounds,
                "threads": args.threads,
            },
        },
        failures,
    )


if __name__ == "__main__":
    main()
