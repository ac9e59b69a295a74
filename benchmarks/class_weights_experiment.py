#!/usr/bin/env python
"""Does per-task class weighting (`class_weights: "balanced"`) help rare labels? Test macro-F1 with and
without it on two imbalanced sets, SciCite (3 citation intents, 4297/2038/985 train rows) and CSAbstruct
(5 sentence roles, 3621 down to 350), same budget, several seeds, MiniLM.

    OMP_NUM_THREADS=2 python benchmarks/class_weights_experiment.py              # 2 data sets x 2 x 3 seeds
    python benchmarks/class_weights_experiment.py --data scicite --seeds 42 --max_steps 20   # a smoke run

Each run is run_mtl.py's pipeline (its argument parsing, data loading, model assembly and trainer) in this
process, so that the test evaluation can also report each label's F1 and how many labels were never
predicted; the run_mtl.py command giving the same training and macro-F1 is recorded with each run. Prints
one JSON document and writes it to benchmarks/results/class_weights.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time

import numpy as np
from transformers import EvalPrediction, set_seed

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import run_mtl  # noqa: E402
from hydrabert.trainer import MultiTaskTrainer, default_task_metrics  # noqa: E402

RESULTS = os.path.join(REPO, "benchmarks", "results", "class_weights.json")
DATA = {"scicite": "configs/transfer_scientific.json", "csabstruct": "configs/transfer_csabstruct.json"}
WEIGHTINGS = {"none": None, "balanced": "balanced"}


def run_arguments(config: str, weighting: str | None, seed: int, args) -> list[str]:
    """run_mtl.py arguments: the data set's config, plain fine-tuning at a short budget, test at the end."""
    with open(os.path.join(REPO, config)) as handle:
        tasks = json.load(handle)["tasks"]
    if weighting is not None:
        tasks = [{**task, "class_weights": weighting} for task in tasks]
    return [
        config,
        "--tasks", json.dumps(tasks),
        "--output_dir", os.path.join("outputs", "class_weights", f"{os.path.basename(config)}-{weighting}-{seed}"),
        "--seed", str(seed),
        "--max_steps", str(args.max_steps),
        "--per_device_train_batch_size", str(args.batch_size),
        "--max_seq_length", str(args.max_seq_length),
        "--learning_rate", "1e-4",
        "--head_learning_rate", "1e-3",
        "--layerwise_lr_decay", "1.0",
        "--gradual_unfreezing", "false",
        "--do_eval", "false",
        "--eval_strategy", "no",
        "--save_strategy", "no",
        "--logging_steps", "50",
        "--disable_tqdm", "true",
        "--overwrite_output_dir", "true",
    ]  # fmt: skip


def per_label_metrics(model):
    """The default metrics (accuracy, f1, f1_declared_labels) plus each label's F1 and the number of labels
    that the model never predicted on the split."""
    from sklearn.metrics import f1_score

    default = default_task_metrics(model)

    def compute(task: str, prediction: EvalPrediction) -> dict:
        metrics = default(task, prediction)
        labels = model.config.tasks[task]["labels"]
        predicted = np.asarray(prediction.predictions).argmax(-1)
        truth = np.asarray(prediction.label_ids)
        scores = f1_score(truth, predicted, labels=list(range(len(labels))), average=None, zero_division=0)
        metrics.update({f"f1_{label}": float(score) for label, score in zip(labels, scores, strict=True)})
        metrics["labels_never_predicted"] = float(len(set(range(len(labels))) - set(predicted.tolist())))
        return metrics

    return compute


def train_and_test(argv: list[str]) -> tuple[dict, dict]:
    """run_mtl.run's steps without saving a model: the test metrics and the resolved class weights."""
    model_args, data_args, training_args = run_mtl.parse_args(argv)
    run_mtl.setup_logging(training_args)
    configs = run_mtl.task_configs(data_args)
    with run_mtl.progress_bars(False):
        set_seed(training_args.seed)
        splits, model, tokenizer, _ = run_mtl.load_data_and_model(
            model_args, data_args, training_args, configs
        )
        trainer = MultiTaskTrainer(
            model=model,
            args=training_args,
            train_dataset=run_mtl.split_of(splits, "train"),
            processing_class=tokenizer,
            compute_metrics=per_label_metrics(model),
        )
        start = time.time()
        trainer.train()
        train_seconds = time.time() - start
        metrics = trainer.evaluate(eval_dataset=run_mtl.split_of(splits, "test"), metric_key_prefix="test")
    metrics["train_seconds"] = round(train_seconds, 1)
    weights = {name: spec["class_weights"] for name, spec in model.config.tasks.items()}
    return metrics, weights


def summary(runs: list[dict]) -> dict:
    """Mean ± std of test macro-F1 (and accuracy) per data set and weighting, and the paired difference."""
    out = {}
    for data in dict.fromkeys(r["data"] for r in runs):
        by_weighting = {}
        for weighting in WEIGHTINGS:
            chosen = [r for r in runs if r["data"] == data and r["weighting"] == weighting]
            if not chosen:
                continue
            task = chosen[0]["task"]
            by_weighting[weighting] = {
                name: _mean_std([r["metrics"][f"test_{task}_{name}"] for r in chosen])
                for name in ("f1", "accuracy", "labels_never_predicted")
            }
            by_weighting[weighting]["seeds"] = [r["seed"] for r in chosen]
        paired = {
            r["seed"]: r["metrics"][f"test_{r['task']}_f1"]
            for r in runs
            if r["data"] == data and r["weighting"] == "none"
        }
        deltas = [
            r["metrics"][f"test_{r['task']}_f1"] - paired[r["seed"]]
            for r in runs
            if r["data"] == data and r["weighting"] == "balanced" and r["seed"] in paired
        ]
        by_weighting["balanced_minus_none_f1"] = _mean_std(deltas) if deltas else None
        out[data] = by_weighting
    return out


def _mean_std(values: list[float]) -> dict:
    return {
        "mean": round(statistics.fmean(values), 4),
        "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
        "values": [round(v, 4) for v in values],
    }


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} CPU cores ({cpu}), OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", nargs="+", choices=sorted(DATA), default=list(DATA))
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44])
    parser.add_argument("--max_steps", type=int, default=150)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_seq_length", type=int, default=64)
    parser.add_argument("--output", default=RESULTS)
    args = parser.parse_args()
    os.chdir(REPO)  # run_mtl resolves data_root (../shared/data) from here
    runs = []
    for data in args.data:
        for seed in args.seeds:
            for weighting, value in WEIGHTINGS.items():
                argv = run_arguments(DATA[data], value, seed, args)
                start = time.time()
                metrics, weights = train_and_test(argv)
                (task,) = weights
                runs.append(
                    {
                        "data": data,
                        "task": task,
                        "weighting": weighting,
                        "seed": seed,
                        "class_weights": weights[task],
                        "wall_seconds": round(time.time() - start, 1),
                        "run_mtl_command": "python run_mtl.py " + shlex.join(argv),
                        "metrics": {
                            k: v for k, v in metrics.items() if not k.endswith(("per_second", "runtime"))
                        },
                    }
                )
                print(
                    f"[{data} {weighting} seed {seed}] test macro-F1 {metrics[f'test_{task}_f1']:.4f}, "
                    f"never predicted {metrics[f'test_{task}_labels_never_predicted']:.0f}, "
                    f"{runs[-1]['wall_seconds']} s",
                    file=sys.stderr,
                    flush=True,
                )
    record = {
        "command": "OMP_NUM_THREADS="
        + os.environ.get("OMP_NUM_THREADS", "")
        + " python "
        + shlex.join([os.path.relpath(__file__, REPO), *sys.argv[1:]]),
        "machine": machine(),
        "summary": summary(runs),
        "runs": runs,
    }
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as handle:
        json.dump(record, handle, indent=2)
    print(json.dumps(record["summary"], indent=2))


if __name__ == "__main__":
    main()
