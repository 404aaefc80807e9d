"""One deadline per server (``server_timeout``, exbe.deadline): a server that stops answering costs its deadline
plus a bounded lock release -- not ``read_timeout`` again and again through pypsrp's retries, the release on a new
connection and the pools' close -- and the report names the setting and what was left on the server."""

from __future__ import annotations

import json
import time

from exbe.deadline import RELEASE_ALLOWANCE_S
from exbe.sandbox.faults import Faults

from .exbe_cli import write_config

#: The sandbox's timeouts for these tests: a Receive long-polls 2 s; an answer is awaited 4 s.
TIMEOUTS = {"connect_timeout": 2, "operation_timeout": 2, "read_timeout": 4}
#: Long enough for the healthy part of a renew on a loaded agent, short enough for a test.
SERVER_TIMEOUT = 15
#: The bound the README documents: the deadline, then min(30 s, read_timeout) to release the lock.
BOUND = SERVER_TIMEOUT + min(RELEASE_ALLOWANCE_S, TIMEOUTS["read_timeout"])
#: What the agent itself may add (starting the fleet's threads, writing reports) on a loaded machine.
SLACK = 15



def renew(fleet, exbe, tmp_path, *args, **defaults):
    config = write_config(fleet, tmp_path / "exbe.yaml", **TIMEOUTS, **defaults)
    record = tmp_path / "r.json"
    started = time.monotonic()
    result = exbe(fleet, "renew", "--server", "exch01", *args, "--json", str(record), config=config)
    return result, time.monotonic() - started, json.loads(record.read_text())["servers"][0]


def test_a_server_that_stops_answering_mid_change_ends_within_its_deadline_and_says_how_to_unlock(
        start_fleet, exbe, tmp_path):
    """The server applies the trust and the bind, then never answers again: pypsrp alone would ask for that answer
    six times, read_timeout each, with pauses of 2 to 62 s between (over two minutes here); the deadline ends the
    run, the release gets its allowance, and the lock left behind is named with the command that removes it."""
    # the renew chain's WinRM requests: 3 authentication, Create, Receive, the lock + facts pipeline (Command,
    # Receive), the trust + bind pipeline's Command (8th); its Receive (9th) and everything after go unanswered.
    # --cleanup: the lock's release waits for the cleanup, so the run still holds it when the server goes silent
    fleet = start_fleet([("exch01", "backend_expiring")], faults={"exch01": Faults(hang_from="winrm:9")})
    result, took, server = renew(fleet, exbe, tmp_path, "--cleanup", server_timeout=SERVER_TIMEOUT)
    assert result.code == 1, result.out
    assert took < BOUND + SLACK, f"{took:.1f} s for a bound of {BOUND} s"
    assert took >= SERVER_TIMEOUT - 1, "the deadline, not something else, ended it"
    assert server["error_kind"] == "timeout"
    assert f"reached server_timeout ({SERVER_TIMEOUT} s, exbe.defaults.server_timeout" in server["error"], server
    (failed,) = [s for s in server["steps"] if s["status"] == "failed"]
    assert failed["step"] == "bind", failed
    assert failed["message"].startswith("stopped by server_timeout while bind awaited the server's answer: the "
                                        "outcome of bind is unknown, `exbe verify --server exch01` shows"), failed
    (lock,) = [s for s in server["steps"] if s["step"] == "lock"]
    unlock = f"exbe unlock --server exch01 --run {lock['data']['run_id']}"
    assert any(unlock in warning for warning in server["warnings"]), server["warnings"]
    assert "server_timeout" in result.out + result.err and unlock in result.out + result.err

    # what it said is exactly what the admin needs once the server answers again
    fleet.host("exch01").faults = Faults()
    assert exbe(fleet, "renew", "--server", "exch01").code == 1, "the lock is still held: the rerun is refused"
    assert exbe(fleet, *unlock.split()[1:]).code == 0
    rerun = exbe(fleet, "renew", "--server", "exch01")
    assert rerun.code == 0, rerun.out


def test_a_silent_exchange_endpoint_costs_the_deadline_and_the_lock_is_released_over_winrm(
        start_fleet, exbe, tmp_path):
    """Exchange's endpoint stops answering during preflight's read (pypsrp would retry that Receive five times);
    WinRM still answers, so the lock preflight took is released within the allowance and nothing is left."""
    # Exchange's requests: 3 authentication, Create, Receive, the read's Command; its Receive (7th) never answers
    fleet = start_fleet([("exch01", "backend_expiring")], faults={"exch01": Faults(hang_from="exchange:7")})
    result, took, server = renew(fleet, exbe, tmp_path, server_timeout=10)
    assert result.code == 1, result.out
    assert 9 <= took < 10 + min(RELEASE_ALLOWANCE_S, TIMEOUTS["read_timeout"]) + SLACK, f"{took:.1f} s"
    assert "reached server_timeout (10 s" in server["error"], server["error"]
    (failed,) = [s for s in server["steps"] if s["status"] == "failed"]
    assert failed["step"] == "preflight", failed
    assert not any("exbe unlock" in warning for warning in server["warnings"]), server["warnings"]
    fleet.host("exch01").faults = Faults()
    assert exbe(fleet, "renew", "--server", "exch01").code == 0, "no lock was left"


def test_a_healthy_run_under_a_deadline_sends_the_same_requests(start_fleet, exbe, tmp_path):
    fleet = start_fleet([("exch01", "backend_expiring")])
    host = fleet.host("exch01")
    host.reset_counts()
    result, _, server = renew(fleet, exbe, tmp_path, server_timeout=600)
    assert result.code == 0, result.out
    assert server["error"] is None
    assert host.total_requests("winrm") == 10 and host.total_requests("exchange") == 10, host.request_counts()
