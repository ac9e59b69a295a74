"""FSDP (issue 25), on 2 CPU processes (gloo). accelerate enables FSDP only on GPU-like devices, so the run is
assembled here from the pieces a GPU run uses: accelerate's own `fsdp2_prepare_model` with the FSDP2 plugin as
`MultiTaskTrainer` configures it (units: the encoder's blocks), the layer-wise parameter groups of
`MultiTaskTrainer.create_optimizer` built on the sharded parameters, a frozen part, and gradual unfreezing's
dropped gradients. The same steps under DDP give the same weights; the gathered state saves as an ordinary
folder that loads where hydrabert is not installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import TWO_PROCESS_LAUNCH, seeded_model

from hydrabert.engines import check_fsdp, configure_fsdp_plugin, fsdp_block_classes
from hydrabert.trainer import MultiTaskTrainingArguments

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TRAIN = textwrap.dedent(
    """
    import json, sys
    from types import SimpleNamespace
    import torch, torch.distributed as dist
    sys.path.insert(0, sys.argv[3])
    from conftest import seeded_model
    from hydrabert.engines import configure_fsdp_plugin
    from hydrabert.optim import layerwise_parameter_groups

    mode, out = sys.argv[1:3]
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    model = seeded_model()  # the same weights on every rank
    unwrapped = model
    for param in model.encoder.embeddings.parameters():  # a freeze policy: the embeddings never train
        param.requires_grad_(False)
    if mode == "fsdp":
        from accelerate.utils import FullyShardedDataParallelPlugin
        from accelerate.utils.fsdp_utils import fsdp2_prepare_model
        plugin = FullyShardedDataParallelPlugin(fsdp_version=2, auto_wrap_policy="transformer_based_wrap")
        configure_fsdp_plugin(plugin, model)
        accelerator = SimpleNamespace(
            state=SimpleNamespace(fsdp_plugin=plugin), mixed_precision="no", device=torch.device("cpu"),
            is_main_process=rank == 0, torch_device_mesh=None,
        )
        model = fsdp2_prepare_model(accelerator, model)
    else:
        model = torch.nn.parallel.DistributedDataParallel(model, broadcast_buffers=False)
    trainable = [(n, p) for n, p in unwrapped.named_parameters() if p.requires_grad]
    groups = layerwise_parameter_groups(
        unwrapped, learning_rate=1e-3, layerwise_lr_decay=0.8, head_learning_rate=1e-2, weight_decay=0.01,
        parameters=trainable,
    )
    optimizer = torch.optim.AdamW(groups)
    waiting = {n for n, _ in trainable if n.startswith("encoder.encoder.layer.0.")}  # unfrozen after step 3
    for step in range(6):
        generator = torch.Generator().manual_seed(100 * step + rank)  # each rank its own rows
        input_ids = torch.randint(5, 60, (4, 9), generator=generator)
        task_ids = torch.tensor([0, 0, 1, 1])
        labels = torch.tensor([int(torch.randint(0, 2, (1,), generator=generator)), 1, 2, 0])
        loss = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), task_ids=task_ids, labels=labels).loss
        loss.backward()
        if step < 3:  # what FreezingCallback.drop_waiting_gradients does for the layers whose turn has not come
            for name, param in unwrapped.named_parameters():
                if name in waiting:
                    param.grad = None
        optimizer.step()
        optimizer.zero_grad()
    if mode == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    else:
        state = {k: v.detach().cpu() for k, v in unwrapped.state_dict().items()}
    if rank == 0:
        torch.save(state, f"{out}/{mode}.pt")
        if mode == "fsdp":
            unwrapped.save_pretrained(f"{out}/saved", state_dict=state)
    dist.destroy_process_group()
    """
)

LOAD = (
    "import sys, json; sys.modules['hydrabert'] = None\n"
    "from transformers import AutoModel\n"
    "model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True)\n"
    "print(json.dumps({'tasks': sorted(model.config.tasks), 'class': type(model).__name__}))\n"
)


def _launch(script, *args):
    return subprocess.run(
        [sys.executable, *TWO_PROCESS_LAUNCH, str(script), *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": REPO, "OMP_NUM_THREADS": "1"},
    )


def test_fsdp_trains_the_weights_ddp_trains_and_saves_an_ordinary_folder(tmp_path):
    script = tmp_path / "train_fsdp.py"
    script.write_text(TRAIN)
    tests = os.path.join(REPO, "tests")
    for mode in ("ddp", "fsdp"):
        result = _launch(script, mode, tmp_path, tests)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ddp, fsdp = torch.load(tmp_path / "ddp.pt"), torch.load(tmp_path / "fsdp.pt")
    initial = seeded_model().state_dict()
    assert set(ddp) == set(fsdp)
    worst = max(float((ddp[k].float() - fsdp[k].float()).abs().max()) for k in ddp)
    assert worst <= 1e-5, worst
    # The run did what it says: the frozen embeddings kept their weights, the unfrozen layer and the heads moved.
    assert torch.equal(
        fsdp["encoder.embeddings.word_embeddings.weight"],
        initial["encoder.embeddings.word_embeddings.weight"],
    )
    for name in ("encoder.encoder.layer.0.attention.self.query.weight", "heads.sentiment.weight"):
        assert not torch.equal(fsdp[name], initial[name]), name

    loaded = subprocess.run(
        [sys.executable, "-c", LOAD, str(tmp_path / "saved")], capture_output=True, text=True, timeout=120
    )
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert json.loads(loaded.stdout.strip().splitlines()[-1])["tasks"] == sorted(initial_tasks())


def initial_tasks() -> list[str]:
    return list(seeded_model().config.tasks)


def test_fsdp_units_are_the_encoder_blocks_unless_the_config_names_them():
    from accelerate.utils import FullyShardedDataParallelPlugin

    model = seeded_model()
    assert fsdp_block_classes(model) == ["BertLayer"]
    # transformers gathers the encoder's _no_split_modules, BertEmbeddings included: wrapping those makes accelerate
    # carve word_embeddings out of an already sharded BertEmbeddings, which fails; the blocks alone do not.
    assert "BertEmbeddings" in model._no_split_modules
    plugin = FullyShardedDataParallelPlugin(fsdp_version=2, auto_wrap_policy="transformer_based_wrap")
    configure_fsdp_plugin(plugin, model)
    assert plugin.transformer_cls_names_to_wrap == ["BertLayer"]
    named = FullyShardedDataParallelPlugin(
        fsdp_version=2, auto_wrap_policy="transformer_based_wrap", transformer_cls_names_to_wrap=["MyBlock"]
    )
    configure_fsdp_plugin(named, model)
    assert named.transformer_cls_names_to_wrap == ["MyBlock"]


def test_the_shipped_accelerate_config_is_fsdp2_saving_a_full_state_dict():
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(os.path.join(REPO, "configs", "engines", "accelerate_fsdp.yaml"))
    assert config.distributed_type == "FSDP"
    assert config.fsdp_config["fsdp_version"] == 2
    assert config.fsdp_config["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert config.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"


def test_the_frozen_encoder_cache_is_refused_under_fsdp(tmp_path, monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(ValueError, match="feature cache runs the encoder outside FSDP"):
        MultiTaskTrainingArguments(output_dir=str(tmp_path), freeze_policy="encoder", report_to=[])
    args = MultiTaskTrainingArguments.__new__(MultiTaskTrainingArguments)
    args.fsdp, args.freeze_policy, args.cache_frozen_encoder = "", "encoder", False
    check_fsdp(args)  # the encoder frozen without the cache: allowed
