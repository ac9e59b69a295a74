#!/usr/bin/env python
"""Two-task inference: `HydraBertModel.predict()` vs two single-task HF text-classification pipelines.

    python benchmarks/bench_predict.py | tee benchmarks/results/speed_predict.json

Sentences: the labelled SST-2 test set and the TREC-6 test set (1821 + 500), every sentence labelled for
both tasks. hydrabert: one model, MiniLM + a sentiment head and a question-type head, `predict()` (one
encoder pass serves both heads). Peer: what plain transformers offers for the same output, one
`pipeline("text-classification")` per task, each an `AutoModelForSequenceClassification` on the same MiniLM,
its pooler and classifier set to hydrabert's projection and head, so that both sides compute the same
function. Same batch size (32; a pipeline's default is 1, which would only flatter hydrabert) and the same
max_length on both sides. The sides run in turns, `--rounds` times each.

Check (exit 1 when it fails): for every sentence and task the same label (where the top two
probabilities are more than 1e-4 apart) and the same probability within 1e-4.
"""

from __future__ import annotations

import _speed
import torch


def top2_margins(model, tokenizer, sentences, max_length) -> dict[str, list[float]]:
    """Per task and sentence, the gap between the two highest probabilities: a label that differs where
    it is below 1e-4 is a tie, not a disagreement."""
    logits = {name: [] for name in model.task_names}
    with torch.inference_mode():
        for start in range(0, len(sentences), 256):
            batch = tokenizer(
                sentences[start : start + 256],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            for name, values in model(**batch).logits.items():
                logits[name].append(values)
    margins = {}
    for name, values in logits.items():
        top2 = torch.cat(values).softmax(-1).topk(2, dim=-1).values
        margins[name] = (top2[:, 0] - top2[:, 1]).tolist()
    return margins


def compare(ours: list[dict], theirs: dict, margins: dict, count: int) -> tuple[float, int, list[str]]:
    """Max |score difference|, labels that differ beyond a tie, and failures."""
    failures, max_score_diff, label_mismatches = [], 0.0, 0
    for name, their_rows in theirs.items():
        if len(their_rows) != count:
            failures.append(f"{name}: the pipeline returned {len(their_rows)} results for {count} sentences")
            continue
        for i, (ours_row, their_row) in enumerate(zip(ours, their_rows, strict=True)):
            max_score_diff = max(max_score_diff, abs(ours_row[name]["score"] - their_row["score"]))
            if ours_row[name]["label"] != their_row["label"] and margins[name][i] > 1e-4:
                label_mismatches += 1
    if max_score_diff > 1e-4 or label_mismatches:
        failures.append(
            f"predictions differ: {label_mismatches} labels, max |score diff| {max_score_diff:.2e}"
        )
    return max_score_diff, label_mismatches, failures


def parse_args(argv: list[str] | None = None):
    parser = _speed.argument_parser(__doc__, max_length=128)
    parser.add_argument("--rounds", type=int, default=1)
    return _speed.parse(parser, argv)


def build_sides(work: _speed.DemoWorkload):
    """hydrabert's model with a head per task, and per task a pipeline computing the same function."""
    from transformers import pipeline

    model = _speed.hydrabert_model(work.path, work.specs).eval()
    with torch.no_grad():  # heads with logits of a realistic size, not the near-zero ones of a fresh init
        for head in model.heads.values():
            head.weight.normal_(0.0, 0.5)
    pipes = {
        name: pipeline(
            "text-classification",
            model=_speed.sequence_classifier(work.path, spec, like=model, task=name).eval(),
            tokenizer=work.tokenizer,
            device="cpu",
        )
        for name, spec in work.specs.items()
    }
    return model, pipes


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    work = _speed.demo_workload(args)
    sentences = [text for task in work.loaded.values() for text in task.splits["test"]["text"]]
    model, pipes = build_sides(work)
    limits = {"batch_size": args.batch_size, "max_length": args.max_length}
    outputs, seconds, cpu_seconds = _speed.race(
        {
            "hydrabert": lambda s: model.predict(s, work.tokenizer, show_progress_bar=False, **limits),
            "peer": lambda s: {name: pipe(s, truncation=True, **limits) for name, pipe in pipes.items()},
        },
        sentences,
        args.rounds,
    )
    margins = top2_margins(model, work.tokenizer, sentences, args.max_length)
    max_score_diff, label_mismatches, failures = compare(
        outputs["hydrabert"], outputs["peer"], margins, len(sentences)
    )
    what = "sentences/s, 2 tasks: HydraBertModel.predict vs 2 text-classification pipelines"
    result = {
        **_speed.race_headline("predict", what, len(sentences), seconds, target=1.8),
        **_speed.round_times(seconds, cpu_seconds),
        "sentences": len(sentences),
        "max_abs_score_diff": max_score_diff,
        "label_mismatches": label_mismatches,
        "settings": {
            "tasks": list(work.specs),
            **_speed.settings_of(args, "batch_size", "max_length", "rounds", "threads"),
        },
    }
    return _speed.emit(result, failures)


if __name__ == "__main__":
    main()
