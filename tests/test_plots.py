"""Plots as a trainer callback: written into the output directory when training ends, also for a run
shorter than `logging_steps` (its learning rates come from the optimizer, not the log)."""

from __future__ import annotations

import pytest
from conftest import seeded_model, tiny_training_args

from hydrabert.plots import (
    LEARNING_RATE_PLOT,
    TASK_METRICS_PLOT,
    PlotsCallback,
    learning_rate_series,
    save_training_plots,
)
from hydrabert.trainer import MultiTaskTrainer


def test_a_run_shorter_than_logging_steps_still_plots_its_learning_rates(tmp_path, task_data, tiny_tokenizer):
    args = tiny_training_args(tmp_path, max_steps=3, logging_steps=50, layerwise_lr_decay=0.5, warmup_steps=0)
    trainer = MultiTaskTrainer(
        model=seeded_model(), args=args, train_dataset=task_data[0], processing_class=tiny_tokenizer
    )
    trainer.train()
    assert not any(
        key.startswith("lr/") for entry in trainer.state.log_history for key in entry
    )  # nothing logged
    assert LEARNING_RATE_PLOT in trainer.plot_files
    assert (tmp_path / LEARNING_RATE_PLOT).read_bytes()[:4] == b"\x89PNG"
    recorded = trainer.plots_callback.recorded_rates
    assert sorted(recorded) == [1, 2, 3]
    assert {"embeddings", "layer_0", "layer_1", "heads"} == set(recorded[1])
    assert recorded[1]["layer_0"] == pytest.approx(recorded[1]["layer_1"] * 0.5)
    # The rates each step used: the linear schedule's 5e-3 * (1 - k/3) for steps k = 1, 2, 3.
    assert [recorded[k]["layer_1"] for k in (1, 2, 3)] == pytest.approx([5e-3, 5e-3 * 2 / 3, 5e-3 / 3])


def test_recorded_rates_take_over_from_logged_ones():
    """A resumed run: the steps before the resume come from the log, the rest from the optimizer."""
    history = [{"step": 2, "lr/heads": 0.1, "lr/layer_0": 0.01}, {"step": 4, "lr/heads": 0.9, "loss": 1.0}]
    series = learning_rate_series(history, {3: {"heads": 0.2, "layer_0": 0.02}, 4: {"heads": 0.05}})
    assert series == {"heads": ([2, 3, 4], [0.1, 0.2, 0.05]), "layer_0": ([2, 3], [0.01, 0.02])}


def test_nothing_to_plot_writes_nothing_and_says_why(tmp_path, caplog):
    with caplog.at_level("INFO", logger="hydrabert.plots"):
        assert save_training_plots([{"step": 1, "eval_loss": 0.5}], str(tmp_path)) == []
    assert f"{LEARNING_RATE_PLOT} not written" in caplog.text
    assert not (tmp_path / LEARNING_RATE_PLOT).exists() and not (tmp_path / TASK_METRICS_PLOT).exists()


def test_callback_redraws_task_metrics_after_an_evaluation(tmp_path):
    from transformers import TrainerControl, TrainerState, TrainingArguments

    state = TrainerState(is_world_process_zero=True)
    state.log_history = [{"epoch": 1.0, "step": 5, "eval_sentiment_accuracy": 0.7}]
    callback = PlotsCallback()
    callback.on_evaluate(TrainingArguments(output_dir=str(tmp_path), report_to=[]), state, TrainerControl())
    assert callback.files == [TASK_METRICS_PLOT] and (tmp_path / TASK_METRICS_PLOT).is_file()
