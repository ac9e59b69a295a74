"""Make the HydraBERT pipeline travel with the model.

`transformers.pipeline(model=path_or_repo, trust_remote_code=True)` builds a custom pipeline when the
model's `config.json` has a `custom_pipelines` entry (`{"task": {"impl": "module.Class", "pt":
[auto class names], ...}}`) and the module file sits next to the weights: with exactly one entry and no
`task` argument, `pipeline()` picks that task itself. `HydraBertModel.save_pretrained` writes both: the
entry is `pipeline_hydrabert.custom_pipelines_entry()`, and the file, a relative import of the modeling
file, is copied with the code. Here: `register_pipeline` makes `pipeline("hydrabert-multitask",
model=model_object, tokenizer=...)` work in this process (where hydrabert is installed), and
`save_pipeline_files` writes config, code and tokenizer without the weights.

Why not in `pipeline_hydrabert.py` itself: that file runs as remote code on machines without hydrabert,
and importing it must not touch the global pipeline registry there.
"""

from __future__ import annotations

import json
import os

from transformers import AutoModel
from transformers.dynamic_module_utils import custom_object_save
from transformers.pipelines import PIPELINE_REGISTRY

from .pipeline_hydrabert import PIPELINE_TASK, HydraBertPipeline, custom_pipelines_entry


def register_pipeline() -> None:
    """Register `"hydrabert-multitask"` with transformers' pipeline registry (idempotent)."""
    registered = PIPELINE_REGISTRY.supported_tasks.get(PIPELINE_TASK)
    if registered is not None and registered.get("impl") is HydraBertPipeline:
        return
    PIPELINE_REGISTRY.register_pipeline(
        PIPELINE_TASK, pipeline_class=HydraBertPipeline, pt_model=AutoModel, type="text"
    )


def save_pipeline_files(model, tokenizer, output_dir: str | os.PathLike) -> list[str]:
    """Make `output_dir` loadable with `pipeline(model=output_dir, trust_remote_code=True)` without writing
    the weights: `config.json` with `custom_pipelines` and `auto_map`, the three `*_hydrabert.py` files and
    the tokenizer (pass `None` when it is saved elsewhere). `model.save_pretrained` writes the same config and
    code itself; this is for a folder whose weights are written by something else. Idempotent; works before
    or after the weights. Returns the paths written.
    """
    os.makedirs(output_dir, exist_ok=True)
    existing = dict(getattr(model.config, "custom_pipelines", None) or {})
    model.config.custom_pipelines = {**existing, **custom_pipelines_entry()}
    written = []
    if getattr(model, "_auto_class", None) is not None:
        # What save_pretrained does for the code: auto_map["AutoModel"] plus the modeling file and its
        # relative imports (configuration and pipeline files).
        written += [str(p) for p in custom_object_save(model, output_dir, config=model.config)]
    model.config.save_pretrained(output_dir)
    config_path = os.path.join(output_dir, "config.json")
    # Check the written file rather than trusting it (a subclass could override to_dict).
    with open(config_path, encoding="utf-8") as f:
        saved = json.load(f)
    if saved.get("custom_pipelines", {}).get(PIPELINE_TASK) != custom_pipelines_entry()[PIPELINE_TASK]:
        raise RuntimeError(f"{config_path} was written without custom_pipelines[{PIPELINE_TASK!r}]")
    written.append(config_path)
    if tokenizer is not None:
        written += [str(p) for p in tokenizer.save_pretrained(output_dir)]
    return written


__all__ = ["PIPELINE_TASK", "custom_pipelines_entry", "register_pipeline", "save_pipeline_files"]
