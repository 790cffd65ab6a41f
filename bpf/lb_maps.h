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
#define LB_DROP_ADJUST 3     /* bpf_xdp_adjust_head failed */
#define LB_PASS_TOO_BIG 4    /* encapsulated length would exceed 65535 */
#define LB_NR_DROPS 5

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
	__u32 pad;
};

/* One slot of the VIP directory. */
struct vip_entry {
	struct vip_key key;
	struct vip_info info;
};

struct backend {
	__u8 addr[16];   /* IPv4 in the first 4 bytes; outer destination for IPIP */
	__u8 mac[6];     /* Ethernet destination: next-hop (IPIP) or backend (L2 DSR) MAC */
	__u8 family;     /* 4 or 6 */
	__u8 mode;       /* LB_MODE_* */
	__u8 src_mac[6]; /* Ethernet source: the egress interface's own MAC */
	__u16 pad;
	__u32 ifindex;   /* egress interface: XDP_TX if it is the ingress one, else redirect */
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
};

struct counters {
	__u64 packets;
	__u64 bytes; /* L3 bytes: the client's IP packet, before encapsulation */
};

#endif
