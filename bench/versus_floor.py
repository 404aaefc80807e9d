"""exbe ÷ the protocol's floor, in CPU time and in instructions, start-up removed (issue 26, item 2).

    python -m bench.versus_floor                         # 100 hosts for CPU, 10 for instructions (50 ms, conc. 16)
    python -m bench.versus_floor --hosts 10 100 1000 --instr-hosts 10 100
    python -m bench.versus_floor --tasks renew --hosts --instr-hosts 5 --out floor-renew-instr.json

For each task (verify on ``healthy`` hosts, renew on ``backend_expiring`` ones) and each host count, exbe's requests
are recorded once (``bench.floor record``, on a fleet of its own), then three clients each run on a fresh fleet:

* ``exbe``: ``exbe -f INVENTORY TASK --all``;
* ``pypsrp``: the recorded pipelines through plain pypsrp 0.9.1 (``bench.floor replay --client pypsrp``);
* ``floor``: the same pipelines through the minimal client (``bench.floor replay --client floor``).

All three send the same requests per server (the sandbox's counters are in each row). CPU time is the child's
user+sys (``bench.fleet``); instructions are the child's, counted by ``valgrind --tool=callgrind`` from its first
connection on (``bench.instrument``). Start-up and every other fixed cost are removed by running each client on 1
host too: per server = (cost at N hosts - cost at 1 host) / (N - 1).

CPU time is measured in ``--repeat`` rounds (default 3), each run on a fresh fleet. A round runs every client at
1 host, then every client at each N, one client right after the other (the order reversed every other round), so
the clients of one round see the machine at the same speed: this shared virtual machine's speed drifts over
minutes, and a client measured minutes after another compares two machines. A client's figure per round is
(its run at N - the median of its 1-host runs) / (N - 1); the row gives the median of those, and each ratio to the
floor is the **median of the rounds' ratios** (each round's client ÷ that round's floor), the rounds' own in
``pair_ratios``. exbe's and the benchmark's modules are compiled first, as pip compiles an installed exbe
(otherwise the first run alone compiles them). Writes ``bench/results/versus-floor.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import instrument
from bench.fleet import PASSWORD, RESULTS, ROOT, TASKS, USERNAME, SandboxProcesses, _child

CLIENTS = ("exbe", "pypsrp", "floor")
COLLECTED = re.compile(r"Collected : (\d+)")
#: start-up runs uninstrumented; bench.instrument turns instrumentation on at the client's first connection
CALLGRIND = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", "--instr-atstart=no"]


def _env(concurrency: int) -> dict[str, str]:
    """The clients' environment: modules read from the bytecode cache, as an installed exbe reads them (a development
    shell's ``PYTHONDONTWRITEBYTECODE=1`` made every run compile exbe's sources: start-up no installed exbe pays)."""
    env = {**os.environ, "EXBE_USERNAME": USERNAME, "EXBE_PASSWORD": PASSWORD,
           "EXBE_CONCURRENCY": str(concurrency), "PYTHONPATH": str(ROOT)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _fleet(state: Path, n: int, task: str, latency_ms: int, procs: int, env: dict[str, str]) -> SandboxProcesses:
    state.mkdir(parents=True)
    return SandboxProcesses(state, n, "backend_expiring" if task == "renew" else "healthy", latency_ms, procs, env)


def _inventory(sandbox: SandboxProcesses, path: Path) -> Path:
    path.write_text(json.dumps({"exbe": {"inventory": sandbox.inventory}}, indent=2), encoding="utf-8")
    return path


def record(n: int, task: str, latency_ms: int, concurrency: int, work: Path, procs: int) -> Path:
    """exbe's pipelines for ``n`` hosts, recorded on a fleet used for nothing else."""
    state = work / f"record-{task}-{n}"
    env = _env(concurrency)
    with _fleet(state, n, task, latency_ms, procs, env) as sandbox:
        plan = state / "plan.json"
        subprocess.run([sys.executable, "-m", "bench.floor", "record", str(_inventory(sandbox, state / "exbe.yaml")),
                        task, str(plan)], env=env, cwd=ROOT, check=True, capture_output=True)
    return plan


def _once(client: str, n: int, task: str, latency_ms: int, concurrency: int, plan: Path, state: Path, procs: int,
          *, instructions: bool) -> dict[str, Any]:
    """One client on a fresh fleet (its state in ``state``): CPU seconds or instructions; requests per server."""
    env = _env(concurrency)
    with _fleet(state, n, task, latency_ms, procs, env) as sandbox:
        inventory = _inventory(sandbox, state / "exbe.yaml")
        sandbox.ask("reset")
        if client == "exbe":
            module = ["exbe", "-f", str(inventory), task, "--all"]
        else:
            module = ["bench.floor", "replay", str(plan), str(inventory), str(concurrency), "--client", client]
        if instructions:
            argv = [*CALLGRIND, sys.executable, "-m", "bench.instrument", str(state.parent / instrument.LIBRARY), "-m",
                    *module]
            done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True)
            counted = COLLECTED.findall(done.stderr)
            # exbe's verify probes the back end's port 444 itself (TLS); under callgrind that handshake can outlast
            # the sandbox listener's patience, which fails one check (exit 1): the row keeps the exit code
            if done.returncode not in (0, 1) or (done.returncode and client != "exbe") or not counted:
                raise RuntimeError(f"{client} {task} {n}: exit {done.returncode}\n{done.stdout[-1500:]}\n"
                                   f"{done.stderr[-1500:]}")
            figure: dict[str, Any] = {"instructions": int(counted[-1]), "exit": done.returncode}
        else:
            measured = _child([sys.executable, "-m", *module], env)
            if measured["exit"] != 0:
                raise RuntimeError(f"{client} {task} {n}: exit {measured['exit']}: {measured['stdout_tail']}")
            figure = {"cpu_s": measured["cpu_s"], "wall_s": measured["wall_s"], "exit": measured["exit"]}
        reports = sandbox.ask("report")
    per_server = [{ep: sum(c.values()) for ep, c in counts.items()}
                  for report in reports for counts in report["counts"].values()]
    figure["requests"] = {ep: sorted({s.get(ep, 0) for s in per_server}) for ep in ("winrm", "exchange")}
    figure["load_1min"] = round(os.getloadavg()[0], 2)
    return figure


def per_server(at_n: float, at_1: float, n: int) -> float:
    """The cost of one more server: the fixed cost (start-up, the first server's imports) removed."""
    return (at_n - at_1) / (n - 1)


def run(tasks: list[str], hosts: list[int], instr_hosts: list[int], latency_ms: int, concurrency: int,
        procs: int, clients: list[str], repeat: int) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    subprocess.run([sys.executable, "-m", "compileall", "-q", "exbe", "bench"], env=_env(concurrency), cwd=ROOT,
                   check=True)
    with tempfile.TemporaryDirectory(prefix="exbe-floor-") as tmp:
        work = Path(tmp)
        if instr_hosts:
            instrument.build(work)
        for task in tasks:
            plans = {n: record(n, task, latency_ms, concurrency, work, procs)
                     for n in sorted({1, *hosts, *instr_hosts})}
            if hosts:
                rows.extend(cpu_rows(task, hosts, clients, repeat, latency_ms, concurrency, plans, work, procs))
            for client in clients if instr_hosts else []:
                base = _once(client, 1, task, latency_ms, concurrency, plans[1], work / f"{client}-{task}-1-instr",
                             procs, instructions=True)
                for n in instr_hosts:
                    at_n = _once(client, n, task, latency_ms, concurrency, plans[n],
                                 work / f"{client}-{task}-{n}-instr", procs, instructions=True)
                    row = {"task": task, "client": client, "hosts": n, "measure": "instructions",
                           "at_1": base["instructions"], "at_n": at_n["instructions"], "requests": at_n["requests"],
                           "load_1min": at_n["load_1min"], "exits": [base["exit"], at_n["exit"]],
                           "per_server": per_server(at_n["instructions"], base["instructions"], n)}
                    rows.append(row)
                    _print(row)
    return {"rows": rows, "ratios": ratios(rows), "pair_ratios": pair_ratios(rows), "latency_ms": latency_ms,
            "concurrency": concurrency, "repeat": repeat, "cores": os.cpu_count()}


def cpu_rows(task: str, hosts: list[int], clients: list[str], repeat: int, latency_ms: int, concurrency: int,
             plans: dict[int, Path], work: Path, procs: int) -> list[dict[str, Any]]:
    """CPU seconds per server for each client and host count, measured in rounds that alternate the clients."""
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {(c, n): [] for c in clients for n in (1, *hosts)}
    for i in range(repeat):
        order = clients if i % 2 == 0 else clients[::-1]
        for n in (1, *hosts):
            for client in order:
                run = _once(client, n, task, latency_ms, concurrency, plans[n], work / f"{client}-{task}-{n}-cpu{i}",
                            procs, instructions=False)
                runs[client, n].append(run)
                print(f"  round {i + 1}: {task} {client} {n} hosts {run['cpu_s']:.2f} s CPU", flush=True)
    rows = []
    for n in hosts:
        for client in clients:
            at_1_runs = [run["cpu_s"] for run in runs[client, 1]]
            at_1 = _median(at_1_runs)
            at_n = [run["cpu_s"] for run in runs[client, n]]
            each = [per_server(cpu, at_1, n) for cpu in at_n]
            row = {"task": task, "client": client, "hosts": n, "measure": "cpu_s", "at_1": at_1,
                   "at_n": _median(at_n), "per_server": _median(each), "per_server_runs": each,
                   "runs": {"at_1": at_1_runs, "at_n": at_n},
                   "requests": {ep: sorted({count for run in runs[client, n] for count in run["requests"][ep]})
                                for ep in ("winrm", "exchange")},
                   "load_1min": [run["load_1min"] for run in runs[client, n]],
                   "exits": sorted({run["exit"] for run in runs[client, 1] + runs[client, n]})}
            rows.append(row)
            _print(row)
    return rows


def _median(values: list[float]) -> float:
    """The middle value; for an even count the mean of the two middle ones (neither client's side taken)."""
    return statistics.median(values)


def _floors(rows: list[dict[str, Any]]) -> dict[tuple[str, str, int], dict[str, Any]]:
    return {(r["task"], r["measure"], r["hosts"]): r for r in rows if r["client"] == "floor"}


def pair_ratios(rows: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Per CPU row, each round's client ÷ that round's floor (the rounds ran the clients one right after the other)."""
    floors = _floors(rows)
    out = {}
    for r in rows:
        floor = floors.get((r["task"], r["measure"], r["hosts"]))
        if r["client"] != "floor" and floor and "per_server_runs" in r:
            out[f"{r['client']}/floor {r['task']} {r['measure']} {r['hosts']}"] = [
                round(mine / theirs, 2) for mine, theirs in zip(r["per_server_runs"], floor["per_server_runs"],
                                                                strict=True)]
    return out


def ratios(rows: list[dict[str, Any]]) -> dict[str, float]:
    """exbe ÷ floor and pypsrp ÷ floor per task, measure and host count: for CPU the median of the rounds' ratios."""
    floors = _floors(rows)
    paired = pair_ratios(rows)
    out = {}
    for r in rows:
        floor = floors.get((r["task"], r["measure"], r["hosts"]))
        if r["client"] != "floor" and floor:
            key = f"{r['client']}/floor {r['task']} {r['measure']} {r['hosts']}"
            out[key] = round(_median(paired[key]) if key in paired else r["per_server"] / floor["per_server"], 2)
    return out


def _print(row: dict[str, Any]) -> None:
    if row["measure"] == "cpu_s":
        figure = f"{row['per_server'] * 1000:8.1f} ms/server  (1 host {row['at_1']:.2f} s, N {row['at_n']:.2f} s)"
    else:
        figure = (f"{row['per_server'] / 1e6:8.1f} M instr/server  (1 host {row['at_1'] / 1e6:.0f} M, "
                  f"N {row['at_n'] / 1e6:.0f} M)")
    requests = "/".join(",".join(map(str, row["requests"][ep])) for ep in ("winrm", "exchange"))
    print(f"{row['task']:<7}{row['client']:<8}{row['hosts']:>6}  {figure}  req W/E {requests}  "
          f"load {row['load_1min']}  exits {row['exits']}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--hosts", type=int, nargs="*", default=[100], help="host counts for CPU time (default 100)")
    parser.add_argument("--instr-hosts", type=int, nargs="*", default=[10],
                        help="host counts for instruction counts under callgrind (default 10)")
    parser.add_argument("--latency", type=int, default=50, help="ms per request (default 50)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--sandbox-procs", type=int, default=2)
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--clients", nargs="+", choices=CLIENTS, default=list(CLIENTS))
    parser.add_argument("--repeat", type=int, default=3,
                        help="rounds of CPU runs, the clients alternating in each; medians kept (default 3)")
    parser.add_argument("--out", default="versus-floor.json", help="file name under bench/results/")
    args = parser.parse_args()
    if any(n < 2 for n in [*args.hosts, *args.instr_hosts]):
        parser.error("host counts must be 2 or more (1 host is the fixed cost removed)")
    if args.repeat < 1:
        parser.error("--repeat must be 1 or more")
    result = run(args.tasks, args.hosts, args.instr_hosts, args.latency, args.concurrency, args.sandbox_procs,
                 args.clients, args.repeat)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / args.out
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result["ratios"], indent=1))
    print(f"written: {path}")


if __name__ == "__main__":
    main()
