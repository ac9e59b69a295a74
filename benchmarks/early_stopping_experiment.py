#!/usr/bin/env python
"""Learning curves, and what early stopping finds on them: the demo recipe (configs/demo.json's settings,
MiniLM) on small data sets, validation and test metric after every epoch up to a cap, against the fixed
2-epoch budget of configs/demo.json.

    flock /work/cpu.lock env OMP_NUM_THREADS=2 python benchmarks/early_stopping_experiment.py   # the record
    python benchmarks/report.py     # docs/results.md section 8 and docs/img/early_stopping.png from the record
    python benchmarks/early_stopping_experiment.py --data trec --epochs 2 --max_train_samples 64   # a smoke run

Per data set, two runs of run_mtl.py's pipeline in this process (its argument parsing, data loading, model
assembly and MultiTaskTrainer):
- fixed: num_train_epochs=2 (demo.json's budget), the test split evaluated once at the end;
- curve: num_train_epochs=--epochs as the cap, validation evaluated after every epoch and, for the curve
  only, the test split too (its time is measured and left out of the curve's wall times).
A run with `early_stopping_patience=P` and the same cap trains exactly the curve run's first epochs (same
seed, same learning-rate schedule, which follows the cap; the extra test evaluation puts back the random
generators' states it used, and saving checkpoints draws none): it stops at
the first epoch whose validation selection score has not improved for P evaluations and keeps the best
epoch up to there. The record derives that for each P from the curve; `--verify DATA` also runs
`run_mtl.py ... --early_stopping_patience P` for real on DATA, to check the derivation and time the real
thing (checkpoint saving included). Writes benchmarks/results/early_stopping.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import sys
import time

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from experiments import machine  # noqa: E402  (benchmarks/, this script's folder)
from transformers import TrainerCallback, set_seed  # noqa: E402

import run_mtl  # noqa: E402
from hydrabert.trainer import MultiTaskTrainer  # noqa: E402

RESULTS = os.path.join(REPO, "benchmarks", "results", "early_stopping.json")
# The task of each data set as the shipped configs read it (trec: demo.json's question_type, with its 10%
# validation split carved from train; scicite and csabstruct: the transfer configs' tasks).
TASKS = {
    "trec": ("configs/demo.json", "question_type"),
    "scicite": ("configs/transfer_scientific.json", "citation_intent"),
    "csabstruct": ("configs/transfer_csabstruct.json", "sentence_role"),
    "sst2": ("configs/demo.json", "sentiment"),
    "sst5": ("configs/sst5_duplicated.json", "sentiment_fine"),
}


def task_spec(data: str) -> dict:
    config, name = TASKS[data]
    with open(os.path.join(REPO, config)) as handle:
        return next(task for task in json.load(handle)["tasks"] if task["name"] == name)


def run_arguments(data: str, epochs: int, args, extra: list[str] = ()) -> list[str]:
    """run_mtl.py arguments: demo.json's recipe on one task, capped at `epochs`."""
    return [
        "configs/demo.json",
        "--tasks", json.dumps([task_spec(data)]),
        "--output_dir", os.path.join("outputs", "early_stopping", f"{data}-{epochs}"),
        "--num_train_epochs", str(epochs),
        "--max_train_samples", str(args.max_train_samples),
        "--max_eval_samples", str(args.max_eval_samples),
        "--max_test_samples", str(args.max_test_samples),
        "--do_eval", "false",
        "--save_strategy", "no",
        "--logging_steps", "1000",
        "--disable_tqdm", "true",
        "--overwrite_output_dir", "true",
        *extra,
    ]  # fmt: skip


class TestEachEpoch(TrainerCallback):
    """After each validation evaluation during training, evaluates the test split too (timed)."""

    def __init__(self, test_sets):
        self.test_sets, self.trainer, self.busy = test_sets, None, False
        self.rows, self.test_seconds = [], 0.0
        self.start = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.time()

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if self.busy or not metrics or not any(k.startswith("eval_") for k in metrics):
            return
        elapsed = time.time() - self.start - self.test_seconds
        self.busy = True
        began = time.time()
        # Iterating a DataLoader draws its base seed from torch's global generator: without restoring it, this
        # extra evaluation would change every later dropout mask, and the curve would no longer be the first
        # epochs of an early-stopping run with the same cap (which evaluates validation only).
        rng = random.getstate(), np.random.get_state(), torch.get_rng_state()
        test = self.trainer.evaluate(self.test_sets, metric_key_prefix="test")
        random.setstate(rng[0])
        np.random.set_state(rng[1])
        torch.set_rng_state(rng[2])
        self.test_seconds += time.time() - began
        self.busy = False
        keep = ("f1", "accuracy", "selection_score")
        row = {"epoch": round(state.epoch, 3), "step": state.global_step, "seconds": round(elapsed, 1)}
        row.update({k: round(v, 4) for k, v in {**metrics, **test}.items() if k.endswith(keep)})
        self.rows.append(row)
        print(f"  epoch {row['epoch']}: {json.dumps(row)}", file=sys.stderr, flush=True)


def train_and_test(argv: list[str], curve: bool) -> dict:
    """run_mtl.run's steps without saving a model; the test metrics at the end, and with `curve` the rows."""
    model_args, data_args, training_args = run_mtl.parse_args(argv)
    run_mtl.setup_logging(training_args)
    configs = run_mtl.task_configs(data_args)
    with run_mtl.progress_bars(False):
        set_seed(training_args.seed)
        splits, train_units, model, tokenizer, _ = run_mtl.load_data_and_model(
            model_args, data_args, training_args, configs
        )
        test_sets = run_mtl.split_of(splits, "test")
        callback = TestEachEpoch(test_sets) if curve else None
        trainer = MultiTaskTrainer(
            model=model,
            args=training_args,
            train_dataset=train_units,
            eval_dataset=run_mtl.split_of(splits, "validation"),
            processing_class=tokenizer,
            callbacks=[callback] if curve else None,
        )
        if curve:
            callback.trainer = trainer
        start = time.time()
        trainer.train()
        train_seconds = time.time() - start - (callback.test_seconds if curve else 0.0)
        test = trainer.evaluate(eval_dataset=test_sets, metric_key_prefix="test")
    sizes = {split: len(ds) for split, ds in next(iter(splits.values())).items() if ds is not None}
    return {
        "sizes": sizes,
        "train_seconds": round(train_seconds, 1),
        "test": {k: round(v, 4) for k, v in test.items() if k.endswith(("f1", "accuracy"))},
        "curve": callback.rows if curve else None,
        "last_epoch": trainer.state.epoch,
        "kept_step": trainer.state.best_global_step,
        "kept_epoch": next(
            (
                r["epoch"]
                for r in trainer.state.log_history
                if r.get("step") == trainer.state.best_global_step and "eval_selection_score" in r
            ),
            None,
        ),
    }


def early_stop(curve: list[dict], task: str, patience: int) -> dict:
    """What `early_stopping_patience=patience` does on this curve (HF's rule: a count of evaluations without a
    strictly better validation selection score; the best one is kept)."""
    key = "eval_selection_score"
    best, count, kept, stop = None, 0, None, None
    for row in curve:
        if best is None or row[key] > best:
            best, count, kept = row[key], 0, row
        else:
            count += 1
        if count >= patience:
            stop = row
            break
    stopped_early = stop is not None
    stop = stop or curve[-1]
    return {
        "patience": patience,
        "stopped_epoch": stop["epoch"],
        "stopped_early": stopped_early,
        "kept_epoch": kept["epoch"],
        "validation_f1": kept[f"eval_{task}_f1"],
        "test_f1": kept[f"test_{task}_f1"],
        "test_accuracy": kept[f"test_{task}_accuracy"],
        "wall_seconds": stop["seconds"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", nargs="+", choices=sorted(TASKS), default=["trec", "scicite", "csabstruct"])
    parser.add_argument("--epochs", type=int, default=10, help="the cap of the curve run")
    parser.add_argument("--fixed_epochs", type=int, default=2, help="the fixed budget (demo.json: 2)")
    parser.add_argument("--patience", nargs="+", type=int, default=[1, 2, 3, 5])
    parser.add_argument("--default_patience", type=int, default=3)
    parser.add_argument("--max_train_samples", type=int, default=1000)
    parser.add_argument("--max_eval_samples", type=int, default=1000)
    parser.add_argument("--max_test_samples", type=int, default=1000)
    parser.add_argument(
        "--verify", nargs="*", default=[], choices=sorted(TASKS), help="also run these for real"
    )
    parser.add_argument("--output", default=RESULTS)
    parser.add_argument(
        "--append", action="store_true", help="add these data sets' runs to --output's record"
    )
    args = parser.parse_args()
    os.chdir(REPO)  # run_mtl resolves data_root (../shared/data) from here
    runs = []
    for data in args.data:
        task = task_spec(data)["name"]
        print(f"[{data}]", file=sys.stderr, flush=True)
        fixed_argv = run_arguments(data, args.fixed_epochs, args)
        curve_argv = run_arguments(data, args.epochs, args, ["--eval_strategy", "epoch"])
        fixed = train_and_test(fixed_argv, curve=False)
        curve = train_and_test(curve_argv, curve=True)
        run = {
            "data": data,
            "task": task,
            "fixed_epochs": args.fixed_epochs,
            "fixed": {**fixed, "run_mtl_command": "python run_mtl.py " + shlex.join(fixed_argv)},
            "curve": {**curve, "run_mtl_command": "python run_mtl.py " + shlex.join(curve_argv)},
            "early_stopping": {str(p): early_stop(curve["curve"], task, p) for p in args.patience},
        }
        if data in args.verify:
            patience_argv = run_arguments(
                data, args.epochs, args, ["--early_stopping_patience", str(args.default_patience)]
            )
            patience_argv[
                patience_argv.index("--save_strategy") : patience_argv.index("--save_strategy") + 2
            ] = []
            verified = train_and_test(patience_argv, curve=False)
            run["verified"] = {
                **verified,
                "run_mtl_command": "python run_mtl.py " + shlex.join(patience_argv),
            }
        runs.append(run)
        print(json.dumps({k: run[k] for k in ("data", "early_stopping")}), file=sys.stderr, flush=True)
    record = {
        "command": "OMP_NUM_THREADS="
        + os.environ.get("OMP_NUM_THREADS", "")
        + " python "
        + shlex.join([os.path.relpath(__file__, REPO), *sys.argv[1:]]),
        "machine": f"{machine()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}",
        "default_patience": args.default_patience,
        "epochs": args.epochs,
        "runs": runs,
    }
    if args.append and os.path.isfile(args.output):
        with open(args.output) as handle:
            earlier = json.load(handle)
        if (earlier["epochs"], earlier["default_patience"]) != (args.epochs, args.default_patience):
            raise SystemExit(f"--append: {args.output} was made with other --epochs/--default_patience")
        kept = [run for run in earlier["runs"] if run["data"] not in args.data]
        record["runs"] = kept + runs
        record["command"] = earlier["command"] + " && " + record["command"]
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as handle:
        json.dump(record, handle, indent=1)
    print(json.dumps(record))


if __name__ == "__main__":
    main()
