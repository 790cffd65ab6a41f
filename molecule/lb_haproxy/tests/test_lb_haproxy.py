"""lb_haproxy on its own: TLS certificates, the config byte for byte, the service."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import testinfra

HOST = testinfra.get_host("podman://lbamol-haproxy")
FIXTURE = Path(__file__).resolve().parents[1] / "render" / "etc" / "haproxy" / "haproxy.cfg"


def test_haproxy_runs_enabled() -> None:
    service = HOST.service("haproxy")
    assert service.is_running and service.is_enabled


def test_config_is_the_rendered_one_byte_for_byte() -> None:
    installed = HOST.file("/etc/haproxy/haproxy.cfg")
    assert installed.sha256sum == hashlib.sha256(FIXTURE.read_bytes()).hexdigest()
    assert installed.mode == 0o640 and installed.group == "haproxy"


@pytest.mark.parametrize("name", ["lab-selfsigned", "from-vault"])
def test_certificate_bundles_are_private_to_haproxy(name: str) -> None:
    bundle = HOST.file(f"/etc/haproxy/certs/{name}.pem")
    assert bundle.exists and bundle.mode == 0o640
    assert bundle.user == "root" and bundle.group == "haproxy"
    assert HOST.file("/etc/haproxy/certs").mode == 0o750


@pytest.mark.parametrize(("port", "subject"), [(8443, "lab-selfsigned"), (9443, "from-vault")])
def test_tls_listeners_serve_their_certificate(port: int, subject: str) -> None:
    assert HOST.check_output(f"curl -sk https://127.0.0.1:{port}/") == "ok"
    cert = HOST.check_output(
        f"openssl s_client -connect 127.0.0.1:{port} </dev/null 2>/dev/null"
        " | openssl x509 -noout -subject"
    )
    assert f"CN = {subject}" in cert
