"""`python -m exbe` and the `exbe` console script: the signal handlers first (exbe.signals), then the program."""

from exbe import signals


def main() -> None:
    """The handlers before anything else is imported; the exit code is 130 once a stop request came (also one that
    came while the reports were written)."""
    signals.install()
    from exbe.main import main as run

    try:
        run()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        raise SystemExit(signals.exit_code(code)) from None
    if signals.HANDLER.received:
        raise SystemExit(signals.EXIT_CANCELLED)


if __name__ == "__main__":
    main()
