"""FSDP2 (issue 25): a tiny hydrabert trained sharded over 2 CPU processes (gloo, torch's `fully_shard` with the
wrapping of hydrabert/fsdp.py) with layer-wise learning rates, the lower layers frozen and gradual unfreezing ends
with the weights of the DDP run of the same seed; the gathered weights save as an ordinary folder that loads with
`AutoModel.from_pretrained(..., trust_remote_code=True)`.

accelerate enables FSDP only for GPU-like devices (its state.py), so `MultiTaskTrainer` itself cannot run sharded
on these CPUs: the test drives the pieces the trainer hands over (the wrapping accelerate applies, the
parameter groups of optim.py, the `FreezingCallback` and its gradient drop) in a plain loop, and checks apart that
accelerate's own FSDP2 wrapping code finds the model's layers and that `check_fsdp_run` refuses what cannot work.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import types

import pytest
import torch
from conftest import seeded_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.dirname(os.path.abspath(__file__))

TRAIN = textwrap.dedent(
    """
    import json, os, sys
    import torch
    import torch.distributed as dist
    from safetensors.torch import save_file
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.nn.parallel import DistributedDataParallel
    from transformers import TrainerState

    sys.path.insert(0, sys.argv[1])
    from conftest import TINY_ENCODER, seeded_model
    from hydrabert.callbacks import FreezingCallback
    from hydrabert.freezing import UnfreezingSchedule, frozen_parameter_names
    from hydrabert.fsdp import save_full_pretrained, shard_model
    from hydrabert.optim import layerwise_parameter_groups

    out = sys.argv[2]
    STEPS, STEPS_PER_EPOCH, FROZEN_LAYERS = 6, 2, 1
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()


    def batch(step):
        # The step's global batch of 8 rows (one task per batch, as the trainer's sampler gives); rank r takes its 4.
        generator = torch.Generator().manual_seed(step)
        lengths = torch.randint(3, 12, (8,), generator=generator)
        input_ids = torch.randint(5, 99, (8, 12), generator=generator)
        attention_mask = (torch.arange(12)[None, :] < lengths[:, None]).long()
        task = step % 2
        labels = torch.randint(0, 2 if task == 0 else 3, (8,), generator=generator)
        rows = slice(4 * rank, 4 * rank + 4)
        return {
            "input_ids": input_ids[rows] * attention_mask[rows],
            "attention_mask": attention_mask[rows],
            "task_ids": torch.full((4,), task),
            "labels": labels[rows],
        }


    def full_weights(wrapped, sharding):
        # Collective under FSDP; the gathered full state lands on rank 0 only.
        if sharding == "fsdp":
            return get_model_state_dict(wrapped, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return {name: tensor.detach().clone() for name, tensor in wrapped.module.state_dict().items()}


    def train(sharding):
        model = seeded_model(encoder={**TINY_ENCODER, "num_hidden_layers": 3}).train()
        never_trained = frozen_parameter_names(model, freeze_lower_layers=FROZEN_LAYERS)
        schedule = UnfreezingSchedule(num_layers=3, unfreeze_every=1.0, lowest_trainable_depth=FROZEN_LAYERS + 1)
        freezing = FreezingCallback(never_trained, schedule)
        freezing.on_init_end(None, None, None, model=model)  # before wrapping, as in MultiTaskTrainer
        initial = {name: param.detach().clone() for name, param in model.named_parameters()}
        expected_groups = [group["param_names"] for group in layerwise_parameter_groups(
            model, 1e-2, 0.7, head_learning_rate=3e-2, weight_decay=0.01,
            parameters=[(n, p) for n, p in model.named_parameters() if n not in never_trained],
        )]
        if sharding == "fsdp":
            wrapped = inner = shard_model(model)
        else:
            wrapped, inner = DistributedDataParallel(model, broadcast_buffers=False), model
        # The groups from the model as sharded (FSDP2 keeps every original parameter, as a DTensor shard).
        groups = layerwise_parameter_groups(
            inner, 1e-2, 0.7, head_learning_rate=3e-2, weight_decay=0.01,
            parameters=[(n, p) for n, p in inner.named_parameters() if n not in never_trained],
        )
        assert [group["param_names"] for group in groups] == expected_groups
        optimizer = torch.optim.AdamW(groups)
        sharded = all(isinstance(p, torch.distributed.tensor.DTensor) for p in inner.parameters())
        norms = []
        args = type("Args", (), {"world_size": world})()
        torch.manual_seed(100 + rank)  # dropout: per-rank draws, the same in both runs
        for step in range(STEPS):
            state = TrainerState(epoch=step / STEPS_PER_EPOCH, global_step=step, is_world_process_zero=rank == 0)
            freezing.on_step_begin(args, state, None, model=wrapped)
            wrapped(**batch(step)).loss.backward()
            freezing.drop_waiting_gradients(wrapped)  # what MultiTaskTrainer.training_step does when distributed
            norm = torch.nn.utils.clip_grad_norm_([p for p in wrapped.parameters() if p.grad is not None], 0.5)
            norms.append(float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if step == STEPS_PER_EPOCH - 1:  # end of epoch 0: the whole encoder was still waiting
                now = full_weights(wrapped, sharding)
                early = {n for n, before in initial.items() if rank == 0 and not torch.equal(now[n], before)}
        weights = full_weights(wrapped, sharding)
        if sharding == "fsdp":
            save_full_pretrained(wrapped, os.path.join(out, "fsdp_model"))
        # (The gathered full state is on rank 0 only.)
        moved = {name for name, before in initial.items() if rank == 0 and not torch.equal(weights[name], before)}
        return weights, {"moved": sorted(moved), "moved_in_epoch_0": sorted(early), "sharded": sharded, "norms": norms}


    ddp_weights, ddp = train("ddp")
    fsdp_weights, fsdp = train("fsdp")
    if rank == 0:
        save_file({name: tensor.contiguous() for name, tensor in ddp_weights.items()}, os.path.join(out, "ddp.safetensors"))
        save_file({name: tensor.contiguous() for name, tensor in fsdp_weights.items()}, os.path.join(out, "fsdp.safetensors"))
        with open(os.path.join(out, "result.json"), "w") as handle:
            json.dump({"world_size": world, "ddp": ddp, "fsdp": fsdp}, handle)
    dist.destroy_process_group()
    """
)


@pytest.fixture(scope="module")
def fsdp_and_ddp_run(tmp_path_factory):
    """One 2-process launch: the DDP run, then the FSDP run, of the same seed and batches."""
    out = tmp_path_factory.mktemp("fsdp")
    script = out / "fsdp_vs_ddp.py"
    script.write_text(TRAIN)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    result = subprocess.run(
        [*command, str(script), TESTS, str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": REPO, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return out


def test_fsdp_training_matches_ddp(fsdp_and_ddp_run):
    from safetensors.torch import load_file

    result = json.loads((fsdp_and_ddp_run / "result.json").read_text())
    ddp = load_file(fsdp_and_ddp_run / "ddp.safetensors")
    fsdp = load_file(fsdp_and_ddp_run / "fsdp.safetensors")
    assert result["world_size"] == 2
    assert result["fsdp"]["sharded"] and not result["ddp"]["sharded"]  # every parameter a DTensor shard
    # Gradient clipping was active (norms above 0.5), and sees the same norm over shards as over full gradients.
    assert max(result["ddp"]["norms"]) > 0.5
    assert result["fsdp"]["norms"] == pytest.approx(result["ddp"]["norms"], rel=1e-6)
    assert set(ddp) == set(fsdp)
    max_diff = max((ddp[name] - fsdp[name]).abs().max().item() for name in ddp)
    print(f"max |FSDP - DDP| over all weights after 6 steps: {max_diff:.3g}")
    assert max_diff <= 1e-5
    # The policies did what they say, in both runs: the embeddings and layer 0 never train; layers 2 and 1 join at
    # epochs 1 and 2 (steps 2 and 4) and move; the heads train throughout.
    for run in (result["ddp"], result["fsdp"]):
        assert run["moved_in_epoch_0"] and all(
            not name.startswith("encoder.") for name in run["moved_in_epoch_0"]
        )
        moved = set(run["moved"])
        assert not {
            name for name in moved if name.startswith(("encoder.embeddings.", "encoder.encoder.layer.0."))
        }
        assert {
            "encoder.encoder.layer.1.output.dense.weight",
            "encoder.encoder.layer.2.output.dense.weight",
        } <= moved
        assert {"heads.sentiment.weight", "heads.topic.weight", "pooler.dense.weight"} <= moved
    assert result["ddp"]["moved"] == result["fsdp"]["moved"]


def test_fsdp_saved_model_loads_with_remote_code(fsdp_and_ddp_run):
    from safetensors.torch import load_file
    from transformers import AutoModel

    folder = fsdp_and_ddp_run / "fsdp_model"
    assert "modeling_hydrabert.py" in os.listdir(folder)
    assert not [
        name for name in os.listdir(folder) if name.startswith("_fsdp")
    ]  # torch's FSDP files stay out
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_hydrabert.HydraBertModel"
    assert config["architectures"] == ["HydraBertModel"]
    loaded = AutoModel.from_pretrained(folder, trust_remote_code=True)
    assert type(loaded).__name__ == "HydraBertModel"
    gathered = load_file(fsdp_and_ddp_run / "fsdp.safetensors")
    state = loaded.state_dict()
    assert set(state) == set(gathered)
    for name, tensor in gathered.items():
        assert torch.equal(state[name], tensor), name


def test_accelerate_fsdp2_wraps_the_encoder_layers(tmp_path):
    """accelerate 1.16's own FSDP2 preparation, with the classes `check_fsdp_run` hands it, shards each BertLayer and
    the input embeddings; with the raw `_no_split_modules` (BertEmbeddings too) it fails on the second shard."""
    script = tmp_path / "accelerate_wrap.py"
    script.write_text(
        textwrap.dedent(
            """
            import json, sys, types
            import torch, torch.distributed as dist
            from accelerate.utils import FullyShardedDataParallelPlugin
            from accelerate.utils.fsdp_utils import fsdp2_prepare_model
            from torch.distributed.fsdp import FSDPModule
            sys.path.insert(0, sys.argv[1])
            from conftest import seeded_model
            from hydrabert.fsdp import fsdp_wrap_class_names

            dist.init_process_group("gloo")
            model = seeded_model()
            assert model._no_split_modules == set(model.encoder._no_split_modules) == {"BertEmbeddings", "BertLayer"}
            plugin = FullyShardedDataParallelPlugin(
                fsdp_version=2, auto_wrap_policy="transformer_based_wrap",
                transformer_cls_names_to_wrap=fsdp_wrap_class_names(model),
            )
            accelerator = types.SimpleNamespace(  # what fsdp2_prepare_model reads from an Accelerator
                state=types.SimpleNamespace(fsdp_plugin=plugin), mixed_precision="no", is_main_process=True,
                device=torch.device("cpu"),
            )
            model = fsdp2_prepare_model(accelerator, model)
            units = [name for name, module in model.named_modules() if isinstance(module, FSDPModule)]
            print(json.dumps(units))
            """
        )
    )
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"]
    result = subprocess.run(
        [*command, str(script), TESTS],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": REPO, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    units = json.loads(result.stdout.strip().splitlines()[-1])
    assert units == [
        "",
        "encoder.embeddings.word_embeddings",
        "encoder.encoder.layer.0",
        "encoder.encoder.layer.1",
    ]


def test_wrap_classes_come_from_the_encoder():
    model = seeded_model()
    # BertEmbeddings holds the input embeddings, which accelerate shards as a unit of their own.
    from hydrabert.fsdp import fsdp_wrap_class_names

    assert fsdp_wrap_class_names(model) == ["BertLayer"]
    model._no_split_modules = set()
    with pytest.raises(ValueError, match="fsdp_transformer_layer_cls_to_wrap"):
        fsdp_wrap_class_names(model)


def _fsdp_trainer(fsdp_version=2, use_orig_params=None, cache=False, frozen_encoder=True, names=None):
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

    plugin = types.SimpleNamespace(
        fsdp_version=fsdp_version,
        use_orig_params=use_orig_params,
        auto_wrap_policy=transformer_auto_wrap_policy,
        transformer_cls_names_to_wrap=names,
    )
    model = seeded_model()
    accelerator = types.SimpleNamespace(
        state=types.SimpleNamespace(fsdp_plugin=plugin), unwrap_model=lambda m: m
    )
    encoder = types.SimpleNamespace(cache_enabled=cache) if frozen_encoder else None
    return types.SimpleNamespace(accelerator=accelerator, model=model, frozen_encoder=encoder), plugin


def test_check_fsdp_run_refuses_what_cannot_work_sharded():
    from hydrabert.fsdp import check_fsdp_run

    trainer, _ = _fsdp_trainer(fsdp_version=1, use_orig_params=False)
    with pytest.raises(ValueError, match="use_orig_params=False.*fsdp_version: 2"):
        check_fsdp_run(trainer)
    trainer, _ = _fsdp_trainer(cache=True)
    with pytest.raises(ValueError, match="cache_frozen_encoder=False"):
        check_fsdp_run(trainer)
    # Allowed: the frozen encoder uncached; the wrap classes are filled in unless the config names them.
    trainer, plugin = _fsdp_trainer(cache=False)
    check_fsdp_run(trainer)
    assert plugin.transformer_cls_names_to_wrap == ["BertLayer"]
    trainer, plugin = _fsdp_trainer(names=["BertLayer", "BertEmbeddings"])
    check_fsdp_run(trainer)
    assert plugin.transformer_cls_names_to_wrap == ["BertLayer", "BertEmbeddings"]


def test_accelerate_fsdp_config_parses_to_fsdp2(monkeypatch):
    """configs/accelerate_fsdp.yaml, read as `accelerate launch --config_file` reads it, gives the FSDP2 plugin the
    trainer expects: version 2, transformer-based wrap with the classes left to the model, a full state dict."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.launch import prepare_multi_gpu_env
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

    config = os.path.join(REPO, "configs", "accelerate_fsdp.yaml")
    args = launch_command_parser().parse_args(["--config_file", config, "run_mtl.py", "configs/demo.json"])
    args, _, _ = _validate_launch_command(args)
    assert args.use_fsdp
    for key, value in prepare_multi_gpu_env(args).items():
        monkeypatch.setenv(key, value)
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2
    assert "FULL_STATE_DICT" in str(plugin.state_dict_type)
    assert plugin.auto_wrap_policy is transformer_auto_wrap_policy
    assert plugin.transformer_cls_names_to_wrap is None  # filled from the model by check_fsdp_run


def test_check_deepspeed_run_refuses_gradual_unfreezing():
    from hydrabert.freezing import UnfreezingSchedule
    from hydrabert.fsdp import check_deepspeed_run

    trainer = types.SimpleNamespace(
        freezing=types.SimpleNamespace(unfreezing=UnfreezingSchedule(num_layers=2))
    )
    with pytest.raises(ValueError, match="gradual_unfreezing under DeepSpeed"):
        check_deepspeed_run(trainer)
    trainer.freezing.unfreezing = None
    check_deepspeed_run(trainer)
