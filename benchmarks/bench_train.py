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

import tempfile

import _speed
import torch


def parse_args(argv: list[str] | None = None):
    parser = _speed.argument_parser(__doc__, max_length=64)
    parser.add_argument("--steps", type=int, default=32, help="hydrabert optimizer steps; 0 = one epoch")
    parser.add_argument("--per-task", type=int, default=None, help="cut each train set to N sentences")
    parser.add_argument(
        "--peer-sampling", default="random", choices=["random", "group_by_length"], help="peer's sampler"
    )
    return _speed.parse(parser, argv)


def same_function_before_training(hydra, peers: dict, tokenizer, sentences) -> float:
    """hydrabert's embedding vs the peer's pooled output (same checkpoint, same math); also warms both up."""
    probe = tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.inference_mode():
        ours = hydra.eval()(**probe).sentence_embedding
        peer = next(iter(peers.values())).eval()
        theirs = peer.bert(**probe).pooler_output
        peer(**probe)  # warm-up (thread pools, allocator) outside the timed region, for both sides alike
    return (ours - theirs).abs().max().item()


def hydrabert_trainer(work: _speed.DemoWorkload, settings: dict, steps: int):
    """One HydraBertModel (MiniLM + a head per task) and MultiTaskTrainer with its defaults."""
    from hydrabert.trainer import MultiTaskTrainer, MultiTaskTrainingArguments

    return MultiTaskTrainer(
        model=_speed.hydrabert_model(work.path, work.specs),
        args=MultiTaskTrainingArguments(max_steps=steps or -1, **settings),
        train_dataset=work.splits["train"],
        processing_class=work.tokenizer,
    )


def train_hydrabert(trainer) -> dict:
    """hydrabert's timed run: its time, steps, loss and the tokens its encoder saw."""
    counter = _speed.TokenCounter().watch(trainer.model.encoder)
    result, timer = _speed.timed_train(trainer)
    counter.stop()
    return {
        "timer": timer,
        "steps": trainer.state.global_step,
        "loss": result.training_loss,
        "counter": counter,
    }


def train_peers(peers: dict, peer_sets: dict, tokenizer, settings: dict, sampling: str) -> dict:
    """One HF Trainer run per task; the summed time, each run's steps and loss, and the tokens seen."""
    from transformers import TrainingArguments

    counter = _speed.TokenCounter()
    out = {"seconds": 0.0, "cpu_seconds": 0.0, "steps": {}, "losses": {}, "counter": counter}
    for name, model in peers.items():
        counter.watch(model.bert)
        args = TrainingArguments(train_sampling_strategy=sampling, **settings)
        trainer, result, timer = _speed.train_peer(model, args, peer_sets[name], tokenizer)
        counter.stop()
        out["seconds"] += timer.seconds
        out["cpu_seconds"] += timer.cpu_seconds
        out["steps"][name] = trainer.state.global_step
        out["losses"][name] = round(result.training_loss, 4)
    return out


def check(samples: int, batches, steps_per_task: dict, hydra: dict, peer: dict) -> list[str]:
    """Same rows (all `samples` of hydrabert's batches), real tokens and optimizer steps; finite losses."""
    failures = _speed.same_work_failures(
        hydra["counter"].counts, peer["counter"].counts, [hydra["loss"], *peer["losses"].values()]
    )
    if hydra["counter"]["rows"] != samples:
        failures.insert(0, f"rows trained: hydrabert {hydra['counter']['rows']}, expected {samples}")
    if hydra["steps"] != len(batches) or peer["steps"] != {n: c for n, c in steps_per_task.items() if c}:
        failures.append(
            f"optimizer steps: hydrabert {hydra['steps']} (expected {len(batches)}), peer {peer['steps']} "
            f"(expected {steps_per_task})"
        )
    return failures


def result_line(args, work, samples: int, hydra: dict, peer: dict, embedding_diff: float) -> dict:
    hydra_counter, peer_counter = hydra["counter"], peer["counter"]
    seconds = {"hydrabert": hydra["timer"].seconds, "peer": peer["seconds"]}
    what = "training samples/s: MultiTaskTrainer (1 model, 2 heads) vs HF Trainer (1 model per task)"
    return {
        **_speed.headline("train", what, samples, seconds, target=1.25),
        "cpu_time_ratio": round(peer["cpu_seconds"] / hydra["timer"].cpu_seconds, 3),
        "hydrabert_seconds": round(seconds["hydrabert"], 2),
        "peer_seconds": round(seconds["peer"], 2),
        "samples": samples,
        "steps": {"hydrabert": hydra["steps"], "peer": peer["steps"]},
        "tokens": {
            "real": hydra_counter["real_tokens"],
            "hydrabert_padded": hydra_counter["padded_tokens"],
            "peer_padded": peer_counter["padded_tokens"],
        },
        "padding_fraction": {
            "hydrabert": round(1 - hydra_counter["real_tokens"] / hydra_counter["padded_tokens"], 3),
            "peer": round(1 - peer_counter["real_tokens"] / peer_counter["padded_tokens"], 3),
        },
        "train_loss": {"hydrabert": round(hydra["loss"], 4), "peer": peer["losses"]},
        "embedding_max_diff_before_training": embedding_diff,
        "settings": {
            **_speed.settings_of(args, "steps", "per_task"),
            "train_sizes": {name: len(ds) for name, ds in work.splits["train"].items()},
            **_speed.settings_of(args, "batch_size", "max_length", "peer_sampling", "threads"),
        },
    }


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    work = _speed.demo_workload(args, {"train": args.per_task})
    settings = _speed.trainer_settings(
        output_dir=tempfile.mkdtemp(prefix="bench_train_"), per_device_train_batch_size=args.batch_size
    )
    trainer = hydrabert_trainer(work, settings, args.steps)
    batches, rows_per_task, steps_per_task = _speed.batches_per_task(trainer, args.steps)
    peer_sets = {
        name: work.splits["train"][name].select(rows) for name, rows in rows_per_task.items() if rows
    }
    peers = {name: _speed.sequence_classifier(work.path, work.specs[name]) for name in peer_sets}
    probe = list(work.loaded["sentiment"].splits["test"]["text"][:16])
    embedding_diff = same_function_before_training(trainer.model, peers, work.tokenizer, probe)

    hydra = train_hydrabert(trainer)
    peer = train_peers(peers, peer_sets, work.tokenizer, settings, args.peer_sampling)

    samples = sum(len(batch) for batch in batches)
    failures = check(samples, batches, steps_per_task, hydra, peer)
    if embedding_diff > 1e-5:
        failures.insert(0, f"hydrabert embedding != peer pooled output (max diff {embedding_diff:.2e})")
    return _speed.emit(result_line(args, work, samples, hydra, peer, embedding_diff), failures)


if __name__ == "__main__":
    main()
