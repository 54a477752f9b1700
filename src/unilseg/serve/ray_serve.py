"""`unilseg serve --ray`: the same app (`create_app` over a `Service`) on Ray Serve replicas.

Each replica (`Replica`, a Serve FastAPI ingress whose app is built on the replica, after
its constructor) loads its own predictor and builds its own Service and `Engine`. Serve's
`serve.batch` takes the local `Batcher`'s place around `Engine.run_batch` (run on one
thread of its own, off the replica's event loop): a batch holds at most `--batch-images` distinct
images (its `batch_size_fn`) and waits `--batch-wait-ms` for them. Past `--queue-size`
jobs in flight a replica refuses with `Busy` (the app's 503 JSON with Retry-After);
Serve's `max_ongoing_requests` (--queue-size + 16) leaves room for that refusal and the
health checks to reach the replica; `max_queued_requests` (as many again per replica)
bounds what waits in Serve's router in front of the replicas: a burst passes through it
even while the replicas have room, so it must not be tight, and past it Serve answers its
own 503 (plain text).

On a new local Ray cluster (all this machine's CPUs), or an existing one (`--address`,
else $RAY_ADDRESS: its workers need unilseg installed). HTTP on --host/--port, from
Serve's proxy. Prints the local server's two lines, blocks until Ctrl-C / SIGTERM,
then deletes the app and leaves Ray (a local cluster stops with it). `/v1/stats` is the
stats of whichever replica answers.
"""
from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import re
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from unilseg.errors import UnilsegError
from unilseg.serve.app import Service, create_app
from unilseg.serve.engine import Busy, Engine, Job, JobResult
from unilseg.serve.schema import Limits
from unilseg.serve.server import bind, connect, url_of

APP = "unilseg"
INSTALL_HINT = "pip install 'unilseg[serve,ray]'"
SPARE_REQUESTS = 16  # per replica, beyond --queue-size: health checks, /v1/models, and the 503s themselves
LOAD_FAILED = "unilseg: the model did not load: "  # marks a replica's load error in Serve's report


def predictor_settings(args: Any) -> dict[str, Any]:
    """`unilseg.inference.load_predictor`'s keywords from the model flags (args: `unilseg serve`'s parsed
    flags); torch threads = the replica's CPUs."""
    return {"model": args.model, "weights": args.weights, "config": args.config,
            "runtime": getattr(args, "runtime", "torch"), "precision": getattr(args, "precision", "fp32"),
            "compile": getattr(args, "compile", False), "device": args.device, "opts": tuple(args.opts or ()),
            "download": getattr(args, "download", False), "threshold": args.threshold,
            "min_score": getattr(args, "min_score", None),
            "max_batch": args.text_batch, "threads": max(1, int(args.cpus_per_replica))}


def distinct_images(jobs: list[Job]) -> int:
    """A batch's size as `--batch-images` counts it: its distinct images."""
    return len({job.key for job in jobs})


class Replica:
    """One Serve replica: its predictor, Engine and Service; `serve.batch` over `Engine.run_batch`.

    Wrapped by `serve.ingress()` in `deployment`; Serve calls `__serve_build_asgi_app__` after
    the constructor, so the app exists (and answers /readyz 200) only once the model is loaded.
    """

    def __init__(self, settings: dict[str, Any], limits: Limits, api_key: str | None, label_studio: Any,
                 name: str, runtime: str) -> None:
        from ray import serve

        from unilseg.inference import load_predictor

        # one thread for all torch work, the load's too (a second one would start a second OpenMP pool)
        self.model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="unilseg-model")
        try:
            predictor = self.model_thread.submit(load_predictor, **settings).result()
        except UnilsegError as e:  # the driver finds this line in Serve's report and prints it alone
            self.model_thread.shutdown()
            raise RuntimeError(f"{LOAD_FAILED}{e}") from None
        self.service = Service(limits=limits, api_key=api_key, label_studio=label_studio)
        self.engine = Engine(predictor, limits.cache_bytes)
        self.in_flight = 0  # jobs waiting for or in a batch (one event loop: no lock)
        self.last_batch_s = 1.0  # a first guess for Retry-After

        async def batch_of_jobs(jobs: list[Job]) -> list[JobResult]:
            start = time.perf_counter()
            results = await asyncio.get_running_loop().run_in_executor(self.model_thread, self.engine.run_batch, jobs)
            self.last_batch_s = time.perf_counter() - start
            return results

        self.batched = serve.batch(max_batch_size=limits.batch_images, batch_wait_timeout_s=limits.batch_wait_ms / 1e3,
                                   batch_size_fn=distinct_images)(batch_of_jobs)
        connect(self.service, self.engine, self.run, lambda: self.in_flight, name, runtime)

    async def run(self, job: Job) -> JobResult:
        """The job's result from the next batch; Busy past `queue_size` jobs in flight on this replica."""
        limits = self.service.limits
        if self.in_flight >= limits.queue_size:
            raise Busy(max(1, round(self.in_flight / limits.batch_images * self.last_batch_s)))
        self.in_flight += 1
        try:
            return await self.batched(job)
        finally:
            self.in_flight -= 1

    def __serve_build_asgi_app__(self) -> Any:
        return create_app(self.service)


def deployment(args: Any, service: Service, name: str, runtime: str) -> Any:
    """The Serve application: `--replicas` Replicas with `--cpus-per-replica` / `--gpus-per-replica` each."""
    from ray import serve

    limits = service.limits
    ongoing = limits.queue_size + SPARE_REQUESTS
    wrapped = serve.ingress()(Replica)
    bound = serve.deployment(
        wrapped, name=APP, num_replicas=args.replicas,
        ray_actor_options={"num_cpus": args.cpus_per_replica, "num_gpus": args.gpus_per_replica},
        max_ongoing_requests=ongoing, max_queued_requests=ongoing * args.replicas,
        max_constructor_retry_count=1, graceful_shutdown_timeout_s=5, graceful_shutdown_wait_loop_s=0.5)
    return bound.bind(predictor_settings(args), limits, service.api_key, service.label_studio, name, runtime)


def check_reachable(address: str) -> None:
    """A HOST:PORT address where nothing listens is one error at once (ray.init would retry for minutes)."""
    host, sep, port = address.rpartition(":")
    if "://" in address or not sep or not port.isdigit():
        return  # ray://..., auto: Ray's to resolve
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as e:
        raise UnilsegError(f"--address {address}: no Ray cluster answers there ({e.strerror or e}); give the head "
                           "node's GCS address (HOST:6379 by default), or leave --address and $RAY_ADDRESS out for "
                           "a local cluster") from None


def start_ray(address: str | None, verbose: bool) -> None:
    """Join the cluster at `address`, or start a local one with this machine's CPUs; quiet unless `verbose`."""
    import ray

    level = logging.INFO if verbose else logging.WARNING
    if not verbose:  # an informational warning on every local start (the new cluster does use token auth)
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    try:
        if address:
            check_reachable(address)
            ray.init(address=address, logging_level=level, log_to_driver=verbose)
        else:
            ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, logging_level=level,
                     log_to_driver=verbose)
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = f"the Ray cluster at {address}" if address else "a local Ray cluster"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UnilsegError(f"cannot start or reach {where}: {first}") from None
    logging.getLogger("ray.serve").setLevel(level)  # Serve's driver-side lines ("Started Serve ...")


def check_resources(replicas: int, cpus: float, gpus: float, have: dict[str, float]) -> None:
    """One clear error, rather than a wait without end, when the cluster (`have`: its resources) cannot hold
    `replicas` of `cpus` CPUs and `gpus` GPUs each."""
    for flag, key, each in (("--cpus-per-replica", "CPU", cpus), ("--gpus-per-replica", "GPU", gpus)):
        if each * replicas > have.get(key, 0.0) + 1e-9:
            raise UnilsegError(f"--replicas {replicas} x {flag} {each:g} needs {each * replicas:g} {key}s; the Ray "
                               f"cluster has {have.get(key, 0.0):g}: ask for fewer")


def load_error(e: BaseException) -> str:
    """Why the replicas did not start, in one line: a replica's load error from Serve's status if it holds one,
    else the last line of what Serve reported."""
    from ray import serve

    reports = []
    try:
        app = serve.status().applications.get(APP)
        reports = [d.message for d in app.deployments.values() if d.message] if app else []
    except Exception:  # noqa: BLE001 (the status is a better message, not a needed one)
        pass
    for text in (*reports, str(e)):
        found = re.search(re.escape(LOAD_FAILED) + r"(.+)", text)
        if found:
            return found.group(1).strip()
    lines = [line.strip() for text in (str(e), *reports) for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else type(e).__name__


def interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def wait_for_stop() -> None:
    """Block until Ctrl-C or SIGTERM (`run` turns SIGTERM into KeyboardInterrupt)."""
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return


def run(args: Any, service: Service, name: str, runtime: str) -> int:
    """`unilseg serve --ray` (args: its parsed flags; service: the limits, key and Label Studio backend each
    replica copies): deploy, print where, serve until Ctrl-C / SIGTERM, shut down. -> exit code 0."""
    if importlib.util.find_spec("ray") is None or importlib.util.find_spec("ray.serve") is None:
        raise UnilsegError(f"--ray needs Ray Serve; install it with: {INSTALL_HINT}")
    sock = bind(args.host, args.port)  # the local server's checks and its port 0; Serve's proxy binds it again
    port, url = sock.getsockname()[1], url_of(sock)
    sock.close()
    address = args.address or os.environ.get("RAY_ADDRESS") or None
    if address is None:  # the local cluster will have this machine's CPUs: say so before starting it
        check_resources(args.replicas, args.cpus_per_replica, 0, {"CPU": os.cpu_count() or 1})
    import ray
    from ray import serve

    previous = signal.signal(signal.SIGTERM, interrupt)  # SIGTERM while starting cleans up as Ctrl-C does
    try:
        start_ray(address, args.access_log)
        signal.signal(signal.SIGTERM, interrupt)  # again: ray.init puts its own (which aborts) in its place
        check_resources(args.replicas, args.cpus_per_replica, args.gpus_per_replica, ray.cluster_resources())
        level = "INFO" if args.access_log else "WARNING"
        serve.start(http_options={"host": args.host, "port": port},
                    logging_config={"log_level": level, "enable_access_log": args.access_log})
        print(f"unilseg serve: listening on {url} (model {name} loading; /readyz says when it is ready)", flush=True)
        try:
            serve.run(deployment(args, service, name, runtime), name=APP, route_prefix="/",
                      logging_config={"log_level": level, "enable_access_log": args.access_log})
        except Exception as e:  # noqa: BLE001 (Serve reports a replica that failed to start as RuntimeError & co.)
            raise UnilsegError(f"the model did not load: {load_error(e)}") from None
        print(f"unilseg serve: ready: {url}/v1/segment ({url}/docs)", flush=True)
        wait_for_stop()
    finally:
        # our app only: on a shared cluster, Serve and its other apps stay (a local cluster goes entirely);
        # clean-up that fails (Serve never started) must not hide why the run ended
        with contextlib.suppress(Exception):
            if ray.is_initialized():
                serve.delete(APP)
        ray.shutdown()
        signal.signal(signal.SIGTERM, previous)
    return 0
