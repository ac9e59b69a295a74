"""Streamed tasks (issue 25): rows mixed by the sampling strategy's probabilities, batches of one task sorted by
length within a buffer, each process reading rows no other reads, `max_steps` required before any work."""

from __future__ import annotations

import json
import os
import textwrap

import datasets
import pytest
import torch
from conftest import launch_two_processes, make_task_datasets, seeded_model, tiny_training_args

from hydrabert.data.streaming import (
    StreamingBatches,
    stream_probabilities,
    stream_row_counts,
    tokenize_stream,
    with_row_count,
)
from hydrabert.trainer import MultiTaskTrainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _stream(rows: int, shards: int = 2, **columns) -> datasets.IterableDataset:
    data = {"row_id": list(range(rows)), "length": [1 + i % 7 for i in range(rows)], **columns}
    return with_row_count(datasets.Dataset.from_dict(data).to_iterable_dataset(num_shards=shards), rows)


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [("proportional", 0.75), ("temperature", 600**0.5 / (600**0.5 + 200**0.5)), ("uniform", 0.5)],
)
def test_the_task_mix_follows_the_strategy_probabilities(strategy, expected):
    streams = {"big": _stream(600), "small": _stream(200)}
    probabilities = stream_probabilities(stream_row_counts(streams), strategy, temperature=2.0)
    assert probabilities["big"] == pytest.approx(expected)
    batches = StreamingBatches(streams, ["big", "small"], list, batch_size=8, probabilities=probabilities)
    counts = {0: 0, 1: 0}
    seen = {0: set(), 1: set()}
    for row in batches.rows():
        counts[row["task_id"]] += 1
        seen[row["task_id"]].add(row["row_id"])
    total = sum(counts.values())
    spread = 4 * (expected * (1 - expected) / total) ** 0.5  # four binomial standard deviations
    assert counts[0] / total == pytest.approx(expected, abs=spread)
    # One pass of the mix: every row of every task is read (a task that ran out first started over).
    assert seen[0] == set(range(600)) and seen[1] == set(range(200))


def test_batches_hold_one_task_sorted_by_length_within_the_buffer():
    streams = {"a": _stream(64), "b": _stream(40)}
    batches = StreamingBatches(
        streams, ["a", "b"], list, batch_size=4, probabilities={"a": 0.5, "b": 0.5}, buffer_size=32
    )
    produced = list(batches)
    rows = [row for batch in produced for row in batch]
    assert all(len({row["task_id"] for row in batch}) == 1 for batch in produced)
    assert sum(len(batch) < 4 for batch in produced) <= 2  # only each task's last rest can be short
    assert all([r["length"] for r in batch] == sorted(r["length"] for r in batch) for batch in produced)
    # Sorting within 32-row buffers pads less than the stream's own order would.
    padded = sum(max(r["length"] for r in batch) * len(batch) for batch in produced)
    in_order = [row for row in batches.rows()]
    chunks = [in_order[k : k + 4] for k in range(0, len(in_order), 4)]
    assert padded < sum(max(r["length"] for r in chunk) * len(chunk) for chunk in chunks)
    assert len(rows) == len(in_order)


def test_a_new_epoch_reshuffles_and_the_same_epoch_repeats():
    streams = {"a": _stream(50), "b": _stream(30)}

    def order(epoch):
        batches = StreamingBatches(
            streams, ["a", "b"], list, batch_size=5, probabilities={"a": 0.6, "b": 0.4}
        )
        batches.set_epoch(epoch)
        return [(row["task_id"], row["row_id"]) for row in batches.rows()]

    assert order(0) == order(0)
    assert order(0) != order(1)


def test_processes_read_disjoint_rows():
    streams = {"a": _stream(40, shards=4), "b": _stream(30, shards=3)}  # split by shard, and by row
    seen = []
    for rank in (0, 1):
        batches = StreamingBatches(
            streams, ["a", "b"], list, 4, {"a": 0.5, "b": 0.5}, rank=rank, world_size=2
        )
        seen.append({(row["task_id"], row["row_id"]) for row in batches.rows()})
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == {(0, i) for i in range(40)} | {(1, i) for i in range(30)}


def test_proportional_sampling_needs_row_counts_and_says_which_task_lacks_one():
    bare = datasets.Dataset.from_dict({"length": [1, 2]}).to_iterable_dataset()
    counts = stream_row_counts({"a": _stream(10), "b": bare})
    assert counts == {"a": 10, "b": None}
    with pytest.raises(ValueError, match=r"streams of \['b'\].*num_rows.*uniform"):
        stream_probabilities(counts, "proportional")
    assert stream_probabilities(counts, "round_robin") == {"a": 0.5, "b": 0.5}


def test_a_streamed_run_needs_max_steps_before_any_data_is_read(tmp_path, tiny_tokenizer):
    train, _ = make_task_datasets(tiny_tokenizer)
    read = []
    stream = train["topic"].to_iterable_dataset().map(lambda row: read.append(1) or row)
    with pytest.raises(ValueError, match=r"\['topic'\] are streamed.*give max_steps"):
        MultiTaskTrainer(
            model=seeded_model(),
            args=tiny_training_args(tmp_path, num_train_epochs=2),
            train_dataset={"sentiment": train["sentiment"], "topic": stream},
            processing_class=tiny_tokenizer,
        )
    assert read == []


def test_a_streamed_run_trains_for_max_steps_on_lazily_tokenised_rows(tmp_path, tiny_tokenizer):
    raw = {
        "sentiment": datasets.Dataset.from_dict(
            {
                "text": [f"good film {i}" if i % 2 else "bad film" for i in range(40)],
                "label": [i % 2 for i in range(40)],
            }
        ),
        "topic": datasets.Dataset.from_dict(
            {"text": ["what is it", "who is he", "where"] * 8, "label": [0, 1, 2] * 8}
        ),
    }
    streams = {
        name: tokenize_stream(
            with_row_count(data.to_iterable_dataset(num_shards=2), len(data)), tiny_tokenizer, 32
        )
        for name, data in raw.items()
    }
    model = seeded_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = MultiTaskTrainer(
        model=model,
        args=tiny_training_args(tmp_path, max_steps=7, per_device_train_batch_size=4, stream_buffer_size=16),
        train_dataset=streams,
        processing_class=tiny_tokenizer,
    )
    trainer.train()
    assert trainer.state.global_step == 7
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters())
    losses = [row for row in trainer.state.log_history if "loss" in row]
    assert losses and all(torch.isfinite(torch.tensor(row["loss"])) for row in losses)


TWO_PROCESS_STREAMING = textwrap.dedent(
    """
    import json, sys
    import datasets
    from transformers import AutoTokenizer
    from hydrabert import HydraBertModel
    from hydrabert.data.streaming import StreamingBatches, with_row_count
    from hydrabert.trainer import MultiTaskTrainer, MultiTaskTrainingArguments

    model_dir, tokenizer_dir, data_dir, out = sys.argv[1:5]
    seen = []
    original_rows = StreamingBatches.rows
    def recording_rows(self):
        for row in original_rows(self):
            seen.append([self.epoch, row["task_id"], row.pop("row_id")])
            yield row
    StreamingBatches.rows = recording_rows

    streams = {}
    for task, shards in (("sentiment", 4), ("topic", 3)):
        data = datasets.load_from_disk(f"{data_dir}/{task}")
        streams[task] = with_row_count(data.to_iterable_dataset(num_shards=shards), len(data))
    args = MultiTaskTrainingArguments(
        output_dir=out, per_device_train_batch_size=4, learning_rate=5e-3, max_steps=20, stream_buffer_size=8,
        logging_steps=100, seed=0, report_to=[], use_cpu=True, disable_tqdm=True, save_strategy="no",
        dataloader_num_workers=0,
    )
    trainer = MultiTaskTrainer(
        model=HydraBertModel.from_pretrained(model_dir), args=args, train_dataset=streams,
        processing_class=AutoTokenizer.from_pretrained(tokenizer_dir),
    )
    trainer.train()
    weights = sum(float(p.double().sum()) for p in trainer.model.parameters())
    with open(f"{out}/rank{trainer.accelerator.process_index}.json", "w") as handle:
        json.dump({"world_size": trainer.accelerator.num_processes, "global_step": trainer.state.global_step,
                   "seen": seen, "weights": weights}, handle)
    from hydrabert.engines import leave_process_group
    leave_process_group()
    """
)


def test_two_processes_stream_disjoint_rows_for_max_steps(tmp_path, tiny_tokenizer, tiny_tokenizer_dir):
    model_dir, data_dir, out = tmp_path / "model", tmp_path / "data", tmp_path / "out"
    seeded_model().save_pretrained(model_dir)
    train, _ = make_task_datasets(tiny_tokenizer, sizes={"sentiment": (40, 2), "topic": (30, 3)}, seed=5)
    for task, dataset in train.items():
        dataset.add_column("row_id", list(range(len(dataset)))).save_to_disk(data_dir / task)
    script = tmp_path / "streaming_script.py"
    script.write_text(TWO_PROCESS_STREAMING)
    os.makedirs(out)
    result = launch_two_processes(script, model_dir, tiny_tokenizer_dir, data_dir, out)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ranks = [json.loads((out / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert [r["global_step"] for r in ranks] == [20, 20]
    # Each epoch of the mix splits every task across the processes anew (datasets reshuffles shards with the
    # epoch): within an epoch no row is read by both; 20 steps of 4 rows per process outlast the first epoch,
    # in which the two together read every row.
    epochs = {epoch for r in ranks for epoch, _, _ in r["seen"]}
    assert len(epochs) > 1
    for epoch in epochs:
        seen = [{(task, row) for e, task, row in r["seen"] if e == epoch} for r in ranks]
        assert not seen[0] & seen[1], f"two processes read the same row in epoch {epoch}"
    # The mix, counted over both processes' rows: proportional sampling, 40 and 30 rows.
    drawn = [task for r in ranks for _, task, _ in r["seen"]]
    expected = 40 / 70
    spread = 4 * (expected * (1 - expected) / len(drawn)) ** 0.5
    assert drawn.count(0) / len(drawn) == pytest.approx(expected, abs=spread)
    first = [{(task, row) for e, task, row in r["seen"] if e == 0} for r in ranks]
    assert first[0] | first[1] == {(0, i) for i in range(40)} | {(1, i) for i in range(30)}
    assert ranks[0]["weights"] == pytest.approx(ranks[1]["weights"], rel=1e-6)  # DDP kept them in step


# ------------------------------------------------------------------------------------------------ run_mtl
def _streamed_tasks(root):
    """A labeled-lines task and a csv task, both streamed; the csv's rows are counted in the config."""
    (root / "sent").mkdir()
    lines = [f"{'pos' if i % 3 else 'neg'} good film number {i}" for i in range(60)]
    (root / "sent" / "train.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "sent" / "dev.txt").write_text("pos a good film\nneg a bad film\n", encoding="utf-8")
    (root / "quest").mkdir()
    rows = ["question,kind"] + [
        f"{w} is it {i},{k}" for i in range(30) for w, k in [("what", "DESC"), ("who", "HUM")]
    ]
    (root / "quest" / "train.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return [
        {
            "name": "sentiment",
            "data_dir": str(root / "sent"),
            "train_file": "train.txt",
            "validation_file": "dev.txt",
            "file_format": "labeled_lines",
            "labels": ["neg", "pos"],
            "streaming": True,
            "num_rows": 60,
        },
        {
            "name": "question",
            "data_dir": str(root / "quest"),
            "train_file": "train.csv",
            "text_column": "question",
            "label_column": "kind",
            "labels": ["DESC", "HUM"],
            "streaming": True,
            "num_rows": 60,
        },
    ]


def test_a_streamed_task_reads_its_train_file_as_a_stream(tmp_path):
    from hydrabert.data import TaskDataConfig, load_tasks

    configs = [TaskDataConfig.from_dict(spec) for spec in _streamed_tasks(tmp_path)]
    loaded = load_tasks(configs)
    sentiment, question = loaded["sentiment"], loaded["question"]
    assert isinstance(sentiment.stream, datasets.IterableDataset) and "train" not in sentiment.splits
    assert len(sentiment.splits["validation"]) == 2  # validation stays map-style
    rows = list(sentiment.stream)
    assert len(rows) == 60 and rows[1] == {"text": "good film number 1", "label": 1}
    assert list(question.stream)[1] == {"text": "who is it 0", "label": 1}
    assert stream_row_counts({"q": question.stream}) == {"q": 60}


def test_a_bad_row_in_a_stream_is_an_error_naming_task_file_and_line(tmp_path):
    from hydrabert.data import HydraBertDataError, TaskDataConfig, load_tasks

    spec = _streamed_tasks(tmp_path)[0]
    with open(tmp_path / "sent" / "train.txt", "a", encoding="utf-8") as handle:
        handle.write("maybe an unknown label\n")
    stream = load_tasks([TaskDataConfig.from_dict(spec)])["sentiment"].stream  # nothing read yet
    with pytest.raises(
        HydraBertDataError, match=r"'sentiment', train split \(file .*train\.txt.*line 61: label 'maybe'"
    ):
        list(stream)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ({"labels": None}, "give the label names"),
        ({"class_weights": "balanced"}, "counts the train split"),
        ({"validation_split_percentage": 10}, "give validation_file"),
        ({"num_rows": 0}, "num_rows must be a positive integer"),
    ],
)
def test_what_a_stream_cannot_do_is_refused_when_the_task_is_configured(tmp_path, option, message):
    from hydrabert.data import HydraBertDataError, TaskDataConfig

    spec = {**_streamed_tasks(tmp_path)[0], **option}
    with pytest.raises(HydraBertDataError, match=message):
        TaskDataConfig.from_dict(spec)


def test_run_mtl_trains_streamed_tasks_for_max_steps(tmp_path, tiny_encoder_dir):
    import run_mtl

    out = tmp_path / "out"
    config = {
        "model_name_or_path": tiny_encoder_dir,
        "tasks": _streamed_tasks(tmp_path),
        "output_dir": str(out),
        "do_train": True,
        "do_eval": True,
        "max_steps": 6,
        "per_device_train_batch_size": 8,
        "learning_rate": 5e-3,
        "eval_strategy": "no",
        "save_strategy": "no",
        "report_to": "none",
        "use_cpu": True,
        "disable_tqdm": True,
        "task_sampling": "temperature",
    }
    path = tmp_path / "run.json"
    path.write_text(json.dumps(config))
    results = run_mtl.main([str(path)])
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    assert "eval_sentiment_accuracy" in results and "train_samples" not in results
    assert json.loads((out / "config.json").read_text())["tasks"]["question"]["labels"] == ["DESC", "HUM"]

    # No max_steps: refused before the output folder is made or a row is read.
    config.update(max_steps=-1, output_dir=str(tmp_path / "never"))
    path.write_text(json.dumps(config))
    with pytest.raises(
        ValueError, match=r"\['sentiment', 'question'\] stream their train split.*--max_steps"
    ):
        run_mtl.main([str(path)])
    assert not (tmp_path / "never").exists()


def test_a_streamed_run_resumes_from_its_checkpoint_to_the_same_weights(tmp_path, tiny_encoder_dir):
    """Stopped at step 4 and resumed, a streamed run ends where the uninterrupted run ends: the Trainer skips
    the batches the checkpoint already trained on, and the streams' shuffles are seeded by epoch. The resumed run
    starts from other encoder weights, so only the checkpoint's weights can bring it to the same end."""
    import shutil

    from safetensors.torch import load_file, save_file

    import run_mtl

    tasks = _streamed_tasks(tmp_path)
    other_encoder = tmp_path / "other_encoder"
    shutil.copytree(tiny_encoder_dir, other_encoder)
    weights = load_file(str(other_encoder / "model.safetensors"))
    save_file(
        {name: tensor + 0.01 for name, tensor in weights.items()}, str(other_encoder / "model.safetensors")
    )

    def run(out, **extra):
        config = {
            "model_name_or_path": tiny_encoder_dir,
            "tasks": tasks,
            "output_dir": str(out),
            "do_train": True,
            "max_steps": 8,
            "per_device_train_batch_size": 8,
            "learning_rate": 5e-3,
            "eval_strategy": "no",
            "save_strategy": "steps",
            "save_steps": 4,
            "logging_steps": 1,
            "report_to": "none",
            "use_cpu": True,
            "disable_tqdm": True,
            "seed": 7,
            **extra,
        }
        path = out.parent / f"{out.name}.json"
        path.write_text(json.dumps(config))
        run_mtl.main([str(path)])
        losses = {
            entry["step"]: entry["loss"]
            for entry in json.loads((out / "trainer_state.json").read_text())["log_history"]
            if "loss" in entry
        }
        return load_file(str(out / "model.safetensors")), losses

    straight, straight_losses = run(tmp_path / "straight")
    resumed, resumed_losses = run(
        tmp_path / "resumed",
        model_name_or_path=str(other_encoder),
        resume_from_checkpoint=str(tmp_path / "straight" / "checkpoint-4"),
    )
    assert sorted(straight_losses) == sorted(resumed_losses) == list(range(1, 9))
    assert resumed_losses == pytest.approx(straight_losses, abs=1e-6)  # steps 5-8 see the same batches
    assert set(straight) == set(resumed)
    worst = max(float((straight[name] - resumed[name]).abs().max()) for name in straight)
    assert worst == 0.0, worst
