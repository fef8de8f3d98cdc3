"""`make run`'s process group (scripts/process_group.py): one process ending stops the others,
Ctrl-C stops them all with SIGTERM, and SIGKILL is for what outlives the wait."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from scripts.process_group import ProcessGroup
from tests.support.processes import ROOT

PYTHON = sys.executable


def python_command(source: str) -> str:
    return f"{PYTHON} -c {_quoted(textwrap.dedent(source))}"


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def wait_for_file(path: Path, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists() or not path.read_text():
        assert time.monotonic() < deadline, f"{path} never written"
        time.sleep(0.02)
    return path.read_text()


def records_sigterm(marker: Path) -> str:
    """A process that writes `marker` when SIGTERM comes, then exits."""
    return python_command(
        f"""
        import signal, sys, time
        def stop(*_):
            open({str(marker)!r}, "w").write("terminated")
            sys.exit(0)
        signal.signal(signal.SIGTERM, stop)
        time.sleep(60)
        """
    )


def test_one_process_ending_stops_the_others_and_its_code_is_the_group_s(tmp_path):
    marker = tmp_path / "terminated"
    output = io.StringIO()
    group = ProcessGroup(kill_wait_seconds=10, output=output)
    group.add("long", records_sigterm(marker), env=os.environ, cwd=str(ROOT))
    group.add("short", python_command("import time, sys; time.sleep(0.5); sys.exit(3)"), env=os.environ, cwd=str(ROOT))

    started = time.monotonic()
    code = group.run()

    assert code == 3
    assert wait_for_file(marker) == "terminated"
    assert time.monotonic() - started < 8
    assert "short exited with code 3" in output.getvalue()


def test_a_process_that_exits_cleanly_unasked_still_stops_the_group_as_a_failure(tmp_path):
    group = ProcessGroup(kill_wait_seconds=10, output=io.StringIO())
    group.add("quits", python_command("pass"), env=os.environ, cwd=str(ROOT))

    assert group.run() == 1


def test_what_ignores_sigterm_is_killed_after_the_wait_with_what_it_started(tmp_path):
    grandchild_pid_file = tmp_path / "grandchild"
    stubborn = python_command(
        f"""
        import signal, subprocess, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child = subprocess.Popen(["sleep", "300"])
        open({str(grandchild_pid_file)!r}, "w").write(str(child.pid))
        time.sleep(300)
        """
    )
    output = io.StringIO()
    group = ProcessGroup(kill_wait_seconds=1, output=output)
    group.add("stubborn", stubborn, env=os.environ, cwd=str(ROOT))
    group.add("short", python_command("import time, sys; time.sleep(1); sys.exit(2)"), env=os.environ, cwd=str(ROOT))

    started = time.monotonic()
    assert group.run() == 2

    elapsed = time.monotonic() - started
    grandchild = int(wait_for_file(grandchild_pid_file))
    assert 2 <= elapsed < 8  # the 1 s of `short`, then the 1 s wait before SIGKILL
    assert "stubborn still running after 1 s: killing it" in output.getvalue()
    assert not psutil.pid_exists(grandchild) or psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE


@pytest.mark.parametrize("output_closed", [False, True], ids=["terminal", "output-gone"])
def test_ctrl_c_stops_every_process_with_sigterm_and_the_launcher_exits_0(tmp_path, output_closed):
    markers = [tmp_path / "first", tmp_path / "second"]
    driver = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {str(ROOT)!r})
        from scripts.process_group import ProcessGroup
        from tests.test_process_group import records_sigterm
        from pathlib import Path
        group = ProcessGroup(kill_wait_seconds=30)
        for marker in {[str(m) for m in markers]!r}:
            group.add(Path(marker).name, records_sigterm(Path(marker)), env=os.environ, cwd={str(ROOT)!r})
        sys.exit(group.run())
        """
    )
    launcher = subprocess.Popen([PYTHON, "-c", driver], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while len(psutil.Process(launcher.pid).children()) < 2:
            assert time.monotonic() < deadline, "the processes did not start"
            time.sleep(0.05)
        # A process started a moment ago may not have its handler yet: give it that moment.
        time.sleep(0.5)
        if output_closed:
            # What reads the launcher's output went away (a closed terminal, a pager quit):
            # its lines now fail, and must not keep it from stopping what it started.
            assert launcher.stdout is not None
            launcher.stdout.close()

        stopping = time.monotonic()
        launcher.send_signal(signal.SIGINT)
        output = "" if output_closed else launcher.communicate(timeout=20)[0]
        launcher.wait(timeout=20)
    finally:
        if launcher.poll() is None:
            launcher.kill()

    assert launcher.returncode == 0
    assert time.monotonic() - stopping < 5
    assert [wait_for_file(marker) for marker in markers] == ["terminated", "terminated"]
    if not output_closed:
        assert "stopping first" in output
        assert "stopping second" in output


def test_a_process_added_to_stop_last_is_stopped_once_the_others_have_exited(tmp_path):
    # Given a process that takes half a second to stop, and a Redis-like one it talks to meanwhile
    slow_exit, last_stopped = tmp_path / "slow-exit", tmp_path / "last-stopped"
    slow = python_command(
        f"""
        import signal, sys, time
        def stop(*_):
            time.sleep(0.5)
            open({str(slow_exit)!r}, "w").write(repr(time.time()))
            sys.exit(0)
        signal.signal(signal.SIGTERM, stop)
        time.sleep(60)
        """
    )
    last = python_command(
        f"""
        import signal, sys, time
        def stop(*_):
            open({str(last_stopped)!r}, "w").write(repr(time.time()))
            sys.exit(0)
        signal.signal(signal.SIGTERM, stop)
        time.sleep(60)
        """
    )
    group = ProcessGroup(kill_wait_seconds=10, output=io.StringIO())
    group.add("redis", last, env=os.environ, cwd=str(ROOT), stop_last=True)
    group.add("worker", slow, env=os.environ, cwd=str(ROOT))
    group.add("short", python_command("import time, sys; time.sleep(1); sys.exit(2)"), env=os.environ, cwd=str(ROOT))

    # When the group stops
    assert group.run() == 2

    # Then the Redis-like process got its SIGTERM only after the slow one had exited
    assert float(wait_for_file(last_stopped)) >= float(wait_for_file(slow_exit))
