"""The single-process server: the app on uvicorn, the model loaded beside it, one batching worker.

The socket is bound before anything else (a taken port is one clear error, and port 0
picks a free one); the model loads on a thread while `/healthz` already answers and
`/readyz` says "loading". A model that fails to load stops the server with its error.
"""
from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from unilseg.errors import UnilsegError
from unilseg.inference.predictor import Predictor
from unilseg.serve.app import Service, create_app
from unilseg.serve.engine import Batcher, Engine, Job, JobResult

log = logging.getLogger(__name__)


def describe(predictor: Predictor, name: str, runtime: str) -> dict[str, Any]:
    """The model as /v1/models shows it."""
    from unilseg import __version__

    return {"name": name, "runtime": runtime, "precision": predictor.precision, "device": str(predictor.device),
            "input_size": predictor.spec.size, "threshold": predictor.threshold, "min_score": predictor.min_score,
            "version": __version__}


def connect(service: Service, engine: Engine, run: Callable[[Job], Awaitable[JobResult]], waiting: Callable[[], int],
            name: str, runtime: str) -> None:
    """Make `service` serve `engine`'s predictor: jobs go to `run` (batched), `waiting` counts the jobs queued.

    The local Batcher and each Ray Serve replica (`unilseg.serve.ray_serve`) both call it; then it is ready."""
    predictor = engine.predictor
    service.run = run
    service.has_image = engine.cache.__contains__
    service.stats = lambda: {**engine.stats(), "queued": waiting()}
    service.model = describe(predictor, name, runtime)
    service.threshold = predictor.threshold
    service.min_score = predictor.min_score
    service.ready = True


def attach(service: Service, predictor: Predictor, name: str, runtime: str, batch_images: int, wait_s: float,
           queue_size: int) -> Batcher:
    """Make `service` run jobs on `predictor` through a new Engine and Batcher; -> the Batcher."""
    engine = Engine(predictor, service.limits.cache_bytes)
    batcher = Batcher(engine, batch_images, wait_s, queue_size, coming=lambda: service.arriving > 0)
    connect(service, engine, batcher.run, lambda: batcher.waiting, name, runtime)
    return batcher


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (IPv4 or IPv6), or one UnilsegError saying why not."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise UnilsegError(f"--host {host}: not an address of this machine ({e.strerror}); use 127.0.0.1, "
                           "0.0.0.0 or an address of this machine") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        why = "the port is in use" if e.errno == 98 else (e.strerror or str(e))
        raise UnilsegError(f"cannot listen on {host}:{port}: {why}; pick another --port or --host") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(service: Service, sock: socket.socket, load: Callable[[], Predictor], name: str, runtime: str,
          batch_images: int, wait_s: float, queue_size: int, on_ready: Callable[[], None] = lambda: None,
          access_log: bool = False) -> None:
    """Serve `service` on `sock` until Ctrl-C / SIGTERM; `load` builds the predictor on a thread.

    Raises the load's UnilsegError (after stopping the server) if the model cannot load."""
    import uvicorn

    app = create_app(service)
    config = uvicorn.Config(app, log_level="info" if access_log else "warning", access_log=access_log,
                            timeout_graceful_shutdown=5, server_header=False)
    server = uvicorn.Server(config)
    batcher: list[Batcher] = []

    def loader() -> None:
        try:
            batcher.append(attach(service, load(), name, runtime, batch_images, wait_s, queue_size))
        except Exception as e:  # noqa: BLE001 (any load failure stops the server, with its message)
            service.error = str(e) if isinstance(e, UnilsegError) else f"{type(e).__name__}: {e}"
            server.should_exit = True
            return
        on_ready()

    threading.Thread(target=loader, name="unilseg-load", daemon=True).start()
    try:
        server.run(sockets=[sock])
    finally:
        for b in batcher:
            b.close()
    if service.error is not None and not service.ready:
        raise UnilsegError(f"the model did not load: {service.error}")
