"""DeepSpeed is not yet verified on a GPU (docs/scaling.md); what cannot work with it by construction is refused
when the training arguments are made, before DeepSpeed (not installed here) is even imported (issue 25)."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import pytest

from hydrabert.engines import check_deepspeed, zero_stage
from hydrabert.trainer import MultiTaskTrainingArguments

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ZERO2 = {"zero_optimization": {"stage": 2}}
ZERO3 = {"zero_optimization": {"stage": 3}}


@pytest.mark.parametrize(
    ("config", "options", "message"),
    [
        ({**ZERO2, "optimizer": {"type": "AdamW"}}, {}, "'optimizer' block.*layer-wise learning rates"),
        (ZERO2, {"gradual_unfreezing": True}, "gradual_unfreezing is not available with DeepSpeed"),
        (ZERO3, {"freeze_policy": "encoder"}, "feature cache.*cache_frozen_encoder=False, or use ZeRO-2"),
        (ZERO3, {"embedding_preservation_weight": 1.0}, "ZeRO-3 has partitioned"),
    ],
)
def test_combinations_that_cannot_work_are_refused_before_deepspeed_starts(
    tmp_path, config, options, message
):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match=message):
        MultiTaskTrainingArguments(output_dir=str(tmp_path), deepspeed=str(path), report_to=[], **options)


@pytest.mark.parametrize("name", ["deepspeed_zero2.json", "deepspeed_zero3.json"])
def test_the_shipped_configs_pass_with_the_default_recipe(name):
    path = os.path.join(REPO, "configs", "engines", name)
    with open(path, encoding="utf-8") as handle:
        config = json.load(handle)
    assert zero_stage(config) == int(name[-6])
    defaults = SimpleNamespace(
        deepspeed=path, gradual_unfreezing=False, freeze_policy="none", embedding_preservation_weight=0.0
    )
    check_deepspeed(defaults)  # nothing refused
    # ... and ZeRO-3 allows a frozen encoder once its cache is off.
    check_deepspeed(
        SimpleNamespace(**{**vars(defaults), "freeze_policy": "encoder", "cache_frozen_encoder": False})
    )
