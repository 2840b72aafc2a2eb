/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* BPF-only map helpers shared by the ov2 programs: per-CPU counter arrays and
 * the XSK map each redirecting program owns. */
#ifndef OV2_MAPS_H
#define OV2_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "ov2_abi.h"

/* A per-CPU array of __u64 counters indexed by one of the ov2_*_counter enums. */
#define OV2_COUNTER_MAP(name, entries)                                                             \
	struct {                                                                                   \
		__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);                                           \
		__uint(max_entries, entries);                                                      \
		__type(key, __u32);                                                                \
		__type(value, __u64);                                                              \
	} name SEC(".maps")

/* The worker's AF_XDP sockets, one per receive queue. */
#define OV2_XSK_MAP(name)                                                                          \
	struct {                                                                                   \
		__uint(type, BPF_MAP_TYPE_XSKMAP);                                                 \
		__uint(max_entries, OV2_MAX_QUEUES);                                               \
		__type(key, __u32);                                                                \
		__type(value, __u32);                                                              \
	} name SEC(".maps")

/* Adds one to counter `index` of a per-CPU counter map (no lock: per-CPU). */
static __always_inline void ov2_count(void *counter_map, __u32 index)
{
	__u64 *value = bpf_map_lookup_elem(counter_map, &index);

	if (value)
		*value += 1;
}

#endif /* OV2_MAPS_H */
