"""HAProxy: the L7 tier's frontends, routes and pools for one node."""

from __future__ import annotations

from typing import Any

from lbappliance.haproxy import STATS_FRONTEND
from lbappliance.inventory.derived import effective_check, frontend_vips
from lbappliance.inventory.schema import Frontend, Inventory, Node, Route
from lbappliance.paths import RuntimePaths

TARGET = "etc/haproxy/haproxy.cfg"
STATS_PORT = 8404


def _addr(ip: Any, port: int) -> str:
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"


def route_condition(route: Route) -> str:
    """An HAProxy condition: every given matcher must hold (host and path)."""
    parts = []
    if route.host:
        if route.host.startswith("*."):
            parts.append(f"{{ hdr(host),field(1,:) -m end -i {route.host[1:]} }}")
        else:
            parts.append(f"{{ hdr(host),field(1,:) -i {route.host} }}")
    if route.path_prefix:
        parts.append(f"{{ path_beg {route.path_prefix} }}")
    return " ".join(parts)


def _binds(fe: Frontend) -> list[str]:
    tls = ""
    if fe.tls:
        tls = f" ssl crt {fe.tls.certificate}.pem alpn {','.join(fe.tls.alpn)}"
    return [f"{_addr(vip, fe.port)}{tls}" for vip in frontend_vips(fe)]


def context(inv: Inventory, node: Node, paths: RuntimePaths) -> dict[str, Any]:
    policy = inv.l7.policy
    frontends = [
        {
            "name": fe.name,
            "binds": _binds(fe),
            "default_pool": fe.default_pool,
            "routes": [{"pool": r.pool, "condition": route_condition(r)} for r in fe.routes],
        }
        for fe in inv.l7.frontends
    ]
    pools = []
    for pool in inv.l7.pools:
        check = effective_check(inv, pool)
        pools.append(
            {
                "name": pool.name,
                "balance": {"random2": "random(2)"}.get(
                    pool.policy.balance or policy.balance, pool.policy.balance or policy.balance
                ),
                "check": check,
                # Ejected servers are re-checked this often: `rise` passes take the ejection time.
                "downinter": type(check.interval)(policy.outlier.ejection_time / check.rise),
                # HAProxy 2.6 bounds a check by min(inter, timeout connect) and arms
                # `timeout check` only after a synchronous connect: cap the connect too.
                "check_connect": check.timeout if check.timeout < policy.timeouts.connect else None,
                "budget_permille": round(policy.retries.budget_percent * 10),
                "server_maxconn": pool.policy.server_maxconn or policy.server_maxconn,
                "servers": [
                    {
                        "name": s.name,
                        "addr": _addr(s.address, s.port),
                        "weight": s.weight,
                        "backup": s.backup,
                    }
                    for s in pool.servers
                ],
            }
        )
    return {
        "policy": policy,
        "t": policy.timeouts,
        "frontends": frontends,
        "pools": pools,
        "stats_port": STATS_PORT,
        "stats_frontend": STATS_FRONTEND,
    }
