"""Where the tool's own files (templates, roles, playbooks, bpf) are.

A wheel carries them under ``lbappliance/_project``; an editable install or a
checkout uses the repository root.
"""

from __future__ import annotations

from pathlib import Path


def project_dir() -> Path:
    packaged = Path(__file__).parent / "_project"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2]


def templates_dir() -> Path:
    return project_dir() / "templates"
