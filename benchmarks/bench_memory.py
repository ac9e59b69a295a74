#!/usr/bin/env python
"""Do `encode()` and `predict()` stream? Peak memory over 10k and 100k sentences.

Each (call, size) runs in a fresh process: load the model and tokenizer, make N synthetic sentences
(seeded, 4-24 words), then run `model.encode(..., normalize=True)` or `model.predict(...)` once while a thread samples
the resident set size (RSS) every 5 ms. `growth` is the peak RSS during the call minus the RSS just
before it; for `encode` the result itself is an (N, dim) float32 tensor (`output_mb`), so streaming means
`growth - output_mb` stays the same from 10k to 100k sentences. `predict` returns one small dict per
sentence; its growth is reported per sentence. Prints one JSON line.

    python benchmarks/bench_memory.py                   # MiniLM (all-MiniLM-L6-v2), 10k and 100k
    python benchmarks/bench_memory.py --model tiny      # a random 2-layer BERT with MiniLM's width
    python benchmarks/bench_memory.py --sizes 1000 5000 --calls encode
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import resource
import subprocess
import sys
import threading
import time

import _speed  # sets the offline environment before transformers is imported

WORDS = (
    "the a an film movie story plot actor actress director scene music score script camera light dark "
    "good bad great awful brilliant boring funny sad moving slow fast long short beautiful ugly clever "
    "dull fresh tired warm cold honest fake simple complex and but or because while although when if "
    "what who where why how which is was are were be been has have had will would can could should "
    "city river mountain country capital year number person name place company team game song book "
    "question answer reason result method data model paper study analysis experiment theory evidence"
).split()
# Overhead that may grow from 10k to 100k sentences without counting as "not streaming" (allocator noise).
TOLERANCE_MB = 64.0
TASKS = {"sentiment": {"labels": ["negative", "positive"]}, "topic": {"num_labels": 6}}


def sentences(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(4, 24))) for _ in range(n)]


def rss_mb() -> float:
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakSampler(threading.Thread):
    def __init__(self, interval: float = 0.005):
        super().__init__(daemon=True)
        self.interval, self.peak, self._done = interval, rss_mb(), threading.Event()

    def run(self):
        while not self._done.is_set():
            self.peak = max(self.peak, rss_mb())
            time.sleep(self.interval)

    def stop(self) -> float:
        self._done.set()
        self.join()
        self.peak = max(self.peak, rss_mb())
        return self.peak


def build(model_name: str):
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from hydrabert import HydraBertModel

    path = _speed.minilm_path()
    if model_name == "tiny":
        import tempfile

        torch.manual_seed(0)
        folder = tempfile.mkdtemp(prefix="bench_memory_")
        config = BertConfig.from_pretrained(path, num_hidden_layers=2)
        BertModel(config).save_pretrained(folder)
        path = folder
    model = HydraBertModel.from_encoder_pretrained(path, tasks=TASKS).eval()
    return model, AutoTokenizer.from_pretrained(_speed.minilm_path())


def child(call: str, n: int, model_name: str, batch_size: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    _speed.quiet()
    model, tokenizer = build(model_name)
    texts = sentences(n)
    model.encode(texts[:64], tokenizer)  # warm-up: one-off allocations are not the call's growth
    gc.collect()
    before = rss_mb()
    sampler = PeakSampler()
    sampler.start()
    start = time.perf_counter()
    if call == "encode":
        result = model.encode(
            texts, tokenizer, batch_size=batch_size, normalize=True, show_progress_bar=False
        )
        assert result.shape == (n, model.config.embedding_dim)
    else:
        result = model.predict(texts, tokenizer, batch_size=batch_size, show_progress_bar=False)
        assert len(result) == n
    seconds = time.perf_counter() - start
    peak = sampler.stop()
    output_mb = n * model.config.embedding_dim * 4 / 2**20 if call == "encode" else None
    return {
        "call": call,
        "sentences": n,
        "seconds": round(seconds, 1),
        "rss_before_mb": round(before, 1),
        "peak_rss_mb": round(peak, 1),
        "growth_mb": round(peak - before, 1),
        "output_mb": None if output_mb is None else round(output_mb, 1),
        "ru_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["minilm", "tiny"], default="minilm")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--calls", nargs="+", choices=["encode", "predict"], default=["encode", "predict"])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: steady on a shared machine; memory does not depend on it)",
    )
    parser.add_argument("--child", nargs=2, metavar=("CALL", "N"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def run_children(args: argparse.Namespace) -> tuple[list[dict], list[str]]:
    """Each (call, size) in a fresh process (this script with `--child`): its JSON line, or a failure."""
    runs, failures = [], []
    for call in args.calls:
        for n in args.sizes:
            command = [sys.executable, os.path.abspath(__file__), "--model", args.model]
            command += ["--batch-size", str(args.batch_size), "--threads", str(args.threads)]
            command += ["--child", call, str(n)]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                failures.append(f"{call} x {n}: exit {done.returncode}: {done.stderr[-500:]}")
                continue
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return runs, failures


def summarize(runs: list[dict], calls: list[str]) -> tuple[dict, list[str]]:
    """From the smallest to the largest size: for `encode` the growth beyond the output per size (a
    failure if it grows by more than TOLERANCE_MB), for `predict` the growth per extra sentence."""
    summary, failures = {}, []
    for call in calls:
        measured = sorted((r for r in runs if r["call"] == call), key=lambda r: r["sentences"])
        if len(measured) < 2:
            continue
        small, large = measured[0], measured[-1]
        if call == "encode":
            overhead = {r["sentences"]: round(r["growth_mb"] - r["output_mb"], 1) for r in measured}
            summary["encode_growth_beyond_output_mb"] = overhead
            if overhead[large["sentences"]] > overhead[small["sentences"]] + TOLERANCE_MB:
                failures.append(f"encode: memory beyond the output grows with N: {overhead}")
        else:
            per_sentence = (
                (large["growth_mb"] - small["growth_mb"]) * 2**20 / (large["sentences"] - small["sentences"])
            )
            summary["predict_growth_bytes_per_sentence"] = round(per_sentence)
    return summary, failures


def main(argv: list[str] | None = None) -> dict | None:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args.model, args.batch_size, args.threads)))
        return None
    runs, failures = run_children(args)
    summary, summary_failures = summarize(runs, args.calls)
    result = {
        "benchmark": "memory",
        "model": "all-MiniLM-L6-v2"
        if args.model == "minilm"
        else "random BERT, MiniLM's config with 2 layers",
        "batch_size": args.batch_size,
        "torch_threads": args.threads,
        "runs": runs,
        **summary,
    }
    return _speed.emit(result, failures + summary_failures, trailer={"cpu_cores": os.cpu_count()})


if __name__ == "__main__":
    main()
