// SPDX-License-Identifier: Apache-2.0
/*
 * Backend-side decapsulation for the forwarder's IPIP/IP6IP6/4in6/6in4
 * packets: strip the outer IP header and hand the inner packet to the stack
 * (XDP_PASS), where the VIP on the loopback accepts it and the reply goes
 * straight to the client (DSR).
 *
 * For backends whose kernel has no ipip/ip6_tunnel driver (this project's CI
 * kernel, for one) and for the namespace lab; a backend with an `ipip`/`ip6tnl`
 * device does not need it. Decapsulates every tunnelled packet whose outer
 * header has no IPv4 options or IPv6 extension headers; everything else
 * passes untouched.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

static __always_inline int strip(struct xdp_md *ctx, int outer_len, __u8 inner)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr eth;

	if (data + sizeof(eth) > data_end)
		return XDP_PASS;
	__builtin_memcpy(&eth, data, sizeof(eth));
	eth.h_proto = bpf_htons(inner == IPPROTO_IPIP ? ETH_P_IP : ETH_P_IPV6);
	if (bpf_xdp_adjust_head(ctx, outer_len))
		return XDP_PASS;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + sizeof(eth) > data_end)
		return XDP_DROP;
	__builtin_memcpy(data, &eth, sizeof(eth));
	return XDP_PASS;
}

SEC("xdp")
int xdp_decap(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return XDP_PASS;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *iph = (void *)(eth + 1);

		if ((void *)(iph + 1) + sizeof(struct iphdr) > data_end)
			return XDP_PASS;
		if (iph->ihl != 5 || (iph->protocol != IPPROTO_IPIP && iph->protocol != IPPROTO_IPV6))
			return XDP_PASS;
		if (iph->frag_off & bpf_htons(0x3fff))
			return XDP_PASS;
		return strip(ctx, sizeof(*iph), iph->protocol);
	}
	if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) + sizeof(struct iphdr) > data_end)
			return XDP_PASS;
		if (ip6->nexthdr != IPPROTO_IPIP && ip6->nexthdr != IPPROTO_IPV6)
			return XDP_PASS;
		return strip(ctx, sizeof(*ip6), ip6->nexthdr);
	}
	return XDP_PASS;
}

char _license[] SEC("license") = "Apache-2.0";
