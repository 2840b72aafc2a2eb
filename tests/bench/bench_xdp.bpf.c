// XDP programs of the pipeline benchmark (tests/bench/pipeline_bench.cpp);
// not part of the product.
//
//   bench_gen:  the packet generator.  Run with BPF_PROG_TEST_RUN and
//               BPF_F_TEST_XDP_LIVE_FRAMES on an interface, it sends the
//               pre-built frame out of that interface (XDP_TX) every time.
//   bench_sink: attached at the far end of the pipeline; counts what comes
//               out and drops it.  A frame counts as "matched" only with the
//               expected length and EtherType; every `sample_every`-th
//               matched frame is copied into `samples` so that user space can
//               check its bytes (decrypted payload / valid ESP).
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define BENCH_SAMPLE_MAX 1600
#define BENCH_SAMPLES 8

enum { BENCH_FRAMES = 0, BENCH_MATCHED = 1, BENCH_OTHER = 2, BENCH_SAMPLED = 3, BENCH_COUNTERS = 4 };

struct bench_sample {
	__u32 len;
	__u32 pad;
	__u8 data[BENCH_SAMPLE_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, BENCH_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, BENCH_SAMPLES);
	__type(key, __u32);
	__type(value, struct bench_sample);
} samples SEC(".maps");

const volatile __u32 expect_len = 0;       // whole frame, Ethernet included
const volatile __u16 expect_type = 0;      // host order
const volatile __u32 sample_every = 65536; // power of two

static __always_inline __u64 bump(__u32 k)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &k);
	if (!v)
		return 0;
	return ++*v;
}

SEC("xdp")
int bench_gen(struct xdp_md *ctx)
{
	return XDP_TX;
}

SEC("xdp")
int bench_sink(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u32 len = (__u32)(data_end - data);

	bump(BENCH_FRAMES);
	if ((void *)(eth + 1) > data_end || len != expect_len || eth->h_proto != bpf_htons(expect_type)) {
		bump(BENCH_OTHER);
		return XDP_DROP;
	}
	__u64 n = bump(BENCH_MATCHED);
	if ((n & (sample_every - 1)) != 1 % sample_every)
		return XDP_DROP;
	__u32 slot = (__u32)(n / sample_every) % BENCH_SAMPLES;
	struct bench_sample *s = bpf_map_lookup_elem(&samples, &slot);
	if (!s)
		return XDP_DROP;
	if (len > BENCH_SAMPLE_MAX)
		len = BENCH_SAMPLE_MAX;
	if (len < 1)
		return XDP_DROP;
	if (bpf_xdp_load_bytes(ctx, 0, s->data, len) == 0) {
		s->len = len;
		bump(BENCH_SAMPLED);
	}
	return XDP_DROP;
}

char LICENSE[] SEC("license") = "GPL";
