#!/usr/bin/env python
"""Same seed, same numbers? Five tiny run_mtl.py runs under one code tree, recorded for comparison with another.

A refactor should change no number: this runs the same five configurations (plain; gradual unfreezing; frozen
encoder with the feature cache; embedding preservation with a sentence-similarity task; gradient accumulation
with a frozen lower layer and layer-wise decay) on a tiny random BERT and generated data, and writes each run's
log history (timings left out), final-weights digest and metrics. Two trees give equal records, or say where not:

    git archive <old commit> | tar -x -C /tmp/old
    python benchmarks/same_numbers.py /tmp/old old.json && python benchmarks/same_numbers.py . new.json
    python benchmarks/same_numbers.py --compare old.json new.json     # exit 1 on any difference
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile

WORDS = "the a good bad great awful film movie what who where how".split()
VARIANTS = {
    "plain": {},
    "unfreeze": {"gradual_unfreezing": True, "unfreeze_every": 1, "num_train_epochs": 3},
    "frozen_cache": {"freeze_policy": "encoder"},
    "preserve_sts": {"embedding_preservation_weight": 1.0, "with_sts": True},
    "llrd_accum": {"gradient_accumulation_steps": 2, "freeze_lower_layers": 1, "layerwise_lr_decay": 0.7},
}


def make_data(root: str) -> tuple[str, list[dict], dict]:
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    with open(f"{root}/vocab.txt", "w") as handle:
        handle.write("\n".join(vocab))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(f"{root}/enc")
    BertTokenizerFast(f"{root}/vocab.txt").save_pretrained(f"{root}/enc")
    generator = torch.Generator().manual_seed(1)

    def draw(n):
        return [int(i) for i in torch.randint(0, n, (1,), generator=generator)][0]

    for task, labels in (("sent", ["neg", "pos"]), ("quest", ["DESC", "HUM", "LOC"])):
        os.makedirs(f"{root}/{task}")
        for split, n in (("train", 64), ("dev", 16), ("test", 16)):
            with open(f"{root}/{task}/{split}.txt", "w") as handle:
                for _ in range(n):
                    words = [WORDS[draw(len(WORDS))] for _ in range(2 + draw(7))]
                    handle.write(f"{labels[draw(len(labels))]} {' '.join(words)}\n")
    with open(f"{root}/sts.tsv", "w") as handle:
        for i in range(40):
            first = " ".join(WORDS[(i + j) % len(WORDS)] for j in range(4))
            second = " ".join(WORDS[(i * 3 + j) % len(WORDS)] for j in range(3))
            handle.write(f"{first}\t{second}\t{(i % 5) + 0.5}\n")
    tasks = [
        {"name": "sentiment", "data_dir": f"{root}/sent", "file_format": "labeled_lines"},
        {"name": "question", "data_dir": f"{root}/quest", "file_format": "labeled_lines"},
    ]
    for task in tasks:
        task.update(train_file="train.txt", validation_file="dev.txt", test_file="test.txt")
    sts = {
        "name": "sts",
        "problem_type": "sentence_similarity",
        "data_dir": root,
        "train_file": "sts.tsv",
        "file_format": "tsv",
        "quoting": "none",
        "column_names": ["s1", "s2", "score"],
        "text_column": "s1",
        "text_pair_column": "s2",
        "label_column": "score",
        "validation_split_percentage": 20,
    }
    return f"{root}/enc", tasks, sts


def record(code: str, out_json: str) -> None:
    sys.path.insert(0, code)
    os.chdir(code)
    from safetensors.torch import load_file

    import run_mtl

    root = tempfile.mkdtemp()
    encoder, tasks, sts = make_data(root)
    result = {}
    for name, overrides in VARIANTS.items():
        overrides = dict(overrides)
        run_tasks = tasks + [sts] if overrides.pop("with_sts", False) else tasks
        config = {
            "model_name_or_path": encoder,
            "tasks": run_tasks,
            "output_dir": f"{root}/out_{name}",
            "do_train": True,
            "do_eval": True,
            "do_predict": True,
            "num_train_epochs": 2,
            "per_device_train_batch_size": 8,
            "learning_rate": 5e-3,
            "eval_strategy": "epoch",
            "save_strategy": "no",
            "logging_steps": 2,
            "report_to": "none",
            "seed": 7,
            "use_cpu": True,
            "disable_tqdm": True,
            **overrides,
        }
        path = f"{root}/{name}.json"
        with open(path, "w") as handle:
            json.dump(config, handle)
        metrics = run_mtl.main([path])
        with open(f"{root}/out_{name}/trainer_state.json") as handle:
            history = json.load(handle)["log_history"]
        timing = ("runtime", "per_second", "flos")
        weights = load_file(f"{root}/out_{name}/model.safetensors")
        result[name] = {
            "history": [{k: v for k, v in row.items() if not any(t in k for t in timing)} for row in history],
            "digest": hashlib.sha256(
                b"".join(weights[k].numpy().tobytes() for k in sorted(weights))
            ).hexdigest(),
            "metrics": {k: v for k, v in metrics.items() if not any(t in k for t in timing)},
        }
    with open(out_json, "w") as handle:
        json.dump(result, handle, indent=1)


def compare(first: str, second: str) -> int:
    with open(first) as a, open(second) as b:
        old, new = json.load(a), json.load(b)
    same = {
        name: {key: old[name][key] == new[name][key] for key in ("history", "digest", "metrics")}
        for name in old
    }
    print(json.dumps(same))
    return 0 if all(all(flags.values()) for flags in same.values()) else 1


if __name__ == "__main__":
    if sys.argv[1] == "--compare":
        sys.exit(compare(sys.argv[2], sys.argv[3]))
    record(os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2]))
