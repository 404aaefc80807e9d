"""`exbe sandbox`: a bad flag is one line and exit code 2, before any simulated host starts or any file is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from exbe.main import ExbeProgram


@pytest.mark.parametrize(("args", "said"), [
    (["--hosts", "0"], "exbe: --hosts must be at least 1, got 0"),
    (["--latency-ms", "-5"], "exbe: --latency-ms must not be negative, got -5"),
    (["--scenarios", "nope"], "exbe: unknown sandbox scenario nope; known: "),
    (["--faults", "bogus"], "exbe: unknown sandbox fault 'bogus'; known: "),
    (["--scenarios", "healthy\x1b[2J"], "exbe: --scenarios must not contain control characters, got "),
    (["--inventory", "inventory\x00.yaml"], "exbe: --inventory must not contain control characters, got "),
    (["--inventory", "notes.txt/inventory.yaml"], "exbe: --inventory 'notes.txt/inventory.yaml' cannot be written: "
                                                  "notes.txt is a file, not a directory; choose another path"),
    (["--inventory", "."], "exbe: --inventory '.' is a directory; give a file name, such as sandbox-inventory.yaml"),
])
def test_a_bad_sandbox_flag_is_one_line_and_exit_2_with_nothing_started(
        args: list[str], said: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("a file, not a directory")
    with pytest.raises(SystemExit) as exited:
        ExbeProgram().run(["exbe", "sandbox", "--state-dir", "state", *args])
    err = capsys.readouterr().err
    assert (exited.value.code, err.count("\n")) == (2, 1)
    assert err.startswith(said)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["notes.txt"], "no state directory, no inventory"
