"""MEAC's decision rule for the Auth certificate, row by row (CSS-Exchange Get-ExchangeAuthCertificateStatus.ps1 and
its Pester scenarios 1-5), with the unreachable and hybrid variants, the day arithmetic and the lead time."""

from __future__ import annotations

import datetime

import pytest

from exbe.auth_rule import OrgAuthState, Thresholds, days_left, decide, effective_date, lead_time

T = Thresholds()
UTC = datetime.timezone.utc
NOW = datetime.datetime(2026, 12, 6, 21, 0, tzinfo=UTC)


def state(c: int, n: int, **kwargs: object) -> OrgAuthState:
    return OrgAuthState(current="C" * 40, next="N" * 40 if n >= 0 else None, current_days=c, next_days=n,
                        **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("c", "n", "action", "row"), [
    (-1, -1, "replace", 1),     # scenario 1: expired, nothing staged
    (-30, -5, "replace", 1),    # expired, the staged one expired too
    (60, -1, "stage", 2),       # scenario 2: 60 days left, nothing staged
    (1, -1, "stage", 2),
    (45, 100, "stage", 2),      # the staged one would not last (<= 120 days)
    (45, 120, "stage", 2),
    (-1, 1500, "publish", 3),   # scenario 3: expired, next staged but not current yet
    (61, -1, "none", None),     # more than 60 days left
    (45, 121, "none", None),    # staged and lasting
    (1800, -1, "none", None),
])
def test_each_row_of_meacs_table_picks_its_action(c: int, n: int, action: str, row: int | None) -> None:
    decision = decide(state(c, n), T)
    assert (decision.action, decision.row) == (action, row)
    assert decision.blocked == ""
    assert decision.changes is (action != "none")


def test_current_missing_on_a_server_is_imported_there_rather_than_staged_over() -> None:
    decision = decide(state(45, -1, current_missing=("ex02.contoso.lab",)), T)
    assert (decision.action, decision.row) == ("import", 4)
    assert decision.import_current_to == ("ex02.contoso.lab",)


def test_next_missing_on_a_server_is_imported_there() -> None:
    decision = decide(state(400, 1500, next_missing=("ex01.contoso.lab",)), T)
    assert (decision.action, decision.row) == ("import", 5)
    assert decision.import_next_to == ("ex01.contoso.lab",) and decision.import_current_to == ()


def test_an_unreachable_server_blocks_every_change_unless_ignored() -> None:
    blocked = decide(state(-1, -1, unreachable=("ex02.contoso.lab",)), T)
    assert blocked.action == "replace" and "ex02.contoso.lab" in blocked.blocked and not blocked.changes
    assert "--ignore-unreachable" in blocked.blocked
    assert decide(state(-1, -1, unreachable=("ex02.contoso.lab",)), T, ignore_unreachable=True).changes
    imports = decide(state(400, -1, current_missing=("ex03",), unreachable=("ex02",)), T)
    assert imports.action == "import" and not imports.changes


def test_hybrid_blocks_stage_and_replace_but_not_imports_until_acknowledged() -> None:
    for c, n in ((45, -1), (-1, -1), (-1, 900)):
        decision = decide(state(c, n, hybrid=True), T)
        assert decision.action in ("stage", "replace", "publish") and "--hybrid" in decision.blocked
        assert decide(state(c, n, hybrid=True), T, hybrid_acknowledged=True).changes
    assert decide(state(400, -1, hybrid=True, current_missing=("ex02",)), T).changes


def test_days_left_counts_as_meac_does() -> None:
    assert days_left(None, NOW) == -1
    assert days_left(NOW + datetime.timedelta(days=10, hours=1), NOW) == 10
    assert days_left(NOW + datetime.timedelta(hours=2), NOW) == -1   # expires later today: expired today
    assert days_left(NOW - datetime.timedelta(hours=2), NOW) == -1   # expired today
    assert days_left(NOW - datetime.timedelta(days=3, hours=1), NOW) == -3


@pytest.mark.parametrize(("current_days", "lead"), [(400, 30), (32, 30), (31, 4), (5, 4), (4, 2), (3, 2), (2, 0),
                                                    (1, 0)])
def test_lead_time_shortens_near_expiry_as_meac_does(current_days: int, lead: int) -> None:
    assert lead_time(current_days, T) == lead


def test_the_effective_date_is_later_than_the_servers_clock_by_at_least_the_skew_margin() -> None:
    server_now = NOW + datetime.timedelta(minutes=7)  # the server's clock, not the agent's
    assert effective_date(server_now, 0, T) == server_now + datetime.timedelta(minutes=15)
    assert effective_date(server_now, 30, T) == server_now + datetime.timedelta(days=30)
