#!/usr/bin/env python
"""`OnnxPredictor.encode` against sentence-transformers' own ONNX backend, on the same encoder weights.

    OMP_NUM_THREADS=1 python benchmarks/bench_onnx_encode.py --peer-python /path/to/venv/bin/python

Ours: a fresh hydrabert model from all-MiniLM-L6-v2 (`from_encoder_pretrained`: its mean pooling, the
projection at the identity), exported by `export_onnx` (ONNX Runtime's fused graph), run by
`OnnxPredictor(threads=1).encode`; its embeddings are checked against PyTorch `encode` (max |diff| <= 1e-4).
The peer: `SentenceTransformer(MiniLM, backend="onnx")` with its own O2-optimised export
(`export_optimized_onnx_model(model, "O2", ...)`), one ONNX Runtime thread, what a user of
sentence-transformers would pick. Its backend needs optimum-onnx, which pins transformers<4.58 and cannot be
installed beside hydrabert: it runs in another Python environment (`--peer-python`, e.g. a venv with
`pip install "transformers<4.58" "optimum-onnx[onnxruntime]" sentence-transformers`), launched from here, on
the same sentences, batch size and truncation. Both sort by length. The two pool differently (ours ends in
tanh, theirs normalises), so only speed is compared. Best of `--rounds` per side; ratio > 1: ours is faster.
Without a peer environment the line records ours and says why the peer is missing.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time

import _speed

PEER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "st_onnx_peer.py")
TOLERANCE = 1e-4


def parse_args(argv: list[str] | None = None):
    parser = _speed.argument_parser(__doc__, max_length=64)
    parser.add_argument(
        "--peer-python",
        default=os.environ.get("HYDRABERT_ST_ONNX_PYTHON"),
        help="python of an environment with sentence-transformers' ONNX backend (default: $HYDRABERT_ST_ONNX_PYTHON)",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--limit", type=int, default=None, help="first N SST-2 test sentences (default: all)")
    return _speed.parse(parser, argv)


def sst2_test(data_root) -> list[str]:
    path = os.path.join(data_root or str(_speed.ROOT.parent / "shared" / "data"), "sst2", "stsa.binary.test")
    with open(path, encoding="utf-8") as handle:
        return [line.split(" ", 1)[1].strip() for line in handle if line.strip()]


def ours(sentences: list[str], args, folder: str) -> dict:
    import numpy as np
    from transformers import AutoTokenizer

    from hydrabert import HydraBertModel
    from hydrabert.export import OnnxPredictor

    path = _speed.minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = HydraBertModel.from_encoder_pretrained(path, tasks={"task": {"num_labels": 2}}).eval()
    report = model.export_onnx(folder, tokenizer=tokenizer)
    predictor = OnnxPredictor(folder, threads=1)
    common = {"batch_size": args.batch_size, "max_length": args.max_length, "show_progress_bar": False}
    predictor.encode(sentences[:64], **common)  # warm-up
    seconds = []
    for _ in range(args.rounds):
        start = time.perf_counter()
        embeddings = predictor.encode(sentences, **common)
        seconds.append(time.perf_counter() - start)
    reference = model.encode(sentences, tokenizer, **common).numpy()
    return {
        "seconds": seconds,
        "max_abs_diff_vs_pytorch": float(np.abs(embeddings - reference).max()),
        "fused_nodes": getattr(report, "fused_nodes", None),
    }


def peer(sentences: list[str], args, work: str) -> dict:
    if not args.peer_python:
        return {
            "skipped": "no --peer-python: sentence-transformers' ONNX backend needs optimum-onnx (transformers<4.58)"
        }
    sentences_json = os.path.join(work, "sentences.json")
    with open(sentences_json, "w", encoding="utf-8") as handle:
        json.dump(sentences, handle)
    command = [args.peer_python, PEER_SCRIPT, _speed.minilm_path(), work, sentences_json]
    command += [str(args.batch_size), str(args.max_length), str(args.rounds)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": ""}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        return {"failed": done.stderr[-1500:]}
    line = json.loads(done.stdout.strip().splitlines()[-1])
    return {"seconds": line["seconds"], "versions": line["versions"]}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    _speed.setup(args)
    sentences = sst2_test(args.data_root)[: args.limit]
    failures = []
    with tempfile.TemporaryDirectory(prefix="bench_onnx_encode_") as work:
        mine = ours(sentences, args, os.path.join(work, "onnx"))
        theirs = peer(sentences, args, work)
    if mine["max_abs_diff_vs_pytorch"] > TOLERANCE:
        failures.append(
            f"OnnxPredictor.encode differs from PyTorch encode by {mine['max_abs_diff_vs_pytorch']:.2e}"
        )
    if "failed" in theirs:
        failures.append(f"the sentence-transformers side failed: {theirs['failed'][-300:]}")
    result = {
        "benchmark": "onnx_encode",
        "what": "OnnxPredictor.encode (fused graph) vs SentenceTransformer(backend='onnx') O2, sentences/s",
        "sentences": len(sentences),
        "hydrabert_sentences_per_s": round(len(sentences) / min(mine["seconds"]), 2),
        "peer_sentences_per_s": round(len(sentences) / min(theirs["seconds"]), 2)
        if "seconds" in theirs
        else None,
        "ratio": round(min(theirs["seconds"]) / min(mine["seconds"]), 3) if "seconds" in theirs else None,
        "hydrabert": mine,
        "peer": theirs,
        "settings": {
            "batch_size": args.batch_size,
            "max_length": args.max_length,
            "threads": 1,
            "rounds": args.rounds,
        },
    }
    return _speed.emit(result, failures)


if __name__ == "__main__":
    main()
