"""The Windows workflow exercises a replacement of the certificate that ``*:444:`` and ``127.0.0.1:443:`` already
carry (issue 20, item 7): the step-script driver's round trip (clone, bind it on both, bind the original back, clean
the clone up) and expect.py's ``--replaced``, run here against the sandbox's model of each step script."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from exbe import contract
from exbe.facts import HostFacts
from exbe.model import Settings
from exbe.sandbox.faults import Faults
from exbe.sandbox.state import BACKEND_SITE, FRONTEND_SITE, HostState
from exbe.sandbox.steps import run_step
from exbe.steps import facts

HELPERS = Path(__file__).resolve().parents[1] / ".github" / "windows"


def helper(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"windows_{name}_replacement", HELPERS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def sandbox_runner(state: HostState):
    """A stand-in for powershell.exe -File: the sandbox's model of the step script the file holds."""
    def run(path: Path) -> subprocess.CompletedProcess[str]:
        step, data = contract.parse_script(path.read_bytes().decode("utf-8-sig"))
        envelope = run_step(state, step, data, Faults())
        return subprocess.CompletedProcess([str(path)], 0, contract.encode_result(envelope) + "\n", "")
    return run


def bound(state: HostState) -> tuple[str, str]:
    return (state.https_binding(BACKEND_SITE, 444).certificate_hash,
            state.https_binding(FRONTEND_SITE, 443, "127.0.0.1").certificate_hash)


def test_the_round_trip_replaces_both_bindings_puts_the_original_back_and_removes_the_clone(tmp_path):
    driver = helper("step_scripts")
    state = HostState.from_scenario("exch01", "healthy")
    original, in_my = bound(state), [c.thumbprint for c in state.my]
    host = HostFacts.parse(run_step(state, "facts", facts.plan(Settings()), Faults())["data"])
    cases = driver.replacement_round_trip(sandbox_runner(state), tmp_path, host)
    assert [c.name for c in cases] == ["clone for the replacement round trip",
                                       "bind, replacing the certificate of *:444: and 127.0.0.1:443:",
                                       "bind, putting the original back on both", "cleanup of the clone"]
    assert all(c.is_passed for c in cases), [c.result for c in cases]
    assert bound(state) == original and [c.thumbprint for c in state.my] == in_my, "the runner is left as it was"


def test_a_bind_that_left_the_loopback_binding_on_the_old_certificate_fails_the_round_trip():
    driver = helper("step_scripts")
    old, new = "A" * 40, "B" * 40
    envelope = {"ok": True, "changed": True, "data": {"before": {"backend": old, "loopback": old},
                                                      "after": {"backend": new, "loopback": old}}}
    assert "the bind step reported" in driver.replaced_both(envelope, old, new)
    envelope["data"]["after"]["loopback"] = new
    assert driver.replaced_both(envelope, old, new) is None


def test_expect_replaced_checks_that_bind_moved_each_named_binding_to_the_bound_certificate(tmp_path, capsys):
    expect = helper("expect")
    old, new = "A" * 40, "B" * 40
    bind = {"step": "bind", "status": "changed", "message": "bound", "changed": True, "warnings": [], "checks": [],
            "data": {"thumbprint": new, "before": {"backend": old, "loopback": old},
                     "after": {"backend": new, "loopback": old}}}
    record = tmp_path / "r.json"
    record.write_text(json.dumps({"servers": [{"server": "runner", "steps": [bind]}]}), encoding="utf-8")
    assert expect.main([str(record), "--exit", "0", "--replaced", "backend"]) == 0
    assert expect.main([str(record), "--exit", "0", "--replaced", "backend", "--replaced", "loopback"]) == 1
    assert "bind did not replace the certificate of the loopback binding" in capsys.readouterr().out
