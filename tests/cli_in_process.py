"""The `xstilts` command line called in this process, as a test calls it: (exit code, stdout,
stderr), argparse's own exits included. Import it like cloud_fixtures (tests/ is on sys.path):

    from cli_in_process import cli
"""
from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout


def cli(*args: str) -> tuple[int, str, str]:
    from xstilts.study.cli import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exit_:  # argparse errors
            code = exit_.code
    return code, out.getvalue(), err.getvalue()
