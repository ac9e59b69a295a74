"""MultiTaskTrainer on data prepared the plain transformers way: `ds.map(tokenizer)` with no `length`
column and the raw `text` / `label` columns left in, and already padded data with no
`processing_class` (as `Trainer` with `default_data_collator`)."""

from __future__ import annotations

import datasets
import pytest
import torch
from conftest import TINY_WORDS, seeded_model, tiny_training_args

from hydrabert.data import MultiTaskCollator
from hydrabert.trainer import MultiTaskTrainer

SIZES = {"sentiment": (40, 2), "topic": (24, 3)}


def plain_datasets(tokenizer, **tokenizer_options) -> dict[str, datasets.Dataset]:
    """{task: Dataset(text, label, input_ids, token_type_ids, attention_mask)}, as a transformers
    user tokenises: one `map`, nothing removed or renamed."""
    generator = torch.Generator().manual_seed(0)
    out = {}
    for name, (size, num_labels) in SIZES.items():
        lengths = torch.randint(2, 12, (size,), generator=generator).tolist()
        texts = [
            " ".join(
                TINY_WORDS[w] for w in torch.randint(0, len(TINY_WORDS), (n,), generator=generator).tolist()
            )
            for n in lengths
        ]
        labels = torch.randint(0, num_labels, (size,), generator=generator).tolist()
        raw = datasets.Dataset.from_dict({"text": texts, "label": labels})
        out[name] = raw.map(
            lambda b: tokenizer(b["text"], truncation=True, **tokenizer_options), batched=True
        )
    return out


def train_and_check(tmp_path, train, processing_class, is_frozen=lambda name: False, **settings):
    model = seeded_model(adapter_size=4)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = MultiTaskTrainer(
        model=model,
        args=tiny_training_args(tmp_path, max_steps=4, **settings),
        train_dataset=train,
        processing_class=processing_class,
    )
    trainer.train()
    assert trainer.state.global_step == 4
    moved = {name for name, param in model.named_parameters() if not torch.equal(param, before[name])}
    for name in before:
        if is_frozen(name):
            assert name not in moved, f"frozen {name} changed"
        elif not name.startswith("heads."):  # a head moves only if its task had a batch
            assert name in moved, f"trainable {name} did not change"
    trainable_heads = {name for name in before if name.startswith("heads.") and not is_frozen(name)}
    assert not trainable_heads or moved & trainable_heads
    return trainer


@pytest.mark.parametrize("strategy", ["proportional", "round_robin", "uniform", "temperature"])
def test_plainly_tokenized_datasets_train_under_every_task_sampler(strategy, tmp_path, tiny_tokenizer):
    train = plain_datasets(tiny_tokenizer)
    assert "length" not in train["sentiment"].column_names
    trainer = train_and_check(
        tmp_path, train, tiny_tokenizer, task_sampling=strategy, sampling_temperature=2.0
    )
    # Lengths for length grouping come from input_ids, as the plain Trainer measures them.
    lengths = trainer.train_dataset.task_lengths()
    assert lengths == {name: [len(ids) for ids in ds["input_ids"]] for name, ds in train.items()}
    offsets = trainer.get_train_batch_sampler().task_offsets
    for batch in trainer.get_train_batch_sampler():
        assert len({max((start, t) for t, start in offsets.items() if start <= i)[1] for i in batch}) == 1


FREEZE_CASES = {
    "encoder": ({"freeze_policy": "encoder"}, lambda n: n.startswith("encoder.")),
    "heads": ({"freeze_policy": "heads"}, lambda n: n.startswith("heads.")),
    "one task": ({"frozen_tasks": ["topic"]}, lambda n: n.startswith("heads.topic.")),
    "lower layers": ({"freeze_lower_layers": 1}, lambda n: ".embeddings." in n or ".layer.0." in n),
    "gradual unfreezing": (
        {"gradual_unfreezing": True, "unfreeze_every": 100.0},
        lambda n: n.startswith("encoder."),
    ),
}


@pytest.mark.parametrize("case", list(FREEZE_CASES))
def test_freeze_policies_on_plainly_tokenized_datasets(case, tmp_path, tiny_tokenizer):
    settings, is_frozen = FREEZE_CASES[case]
    train_and_check(tmp_path, plain_datasets(tiny_tokenizer), tiny_tokenizer, is_frozen, **settings)


def test_padded_datasets_train_and_evaluate_without_processing_class(tmp_path, tiny_tokenizer):
    padded = plain_datasets(tiny_tokenizer, padding="max_length", max_length=16)
    trainer = train_and_check(
        tmp_path, padded, None, lambda n: n.startswith("encoder."), freeze_policy="encoder"
    )
    metrics = trainer.evaluate(padded)
    assert {"eval_sentiment_accuracy", "eval_topic_accuracy", "eval_average_f1"} <= set(metrics)


def test_unpadded_datasets_without_processing_class_fail_at_construction(tmp_path, tiny_tokenizer):
    with pytest.raises(ValueError, match=r"train_dataset\['sentiment'\] has rows of .* processing_class"):
        MultiTaskTrainer(
            model=seeded_model(),
            args=tiny_training_args(tmp_path),
            train_dataset=plain_datasets(tiny_tokenizer),
        )


def test_collator_takes_label_as_labels_and_stacks_padded_rows():
    rows = [
        {"input_ids": [2, 5, 3], "attention_mask": [1, 1, 1], "label": 1, "text": "a b", "task_id": 0},
        {"input_ids": [2, 3, 0], "attention_mask": [1, 1, 0], "label": 0, "text": "c", "task_id": 0},
    ]
    batch = MultiTaskCollator()(rows)
    assert set(batch) == {"input_ids", "attention_mask", "labels", "task_ids"}
    assert batch["input_ids"].tolist() == [[2, 5, 3], [2, 3, 0]] and batch["labels"].tolist() == [1, 0]
    with pytest.raises(ValueError, match="processing_class"):
        MultiTaskCollator()([rows[0], {**rows[1], "input_ids": [2, 3], "attention_mask": [1, 1]}])


def test_each_task_gets_its_own_evaluation_progress_bar(tmp_path, tiny_tokenizer, monkeypatch):
    """Trainer's ProgressCallback sizes its bar to the first dataloader and closes it in on_evaluate, which
    the per-task evaluations hold back: without closing it per task, one bar of the first task's size
    overran (0/15, then 16it ... 19it in the demo run)."""
    import transformers.trainer_callback as trainer_callback

    bars = []

    class RecordingBar:
        def __init__(self, total, **_):
            self.total, self.count, self.closed = total, 0, False
            bars.append(self)

        def update(self, n=1):
            self.count += n

        def close(self):
            self.closed = True

    monkeypatch.setattr(trainer_callback, "tqdm", RecordingBar)
    data = plain_datasets(tiny_tokenizer)
    trainer = MultiTaskTrainer(
        model=seeded_model(),
        args=tiny_training_args(tmp_path, disable_tqdm=False, per_device_eval_batch_size=8),
        processing_class=tiny_tokenizer,
    )
    trainer.evaluate(data)
    # sentiment: 40 rows = 5 batches of 8; topic: 24 rows = 3 batches.
    assert [(bar.total, bar.count, bar.closed) for bar in bars] == [(5, 5, True), (3, 3, True)]
