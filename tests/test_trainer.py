"""MultiTaskTrainer: layer-wise groups, freeze policies, gradual unfreezing, evaluation, logging."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import seeded_model, tiny_config, tiny_training_args
from sklearn.metrics import f1_score
from transformers import EvalPrediction, TrainerCallback

from hydrabert.callbacks import FreezingCallback, FrozenEncoder, ModelCardCallback, PlotsCallback
from hydrabert.model_card import HydraBertCardData
from hydrabert.optim import layerwise_parameter_groups
from hydrabert.trainer import MultiTaskTrainer, MultiTaskTrainingArguments, default_task_metrics


# ------------------------------------------------------------------------------- optimizer groups
def test_layerwise_groups_follow_the_formula_and_keep_their_ratios(tmp_path, task_data, tiny_tokenizer):
    encoder = {
        "model_type": "bert",
        "vocab_size": 99,
        "hidden_size": 32,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "intermediate_size": 37,
    }
    model = seeded_model(encoder=encoder)
    lr, xi, head_lr = 2e-4, 0.8, 1e-3
    args = tiny_training_args(
        tmp_path,
        learning_rate=lr,
        layerwise_lr_decay=xi,
        head_learning_rate=head_lr,
        weight_decay=0.01,
        max_steps=20,
    )
    trainer = MultiTaskTrainer(
        model=model, args=args, train_dataset=task_data[0], processing_class=tiny_tokenizer
    )
    trainer.create_optimizer_and_scheduler(num_training_steps=20)
    groups = trainer.optimizer.param_groups
    expected = {
        "embeddings": lr * xi**4,
        "layer_0": lr * xi**3,
        "layer_1": lr * xi**2,
        "layer_2": lr * xi,
        "layer_3": lr,
        "heads": head_lr,
    }
    for group in groups:
        assert group["lr"] == pytest.approx(expected[group["name"].removesuffix(".no_decay")], rel=1e-12)

    # Every trainable parameter sits in exactly one group.
    grouped = [id(p) for group in groups for p in group["params"]]
    assert len(grouped) == len(set(grouped))
    assert set(grouped) == {id(p) for p in model.parameters() if p.requires_grad}

    # Biases and LayerNorm weights get no weight decay; matrices do.
    names = {id(p): n for n, p in model.named_parameters()}
    for group in groups:
        for param in group["params"]:
            name = names[id(param)]
            if name.endswith("bias") or "LayerNorm" in name:
                assert group["weight_decay"] == 0.0, name
            else:
                assert group["weight_decay"] == 0.01, name

    initial = [group["lr"] for group in groups]
    for _ in range(10):
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
    after = [group["lr"] for group in groups]
    assert after[-1] < initial[-1]  # the schedule did move
    for before, now in zip(initial, after, strict=True):
        assert now / after[-1] == pytest.approx(before / initial[-1], rel=1e-9)


def test_layerwise_groups_reject_a_decay_outside_zero_one():
    with pytest.raises(ValueError, match="layerwise_lr_decay"):
        layerwise_parameter_groups(seeded_model(), 1e-3, layerwise_lr_decay=1.5)
    with pytest.raises(ValueError, match="layerwise_lr_decay"):
        MultiTaskTrainingArguments(output_dir="unused", layerwise_lr_decay=0.0, report_to=[])


def test_any_standard_optimizer_gets_the_groups(tmp_path, task_data, tiny_tokenizer):
    args = tiny_training_args(tmp_path, optim="sgd", layerwise_lr_decay=0.5, head_learning_rate=1e-2)
    trainer = MultiTaskTrainer(
        model=seeded_model(), args=args, train_dataset=task_data[0], processing_class=tiny_tokenizer
    )
    optimizer = trainer.create_optimizer()
    assert isinstance(optimizer, torch.optim.SGD)
    assert len({round(g["lr"], 12) for g in optimizer.param_groups}) == 4  # embeddings, 2 layers, heads


# -------------------------------------------------------------------------------- freeze policies
FREEZE_CASES = {
    "encoder": ({"freeze_policy": "encoder"}, lambda n: n.startswith("encoder.")),
    "heads": ({"freeze_policy": "heads"}, lambda n: n.startswith("heads.")),
    "one task": ({"frozen_tasks": ["topic"]}, lambda n: n.startswith("heads.topic.")),
    "embeddings": ({"freeze_embeddings": True}, lambda n: ".embeddings." in n),
    "lower layers": (
        {"freeze_lower_layers": 1},
        lambda n: ".embeddings." in n or ".layer.0." in n,
    ),
    "none": ({}, lambda n: False),
}


@pytest.mark.parametrize("case", list(FREEZE_CASES))
def test_freeze_policy_keeps_frozen_parameters_bit_identical(case, tmp_path, task_data, tiny_tokenizer):
    settings, is_frozen = FREEZE_CASES[case]
    # Class-weighted losses: the weights are data, so every policy freezes and trains exactly as without them.
    tasks = {
        "sentiment": {"labels": ["negative", "positive"], "class_weights": [0.7, 1.6]},
        "topic": {"num_labels": 3, "weight": 0.5, "class_weights": [1.0, 2.0, 0.5]},
    }
    model = seeded_model(adapter_size=4, tasks=tasks)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = tiny_training_args(tmp_path, max_steps=6, **settings)
    MultiTaskTrainer(
        model=model, args=args, train_dataset=task_data[0], processing_class=tiny_tokenizer
    ).train()
    for name, param in model.named_parameters():
        if is_frozen(name):
            assert torch.equal(param, before[name]), f"{case}: frozen {name} changed"
        else:
            assert not torch.equal(param, before[name]), f"{case}: trainable {name} did not change"


def test_freeze_all_refuses_to_train_but_evaluates(tmp_path, task_data, tiny_tokenizer):
    model = seeded_model()
    args = tiny_training_args(tmp_path, freeze_policy="all")
    trainer = MultiTaskTrainer(
        model=model,
        args=args,
        train_dataset=task_data[0],
        eval_dataset=task_data[1],
        processing_class=tiny_tokenizer,
    )
    with pytest.raises(ValueError, match="Nothing would train"):
        trainer.train()
    metrics = trainer.evaluate()
    assert 0.0 <= metrics["eval_sentiment_accuracy"] <= 1.0
    assert model.encode(["good film"], tiny_tokenizer).shape == (1, 32)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"freeze_policy": "most"}, "freeze_policy must be one of"),
        ({"gradual_unfreezing": True, "freeze_policy": "encoder"}, "gradual_unfreezing"),
        ({"unfreeze_every": 0}, "unfreeze_every"),
        ({"task_sampling": "random"}, "task_sampling must be one of"),
        ({"sampling_temperature": 0}, "sampling_temperature"),
        ({"task_weights": "{not json"}, "task_weights must be a JSON object"),
        ({"freeze_lower_layers": -1}, "freeze_lower_layers"),
    ],
)
def test_invalid_argument_combinations_raise(settings, message):
    with pytest.raises(ValueError, match=message):
        MultiTaskTrainingArguments(output_dir="unused", report_to=[], **settings)


def test_unknown_task_names_raise_before_training(tmp_path, task_data, tiny_tokenizer):
    with pytest.raises(ValueError, match=r"frozen_tasks: unknown task\(s\) \['sport'\]"):
        MultiTaskTrainer(
            model=seeded_model(),
            args=tiny_training_args(tmp_path, frozen_tasks=["sport"]),
            train_dataset=task_data[0],
            processing_class=tiny_tokenizer,
        )
    with pytest.raises(ValueError, match=r"train_dataset: unknown task\(s\) \['sport'\]"):
        MultiTaskTrainer(
            model=seeded_model(),
            args=tiny_training_args(tmp_path),
            train_dataset={"sport": task_data[0]["topic"]},
            processing_class=tiny_tokenizer,
        )
    with pytest.raises(ValueError, match=r"task_weights: unknown task\(s\) \['sport'\]"):
        MultiTaskTrainer(
            model=seeded_model(),
            args=tiny_training_args(tmp_path, task_weights='{"sport": 2}'),
            train_dataset=task_data[0],
            processing_class=tiny_tokenizer,
        )
    with pytest.raises(ValueError, match=r"freeze_lower_layers must be in \[0, 2\]"):
        MultiTaskTrainer(
            model=seeded_model(),
            args=tiny_training_args(tmp_path, freeze_lower_layers=5),
            train_dataset=task_data[0],
            processing_class=tiny_tokenizer,
        )


def test_task_weights_from_json_override_the_config(tmp_path, task_data, tiny_tokenizer):
    model = seeded_model()
    args = tiny_training_args(tmp_path, task_weights='{"sentiment": 3}')
    MultiTaskTrainer(model=model, args=args, train_dataset=task_data[0], processing_class=tiny_tokenizer)
    assert model.config.tasks["sentiment"]["weight"] == 3.0
    assert model.config.tasks["topic"]["weight"] == 0.5


# ---------------------------------------------------------------------------- gradual unfreezing
class _Snapshots(TrainerCallback):
    def __init__(self, model):
        self.model = model
        self.epochs = [{n: p.detach().clone() for n, p in model.named_parameters()}]

    def on_epoch_end(self, args, state, control, **kwargs):
        self.epochs.append({n: p.detach().clone() for n, p in self.model.named_parameters()})


def test_gradual_unfreezing_follows_its_schedule(tmp_path, task_data, tiny_tokenizer):
    model = seeded_model()
    snapshots = _Snapshots(model)
    args = tiny_training_args(tmp_path, gradual_unfreezing=True, unfreeze_every=1, num_train_epochs=4)
    trainer = MultiTaskTrainer(
        model=model,
        args=args,
        train_dataset=task_data[0],
        processing_class=tiny_tokenizer,
        callbacks=[snapshots],
    )
    trainer.train()

    def changed(epoch, prefix):
        before, after = snapshots.epochs[epoch], snapshots.epochs[epoch + 1]
        names = [n for n in before if n.startswith(prefix)]
        assert names, prefix
        return any(not torch.equal(before[n], after[n]) for n in names)

    levels = ["encoder.encoder.layer.1.", "encoder.encoder.layer.0.", "encoder.embeddings."]
    # Epoch e trains the heads plus the top e encoder levels.
    for epoch in range(4):
        assert changed(epoch, "heads."), epoch
        for level, prefix in enumerate(levels):
            assert changed(epoch, prefix) == (level < epoch), (epoch, prefix)
    logged = [entry["unfreezing"] for entry in trainer.state.log_history if "unfreezing" in entry]
    assert logged[0].startswith("encoder frozen") and len(logged) == 4
    # In one process waiting layers really skip the backward (the cheap mode).
    assert all(p.requires_grad for p in model.parameters())


# ------------------------------------------------------------------------ evaluation and logging
def test_evaluation_reports_each_task_and_the_average(tmp_path, task_data, tiny_tokenizer):
    args = tiny_training_args(tmp_path, max_steps=4)
    trainer = MultiTaskTrainer(
        model=seeded_model(),
        args=args,
        train_dataset=task_data[0],
        eval_dataset=task_data[1],
        processing_class=tiny_tokenizer,
    )
    trainer.train()
    metrics = trainer.evaluate()
    for task in ("sentiment", "topic"):
        for metric in ("loss", "accuracy", "f1"):
            assert f"eval_{task}_{metric}" in metrics
    average = (metrics["eval_sentiment_accuracy"] + metrics["eval_topic_accuracy"]) / 2
    assert metrics["eval_average_accuracy"] == pytest.approx(average)

    # Accuracy agrees with the model's own predictions on the same rows.
    model = trainer.model.eval()
    rows = task_data[1]["topic"]
    with torch.no_grad():
        batch = trainer.data_collator([{**rows[i], "task_id": 1} for i in range(len(rows))])
        logits = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], task="topic"
        ).logits
    accuracy = (logits.argmax(-1) == batch["labels"]).float().mean().item()
    assert metrics["eval_topic_accuracy"] == pytest.approx(accuracy)


def test_every_group_learning_rate_and_task_loss_is_logged_and_plotted(tmp_path, task_data, tiny_tokenizer):
    args = tiny_training_args(tmp_path, max_steps=6, layerwise_lr_decay=0.5)
    trainer = MultiTaskTrainer(
        model=seeded_model(), args=args, train_dataset=task_data[0], processing_class=tiny_tokenizer
    )
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert logs
    for entry in logs:
        assert {"lr/embeddings", "lr/layer_0", "lr/layer_1", "lr/heads"} <= set(entry)
        assert entry["lr/layer_0"] == pytest.approx(entry["lr/layer_1"] * 0.5)
    assert any("loss/sentiment" in entry for entry in logs) and any("loss/topic" in entry for entry in logs)
    assert sorted(trainer.plot_files) == ["learning_rates.png", "task_metrics.png"]
    for name in trainer.plot_files:
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


def test_non_finite_loss_stops_with_task_and_step(tmp_path, task_data, tiny_tokenizer, monkeypatch):
    import hydrabert.modeling_hydrabert as modeling

    real_task_loss = modeling._task_loss

    def diverging_topic(name, spec, logits, labels, **kwargs):
        loss = real_task_loss(name, spec, logits, labels, **kwargs)
        return loss * float("inf") if name == "topic" else loss

    monkeypatch.setattr(modeling, "_task_loss", diverging_topic)
    args = tiny_training_args(tmp_path, max_steps=6)
    trainer = MultiTaskTrainer(
        model=seeded_model(), args=args, train_dataset=task_data[0], processing_class=tiny_tokenizer
    )
    with pytest.raises(FloatingPointError, match=r"at step \d+, task\(s\) \['topic'\]"):
        trainer.train()


class _RecordEvaluate(TrainerCallback):
    def __init__(self):
        self.calls = []

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        self.calls.append(dict(metrics))


def test_evaluate_reports_once_with_todays_names_and_the_exact_mean_loss(tmp_path, task_data, tiny_tokenizer):
    """Trainer.evaluate per task underneath; callbacks and the log see one combined report; each task's
    loss is the mean of its rows' losses, whatever the batch size (a short last batch is not over-weighted)."""
    recorder = _RecordEvaluate()
    eval_sets = {task: dataset.select(range(13)) for task, dataset in task_data[1].items()}
    results = []
    for batch_size in (4, 16):
        trainer = MultiTaskTrainer(
            model=seeded_model(),
            args=tiny_training_args(tmp_path, per_device_eval_batch_size=batch_size),
            eval_dataset=eval_sets,
            processing_class=tiny_tokenizer,
            callbacks=[recorder],
        )
        results.append(trainer.evaluate(metric_key_prefix="test"))
        assert len(recorder.calls) == len(results) and recorder.calls[-1] == results[-1]
        assert [entry for entry in trainer.state.log_history if "test_runtime" in entry] == [
            {**results[-1], "step": 0}
        ]
    expected = {"epoch", "test_runtime", "test_samples_per_second", "test_steps_per_second"}
    expected |= {
        f"test_{task}_{m}"
        for task in eval_sets
        for m in ("loss", "accuracy", "f1", "f1_declared_labels", "model_preparation_time")
    }
    expected |= {f"test_average_{m}" for m in ("loss", "accuracy", "f1", "f1_declared_labels")}
    expected.add("test_selection_score")  # the mean of each task's main metric (hydrabert/selection.py)
    assert set(results[0]) == expected
    assert results[0]["test_selection_score"] == pytest.approx(results[0]["test_average_f1"])
    model = seeded_model().eval()
    for task_id, (task, dataset) in enumerate(eval_sets.items()):
        rows = trainer.data_collator([{**dataset[i], "task_id": task_id} for i in range(len(dataset))])
        with torch.no_grad():
            loss = model(
                input_ids=rows["input_ids"],
                attention_mask=rows["attention_mask"],
                task=task,
                labels=rows["labels"],
            ).loss
        for metrics in results:
            assert metrics[f"test_{task}_loss"] == pytest.approx(loss.item(), abs=1e-6)


def test_training_keeps_task_losses_on_the_device_between_logs(
    tmp_path, task_data, tiny_tokenizer, monkeypatch
):
    trainer = MultiTaskTrainer(
        model=seeded_model(),
        args=tiny_training_args(tmp_path),
        train_dataset=task_data[0],
        processing_class=tiny_tokenizer,
    )
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.train()
    syncs = []
    real_item = torch.Tensor.item
    monkeypatch.setattr(torch.Tensor, "item", lambda self: syncs.append(1) or real_item(self))
    task_losses = [
        trainer.compute_loss(trainer.model, batch, return_outputs=True)[1].task_losses for _ in range(3)
    ]
    monkeypatch.undo()
    assert syncs == []
    ((total, count),) = trainer.task_losses.sums.values()
    assert isinstance(total, torch.Tensor) and count == 3
    (task,) = task_losses[0]
    mean = sum(losses[task].item() for losses in task_losses) / 3
    assert trainer._task_training_losses() == {f"loss/{task}": round(mean, 4)}
    assert trainer.task_losses.sums == {}  # reset after each log


# ------------------------------------------------------------------------------ policy callbacks
def test_a_user_adds_callbacks_replaces_ours_and_removes_one(tmp_path, task_data, tiny_tokenizer):
    """hydrabert's policies are TrainerCallbacks after the user's; a user's callback of the same class replaces
    ours, and the Trainer's own remove_callback drops one (the rest keep working)."""
    recorder = _RecordEvaluate()
    card = ModelCardCallback(HydraBertCardData(model_id="me/my-hydrabert"))
    args = tiny_training_args(tmp_path, max_steps=4, eval_strategy="steps", eval_steps=2)
    trainer = MultiTaskTrainer(
        model=seeded_model(),
        args=args,
        train_dataset=task_data[0],
        eval_dataset=task_data[1],
        processing_class=tiny_tokenizer,
        callbacks=[recorder, card],
    )
    callbacks = trainer.callback_handler.callbacks
    ours = [type(c) for c in callbacks if type(c).__module__.startswith("hydrabert.")]
    assert ours == [ModelCardCallback, PlotsCallback, FreezingCallback]
    assert callbacks.index(recorder) < callbacks.index(card) < callbacks.index(trainer.freezing)
    assert trainer.card_callback is card

    trainer.remove_callback(PlotsCallback)
    trainer.train()
    assert trainer.plots_callback is None and trainer.plot_files == []
    assert not list(tmp_path.glob("*.png"))
    # Each evaluation reached the user's callback and the card once, with every task's metrics.
    assert len(recorder.calls) == 2 and all("eval_average_loss" in call for call in recorder.calls)
    assert set(card.card_data.results["validation"]) == {"sentiment", "topic"}
    trainer.create_model_card()
    assert "me/my-hydrabert" in (tmp_path / "README.md").read_text()

    # Without a ModelCardCallback the card is drawn from the model alone.
    trainer.remove_callback(ModelCardCallback)
    assert trainer.card_callback is None
    trainer.create_model_card(model_id="me/another")
    assert "me/another" in (tmp_path / "README.md").read_text()


def test_without_the_feature_cache_callback_a_frozen_encoder_trains_the_same(
    tmp_path, task_data, tiny_tokenizer
):
    """Removing FrozenEncoder turns the cache off; the frozen encoder still runs without dropout, so training
    moves the same parameters to the same values (up to the last bits of a recomputed batch)."""
    models = []
    for cached in (True, False):
        model = seeded_model()
        trainer = MultiTaskTrainer(
            model=model,
            args=tiny_training_args(tmp_path / str(cached), freeze_policy="encoder", num_train_epochs=2),
            train_dataset=task_data[0],
            processing_class=tiny_tokenizer,
        )
        if not cached:
            trainer.remove_callback(FrozenEncoder)
        trainer.train()
        assert (trainer.frozen_encoder.hits > 0) == cached
        models.append(dict(model.named_parameters()))
    for name, param in models[0].items():
        torch.testing.assert_close(param, models[1][name], rtol=1e-5, atol=1e-6)


def test_f1_is_sklearns_macro_f1_and_the_declared_label_variant_keeps_its_own_name():
    """`f1`: the mean over the labels in the references or the predictions (scikit-learn's default, the one
    papers report); `f1_declared_labels`: over every label of the task, an absent one counting 0."""
    from hydrabert import HydraBertModel

    tasks = {
        "topic": {"num_labels": 4},
        "tags": {"num_labels": 3, "problem_type": "multi_label_classification"},
    }
    compute = default_task_metrics(HydraBertModel(tiny_config(tasks=tasks)))
    # Label 3 is in neither the references nor the predictions that count (the -100 row is ignored).
    truth, predicted = np.array([0, 0, 1, 1, 2, -100]), np.array([0, 1, 1, 1, 0, 3])
    metrics = compute("topic", EvalPrediction(predictions=np.eye(4)[predicted], label_ids=truth))
    assert metrics["f1"] == pytest.approx(f1_score(truth[:5], predicted[:5], average="macro"))
    assert metrics["f1"] == pytest.approx((0.5 + 0.8 + 0) / 3)
    assert metrics["f1_declared_labels"] == pytest.approx((0.5 + 0.8 + 0 + 0) / 4)
    # Multi-label: tag 2 is never true nor predicted.
    truth = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0]])
    predicted = np.array([[1, 0, 0], [0, 1, 0], [0, 1, 0]])
    metrics = compute(
        "tags", EvalPrediction(predictions=np.where(predicted, 3.0, -3.0), label_ids=truth * 1.0)
    )
    assert metrics["f1"] == pytest.approx((2 / 3 + 1.0) / 2)
    assert metrics["f1_declared_labels"] == pytest.approx((2 / 3 + 1.0 + 0) / 3)
    # With every label present, the two agree.
    truth, predicted = np.array([0, 1, 2, 3]), np.array([0, 1, 2, 2])
    metrics = compute("topic", EvalPrediction(predictions=np.eye(4)[predicted], label_ids=truth))
    assert metrics["f1"] == metrics["f1_declared_labels"]
