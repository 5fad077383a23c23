# gradserve in a container: the service on 0.0.0.0:8000, models in the volume /data.
#
#   docker build -t gradserve .                  # the server (the last stage, "server")
#   docker run -p 8000:8000 -v gradserve-data:/data gradserve
#   docker build --target trainer -t gradserve-trainer .   # the Python client and examples/
#   docker build --target cluster -t gradserve-cluster .   # the server with Ray (README: Beyond one machine)
#
# Runtime dependencies only: the project without its dev extra, no compilers, no caches.

FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN useradd --create-home --uid 10001 --user-group gradserve
WORKDIR /app


# The demo trainer: the client (httpx, numpy, tqdm) and the examples, no server.
FROM base AS trainer
COPY clients/python /app/clients/python
RUN pip install '/app/clients/python[progress]'
COPY examples /app/examples
USER gradserve
CMD ["python", "examples/train_remote.py"]


# The server with the `ray` extra: one image for a Ray head (`ray start --head`), a Ray worker
# (`ray start --address=HEAD:6379`) and front-ends (`gradserve serve --ray HEAD:6379`); run bare,
# a server on a Ray instance of its own. No HEALTHCHECK: a Ray node serves no HTTP, so compose
# gives each service its own. Not the last stage: `docker build .` stays the embedded server.
FROM base AS cluster
COPY pyproject.toml README.md /src/
COPY core /src/core
COPY service /src/service
RUN pip install '/src[ray]' && rm -rf /src \
    && mkdir /data && chown gradserve:gradserve /data
USER gradserve
VOLUME /data
EXPOSE 8000
CMD ["gradserve", "serve", "--host", "0.0.0.0", "--port", "8000", "--ray", "local", "--data-dir", "/data"]


FROM base AS server
COPY pyproject.toml README.md /src/
COPY core /src/core
COPY service /src/service
RUN pip install /src && rm -rf /src \
    && mkdir /data && chown gradserve:gradserve /data
USER gradserve
VOLUME /data
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
CMD ["gradserve", "serve", "--host", "0.0.0.0", "--port", "8000", "--data-dir", "/data"]
