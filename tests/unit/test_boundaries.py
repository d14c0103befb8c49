"""Layering rules that keep secrets and SDKs where they belong, checked on the source."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HOST_CODE = [p for p in (ROOT / "shared").rglob("*.py")] + list((ROOT / "functions").glob("*.py"))


def _imports(path: Path) -> set[str]:
    text = path.read_text()
    return set(re.findall(r"^\s*(?:from|import)\s+([\w.]+)", text, flags=re.M))


def test_nothing_is_unpickled_outside_the_worker_process():
    worker = ROOT / "shared" / "sandbox" / "worker.py"
    for path in HOST_CODE:
        if path == worker:
            continue
        assert not {"pickle", "cloudpickle", "dill", "joblib"} & _imports(path), path
        assert not re.search(r"\b(pickle|dill|cloudpickle)\.loads?\(", path.read_text()), path


def test_only_the_storage_layer_imports_the_azure_storage_sdks():
    for path in HOST_CODE:
        azure = {m for m in _imports(path) if m.startswith("azure.") and m != "azure.functions"}
        if azure:
            assert path.parent.name == "storage", (path, azure)


def test_handlers_do_not_reach_storage_directly():
    for path in (ROOT / "functions").glob("*.py"):
        assert not any(m.startswith("shared.storage") for m in _imports(path)), path
