"""``show stat`` CSV straight into the agent's ``HaproxyView``, in one pass.

The same view as ``sensors.haproxy_view(haproxy.parse_stat(text))`` (and the same
meaning of "up": ``haproxy.takes_traffic``) without a row object per
line: at 10,000 services the agent reads 25,000 rows every round. A row is split
only as far as the last column the view needs (HAProxy's CSV has ~100); the
columns up to ``bck`` are names, numbers and the status, which HAProxy never
quotes, and a line holding a quote anyway goes through the csv module.
"""

from __future__ import annotations

import csv

from lbappliance.haproxy import SERVER, HaproxyError, takes_traffic
from lbappliance.health.signals import HaproxyView, Servers


def stat_view(text: str) -> HaproxyView:
    """Frontends' status and sessions, and servers up per backend (active ones, or the
    backups when a backend has only backups). ``HaproxyError`` for an answer that is
    not ``show stat`` output."""
    if not text.startswith("# pxname,"):
        raise HaproxyError(f"unexpected answer to 'show stat': {text[:80]!r}")
    lines = text[2:].splitlines()
    column = {name: i for i, name in enumerate(next(csv.reader(lines[:1])))}
    width = len(column)  # absent columns read as the "" padded on below
    weight_key = "uweight" if "uweight" in column else "weight"
    keys = ("svname", "status", "scur", "bck", weight_key, "type")
    svname, status, scur, bck, weight, type_ = (column.get(k, width) for k in keys)
    last = max(svname, status, scur, bck, weight, type_)
    pad = [""] * (last + 1)
    frontends: dict[str, str] = {}
    sessions: dict[str, int] = {}
    backends: dict[str, None] = {}  # in the order of their BACKEND rows
    counts: dict[str, list[int]] = {}  # proxy -> [active up, active, backup up, backup]
    for line in lines[1:]:
        rec = next(csv.reader([line]), []) if '"' in line else line.split(",", last + 1)
        if not rec or not rec[0]:
            continue
        if len(rec) <= last:
            rec += pad[len(rec) :]
        name = rec[svname]
        if name == "FRONTEND":
            frontends[rec[0]] = rec[status]
            sessions[rec[0]] = int(rec[scur] or 0)
        elif name == "BACKEND":
            backends[rec[0]] = None
        elif rec[type_] == SERVER:
            c = counts.get(rec[0])
            if c is None:
                c = counts[rec[0]] = [0, 0, 0, 0]
            st = rec[status]
            i = 2 if rec[bck] == "1" else 0
            c[i] += takes_traffic(st, rec[weight] == "0")
            c[i + 1] += 1
    view: dict[str, Servers] = {}
    for proxy in backends:
        up, total, bup, btotal = counts.get(proxy) or (0, 0, 0, 0)
        view[proxy] = Servers(up, total) if total else Servers(bup, btotal)
    return HaproxyView(frontends, sessions, view)
