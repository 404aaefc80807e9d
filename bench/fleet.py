"""Fleet benchmark: exbe against the naive approach (pypsrp's Client.execute_ps, a new runspace pool per step).

The sandbox fleet runs in this process (its request counters are read directly); exbe and the naive script each run
in a child process, so the wall time, CPU time and peak memory measured are theirs alone.

    python -m bench.fleet            # full matrix: 1/10/100 hosts x 20/100 ms, plus the 100 x 50 ms target run
    python -m bench.fleet --quick    # 1 and 10 hosts at 20 ms

Writes a table to the console and bench/results/fleet.json.
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

from exbe.sandbox.fleet import Fleet, plan_hosts

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
USERNAME = "SANDBOX\\bench"
PASSWORD = "bench-Pa55word"


def _child(argv: list[str], env: dict[str, str]) -> dict[str, float]:
    """Run a child process; its wall time, CPU time (user+sys) and peak RSS in MiB."""
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


def _requests(fleet: Fleet) -> dict[str, float]:
    per_server = [{ep: sum(c.values()) for ep, c in counts.items()} for counts in fleet.request_counts().values()]
    return {ep: max(s.get(ep, 0) for s in per_server) for ep in ("winrm", "exchange")}


def run_case(n: int, latency_ms: int, concurrency: int, task: str, work: Path) -> list[dict]:
    """One fleet, both approaches, one task."""
    rows = []
    for approach in ("exbe", "naive"):
        state = work / f"{approach}-{task}-{n}-{latency_ms}"
        scenario = "backend_expiring" if task == "renew" else "healthy"
        with Fleet(state, plan_hosts(n, scenario), latency_ms=latency_ms, username=USERNAME,
                   password=PASSWORD) as fleet:
            inventory = fleet.write_inventory(state / "exbe.yaml")
            env = {**os.environ, "EXBE_USERNAME": USERNAME, "EXBE_PASSWORD": PASSWORD,
                   "EXBE_CONCURRENCY": str(concurrency), "PYTHONPATH": str(ROOT)}
            for name in fleet.hosts:
                fleet.host(name).reset_counts()
            runner = [sys.executable, "-m", "bench.measure"]
            if approach == "exbe":
                argv = [*runner, "-m", "exbe", "-f", str(inventory), task, "--all"]
            else:
                argv = [*runner, "-m", "bench.naive", str(inventory), task, str(concurrency)]
            measured = _child(argv, env)
            requests = _requests(fleet)
        rtt = latency_ms / 1000
        ideal = math.ceil(n / concurrency) * (requests["winrm"] + requests["exchange"]) * rtt
        rows.append({"approach": approach, "task": task, "hosts": n, "latency_ms": latency_ms,
                     "concurrency": concurrency, "requests_winrm": requests["winrm"],
                     "requests_exchange": requests["exchange"], "ideal_s": round(ideal, 3), **measured})
    exbe_row, naive_row = rows
    exbe_row["ratio_vs_naive"] = round(exbe_row["wall_s"] / naive_row["wall_s"], 3)
    for row in rows:
        row["ratio_vs_ideal"] = round(row["wall_s"] / row["ideal_s"], 3) if row["ideal_s"] else None
    return rows


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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--target", action="store_true", help="only the 100 hosts x 50 ms target run")
    args = parser.parse_args()
    if args.target:
        matrix = [(100, 50)]
    elif args.quick:
        matrix = [(1, 20), (10, 20)]
    else:
        matrix = [(n, lat) for n in (1, 10, 100) for lat in (20, 100)] + [(100, 50)]
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="exbe-bench-") as tmp:
        for n, latency in matrix:
            for task in ("verify", "renew"):
                rows.extend(run_case(n, latency, args.concurrency, task, Path(tmp)))
                _print_row(rows[-2], rows[-1])
    start = cli_start()
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "fleet-target.json" if args.target else "fleet-quick.json" if args.quick else "fleet.json"
    (RESULTS / name).write_text(json.dumps({"rows": rows, "cli_start_s": start}, indent=2))
    print(f"\nCLI start (median of 7): {start}")
    print(f"written: {RESULTS / name}")


_HEADER = False


def _print_row(exbe_row: dict, naive_row: dict) -> None:
    global _HEADER
    if not _HEADER:
        print(f"{'task':<7}{'hosts':>6}{'rtt':>6}  {'approach':<7}{'req W/E':>9}{'wall s':>9}{'ideal s':>9}"
              f"{'x ideal':>8}{'cpu s':>8}{'peak MiB':>9}{'exbe/naive':>11}")
        _HEADER = True
    for row in (exbe_row, naive_row):
        ratio = f"{exbe_row['ratio_vs_naive']:.2f}" if row is exbe_row else ""
        print(f"{row['task']:<7}{row['hosts']:>6}{row['latency_ms']:>6}  {row['approach']:<7}"
              f"{row['requests_winrm']:>4}/{row['requests_exchange']:<4}{row['wall_s']:>9.2f}{row['ideal_s']:>9.2f}"
              f"{(row['ratio_vs_ideal'] or 0):>8.2f}{row['cpu_s']:>8.2f}{row['peak_mib']:>9.1f}{ratio:>11}",
              flush=True)


if __name__ == "__main__":
    main()
