"""Copy a child's stdout and stderr to our own and to the attempt's log file, as bytes arrive."""

from __future__ import annotations

import os
import threading
from typing import BinaryIO


class LogTee:
    """Pump each of a child's pipes into (terminal stream, shared log file) on its own thread."""

    def __init__(self, log_path: str | os.PathLike[str]):
        self._log: BinaryIO = open(log_path, "ab", buffering=0)  # noqa: SIM115 - closed in close()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def pump(self, pipe: BinaryIO, terminal_fd: int) -> None:
        thread = threading.Thread(target=self._copy, args=(pipe, terminal_fd), daemon=True, name="unbroken-tee")
        thread.start()
        self._threads.append(thread)

    def write_line(self, text: str, terminal_fd: int = 2) -> None:
        """A supervisor message, to the terminal and the log."""
        self._emit((text.rstrip("\n") + "\n").encode(), terminal_fd)

    def _copy(self, pipe: BinaryIO, terminal_fd: int) -> None:
        fd = pipe.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            self._emit(chunk, terminal_fd)
        pipe.close()

    def _emit(self, data: bytes, terminal_fd: int) -> None:
        with self._lock:
            self._log.write(data)
            try:
                os.write(terminal_fd, data)
            except OSError:
                pass  # the terminal went away; the log still gets everything

    def close(self, timeout: float = 5.0) -> None:
        """Wait for the pipes to drain (the child's end closed), then close the log."""
        for thread in self._threads:
            thread.join(timeout)
        self._log.close()
