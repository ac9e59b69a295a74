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


def count_tokens(module, counter):
    """A pre-hook that adds up rows, padded tokens and real tokens of every batch the encoder sees."""

    def hook(_module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        mask = kwargs.get("attention_mask")
        counter["rows"] += ids.shape[0]
        counter["padded_tokens"] += ids.numel()
        counter["real_tokens"] += int(mask.sum()) if mask is not None else ids.numel()

    return module.register_forward_pre_hook(hook, with_kwargs=True)


def new_counter():
    return {"rows": 0, "padded_tokens": 0, "real_tokens": 0}


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

    import datasets
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments

    from hydrabert import HydraBertModel
    from hydrabert.data import tokenize_task
    from hydrabert.trainer import MultiTaskTrainer, MultiTaskTrainingArguments

    path = _speed.minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    loaded = _speed.load_demo_tasks(args.data_root)
    specs = {name: task.task_spec() for name, task in loaded.items()}
    train_sets = {}
    for name, task in loaded.items():
        split = task.splits["train"]
        if args.per_task is not None:
            split = split.shuffle(seed=_speed.SEED).select(range(min(args.per_task, len(split))))
        train_sets[name] = tokenize_task(datasets.DatasetDict(train=split), tokenizer, args.max_length)[
            "train"
        ]
    failures = []
    output_dir = tempfile.mkdtemp(prefix="bench_train_")
    common = dict(
        per_device_train_batch_size=args.batch_size,
        num_train_epochs=1,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        seed=_speed.SEED,
        dataloader_num_workers=0,
    )

    torch.manual_seed(_speed.SEED)
    hydra = HydraBertModel.from_encoder_pretrained(path, tasks=specs)
    hydra_args = MultiTaskTrainingArguments(output_dir=output_dir, max_steps=args.steps or -1, **common)
    trainer = MultiTaskTrainer(
        model=hydra, args=hydra_args, train_dataset=train_sets, processing_class=tokenizer
    )
    # The batches hydrabert will train on: epoch 0 of the trainer's own sampler.
    batches = trainer.get_train_batch_sampler().epoch_batches(0)[: args.steps or None]
    rows_per_task = {name: [] for name in train_sets}
    steps_per_task = dict.fromkeys(train_sets, 0)
    for batch in batches:
        for index in batch:
            name, row = trainer.train_dataset.locate(index)
            rows_per_task[name].append(row)
        steps_per_task[name] += 1
    peer_sets = {name: train_sets[name].select(rows) for name, rows in rows_per_task.items() if rows}

    peers = {
        name: AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=specs[name]["num_labels"], id2label=dict(enumerate(specs[name]["labels"]))
        )
        for name in peer_sets
    }
    # Same math before training: hydrabert's embedding is BERT's pooled output of the same checkpoint.
    probe = tokenizer(
        list(loaded["sentiment"].splits["test"]["text"][:16]), padding=True, return_tensors="pt"
    )
    with torch.inference_mode():
        ours = hydra.eval()(**probe).sentence_embedding
        peer = next(iter(peers.values())).eval()
        theirs = peer.bert(**probe).pooler_output
        # Warm-up (thread pools, allocator) outside the timed region, for both sides alike.
        peer(**probe)
    embedding_diff = (ours - theirs).abs().max().item()
    if embedding_diff > 1e-5:
        failures.append(f"hydrabert embedding != peer pooled output (max diff {embedding_diff:.2e})")

    with _speed.stdout_to_stderr():
        hydra_counter = new_counter()
        handle = count_tokens(hydra.encoder, hydra_counter)
        with _speed.Timer() as hydra_time:
            hydra_result = trainer.train()
        handle.remove()
        hydra_steps = trainer.state.global_step

        peer_counter = new_counter()
        peer_seconds, peer_cpu_seconds, peer_steps, peer_losses = 0.0, 0.0, {}, {}
        for name, model in peers.items():
            handle = count_tokens(model.bert, peer_counter)
            peer_trainer = Trainer(
                model=model,
                args=TrainingArguments(
                    output_dir=output_dir, train_sampling_strategy=args.peer_sampling, **common
                ),
                train_dataset=peer_sets[name],
                processing_class=tokenizer,
            )
            with _speed.Timer() as peer_time:
                result = peer_trainer.train()
            handle.remove()
            peer_seconds += peer_time.seconds
            peer_cpu_seconds += peer_time.cpu_seconds
            peer_steps[name] = peer_trainer.state.global_step
            peer_losses[name] = round(result.training_loss, 4)

    samples = sum(len(batch) for batch in batches)
    if not hydra_counter["rows"] == peer_counter["rows"] == samples:
        failures.append(
            f"rows trained: hydrabert {hydra_counter['rows']}, peer {peer_counter['rows']}, expected {samples}"
        )
    if hydra_counter["real_tokens"] != peer_counter["real_tokens"]:
        failures.append(
            f"real tokens trained: hydrabert {hydra_counter['real_tokens']}, peer {peer_counter['real_tokens']}"
        )
    if hydra_steps != len(batches) or peer_steps != {n: c for n, c in steps_per_task.items() if c}:
        failures.append(
            f"optimizer steps: hydrabert {hydra_steps} (expected {len(batches)}), peer {peer_steps} "
            f"(expected {steps_per_task})"
        )
    losses = [hydra_result.training_loss, *peer_losses.values()]
    if not all(math.isfinite(loss) for loss in losses):
        failures.append(f"non-finite training loss: {losses}")

    hydra_rate = samples / hydra_time.seconds
    peer_rate = samples / peer_seconds
    _speed.emit(
        {
            "benchmark": "train",
            "what": "training samples/s: MultiTaskTrainer (1 model, 2 heads) vs HF Trainer (1 model per task)",
            "hydrabert_samples_per_s": round(hydra_rate, 2),
            "peer_samples_per_s": round(peer_rate, 2),
            "ratio": round(hydra_rate / peer_rate, 3),
            "target": 1.25,
            "cpu_time_ratio": round(peer_cpu_seconds / hydra_time.cpu_seconds, 3),
            "hydrabert_seconds": round(hydra_time.seconds, 2),
            "peer_seconds": round(peer_seconds, 2),
            "samples": samples,
            "steps": {"hydrabert": hydra_steps, "peer": peer_steps},
            "tokens": {
                "real": hydra_counter["real_tokens"],
                "hydrabert_padded": hydra_counter["padded_tokens"],
                "peer_padded": peer_counter["padded_tokens"],
            },
            "padding_fraction": {
                "hydrabert": round(1 - hydra_counter["real_tokens"] / hydra_counter["padded_tokens"], 3),
                "peer": round(1 - peer_counter["real_tokens"] / peer_counter["padded_tokens"], 3),
            },
            "train_loss": {"hydrabert": round(hydra_result.training_loss, 4), "peer": peer_losses},
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
