#!/usr/bin/env python
"""Training throughput on a shared source (one data set, two label columns, one encoder pass per row for both
tasks) vs the same data duplicated per task (each task its own copy of the rows: one pass per row per task).

    python benchmarks/bench_shared_rows.py            # prints one JSON line, writes benchmarks/results/shared_rows.json

Data: SST-5 train as configs/sst5_shared.json reads it: the fine-grained label (5 classes) and the binary
polarity derived from it (0,1 -> negative, 3,4 -> positive, 2 -> no label), a seeded random `--rows` of its
rows. Both sides train the same MiniLM (same seed), batch 32, max_length 64, MultiTaskTrainer with its
defaults (proportional sampling, length-grouped batches), one epoch over those rows:

- shared: one unit, `sentiment_fine+polarity`; each batch of rows trains both heads from one encoder pass.
- duplicated: the same rows as two one-task data sets (`per_task_datasets` of the shared source, exactly what
  configs/sst5_duplicated.json loads): the fine task's rows and, again, the rows with a polarity label.

A training sample is one (sentence, task label) pair: both sides train the same ones, so samples/s compare the
same work. The shared side encodes each row once; the duplicated side encodes a row once per label it has, so
the expected ratio is (fine rows + polarity rows) / rows: k = 2 for rows labelled for both tasks, 1.81 here,
where 19% of SST-5 (the neutral sentences) have no polarity label.

Timed: `trainer.train()` only, the sides in alternating rounds (A B, B A, ...), a fresh model per round.
Checks (exit 1 when one fails): the shared side's encoder sees each row once (rows and real tokens counted
by a hook on the encoder), the duplicated side's once per sample; losses are finite.
"""

from __future__ import annotations

import json
import math
import os
import tempfile

import _speed

RESULT_FILE = os.path.join(_speed.ROOT, "benchmarks", "results", "shared_rows.json")


def shared_train_rows(data_root, rows: int):
    """The SST-5 shared source's train split (configs/sst5_shared.json), cut to a seeded random `rows`."""
    from hydrabert.data import TaskDataConfig, load_tasks

    data_root = data_root or _speed.DEFAULT_DATA_ROOT
    with open(_speed.ROOT / "configs" / "sst5_shared.json", encoding="utf-8") as handle:
        specs = json.load(handle)["tasks"]
    configs = [
        TaskDataConfig.from_dict(
            {**s, "data_dir": os.path.join(data_root, s["data_dir"])} if "data_dir" in s else s
        )
        for s in specs
    ]
    loaded = load_tasks(configs, seed=_speed.SEED)
    train = next(iter(loaded.values())).shared.splits["train"]
    specs = {name: task.task_spec() for name, task in loaded.items()}
    return train.shuffle(seed=_speed.SEED).select(range(min(rows, len(train)))), specs


def train_once(path, specs, units, tokenizer, settings):
    """One epoch of MultiTaskTrainer on `units` with a fresh, seeded model; its seconds, steps, loss, tokens."""
    from hydrabert.trainer import MultiTaskTrainer, MultiTaskTrainingArguments

    model = _speed.hydrabert_model(path, specs)
    trainer = MultiTaskTrainer(
        model=model,
        args=MultiTaskTrainingArguments(**settings),
        train_dataset=units,
        processing_class=tokenizer,
    )
    counter = _speed.TokenCounter().watch(model.encoder)
    with _speed.stdout_to_stderr(), _speed.Timer() as timer:
        result = trainer.train()
    counter.stop()
    return {
        "seconds": timer.seconds,
        "cpu_seconds": timer.cpu_seconds,
        "steps": trainer.state.global_step,
        "loss": result.training_loss,
        "counter": dict(counter.counts),
    }


def check(expected: dict, runs: dict) -> list[str]:
    """`expected`: per side, the rows and real tokens its encoder must see in an epoch."""
    failures = []
    for side, want in expected.items():
        seen = {"rows": runs[side]["counter"]["rows"], "real_tokens": runs[side]["counter"]["real_tokens"]}
        if seen != want:
            failures.append(f"{side}: the encoder saw {seen}, expected {want}")
    losses = [run["loss"] for run in runs.values()]
    if not all(math.isfinite(loss) for loss in losses):
        failures.append(f"non-finite training loss: {losses}")
    return failures


def parse_args(argv=None):
    parser = _speed.argument_parser(__doc__, max_length=64)
    parser.add_argument("--rows", type=int, default=1024, help="SST-5 train rows (a seeded random subset)")
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds per side, alternating")
    parser.add_argument("--output", default=RESULT_FILE, help="where to write the JSON (also printed)")
    return _speed.parse(parser, argv)


def build_sides(args):
    """The tokenizer, the task specs, the shared source and each side's training units."""
    import datasets
    from transformers import AutoTokenizer

    from hydrabert.data import per_task_datasets, tokenize_task

    tokenizer = AutoTokenizer.from_pretrained(_speed.minilm_path())
    rows, specs = shared_train_rows(args.data_root, args.rows)
    shared = tokenize_task(datasets.DatasetDict(train=rows), tokenizer, args.max_length)["train"]
    sides = {"shared": {"sentiment_fine+polarity": shared}, "duplicated": per_task_datasets({"sst5": shared})}
    return tokenizer, specs, shared, sides


def expected_encoder_work(sides) -> dict:
    """One encoder pass per row on the shared side; per (row, task label) on the duplicated side."""
    return {
        name: {
            "rows": sum(len(u) for u in units.values()),
            "real_tokens": sum(sum(u["length"]) for u in units.values()),
        }
        for name, units in sides.items()
    }


def result_line(args, shared, outputs, seconds, cpu_seconds) -> dict:
    from hydrabert.data import label_counts

    counts = label_counts(shared)
    samples = sum(counts.values())
    rate = {name: samples * args.rounds / sum(values) for name, values in seconds.items()}
    return {
        "benchmark": "shared_rows",
        "what": "training samples/s ((sentence, task label) pairs): one shared source with 2 label columns vs the "
        "same rows duplicated per task",
        "shared_samples_per_s": round(rate["shared"], 2),
        "duplicated_samples_per_s": round(rate["duplicated"], 2),
        "ratio": round(rate["shared"] / rate["duplicated"], 3),
        "expected_ratio": round(samples / len(shared), 3),
        "cpu_time_ratio": round(cpu_seconds["duplicated"] / cpu_seconds["shared"], 3),
        "round_seconds": {name: [round(s, 2) for s in values] for name, values in seconds.items()},
        "rows": len(shared),
        "samples": samples,
        "labels_per_task": counts,
        "steps": {name: run["steps"] for name, run in outputs.items()},
        "encoder_rows": {name: run["counter"]["rows"] for name, run in outputs.items()},
        "tokens": {
            name: {"real": run["counter"]["real_tokens"], "padded": run["counter"]["padded_tokens"]}
            for name, run in outputs.items()
        },
        "train_loss": {name: round(run["loss"], 4) for name, run in outputs.items()},
        "settings": _speed.settings_of(args, "rows", "rounds", "batch_size", "max_length", "threads"),
    }


def main(argv=None) -> dict:
    args = parse_args(argv)
    tokenizer, specs, shared, sides = build_sides(args)
    path = _speed.minilm_path()
    settings = _speed.trainer_settings(
        output_dir=tempfile.mkdtemp(prefix="bench_shared_rows_"), per_device_train_batch_size=args.batch_size
    )
    outputs, seconds, cpu_seconds = _speed.alternate(
        {
            name: lambda units=units: train_once(path, specs, units, tokenizer, settings)
            for name, units in sides.items()
        },
        args.rounds,
    )
    failures = check(expected_encoder_work(sides), outputs)
    result = result_line(args, shared, outputs, seconds, cpu_seconds)
    record = {**result, "ok": not failures, "failures": failures, "machine": _speed.machine()}
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as handle:
        json.dump(record, handle)
        handle.write("\n")
    return _speed.emit(result, failures)


if __name__ == "__main__":
    main()
