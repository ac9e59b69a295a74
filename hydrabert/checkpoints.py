"""Which checkpoints a run can resume from.

transformers writes a `checkpoint-N` folder in place: weights, then optimizer, scheduler and RNG
states, then `trainer_state.json` last, and only then rotates old checkpoints (`save_total_limit`).
A run killed while writing leaves a folder that looks like a checkpoint, and
`transformers.trainer_utils.get_last_checkpoint` takes the highest-numbered folder whatever it holds.
Here a checkpoint is complete when its `trainer_state.json` (the last file written) parses and names
the folder's step, and the weights and pickled states it holds are whole (sizes checked against the
safetensors header and the zip directory, without loading or unpickling anything).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import struct
import zipfile
from dataclasses import dataclass

logger = logging.getLogger(__name__)

TRAINER_STATE_NAME = "trainer_state.json"
_CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")
_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    "adapter_model.safetensors",
    "adapter_model.bin",
)
# Checkpoints of FSDP and DeepSpeed runs keep their weights in sub-folders.
_WEIGHT_FOLDER_PREFIXES = ("pytorch_model_fsdp", "global_step")
_PICKLE_SUFFIXES = (".pt", ".pth", ".bin")
# A safetensors header larger than this is a corrupt length field, not a header.
_MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024


def checkpoint_step(path: str | os.PathLike) -> int | None:
    """N of a `checkpoint-N` folder, None for any other name."""
    match = _CHECKPOINT_NAME.match(os.path.basename(os.path.normpath(path)))
    return int(match.group(1)) if match else None


def safetensors_problem(path: str | os.PathLike) -> str | None:
    """Why a `.safetensors` file is unusable (missing, truncated, bad header), or None."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                return f"{os.path.basename(path)} is truncated ({size} bytes)"
            (header_size,) = struct.unpack("<Q", prefix)
            if header_size > min(size - 8, _MAX_SAFETENSORS_HEADER):
                return f"{os.path.basename(path)} is truncated or corrupt (header length {header_size}, file {size} bytes)"
            header = json.loads(handle.read(header_size))
    except FileNotFoundError:
        return f"{os.path.basename(path)} is missing"
    except (OSError, ValueError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return f"{os.path.basename(path)} has an unreadable header ({err})"
    if not isinstance(header, dict):
        return f"{os.path.basename(path)} has an unreadable header"
    ends = [
        entry["data_offsets"][1]
        for name, entry in header.items()
        if name != "__metadata__" and isinstance(entry, dict) and len(entry.get("data_offsets", ())) == 2
    ]
    expected = 8 + header_size + max(ends, default=0)
    if expected != size:
        return f"{os.path.basename(path)} is truncated ({size} of {expected} bytes)"
    return None


def _sharded_safetensors_problem(folder: str, index_name: str) -> str | None:
    try:
        with open(os.path.join(folder, index_name), encoding="utf-8") as handle:
            weight_map = json.load(handle)["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"{index_name} is unreadable ({err})"
    for shard in sorted(set(weight_map.values())):
        problem = safetensors_problem(os.path.join(folder, shard))
        if problem:
            return problem
    return None


def checkpoint_problem(path: str | os.PathLike) -> str | None:
    """Why `path` cannot be resumed from, or None when it is a complete checkpoint."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        return "no such folder"
    state_file = os.path.join(path, TRAINER_STATE_NAME)
    if not os.path.isfile(state_file):
        return f"no {TRAINER_STATE_NAME} (written last: the run stopped while saving this checkpoint)"
    try:
        with open(state_file, encoding="utf-8") as handle:
            state = json.load(handle)
    except (OSError, ValueError) as err:
        return f"{TRAINER_STATE_NAME} is truncated or unreadable ({err})"
    step = checkpoint_step(path)
    if not isinstance(state, dict) or (step is not None and state.get("global_step") != step):
        found = state.get("global_step") if isinstance(state, dict) else None
        return f"{TRAINER_STATE_NAME} is for step {found!r}, not {step}"

    names = set(os.listdir(path))
    weights = [name for name in _WEIGHT_FILES if name in names]
    folders = [
        n for n in names if n.startswith(_WEIGHT_FOLDER_PREFIXES) and os.path.isdir(os.path.join(path, n))
    ]
    if not weights and not folders:
        return f"no model weights ({', '.join(_WEIGHT_FILES[:3])})"
    for name in weights:
        if name.endswith(".safetensors"):
            problem = safetensors_problem(os.path.join(path, name))
        elif name == "model.safetensors.index.json":
            problem = _sharded_safetensors_problem(path, name)
        else:
            problem = None
        if problem:
            return problem
    for name in sorted(names):
        if name.endswith(_PICKLE_SUFFIXES) and not _whole_zip(os.path.join(path, name)):
            return f"{name} is truncated"
    return None


def _whole_zip(path: str) -> bool:
    """torch.save writes a zip archive whose directory sits at the very end: a cut-off file has none.
    (Files in torch's legacy, non-zip format are not checked.)"""
    try:
        with open(path, "rb") as handle:
            if handle.read(2) != b"PK":
                return True
        return zipfile.is_zipfile(path)
    except OSError:
        return False


def is_complete_checkpoint(path: str | os.PathLike) -> bool:
    """True when `path` holds a checkpoint that was completely written."""
    return checkpoint_problem(path) is None


def checkpoint_folders(output_dir: str | os.PathLike) -> list[str]:
    """The `checkpoint-N` folders of `output_dir`, lowest step first."""
    if not os.path.isdir(output_dir):
        return []
    folders = [
        os.path.join(output_dir, name)
        for name in os.listdir(output_dir)
        if _CHECKPOINT_NAME.match(name) and os.path.isdir(os.path.join(output_dir, name))
    ]
    return sorted(folders, key=checkpoint_step)


def incomplete_checkpoints(output_dir: str | os.PathLike) -> dict[str, str]:
    """`{folder: problem}` for each `checkpoint-N` folder of `output_dir` that cannot be resumed from."""
    problems = {path: checkpoint_problem(path) for path in checkpoint_folders(output_dir)}
    return {path: problem for path, problem in problems.items() if problem is not None}


def last_complete_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The highest-numbered complete `checkpoint-N` folder of `output_dir` (None if there is none);
    incomplete ones above it are skipped with a warning."""
    for path in reversed(checkpoint_folders(output_dir)):
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        logger.warning("Skipping incomplete checkpoint %s: %s", path, problem)
    return None


def clear_for_checkpoint(run_dir: str | os.PathLike, step: int) -> None:
    """Before `Trainer._save_checkpoint` writes `checkpoint-<step>` in `run_dir`: a trainer_state.json left in that
    folder by an earlier run would make a half-written rewrite look complete, so it goes first; and incomplete
    checkpoint folders (interrupted writes) go too, as nothing can resume from them and save_total_limit rotation
    would count (and, ordering by step, protect) them instead of the complete ones."""
    target = os.path.join(run_dir, f"checkpoint-{step}")
    stale_state = os.path.join(target, TRAINER_STATE_NAME)
    if os.path.isfile(stale_state):
        os.remove(stale_state)
    for path, problem in incomplete_checkpoints(run_dir).items():
        if os.path.normpath(path) != os.path.normpath(target):
            logger.warning("Removing incomplete checkpoint %s (%s)", path, problem)
            shutil.rmtree(path, ignore_errors=True)


def resolve_resume_checkpoint(resume_from_checkpoint: str | bool | None, output_dir: str) -> str | None:
    """What `Trainer.train(resume_from_checkpoint=...)` should get: `True` becomes the last complete
    checkpoint of `output_dir`; a path must be a complete checkpoint. Raises ValueError otherwise."""
    if resume_from_checkpoint is None or resume_from_checkpoint is False:
        return None
    if resume_from_checkpoint is True:
        checkpoint = last_complete_checkpoint(output_dir)
        if checkpoint is None:
            skipped = incomplete_checkpoints(output_dir)
            detail = "; ".join(f"{os.path.basename(p)}: {why}" for p, why in skipped.items())
            raise ValueError(
                f"resume_from_checkpoint=True, but {output_dir} holds no complete checkpoint"
                + (f" (incomplete: {detail})" if detail else "")
            )
        return checkpoint
    problem = checkpoint_problem(resume_from_checkpoint)
    if problem is not None:
        raise ValueError(f"Cannot resume from {resume_from_checkpoint}: {problem}")
    return os.fspath(resume_from_checkpoint)


def _trainer_state(folder: str) -> dict | None:
    try:
        with open(os.path.join(folder, TRAINER_STATE_NAME), encoding="utf-8") as handle:
            state = json.load(handle)
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def _is_finished(state: dict | None) -> bool:
    """The run that wrote this state reached its last step (an evaluation-only run plans none), or stopped
    there on purpose (early stopping)."""
    if not state:
        return False
    max_steps, step = state.get("max_steps") or 0, state.get("global_step") or 0
    return max_steps > 0 and (step >= max_steps or _stopped_early(state))


def _stopped_early(state: dict) -> bool:
    """Early stopping ended the run at this state's step: hydrabert's early-stopping callback logs its decision
    in `log_history` at the step it stops (before that step's checkpoint and the final state are written)."""
    return any(
        isinstance(row, dict) and "early_stopping" in row and row.get("step") == state.get("global_step")
        for row in state.get("log_history") or []
    )


@dataclass(frozen=True)
class ResumePlan:
    """What a training run does with its output directory: resume `checkpoint` (None: start fresh), or,
    when `finished`, nothing at all (the finished run's model, results and card stay as they are).
    `message` says which and why, for the log; `stale_paths` are what a fresh start must remove first."""

    checkpoint: str | None = None
    finished: bool = False
    message: str = ""
    stale_paths: tuple[str, ...] = ()


def plan_resume(
    output_dir: str,
    *,
    resume_from_checkpoint: str | bool | None = None,
    overwrite_output_dir: bool = False,
    max_steps: int = -1,
    num_train_epochs: float = 3.0,
) -> ResumePlan:
    """Decide between resuming, starting fresh and having nothing to do, before any work starts.

    - `overwrite_output_dir`: a fresh start; the replaced run's `checkpoint-N` folders and final
      `trainer_state.json` are listed in `stale_paths`.
    - `resume_from_checkpoint` (True or a path): that complete checkpoint, unless it holds a finished run
      that `max_steps` does not extend.
    - otherwise, a finished run (the final `trainer_state.json` or the last checkpoint reached its planned
      steps) is left alone when asked for the same length, and refused with an explanation when asked for
      another; an unfinished one resumes from its last complete checkpoint.
    Raises ValueError for a contradiction (the message names the way out).
    """
    if overwrite_output_dir:
        if resume_from_checkpoint:
            raise ValueError("overwrite_output_dir starts a fresh run: it cannot also resume_from_checkpoint")
        # Left in place, the replaced run's checkpoints and final state would be taken for this run's by a
        # later resume (the highest checkpoint wins; a finished state means nothing left to do).
        stale = checkpoint_folders(output_dir)
        if os.path.isfile(os.path.join(output_dir, TRAINER_STATE_NAME)):
            stale.append(os.path.join(output_dir, TRAINER_STATE_NAME))
        message = f"Starting a fresh run in {output_dir} (overwrite_output_dir)"
        if stale:
            message += f"; removing the replaced run's {', '.join(os.path.basename(p) for p in stale)}"
        return ResumePlan(message=message, stale_paths=tuple(stale))

    if resume_from_checkpoint:
        checkpoint = resolve_resume_checkpoint(resume_from_checkpoint, output_dir)
        state = _trainer_state(checkpoint)
        if _is_finished(state) and not max_steps > state["global_step"]:
            raise ValueError(
                f"{checkpoint} finished its run (step {state['global_step']} of {state['max_steps']}): resuming "
                f"it trains nothing; pass max_steps above {state['global_step']} to train on from it"
            )
        return ResumePlan(checkpoint, message=_resuming(checkpoint, state, max_steps))

    last = last_complete_checkpoint(output_dir)
    states = [(output_dir, _trainer_state(output_dir))] + ([(last, _trainer_state(last))] if last else [])
    finished = [(folder, state) for folder, state in states if _is_finished(state)]
    if finished:
        folder, state = max(finished, key=lambda item: item[1]["global_step"])
        return _finished_run(output_dir, folder, state, max_steps, num_train_epochs)
    if last is None:
        return ResumePlan()
    state = _trainer_state(last)
    if max_steps > 0 and state["global_step"] >= max_steps:
        raise ValueError(
            f"{last} is at step {state['global_step']}, past max_steps={max_steps}: nothing would train. Pass "
            "overwrite_output_dir to start over, or another output_dir"
        )
    return ResumePlan(
        last, message=_resuming(last, state, max_steps) + "; pass overwrite_output_dir to start over"
    )


def _resuming(checkpoint: str, state: dict, max_steps: int) -> str:
    message = f"Resuming from {checkpoint} (step {state['global_step']} of {state['max_steps']})"
    if max_steps > 0 and max_steps != state["max_steps"]:
        message += (
            f"; training on to max_steps={max_steps} (the learning-rate schedule follows the new length)"
        )
    return message


def _finished_run(output_dir: str, folder: str, state: dict, max_steps: int, epochs: float) -> ResumePlan:
    source = "its trainer_state.json" if folder == output_dir else os.path.basename(folder)
    stopped = " (early stopping)" if state["global_step"] < state["max_steps"] else ""
    done = (
        f"{output_dir} holds a finished run ({source}: step {state['global_step']} of {state['max_steps']}"
        f"{stopped}, {state.get('num_train_epochs')} epoch(s))"
    )
    if max_steps > 0 and max_steps != state["max_steps"]:
        changed = f"max_steps={max_steps}"
    elif max_steps <= 0 and state.get("num_train_epochs") not in (None, math.ceil(epochs)):
        changed = f"num_train_epochs={epochs}"
    else:
        changed = None
    if changed:
        raise ValueError(
            f"{done}, and {changed} asks for a different run. Pass overwrite_output_dir to replace it (model, "
            "results and card), another output_dir to keep it, or resume_from_checkpoint=<a checkpoint> with "
            "a larger max_steps to train on from it"
        )
    if any(os.path.isfile(os.path.join(output_dir, name)) for name in _WEIGHT_FILES):
        kept = "its model, results and card are left as they are"
    else:
        kept = f"its final model was never saved (the weights are in {folder})"
    return ResumePlan(
        finished=True,
        message=f"Nothing left to do: {done}; {kept}. To train again, pass overwrite_output_dir (replaces "
        "them) or another output_dir",
    )


__all__ = [
    "ResumePlan",
    "checkpoint_folders",
    "checkpoint_problem",
    "checkpoint_step",
    "clear_for_checkpoint",
    "incomplete_checkpoints",
    "is_complete_checkpoint",
    "last_complete_checkpoint",
    "plan_resume",
    "resolve_resume_checkpoint",
    "safetensors_problem",
]
