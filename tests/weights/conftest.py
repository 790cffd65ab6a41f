"""Fixtures shared by the weight-controller tests."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest


@pytest.fixture
def fake_haproxy(tmp_path: Path):
    """A unix socket answering like HAProxy's admin socket; records what it receives."""
    path = tmp_path / "admin.sock"
    received: list[str] = []
    answers: dict[str, str] = {}
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(8)

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                line = conn.makefile().readline().strip()
                received.append(line)
                conn.sendall(answers.get(line.split()[0], "").encode())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield path, received, answers
    srv.close()
