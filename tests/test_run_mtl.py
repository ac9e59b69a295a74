"""run_mtl.py end to end on a tiny local encoder and tiny data files: training, evaluation,
outputs, bad input, resume after SIGKILL, DDP on 2 CPU processes, and push_to_hub."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
from conftest import TINY_WORDS, TWO_PROCESS_LAUNCH, assert_quiet_about_remote_code
from safetensors.torch import load_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What a saved hydrabert model folder holds: weights, the code that travels with them, tokenizer, card.
MODEL_FILES = (
    "config.json",
    "model.safetensors",
    "configuration_hydrabert.py",
    "modeling_hydrabert.py",
    "pipeline_hydrabert.py",
    "tokenizer.json",
    "README.md",
)
sys.path.insert(0, REPO)

import run_mtl  # noqa: E402
from hydrabert.data import HydraBertDataError  # noqa: E402
from hydrabert.modeling_hydrabert import CONFIG_SETTINGS  # noqa: E402


def _write_lines(path, n, labels, seed):
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        length = int(torch.randint(2, 10, (1,), generator=generator))
        words = [
            TINY_WORDS[int(i)] for i in torch.randint(0, len(TINY_WORDS), (length,), generator=generator)
        ]
        rows.append(
            f"{labels[int(torch.randint(0, len(labels), (1,), generator=generator))]} {' '.join(words)}"
        )
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    for task, labels, sizes in (
        ("sent", ["neg", "pos"], (64, 16, 16)),
        ("quest", ["DESC", "HUM", "LOC"], (48, 16, 16)),
    ):
        (root / task).mkdir()
        for split, n in zip(("train", "dev", "test"), sizes, strict=True):
            _write_lines(root / task / f"{split}.txt", n, labels, seed=n + len(task))
    return str(root)


TASKS = [
    {
        "name": "sentiment",
        "data_dir": "sent",
        "train_file": "train.txt",
        "validation_file": "dev.txt",
        "test_file": "test.txt",
        "file_format": "labeled_lines",
    },
    {
        "name": "question",
        "data_dir": "quest",
        "train_file": "train.txt",
        "validation_file": "dev.txt",
        "test_file": "test.txt",
        "file_format": "labeled_lines",
        "labels": ["DESC", "HUM", "LOC"],
    },
]


def _config(path, encoder, data_root, output_dir, **overrides):
    config = {
        "model_name_or_path": encoder,
        "tasks": TASKS,
        "data_root": data_root,
        "output_dir": str(output_dir),
        "do_train": True,
        "do_eval": True,
        "do_predict": True,
        "num_train_epochs": 2,
        "per_device_train_batch_size": 8,
        "per_device_eval_batch_size": 16,
        "learning_rate": 5e-3,
        "layerwise_lr_decay": 0.8,
        "eval_strategy": "epoch",
        "save_strategy": "epoch",
        "logging_steps": 4,
        "report_to": "none",
        "seed": 7,
        "use_cpu": True,
        "disable_tqdm": True,
    }
    config.update(overrides)
    path.write_text(json.dumps(config))
    return str(path)


# One epoch, no checkpoints, pushed at the end to the offline Hub server's test-user/tiny-mtl.
PUSH_SETTINGS = dict(
    num_train_epochs=1,
    save_strategy="no",
    push_to_hub=True,
    hub_model_id="test-user/tiny-mtl",
    hub_strategy="end",
)


def _weights_digest(folder) -> str:
    state = load_file(os.path.join(folder, "model.safetensors"))
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].numpy().tobytes())
    return digest.hexdigest()


def _run_script(args, cwd, timeout=300, env=None):
    result = subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": REPO, **(env or {})},
    )
    return result


# ------------------------------------------------------------------------------------- main job
def test_run_mtl_trains_evaluates_and_writes_a_loadable_model(tmp_path, tiny_encoder_dir, data_root):
    out = tmp_path / "out"
    config = _config(tmp_path / "c.json", tiny_encoder_dir, data_root, out, max_seq_length=32)
    results = run_mtl.main([config])
    for split in ("eval", "test"):
        for task in ("sentiment", "question"):
            assert 0.0 <= results[f"{split}_{task}_accuracy"] <= 1.0
            assert f"{split}_{task}_f1" in results
    all_results = json.loads((out / "all_results.json").read_text())
    assert all_results["test_question_accuracy"] == results["test_question_accuracy"]
    for name in (*MODEL_FILES, "trainer_state.json", "learning_rates.png", "task_metrics.png"):
        assert (out / name).exists(), name
    card = (out / "README.md").read_text()
    assert "model-index" in card and "trust_remote_code=True" in card

    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(out, trust_remote_code=True)
    tokenizer = AutoTokenizer.from_pretrained(out)
    prediction = model.predict(["who was the good film"], tokenizer)[0]
    assert prediction["question"]["label"] in {"DESC", "HUM", "LOC"}
    assert prediction["sentiment"]["label"] in {"neg", "pos"}
    # The length it trained at travels with it: in its config and its saved tokenizer.
    assert model.config.max_seq_length == 32 == tokenizer.model_max_length  # the tiny tokenizer's own is 64


# What a tqdm bar writes to stderr: "Checking rows: 100%|██████████| 64/64 [00:00<00:00, ...]", or without a
# total, "Generating train split: 64 examples [00:00, 5120.00 examples/s]".
_PROGRESS_BAR = re.compile(r"\d+%\||\[\d\d:\d\d[<,]")


@pytest.mark.parametrize("disable_tqdm", [True, False])
def test_disable_tqdm_silences_every_bar_of_the_run_and_restores_the_settings(
    tmp_path, tiny_encoder_dir, data_root, capfd, disable_tqdm
):
    import datasets
    import transformers

    # A copy of the data of its own: datasets reads, checks and tokenizes it here, not from another test's cache.
    shutil.copytree(data_root, tmp_path / "data")
    config = _config(
        tmp_path / "c.json",
        tiny_encoder_dir,
        str(tmp_path / "data"),
        tmp_path / "out",
        max_steps=2,
        eval_strategy="no",
        save_strategy="no",
        disable_tqdm=disable_tqdm,
    )
    capfd.readouterr()
    run_mtl.main([config])
    err = capfd.readouterr().err
    bars = [line for line in err.replace("\r", "\n").splitlines() if _PROGRESS_BAR.search(line)]
    if disable_tqdm:
        assert bars == [], bars[:5]
    else:  # the same run draws bars when they are on: checking and tokenizing the data, training (files are
        # parsed in memory, with no bar of their own: no datasets builder reads them)
        for expected in (
            "Checking rows",
            "Tokenizing train",
            "Loading weights",
            "2/2 [",
        ):
            assert any(expected in bar for bar in bars), (expected, bars)
    assert not datasets.utils.are_progress_bars_disabled()
    assert transformers.utils.logging.is_progress_bar_enabled()


def test_flags_after_the_json_file_override_it(tmp_path, tiny_encoder_dir, data_root):
    config = _config(tmp_path / "c.json", tiny_encoder_dir, data_root, tmp_path / "out")
    model_args, data_args, training_args = run_mtl.parse_args(
        [config, "--max_train_samples", "5", "--seed", "3"]
    )
    assert data_args.max_train_samples == 5 and training_args.seed == 3
    assert model_args.model_name_or_path == tiny_encoder_dir
    (tmp_path / "bad.json").write_text(json.dumps({"learning_rat": 1e-3}))
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['learning_rat'\]"):
        run_mtl.parse_args([str(tmp_path / "bad.json")])


def _outputs(folder) -> dict[str, bytes]:
    return {
        name: (folder / name).read_bytes() for name in ("model.safetensors", "README.md", "all_results.json")
    }


def test_a_finished_run_is_left_alone_and_replaced_only_when_asked(
    tmp_path, tiny_encoder_dir, data_root, caplog
):
    out = tmp_path / "out"
    config = _config(tmp_path / "c.json", tiny_encoder_dir, data_root, out, num_train_epochs=1)
    run_mtl.main([config])
    finished = _outputs(out)
    (old_checkpoint,) = [p.name for p in out.iterdir() if p.name.startswith("checkpoint-")]

    # The same command again: nothing to do, said in the log; model, card and results untouched.
    with caplog.at_level(logging.WARNING, logger="run_mtl"):
        assert run_mtl.main([config]) == {}
    assert re.search(
        rf"Nothing left to do: {re.escape(str(out))} holds a finished run \((its trainer_state\.json|{old_checkpoint}): step (\d+) of \2",
        caplog.text,
    ), caplog.text
    assert "overwrite_output_dir" in caplog.text
    assert _outputs(out) == finished

    # Another length for the same folder is a different run: refused, with the ways out.
    with pytest.raises(
        ValueError, match=r"finished run .* max_steps=3 asks for a different run\. Pass overwrite_output_dir"
    ):
        run_mtl.main([config, "--max_steps", "3"])
    assert _outputs(out) == finished

    # Asked for: a fresh run that replaces it, and the old run's checkpoint goes.
    run_mtl.main([config, "--max_steps", "3", "--overwrite_output_dir", "true"])
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 3
    assert not (out / old_checkpoint).exists()
    assert _outputs(out)["model.safetensors"] != finished["model.safetensors"]


def test_max_seq_length_beyond_the_encoder_is_clamped_with_a_warning(tiny_model, tiny_tokenizer, caplog):
    # tiny tokenizer: model_max_length 64; tiny encoder: 64 positions.
    with caplog.at_level(logging.WARNING, logger="run_mtl"):
        assert run_mtl.max_sequence_length(32, tiny_tokenizer, tiny_model) == 32
        assert caplog.text == ""
        assert run_mtl.max_sequence_length(4096, tiny_tokenizer, tiny_model) == 64
    assert (
        "max_seq_length=4096 is longer than the tokenizer's model_max_length (64) and the encoder's "
        in caplog.text
    )
    assert "max_position_embeddings (64): using max_seq_length=64" in caplog.text


@pytest.mark.skipif(torch.accelerator.is_available(), reason="pinned memory is wanted with an accelerator")
def test_a_cpu_run_prints_no_pin_memory_warning_and_ends_saying_where_its_outputs_are(
    tmp_path, tiny_encoder_dir, data_root, caplog
):
    out = tmp_path / "out"
    # use_cpu=False: a plain run on a machine without an accelerator (use_cpu=True turns pinning off itself).
    config = _config(tmp_path / "c.json", tiny_encoder_dir, data_root, out, num_train_epochs=1, use_cpu=False)
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO, logger="run_mtl"):
        warnings.simplefilter("always")
        run_mtl.main([config])
    assert not [str(w.message) for w in caught if "pin_memory" in str(w.message)]
    last = [r for r in caplog.records if r.name == "run_mtl"][-1].getMessage()
    assert last == (
        f"Outputs in {out}: model (model.safetensors), results (all_results.json), card (README.md), "
        "plots (task_metrics.png, learning_rates.png)"
    )


def test_the_closing_line_names_exports_and_the_push(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    line = run_mtl.written_summary(
        str(tmp_path), pushed="me/m at revision abc", exported={"onnx": str(tmp_path / "onnx")}
    )
    assert line == (
        f"Outputs in {tmp_path}: model (model.safetensors); exports: onnx in {tmp_path / 'onnx'}; "
        "pushed to me/m at revision abc"
    )
    assert run_mtl.written_summary(str(tmp_path / "none")) == f"Nothing was written to {tmp_path / 'none'}"


def test_model_arguments_are_the_config_settings_and_reach_the_model(
    tmp_path, tiny_encoder_dir, data_root, caplog
):
    fields = {f.name for f in dataclasses.fields(run_mtl.ModelArguments)}
    assert set(CONFIG_SETTINGS) == {
        "embedding_dim",
        "pooling",
        "embedding_activation",
        "head_input",
        "classifier_dropout",
        "adapter_size",
    }
    assert set(CONFIG_SETTINGS) <= fields, "every HydraBertConfig setting is a run_mtl argument"
    settings = {"embedding_dim": 16, "pooling": "mean", "embedding_activation": "identity", "adapter_size": 4}
    config = _config(tmp_path / "c.json", tiny_encoder_dir, data_root, tmp_path / "out", **settings)
    model_args, _, _ = run_mtl.parse_args([config, "--classifier_dropout", "0.2"])
    specs = {"sentiment": {"labels": ["neg", "pos"], "num_labels": 2}}
    specs["sentiment"].update(problem_type="single_label_classification", weight=1.0)
    model = run_mtl.build_model(model_args, specs)
    for name, value in {**settings, "classifier_dropout": 0.2}.items():
        assert getattr(model.config, name) == value, name

    # A trained model keeps its own settings, and says which it ignores.
    model.save_pretrained(tmp_path / "trained")
    model_args.model_name_or_path, model_args.pooling = str(tmp_path / "trained"), "cls"
    with caplog.at_level(logging.WARNING, logger="hydrabert.assembly"):
        again = run_mtl.build_model(model_args, specs)
    assert again.config.pooling == "mean"
    assert "keeps its own {'pooling': 'mean'}; ignoring {'pooling': 'cls'}" in caplog.text


def test_class_weights_reach_new_and_continued_heads(tmp_path, tiny_encoder_dir):
    spec = {
        "labels": ["neg", "pos"],
        "num_labels": 2,
        "problem_type": "single_label_classification",
        "weight": 1.0,
    }
    model_args = run_mtl.ModelArguments(model_name_or_path=tiny_encoder_dir)
    model = run_mtl.build_model(model_args, {"sentiment": {**spec, "class_weights": [0.75, 1.5]}})
    assert model.config.tasks["sentiment"]["class_weights"] == [0.75, 1.5]
    model.save_pretrained(tmp_path / "trained")
    # Continued training: the run's weights replace the checkpoint's; a new head gets its own.
    model_args.model_name_or_path = str(tmp_path / "trained")
    specs = {"sentiment": {**spec, "class_weights": None}, "intent": {**spec, "class_weights": [2.0, 1.0]}}
    again = run_mtl.build_model(model_args, specs)
    assert again.config.tasks["sentiment"]["class_weights"] is None
    assert again.config.tasks["intent"]["class_weights"] == [2.0, 1.0]


# ------------------------------------------------------------------------------------ bad input
def _bad_task(tmp_path, **changes):
    task = {**TASKS[1], **changes}
    return [TASKS[0], task]


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing column", r"column 'sentence' .*available"),
        ("label outside set", r"line 2: label 'NUM' is not one of the task's labels"),
        ("empty split", r"empty"),
        ("unreadable file", r"(?i)not found|no such file|does not exist"),
        ("unknown key", r"unknown key\(s\) 'label_colum'"),
    ],
)
def test_bad_data_fails_before_training_and_writes_nothing(
    case, message, tmp_path, tiny_encoder_dir, data_root
):
    quest = tmp_path / "quest"
    quest.mkdir()
    (quest / "train.jsonl").write_text('{"text": "who was", "label": "HUM"}\n')
    tasks = {
        "missing column": _bad_task(
            tmp_path,
            data_dir=str(quest),
            train_file="train.jsonl",
            file_format=None,
            validation_file=None,
            test_file=None,
            text_column="sentence",
        ),
        "label outside set": _bad_task(
            tmp_path, data_dir=str(quest), train_file="bad.txt", validation_file=None, test_file=None
        ),
        "empty split": _bad_task(
            tmp_path, data_dir=str(quest), train_file="empty.txt", validation_file=None, test_file=None
        ),
        "unreadable file": _bad_task(tmp_path, train_file="nope.txt"),
        "unknown key": _bad_task(tmp_path, label_colum="x"),
    }[case]
    (quest / "bad.txt").write_text("HUM who was\nNUM how many\n")
    (quest / "empty.txt").write_text("")
    out = tmp_path / "out"
    config = _config(tmp_path / "c.json", tiny_encoder_dir, data_root, out, tasks=tasks)
    with pytest.raises(HydraBertDataError, match=message):
        run_mtl.main([config])
    assert not out.exists(), "a failed run must not leave a half-written output directory"


# ---------------------------------------------------------------------------- resume after a kill
KILL_AFTER_SAVE = textwrap.dedent(
    """
    import os, signal, sys
    import run_mtl
    from transformers import TrainerCallback
    from hydrabert.trainer import MultiTaskTrainer

    class KillAfterFirstSave(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no atexit: like a lost machine

    original = MultiTaskTrainer.__init__
    def patched(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.add_callback(KillAfterFirstSave())
    MultiTaskTrainer.__init__ = patched
    run_mtl.main(sys.argv[1:])
    """
)


def test_killed_run_resumes_to_the_same_weights(tmp_path, tiny_encoder_dir, data_root, caplog):
    reference = tmp_path / "reference"
    run_mtl.main(
        [
            _config(
                tmp_path / "a.json",
                tiny_encoder_dir,
                data_root,
                reference,
                eval_strategy="no",
                do_eval=False,
                do_predict=False,
                num_train_epochs=3,
            )
        ]
    )

    resumed = tmp_path / "resumed"
    config = _config(
        tmp_path / "b.json",
        tiny_encoder_dir,
        data_root,
        resumed,
        eval_strategy="no",
        do_eval=False,
        do_predict=False,
        num_train_epochs=3,
    )
    script = tmp_path / "kill_after_save.py"
    script.write_text(KILL_AFTER_SAVE)
    killed = _run_script([str(script), config], cwd=REPO)
    assert killed.returncode == -9, killed.stderr[-2000:]
    checkpoints = sorted(p.name for p in resumed.iterdir() if p.name.startswith("checkpoint-"))
    assert len(checkpoints) == 1 and not (resumed / "model.safetensors").exists()

    with caplog.at_level(logging.INFO, logger="run_mtl"):
        run_mtl.main([config])  # finds the checkpoint and resumes from it, and says so
    assert re.search(
        rf"Resuming from {re.escape(str(resumed / checkpoints[0]))} \(step \d+ of \d+\)", caplog.text
    ), caplog.text
    state = json.loads((resumed / "trainer_state.json").read_text())
    assert state["global_step"] == json.loads((reference / "trainer_state.json").read_text())["global_step"]
    assert _weights_digest(resumed) == _weights_digest(reference)


# ------------------------------------------------------------------------------------------- DDP
RECORD_RANK_WEIGHTS = textwrap.dedent(
    """
    import hashlib, json, os, sys
    import torch
    import run_mtl
    from hydrabert.trainer import MultiTaskTrainer

    original_train = MultiTaskTrainer.train
    def train_and_record(self, *args, **kwargs):
        model = self.accelerator.unwrap_model(self.model)
        initial = {n: p.detach().clone() for n, p in model.named_parameters()}
        result = original_train(self, *args, **kwargs)
        record = {"world_size": self.accelerator.num_processes, "digest": {}, "changed": {},
                  "mixed_precision": self.accelerator.mixed_precision,
                  "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()}}
        for name, param in model.named_parameters():
            record["digest"][name] = hashlib.sha256(param.detach().numpy().tobytes()).hexdigest()
            record["changed"][name] = not torch.equal(param.detach(), initial[name])
        path = os.path.join(self.args.output_dir, f"rank{self.accelerator.process_index}.json")
        with open(path, "w") as handle:
            json.dump(record, handle)
        return result
    MultiTaskTrainer.train = train_and_record
    run_mtl.main(sys.argv[1:])
    """
)


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_two_process_ddp_keeps_ranks_identical_with_frozen_head_and_gradual_unfreezing(
    tmp_path, tiny_encoder_dir, data_root, bf16
):
    # bf16: autocast on the CPU (issue 27) under DDP, with the same freezing, unfreezing and class weights.
    out = tmp_path / "ddp"
    config = _config(
        tmp_path / "ddp.json",
        tiny_encoder_dir,
        data_root,
        out,
        num_train_epochs=3,
        gradual_unfreezing=True,
        unfreeze_every=1,
        frozen_tasks=["question"],
        save_strategy="no",
        eval_strategy="no",
        do_eval=False,
        do_predict=True,
        use_cpu=True,
        bf16=bf16,
        # A class-weighted task trains under DDP as any other (the weights are data, not parameters).
        tasks=[{**TASKS[0], "class_weights": "balanced"}, TASKS[1]],
    )
    script = tmp_path / "record.py"
    script.write_text(RECORD_RANK_WEIGHTS)
    result = _run_script(
        [
            *TWO_PROCESS_LAUNCH,
            str(script),
            config,
        ],
        cwd=REPO,
        timeout=600,
        env={"OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["world_size"] == 2
    assert ranks[0]["mixed_precision"] == ("bf16" if bf16 else "no")
    assert ranks[0]["digest"] == ranks[1]["digest"], "ranks diverged"
    changed = ranks[0]["changed"]
    assert not any(changed[n] for n in changed if n.startswith("heads.question.")), "frozen head moved"
    assert all(changed[n] for n in changed if n.startswith("heads.sentiment."))
    # 3 epochs, one level per epoch: the top two blocks joined mid-run and trained; the embeddings never did.
    for prefix, expected in (
        ("encoder.encoder.layer.1.", True),
        ("encoder.encoder.layer.0.", True),
        ("encoder.embeddings.", False),
    ):
        names = [n for n in changed if n.startswith(prefix)]
        assert any(changed[n] for n in names) == expected, prefix
    # requires_grad never changed under DDP (only the frozen head is off).
    off = sorted(n for n, flag in ranks[0]["requires_grad"].items() if not flag)
    assert off == ["heads.question.bias", "heads.question.weight"]
    assert (out / "test_results.json").exists()
    saved = json.loads((out / "config.json").read_text())["tasks"]
    assert len(saved["sentiment"]["class_weights"]) == 2 and saved["question"]["class_weights"] is None


# ------------------------------------------------------------------------------------ push_to_hub
LOAD_FROM_HUB = textwrap.dedent(
    """
    import json, sys
    sys.modules["hydrabert"] = None  # a machine that never installed hydrabert
    from transformers import AutoModel, AutoTokenizer, pipeline
    repo, revision, sentences = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    model = AutoModel.from_pretrained(repo, revision=revision, trust_remote_code=True)
    tokenizer = AutoTokenizer.from_pretrained(repo, revision=revision, tokenizer_type="bert")
    classifier = pipeline(model=repo, revision=revision, trust_remote_code=True)
    print("RESULT" + json.dumps({"predict": model.predict(sentences, tokenizer), "pipeline": classifier(sentences)}))
    """
)


def _same_predictions(left, right):
    assert len(left) == len(right)
    for a, b in zip(left, right, strict=True):
        assert set(a) == set(b)
        for task in a:
            assert a[task]["label"] == b[task]["label"]
            assert a[task]["score"] == pytest.approx(b[task]["score"], abs=1e-5)


def test_run_mtl_pushes_one_loadable_commit_and_pins_the_card(
    tmp_path, tiny_encoder_dir, data_root, hub_server
):
    out = tmp_path / "out"
    config = _config(
        tmp_path / "c.json",
        tiny_encoder_dir,
        data_root,
        out,
        **PUSH_SETTINGS,
    )
    run_mtl.main([config])

    repo = hub_server.hub.get_repo("test-user/tiny-mtl")
    commits = list(repo.commits.values())
    # initial commit (.gitattributes), the push, and the README-only commit that pins the card.
    assert len(commits) == 3, [c.title for c in commits]
    pushed, pin = commits[1], commits[2]
    for name in (*MODEL_FILES, "tokenizer_config.json"):
        assert name in pushed.files, name
    assert not any(name.startswith("checkpoint-") for name in pushed.files)
    changed = {p for p in pin.files if pin.files[p] != pushed.files.get(p)}
    assert changed == {"README.md"}
    card = pin.files["README.md"].decode()
    assert "library_name: transformers" in card and "model-index:" in card
    assert "trust_remote_code=True" in card and f'revision = "{pushed.oid}"' in card

    # A fresh process without hydrabert loads the pushed commit and predicts as the trained model.
    from transformers import AutoModel, AutoTokenizer

    sentences = ["who was the good film", "how bad a movie", "where is the great film"]
    local = AutoModel.from_pretrained(out, trust_remote_code=True)
    expected = local.predict(sentences, AutoTokenizer.from_pretrained(out))
    script = tmp_path / "load.py"
    script.write_text(LOAD_FROM_HUB)
    result = subprocess.run(
        [sys.executable, str(script), "test-user/tiny-mtl", pushed.oid, json.dumps(sentences)],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,  # a remote-code prompt would read end-of-file, and print itself
        capture_output=True,
        text=True,
        timeout=180,
        env=hub_server.subprocess_env(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert_quiet_about_remote_code(result)  # the Hub repo's tokenizer and pipeline load without asking
    loaded = json.loads(result.stdout.split("RESULT", 1)[1])
    _same_predictions(loaded["predict"], expected)
    _same_predictions(loaded["pipeline"], expected)


def test_a_hub_repo_id_of_a_trained_model_continues_with_its_heads_at_the_pinned_revision(
    tmp_path, tiny_encoder_dir, data_root, hub_server, monkeypatch
):
    from hydrabert import HydraBertModel
    from hydrabert.assembly import is_hydrabert_checkpoint

    # A model trained on one task; the continued run below adds the other.
    first = tmp_path / "first"
    run_mtl.main(
        [_config(tmp_path / "a.json", tiny_encoder_dir, data_root, first, tasks=TASKS[:1], **PUSH_SETTINGS)]
    )
    repo = hub_server.hub.get_repo("test-user/tiny-mtl")
    pinned = list(repo.commits.values())[-1].oid  # the run's last commit (its card pinned)
    trained = load_file(first / "model.safetensors")
    # A later commit on main with other head weights: only the pin keeps the first run's.
    later = HydraBertModel.from_pretrained(first)
    with torch.no_grad():
        later.heads["sentiment"].weight.add_(1.0)
    later.push_to_hub("test-user/tiny-mtl")
    later_oid = list(repo.commits.values())[-1].oid
    assert later_oid != pinned

    requests = len(hub_server.hub.requests)
    assert is_hydrabert_checkpoint("test-user/tiny-mtl", revision=pinned)
    assert not is_hydrabert_checkpoint(tiny_encoder_dir)  # a plain encoder

    started = {}
    build_model = run_mtl.build_model

    def record_the_starting_weights(*args, **kwargs):
        model = build_model(*args, **kwargs)
        started.update({name: tensor.detach().clone() for name, tensor in model.state_dict().items()})
        return model

    monkeypatch.setattr(run_mtl, "build_model", record_the_starting_weights)
    second = tmp_path / "second"
    config = _config(
        tmp_path / "b.json",
        "test-user/tiny-mtl",
        data_root,
        second,
        model_revision=pinned,
        num_train_epochs=1,
        save_strategy="no",
    )
    results = run_mtl.main([config])

    # It started from the pinned revision's weights, heads included: the trained model, not a fresh one.
    assert set(trained) <= set(started)
    for name, tensor in trained.items():
        assert torch.equal(started[name], tensor), name
    assert "heads.question.weight" in started and not any(
        name.startswith("heads.question") for name in trained
    )
    # Config, weights and tokenizer all came from the pinned commit; nothing from the later one.
    fetched = [path for method, path in hub_server.hub.requests[requests:] if method == "GET"]
    assert "/test-user/tiny-mtl/resolve/" + pinned + "/config.json" in fetched
    assert "/test-user/tiny-mtl/resolve/" + pinned + "/tokenizer.json" in fetched
    assert not any(later_oid in path for path in fetched)
    saved = json.loads((second / "config.json").read_text())["tasks"]
    first_tasks = json.loads((first / "config.json").read_text())["tasks"]
    assert saved["sentiment"] == first_tasks["sentiment"]  # the checkpoint's head and labels kept
    assert list(first_tasks) == ["sentiment"] and saved["question"]["labels"] == ["DESC", "HUM", "LOC"]
    assert 0.0 <= results["eval_question_accuracy"] <= 1.0  # the new task trained and evaluated beside it
    assert not torch.equal(
        load_file(second / "model.safetensors")["heads.sentiment.weight"], trained["heads.sentiment.weight"]
    )


@pytest.mark.parametrize(  # run configs; configs/engines/ holds accelerate and DeepSpeed configs
    "config", sorted(n for n in os.listdir(os.path.join(REPO, "configs")) if n.endswith(".json"))
)
def test_every_shipped_config_parses_and_names_data_that_exists(config, tmp_path):
    # Catches a config broken by a renamed argument or task key before anyone trains with it.
    path = os.path.join(REPO, "configs", config)
    model_args, data_args, training_args = run_mtl.parse_args([path, "--output_dir", str(tmp_path)])
    configs = run_mtl.task_configs(data_args)
    assert configs and training_args.output_dir == str(tmp_path)
    data_root = os.path.join(REPO, data_args.data_root) if data_args.data_root else None
    if data_root is None or not os.path.isdir(data_root):
        pytest.skip(f"{data_args.data_root} is not here: the local data files cannot be checked")
    for task in configs:
        for name in (task.train_file, task.validation_file, task.test_file):
            if name:
                assert os.path.isfile(os.path.join(REPO, task.data_dir, name)), (task.name, name)
