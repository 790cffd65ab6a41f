"""End-to-end packets per second: XDP forwarder vs the kernel's own forwarding.

    python bench/dataplane_e2e_pps.py [--count 1000000] [--seconds 10]

Runs in the project's namespace lab (``lbappliance.lab.netns``, from
inventory/sites/lab.yml; lab addresses only): client -> router -> lb1 ->
backend1, backend2, backend-23. One LB node only: the router gets a static
route for the VIP via lb1 (no BGP, no health agent, which would withdraw the
VIP while the forwarder is detached for the kernel run). lb1 runs its
rendered data-plane spec plus one UDP service on port 9 with the same
backends. The client blasts 64-byte UDP frames at VIP:9 from 64 source ports
(a small C sender using sendmmsg, compiled here; at most --count packets or
--seconds each) with tx checksum offload off (frames complete, as a NIC sends
them; the same for every run). Counted: frames arriving on the three
backends' eth1 per second of sending.

1. xdp generic: lb1's XDP program on eth1 encapsulates (IPIP) and redirects
   out of eth2; the backends strip the outer header (XDP) and deliver locally.
2. xdp native: the same in xdpdrv mode (the loader's XDP_PASS program on
   eth2, and the lab's on the switch side of lb1's veths, as native veth
   redirect requires: ``NetnsLab.peer_xdp``).
3. kernel: no XDP on lb1; ip_forward with an L4-hashed ECMP route for the VIP
   over the three backends (the VIP taken off lb1's lo for this run; no
   encapsulation: the kernel here has no ipip).

On veth everything runs in the sender's CPU (veth hands packets to the peer
in the same softirq), so pps measures the per-packet cost of the whole path:
sender, router, LB and backend.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

from lbappliance.lab.netns import NetnsLab
from lbappliance.render.specs import DATAPLANE_TARGET

VIP = "198.51.100.20"
LB = "lb1"

SENDER = r"""
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

int main(int argc, char **argv)
{
	const char *src = argv[1], *dst = argv[2];
	int dport = atoi(argv[3]), nsock = atoi(argv[4]);
	long count = atol(argv[5]);
	double limit = atof(argv[6]);
	int fds[256];
	struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(dport)};
	char payload[18] = {0}; /* 14 + 20 + 8 + 18 = 60 bytes + FCS = 64 */
	struct iovec iov = {payload, sizeof(payload)};
	struct mmsghdr msgs[64];
	struct timespec t0, t1;
	long sent = 0;
	double el = 0;

	inet_pton(AF_INET, dst, &to.sin_addr);
	for (int i = 0; i < nsock; i++) {
		struct sockaddr_in me = {.sin_family = AF_INET, .sin_port = htons(30000 + i)};
		inet_pton(AF_INET, src, &me.sin_addr);
		fds[i] = socket(AF_INET, SOCK_DGRAM, 0);
		if (fds[i] < 0 || bind(fds[i], (void *)&me, sizeof(me)))
			return 1;
	}
	memset(msgs, 0, sizeof(msgs));
	for (int i = 0; i < 64; i++) {
		msgs[i].msg_hdr.msg_name = &to;
		msgs[i].msg_hdr.msg_namelen = sizeof(to);
		msgs[i].msg_hdr.msg_iov = &iov;
		msgs[i].msg_hdr.msg_iovlen = 1;
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (sent < count && el < limit) {
		for (int i = 0; i < nsock && sent < count; i++) {
			int r = sendmmsg(fds[i], msgs, 64, 0);
			if (r > 0)
				sent += r;
		}
		clock_gettime(CLOCK_MONOTONIC, &t1);
		el = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
	}
	printf("%ld %.6f\n", sent, el);
	return 0;
}
"""


def delivered(lab: NetnsLab) -> int:
    return sum(
        int(lab.run(b.name, ["cat", "/sys/class/net/eth1/statistics/rx_packets"]).stdout)
        for b in lab.topology.backends
        if b.loopback_vips
    )


def blast(lab: NetnsLab, sender: Path, count: int, seconds: float) -> tuple[int, float, int]:
    client = str(lab.topology.client.address_on("client"))
    before = delivered(lab)
    cmd = [str(sender), client, VIP, "9", "64", str(count), str(seconds)]
    sent, elapsed = lab.run("client", cmd, timeout=seconds + 30).stdout.split()
    time.sleep(0.5)
    return int(sent), float(elapsed), delivered(lab) - before


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=1_000_000)
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    with NetnsLab.create() as lab:
        work = lab.workdir / "bench"
        work.mkdir()
        (work / "blast.c").write_text(SENDER)
        subprocess.run(["cc", "-O2", "-o", str(work / "blast"), str(work / "blast.c")], check=True)
        lb = lab.topology.host(LB)
        lab.run("router", ["ip", "route", "add", f"{VIP}/32", "via", str(lb.address_on("uplink"))])
        lab.run("client", ["ethtool", "-K", "eth1", "tx", "off"])
        spec_path = work / "dataplane.json"

        def apply(mode: str) -> None:
            spec = json.loads(lab.config(LB, DATAPLANE_TARGET).read_text())
            spec["xdp_mode"] = mode
            udp = dict(spec["services"][0], name="blast", port=9, protocol="udp")
            spec["services"].append(udp)
            spec_path.write_text(json.dumps(spec))
            lab.dataplane(LB, "apply", spec=spec_path)

        results = {}
        apply("generic")
        results["xdp generic"] = blast(lab, work / "blast", args.count, args.seconds)
        lab.peer_xdp(LB)
        apply("native")
        results["xdp native"] = blast(lab, work / "blast", args.count, args.seconds)
        lab.dataplane(LB, "detach", spec=spec_path)
        lab.peer_xdp(LB, on=False)
        lab.run(LB, ["ip", "addr", "del", f"{VIP}/32", "dev", "lo"])
        lab.run(LB, ["sysctl", "-qw", "net.ipv4.ip_forward=1",
                     "net.ipv4.fib_multipath_hash_policy=1"])  # fmt: skip
        hops = [str(b.address_on("backend")) for b in lab.topology.backends if b.loopback_vips]
        lab.run(LB, ["ip", "route", "add", f"{VIP}/32",
                     *[w for a in hops for w in ("nexthop", "via", a)]])  # fmt: skip
        results["kernel forwarding"] = blast(lab, work / "blast", args.count, args.seconds)

    kernel_pps = results["kernel forwarding"][2] / results["kernel forwarding"][1]
    print(f"{'path':<18} {'sent':>9} {'delivered':>9} {'seconds':>8} {'pps':>10} {'ratio':>6}")
    for name, (sent, el, got) in results.items():
        pps = got / el
        print(f"{name:<18} {sent:>9} {got:>9} {el:>8.2f} {pps:>10.0f} {pps / kernel_pps:>6.2f}")


if __name__ == "__main__":
    main()
