"""Run a module as __main__ and report this process's peak RSS on stderr (``BENCH_PEAK_RSS_KIB=``).

The peak is VmHWM from /proc/self/status: ``ru_maxrss`` would carry the parent's high-water mark across fork+exec.
"""

import runpy
import sys


def vm_hwm_kib() -> int:
    """This process's peak resident set (VmHWM), in KiB."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


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
        print(f"BENCH_PEAK_RSS_KIB={vm_hwm_kib()}", file=sys.stderr)
    sys.exit(code)


if __name__ == "__main__":
    main()
