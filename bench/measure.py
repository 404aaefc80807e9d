"""Run a module as __main__ and report this process's peak RSS on stderr (``BENCH_PEAK_RSS_KIB=``)."""

import resource
import runpy
import sys


def main() -> None:
    if len(sys.argv) < 3 or sys.argv[1] != "-m":
        raise SystemExit("usage: python -m bench.measure -m MODULE [ARGS...]")
    module, sys.argv = sys.argv[2], [sys.argv[2], *sys.argv[3:]]
    code = 0
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        print(f"BENCH_PEAK_RSS_KIB={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}", file=sys.stderr)
    sys.exit(code)


if __name__ == "__main__":
    main()
