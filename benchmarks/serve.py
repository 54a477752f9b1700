"""`unilseg serve` under load, against the same work through the in-process predictor.

    python benchmarks/serve.py [--requests 1000] [--clients 1,8] [--threads 2] [--cache-mb 32]
                               [--model unilseg-demo | --weights FILE | --seeded DIR] [--cache-rounds 20]

Work: --requests requests, each a distinct image file (the demo scenes, made distinct by a
trailing byte: the same pixels, a new hash, so the embedding cache never helps) and one
instruction, answered as COCO RLE.
- in-process: one Predictor in this process, request after request: decode the PNG,
  `set_image`, `predict`, RLE-encode the mask (what the server does per request, minus HTTP).
- server: a `unilseg serve` child on 127.0.0.1 with the same model and threads; K clients
  (threads with one httpx connection each) send the requests as fast as they are answered.
  Per K: p50 / p95 latency, throughput, the server's peak RSS (sampled from /proc) and its
  RSS after request 100 and after the last one (the cache fills first: --cache-mb bounds it).
- cache: --cache-rounds times, a new image and then the same image with a new instruction, one
  client: median latency of each.
Loopback only; bounded by --requests and --timeout. Prints a Markdown table and JSON.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _common import ROOT

sys.path.insert(0, str(ROOT / "src"))
EXAMPLES = ROOT / "src" / "unilseg" / "demo" / "examples"
TEXTS = ("the sky", "the blue car", "all the trees", "the ground")


def images(n: int) -> list[bytes]:
    """n distinct PNG files: the demo scenes with a counter appended after IEND (decoders ignore it)."""
    scenes = [p.read_bytes() for p in sorted(EXAMPLES.glob("*.png"))]
    return [scenes[i % len(scenes)] + i.to_bytes(4, "big") for i in range(n)]


def model_flags(args: argparse.Namespace) -> list[str]:
    flags = ["--device", "cpu", "--threads", str(args.threads)]
    return flags + (["--weights", args.weights] if args.weights else ["--model", args.model])


def in_process(args: argparse.Namespace, data: list[bytes]) -> dict:
    import cv2
    import numpy as np

    from unilseg.inference import load_predictor
    from unilseg.io.writers import rle_encode

    predictor = load_predictor(model=None if args.weights else args.model, weights=args.weights, device="cpu",
                               threads=args.threads)
    predictor.set_image(cv2.imdecode(np.frombuffer(data[0], np.uint8), cv2.IMREAD_COLOR))  # warm-up
    predictor.predict(TEXTS[0])
    start = time.perf_counter()
    for i, d in enumerate(data):
        predictor.set_image(cv2.imdecode(np.frombuffer(d, np.uint8), cv2.IMREAD_COLOR))
        rle_encode(predictor.predict(TEXTS[i % len(TEXTS)])[0].mask)
    wall = time.perf_counter() - start
    return {"requests": len(data), "seconds": round(wall, 2), "throughput": round(len(data) / wall, 2)}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Child:
    """A `unilseg serve` child on a free loopback port."""

    def __init__(self, args: argparse.Namespace) -> None:
        cmd = [sys.executable, "-m", "unilseg", "serve", *model_flags(args), "--port", "0", "--cache-mb",
               str(args.cache_mb), "--queue-size", str(max(64, 2 * max(args.clients))), "--timeout",
               str(args.timeout)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        for line in self.proc.stdout:
            if "listening on " in line:
                self.url = line.split("listening on ", 1)[1].split()[0]
            if ": ready: " in line:
                break
        else:
            raise RuntimeError("the server did not start")
        threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()  # drain

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def load(child: Child, data: list[bytes], clients: int) -> dict:
    import httpx

    latencies: list[float] = [0.0] * len(data)
    peak = [rss_mb(child.proc.pid)]
    at_100: list[float] = []
    done = [0]
    lock = threading.Lock()
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            peak[0] = max(peak[0], rss_mb(child.proc.pid))

    def client(k: int) -> None:
        with httpx.Client(base_url=child.url, timeout=600) as c:
            for i in range(k, len(data), clients):
                body = {"image": base64.b64encode(data[i]).decode(), "instructions": [TEXTS[i % len(TEXTS)]]}
                t0 = time.perf_counter()
                r = c.post("/v1/segment", json=body)
                latencies[i] = time.perf_counter() - t0
                if r.status_code != 200:
                    raise RuntimeError(f"request {i}: {r.status_code} {r.text}")
                with lock:
                    done[0] += 1
                    if done[0] == 100:
                        at_100.append(rss_mb(child.proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    wall = time.perf_counter() - start
    stop.set()
    end = rss_mb(child.proc.pid)
    q = statistics.quantiles(latencies, n=20)
    return {"clients": clients, "requests": len(data), "seconds": round(wall, 2),
            "throughput": round(len(data) / wall, 2), "p50_ms": round(statistics.median(latencies) * 1e3, 1),
            "p95_ms": round(q[18] * 1e3, 1), "peak_rss_mb": round(peak[0], 1),
            "rss_at_100_mb": round(at_100[0], 1) if at_100 else None, "rss_at_end_mb": round(end, 1)}


def cache_effect(child: Child, rounds: int = 20) -> dict:
    import httpx

    new, repeat = [], []
    with httpx.Client(base_url=child.url, timeout=600) as c:
        for d in images(rounds):
            d = d + b"cache"  # bytes the load runs never sent
            for texts, into in ((["the sky"], new), (["the blue car"], repeat)):
                t0 = time.perf_counter()
                r = c.post("/v1/segment", json={"image": base64.b64encode(d).decode(), "instructions": texts})
                into.append(time.perf_counter() - t0)
                assert r.status_code == 200 and r.json()["timings"]["cache_hit"] == (into is repeat), r.text
    a, b = statistics.median(new), statistics.median(repeat)
    return {"new_image_ms": round(a * 1e3, 1), "repeated_image_ms": round(b * 1e3, 1), "ratio": round(b / a, 3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--clients", default="1,8", help="comma-separated client counts")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache-mb", type=float, default=32)
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--model", default="unilseg-demo")
    p.add_argument("--weights", help="a weights file instead of --model")
    p.add_argument("--seeded", metavar="DIR", help="UniLSeg-20's full-size network with seeded weights (made in DIR "
                   "once): the real checkpoint's compute, 480 px")
    p.add_argument("--cache-rounds", type=int, default=20, help="new-image / repeated-image pairs timed")
    args = p.parse_args()
    if args.seeded:
        from _common import seeded_checkpoints

        args.weights = str(seeded_checkpoints(Path(args.seeded))[1])
    args.clients = [int(k) for k in args.clients.split(",")]
    data = images(args.requests)
    baseline = in_process(args, data)
    runs, cache = [], None
    for k in args.clients:
        child = Child(args)  # a fresh server per K: each run's memory starts from the same state
        try:
            runs.append(load(child, data, k))
            if cache is None:
                cache = cache_effect(child, args.cache_rounds)
        finally:
            child.stop()
    print("| run | throughput (req/s) | vs in-process | p50 (ms) | p95 (ms) | peak RSS (MB) | RSS @100 -> @end (MB) |")
    print("|---|---|---|---|---|---|---|")
    print(f"| in-process predictor | {baseline['throughput']} | 1.00x | | | | |")
    for r in runs:
        growth = (r["rss_at_end_mb"] / r["rss_at_100_mb"] - 1) * 100 if r["rss_at_100_mb"] else float("nan")
        ratio = r["throughput"] / baseline["throughput"]
        print(f"| server, {r['clients']} client(s) | {r['throughput']} | {ratio:.2f}x"
              f" | {r['p50_ms']} | {r['p95_ms']} | {r['peak_rss_mb']} | {r['rss_at_100_mb']} -> {r['rss_at_end_mb']}"
              f" ({growth:+.1f}%) |")
    print(f"\ncache: new image {cache['new_image_ms']} ms, same image + new instruction {cache['repeated_image_ms']} ms"
          f" (x{cache['ratio']})")
    print(json.dumps({"in_process": baseline, "server": runs, "cache": cache, "args": vars(args)}))


if __name__ == "__main__":
    main()
