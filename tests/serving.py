"""A real `unilseg serve` process for the tests: started on 127.0.0.1 with a free port, stopped after.

`Server(*flags)` runs `python -m unilseg serve --model unilseg-demo --device cpu --threads 1
--port 0 FLAGS...`, reads the URL from its first line, waits for its `ready` line and
gives an httpx client on it. Leaving the `with` block stops it (SIGINT, then SIGKILL) and
keeps its output for assertions.
"""
from __future__ import annotations

import base64
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx

READY_TIMEOUT_S = 120
EXAMPLES = Path(__file__).resolve().parents[1] / "src" / "unilseg" / "demo" / "examples"
MODEL_FLAGS = ("--model", "unilseg-demo", "--device", "cpu", "--threads", "1")


class Server:
    def __init__(self, *flags: str, env: dict[str, str] | None = None) -> None:
        self.flags, self.env = list(flags), env
        self.lines: list[str] = []
        self.url = ""

    def __enter__(self) -> Server:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(self.env or {})}
        self.proc = subprocess.Popen([sys.executable, "-m", "unilseg", "serve", *MODEL_FLAGS, "--port", "0",
                                      *self.flags], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=env)
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, args=(lines,), daemon=True).start()
        try:
            while True:
                line = lines.get(timeout=READY_TIMEOUT_S)
                if line is None:
                    raise RuntimeError("the server exited before it was ready:\n" + "".join(self.lines))
                if "listening on " in line:
                    self.url = line.split("listening on ", 1)[1].split()[0]
                if ": ready: " in line:
                    break
        except BaseException:
            self.stop()
            raise
        self.client = httpx.Client(base_url=self.url, timeout=120)
        return self

    def _read(self, lines: queue.Queue) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)
            lines.put(line)
        lines.put(None)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __exit__(self, *exc: object) -> None:
        if hasattr(self, "client"):
            self.client.close()
        self.stop()

    @property
    def output(self) -> str:
        return "".join(self.lines)


def example(name: str) -> bytes:
    return (EXAMPLES / name).read_bytes()


def json_body(image: bytes, instructions: list[str], **fields: object) -> dict:
    return {"image": base64.b64encode(image).decode("ascii"), "instructions": instructions, **fields}
