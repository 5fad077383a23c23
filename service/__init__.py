"""gradserve's HTTP service: decode a request, make one call into `core`, encode the reply.

`service.main.create_app(settings)` builds the FastAPI application; `gradserve serve`
(`service.cli`) runs it under uvicorn. The parts, simple to complex:

    settings.py      Settings: every GRADSERVE_* variable, with its default
    errors.py        the one mapping from failures (core's and ours) to {"detail", "code"}
    tensors.py       the one tensor codec: KServe V2 objects, list and binary form
    body.py          reading a body within the limit, JSON or binary, into a pydantic model
    schemas.py       request and response models, with the examples /docs shows
    auth.py          bearer keys; the owner id a model is filed under
    persistence.py   checkpoints on disk: atomic writes, reload at start
    store.py         live models, per-model locks, tapes, when a step reaches the disk
    metrics.py       Prometheus registry and the request-recording middleware
    deps.py          typed dependencies: Call[X] (a model, its decoded body X), Body[X], StoreDep, ...
    routes/          one APIRouter per file: ops, models, training, inspection
"""
