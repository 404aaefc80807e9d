"""A stop request at every instant of a run (issue 27, item 4): at start-up one line and exit 130; while the reports
are written they are finished and the exit code is still 130. The middle of the run: tests/test_cancel.py.

Not timed: each test waits for the process to reach the instant it means (its handlers installed, as the kernel
shows them; a report on disk while the process is held on a FIFO it must write next), so a loaded machine only makes
them slower."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from exbe import signals

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")


def exbe(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    environment = {**os.environ, "EXBE_SANDBOX_HOSTS": "1", "EXBE_SANDBOX_STATE_DIR": str(tmp_path / "sandbox"),
                   "NO_COLOR": "1", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "exbe", *args], cwd=tmp_path, env=environment, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def caught(pid: int) -> int:
    """The signals the process catches (a handler installed), as the kernel's bit mask."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return int(line.split()[1], 16)
    return 0


def wait_for_handlers(process: subprocess.Popen[str]) -> None:
    wanted = (1 << (signal.SIGINT - 1)) | (1 << (signal.SIGTERM - 1))
    deadline = time.monotonic() + 300
    while caught(process.pid) & wanted != wanted:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the handlers were never installed"
        time.sleep(0.005)


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_at_start_up_ends_with_one_line_and_exit_130(tmp_path, number):
    held = tmp_path / "exbe.json"
    os.mkfifo(held)  # reading the configuration holds the process in start-up until the test writes it
    process = exbe(tmp_path, "-f", str(held), "verify", "--sandbox")
    wait_for_handlers(process)
    process.send_signal(number)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 130, out + err
    assert err.splitlines() == [f"exbe: {signal.Signals(number).name}: stopped before any server was contacted; "
                                "nothing was done"], err
    assert "Traceback" not in out + err


def test_a_signal_while_the_reports_are_written_finishes_them_and_exits_130(tmp_path):
    summary = tmp_path / "summary.md"
    os.mkfifo(summary)  # the step summary is written after JUnit and JSON: the process waits there for a reader
    record = tmp_path / "r.json"
    process = exbe(tmp_path, "verify", "--sandbox", "--all", "--json", str(record),
                   env={"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary)})
    deadline = time.monotonic() + 300
    while not record.exists() or not record.read_text(encoding="utf-8").endswith("\n"):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the JSON report never appeared"
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    with open(summary, encoding="utf-8") as reader:  # let it finish writing
        written = reader.read()
    out, err = process.communicate(timeout=300)
    assert process.returncode == 130, out + err
    assert "Traceback" not in out + err
    assert json.loads(record.read_text(encoding="utf-8"))["servers"][0]["verdict"] == "passed", "the run stands"
    assert "sim-exch01" in written, "and the step summary was finished"


def test_windows_stop_requests_are_honoured_where_the_platform_has_them():
    """Azure's agent and GitHub's runner stop a Windows job with Ctrl+C, then Ctrl+Break (SIGBREAK); Windows has no
    SIGTERM to send."""
    assert signals.SIGNALS == tuple(name for name in ("SIGINT", "SIGTERM", "SIGBREAK") if hasattr(signal, name))
    assert "SIGINT" in signals.SIGNALS
