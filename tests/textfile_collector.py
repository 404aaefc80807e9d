"""The real consumer of exbe's metrics: node_exporter's textfile collector, and promtool's linter.

:func:`scrape` starts Debian's ``prometheus-node-exporter`` on a free loopback port with only its textfile
collector, reading one directory, scrapes ``/metrics`` once and stops it; it returns what was served and what
node_exporter logged. A series two files both hold is logged ("collected before with the same name and label
values") and dropped while the scrape still answers 200, so a caller counts :attr:`Scrape.collisions` and compares
the series served with the files'. Both tools are needed: the test fails (never skips) without them, naming the
packages (.ci/run installs them).
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

INSTALL = "apt-get update && apt-get install -y prometheus-node-exporter prometheus"

Series = tuple[str, tuple[tuple[str, str], ...]]


def tool(*names: str) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise AssertionError(f"{names[0]} is required to check exbe's metrics with their real consumer; {INSTALL}")


def series(text: str) -> dict[Series, float]:
    """Every sample of an exposition, by name and labels."""
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


@dataclasses.dataclass(frozen=True)
class Scrape:
    served: dict[Series, float]
    log: str

    @property
    def collisions(self) -> int:
        return self.log.count("collected before with the same name and label values")

    @property
    def errors(self) -> list[str]:
        return [line for line in self.log.splitlines() if "level=error" in line]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def scrape(directory: Path, timeout_s: float = 60.0) -> Scrape:
    """Start node_exporter on ``directory``, scrape it once, stop it."""
    exporter = tool("prometheus-node-exporter", "node_exporter")
    port = _free_port()
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen([exporter, f"--web.listen-address=127.0.0.1:{port}", "--collector.disable-defaults",
                                    "--collector.textfile", f"--collector.textfile.directory={directory}"],
                                   stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
                        assert response.status == 200
                        text = response.read().decode("utf-8")
                    break
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        log.seek(0)
                        said = log.read()
                        raise AssertionError(f"node_exporter did not answer on 127.0.0.1:{port}: {said}") from None
                    time.sleep(0.2)
        finally:
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
            if process.poll() is None:
                process.kill()
                process.wait()
        log.seek(0)
        return Scrape(series(text), log.read())


def promtool_problems(path: Path) -> str:
    """What ``promtool check metrics`` says about a file (empty: clean), with its exit code when it failed."""
    with path.open("rb") as stdin:
        ran = subprocess.run([tool("promtool"), "check", "metrics"], stdin=stdin, capture_output=True, text=True,
                             timeout=60)
    said = (ran.stdout + ran.stderr).strip()
    return f"exit {ran.returncode}: {said}" if ran.returncode or said else ""
