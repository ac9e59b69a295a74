"""The FakeHub server driven by the REAL huggingface_hub client and transformers, fully offline."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap

import hub_fixtures
import pytest
import torch
from hub_server import FakeHub, git_blob_sha1, start_hub_server, stop_hub_server
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    hf_hub_download,
    snapshot_download,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from transformers import AutoConfig, BertConfig, BertModel

hub_server = hub_fixtures.hub_server  # the fixture (tests/conftest.py may also import it)


def tiny_bert() -> BertModel:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37
    )
    return BertModel(config).eval()


def state_digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def test_server_start_stop_and_raw_protocol(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # conftest may have set HF_HUB_OFFLINE=1
    server, thread, endpoint = start_hub_server()
    try:
        assert endpoint.startswith("http://127.0.0.1:")
        assert thread.daemon and thread.is_alive()
        hub: FakeHub = server.hub
        hub.commit_files("ns/raw", {"a.txt": b"hello"})
        api = HfApi(endpoint=endpoint, token="hf_fake")
        info = api.model_info("ns/raw")
        assert len(info.sha) == 40
        assert sorted(s.rfilename for s in info.siblings) == [".gitattributes", "a.txt"]
        assert hub.requests == [("GET", "/api/models/ns/raw")]
    finally:
        stop_hub_server(server, thread)
    assert not thread.is_alive()
    stop_hub_server(server, thread)  # idempotent


def test_create_upload_list_download(hub_server, tmp_path):
    api = HfApi()
    assert api.endpoint == hub_server.endpoint
    assert api.whoami()["name"] == "test-user"

    url = api.create_repo("test-user/files")
    assert url.repo_id == "test-user/files" and url.startswith(hub_server.endpoint)
    with pytest.raises(HfHubHTTPError) as excinfo:
        api.create_repo("test-user/files")
    assert excinfo.value.response.status_code == 409
    assert api.create_repo("test-user/files", exist_ok=True).repo_id == "test-user/files"
    # No namespace: the server puts the repo under the token's user, like the Hub.
    assert api.create_repo("no-namespace").repo_id == "test-user/no-namespace"

    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("alpha")
    (folder / "sub" / "b.txt").write_text("beta")
    commit = api.upload_folder(repo_id="test-user/files", folder_path=folder, commit_message="add files")
    assert hub_server.hub.count("POST", "/api/models/test-user/files/commit/main") == 1
    assert api.list_repo_files("test-user/files") == [".gitattributes", "a.txt", "sub/b.txt"]

    tree = {e.path: e for e in api.list_repo_tree("test-user/files", recursive=True, revision=commit.oid)}
    assert set(tree) == {".gitattributes", "a.txt", "sub", "sub/b.txt"}
    assert tree["sub/b.txt"].blob_id == git_blob_sha1(b"beta") and tree["sub/b.txt"].lfs is None
    assert [e.path for e in api.list_repo_tree("test-user/files")] == ["sub", ".gitattributes", "a.txt"]

    path = hf_hub_download("test-user/files", "sub/b.txt", revision=commit.oid)
    assert open(path).read() == "beta"
    assert str(hub_server.hf_home) in path  # the test's own cache

    api.create_commit(
        "test-user/files",
        [CommitOperationDelete("a.txt"), CommitOperationAdd("c.txt", b"gamma")],
        commit_message="delete a, add c",
    )
    assert api.list_repo_files("test-user/files") == [".gitattributes", "c.txt", "sub/b.txt"]
    assert hub_server.hub.file_bytes("test-user/files", "a.txt", revision=commit.oid) == b"alpha"
    commits = api.list_repo_commits("test-user/files")
    assert [c.title for c in commits] == ["delete a, add c", "add files", "initial commit"]

    # Stale parent commit is refused (412), pull requests get their own ref.
    with pytest.raises(HfHubHTTPError) as excinfo:
        api.create_commit(
            "test-user/files",
            [CommitOperationAdd("d.txt", b"d")],
            commit_message="stale",
            parent_commit=commit.oid,
        )
    assert excinfo.value.response.status_code == 412
    pr = api.create_commit(
        "test-user/files", [CommitOperationAdd("d.txt", b"d")], commit_message="pr", create_pr=True
    )
    assert pr.pr_num == 1 and pr.pr_revision == "refs/pr/1"
    assert "d.txt" in api.list_repo_files("test-user/files", revision="refs/pr/1")
    assert "d.txt" not in api.list_repo_files("test-user/files")

    # Datasets live under /datasets/ and /api/datasets/.
    api.create_repo("test-user/data", repo_type="dataset")
    api.upload_file(
        path_or_fileobj=b"x,y\n1,2\n", path_in_repo="data.csv", repo_id="test-user/data", repo_type="dataset"
    )
    path = hf_hub_download("test-user/data", "data.csv", repo_type="dataset")
    assert open(path, "rb").read() == b"x,y\n1,2\n"
    assert ("HEAD", "/datasets/test-user/data/resolve/main/data.csv") in hub_server.hub.requests
    assert hub_server.hub.tokens_seen == {"hf_fake"}


def test_tree_pagination(hub_server):
    hub_server.hub.commit_files("test-user/many", {f"f{i}.txt": b"%d" % i for i in range(5)})
    hub_server.hub.tree_page_size = 2
    paths = [e.path for e in HfApi().list_repo_tree("test-user/many")]
    assert paths == [".gitattributes"] + [f"f{i}.txt" for i in range(5)]
    assert hub_server.hub.count("GET", "/api/models/test-user/many/tree/") == 3


def test_push_to_hub_then_download_and_from_pretrained(hub_server):
    model = tiny_bert()
    commit = model.push_to_hub("test-user/tiny")
    hub = hub_server.hub
    assert commit.oid == hub.get_repo("test-user/tiny").head.oid
    assert hub.count("POST", "/commit/") == 1  # one push, one commit
    calls = [(m, p) for m, p in hub.requests if m in ("POST", "PUT")]
    assert calls[0] == ("POST", "/api/repos/create")
    assert calls[-1] == ("POST", "/api/models/test-user/tiny/commit/main")
    assert ("POST", "/api/models/test-user/tiny/preupload/main") in calls

    api = HfApi()
    files = api.list_repo_files("test-user/tiny", revision=commit.oid)
    assert {"config.json", "model.safetensors", "README.md"} <= set(files)

    config_path = hf_hub_download("test-user/tiny", "config.json", revision=commit.oid)
    assert json.load(open(config_path))["hidden_size"] == 32
    snapshot = snapshot_download("test-user/tiny", revision=commit.oid)
    assert snapshot.endswith(commit.oid)
    assert sorted(os.listdir(snapshot)) == sorted(files)

    loaded = BertModel.from_pretrained("test-user/tiny", revision=commit.oid)
    assert state_digest(loaded) == state_digest(model)
    loaded_main = BertModel.from_pretrained("test-user/tiny")
    assert state_digest(loaded_main) == state_digest(model)

    # Once downloaded, offline mode reloads from the test's cache without touching the server.
    n_requests = len(hub.requests)
    hub_server.set_offline(True)
    assert state_digest(BertModel.from_pretrained("test-user/tiny")) == state_digest(model)
    assert len(hub.requests) == n_requests
    hub_server.set_offline(False)

    # Pushing the very same model again is a no-op: preupload returns the remote oids, nothing changed.
    model.push_to_hub("test-user/tiny")
    assert hub.count("POST", "/commit/") == 1


# huggingface_hub's LFS PUT passes bytes as `data=`, which httpx2 deprecates: a client-side warning.
@pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")
def test_large_file_goes_through_lfs(hub_server):
    api = HfApi()
    api.create_repo("test-user/big")
    payload = os.urandom(1_200_000)
    sha256 = hashlib.sha256(payload).hexdigest()
    api.upload_file(path_or_fileobj=payload, path_in_repo="weights.bin", repo_id="test-user/big")
    hub = hub_server.hub
    assert hub.count("POST", "/test-user/big.git/info/lfs/objects/batch") == 1
    assert ("PUT", f"/__lfs__/{sha256}") in hub.requests
    assert hub.get_repo("test-user/big").head.is_lfs("weights.bin")

    (entry,) = api.get_paths_info("test-user/big", ["weights.bin"])
    assert entry.lfs.sha256 == sha256 and entry.lfs.size == len(payload)
    path = hf_hub_download("test-user/big", "weights.bin")
    assert open(path, "rb").read() == payload
    assert os.path.basename(os.path.realpath(path)) == sha256  # ETag of an LFS file is its sha256

    # Same content under another name: the LFS store already has it, so no second PUT.
    api.upload_file(path_or_fileobj=payload, path_in_repo="copy.bin", repo_id="test-user/big")
    assert hub.count("PUT", "/__lfs__/") == 1
    assert hub.file_bytes("test-user/big", "copy.bin") == payload


def test_missing_repo_revision_and_file(hub_server):
    api = HfApi()
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("test-user/does-not-exist", "config.json")
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("test-user/does-not-exist")
    api.create_repo("test-user/present")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("test-user/present", "missing.json")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("test-user/present", ".gitattributes", revision="no-such-branch")
    # The EntryNotFound 404 carried X-Repo-Commit, so the client recorded the miss in its cache.
    head = hub_server.hub.get_repo("test-user/present").head.oid
    repo_cache = hub_server.hf_home / "hub" / "models--test-user--present"
    assert (repo_cache / ".no_exist" / head / "missing.json").exists()
    assert api.file_exists("test-user/present", ".gitattributes")
    assert not api.file_exists("test-user/present", "missing.json")


def test_subprocess_loads_pushed_model_from_env_only(hub_server):
    model = tiny_bert()
    commit = model.push_to_hub("test-user/tiny")
    requests_before = len(hub_server.hub.requests)
    code = textwrap.dedent(
        """
        import hashlib
        from transformers import AutoModel
        model = AutoModel.from_pretrained("test-user/tiny")
        h = hashlib.sha256()
        for name, tensor in sorted(model.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        print(type(model).__name__, h.hexdigest())
        """
    )
    keep = ("PATH", "PYTHONPATH", "LD_LIBRARY_PATH", "SYSTEMROOT", "TMPDIR")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.update(hub_server.env)
    env["OMP_NUM_THREADS"] = "1"
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["BertModel", state_digest(model)]
    new = hub_server.hub.requests[requests_before:]
    assert new[0] == ("GET", "/api/models/test-user/tiny")  # transformers resolves "main" to a sha first
    assert ("GET", f"/test-user/tiny/resolve/{commit.oid}/model.safetensors") in new
    assert os.path.isdir(hub_server.hf_home / "hub" / "models--test-user--tiny")  # the subprocess's cache


REMOTE_CONFIG = """
from transformers import PretrainedConfig
from .helper_tiny import MAGIC


class TinyRemoteConfig(PretrainedConfig):
    model_type = "tiny-remote"

    def __init__(self, magic=MAGIC, **kwargs):
        self.magic = magic
        super().__init__(**kwargs)
"""


@pytest.mark.parametrize("run", [1, 2])
def test_remote_code_goes_to_test_modules_cache(hub_server, run):
    sha = hub_server.hub.commit_files(
        "test-user/remote",
        {
            "config.json": json.dumps(
                {
                    "model_type": "tiny-remote",
                    "auto_map": {"AutoConfig": "configuration_tiny.TinyRemoteConfig"},
                }
            ).encode(),
            "configuration_tiny.py": REMOTE_CONFIG.encode(),
            "helper_tiny.py": b"MAGIC = 42\n",
        },
    )
    config = AutoConfig.from_pretrained("test-user/remote", revision=sha, trust_remote_code=True)
    assert type(config).__name__ == "TinyRemoteConfig" and config.magic == 42
    module_file = sys.modules[type(config).__module__].__file__
    assert module_file.startswith(str(hub_server.hf_home / "modules")), (run, module_file)
