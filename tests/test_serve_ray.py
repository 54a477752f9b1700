"""`unilseg serve --ray` on a local Ray cluster (all this machine's CPUs, one replica of the demo model),
beside the single-process server: the same requests get the same answers; Serve's batching shares a
batch between concurrent requests and a full replica refuses with our 503; SIGTERM stops it all.

Both servers run as `python -m unilseg serve` subprocesses, once for the module: Ray Serve's
start-up is the slow part (tens of seconds on 2 cores)."""
from __future__ import annotations

import asyncio
import base64
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "src" / "unilseg" / "demo" / "examples"
CASES = [("demo_scene.png", ["the roof of the red house", "the sky"]),
         ("demo_scene_2.png", ["the blue car", "all the trees"]),
         ("demo_scene_3.png", ["the pink tree"])]
START_S = 300  # a guard against a server that never comes up, not a measurement
RAY_FLAGS = ["--batch-images", "2", "--batch-wait-ms", "300", "--queue-size", "2"]


def require_ray_serve() -> None:
    if importlib.util.find_spec("ray") is None or importlib.util.find_spec("ray.serve") is None:
        why = "the Ray Serve tests need Ray Serve: pip install 'unilseg[serve,ray]'"
        if os.environ.get("CI"):
            pytest.fail(why, pytrace=False)
        pytest.skip(why)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def session_members(sid: int) -> list[str]:
    """The processes (pid and command) left in session `sid`: the server's Ray processes (raylet, GCS, workers)
    share the session the server was started in."""
    left = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == sid:
                left.append(f"{stat.parent.name} {(stat.parent / 'cmdline').read_bytes()[:120]!r}")
        except (OSError, IndexError, ValueError):
            continue
    return left


class Server:
    """`python -m unilseg serve ARGS`, started in its own session; `wait` for its ready line."""

    def __init__(self, argv: list[str]) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"),
                                                                           os.environ.get("PYTHONPATH")]))}
        self.started = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "-m", "unilseg", "serve", *argv], cwd=ROOT, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     text=True, start_new_session=True)
        self.argv, self.lines, self.ready = argv, [], threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def wait(self) -> None:
        """Until the ready line (its URL -> `url`, the time it took -> `start_s`); a failure if it never comes."""
        if not self.ready.wait(START_S) or self.proc.poll() is not None:
            self.stop()
            pytest.fail(f"unilseg serve {' '.join(self.argv)} did not become ready:\n" + "".join(self.lines))
        self.start_s = time.perf_counter() - self.started
        ready = next(line for line in self.lines if line.startswith("unilseg serve: ready: "))
        self.url = ready.split()[3].removesuffix("/v1/segment")

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)
            if line.startswith("unilseg serve: ready: "):
                self.ready.set()
        self.ready.set()  # it ended

    def stop(self) -> int:
        """SIGTERM, as a service manager stops it; -> its exit code. Its whole session is gone after."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
            return -9
        finally:
            deadline = time.monotonic() + 20
            while session_members(self.proc.pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if session_members(self.proc.pid):
                os.killpg(self.proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, Server]]:
    require_ray_serve()
    ray = Server(["--ray", "--model", "unilseg-demo", "--device", "cpu", "--cpus-per-replica", "1",
                  "--port", str(free_port()), *RAY_FLAGS])
    local = Server(["--model", "unilseg-demo", "--device", "cpu", "--threads", "1", "--port", "0"])
    try:
        local.wait()
        ray.wait()
    except BaseException:
        local.stop()
        ray.stop()
        raise
    print(f"\nray serve start-up to ready: {ray.start_s:.1f} s (local server: {local.start_s:.1f} s)")
    try:
        yield {"local": local, "ray": ray}
    finally:
        local.stop()
        ray.stop()


def without_timings(answer: dict) -> dict:
    return {k: v for k, v in answer.items() if k != "timings"}


def segment(url: str, name: str, instructions: list[str], form: bool) -> dict:
    data = (EXAMPLES / name).read_bytes()
    if form:
        r = httpx.post(f"{url}/v1/segment", files={"image": (name, data, "image/png")},
                       data={"instructions": instructions, "outputs": "rle,png"}, timeout=60)
    else:
        r = httpx.post(f"{url}/v1/segment", json={"image": base64.b64encode(data).decode(),
                                                  "instructions": instructions, "outputs": ["rle", "png"]},
                       timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize("form", [False, True], ids=["json", "multipart"])
def test_same_answers_as_the_local_server(servers, form):
    for name, instructions in CASES:
        local = segment(servers["local"].url, name, instructions, form)
        ray = segment(servers["ray"].url, name, instructions, form)
        assert [r["instruction"] for r in ray["results"]] == instructions
        assert all("rle" in r and "png" in r for r in ray["results"])
        assert without_timings(ray) == without_timings(local)
    assert any(r["area"] > 0 for r in ray["results"])  # a real mask, not an empty one on both sides


def test_ready_and_models(servers):
    answers = {}
    for which, server in servers.items():
        ready, models = httpx.get(f"{server.url}/readyz"), httpx.get(f"{server.url}/v1/models")
        assert ready.status_code == 200 and ready.json() == {"status": "ready"}
        answers[which] = models.json()
    assert answers["ray"] == answers["local"]
    assert answers["ray"]["models"][0]["name"] == "unilseg-demo" and answers["ray"]["models"][0]["ready"]


def test_the_two_lines_the_local_server_prints(servers):
    for server in servers.values():
        printed = [line for line in server.lines if line.startswith("unilseg serve: ")]
        url = server.url
        assert printed[:2] == [f"unilseg serve: listening on {url} (model unilseg-demo loading; /readyz says when "
                               "it is ready)\n", f"unilseg serve: ready: {url}/v1/segment ({url}/docs)\n"]


def test_serve_batch_shares_a_batch_and_a_full_replica_refuses(servers):
    """--batch-images 2 --queue-size 2: of four requests sent at once, two (distinct images) run as one
    batch, the other two find two jobs in flight and get our 503 with Retry-After (not Serve's own)."""
    url = servers["ray"].url
    before = httpx.get(f"{url}/v1/stats").json()

    async def send_all() -> list:
        async with httpx.AsyncClient(timeout=60) as client:
            async def one(name: str):
                data = base64.b64encode((EXAMPLES / name).read_bytes()).decode()
                return await client.post(f"{url}/v1/segment", json={"image": data, "instructions": ["the sky"]})
            return await asyncio.gather(*(one(n) for n in ("demo_scene.png", "demo_scene_2.png",
                                                             "demo_scene_3.png", "demo_scene.png")))

    answers = asyncio.run(send_all())
    codes = sorted(r.status_code for r in answers)
    assert codes == [200, 200, 503, 503], [r.text for r in answers]
    for r in answers:
        assert r.headers["content-type"] == "application/json", r.text  # ours, not Serve's own 503
        if r.status_code == 503:
            assert set(r.json()) == {"error"} and "busy" in r.json()["error"]
            assert int(r.headers["retry-after"]) >= 1
        else:
            assert r.json()["timings"]["batch_requests"] == 2
    after = httpx.get(f"{url}/v1/stats").json()
    assert after["batches"] - before["batches"] == 1
    assert after["queued"] == 0


def test_sigterm_stops_serve_and_ray(servers):
    """Last (the module's servers are stopped here, and again harmlessly by the fixture): exit code 0,
    no Ray process left behind."""
    ray = servers["ray"]
    assert ray.stop() == 0, "".join(ray.lines)
    assert session_members(ray.proc.pid) == []
    assert not any(line.startswith("error:") for line in ray.lines)


def test_a_replica_that_cannot_load_is_one_error_line(tmp_path):
    """A config the replica cannot build a network from (the driver's checks pass it): the replica's own
    message as one `error:` line, a nonzero exit, no Ray process left."""
    require_ray_serve()
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {swin: 7}\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-m", "unilseg", "serve", "--ray", "--model", "unilseg-demo", "--config",
                             str(bad), "--device", "cpu", "--cpus-per-replica", "1", "--port", str(free_port())],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=START_S)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2, err
    assert len(errors) == 1 and errors[0].startswith("error: the model did not load: the config does not build a "
                                                     "network"), err
    assert "ready:" not in out
    deadline = time.monotonic() + 20
    while session_members(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert session_members(proc.pid) == []


def test_what_the_cluster_cannot_hold_and_an_address_without_ray_are_one_error_each():
    """Both checked before Serve starts: a wait without end (or ray.init's minutes of retries) otherwise."""
    require_ray_serve()
    from unilseg.errors import UnilsegError
    from unilseg.serve.ray_serve import check_reachable, check_resources

    with pytest.raises(UnilsegError, match=r"--replicas 3 x --cpus-per-replica 1 needs 3 CPUs; the Ray cluster has 2"):
        check_resources(3, 1.0, 0.0, {"CPU": 2.0})
    with pytest.raises(UnilsegError, match=r"--gpus-per-replica 0.5 needs 1 GPUs; the Ray cluster has 0"):
        check_resources(2, 0.5, 0.5, {"CPU": 2.0})
    check_resources(2, 1.0, 0.0, {"CPU": 2.0})
    port = free_port()
    with pytest.raises(UnilsegError, match=rf"--address 127.0.0.1:{port}: no Ray cluster answers there"):
        check_reachable(f"127.0.0.1:{port}")
