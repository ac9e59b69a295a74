"""Interrupted and diverged runs: only complete checkpoints are resumed from, and a run killed at any
moment (also while a checkpoint is being written or old ones rotated) ends, once resumed, with the
same weights as an uninterrupted run."""

from __future__ import annotations

import json
import logging
import os
import struct
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import make_task_datasets, tiny_config, tiny_training_args
from transformers.trainer_utils import get_last_checkpoint

from hydrabert import HydraBertModel
from hydrabert.checkpoints import (
    ResumePlan,
    checkpoint_problem,
    incomplete_checkpoints,
    is_complete_checkpoint,
    last_complete_checkpoint,
    plan_resume,
    resolve_resume_checkpoint,
    safetensors_problem,
)
from hydrabert.trainer import MultiTaskTrainer

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)

# Training used by every test here: 6 steps, a checkpoint every 2, at most 1 kept.
MAX_STEPS, SAVE_STEPS, KILL_STEP = 6, 2, 4


def _args(output_dir, **overrides):
    settings = dict(
        max_steps=MAX_STEPS,
        save_strategy="steps",
        save_steps=SAVE_STEPS,
        save_total_limit=1,
        logging_steps=100,
    )
    settings.update(overrides)
    return tiny_training_args(output_dir, **settings)


def _trainer(output_dir, tokenizer, **overrides):
    torch.manual_seed(0)
    model = HydraBertModel(tiny_config())
    train, _ = make_task_datasets(tokenizer)
    return MultiTaskTrainer(
        model=model, args=_args(output_dir, **overrides), train_dataset=train, processing_class=tokenizer
    )


def _weights(trainer) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in trainer.model.state_dict().items()}


def _assert_bitwise_equal(actual: dict, expected: dict):
    assert actual.keys() == expected.keys()
    different = [name for name in expected if not torch.equal(actual[name], expected[name])]
    assert not different, f"weights differ from the uninterrupted run: {different[:5]}"


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_tokenizer_dir)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tokenizer):
    """Final weights of the run that nothing interrupts."""
    trainer = _trainer(tmp_path_factory.mktemp("reference"), tokenizer)
    trainer.train()
    assert trainer.state.global_step == MAX_STEPS
    return _weights(trainer)


# ------------------------------------------------------------------------ what counts as complete
def _fake_checkpoint(folder, step, tiny_model_state=None):
    """A checkpoint folder as the Trainer writes it, without training."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    save_file(tiny_model_state or {"w": torch.arange(12.0).reshape(3, 4)}, str(folder / "model.safetensors"))
    torch.save({"state": {}, "param_groups": []}, folder / "optimizer.pt")
    torch.save({"last_epoch": step}, folder / "scheduler.pt")
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []}))
    return folder


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (None, None),
        (lambda f: (f / "trainer_state.json").unlink(), "no trainer_state.json"),
        (lambda f: _truncate(f / "trainer_state.json"), "trainer_state.json is truncated or unreadable"),
        (lambda f: (f / "trainer_state.json").write_text('{"global_step": 2}'), "is for step 2, not 6"),
        (lambda f: (f / "model.safetensors").unlink(), "no model weights"),
        (
            lambda f: _truncate(f / "model.safetensors", 0.9),
            r"model.safetensors is truncated \(\d+ of \d+ bytes\)",
        ),
        (lambda f: _truncate(f / "model.safetensors", 0.01), "model.safetensors is truncated"),
        (
            lambda f: (f / "model.safetensors").write_bytes(b"\x00" * 64),
            "model.safetensors has an unreadable header",
        ),
        (
            lambda f: (f / "model.safetensors").write_bytes(struct.pack("<Q", 1 << 40) + b"{}"),
            "truncated or corrupt",
        ),
        (lambda f: _truncate(f / "optimizer.pt"), "optimizer.pt is truncated"),
    ],
)
def test_checkpoint_problem_names_what_is_missing_or_cut_off(tmp_path, damage, problem):
    folder = _fake_checkpoint(tmp_path / "checkpoint-6", 6)
    if damage is not None:
        damage(folder)
    found = checkpoint_problem(folder)
    if problem is None:
        assert found is None and is_complete_checkpoint(folder)
    else:
        assert found is not None and not is_complete_checkpoint(folder)
        assert __import__("re").search(problem, found), found


def test_sharded_safetensors_are_checked_shard_by_shard(tmp_path):
    from safetensors.torch import save_file

    folder = _fake_checkpoint(tmp_path / "checkpoint-2", 2)
    (folder / "model.safetensors").unlink()
    for shard in ("a", "b"):
        save_file({shard: torch.ones(8)}, str(folder / f"model-{shard}.safetensors"))
    index = {"weight_map": {"a": "model-a.safetensors", "b": "model-b.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    assert is_complete_checkpoint(folder)
    _truncate(folder / "model-b.safetensors")
    assert "model-b.safetensors is truncated" in checkpoint_problem(folder)
    assert safetensors_problem(folder / "absent.safetensors") == "absent.safetensors is missing"


def test_last_complete_checkpoint_skips_and_logs_incomplete_ones(tmp_path, caplog):
    assert last_complete_checkpoint(tmp_path / "absent") is None
    assert last_complete_checkpoint(tmp_path) is None
    _fake_checkpoint(tmp_path / "checkpoint-2", 2)
    _fake_checkpoint(tmp_path / "checkpoint-10", 10)  # numeric order: 10 comes after 2
    writing = _fake_checkpoint(tmp_path / "checkpoint-12", 12)
    (writing / "trainer_state.json").unlink()
    (tmp_path / "checkpoint-final").mkdir()  # not a checkpoint-N name: ignored
    # transformers would resume from the one being written.
    assert get_last_checkpoint(str(tmp_path)) == str(writing)
    with caplog.at_level(logging.WARNING, logger="hydrabert.checkpoints"):
        assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-10")
    assert "Skipping incomplete checkpoint" in caplog.text and "checkpoint-12" in caplog.text
    assert list(incomplete_checkpoints(tmp_path)) == [str(writing)]


def test_resolve_resume_checkpoint(tmp_path):
    assert resolve_resume_checkpoint(None, str(tmp_path)) is None
    assert resolve_resume_checkpoint(False, str(tmp_path)) is None
    writing = _fake_checkpoint(tmp_path / "checkpoint-4", 4)
    (writing / "trainer_state.json").unlink()
    with pytest.raises(
        ValueError, match=r"holds no complete checkpoint \(incomplete: checkpoint-4: no trainer_state"
    ):
        resolve_resume_checkpoint(True, str(tmp_path))
    with pytest.raises(ValueError, match=r"Cannot resume from .*checkpoint-4: no trainer_state.json"):
        resolve_resume_checkpoint(str(writing), str(tmp_path))
    _fake_checkpoint(tmp_path / "checkpoint-2", 2)
    assert resolve_resume_checkpoint(True, str(tmp_path)) == str(tmp_path / "checkpoint-2")


# ------------------------------------------------------------------------------ saving is careful
def test_rewriting_a_checkpoint_is_never_complete_midway_and_incomplete_ones_are_removed(
    tmp_path, tokenizer, caplog, monkeypatch
):
    # Left by an earlier run: a complete checkpoint-2 (about to be rewritten in place) and a folder whose
    # write was interrupted at a step this run never saves (it would outrank the real ones by step).
    stale = _fake_checkpoint(tmp_path / "checkpoint-2", 2)
    interrupted = _fake_checkpoint(tmp_path / "checkpoint-99", 99)
    (interrupted / "trainer_state.json").unlink()

    seen_midway = []
    original = MultiTaskTrainer._save_optimizer_and_scheduler

    def spy(self, output_dir):
        seen_midway.append(is_complete_checkpoint(output_dir))
        original(self, output_dir)

    monkeypatch.setattr(MultiTaskTrainer, "_save_optimizer_and_scheduler", spy)
    trainer = _trainer(tmp_path, tokenizer, max_steps=2, save_total_limit=1)
    with caplog.at_level(logging.WARNING, logger="hydrabert.trainer"):
        trainer.train()
    assert seen_midway == [False], "a checkpoint being rewritten looked complete"
    assert "Removing incomplete checkpoint" in caplog.text and not interrupted.exists()
    assert last_complete_checkpoint(tmp_path) == str(stale)
    assert json.loads((stale / "trainer_state.json").read_text())["global_step"] == 2


def test_trainer_resume_true_uses_the_last_complete_checkpoint(tmp_path, tokenizer):
    writing = _fake_checkpoint(tmp_path / "checkpoint-6", 6)
    (writing / "trainer_state.json").unlink()
    with pytest.raises(ValueError, match="holds no complete checkpoint"):
        _trainer(tmp_path, tokenizer).train(resume_from_checkpoint=True)
    with pytest.raises(ValueError, match="Cannot resume from .*checkpoint-6"):
        _trainer(tmp_path, tokenizer).train(resume_from_checkpoint=str(writing))


# ------------------------------------------------------------------------------ killed, resumed
KILL_MOMENTS = ("optimizer", "trainer_state", "rotation")

# One fresh process imports everything once, then forks one child per moment (before any torch work,
# so no thread pool is inherited); each child trains as `_trainer` does and SIGKILLs itself at that
# moment of the save of checkpoint-4, when checkpoint-2 is complete and save_total_limit=1 is about to
# delete it. Prints each child's wait status.
KILLED_RUNS = textwrap.dedent(
    """
    import dataclasses, json, os, signal, sys
    sys.path.insert(0, {tests!r})
    import transformers.trainer
    from transformers import AutoTokenizer, TrainerState
    from hydrabert.trainer import MultiTaskTrainer
    from test_checkpoints import KILL_MOMENTS, KILL_STEP, _trainer

    def die():
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no atexit: like a lost machine

    def patch(moment):
        if moment == "optimizer":  # halfway through writing optimizer.pt
            original = MultiTaskTrainer._save_optimizer_and_scheduler
            def save(self, folder):
                original(self, folder)
                if self.state.global_step == KILL_STEP:
                    path = os.path.join(folder, "optimizer.pt")
                    data = open(path, "rb").read()
                    open(path, "wb").write(data[: len(data) // 2])
                    die()
            MultiTaskTrainer._save_optimizer_and_scheduler = save
        elif moment == "trainer_state":  # halfway through writing trainer_state.json, the last file
            original = TrainerState.save_to_json
            def save(self, path):
                if self.global_step == KILL_STEP:
                    text = json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)
                    open(path, "w").write(text[: len(text) // 2])
                    die()
                original(self, path)
            TrainerState.save_to_json = save
        elif moment == "rotation":  # while deleting the previous checkpoint
            original = transformers.trainer.rotate_checkpoints
            def rotate(output_dir, **kwargs):
                if os.path.isdir(os.path.join(output_dir, "checkpoint-%d" % KILL_STEP)):
                    os.remove(os.path.join(output_dir, "checkpoint-%d" % (KILL_STEP - 2), "model.safetensors"))
                    die()
                original(output_dir, **kwargs)
            transformers.trainer.rotate_checkpoints = rotate

    statuses = {{}}
    for moment in KILL_MOMENTS:
        pid = os.fork()
        if pid == 0:
            try:
                patch(moment)
                tokenizer = AutoTokenizer.from_pretrained({tokenizer_dir!r})
                _trainer(os.path.join(sys.argv[1], moment), tokenizer).train()
            finally:
                os._exit(3)  # not killed: the moment never came
        _, status = os.waitpid(pid, 0)
        statuses[moment] = os.WTERMSIG(status) if os.WIFSIGNALED(status) else -os.WEXITSTATUS(status)
    print("STATUSES", json.dumps(statuses))
    """
)


@pytest.fixture(scope="module")
def killed_runs(tmp_path_factory, tiny_tokenizer_dir):
    folder = tmp_path_factory.mktemp("killed")
    script = folder / "killed_runs.py"
    script.write_text(KILLED_RUNS.format(tests=TESTS, tokenizer_dir=tiny_tokenizer_dir))
    result = subprocess.run(
        [sys.executable, str(script), str(folder)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": REPO},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    statuses = json.loads(result.stdout.split("STATUSES", 1)[1])
    assert statuses == dict.fromkeys(KILL_MOMENTS, 9), (statuses, result.stderr[-3000:])  # all SIGKILLed
    return folder


@pytest.mark.parametrize("moment", KILL_MOMENTS)
def test_killed_during_a_checkpoint_write_resumes_to_the_same_weights(
    moment, killed_runs, tokenizer, uninterrupted
):
    output_dir = killed_runs / moment
    previous, current = output_dir / f"checkpoint-{KILL_STEP - 2}", output_dir / f"checkpoint-{KILL_STEP}"
    if moment == "rotation":
        # The new checkpoint was complete before rotation began; the half-deleted old one is skipped.
        assert is_complete_checkpoint(current) and not is_complete_checkpoint(previous)
        expected = current
    else:
        assert is_complete_checkpoint(previous) and not is_complete_checkpoint(current)
        assert get_last_checkpoint(str(output_dir)) == str(current), "transformers would pick the broken one"
        expected = previous
    assert last_complete_checkpoint(output_dir) == str(expected)

    trainer = _trainer(output_dir, tokenizer)
    trainer.train(resume_from_checkpoint=True)
    assert trainer.state.global_step == MAX_STEPS
    _assert_bitwise_equal(_weights(trainer), uninterrupted)
    assert incomplete_checkpoints(output_dir) == {}


# ------------------------------------------------------------------------------------ divergence
def test_divergence_keeps_the_last_good_checkpoint_resumable(tmp_path, tokenizer, uninterrupted, monkeypatch):
    import hydrabert.modeling_hydrabert as modeling

    real_task_loss = modeling._task_loss
    calls = {"n": 0}

    def diverge_on_step_five(name, spec, logits, labels, **kwargs):
        calls["n"] += 1
        loss = real_task_loss(name, spec, logits, labels, **kwargs)
        return loss * float("nan") if calls["n"] == KILL_STEP + 1 else loss

    monkeypatch.setattr(modeling, "_task_loss", diverge_on_step_five)
    trainer = _trainer(tmp_path, tokenizer)
    with pytest.raises(
        FloatingPointError, match=rf"at step {KILL_STEP}, task\(s\) \['(sentiment|topic)'\]"
    ) as err:
        trainer.train()
    assert "are intact (resume_from_checkpoint)" in str(err.value)
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / f"checkpoint-{KILL_STEP}")
    assert sorted(os.listdir(tmp_path)) == [f"checkpoint-{KILL_STEP}"]

    monkeypatch.setattr(modeling, "_task_loss", real_task_loss)
    resumed = _trainer(tmp_path, tokenizer)
    resumed.train(resume_from_checkpoint=True)
    _assert_bitwise_equal(_weights(resumed), uninterrupted)


# ------------------------------------------------------------------------------ resume decisions
def _checkpoint_at_step(folder, step, max_steps, epochs=1):
    """A complete checkpoint folder as far as `checkpoint_problem` looks: whole weights, a matching state."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    save_file({"w": torch.zeros(2)}, str(folder / "model.safetensors"))
    state = {"global_step": step, "max_steps": max_steps, "num_train_epochs": epochs}
    (folder / "trainer_state.json").write_text(json.dumps(state))
    return str(folder)


def test_plan_resume_resumes_an_unfinished_run_and_names_the_checkpoint(tmp_path):
    checkpoint = _checkpoint_at_step(tmp_path / "checkpoint-4", 4, 12)
    plan = plan_resume(str(tmp_path), max_steps=-1, num_train_epochs=1)
    assert (plan.checkpoint, plan.finished) == (checkpoint, False)
    assert plan.message.startswith(f"Resuming from {checkpoint} (step 4 of 12)")
    longer = plan_resume(str(tmp_path), max_steps=20)
    assert "training on to max_steps=20" in longer.message
    with pytest.raises(ValueError, match=r"checkpoint-4 is at step 4, past max_steps=3: nothing would train"):
        plan_resume(str(tmp_path), max_steps=3)


def test_plan_resume_leaves_a_finished_run_alone_and_refuses_another_length(tmp_path):
    _checkpoint_at_step(tmp_path / "checkpoint-12", 12, 12, epochs=2)
    plan = plan_resume(str(tmp_path), max_steps=-1, num_train_epochs=2)
    assert plan.finished and plan.checkpoint is None
    assert "Nothing left to do" in plan.message and "final model was never saved" in plan.message
    with pytest.raises(ValueError, match=r"step 12 of 12, 2 epoch\(s\)\), and num_train_epochs=3 asks for a"):
        plan_resume(str(tmp_path), max_steps=-1, num_train_epochs=3)
    with pytest.raises(ValueError, match=r"max_steps=5 asks for a different run"):
        plan_resume(str(tmp_path), max_steps=5)
    # Explicitly: a finished checkpoint trains on only to a larger max_steps.
    with pytest.raises(ValueError, match=r"finished its run \(step 12 of 12\): resuming it trains nothing"):
        plan_resume(str(tmp_path), resume_from_checkpoint=True)
    assert plan_resume(str(tmp_path), resume_from_checkpoint=True, max_steps=20).checkpoint.endswith(
        "checkpoint-12"
    )


def test_plan_resume_overwrite_lists_the_replaced_run_for_removal(tmp_path):
    old = _checkpoint_at_step(tmp_path / "checkpoint-12", 12, 12)
    (tmp_path / "trainer_state.json").write_text(json.dumps({"global_step": 12, "max_steps": 12}))
    plan = plan_resume(str(tmp_path), overwrite_output_dir=True)
    assert plan.checkpoint is None and not plan.finished
    assert plan.stale_paths == (old, str(tmp_path / "trainer_state.json"))
    with pytest.raises(ValueError, match="cannot also resume_from_checkpoint"):
        plan_resume(str(tmp_path), overwrite_output_dir=True, resume_from_checkpoint=True)
    assert plan_resume(str(tmp_path / "empty")) == ResumePlan()
