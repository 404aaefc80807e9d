"""`invoke` in a checkout: exbe's own tasks (the same collection as the `exbe` command) plus developer tasks.

Both read the `exbe:` section and the flat `EXBE_DAYS`, `EXBE_CONCURRENCY`, ... environment names of exbe.settings
(docs/configuration.md); the file differs: the `exbe` command reads `exbe.yaml`, plain `invoke` its own `invoke.yaml`.
"""

import sys

from invoke import Collection, task

from exbe.tasks import ns as exbe_tasks


@task(help={"args": "extra pytest arguments, e.g. '-k chain'"})
def test(c, args=""):
    """Run the test suite (the same command as README and CI)."""
    c.run(f"python -m pytest -n 2 -q {args}", pty=False)


@task(help={"quick": "1 and 10 hosts only, 20 ms latency (seconds instead of minutes)",
            "target": "only 100 hosts x 50 ms x concurrency 16",
            "scale": "only 1000 hosts x 50 ms x concurrency 16",
            "sweep": "100 hosts x 50 ms x concurrency 4, 16 and 64",
            "sandbox_procs": "sandbox processes the fleet is split over (default 2)",
            "exbe_only": "skip the naive approach"})
def bench(c, quick=False, target=False, scale=False, sweep=False, sandbox_procs=2, exbe_only=False):
    """Fleet benchmark: exbe vs the naive pool-per-step approach, the sandbox in processes of its own
    (bench/README.md)."""
    flags = [flag for flag, on in (("--quick", quick), ("--target", target), ("--scale", scale),
                                   ("--sweep", sweep), ("--exbe-only", exbe_only)) if on]
    c.run(f"python -m bench.fleet {' '.join(flags)} --sandbox-procs {int(sandbox_procs)}", pty=False)


@task(name="fault-matrix", help={"scenario": "only this sandbox scenario (repeatable; default: every one)",
                                  "drop_stride": "drop at every n-th request index only (default 1: every one)",
                                  "quiet": "print the figures only, not each case"}, iterable=["scenario"])
def fault_matrix(c, scenario=None, drop_stride=1, quiet=False):
    """The full fault matrix: every scenario x every fault point x a rerun, plus concurrent and cancelled runs
    (tests/fault_matrix.py); prints cases, violations, non-converging reruns and time, fails on any of them."""
    chosen = "".join(f" --scenario {name}" for name in scenario or [])
    quiet_flag = " --quiet" if quiet else ""
    c.run(f"{sys.executable} -m tests.fault_matrix{chosen} --drop-stride {int(drop_stride)}{quiet_flag}", pty=False)


ns = Collection()
for name, t in exbe_tasks.tasks.items():
    ns.add_task(t, name=name)
ns.add_task(test)
ns.add_task(bench)
ns.add_task(fault_matrix)
ns.configure(exbe_tasks.configuration())
