#!/usr/bin/env python
"""The exports of a trained model (hydrabert.export): accuracy kept, and speed on CPU.

    OMP_NUM_THREADS=1 python benchmarks/bench_export.py --model outputs/demo | tee benchmarks/results/export.json

MODEL is a trained hydrabert model on the demo's tasks (configs/demo.json: sentiment = SST-2,
question_type = TREC-6). It is exported to a temporary folder: each task as a standard
`*ForSequenceClassification`, the whole model as ONNX, and its int8 dynamically quantized copy.

Accuracy, on the labelled test sets (SST-2 1821 sentences, TREC-6 500): hydrabert's `predict()`, each
exported task through `pipeline("text-classification")`, the ONNX graph and the int8 graph through
`OnnxPredictor`. Speed, on the SST-2 test set, same batch size and max_length on every side, all on one
thread (ONNX Runtime's session too): ONNX Runtime vs PyTorch `predict()` (both tasks), int8 vs PyTorch,
and the exported sentiment pipeline vs hydrabert's `predict(tasks="sentiment")`. Ratios > 1: the first
named side is faster.

Checks (exit 1 when one fails): each exported task predicts every test sentence's label as hydrabert does
(so the accuracies are identical); ONNX Runtime is within 1e-4 of PyTorch on real sentences and gives the
same labels.
"""

from __future__ import annotations

import argparse
import tempfile

import _speed


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(_speed.ROOT / "outputs" / "demo"), help="trained demo model")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    _speed.add_common_arguments(parser)
    args = parser.parse_args()
    _speed.setup(args)

    import onnxruntime
    from transformers import AutoTokenizer, pipeline

    from hydrabert import HydraBertModel
    from hydrabert.export import OnnxPredictor, export_onnx, export_task
    from hydrabert.export.onnx_graph import QUANTIZED_ONNX_FILE

    model = HydraBertModel.from_pretrained(args.model).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    loaded = _speed.load_demo_tasks(args.data_root)
    tests = {name: task.splits["test"] for name, task in loaded.items()}
    for name in tests:
        model._check_task(name)
    gold = {
        name: [model.config.tasks[name]["labels"][i] for i in test["label"]] for name, test in tests.items()
    }
    texts = {name: list(test["text"]) for name, test in tests.items()}
    sst2 = texts["sentiment"]
    common = {"batch_size": args.batch_size, "max_length": args.max_length}

    scratch = tempfile.TemporaryDirectory()
    folder = scratch.name
    onnx_export = export_onnx(
        model, f"{folder}/onnx", tokenizer=tokenizer, quantize=True, validation_sentences=sst2[:256]
    )
    for name in tests:
        export_task(model, name, f"{folder}/{name}", tokenizer=tokenizer)

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
    onnx_fp32 = OnnxPredictor(f"{folder}/onnx", session_options=options)
    onnx_int8 = OnnxPredictor(f"{folder}/onnx", file_name=QUANTIZED_ONNX_FILE, session_options=options)
    pipes = {
        name: pipeline(
            "text-classification", model=f"{folder}/{name}", device="cpu", truncation=True, **common
        )
        for name in tests
    }

    def torch_predict(sentences, tasks=None):
        return model.predict(sentences, tokenizer, tasks=tasks, show_progress_bar=False, **common)

    # Warm-up, every side alike.
    torch_predict(sst2[:64])
    onnx_fp32.predict(sst2[:64], **common)
    onnx_int8.predict(sst2[:64], **common)
    pipes["sentiment"](sst2[:64])

    seconds, predictions = {}, {}
    for side, run in (
        ("pytorch", lambda s: torch_predict(s)),
        ("onnxruntime", lambda s: onnx_fp32.predict(s, **common)),
        ("onnxruntime_int8", lambda s: onnx_int8.predict(s, **common)),
        ("hydrabert_sentiment", lambda s: torch_predict(s, tasks="sentiment")),
        ("exported_sentiment_pipeline", lambda s: [{"sentiment": row} for row in pipes["sentiment"](s)]),
    ):
        with _speed.Timer() as timer:
            predictions[side] = {"sentiment": run(sst2)}
        seconds[side] = timer.seconds
    # The other test set, for accuracy only.
    predictions["pytorch"]["question_type"] = torch_predict(texts["question_type"])
    predictions["onnxruntime"]["question_type"] = onnx_fp32.predict(texts["question_type"], **common)
    predictions["onnxruntime_int8"]["question_type"] = onnx_int8.predict(texts["question_type"], **common)
    predictions["exported_question_type_pipeline"] = {
        "question_type": [{"question_type": row} for row in pipes["question_type"](texts["question_type"])]
    }
    predictions["exported_task_pipelines"] = {
        "sentiment": predictions.pop("exported_sentiment_pipeline")["sentiment"],
        "question_type": predictions.pop("exported_question_type_pipeline")["question_type"],
    }
    del predictions["hydrabert_sentiment"]

    def labels(side, task):
        return [row[task]["label"] for row in predictions[side][task]]

    accuracy = {
        side: {
            task: round(
                sum(p == g for p, g in zip(labels(side, task), gold[task], strict=True)) / len(gold[task]), 4
            )
            for task in tests
        }
        for side in predictions
    }
    disagreements = {
        side: {
            task: sum(p != r for p, r in zip(labels(side, task), labels("pytorch", task), strict=True))
            for task in tests
        }
        for side in predictions
        if side != "pytorch"
    }
    max_score_diff = max(
        abs(a[task]["score"] - b[task]["score"])
        for task in tests
        for a, b in zip(predictions["onnxruntime"][task], predictions["pytorch"][task], strict=True)
    )

    failures = []
    if any(disagreements["exported_task_pipelines"].values()):
        failures.append(
            f"exported task pipelines disagree with predict(): {disagreements['exported_task_pipelines']}"
        )
    if onnx_export.max_abs_diff > 1e-4 or max_score_diff > 1e-4 or any(disagreements["onnxruntime"].values()):
        failures.append(
            f"ONNX Runtime differs: logits {onnx_export.max_abs_diff:.2e}, scores {max_score_diff:.2e}, "
            f"labels {disagreements['onnxruntime']}"
        )

    n = len(sst2)
    _speed.emit(
        {
            "benchmark": "export",
            "what": "exports of a trained model: test accuracy per side; sentences/s on the SST-2 test set",
            "model": args.model,
            "test_accuracy": accuracy,
            "label_disagreements_with_pytorch": disagreements,
            "int8_accuracy_change": {
                task: round(accuracy["onnxruntime_int8"][task] - accuracy["pytorch"][task], 4)
                for task in tests
            },
            "onnx_max_abs_logit_diff_256_sst2": onnx_export.max_abs_diff,
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
                "batch_size": args.batch_size,
                "max_length": args.max_length,
                "threads": args.threads,
                "onnxruntime": onnxruntime.__version__,
            },
        },
        failures,
    )
    scratch.cleanup()


if __name__ == "__main__":
    main()
