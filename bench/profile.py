"""py-spy around a scenario, and a plain-text summary of where the samples fell.

py-spy samples the running process from outside (no code change). Its `raw` format is one
collapsed stack per line: `frame;frame;... count`.
Run directly to summarise a file again:  python -m bench.profile FILE.txt
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

OUR_CODE = ("messages/", "scheduler_project/", "celeryconfig")
LINE_NUMBER = re.compile(r":\d+\)$")


class PySpy:
    def __init__(self, *, pid: int, output: Path, subprocesses: bool = False, gil_only: bool = False,
                 rate: int = 100) -> None:
        # The virtualenv's own, when it is not on PATH.
        py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
        if not py_spy:
            raise RuntimeError("py-spy is not installed: pip install -r bench/requirements.txt")
        self.output = output
        self.command = [
            py_spy, "record", "--pid", str(pid), "--format", "raw", "--output", str(output),
            # Non-blocking: pausing a process of 100+ threads at every sample slowed a burst
            # 5x. Idle threads are then told apart by heuristics that miss some waits (a pool
            # thread blocked on its queue shows as `_worker`): hence --gil for the worker.
            "--rate", str(rate), "--nonblocking", *(["--subprocesses"] if subprocesses else []),
            # Only samples holding the GIL: what limits a one-process, many-thread worker.
            *(["--gil"] if gil_only else []),
        ]
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> PySpy:
        log = open(self.output.with_suffix(".log"), "wb")  # noqa: SIM115 - lives with the process
        self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT)
        return self

    def __exit__(self, *exc_info: object) -> None:
        # SIGINT is py-spy's Ctrl-C: it writes what it sampled and exits.
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def _function(frame: str) -> str:
    """`deliver_messages (messages/delivery.py:38)` -> `deliver_messages (messages/delivery.py)`."""
    return LINE_NUMBER.sub(")", frame.strip())


def summarize(raw_file: Path, top: int = 20) -> str:
    """Top functions by self and inclusive share of the samples, and our own code's frames."""
    self_samples: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw_file.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_function(f) for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        self_samples[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return f"{raw_file}: no samples\n"

    def block(
        title: str, counter: Counter[str], keep: Callable[[str], bool] = lambda frame: True
    ) -> list[str]:
        rows = [f"{title}", *(
            f"  {100 * n / total:5.1f}%  {frame}" for frame, n in counter.most_common() if keep(frame)
        )]
        return rows[: top + 1]

    lines = [f"{raw_file.name}: {total} samples"]
    lines += block("self (the top frame of each sample):", self_samples)
    lines += block("inclusive, our code:", inclusive, lambda frame: any(part in frame for part in OUR_CODE))
    lines += block("inclusive, everything:", inclusive)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    for name in sys.argv[1:]:
        print(summarize(Path(name)))
