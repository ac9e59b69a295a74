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


def parse_args(argv: list[str] | None = None):
    parser = _speed.argument_parser(__doc__, max_length=128)
    parser.add_argument("--rounds", type=int, default=2)
    return _speed.parse(parser, argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    work = _speed.demo_workload(args)
    sentences = list(work.loaded["sentiment"].splits["test"]["text"])
    model = _speed.hydrabert_model(work.path, {}).eval()
    st_model = sentence_transformer(work.path, args.max_length)
    batch = {"batch_size": args.batch_size, "show_progress_bar": False}
    outputs, seconds, cpu_seconds = _speed.race(
        {
            "hydrabert": lambda s: model.encode(s, work.tokenizer, max_length=args.max_length, **batch),
            "peer": lambda s: st_model.encode(s, convert_to_tensor=True, **batch),
        },
        sentences,
        args.rounds,
    )

    failures = []
    diff = (outputs["hydrabert"] - outputs["peer"].to(outputs["hydrabert"].dtype)).abs().max().item()
    if outputs["hydrabert"].shape != outputs["peer"].shape or diff > 1e-4:
        failures.append(
            f"embeddings differ: shapes {tuple(outputs['hydrabert'].shape)} vs {tuple(outputs['peer'].shape)}, "
            f"max |diff| {diff:.2e}"
        )
    what = "sentences/s: HydraBertModel.encode vs SentenceTransformer.encode (CLS + Dense tanh)"
    result = {
        **_speed.race_headline("encode", what, len(sentences), seconds, target=1.0),
        **_speed.round_times(seconds, cpu_seconds),
        "sentences": len(sentences),
        "embedding_max_abs_diff": diff,
        "settings": _speed.settings_of(args, "batch_size", "max_length", "rounds", "threads"),
    }
    return _speed.emit(result, failures)


if __name__ == "__main__":
    main()
