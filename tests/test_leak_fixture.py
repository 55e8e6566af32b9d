"""The leak-check fixture itself: it must pass clean tests and fail leaky ones."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CONFTEST = (Path(__file__).parent / "conftest.py").read_text()


def test_env_tag_reaches_exec_children(no_leaked_processes: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import os; print(os.environ['QUIESCE_TEST_TAG'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert out == no_leaked_processes


@pytest.mark.skipif(shutil.which("setsid") is None, reason="needs setsid(1)")
def test_fixture_fails_a_test_that_leaks_an_escaped_process(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(
        test_leaky="""
        import subprocess, sys
        def test_leaks():
            # setsid + double fork: no longer our descendant, found by its tag only
            subprocess.run(["setsid", "sh", "-c", "sleep 30 &"], check=True)
        def test_clean():
            subprocess.run([sys.executable, "-c", "pass"], check=True)
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*test leaked processes:*", "*sleep 30*"])


def test_fixture_fails_a_test_that_leaks_a_non_daemon_thread(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(
        test_thread="""
        import threading
        stop = threading.Event()
        def test_leaks():
            threading.Thread(target=stop.wait, args=(10,), name="leaky").start()
        def test_after():
            stop.set()
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*test leaked non-daemon threads*leaky*"])


def test_fixture_fails_a_test_that_leaks_a_forkserver_child(pytester: pytest.Pytester) -> None:
    """A forkserver's children carry its command line, which the fixture allows for the
    forkserver itself: a leaked worker must still fail the test."""
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(
        test_forkserver="""
        import multiprocessing, time
        def test_leaks():
            p = multiprocessing.get_context("forkserver").Process(target=time.sleep, args=(30,),
                                                                  daemon=True)
            p.start()
        def test_clean():
            p = multiprocessing.get_context("forkserver").Process(target=time.sleep, args=(0,))
            p.start()
            p.join()
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*test leaked processes:*", "*multiprocessing.forkserver*"])
