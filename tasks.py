"""`invoke` in a checkout: exbe's own tasks (the same collection as the `exbe` command) plus developer tasks.

Both read the `exbe:` section and the flat `EXBE_DAYS`, `EXBE_CONCURRENCY`, ... environment names of exbe.settings
(docs/configuration.md); the file differs: the `exbe` command reads `exbe.yaml`, plain `invoke` its own `invoke.yaml`.
"""

from invoke import Collection, task

from exbe.tasks import ns as exbe_tasks


@task(help={"args": "extra pytest arguments, e.g. '-k chain'"})
def test(c, args=""):
    """Run the test suite (the same command as README and CI)."""
    c.run(f"python -m pytest -n 2 -q {args}", pty=False)


@task(help={"quick": "1 and 10 hosts only, 20 ms latency (seconds instead of minutes)"})
def bench(c, quick=False):
    """Fleet benchmark: exbe vs the naive pool-per-step approach (bench/README.md)."""
    c.run(f"python -m bench.fleet {'--quick' if quick else ''}", pty=False)


ns = Collection()
for name, t in exbe_tasks.tasks.items():
    ns.add_task(t, name=name)
ns.add_task(test)
ns.add_task(bench)
ns.configure(exbe_tasks.configuration())
