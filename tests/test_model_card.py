"""Model cards: card data filled by the callback, rendering from the packaged template, Hub metadata."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch
from conftest import tiny_config
from huggingface_hub import EvalResult, ModelCard, ModelCardData, metadata_load
from transformers import TrainerControl, TrainerState, TrainingArguments

from hydrabert import HydraBertModel
from hydrabert.model_card import (
    TEMPLATE_PATH,
    HydraBertCardData,
    ModelCardCallback,
    check_metadata_round_trip,
    generate_model_card,
    non_default_arguments,
    render_model_card,
)

FAKE_EVAL = {
    "eval_loss": 0.52,
    "eval_sentiment_accuracy": 0.875,
    "eval_sentiment_f1": 0.8712,
    "eval_topic_accuracy": 0.61,
    "eval_topic_f1": 0.58,
    "eval_average_accuracy": 0.7425,
    "eval_runtime": 1.25,
    "eval_samples_per_second": 100.0,
    "epoch": 2.0,
}
FAKE_TEST = {"test_sentiment_accuracy": 0.86, "test_topic_accuracy": 0.6, "test_average_accuracy": 0.73}


@dataclasses.dataclass
class FakeMultiTaskArgs(TrainingArguments):
    """The recipe fields of hydrabert.trainer.MultiTaskTrainingArguments, without depending on it."""

    layerwise_lr_decay: float = 1.0
    head_learning_rate: float | None = None
    freeze_policy: str = "none"
    freeze_lower_layers: int = 0
    gradual_unfreezing: bool = False
    unfreeze_every: float = 1.0
    task_sampling: str = "proportional"
    sampling_temperature: float = 1.0


def _args(tmp_path, **overrides):
    kwargs = dict(
        output_dir=str(tmp_path / "out"),
        learning_rate=3e-5,
        num_train_epochs=2,
        warmup_steps=10,
        weight_decay=0.01,
        logging_steps=5,
        report_to=[],
        hub_model_id="someone/else",
        layerwise_lr_decay=0.9,
        head_learning_rate=1e-3,
        freeze_lower_layers=1,
        gradual_unfreezing=True,
        unfreeze_every=0.5,
        task_sampling="temperature",
        sampling_temperature=2.0,
    )
    kwargs.update(overrides)
    return FakeMultiTaskArgs(**kwargs)


def _run_callback(model, args, card_data=None, eval_metrics=FAKE_EVAL, test_metrics=FAKE_TEST):
    """What a Trainer does to the callback: train begin, logs, evaluations, the final log, a predict."""
    callback = ModelCardCallback(card_data)
    state, control = TrainerState(), TrainerControl()
    callback.on_train_begin(args, state, control, model=model)
    for step in range(1, 21):
        state.global_step, state.epoch = step, step / 10
        callback.on_log(
            args, state, control, logs={"loss": 2.0 / step, "learning_rate": 3e-5 * (1 - step / 20)}
        )
        if step % 10 == 0:
            callback.on_evaluate(args, state, control, metrics=dict(eval_metrics), model=model)
    callback.on_log(args, state, control, logs={"train_runtime": 75.0, "train_loss": 0.41})
    callback.on_predict(args, state, control, metrics=dict(test_metrics), model=model)
    return callback


def _assert_clean_markdown(text: str) -> None:
    assert "{{" not in text and "}}" not in text and "{%" not in text and "%}" not in text
    assert "\n\n\n" not in text
    assert text.endswith("\n") and not text.endswith("\n\n")
    # No empty section: a heading is never directly followed (blank lines aside) by another heading.
    previous_heading, in_fence = None, False
    for line in text.split("\n"):
        if line.startswith("```"):
            in_fence = not in_fence
            previous_heading = None
        elif not in_fence and re.match(r"#{1,6} ", line):
            assert previous_heading is None, f"empty section: {previous_heading!r} followed by {line!r}"
            previous_heading = line
        elif line.strip():
            previous_heading = None
    assert previous_heading is None, f"empty last section {previous_heading!r}"
    assert not in_fence


def _assert_metadata_round_trips(readme, card_data=None) -> dict:
    """The YAML block read back by huggingface_hub's own classes (what the Hub parses) is what was meant."""
    metadata = metadata_load(readme)
    assert isinstance(metadata, dict)
    data = ModelCard(readme.read_text()).data  # strict: raises on a model-index it cannot parse
    assert data.to_dict() == metadata  # a lossless round trip
    for result in data.eval_results or []:
        assert isinstance(result, EvalResult)
        EvalResult(**dataclasses.asdict(result))  # every field is constructible as is
    if card_data is not None:
        assert (data.eval_results or []) == card_data.eval_results()
        assert data.to_dict() == card_data.metadata().to_dict()
    return metadata


@pytest.fixture
def one_task_model():
    return HydraBertModel(tiny_config(tasks={"sentiment": {"labels": ["negative", "positive"]}})).eval()


def test_template_ships_inside_the_package():
    import hydrabert

    assert TEMPLATE_PATH.is_file()
    assert TEMPLATE_PATH.parent.name == "model_cards"
    assert TEMPLATE_PATH.parent.parent.samefile(hydrabert.__path__[0])


def test_callback_fills_results_recipe_and_history(tiny_model, tmp_path):
    card = _run_callback(tiny_model, _args(tmp_path)).card_data
    assert card.results["validation"] == {
        "sentiment": {"accuracy": 0.875, "f1": 0.8712},
        "topic": {"accuracy": 0.61, "f1": 0.58},
    }
    assert card.results["test"] == {"sentiment": {"accuracy": 0.86}, "topic": {"accuracy": 0.6}}
    assert card.average_results == {"validation": {"accuracy": 0.7425}, "test": {"accuracy": 0.73}}
    # Two evaluations in the history, with the split-level loss; predict() does not add one.
    assert [(row["step"], row["loss"]) for row in card.eval_history] == [(10, 0.52), (20, 0.52)]
    assert len(card.training_logs) == 20 and card.training_logs[0] == {
        "step": 1,
        "epoch": 0.1,
        "loss": 2.0,
        "learning_rate": pytest.approx(2.85e-5),
    }
    assert card.train_summary == {"train_runtime": 75.0, "train_loss": 0.41}
    assert card.tasks["topic"]["weight"] == 0.5 and card.tasks["sentiment"]["labels"] == [
        "negative",
        "positive",
    ]
    assert card.architecture["num_layers"] == 2 and card.architecture["embedding_dim"] == 32
    assert card.architecture["num_parameters"] == sum(p.numel() for p in tiny_model.parameters())
    assert card.training["layerwise_lr_decay"] == 0.9 and card.training["task_sampling"] == "temperature"
    assert card.training["freeze_policy"] == "none" and card.training["head_learning_rate"] == 1e-3


def test_metric_keys_resolve_task_names_that_share_a_prefix(tmp_path):
    model = HydraBertModel(tiny_config(tasks={"topic": {"num_labels": 6}, "topic_fine": {"num_labels": 50}}))
    callback = ModelCardCallback()
    # evaluate() without train(): the task names come from the model passed to the event.
    callback.on_evaluate(
        TrainingArguments(output_dir=str(tmp_path), report_to=[]),
        TrainerState(),
        TrainerControl(),
        metrics={"eval_topic_accuracy": 0.9, "eval_topic_fine_accuracy": 0.7, "eval_topic_fine_f1": 0.6},
        model=model,
    )
    assert callback.card_data.results == {
        "validation": {"topic": {"accuracy": 0.9}, "topic_fine": {"accuracy": 0.7, "f1": 0.6}}
    }


def test_hyperparameter_diff_is_generic_and_skips_paths(tmp_path):
    diff = non_default_arguments(_args(tmp_path))
    assert diff["warmup_steps"] == 10 and diff["weight_decay"] == 0.01 and diff["learning_rate"] == 3e-5
    assert diff["layerwise_lr_decay"] == 0.9 and diff["task_sampling"] == "temperature"
    for skipped in ("output_dir", "logging_steps", "hub_model_id", "report_to", "logging_dir", "run_name"):
        assert skipped not in diff
    assert "freeze_policy" not in diff  # at its default
    plain = TrainingArguments(output_dir=str(tmp_path / "plain"), report_to=[])
    assert non_default_arguments(plain) == {}


def test_plain_training_arguments_give_the_default_recipe(tiny_model, tmp_path):
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], learning_rate=1e-4)
    card = _run_callback(tiny_model, args).card_data
    assert card.training["layerwise_lr_decay"] == 1.0 and card.training["task_sampling"] == "proportional"
    text = str(render_model_card(card))
    assert "no layer-wise decay" in text and "Gradual unfreezing" not in text
    _assert_clean_markdown(text)


def test_two_task_card_renders_every_section(tiny_model, tmp_path):
    tiny_model.config.encoder._name_or_path = "sentence-transformers/all-MiniLM-L6-v2"
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    (output_dir / "per_task_metrics.png").write_bytes(b"\x89PNG")
    (output_dir / "plots").mkdir()
    (output_dir / "plots" / "learning_rates.png").write_bytes(b"\x89PNG")
    seed = HydraBertCardData(
        model_id="hydra-user/hydrabert-sst2-trec",
        language="en",
        license="apache-2.0",
        datasets={"sentiment": "stanfordnlp/sst2", "topic": "../shared/data/trec"},
        dataset_sizes={"sentiment": {"train": 6920, "validation": 872}, "topic": {"train": 5452}},
    )
    callback = _run_callback(tiny_model, _args(tmp_path), card_data=seed)
    card = generate_model_card(tiny_model, output_dir, card_data=callback.card_data, revision="0123abcd" * 5)
    readme = output_dir / "README.md"
    text = readme.read_text()
    assert str(card) == text
    _assert_clean_markdown(text)
    metadata = _assert_metadata_round_trips(readme)

    assert metadata["library_name"] == "transformers" and metadata["pipeline_tag"] == "text-classification"
    assert metadata["tags"] == ["hydrabert", "multi-task", "sentence-embeddings", "text-classification"]
    assert metadata["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert metadata["datasets"] == ["stanfordnlp/sst2"]  # the local path is not a Hub dataset
    assert metadata["metrics"] == ["accuracy", "f1"] and metadata["license"] == "apache-2.0"
    results = ModelCardData(**metadata).eval_results
    by_key = {(r.task_name, r.dataset_split, r.metric_type): r for r in results}
    assert by_key[("sentiment", "validation", "accuracy")].metric_value == 0.875
    assert by_key[("sentiment", "validation", "accuracy")].dataset_type == "stanfordnlp/sst2"
    assert by_key[("topic", "validation", "f1")].dataset_type == "topic"  # no Hub dataset: the task name
    assert by_key[("topic", "test", "accuracy")].metric_value == 0.6
    assert {r.task_name for r in results} == set(tiny_model.task_names)
    assert {r.task_type for r in results} == {"text-classification"}

    for section in ("Model details", "Usage", "Training data", "Training procedure", "Hyperparameters",
                    "Training history", "Evaluation results", "Plots", "Limitations"):  # fmt: skip
        assert f"\n## {section}\n" in text or f"\n### {section}\n" in text, section
    assert text.count("trust_remote_code=True") >= 2
    assert 'revision = "0123abcd0123abcd' in text and "revision=revision" in text
    assert 'repo_id = "hydra-user/hydrabert-sst2-trec"' in text
    assert "model.predict(sentences, tokenizer)" in text and "model.encode(sentences, tokenizer" in text
    assert 'pipeline(model="hydra-user/hydrabert-sst2-trec", trust_remote_code=True, revision=' in text
    assert "| `topic` | single-label | `LABEL_0`, `LABEL_1`, `LABEL_2` | 0.5 |" in text
    assert "| `sentiment` | 0.875 | 0.8712 |" in text and "| **average** | 0.7425 | - |" in text
    assert (
        "ξ = 0.9" in text
        and "T = 2" in text
        and "every 0.5 epochs" in text
        and "Head learning rate** (projection, adapter, heads): 0.001" in text
    )
    assert "lowest 1 encoder layer frozen" in text
    assert "| `warmup_steps` | `10` |" in text and "output_dir" not in text and "hub_model_id" not in text
    assert "![Per task metrics](per_task_metrics.png)" in text
    assert "![Learning rates](plots/learning_rates.png)" in text
    assert "[stanfordnlp/sst2](https://huggingface.co/datasets/stanfordnlp/sst2) | 6920 | 872 |" in text
    assert "in 1m 15s" in text and "Trained on `en` text" in text


def test_one_task_card_without_training_drops_optional_sections(one_task_model, tmp_path):
    card = generate_model_card(one_task_model, tmp_path)
    text = (tmp_path / "README.md").read_text()
    _assert_clean_markdown(text)
    metadata = _assert_metadata_round_trips(tmp_path / "README.md")
    assert "model-index" not in metadata and "datasets" not in metadata and "metrics" not in metadata
    assert "base_model" not in metadata  # a random model has no encoder checkpoint
    for gone in ("## Training data", "## Training procedure", "### Hyperparameters", "### Training history",
                 "## Evaluation results", "## Plots"):  # fmt: skip
        assert gone not in text
    assert "1 task (`sentiment`)" in text
    assert 'revision = "main"' in text and "trust_remote_code=True, revision=revision" in text
    assert card.data.to_dict()["pipeline_tag"] == "text-classification"


def test_one_task_card_with_results_lists_them(one_task_model, tmp_path):
    one_task_model.config.encoder._name_or_path = str(tmp_path / "local-bert")
    callback = _run_callback(
        one_task_model,
        _args(tmp_path),
        eval_metrics={k: v for k, v in FAKE_EVAL.items() if "topic" not in k},
        test_metrics={"test_sentiment_accuracy": 0.86},
    )
    text = str(render_model_card(callback.card_data))
    _assert_clean_markdown(text)
    (tmp_path / "README.md").write_text(text)
    metadata = _assert_metadata_round_trips(tmp_path / "README.md", callback.card_data)
    assert "base_model" not in metadata  # a local path is named in the text only
    assert f"`{tmp_path / 'local-bert'}` (local)" in text
    (entry,) = metadata["model-index"]
    assert {r["task"]["name"] for r in entry["results"]} == {"sentiment"}
    assert "topic" not in text


def test_usage_snippet_shows_real_predictions_with_a_tokenizer(tiny_model, tiny_tokenizer, tmp_path):
    card = generate_model_card(
        tiny_model, tmp_path, tokenizer=tiny_tokenizer, example_sentences=["good film", "what is the answer"]
    )
    expected = tiny_model.predict(["good film", "what is the answer"], tiny_tokenizer)
    label = expected[0]["sentiment"]["label"]
    assert f"# sentiment: {label} (" in str(card)
    _assert_clean_markdown(str(card).split("---\n", 2)[2])


def test_labels_are_escaped_and_long_label_lists_shortened(tmp_path):
    labels = ["a|b"] + [f"intent_{i}" for i in range(149)]
    model = HydraBertModel(tiny_config(tasks={"intent": {"labels": labels}}))
    card_data = HydraBertCardData()
    card_data.update_from_model(model)
    text = str(render_model_card(card_data))
    assert "`a\\|b`" in text and "... (150 labels)" in text and "intent_148" not in text


def test_unknown_override_is_rejected(tiny_model, tmp_path):
    with pytest.raises(TypeError, match="Unknown model-card field"):
        generate_model_card(tiny_model, tmp_path, revison="abc")


def test_metadata_round_trips_through_huggingface_hub(tiny_model, tmp_path):
    """`model-index` written from the card data parses back, through the Hub's classes, into equal
    `EvalResult`s, and the card data's YAML is exactly what `ModelCard` reads."""
    card_data = _run_callback(
        tiny_model, _args(tmp_path), card_data=HydraBertCardData(model_id="u/m")
    ).card_data
    card = render_model_card(card_data)
    parsed = ModelCard(str(card)).data
    assert parsed.eval_results == card_data.eval_results() and len(parsed.eval_results) == 6
    assert parsed.to_dict()["model-index"] == card_data.metadata().to_dict()["model-index"]
    assert parsed.model_name == "m" and parsed.to_dict() == card.data.to_dict()


def test_metadata_that_does_not_read_back_is_rejected(tiny_model, tmp_path):
    card_data = _run_callback(tiny_model, _args(tmp_path)).card_data
    card = render_model_card(card_data)
    changed = ModelCard(str(card).replace("value: 0.875", "value: 0.9", 1))
    with pytest.raises(ValueError, match="does not read back the same"):
        check_metadata_round_trip(changed, card_data.metadata())
    # A model-index the Hub cannot parse fails in huggingface_hub itself.
    with pytest.raises(ValueError, match="model_index"):
        ModelCard("---\nmodel-index:\n- name: m\n  results:\n  - task: {type: text-classification}\n---\n")


def test_card_states_the_training_sequence_length_not_the_encoders(tiny_model, tmp_path):
    card = str(generate_model_card(tiny_model, tmp_path, max_seq_length=16))
    assert (
        "- **Maximum sequence length**: 16 tokens in training (the encoder's position embeddings allow 64)"
        in card
    )
    assert "Training truncated inputs to 16 tokens" in card and "Inputs longer than 64 tokens" not in card
    # Without the run's length, the encoder's limit, said to be that.
    card = str(generate_model_card(tiny_model, tmp_path))
    assert "- **Maximum sequence length**: 64 tokens (the encoder's position embeddings)" in card
    # A model that carries its training length (config.max_seq_length, issue 24) states it without being told.
    tiny_model.config.max_seq_length = 24
    card = str(generate_model_card(tiny_model, tmp_path))
    assert "- **Maximum sequence length**: 24 tokens in training" in card
    assert "- **Maximum sequence length**: 8 tokens in training" in str(
        generate_model_card(tiny_model, tmp_path, max_seq_length=8)  # the run's own value wins
    )


def test_learning_rate_is_the_top_layers_peak_with_decay_and_head_rate(tiny_model, tmp_path):
    """The configured learning_rate is the top encoder layer's peak; the card names ξ, the embeddings'
    and the heads' rates, and the history follows the top layer's logged rate, not group 0's."""
    callback = ModelCardCallback()
    args = _args(tmp_path, learning_rate=1e-4, layerwise_lr_decay=0.5, head_learning_rate=1e-3)
    state, control = TrainerState(), TrainerControl()
    callback.on_train_begin(args, state, control, model=tiny_model)
    state.global_step, state.epoch = 4, 0.5
    # group 0 (the embeddings) is what the Trainer logs as learning_rate
    logs = {
        "loss": 0.7,
        "learning_rate": 2.5e-5,
        "lr/embeddings": 2.5e-5,
        "lr/layer_0": 5e-5,
        "lr/layer_1": 1e-4,
    }
    callback.on_log(args, state, control, logs=logs)
    text = str(render_model_card(callback.card_data))
    assert (
        "- **Learning rate**: peak 1.00e-04 for the top encoder layer, with layer-wise decay ξ = 0.5" in text
    )
    assert "the embeddings at lr·ξ^L = 2.50e-05 (L = 2); `linear` schedule" in text
    assert "- **Head learning rate** (projection, adapter, heads): 0.001\n" in text
    assert "**Learning rate of the top encoder layer** (logged): highest 1.00e-04, final 1.00e-04" in text
    assert (
        "| 4 | 0.5 | 0.7 | 1.00e-04 |" in text and "2.50e-05 |" not in text.split("### Training history")[1]
    )
    plain = _run_callback(
        tiny_model, TrainingArguments(output_dir=str(tmp_path), report_to=[], learning_rate=3e-5)
    )
    text = str(render_model_card(plain.card_data))
    assert "peak 3.00e-05 for the whole encoder (no layer-wise decay)" in text
    assert "(projection, adapter, heads): 3.00e-05 (same as the top encoder layer)" in text


def test_validation_held_out_of_train_is_described_as_such(tiny_model, tmp_path):
    seed = HydraBertCardData(
        datasets={"sentiment": "stanfordnlp/sst2", "topic": "CogComp/trec"},
        dataset_sizes={
            "sentiment": {"train": 60, "validation": 16},
            "topic": {"train": 45, "validation": 5, "test": 9},
        },
        validation_split_percentage={"topic": 10},
    )
    callback = _run_callback(tiny_model, _args(tmp_path), card_data=seed)
    card = generate_model_card(tiny_model, tmp_path, card_data=callback.card_data)
    text = (tmp_path / "README.md").read_text()
    _assert_clean_markdown(text)
    assert "| Task | Dataset | train examples | validation examples | test examples |" in text
    assert "| 45 | 5 (10% of train, held out) | 9 |" in text and "| 60 | 16 | - |" in text
    assert (
        "`topic` has no validation split of its own: its validation rows are 10% of its train split" in text
    )
    results = {(r.task_name, r.metric_type, r.dataset_split): r for r in card.data.eval_results}
    held_out = results[("topic", "accuracy", "train")]
    assert held_out.dataset_args == {"validation_split_percentage": 10} and held_out.metric_value == 0.61
    assert held_out.metric_name == "topic accuracy (validation: 10% of train held out)"
    assert ("topic", "accuracy", "validation") not in results  # CogComp/trec has no validation split
    assert results[("sentiment", "accuracy", "validation")].dataset_args is None
    _assert_metadata_round_trips(tmp_path / "README.md")


def test_one_epoch_one_step_are_singular(tiny_model, tmp_path):
    callback = ModelCardCallback()
    args = _args(tmp_path, num_train_epochs=1)
    state, control = TrainerState(), TrainerControl()
    callback.on_train_begin(args, state, control, model=tiny_model)
    state.global_step, state.epoch = 1, 1.0
    callback.on_log(args, state, control, logs={"loss": 0.5, "learning_rate": 1e-5})
    text = str(render_model_card(callback.card_data))
    assert "- **Length**: 1 epoch\n" in text and "- **Length**: 1 step (1 epoch)\n" in text
    assert "1 epochs" not in text and "1 steps" not in text
    assert "× 1 accumulation step × 1 process = 8" in text


def test_mean_pooling_adapter_regression_and_multi_label_render_cleanly(tmp_path, tiny_tokenizer):
    tasks = {
        "score": {"num_labels": 1, "problem_type": "regression"},
        "tags": {"labels": ["a", "b", "c"], "problem_type": "multi_label_classification"},
    }
    torch.manual_seed(0)
    model = HydraBertModel(
        tiny_config(tasks=tasks, pooling="mean", adapter_size=8, head_input="embedding+cls")
    ).eval()
    text = str(
        generate_model_card(model, tmp_path, tokenizer=tiny_tokenizer, example_sentences=["good film"])
    )
    _assert_clean_markdown(text.split("---\n", 2)[2])
    assert "`tanh(Linear(masked mean of the token states))`" in text
    assert "- **Heads read**: the sentence embedding beside `tanh(h_[CLS])`" in text
    assert "- **Adapter**: residual bottleneck of width 8 between embedding and heads" in text
    assert (
        "| `score` | regression | - | 1 |" in text and "| `tags` | multi-label | `a`, `b`, `c` | 1 |" in text
    )
    assert 'sentences = ["good film"]' in text and "shape (1, 32)" in text
    prediction = model.predict(["good film"], tiny_tokenizer)[0]
    score = round(prediction["score"]["score"], 4)
    assert f"# score: {score:g}, tags: [" in text


def test_card_reports_class_weights_and_defines_both_f1s(tmp_path):
    tasks = {
        "intent": {"labels": ["book", "cancel", "ask"], "class_weights": [0.5, 2.0, 1.25]},
        "sentiment": {"labels": ["negative", "positive"]},
    }
    model = HydraBertModel(tiny_config(tasks=tasks)).eval()
    metrics = {"eval_intent_f1": 0.7, "eval_intent_f1_declared_labels": 0.6, "eval_sentiment_f1": 0.8}
    callback = _run_callback(model, _args(tmp_path), eval_metrics=metrics, test_metrics={})
    text = str(render_model_card(callback.card_data))
    _assert_clean_markdown(text)
    assert (
        "\n\nClass-weighted loss: each training row's cross-entropy is multiplied by its label's weight"
        in text
    )
    assert "\n\n- `intent`: `book` 0.5, `cancel` 2, `ask` 1.25\n" in text
    assert "- `sentiment`:" not in text  # unweighted tasks are not listed
    assert "`f1` is macro-F1 over the labels that occur in the split's references or predictions" in text
    assert "`f1_declared_labels` averages over every label of the task" in text
    # No class weights, no f1: neither paragraph.
    plain = HydraBertCardData()
    plain.update_from_model(HydraBertModel(tiny_config()))
    text = str(render_model_card(plain))
    assert "Class-weighted" not in text and "macro-F1" not in text


def test_tasks_on_one_hub_dataset_share_its_model_index_entry_and_read_back(tmp_path):
    """The Hub keys a model-index entry by (task type, dataset, config, split), not by task: two tasks of one
    Hub dataset (a shared source's, or two tasks reading the same files) must share their entry, or the card
    would read back with one task's results under the other's name."""
    model = HydraBertModel(
        tiny_config(
            tasks={"fine": {"num_labels": 5}, "other": {"num_labels": 2}, "polarity": {"num_labels": 2}}
        )
    )
    seed = HydraBertCardData(
        datasets={"fine": "SetFit/sst5", "other": "CogComp/trec", "polarity": "SetFit/sst5"}
    )
    metrics = {
        "eval_fine_accuracy": 0.5,
        "eval_other_accuracy": 0.9,
        "eval_polarity_accuracy": 0.88,
        "epoch": 1.0,
    }
    callback = _run_callback(model, _args(tmp_path), card_data=seed, eval_metrics=metrics, test_metrics={})
    card = generate_model_card(model, tmp_path, card_data=callback.card_data)
    _assert_metadata_round_trips(tmp_path / "README.md", callback.card_data)
    entries = [
        (r.task_name, r.dataset_name, r.metric_name, r.metric_value)
        for r in card.data.eval_results
        if r.dataset_split == "validation"
    ]
    assert entries == [
        ("fine, polarity", "fine, polarity (SetFit/sst5)", "fine accuracy (validation)", 0.5),
        ("fine, polarity", "fine, polarity (SetFit/sst5)", "polarity accuracy (validation)", 0.88),
        ("other", "other (CogComp/trec)", "other accuracy (validation)", 0.9),
    ]
