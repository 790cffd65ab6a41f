/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Map layouts shared by the XDP forwarder (xdp_lb.c) and its control plane
 * (src/lbappliance/dataplane/bpfmaps.py mirrors every struct here with
 * struct.Struct; tests/dataplane checks both against BTF).
 * All addresses and ports are in network byte order.
 */
#ifndef LB_MAPS_H
#define LB_MAPS_H

#include <linux/types.h>

#define LB_MAX_SERVICES 1024
#define LB_MAX_BACKENDS 4096
/* Two table slots per service: the active one and the one being rebuilt. */
#define LB_MAX_TABLES (2 * LB_MAX_SERVICES)
/* Maglev tables of this (the default) size live in lb_tables_std, whose inner
 * maps all have exactly this many entries: the verifier then inlines the slot
 * lookup (one kernel call less per packet). Other sizes go to lb_tables
 * (BPF_F_INNER_MAP: any size, looked up through a helper call). */
#define LB_STD_TABLE_SIZE 65537
/* The VIP directory: open addressing, linear probing, at most LB_VIP_PROBES
 * slots from a key's hash; 16 slots per possible service keep probes short. */
#define LB_VIP_SLOTS 16384 /* a power of two */
#define LB_VIP_PROBES 8

#define LB_MODE_UNUSED 0
#define LB_MODE_IPIP 1  /* IPIP / IP6IP6 / 4in6 / 6in4 by the backend's family */
#define LB_MODE_L2DSR 2 /* rewrite the MACs only */

#define LB_OUTER_TTL 64
#define LB_HASH_SEED 0x4c42u /* "LB": fixed, so both nodes of a pair agree */

/* Drop/pass reasons counted in lb_drops (per CPU). */
#define LB_DROP_NO_BACKEND 0 /* VIP has no live backend (empty table) */
#define LB_DROP_NO_TABLE 1   /* table slot or backend entry missing */
#define LB_DROP_NO_SOURCE 2  /* no tunnel source for the backend's family */
#define LB_DROP_ADJUST 3     /* bpf_xdp_adjust_head/tail failed */
#define LB_TOO_BIG 4         /* larger than the backend's path MTU once encapsulated:
			      * answered with ICMP "fragmentation needed" / ICMPv6
			      * "packet too big" (XDP_TX toward the client) */
#define LB_NR_DROPS 5

/* Flow-table counters (lb_flow_stats, per CPU). */
#define LB_FLOW_HIT 0      /* forwarded by the flow's entry */
#define LB_FLOW_MISS 1     /* no usable entry: picked from the current table, recorded */
#define LB_FLOW_PREVIOUS 2 /* no entry, not a new flow, inside the window after a table
			    * change: picked from the previous table, recorded */
#define LB_FLOW_REHASH 3   /* the entry's backend is down or gone: entry dropped, re-picked */
#define LB_FLOW_EXPIRED 4  /* UDP entry idle longer than the timeout: re-picked */
#define LB_NR_FLOW_STATS 5

/* Backend states (struct backend.state, the one field written in place). */
#define LB_BACKEND_UP 0
#define LB_BACKEND_DOWN 1  /* failed: flow entries naming it are dropped and re-hashed */
#define LB_BACKEND_DRAIN 2 /* weight 0: in no table; flows with an entry keep using it */

/* Bytes of the offending packet an ICMP "too big" quotes: fixed, so one
 * bpf_csum_diff call sums them. Every such packet is longer (path MTUs are at
 * least 1280 bytes). */
#define LB_ICMP_QUOTE 512

/* Hashed as five 32-bit words (aligned for that); see vip_hash(). */
struct vip_key {
	__u8 addr[16]; /* IPv4 in the first 4 bytes, rest zero */
	__be16 port;
	__u8 proto; /* IPPROTO_TCP / IPPROTO_UDP */
	__u8 family; /* 4 or 6; 0 marks an empty directory slot */
} __attribute__((aligned(4)));

struct vip_info {
	__u32 stats_id;   /* index into lb_vip_stats */
	__u32 table_id;   /* 2 * stats_id + 0 or 1: index into lb_tables_std if
			   * table_size is LB_STD_TABLE_SIZE, else into lb_tables */
	__u32 table_size; /* 0: no backend up, drop */
	__u32 prev_size;  /* the previous table (slot table_id ^ 1, same rule for
			   * the array); 0: none */
	__u64 prev_until; /* CLOCK_MONOTONIC ns: until then a packet of a flow
			   * without entry that is not new (TCP without SYN) is
			   * picked from the previous table */
};

/* One slot of the VIP directory. */
struct vip_entry {
	struct vip_key key;
	__u32 pad;
	struct vip_info info;
};

struct backend {
	__u8 addr[16];   /* IPv4 in the first 4 bytes; outer destination for IPIP */
	__u8 mac[6];     /* Ethernet destination: next-hop (IPIP) or backend (L2 DSR) MAC */
	__u8 family;     /* 4 or 6 */
	__u8 mode;       /* LB_MODE_* */
	__u8 src_mac[6]; /* Ethernet source: the egress interface's own MAC */
	__u16 mtu;       /* path MTU to the backend (host order): a larger
			  * encapsulated packet gets an ICMP "too big" */
	__u32 ifindex;   /* egress interface: XDP_TX if it is the ingress one, else redirect */
	__u32 gen;       /* serial of this entry (never reused): a flow entry
			  * naming another serial refers to a freed entry */
	__u8 state;      /* LB_BACKEND_* */
	__u8 pad[3];
};

/* Flow-table keys (xdp_lb.c lb_flows4, lb_flows6) and their value. */
struct flow_key4 {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};

struct flow_key6 {
	__u8 saddr[16];
	__u8 daddr[16];
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};

struct flow_entry {
	__u32 backend_id; /* index into lb_backends */
	__u32 gen;        /* that entry's serial when recorded */
	__u64 last_seen;  /* CLOCK_MONOTONIC_COARSE ns: UDP, the last packet;
			   * TCP, when recorded (not updated: no clock read
			   * per packet) */
	__u32 hash;       /* the flow hash (IPv6 outer flow label), not recomputed */
	__u32 pad;
};

struct lb_config {
	__u8 src_v4[4];
	__u8 src_v6[16];
	__u8 has_v4;
	__u8 has_v6;
	__u8 pad[2];
	/* Written by the control plane: SHA-256 of the object file that is
	 * loaded, so a re-apply can tell whether the attached program is the one
	 * built from the object it was given. Not read by the program. */
	__u8 object_sha256[32];
	__u64 udp_idle_ns; /* a UDP flow entry idle longer is re-picked */
};

struct counters {
	__u64 packets;
	__u64 bytes; /* L3 bytes: the client's IP packet, before encapsulation */
};

#endif
