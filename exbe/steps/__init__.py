"""The WinRM steps, one module each, registered once here.

A step is a rendered script (``ps_templates/<name>.ps1.j2`` included into ``_base.ps1.j2``) that runs over WinRM
and answers with one result envelope (``exbe.contract``). Its module declares what the rest of exbe needs to know:
the input schema (checked before rendering), the result schema (checked on every envelope exbe reads, and held to
the sandbox's answers by the tests), how a result reads in one line and as before/after, and the pure function that
plans its input from facts and settings. The flow, the renderer, the reports and the sandbox's recognition all go
through :data:`REGISTRY`, so a step exists in exactly one list.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from ..contract import ContractError, Schema, validate
from . import bind, cleanup, clone, export, facts, lock, reload, restart, trust

Describe = Callable[[Mapping[str, Any], bool, bool], str]  # data, changed, dry_run -> one line
BeforeAfter = Callable[[Mapping[str, Any]], tuple[dict[str, Any], dict[str, Any]]]


def _nothing(_: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    return {}, {}


@dataclasses.dataclass(frozen=True)
class Step:
    name: str
    summary: str  # what it does, one line
    inputs: Schema
    result: Schema  # the data of a successful envelope (extra keys allowed: a newer script may say more)
    describe: Describe
    before_after: BeforeAfter = _nothing
    choices: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    mutating: bool = True

    @property
    def template(self) -> str:
        return f"{self.name}.ps1.j2"

    def check_input(self, data: Mapping[str, Any]) -> None:
        """A mutating step may also carry the lock context (:func:`exbe.steps.lock.context`): run under the lock,
        it checks the lock is its run's and journals; without it (a hand-run script, a dry run) it does neither."""
        if self.mutating and lock.CONTEXT_KEY in data:
            validate(f"{self.name} input's {lock.CONTEXT_KEY}", data[lock.CONTEXT_KEY], lock.CONTEXT)
            data = {k: v for k, v in data.items() if k != lock.CONTEXT_KEY}
        validate(f"{self.name} input", data, self.inputs, choices=self.choices)

    def check_result(self, envelope: Mapping[str, Any]) -> None:
        """A successful envelope's data must carry the declared keys; a failed one may carry any subset."""
        if envelope.get("ok"):
            validate(f"the {self.name} result's data", envelope.get("data") or {}, self.result, exact=False)


def _step(module: Any) -> Step:
    return Step(name=module.NAME, summary=module.SUMMARY, inputs=module.INPUTS, result=module.RESULT,
                describe=module.describe, before_after=getattr(module, "before_after", _nothing),
                choices=getattr(module, "CHOICES", {}), mutating=getattr(module, "MUTATING", True))


REGISTRY: dict[str, Step] = {s.name: s for s in map(_step, (facts, clone, trust, bind, restart, cleanup, lock, export,
                                                                reload))}


def get(name: str) -> Step:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ContractError(f"unknown exbe step {name!r}; known: {', '.join(REGISTRY)}") from None
