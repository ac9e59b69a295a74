"""Shared sources (issue 16): one data set with several label columns trains several heads from one encoder
pass per row. The model's loss by task and its gradients, loading such a source (empty cells, a label column
absent from a split, derived labels), collation, training mixed with a plain task under every sampling
strategy and freeze policy, run_mtl.py end to end, and DDP on 2 CPU processes."""

from __future__ import annotations

import csv
import json
import math
import os
import sys

import datasets
import pytest
import torch
from conftest import TINY_WORDS, TWO_PROCESS_LAUNCH, make_task_datasets, seeded_model, tiny_training_args
from test_run_mtl import _config
from torch.nn import functional as F

from hydrabert.data import (
    HydraBertDataError,
    MultiTaskCollator,
    TaskDataConfig,
    build_multitask_dataset,
    label_counts,
    load_tasks,
    task_rows,
    tokenize_task,
)
from hydrabert.trainer import MultiTaskTrainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _count_encoder_calls(model) -> dict:
    calls = {"n": 0}
    model.encoder.register_forward_hook(lambda *_: calls.__setitem__("n", calls["n"] + 1))
    return calls


# ------------------------------------------------------------------------------------------- model
SENTIMENT = torch.tensor([0, 1, -100, 1, 0, -100])
TOPIC = torch.tensor([2, -100, -100, 0, 1, -100])


def test_one_encoder_pass_gives_every_labelled_task_its_loss_as_computed_by_hand():
    model = seeded_model().eval()  # eval: no dropout, so the hand computation sees the same logits
    calls = _count_encoder_calls(model)
    input_ids = torch.randint(5, 99, (6, 7), generator=torch.Generator().manual_seed(0))
    out = model(input_ids=input_ids, labels={"sentiment": SENTIMENT, "topic": TOPIC})
    assert calls["n"] == 1

    sentiment_rows, topic_rows = SENTIMENT != -100, TOPIC != -100
    by_hand = {
        "sentiment": F.cross_entropy(out.logits["sentiment"][sentiment_rows], SENTIMENT[sentiment_rows]),
        "topic": F.cross_entropy(out.logits["topic"][topic_rows], TOPIC[topic_rows]),
    }
    weights = {name: spec["weight"] for name, spec in model.config.tasks.items()}  # sentiment 1.0, topic 0.5
    expected = (weights["sentiment"] * by_hand["sentiment"] + weights["topic"] * by_hand["topic"]) / 2
    torch.testing.assert_close(out.loss, expected, rtol=0, atol=1e-6)
    for name, value in by_hand.items():
        torch.testing.assert_close(out.task_losses[name], value, rtol=0, atol=1e-6)

    # A one-task batch through the dict is that task's loss times its weight, as through task_ids.
    only_topic = model(input_ids=input_ids[topic_rows], labels={"topic": TOPIC[topic_rows]})
    task_ids = torch.full((int(topic_rows.sum()),), model.task_names.index("topic"))
    through_ids = model(input_ids=input_ids[topic_rows], labels=TOPIC[topic_rows], task_ids=task_ids)
    torch.testing.assert_close(only_topic.loss, through_ids.loss, rtol=0, atol=1e-7)
    torch.testing.assert_close(only_topic.loss, weights["topic"] * by_hand["topic"], rtol=0, atol=1e-6)


def _head_gradients(model, input_ids, labels) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    model(input_ids=input_ids, labels=labels).loss.backward()
    return {name: param.grad.clone() for name, param in model.named_parameters() if name.startswith("heads.")}


def test_rows_without_a_label_leave_that_head_s_gradient_untouched():
    model = seeded_model().eval()
    input_ids = torch.randint(5, 99, (6, 7), generator=torch.Generator().manual_seed(1))
    labels = {"sentiment": SENTIMENT, "topic": TOPIC}
    before = _head_gradients(model, input_ids, labels)
    # Other tokens in the rows without a topic label: the topic head's gradient must not move.
    changed = input_ids.clone()
    changed[TOPIC == -100] = torch.randint(5, 99, changed[TOPIC == -100].shape)
    after = _head_gradients(model, changed, labels)
    for name in ("heads.topic.weight", "heads.topic.bias"):
        torch.testing.assert_close(after[name], before[name], rtol=0, atol=1e-7)
    assert not torch.allclose(after["heads.sentiment.weight"], before["heads.sentiment.weight"])

    # No row labelled for topic: its head is in the graph (DDP needs a gradient) and that gradient is zero.
    grads = _head_gradients(model, input_ids, {"sentiment": SENTIMENT, "topic": torch.full((6,), -100)})
    assert torch.count_nonzero(grads["heads.topic.weight"]) == 0
    assert torch.count_nonzero(grads["heads.sentiment.weight"]) > 0


def test_dict_labels_reject_unknown_tasks_wrong_lengths_and_a_task_argument():
    model = seeded_model().eval()
    ids = torch.randint(5, 99, (3, 5))
    with pytest.raises(ValueError, match=r"unknown task\(s\) \['colour'\]"):
        model(input_ids=ids, labels={"colour": torch.tensor([0, 1, 0])})
    with pytest.raises(ValueError, match=r"labels\['topic'\] has shape \(2,\).*one row per example \(3\)"):
        model(input_ids=ids, labels={"topic": torch.tensor([0, 1])})
    with pytest.raises(ValueError, match="pass no `task` or `task_ids`"):
        model(input_ids=ids, task="topic", labels={"topic": torch.tensor([0, 1, 2])})


def test_float_tasks_mark_missing_rows_with_nan():
    model = seeded_model(
        tasks={
            "score": {"num_labels": 1, "problem_type": "regression"},
            "tags": {"num_labels": 3, "problem_type": "multi_label_classification"},
        }
    ).eval()
    ids = torch.randint(5, 99, (3, 5), generator=torch.Generator().manual_seed(2))
    nan = float("nan")
    score = torch.tensor([0.5, nan, 2.0])
    tags = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [nan, nan, nan]])
    out = model(input_ids=ids, labels={"score": score, "tags": tags})
    expected_score = F.mse_loss(out.logits["score"].squeeze(-1)[[0, 2]], score[[0, 2]])
    expected_tags = F.binary_cross_entropy_with_logits(out.logits["tags"][:2], tags[:2])
    torch.testing.assert_close(out.task_losses["score"], expected_score)
    torch.testing.assert_close(out.task_losses["tags"], expected_tags)
    assert torch.isfinite(out.loss)


# -------------------------------------------------------------------------------------------- data
def _write_csv(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


@pytest.fixture
def tickets(tmp_path):
    """Support tickets labelled with intent and urgency; some cells empty, and the test split has no urgency
    column at all."""
    folder = tmp_path / "tickets"
    folder.mkdir()
    train = [
        ("the film was bad", "refund", "high"),
        ("what a good movie", "praise", ""),
        ("who is the answer", "", "low"),
        ("where was the film", "question", "medium"),
        ("how awful", "", ""),  # no label at all: left out of training
        ("the great film", "praise", "low"),
    ]
    _write_csv(folder / "train.csv", ["text", "intent", "urgency"], train)
    _write_csv(
        folder / "test.csv", ["text", "intent"], [("a bad movie", "refund"), ("who was it", "question")]
    )
    return str(folder)


def _ticket_configs(folder, **urgency_options):
    return [
        TaskDataConfig(
            name="intent",
            data_dir=folder,
            train_file="train.csv",
            test_file="test.csv",
            label_column="intent",
        ),
        TaskDataConfig(name="urgency", source="intent", label_column="urgency", **urgency_options),
    ]


def test_a_source_with_two_label_columns_is_read_once_into_one_unit_and_per_task_rows(tickets):
    loaded = load_tasks(_ticket_configs(tickets))
    intent, urgency = loaded["intent"], loaded["urgency"]
    assert intent.shared is urgency.shared and intent.shared.name == "intent+urgency"
    train = intent.shared.splits["train"]
    assert train["text"] == [
        "the film was bad",
        "what a good movie",
        "who is the answer",
        "where was the film",
        "the great film",
    ]
    assert list(train.features["label"]) == ["intent", "urgency"]
    names = {task: train.features["label"][task].names for task in ("intent", "urgency")}
    assert names == {"intent": ["praise", "question", "refund"], "urgency": ["high", "low", "medium"]}
    decoded = [
        {task: None if value is None else names[task][value] for task, value in row.items()}
        for row in train["label"]
    ]
    assert decoded == [
        {"intent": "refund", "urgency": "high"},
        {"intent": "praise", "urgency": None},
        {"intent": None, "urgency": "low"},
        {"intent": "question", "urgency": "medium"},
        {"intent": "praise", "urgency": "low"},
    ]
    assert label_counts(train) == {"intent": 4, "urgency": 4}
    # Per task: the rows that carry its label, as an ordinary one-task data set (ClassLabel and all).
    assert intent.splits["train"]["text"] == [
        "the film was bad",
        "what a good movie",
        "where was the film",
        "the great film",
    ]
    assert intent.splits["train"].features["label"].names == names["intent"]
    assert set(intent.splits) == {"train", "test"} and len(intent.splits["test"]) == 2
    assert set(urgency.splits) == {"train"}  # its label column is not in the test split
    assert urgency.task_spec() == {
        "num_labels": 3,
        "labels": ["high", "low", "medium"],
        "problem_type": "single_label_classification",
        "weight": 1.0,
        "class_weights": None,
        "head": "linear",
        "loss": None,
    }


def test_balanced_class_weights_of_a_shared_task_count_its_labelled_train_rows(tickets):
    urgency = load_tasks(_ticket_configs(tickets, class_weights="balanced"))["urgency"]
    # train labels high, low, medium, low (the rows with an empty cell do not count): 4 / (3 * count)
    assert urgency.class_weights == pytest.approx([4 / 3, 2 / 3, 4 / 3])


def test_label_map_derives_a_task_and_null_means_no_label(tickets):
    loaded = load_tasks(
        _ticket_configs(tickets, label_map={"high": "urgent", "medium": "urgent", "low": None})
    )
    urgency = loaded["urgency"]
    assert urgency.labels == ["urgent"]
    assert urgency.splits["train"]["text"] == ["the film was bad", "where was the film"]
    # The same derived task as a plain task of its own: the rows label_map leaves unlabelled are dropped.
    alone = TaskDataConfig(
        name="urgency",
        data_dir=tickets,
        train_file="train.csv",
        label_column="urgency",
        label_map={"high": "urgent", "medium": "urgent", "low": None, "": None},
    )
    assert load_tasks([alone])["urgency"].splits["train"]["text"] == urgency.splits["train"]["text"]


@pytest.mark.parametrize(
    "tasks, pattern",
    [
        (
            [{"name": "b", "source": "nowhere"}],
            r"Task 'b': source 'nowhere' is not a task of this run; the tasks: \['a', 'b'\]",
        ),
        (
            [{"name": "b", "source": "a"}, {"name": "c", "source": "b"}],
            r"Task 'c': source 'b' reads its own rows from 'a': name 'a' as the source",
        ),
        (
            [{"name": "b", "source": "a", "label_column": "colour"}],
            r"Task 'b': column 'colour' \(label_column\) is in no split of the source \(task 'a'.s data\)",
        ),
        (
            [{"name": "b", "source": "a", "label_column": "urgency", "label_map": {"high": "yes"}}],
            r"Task 'b', train split \(file .*train.csv\): row 2: label 'low' is not a key of label_map \['high'\]",
        ),
    ],
)
def test_bad_shared_sources_fail_while_loading_naming_the_task(tickets, tasks, pattern):
    root = {"name": "a", "data_dir": tickets, "train_file": "train.csv", "label_column": "intent"}
    with pytest.raises(HydraBertDataError, match=pattern):
        load_tasks([TaskDataConfig.from_dict(root), *map(TaskDataConfig.from_dict, tasks)])


@pytest.mark.parametrize(
    "options, pattern",
    [
        (
            {"source": "a", "data_dir": "x", "train_file": "t.csv"},
            r"source='a': the rows come from that task's data, so data_dir, train_file belong to task 'a' only",
        ),
        ({"source": "b"}, "source names the task itself"),
        (
            {"source": "a", "label_map": {"1": "x"}, "label_ids": True, "labels": ["x"]},
            "label_map and label_ids",
        ),
        ({"source": "a", "label_map": {"1": None}}, "label_map maps every value to null"),
        (
            {"source": "a", "label_map": {"1": "x"}, "labels": ["y"]},
            r"label_map maps to \['x'\], which are not",
        ),
        (
            {"source": "a", "label_map": {"1": "x"}, "problem_type": "regression"},
            "label_map is for single_label_classification tasks",
        ),
    ],
)
def test_shared_source_options_are_checked_when_the_config_is_built(options, pattern):
    with pytest.raises(HydraBertDataError, match=pattern):
        TaskDataConfig(name="b", **options)


# --------------------------------------------------------------------------------------- collation
def test_collator_stacks_labels_by_task_marking_missing_ones():
    rows = [
        {"input_ids": [2, 5, 6, 3], "labels": {"intent": 1, "score": 0.5, "tags": [1.0, 0.0], "gone": None}},
        {"input_ids": [2, 5, 6, 3], "labels": {"intent": None, "score": None, "tags": None, "gone": None}},
    ]
    batch = MultiTaskCollator(tokenizer=None)(rows)
    labels = batch["labels"]
    assert set(labels) == {"intent", "score", "tags"}  # a task with no label in the batch is left out
    assert labels["intent"].dtype == torch.long and labels["intent"].tolist() == [1, -100]
    assert labels["score"].dtype == torch.float32 and math.isnan(labels["score"][1])
    assert labels["tags"].shape == (2, 2) and torch.isnan(labels["tags"][1]).all()
    assert "task_ids" not in batch
    with pytest.raises(ValueError, match="a batch mixes rows labelled by task"):
        MultiTaskCollator(tokenizer=None)([rows[0], {"input_ids": [2, 5, 6, 3], "labels": 1}])


# ------------------------------------------------------------------------------------------ trainer
def _shared_and_plain(tokenizer):
    """A shared unit (sentiment rows, most also labelled for topic) and a plain task of its own (`extra`)."""
    train, evaluation = make_task_datasets(tokenizer, sizes={"sentiment": (40, 2), "extra": (24, 2)})

    def add_topic(dataset):
        features = dataset.features.copy()
        features["labels"] = {
            "sentiment": dataset.features["labels"],
            "topic": datasets.ClassLabel(num_classes=3),
        }
        return dataset.map(
            lambda batch, indices: {
                "labels": [
                    {"sentiment": label, "topic": None if i % 4 == 0 else i % 3}
                    for label, i in zip(batch["labels"], indices, strict=True)
                ]
            },
            batched=True,
            with_indices=True,
            features=features,
        )

    shared = {"reviews": add_topic(train["sentiment"]), "extra": train["extra"]}
    return shared, {"reviews": add_topic(evaluation["sentiment"]), "extra": evaluation["extra"]}


def _model_with_extra():
    model = seeded_model()
    model.add_task("extra", num_labels=2)
    return model


@pytest.mark.parametrize(
    "sampling",
    [{"task_sampling": s} for s in ("proportional", "round_robin", "uniform", "temperature")]
    + [{"mixed_task_batches": True}],
)
def test_training_mixes_a_shared_source_with_a_plain_task_under_every_sampling(
    tmp_path, tiny_tokenizer, sampling
):
    train, evaluation = _shared_and_plain(tiny_tokenizer)
    model = _model_with_extra()
    trainer = MultiTaskTrainer(
        model=model,
        args=tiny_training_args(tmp_path, logging_steps=1, **sampling),
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=tiny_tokenizer,
    )
    sampler = trainer.get_train_batch_sampler()
    if not sampling.get("mixed_task_batches") and sampling["task_sampling"] == "proportional":
        # "proportional" for a shared source: one unit, weighed by its rows (40 rows: 5 batches of 8, extra 3).
        assert sampler.task_probabilities() == {"reviews": 5 / 8, "extra": 3 / 8}
    batches = sampler.epoch_batches(0)
    initial = {n: p.detach().clone() for n, p in model.named_parameters()}
    calls = _count_encoder_calls(model)
    trainer.train()
    assert calls["n"] == trainer.state.global_step == len(batches)  # one encoder pass per batch, all tasks
    for name in ("heads.sentiment.weight", "heads.topic.weight", "heads.extra.weight"):
        assert not torch.equal(model.get_parameter(name), initial[name]), name
    logged = {key for row in trainer.state.log_history for key in row if key.startswith("loss/")}
    assert logged == {"loss/sentiment", "loss/topic", "loss/extra"}
    metrics = trainer.evaluate()
    for task in ("sentiment", "topic", "extra"):
        assert f"eval_{task}_accuracy" in metrics
    # topic is evaluated on the rows that carry its label only (12 of the 16 evaluation rows)
    assert trainer.eval_datasets["topic"].num_rows == 12


@pytest.mark.parametrize(
    "freezing, frozen_prefixes",
    [
        ({"freeze_policy": "encoder"}, ("encoder.",)),
        ({"freeze_policy": "heads"}, ("heads.",)),
        ({"frozen_tasks": ["topic"]}, ("heads.topic.",)),
        ({"freeze_lower_layers": 1}, ("encoder.embeddings.", "encoder.encoder.layer.0.")),
        ({"gradual_unfreezing": True, "unfreeze_every": 5.0}, ("encoder.",)),  # never unfreezes in 1 epoch
    ],
)
def test_every_freeze_policy_holds_with_a_shared_source(tmp_path, tiny_tokenizer, freezing, frozen_prefixes):
    train, _ = _shared_and_plain(tiny_tokenizer)
    model = _model_with_extra()
    initial = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = MultiTaskTrainer(
        model=model,
        args=tiny_training_args(tmp_path, eval_strategy="no", **freezing),
        train_dataset=train,
        processing_class=tiny_tokenizer,
    )
    trainer.train()
    for name, param in model.named_parameters():
        frozen = name.startswith(frozen_prefixes)
        assert torch.equal(param.detach(), initial[name]) == frozen, name


def test_a_shared_source_with_an_unknown_task_is_refused(tmp_path, tiny_tokenizer):
    train, _ = _shared_and_plain(tiny_tokenizer)
    with pytest.raises(
        ValueError, match=r"train_dataset\['reviews'\] \(a shared source\): unknown task\(s\) \['topic'\]"
    ):
        MultiTaskTrainer(
            model=seeded_model(tasks={"sentiment": {"num_labels": 2}, "extra": {"num_labels": 2}}),
            args=tiny_training_args(tmp_path),
            train_dataset=train,
            processing_class=tiny_tokenizer,
        )


def test_rows_of_a_run_with_a_shared_source_all_carry_labels_by_task(tiny_tokenizer):
    train, _ = _shared_and_plain(tiny_tokenizer)
    dataset, offsets = build_multitask_dataset(train, task_names=["extra", "sentiment", "topic"])
    rows = dataset.__getitems__([0, offsets["extra"]])
    assert rows[0]["labels"] == {"sentiment": train["reviews"][0]["labels"]["sentiment"], "topic": None}
    assert rows[1]["labels"] == {"extra": train["extra"][0]["labels"]} and "task_id" not in rows[1]
    assert task_rows(train["reviews"], "topic").num_rows == 30


# ------------------------------------------------------------------------------------------ run_mtl
def _two_label_rows(n, seed):
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        length = int(torch.randint(2, 9, (1,), generator=generator))
        words = [
            TINY_WORDS[int(w)] for w in torch.randint(0, len(TINY_WORDS), (length,), generator=generator)
        ]
        mood = ["neg", "pos"][int(torch.randint(0, 2, (1,), generator=generator))]
        kind = (
            "" if i % 3 == 0 else ["DESC", "HUM", "LOC"][int(torch.randint(0, 3, (1,), generator=generator))]
        )
        rows.append((" ".join(words), mood, kind))
    return rows


@pytest.fixture(scope="module")
def shared_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("shared")
    (root / "reviews").mkdir()
    for seed, (split, n) in enumerate((("train", 64), ("dev", 16), ("test", 16))):
        _write_csv(root / "reviews" / f"{split}.csv", ["text", "mood", "kind"], _two_label_rows(n, seed))
    return str(root)


# Two tasks of one source (the `mood` task's files), the second reading the `kind` column.
SHARED_RUN_TASKS = [
    {
        "name": "mood",
        "dataset_name": "someone/reviews",  # on the card (the local data_dir is read)
        "data_dir": "reviews",
        "train_file": "train.csv",
        "validation_file": "dev.csv",
        "test_file": "test.csv",
        "label_column": "mood",
    },
    {"name": "kind", "source": "mood", "label_column": "kind", "weight": 0.5},
]


def _run_config(path, encoder, data_root, output_dir, **overrides):
    """test_run_mtl's config with the shared source's tasks, neither evaluated nor saved per epoch."""
    settings = dict(tasks=SHARED_RUN_TASKS, eval_strategy="no", save_strategy="no") | overrides
    return _config(path, encoder, data_root, output_dir, **settings)


def test_run_mtl_trains_a_shared_source_and_reports_each_task(tmp_path, tiny_encoder_dir, shared_root):
    sys.path.insert(0, REPO)
    import run_mtl

    out = tmp_path / "out"
    results = run_mtl.main([_run_config(tmp_path / "c.json", tiny_encoder_dir, shared_root, out)])
    assert results["train_samples"] == 64  # the source's rows, once each (not once per task)
    for split in ("eval", "test"):
        for task in ("mood", "kind"):
            assert f"{split}_{task}_accuracy" in results
    state = json.loads((out / "trainer_state.json").read_text())
    # 64 rows in batches of 8, 2 epochs: one step (one encoder pass) per batch for both tasks
    assert state["global_step"] == 2 * 8
    # The card counts, per task, the training rows that carry its label.
    with open(os.path.join(shared_root, "reviews", "train.csv"), encoding="utf-8") as handle:
        kind_rows = sum(1 for row in csv.DictReader(handle) if row["kind"])
    card = (out / "README.md").read_text()
    hub = "[someone/reviews](https://huggingface.co/datasets/someone/reviews)"
    assert f"| `kind` | {hub} | {kind_rows} | " in card and f"| `mood` | {hub} | 64 | 16 | 16 |" in card
    # Both tasks were evaluated on that one Hub dataset: one model-index entry per split names them both.
    assert "name: kind, mood" in card or "name: mood, kind" in card
    config = json.loads((out / "config.json").read_text())
    assert config["tasks"]["kind"]["weight"] == 0.5 and config["tasks"]["kind"]["labels"] == [
        "DESC",
        "HUM",
        "LOC",
    ]


RECORD_RANK_WEIGHTS = """
import hashlib, json, os, sys
import torch
import run_mtl
from hydrabert.trainer import MultiTaskTrainer

original_train = MultiTaskTrainer.train
def train_and_record(self, *args, **kwargs):
    model = self.accelerator.unwrap_model(self.model)
    initial = {n: p.detach().clone() for n, p in model.named_parameters()}
    result = original_train(self, *args, **kwargs)
    record = {"world_size": self.accelerator.num_processes, "digest": {}, "changed": {}}
    for name, param in model.named_parameters():
        record["digest"][name] = hashlib.sha256(param.detach().numpy().tobytes()).hexdigest()
        record["changed"][name] = not torch.equal(param.detach(), initial[name])
    with open(os.path.join(self.args.output_dir, f"rank{self.accelerator.process_index}.json"), "w") as handle:
        json.dump(record, handle)
    return result
MultiTaskTrainer.train = train_and_record
run_mtl.main(sys.argv[1:])
"""


def test_two_process_ddp_trains_a_shared_source_with_ranks_identical(tmp_path, tiny_encoder_dir, shared_root):
    import subprocess

    out = tmp_path / "ddp"
    # DDP without find_unused_parameters: every head must be in the graph on every step, on every rank,
    # whichever tasks the rows of its batch are labelled for.
    config = _run_config(tmp_path / "ddp.json", tiny_encoder_dir, shared_root, out, do_eval=False)
    script = tmp_path / "record.py"
    script.write_text(RECORD_RANK_WEIGHTS)
    result = subprocess.run(
        [sys.executable, *TWO_PROCESS_LAUNCH, str(script), config],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": REPO, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["world_size"] == 2
    assert ranks[0]["digest"] == ranks[1]["digest"], "ranks diverged"
    assert all(ranks[0]["changed"][f"heads.{task}.weight"] for task in ("mood", "kind"))
    assert (out / "test_results.json").exists()


def test_tokenized_shared_source_keeps_its_label_struct(tickets, tiny_tokenizer):
    source = load_tasks(_ticket_configs(tickets))["intent"].shared
    tokenized = tokenize_task(source.splits, tiny_tokenizer, max_length=16)["train"]
    assert list(tokenized.features["labels"]) == ["intent", "urgency"]
    batch = MultiTaskCollator(tiny_tokenizer)([tokenized[i] for i in range(3)])
    assert batch["labels"]["intent"].tolist() == [2, 0, -100]
    assert batch["labels"]["urgency"].tolist() == [0, -100, 1]
