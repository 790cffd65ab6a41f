"""Property: a hostile string in any string field is a located error, or renders inert.

Hypothesis puts control characters, quotes, Jinja, shell metacharacters and
over-long strings (alone, or around the field's own value) into one string field
of a bundled site at a time. Loading and rendering must then either refuse with
errors that all name the site file, line and column, or render, in which case
the value holds nothing its daemons would read as syntax: every changed config
passes its daemon's own checker, JSON files parse, and Ansible files carry the
value only as ``!unsafe`` text.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from lbappliance.inventory import InventoryInvalid, load_site
from lbappliance.render import Render, render_site
from lbappliance.render.checks import check_render
from lbappliance.secrets import Secrets
from tests.conftest import INVENTORY, TOKYO_SECRETS
from tests.security.hostile import Tagged, UnsafeLoader, ansible_strings, string_fields

HOSTILE = [
    "\n", "\r", "\t", "\x00", "\x1b", "\x7f", "\u2028", "\u00e9", '"', "'", "`", "\\",
    "{{ 7*7 }}", "{% if 1 %}", "{#", "}}", "$(id)", "${HOME}", ";", "|", "&", ">", "<",
    "*", "#", "!", " ", "/", "..", ":", "%", "[", "]", "(", ")", ",", "=",
]  # fmt: skip
PLAIN = st.text("abcxyz019-_.", min_size=1, max_size=8)
PIECES = st.lists(st.one_of(st.sampled_from(HOSTILE), PLAIN), min_size=1, max_size=6).map("".join)
LONG = st.integers(60, 2000).map(lambda n: "a" * n)


def _fields(site: str) -> list[tuple[tuple, str]]:
    model = load_site(INVENTORY, site).model
    # Mapping keys (NIC profile names) are left to the table (test_hostile_inventory.py).
    return [(p, v) for p, v in string_fields(model) if not _is_key(model, p)]


def _is_key(model: Any, path: tuple) -> bool:
    return path[0] == "nic_profiles" and len(path) == 2


FIELDS = {site: _fields(site) for site in ("lab", "tokyo")}
BASELINE: dict[str, dict[str, bytes]] = {}


def _set(data: Any, path: tuple, value: str) -> bool:
    """Put ``value`` at ``path`` of the site's data (creating mappings); False if impossible."""
    for part in path[:-1]:
        if isinstance(part, int):
            if not isinstance(data, list) or part >= len(data):
                return False
            data = data[part]
        else:
            if not isinstance(data, dict):
                return False
            data = data.setdefault(part, {})
    last = path[-1]
    if isinstance(last, int):
        if not isinstance(data, list) or last >= len(data):
            return False
    elif not isinstance(data, dict):
        return False
    data[last] = value
    return True


@st.composite
def mutations(draw: st.DrawFn) -> tuple[str, tuple, str]:
    site = draw(st.sampled_from(sorted(FIELDS)))
    path, original = draw(st.sampled_from(FIELDS[site]))
    hostile = draw(st.one_of(PIECES, LONG, PLAIN))
    value = draw(
        st.sampled_from([hostile, original + hostile, hostile + original, original + "\n"])
    )
    return site, path, value


def _render(inventory: Path, site: str) -> Render:
    return render_site(load_site(inventory, site), Secrets(None, None))


CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def check_inert(value: str, path: tuple, rendered: Render, site: str) -> None:
    """An accepted value: no syntax of any daemon's config, and the configs still check."""
    assert not CONTROL.search(value), (path, value)
    assert not any(j in value for j in ("{{", "{%", "{#")), (path, value)
    if path[-1] != "description":  # free text, shown by `status` only
        assert not re.search(r"[\s\"'`\\$#]", value), (path, value)
    changed = [f for f in rendered.files if BASELINE[site].get(f.path) != f.content]
    for f in changed:
        if f.path.endswith(".json"):
            json.loads(f.content)
        if f.path.startswith("inventory/") or f.path == "site.yml":
            for s in ansible_strings(yaml.load(f.content, Loader=UnsafeLoader)):
                assert value not in s or isinstance(s, Tagged), (f.path, s)
    checked = Render(rendered.site, [f for f in changed if f.checker], secrets=rendered.secrets)
    failed = [r for r in check_render(checked) if r.status == "failed"]
    assert not failed, (path, value, failed)


@pytest.fixture(scope="module")
def inventory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("prop") / "inventory"
    shutil.copytree(INVENTORY, target)
    return target


@settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(mutation=mutations())
def test_hostile_string_is_refused_with_a_location_or_inert(
    mutation: tuple[str, tuple, str], inventory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site, path, value = mutation
    for key, secret in TOKYO_SECRETS.items():
        monkeypatch.setenv(key, secret)
    site_file = inventory / "sites" / f"{site}.yml"
    original = (INVENTORY / "sites" / f"{site}.yml").read_text()
    if site not in BASELINE:
        site_file.write_text(original)
        BASELINE[site] = {f.path: f.content for f in _render(inventory, site).files}
    data = yaml.safe_load(original)
    assert _set(data, path, value), path
    site_file.write_text(yaml.safe_dump(data, allow_unicode=False, width=1000))
    try:
        rendered = _render(inventory, site)
    except InventoryInvalid as exc:
        event("refused")
        assert exc.errors
        for error in exc.errors:
            assert error.location is not None, str(error)
            assert error.location.file == str(site_file), str(error)
            assert error.location.line >= 1 and error.location.column >= 1
        return
    finally:
        site_file.write_text(original)
    event("rendered")
    check_inert(value, path, rendered, site)
