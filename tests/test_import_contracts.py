"""The import rules of the process boundary that hold today (issue 15), as import-linter contracts in pyproject.toml's
[tool.importlinter]: import-linter reads every module's imports statically (inside functions too, indirect ones
counted), so a new import that crosses the line fails here with import-linter's own report, naming the chain of
imports. tests/test_process_boundary.py complements it at run time (imports made by name, which a static reader misses).

import-linter has no stable Python API for checking contracts (`importlinter.api` only reads a configuration), so
`lint-imports` runs as a subprocess of this interpreter, from the repository's root: the package analysed is this
checkout's. The config file goes as a positional argument from import-linter 2.17 on (which deprecates `--config`),
and as `--config` before it (2.12, the lowest version pyproject.toml allows, has no positional form)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points, version
from pathlib import Path

import pytest

importlinter_api = pytest.importorskip("importlinter.api", reason="import-linter is not installed (the test extra)")

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"


def lint_imports(config: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports --config CONFIG` through its console-script entry point, run by this interpreter (so the same
    environment's import-linter, whatever folder its scripts went to), without a cache folder in the checkout."""
    (script,) = entry_points(group="console_scripts", name="lint-imports")
    code = (f"import sys; from {script.module} import {script.attr} as main; sys.argv[0] = 'lint-imports'; "
            "sys.exit(main())")
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}  # a contract's name and verdict on one line
    release = tuple(int(part) for part in version("import-linter").split(".")[:2] if part.isdigit())
    where = [str(config)] if release >= (2, 17) else ["--config", str(config)]
    return subprocess.run([sys.executable, "-c", code, "--no-cache", *where], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_import_contracts_of_pyproject_are_kept() -> None:
    contracts = importlinter_api.read_configuration(str(PYPROJECT))["contracts_options"]
    assert contracts, "pyproject.toml has no [tool.importlinter] contracts"
    out = lint_imports(PYPROJECT)
    report = out.stdout + out.stderr
    assert out.returncode == 0, f"an import contract is broken (pyproject.toml [tool.importlinter]):\n{report}"
    assert f"Contracts: {len(contracts)} kept, 0 broken." in report, report


def test_a_broken_contract_fails(tmp_path: Path) -> None:
    """The check can fail: a contract that is false today (host/plugin.py imports host/driver/loadgen_driver.py) is reported BROKEN, with the
    import that breaks it, and lint-imports exits non-zero."""
    config = tmp_path / "false-contract.toml"
    config.write_text(textwrap.dedent("""\
        [tool.importlinter]
        root_package = "pytest_mlperf"
        include_external_packages = true

        [[tool.importlinter.contracts]]
        name = "pytest_mlperf.host.plugin may not import pytest_mlperf.host.driver.loadgen_driver"
        type = "forbidden"
        source_modules = ["pytest_mlperf.host.plugin"]
        forbidden_modules = ["pytest_mlperf.host.driver.loadgen_driver"]
        """))
    out = lint_imports(config)
    report = out.stdout + out.stderr
    assert out.returncode == 1, report
    assert "pytest_mlperf.host.plugin may not import pytest_mlperf.host.driver.loadgen_driver BROKEN" in report, report
    assert "pytest_mlperf.host.plugin -> pytest_mlperf.host.driver.loadgen_driver" in report, report
    assert "Contracts: 0 kept, 1 broken." in report, report
