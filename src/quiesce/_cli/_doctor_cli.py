"""The ``quiesce doctor`` command line (argparse: it starts a Python program anyway)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from quiesce._cli import _supervise
from quiesce._cli._diagnose import doctor
from quiesce._cli._durations import EXAMPLES, parse_duration
from quiesce._cli._signames import parse_signal


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(_supervise.EXIT_FAILURE, f"{self.prog}: error: {message}\n")


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).partition(": ")[2]) from None


def _signal(text: str) -> int:
    try:
        return parse_signal("--signal", text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).partition(": ")[2]) from None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="quiesce doctor",
        description="Run `python SCRIPT ...` or `python -m MODULE ...`. When its main code "
                    "has finished but the process does not end, print every live "
                    "non-daemon thread with its stack, every child process with its command "
                    "line and the pools with running tasks; again every --every seconds.")
    parser.add_argument("-k", "--kill-after", "--grace", dest="grace", type=_duration,
                        default=10.0, metavar="S",
                        help=f"after the stop signal, how long before SIGKILL ({EXAMPLES}; "
                             "default 10)")
    parser.add_argument("-s", "--signal", type=_signal, default=15, metavar="SIG",
                        help="the stop signal for descendants (default TERM)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="say on stderr what is forwarded, signalled and reaped")
    parser.add_argument("--after", type=_duration, default=1.0, metavar="S",
                        help="how long after main ends to wait before reporting (default 1)")
    parser.add_argument("--every", type=_duration, default=10.0, metavar="S",
                        help="report again this often while the program hangs (default 10)")
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="-- python SCRIPT [ARG...]")
    return parser


def doctor_main(argv: Sequence[str]) -> int:
    """``quiesce doctor ARGV...``; the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        parser.error("give the command to run after --")
    options = _supervise.Options(grace=args.grace, stop_signal=args.signal,
                                 verbose=args.verbose)
    try:
        return doctor(command, options, after=args.after, every=args.every)
    except ValueError as exc:
        parser.error(str(exc))
