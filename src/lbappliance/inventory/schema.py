"""The site model: one frozen dataclass tree, validated once.

Every field's ``doc`` text is the inventory reference in the README
(``lbappliance reference`` prints it). Defaults follow the seed documents:
health checks every 5 s, fall 3, rise 2, timeout 2 s; ~10 % retry budget;
P2C balancing; Maglev with 65537 slots; 30 s drain; smoothing alpha 0.3 and a
5 % minimum weight for the weight controller.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from lbappliance.inventory.typed import Duration as D
from lbappliance.inventory.typed import (
    DurationOrZeroT,
    DurationT,
    IPAddress,
    IPHost,
    IPInterface,
    IPNetwork,
    IPv4,
    Name,
    Parse,
    Pattern,
    Percent,
    Port,
    Range,
    Sensitive,
    doc,
)

Asn = Annotated[int, Range(1, 4294967295)]


def _community(value: Any) -> str:
    """``ASN:VALUE`` (each 0..65535) or a large community ``A:B:C`` (each 0..4294967295)."""
    if not isinstance(value, str) or not re.fullmatch(r"\d{1,10}(:\d{1,10}){1,2}", value):
        raise ValueError("not a community")
    parts = [int(p) for p in value.split(":")]
    top = 65535 if len(parts) == 2 else 4294967295
    if any(p > top for p in parts):
        raise ValueError("out of range")
    return ":".join(str(p) for p in parts)


def _mac(value: Any) -> str:
    """A unicast Ethernet address, lower case: what the XDP forwarder writes into frames."""
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}", value):
        raise ValueError("not a MAC")
    first = int(value[:2], 16)
    if first & 1 or value.strip("0:") == "":
        raise ValueError("not a unicast MAC")
    return value.lower()


Community = Annotated[
    str,
    Parse(
        _community,
        "a BGP community 'ASN:VALUE' (each 0..65535) or a large community 'A:B:C' "
        "(each 0..4294967295)",
    ),
]
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DNS_NAME = rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*"
Hostname = Annotated[
    str,
    Pattern(
        _DNS_NAME,
        "a host name such as api.example.com (letters, digits and -, labels of 1..63 "
        "characters joined by dots)",
    ),
]
HostPattern = Annotated[
    str,
    Pattern(
        rf"(?:\*\.)?{_DNS_NAME}",
        "a host name such as api.example.com, or *.example.com for its subdomains "
        "(no bare '*', no '*' elsewhere)",
    ),
]
UrlPath = Annotated[
    str,
    Pattern(
        r"/[A-Za-z0-9._~%&()*+,;=:@/?-]{0,1023}",
        "a URL path starting with '/' (letters, digits and ._~%&()*+,;=:@/?-, at most "
        "1024 characters; no spaces, quotes, '#', '!', '$', '\\' or braces)",
    ),
]
IfName = Annotated[
    str,
    Pattern(
        r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}",
        "a Linux interface name: 1..15 letters, digits, _, . and -, not starting with "
        "'.' or '-' (no ':' aliases, no '/', no spaces)",
    ),
]
Mac = Annotated[str, Parse(_mac, "a unicast MAC address such as 52:54:00:12:34:56")]
UserName = Annotated[
    str,
    Pattern(
        r"[a-z_][a-z0-9_-]{0,31}",
        "a user name: a lower-case letter or _, then up to 31 lower-case letters, digits, _ and -",
    ),
]
FreeText = Annotated[
    str,
    Pattern(
        r"[^\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069{}]{0,200}",
        "text of at most 200 characters, no control characters (line breaks, escapes, "
        "bidirectional overrides) or braces",
    ),
]
SecretName = Annotated[
    str,
    Pattern(
        r"[A-Za-z_][A-Za-z0-9_]{0,127}",
        "a variable name: letters, digits and _, not starting with a digit",
    ),
    Sensitive(),
]


# --- site and BGP -----------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SecretRef:
    """Where a secret lives; its value never appears in the inventory or on screen."""

    env: SecretName | None = doc("Name of an environment variable holding the secret.", None)
    vault: SecretName | None = doc(
        "Name of a variable in the site's Ansible Vault file (`inventory/sites/<site>.vault.yml`).",
        None,
    )


@dataclass(frozen=True, kw_only=True)
class SiteInfo:
    name: Name = doc("Site name; must match the file name `inventory/sites/<name>.yml`.")
    asn: Asn = doc("Local AS number of the LB nodes (private ranges are typical).")
    announce_prefixes: list[IPNetwork] = doc(
        "Prefixes this site may announce; every anycast VIP must fall inside one. "
        "The routers' rendered import policy accepts exactly these."
    )
    description: FreeText = doc("Free text shown in `lbappliance status`.", "")


@dataclass(frozen=True, kw_only=True)
class BgpPeer:
    name: Name = doc("Router name (used for rendered router configs).")
    address: IPAddress = doc("Router address; must be on a subnet of each node's uplink interface.")
    asn: Asn = doc("Router AS number.")
    password: Annotated[SecretRef, Sensitive()] | None = doc(
        "TCP-MD5 password reference (`env:` or `vault:`), never the password itself. The "
        "password: 1..80 printable ASCII characters without spaces, quotes, backslash, "
        "'`', '#', ';', '{' or '}' (what ExaBGP, BIRD and FRR configs can all carry).",
        None,
    )
    platform: Literal["bird", "frr"] = doc(
        "Router software, selects the router-side config written by `render`.", "bird"
    )


@dataclass(frozen=True, kw_only=True)
class Bfd:
    enabled: bool = doc("Run BFD toward every BGP peer and tie the sessions to it.", True)
    interval: DurationT = doc(
        "BFD transmit/receive interval. Detection time is interval x multiplier.", D(0.1)
    )
    multiplier: Annotated[int, Range(2, 50)] = doc("Missed packets before the session is down.", 3)


@dataclass(frozen=True, kw_only=True)
class Bgp:
    peers: list[BgpPeer] = doc("The routers every LB node peers with.")
    hold_time: Annotated[int, Range(3, 65535)] = doc("BGP hold time in seconds.", 9)
    bfd: Bfd = doc("Sub-second dead-node detection at the routers.", factory=Bfd)


# --- nodes ------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class StaticRoute:
    to: IPNetwork = doc("Destination prefix.")
    via: IPAddress | None = doc(
        "Next hop on the interface's subnets (default: the interface's gateway of that family).",
        None,
    )


@dataclass(frozen=True, kw_only=True)
class Interface:
    name: IfName = doc("Interface name on the node, e.g. eth1.")
    role: Literal["uplink", "backend", "mgmt"] = doc(
        "uplink faces the routers (BGP, VIP traffic); backend faces the servers; mgmt is SSH."
    )
    addresses: list[IPInterface] = doc("Addresses with prefix length.", factory=list)
    gateways: list[IPAddress] = doc(
        "Routers on this interface's subnets that routes through it use (at most one per "
        "IP version). Uplinks: the return path toward clients; empty means the BGP peers "
        "on the interface's subnets. Other roles: only for `routes` entries without `via`.",
        factory=list,
    )
    routes: list[StaticRoute] = doc(
        "Static routes through this interface, e.g. the management route toward the "
        "controllers' network on the mgmt interface.",
        factory=list,
    )
    mtu: Annotated[int, Range(1280, 9216)] | None = doc(
        "Interface MTU (unset: leave the driver's). The IPIP/IP6IP6 encapsulation toward "
        "backends adds 20/40 bytes: raise the underlay MTU so full-size packets fit.",
        None,
    )
    ipv6_dad: bool = doc(
        "Run IPv6 duplicate address detection on this interface's static addresses. Off by "
        "default: the inventory assigns them (and validates them unique), and DAD would "
        "leave an address tentative, unusable for BGP, for a second after every link flap.",
        False,
    )


@dataclass(frozen=True, kw_only=True)
class Network:
    client_prefixes: list[IPNetwork] = doc(
        "Where the site's clients are. The return path is a route to each through the "
        "uplinks' routers; empty means the whole Internet (a default route per IP version). "
        "The health agent's `return_path` signal checks these routes.",
        factory=list,
    )
    management_prefixes: list[IPNetwork] = doc(
        "Where the controllers (Ansible) connect from. Each must stay reachable through a "
        "node's mgmt interface (on its subnet or through one of its `routes`): `validate` "
        "refuses an inventory that would cut the controllers off.",
        factory=list,
    )


@dataclass(frozen=True, kw_only=True)
class Node:
    name: Name = doc("Node name; also the Ansible inventory host name.")
    management_address: IPAddress = doc("Address Ansible reaches over SSH.")
    router_id: IPv4 = doc("BGP router-id; unique per site.")
    vrrp_priority: Annotated[int, Range(1, 254)] = doc(
        "VRRP priority; the two nodes of a pair must differ (higher is master)."
    )
    interfaces: list[Interface] = doc("Interfaces with their roles and addresses.")
    maintenance: bool = doc(
        "Node is in maintenance: routes drained with GRACEFUL_SHUTDOWN, then withdrawn.", False
    )
    nic_profile: Name = doc("Name of the `nic_profiles` entry used for this node.", "default")
    nic_tuning: bool = doc(
        "Tune this node's NICs (role `lb_nic`). Off for containers and VMs that share "
        "a kernel or have no IRQs of their own.",
        True,
    )
    network_managed: bool = doc(
        "The appliance configures this node's interfaces, addresses and routes "
        "(systemd-networkd, role `lb_network`). false: they are managed elsewhere, and "
        "deploy's verify checks the live addresses and routes match the inventory.",
        True,
    )
    ssh_user: UserName = doc("SSH user for Ansible.", "root")
    ssh_port: Port = doc("SSH port for Ansible.", 22)


# --- VRRP and anycast -------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class VrrpGroup:
    name: Name = doc("Instance name in keepalived.conf.")
    vrid: Annotated[int, Range(1, 255)] = doc("Virtual router id; unique per L2 segment.")
    interface: IfName = doc("Interface the group runs on (must exist on every node).")
    vips: list[IPInterface] = doc("Floating addresses with prefix length.")
    advert_interval: DurationT = doc(
        "Advertisement interval. Sub-second values need VRRP version 3 (default 100ms: "
        "a dead master is replaced in ~0.35 s).",
        D(0.1),
    )
    version: Literal[2, 3] = doc("VRRP protocol version.", 3)
    preempt_delay: DurationOrZeroT = doc(
        "Delay before a recovered higher-priority node preempts (at most 1000 s).", D(0)
    )


@dataclass(frozen=True, kw_only=True)
class AnycastVip:
    prefix: IPHost = doc("The VIP, IPv4 /32 or IPv6 /128, announced by every healthy node.")
    communities: list[Community] = doc("Communities attached to the announcement.", factory=list)
    min_servers_up: Annotated[int, Range(0, 10000)] | None = doc(
        "Override of `health_agent.min_servers_up` for this VIP.", None
    )


# --- L4 ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class L4Backend:
    address: IPAddress = doc("Backend address (owns the VIP on a loopback/tunnel for DSR).")
    weight: Annotated[int, Range(0, 1000)] = doc(
        "Relative weight; 0 takes it out of the table.", 100
    )
    mac: Mac | None = doc("Backend MAC, required for `l2dsr` forwarding with `xdp`.", None)
    path_mtu: Annotated[int, Range(1280, 65535)] | None = doc(
        "MTU of the path from the LB nodes to this backend (default: `dataplane.path_mtu`).",
        None,
    )


@dataclass(frozen=True, kw_only=True)
class L4Check:
    type: Literal["tcp", "http", "none"] = doc("Real-server check kind.", "tcp")
    port: Port | None = doc("Port to check (default: the service port).", None)
    path: UrlPath = doc("HTTP path for `http` checks.", "/health")
    interval: DurationT = doc("Check interval.", D(5))
    timeout: DurationT = doc("Check timeout; must be below the interval.", D(2))
    fall: Annotated[int, Range(1, 100)] = doc("Failures before a backend is removed.", 3)
    rise: Annotated[int, Range(1, 100)] = doc("Successes before it is restored.", 2)


@dataclass(frozen=True, kw_only=True)
class L4Service:
    name: Name = doc("Service name.")
    vip: IPAddress = doc("The VIP (usually an anycast VIP of this site).")
    port: Port = doc("Service port.")
    protocol: Literal["tcp", "udp"] = doc("Transport protocol.", "tcp")
    dataplane: Literal["xdp", "ipvs"] = doc(
        "`xdp`: our eBPF forwarder; `ipvs`: keepalived virtual server.", "xdp"
    )
    scheduler: Literal["maglev", "wrr", "wlc"] = doc(
        "Backend selection; `maglev` is consistent (IPVS `mh` with port hashing).", "maglev"
    )
    forwarding: Literal["ipip", "l2dsr", "nat"] = doc(
        "`ipip`: DSR through an IPIP/IP6IP6 tunnel; `l2dsr`: DSR by MAC rewrite "
        "(backends on the LB's L2 segment); `nat`: IPVS masquerade (ipvs only).",
        "ipip",
    )
    backends: list[L4Backend] = doc("Real servers.")
    health_check: L4Check = doc("Real-server check.", factory=L4Check)


@dataclass(frozen=True, kw_only=True)
class Dataplane:
    interface_role: Literal["uplink", "backend"] = doc(
        "Interface role the XDP program attaches to.", "uplink"
    )
    xdp_mode: Literal["native", "generic"] = doc("XDP attach mode.", "native")
    table_size: Annotated[int, Range(251, 655373)] = doc(
        "Maglev lookup table size; must be prime (65537 by default).", 65537
    )
    flow_table_size: Annotated[int, Range(1024, 134217728)] = doc(
        "Entries of the XDP flow table (one for IPv4 flows, one for IPv6), shared out "
        "evenly over the CPUs, each of which evicts its least recently used when full. "
        "Size it for the concurrent flows of the busiest CPU times the CPUs; about 100 "
        "bytes an IPv4 entry, 130 an IPv6 one.",
        1048576,
    )
    udp_idle_timeout: DurationT = doc(
        "A UDP flow whose entry saw no packet for this long is picked anew by Maglev "
        "(TCP entries live until evicted).",
        D(30),
    )
    previous_table_window: DurationT = doc(
        "After a Maglev table change, for this long a TCP packet without SYN of a flow the "
        "node has no entry for (moved to it by ECMP from another node) is sent where the "
        "previous table says: such a flow was set up before the change. 0 turns it off. "
        "Too long a window misroutes flows set up after the change that then move nodes.",
        D(60),
    )
    path_mtu: Annotated[int, Range(1280, 65535)] = doc(
        "MTU of the path from the LB nodes to the L4 backends: an IPIP-forwarded packet "
        "that no longer fits once encapsulated is answered with ICMP 'fragmentation "
        "needed' / ICMPv6 'packet too big' (per backend: `path_mtu` there).",
        1500,
    )


# --- L7 (HAProxy) -----------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class HttpCheck:
    path: UrlPath = doc(
        "Path the active check requests. Make it exercise the real request path "
        "(database, disk), not a shallow liveness page.",
        "/health",
    )
    method: Literal["GET", "HEAD"] = doc("HTTP method of the check.", "GET")
    host: Hostname | None = doc("Host header of the check (default: none).", None)
    expect_status: Annotated[int, Range(100, 599)] = doc("Status a healthy server answers.", 200)
    interval: DurationT = doc("Check interval.", D(5))
    fast_interval: DurationT = doc("Interval while a server is changing state.", D(1))
    timeout: DurationT = doc(
        "Check timeout; must be below the interval. A pool whose check timeout is below "
        "`timeouts.connect` gets it as its connect timeout too (HAProxy 2.6 bounds a check "
        "by the connect timeout, not by `timeout check` alone).",
        D(2),
    )
    fall: Annotated[int, Range(1, 100)] = doc("Consecutive failures to mark a server down.", 3)
    rise: Annotated[int, Range(1, 100)] = doc("Consecutive successes to mark it up.", 2)


@dataclass(frozen=True, kw_only=True)
class Outlier:
    consecutive_errors: Annotated[int, Range(1, 100)] = doc(
        "Consecutive live-traffic errors (5xx, timeouts, resets) that eject a server.", 3
    )
    ejection_time: DurationT = doc(
        "How long an ejected server stays out before checks may restore it.", D(30)
    )


@dataclass(frozen=True, kw_only=True)
class Retries:
    attempts: Annotated[int, Range(0, 5)] = doc("Retries per request (another server).", 1)
    budget_percent: Percent = doc(
        "Retry budget: L7 retries stop while the pool's recent failures exceed this share "
        "of its requests (connection failures, where nothing was sent, are always retried). "
        "Other retries (an armed one copies its request first) are armed for every request "
        "while the pool has failed in the last 10 s, else for a client connection's first "
        "request only: after a quiet spell, the first failure of a later request on a kept-alive "
        "client connection reaches its client.",
        10.0,
    )
    idempotent_only: bool = doc("Retry only GET/HEAD/PUT/DELETE/OPTIONS/TRACE requests.", True)
    on: list[Literal["conn-failure", "empty-response", "response-timeout", "503", "502", "504"]] = (
        doc(
            "Failures that trigger a retry (HAProxy `retry-on`).",
            factory=lambda: ["conn-failure", "empty-response", "response-timeout", "503"],
        )
    )


@dataclass(frozen=True, kw_only=True)
class Timeouts:
    client_deadline: DurationT = doc(
        "How long clients wait for a response; must exceed `server` (timeouts descend "
        "client > LB > backend).",
        D(30),
    )
    server: DurationT = doc("How long HAProxy waits for a backend response.", D(25))
    backend_deadline: DurationT = doc(
        "The backends' own request deadline; must be below `server`. Sent to them in "
        "the `X-Request-Deadline-Ms` header.",
        D(20),
    )
    connect: DurationT = doc("TCP connect timeout to a backend.", D(1))
    http_request: DurationT = doc(
        "Time to receive a complete request header (slowloris defence).", D(2)
    )
    http_keep_alive: DurationT = doc(
        "Idle time between requests on a kept-alive connection.", D(10)
    )
    queue: DurationT = doc("Time a request may wait for a free server slot.", D(5))
    client_idle: DurationT = doc("Client-side inactivity timeout.", D(30))


@dataclass(frozen=True, kw_only=True)
class WeightController:
    enabled: bool = doc("Run the feedback weight controller for this pool.", True)
    interval: DurationT = doc("Control period.", D(1))
    target_latency: DurationT = doc("Response time a server should stay under.", D(0.1))
    alpha: Annotated[float, Range(0.01, 1)] = doc("Smoothing factor of new weights.", 0.3)
    min_weight_percent: Annotated[float, Range(0, 50)] = doc(
        "Floor of a server's weight while it is not an outlier, as a percentage of its "
        "inventory weight (never below 1), so none starves.",
        5.0,
    )
    outlier_factor: Annotated[float, Range(1, 100)] = doc(
        "A server slower than this multiple of its pool's median latency is an outlier, "
        "even under `target_latency` (a circuit breaker: 2x the median); so is one with "
        "over 5 % errors. The controller parks an outlier at weight 0 and probes it.",
        2.0,
    )
    outlier_min_latency: DurationT = doc(
        "Latencies under this never make a server an outlier: a few milliseconds of "
        "difference are noise.",
        D(0.02),
    )
    canary_weight_percent: Annotated[float, Range(0, 50)] = doc(
        "Weight a parked outlier is re-admitted at (then doubling), the floor of an "
        "outlier the controller may not park (too few healthy servers left) and of a "
        "server whose signals are missing, as a percentage of its inventory weight "
        "(never below 1). At most `min_weight_percent`.",
        1.0,
    )
    max_capacity_fraction: Annotated[float, Range(0.1, 1)] = doc(
        "Share of a server's estimated capacity it may be given at most.", 0.8
    )
    panic_threshold: Annotated[float, Range(0, 1)] = doc(
        "Below this fraction of healthy servers, spread over all servers (panic mode).", 0.5
    )
    hysteresis_percent: Percent = doc("Weight changes smaller than this are not applied.", 5.0)
    probe_path: UrlPath = doc(
        "Path the controller requests (GET, 4 a second) from a server it has parked, "
        "instead of users' requests: the pool's real request path, not a shallow "
        "liveness page that a gray failure leaves fast.",
        "/",
    )


@dataclass(frozen=True, kw_only=True)
class L7Policy:
    balance: Literal["random2", "leastconn", "roundrobin"] = doc(
        "`random2`: power of two choices (least loaded of two random servers).", "random2"
    )
    health_check: HttpCheck = doc("Active health check.", factory=HttpCheck)
    outlier: Outlier = doc("Passive outlier ejection on live traffic.", factory=Outlier)
    retries: Retries = doc("Retry policy with a budget.", factory=Retries)
    timeouts: Timeouts = doc("Timeouts, descending client > LB > backend.", factory=Timeouts)
    slow_start: DurationOrZeroT = doc(
        "Ramp-up time for a server returning to service (0: none).", D(30)
    )
    drain_timeout: DurationT = doc(
        "How long draining waits for in-flight requests (30-60 s for HTTP; whole seconds, "
        "at least 1 s).",
        D(30),
    )
    maxconn: Annotated[int, Range(1, 10_000_000)] = doc("Global connection limit.", 50000)
    server_maxconn: Annotated[int, Range(1, 1_000_000)] = doc(
        "Concurrent requests per server; more wait in the queue.", 200
    )
    rate_limit_per_client: Annotated[int, Range(0, 1_000_000)] = doc(
        "Requests per second one client address may send (averaged over 10 s); "
        "excess gets 429. 0 disables.",
        100,
    )
    weight_controller: WeightController = doc(
        "Feedback weight controller.", factory=WeightController
    )
    access_log: Literal["errors", "all"] = doc(
        "`errors`: log only abnormal requests (errors, timeouts, retries, redispatches, 5xx, "
        "denials such as 429); `all`: every request too, at a cost on every request "
        "(docs/l7-policy-cost.md).",
        "errors",
    )


@dataclass(frozen=True, kw_only=True)
class PolicyOverride:
    """Per-pool overrides of the site L7 policy; unset fields inherit it."""

    balance: Literal["random2", "leastconn", "roundrobin"] | None = doc("See `l7.policy`.", None)
    health_check: HttpCheck | None = doc("Replaces `l7.policy.health_check`.", None)
    weight_controller: WeightController | None = doc(
        "Replaces `l7.policy.weight_controller`.", None
    )
    server_maxconn: Annotated[int, Range(1, 1_000_000)] | None = doc("See `l7.policy`.", None)


@dataclass(frozen=True, kw_only=True)
class Server:
    name: Name = doc("Server name (unique in its pool).")
    address: IPAddress = doc("Server address.")
    port: Port = doc("Server port.")
    weight: Annotated[int, Range(0, 256)] = doc("HAProxy weight (0..256).", 100)
    backup: bool = doc("Only used when no other server is up.", False)


@dataclass(frozen=True, kw_only=True)
class Pool:
    name: Name = doc("Pool name (HAProxy backend).")
    servers: list[Server] = doc("Servers in the pool.")
    policy: PolicyOverride = doc("Overrides of the site L7 policy.", factory=PolicyOverride)


@dataclass(frozen=True, kw_only=True)
class Route:
    pool: Name = doc("Pool that serves matching requests.")
    host: HostPattern | None = doc(
        "Match the Host header: exactly (case-insensitive), or `*.suffix` for every "
        "subdomain of suffix.",
        None,
    )
    path_prefix: UrlPath | None = doc("Match requests whose path starts with this.", None)


@dataclass(frozen=True, kw_only=True)
class Tls:
    certificate: Name = doc(
        "Certificate bundle name: `/etc/haproxy/certs/<name>.pem` on the node, installed "
        "from the vault variable `lb_haproxy_certificates[<name>]` (or self-signed when "
        "`self_signed` is true, for labs)."
    )
    self_signed: bool = doc("Generate a self-signed certificate on the node (labs only).", False)
    alpn: list[Literal["h2", "http/1.1"]] = doc(
        "ALPN protocols offered.", factory=lambda: ["h2", "http/1.1"]
    )


@dataclass(frozen=True, kw_only=True)
class Frontend:
    name: Name = doc("Frontend name.")
    vip: IPAddress = doc("Address HAProxy listens on (anycast or VRRP VIP).")
    port: Port = doc("Listening port.")
    default_pool: Name = doc("Pool for requests no route matches.")
    routes: list[Route] = doc("Host/path routing, first match wins.", factory=list)
    tls: Tls | None = doc("Terminate TLS with this certificate.", None)
    extra_vips: list[IPAddress] = doc(
        "More addresses to listen on with the same port.", factory=list
    )


@dataclass(frozen=True, kw_only=True)
class L7:
    policy: L7Policy = doc("Site-wide L7 policy (pools override parts).", factory=L7Policy)
    frontends: list[Frontend] = doc("HAProxy frontends.", factory=list)
    pools: list[Pool] = doc("HAProxy backends.", factory=list)


# --- health agent, NIC, site --------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class HealthAgent:
    signals: list[Literal["haproxy", "dataplane", "probe", "return_path", "maintenance"]] = doc(
        "Signals that must hold for a node to announce a VIP (those that apply to the VIP). "
        "`return_path`: the uplink carrying BGP is up with its addresses and the route "
        "toward clients leaves through an uplink.",
        factory=lambda: ["haproxy", "dataplane", "probe", "return_path", "maintenance"],
    )
    interval: DurationT = doc("Probe interval in a steady state.", D(0.5))
    fast_interval: DurationT = doc("Probe interval while a state is changing.", D(0.2))
    timeout: DurationT = doc("Per-signal timeout; must be below `fast_interval`.", D(0.15))
    rise: Annotated[int, Range(1, 100)] = doc("Consecutive good rounds before announcing.", 3)
    fall: Annotated[int, Range(1, 100)] = doc("Consecutive bad rounds before withdrawing.", 3)
    min_servers_up: Annotated[int, Range(0, 10000)] = doc(
        "Backend servers that must be UP in HAProxy (per pool behind the VIP).", 1
    )
    min_servers_ratio: Annotated[float, Range(0, 1)] = doc(
        "Below this UP fraction (but above the minimum) the node is degraded.", 0.5
    )
    degraded_action: Literal["med", "prepend", "none"] = doc(
        "What a degraded node does: a worse MED, an AS-path prepend, or nothing.", "med"
    )
    degraded_med: Annotated[int, Range(0, 4294967295)] = doc("MED sent while degraded.", 100)
    degraded_prepend: Annotated[int, Range(1, 10)] = doc("Prepends while degraded.", 3)
    maintenance_drain: DurationOrZeroT = doc(
        "How long a node in maintenance announces with GRACEFUL_SHUTDOWN before withdrawing.",
        D(30),
    )
    metrics_port: Port = doc("Prometheus metrics port on 127.0.0.1.", 9171)


@dataclass(frozen=True, kw_only=True)
class NicProfile:
    queues: Annotated[int, Range(1, 1024)] | Literal["auto"] = doc(
        "Combined queues; `auto` = one per usable physical core on the NIC's NUMA node.", "auto"
    )
    housekeeping_cpus: list[Annotated[int, Range(0, 4095)]] = doc(
        "CPUs never used for NIC interrupts.", factory=lambda: [0]
    )
    use_smt_siblings: bool = doc("Also place queues on SMT siblings.", False)
    rps: Literal["auto", "on", "off"] = doc(
        "Receive packet steering; `auto` = only with fewer hardware queues than cores.", "auto"
    )
    xps: bool = doc("Transmit packet steering matching the RX layout.", True)
    irq_cpus: list[Annotated[int, Range(0, 4095)]] | None = doc(
        "Explicit CPUs for the NIC's queues (online, not housekeeping); unset: planned.", None
    )
    ring_rx: Annotated[int, Range(64, 65536)] | Literal["max"] | None = doc(
        "RX ring size, or `max` for the NIC's maximum (unset: leave as is).", None
    )
    ring_tx: Annotated[int, Range(64, 65536)] | Literal["max"] | None = doc(
        "TX ring size, or `max` for the NIC's maximum (unset: leave as is).", None
    )
    rx_flow_hash: bool = doc("Hash TCP/UDP on addresses and ports (4-tuple).", True)
    disable_offloads_for_xdp: bool = doc("Turn LRO and hardware GRO off for XDP.", True)
    irqbalance: Literal["stop", "ban", "leave"] = doc(
        "Stop irqbalance, ban the NIC IRQs from it, or leave it.", "ban"
    )
    netdev_max_backlog: Annotated[int, Range(1000, 10_000_000)] = doc(
        "net.core.netdev_max_backlog.", 16384
    )
    netdev_budget: Annotated[int, Range(50, 100_000)] = doc("net.core.netdev_budget.", 600)
    busy_poll_us: Annotated[int, Range(0, 10_000)] = doc(
        "net.core.busy_poll/busy_read in µs (0 = off).", 0
    )


@dataclass(frozen=True, kw_only=True)
class Inventory:
    """A site: ``inventory/sites/<site>.yml`` (over ``inventory/defaults.yml``)."""

    site: SiteInfo = doc("Site identity and what it may announce.")
    nodes: list[Node] = doc("The LB nodes (a pair by default).")
    bgp: Bgp = doc("BGP peering with the routers.")
    vrrp: list[VrrpGroup] = doc("VRRP groups for the pair's floating VIPs.", factory=list)
    anycast: list[AnycastVip] = doc("Anycast VIPs announced over BGP.", factory=list)
    l4_services: list[L4Service] = doc("L4 services (XDP or IPVS).", factory=list)
    dataplane: Dataplane = doc("XDP data-plane settings.", factory=Dataplane)
    network: Network = doc("The nodes' own routing: clients and controllers.", factory=Network)
    l7: L7 = doc("HAProxy L7 tier.", factory=L7)
    health_agent: HealthAgent = doc("Health agent policy.", factory=HealthAgent)
    nic_profiles: dict[Name, NicProfile] = doc(
        "NIC tuning profiles by name; nodes pick one with `nic_profile`.",
        factory=lambda: {"default": NicProfile()},
    )
