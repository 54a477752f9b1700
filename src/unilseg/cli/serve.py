"""`unilseg serve`: the HTTP API (and Label Studio's ML backend) on this machine, or on Ray Serve with --ray.

Checks every flag and the access rule (another address than loopback needs an API key, or
an explicit --no-auth) before anything binds or loads, then hands over to
`unilseg.serve.server.serve` (or `unilseg.serve.ray_serve.run`). Importing this module
imports neither torch nor FastAPI: `--help` is instant.
"""
from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from unilseg.cli.args import (
    MIN_SCORE_HELP,
    add_min_score_arg,
    add_model_args,
    check_settings,
    finite_float,
    guarded_main,
    path_arg,
)

INSTALL_HINT = "pip install 'unilseg[serve]'"
KEY_ENV = "UNILSEG_API_KEY"
MIN_KEY_CHARS = 16


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="unilseg serve",
        description="Serve the model over HTTP: POST /v1/segment (an image and instructions -> masks), "
                    "GET /v1/models, /healthz, /readyz, /docs; and Label Studio's ML backend (/predict, /setup, "
                    "/health). Concurrent requests share encoder and decoder batches.")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; any other needs an API key "
                        "or --no-auth)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: a free one, printed)")
    g = p.add_argument_group("access")
    g.add_argument("--api-key-file", type=path_arg, metavar="FILE",
                   help=f"file holding the API key clients send as `Authorization: Bearer KEY` (default: ${KEY_ENV}"
                        f" if set; at least {MIN_KEY_CHARS} characters)")
    g.add_argument("--no-auth", action="store_true",
                   help="serve another address than loopback without a key (anyone who reaches it may use it)")
    add_model_args(p, download=True)
    p.add_argument("--threshold", type=finite_float, default=None,
                   help="default mask threshold (a request's `threshold` overrides it; default: the model's)")
    add_min_score_arg(p, MIN_SCORE_HELP + " (a request's `min_score` overrides it)")
    p.add_argument("--text-batch", type=int, metavar="N",
                   help="(image, text) pairs per decoder batch (default: 1 on CPU, 16 on GPU)")
    g = p.add_argument_group("batching and limits (each request's)")
    g.add_argument("--batch-images", type=int, default=4, metavar="N",
                   help="distinct images per encoder batch across concurrent requests (default 4)")
    g.add_argument("--batch-wait-ms", type=finite_float, default=10.0, metavar="MS",
                   help="how long a batch waits for more requests (default 10)")
    g.add_argument("--queue-size", type=int, default=32, metavar="N",
                   help="requests waiting for the model at most; past it: 503 with Retry-After (default 32)")
    g.add_argument("--timeout", type=finite_float, default=60.0, metavar="S",
                   help="seconds from a request's arrival to its answer, else 504 (default 60)")
    g.add_argument("--max-body-mb", type=finite_float, default=20.0, metavar="MB",
                   help="request body size limit, else 413 (default 20)")
    g.add_argument("--max-pixels", type=int, default=40_000_000, metavar="N",
                   help="image width x height limit, else 413 (default 40000000)")
    g.add_argument("--max-instructions", type=int, default=64, metavar="N",
                   help="instructions per request (default 64)")
    g.add_argument("--max-instruction-chars", type=int, default=1000, metavar="N",
                   help="characters per instruction (default 1000; the text encoder reads 77 tokens)")
    g.add_argument("--cache-mb", type=finite_float, default=512.0, metavar="MB",
                   help="image embeddings kept, so a repeated image costs only the decoder (default 512; 0: off)")
    g = p.add_argument_group("Label Studio ML backend")
    g.add_argument("--label-studio-url", metavar="URL",
                   help="Label Studio's address, the only place task images are fetched from (default: "
                        "$LABEL_STUDIO_URL)")
    g.add_argument("--label-studio-api-key-file", type=path_arg, metavar="FILE",
                   help="file holding Label Studio's API key, sent with those fetches (default: "
                        "$LABEL_STUDIO_API_KEY)")
    g.add_argument("--local-files-root", type=path_arg, metavar="DIR",
                   help="Label Studio's local-files document root: /data/local-files/?d=... images are read from "
                        "here instead (default: $LOCAL_FILES_DOCUMENT_ROOT)")
    g.add_argument("--text-field", metavar="NAME",
                   help="a task data field whose lines are the instructions (`label: instruction` or an "
                        "instruction); default: one instruction per Label of the BrushLabels control")
    g = p.add_argument_group("Ray Serve")
    g.add_argument("--ray", action="store_true",
                   help="run the same app on Ray Serve (pip install 'unilseg[serve,ray]')")
    g.add_argument("--address", help="an existing Ray cluster (default: $RAY_ADDRESS, else a new local one)")
    g.add_argument("--replicas", type=int, default=1, metavar="N", help="model replicas (default 1)")
    g.add_argument("--cpus-per-replica", type=finite_float, default=1.0, metavar="C",
                   help="CPUs per replica, also its torch threads (default 1)")
    g.add_argument("--gpus-per-replica", type=finite_float, default=0.0, metavar="G",
                   help="GPUs per replica (default 0)")
    p.add_argument("--access-log", action="store_true", help="log every request (uvicorn's access log)")
    return p


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def read_secret(path: str | None, env: str, flag: str) -> str | None:
    """A key from a file (its first line) or, without the flag, from $env; None if neither is given."""
    from unilseg.errors import UnilsegError

    if path is None:
        value = os.environ.get(env)
        return value.strip() if value and value.strip() else None
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UnilsegError(f"{flag} {path}: cannot read it ({getattr(e, 'strerror', None) or e}); give a text file "
                           "holding the key") from None
    lines = text.strip().splitlines()
    if not lines or not lines[0].strip():
        raise UnilsegError(f"{flag} {path} is empty; write the key on its first line")
    return lines[0].strip()


def check_args(args: argparse.Namespace) -> str | None:
    """Every flag, checked before anything binds or loads; -> the API key (None: no auth)."""
    from unilseg.errors import UnilsegError

    check_settings(argparse.Namespace(**{**vars(args), "batch_size": None}))
    if not 0 <= args.port < 65536:
        raise UnilsegError(f"--port {args.port}: a port is a number from 0 to 65535")
    for flag, value, low in (("--batch-images", args.batch_images, 1), ("--queue-size", args.queue_size, 1),
                             ("--max-pixels", args.max_pixels, 1), ("--max-instructions", args.max_instructions, 1),
                             ("--max-instruction-chars", args.max_instruction_chars, 1),
                             ("--replicas", args.replicas, 1)):
        if value < low:
            raise UnilsegError(f"{flag} must be at least {low}, not {value}")
    for flag, value in (("--batch-wait-ms", args.batch_wait_ms), ("--cache-mb", args.cache_mb),
                        ("--gpus-per-replica", args.gpus_per_replica)):
        if value < 0:
            raise UnilsegError(f"{flag} must be 0 or more, not {value:g}")
    for flag, value in (("--timeout", args.timeout), ("--max-body-mb", args.max_body_mb),
                        ("--cpus-per-replica", args.cpus_per_replica)):
        if value <= 0:
            raise UnilsegError(f"{flag} must be more than 0, not {value:g}")
    if not args.ray:
        for flag in ("address",):
            if getattr(args, flag) is not None:
                raise UnilsegError(f"--{flag} applies to --ray")
    key = read_secret(args.api_key_file, KEY_ENV, "--api-key-file")
    if key is not None and len(key) < MIN_KEY_CHARS:
        raise UnilsegError(f"the API key has {len(key)} characters: use at least {MIN_KEY_CHARS} (e.g. "
                           "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`)")
    if args.no_auth and key is not None:
        raise UnilsegError(f"--no-auth and an API key (--api-key-file or ${KEY_ENV}): give one or the other")
    if key is None and not args.no_auth and not is_loopback(args.host):
        raise UnilsegError(f"--host {args.host} lets other machines in: give an API key (--api-key-file FILE or "
                           f"${KEY_ENV}), or pass --no-auth to serve without one")
    return key


def limits_of(args: argparse.Namespace) -> Any:  # -> unilseg.serve.schema.Limits
    from unilseg.serve.schema import Limits

    return Limits(max_body_bytes=int(args.max_body_mb * 1024 * 1024), max_pixels=args.max_pixels,
                  max_instructions=args.max_instructions, max_instruction_chars=args.max_instruction_chars,
                  timeout_s=args.timeout, queue_size=args.queue_size, batch_images=args.batch_images,
                  batch_wait_ms=args.batch_wait_ms, cache_bytes=int(args.cache_mb * 1024 * 1024))


def model_name(args: argparse.Namespace) -> str:
    from unilseg.model.registry import DEFAULT_MODEL

    return args.model or (Path(args.weights).name if args.weights else DEFAULT_MODEL)


def label_studio_backend(args: argparse.Namespace) -> Any:  # -> unilseg.serve.label_studio.Backend
    from unilseg.serve.label_studio import Backend

    url = args.label_studio_url or os.environ.get("LABEL_STUDIO_URL") or None
    key = read_secret(args.label_studio_api_key_file, "LABEL_STUDIO_API_KEY", "--label-studio-api-key-file")
    root = args.local_files_root or os.environ.get("LOCAL_FILES_DOCUMENT_ROOT") or None
    return Backend(url=url, api_key=key, local_files_root=root, text_field=args.text_field)


def run(args: argparse.Namespace) -> int:
    key = check_args(args)  # before the imports below (torch, FastAPI): a bad flag is refused at once
    backend = label_studio_backend(args)
    from unilseg.cli.args import predictor_from_args
    from unilseg.serve.app import Service

    service = Service(limits=limits_of(args), api_key=key, label_studio=backend)
    name, runtime = model_name(args), getattr(args, "runtime", "torch")
    if args.ray:
        from unilseg.serve.ray_serve import run as run_ray_serve

        return run_ray_serve(args, service, name, runtime)
    from unilseg.serve.server import bind, serve, url_of

    sock = bind(args.host, args.port)
    url = url_of(sock)
    print(f"unilseg serve: listening on {url} (model {name} loading; /readyz says when it is ready)", flush=True)
    limits = service.limits
    serve(service, sock, lambda: predictor_from_args(args), name, runtime, limits.batch_images,
          limits.batch_wait_ms / 1000, limits.queue_size,
          on_ready=lambda: print(f"unilseg serve: ready: {url}/v1/segment ({url}/docs)", flush=True),
          access_log=args.access_log)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    missing = [m for m in ("fastapi", "uvicorn", "multipart") if importlib.util.find_spec(m) is None]
    if missing:
        print(f"error: unilseg serve needs {', '.join(missing)}; install them with: {INSTALL_HINT}", file=sys.stderr)
        return 2
    return guarded_main(lambda: run(args), interrupted="stopped")


if __name__ == "__main__":
    sys.exit(main())
