#!/usr/bin/env python
"""The exports of a trained model (hydrabert.export): accuracy kept, and speed on CPU.

    OMP_NUM_THREADS=1 python benchmarks/bench_export.py --model outputs/demo | tee benchmarks/results/export.json

Truncation defaults to 64, the demo's training length (configs/demo.json max_seq_length).

MODEL is a trained hydrabert model on the demo's tasks (configs/demo.json: sentiment = SST-2,
question_type = TREC-6). It is exported to a temporary folder: each task as a standard
`*ForSequenceClassification`, the whole model as ONNX, and its int8 dynamically quantized copy.

Accuracy, on the labelled test sets (SST-2 1821 sentences, TREC-6 500): hydrabert's `predict()`, each
exported task through `pipeline("text-classification")`, the ONNX graph and the int8 graph through
`OnnxPredictor`. The ONNX graph is export_onnx's default, fused by ONNX Runtime's transformer optimizer
(its fused-node counts are recorded), and int8 is quantized from it. Speed, on the SST-2 test set, same
batch size and max_length on every side, all on one thread (ONNX Runtime's session too): ONNX Runtime vs PyTorch `predict()` (both tasks), int8 vs PyTorch,
and the exported sentiment pipeline vs hydrabert's `predict(tasks="sentiment")`. Ratios > 1: the first
named side is faster.

Checks (exit 1 when one fails): each exported task predicts every test sentence's label as hydrabert does
(so the accuracies are identical); ONNX Runtime is within 1e-4 of PyTorch on real sentences and gives the
same labels.
"""

from __future__ import annotations

import dataclasses
import tempfile

import _speed


def parse_args(argv: list[str] | None = None):
    parser = _speed.argument_parser(__doc__, max_length=64)
    parser.add_argument("--model", default=str(_speed.ROOT / "outputs" / "demo"), help="trained demo model")
    return _speed.parse(parser, argv)


@dataclasses.dataclass
class Sides:
    """The trained model and its exports, each able to predict both tasks' test sets."""

    model: object
    tokenizer: object
    common: dict  # batch_size, max_length: the same on every side
    onnx_export: object  # export_onnx's report (max |logit diff| on 256 SST-2 sentences)
    onnx_fp32: object
    onnx_int8: object
    pipes: dict  # task -> text-classification pipeline on the exported classifier

    def torch_predict(self, sentences, tasks=None):
        return self.model.predict(
            sentences, self.tokenizer, tasks=tasks, show_progress_bar=False, **self.common
        )

    def pipeline_predict(self, task: str, sentences):
        """The exported task's pipeline, its rows shaped as `predict()`'s."""
        return [{task: row} for row in self.pipes[task](sentences)]


def load_tests(model, data_root) -> tuple[dict, dict]:
    """The demo tasks' test sets: per task the sentences and their gold labels (by name)."""
    tests = {name: task.splits["test"] for name, task in _speed.load_demo_tasks(data_root).items()}
    for name in tests:
        model._check_task(name)
    texts = {name: list(test["text"]) for name, test in tests.items()}
    gold = {
        name: [model.config.tasks[name]["labels"][i] for i in test["label"]] for name, test in tests.items()
    }
    return texts, gold


def export_sides(model, tokenizer, args, folder: str, tasks: list[str], sst2: list[str]) -> Sides:
    """Exports the model to `folder` (ONNX with its int8 copy, each task as a classifier) and loads every
    side; ONNX Runtime gets `args.threads` threads like torch."""
    import onnxruntime
    from transformers import pipeline

    from hydrabert.export import OnnxPredictor, export_onnx, export_task
    from hydrabert.export.onnx_graph import QUANTIZED_ONNX_FILE

    common = {"batch_size": args.batch_size, "max_length": args.max_length}
    onnx_export = export_onnx(
        model, f"{folder}/onnx", tokenizer=tokenizer, quantize=True, validation_sentences=sst2[:256]
    )
    for name in tasks:
        export_task(model, name, f"{folder}/{name}", tokenizer=tokenizer)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
    pipes = {
        name: pipeline(
            "text-classification", model=f"{folder}/{name}", device="cpu", truncation=True, **common
        )
        for name in tasks
    }
    return Sides(
        model,
        tokenizer,
        common,
        onnx_export,
        OnnxPredictor(f"{folder}/onnx", session_options=options),
        OnnxPredictor(f"{folder}/onnx", file_name=QUANTIZED_ONNX_FILE, session_options=options),
        pipes,
    )


def timed_predictions(sides: Sides, sst2: list[str]) -> tuple[dict, dict]:
    """Each side on the SST-2 test set after a warm-up on its first 64 sentences: seconds and outputs."""
    runs = {
        "pytorch": sides.torch_predict,
        "onnxruntime": lambda s: sides.onnx_fp32.predict(s, **sides.common),
        "onnxruntime_int8": lambda s: sides.onnx_int8.predict(s, **sides.common),
        "hydrabert_sentiment": lambda s: sides.torch_predict(s, tasks="sentiment"),
        "exported_sentiment_pipeline": lambda s: sides.pipeline_predict("sentiment", s),
    }
    for side in ("pytorch", "onnxruntime", "onnxruntime_int8", "exported_sentiment_pipeline"):
        runs[side](sst2[:64])
    seconds, predictions = {}, {}
    for side, run in runs.items():
        with _speed.Timer() as timer:
            predictions[side] = run(sst2)
        seconds[side] = timer.seconds
    return seconds, predictions


def all_predictions(sides: Sides, texts: dict, timed: dict) -> dict:
    """`{side: {task: rows}}` for the sides whose accuracy counts: the timed SST-2 outputs, and the
    question-type test set run for accuracy only."""
    questions = texts["question_type"]
    return {
        "pytorch": {"sentiment": timed["pytorch"], "question_type": sides.torch_predict(questions)},
        "onnxruntime": {
            "sentiment": timed["onnxruntime"],
            "question_type": sides.onnx_fp32.predict(questions, **sides.common),
        },
        "onnxruntime_int8": {
            "sentiment": timed["onnxruntime_int8"],
            "question_type": sides.onnx_int8.predict(questions, **sides.common),
        },
        "exported_task_pipelines": {
            "sentiment": timed["exported_sentiment_pipeline"],
            "question_type": sides.pipeline_predict("question_type", questions),
        },
    }


def agreement(predictions: dict, gold: dict) -> tuple[dict, dict, float]:
    """Per side and task the test accuracy and the labels that differ from PyTorch's; and the largest
    score difference between ONNX Runtime and PyTorch."""

    def labels(side, task):
        return [row[task]["label"] for row in predictions[side][task]]

    accuracy = {
        side: {
            task: round(
                sum(p == g for p, g in zip(labels(side, task), gold[task], strict=True)) / len(gold[task]), 4
            )
            for task in gold
        }
        for side in predictions
    }
    disagreements = {
        side: {
            task: sum(p != r for p, r in zip(labels(side, task), labels("pytorch", task), strict=True))
            for task in gold
        }
        for side in predictions
        if side != "pytorch"
    }
    max_score_diff = max(
        abs(a[task]["score"] - b[task]["score"])
        for task in gold
        for a, b in zip(predictions["onnxruntime"][task], predictions["pytorch"][task], strict=True)
    )
    return accuracy, disagreements, max_score_diff


def check(disagreements: dict, onnx_logit_diff: float, max_score_diff: float) -> list[str]:
    failures = []
    if any(disagreements["exported_task_pipelines"].values()):
        failures.append(
            f"exported task pipelines disagree with predict(): {disagreements['exported_task_pipelines']}"
        )
    if onnx_logit_diff > 1e-4 or max_score_diff > 1e-4 or any(disagreements["onnxruntime"].values()):
        failures.append(
            f"ONNX Runtime differs: logits {onnx_logit_diff:.2e}, scores {max_score_diff:.2e}, "
            f"labels {disagreements['onnxruntime']}"
        )
    return failures


def result_line(
    args, accuracy, disagreements, onnx_logit_diff, max_score_diff, seconds, n: int, fused_nodes: dict
) -> dict:
    import onnxruntime

    return {
        "benchmark": "export",
        "what": "exports of a trained model: test accuracy per side; sentences/s on the SST-2 test set",
        "model": args.model,
        "test_accuracy": accuracy,
        "label_disagreements_with_pytorch": disagreements,
        "int8_accuracy_change": {
            task: round(accuracy["onnxruntime_int8"][task] - accuracy["pytorch"][task], 4)
            for task in accuracy["pytorch"]
        },
        "onnx_fused_nodes": fused_nodes,
        "onnx_max_abs_logit_diff_256_sst2": onnx_logit_diff,
        "onnx_max_abs_score_diff": max_score_diff,
        "samples_per_s": {side: round(n / s, 2) for side, s in seconds.items()},
        "ratio_onnxruntime_vs_pytorch": round(seconds["pytorch"] / seconds["onnxruntime"], 3),
        "ratio_onnxruntime_int8_vs_pytorch": round(seconds["pytorch"] / seconds["onnxruntime_int8"], 3),
        "ratio_exported_pipeline_vs_hydrabert_predict": round(
            seconds["hydrabert_sentiment"] / seconds["exported_sentiment_pipeline"], 3
        ),
        "seconds": {side: round(s, 2) for side, s in seconds.items()},
        "settings": {
            "sentences": n,
            **_speed.settings_of(args, "batch_size", "max_length", "threads"),
            "onnxruntime": onnxruntime.__version__,
        },
    }


def main(argv: list[str] | None = None) -> dict:
    from transformers import AutoTokenizer

    from hydrabert import HydraBertModel

    args = parse_args(argv)
    model = HydraBertModel.from_pretrained(args.model).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    texts, gold = load_tests(model, args.data_root)
    sst2 = texts["sentiment"]
    with tempfile.TemporaryDirectory() as folder:
        sides = export_sides(model, tokenizer, args, folder, list(texts), sst2)
        seconds, timed = timed_predictions(sides, sst2)
        predictions = all_predictions(sides, texts, timed)
    accuracy, disagreements, max_score_diff = agreement(predictions, gold)
    onnx_logit_diff = sides.onnx_export.max_abs_diff
    failures = check(disagreements, onnx_logit_diff, max_score_diff)
    line = result_line(
        args,
        accuracy,
        disagreements,
        onnx_logit_diff,
        max_score_diff,
        seconds,
        len(sst2),
        sides.onnx_export.fused_nodes,
    )
    return _speed.emit(line, failures)


if __name__ == "__main__":
    main()
