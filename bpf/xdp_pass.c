// SPDX-License-Identifier: Apache-2.0
/*
 * The smallest XDP program: every packet goes on to the stack (XDP_PASS).
 *
 * The loader attaches it natively to each backend egress interface other than
 * the forwarder's own: most drivers (virtio-net, ixgbe, i40e, ...) accept
 * frames redirected to them from XDP (ndo_xdp_xmit) only while the device has
 * an XDP program of its own, and drop them otherwise. See docs/dataplane.md.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char _license[] SEC("license") = "Apache-2.0";
