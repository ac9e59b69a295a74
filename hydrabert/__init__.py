"""hydrabert: one BERT body, many task heads.

Importing the package registers the model with the Auto classes, so that
`AutoConfig`/`AutoModel` know `model_type="hydrabert"` once hydrabert is installed; a model saved with
`save_pretrained` also carries its code (`auto_map`), so `trust_remote_code=True` loads it anywhere.
"""

from transformers import AutoConfig

from .configuration_hydrabert import HydraBertConfig

__version__ = "0.1.0"

# Without torch (an ONNX Runtime deployment), the config and `hydrabert.export.OnnxPredictor` still import;
# the model classes say what is missing when asked for.
try:
    import torch  # noqa: F401

    _HAS_TORCH = True
except ImportError:
    _HAS_TORCH = False
_TORCH_CLASSES = ("HydraBertModel", "HydraBertOutput", "HydraBertPreTrainedModel")

if _HAS_TORCH:
    from transformers import AutoModel

    from .modeling_hydrabert import HydraBertModel, HydraBertOutput, HydraBertPreTrainedModel


def __getattr__(name):
    if name in _TORCH_CLASSES:
        raise ImportError(
            f"hydrabert.{name} needs torch (pip install torch); without it, run an exported graph with "
            "hydrabert.export.OnnxPredictor"
        )
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


AutoConfig.register("hydrabert", HydraBertConfig, exist_ok=True)
# save_pretrained writes `auto_map` and copies the two *_hydrabert.py files next to the weights.
HydraBertConfig.register_for_auto_class()
if _HAS_TORCH:
    # model.export_*() call hydrabert.export, loaded on first use: the travelling model file cannot import it.
    HydraBertModel._load_exporter = staticmethod(_load_exporter)
    AutoModel.register(HydraBertConfig, HydraBertModel, exist_ok=True)
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
