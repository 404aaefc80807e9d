"""An annotation or a JUnit case points at the server's entry in the inventory file, and only there."""

from __future__ import annotations

import junitparser
import yaml

from .exbe_cli import run_exbe


def test_a_failing_servers_annotation_and_cases_point_at_its_inventory_entry(start_fleet, tmp_path, capsys,
                                                                            monkeypatch) -> None:
    fleet = start_fleet([("exch01", "healthy"), ("exch02", "backend_expiring")])
    config = tmp_path / "exbe.yaml"
    config.write_text("# the fleet\n" + yaml.safe_dump({"exbe": {"inventory": fleet.inventory()}}), encoding="utf-8")
    entries = [number for number, line in enumerate(config.read_text().splitlines(), 1) if line.startswith("  - ")
               or line.startswith("- ")]
    monkeypatch.chdir(tmp_path)
    result = run_exbe(fleet, tmp_path, capsys, monkeypatch, "verify", "--all", "--junit", "r.xml", config=config,
                      env={"GITHUB_ACTIONS": "true"})
    assert result.code == 1
    (annotation,) = [line for line in result.out.splitlines() if line.startswith("::error")]
    assert annotation.startswith(f"::error file=exbe.yaml,line={entries[1]},title=exbe exch02::exch02 failed ")
    suites = {suite.name: suite for suite in junitparser.JUnitXml.fromfile(str(tmp_path / "r.xml"))}
    assert {(case._elem.get("file"), case._elem.get("line")) for case in suites["exch01"]} == {
        ("exbe.yaml", str(entries[0]))}


def test_an_inventory_outside_the_working_directory_gives_no_location(start_fleet, tmp_path, capsys,
                                                                       monkeypatch) -> None:
    fleet = start_fleet([("exch02", "backend_expiring")])
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "checkout").mkdir()
    config = tmp_path / "elsewhere" / "exbe.yaml"
    config.write_text(yaml.safe_dump({"exbe": {"inventory": fleet.inventory()}}), encoding="utf-8")
    monkeypatch.chdir(tmp_path / "checkout")
    result = run_exbe(fleet, tmp_path, capsys, monkeypatch, "verify", "--all", config=config,
                      env={"GITHUB_ACTIONS": "true"})
    (annotation,) = [line for line in result.out.splitlines() if line.startswith("::error")]
    assert annotation.startswith("::error title=exbe exch02::")
