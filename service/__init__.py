"""gradserve's HTTP service: decode a request, make one call into `core`, encode the reply.

`service.main.create_app(settings)` builds the FastAPI application; `gradserve serve`
(`service.cli`) runs it under uvicorn.
"""
