"""``show stat`` CSV straight into the agent's ``HaproxyView``, in one pass.

The same view as ``haproxy.view(haproxy.parse_stat(text))`` without a row object per
line: at 10,000 services the agent reads 25,000 rows every round. A row is split
only as far as the last column the view needs (HAProxy's CSV has ~100); the
columns up to ``bck`` are names, numbers and the status, which HAProxy never
quotes, and a line holding a quote anyway goes through the csv module.
"""

from __future__ import annotations

import csv

from lbappliance.health.signals import HaproxyView, Servers


def stat_view(text: str, error: type[Exception]) -> HaproxyView:
    """Frontends' status and sessions, and servers UP per backend (active ones, or the
    backups when a backend has only backups). ``error`` is raised for an answer that
    is not ``show stat`` output."""
    lines = text.lstrip("# ").splitlines()
    if not lines or not lines[0].startswith("pxname,"):
        raise error(f"unexpected answer to 'show stat': {text[:80]!r}")
    column = {name: i for i, name in enumerate(next(csv.reader(lines[:1])))}
    width = len(column)  # absent columns read as the "" padded on below
    svname, status, scur, bck = (column.get(k, width) for k in ("svname", "status", "scur", "bck"))
    last = max(svname, status, scur, bck)
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
        else:
            c = counts.get(rec[0])
            if c is None:
                c = counts[rec[0]] = [0, 0, 0, 0]
            st = rec[status]
            i = 2 if rec[bck] == "1" else 0
            c[i] += st.startswith("UP") or st == "no check"
            c[i + 1] += 1
    view: dict[str, Servers] = {}
    for proxy in backends:
        up, total, bup, btotal = counts.get(proxy) or (0, 0, 0, 0)
        view[proxy] = Servers(up, total) if total else Servers(bup, btotal)
    return HaproxyView(frontends, sessions, view)
