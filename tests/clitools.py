"""Running ``medfm`` through its real entry point inside a test."""

import sys

import pytest


def run_cli(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """``medfm ARGS`` through the real entry point: exit code, stdout, stderr."""
    from medfm.cli import main

    capsys.readouterr()
    argv = sys.argv
    sys.argv = ["medfm", *args]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = argv
    out, err = capsys.readouterr()
    return code, out, err
