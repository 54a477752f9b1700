"""`unilseg serve`: the model behind an HTTP API (and Label Studio's ML backend), batched and bounded.

    schema.py        what /v1/segment takes and answers; the limits (`Limits`); `RequestError`
    engine.py        `Engine.run_batch` (shared Swin / text / decoder batches, the embedding LRU) and `Batcher`
    app.py           the FastAPI app over a `Service`: routes, access key, JSON errors
    server.py        one process: the socket, uvicorn, the model loaded beside it
    label_studio.py  Label Studio's ML backend protocol (/predict, /setup, /health)
    ray_serve.py     the same app on Ray Serve replicas, batched by `serve.batch`
"""
