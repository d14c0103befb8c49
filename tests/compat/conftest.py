"""A venv with Microsoft's ML Server client, built once per machine (.venv-sdk), with the same
numpy, pandas, scikit-learn and dill as the app: the models it uploads are pickled client-side."""
from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SDK = "azureml-model-management-sdk==1.0.1b6.post1"


@pytest.fixture(scope="session")
def sdk_python() -> Path:
    venv = ROOT / ".venv-sdk"
    python = venv / "bin" / "python"
    wanted = [SDK] + [f"{p}=={version(p)}" for p in ("numpy", "pandas", "scikit-learn", "dill")]
    marker = venv / "installed.txt"
    if not (python.exists() and marker.exists() and marker.read_text() == "\n".join(wanted)):
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *wanted],
                       check=True)
        marker.write_text("\n".join(wanted))
    return python


from tests.e2e.conftest import base_url  # noqa: E402,F401 - the same local host fixture
