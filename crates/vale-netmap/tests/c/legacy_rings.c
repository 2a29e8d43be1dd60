/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * The ring macros and the inline legacy API (nm_inject, nm_dispatch, nm_nextpkt)
 * over a hand-built memory region shaped like a port's mapping: a netmap_if with
 * two TX and two RX rings of 8 slots (host ring entries present but unbound), and
 * 256-byte buffers. No device: the descriptor is filled in as nm_mmap would.
 */
#define NETMAP_WITH_LIBS
#include <net/netmap_user.h>

#include <stddef.h>
#include <stdio.h>
#include <string.h>

#define SLOTS 8
#define BUF_SIZE 256
#define RINGS_AT 4096
#define RING_STRIDE 512
#define BUFS_AT 8192
#define NBUFS 64

static unsigned char region[BUFS_AT + NBUFS * BUF_SIZE] __attribute__((aligned(4096)));
static int failures;

#define CHECK(cond) \
	do { \
		if (!(cond)) { \
			fprintf(stderr, "legacy_rings: FAIL line %d: %s\n", __LINE__, #cond); \
			failures++; \
		} \
	} while (0)

/* The switch's fields are const for programs; the test sets them as the switch would. */
static void
put(void *base, size_t off, const void *v, size_t n)
{
	memcpy((char *)base + off, v, n);
}

static void
put_u32(void *base, size_t off, uint32_t v)
{
	put(base, off, &v, sizeof(v));
}

static void
put_u16(void *base, size_t off, uint16_t v)
{
	put(base, off, &v, sizeof(v));
}

static void
put_i64(void *base, size_t off, int64_t v)
{
	put(base, off, &v, sizeof(v));
}

static void
put_u64(void *base, size_t off, uint64_t v)
{
	put(base, off, &v, sizeof(v));
}

static void
put_ofs(struct netmap_if *nifp, unsigned i, ssize_t v)
{
	put(nifp, offsetof(struct netmap_if, ring_ofs) + i * sizeof(ssize_t), &v, sizeof(v));
}

static unsigned char *
ring_at(unsigned k)
{
	return region + RINGS_AT + k * RING_STRIDE;
}

/* Rings 0, 1 are TX; 2, 3 RX. TX rings start with every slot free, RX rings empty. */
static struct netmap_if *
build(void)
{
	struct netmap_if *nifp = (struct netmap_if *)(void *)region;
	unsigned k, i;

	memset(region, 0, sizeof(region));
	memcpy(nifp->ni_name, "vale0:a", 8);
	put_u32(nifp, offsetof(struct netmap_if, ni_flags), NI_PRIV_MEM);
	put_u32(nifp, offsetof(struct netmap_if, ni_tx_rings), 2);
	put_u32(nifp, offsetof(struct netmap_if, ni_rx_rings), 2);
	put_u32(nifp, offsetof(struct netmap_if, ni_host_tx_rings), 1);
	put_u32(nifp, offsetof(struct netmap_if, ni_host_rx_rings), 1);
	/* tx0 tx1 host-tx rx0 rx1 host-rx; the host entries stay 0 (not bound) */
	put_ofs(nifp, 0, RINGS_AT + 0 * RING_STRIDE);
	put_ofs(nifp, 1, RINGS_AT + 1 * RING_STRIDE);
	put_ofs(nifp, 3, RINGS_AT + 2 * RING_STRIDE);
	put_ofs(nifp, 4, RINGS_AT + 3 * RING_STRIDE);

	for (k = 0; k < 4; k++) {
		unsigned char *r = ring_at(k);
		struct netmap_ring *ring = (struct netmap_ring *)(void *)r;

		put_i64(r, offsetof(struct netmap_ring, buf_ofs),
		    (int64_t)BUFS_AT - (int64_t)(RINGS_AT + k * RING_STRIDE));
		put_u32(r, offsetof(struct netmap_ring, num_slots), SLOTS);
		put_u32(r, offsetof(struct netmap_ring, nr_buf_size), BUF_SIZE);
		put_u16(r, offsetof(struct netmap_ring, ringid), (uint16_t)(k % 2));
		put_u16(r, offsetof(struct netmap_ring, dir), (uint16_t)(k / 2));
		put_u64(r, offsetof(struct netmap_ring, offset_mask), 0xff);
		ring->head = ring->cur = 0;
		ring->tail = k < 2 ? SLOTS - 1 : 0;
		for (i = 0; i < SLOTS; i++)
			ring->slot[i].buf_idx = 2 + k * SLOTS + i;
	}
	return nifp;
}

static void
describe(struct nm_desc *d, struct netmap_if *nifp)
{
	memset(d, 0, sizeof(*d));
	d->self = d;
	d->fd = -1;
	d->mem = region;
	d->memsize = sizeof(region);
	d->nifp = nifp;
	d->first_tx_ring = d->cur_tx_ring = 0;
	d->last_tx_ring = 1;
	d->first_rx_ring = d->cur_rx_ring = 0;
	d->last_rx_ring = 1;
	d->some_ring = NETMAP_RXRING(nifp, 0);
	d->buf_start = NETMAP_BUF(d->some_ring, 0);
	d->buf_end = region + sizeof(region);
}

static void
addressing(struct netmap_if *nifp)
{
	struct netmap_ring *tx1 = NETMAP_TXRING(nifp, 1), *rx1 = NETMAP_RXRING(nifp, 1);
	struct netmap_slot *s;
	char *b;

	CHECK(NETMAP_IF(region, 0) == nifp);
	CHECK((unsigned char *)NETMAP_TXRING(nifp, 0) == ring_at(0));
	CHECK((unsigned char *)tx1 == ring_at(1));
	CHECK((unsigned char *)NETMAP_RXRING(nifp, 0) == ring_at(2));
	CHECK((unsigned char *)rx1 == ring_at(3));
	/* unbound host rings: offset 0, the netmap_if itself */
	CHECK((void *)NETMAP_TXRING(nifp, 2) == (void *)nifp);
	CHECK((void *)NETMAP_RXRING(nifp, 2) == (void *)nifp);
	CHECK(tx1->dir == 0 && rx1->dir == 1 && rx1->ringid == 1);

	/* buffers are addressed from any ring to the same place */
	CHECK((unsigned char *)NETMAP_BUF(tx1, 5) == region + BUFS_AT + 5 * BUF_SIZE);
	CHECK(NETMAP_BUF(tx1, 5) == NETMAP_BUF(rx1, 5));
	CHECK(NETMAP_BUF_IDX(rx1, region + BUFS_AT + 9 * BUF_SIZE) == 9);
	CHECK(NETMAP_BUF_IDX(tx1, NETMAP_BUF(tx1, tx1->slot[3].buf_idx)) ==
	    tx1->slot[3].buf_idx);

	/* offsets in the low bits of ptr */
	s = &tx1->slot[0];
	s->ptr = 0x12345600;
	NETMAP_WOFFSET(tx1, s, 0x42);
	CHECK(s->ptr == 0x12345642);
	CHECK(NETMAP_ROFFSET(tx1, s) == 0x42);
	b = NETMAP_BUF_OFFSET(tx1, s);
	CHECK(b == NETMAP_BUF(tx1, s->buf_idx) + 0x42);
	NETMAP_WOFFSET(tx1, s, 0x1ff); /* only the masked bits are taken */
	CHECK(s->ptr == 0x123456ff);
	s->ptr = 0;
}

static void
ring_helpers(struct netmap_if *nifp)
{
	struct netmap_ring *r = NETMAP_TXRING(nifp, 0);

	CHECK(nm_ring_next(r, 0) == 1);
	CHECK(nm_ring_next(r, SLOTS - 2) == SLOTS - 1);
	CHECK(nm_ring_next(r, SLOTS - 1) == 0);

	CHECK(nm_ring_space(r) == SLOTS - 1);
	CHECK(!nm_ring_empty(r));
	CHECK(!nm_tx_pending(r)); /* tail just behind head: all sent */
	r->head = r->cur = 6;
	r->tail = 2;
	CHECK(nm_ring_space(r) == 4); /* 6, 7, 0, 1 */
	CHECK(nm_tx_pending(r));
	r->tail = 6;
	CHECK(nm_ring_space(r) == 0 && nm_ring_empty(r));
	r->head = r->cur = 0;
	r->tail = SLOTS - 1;

	/* sem[] is the program's: scribbling it leaves the header alone */
	memset(r->sem, 0x5a, sizeof(r->sem));
	CHECK(r->num_slots == SLOTS && r->tail == SLOTS - 1 && r->offset_mask == 0xff);
	CHECK(r->slot[0].buf_idx == 2);
	CHECK((void *)&r->slot[0] == (void *)(r->sem + sizeof(r->sem)));
	memset(r->sem, 0, sizeof(r->sem));

	{
		unsigned char src[200], dst[200];
		unsigned i;

		for (i = 0; i < sizeof(src); i++)
			src[i] = (unsigned char)i;
		memset(dst, 0, sizeof(dst));
		nm_pkt_copy(src, dst, 128);
		CHECK(memcmp(src, dst, 128) == 0 && dst[128] == 0);
		nm_pkt_copy(src, dst, 200);
		CHECK(memcmp(src, dst, 200) == 0);
		nm_prefetch(src);
	}
}

static void
fill(unsigned char *p, size_t n, unsigned char seed)
{
	size_t i;

	for (i = 0; i < n; i++)
		p[i] = (unsigned char)(seed + i);
}

static void
inject(struct nm_desc *d)
{
	struct netmap_ring *r0 = NETMAP_TXRING(d->nifp, 0), *r1 = NETMAP_TXRING(d->nifp, 1);
	unsigned char frame[600];
	int i;

	fill(frame, sizeof(frame), 7);
	CHECK(nm_inject(d, frame, 100) == 100);
	CHECK(r0->slot[0].len == 100 && r0->slot[0].flags == 0);
	CHECK(memcmp(NETMAP_BUF(r0, r0->slot[0].buf_idx), frame, 100) == 0);
	CHECK(r0->head == 1 && r0->cur == 1);

	/* larger than a buffer: chained with NS_MOREFRAG */
	CHECK(nm_inject(d, frame, 600) == 600);
	CHECK(r0->slot[1].len == BUF_SIZE && r0->slot[1].flags == NS_MOREFRAG);
	CHECK(r0->slot[2].len == BUF_SIZE && r0->slot[2].flags == NS_MOREFRAG);
	CHECK(r0->slot[3].len == 600 - 2 * BUF_SIZE && r0->slot[3].flags == 0);
	CHECK(memcmp(NETMAP_BUF(r0, r0->slot[2].buf_idx), frame + BUF_SIZE, BUF_SIZE) == 0);
	CHECK(memcmp(NETMAP_BUF(r0, r0->slot[3].buf_idx), frame + 2 * BUF_SIZE, 88) == 0);
	CHECK(r0->head == 4 && d->cur_tx_ring == 0);

	/* 3 slots left in ring 0: a 3-slot frame fits, then ring 1 takes over */
	CHECK(nm_inject(d, frame, 520) == 520);
	CHECK(r0->head == SLOTS - 1 && r0->cur == r0->tail);
	CHECK(nm_inject(d, frame, 60) == 60);
	CHECK(d->cur_tx_ring == 1 && r1->head == 1 && r1->slot[0].len == 60);

	/* a frame needing more slots than ring 1 has left goes nowhere */
	CHECK(nm_inject(d, frame, (size_t)BUF_SIZE * SLOTS) == 0);
	CHECK(r1->head == 1);
	for (i = 1; i < SLOTS - 1; i++)
		CHECK(nm_inject(d, frame, 64) == 64);
	CHECK(nm_ring_space(r1) == 0);
	CHECK(nm_inject(d, frame, 0) == 0);  /* even an empty frame needs a slot */
	CHECK(nm_inject(d, frame, 64) == 0);
}

/* What the callback saw, in order. */
struct seen {
	int n;
	uint32_t len[8], caplen[8];
	uint64_t flags[8];
	const unsigned char *buf[8];
	long ts_sec;
	struct nm_desc *d;
};

static void
on_frame(unsigned char *arg, const struct nm_pkthdr *h, const unsigned char *buf)
{
	struct seen *s = (struct seen *)(void *)arg;

	if (s->n < 8) {
		s->len[s->n] = h->len;
		s->caplen[s->n] = h->caplen;
		s->flags[s->n] = h->flags;
		s->buf[s->n] = buf;
		s->ts_sec = (long)h->ts.tv_sec;
		s->d = h->d;
	}
	s->n++;
}

/* The switch delivers: slots [tail, tail + n) get lengths and flags, tail moves. */
static void
deliver(struct netmap_ring *r, const uint16_t *len, const uint16_t *flags, unsigned n)
{
	unsigned i;

	for (i = 0; i < n; i++) {
		struct netmap_slot *s = &r->slot[r->tail];

		s->len = len[i];
		s->flags = flags[i];
		fill((unsigned char *)NETMAP_BUF(r, s->buf_idx), len[i], (unsigned char)i);
		r->tail = nm_ring_next(r, r->tail);
	}
	r->ts.tv_sec = 1234;
}

static void
receive(struct nm_desc *d)
{
	struct netmap_ring *r0 = NETMAP_RXRING(d->nifp, 0), *r1 = NETMAP_RXRING(d->nifp, 1);
	static const uint16_t two_len[] = {60, 70}, two_flags[] = {0, 0};
	static const uint16_t frag_len[] = {BUF_SIZE, BUF_SIZE, 10},
	    frag_flags[] = {NS_MOREFRAG, NS_MOREFRAG, 0};
	struct seen s;
	struct nm_pkthdr h;
	unsigned char *p;

	deliver(r0, two_len, two_flags, 2);
	/* ring 1: its buffers are consecutive (2 + 3 * SLOTS + i): a contiguous chain */
	deliver(r1, frag_len, frag_flags, 3);

	memset(&s, 0, sizeof(s));
	CHECK(nm_dispatch(d, 0, on_frame, (unsigned char *)&s) == 3);
	CHECK(s.n == 3);
	CHECK(s.len[0] == 60 && s.len[1] == 70 && s.len[2] == 2 * BUF_SIZE + 10);
	CHECK(s.caplen[2] == 2 * BUF_SIZE + 10); /* contiguous: all of it at buf */
	CHECK(s.flags[0] == NM_MORE_PKTS && s.flags[1] == NM_MORE_PKTS && s.flags[2] == 0);
	CHECK(s.buf[0] == (const unsigned char *)NETMAP_BUF(r0, r0->slot[0].buf_idx));
	CHECK(s.buf[2] == (const unsigned char *)NETMAP_BUF(r1, r1->slot[0].buf_idx));
	CHECK(s.ts_sec == 1234 && s.d == d);
	CHECK(nm_ring_empty(r0) && nm_ring_empty(r1));
	CHECK(r0->cur == 2 && r1->head == 3 && r1->cur == 3);
	CHECK(d->cur_rx_ring == 1);

	/* a chain whose buffers are not adjacent: caplen stops at the first slot */
	r1->slot[4].buf_idx = 60;
	deliver(r1, frag_len, frag_flags, 3);
	deliver(r0, two_len, two_flags, 2);
	memset(&s, 0, sizeof(s));
	CHECK(nm_dispatch(d, 1, on_frame, (unsigned char *)&s) == 1);
	CHECK(s.n == 1 && s.len[0] == 2 * BUF_SIZE + 10 && s.caplen[0] == BUF_SIZE);
	CHECK(s.flags[0] == 0); /* the last (only) frame of the call */
	CHECK(nm_ring_empty(r1) && !nm_ring_empty(r0));

	/* nm_nextpkt: one slot at a time, wrapping over the rings */
	memset(&h, 0, sizeof(h));
	p = nm_nextpkt(d, &h);
	CHECK(p == (unsigned char *)NETMAP_BUF(r0, r0->slot[2].buf_idx));
	CHECK(h.len == 60 && h.caplen == 60 && h.ts.tv_sec == 1234);
	CHECK(h.d == NULL && h.buf == NULL); /* only the pcap-sized part is written */
	CHECK(d->cur_rx_ring == 0);
	p = nm_nextpkt(d, &h);
	CHECK(p != NULL && h.len == 70);
	CHECK(nm_nextpkt(d, &h) == NULL);
	CHECK(nm_ring_empty(r0) && r0->head == 4);

	/* an unbound ring (offset 0) is skipped, not read as a ring */
	put_ofs(d->nifp, 4, 0);
	CHECK(nm_nextpkt(d, &h) == NULL);
	memset(&s, 0, sizeof(s));
	CHECK(nm_dispatch(d, -1, on_frame, (unsigned char *)&s) == 0 && s.n == 0);
	put_ofs(d->nifp, 4, RINGS_AT + 3 * RING_STRIDE);
}

int
main(void)
{
	struct netmap_if *nifp = build();
	struct nm_desc d;

	addressing(nifp);
	ring_helpers(nifp);
	describe(&d, nifp);
	inject(&d);
	receive(&d);
	if (failures) {
		fprintf(stderr, "legacy_rings: %d failures\n", failures);
		return 1;
	}
	printf("legacy_rings: all passed\n");
	return 0;
}
