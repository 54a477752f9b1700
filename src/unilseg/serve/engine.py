"""The server's model side: requests batched onto the one Predictor, image embeddings cached.

A `Job` is one request's image (its bytes, decoded unless its embedding is cached) and
instructions. `Engine.run_batch(jobs)` runs several jobs as one step: the images whose
Swin maps are not in the `EmbeddingCache` go through Swin as one batch, every job's
instructions through the text encoder as one batch, and all (image, instruction) pairs
through fusion and the decoders in `Predictor.max_batch`-sized batches; each pair's logits
are then warped back and thresholded there too. It returns Predictions; formats and JSON
are the request handler's (`unilseg.serve.schema`).

All torch work stays on the one thread that calls `run_batch`: torch ops on a second
thread (a request handler's) start a second OpenMP pool, and the two pools contending
for the same cores made the decoder run at half speed.

`Batcher` feeds `run_batch` from a bounded queue on one worker thread: the first waiting
job opens a batch, which takes further jobs for up to `wait_s` or until it holds
`max_images` distinct images (it waits only while other requests are being read). A full
queue refuses at once (`Busy`), so memory stays bounded however many clients call. Ray
Serve replaces the Batcher with `serve.batch` (`unilseg.serve.ray_serve`) around the same
`run_batch`.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from unilseg.inference.predictor import ImageEmbedding, Prediction, Predictor, to_prediction
from unilseg.inference.transforms import decode_image
from unilseg.model.spec import effective_min_score

log = logging.getLogger(__name__)


class Busy(Exception):
    """The queue is full: the client should retry after `retry_after` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"the server is busy; retry after {retry_after} s")
        self.retry_after = retry_after


def image_key(data: bytes) -> str:
    """The cache key of an image: sha256 of its file bytes (hex)."""
    return hashlib.sha256(data).hexdigest()


@dataclass
class Job:
    """One request's work: an image and the texts to segment in it."""

    key: str  # image_key(data)
    data: bytes  # the image file's bytes (decoded by the worker if `image` is None and the key is not cached)
    texts: list[str]
    threshold: float | None = None  # None: the model's
    image: np.ndarray | None = None  # BGR uint8 (H, W, 3), decoded by the request handler
    queued_at: float = field(default_factory=time.perf_counter)
    min_score: float | None = None  # None: the model's; 0: off


@dataclass
class JobResult:
    """A job's predictions (one per text, in the image's frame), and where its time went."""

    predictions: list[Prediction]
    image_size: tuple[int, int]  # (H, W)
    cache_hit: bool
    batch_jobs: int  # jobs in the batch this one ran in
    batch_images: int  # distinct images in it
    queue_ms: float
    encode_ms: float  # Swin (0 on a cache hit), the batch's
    decode_ms: float  # text encoder, fusion, decoders and thresholding, the batch's


class EmbeddingCache:
    """LRU of ImageEmbeddings keyed by image hash, bounded by the bytes of their Swin maps."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = self.misses = 0
        self._items: OrderedDict[str, tuple[ImageEmbedding, int]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def size_of(embedding: ImageEmbedding) -> int:
        return sum(f.nbytes for f in embedding.features)

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str) -> ImageEmbedding | None:
        with self._lock:
            found = self._items.get(key)
            if found is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return found[0]

    def put(self, key: str, embedding: ImageEmbedding) -> None:
        size = self.size_of(embedding)
        if size > self.max_bytes:
            return  # larger than the whole cache (or the cache is off: 0 bytes)
        with self._lock:
            if key in self._items:
                self.bytes -= self._items.pop(key)[1]
            self._items[key] = (embedding, size)
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, (_, dropped) = self._items.popitem(last=False)
                self.bytes -= dropped


class Engine:
    """The Predictor behind a server: `run_batch` runs many jobs' model work in shared batches.

    Counters (read by `/v1/stats` and the tests): `encoder_calls` (Swin batches run),
    `images_encoded`, `pairs_decoded`, `batches`, and the cache's hits and misses.
    Not thread-safe: one worker thread (or one Ray Serve replica's batch handler) calls it.
    """

    def __init__(self, predictor: Predictor, cache_bytes: int) -> None:
        self.predictor = predictor
        self.cache = EmbeddingCache(cache_bytes)
        self.encoder_calls = self.images_encoded = self.pairs_decoded = self.batches = 0

    def embeddings(self, jobs: Sequence[Job]) -> tuple[dict[str, ImageEmbedding], set[str]]:
        """Each distinct image of `jobs` -> its embedding, from the cache or one Swin batch; and the keys that hit."""
        found: dict[str, ImageEmbedding] = {}
        hits: set[str] = set()
        missing: dict[str, np.ndarray] = {}
        for job in jobs:
            if job.key in found or job.key in missing:
                continue
            cached = self.cache.get(job.key)
            if cached is not None:
                found[job.key] = cached
                hits.add(job.key)
            else:
                missing[job.key] = job.image if job.image is not None else decode_image(
                    np.frombuffer(job.data, np.uint8), "the uploaded image")
        if missing:
            embedded = self.predictor.embed(list(missing.values()))
            self.encoder_calls += 1
            self.images_encoded += len(embedded)
            for key, embedding in zip(missing, embedded):
                self.cache.put(key, embedding)
                found[key] = embedding
        return found, hits

    def run_batch(self, jobs: Sequence[Job]) -> list[JobResult]:
        """The model work of `jobs`, shared: one Swin batch for the uncached images, one text batch, the
        pairs' decoder batches, then each pair thresholded. -> one JobResult per job, in order."""
        start = time.perf_counter()
        embeddings, hits = self.embeddings(jobs)
        encoded_at = time.perf_counter()
        texts = list(dict.fromkeys(t for job in jobs for t in job.texts))
        row = {t: i for i, t in enumerate(texts)}
        encoded = self.predictor.encode_texts(texts)
        pairs = [(job, t) for job in jobs for t in job.texts]
        logits = self.predictor.pair_logits([embeddings[job.key] for job, _ in pairs],
                                            encoded.take([row[t] for _, t in pairs]))
        default, floor = self.predictor.threshold, self.predictor.min_score
        preds = [to_prediction(t, lg, embeddings[job.key], default if job.threshold is None else job.threshold,
                               effective_min_score(floor, job.min_score))
                 for (job, t), lg in zip(pairs, logits)]
        done = time.perf_counter()
        self.batches += 1
        self.pairs_decoded += len(pairs)
        results, at = [], 0
        for job in jobs:
            embedding = embeddings[job.key]
            n = len(job.texts)
            results.append(JobResult(
                predictions=preds[at : at + n], image_size=embedding.image_size,
                cache_hit=job.key in hits, batch_jobs=len(jobs), batch_images=len(embeddings),
                queue_ms=(start - job.queued_at) * 1e3, encode_ms=(encoded_at - start) * 1e3,
                decode_ms=(done - encoded_at) * 1e3))
            at += n
        return results

    def stats(self) -> dict[str, int]:
        return {"encoder_calls": self.encoder_calls, "images_encoded": self.images_encoded,
                "pairs_decoded": self.pairs_decoded, "batches": self.batches, "cache_hits": self.cache.hits,
                "cache_misses": self.cache.misses, "cache_images": len(self.cache), "cache_bytes": self.cache.bytes}


_STOP = object()


class Batcher:
    """A bounded queue of jobs and the one worker thread that runs them through `Engine.run_batch`.

    max_images: distinct images per Swin batch; wait_s: how long the first job of a batch waits
    for company; queue_size: jobs waiting at most (`submit` raises Busy past it).
    """

    def __init__(self, engine: Engine, max_images: int = 4, wait_s: float = 0.01, queue_size: int = 32,
                 coming: Callable[[], bool] = lambda: True) -> None:
        self.engine = engine
        self.max_images, self.wait_s = max_images, wait_s
        self.coming = coming  # whether more requests are on their way (read, not yet queued): worth waiting for
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._last_batch_s = 1.0  # a first guess for Retry-After
        self._held: tuple[Job, Future] | object | None = None
        self._thread = threading.Thread(target=self._work, name="unilseg-batcher", daemon=True)
        self._thread.start()

    @property
    def waiting(self) -> int:
        return self._queue.qsize()

    def submit(self, job: Job) -> Future:
        """Queue `job`; its future gives the JobResult (or the batch's error). Busy if the queue is full."""
        future: Future = Future()
        try:
            self._queue.put_nowait((job, future))
        except queue.Full:
            batches_ahead = self._queue.maxsize / max(self.max_images, 1)
            raise Busy(max(1, round(batches_ahead * self._last_batch_s))) from None
        return future

    def run(self, job: Job) -> Awaitable[JobResult]:
        """`submit` for an async handler (on its event loop): queues the job now (Busy if full) -> an awaitable of
        its result; cancelling the await drops a job that has not started."""
        return asyncio.wrap_future(self.submit(job))

    def close(self) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout=30)

    def _collect(self) -> list[tuple[Job, Future]] | None:
        """The next batch: the first job waiting, and those that join it by `wait_s` after it arrived."""
        first, self._held = self._held or self._queue.get(), None
        if first is _STOP:
            return None
        batch, keys = [first], {first[0].key}
        deadline = first[0].queued_at + self.wait_s  # a job held over from a full batch has waited already
        while True:
            left = deadline - time.perf_counter()
            try:
                if left <= 0:
                    nxt = self._queue.get_nowait()
                elif self._queue.empty() and not self.coming():
                    return batch  # nobody else on the way: waiting would only add latency
                else:
                    nxt = self._queue.get(timeout=min(left, 0.002))
            except queue.Empty:
                if left <= 0:
                    return batch
                continue
            if nxt is _STOP or (nxt[0].key not in keys and len(keys) >= self.max_images):
                self._held = nxt  # opens the next batch (or stops the worker after this one)
                return batch
            batch.append(nxt)
            keys.add(nxt[0].key)

    def _work(self) -> None:
        while (batch := self._collect()) is not None:
            live = [(job, fut) for job, fut in batch if fut.set_running_or_notify_cancel()]  # timed-out ones drop
            if not live:
                continue
            start = time.perf_counter()
            try:
                results = self.engine.run_batch([job for job, _ in live])
            except Exception as e:  # noqa: BLE001 (each caller gets the batch's error; the worker goes on)
                log.exception("a batch of %d requests failed", len(live))
                for _, fut in live:
                    fut.set_exception(e)
                continue
            self._last_batch_s = time.perf_counter() - start
            for (_, fut), result in zip(live, results):
                fut.set_result(result)
