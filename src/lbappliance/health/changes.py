"""Which VIPs' verdicts a new observation can change: the agent re-judges only those.

``signals.evaluate`` is a pure function of a VIP's configuration and the parts of
the observation its signals read: its frontends' status and its backends' servers
(haproxy), its XDP interface and IPVS services (dataplane), its probes' results
(probe), the routing view (return_path) and the maintenance flag. A VIP none of whose
parts changed since the last round keeps its verdict. The parts every VIP shares,
or that rarely change (maintenance, XDP, IPVS, an unreadable HAProxy), re-judge all
the VIPs that read them.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping

from lbappliance.health.config import VipConfig
from lbappliance.health.signals import Observation


def _index(pairs: Iterable[tuple[Hashable, str]]) -> dict[Hashable, set[str]]:
    out: dict[Hashable, set[str]] = {}
    for key, prefix in pairs:
        out.setdefault(key, set()).add(prefix)
    return out


def _differing(old: Mapping, new: Mapping) -> Iterable[Hashable]:
    """Keys whose value differs (or that only one side has)."""
    if old == new:
        return ()
    return [k for k in old.keys() | new.keys() if old.get(k, _ABSENT) != new.get(k, _ABSENT)]


_ABSENT = object()


class Changes:
    """Indexes of what each VIP's verdict reads, built once from the configuration."""

    def __init__(self, vips: Iterable[VipConfig]):
        vips = list(vips)
        gated = [v for v in vips if "haproxy" in v.signals and v.haproxy]
        self.haproxy = {v.prefix for v in gated}
        self.frontends = _index((fe, v.prefix) for v in gated for fe in v.haproxy.frontends)  # type: ignore[union-attr]
        self.backends = _index((be, v.prefix) for v in gated for be in v.haproxy.backends)  # type: ignore[union-attr]
        probed = [v for v in vips if "probe" in v.signals]
        self.probes = _index(
            (p, v.prefix)
            for v in probed
            for p in (*v.probes, *(t for pool in v.pools for t in pool.targets))
        )
        self.network = {v.prefix for v in vips if "return_path" in v.signals and v.return_path}

    def dirty(self, old: Observation, new: Observation) -> set[str] | None:
        """Prefixes whose verdict may differ between ``old`` and ``new``; ``None``: all.

        Parts that are the same objects in both are taken as changed (a sensor that
        filled them in place leaves nothing to compare).
        """
        shared = (
            (old.maintenance, old.maintenance_reason, old.xdp, old.xdp_errors)
            != (new.maintenance, new.maintenance_reason, new.xdp, new.xdp_errors)
            or (old.ipvs, old.ipvs_error) != (new.ipvs, new.ipvs_error)
            or old.xdp is new.xdp
            or (old.ipvs is not None and old.ipvs is new.ipvs)
        )
        if shared:
            return None
        dirty: set[str] = set()
        if old.network != new.network or old.network_error != new.network_error:
            dirty |= self.network
        before, now = old.haproxy, new.haproxy
        if before is None or now is None:
            if before is not now or old.haproxy_error != new.haproxy_error:
                dirty |= self.haproxy
        elif before is now:
            dirty |= self.haproxy
        else:
            for fe in _differing(before.frontends, now.frontends):
                dirty |= self.frontends.get(fe, set())
            for be in _differing(before.backends, now.backends):
                dirty |= self.backends.get(be, set())
        if old.probes is new.probes:
            return None
        for probe in _differing(old.probes, new.probes):
            dirty |= self.probes.get(probe, set())
        return dirty
