"""A slice of a benchmark fleet in a process of its own, so that the CPU the benchmark measures for exbe is exbe's.

    python -m bench.sandbox_proc STATE_DIR SCENARIO LATENCY_MS TOTAL FIRST COUNT

serves hosts FIRST .. FIRST+COUNT-1 of ``plan_hosts(TOTAL, SCENARIO)`` (names do not collide across slices), with
the account from ``EXBE_USERNAME`` / ``EXBE_PASSWORD``. It prints its inventory entries as one JSON line, then answers
one JSON line per command read on stdin:

* ``reset``: zero the request counters; answers ``{"cpu_s": ...}``, this process's CPU time so far;
* ``report``: ``{"counts": {host: {endpoint: {action: n}}}, "cpu_s": ..., "peak_kib": ...}`` (VmHWM);

and stops its fleet at end of input.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from bench.measure import vm_hwm_kib
from exbe.sandbox.fleet import Fleet, plan_hosts


def main() -> None:
    state_dir, scenario, latency_ms, total, first, count = sys.argv[1:7]
    hosts = plan_hosts(int(total), scenario)[int(first):int(first) + int(count)]
    with Fleet(Path(state_dir), hosts, latency_ms=int(latency_ms), username=os.environ["EXBE_USERNAME"],
               password=os.environ["EXBE_PASSWORD"]) as fleet:
        print(json.dumps(fleet.inventory()), flush=True)
        for line in sys.stdin:
            command = line.strip()
            if command == "reset":
                for host in fleet.hosts.values():
                    host.reset_counts()
                answer: dict[str, object] = {"cpu_s": time.process_time()}
            elif command == "report":
                answer = {"counts": fleet.request_counts(), "cpu_s": time.process_time(), "peak_kib": vm_hwm_kib()}
            else:
                answer = {"error": f"unknown command {command!r}"}
            print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
