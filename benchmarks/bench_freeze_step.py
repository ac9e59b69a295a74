#!/usr/bin/env python
"""How much cheaper is a training step when part of the network is frozen?

One process, MiniLM, real SST-2 sentences, batch 32: the mean time of a training step (forward,
backward, AdamW) with nothing frozen, with the lower 3 blocks frozen and with the encoder frozen,
using hydrabert's own freeze mechanism (`frozen_parameter_names` + `set_requires_grad`, what
MultiTaskTrainer applies). Settings are interleaved over several rounds so drift in the shared
machine's load hits all of them alike. Prints one JSON line.

    python benchmarks/bench_freeze_step.py [--steps 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import _speed
import torch

from hydrabert.freezing import frozen_parameter_names, set_requires_grad

SETTINGS = {
    "none": {},
    "lower_layers_3": {"freeze_lower_layers": 3},
    "encoder": {"freeze_policy": "encoder"},
}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--data-root", default=None, help="folder holding sst2/ (default ../shared/data)")
    args = parser.parse_args(argv)

    from transformers import AutoTokenizer

    _speed.quiet()
    path = _speed.minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    sst2_test = _speed.load_demo_tasks(args.data_root)["sentiment"].splits["test"]
    batches = []
    for start in range(0, args.steps * args.batch_size, args.batch_size):
        rows = sst2_test[start : start + args.batch_size]
        batch = tokenizer(rows["text"], padding=True, truncation=True, max_length=64, return_tensors="pt")
        batch["labels"] = torch.tensor(rows["label"])
        batches.append(batch)

    models = {}
    for name, settings in SETTINGS.items():
        model = _speed.hydrabert_model(path, {"sentiment": {"num_labels": 2}}).train()
        set_requires_grad(model, frozen_parameter_names(model, **settings))
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        models[name] = (model, optimizer)

    def run(name: str) -> float:
        model, optimizer = models[name]
        start = time.perf_counter()
        for batch in batches:
            loss = model(**batch, task="sentiment").loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return (time.perf_counter() - start) / len(batches)

    for name in SETTINGS:  # warm-up
        run(name)
    times = {name: [] for name in SETTINGS}
    for _ in range(args.rounds):
        for name in SETTINGS:
            times[name].append(run(name))
    seconds = {name: statistics.median(values) for name, values in times.items()}
    result = {
        "benchmark": "freeze_step",
        "batch_size": args.batch_size,
        "seconds_per_step": {k: round(v, 4) for k, v in seconds.items()},
        "speedup_vs_full": {k: round(seconds["none"] / v, 3) for k, v in seconds.items()},
        "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
