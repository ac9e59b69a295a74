"""Frozen-encoder feature caching: same training results with and without it, each example encoded once."""

from __future__ import annotations

import contextlib

import pytest
import torch
from conftest import seeded_model, tiny_training_args

from hydrabert.data import MultiTaskCollator
from hydrabert.feature_cache import FeatureCache, FrozenEncoder
from hydrabert.trainer import MultiTaskTrainer


def _train(
    tmp_path, task_data, tokenizer, cache, epochs=3, model_overrides=None, collator=None, **arg_overrides
):
    model = seeded_model(**(model_overrides or {}))
    args = tiny_training_args(
        tmp_path / f"cache_{cache}",
        freeze_policy="encoder",
        cache_frozen_encoder=cache,
        num_train_epochs=epochs,
        eval_strategy="epoch",
        **arg_overrides,
    )
    trainer = MultiTaskTrainer(
        model=model,
        args=args,
        train_dataset=task_data[0],
        eval_dataset=task_data[1],
        processing_class=tokenizer,
        data_collator=collator,
    )
    trainer.train()
    return trainer


def _assert_same_weights(a, b, atol):
    state_a, state_b = a.state_dict(), b.state_dict()
    assert state_a.keys() == state_b.keys()
    for name in state_a:
        torch.testing.assert_close(state_a[name], state_b[name], rtol=0, atol=atol, msg=name)


def test_with_fixed_width_batches_cached_training_is_bit_identical(tmp_path, task_data, tiny_tokenizer):
    # Every batch padded to 32 tokens: a recomputed example sees the same shapes as its first pass,
    # so caching must not change a single bit.
    collator = MultiTaskCollator(tiny_tokenizer, pad_to_multiple_of=32)
    cached = _train(tmp_path, task_data, tiny_tokenizer, cache=True, collator=collator)
    plain = _train(tmp_path, task_data, tiny_tokenizer, cache=False, collator=collator)
    _assert_same_weights(cached.model, plain.model, atol=0)
    assert cached.frozen_encoder.hits > 0 and plain.frozen_encoder.hits == 0


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_cached_training_gives_the_weights_and_metrics_of_recomputing(
    pooling, tmp_path, task_data, tiny_tokenizer
):
    overrides = {"pooling": pooling, "adapter_size": 8}
    cached = _train(tmp_path, task_data, tiny_tokenizer, cache=True, model_overrides=overrides)
    plain = _train(tmp_path, task_data, tiny_tokenizer, cache=False, model_overrides=overrides)
    # Batches pad to their longest row, so a recomputed example can differ in its last bit from its
    # first pass (other padding, other kernel blocking): equal up to float rounding (seen: 1e-8).
    _assert_same_weights(cached.model, plain.model, atol=1e-6)

    # The heads did train (the comparison is not between two untouched models).
    assert not torch.equal(
        cached.model.heads["topic"].weight, seeded_model(**overrides).heads["topic"].weight
    )
    # Per-epoch evaluation (served from the cache) and training losses agree too.
    history_cached = [e for e in cached.state.log_history if "eval_average_accuracy" in e or "loss" in e]
    history_plain = [e for e in plain.state.log_history if "eval_average_accuracy" in e or "loss" in e]
    assert len(history_cached) == len(history_plain) > 0
    for entry_cached, entry_plain in zip(history_cached, history_plain, strict=True):
        for key in ("loss", "eval_average_accuracy", "eval_average_loss"):
            if key in entry_plain:
                assert entry_cached[key] == pytest.approx(entry_plain[key], abs=1e-5), key


def _distinct(*datasets_):
    return len({tuple(row) for dataset in datasets_ for row in dataset["input_ids"]})


def test_each_example_is_encoded_once_before_the_first_step(tmp_path, task_data, tiny_tokenizer):
    model = seeded_model()
    modes = []
    model.encoder.register_forward_pre_hook(lambda module, args: modes.append(module.training))
    steps = []
    original_step = torch.optim.AdamW.step
    encoder_calls_at_first_step = []

    def step(optimizer, *args, **kwargs):
        if not steps:
            encoder_calls_at_first_step.append(len(modes))
        steps.append(1)
        return original_step(optimizer, *args, **kwargs)

    args = tiny_training_args(
        tmp_path, freeze_policy="encoder", num_train_epochs=3, per_device_eval_batch_size=7
    )
    trainer = MultiTaskTrainer(
        model=model, args=args, train_dataset=task_data[0], processing_class=tiny_tokenizer
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.optim.AdamW, "step", step)
        trainer.train()

    frozen = trainer.frozen_encoder
    examples = sum(len(dataset) for dataset in task_data[0].values())
    assert frozen.misses == _distinct(*task_data[0].values())  # duplicate sentences share an entry
    assert frozen.hits == 3 * examples  # every training row of every epoch came from the cache
    # All encoder passes ran before the first optimizer step, in eval-batch-size chunks, in eval mode.
    assert steps and encoder_calls_at_first_step == [len(modes)]
    assert len(modes) == -(-examples // 7) and not any(modes)
    # The cache is freed when training ends, and the encoder follows the model's mode again.
    assert len(frozen.cache) == 0 and not frozen.active
    assert trainer.model.encoder.training == trainer.model.training


def test_the_fill_covers_validation_rows_when_training_evaluates(tmp_path, task_data, tiny_tokenizer):
    trainer = _train(tmp_path, task_data, tiny_tokenizer, cache=True, epochs=2)
    frozen = trainer.frozen_encoder
    train_rows = sum(len(dataset) for dataset in task_data[0].values())
    eval_rows = sum(len(dataset) for dataset in task_data[1].values())
    assert frozen.misses == _distinct(*task_data[0].values(), *task_data[1].values())
    assert frozen.hits == 2 * (train_rows + eval_rows)


def test_without_a_fill_the_cache_fills_as_batches_come(tmp_path, task_data, tiny_tokenizer):
    # What each DDP rank does: no up-front pass, each example encoded the first time a batch holds it.
    model = seeded_model()
    modes = []
    model.encoder.register_forward_pre_hook(lambda module, args: modes.append(module.training))
    args = tiny_training_args(tmp_path, freeze_policy="encoder", num_train_epochs=3)
    trainer = MultiTaskTrainer(
        model=model, args=args, train_dataset=task_data[0], processing_class=tiny_tokenizer
    )
    trainer.frozen_encoder.prefill = None
    trainer.train()

    frozen = trainer.frozen_encoder
    examples = sum(len(dataset) for dataset in task_data[0].values())
    assert frozen.misses == _distinct(*task_data[0].values())
    assert frozen.hits + frozen.misses == 3 * examples
    assert modes and not any(modes)
    assert len(modes) <= len(trainer.get_train_dataloader())  # first-epoch batches only


def test_under_ddp_the_trainer_does_not_fill_up_front(tmp_path, task_data, tiny_tokenizer, monkeypatch):
    args = tiny_training_args(tmp_path, freeze_policy="encoder")
    monkeypatch.setattr(type(args), "world_size", property(lambda self: 2))
    trainer = MultiTaskTrainer(
        model=seeded_model(), args=args, train_dataset=task_data[0], processing_class=tiny_tokenizer
    )
    assert trainer.frozen_encoder is not None and trainer.frozen_encoder.prefill is None


def test_without_the_cache_a_frozen_encoder_still_runs_without_dropout(tmp_path, task_data, tiny_tokenizer):
    model = seeded_model()
    modes = []
    model.encoder.register_forward_pre_hook(lambda module, args: modes.append(module.training))
    args = tiny_training_args(
        tmp_path, freeze_policy="encoder", cache_frozen_encoder=False, num_train_epochs=2
    )
    trainer = MultiTaskTrainer(
        model=model, args=args, train_dataset=task_data[0], processing_class=tiny_tokenizer
    )
    trainer.train()
    assert len(modes) == 2 * len(trainer.get_train_dataloader())  # recomputed every epoch
    assert not any(modes)


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"freeze_policy": "heads"},
        {"freeze_lower_layers": 1},
        {"gradual_unfreezing": True},
    ],
)
def test_no_frozen_encoder_when_the_encoder_trains(settings, tmp_path, task_data, tiny_tokenizer):
    args = tiny_training_args(tmp_path, **settings)
    trainer = MultiTaskTrainer(
        model=seeded_model(), args=args, train_dataset=task_data[0], processing_class=tiny_tokenizer
    )
    assert trainer.frozen_encoder is None
    assert not any(isinstance(cb, FrozenEncoder) for cb in trainer.callback_handler.callbacks)


def test_every_encoder_level_frozen_by_layers_counts_as_frozen(tmp_path, task_data, tiny_tokenizer):
    args = tiny_training_args(tmp_path, freeze_lower_layers=2)  # tiny encoder: 2 layers + embeddings
    trainer = MultiTaskTrainer(
        model=seeded_model(), args=args, train_dataset=task_data[0], processing_class=tiny_tokenizer
    )
    assert isinstance(trainer.frozen_encoder, FrozenEncoder)


def test_evaluation_outside_training_does_not_fill_the_cache(tmp_path, task_data, tiny_tokenizer):
    trainer = _train(tmp_path, task_data, tiny_tokenizer, cache=True, epochs=1)
    during_training = [e for e in trainer.state.log_history if "eval_average_accuracy" in e][-1]
    metrics = trainer.evaluate()
    assert len(trainer.frozen_encoder.cache) == 0
    # The same model evaluated after training, encoder recomputed, agrees with the cached evaluation.
    assert metrics["eval_average_loss"] == pytest.approx(during_training["eval_average_loss"], abs=1e-6)
    assert metrics["eval_average_accuracy"] == during_training["eval_average_accuracy"]


# --------------------------------------------------------------------------------- model hooks
@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_forward_from_encoder_features_matches_the_full_forward(pooling, tiny_tokenizer):
    model = seeded_model(pooling=pooling, adapter_size=4).eval()
    batch = tiny_tokenizer(
        ["the good film", "what a great awful movie is"], padding=True, return_tensors="pt"
    )
    full = model(**batch)
    features = model.get_encoder_features(**batch)
    assert features.shape == (2, model.config.encoder.hidden_size)
    from_features = model(encoder_features=features)
    torch.testing.assert_close(from_features.sentence_embedding, full.sentence_embedding, rtol=0, atol=0)
    for task in model.task_names:
        torch.testing.assert_close(from_features.logits[task], full.logits[task], rtol=0, atol=0)
    assert from_features.hidden_states is None


# ---------------------------------------------------------------------------------- the cache
def test_keys_ignore_trailing_padding_but_not_tokens_mask_or_token_types():
    ids = torch.tensor([[2, 7, 8, 3, 0, 0], [2, 7, 8, 3, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 0, 0]])
    short = FeatureCache.keys(ids[:, :4], mask[:, :4])
    padded = FeatureCache.keys(ids, mask)
    assert short == padded and padded[0] == padded[1]
    assert FeatureCache.keys(torch.tensor([[2, 7, 9, 3]]), mask[:1, :4]) != short[:1]
    types = torch.tensor([[0, 0, 1, 1, 0, 0]])
    assert FeatureCache.keys(ids[:1], mask[:1], types) != FeatureCache.keys(
        ids[:1], mask[:1], torch.zeros_like(types)
    )
    left_padded = FeatureCache.keys(torch.tensor([[0, 2, 7, 8, 3]]), torch.tensor([[0, 1, 1, 1, 1]]))
    assert left_padded != short[:1]  # other positions: another encoder output
    assert FeatureCache.keys(ids[:1]) != padded[:1]  # no mask: every position is attended


def test_cache_stores_once_and_grows():
    cache = FeatureCache()
    keys = [str(i).encode() for i in range(1500)]
    features = torch.arange(1500 * 3, dtype=torch.float32).view(1500, 3)
    rows = cache.add(keys[:10] + keys[:1], torch.cat([features[:10], features[:1] + 100]))
    assert rows[-1] == rows[0] and len(cache) == 10  # a key seen before keeps its first value
    cache.add(keys, features)  # past the first capacity of 1024
    assert len(cache) == 1500 and cache.nbytes == 1500 * 3 * 4
    torch.testing.assert_close(cache.gather(cache.lookup(keys[::-1])), features.flip(0), rtol=0, atol=0)
    assert cache.lookup([b"unknown"]) == [None]
    cache.clear()
    assert len(cache) == 0 and cache.lookup(keys[:1]) == [None]


def test_a_partly_cached_batch_encodes_only_its_new_rows(tiny_tokenizer):
    model = seeded_model().eval()
    sizes = []
    model.encoder.register_forward_pre_hook(
        lambda module, args, kwargs: sizes.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    frozen = FrozenEncoder(unwrap=lambda m: m, autocast=contextlib.nullcontext)
    frozen.active = True
    batch = dict(tiny_tokenizer(["the good film", "a bad movie", "what"], padding=True, return_tensors="pt"))
    first = frozen(model, {k: v[:2] for k, v in batch.items()})
    both = frozen(model, batch)
    assert sizes == [2, 1]
    reference = model(**batch)
    for task in model.task_names:
        torch.testing.assert_close(both.logits[task], reference.logits[task], rtol=0, atol=1e-6)
        torch.testing.assert_close(first.logits[task], reference.logits[task][:2], rtol=0, atol=1e-6)
