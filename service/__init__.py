"""gradserve's HTTP service: decode a request, make one call into `core`, encode the reply.

`service.main.create_app(settings)` builds the FastAPI application; `gradserve serve`
(`service.cli`) runs it under uvicorn. The parts, simple to complex:

    settings.py      Settings: every GRADSERVE_* variable, with its default
    errors.py        the one mapping from failures (core's and ours) to {"detail", "code"}
                     ({"error": ...} under /v2)
    tensor_object.py the tensor object of the wire (KServe V2), as pydantic models
    tensors.py       the one tensor codec: tensor objects <-> arrays, list and binary form
    listform.py      list-form bodies parsed without a Python float per element
    body.py          reading a body within the limit, JSON or binary (or a stream of
                     frames), into a pydantic model with its tensors decoded
    schemas.py       request and response models, with the examples /docs shows
    auth.py          bearer keys; the owner id a model is filed under
    persistence.py   checkpoints on disk: atomic writes, reload at start
    threads.py       the one pool of worker threads (work off the event loop)
    blas.py          BLAS threads: every core for one computing request, one each for several
    budget.py        the time a request's long work may take, and whether its client is there
    store.py         live models, per-model locks, tapes, when a step reaches the disk
    metrics.py       Prometheus registry and the request-recording middleware
    deps.py          typed dependencies: Call[X] (a model, its decoded body X), Body[X], StoreDep, ...
    protocol.py      uvicorn's httptools protocol with a deadline on request heads
    routes/          one APIRouter per file: ops, models, training, inspection, v2 (the
                     Open Inference Protocol, for Triton and KServe clients)
"""
