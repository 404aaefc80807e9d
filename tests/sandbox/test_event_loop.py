"""One event loop serves every host of a fleet: no threads per host or per connection, nothing polling while idle,
latency as a timer, and a stop that ends every connection at once (issue 16, item 3)."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from pypsrp.powershell import PowerShell, RunspacePool

from exbe import contract
from exbe.render import render_step
from exbe.sandbox.faults import Faults
from exbe.sandbox.server import WORKERS

from .test_protocol import FACTS_INPUT, wsman

LOOPBACK = "127.0.0.1"


def _raw_request(port: int, path: str = "/nowhere") -> bytes:
    """One HTTP request on a connection of its own; the whole answer."""
    with socket.create_connection((LOOPBACK, port), timeout=10) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    return answer


def test_fifty_hosts_are_served_by_one_loop_thread_and_one_bounded_pool(start_fleet):
    before = {t.ident for t in threading.enumerate()}
    fleet = start_fleet([(f"exch{i:02d}", "healthy") for i in range(1, 51)])
    names = list(fleet.hosts)
    with ThreadPoolExecutor(max_workers=8) as clients:
        answers = list(clients.map(lambda n: _raw_request(fleet.ports(n)["http"]), names * 2))
    assert all(a.startswith(b"HTTP/1.1 404 Not Found\r\nServer: Microsoft-HTTPAPI/2.0\r\n") for a in answers)
    started = [t for t in threading.enumerate() if t.ident not in before]
    assert len(started) <= 1 + WORKERS, f"{len(started)} threads for 50 hosts x 3 listeners"


def test_an_idle_fleet_costs_no_cpu(start_fleet):
    start_fleet([(f"exch{i:02d}", "healthy") for i in range(1, 101)])
    time.sleep(0.3)
    cpu = time.process_time()
    time.sleep(1.0)
    assert time.process_time() - cpu < 0.02, "no listener polls: a hundred idle hosts stay asleep"


def test_latency_is_a_timer_so_more_waiting_requests_than_workers_wait_together(start_fleet):
    # 2 s each: a worker per sleep needs two rounds (>= 4 s); the timer, one (2 s), with 1.5 s left for a loaded machine
    fleet = start_fleet([("exch01", "healthy")], faults={"exch01": Faults(latency_ms=2000)})
    port = fleet.ports("exch01")["http"]
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=2 * WORKERS) as clients:
        answers = list(clients.map(lambda _: _raw_request(port), range(2 * WORKERS)))
    elapsed = time.monotonic() - started
    assert all(a.startswith(b"HTTP/1.1 404 ") for a in answers)
    assert 2.0 <= elapsed < 3.5, f"{2 * WORKERS} requests x 2 s took {elapsed:.2f} s (a worker per sleep: >= 4 s)"


def test_a_receive_waiting_for_output_does_not_stall_other_hosts(start_fleet):
    fleet = start_fleet([("exch01", "healthy"), ("exch02", "healthy")])
    waiting = RunspacePool(wsman(fleet, "exch01"))
    waiting.open()
    poll = threading.Thread(target=lambda: _receive_quietly(waiting), daemon=True)
    poll.start()  # a long-poll Receive on a pool with nothing to say: it holds a worker until it times out
    time.sleep(0.2)
    started = time.monotonic()
    with RunspacePool(wsman(fleet, "exch02")) as pool:
        ps = PowerShell(pool)
        ps.add_script(render_step("facts", FACTS_INPUT))
        result = contract.parse_result("facts", ps.invoke())
    assert result["ok"] and time.monotonic() - started < 4
    fleet.stop()
    poll.join(timeout=5)
    assert not poll.is_alive(), "stopping the fleet ends the waiting Receive"


def _receive_quietly(pool: RunspacePool) -> None:
    try:
        pool.shell.receive("stdout")
    except Exception:  # noqa: BLE001 - the operation timeout or the fleet's stop: either ends the wait
        pass


def test_stopping_a_fleet_ends_connections_a_client_kept_alive_at_once(start_fleet):
    """The README's first command once hung two minutes at exit: handler threads waited on idle clients."""
    fleet = start_fleet([("exch01", "healthy")])
    idle = socket.create_connection((LOOPBACK, fleet.ports("exch01")["http"]))
    half = socket.create_connection((LOOPBACK, fleet.ports("exch01")["https"]))  # TLS never started
    time.sleep(0.2)
    started = time.monotonic()
    fleet.stop()
    assert time.monotonic() - started < 2
    idle.settimeout(5)
    half.settimeout(5)
    assert idle.recv(1) == b"" and half.recv(1) == b"", "the clients see their connections closed"
    idle.close()
    half.close()


def test_a_process_with_a_fleet_and_kept_alive_clients_exits_at_once(tmp_path):
    script = textwrap.dedent(f"""
        import requests, socket
        from pathlib import Path
        from exbe.sandbox.fleet import Fleet
        fleet = Fleet(Path({str(tmp_path / 'state')!r}), [("exch01", "healthy"), ("exch02", "healthy")]).start()
        session = requests.Session()  # keeps its connection alive, as pypsrp does
        for name in fleet.hosts:
            session.post(f"http://127.0.0.1:{{fleet.ports(name)['http']}}/wsman", data=b"")
        idle = socket.create_connection(("127.0.0.1", fleet.ports("exch01")["backend"]))
        fleet.stop()
        print("stopped", flush=True)
    """)
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "stopped", proc.stderr[-2000:]
    assert time.monotonic() - started < 15, "no thread waits out an idle timeout at exit"
