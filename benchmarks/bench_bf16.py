#!/usr/bin/env python
"""bf16 on the CPU: training and `predict` in bf16 vs fp32 (same model, same sentences, one run).

    python benchmarks/bench_bf16.py --model outputs/demo | tee benchmarks/results/bf16.json

Training: MultiTaskTrainer on MiniLM + the demo's two heads, `--steps` optimizer steps on the same batches
(same seed, same sampler) in fp32 and with `bf16=True` (torch.autocast on the CPU; weights and optimizer
state stay fp32), the two runs in turns `--rounds` times; and the peer, HF `Trainer` with `bf16=True` and
length grouping on exactly those rows (one model per task, as in bench_train.py). Ratios are samples/s.

Prediction: `model.predict` over the SST-2 and TREC-6 test sets (1,821 + 500 sentences, truncated at
`--max-length`), fp32 vs bf16 in turns, and how often the two agree on the label (every task's label for every
sentence). Use a trained model (`--model`, a run_mtl.py output folder): a fresh model's random heads make the
agreement meaningless, and the JSON says which was used.

bf16 pays only where the CPU computes it natively (AMX or AVX512-BF16); the JSON records the CPU and its
flags. Checks (exit 1 when one fails): finite losses, both training sides saw the same rows, agreement >= 99.5%
when `--model` is given.
"""

from __future__ import annotations

import tempfile

import _speed
import bench_train
import torch


def parse_args(argv: list[str] | None = None):
    parser = _speed.argument_parser(__doc__, max_length=64)
    parser.add_argument("--steps", type=int, default=16, help="optimizer steps per training run")
    parser.add_argument("--rounds", type=int, default=2, help="fp32/bf16 runs in turns (each side)")
    parser.add_argument("--model", default=None, help="a trained hydrabert folder for prediction")
    parser.add_argument("--skip-training", action="store_true", help="prediction rows only")
    return _speed.parse(parser, argv)


def training_rows(args, work) -> dict:
    """fp32 and bf16 MultiTaskTrainer runs on the same batches, in turns; then HF Trainer bf16 + length
    grouping on those rows."""
    timings = {"fp32": [], "bf16": []}
    losses, counters = {}, {}
    for round_ in range(args.rounds):
        for precision in ("fp32", "bf16") if round_ % 2 == 0 else ("bf16", "fp32"):
            settings = _speed.trainer_settings(
                output_dir=tempfile.mkdtemp(prefix="bench_bf16_"),
                per_device_train_batch_size=args.batch_size,
                bf16=precision == "bf16",
            )
            trainer = bench_train.hydrabert_trainer(work, settings, args.steps)
            batches, rows_per_task, steps_per_task = _speed.batches_per_task(trainer, args.steps)
            run = bench_train.train_hydrabert(trainer)
            timings[precision].append(run["timer"].seconds)
            losses[precision], counters[precision] = run["loss"], run["counter"].counts
    samples = sum(len(batch) for batch in batches)

    peer_sets = {
        name: work.splits["train"][name].select(rows) for name, rows in rows_per_task.items() if rows
    }
    peers = {name: _speed.sequence_classifier(work.path, work.specs[name]) for name in peer_sets}
    peer_settings = _speed.trainer_settings(
        output_dir=tempfile.mkdtemp(prefix="bench_bf16_peer_"),
        per_device_train_batch_size=args.batch_size,
        bf16=True,
    )
    peer = bench_train.train_peers(peers, peer_sets, work.tokenizer, peer_settings, "group_by_length")

    failures = _speed.same_work_failures(
        counters["bf16"], peer["counter"].counts, [losses["fp32"], losses["bf16"], *peer["losses"].values()]
    )
    if counters["bf16"] != counters["fp32"]:
        failures.append(f"fp32 and bf16 runs saw different work: {counters['fp32']} vs {counters['bf16']}")
    best = {precision: min(values) for precision, values in timings.items()}
    return {
        "samples": samples,
        "steps": args.steps,
        "samples_per_s": {
            "hydrabert_fp32": round(samples / best["fp32"], 2),
            "hydrabert_bf16": round(samples / best["bf16"], 2),
            "hf_trainer_bf16_group_by_length": round(samples / peer["seconds"], 2),
        },
        "bf16_over_fp32": round(best["fp32"] / best["bf16"], 3),
        "hydrabert_bf16_over_hf_trainer_bf16": round(peer["seconds"] / best["bf16"], 3),
        "round_seconds": {precision: [round(s, 2) for s in values] for precision, values in timings.items()},
        "train_loss": {
            "fp32": round(losses["fp32"], 4),
            "bf16": round(losses["bf16"], 4),
            "peer_bf16": peer["losses"],
        },
        "failures": failures,
    }


def prediction_rows(args, work) -> dict:
    from hydrabert import HydraBertModel

    model = (
        HydraBertModel.from_pretrained(args.model)
        if args.model
        else _speed.hydrabert_model(work.path, work.specs)
    ).eval()
    sentences = [s for task in work.loaded.values() for s in task.splits["test"]["text"]]

    def predict(precision, batch=sentences):
        dtype = torch.bfloat16 if precision == "bf16" else None
        return model.predict(
            batch, work.tokenizer, batch_size=args.batch_size, max_length=args.max_length, dtype=dtype
        )

    sides = {"fp32": lambda: predict("fp32"), "bf16": lambda: predict("bf16")}
    for precision in sides:  # warm-up: thread pools, allocator, oneDNN kernels
        predict(precision, sentences[:64])
    outputs, seconds, _ = _speed.alternate(sides, args.rounds)
    pairs = [
        (a[task]["label"], b[task]["label"])
        for a, b in zip(outputs["fp32"], outputs["bf16"], strict=True)
        for task in a
    ]
    agreement = sum(x == y for x, y in pairs) / len(pairs)
    best = {precision: min(values) for precision, values in seconds.items()}
    failures = []
    if args.model and agreement < 0.995:
        failures.append(f"bf16 labels agree with fp32 on {agreement:.2%} of predictions, below 99.5%")
    return {
        "model": args.model or "fresh (random heads: agreement not meaningful)",
        "sentences": len(sentences),
        "sentences_per_s": {precision: round(len(sentences) / best[precision], 2) for precision in best},
        "bf16_over_fp32": round(best["fp32"] / best["bf16"], 3),
        "label_agreement": round(agreement, 5),
        "round_seconds": {precision: [round(s, 2) for s in values] for precision, values in seconds.items()},
        "failures": failures,
    }


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    work = _speed.demo_workload(args, {"train": None})
    result = {"benchmark": "bf16", "what": "bf16 autocast vs fp32 on the CPU: training steps and predict"}
    failures = []
    if not args.skip_training:
        result["training"] = training_rows(args, work)
        failures += result["training"].pop("failures")
    result["predict"] = prediction_rows(args, work)
    failures += result["predict"].pop("failures")
    result["settings"] = _speed.settings_of(args, "steps", "rounds", "batch_size", "max_length", "threads")
    return _speed.emit(result, failures)


if __name__ == "__main__":
    main()
