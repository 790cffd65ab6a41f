"""Rendered output: golden files, determinism, secrets, byte-for-byte writes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from lbappliance.cli import main
from lbappliance.inventory import load_site
from lbappliance.paths import project_dir
from lbappliance.render import render_site, write_render
from lbappliance.secrets import Secrets
from tests.conftest import INVENTORY, TOKYO_SECRETS

GOLDEN = Path(__file__).parent / "golden"
PROJECT = "@PROJECT@"  # the checkout's path differs between machines


def rendered(site: str) -> dict[str, bytes]:
    loaded = load_site(INVENTORY, site)
    result = render_site(loaded, Secrets(None, None))
    root = str(project_dir()).encode()
    return {f.path: f.content.replace(root, PROJECT.encode()) for f in result.files}


@pytest.mark.parametrize("site", ["lab", "tokyo"])
def test_golden(site: str, tokyo_env: dict[str, str]) -> None:
    files = rendered(site)
    golden = GOLDEN / site
    if os.environ.get("UPDATE_GOLDEN"):
        for path, content in files.items():
            (golden / path).parent.mkdir(parents=True, exist_ok=True)
            (golden / path).write_bytes(content)
    expected = {
        str(p.relative_to(golden)): p.read_bytes() for p in golden.rglob("*") if p.is_file()
    }
    assert sorted(files) == sorted(expected), "set of rendered files changed"
    for path, content in files.items():
        assert content == expected[path], f"{path} differs from its golden file (UPDATE_GOLDEN=1)"


def test_render_is_deterministic(tokyo_env: dict[str, str]) -> None:
    assert rendered("tokyo") == rendered("tokyo")


def test_every_node_gets_every_file() -> None:
    files = rendered("lab")
    per_node = {
        node: sorted(p.split("/", 2)[2] for p in files if p.startswith(f"hosts/{node}/"))
        for node in ("lb1", "lb2")
    }
    assert per_node["lb1"] == per_node["lb2"]
    assert per_node["lb1"] == [
        "etc/bird/bird.conf",
        "etc/exabgp/exabgp.conf",
        "etc/haproxy/haproxy.cfg",
        "etc/keepalived/keepalived.conf",
        "etc/lbappliance/dataplane.json",
        "etc/lbappliance/health-agent.json",
        "etc/lbappliance/nic.json",
        "etc/lbappliance/weights.json",
        "etc/nftables.d/lbappliance-notrack.nft",
        "etc/sysctl.d/90-lbappliance.conf",
        "etc/systemd/network/10-lbappliance-eth0.network",
        "etc/systemd/network/10-lbappliance-eth1.network",
        "etc/systemd/network/10-lbappliance-eth2.network",
        "etc/systemd/system/lbappliance-vips.service",
    ]


def test_cli_render_writes_exact_bytes_and_hides_secrets(
    tmp_path: Path, tokyo_env: dict[str, str]
) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main, ["render", "--site", "tokyo", "--inventory", str(INVENTORY), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    for secret in TOKYO_SECRETS.values():
        assert secret not in result.output
    expected = render_site(load_site(INVENTORY, "tokyo"), Secrets(None, None))
    for f in expected.files:
        target = out / f.path
        assert target.read_bytes() == f.content, f.path
        assert stat.S_IMODE(target.stat().st_mode) == f.mode, f.path
    exabgp = out / "hosts/tyo-lb1/etc/exabgp/exabgp.conf"
    assert stat.S_IMODE(exabgp.stat().st_mode) == 0o600
    assert b'md5-password "test-md5-one";' in exabgp.read_bytes()
    assert "(secret, 0600)" in result.output


def test_rerender_reports_unchanged_and_removes_stale(
    tmp_path: Path, tokyo_env: dict[str, str]
) -> None:
    loaded = load_site(INVENTORY, "lab")
    out = tmp_path / "out"
    write_render(render_site(loaded, Secrets(None, None)), out)
    (out / "hosts" / "stale.txt").write_text("left from an older render")
    report = write_render(render_site(loaded, Secrets(None, None)), out)
    assert report.written == []
    assert report.removed == ["hosts/stale.txt"]
    assert not (out / "hosts" / "stale.txt").exists()


def test_missing_secret_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LBA_TOKYO_R1_MD5", raising=False)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main, ["render", "--site", "tokyo", "--inventory", str(INVENTORY), "--out", str(out)]
    )
    assert result.exit_code == 2
    assert (
        f"{INVENTORY}/sites/tokyo.yml:13:23: bgp.peers[0].password.env: "
        "environment variable LBA_TOKYO_R1_MD5 is not set"
    ) in result.output
    assert not out.exists(), "nothing is written when rendering fails"


def test_vault_secret(
    tmp_path: Path, inventory_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ansible.parsing.vault import VaultLib, VaultSecret

    password = tmp_path / "vault-pass"
    password.write_text("correct horse\n")
    vault = VaultLib([("default", VaultSecret(b"correct horse"))])
    plain = b"tokyo_r1_md5: from-the-vault\n"
    (inventory_copy / "sites" / "tokyo.vault.yml").write_bytes(vault.encrypt(plain))
    site_file = inventory_copy / "sites" / "tokyo.yml"
    site_file.write_text(
        site_file.read_text().replace("{env: LBA_TOKYO_R1_MD5}", "{vault: tokyo_r1_md5}")
    )
    monkeypatch.setenv("LBA_TOKYO_R2_MD5", "x")
    loaded = load_site(inventory_copy, "tokyo")
    secrets = Secrets(inventory_copy / "sites" / "tokyo.vault.yml", password)
    files = render_site(loaded, secrets).by_path()
    assert (
        b'md5-password "from-the-vault";' in files["hosts/tyo-lb1/etc/exabgp/exabgp.conf"].content
    )
