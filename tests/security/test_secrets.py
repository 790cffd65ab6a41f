"""Secrets stay secret: scrubbed checker output, no_log on tasks reading them, 0600 files."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import yaml

from lbappliance.inventory import load_site
from lbappliance.paths import project_dir
from lbappliance.render import Render, RenderedFile, render_site, write_render
from lbappliance.render.checks import check_render
from lbappliance.secrets import MD5_PASSWORD, Secrets
from tests.conftest import INVENTORY

# Every character a password may hold, once: ExaBGP, BIRD and FRR must all take it.
ALL_ALLOWED = "".join(c for c in map(chr, range(0x21, 0x7F)) if MD5_PASSWORD.fullmatch(c))
HALF = len(ALL_ALLOWED) // 2


def test_every_allowed_password_character_passes_every_checker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert '"' not in ALL_ALLOWED and " " not in ALL_ALLOWED and "\\" not in ALL_ALLOWED
    monkeypatch.setenv("LBA_TOKYO_R1_MD5", ALL_ALLOWED[:HALF])
    monkeypatch.setenv("LBA_TOKYO_R2_MD5", ALL_ALLOWED[HALF:])
    rendered = render_site(load_site(INVENTORY, "tokyo"), Secrets(None, None))
    results = [r for r in check_render(rendered) if r.checker in ("exabgp", "bird", "vtysh")]
    assert {r.checker for r in results} >= {"exabgp", "bird"}
    assert all(r.status in ("ok", "skipped") for r in results), results
    exabgp = rendered.by_path()["hosts/tyo-lb1/etc/exabgp/exabgp.conf"].content.decode()
    assert f'md5-password "{ALL_ALLOWED[:HALF]}";' in exabgp


def test_checker_output_is_scrubbed_of_secrets(tokyo_env: dict[str, str]) -> None:
    rendered = render_site(load_site(INVENTORY, "tokyo"), Secrets(None, None))
    assert set(tokyo_env.values()) <= rendered.secrets
    # A config the checker rejects on the secret's own line: it prints that line.
    bad = rendered.by_path()["hosts/tyo-lb1/etc/exabgp/exabgp.conf"]
    text = bad.content.decode().replace("md5-password", "md5-passw0rd", 1)
    broken = Render(rendered.site, [RenderedFile(bad.path, text.encode(), True, "exabgp")])
    broken.secrets = rendered.secrets
    [result] = check_render(broken)
    assert result.status == "failed"
    assert "<secret>" in result.detail, result.detail  # the line was shown...
    for value in tokyo_env.values():
        assert value not in result.detail  # ...without the value


def test_secret_files_are_0600(tmp_path: Path, tokyo_env: dict[str, str]) -> None:
    rendered = render_site(load_site(INVENTORY, "tokyo"), Secrets(None, None))
    write_render(rendered, tmp_path / "out")
    assert {f.path for f in rendered.files if f.secret} == {
        "hosts/tyo-lb1/etc/exabgp/exabgp.conf",
        "hosts/tyo-lb2/etc/exabgp/exabgp.conf",
        "routers/tyo-r1/bird.conf",
        "routers/tyo-r1/frr.conf",
        "routers/tyo-r1-v6/bird.conf",
        "routers/tyo-r1-v6/frr.conf",
        "routers/tyo-r2/bird.conf",
        "routers/tyo-r2/frr.conf",
    }
    for f in rendered.files:
        mode = stat.S_IMODE((tmp_path / "out" / f.path).stat().st_mode)
        holds = any(v.encode() in f.content for v in tokyo_env.values())
        assert holds == f.secret, f.path
        assert mode == (0o600 if holds else 0o644), f.path


def _tasks(data: object) -> list[dict]:
    """Every task (and handler) in a parsed tasks file or playbook."""
    out = []
    for item in data if isinstance(data, list) else []:
        if isinstance(item, dict):
            out.append(item)
            for key in (
                "tasks",
                "handlers",
                "pre_tasks",
                "post_tasks",
                "block",
                "rescue",
                "always",
            ):
                out += _tasks(item.get(key))
    return out


def test_every_task_reading_a_secret_file_has_no_log() -> None:
    root = project_dir()
    files = sorted([*root.glob("roles/*/tasks/*.yml"), *root.glob("roles/*/handlers/*.yml")])
    files += sorted(root.glob("playbooks/**/*.yml"))
    touching = []
    for path in files:
        for task in _tasks(yaml.safe_load(path.read_text())):
            text = yaml.safe_dump({k: v for k, v in task.items() if k != "name"})
            text = text.replace("lb_exabgp_config_file | dirname", "")
            if "exabgp_config_file" in text or "exabgp.conf" in text or "routers/" in text:
                touching.append((path.relative_to(root), task.get("name")))
                assert task.get("no_log") is True, f"{path}: {task.get('name')!r} needs no_log"
    names = {name for _, name in touching}
    assert {
        "Check the ExaBGP config",
        "Verify | the installed ExaBGP config passes its checker",
    } <= names


@pytest.mark.parametrize(
    ("plain", "password", "expected"),
    [
        (b"tokyo_r1_md5: ''\n", "correct horse", "vault variable tokyo_r1_md5 is empty"),
        (b"tokyo_r1_md5: 'a\"b'\n", "correct horse", "holds a password the router configs"),
        (b"tokyo_r1_md5: 1234\n", "correct horse", "is empty or not a string"),
        (b"- not a mapping\n", "correct horse", "does not hold a mapping"),
        (b"tokyo_r1_md5: s3cr3t\n", "wrong horse", "cannot read"),
    ],
    ids=["empty", "quote", "number", "list", "wrong vault password"],
)
def test_vault_secret_problems_are_located_errors(
    tmp_path: Path,
    inventory_copy: Path,
    monkeypatch: pytest.MonkeyPatch,
    plain: bytes,
    password: str,
    expected: str,
) -> None:
    from ansible.parsing.vault import VaultLib, VaultSecret
    from click.testing import CliRunner

    from lbappliance.cli import main

    vault = VaultLib([("default", VaultSecret(b"correct horse"))])
    (inventory_copy / "sites" / "tokyo.vault.yml").write_bytes(vault.encrypt(plain))
    site_file = inventory_copy / "sites" / "tokyo.yml"
    text = site_file.read_text().replace("{env: LBA_TOKYO_R1_MD5}", "{vault: tokyo_r1_md5}")
    site_file.write_text(text)
    pass_file = tmp_path / "vault-pass"
    pass_file.write_text(password + "\n")
    monkeypatch.setenv("LBA_TOKYO_R2_MD5", "x")
    args = ["render", "--site", "tokyo", "--inventory", str(inventory_copy)]
    args += ["--out", str(tmp_path / "out"), "--vault-password-file", str(pass_file)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    line = text[: text.index("{vault: tokyo_r1_md5}")].count("\n") + 1
    assert f"{site_file}:{line}:25: bgp.peers[0].password.vault: " in result.output
    assert expected in result.output
    assert "s3cr3t" not in result.output and 'a"b' not in result.output
    assert not (tmp_path / "out").exists()
