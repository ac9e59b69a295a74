"""Make the HydraBERT pipeline travel with the model.

`transformers.pipeline(model=path_or_repo, trust_remote_code=True)` builds a custom pipeline when the
model's `config.json` has a `custom_pipelines` entry (`{"task": {"impl": "module.Class", "pt":
[auto class names], ...}}`) and the module file sits next to the weights: with exactly one entry and no
`task` argument, `pipeline()` picks that task itself. `save_pipeline_files` writes both;
`register_pipeline` makes `pipeline("hydrabert-multitask", model=model_object, tokenizer=...)` work in
this process (where hydrabert is installed).

Why not in `pipeline_hydrabert.py` itself: that file runs as remote code on machines without hydrabert,
and importing it must not touch the global pipeline registry there.
"""

from __future__ import annotations

import json
import os
import shutil

from transformers import AutoModel
from transformers.dynamic_module_utils import custom_object_save
from transformers.pipelines import PIPELINE_REGISTRY

from . import pipeline_hydrabert
from .pipeline_hydrabert import HydraBertPipeline

PIPELINE_TASK = "hydrabert-multitask"
PIPELINE_FILE = os.path.basename(pipeline_hydrabert.__file__)


def custom_pipelines_entry() -> dict:
    """The `custom_pipelines` value for a HydraBERT `config.json` (what `Pipeline.save_pretrained` would
    write for a registered pipeline)."""
    return {
        PIPELINE_TASK: {
            "impl": f"{os.path.splitext(PIPELINE_FILE)[0]}.{HydraBertPipeline.__name__}",
            "pt": ["AutoModel"],
            "type": "text",
        }
    }


def register_pipeline() -> None:
    """Register `"hydrabert-multitask"` with transformers' pipeline registry (idempotent)."""
    registered = PIPELINE_REGISTRY.supported_tasks.get(PIPELINE_TASK)
    if registered is not None and registered.get("impl") is HydraBertPipeline:
        return
    PIPELINE_REGISTRY.register_pipeline(
        PIPELINE_TASK, pipeline_class=HydraBertPipeline, pt_model=AutoModel, type="text"
    )


def save_pipeline_files(model, tokenizer, output_dir: str | os.PathLike) -> list[str]:
    """Make `output_dir` loadable with `pipeline(model=output_dir, trust_remote_code=True)`.

    Sets `model.config.custom_pipelines` (so every later `save_pretrained`/`push_to_hub` of this model keeps
    it), writes `config.json` (and the configuration file it needs), copies `pipeline_hydrabert.py` next to
    the weights and saves the tokenizer (the pipeline loads it from the same folder; pass `None` when it is
    saved elsewhere). The weights are not written: call this before or after `save_pretrained`/
    `Trainer.save_model`, in either order. Idempotent. Returns the paths written.
    """
    os.makedirs(output_dir, exist_ok=True)
    entry = custom_pipelines_entry()
    existing = dict(getattr(model.config, "custom_pipelines", None) or {})
    model.config.custom_pipelines = {**existing, **entry}
    written = []
    if getattr(model, "_auto_class", None) is not None:
        # What save_pretrained does for the code: auto_map["AutoModel"] plus the modeling and
        # configuration files, so config.json is complete even before the weights are saved.
        written += [str(p) for p in custom_object_save(model, output_dir, config=model.config)]
    model.config.save_pretrained(output_dir)
    config_path = os.path.join(output_dir, "config.json")
    # save_pretrained writes auto_map from the class registration; check the result instead of trusting it.
    with open(config_path, encoding="utf-8") as f:
        saved = json.load(f)
    if saved.get("custom_pipelines", {}).get(PIPELINE_TASK) != entry[PIPELINE_TASK]:
        raise RuntimeError(f"{config_path} was written without custom_pipelines[{PIPELINE_TASK!r}]")
    destination = os.path.join(output_dir, PIPELINE_FILE)
    shutil.copyfile(pipeline_hydrabert.__file__, destination)
    written += [config_path, destination]
    if tokenizer is not None:
        written += [str(p) for p in tokenizer.save_pretrained(output_dir)]
    return written


__all__ = ["PIPELINE_TASK", "custom_pipelines_entry", "register_pipeline", "save_pipeline_files"]
