"""transformers' own common model tests (`ModelTesterMixin`, `ConfigTester`), from the installed
release's source distribution on the package index, so they are never vendored here.

`ensure_transformers_tests()` downloads `transformers==<installed version>` as an sdist with pip
(once; then it is cached), extracts its top-level `tests/*.py` into a package named
`transformers_tests` and puts that package's parent on `sys.path`. `.ci/run` calls
`python tests/transformers_suite.py` before the test command, so CI fails loudly when the sdist
cannot be had instead of skipping.

The sdist ships only the top-level `tests/*.py`; three modules they import live in sub-folders it
leaves out. They are replaced by stand-ins (`_STAND_INS`) that do what those modules do for a
model that cannot `generate()` and whose config has sub-configs (see docs/conformance.md).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import transformers

REPO = Path(__file__).resolve().parent.parent
# Under build/, which git ignores; override with HYDRABERT_TRANSFORMERS_TESTS_CACHE.
DEFAULT_CACHE = REPO / "build" / "transformers-tests"
PACKAGE = "transformers_tests"
# Set by .ci/run: a missing suite is then an error, not a skip.
REQUIRE_ENV = "HYDRABERT_REQUIRE_TRANSFORMERS_TESTS"

_STAND_INS = {
    "exporters/test_export.py": '''"""Stand-in: tests/exporters is not in the sdist. ModelTesterMixin's base class; its export
tests (torch.export / ONNX / ExecuTorch backends) are not run here (hydrabert tests its own exports)."""


class ExportTesterMixin:
    pass
''',
    "generation/test_utils.py": '''"""Stand-in: tests/generation is not in the sdist. test_modeling_common only checks
`issubclass(tester, GenerationTesterMixin)`, which must be False for a model that cannot generate."""


class GenerationTesterMixin:
    pass
''',
    "utils/test_configuration_utils.py": '''"""Stand-in: tests/utils is not in the sdist. ConfigTester.check_config_arguments_init is the one
reader of `config_common_kwargs`, and it returns before reading it for configs with sub_configs."""

config_common_kwargs = {}
''',
}


class TransformersTestsUnavailable(RuntimeError):
    """The sdist could not be downloaded or does not hold the common test modules."""


def cache_dir() -> Path:
    return Path(os.environ.get("HYDRABERT_TRANSFORMERS_TESTS_CACHE", DEFAULT_CACHE))


def ensure_transformers_tests(version: str = transformers.__version__) -> Path:
    """The folder holding the `transformers_tests` package for `version` (fetched if needed); it is
    put first on `sys.path`."""
    root = cache_dir() / f"transformers-{version}"
    package = root / PACKAGE
    if not (package / "test_modeling_common.py").is_file():
        _fetch(version, root)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return root


def _fetch(version: str, root: Path) -> None:
    root.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root.parent) as scratch:
        command = [
            sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
            "--no-binary", ":all:", f"transformers=={version}", "--dest", scratch,
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True)
        archives = sorted(Path(scratch).glob(f"transformers-{version}.tar.gz"))
        if result.returncode != 0 or not archives:
            raise TransformersTestsUnavailable(
                f"`{' '.join(command[2:])}` failed (exit {result.returncode}): {result.stderr.strip()[-800:]}"
            )
        staging = Path(scratch) / "root"
        package = staging / PACKAGE
        package.mkdir(parents=True)
        prefix = f"transformers-{version}/tests/"
        with tarfile.open(archives[0]) as archive:
            members = [
                m
                for m in archive.getmembers()
                if m.isfile() and m.name.startswith(prefix) and m.name.endswith(".py")
            ]
            for member in members:
                relative = member.name[len(prefix) :]
                if "/" in relative:  # only the top-level modules (the sdist has no others today)
                    continue
                (package / relative).write_bytes(archive.extractfile(member).read())
        for required in ("test_modeling_common.py", "test_configuration_common.py"):
            if not (package / required).is_file():
                raise TransformersTestsUnavailable(f"{archives[0].name} has no tests/{required}")
        (package / "__init__.py").write_text("")
        for relative, text in _STAND_INS.items():
            path = package / relative
            path.parent.mkdir(exist_ok=True)
            (path.parent / "__init__.py").touch()
            path.write_text(text)
        if root.exists():  # a half-written folder from an interrupted fetch
            import shutil

            shutil.rmtree(root)
        staging.rename(root)  # atomic: a reader sees all of it or none


if __name__ == "__main__":
    print(ensure_transformers_tests())


__all__ = ["REQUIRE_ENV", "TransformersTestsUnavailable", "ensure_transformers_tests"]
