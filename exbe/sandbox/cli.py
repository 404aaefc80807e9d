"""`exbe sandbox`: a fleet in the foreground, its inventory written for exbe's normal configuration."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from pathlib import Path

from ..quoting import posix_command
from .faults import parse_fleet_faults
from .fleet import Fleet, plan_hosts

FAULTS_ENV = "EXBE_SANDBOX_FAULTS"


def serve(*, hosts: int, scenarios: str, faults: str, latency_ms: int, state_dir: str, inventory: str, https: bool,
          keep: bool, stop: threading.Event | None = None) -> None:
    """Start the fleet, print how to use it, wait for Ctrl-C (or ``stop``), shut down cleanly."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    spec = ";".join(s for s in (os.environ.get(FAULTS_ENV, ""), faults) if s)
    fleet = Fleet(Path(state_dir), plan_hosts(hosts, scenarios), faults=parse_fleet_faults(spec),
                  latency_ms=latency_ms, password=os.environ.get("EXBE_PASSWORD") or None, fresh=not keep)
    stop = stop or threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set()) if threading.current_thread() is \
        threading.main_thread() else None
    with fleet:
        path = fleet.write_inventory(Path(inventory), ssl_basic=https)
        for name, host in fleet.hosts.items():
            ports = fleet.ports(name)
            print(f"{name}: {host.state.scenario:<32} winrm http://127.0.0.1:{ports['http']}/wsman "
                  f"https://127.0.0.1:{ports['https']}/wsman  444 -> {ports['backend']}")
        print(f"\ninventory: {path}   state: {fleet.state_dir}   CA: {fleet.ca_file}")
        creds = fleet.write_credentials()
        print(f"credentials: {posix_command('.', str(creds))}   (sandbox-only account; the file is readable by you "
              "alone)")
        print("in another shell, from here (this one holds the fleet until Ctrl-C):")
        print(f"  {posix_command('.', str(creds))} && {posix_command('exbe', '-f', str(path), 'verify', '--all')}",
              flush=True)
        try:
            while not stop.wait(0.5):
                pass
        finally:
            counts = fleet.request_counts()
            for name, per_endpoint in counts.items():
                logging.getLogger("exbe.sandbox").info("%s requests: %s", name, per_endpoint)
    if previous is not None:
        signal.signal(signal.SIGINT, previous)
    sys.stdout.flush()
