"""hydrabert: one BERT body, many task heads.

Importing the package registers the model with the Auto classes, so that
`AutoConfig`/`AutoModel` know `model_type="hydrabert"` once hydrabert is installed; a model saved with
`save_pretrained` also carries its code (`auto_map`), so `trust_remote_code=True` loads it anywhere.
"""

from transformers import AutoConfig, AutoModel

from .configuration_hydrabert import HydraBertConfig
from .modeling_hydrabert import HydraBertModel, HydraBertOutput, HydraBertPreTrainedModel

__version__ = "0.1.0"


def __getattr__(name):
    # The training side (datasets, evaluate, accelerate) loads only when asked for, so that
    # `import hydrabert` stays light for inference.
    lazy = {
        "MultiTaskTrainer": "trainer",
        "MultiTaskTrainingArguments": "trainer",
        "ModelCardCallback": "model_card",
        "HydraBertCardData": "model_card",
        "generate_model_card": "model_card",
        "save_pipeline_files": "pipeline_registration",
        "register_pipeline": "pipeline_registration",
    }
    if name in lazy:
        import importlib

        return getattr(importlib.import_module(f".{lazy[name]}", __name__), name)
    raise AttributeError(f"module 'hydrabert' has no attribute {name!r}")


def _load_exporter():
    import importlib

    return importlib.import_module(".export", __name__)


# model.export_*() call hydrabert.export, loaded on first use: the travelling model file cannot import it.
HydraBertModel._load_exporter = staticmethod(_load_exporter)

AutoConfig.register("hydrabert", HydraBertConfig, exist_ok=True)
AutoModel.register(HydraBertConfig, HydraBertModel, exist_ok=True)
# save_pretrained writes `auto_map` and copies the two *_hydrabert.py files next to the weights.
HydraBertConfig.register_for_auto_class()
HydraBertModel.register_for_auto_class("AutoModel")

__all__ = [
    "HydraBertCardData",
    "HydraBertConfig",
    "HydraBertModel",
    "HydraBertOutput",
    "HydraBertPreTrainedModel",
    "ModelCardCallback",
    "MultiTaskTrainer",
    "MultiTaskTrainingArguments",
    "__version__",
    "generate_model_card",
    "register_pipeline",
    "save_pipeline_files",
]
