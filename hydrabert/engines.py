"""What hydrabert's training policies need of a distributed engine: FSDP's wrapping, and the combinations that
cannot work, checked when the arguments are made.

FSDP (accelerate's FSDP2, `accelerate launch --config_file configs/engines/accelerate_fsdp.yaml run_mtl.py ...`): the
units are the encoder's transformer blocks (`fsdp_block_classes`). Not the model's whole `_no_split_modules`:
transformers gathers the encoder's there, `BertEmbeddings` included, and accelerate, which wraps each of those,
then also carves the input embedding (`word_embeddings`, inside `BertEmbeddings`) into a unit of its own and
fails ("Invariant encountered: value was None"). `MultiTaskTrainer` names the blocks to accelerate's plugin
unless the config names them. The frozen-encoder feature cache is refused under FSDP: it runs the encoder
outside the sharded model's forward.

DeepSpeed (the Trainer's `deepspeed=` config) is not yet verified on a GPU (docs/scaling.md): these checks
refuse, before any work, the combinations that cannot work by construction, and say what to use instead:
- an `optimizer` block in the DeepSpeed config: DeepSpeed would build its own optimizer over one parameter
  group, dropping the layer-wise learning rates `MultiTaskTrainer.create_optimizer` builds;
- gradual unfreezing: it drops the waiting layers' gradients between backward and the optimizer step, and
  DeepSpeed's ZeRO keeps gradients in its own partitioned buffers, out of the parameters' reach;
- under ZeRO-3 (parameters partitioned across processes): the frozen-encoder feature cache and the
  embedding-preservation teacher run the encoder outside the engine's forward, where a partitioned parameter
  is an empty placeholder.
"""

from __future__ import annotations

import json
import os
import re


def deepspeed_config(value) -> dict | None:
    """The DeepSpeed config a `deepspeed=` argument names (a dict, a JSON file, or a JSON string), or None."""
    if value is None or value == "":
        return None
    if isinstance(value, dict):
        return value
    if isinstance(value, str) and os.path.isfile(value):
        with open(value, encoding="utf-8") as handle:
            return json.load(handle)
    try:
        return json.loads(value)
    except (TypeError, json.JSONDecodeError):
        raise ValueError(
            f"deepspeed must be a DeepSpeed config: a dict, a JSON file or a JSON string; got {value!r}"
        ) from None


def zero_stage(config: dict) -> int:
    stage = (config.get("zero_optimization") or {}).get("stage", 0)
    return int(stage) if stage != "auto" else 0


def check_deepspeed(args) -> None:
    """Refuses what cannot work with the DeepSpeed config of `args` (a `MultiTaskTrainingArguments`)."""
    config = deepspeed_config(getattr(args, "deepspeed", None))
    if config is None:
        return
    if "optimizer" in config:
        raise ValueError(
            "the DeepSpeed config has an 'optimizer' block: DeepSpeed would build its optimizer over one parameter "
            "group and drop hydrabert's layer-wise learning rates; remove the block (the Trainer's optimizer, "
            "--optim, then runs with DeepSpeed)"
        )
    if args.gradual_unfreezing:
        raise ValueError(
            "gradual_unfreezing is not available with DeepSpeed: it drops the waiting layers' gradients after the "
            "backward pass, which ZeRO keeps in its own buffers; train with DDP or FSDP, or without unfreezing"
        )
    if zero_stage(config) >= 3:
        frozen_cache = args.freeze_policy in ("all", "encoder") and getattr(
            args, "cache_frozen_encoder", True
        )
        if frozen_cache:
            raise ValueError(
                "the frozen-encoder feature cache runs the encoder outside DeepSpeed's forward, where ZeRO-3 "
                "leaves partitioned weights empty: set cache_frozen_encoder=False, or use ZeRO-2"
            )
        if args.embedding_preservation_weight > 0:
            raise ValueError(
                "embedding_preservation_weight copies the model as training starts, which ZeRO-3 has partitioned "
                "across processes: use ZeRO-2, FSDP or DDP, or set it to 0"
            )


# A transformer block's module name: BERT/RoBERTa/ELECTRA "encoder.layer.3", DistilBERT "transformer.layer.3", others
# "layers.3" (the pattern of modeling_hydrabert's layer depths).
_BLOCK_NAME = re.compile(r".*\.layers?\.\d+")


def fsdp_block_classes(model) -> list[str]:
    """The class names of the encoder's transformer blocks: FSDP's units (one all-gather per block)."""
    encoder = getattr(model, "encoder", model)
    return sorted(
        {type(module).__name__ for name, module in encoder.named_modules() if _BLOCK_NAME.fullmatch(name)}
    )


def configure_fsdp_plugin(plugin, model) -> None:
    """With transformer-based wrapping and no classes named in the config, wrap the encoder's blocks. FSDP1 with
    flattened parameters is refused: see below."""
    if plugin is None:
        return
    # accelerate before 1.6 has FSDP1 only, and no fsdp_version.
    if getattr(plugin, "fsdp_version", 1) == 1 and not getattr(plugin, "use_orig_params", False):
        # FSDP1 without use_orig_params (accelerate's default) flattens each unit into one parameter, while the
        # layer-wise groups split a block's weights from its biases and LayerNorms by name, and a unit that mixes
        # frozen and trainable weights fails in FSDP itself ("FlatParameter requires uniform requires_grad").
        raise ValueError(
            "FSDP1 with use_orig_params=false flattens each unit's parameters into one, which hydrabert's layer-wise "
            "learning rates and freeze policies cannot address: set fsdp_version: 2 in the accelerate config "
            "(configs/engines/accelerate_fsdp.yaml), or fsdp_use_orig_params: true"
        )
    if getattr(plugin, "transformer_cls_names_to_wrap", None):
        return
    policy = getattr(plugin, "auto_wrap_policy", None)
    if policy is None or "transformer" in str(policy).lower():
        plugin.transformer_cls_names_to_wrap = fsdp_block_classes(model)


def leave_process_group() -> None:
    """At the end of a distributed run: wait for every process, then destroy the process group. The Trainer never
    destroys it; nothing to do outside a distributed run.

    Why, and why this barrier: a gloo worker thread that drops the last reference to a finished collective's
    tensors must take the GIL; if the main thread is already finalizing the interpreter, that thread exits inside
    a C++ destructor and the process aborts (SIGABRT, "terminate called without an active exception"), which the
    launcher reports as a failed run. `destroy_process_group()` does not join gloo's worker threads while anything
    (an FSDP model's device mesh, say) still references the group, so they live until exit. `dist.barrier()` on
    gloo is itself such a collective: its work keeps weak references to the collectives still in flight and is
    destroyed on a worker thread after the caller has been released, taking them with it (seen in a core dump,
    1 run in ~15 of the FSDP resume test). `monitored_barrier` (gloo's own send/recv, run on the calling thread
    with tensors Python never saw) leaves nothing behind on the worker threads."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if dist.get_backend() == dist.Backend.GLOO:
            dist.monitored_barrier(wait_all_ranks=True)
        else:
            dist.barrier()
        dist.destroy_process_group()


def fsdp_requested(args) -> bool:
    """FSDP through the Trainer's `fsdp` argument or `accelerate launch` with an FSDP config."""
    return bool(getattr(args, "fsdp", None)) or os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in (
        "1",
        "true",
    )


def check_fsdp(args) -> None:
    if not fsdp_requested(args):
        return
    if args.freeze_policy in ("all", "encoder") and getattr(args, "cache_frozen_encoder", True):
        raise ValueError(
            "the frozen-encoder feature cache runs the encoder outside FSDP's sharded forward: set "
            "cache_frozen_encoder=False (the encoder stays frozen; each batch runs it), or train with DDP"
        )


__all__ = [
    "check_deepspeed",
    "check_fsdp",
    "configure_fsdp_plugin",
    "deepspeed_config",
    "fsdp_block_classes",
    "fsdp_requested",
    "leave_process_group",
    "zero_stage",
]
