"""Secret references (`env:` / `vault:`) resolved at render time, never shown.

Rendered files that embed a secret are written mode 0600 and flagged so the
summary, `--diff` output and Ansible logs hide their content.
"""

from __future__ import annotations

import os
from pathlib import Path

from .inventory.schema import SecretRef


class SecretUnavailable(Exception):
    pass


class Secrets:
    def __init__(self, vault_file: Path | None, vault_password_file: Path | None):
        self.vault_file = vault_file
        self.vault_password_file = vault_password_file
        self._vault: dict[str, str] | None = None

    def resolve(self, ref: SecretRef, field: str) -> str:
        if ref.env:
            value = os.environ.get(ref.env)
            if value is None:
                raise SecretUnavailable(
                    f"{field}: environment variable {ref.env} is not set (export it, or "
                    f"reference a vault variable instead)"
                )
            return value
        vault = self._load_vault(field)
        if ref.vault not in vault:
            raise SecretUnavailable(f"{field}: no variable {ref.vault!r} in {self.vault_file}")
        return str(vault[ref.vault])

    def _load_vault(self, field: str) -> dict[str, str]:
        if self._vault is not None:
            return self._vault
        if not self.vault_file or not self.vault_file.is_file():
            raise SecretUnavailable(f"{field}: vault file {self.vault_file} does not exist")
        password_file = self.vault_password_file or (
            Path(p) if (p := os.environ.get("ANSIBLE_VAULT_PASSWORD_FILE")) else None
        )
        if not password_file:
            raise SecretUnavailable(
                f"{field}: {self.vault_file} needs a vault password "
                "(--vault-password-file or ANSIBLE_VAULT_PASSWORD_FILE)"
            )
        import yaml
        from ansible.parsing.vault import VaultLib, VaultSecret

        secret = VaultSecret(password_file.read_bytes().strip())
        plain = VaultLib([("default", secret)]).decrypt(self.vault_file.read_bytes())
        self._vault = yaml.safe_load(plain) or {}
        return self._vault
