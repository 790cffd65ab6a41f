"""Check a node's live addresses and routes against the inventory's; print what is missing.

Usage: network_matches.py EXPECTED_JSON (``lb_network_expected`` from the rendered
host_vars: {"addresses": [{interface, address}], "routes": [{interface, to, via}]}).
Exit 1 with one line per missing item. An address still tentative or failed in IPv6
duplicate address detection counts as missing: it cannot carry traffic.
"""

import ipaddress
import json
import subprocess
import sys


def ip_json(*args):
    return json.loads(
        subprocess.run(["ip", "-j", *args], capture_output=True, text=True, check=True).stdout
        or "[]"
    )


expected = json.loads(sys.argv[1])
have = set()
for link in ip_json("address", "show"):
    for a in link.get("addr_info", []):
        if a.get("tentative") or a.get("dadfailed"):
            continue
        have.add((link["ifname"], str(ipaddress.ip_interface(f"{a['local']}/{a['prefixlen']}"))))
routes = set()
for family, default in (("-4", "0.0.0.0/0"), ("-6", "::/0")):
    for r in ip_json(family, "route", "show", "table", "main"):
        dst = default if r.get("dst") == "default" else str(ipaddress.ip_network(r["dst"], False))
        hops = r.get("nexthops") or [r]
        for hop in hops:
            if "linkdown" in hop.get("flags", []):
                continue
            routes.add((hop.get("dev"), dst, hop.get("gateway")))
missing = [
    f"address {a['address']} on {a['interface']}"
    for a in expected["addresses"]
    if (a["interface"], str(ipaddress.ip_interface(a["address"]))) not in have
]
missing += [
    f"route to {r['to']} via {r['via']} on {r['interface']}"
    for r in expected["routes"]
    if (r["interface"], r["to"], r["via"]) not in routes
]
if missing:
    sys.exit("missing: " + "; ".join(missing))
