"""FSDP2 (torch's `fully_shard`) for a `HydraBertModel`: what to wrap, how to shard, how to save, and the run
settings that cannot work sharded, refused before any work.

`accelerate launch --config_file configs/accelerate_fsdp.yaml run_mtl.py CONFIG` shards the model inside
`Trainer.train()`; `MultiTaskTrainer` calls `check_fsdp_run` when accelerate enabled FSDP. The same steps as
functions (`shard_model`, `save_full_pretrained`) serve a plain-torch loop and the tests (tests/test_fsdp.py),
which run them on 2 CPU processes: accelerate enables FSDP on GPU-like devices only.

- What is wrapped: the model's `_no_split_modules` (transformers gathers the encoder's own, e.g. BertModel's
  `BertEmbeddings` and `BertLayer`, onto the wrapper in `post_init`), less the classes that hold the input
  embeddings: accelerate 1.16 shards `get_input_embeddings()` as a unit of its own after the layers, and a
  `BertEmbeddings` already sharded around it makes that second `fully_shard` fail (its weight is a DTensor by
  then: "value was None when it should not be", torch 2.13). Their other parameters join the root's unit.
- The layer-wise parameter groups (optim.py) work on the sharded parameters: FSDP2 keeps each original parameter
  (a DTensor shard) under its name, so groups built after sharding, or built before and swapped by accelerate
  (transformers creates the optimizer before `accelerator.prepare` under FSDP2), hold the same tensors.
- Every freeze policy: FSDP2 shards frozen and trainable parameters in one unit. Gradual unfreezing: as under
  DDP, waiting layers keep `requires_grad` and their (sharded) gradients are dropped after the backward
  (`FreezingCallback.drop_waiting_gradients`).
- Refused: FSDP1 without `use_orig_params` (flat parameters cannot mix frozen and trainable parameters, nor sit
  in layer-wise groups), and the frozen-encoder feature cache (it runs the encoder outside the sharded forward).
"""

from __future__ import annotations

import contextlib
import os

from torch import nn


def fsdp_wrap_class_names(model: nn.Module) -> list[str]:
    """The module classes to shard one by one (each an FSDP unit), from `model._no_split_modules`: those the model
    instantiates, less the ones holding the input embeddings (sharded on their own; module docstring)."""
    names = sorted(getattr(model, "_no_split_modules", None) or ())
    input_embeddings = model.get_input_embeddings()
    holders = {
        type(module).__name__
        for module in model.modules()
        if module is not input_embeddings and any(child is input_embeddings for child in module.modules())
    }
    present = {type(module).__name__ for module in model.modules()}
    wrapped = [name for name in names if name in present and name not in holders]
    if not wrapped:
        raise ValueError(
            f"{type(model).__name__} declares no encoder layer class to shard (_no_split_modules={names}): its "
            "encoder's model class has no `_no_split_modules`. Name the layer class in the accelerate config "
            "(fsdp_transformer_layer_cls_to_wrap: e.g. DebertaV2Layer)."
        )
    return wrapped


def shard_model(model: nn.Module, **fully_shard_kwargs) -> nn.Module:
    """`fully_shard` as accelerate's FSDP2 TRANSFORMER_BASED_WRAP applies it: each encoder layer (the classes of
    `fsdp_wrap_class_names`), then the input embeddings, then the root (projection, adapter, heads and what
    is left). In place; returns the model. Needs an initialised process group."""
    from torch.distributed.fsdp import fully_shard

    names = set(fsdp_wrap_class_names(model))
    for module in list(model.modules()):
        if type(module).__name__ in names:
            fully_shard(module, **fully_shard_kwargs)
    fully_shard(model.get_input_embeddings(), **fully_shard_kwargs)
    fully_shard(model, **fully_shard_kwargs)
    return model


@contextlib.contextmanager
def unsharded_class(model: nn.Module):
    """`model` with its own class for the duration: `fully_shard` swaps it for `FSDP<Class>`, defined in torch, and
    `save_pretrained` would then copy torch's FSDP source files next to the weights and write
    `"AutoModel": "_fsdp_init.FSDPHydraBertModel"` in config.json, a folder that no longer loads."""
    from torch.distributed.fsdp import FSDPModule

    sharded_class = type(model)
    if not issubclass(sharded_class, FSDPModule):
        yield model
        return
    model.__class__ = next(cls for cls in sharded_class.__mro__[1:] if not issubclass(cls, FSDPModule))
    try:
        yield model
    finally:
        model.__class__ = sharded_class


def save_full_pretrained(model: nn.Module, folder: str | os.PathLike, **save_kwargs) -> None:
    """Gathers the sharded weights (every process must call this) and saves an ordinary hydrabert folder from the
    main process: weights, config and code files, loadable with `AutoModel.from_pretrained(folder,
    trust_remote_code=True)`."""
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state_dict = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if dist.get_rank() == 0:
        with unsharded_class(model):
            model.save_pretrained(folder, state_dict=state_dict, **save_kwargs)
    dist.barrier()


def check_fsdp_run(trainer) -> None:
    """For a `MultiTaskTrainer` whose accelerator enabled FSDP: refuses the settings that cannot work sharded, each
    with what to use instead, and points accelerate's transformer-based auto-wrap at `fsdp_wrap_class_names`
    unless the accelerate config names the classes itself."""
    plugin = trainer.accelerator.state.fsdp_plugin
    if getattr(plugin, "fsdp_version", 1) == 1 and not plugin.use_orig_params:
        raise ValueError(
            "FSDP1 with use_orig_params=False flattens each unit's parameters into one, which cannot hold frozen and "
            "trainable parameters together (freeze policies, gradual unfreezing) nor sit in the layer-wise learning "
            "rate groups: use fsdp_version: 2 (configs/accelerate_fsdp.yaml)."
        )
    frozen_encoder = getattr(trainer, "frozen_encoder", None)
    if frozen_encoder is not None and frozen_encoder.cache_enabled:
        raise ValueError(
            "cache_frozen_encoder=True under FSDP: the feature cache runs the frozen encoder outside the sharded "
            "forward, where FSDP has not gathered its weights. Set cache_frozen_encoder=False (the frozen encoder "
            "then runs in eval mode at every step) or train without FSDP."
        )
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

    policy = plugin.auto_wrap_policy
    is_transformer_based = policy is transformer_auto_wrap_policy or getattr(policy, "func", None) is (
        transformer_auto_wrap_policy
    )
    if is_transformer_based and plugin.transformer_cls_names_to_wrap is None:
        model = trainer.accelerator.unwrap_model(trainer.model)
        plugin.transformer_cls_names_to_wrap = fsdp_wrap_class_names(model)


def check_deepspeed_run(trainer) -> None:
    """For a `MultiTaskTrainer` under DeepSpeed (not yet verified, docs/scaling.md): refuses the one combination known
    not to work. accelerate runs DeepSpeed's optimizer step inside the backward, before `training_step` could drop
    the gradients of layers waiting to be unfrozen, so they would train from the first step."""
    if trainer.freezing.unfreezing is not None:
        raise ValueError(
            "gradual_unfreezing under DeepSpeed: DeepSpeed steps the optimizer inside the backward, so the layers "
            "waiting to be unfrozen would train from the first step. Use DDP or FSDP (configs/accelerate_fsdp.yaml) "
            "for gradual unfreezing, or freeze_lower_layers under DeepSpeed."
        )


__all__ = [
    "check_deepspeed_run",
    "check_fsdp_run",
    "fsdp_wrap_class_names",
    "save_full_pretrained",
    "shard_model",
    "unsharded_class",
]
