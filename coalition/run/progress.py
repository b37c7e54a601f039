"""Live progress of the stages in flight, on the driver's terminal.

A stage that runs for more than a moment shows one line: items or steps done of the total, the
rate, the time left, and the loss while training. On a terminal the line is redrawn in place;
elsewhere (CI, ``ray job submit`` logs) a plain line is printed every ``every`` seconds. Work
reports into the task of the stage its thread runs (:func:`current`), so code deep in a call
(a batch of actor calls, a trainer's mailbox poll) needs no handle passed down to it.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any


class Task:
    """One stage's progress: ``done`` of ``total`` units, plus extra figures (a loss)."""

    def __init__(self, board: Board | None, name: str):
        self.board, self.name = board, name
        self.total = 0
        self.done = 0
        self.unit = ""
        self.extra: dict[str, float] = {}
        self.started = time.monotonic()

    def expect(self, total: int, unit: str) -> None:
        """More work of ``unit`` is coming (adds to the total: a stage may make several calls)."""
        if self.board is None:
            return
        with self.board.lock:
            if unit != self.unit:
                self.total, self.done, self.unit = 0, 0, unit
                self.started = time.monotonic()
            self.total += total

    def advance(self, n: int = 1) -> None:
        if self.board is None:
            return
        with self.board.lock:
            self.done += n

    def set(self, done: int, total: int, unit: str, **extra: float) -> None:
        if self.board is None:
            return
        with self.board.lock:
            if unit != self.unit:
                self.started = time.monotonic()
            self.done, self.total, self.unit = done, total, unit
            self.extra.update(extra)

    def line(self, now: float) -> str:
        if not self.total:
            return f"{self.name} …"
        text = f"{self.name} {self.done}/{self.total} {self.unit}"
        elapsed = now - self.started
        if self.done and elapsed > 0:
            rate = self.done / elapsed
            left = (self.total - self.done) / rate
            text += f" {rate:.2f}/s ETA {_clock(left)}"
        for key, value in self.extra.items():
            text += f" {key} {value:.4g}"
        return text


NO_TASK = Task(None, "")


class Board:
    """The live line of every task in flight, drawn by a background thread."""

    def __init__(self, stream: IO[str] | None = None, every: float = 10.0, tty: bool | None = None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.every = 0.5 if self.tty else every
        self.lock = threading.Lock()
        self.tasks: list[Task] = []
        self._shown = False
        self._thread: threading.Thread | None = None

    @contextmanager
    def task(self, name: str) -> Iterator[Task]:
        """A task for the calling thread's stage, drawn until the block ends."""
        task = Task(self, name)
        with self.lock:
            self.tasks.append(task)
            if self._thread is None:
                self._thread = threading.Thread(target=self._draw_loop, daemon=True)
                self._thread.start()
        token = _LOCAL.__dict__.get("task")
        _LOCAL.task = task
        try:
            yield task
        finally:
            _LOCAL.task = token
            with self.lock:
                self.tasks.remove(task)
                self._clear()

    def echo(self, message: str) -> None:
        """Print a line of the job's own (a stage line) without garbling the live line."""
        with self.lock:
            self._clear()
            print(message, flush=True)

    def render(self) -> str:
        now = time.monotonic()
        return " | ".join(t.line(now) for t in self.tasks if t.total or t.extra)

    def _draw_loop(self) -> None:
        while True:
            time.sleep(self.every)
            with self.lock:
                line = self.render()
                if not line:
                    continue
                if self.tty:
                    self.stream.write("\r\033[K" + line[: _width() - 1])
                    self._shown = True
                else:
                    self.stream.write(f"[progress] {line}\n")
                self.stream.flush()

    def _clear(self) -> None:
        if self._shown:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self._shown = False


def _width() -> int:
    import shutil

    return shutil.get_terminal_size((120, 20)).columns


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


_LOCAL = threading.local()


def current() -> Task:
    """The calling thread's task (a no-op outside a tracked stage)."""
    return getattr(_LOCAL, "task", None) or NO_TASK


_BOARD: Board | None = None


def board() -> Board:
    """The driver's board (on stderr), made on first use."""
    global _BOARD
    if _BOARD is None:
        _BOARD = Board()
    return _BOARD


def tracking(name: str) -> Any:
    """The calling thread's stage ``name``, shown live while the block runs."""
    return board().task(name)


def echo(message: str) -> None:
    """Print a line of the job's own without garbling the live line."""
    board().echo(message)
