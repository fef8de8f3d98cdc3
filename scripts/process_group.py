"""The processes `make run` starts, kept together: any one ending stops the others, and Ctrl-C
stops them all, each given time to finish what it has in flight.

Written here rather than taken from honcho, which keeps a fork of the launcher beside each
process and pipes every log line through it (docs/benchmarks.md, issue 14): the children here
write straight to the launcher's own stdout and stderr, and nothing but them is started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import FrameType
from typing import TextIO

POLL_SECONDS = 0.05


@dataclass
class ProcessGroup:
    """Each process runs in a session of its own, so a Ctrl-C in the terminal reaches only the
    launcher, which then stops the processes in the order they were added."""

    kill_wait_seconds: float
    output: TextIO = field(default_factory=lambda: sys.stdout)
    _commands: dict[str, tuple[str, Mapping[str, str], str]] = field(default_factory=dict)
    _running: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _stopped_last: set[str] = field(default_factory=set)
    _stop_requested: bool = False

    def add(self, name: str, command: str, *, env: Mapping[str, str], cwd: str, stop_last: bool = False) -> None:
        """stop_last: stopped once the others have exited (the Redis they talk to while stopping)."""
        self._commands[name] = (command, env, cwd)
        if stop_last:
            self._stopped_last.add(name)

    def say(self, text: str) -> None:
        try:
            print(f"{time.strftime('%H:%M:%S')} launcher | {text}", file=self.output, flush=True)
        except (OSError, ValueError):
            pass  # a terminal or pipe that went away must not keep the processes from stopping

    def start(self) -> None:
        for name, (command, env, cwd) in self._commands.items():
            # Through the shell for the Procfile's ${NAME:-default}; exec, so the process is the
            # command itself and receives the signals.
            process = subprocess.Popen(["/bin/sh", "-c", f"exec {command}"], env=dict(env), cwd=cwd, start_new_session=True)
            self._running[name] = process
            self.say(f"{name} started (pid {process.pid})")

    def request_stop(self, signum: int, frame: FrameType | None = None) -> None:
        self._stop_requested = True

    def run(self) -> int:
        """Starts every process and waits: returns the exit code of the first that ended
        unasked (0 after a Ctrl-C, a SIGTERM, or a SIGHUP: the terminal closed)."""
        signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        previous = {signum: signal.signal(signum, self.request_stop) for signum in signals}
        try:
            self.start()
            return self._wait_for_first_exit()
        finally:
            # Whatever ended the wait (an error here too), nothing started is left running.
            self.stop()
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _wait_for_first_exit(self) -> int:
        while not self._stop_requested:
            for name, process in self._running.items():
                code = process.poll()
                if code is not None:
                    self.say(f"{name} exited with code {code}: stopping the others")
                    return code or 1
            time.sleep(POLL_SECONDS)
        return 0

    def stop(self) -> None:
        """SIGTERM to every process still running (those added with stop_last once the others
        have exited), SIGKILL to what outlives kill_wait_seconds, and to whatever of its session
        is left."""
        deadline = time.monotonic() + self.kill_wait_seconds
        first = {name: process for name, process in self._running.items() if name not in self._stopped_last}
        self._stop_and_wait(first, deadline)
        self._stop_and_wait({name: self._running[name] for name in self._stopped_last if name in self._running}, deadline)
        # A child of a process (granian's workers) that outlived it.
        for process in self._running.values():
            _signal_session(process, signal.SIGKILL)

    def _stop_and_wait(self, processes: dict[str, subprocess.Popen[bytes]], deadline: float) -> None:
        alive = {name: process for name, process in processes.items() if process.poll() is None}
        for name, process in alive.items():
            self.say(f"stopping {name}")
            # To the process only: granian and Celery stop their own children, in order.
            process.send_signal(signal.SIGTERM)
        while alive and time.monotonic() < deadline:
            alive = {name: process for name, process in alive.items() if process.poll() is None}
            time.sleep(POLL_SECONDS)
        for name, process in alive.items():
            self.say(f"{name} still running after {self.kill_wait_seconds:.0f} s: killing it")
            _signal_session(process, signal.SIGKILL)
            process.wait()


def _signal_session(process: subprocess.Popen[bytes], signum: int) -> None:
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        pass  # the whole session has exited
