"""`exbe sandbox` runs a fleet in the foreground and writes an inventory that exbe's normal configuration reads."""

from __future__ import annotations

import json
import threading
import time

from exbe.config import load_inventory
from exbe.sandbox.cli import serve
from exbe.sandbox.fleet import plan_hosts


def test_sandbox_serves_until_stopped_and_writes_an_inventory_exbe_reads(tmp_path, capsys):
    stop = threading.Event()
    inventory = tmp_path / "sandbox-inventory.yaml"
    worker = threading.Thread(target=serve, kwargs=dict(
        hosts=3, scenarios="healthy,w3svc_stopped", faults="sim-exch02:latency_ms=5", latency_ms=0,
        state_dir=str(tmp_path / "state"), inventory=str(inventory), https=False, keep=False, stop=stop))
    worker.start()
    deadline = time.monotonic() + 60
    while not inventory.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    worker.join(timeout=30)
    assert not worker.is_alive(), "Ctrl-C (the stop event) shuts the fleet down"
    document = json.loads(inventory.read_text())
    servers = load_inventory(document["exbe"])
    assert [s.name for s in servers] == ["sim-exch01", "sim-exch02", "sim-exch03"], "names no one takes for production"
    assert (tmp_path / "state" / "sim-exch02.json").exists()
    creds = tmp_path / "state" / "credentials.env"
    assert creds.stat().st_mode & 0o077 == 0, "the sandbox credentials file is private"
    out = capsys.readouterr().out
    assert "w3svc_stopped" in out and "EXBE_PASSWORD" not in out.split("credentials:")[0]


def test_mixed_scenarios_cycle_over_the_hosts():
    assert plan_hosts(3, "healthy,sha1_backend") == [("sim-exch01", "healthy"), ("sim-exch02", "sha1_backend"),
                                                     ("sim-exch03", "healthy")]
