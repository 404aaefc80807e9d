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


def test_the_printed_hint_works_when_pasted_into_a_shell(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    shim = tmp_path / "bin" / "exbe"  # the installed command, as a pasted line calls it
    shim.parent.mkdir()
    shim.write_text(f"#!/bin/sh\nexec {sys.executable} -m exbe \"$@\"\n")
    shim.chmod(0o755)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("EXBE_", "NTLM_"))},
           "PYTHONPATH": str(root), "PATH": f"{shim.parent}:{os.environ['PATH']}", "NO_COLOR": "1"}
    fleet = subprocess.Popen([sys.executable, "-m", "exbe", "sandbox", "--hosts", "1", "--state-dir", "state"],
                             cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert fleet.stdout is not None
        lines = []
        for line in fleet.stdout:
            lines.append(line)
            if line.startswith("  . "):
                break
        hint = lines[-1].strip()
        assert hint.startswith(". ") and " && exbe -f " in hint and hint.endswith(" verify --all"), lines
        pasted = subprocess.run(["sh", "-c", hint], cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=120, check=False)
        assert pasted.returncode == 0, pasted.stdout + pasted.stderr
        assert "1 server in" in pasted.stdout and "passed" in pasted.stdout
    finally:
        fleet.send_signal(signal.SIGINT)
        fleet.wait(timeout=60)


def test_sandbox_without_the_extra_installed_is_one_line_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture) -> None:
    import builtins

    real_import = builtins.__import__

    def no_sandbox(name: str, *args: object, **kwargs: object) -> object:
        if name.startswith("psrpcore") or (name.endswith("sandbox.cli") or name.endswith("sandbox.state")):
            raise ModuleNotFoundError(f"No module named {name!r}", name="psrpcore")
        return real_import(name, *args, **kwargs)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(builtins, "__import__", no_sandbox)
    for args in (["sandbox", "--hosts", "1"], ["sandbox", "--list"]):
        with pytest.raises(SystemExit) as exited:
            ExbeProgram().run(["exbe", *args])
        err = capsys.readouterr().err
        assert (exited.value.code, err.count("\n")) == (2, 1), err
        assert err.startswith("exbe: the sandbox is not installed (psrpcore is missing): `pip install 'exbe[sandbox]'`")
