#!/usr/bin/env python
"""Does a streamed task keep memory flat? Peak resident memory and samples/s of `run_mtl.py`, streamed vs
map-style, over a local file and one ten times larger.

Two tasks (a csv of sentences with 2 labels, and one with 6), generated once per size (seeded, 4-24 words a
sentence). Each (mode, size) is a fresh process running `run_mtl.main` on the same config but for the task's
`"streaming"` flag: a random 2-layer BERT with MiniLM's width and tokenizer, `max_steps` optimizer steps of 32
rows, no evaluation, no checkpoints. The process's peak RSS (`ru_maxrss`) covers everything it did: reading,
checking and tokenising the data (map-style: all of it, up front; streamed: only the rows training reads),
then training. `samples_per_s` is the trained rows over the whole run's wall time, reading included (what a
user waits for); `train_samples_per_s` over the training loop only.

    python benchmarks/bench_streaming.py                           # 100k and 1M rows per task
    python benchmarks/bench_streaming.py --rows 2000 20000 --steps 5   # quick check
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import _speed  # sets the offline environment before transformers is imported

WORDS = (
    "the a an film movie story plot actor director scene music script good bad great awful brilliant boring "
    "funny sad moving slow fast long short clever dull fresh and but or because while when if what who where "
    "why how city river mountain country capital year number person name place company team game song book"
).split()
LABELS = {"sentiment": ["negative", "positive"], "topic": ["DESC", "ENTY", "ABBR", "HUM", "LOC", "NUM"]}
# Growth from the small to the large file that still counts as flat (allocator and cache noise).
TOLERANCE_MB = 64.0


def write_data(folder: str, rows: int, seed: int = 0) -> None:
    """`{task}.csv` with `text,label` rows for each task (the second task half as many rows)."""
    rng = random.Random(seed)
    os.makedirs(folder, exist_ok=True)
    for index, (task, labels) in enumerate(LABELS.items()):
        with open(os.path.join(folder, f"{task}.csv"), "w", encoding="utf-8") as handle:
            handle.write("text,label\n")
            for _ in range(rows // (1 + index)):
                handle.write(f"{' '.join(rng.choices(WORDS, k=rng.randint(4, 24)))},{rng.choice(labels)}\n")


def run_config(data: str, rows: int, streaming: bool, output_dir: str, encoder: str, args) -> dict:
    tasks = []
    for index, (task, labels) in enumerate(LABELS.items()):
        spec = {"name": task, "data_dir": data, "train_file": f"{task}.csv", "labels": labels}
        if streaming:
            spec.update(streaming=True, num_rows=rows // (1 + index))
        tasks.append(spec)
    return {
        "model_name_or_path": encoder,
        "tokenizer_name": _speed.minilm_path(),
        "tasks": tasks,
        "output_dir": output_dir,
        "do_train": True,
        "do_eval": False,
        "do_predict": False,
        "max_steps": args.steps,
        "per_device_train_batch_size": args.batch_size,
        "max_seq_length": 64,
        "eval_strategy": "no",
        "save_strategy": "no",
        "report_to": "none",
        "use_cpu": True,
        "disable_tqdm": True,
        "logging_steps": 10_000,
        "seed": 0,
    }


def child(config_path: str, threads: int) -> dict:
    """One run in this process; its peak RSS, wall time and training throughput."""
    import torch

    torch.set_num_threads(threads)
    _speed.quiet()
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import run_mtl

    start = time.perf_counter()
    results = run_mtl.main([config_path])
    seconds = time.perf_counter() - start
    return {
        "seconds": round(seconds, 1),
        "train_runtime": round(results["train_runtime"], 1),
        "train_samples_per_s": round(results["train_samples_per_second"], 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def tiny_encoder(folder: str) -> str:
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig.from_pretrained(_speed.minilm_path(), num_hidden_layers=2)
    BertModel(config).save_pretrained(folder)
    return folder


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs=2, default=[100_000, 1_000_000], metavar=("SMALL", "LARGE"))
    parser.add_argument("--steps", type=int, default=50, help="optimizer steps per run")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--child", nargs=1, metavar="CONFIG", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict | None:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child[0], args.threads)))
        return None
    work = tempfile.mkdtemp(prefix="bench_streaming_")
    runs, failures = [], []
    try:
        encoder = tiny_encoder(os.path.join(work, "encoder"))
        for rows in args.rows:
            data = os.path.join(work, f"data_{rows}")
            write_data(data, rows)
            file_mb = sum(os.path.getsize(os.path.join(data, name)) for name in os.listdir(data)) / 2**20
            for streaming in (True, False):
                mode = "streaming" if streaming else "map_style"
                config_path = os.path.join(work, f"{mode}_{rows}.json")
                output_dir = os.path.join(work, f"out_{mode}_{rows}")
                with open(config_path, "w", encoding="utf-8") as handle:
                    json.dump(run_config(data, rows, streaming, output_dir, encoder, args), handle)
                # A datasets cache of its own: a map-style run must not find the previous one's Arrow files.
                env = {**os.environ, "HF_DATASETS_CACHE": os.path.join(work, f"cache_{mode}_{rows}")}
                command = [sys.executable, os.path.abspath(__file__), "--threads", str(args.threads)]
                done = subprocess.run(
                    [*command, "--child", config_path], capture_output=True, text=True, env=env
                )
                if done.returncode != 0:
                    failures.append(f"{mode} x {rows}: exit {done.returncode}: {done.stderr[-800:]}")
                    continue
                run = json.loads(done.stdout.strip().splitlines()[-1])
                trained = args.steps * args.batch_size
                runs.append(
                    {
                        "mode": mode,
                        "rows_per_task": [rows, rows // 2],
                        "file_mb": round(file_mb, 1),
                        **run,
                        "samples_per_s": round(trained / run["seconds"], 1),
                    }
                )
                shutil.rmtree(env["HF_DATASETS_CACHE"], ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    peak = {(r["mode"], r["rows_per_task"][0]): r["peak_rss_mb"] for r in runs}
    small, large = args.rows
    growth = {
        mode: round(peak[(mode, large)] - peak[(mode, small)], 1)
        for mode in ("streaming", "map_style")
        if (mode, small) in peak and (mode, large) in peak
    }
    if "streaming" in growth and growth["streaming"] > TOLERANCE_MB:
        failures.append(f"streaming: peak memory grew {growth['streaming']} MB from {small} to {large} rows")
    result = {
        "benchmark": "streaming",
        "what": "run_mtl.py on two generated csv tasks, streamed vs map-style: peak RSS and samples/s",
        "model": "random BERT, MiniLM's config with 2 layers; MiniLM's tokenizer",
        "settings": {"steps": args.steps, "batch_size": args.batch_size, "torch_threads": args.threads},
        "runs": runs,
        "peak_rss_growth_mb_small_to_large": growth,
        "tolerance_mb": TOLERANCE_MB,
    }
    return _speed.emit(result, failures)


if __name__ == "__main__":
    main()
