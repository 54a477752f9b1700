"""Special files for the fuzz suite, made safe to test: FIFOs that cannot hang a case, a memory cap for devices
that never end. A regressed case then fails (or raises MemoryError) instead of hanging or exhausting the machine."""
from __future__ import annotations

import os
import resource
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

GUARD_SECONDS = 30.0  # a refusal happens before any model work: far quicker than this


@contextmanager
def fifo_guard(*paths: Path, after: float = GUARD_SECONDS) -> Iterator[list[Path]]:
    """Make a FIFO at each path. If the case still runs `after` seconds later, each one still a FIFO is
    opened read-write and closed again, which wakes whoever blocks on it (a reader then sees the end of the
    file, a writer a broken pipe). Yields the list of FIFOs that had to be woken: empty if nothing waited."""
    for path in paths:
        os.mkfifo(path)
    woken: list[Path] = []
    done = threading.Event()

    def watch() -> None:
        if done.wait(after):
            return
        while not done.is_set():
            for path in paths:
                try:
                    if not stat.S_ISFIFO(os.stat(path).st_mode):
                        continue
                    fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
                except OSError:
                    continue
                woken.append(path)
                time.sleep(0.2)
                os.close(fd)
            done.wait(1.0)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield woken
    finally:
        done.set()
        thread.join(5)


@contextmanager
def memory_cap(extra: int = 1 << 30) -> Iterator[None]:
    """Let this process map at most `extra` more bytes while the block runs (RLIMIT_AS), so reading an
    endless device without a bound ends in MemoryError rather than in swapping the machine."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as f:
        mapped = int(f.read().split()[0]) * resource.getpagesize()
    cap = mapped + extra
    resource.setrlimit(resource.RLIMIT_AS, (cap if hard == resource.RLIM_INFINITY else min(cap, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
