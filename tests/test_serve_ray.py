"""`unilseg serve --ray` on a local Ray cluster (all this machine's CPUs, one replica of the demo model),
beside the single-process server: the same requests get the same answers; Serve's batching shares a
batch between concurrent requests and a full replica refuses with our 503; SIGTERM stops it all.

Both servers are `serving.Server` processes (`python -m unilseg serve`), once for the module: Ray
Serve's start-up is the slow part (tens of seconds on 2 cores)."""
from __future__ import annotations

import asyncio
import base64
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from serving import EXAMPLES, Server

pytestmark = pytest.mark.slow  # two real server processes, one on Ray Serve

ROOT = Path(__file__).resolve().parents[1]
CASES = [("demo_scene.png", ["the roof of the red house", "the sky"]),
         ("demo_scene_2.png", ["the blue car", "all the trees"]),
         ("demo_scene_3.png", ["the pink tree"])]
RAY_FLAGS = ["--ray", "--cpus-per-replica", "1", "--batch-images", "2", "--batch-wait-ms", "300", "--queue-size", "2"]
FAIL_TIMEOUT_S = 300  # a guard against a start that never ends, not a measurement


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


def descendants(pid: int) -> set[int]:
    """The processes below `pid` now (a local Ray cluster's GCS, raylet and workers are the server's)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def session_members(sid: int) -> set[int]:
    """The processes in session `sid` (a server started in a session of its own, and its Ray processes)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[3]) == sid:
                found.add(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    return found


def alive(pids: set[int]) -> set[int]:
    """Those of `pids` still running (zombies count as gone), after up to 20 s for them to end."""
    def running() -> set[int]:
        left = set()
        for pid in pids:
            try:
                if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                    left.add(pid)
            except OSError:
                pass
        return left

    deadline = time.monotonic() + 20
    while running() and time.monotonic() < deadline:
        time.sleep(0.2)
    return running()


def stop_all(server: Server, pids: set[int]) -> None:
    """Stop the server; kill whatever of its processes outlived it (a failed test must not leave a cluster)."""
    server.__exit__(None, None, None)
    for pid in alive(pids):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="module")
def servers() -> Iterator[dict]:
    require_ray_serve()
    started = time.perf_counter()
    ray = Server(*RAY_FLAGS).__enter__()
    start_s = time.perf_counter() - started
    ray_pids = descendants(ray.proc.pid)
    try:
        with Server() as local:
            print(f"\nray serve: start-up to ready {start_s:.1f} s")
            yield {"local": local, "ray": ray, "ray_pids": ray_pids}
    finally:
        stop_all(ray, ray_pids | descendants(ray.proc.pid))


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


def test_ready_models_and_health(servers):
    answers = {}
    for which in ("local", "ray"):
        server = servers[which]
        ready, models = httpx.get(f"{server.url}/readyz"), httpx.get(f"{server.url}/v1/models")
        assert ready.status_code == 200 and ready.json() == {"status": "ready"}
        answers[which] = {"models": models.json(), "healthz": httpx.get(f"{server.url}/healthz").json(),
                          "label studio health": httpx.get(f"{server.url}/health").json()}
    assert answers["ray"] == answers["local"]
    model = answers["ray"]["models"]["models"][0]
    assert model["name"] == "unilseg-demo" and model["ready"] is True


def test_the_two_lines_the_local_server_prints(servers):
    for server in (servers["local"], servers["ray"]):
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
    pids = servers["ray_pids"] | descendants(ray.proc.pid)
    assert len(pids) > 3  # GCS, raylet, Serve's controller, proxy and replica at least
    ray.proc.send_signal(signal.SIGTERM)
    assert ray.proc.wait(60) == 0, ray.output
    assert alive(pids) == set()
    assert not any(line.startswith("error:") for line in ray.lines)


def test_a_replica_that_cannot_load_is_one_error_line(tmp_path):
    """A config the replica cannot build a network from (the driver's checks pass it): the replica's own
    message as one `error:` line, a nonzero exit, no Ray process left."""
    require_ray_serve()
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {swin: 7}\n")
    proc = subprocess.Popen([sys.executable, "-m", "unilseg", "serve", "--ray", "--model", "unilseg-demo", "--config",
                             str(bad), "--device", "cpu", "--cpus-per-replica", "1", "--port", str(free_port())],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=FAIL_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2, err
    assert len(errors) == 1 and errors[0].startswith("error: the model did not load: the config does not build a "
                                                     "network"), err
    assert "ready:" not in out
    assert alive(session_members(proc.pid)) == set()


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
