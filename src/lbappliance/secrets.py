"""Secret references (`env:` / `vault:`) resolved at render time, never shown.

Rendered files that embed a secret are written mode 0600 and flagged so the
summary, `--diff` output and Ansible logs hide their content.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from lbappliance.inventory.errors import Path_, format_path
from lbappliance.inventory.schema import SecretRef

# A TCP-MD5 key is at most 80 bytes (Linux TCP_MD5SIG_MAXKEYLEN). ExaBGP and BIRD
# quote it ("..."), FRR takes it as one bare word: printable ASCII without spaces,
# quotes, backslash, or what would end a statement or start a comment there.
MD5_PASSWORD = re.compile(r"[!$%&()*+,\-./0-9:<=>?@A-Z\[\]^_a-z|~]{1,80}")
MD5_EXPECTED = (
    "1..80 printable ASCII characters without spaces, quotes, backslash, '`', '#', ';', '{' or '}'"
)


class SecretUnavailable(Exception):
    """A secret could not be resolved, or cannot be used. Never holds the value."""

    def __init__(self, path: Path_, message: str, hint: str = ""):
        self.path = path
        self.message = message
        self.hint = hint
        super().__init__(f"{format_path(path)}: {message}" + (f" ({hint})" if hint else ""))


class Secrets:
    def __init__(self, vault_file: Path | None, vault_password_file: Path | None):
        self.vault_file = vault_file
        self.vault_password_file = vault_password_file
        self._vault: dict[str, str] | None = None

    def resolve(self, ref: SecretRef, path: Path_) -> str:
        """The secret ``ref`` names, checked to be usable as a BGP MD5 password."""
        if ref.env:
            where = (*path, "env")
            value = os.environ.get(ref.env)
            if value is None:
                raise SecretUnavailable(
                    where,
                    f"environment variable {ref.env} is not set",
                    "export it, or reference a vault variable instead",
                )
            source = f"environment variable {ref.env}"
        else:
            where = (*path, "vault")
            vault = self._load_vault(where)
            if ref.vault not in vault:
                raise SecretUnavailable(where, f"no variable {ref.vault!r} in {self.vault_file}")
            value = vault[ref.vault]
            source = f"vault variable {ref.vault}"
        if not isinstance(value, str) or not value:
            raise SecretUnavailable(
                where,
                f"{source} is empty or not a string",
                "an empty password would silently turn TCP-MD5 off",
            )
        if not MD5_PASSWORD.fullmatch(value):
            raise SecretUnavailable(
                where,
                f"{source} holds a password the router configs cannot carry",
                f"the value is not shown; use {MD5_EXPECTED}",
            )
        return value

    def _load_vault(self, field: Path_) -> dict[str, str]:
        if self._vault is not None:
            return self._vault
        if not self.vault_file or not self.vault_file.is_file():
            raise SecretUnavailable(field, f"vault file {self.vault_file} does not exist")
        password_file = self.vault_password_file or (
            Path(p) if (p := os.environ.get("ANSIBLE_VAULT_PASSWORD_FILE")) else None
        )
        if not password_file:
            raise SecretUnavailable(
                field,
                f"{self.vault_file} needs a vault password",
                "--vault-password-file or ANSIBLE_VAULT_PASSWORD_FILE",
            )
        import yaml
        from ansible.parsing.vault import VaultLib, VaultSecret

        secret = VaultSecret(password_file.read_bytes().strip())
        try:
            plain = VaultLib([("default", secret)]).decrypt(self.vault_file.read_bytes())
            data = yaml.safe_load(plain) or {}
        except Exception as exc:  # ansible's errors, YAML errors: never a traceback
            raise SecretUnavailable(
                field, f"cannot read {self.vault_file}: {type(exc).__name__}"
            ) from None
        if not isinstance(data, dict):
            raise SecretUnavailable(field, f"{self.vault_file} does not hold a mapping")
        self._vault = data
        return self._vault
