"""Run a module under callgrind, instrumented only from its first network connection on (issue 26, item 2).

    valgrind --tool=callgrind --instr-atstart=no python -m bench.instrument LIBRARY -m MODULE [ARGS...]

Under callgrind every instruction costs about fifty native ones; a client's start-up (the interpreter, its imports)
is most of a one-server run, and at that speed the runs of the previous session did not finish. Started with
``--instr-atstart=no``, valgrind runs the start-up uninstrumented (several times faster, and not counted); the first
``socket.connect`` of the process (a client's first request to a server) turns instrumentation on through
callgrind's client request, from a one-function library compiled here (:func:`build`). What is counted is then
everything from the first request to the end: the work per server and what is left of the fixed cost (imports done
on first use, the first server's code paths), which the per-server figure removes by subtracting a one-host run.
"""

from __future__ import annotations

import ctypes
import runpy
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

LIBRARY = "libbenchinstrument.so"
SOURCE = ("#include <valgrind/callgrind.h>\n"
          "void bench_start_instrumentation(void) { CALLGRIND_START_INSTRUMENTATION; }\n")


def build(directory: Path) -> Path:
    """Compile the library that turns callgrind's instrumentation on (needs cc and valgrind's headers)."""
    source, library = directory / "instrument.c", directory / LIBRARY
    source.write_text(SOURCE, encoding="ascii")
    subprocess.run(["cc", "-O1", "-shared", "-fPIC", "-o", str(library), str(source)], check=True)
    return library


def _instrument_from_first_connection(library: str) -> None:
    start = ctypes.CDLL(library).bench_start_instrumentation
    connect = socket.socket.connect
    started = threading.Event()

    def connect_instrumented(self: socket.socket, address: Any) -> None:
        if not started.is_set():
            started.set()
            start()
        connect(self, address)

    socket.socket.connect = connect_instrumented  # type: ignore[method-assign]


def main() -> None:
    if len(sys.argv) < 4 or sys.argv[2] != "-m":
        raise SystemExit("usage: python -m bench.instrument LIBRARY -m MODULE [ARGS...]")
    _instrument_from_first_connection(sys.argv[1])
    module, sys.argv = sys.argv[3], [sys.argv[3], *sys.argv[4:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
