"""exbe's fixed cost per process, in instructions (``valgrind --tool=callgrind``): the interpreter alone,
``exbe --help``, ``exbe --list``, and ``exbe verify`` on one sandbox server (issue 26, item 4), with the bytecode
cache as an installed exbe has it (compiled modules) and without, as on the development machines
(``PYTHONDONTWRITEBYTECODE=1`` and no ``__pycache__`` in the checkout: every process compiles exbe's modules from
source; the standard library's and the installed packages' stay compiled, as they are there). Without a cache the
commands run from a copy of exbe's sources made for the run: ``PYTHONDONTWRITEBYTECODE=1`` alone still reads the
``__pycache__`` an earlier run or ``compileall`` left, and the column measured the cache it was meant to go without.

    python -m bench.startup                  # this checkout
    python -m bench.startup --root DIR       # another checkout of exbe (e.g. a worktree at an older commit)

Writes ``bench/results/startup.json`` (this checkout only).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.fleet import RESULTS, ROOT, SandboxProcesses
from bench.versus_floor import COLLECTED, _env, _inventory

#: start-up is what is measured here: instrumented from the first instruction (versus_floor's runs start later)
CALLGRIND = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]


def instructions(argv: list[str], root: Path, env: dict[str, str]) -> int:
    """The instructions of one process. With bytecode caching on (``warm``), the command runs once first, so the
    counted run reads compiled modules, as an installed exbe does (pip compiles them when it installs)."""
    if "PYTHONDONTWRITEBYTECODE" not in env:
        subprocess.run(argv, cwd=root, env={**env, "PYTHONPATH": str(root)}, capture_output=True, check=False)
    done = subprocess.run([*CALLGRIND, *argv], cwd=root, env={**env, "PYTHONPATH": str(root)}, capture_output=True,
                          text=True)
    counted = COLLECTED.findall(done.stderr)
    if done.returncode != 0 or not counted:
        raise RuntimeError(f"{argv}: exit {done.returncode}\n{done.stdout[-1000:]}\n{done.stderr[-1000:]}")
    return int(counted[-1])


def measure(root: Path, *, warm: bool) -> dict[str, int]:
    if warm:
        return _measure(root, warm=True)
    with tempfile.TemporaryDirectory(prefix="exbe-uncached-") as tmp:
        sources = Path(tmp) / "exbe-checkout"
        shutil.copytree(root / "exbe", sources / "exbe", ignore=shutil.ignore_patterns("__pycache__"))
        if (root / "ps_templates").is_dir():  # a checkout keeps them at the top, an installed exbe in the package
            shutil.copytree(root / "ps_templates", sources / "ps_templates")
        return _measure(sources, warm=False)


def _measure(root: Path, *, warm: bool) -> dict[str, int]:
    env = _env(16)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if not warm:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    out = {
        "python -c pass": instructions([sys.executable, "-c", "pass"], root, env),
        "exbe --help": instructions([sys.executable, "-m", "exbe", "--help"], root, env),
        "exbe --list": instructions([sys.executable, "-m", "exbe", "--list"], root, env),
    }
    with tempfile.TemporaryDirectory(prefix="exbe-startup-") as tmp:
        state = Path(tmp) / "fleet"
        state.mkdir()
        with SandboxProcesses(state, 1, "healthy", 0, 1, env) as sandbox:
            inventory = _inventory(sandbox, Path(tmp) / "exbe.yaml")
            out["exbe verify, 1 server"] = instructions(
                [sys.executable, "-m", "exbe", "-f", str(inventory), "verify", "--all"], root, env)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="the exbe checkout to measure (default: this one)")
    parser.add_argument("--cache", choices=("warm", "cold", "both"), default="both",
                        help="with a bytecode cache (warm), without (cold), or both (default)")
    args = parser.parse_args()
    figures = {}
    for warm in {"warm": (True,), "cold": (False,), "both": (True, False)}[args.cache]:
        cache = "bytecode cached" if warm else "no bytecode cache"
        for label, count in measure(args.root.resolve(), warm=warm).items():
            figures[f"{label} ({cache})"] = count
            print(f"{label:<24}{cache:<20}{count / 1e6:10.0f} M instructions", flush=True)
    if args.root.resolve() == ROOT:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "startup.json").write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
