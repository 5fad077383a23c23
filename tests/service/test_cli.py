"""`gradserve serve`: its options (the durability test runs it for real, and kills it)."""

import logging
import re
import socket

import pytest

from service.cli import listening_socket, main


def test_serve_documents_its_options(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--help"])
    assert exited.value.code == 0
    usage = capsys.readouterr().out
    for option in ("--host", "--port", "--data-dir", "--durability"):
        assert option in usage


def test_an_unknown_durability_is_refused():
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--durability", "sometimes"])
    assert exited.value.code == 2


def test_the_listening_socket_turns_nagle_off_and_reports_its_port():
    sock = listening_socket("127.0.0.1", 0)
    try:
        assert sock.getsockname()[1] > 0
        assert sock.proto == socket.IPPROTO_TCP  # what asyncio checks before setting TCP_NODELAY
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    finally:
        sock.close()


def test_a_port_in_use_is_one_clear_line(tmp_path, capsys):
    taken = listening_socket("127.0.0.1", 0)
    taken.listen()
    try:
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit) as exited:
            main(["serve", "--port", str(port), "--data-dir", str(tmp_path)])
    finally:
        taken.close()
    assert exited.value.code == 1
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_the_start_up_line_names_the_dashboard(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="gradserve")
    monkeypatch.setattr("uvicorn.Server.run", lambda server, sockets: sockets[0].close())
    main(["serve", "--port", "0", "--data-dir", str(tmp_path)])
    started = next(r.getMessage() for r in caplog.records if "listening on" in r.getMessage())
    assert re.search(r"listening on http://127\.0\.0\.1:\d+ .*; dashboard: http://127\.0\.0\.1:\d+/ui$", started)


def test_the_start_up_log_names_the_blas(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="gradserve")
    monkeypatch.setattr("uvicorn.Server.run", lambda server, sockets: sockets[0].close())
    main(["serve", "--port", "0", "--data-dir", str(tmp_path)])
    blas = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("matrix products on "))
    assert re.search(r"on \w+ [\d.]+ \(\w+ kernels, \d+ threads\)", blas), blas
