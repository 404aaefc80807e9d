"""exbe's metrics, kept by their real consumer: several exbe ``.prom`` files of a mixed sandbox fleet -- the two
shards of a nightly verify, a renew and a verify -- in one textfile directory, scraped from a real node_exporter
(Debian's prometheus-node-exporter), with zero collector errors and every series of every file served; each file
clean under ``promtool check metrics``; the documented alert rules clean under ``promtool check rules``.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
from pathlib import Path

import pytest

from exbe.main import ExbeProgram
from exbe.sandbox.faults import Faults
from exbe.sandbox.fleet import Fleet

from .conftest import PASSWORD, USERNAME
from .textfile_collector import promtool_problems, scrape, series, tool

ROOT = Path(__file__).resolve().parent.parent
HOSTS = [("exch01", "healthy"), ("exch02", "sha1_backend"), ("exch03", "backend_expiring"),
         ("exch04", "backend_expired"), ("exch05", "healthy"), ("exch06", "healthy")]
FAULTS = {"exch05": Faults(drop_after=0), "exch06": Faults(auth_fail=True)}
#: (file in the textfile directory, exbe's task and flags): what one agent's directory holds after a night and a
#: maintenance window.
RUNS = [("exbe-verify-shard-1.prom", ["verify", "--all", "--shard", "1/2"]),
        ("exbe-verify-shard-2.prom", ["verify", "--all", "--shard", "2/2"]),
        ("exbe-renew.prom", ["renew", "--all"]),
        ("exbe-verify.prom", ["verify", "--all"])]


def _exbe(config: Path, argv: list[str], metrics: Path) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EXBE_USERNAME", USERNAME)
        patch.setenv("EXBE_PASSWORD", PASSWORD)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
                contextlib.suppress(SystemExit):
            ExbeProgram().run(["exbe", "-f", str(config), *argv, "--keep-going", "--metrics", str(metrics)])


@pytest.fixture(scope="module")
def textfiles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("textfile")
    directory = folder / "textfile_inputs"
    directory.mkdir()
    with Fleet(folder / "sandbox", HOSTS, faults=FAULTS, username=USERNAME, password=PASSWORD) as fleet:
        config = folder / "exbe.json"
        config.write_text(json.dumps({"exbe": {"inventory": fleet.inventory()}}), encoding="utf-8")
        for name, argv in RUNS:
            _exbe(config, argv, directory / name)
    return directory


def test_every_run_wrote_its_file(textfiles: Path) -> None:
    assert sorted(path.name for path in textfiles.glob("*.prom")) == sorted(name for name, _ in RUNS)


def test_node_exporter_serves_every_series_of_every_file_with_no_collector_error(textfiles: Path) -> None:
    scraped = scrape(textfiles)
    assert scraped.collisions == 0 and scraped.errors == [], scraped.log
    assert scraped.served[("node_textfile_scrape_error", ())] == 0
    for path in textfiles.glob("*.prom"):
        written = series(path.read_text(encoding="utf-8"))
        missing = {key for key in written if key not in scraped.served}
        assert not missing, f"{path.name}: {len(missing)} series not served, e.g. {sorted(missing)[:3]}"
        assert {key: scraped.served[key] for key in written} == written


def test_each_series_says_its_task_and_shard_and_expiry_is_a_timestamp(textfiles: Path) -> None:
    shard = series((textfiles / "exbe-verify-shard-2.prom").read_text(encoding="utf-8"))
    assert all(dict(labels)["task"] == "verify" and dict(labels)["shard"] == "2/2" for _, labels in shard)
    renew = series((textfiles / "exbe-renew.prom").read_text(encoding="utf-8"))
    assert all(dict(labels)["task"] == "renew" and dict(labels)["shard"] == "all" for _, labels in renew)
    verify = series((textfiles / "exbe-verify.prom").read_text(encoding="utf-8"))
    expiry = {dict(labels)["server"]: value for (name, labels), value in verify.items()
              if name == "exbe_backend_certificate_not_after_timestamp_seconds"}
    assert set(expiry) == {"exch01", "exch02", "exch03", "exch04"}, "unreachable servers have no sample"
    assert not [name for name, _ in verify if "days" in name], "days left are computed at query time"
    # after the renew every judged certificate is new: years left
    assert all(value > 1.5e9 for value in expiry.values())


def test_the_harness_sees_a_collision(textfiles: Path, tmp_path: Path) -> None:
    """Two files with the same series (one run's file copied under a second name): node_exporter logs each one."""
    for copy in ("exbe-verify.prom", "exbe-verify-copy.prom"):
        (tmp_path / copy).write_text((textfiles / "exbe-verify.prom").read_text(encoding="utf-8"), encoding="utf-8")
    assert scrape(tmp_path).collisions > 0


@pytest.mark.parametrize("name", [name for name, _ in RUNS])
def test_promtool_finds_nothing_in_any_file(textfiles: Path, name: str) -> None:
    assert promtool_problems(textfiles / name) == ""


def _docs_block(language: str, marker: str) -> str:
    docs = (ROOT / "docs" / "pipelines.md").read_text(encoding="utf-8")
    (block,) = [text for text in re.findall(rf"```{language}\n(.*?)```", docs, re.S) if marker in text]
    return block


def test_the_documented_alert_rules_pass_promtool(tmp_path: Path) -> None:
    rules = tmp_path / "exbe.rules.yml"
    rules.write_text(_docs_block("yaml", "groups:"), encoding="utf-8")
    ran = subprocess.run([tool("promtool"), "check", "rules", str(rules)], capture_output=True, text=True,
                         timeout=60)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "SUCCESS: 3 rules found" in ran.stdout
    text = rules.read_text(encoding="utf-8")
    assert "exbe_backend_certificate_not_after_timestamp_seconds - time()" in text
