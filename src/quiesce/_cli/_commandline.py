"""The ``quiesce`` command: ``quiesce run`` and ``quiesce doctor``.

Usage errors exit 125, like GNU ``timeout``'s own failures, so they can
never be mistaken for the command's status; the message names the option.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from quiesce._cli import _supervise
from quiesce._cli._durations import EXAMPLES, parse_duration
from quiesce._core._validate import signal_number


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(_supervise.EXIT_FAILURE, f"{self.prog}: error: {message}\n")


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _signal(text: str) -> str:
    try:
        return signal_number("--signal", text).name
    except ValueError:
        raise argparse.ArgumentTypeError(f"unknown signal {text!r} (e.g. TERM, INT, 15)") from None


def _add_ladder_options(parser: argparse.ArgumentParser, grace: float) -> None:
    parser.add_argument("--grace", type=_duration, default=grace, metavar="S",
                        help=f"after the stop signal, how long before SIGKILL ({EXAMPLES}; "
                             f"default {grace:g})")
    parser.add_argument("--kill-after", type=_duration, default=5.0, metavar="S",
                        help="after SIGKILL, how long to wait for the tree to be gone "
                             "before giving up with status 125 (default 5)")
    parser.add_argument("--signal", type=_signal, default="SIGTERM", metavar="SIG",
                        help="the stop signal for descendants (default TERM)")
    parser.add_argument("--verbose", "-v", action="store_true",
                        help="say on stderr what is forwarded, signalled and reaped")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="quiesce", description="End a command and its whole process tree, "
                     "cleanly and for sure.")
    commands = parser.add_subparsers(dest="subcommand", required=True, metavar="COMMAND",
                                     parser_class=_Parser)
    run = commands.add_parser(
        "run", help="supervise a command: forward signals, reap, leave nothing behind",
        description="Run COMMAND in its own process group as a child subreaper; forward "
                    "TERM, INT, HUP, QUIT, USR1, USR2; reap every zombie; when COMMAND "
                    "exits, a stop signal arrives or --timeout fires, end every descendant. "
                    "Exit status: COMMAND's, 128+N for signal N, 124 timeout, 125 quiesce's "
                    "own failure, 126 not executable, 127 not found.")
    _add_ladder_options(run, grace=10.0)
    run.add_argument("--timeout", type=_duration, default=None, metavar="S",
                     help="stop the command after this long (status 124)")
    run.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARG...]")
    doctor = commands.add_parser(
        "doctor", help="run a Python program; say what keeps it alive after main ends",
        description="Run `python SCRIPT ...` or `python -m MODULE ...`. When its main code "
                    "has finished but the process does not end, print every live "
                    "non-daemon thread with its stack, every child process with its command "
                    "line and the pools with running tasks; again every --every seconds.")
    _add_ladder_options(doctor, grace=10.0)
    doctor.add_argument("--after", type=_duration, default=1.0, metavar="S",
                        help="how long after main ends to wait before reporting (default 1)")
    doctor.add_argument("--every", type=_duration, default=10.0, metavar="S",
                        help="report again this often while the program hangs (default 10)")
    doctor.add_argument("command", nargs=argparse.REMAINDER, metavar="-- python SCRIPT [ARG...]")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        parser.error(f"{args.subcommand}: give the command to run after --")
    options = _supervise.Options(grace=args.grace, kill_after=args.kill_after,
                                 timeout=getattr(args, "timeout", None),
                                 stop_signal=signal_number("--signal", args.signal),
                                 verbose=args.verbose)
    if args.subcommand == "doctor":
        from quiesce._cli._diagnose import doctor

        try:
            return doctor(command, options, after=args.after, every=args.every)
        except ValueError as exc:
            parser.error(str(exc))
    return _supervise.supervise(command, options)
