"""One step, one place: every WinRM step is registered once, and its template, the sandbox and the result schema
all answer to that registration."""

from __future__ import annotations

import re

import pytest

from exbe import contract
from exbe.facts import HostFacts
from exbe.model import Settings, StepResult
from exbe.render import TEMPLATE_DIR, render_step
from exbe.sandbox.faults import Faults
from exbe.sandbox.psrp import SCRIPT_ARGUMENTS, SecureText
from exbe.sandbox.state import HostState
from exbe.sandbox.steps import HANDLERS, run_step
from exbe.steps import REGISTRY, bind, cleanup, clone, export, facts, get, lock, reload, restart, trust

SETTINGS = Settings()


def test_the_registry_names_each_step_once_and_the_sandbox_implements_exactly_those():
    assert list(REGISTRY) == ["facts", "clone", "trust", "bind", "restart", "cleanup", "lock", "export", "reload"]
    assert set(HANDLERS) == set(REGISTRY), "a registered step the sandbox cannot run, or one it runs unregistered"


@pytest.mark.parametrize("name", list(REGISTRY))
def test_each_step_template_defines_the_entry_function_the_skeleton_calls(name):
    source = (TEMPLATE_DIR / REGISTRY[name].template).read_text(encoding="utf-8")
    assert re.search(rf"^function Invoke-Exbe{name.capitalize()} \{{", source, re.MULTILINE)
    supports_whatif = "[CmdletBinding(SupportsShouldProcess = $true)]" in source
    assert supports_whatif == REGISTRY[name].mutating, "mutating steps honour -WhatIf, read-only ones have none"


def _inputs(state: HostState) -> dict[str, dict]:
    """Each step's input as the flow plans it, for the healthy sandbox host."""
    read = HostFacts.parse(run_step(state, "facts", facts.plan(SETTINGS), Faults())["data"])
    selected = read.certificate(read.https_binding(SETTINGS.backend_site, 444).certificate_hash)
    assert selected is not None
    return {
        "facts": facts.plan(SETTINGS),
        "clone": clone.plan(selected, dry_run=True),
        "trust": trust.plan(selected.thumbprint, dry_run=True),
        "bind": bind.plan(read, selected.thumbprint, SETTINGS),
        "restart": restart.plan(dry_run=True),
        "cleanup": cleanup.step_input([], SETTINGS),
        "lock": lock.request("acquire", "0123456789ab", "agent01", "renew"),
        "export": export.plan(str(state.exchange.auth_current)),  # the Auth certificate: its key is exportable
        "reload": reload.plan(dry_run=True),
    }


@pytest.mark.parametrize("name", list(REGISTRY))
def test_the_sandbox_answers_each_step_in_its_declared_result_schema(name):
    state = HostState.from_scenario("exch01", "healthy")
    data = _inputs(state)[name]
    get(name).check_input(data)
    SCRIPT_ARGUMENTS.set((SecureText("a PFX password"),))  # export's: a SecureString argument (the others take none)
    envelope = run_step(state, name, data, Faults())
    assert envelope["ok"], envelope["error"]
    get(name).check_result(envelope)
    assert StepResult.from_envelope("exch01", envelope, 0.0).message, "every step reads as one line"


def test_an_answer_that_breaks_its_schema_is_a_contract_error_naming_the_key():
    envelope = contract.make_result("bind", ok=True, data={"thumbprint": "AB", "before": {}, "after": {}})
    with pytest.raises(contract.ContractError, match="bind result's data lacks created_backend_binding"):
        get("bind").check_result(envelope)
    failed = contract.make_result("bind", ok=False, error="refusing to bind", data={})
    get("bind").check_result(failed)  # a failure may say less


def test_an_unregistered_step_is_neither_rendered_nor_recognised():
    with pytest.raises(contract.ContractError, match="unknown exbe step 'unbind'"):
        render_step("unbind", {})
    script = render_step("trust", trust.plan("AB" * 20, dry_run=True)).replace("exbe-step: trust", "exbe-step: unbind")
    from exbe.render import is_exbe_rendering

    recognised, reason = is_exbe_rendering(script)
    assert not recognised and "unknown exbe step" in reason
