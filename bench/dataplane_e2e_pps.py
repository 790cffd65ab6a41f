"""End-to-end packets per second: XDP forwarder vs the kernel's own forwarding.

    python bench/dataplane_e2e_pps.py [--count 1000000] [--seconds 10]

Builds the namespace lab of tests/dataplane/dplab.py (client, LB, three
backends on one bridge; lab addresses only) and has the client blast
64-byte UDP frames at VIP:9 from 64 source ports (a small C sender using
sendmmsg, compiled here; at most --count packets or --seconds each). Counted:
frames arriving on the three backends' eth0 per second of sending.

1. xdp generic: the LB's XDP program encapsulates (IPIP) and sends back out
   (XDP_TX); the backends strip the outer header (XDP) and deliver locally.
2. xdp native: the same in xdpdrv mode (an XDP_PASS program on the bridge
   side of the LB's veth, as native veth XDP_TX requires).
3. kernel: no XDP on the LB; ip_forward with an L4-hashed ECMP route for the
   VIP over the three backends (no encapsulation: the kernel here has no ipip).

On veth everything runs in the sender's CPU (veth hands packets to the peer
in the same softirq), so pps measures the per-packet cost of the whole path.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "tests" / "dataplane"))

from dplab import BACKENDS, CLIENT, VIP, Lab  # noqa: E402

from lbappliance.dataplane import loader  # noqa: E402

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

PASS_C = (
    "#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\n"
    'SEC("xdp") int xdp_pass(struct xdp_md *ctx) { return XDP_PASS; }\n'
    'char _license[] SEC("license") = "Apache-2.0";\n'
)


def delivered(lab: Lab) -> int:
    return sum(lab.rx_packets(b) for b in BACKENDS)


def blast(lab: Lab, sender: Path, count: int, seconds: float) -> tuple[int, float, int]:
    before = delivered(lab)
    out = lab.exec("cl", str(sender), CLIENT, VIP, "9", "64", str(count), str(seconds))
    sent, elapsed = out.split()
    import time

    time.sleep(0.5)
    return int(sent), float(elapsed), delivered(lab) - before


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=1_000_000)
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lbdp-pps-"))
    fs = work / "bpffs"
    fs.mkdir()
    subprocess.run(["mount", "-t", "bpf", "bpf", str(fs)], check=True)
    lab = Lab()
    try:
        (work / "blast.c").write_text(SENDER)
        subprocess.run(["cc", "-O2", "-o", str(work / "blast"), str(work / "blast.c")], check=True)
        obj = loader.compile_object(REPO / "bpf" / "xdp_lb.c", work / "xdp_lb.o")
        decap = loader.compile_object(REPO / "bpf" / "xdp_decap.c", work / "xdp_decap.o")
        (work / "pass.c").write_text(PASS_C)
        pass_o = loader.compile_object(work / "pass.c", work / "pass.o")
        lab.up(decap)
        spec_path = work / "dataplane.json"

        def apply(mode: str) -> None:
            spec = json.loads(lab.write_spec(spec_path, mode=mode).read_text())
            spec["services"].append(dict(spec["services"][0], name="blast", port=9))
            spec_path.write_text(json.dumps(spec))
            lab.dataplane("apply", "--spec", str(spec_path), "--object", str(obj),
                          "--pin-root", str(fs / "lb"))  # fmt: skip

        results = {}
        apply("generic")
        results["xdp generic"] = blast(lab, work / "blast", args.count, args.seconds)
        lab.ip("sw", "link", "set", "dev", "p-lb", "xdpdrv", "obj", str(pass_o), "sec", "xdp")
        apply("native")
        results["xdp native"] = blast(lab, work / "blast", args.count, args.seconds)
        lab.dataplane("detach", "--interface", "eth0", "--pin-root", str(fs / "lb"))
        lab.ip("sw", "link", "set", "dev", "p-lb", "xdpdrv", "off")
        lab.sysctl("lb", net__ipv4__ip_forward=1, net__ipv4__fib_multipath_hash_policy=1)
        lab.ip("lb", "route", "add", f"{VIP}/32",
               *[w for a in BACKENDS.values() for w in ("nexthop", "via", a)])  # fmt: skip
        results["kernel forwarding"] = blast(lab, work / "blast", args.count, args.seconds)

        kernel_pps = results["kernel forwarding"][2] / results["kernel forwarding"][1]
        print(f"{'path':<18} {'sent':>9} {'delivered':>9} {'seconds':>8} {'pps':>10} {'ratio':>6}")
        for name, (sent, el, got) in results.items():
            pps = got / el
            print(f"{name:<18} {sent:>9} {got:>9} {el:>8.2f} {pps:>10.0f} {pps / kernel_pps:>6.2f}")
    finally:
        lab.close()
        subprocess.run(["umount", "-l", str(fs)], check=False)
        subprocess.run(["rm", "-rf", str(work)], check=False)


if __name__ == "__main__":
    main()
