"""Shared test fixtures."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
INVENTORY = ROOT / "inventory"
# Fake secrets for the tokyo example (its BGP passwords come from the environment).
TOKYO_SECRETS = {"LBA_TOKYO_R1_MD5": "test-md5-one", "LBA_TOKYO_R2_MD5": "test-md5-two"}


@pytest.fixture
def tokyo_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for key, value in TOKYO_SECRETS.items():
        monkeypatch.setenv(key, value)
    return TOKYO_SECRETS


@pytest.fixture
def inventory_copy(tmp_path: Path) -> Path:
    """A writable copy of the bundled inventory."""
    target = tmp_path / "inventory"
    shutil.copytree(INVENTORY, target)
    return target
