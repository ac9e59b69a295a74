"""hydrabert: one BERT body, many task heads.

Importing the package registers the model with the Auto classes, so that
`AutoConfig`/`AutoModel` know `model_type="hydrabert"` once hydrabert is installed; a model saved with
`save_pretrained` also carries its code (`auto_map`), so `trust_remote_code=True` loads it anywhere.
"""

from transformers import AutoConfig, AutoModel

from .configuration_hydrabert import HydraBertConfig
from .modeling_hydrabert import HydraBertModel, HydraBertOutput, HydraBertPreTrainedModel

__version__ = "0.1.0"

AutoConfig.register("hydrabert", HydraBertConfig, exist_ok=True)
AutoModel.register(HydraBertConfig, HydraBertModel, exist_ok=True)
# save_pretrained writes `auto_map` and copies the two *_hydrabert.py files next to the weights.
HydraBertConfig.register_for_auto_class()
HydraBertModel.register_for_auto_class("AutoModel")

__all__ = ["HydraBertConfig", "HydraBertModel", "HydraBertOutput", "HydraBertPreTrainedModel", "__version__"]
