"""``mypy hub`` is clean, with the settings in pyproject.toml's ``[tool.mypy]``.

Part of the README's test command, so CI (``.ci/run``) checks the types on every run. mypy's
cache goes to the test's tmp directory: a fresh clone gets a full check, nothing is left in
the working tree.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _mypy(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "mypy-cache"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_mypy_hub_is_clean(tmp_path: Path) -> None:
    result = _mypy(tmp_path, "hub")
    assert result.returncode == 0, f"mypy hub:\n{result.stdout}{result.stderr}"
    assert "Success: no issues found" in result.stdout


def test_the_configuration_reports_type_errors(tmp_path: Path) -> None:
    """The configuration does not silence errors wholesale: a wrong type is still found."""
    wrong = tmp_path / "wrong.py"
    wrong.write_text("import hub\n\nport: int = hub.__version__\n")
    result = _mypy(tmp_path, str(wrong))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "[assignment]" in result.stdout
