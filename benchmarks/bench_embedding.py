#!/usr/bin/env python
"""Sentence-embedding quality: STS Benchmark Spearman of `encode()` cosine similarities.

    python benchmarks/bench_embedding.py --fresh                       # fresh models vs the published one
    python benchmarks/bench_embedding.py --model outputs/demo [...]    # trained hydrabert folders
    python benchmarks/bench_embedding.py --model outputs/demo --export  # + its sentence-transformers export

Each row embeds both sentences of every STS-B pair (test split by default, ../shared/data/stsb: 1,379
pairs, gold scores 0-5) and reports the Spearman (and Pearson) correlation, x 100 as in the STS literature
left aside: plain correlations in [-1, 1], of the pair's cosine similarity against its gold score.

`--fresh` measures, on MiniLM (all-MiniLM-L6-v2, the offline checkpoint), what decides a fresh model's
default embedding:
  - `published`: sentence-transformers `SentenceTransformer(path)` as published (mean pooling, normalize);
  - hydrabert `from_encoder_pretrained` with each pooling (cls / mean), projection initialisation
    (the checkpoint's pooler / identity) and activation (tanh / identity).
`--export` also writes each trained model's sentence-transformers folder (`export_sentence_transformer`) and
scores `SentenceTransformer(folder).encode`: the exported embedding must give the same Spearman (to 1e-4; exit
1 otherwise). Prints one JSON line (with the CPU), also written to `--output` when given.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys

import numpy as np
from scipy.stats import pearsonr, spearmanr

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _speed  # noqa: E402

DEFAULT_STSB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "stsb")


def sts_pairs(path: str) -> tuple[list[str], list[str], np.ndarray]:
    """(first sentences, second sentences, gold scores) of an STS-B file: tab-separated, no header, no
    quoting (some sentences hold a lone `"`), 7 or 9 fields, the score in field 5 (see its SOURCE.md)."""
    first, second, scores = [], [], []
    with open(path, encoding="utf-8", newline="") as handle:
        for row in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
            if row:
                scores.append(float(row[4]))
                first.append(row[5])
                second.append(row[6])
    return first, second, np.asarray(scores)


def correlations(first: np.ndarray, second: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    a = first / np.linalg.norm(first, axis=1, keepdims=True)
    b = second / np.linalg.norm(second, axis=1, keepdims=True)
    cosine = (a * b).sum(axis=1)
    return {
        "spearman": round(float(spearmanr(cosine, scores).statistic), 4),
        "pearson": round(float(pearsonr(cosine, scores).statistic), 4),
    }


def hydrabert_row(model, tokenizer, pairs, max_length: int | None) -> dict[str, float]:
    first, second, scores = pairs
    kwargs = {
        "batch_size": 64,
        "max_length": max_length,
        "convert_to_numpy": True,
        "show_progress_bar": False,
    }
    return correlations(
        model.encode(first, tokenizer, **kwargs), model.encode(second, tokenizer, **kwargs), scores
    )


def export_row(model, tokenizer, pairs) -> dict[str, float]:
    """Spearman/Pearson of `SentenceTransformer(folder).encode` on the model's exported folder (unrounded
    embeddings compared through the same correlations)."""
    import tempfile

    from sentence_transformers import SentenceTransformer

    first, second, scores = pairs
    with tempfile.TemporaryDirectory() as folder:
        model.export_sentence_transformer(folder, tokenizer=tokenizer)
        exported = SentenceTransformer(folder, device="cpu")
        return correlations(
            exported.encode(first, batch_size=64), exported.encode(second, batch_size=64), scores
        )


def fresh_rows(path: str, pairs, max_length: int | None) -> dict[str, dict]:
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer

    from hydrabert import HydraBertModel

    first, second, scores = pairs
    published = SentenceTransformer(path, device="cpu")
    rows = {
        "published (sentence-transformers: mean pooling, normalize)": correlations(
            published.encode(first, batch_size=64), published.encode(second, batch_size=64), scores
        )
    }
    tokenizer = AutoTokenizer.from_pretrained(path)
    for pooling in ("cls", "mean"):
        for init in ("pooler", "identity"):
            for activation in ("tanh", "identity"):
                model = HydraBertModel.from_encoder_pretrained(
                    path, tasks={}, pooling=pooling, embedding_activation=activation
                ).eval()
                if init == "identity":
                    with torch.no_grad():
                        model.pooler.dense.weight.copy_(torch.eye(model.pooler.dense.weight.shape[0]))
                        model.pooler.dense.bias.zero_()
                elif pooling == "mean":
                    # from_encoder_pretrained copies the pooler only for cls pooling: do it here to measure it
                    from transformers import AutoModel

                    pooler = AutoModel.from_pretrained(path).pooler.dense
                    with torch.no_grad():
                        model.pooler.dense.load_state_dict(pooler.state_dict())
                name = f"hydrabert pooling={pooling} projection={init} activation={activation}"
                rows[name] = hydrabert_row(model, tokenizer, pairs, max_length)
                print(name, rows[name], file=sys.stderr)
    return rows


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--stsb", default=DEFAULT_STSB, help="folder with sts-{train,dev,test}.csv")
    parser.add_argument("--split", default="test", choices=("train", "dev", "test"))
    parser.add_argument(
        "--fresh", action="store_true", help="fresh models from --encoder and the published one"
    )
    parser.add_argument("--encoder", default=None, help="encoder checkpoint for --fresh (default: MiniLM)")
    parser.add_argument(
        "--model", action="append", default=[], help="a trained hydrabert folder (repeatable)"
    )
    parser.add_argument("--max_length", type=int, default=None, help="truncation (default: the model's own)")
    parser.add_argument(
        "--export", action="store_true", help="also score each model's sentence-transformers export"
    )
    parser.add_argument("--output", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    _speed.quiet()
    from transformers import AutoTokenizer

    from hydrabert import HydraBertModel

    pairs = sts_pairs(os.path.join(args.stsb, f"sts-{args.split}.csv"))
    rows = {}
    if args.fresh:
        rows.update(fresh_rows(args.encoder or _speed.minilm_path(), pairs, args.max_length))
    failures = []
    for folder in args.model:
        model = HydraBertModel.from_pretrained(folder).eval()
        tokenizer = AutoTokenizer.from_pretrained(folder)
        rows[folder] = hydrabert_row(model, tokenizer, pairs, args.max_length)
        print(folder, rows[folder], file=sys.stderr)
        if args.export:
            rows[f"{folder} (sentence-transformers export)"] = exported = export_row(model, tokenizer, pairs)
            if abs(exported["spearman"] - rows[folder]["spearman"]) > 1e-4:
                failures.append(
                    f"{folder}: the export's Spearman {exported} differs from encode()'s {rows[folder]}"
                )
    result = {
        "benchmark": "embedding_stsb",
        "split": args.split,
        "pairs": len(pairs[2]),
        "rows": rows,
        "machine": _speed.machine(),
        "failures": failures,
    }
    line = json.dumps(result)
    print(line)
    if args.output:
        with open(args.output, "w") as handle:
            handle.write(line + "\n")
    if failures:
        sys.exit("\n".join(failures))
    return result


if __name__ == "__main__":
    main()
