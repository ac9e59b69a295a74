"""early_stopping_patience and the selection score (issue 29): stopping at the expected evaluation, the best
checkpoint's weights loaded and kept under save_total_limit, the patience count surviving a kill and resume,
gradual unfreezing, every freeze policy, shared sources, class weights, the model card, run_mtl, and DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import TWO_PROCESS_LAUNCH, make_task_datasets, seeded_model, tiny_training_args
from safetensors.torch import load_file
from transformers import EarlyStoppingCallback, TrainerCallback

from hydrabert.checkpoints import TRAINER_STATE_NAME, checkpoint_folders, checkpoint_step, plan_resume
from hydrabert.selection import MAIN_METRICS, kept_checkpoint, selection_score
from hydrabert.trainer import MultiTaskTrainer, MultiTaskTrainingArguments

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Validation macro-F1 per epoch (every task alike). Patience 3: best at epoch 2, then 3, 4, 5 fail to beat it,
# so training stops at epoch 5, keeping epoch 2. A run that forgot the count at a resume after epoch 4 would
# go on to epoch 6 (0.9, a new best) and further.
SCRIPT = {1: 0.5, 2: 0.7, 3: 0.6, 4: 0.65, 5: 0.68, 6: 0.9, 7: 0.1, 8: 0.1, 9: 0.1, 10: 0.1}
STEPS_PER_EPOCH = 10  # 48 + 32 rows of the tiny tasks in batches of 8


class Scripted:
    """compute_metrics whose f1 follows SCRIPT by epoch (the trainer is attached after construction)."""

    def __init__(self, script=SCRIPT):
        self.script, self.trainer = script, None

    def __call__(self, task, prediction):
        return {"f1": self.script[round(self.trainer.state.epoch)], "accuracy": 0.5}


class Kill(TrainerCallback):
    """Raises right after checkpoint `step` is written: what a kill after that save leaves behind."""

    def __init__(self, step):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt(f"killed after saving step {self.step}")


class BestIsKept(TrainerCallback):
    """After every save: the best checkpoint recorded so far still exists, and at most 2 folders remain
    (save_total_limit=1 keeps the latest, for resuming, and the best)."""

    def __init__(self):
        self.seen = []

    def on_save(self, args, state, control, **kwargs):
        folders = checkpoint_folders(args.output_dir)
        self.seen.append((state.global_step, state.best_global_step, [checkpoint_step(f) for f in folders]))
        assert state.best_model_checkpoint is not None and os.path.isdir(state.best_model_checkpoint)
        assert len(folders) <= 2


def _trainer(tmp_path, tokenizer, *, model=None, data=None, metrics=None, callbacks=(), **overrides):
    train, evaluation = data or make_task_datasets(tokenizer)
    kwargs = dict(
        num_train_epochs=10,
        early_stopping_patience=3,
        save_strategy="epoch",
        save_total_limit=1,
        logging_steps=100,
    )
    kwargs.update(overrides)
    metrics = Scripted() if metrics is None else metrics
    trainer = MultiTaskTrainer(
        model=model if model is not None else seeded_model(),
        args=tiny_training_args(tmp_path / "out", **kwargs),
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=tokenizer,
        compute_metrics=metrics or None,
        callbacks=list(callbacks),
    )
    if isinstance(metrics, Scripted):
        metrics.trainer = trainer
    return trainer


def _model_weights(trainer):
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def _checkpoint_weights(folder):
    return load_file(os.path.join(folder, "model.safetensors"))


def _assert_same_weights(loaded, saved):
    assert saved.keys() <= loaded.keys()
    for name, tensor in saved.items():
        torch.testing.assert_close(loaded[name], tensor, rtol=0, atol=0, msg=name)


def _epochs_evaluated(trainer):
    return [row["epoch"] for row in trainer.state.log_history if "eval_selection_score" in row]


# ------------------------------------------------------------------------------------------- arguments
def test_patience_turns_on_evaluation_checkpoints_best_model_loading_and_the_selection_score(tmp_path):
    args = MultiTaskTrainingArguments(output_dir=str(tmp_path), early_stopping_patience=2, report_to=[])
    assert (args.eval_strategy.value, args.save_strategy.value) == ("epoch", "epoch")
    assert args.load_best_model_at_end and args.metric_for_best_model == "selection_score"
    assert args.greater_is_better is True
    assert args.restore_callback_states_from_checkpoint is True  # the count survives a resume
    # Checkpoints follow evaluations given in steps; the user's own metric is kept.
    args = MultiTaskTrainingArguments(
        output_dir=str(tmp_path),
        early_stopping_patience=2,
        eval_strategy="steps",
        eval_steps=7,
        metric_for_best_model="average_loss",
        report_to=[],
    )
    assert (args.save_strategy.value, args.save_steps) == ("steps", 7)
    assert args.metric_for_best_model == "average_loss" and args.greater_is_better is False
    # Without patience: nothing changes, but load_best_model_at_end alone gets a metric that exists.
    plain = MultiTaskTrainingArguments(output_dir=str(tmp_path), report_to=[])
    assert plain.metric_for_best_model is None and plain.restore_callback_states_from_checkpoint is False
    best = MultiTaskTrainingArguments(
        output_dir=str(tmp_path), load_best_model_at_end=True, eval_strategy="epoch", save_strategy="epoch"
    )
    assert best.metric_for_best_model == "selection_score"


@pytest.mark.parametrize(
    "overrides, pattern",
    [
        ({"early_stopping_patience": 0}, "early_stopping_patience must be an integer >= 1"),
        ({"early_stopping_patience": 2, "save_strategy": "no"}, "save_strategy='no' saves none"),
        ({"early_stopping_patience": 2, "early_stopping_threshold": -1}, "early_stopping_threshold"),
    ],
)
def test_bad_early_stopping_settings_fail_when_the_arguments_are_built(tmp_path, overrides, pattern):
    with pytest.raises(ValueError, match=pattern):
        MultiTaskTrainingArguments(output_dir=str(tmp_path), report_to=[], **overrides)


def test_selection_score_averages_each_task_s_main_metric_with_regression_negated():
    kinds = {"sentiment": "single_label_classification", "tags": "multi_label_classification"}
    kinds["price"] = "regression"
    metrics = {
        "eval_sentiment_f1": 0.8,
        "eval_tags_f1": 0.6,
        "eval_price_mse": 0.4,
        "eval_sentiment_accuracy": 1,
    }
    assert selection_score(metrics, "eval", kinds) == {
        "eval_selection_score": pytest.approx((0.8 + 0.6 - 0.4) / 3)
    }
    assert set(MAIN_METRICS) >= set(kinds.values())
    # A custom compute_metrics without a task's main metric: no score, or, where it selects checkpoints, an error.
    assert selection_score({"eval_sentiment_f1": 0.8}, "eval", kinds) == {}
    with pytest.raises(ValueError, match="task 'tags' .* reported no 'f1'"):
        selection_score({"eval_sentiment_f1": 0.8}, "eval", kinds, required=True)
    with pytest.raises(ValueError, match="kind without one"):
        selection_score(metrics, "eval", {"pairs": "token_ranking"}, required=True)
    # A sentence-similarity task counts its Spearman.
    assert selection_score(
        {**metrics, "eval_sts_spearman": 0.9}, "eval", {**kinds, "sts": "sentence_similarity"}
    ) == {"eval_selection_score": pytest.approx((0.8 + 0.6 - 0.4 + 0.9) / 4)}


def test_a_custom_compute_metrics_without_the_main_metric_fails_at_the_first_evaluation(
    tmp_path, tiny_tokenizer
):
    trainer = _trainer(tmp_path, tiny_tokenizer, metrics=lambda task, prediction: {"accuracy": 1.0})
    with pytest.raises(ValueError, match="task 'sentiment' .* reported no 'f1'"):
        trainer.train()


def test_early_stopping_patience_and_an_early_stopping_callback_of_one_s_own_are_refused(
    tmp_path, tiny_tokenizer
):
    with pytest.raises(ValueError, match="callbacks has one too"):
        _trainer(tmp_path, tiny_tokenizer, callbacks=[EarlyStoppingCallback(2)])


# ------------------------------------------------------------------------------------------- training
def test_stops_at_the_expected_evaluation_and_loads_the_best_checkpoint_which_save_total_limit_kept(
    tmp_path, tiny_tokenizer
):
    guard = BestIsKept()
    trainer = _trainer(tmp_path, tiny_tokenizer, callbacks=[guard])
    trainer.train()

    assert _epochs_evaluated(trainer) == [1, 2, 3, 4, 5]  # the cap was 10 epochs
    assert trainer.state.global_step == 5 * STEPS_PER_EPOCH
    assert (trainer.state.best_global_step, trainer.state.best_metric) == (2 * STEPS_PER_EPOCH, 0.7)
    # save_total_limit=1: during training the best and the latest; at the end the best alone.
    assert [seen[2] for seen in guard.seen] == [[10], [20], [20, 30], [20, 40], [20, 50]]
    best = os.path.join(trainer.args.output_dir, f"checkpoint-{2 * STEPS_PER_EPOCH}")
    assert checkpoint_folders(trainer.args.output_dir) == [best]
    _assert_same_weights(_model_weights(trainer), _checkpoint_weights(best))

    stop = [row for row in trainer.state.log_history if "early_stopping" in row]
    assert len(stop) == 1 and stop[0]["step"] == 50 and "for 3 evaluation(s)" in stop[0]["early_stopping"]
    kept = trainer.card_callback.card_data.kept_checkpoint
    assert kept["step"] == 20 and kept["epoch"] == 2 and kept["stopped_early"] and kept["last_step"] == 50
    card = str(trainer.create_model_card())
    assert "- **Length**: 10 epochs at most: early stopping after 3 evaluations without improvement" in card
    assert "- **Checkpoint kept**: step 20 (epoch 2), the best of 5 evaluations by validation " in card
    assert (
        "`eval_selection_score` = 0.7 (the mean over tasks of sentiment f1, topic f1; higher is better)"
        in card
    )
    assert "Training stopped early at step 50 (epoch 5) of at most 100" in card
    # The card's validation results are the kept checkpoint's (0.7), not the last evaluation's (0.68).
    assert trainer.card_callback.card_data.results["validation"]["sentiment"]["f1"] == 0.7


def test_the_final_state_of_an_early_stopped_run_counts_as_finished(tmp_path, tiny_tokenizer):
    trainer = _trainer(tmp_path, tiny_tokenizer)
    trainer.train()
    trainer.save_state()  # what run_mtl.py writes at the end
    plan = plan_resume(trainer.args.output_dir, num_train_epochs=10)
    assert plan.finished and "step 50 of 100 (early stopping)" in plan.message
    # The kept checkpoint alone (the stopping step's was rotated away) is not a finished run: it resumes.
    os.remove(os.path.join(trainer.args.output_dir, TRAINER_STATE_NAME))
    assert plan_resume(trainer.args.output_dir, num_train_epochs=10).checkpoint.endswith("checkpoint-20")


@pytest.mark.parametrize("restore", [None, False, "patience 4"])
def test_a_resume_after_a_kill_continues_the_patience_count(tmp_path, tiny_tokenizer, restore):
    """Killed after epoch 4's checkpoint (2 evaluations without improvement so far), resumed: the count goes on
    from 2 and training stops at epoch 5, as without the kill. Forgetting it (restore=False) trains on; a
    resume that asks for more patience (4) gets it, the count still carrying on."""
    options = {"restore_callback_states_from_checkpoint": restore} if restore is False else {}
    killed = _trainer(tmp_path, tiny_tokenizer, callbacks=[Kill(4 * STEPS_PER_EPOCH)], **options)
    with pytest.raises(KeyboardInterrupt):
        killed.train()
    with open(tmp_path / "out" / "checkpoint-40" / TRAINER_STATE_NAME) as handle:
        saved = json.load(handle)["stateful_callbacks"]["HydraEarlyStoppingCallback"]
    assert saved["attributes"]["early_stopping_patience_counter"] == 2

    if restore == "patience 4":
        options = {"early_stopping_patience": 4}
    resumed = _trainer(tmp_path, tiny_tokenizer, **options)
    resumed.train(resume_from_checkpoint=True)
    if restore == "patience 4":  # 3 at epoch 5 < 4: on to epoch 6 (0.9), then 4 more without improvement
        assert _epochs_evaluated(resumed) == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
        assert resumed.state.best_global_step == 60
    elif restore is None:
        assert _epochs_evaluated(resumed) == [1, 2, 3, 4, 5]
        assert resumed.state.best_global_step == 20
        _assert_same_weights(_model_weights(resumed), _checkpoint_weights(tmp_path / "out" / "checkpoint-20"))
    else:  # the count restarted at 0: epoch 6 (0.9) becomes the best, and the run stops at epoch 9
        assert _epochs_evaluated(resumed) == [1, 2, 3, 4, 5, 6, 7, 8, 9]
        assert resumed.state.best_global_step == 60


def test_no_judgement_before_gradual_unfreezing_has_released_the_last_layer(tmp_path, tiny_tokenizer):
    """2 encoder layers + embeddings, one level per epoch: fully unfrozen at epoch 3. A metric that only falls
    after epoch 1 would stop a patience-1 run at epoch 2; here the evaluations at epochs 2 and 3 are not
    judged, epoch 4 is the first, and it stops there. Epoch 1 stays the best and is loaded."""
    falling = {epoch: 1.0 - 0.1 * epoch for epoch in range(1, 11)}
    trainer = _trainer(
        tmp_path,
        tiny_tokenizer,
        metrics=Scripted(falling),
        early_stopping_patience=1,
        gradual_unfreezing=True,
        unfreeze_every=1.0,
    )
    trainer.train()
    assert _epochs_evaluated(trainer) == [1, 2, 3, 4]
    assert trainer.state.best_global_step == STEPS_PER_EPOCH
    _assert_same_weights(_model_weights(trainer), _checkpoint_weights(tmp_path / "out" / "checkpoint-10"))


def _class_weighted_model():
    model = seeded_model()
    model.config.tasks = {
        **model.config.tasks,
        "topic": {**model.config.tasks["topic"], "class_weights": [0.5, 1.0, 3.0]},
    }
    return model


@pytest.mark.parametrize(
    "setting",
    [
        "freeze_encoder_with_feature_cache",
        "freeze_heads",
        "freeze_lower_layers",
        "class_weights",
        "shared_source",
    ],
)
def test_stopping_and_best_checkpoint_hold_with_every_freeze_policy_class_weights_and_shared_sources(
    tmp_path, tiny_tokenizer, setting
):
    model, data, overrides = None, None, {}
    if setting == "freeze_encoder_with_feature_cache":
        overrides = {"freeze_policy": "encoder"}
    elif setting == "freeze_heads":
        overrides = {"freeze_policy": "heads"}
    elif setting == "freeze_lower_layers":
        overrides = {"freeze_lower_layers": 1}
    elif setting == "class_weights":
        model = _class_weighted_model()
    else:
        from test_shared_rows import _model_with_extra, _shared_and_plain

        model, data = _model_with_extra(), _shared_and_plain(tiny_tokenizer)
    trainer = _trainer(tmp_path, tiny_tokenizer, model=model, data=data, **overrides)
    if setting == "freeze_encoder_with_feature_cache":
        assert trainer.frozen_encoder is not None
    trainer.train()
    assert _epochs_evaluated(trainer) == [1, 2, 3, 4, 5]
    steps = trainer.state.global_step // 5
    best = tmp_path / "out" / f"checkpoint-{2 * steps}"
    assert checkpoint_folders(trainer.args.output_dir) == [str(best)]
    _assert_same_weights(_model_weights(trainer), _checkpoint_weights(best))
    # The selection score of a real evaluation: the mean of the tasks' macro-F1 (shared source: per task).
    metrics = trainer.evaluate()
    tasks = trainer.model.task_names
    assert metrics["eval_selection_score"] == pytest.approx(
        sum(metrics[f"eval_{t}_f1"] for t in tasks) / len(tasks)
    )


def test_real_metrics_select_a_checkpoint_that_the_model_card_names(tmp_path, tiny_tokenizer):
    """Default metrics (no script): the kept step is the evaluation with the highest selection score."""
    trainer = _trainer(tmp_path, tiny_tokenizer, metrics=False, early_stopping_patience=2, num_train_epochs=4)
    trainer.train()
    scores = {
        row["step"]: row["eval_selection_score"]
        for row in trainer.state.log_history
        if "eval_selection_score" in row
    }
    best_step = max(scores, key=lambda step: (scores[step], -step))  # ties: the first wins (strictly better)
    assert trainer.state.best_global_step == best_step
    kinds = {t: "single_label_classification" for t in trainer.model.task_names}
    assert kept_checkpoint(trainer.args, trainer.state, kinds)["value"] == scores[best_step]


# ------------------------------------------------------------------------------------------------ run_mtl
def test_run_mtl_takes_early_stopping_patience_from_a_run_config(tmp_path):
    import run_mtl

    config = tmp_path / "run.json"
    config.write_text(
        json.dumps({"tasks": [], "output_dir": str(tmp_path / "out"), "early_stopping_patience": 3})
    )
    _, _, training_args = run_mtl.parse_args([str(config), "--report_to", "none"])
    assert training_args.early_stopping_patience == 3 and training_args.load_best_model_at_end
    assert training_args.metric_for_best_model == "selection_score"


# ---------------------------------------------------------------------------------------------------- DDP
DDP_TRAIN = textwrap.dedent(
    """
    import json, sys
    import datasets
    from transformers import AutoTokenizer
    from hydrabert import HydraBertModel
    from hydrabert.trainer import MultiTaskTrainer, MultiTaskTrainingArguments

    model_dir, tokenizer_dir, data_dir, out = sys.argv[1:5]
    data = {
        split: {task: datasets.load_from_disk(f"{data_dir}/{split}/{task}") for task in ("sentiment", "topic")}
        for split in ("train", "validation")
    }
    args = MultiTaskTrainingArguments(
        output_dir=out, per_device_train_batch_size=4, per_device_eval_batch_size=4, learning_rate=5e-3,
        num_train_epochs=12, early_stopping_patience=1, save_total_limit=1, logging_steps=100, seed=0,
        report_to=[], use_cpu=True, disable_tqdm=True, dataloader_num_workers=0,
    )
    trainer = MultiTaskTrainer(
        model=HydraBertModel.from_pretrained(model_dir), args=args, train_dataset=data["train"],
        eval_dataset=data["validation"], processing_class=AutoTokenizer.from_pretrained(tokenizer_dir),
    )
    trainer.train()
    state = trainer.state
    rank = trainer.accelerator.process_index
    weights = sum(float(p.double().sum()) for p in trainer.model.parameters())
    with open(f"{out}/rank{rank}.json", "w") as handle:
        json.dump({
            "world_size": trainer.accelerator.num_processes, "global_step": state.global_step,
            "max_steps": state.max_steps, "best_global_step": state.best_global_step,
            "scores": [row["eval_selection_score"] for row in state.log_history if "eval_selection_score" in row],
            "weights": weights,
        }, handle)
    from hydrabert.engines import leave_process_group
    leave_process_group()
    """
)


def test_under_ddp_every_process_stops_at_the_same_step_with_the_same_best(tmp_path, tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    model_dir, data_dir, out = tmp_path / "model", tmp_path / "data", tmp_path / "out"
    seeded_model().save_pretrained(model_dir)
    # Validation sets that shard unevenly over 2 processes x batches of 4.
    train, validation = make_task_datasets(tokenizer, sizes={"sentiment": (37, 2), "topic": (23, 3)}, seed=3)
    for task in ("sentiment", "topic"):
        train[task].save_to_disk(data_dir / "train" / task)
        validation[task].save_to_disk(data_dir / "validation" / task)
    script = tmp_path / "ddp_early_stopping_script.py"
    script.write_text(DDP_TRAIN)
    os.makedirs(out)
    result = subprocess.run(
        [
            sys.executable,
            *TWO_PROCESS_LAUNCH,
            str(script),
            str(model_dir),
            tiny_tokenizer_dir,
            str(data_dir),
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": REPO, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ranks = []
    for rank in (0, 1):
        with open(out / f"rank{rank}.json") as handle:
            ranks.append(json.load(handle))
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["global_step"] < ranks[0]["max_steps"]  # it did stop early
    for key in ("global_step", "best_global_step", "scores"):
        assert ranks[0][key] == ranks[1][key], key
    assert ranks[0]["weights"] == pytest.approx(ranks[1]["weights"], rel=1e-6)  # both loaded the same best
