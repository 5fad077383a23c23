"""`gradserve serve`: runs the service under uvicorn."""

import argparse
import logging
import socket
import sys
from pathlib import Path

import uvicorn

from service.blas import POLICY
from service.main import create_app
from service.protocol import with_header_timeout
from service.settings import Settings

log = logging.getLogger("gradserve")


def listening_socket(host: str, port: int) -> socket.socket:
    """Gives a bound TCP socket for uvicorn, so that port 0 can be logged as the port it became.

    The protocol must be named: asyncio turns Nagle's algorithm off only for sockets whose
    proto is IPPROTO_TCP, and without that every small response waits ~40 ms for an ACK.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    return sock


def main(argv: list[str] | None = None) -> None:
    """Parses the command line and runs the chosen command."""
    parser = argparse.ArgumentParser(prog="gradserve", description="gradserve: a gradient-computation service.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    serve.add_argument("--data-dir", type=Path, help="overrides GRADSERVE_DATA_DIR (default ./data)")
    serve.add_argument("--durability", choices=["step", "interval", "none"], help="overrides GRADSERVE_DURABILITY")
    serve.add_argument("--log-level", help="overrides GRADSERVE_LOG_LEVEL (default info)")
    serve.add_argument("--ray", metavar="ADDRESS", help="run on Ray (overrides GRADSERVE_RAY_ADDRESS): local starts "
                       "a local instance on 127.0.0.1, auto or host:port joins a running cluster")
    args = parser.parse_args(argv)

    overrides = {key: value for key, value in
                 {"data_dir": args.data_dir, "durability": args.durability, "log_level": args.log_level,
                  "ray_address": args.ray}.items()
                 if value is not None}
    settings = Settings(**overrides)
    logging.basicConfig(level=settings.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        sock = listening_socket(args.host, args.port)
    except OSError as e:
        parser.exit(1, f"gradserve: cannot listen on {args.host}:{args.port}: {e.strerror} "
                       f"(another server running? try --port)\n")
    host, port = sock.getsockname()[:2]
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
    log.info("gradserve listening on %s (data dir %s); dashboard: %s/ui", url, settings.data_dir.resolve(), url)
    log.info("matrix products on %s", POLICY.describe())
    uvicorn.Server(uvicorn_config(create_app(settings), settings)).run(sockets=[sock])


def uvicorn_config(app, settings: Settings) -> uvicorn.Config:
    """Gives how gradserve runs under uvicorn: uvloop, httptools with a deadline on request heads
    (and large bodies read into one buffer, service/protocol.py)."""
    protocol = with_header_timeout(settings.header_timeout_seconds, settings.max_body_bytes)
    return uvicorn.Config(app, loop="uvloop", http=protocol, log_level=settings.log_level.lower(), access_log=False)


if __name__ == "__main__":
    main()
