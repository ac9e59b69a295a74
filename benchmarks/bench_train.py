#!/usr/bin/env python
"""Training throughput: hydrabert's MultiTaskTrainer vs the plain HF Trainer, same MiniLM, same sentences.

    python benchmarks/bench_train.py | tee benchmarks/results/speed_train.json

Work: SST-2 and TREC-6 train (the full sets, read as configs/demo.json reads them), max_length 64, batch 32,
default optimizer and learning rate on both sides. hydrabert trains `--steps` optimizer steps (the first
batches of its epoch 0); the peer then trains on exactly the sentences those batches held, one epoch, the
same number of steps per task. `--steps 0` trains a whole epoch; `--per-task N` first cuts each train set
to a seeded random N sentences (e.g. `--per-task 1024 --steps 0`: one epoch over 1024 + 1024 sentences).

- hydrabert: one HydraBertModel (MiniLM + two heads) and MultiTaskTrainer with its defaults (one task per
  batch, proportional task sampling, length-grouped batches).
- peer: what a user of plain transformers writes to get the same two classifiers: for each task an
  `AutoModelForSequenceClassification` on MiniLM trained by `Trainer` with its defaults (random order,
  `DataCollatorWithPadding`: dynamic padding, not padding to max_length), on that task's sentences; its
  time is the two runs' sum. A single peer model over the union with one 8-label space would be other
  work (one softmax over both tasks' labels is a different model), so it is not the comparison.

Why the first K batches of the full sets rather than one epoch of a small subset: length grouping sorts
megabatches of up to 50 batches (as transformers' LengthGroupedSampler), and a subset of a few hundred
sentences per task gets megabatches of 2-8 batches, far from what a real run sees; a full epoch of the
full sets takes far longer than this shared 2-core machine allows for one benchmark.

Timed: `trainer.train()` only (model loading and tokenising excluded), after a warm-up forward pass.
Checks (exit 1 when one fails): before training, hydrabert's sentence embedding equals the peer's pooled
output (same weights, same math); both sides train on the same rows, the same real (non-padding) tokens
and as many optimizer steps; the losses are finite.
`--peer-sampling group_by_length` gives the peer transformers' length grouping too.
"""

from __future__ import annotations

import argparse
import math
import tempfile

import _speed
import torch


def batches_per_task(trainer, steps: int):
    """The batches hydrabert will train on (epoch 0 of the trainer's own sampler, the first `steps`), and
    per task the rows they hold and how many batches they fill."""
    batches = trainer.get_train_batch_sampler().epoch_batches(0)[: steps or None]
    rows = {name: [] for name in trainer.train_dataset.datasets}
    steps_per_task = dict.fromkeys(rows, 0)
    for batch in batches:
        for index in batch:
            name, row = trainer.train_dataset.locate(index)
            rows[name].append(row)
        steps_per_task[name] += 1
    return batches, rows, steps_per_task


def same_function_before_training(hydra, peers: dict, tokenizer, sentences) -> float:
    """hydrabert's embedding vs the peer's pooled output (same checkpoint, same math); also warms both up."""
    probe = tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.inference_mode():
        ours = hydra.eval()(**probe).sentence_embedding
        peer = next(iter(peers.values())).eval()
        theirs = peer.bert(**probe).pooler_output
        peer(**probe)  # warm-up (thread pools, allocator) outside the timed region, for both sides alike
    return (ours - theirs).abs().max().item()


def train_peers(peers: dict, peer_sets: dict, tokenizer, settings: dict, sampling: str) -> dict:
    """One HF Trainer run per task; the summed time, each run's steps and loss, and the tokens seen."""
    from transformers import Trainer, TrainingArguments

    counter = _speed.TokenCounter()
    out = {"seconds": 0.0, "cpu_seconds": 0.0, "steps": {}, "losses": {}, "counter": counter}
    for name, model in peers.items():
        counter.watch(model.bert)
        trainer = Trainer(
            model=model,
            args=TrainingArguments(train_sampling_strategy=sampling, **settings),
            train_dataset=peer_sets[name],
            processing_class=tokenizer,
        )
        with _speed.Timer() as timer:
            result = trainer.train()
        counter.stop()
        out["seconds"] += timer.seconds
        out["cpu_seconds"] += timer.cpu_seconds
        out["steps"][name] = trainer.state.global_step
        out["losses"][name] = round(result.training_loss, 4)
    return out


def check(samples, batches, steps_per_task, hydra_counter, hydra_steps, hydra_loss, peer) -> list[str]:
    failures = []
    if not hydra_counter["rows"] == peer["counter"]["rows"] == samples:
        failures.append(
            f"rows trained: hydrabert {hydra_counter['rows']}, peer {peer['counter']['rows']}, expected {samples}"
        )
    if hydra_counter["real_tokens"] != peer["counter"]["real_tokens"]:
        failures.append(
            f"real tokens trained: hydrabert {hydra_counter['real_tokens']}, peer {peer['counter']['real_tokens']}"
        )
    if hydra_steps != len(batches) or peer["steps"] != {n: c for n, c in steps_per_task.items() if c}:
        failures.append(
            f"optimizer steps: hydrabert {hydra_steps} (expected {len(batches)}), peer {peer['steps']} "
            f"(expected {steps_per_task})"
        )
    losses = [hydra_loss, *peer["losses"].values()]
    if not all(math.isfinite(loss) for loss in losses):
        failures.append(f"non-finite training loss: {losses}")
    return failures


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=32, help="hydrabert optimizer steps; 0 = one epoch")
    parser.add_argument("--per-task", type=int, default=None, help="cut each train set to N sentences")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=64)
    _speed.add_common_arguments(parser)
    parser.add_argument(
        "--peer-sampling", default="random", choices=["random", "group_by_length"], help="peer's sampler"
    )
    args = parser.parse_args()
    _speed.setup(args)

    from transformers import AutoTokenizer

    from hydrabert.trainer import MultiTaskTrainer, MultiTaskTrainingArguments

    path = _speed.minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    loaded = _speed.load_demo_tasks(args.data_root)
    specs = _speed.task_specs(loaded)
    train_sets = _speed.tokenized_splits(loaded, tokenizer, args.max_length, {"train": args.per_task})[
        "train"
    ]
    settings = _speed.trainer_settings(
        output_dir=tempfile.mkdtemp(prefix="bench_train_"), per_device_train_batch_size=args.batch_size
    )

    hydra = _speed.hydrabert_model(path, specs)
    trainer = MultiTaskTrainer(
        model=hydra,
        args=MultiTaskTrainingArguments(max_steps=args.steps or -1, **settings),
        train_dataset=train_sets,
        processing_class=tokenizer,
    )
    batches, rows_per_task, steps_per_task = batches_per_task(trainer, args.steps)
    peer_sets = {name: train_sets[name].select(rows) for name, rows in rows_per_task.items() if rows}
    peers = {name: _speed.sequence_classifier(path, specs[name]) for name in peer_sets}
    probe = list(loaded["sentiment"].splits["test"]["text"][:16])
    embedding_diff = same_function_before_training(hydra, peers, tokenizer, probe)

    with _speed.stdout_to_stderr():
        hydra_counter = _speed.TokenCounter().watch(hydra.encoder)
        with _speed.Timer() as hydra_time:
            hydra_result = trainer.train()
        hydra_counter.stop()
        peer = train_peers(peers, peer_sets, tokenizer, settings, args.peer_sampling)

    samples = sum(len(batch) for batch in batches)
    hydra_steps = trainer.state.global_step
    failures = check(
        samples, batches, steps_per_task, hydra_counter, hydra_steps, hydra_result.training_loss, peer
    )
    if embedding_diff > 1e-5:
        failures.insert(0, f"hydrabert embedding != peer pooled output (max diff {embedding_diff:.2e})")
    hydra_rate, peer_rate = samples / hydra_time.seconds, samples / peer["seconds"]
    _speed.emit(
        {
            "benchmark": "train",
            "what": "training samples/s: MultiTaskTrainer (1 model, 2 heads) vs HF Trainer (1 model per task)",
            "hydrabert_samples_per_s": round(hydra_rate, 2),
            "peer_samples_per_s": round(peer_rate, 2),
            "ratio": round(hydra_rate / peer_rate, 3),
            "target": 1.25,
            "cpu_time_ratio": round(peer["cpu_seconds"] / hydra_time.cpu_seconds, 3),
            "hydrabert_seconds": round(hydra_time.seconds, 2),
            "peer_seconds": round(peer["seconds"], 2),
            "samples": samples,
            "steps": {"hydrabert": hydra_steps, "peer": peer["steps"]},
            "tokens": {
                "real": hydra_counter["real_tokens"],
                "hydrabert_padded": hydra_counter["padded_tokens"],
                "peer_padded": peer["counter"]["padded_tokens"],
            },
            "padding_fraction": {
                "hydrabert": round(1 - hydra_counter["real_tokens"] / hydra_counter["padded_tokens"], 3),
                "peer": round(1 - peer["counter"]["real_tokens"] / peer["counter"]["padded_tokens"], 3),
            },
            "train_loss": {"hydrabert": round(hydra_result.training_loss, 4), "peer": peer["losses"]},
            "embedding_max_diff_before_training": embedding_diff,
            "settings": {
                "steps": args.steps,
                "per_task": args.per_task,
                "train_sizes": {name: len(ds) for name, ds in train_sets.items()},
                "batch_size": args.batch_size,
                "max_length": args.max_length,
                "peer_sampling": args.peer_sampling,
                "threads": args.threads,
            },
        },
        failures,
    )


if __name__ == "__main__":
    main()
