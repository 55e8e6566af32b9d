"""The ``quiesce`` command: ``quiesce run`` and ``quiesce doctor``.

Usage errors exit 125, like GNU ``timeout``'s own failures, so they can
never be mistaken for the command's status; the message names the option.

``quiesce run`` parses its options with the small table-driven parser below,
GNU ``getopt_long`` style as tini, dumb-init and ``timeout`` do: short
options cluster (``-vc``, ``-s0``, ``-k1``), long ones take ``--opt=V`` or
``--opt V`` and unambiguous prefixes (``--fore``), and the first word that
is not an option (or ``--``) starts COMMAND. Adding an option is one row in
``RUN_OPTIONS`` plus its use in ``_run_options``.

Rejected for ``run``: argparse. Its import (with ``re`` and ``gettext``)
alone costs more than the whole start-up budget (``quiesce run -- true``
within 1.5x of ``python -c pass``). ``quiesce doctor`` starts a Python
program anyway, so it keeps argparse.
"""

from __future__ import annotations

import os
import sys

from quiesce._cli import _supervise
from quiesce._cli._signames import CATCHABLE, parse_signal

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

EXIT_USAGE = _supervise.EXIT_FAILURE


class Option:
    """One row of the option table: its spellings, whether it takes a value, its help."""

    __slots__ = ("dest", "help", "metavar", "names", "optional", "repeat")

    def __init__(self, *names: str, metavar: str = "", help: str = "", optional: bool = False,
                 repeat: bool = False) -> None:
        self.names = names
        self.metavar = metavar  # empty: a flag without a value
        self.help = help
        self.optional = optional  # the value only as --opt=VALUE (else the const "")
        self.repeat = repeat
        self.dest = next(n for n in names if n.startswith("--"))


RUN_OPTIONS = [
    Option("-s", "--signal", metavar="SIG",
           help="the stop signal: at a stop, on --timeout, to what the command leaves "
                "(name or number, 0 for none; default TERM)"),
    Option("-k", "--kill-after", "--grace", metavar="S",
           help="SIGKILL to everything left this long after the stop began (seconds, "
                "e.g. 10, 0.5, 1e-3, 500ms, 2m, 1h, 1d, inf; default 10)"),
    Option("--timeout", metavar="S",
           help="send the stop signal after this long; exit 124 (0: no timeout)"),
    Option("--preserve-status", help="on --timeout, exit with the command's own status"),
    Option("--foreground", help="as GNU timeout: the command stays in our process group and "
                                "may read the terminal; only it is signalled on --timeout"),
    Option("-c", "--single-child", help="as dumb-init -c: signals go to the command only, and "
                                        "what it leaves behind is left alone"),
    Option("-r", "--rewrite", metavar="S:R", repeat=True,
           help="forward signal S as R (R 0: drop it); may repeat"),
    Option("-e", "--expect-exit", metavar="CODE", repeat=True,
           help="exit 0 when the command exits CODE (tini -e); may repeat"),
    Option("-p", "--pdeathsig", metavar="SIG",
           help="when our parent dies, act as if SIG arrived (tini -p)"),
    Option("--exit-with-main", metavar="GRACE", optional=True,
           help="COMMAND is `python SCRIPT|-m MODULE ...`: when its main code ends, end what "
                "it left running after GRACE (default: -k) and exit with main's status"),
    Option("-v", "--verbose", help="say on stderr what is forwarded, signalled and reaped"),
    Option("-V", "--version", help="print the version and exit"),
    Option("-h", "--help", help="print this help and exit"),
]

RUN_USAGE = "usage: quiesce run [OPTION]... [--] COMMAND [ARG]...\n"
TOP_USAGE = ("usage: quiesce run [OPTION]... [--] COMMAND [ARG]...\n"
             "       quiesce doctor [OPTION]... -- python SCRIPT [ARG]...\n"
             "       quiesce --version\n")


class UsageError(Exception):
    pass


def parse_options(options: Sequence[Option], argv: Sequence[str]
                  ) -> tuple[dict[str, list[tuple[str, str]]], list[str]]:
    """Split ``argv`` into the command and {long name: [(as spelled, value)...]}.

    UsageError names the option.
    """
    short = {n: o for o in options for n in o.names if not n.startswith("--")}
    long = {n: o for o in options for n in o.names if n.startswith("--")}
    found: dict[str, list[tuple[str, str]]] = {}

    def store(option: Option, spelled: str, value: str) -> None:
        # Given twice, the last one wins, as with getopt (wrappers prepend defaults).
        found.setdefault(option.dest, []).append((spelled, value))

    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            return found, list(argv[i + 1:])
        if arg.startswith("--"):
            key, eq, value = arg.partition("=")
            matches = [long[key]] if key in long else list(
                {id(o): o for n, o in long.items() if n.startswith(key)}.values())
            if len(matches) != 1:
                raise UsageError(f"unrecognized option {key!r}" if not matches
                                 else f"option {key!r} is ambiguous")
            option = matches[0]
            if not option.metavar and eq:
                raise UsageError(f"{key}: takes no value")
            if option.metavar and not eq and not option.optional:
                i += 1
                if i >= len(argv):
                    raise UsageError(f"{key}: needs a value ({option.metavar})")
                value = argv[i]
            store(option, key, value)
        elif arg.startswith("-") and len(arg) > 1:
            j = 1
            while j < len(arg):
                flag = "-" + arg[j]
                if flag not in short:
                    raise UsageError(f"unrecognized option {flag!r}")
                option = short[flag]
                if not option.metavar:
                    store(option, flag, "")
                    j += 1
                    continue
                value = arg[j + 1:]
                if not value:
                    i += 1
                    if i >= len(argv):
                        raise UsageError(f"{flag}: needs a value ({option.metavar})")
                    value = argv[i]
                store(option, flag, value)
                break
        else:
            return found, list(argv[i:])
        i += 1
    return found, []


def _help(options: Sequence[Option], usage: str) -> str:
    lines = [usage, "Run COMMAND in its own process group as a child subreaper; forward every "
             "signal; reap every zombie;\nwhen COMMAND exits, a stop signal arrives or "
             "--timeout fires, end every descendant.\nExit status: COMMAND's, 128+N for "
             "signal N, 124 timeout (137 if SIGKILL was needed), 125 quiesce's\nown failure, "
             "126 not executable, 127 not found.\n\nOptions:"]
    for option in options:
        spelled = ", ".join(option.names)
        if option.metavar:
            spelled += f"[={option.metavar}]" if option.optional else f" {option.metavar}"
        lines.append(f"  {spelled:<28} {option.help}")
    return "\n".join(lines) + "\n"


def _signal(option: str, text: str, *, allow_zero: bool = True) -> int:
    try:
        return parse_signal(option, text, allow_zero=allow_zero)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _duration(option: str, text: str) -> float:
    from quiesce._cli._durations import parse_duration  # only when a duration is given

    try:
        return parse_duration(text, option)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _rewrite(option: str, text: str) -> tuple[int, int]:
    source, colon, target = text.partition(":")
    if not colon or not source or not target:
        raise UsageError(f"{option}: {text!r} is not S:R (e.g. TERM:INT, 15:2, WINCH:0)")
    from_signal = _signal(option, source, allow_zero=False)
    if from_signal not in CATCHABLE:
        raise UsageError(f"{option}: {source!r} cannot be caught, so not rewritten")
    return from_signal, _signal(option, target)


def _exit_code(option: str, text: str) -> int:
    if not text.strip().isdigit() or not 0 <= int(text) <= 255:
        raise UsageError(f"{option}: {text!r} is not an exit status (0 to 255)")
    return int(text)


def _run_options(found: dict[str, list[tuple[str, str]]]) -> _supervise.Options:
    def last(dest: str) -> tuple[str, str] | None:
        return found[dest][-1] if dest in found else None

    grace = last("--kill-after")
    timeout = last("--timeout")
    stop = last("--signal")
    pdeathsig = last("--pdeathsig")
    return _supervise.Options(
        grace=10.0 if grace is None else _duration(*grace),
        timeout=None if timeout is None else (_duration(*timeout) or None),
        stop_signal=15 if stop is None else _signal(*stop),
        verbose="--verbose" in found,
        single_child="--single-child" in found,
        rewrite=dict(_rewrite(*pair) for pair in found.get("--rewrite", [])),
        expect_exit=frozenset(_exit_code(*pair) for pair in found.get("--expect-exit", [])),
        pdeathsig=0 if pdeathsig is None else _signal(*pdeathsig, allow_zero=False),
        preserve_status="--preserve-status" in found,
        foreground="--foreground" in found,
    )


def _write(fd: int, text: str) -> None:
    try:
        os.write(fd, text.encode())
    except OSError:
        pass  # a closed stdout/stderr must not change the exit status


def _usage_error(message: str, usage: str = RUN_USAGE) -> int:
    _write(2, f"{usage}quiesce run: error: {message}\n")
    return EXIT_USAGE


def _flush_and_exit(status: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass  # closed or broken: nothing of ours was in it
    os._exit(status)


def _version() -> str:
    from quiesce import __version__

    return f"quiesce {__version__}\n"


def run_main(argv: Sequence[str]) -> int:
    """``quiesce run ARGV...``: parse, then supervise; the exit status."""
    try:
        found, command = parse_options(RUN_OPTIONS, argv)
        if "--help" in found:
            _write(1, _help(RUN_OPTIONS, RUN_USAGE))
            return 0
        if "--version" in found:
            _write(1, _version())
            return 0
        options = _run_options(found)
    except UsageError as exc:
        return _usage_error(str(exc))
    if not command:
        return _usage_error("give the command to run after --")
    if "--exit-with-main" in found:
        try:
            command = _exit_with_main(found["--exit-with-main"][-1], command, options)
        except UsageError as exc:
            return _usage_error(str(exc))
    return _supervise.supervise(command, options)


def _exit_with_main(given: tuple[str, str], command: list[str],
                    options: _supervise.Options) -> list[str]:
    """COMMAND rewritten to run under the exit agent (``--exit-with-main[=GRACE]``)."""
    from quiesce._cli._exit_with_main import agent_command

    grace = options.grace if not given[1] else _duration(*given)
    try:
        return agent_command(command, grace=grace, kill_after=options.grace,
                             stop_signal=options.stop_signal)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def main(argv: Sequence[str] | None = None) -> int:
    """The ``quiesce`` command; returns the exit status.

    Called as the program (``argv`` None), ``quiesce run`` ends the process
    itself with ``os._exit``: the supervisor has nothing to tear down (it
    writes to stderr unbuffered, registers no ``atexit``), and interpreter
    finalization would write to nearly every page of memory, each write a
    copy-on-write fault while the watcher still shares those pages; that is
    a tenth of the start-up budget.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["run"]:
        status = run_main(args[1:])
        if argv is None:
            _flush_and_exit(status)
        return status
    if args[:1] in (["-V"], ["--version"]):
        _write(1, _version())
        return 0
    if args[:1] in (["-h"], ["--help"]):
        _write(1, TOP_USAGE)
        return 0
    if args[:1] == ["doctor"]:
        from quiesce._cli._doctor_cli import doctor_main

        return doctor_main(args[1:])
    _write(2, TOP_USAGE + ("quiesce: error: give a subcommand: run or doctor\n" if not args
                           else f"quiesce: error: unknown subcommand {args[0]!r}\n"))
    return EXIT_USAGE
