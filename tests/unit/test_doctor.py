"""Microsoft's azure-functions-doctor on the app, every rule: nothing the Functions host would
refuse (programming model, blueprints, bindings, host.json, requirements)."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Warnings about this machine, not the app: no Core Tools, venv or local.settings.json here, and
# settings (AzureWebJobsStorage, App Insights) that exist only in Azure or in `make run`.
_MACHINE = {"check_venv", "check_func_cli", "check_func_core_tools_version", "check_local_settings",
            "check_app_insights", "check_binding_connection_resolution", "check_native_dependency_risk"}


def test_azure_functions_doctor_finds_nothing_wrong_with_the_app():
    doctor = Path(sys.executable).with_name("azure-functions-doctor")
    run = subprocess.run([str(doctor), "doctor", "--path", str(ROOT), "--profile", "full", "--format", "json"],
                         capture_output=True, text=True, timeout=300)
    report = json.loads(run.stdout)
    items = [i for group in report["results"] for i in group["items"]]
    assert len(items) > 20  # it ran its rules
    failed = [(i["rule_id"], i.get("value")) for i in items if i["status"] == "fail"]
    warned = [(i["rule_id"], i.get("value")) for i in items if i["status"] == "warn" and i["rule_id"] not in _MACHINE]
    assert not failed and not warned, failed + warned
    assert run.returncode == 0, run.stderr
