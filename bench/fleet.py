"""Fleet benchmark: exbe against the naive approach (pypsrp's Client.execute_ps, a new runspace pool per step).

The sandbox fleet runs in child processes of its own (``bench/sandbox_proc.py``, ``--sandbox-procs``), which report
their request counters and CPU time; exbe and the naive script each run in another child process, so the wall time,
CPU time and peak memory measured for them are theirs alone.

    python -m bench.fleet            # 1 and 10 hosts; 100 hosts at concurrency 4, 16, 64; 1000 hosts (all 50 ms)
    python -m bench.fleet --quick    # 1 and 10 hosts at 20 ms (seconds)
    python -m bench.fleet --target   # 100 hosts x 50 ms x concurrency 16
    python -m bench.fleet --scale    # 1000 hosts x 50 ms x concurrency 16
    python -m bench.fleet --sweep    # 100 hosts x 50 ms x concurrency 4, 16, 64

Writes a table to the console and bench/results/fleet*.json (rows and a summary).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
USERNAME = "SANDBOX\\bench"
PASSWORD = "bench-Pa55word"
TASKS = ("verify", "renew")
MATRICES: dict[str, list[tuple[int, int, int]]] = {  # (hosts, latency ms, concurrency)
    "full": [(1, 50, 16), (10, 50, 16), (100, 50, 4), (100, 50, 16), (100, 50, 64), (1000, 50, 16)],
    "quick": [(1, 20, 16), (10, 20, 16)],
    "target": [(100, 50, 16)],
    "sweep": [(100, 50, 4), (100, 50, 16), (100, 50, 64)],
    "scale": [(1000, 50, 16)],
}


class SandboxProcesses:
    """A benchmark fleet split over ``procs`` sandbox processes; a context manager."""

    def __init__(self, state: Path, hosts: int, scenario: str, latency_ms: int, procs: int, env: dict[str, str]):
        self._procs: list[subprocess.Popen[str]] = []
        self.inventory: list[dict[str, Any]] = []
        procs = max(1, min(procs, hosts))
        per = math.ceil(hosts / procs)
        for first in range(0, hosts, per):
            argv = [sys.executable, "-m", "bench.sandbox_proc", str(state / f"slice{first}"), scenario,
                    str(latency_ms), str(hosts), str(first), str(min(per, hosts - first))]
            self._procs.append(subprocess.Popen(argv, cwd=ROOT, env=env, stdin=subprocess.PIPE,
                                                stdout=subprocess.PIPE, text=True))
        for proc in self._procs:
            self.inventory.extend(json.loads(self._line(proc)))

    def ask(self, command: str) -> list[dict[str, Any]]:
        """Send ``command`` to every process; their answers."""
        for proc in self._procs:
            self._stdin(proc).write(command + "\n")
            self._stdin(proc).flush()
        return [json.loads(self._line(proc)) for proc in self._procs]

    @staticmethod
    def _stdin(proc: subprocess.Popen[str]) -> TextIO:
        assert proc.stdin is not None
        return proc.stdin

    @staticmethod
    def _line(proc: subprocess.Popen[str]) -> str:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"sandbox process {proc.args} ended (exit {proc.wait()})")
        return line

    def __enter__(self) -> SandboxProcesses:
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self._procs:
            self._stdin(proc).close()
        for proc in self._procs:
            proc.wait(timeout=60)


def _child(argv: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run the tool under test; its wall time, CPU time (user+sys) and peak RSS in MiB. The sandbox processes are
    children too, but end later: RUSAGE_CHILDREN counts only children waited for, so only this one."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return {
        "wall_s": round(wall, 3),
        "cpu_s": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 3),
        "exit": proc.returncode,
        "stdout_tail": proc.stdout[-400:],
        "peak_mib": _peak_from_output(proc.stderr),
    }


def _peak_from_output(stderr: str) -> float:
    for line in reversed(stderr.splitlines()):
        if line.startswith("BENCH_PEAK_RSS_KIB="):
            return round(int(line.split("=", 1)[1]) / 1024, 1)
    return float("nan")


def run_case(n: int, latency_ms: int, concurrency: int, task: str, approach: str, work: Path,
             sandbox_procs: int) -> dict[str, Any]:
    """One fresh fleet, one approach, one task."""
    state = work / f"{approach}-{task}-{n}-{latency_ms}-{concurrency}"
    state.mkdir(parents=True)
    env = {**os.environ, "EXBE_USERNAME": USERNAME, "EXBE_PASSWORD": PASSWORD,
           "EXBE_CONCURRENCY": str(concurrency), "PYTHONPATH": str(ROOT)}
    scenario = "backend_expiring" if task == "renew" else "healthy"
    with SandboxProcesses(state, n, scenario, latency_ms, sandbox_procs, env) as sandbox:
        inventory = state / "exbe.yaml"
        inventory.write_text(json.dumps({"exbe": {"inventory": sandbox.inventory}}, indent=2), encoding="utf-8")
        load = os.getloadavg()[0]
        sandbox_cpu_before = sum(r["cpu_s"] for r in sandbox.ask("reset"))
        runner = [sys.executable, "-m", "bench.measure"]
        if approach == "exbe":
            argv = [*runner, "-m", "exbe", "-f", str(inventory), task, "--all"]
        else:
            argv = [*runner, "-m", "bench.naive", str(inventory), task, str(concurrency)]
        measured = _child(argv, env)
        reports = sandbox.ask("report")
    per_server = [{ep: sum(c.values()) for ep, c in counts.items()}
                  for report in reports for counts in report["counts"].values()]
    requests = {ep: max(s.get(ep, 0) for s in per_server) for ep in ("winrm", "exchange")}
    sandbox_cpu = sum(r["cpu_s"] for r in reports) - sandbox_cpu_before
    ideal = math.ceil(n / concurrency) * (requests["winrm"] + requests["exchange"]) * latency_ms / 1000
    return {"approach": approach, "task": task, "hosts": n, "latency_ms": latency_ms, "concurrency": concurrency,
            "requests_winrm": requests["winrm"], "requests_exchange": requests["exchange"],
            "ideal_s": round(ideal, 3), **measured,
            "ratio_vs_ideal": round(measured["wall_s"] / ideal, 3) if ideal else None,
            "cpu_ms_per_server": round(measured["cpu_s"] * 1000 / n, 1),
            "servers_per_s": round(n / measured["wall_s"], 2),
            "peak_kib_per_host": round(measured["peak_mib"] * 1024 / n, 1),
            "sandbox_procs": len(reports), "sandbox_cpu_s": round(sandbox_cpu, 3),
            "sandbox_cpu_ms_per_server": round(sandbox_cpu * 1000 / n, 1),
            "sandbox_peak_kib_per_host": round(sum(r["peak_kib"] for r in reports) / n, 1),
            "load_1min": round(load, 2)}


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures issue 16 asks for, from the rows that were run."""
    exbe = [r for r in rows if r["approach"] == "exbe"]
    summary: dict[str, Any] = {
        "exbe_cpu_ms_per_server_at_100": {r["task"]: r["cpu_ms_per_server"] for r in exbe
                                          if r["hosts"] == 100 and r["concurrency"] == 16},
        "servers_per_s_by_concurrency_at_100": {
            task: {r["concurrency"]: r["servers_per_s"] for r in exbe if r["hosts"] == 100 and r["task"] == task}
            for task in TASKS},
        "ratio_to_ideal_at_50ms_c16": {
            f"{r['task']} {r['hosts']}": r["ratio_vs_ideal"] for r in exbe
            if r["latency_ms"] == 50 and r["concurrency"] == 16 and r["hosts"] >= 100},
        "peak_kib_per_host": {f"{r['task']} {r['hosts']}": r["peak_kib_per_host"] for r in exbe if r["hosts"] >= 100},
        "sandbox_cpu_ms_per_server": {f"{r['task']} {r['hosts']}": r["sandbox_cpu_ms_per_server"] for r in exbe
                                      if r["hosts"] >= 100 and r["concurrency"] == 16},
    }
    naive = {(r["task"], r["hosts"], r["latency_ms"], r["concurrency"]): r for r in rows if r["approach"] == "naive"}
    summary["exbe_over_naive_wall"] = {
        f"{r['task']} {r['hosts']} c{r['concurrency']}": round(r["wall_s"] / other["wall_s"], 3) for r in exbe
        if (other := naive.get((r["task"], r["hosts"], r["latency_ms"], r["concurrency"])))}
    summary["servers_per_s_by_concurrency_at_100"] = {
        task: by_concurrency for task, by_concurrency in summary["servers_per_s_by_concurrency_at_100"].items()
        if by_concurrency}
    return {name: figures for name, figures in summary.items() if figures}  # only what this matrix measured


def cli_start() -> dict[str, float]:
    """Median wall time of `exbe --list` and `invoke --list`, whole processes."""
    out = {}
    for label, argv in (("exbe --list", [sys.executable, "-m", "exbe", "--list"]),
                        ("invoke --list", [sys.executable, "-m", "invoke", "--list"])):
        times = []
        for _ in range(7):
            started = time.perf_counter()
            subprocess.run(argv, cwd=ROOT, capture_output=True, check=True,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
            times.append(time.perf_counter() - started)
        out[label] = round(statistics.median(times), 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--quick", action="store_true", help="1 and 10 hosts at 20 ms")
    which.add_argument("--target", action="store_true", help="only 100 hosts x 50 ms x concurrency 16")
    which.add_argument("--scale", action="store_true", help="only 1000 hosts x 50 ms x concurrency 16")
    which.add_argument("--sweep", action="store_true", help="100 hosts x 50 ms x concurrency 4, 16 and 64")
    parser.add_argument("--sandbox-procs", type=int, default=2,
                        help="sandbox processes the fleet is split over (default 2)")
    parser.add_argument("--exbe-only", action="store_true", help="skip the naive approach")
    args = parser.parse_args()
    matrix = next((name for name in ("quick", "target", "scale", "sweep") if getattr(args, name)), "full")
    approaches = ("exbe",) if args.exbe_only else ("exbe", "naive")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="exbe-bench-") as tmp:
        for n, latency, concurrency in MATRICES[matrix]:
            for task in TASKS:
                for approach in approaches:
                    rows.append(run_case(n, latency, concurrency, task, approach, Path(tmp), args.sandbox_procs))
                    _print_row(rows[-1], rows)
    start = cli_start()
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / ("fleet.json" if matrix == "full" else f"fleet-{matrix}.json")
    summary = summarize(rows)
    path.write_text(json.dumps({"matrix": matrix, "cores": os.cpu_count(), "summary": summary, "rows": rows,
                                "cli_start_s": start}, indent=2) + "\n", encoding="utf-8")
    print(f"\nCLI start (median of 7): {start}")
    print(json.dumps(summary, indent=1))
    print(f"written: {path}")


def _print_row(row: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    if len(rows) == 1:
        print(f"{'task':<7}{'hosts':>6}{'rtt':>5}{'conc':>5}  {'approach':<7}{'req W/E':>9}{'wall s':>8}"
              f"{'x ideal':>8}{'srv/s':>7}{'cpu ms/srv':>11}{'peak KiB/host':>14}{'sbx ms/srv':>11}{'load':>7}")
    print(f"{row['task']:<7}{row['hosts']:>6}{row['latency_ms']:>5}{row['concurrency']:>5}  {row['approach']:<7}"
          f"{row['requests_winrm']:>4}/{row['requests_exchange']:<4}{row['wall_s']:>8.2f}"
          f"{(row['ratio_vs_ideal'] or 0):>8.2f}{row['servers_per_s']:>7.1f}{row['cpu_ms_per_server']:>11.1f}"
          f"{row['peak_kib_per_host']:>14.1f}{row['sandbox_cpu_ms_per_server']:>11.1f}{row['load_1min']:>7.2f}",
          flush=True)


if __name__ == "__main__":
    main()
