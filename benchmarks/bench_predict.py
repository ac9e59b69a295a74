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

import argparse

import _speed
import torch


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=1)
    _speed.add_common_arguments(parser)
    args = parser.parse_args()
    _speed.setup(args)

    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    from hydrabert import HydraBertModel

    path = _speed.minilm_path()
    loaded = _speed.load_demo_tasks(args.data_root)
    sentences = [text for task in loaded.values() for text in task.splits["test"]["text"]]
    specs = {name: task.task_spec() for name, task in loaded.items()}
    tokenizer = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(_speed.SEED)
    model = HydraBertModel.from_encoder_pretrained(path, tasks=specs).eval()
    with torch.no_grad():  # heads with logits of a realistic size, not the near-zero ones of a fresh init
        for head in model.heads.values():
            head.weight.normal_(0.0, 0.5)

    pipes = {}
    for name, spec in specs.items():
        peer = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=spec["num_labels"], id2label=dict(enumerate(spec["labels"]))
        ).eval()
        with torch.no_grad():
            peer.bert.pooler.dense.load_state_dict(model.pooler.dense.state_dict())
            peer.classifier.load_state_dict(model.heads[name].state_dict())
        pipes[name] = pipeline("text-classification", model=peer, tokenizer=tokenizer, device="cpu")

    def ours():
        return model.predict(
            sentences,
            tokenizer,
            batch_size=args.batch_size,
            max_length=args.max_length,
            show_progress_bar=False,
        )

    def theirs():
        return {
            name: pipe(sentences, batch_size=args.batch_size, truncation=True, max_length=args.max_length)
            for name, pipe in pipes.items()
        }

    # Warm-up on a few sentences, both sides alike.
    model.predict(sentences[:64], tokenizer, batch_size=args.batch_size)
    for pipe in pipes.values():
        pipe(sentences[:64], batch_size=args.batch_size)

    seconds = {"hydrabert": [], "peer": []}
    cpu_seconds = {"hydrabert": 0.0, "peer": 0.0}
    outputs = {}
    for round_ in range(args.rounds):
        order = [("hydrabert", ours), ("peer", theirs)]
        for name, run in order if round_ % 2 == 0 else order[::-1]:
            with _speed.Timer() as timer:
                outputs[name] = run()
            seconds[name].append(timer.seconds)
            cpu_seconds[name] += timer.cpu_seconds

    failures = []
    max_score_diff, label_mismatches = 0.0, 0
    with torch.inference_mode():  # top-2 margins, to tell a real disagreement from a near tie
        logits = {name: [] for name in specs}
        for start in range(0, len(sentences), 256):
            batch = tokenizer(
                sentences[start : start + 256],
                padding=True,
                truncation=True,
                max_length=args.max_length,
                return_tensors="pt",
            )
            for name, values in model(**batch).logits.items():
                logits[name].append(values)
        margins = {}
        for name, values in logits.items():
            top2 = torch.cat(values).softmax(-1).topk(2, dim=-1).values
            margins[name] = (top2[:, 0] - top2[:, 1]).tolist()
    for name in specs:
        theirs_ = outputs["peer"][name]
        if len(theirs_) != len(sentences):
            failures.append(
                f"{name}: the pipeline returned {len(theirs_)} results for {len(sentences)} sentences"
            )
            continue
        for i, (ours_row, their_row) in enumerate(zip(outputs["hydrabert"], theirs_, strict=True)):
            max_score_diff = max(max_score_diff, abs(ours_row[name]["score"] - their_row["score"]))
            if ours_row[name]["label"] != their_row["label"] and margins[name][i] > 1e-4:
                label_mismatches += 1
    if max_score_diff > 1e-4 or label_mismatches:
        failures.append(
            f"predictions differ: {label_mismatches} labels, max |score diff| {max_score_diff:.2e}"
        )

    total = {name: sum(values) for name, values in seconds.items()}
    n = len(sentences) * args.rounds
    _speed.emit(
        {
            "benchmark": "predict",
            "what": "sentences/s, 2 tasks: HydraBertModel.predict vs 2 text-classification pipelines",
            "hydrabert_samples_per_s": round(n / total["hydrabert"], 2),
            "peer_samples_per_s": round(n / total["peer"], 2),
            "ratio": round(total["peer"] / total["hydrabert"], 3),
            "target": 1.8,
            "cpu_time_ratio": round(cpu_seconds["peer"] / cpu_seconds["hydrabert"], 3),
            "round_seconds": {name: [round(s, 2) for s in values] for name, values in seconds.items()},
            "sentences": len(sentences),
            "max_abs_score_diff": max_score_diff,
            "label_mismatches": label_mismatches,
            "settings": {
                "tasks": list(specs),
                "batch_size": args.batch_size,
                "max_length": args.max_length,
                "rounds": args.rounds,
                "threads": args.threads,
            },
        },
        failures,
    )


if __name__ == "__main__":
    main()
