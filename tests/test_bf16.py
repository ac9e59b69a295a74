"""bf16 on the CPU: `bf16="auto"` follows the CPU's flags, `bf16=True` trains on a machine without an accelerator
(TrainingArguments alone refuses without use_cpu), the encoder really runs in bf16, every freeze policy keeps its
frozen parameters bit-identical, the feature cache still serves, and a resumed run ends where an uninterrupted
one does."""

import json

import pytest
import torch
from conftest import seeded_model, tiny_training_args
from test_trainer import FREEZE_CASES

import run_mtl
from hydrabert import hardware
from hydrabert.hardware import CpuBf16Support, resolve_bf16
from hydrabert.trainer import MultiTaskTrainer

needs_cpu_only = pytest.mark.skipif(
    torch.accelerator.is_available(), reason="checks what happens on a machine without an accelerator"
)


@pytest.mark.parametrize(
    ("support", "expected"),
    [
        (CpuBf16Support(amx_bf16=True, avx512_bf16=True), True),
        (CpuBf16Support(amx_bf16=False, avx512_bf16=True), True),
        (CpuBf16Support(amx_bf16=False, avx512_bf16=False), False),
    ],
)
def test_auto_follows_the_cpu_flags(support, expected, monkeypatch, caplog):
    monkeypatch.setattr(hardware, "cpu_bf16_support", lambda: support)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level("INFO", logger="hydrabert.hardware"):
        assert resolve_bf16("auto") is expected
    assert support.describe() in caplog.text  # the log says what was found and what was chosen
    assert ("bf16 is on" if expected else "bf16 is off") in caplog.text


def test_explicit_values_pass_and_nonsense_is_refused():
    assert resolve_bf16(True) is True and resolve_bf16(False) is False
    assert resolve_bf16("true") is True and resolve_bf16("False") is False
    with pytest.raises(ValueError, match=r"bf16 must be true, false or \"auto\", got 'fast'"):
        resolve_bf16("fast")


def test_the_flags_come_from_the_kernels_cpu_report():
    flags = hardware.cpu_flags()
    support = hardware.cpu_bf16_support()
    assert support.amx_bf16 == ("amx_bf16" in flags) and support.avx512_bf16 == ("avx512_bf16" in flags)


@needs_cpu_only
def test_bf16_alone_trains_on_the_cpu(tmp_path):
    args = tiny_training_args(tmp_path, bf16=True, use_cpu=False)
    assert args.bf16 is True and args.use_cpu is True
    auto = tiny_training_args(tmp_path, bf16="auto", use_cpu=False)
    assert auto.bf16 is hardware.cpu_bf16_support().fast


def _encoder_dtypes(model) -> list[torch.dtype]:
    """The dtype of the encoder's first Linear at every forward (its LayerNorm outputs are fp32 under autocast
    by design, so the encoder's last hidden state would say fp32 either way)."""
    seen = []
    first_linear = next(m for m in model.encoder.modules() if isinstance(m, torch.nn.Linear))
    first_linear.register_forward_hook(lambda module, args, output: seen.append(output.dtype))
    return seen


@needs_cpu_only
@pytest.mark.parametrize("case", list(FREEZE_CASES))
def test_every_freeze_policy_trains_in_bf16_and_keeps_frozen_weights_bit_identical(
    case, tmp_path, task_data, tiny_tokenizer
):
    settings, is_frozen = FREEZE_CASES[case]
    model = seeded_model(adapter_size=4)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    dtypes = _encoder_dtypes(model)
    # layer-wise decay on as well: its parameter groups are built from the same fp32 master weights
    args = tiny_training_args(
        tmp_path, max_steps=6, bf16=True, use_cpu=False, layerwise_lr_decay=0.8, **settings
    )
    MultiTaskTrainer(
        model=model, args=args, train_dataset=task_data[0], processing_class=tiny_tokenizer
    ).train()
    assert dtypes and set(dtypes) == {torch.bfloat16}, dtypes
    for name, param in model.named_parameters():
        assert param.dtype == torch.float32, name  # autocast: the weights stay fp32
        if is_frozen(name):
            assert torch.equal(param, before[name]), f"{case}: frozen {name} changed"
        else:
            assert not torch.equal(param, before[name]), f"{case}: trainable {name} did not change"


@needs_cpu_only
def test_the_feature_cache_serves_a_bf16_run(tmp_path, task_data, tiny_tokenizer):
    model = seeded_model()
    head_before = model.heads["topic"].weight.detach().clone()
    args = tiny_training_args(tmp_path, num_train_epochs=2, bf16=True, use_cpu=False, freeze_policy="encoder")
    trainer = MultiTaskTrainer(
        model=model, args=args, train_dataset=task_data[0], processing_class=tiny_tokenizer
    )
    trainer.train()
    assert trainer.frozen_encoder is not None and trainer.frozen_encoder.hits > 0
    assert not torch.equal(model.heads["topic"].weight, head_before)


@needs_cpu_only
def test_a_resumed_bf16_run_ends_with_the_weights_of_an_uninterrupted_one(
    tmp_path, task_data, tiny_tokenizer
):
    def run(output_dir, resume=None, max_steps=8):
        model = seeded_model()
        args = tiny_training_args(
            output_dir, max_steps=max_steps, bf16=True, use_cpu=False, save_strategy="steps", save_steps=4
        )
        trainer = MultiTaskTrainer(
            model=model, args=args, train_dataset=task_data[0], processing_class=tiny_tokenizer
        )
        trainer.train(resume_from_checkpoint=resume)
        return model

    uninterrupted = run(tmp_path / "whole")
    run(tmp_path / "halves", max_steps=8)  # writes checkpoint-4 on its way
    resumed = run(tmp_path / "halves", resume=str(tmp_path / "halves" / "checkpoint-4"))
    for (name, a), (_, b) in zip(uninterrupted.named_parameters(), resumed.named_parameters(), strict=True):
        assert torch.equal(a, b), name


@needs_cpu_only
def test_run_configs_and_the_command_line_take_auto(tmp_path):
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"output_dir": str(tmp_path / "out"), "bf16": "auto", "report_to": "none"}))
    fast = hardware.cpu_bf16_support().fast
    *_, from_config = run_mtl.parse_args([str(config)])
    assert from_config.bf16 is fast and from_config.use_cpu is fast
    *_, from_flag = run_mtl.parse_args([str(config), "--bf16", "false"])
    assert from_flag.bf16 is False
    *_, bare_flag = run_mtl.parse_args([str(config), "--bf16"])
    assert bare_flag.bf16 is True
    *_, auto_flag = run_mtl.parse_args(["--output_dir", str(tmp_path / "o2"), "--bf16", "auto"])
    assert auto_flag.bf16 is fast


SENTENCES = ["good film", "what is the answer", "the movie was a great film", "bad", "a b c d e f g"]


def test_encode_and_predict_in_bf16_stay_close_to_fp32_and_come_back_as_float32(tiny_model, tiny_tokenizer):
    linear_dtypes = _encoder_dtypes(tiny_model)
    fp32 = tiny_model.encode(SENTENCES, tiny_tokenizer)
    assert set(linear_dtypes) == {torch.float32}
    linear_dtypes.clear()
    bf16 = tiny_model.encode(SENTENCES, tiny_tokenizer, dtype=torch.bfloat16)
    assert set(linear_dtypes) == {torch.bfloat16}  # it did compute in bf16
    assert bf16.dtype == torch.float32 and bf16.shape == fp32.shape
    cosine = torch.nn.functional.cosine_similarity(bf16, fp32, dim=-1)
    assert cosine.min() > 0.99, cosine
    assert not torch.is_autocast_enabled("cpu")  # nothing leaks out of the call

    fp32_labels = tiny_model.predict(SENTENCES, tiny_tokenizer)
    bf16_labels = tiny_model.predict(SENTENCES, tiny_tokenizer, dtype=torch.bfloat16)
    for a, b in zip(fp32_labels, bf16_labels, strict=True):
        for task in a:
            assert isinstance(b[task]["score"], float)
            assert b[task]["score"] == pytest.approx(a[task]["score"], abs=0.05)
    assert (
        tiny_model.encode(SENTENCES, tiny_tokenizer, dtype=torch.bfloat16, convert_to_numpy=True).dtype
        == "float32"
    )
    with pytest.raises(ValueError, match="dtype must be a floating-point torch.dtype"):
        tiny_model.encode(SENTENCES, tiny_tokenizer, dtype="bf16")


def test_the_pipeline_runs_a_bf16_model(tiny_model, tiny_tokenizer):
    from transformers import pipeline

    from hydrabert.pipeline_registration import PIPELINE_TASK, register_pipeline

    register_pipeline()
    expected = tiny_model.predict(SENTENCES, tiny_tokenizer)
    classifier = pipeline(
        PIPELINE_TASK, model=tiny_model.to(torch.bfloat16), tokenizer=tiny_tokenizer, device="cpu"
    )
    got = classifier(SENTENCES)
    for a, b in zip(expected, got, strict=True):
        for task in a:
            assert isinstance(b[task]["score"], float)
            assert b[task]["score"] == pytest.approx(a[task]["score"], abs=0.05)
