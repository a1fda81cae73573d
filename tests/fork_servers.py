"""Fork servers started by tests: a private dir per test session or test, and their teardown."""

from __future__ import annotations

import contextlib
import os
import signal
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def private_server_dir() -> Iterator[Path]:
    """A fresh dir for servers' sockets and pid files (short: Unix socket paths are limited to
    ~107 bytes); on exit the servers that wrote a pid file there are terminated."""
    path = Path(tempfile.mkdtemp(prefix="mafs-", dir="/tmp"))
    try:
        yield path
    finally:
        for pid in server_pids(path):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            wait_until(lambda: not alive(pid))
        shutil.rmtree(path)


def server_pids(path: Path) -> list[int]:
    return [int(f.read_text()) for f in path.glob("*.pid") if f.is_file()]


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead but not yet reaped by its parent, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_until(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
