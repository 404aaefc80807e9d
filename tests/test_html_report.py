"""``--html FILE``: one self-contained page of the run, rendered by a real browser (headless Chromium) in the test.

The page must read on its own: nothing fetched (no external CSS, scripts, fonts or images), every server string
escaped, the fleet at a glance with each failing check's reason and fix, and it must print.
"""

from __future__ import annotations

import functools
import html.parser
import http.server
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from exbe.html_report import page
from exbe.model import CheckResult, ServerRun, StepResult

from .exbe_cli import run_exbe

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
#: As /work/.library's machine notes start it: no sandbox as root, no background fetches of its own.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage")
HOSTILE = '<script>alert("x")</script><img src="http://evil.example/p.png">'


class _Refs(html.parser.HTMLParser):
    """Every element and every attribute that could make a browser fetch something."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.fetching: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href", "srcset", "poster", "data", "action") and value and \
                    not value.startswith(("data:", "#")):
                self.fetching.append((tag, name, value))


def _hostile_run() -> ServerRun:
    check = CheckResult("backend_days_left", "fail", f"exch01 back-end certificate {HOSTILE} expires in 3 days; "
                                                     "renew with `exbe renew`", details="warn below 60 days")
    return ServerRun(server="exch01", host="exch01", started_at="2026-01-01T00:00:00Z", steps=[
        StepResult(server="exch01", step="verify", status="failed", message="1 check(s) failed", checks=[check])])


def test_every_server_string_is_escaped_and_nothing_would_be_fetched():
    text = page([_hostile_run()], task="verify", wall_time_s=1.0)
    refs = _Refs()
    refs.feed(text)
    assert "script" not in refs.tags and "img" not in refs.tags, "a server's text never becomes markup"
    assert refs.fetching == [], refs.fetching
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in text
    assert "@import" not in text and "url(" not in text, "no style fetches either"
    assert "default-src 'none'" in text, "the page tells the browser to fetch nothing"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    """tmp_path over HTTP on loopback; the list collects every path a client asked for."""
    asked: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's name
            asked.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(tmp_path)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", asked
    server.shutdown()
    server.server_close()


def _chromium(*args: str) -> subprocess.CompletedProcess[str]:
    if CHROMIUM is None:
        pytest.fail("Chromium is needed for this test: apt-get install chromium (.ci/run installs it)")
    with tempfile.TemporaryDirectory(prefix="exbe-chromium-") as profile:
        return subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                              text=True, timeout=120, check=False)


def test_chromium_renders_a_mixed_fleet_s_page_whole_with_no_request_but_the_page(start_fleet, tmp_path, capsys,
                                                                                   monkeypatch, served):
    fleet = start_fleet([("exch01", "healthy"), ("exch02", "backend_expiring"), ("exch03", "backend_expired"),
                         ("exch04", "sha1_backend"), ("exch05", "binding_empty"), ("exch06", "w3svc_stopped")])
    result = run_exbe(fleet, tmp_path, capsys, monkeypatch, "verify", "--all", "--html", str(tmp_path / "fleet.html"))
    assert result.code == 1 and result.out.splitlines()[-1] == f"reports: HTML {tmp_path / 'fleet.html'}"
    base, asked = served
    shown = _chromium("--dump-dom", f"{base}/fleet.html")
    assert shown.returncode == 0, shown.stderr[-2000:]
    dom = shown.stdout
    for name in ("exch01", "exch02", "exch03", "exch04", "exch05", "exch06"):
        assert name in dom
    assert "FAILED" in dom and "passed with warnings" in dom and "EXPIRED" in dom
    assert "backend_days_left" in dom and "renew with <code>exbe renew --server exch02</code>" in dom
    assert "w3svc_running" in dom and "<code>exbe restart --server exch06</code>" in dom, \
        "the failing check's reason and its fix, a command to copy"
    assert "SANDBOX" not in dom, "a run on configured servers is not called simulated"
    printed = _chromium("--no-pdf-header-footer", f"--print-to-pdf={tmp_path / 'fleet.pdf'}", f"{base}/fleet.html")
    assert printed.returncode == 0 and (tmp_path / "fleet.pdf").read_bytes()[:5] == b"%PDF-"
    assert set(asked) == {"/fleet.html"}, f"the browser fetched only the page itself: {asked}"
