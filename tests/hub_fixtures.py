"""pytest fixture ``hub_server``: a FakeHub on 127.0.0.1 with the HF client pointed at it, in-process and for
subprocesses.

Enable it from ``tests/conftest.py`` with::

    from hub_fixtures import hub_server  # noqa: F401

The fixture yields a :class:`HubServerHandle` with ``.endpoint`` (``http://127.0.0.1:PORT``), ``.hub`` (the
:class:`FakeHub`: repos, commits, request log), ``.env`` (the variables a subprocess needs) and ``.hf_home``.
``handle.subprocess_env()`` is ``os.environ`` merged with ``.env`` (use it as ``subprocess.run(..., env=...)``).

Why the in-process client needs more than environment variables
---------------------------------------------------------------
huggingface_hub reads its environment ONCE, at import time, into ``huggingface_hub.constants`` (and a few modules
copy those values again into their own globals); transformers does the same for its remote-code module cache and
keeps a shared ``HfApi`` whose ``endpoint`` is frozen when it is first built.  Since the test process imported
both libraries long before this fixture runs, setting ``os.environ`` is not enough; :func:`patch_hub_client`
therefore also ``monkeypatch``-es (all restored at teardown):

* ``constants.ENDPOINT``: base URL of every request (``HfApi.__init__`` and hf_hub_download read it at call time).
* ``constants.HUGGINGFACE_CO_URL_TEMPLATE``: ``hf_hub_url`` builds ``/resolve/`` URLs from this template, which was
  formatted from ``ENDPOINT`` at import; unpatched, downloads go to huggingface.co.
* ``constants.HF_URL_HOSTS`` and ``utils._http._HUB_ORIGINS``: import-time sets of "Hub" hosts (redirects kept
  on the Hub, hf:// URL parsing); the fake endpoint's host is added.
* ``utils._git_credential.ENDPOINT`` (and ``cli.auth.ENDPOINT`` when the CLI is loaded): ``from constants import
  ENDPOINT`` copies used by login / git-credential helpers.
* ``hf_api.api.endpoint``: the module-level default ``HfApi()`` behind ``huggingface_hub.create_repo``,
  ``upload_file``, ``list_repo_files``... captured the endpoint when huggingface_hub was imported.
* ``transformers.utils.hub._hf_api`` -> ``None``: transformers' shared ``HfApi`` (used by ``push_to_hub``,
  ``from_pretrained`` listings) is rebuilt lazily with the patched endpoint; reset again at teardown.
* ``HfFileSystem`` instance cache cleared (fsspec caches instances, each with its endpoint frozen).
* ``constants.HF_HUB_DISABLE_XET = True``: hf_xet is installed, so without this uploads use the Xet protocol
  (``upload_folder`` even switches to a pipelined Xet uploader) which cannot be faked; downloads stay plain HTTP.
* ``constants.HF_HUB_OFFLINE = False``, ``HF_HUB_DISABLE_IMPLICIT_TOKEN = False``, ``HF_HUB_DISABLE_TELEMETRY =
  True``: import-time booleans; the token itself (``HF_TOKEN``) is read from ``os.environ`` on every request, so
  setting the env var is enough (conflicting ``HUGGING_FACE_HUB_TOKEN``/``HF_OIDC_*`` are removed).
* HF_HOME-derived paths: ``HF_HOME``, ``HF_HUB_CACHE``, ``HUGGINGFACE_HUB_CACHE`` (download cache),
  ``HF_ASSETS_CACHE``/``HUGGINGFACE_ASSETS_CACHE`` (+ the copy in ``utils._cache_assets``), ``HF_XET_CACHE``,
  ``HF_TOKEN_PATH``/``HF_STORED_TOKENS_PATH`` (``login()`` must not touch the real token) and the copy of
  ``HF_HUB_CACHE`` in ``utils._cache_manager`` (``scan_cache_dir``): every test gets an empty cache, so
  downloads really hit the server.
* transformers' ``HF_MODULES_CACHE`` (copies in ``transformers.utils.hub``, ``transformers.utils``,
  ``transformers.dynamic_module_utils`` and ``transformers.file_utils`` if loaded): remote code
  (``trust_remote_code=True``) is written to ``<hf_home>/modules``.  Remote modules are imported as the package
  ``transformers_modules`` found on ``sys.path``, so the fixture also prepends that directory to ``sys.path``
  and hides any ``transformers_modules*`` entries of ``sys.modules`` for the duration of the test (restored at
  teardown), otherwise a package imported earlier from another cache dir would shadow the new one.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

try:  # works whether or not tests/ is a package
    from .hub_server import FakeHub, HubHTTPServer, start_hub_server, stop_hub_server
except ImportError:
    from hub_server import FakeHub, HubHTTPServer, start_hub_server, stop_hub_server

FAKE_TOKEN = "hf_fake"

# Environment variables that would override the ones we set (or point outside the test's HF_HOME).
CONFLICTING_ENV = (
    "HUGGINGFACE_CO_STAGING",  # overrides HF_ENDPOINT
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "HF_ASSETS_CACHE",
    "HUGGINGFACE_ASSETS_CACHE",
    "HF_XET_CACHE",
    "HF_TOKEN_PATH",
    "HF_MODULES_CACHE",
    "HUGGING_FACE_HUB_TOKEN",
    "HF_OIDC_RESOURCE",
    "HF_OIDC_ID_TOKEN",
    "HF_HUB_DISABLE_IMPLICIT_TOKEN",
)


def hub_env(endpoint: str, hf_home: Path | str, token: str = FAKE_TOKEN) -> dict[str, str]:
    """The environment variables a (fresh) process needs to talk to the FakeHub at ``endpoint``."""
    return {
        "HF_ENDPOINT": endpoint,
        "HF_HOME": str(hf_home),
        "HF_HUB_DISABLE_XET": "1",
        "HF_TOKEN": token,
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }


def _set_if_loaded(monkeypatch: pytest.MonkeyPatch, module_name: str, attr: str, value) -> None:
    module = sys.modules.get(module_name)
    if module is not None and hasattr(module, attr):
        monkeypatch.setattr(module, attr, value)


def patch_hub_client(
    monkeypatch: pytest.MonkeyPatch, endpoint: str, hf_home: Path, token: str = FAKE_TOKEN
) -> dict[str, str]:
    """Point the already-imported huggingface_hub / transformers at ``endpoint`` with caches under ``hf_home``.

    Everything is done through ``monkeypatch`` and undone at teardown.  See the module docstring for why each
    patch is needed.  Returns the environment dict (also applied to ``os.environ``).
    """
    env = hub_env(endpoint, hf_home, token)
    for key in CONFLICTING_ENV:
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)

    from huggingface_hub import constants

    # Import the modules holding copies so that they are patched even if first imported later in the test.
    for name in (
        "huggingface_hub.hf_api",
        "huggingface_hub.utils._http",
        "huggingface_hub.utils._git_credential",
        "huggingface_hub.utils._cache_assets",
        "huggingface_hub.utils._cache_manager",
    ):
        importlib.import_module(name)

    host = urlsplit(endpoint).hostname or "127.0.0.1"
    hub_cache = str(Path(hf_home) / "hub")
    assets_cache = str(Path(hf_home) / "assets")
    token_path = str(Path(hf_home) / "token")
    for attr, value in {
        "ENDPOINT": endpoint,
        "HUGGINGFACE_CO_URL_TEMPLATE": endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_URL_HOSTS": frozenset(constants.HF_URL_HOSTS | {host}),
        "HF_HUB_DISABLE_XET": True,
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_TELEMETRY": True,
        "HF_HUB_DISABLE_IMPLICIT_TOKEN": False,
        "HF_HOME": str(hf_home),
        "default_cache_path": hub_cache,
        "default_assets_cache_path": assets_cache,
        "HUGGINGFACE_HUB_CACHE": hub_cache,
        "HF_HUB_CACHE": hub_cache,
        "HUGGINGFACE_ASSETS_CACHE": assets_cache,
        "HF_ASSETS_CACHE": assets_cache,
        "default_xet_cache_path": str(Path(hf_home) / "xet"),
        "HF_XET_CACHE": str(Path(hf_home) / "xet"),
        "HF_TOKEN_PATH": token_path,
        "HF_STORED_TOKENS_PATH": str(Path(hf_home) / "stored_tokens"),
        "CHECK_FOR_UPDATE_DONE_PATH": str(Path(hf_home) / ".check_for_update_done"),
        "CHECK_FOR_SKILL_UPDATE_DONE_PATH": str(Path(hf_home) / ".check_for_skill_update_done"),
        "AGENT_HARNESSES_PATH": str(Path(hf_home) / ".agent_harnesses.json"),
    }.items():
        if hasattr(constants, attr):
            monkeypatch.setattr(constants, attr, value)

    http = sys.modules["huggingface_hub.utils._http"]
    if hasattr(http, "_HUB_ORIGINS"):
        monkeypatch.setattr(http, "_HUB_ORIGINS", frozenset(http._HUB_ORIGINS | {http._url_origin(endpoint)}))
    _set_if_loaded(monkeypatch, "huggingface_hub.utils._git_credential", "ENDPOINT", endpoint)
    _set_if_loaded(monkeypatch, "huggingface_hub.cli.auth", "ENDPOINT", endpoint)
    _set_if_loaded(monkeypatch, "huggingface_hub.utils._cache_assets", "HF_ASSETS_CACHE", assets_cache)
    _set_if_loaded(monkeypatch, "huggingface_hub.utils._cache_manager", "HF_HUB_CACHE", hub_cache)
    monkeypatch.setattr(sys.modules["huggingface_hub.hf_api"].api, "endpoint", endpoint)
    _clear_hf_filesystem_cache()

    try:
        import transformers.dynamic_module_utils  # noqa: F401 - loads transformers.utils.hub as well
    except ImportError:  # transformers not installed: nothing more to patch
        return env
    monkeypatch.setattr(sys.modules["transformers.utils.hub"], "_hf_api", None)
    modules_cache = Path(hf_home) / "modules"
    modules_cache.mkdir(parents=True, exist_ok=True)
    (modules_cache / "__init__.py").touch()
    for name in (
        "transformers.utils.hub",
        "transformers.utils",
        "transformers.dynamic_module_utils",
        "transformers.file_utils",
    ):
        _set_if_loaded(monkeypatch, name, "HF_MODULES_CACHE", str(modules_cache))
    monkeypatch.syspath_prepend(str(modules_cache))
    return env


def _clear_hf_filesystem_cache() -> None:
    module = sys.modules.get("huggingface_hub.hf_file_system")
    fs_cls = getattr(module, "HfFileSystem", None) if module is not None else None
    if fs_cls is not None and hasattr(fs_cls, "clear_instance_cache"):
        fs_cls.clear_instance_cache()


def _pop_remote_modules() -> dict[str, object]:
    names = [n for n in sys.modules if n == "transformers_modules" or n.startswith("transformers_modules.")]
    return {n: sys.modules.pop(n) for n in names}


@dataclass
class HubServerHandle:
    endpoint: str
    hub: FakeHub
    env: dict[str, str]
    hf_home: Path
    server: HubHTTPServer
    monkeypatch: pytest.MonkeyPatch = field(repr=False)

    def subprocess_env(self, **extra: str) -> dict[str, str]:
        """``os.environ`` without conflicting HF variables, plus ``self.env`` and ``extra``."""
        base = {k: v for k, v in os.environ.items() if k not in CONFLICTING_ENV}
        return {**base, **self.env, **extra}

    def set_offline(self, offline: bool = True) -> None:
        """Toggle huggingface_hub's offline mode in-process (``HF_HUB_OFFLINE``), restored at teardown."""
        from huggingface_hub import constants

        self.monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
        self.monkeypatch.setenv("HF_HUB_OFFLINE", "1" if offline else "0")


@pytest.fixture
def hub_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServerHandle]:
    """A running FakeHub, with this process's HF client (and ``.env`` for subprocesses) pointed at it."""
    server, thread, endpoint = start_hub_server()
    hf_home = tmp_path / "hf_home"
    hf_home.mkdir()
    hidden_modules = _pop_remote_modules()
    try:
        env = patch_hub_client(monkeypatch, endpoint, hf_home)
        yield HubServerHandle(endpoint, server.hub, env, hf_home, server, monkeypatch)
    finally:
        stop_hub_server(server, thread)
        _pop_remote_modules()
        sys.modules.update(hidden_modules)
        importlib.invalidate_caches()
        _clear_hf_filesystem_cache()
        # monkeypatch (torn down after this fixture) then restores every patched attribute and env var.
