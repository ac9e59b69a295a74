"""The HydraBERT pipeline: in process, and travelling with the model to a machine without hydrabert."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import assert_quiet_about_remote_code, seeded_model, tiny_config, tiny_training_args

from hydrabert import HydraBertModel
from hydrabert.pipeline_registration import (
    PIPELINE_TASK,
    custom_pipelines_entry,
    register_pipeline,
    save_pipeline_files,
)

SENTENCES = ["good film", "what is the answer", "the movie was a great film", "bad"]


@pytest.fixture
def decisive_model(tiny_model):
    """Random heads give near-uniform probabilities; scaled up, labels cannot flip on rounding noise."""
    with torch.no_grad():
        for head in tiny_model.heads.values():
            head.weight.mul_(200.0)
    return tiny_model


def _same_predictions(got, expected):
    assert len(got) == len(expected)
    for row, (g, e) in enumerate(zip(got, expected, strict=True)):
        assert set(g) == set(e), row
        for task in e:
            assert g[task]["label"] == e[task]["label"], (row, task)
            assert g[task]["score"] == pytest.approx(e[task]["score"], abs=1e-4), (row, task)


def test_pipeline_file_imports_only_torch_transformers_the_stdlib_and_the_travelling_config():
    import hydrabert.pipeline_hydrabert as module

    tree = ast.parse(open(module.__file__).read())
    roots, relative = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level:
            # transformers fetches a remote-code file's flat relative imports from the same repo
            assert node.level == 1 and "." not in node.module, "only flat relative imports travel"
            relative.add(node.module)
        elif isinstance(node, ast.ImportFrom):
            roots.add(node.module.split(".")[0])
    assert roots - sys.stdlib_module_names <= {"torch", "transformers"}, roots
    assert relative <= {"configuration_hydrabert"}, relative


def test_registered_pipeline_matches_predict_in_process(decisive_model, tiny_tokenizer):
    from transformers import pipeline

    register_pipeline()
    register_pipeline()  # idempotent
    classifier = pipeline(PIPELINE_TASK, model=decisive_model, tokenizer=tiny_tokenizer, device="cpu")
    expected = decisive_model.predict(SENTENCES, tiny_tokenizer)
    _same_predictions(classifier(SENTENCES), expected)
    _same_predictions(classifier(SENTENCES, batch_size=3), expected)
    _same_predictions([classifier(SENTENCES[0])], expected[:1])
    assert classifier(SENTENCES[:2], tasks="topic") == [
        {"topic": p["topic"]} for p in classifier(SENTENCES[:2])
    ]
    top = classifier("good film", top_k=5)
    assert [len(top["sentiment"]), len(top["topic"])] == [2, 3]
    assert top["topic"][0]["label"] == expected[0]["topic"]["label"]
    assert top["topic"][0]["score"] >= top["topic"][1]["score"] >= top["topic"][2]["score"]
    with pytest.raises(ValueError, match=r"Unknown task\(s\) \['sport'\]"):
        classifier("good", tasks=["sport"])


def test_pipeline_handles_multi_label_and_regression_like_predict(tiny_tokenizer):
    from transformers.pipelines import pipeline

    torch.manual_seed(0)
    config = tiny_config(
        tasks={
            "tags": {"labels": ["x", "y", "z"], "problem_type": "multi_label_classification"},
            "score": {"problem_type": "regression"},
        }
    )
    model = HydraBertModel(config).eval()
    with torch.no_grad():
        model.heads["tags"].weight.mul_(200.0)
    register_pipeline()
    classifier = pipeline(PIPELINE_TASK, model=model, tokenizer=tiny_tokenizer, device="cpu")
    expected = model.predict(SENTENCES, tiny_tokenizer)
    got = classifier(SENTENCES)
    for g, e in zip(got, expected, strict=True):
        assert g["tags"]["label"] == e["tags"]["label"]
        assert g["tags"]["score"] == pytest.approx(e["tags"]["score"], abs=1e-4)
        assert g["score"]["score"] == pytest.approx(e["score"]["score"], abs=1e-4)


def test_save_pipeline_files_is_idempotent_and_order_free(tiny_model, tiny_tokenizer, tmp_path):
    before, after = tmp_path / "before", tmp_path / "after"
    # Before the weights: the later save_pretrained keeps custom_pipelines and the pipeline file.
    save_pipeline_files(tiny_model, tiny_tokenizer, before)
    tiny_model.save_pretrained(before)
    # After the weights, twice.
    tiny_model.save_pretrained(after)
    save_pipeline_files(tiny_model, tiny_tokenizer, after)
    save_pipeline_files(tiny_model, None, after)
    for folder in (before, after):
        config = json.loads((folder / "config.json").read_text())
        assert config["custom_pipelines"] == custom_pipelines_entry()
        assert config["custom_pipelines"] == {
            "hydrabert-multitask": {
                "impl": "pipeline_hydrabert.HydraBertPipeline",
                "pt": ["AutoModel"],
                "type": "text",
            }
        }
        assert config["auto_map"]["AutoModel"] == "modeling_hydrabert.HydraBertModel"
        names = set(os.listdir(folder))
        assert {"pipeline_hydrabert.py", "modeling_hydrabert.py", "configuration_hydrabert.py"} <= names
        assert {"model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names


def test_save_pretrained_registers_the_pipeline(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["custom_pipelines"] == custom_pipelines_entry()
    assert (tmp_path / "pipeline_hydrabert.py").is_file()


def _run_without_hydrabert(script: str, tmp_path):
    """`script` in a fresh process where importing hydrabert fails, offline, with stdin closed (a prompt
    for remote code would read end-of-file)."""
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "PYTHONPATH": "", "HF_HUB_OFFLINE": "1"}
    script = 'import sys\nsys.modules["hydrabert"] = None  # any import of hydrabert now fails\n' + script
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_pipeline_travels_to_a_machine_without_hydrabert(decisive_model, tiny_tokenizer, tmp_path):
    """The documented save (model and tokenizer, save_pretrained into one folder) feeds
    pipeline(model=dir, trust_remote_code=True) in a fresh process where hydrabert cannot be imported:
    the task comes from config.custom_pipelines (no Hub lookup); the named task works too; the result
    equals predict."""
    model_dir = tmp_path / "model"
    decisive_model.save_pretrained(model_dir)
    tiny_tokenizer.save_pretrained(model_dir)
    expected = decisive_model.predict(SENTENCES, tiny_tokenizer)
    (tmp_path / "expected.json").write_text(json.dumps(expected))
    script = textwrap.dedent(
        f"""
        import json
        from transformers import pipeline

        model_dir, out = {str(model_dir)!r}, {str(tmp_path)!r}
        inferred = pipeline(model=model_dir, trust_remote_code=True, device="cpu")
        named = pipeline({PIPELINE_TASK!r}, model=model_dir, trust_remote_code=True, device="cpu")
        assert type(inferred).__module__.startswith("transformers_modules"), type(inferred).__module__
        assert inferred.task == {PIPELINE_TASK!r}, inferred.task
        sentences = {SENTENCES!r}
        result = {{
            "inferred": inferred(sentences),
            "named": named(sentences, batch_size=2),
            "single": inferred(sentences[0]),
            "topic_top2": inferred(sentences[0], tasks=["topic"], top_k=2),
        }}
        inferred.save_pretrained(out + "/resaved")  # the remote-loaded pipeline can be saved again
        json.dump(result, open(out + "/got.json", "w"))
        print("PIPELINE-OK")
        """
    )
    result = _run_without_hydrabert(script, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "PIPELINE-OK" in result.stdout
    got = json.loads((tmp_path / "got.json").read_text())
    _same_predictions(got["inferred"], expected)
    _same_predictions(got["named"], expected)
    _same_predictions([got["single"]], expected[:1])
    top2 = got["topic_top2"]["topic"]
    assert [entry["label"] for entry in top2][0] == expected[0]["topic"]["label"] and len(top2) == 2
    resaved = json.loads((tmp_path / "resaved" / "config.json").read_text())
    assert resaved["custom_pipelines"] == custom_pipelines_entry()


@pytest.fixture
def trained_folder(tmp_path, task_data, tiny_tokenizer):
    """What a training run leaves: MultiTaskTrainer trained a few steps and saved model and tokenizer
    with save_model (the path run_mtl.py takes)."""
    from hydrabert.trainer import MultiTaskTrainer

    trainer = MultiTaskTrainer(
        model=seeded_model(),
        args=tiny_training_args(tmp_path / "run", max_steps=2),
        train_dataset=task_data[0],
        processing_class=tiny_tokenizer,
    )
    trainer.train()
    folder = tmp_path / "trained"
    trainer.save_model(str(folder))
    assert {"config.json", "tokenizer_config.json", "modeling_hydrabert.py"} <= set(os.listdir(folder))
    return folder


def test_the_tokenizer_and_pipeline_of_a_trained_folder_load_without_a_prompt_or_a_warning(
    trained_folder, tiny_tokenizer, tmp_path
):
    """issue 28. transformers 5's AutoTokenizer (5.0 to 5.25 alike) reads config.json through AutoConfig
    before tokenizer_config.json, and a hydrabert config.json maps AutoConfig to remote code: a bare
    AutoTokenizer.from_pretrained(folder) asks "Do you wish to run the custom code?" and, with stdin
    closed, falls back to a base config with a model-type warning, whatever the saved files say (see
    docs/conformance.md). `tokenizer_type` (the encoder's model type, which the card renders) picks the
    tokenizer class without the model config: no remote code, no prompt, no warning, the same ids. The
    pipeline, trusted, runs the folder's code and reads the tokenizer without asking either."""
    encoder_type = json.loads((trained_folder / "config.json").read_text())["encoder"]["model_type"]
    script = textwrap.dedent(
        f"""
        from transformers import AutoTokenizer, pipeline
        tokenizer = AutoTokenizer.from_pretrained({str(trained_folder)!r}, tokenizer_type={encoder_type!r})
        print("IDS", tokenizer("the good film")["input_ids"], type(tokenizer).__name__)
        print("REMOTE CODE RUN:", any(name.startswith("transformers_modules") for name in sys.modules))
        classifier = pipeline(model={str(trained_folder)!r}, trust_remote_code=True, device="cpu")
        print("TASKS", sorted(classifier("the good film")))
        """
    )
    result = _run_without_hydrabert(script, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_quiet_about_remote_code(result)
    expected_ids = tiny_tokenizer("the good film")["input_ids"]
    assert f"IDS {expected_ids} {type(tiny_tokenizer).__name__}" in result.stdout
    assert "REMOTE CODE RUN: False" in result.stdout  # the tokenizer ran none of the folder's code
    assert "TASKS ['sentiment', 'topic']" in result.stdout


def test_the_model_cards_usage_snippet_runs_without_hydrabert_remote_tokenizer_code_or_a_prompt(
    decisive_model, tiny_tokenizer, tmp_path
):
    """The card's first Python block, as a reader copies it (the repo id set to the saved folder), in a
    process without hydrabert and with stdin closed: it loads model and tokenizer and predicts."""
    from hydrabert.model_card import generate_model_card

    model_dir = tmp_path / "model"
    decisive_model.save_pretrained(model_dir)
    tiny_tokenizer.save_pretrained(model_dir)
    card = generate_model_card(decisive_model, model_dir, tokenizer=tiny_tokenizer, model_id=str(model_dir))
    snippet = str(card).split("```python\n", 1)[1].split("```", 1)[0]
    assert "tokenizer_type=" in snippet
    result = _run_without_hydrabert(
        snippet + "\nimport json\nprint('PREDICTIONS' + json.dumps(predictions))\n", tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert_quiet_about_remote_code(result)
    (sentences,) = [
        ast.literal_eval(line.split("=", 1)[1])
        for line in snippet.splitlines()
        if line.startswith("sentences =")
    ]
    got = json.loads(result.stdout.split("PREDICTIONS", 1)[1])
    _same_predictions(got, decisive_model.predict(sentences, tiny_tokenizer))
