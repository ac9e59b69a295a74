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
from conftest import launch_two_processes, seeded_model

from hydrabert.engines import check_fsdp, configure_fsdp_plugin, fsdp_block_classes
from hydrabert.trainer import MultiTaskTrainingArguments

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TRAIN = textwrap.dedent(
    """
    import json, sys
    import torch, torch.distributed as dist
    sys.path.insert(0, sys.argv[3])
    from conftest import fsdp2_prepared, seeded_model
    from hydrabert.engines import leave_process_group
    from hydrabert.optim import layerwise_parameter_groups

    mode, out = sys.argv[1:3]
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    model = seeded_model()  # the same weights on every rank
    unwrapped = model
    for param in model.encoder.embeddings.parameters():  # a freeze policy: the embeddings never train
        param.requires_grad_(False)
    if mode == "fsdp":
        model, _, _ = fsdp2_prepared(model)
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
    leave_process_group()
    """
)

LOAD = (
    "import sys, json; sys.modules['hydrabert'] = None\n"
    "from transformers import AutoModel\n"
    "model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True)\n"
    "print(json.dumps({'tasks': sorted(model.config.tasks), 'class': type(model).__name__}))\n"
)


def test_fsdp_trains_the_weights_ddp_trains_and_saves_an_ordinary_folder(tmp_path):
    script = tmp_path / "train_fsdp.py"
    script.write_text(TRAIN)
    tests = os.path.join(REPO, "tests")
    for mode in ("ddp", "fsdp"):
        result = launch_two_processes(script, mode, tmp_path, tests)
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


def test_fsdp1_with_flattened_parameters_is_refused_with_what_to_set():
    from accelerate.utils import FullyShardedDataParallelPlugin

    flat = FullyShardedDataParallelPlugin(fsdp_version=1, auto_wrap_policy="transformer_based_wrap")
    assert not flat.use_orig_params  # accelerate's default for FSDP1
    with pytest.raises(ValueError, match="use_orig_params=false.*fsdp_version: 2"):
        configure_fsdp_plugin(flat, seeded_model())
    original = FullyShardedDataParallelPlugin(
        fsdp_version=1, auto_wrap_policy="transformer_based_wrap", use_orig_params=True
    )
    configure_fsdp_plugin(original, seeded_model())
    assert original.transformer_cls_names_to_wrap == ["BertLayer"]


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


# Gradual unfreezing as the trainer runs it, sharded: the real FreezingCallback (its schedule read at each step's
# start, the waiting layers' gradients dropped after the backward), 3 layers with the lowest frozen, layer-wise
# decay and a head rate, dropout and active gradient clipping (norms over shards), against DDP of the same seed.
UNFREEZING = textwrap.dedent(
    """
    import json, os, sys
    import torch
    import torch.distributed as dist
    from safetensors.torch import save_file
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.nn.parallel import DistributedDataParallel
    from transformers import TrainerState

    sys.path.insert(0, sys.argv[1])
    from conftest import TINY_ENCODER, fsdp2_prepared, seeded_model
    from hydrabert.callbacks import FreezingCallback
    from hydrabert.freezing import UnfreezingSchedule, frozen_parameter_names
    from hydrabert.engines import leave_process_group
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
            # accelerate's own FSDP2 preparation, with the plugin as MultiTaskTrainer configures it.
            wrapped, _, _ = fsdp2_prepared(model)
            inner = wrapped
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
            if rank == 0:
                wrapped.save_pretrained(os.path.join(out, "fsdp_model"), state_dict=dict(weights))  # a copy: saving edits it
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
    leave_process_group()
    """
)


@pytest.fixture(scope="module")
def unfreezing_run(tmp_path_factory):
    """One 2-process launch: the DDP run, then the FSDP run, of the same seed and batches."""
    out = tmp_path_factory.mktemp("fsdp")
    script = out / "fsdp_vs_ddp_unfreezing.py"
    script.write_text(UNFREEZING)
    result = launch_two_processes(script, os.path.join(REPO, "tests"), out)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return out


def test_fsdp_gradual_unfreezing_through_the_freezing_callback_matches_ddp(unfreezing_run):
    from safetensors.torch import load_file

    result = json.loads((unfreezing_run / "result.json").read_text())
    ddp = load_file(unfreezing_run / "ddp.safetensors")
    fsdp = load_file(unfreezing_run / "fsdp.safetensors")
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


def test_fsdp_saved_folder_carries_hydrabert_code_not_torchs(unfreezing_run):
    from safetensors.torch import load_file
    from transformers import AutoModel

    folder = unfreezing_run / "fsdp_model"
    assert "modeling_hydrabert.py" in os.listdir(folder)
    assert not [
        name for name in os.listdir(folder) if name.startswith("_fsdp")
    ]  # torch's FSDP files stay out
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_hydrabert.HydraBertModel"
    assert config["architectures"] == ["HydraBertModel"]
    loaded = AutoModel.from_pretrained(folder, trust_remote_code=True)
    assert type(loaded).__name__ == "HydraBertModel"
    gathered = load_file(unfreezing_run / "fsdp.safetensors")
    state = loaded.state_dict()
    assert set(state) == set(gathered)
    for name, tensor in gathered.items():
        assert torch.equal(state[name], tensor), name


# Checkpoint and resume under FSDP2 as the Trainer does it (transformers calls accelerate's save_fsdp_model /
# save_fsdp_optimizer at each save and load_fsdp_model / load_fsdp_optimizer on resume): 3 steps, save, then a fresh
# model with other weights loads the checkpoint and trains 3 more; the weights equal 6 uninterrupted steps. Layer 0
# waits (gradual unfreezing) until step 3, so the saved optimizer holds no state for it yet.
RESUME = textwrap.dedent(
    """
    import sys
    import torch, torch.distributed as dist
    sys.path.insert(0, sys.argv[1])
    from conftest import fsdp2_prepared, seeded_model
    from accelerate import PartialState
    from accelerate.utils.fsdp_utils import load_fsdp_model, load_fsdp_optimizer, save_fsdp_model, save_fsdp_optimizer
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from hydrabert.engines import leave_process_group
    from hydrabert.optim import complete_optimizer_state, layerwise_parameter_groups

    out, state_dict_type = sys.argv[2:4]
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    PartialState()  # accelerate's logging, which the save and load functions use, needs its state


    def prepared(shift=0.0):
        model = seeded_model()
        with torch.no_grad():
            for param in model.parameters():
                param.add_(shift)  # a resumed run must not depend on where its model started
        for param in model.encoder.embeddings.parameters():  # a freeze policy
            param.requires_grad_(False)
        wrapped, plugin, accelerator = fsdp2_prepared(model, state_dict_type=state_dict_type)
        groups = layerwise_parameter_groups(
            wrapped, learning_rate=1e-3, layerwise_lr_decay=0.8, head_learning_rate=1e-2, weight_decay=0.01,
            parameters=[(n, p) for n, p in wrapped.named_parameters() if p.requires_grad],
        )
        return wrapped, torch.optim.AdamW(groups), plugin, accelerator


    def train(model, optimizer, steps):
        for step in steps:
            generator = torch.Generator().manual_seed(100 * step + rank)
            input_ids = torch.randint(5, 60, (4, 9), generator=generator)
            labels = torch.tensor([int(torch.randint(0, 2, (1,), generator=generator)), 1, 2, 0])
            torch.manual_seed(1000 + 100 * step + rank)  # dropout: the Trainer restores the RNG state from the checkpoint
            model(
                input_ids=input_ids, attention_mask=torch.ones_like(input_ids), task_ids=torch.tensor([0, 0, 1, 1]),
                labels=labels,
            ).loss.backward()
            if step < 3:  # layer 0 waits for its turn: its gradients are dropped, as FreezingCallback does
                for name, param in model.named_parameters():
                    if name.startswith("encoder.encoder.layer.0."):
                        param.grad = None
            optimizer.step()
            optimizer.zero_grad()


    def full(model):
        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


    model, optimizer, _, _ = prepared()
    train(model, optimizer, range(6))
    straight = full(model)

    model, optimizer, plugin, accelerator = prepared()
    train(model, optimizer, range(3))
    completed = complete_optimizer_state(optimizer)  # what MultiTaskTrainer._save_checkpoint does under FSDP
    names = {param: name for name, param in model.named_parameters()}
    waiting = sorted(name for name in names.values() if name.startswith("encoder.encoder.layer.0."))
    assert sorted(names[param] for param in completed) == waiting, [names[param] for param in completed]
    assert all(param.grad is None for param in completed) and complete_optimizer_state(optimizer) == []
    save_fsdp_model(plugin, accelerator, model, f"{out}/checkpoint-3")
    save_fsdp_optimizer(plugin, accelerator, optimizer, model, f"{out}/checkpoint-3")
    at_save = full(model)

    model, optimizer, plugin, accelerator = prepared(shift=0.05)
    load_fsdp_model(plugin, accelerator, model, f"{out}/checkpoint-3")
    load_fsdp_optimizer(plugin, accelerator, optimizer, model, f"{out}/checkpoint-3")
    train(model, optimizer, range(3, 6))
    resumed = full(model)
    if rank == 0:
        torch.save({"straight": straight, "resumed": resumed, "at_save": at_save}, f"{out}/weights.pt")
    leave_process_group()
    """
)


@pytest.mark.parametrize("state_dict_type", ["FULL_STATE_DICT", "SHARDED_STATE_DICT"])
def test_an_fsdp_checkpoint_resumes_to_the_weights_of_the_uninterrupted_run(tmp_path, state_dict_type):
    script = tmp_path / "resume_fsdp.py"
    script.write_text(RESUME)
    result = launch_two_processes(script, os.path.join(REPO, "tests"), tmp_path, state_dict_type)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    weights = torch.load(tmp_path / "weights.pt")
    straight, resumed, at_save = weights["straight"], weights["resumed"], weights["at_save"]
    assert set(straight) == set(resumed)
    worst = max(float((straight[k].float() - resumed[k].float()).abs().max()) for k in straight)
    assert worst <= 1e-6, worst
    # The second half trained (layer 0 only from step 3 on), so the equality is not two untouched copies.
    moved = "encoder.encoder.layer.0.attention.self.query.weight"
    assert torch.equal(at_save[moved], seeded_model().state_dict()[moved])
    assert not torch.equal(resumed[moved], at_save[moved])
    if state_dict_type == "SHARDED_STATE_DICT":
        assert any(
            path.name.startswith("pytorch_model_fsdp") for path in (tmp_path / "checkpoint-3").iterdir()
        )


def test_completing_the_optimizer_state_changes_no_step_adamw_takes():
    """The state given to a parameter without a gradient yet is the state AdamW's first step would build."""
    from hydrabert.optim import complete_optimizer_state

    def run(complete: bool):
        torch.manual_seed(0)
        trained, waiting = (
            torch.nn.Linear(3, 2),
            torch.nn.Linear(2, 2),
        )  # `waiting` has no gradient for 2 steps
        optimizer = torch.optim.AdamW(
            [*trained.parameters(), *waiting.parameters()], lr=0.1, weight_decay=0.1
        )
        for step in range(4):
            loss = waiting(trained(torch.randn(5, 3))).sum()
            loss.backward()
            if step < 2:
                waiting.zero_grad(set_to_none=True)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if complete and step == 0:
                before = [p.detach().clone() for p in waiting.parameters()]
                completed = complete_optimizer_state(optimizer)
                assert completed == list(waiting.parameters())
                assert all(
                    torch.equal(a, b) for a, b in zip(before, waiting.parameters(), strict=True)
                )  # lr 0
                assert all(float(optimizer.state[p]["step"]) == 0 for p in completed)
                assert all(p.grad is None for p in completed)
        return [p.detach() for p in [*trained.parameters(), *waiting.parameters()]]

    for lazy, completed in zip(run(False), run(True), strict=True):
        assert torch.equal(lazy, completed)


def test_leaving_a_gloo_group_uses_the_barrier_that_leaves_no_work_on_gloo_s_threads(tmp_path, monkeypatch):
    """leave_process_group on gloo: monitored_barrier (send/recv on the calling thread), never barrier(), whose
    work releases the collectives in flight on a worker thread, which aborted a process at exit (engines.py)."""
    import torch.distributed as dist

    from hydrabert.engines import leave_process_group

    called = []
    monitored = dist.monitored_barrier
    monkeypatch.setattr(dist, "barrier", lambda *a, **k: called.append("barrier"))
    monkeypatch.setattr(
        dist, "monitored_barrier", lambda *a, **k: called.append("monitored") or monitored(*a, **k)
    )
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        dist.all_reduce(torch.ones(2))
        leave_process_group()
        assert called == ["monitored"]
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    leave_process_group()  # outside a distributed run: nothing to do
    assert called == ["monitored"]
