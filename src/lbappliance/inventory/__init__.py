"""The site inventory: load, validate once, hand out a typed model."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from lbappliance.inventory.errors import InventoryError, InventoryInvalid, Location
from lbappliance.inventory.schema import Inventory
from lbappliance.inventory.semantic import check
from lbappliance.inventory.typed import Converter
from lbappliance.inventory.yamlpos import Positions, deep_merge, load_yaml, paused_gc

__all__ = ["InventoryError", "InventoryInvalid", "Location", "Site", "load_site", "site_path"]


@dataclass(frozen=True)
class Site:
    """A validated site and where it came from."""

    model: Inventory
    inventory_dir: Path
    files: tuple[Path, ...]
    positions: Positions = field(default_factory=Positions, compare=False, repr=False)

    @property
    def name(self) -> str:
        return self.model.site.name


SITE_NAME = re.compile(r"[a-z][a-z0-9_-]{0,47}")


def site_path(inventory_dir: Path, site: str) -> Path:
    """``sites/<site>.yml``; a site is a name, never a path."""
    if not SITE_NAME.fullmatch(site):
        raise InventoryInvalid(
            [InventoryError(None, (), f"{site!r} is not a site name", "e.g. tokyo or lab-2")]
        )
    return inventory_dir / "sites" / f"{site}.yml"


def load_site(inventory_dir: Path, site: str) -> Site:
    """Load ``sites/<site>.yml`` over ``defaults.yml``; raise with every error found."""
    with paused_gc():
        return _load_site(inventory_dir, site)


def _load_site(inventory_dir: Path, site: str) -> Site:
    path = site_path(inventory_dir, site)
    if not path.is_file():
        known = sorted(
            p.stem for p in (inventory_dir / "sites").glob("*.yml") if ".vault" not in p.name
        )
        hint = "known sites: " + ", ".join(known) if known else f"no sites in {inventory_dir}/sites"
        raise InventoryInvalid([InventoryError(None, (), f"no site file {path}", hint)])
    files = [path]
    data, positions, errors = {}, Positions(), []
    defaults = inventory_dir / "defaults.yml"
    if defaults.is_file():
        files.insert(0, defaults)
        data, positions, errors = load_yaml(defaults)
    site_data, site_pos, site_errors = load_yaml(path)
    errors += site_errors
    if errors:
        raise InventoryInvalid(errors)
    for name, value in (("defaults", data), ("site", site_data)):
        if not isinstance(value, dict):
            where = files[0] if name == "defaults" else path
            raise InventoryInvalid(
                [InventoryError(Location(str(where), 1, 1), (), "the file must hold a mapping")]
            )
    data = deep_merge(data, site_data)
    positions.update(site_pos)
    conv = Converter(positions)
    model = conv.convert(Inventory, data, ())
    if conv.errors:
        raise InventoryInvalid(conv.errors)
    semantic = check(model, positions, path.stem)
    if semantic:
        raise InventoryInvalid(semantic)
    return Site(model=model, inventory_dir=inventory_dir, files=tuple(files), positions=positions)
