/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * net/netmap_user.h for building netmap programs against valed (vale-rs).
 *
 * Part of vale-rs, written from netmap's published interface. It gives programs:
 *   - the device path and the pointer arithmetic over the mapped memory
 *     (NETMAP_IF, NETMAP_TXRING, NETMAP_RXRING, NETMAP_BUF, NETMAP_BUF_IDX, ...);
 *   - the ring helpers (nm_ring_next, nm_ring_space, nm_tx_pending, ...);
 *   - the D / RD / ND logging macros;
 *   - with NETMAP_WITH_LIBS defined before inclusion, the small pcap-like legacy
 *     API: struct nm_desc, nm_open, nm_close, nm_mmap, nm_inject, nm_dispatch,
 *     nm_nextpkt. It registers with the legacy NIOCREGIF request.
 *
 * Everything here is static inline over open/ioctl/mmap/poll on /dev/netmap, so a
 * program built with these headers runs against valed when libvale_netmap.so is
 * preloaded or linked (pkg-config --libs vale-netmap), and against netmap's kernel
 * module otherwise.
 */

#ifndef _NET_NETMAP_USER_H_
#define _NET_NETMAP_USER_H_

#define NETMAP_DEVICE_NAME "/dev/netmap"

#include <stdint.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <ctype.h>
#include <sys/types.h>
#include <sys/time.h>
#include <sys/socket.h> /* programs expect sockaddr to be declared */
#include <net/if.h>

#include <net/netmap.h>

#ifndef likely
#if defined(__GNUC__) || defined(__clang__)
/* The usual spelling, token for token, so a program's own identical copy is fine. */
#define likely(x)	__builtin_expect(!!(x), 1)
#define unlikely(x)	__builtin_expect(!!(x), 0)
#else
#define likely(x)	(x)
#define unlikely(x)	(x)
#endif
#endif

/* ---- addressing the mapped memory -------------------------------------------- */

/* ptr + offset bytes, as a pointer of the given type. */
#define _NETMAP_OFFSET(type, ptr, offset) \
	((type)(void *)((char *)(ptr) + (offset)))

/* The netmap_if of a descriptor: mapping base + nr_offset. */
#define NETMAP_IF(_base, _ofs) _NETMAP_OFFSET(struct netmap_if *, _base, _ofs)

/* TX ring i; the host TX rings follow the hardware ones. */
#define NETMAP_TXRING(nifp, index) \
	_NETMAP_OFFSET(struct netmap_ring *, nifp, (nifp)->ring_ofs[(index)])

/* RX ring i; RX entries of ring_ofs[] come after every TX entry. */
#define NETMAP_RXRING(nifp, index) \
	_NETMAP_OFFSET(struct netmap_ring *, nifp, \
	    (nifp)->ring_ofs[(index) + (nifp)->ni_tx_rings + (nifp)->ni_host_tx_rings])

/* Address of buffer number index (buffers are addressed from their ring). */
#define NETMAP_BUF(ring, index) \
	((char *)(ring) + (ring)->buf_ofs + ((size_t)(index) * (ring)->nr_buf_size))

/* The inverse: the number of the buffer that starts at buf. */
#define NETMAP_BUF_IDX(ring, buf) \
	(((char *)(buf) - ((char *)(ring) + (ring)->buf_ofs)) / (ring)->nr_buf_size)

/* The offset bits of a slot's ptr (NETMAP_REQ_OPT_OFFSETS; 0 without it). */
#define NETMAP_ROFFSET(ring, slot) ((slot)->ptr & (ring)->offset_mask)

/* Set the offset bits of a slot's ptr, keeping the others. */
#define NETMAP_WOFFSET(ring, slot, offset) \
	do { \
		(slot)->ptr = ((slot)->ptr & ~(ring)->offset_mask) | \
		    ((offset) & (ring)->offset_mask); \
	} while (0)

/* Start of a slot's data: its buffer plus its offset. */
#define NETMAP_BUF_OFFSET(ring, slot) \
	(NETMAP_BUF(ring, (slot)->buf_idx) + NETMAP_ROFFSET(ring, slot))

/* ---- ring helpers --------------------------------------------------------------- */

/* The slot after i, wrapping at num_slots. */
static inline uint32_t
nm_ring_next(struct netmap_ring *r, uint32_t i)
{
	return unlikely(i + 1 == r->num_slots) ? 0 : i + 1;
}

/*
 * Whether a TX ring still holds frames the switch has not taken: once everything
 * is gone, tail sits just behind head.
 */
static inline int
nm_tx_pending(struct netmap_ring *r)
{
	return nm_ring_next(r, r->tail) != r->head;
}

/* Slots between head and tail: free slots on TX, received ones on RX. */
static inline uint32_t
nm_ring_space(struct netmap_ring *ring)
{
	uint32_t n = ring->tail - ring->head;

	if (ring->tail < ring->head)
		n += ring->num_slots; /* unsigned arithmetic: wraps to the right value */
	return n;
}

/* A hint to fetch a buffer ahead of use. */
static inline void
nm_prefetch(const void *p)
{
#if defined(__GNUC__) || defined(__clang__)
	__builtin_prefetch(p);
#else
	(void)p;
#endif
}

/*
 * Copy a frame of l bytes between buffers. Netmap programs call this in their
 * forwarding loops; libc's memcpy is as fast for the sizes they use.
 */
static inline void
nm_pkt_copy(const void *_src, void *_dst, int l)
{
	if (l > 0)
		memcpy(_dst, _src, (size_t)l);
}

/* ---- logging: D (always), RD (at most lps lines a second), ND (never) ---------- */

#ifndef ND

#if defined(__GNUC__) || defined(__clang__)
#define NM_VALE_PRINTF_(f, a) __attribute__((__format__(__printf__, f, a)))
#else
#define NM_VALE_PRINTF_(f, a)
#endif

static inline void nm_vale_log_(const char *fn, int line, const char *fmt, ...)
    NM_VALE_PRINTF_(3, 4);

/* "SSS.UUUUUU function [line] message" on stderr, in one write. */
static inline void
nm_vale_log_(const char *fn, int line, const char *fmt, ...)
{
	char msg[1024];
	struct timeval now;
	va_list ap;

	gettimeofday(&now, NULL);
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fprintf(stderr, "%03d.%06d %s [%d] %s\n", (int)(now.tv_sec % 1000),
	    (int)now.tv_usec, fn, line, msg);
}

#define ND(...) do {} while (0)
#define D(...) nm_vale_log_(__func__, __LINE__, __VA_ARGS__)
#define RD(lps, ...) \
	do { \
		static long nm_vale_rd_sec_; \
		static int nm_vale_rd_cnt_; \
		struct timeval nm_vale_rd_now_; \
		gettimeofday(&nm_vale_rd_now_, NULL); \
		if (nm_vale_rd_sec_ != (long)nm_vale_rd_now_.tv_sec) { \
			nm_vale_rd_sec_ = (long)nm_vale_rd_now_.tv_sec; \
			nm_vale_rd_cnt_ = 0; \
		} \
		if (nm_vale_rd_cnt_++ < (lps)) \
			D(__VA_ARGS__); \
	} while (0)

#endif /* !ND */

/* ---- the legacy pcap-like API ---------------------------------------------------- */

#ifdef NETMAP_WITH_LIBS
#ifndef HAVE_NETMAP_WITH_LIBS
#define HAVE_NETMAP_WITH_LIBS

#include <stdlib.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

struct nm_desc;

/* What nm_dispatch hands its callback; it starts like pcap's packet header. */
struct nm_pkthdr {
	struct timeval ts;
	uint32_t caplen;           /* bytes contiguous at buf */
	uint32_t len;              /* bytes of the frame, all fragments */
	uint64_t flags;            /* NM_MORE_PKTS: more frames follow in this call */
#define NM_MORE_PKTS 1
	struct nm_desc *d;
	struct netmap_slot *slot;  /* the frame's first slot */
	uint8_t *buf;
};

/* Counters, shaped like pcap's. */
struct nm_stat {
	unsigned int ps_recv;
	unsigned int ps_drop;
	unsigned int ps_ifdrop;
};

#define NM_ERRBUF_SIZE 512

/* An open port: what nm_open returns and the other calls take. */
struct nm_desc {
	struct nm_desc *self;      /* == the descriptor itself while it is valid */
	int fd;
	void *mem;                 /* the mapping (own or the parent's) */
	size_t memsize;
	int done_mmap;             /* mem is ours to munmap */
	struct netmap_if *nifp;
	uint16_t first_tx_ring, last_tx_ring, cur_tx_ring;
	uint16_t first_rx_ring, last_rx_ring, cur_rx_ring;
	struct nmreq req;          /* the NIOCREGIF request, as answered */
	struct nm_pkthdr hdr;      /* nm_dispatch's header */

	struct netmap_ring *some_ring; /* a bound ring, for index/address arithmetic */
	void *buf_start;           /* buffer 0 */
	void *buf_end;             /* end of the mapping */

	/* pcap_open_live's parameters, for pcap emulations built on this. */
	int snaplen;
	int promisc;
	int to_ms;
	char *errbuf;

	uint32_t if_flags;
	uint32_t if_reqcap;
	uint32_t if_curcap;

	struct nm_stat st;
	char msg[NM_ERRBUF_SIZE];
};

#define P2NMD(p)           ((const struct nm_desc *)(p))
#define IS_NETMAP_DESC(d)  ((d) && P2NMD(d)->self == P2NMD(d))
#define NETMAP_FD(d)       (P2NMD(d)->fd)

/* nm_dispatch's callback, the same shape as pcap's. */
typedef void (*nm_cb_t)(unsigned char *, const struct nm_pkthdr *, const unsigned char *);

/*
 * nm_open flags. The low 16 bits may carry NETMAP_NO_TX_POLL / NETMAP_DO_RX_POLL
 * for nr_ringid; the others say what to take from the parent descriptor.
 */
enum {
	NM_OPEN_NO_MMAP = 0x040000,  /* share the parent's mapping */
	NM_OPEN_IFNAME = 0x080000,   /* name, ringid and flags from the parent; no parsing */
	NM_OPEN_ARG1 = 0x100000,     /* nr_arg1 from the parent */
	NM_OPEN_ARG2 = 0x200000,     /* nr_arg2 (memory id) from the parent */
	NM_OPEN_ARG3 = 0x400000,     /* nr_arg3 (extra buffers) from the parent */
	NM_OPEN_RING_CFG = 0x800000  /* ring and slot counts from the parent */
};

/* Room nm_parse's err argument must have. */
#define NM_VALE_ERRMSG_LEN 80

static inline int nm_close(struct nm_desc *d);

/* Whether [s, e) is made of letters, digits and '_' only (may be empty). */
static inline int
nm_vale_is_ident_(const char *s, const char *e)
{
	for (; s < e; s++) {
		if (!isalnum((unsigned char)*s) && *s != '_')
			return 0;
	}
	return 1;
}

/*
 * Parse a port name into d->req: the interface name into nr_name, the mode and
 * flags ORed into nr_flags, a ring or pipe number ORed into nr_ringid, the memory
 * id into nr_arg2. Grammar:
 *
 *   name    := "vale" BRIDGE ":" PORT suffix | "netmap:" IFNAME suffix
 *   suffix  := [ring] { "/" FLAG+ | "@" MEMID }
 *   ring    := "^" | "*" | "-" N | "{" N | "}" N
 *   FLAG    := x (exclusive) | z (zero-copy monitor) | t | r (TX / RX monitor)
 *            | R (RX rings only) | T (TX rings only)
 *
 * BRIDGE and PORT are letters, digits and '_'; the netmap: prefix is not kept in
 * nr_name, the vale one is. N is below NETMAP_RING_MASK, MEMID positive and given
 * at most once. Returns 0, or -1 with errno EINVAL and a message in err (which
 * must hold NM_VALE_ERRMSG_LEN bytes) when err is not NULL.
 */
static inline int
nm_parse(const char *ifname, struct nm_desc *d, char *err)
{
	char why[NM_VALE_ERRMSG_LEN];
	const char *name, *p;
	uint32_t mode = NR_REG_ALL_NIC, flags = 0, ringid = 0;
	unsigned long memid = 0;
	size_t namelen;

	why[0] = '\0';
	if (strncmp(ifname, NM_BDG_NAME, strlen(NM_BDG_NAME)) == 0) {
		const char *colon = strchr(ifname, ':');

		name = ifname;
		if (colon == NULL) {
			snprintf(why, sizeof(why), "no ':' after the switch name (valeX:port)");
			goto fail;
		}
		if (!nm_vale_is_ident_(ifname + strlen(NM_BDG_NAME), colon)) {
			snprintf(why, sizeof(why), "switch name: letters, digits and '_' only");
			goto fail;
		}
		p = colon + 1;
		while (*p && !strchr("-*^{}/@", *p))
			p++;
		if (!nm_vale_is_ident_(colon + 1, p)) {
			snprintf(why, sizeof(why), "port name: letters, digits and '_' only");
			goto fail;
		}
	} else if (strncmp(ifname, "netmap:", 7) == 0) {
		name = ifname + 7;
		p = name;
		while (*p && !strchr("-*^{}/@", *p))
			p++;
	} else {
		snprintf(why, sizeof(why), "neither a netmap: nor a vale name");
		goto fail;
	}

	namelen = (size_t)(p - name);
	if (namelen >= sizeof(d->req.nr_name)) {
		snprintf(why, sizeof(why), "name is %u characters; the limit is %u",
		    (unsigned)namelen, (unsigned)sizeof(d->req.nr_name) - 1);
		goto fail;
	}

	/* An optional ring selector comes first. */
	if (*p && strchr("^*-{}", *p)) {
		char sel = *p++;

		switch (sel) {
		case '^': mode = NR_REG_SW; break;
		case '*': mode = NR_REG_NIC_SW; break;
		case '-': mode = NR_REG_ONE_NIC; break;
		case '{': mode = NR_REG_PIPE_MASTER; break;
		default: mode = NR_REG_PIPE_SLAVE; break;
		}
		if (sel != '^' && sel != '*') {
			char *end;
			long n;

			if (*p == '\0') {
				snprintf(why, sizeof(why), "no number after '%c'", sel);
				goto fail;
			}
			n = strtol(p, &end, 10);
			if (n < 0 || n >= NETMAP_RING_MASK) {
				snprintf(why, sizeof(why), "ring %ld: the range is 0 to %d", n,
				    NETMAP_RING_MASK - 1);
				goto fail;
			}
			ringid = (uint32_t)n;
			p = end;
		}
	}

	/* Then flag groups and one memory id, in any order. */
	while (*p) {
		if (*p == '/') {
			p++;
			if (*p == '\0') {
				snprintf(why, sizeof(why), "no flags after '/'");
				goto fail;
			}
			for (; *p && *p != '@'; p++) {
				switch (*p) {
				case 'x': flags |= NR_EXCLUSIVE; break;
				case 'z': flags |= NR_ZCOPY_MON; break;
				case 't': flags |= NR_MONITOR_TX; break;
				case 'r': flags |= NR_MONITOR_RX; break;
				case 'R': flags |= NR_RX_RINGS_ONLY; break;
				case 'T': flags |= NR_TX_RINGS_ONLY; break;
				default:
					snprintf(why, sizeof(why), "flag '%c': the flags are x z t r R T",
					    *p);
					goto fail;
				}
			}
		} else if (*p == '@') {
			char *end;
			long n;

			p++;
			if (memid != 0) {
				snprintf(why, sizeof(why), "memory id given twice");
				goto fail;
			}
			n = strtol(p, &end, 10);
			if (end == p) {
				snprintf(why, sizeof(why), "no memory id after '@'");
				goto fail;
			}
			if (n <= 0 || n > 0xffff) {
				snprintf(why, sizeof(why), "memory id %ld: the range is 1 to 65535", n);
				goto fail;
			}
			memid = (unsigned long)n;
			p = end;
			if (*p && *p != '/' && *p != '@') {
				snprintf(why, sizeof(why), "'%c' after the memory id", *p);
				goto fail;
			}
		} else {
			snprintf(why, sizeof(why), "'%c' where '/' flags or '@' memory id may come",
			    *p);
			goto fail;
		}
	}

	memcpy(d->req.nr_name, name, namelen);
	d->req.nr_name[namelen] = '\0';
	d->req.nr_flags |= mode | flags;
	d->req.nr_ringid = (uint16_t)(d->req.nr_ringid | ringid);
	d->req.nr_arg2 = (uint16_t)memid;
	d->self = d;
	return 0;

fail:
	errno = EINVAL;
	if (err)
		snprintf(err, NM_VALE_ERRMSG_LEN, "%s", why);
	return -1;
}

/*
 * Map the descriptor's memory, or share the parent's when it has the same memory
 * id, and point nifp, some_ring, buf_start and buf_end into it. 0 or EINVAL.
 */
static inline int
nm_mmap(struct nm_desc *d, const struct nm_desc *parent)
{
	struct netmap_if *nifp;
	struct netmap_ring *r;

	if (d->done_mmap)
		return 0;
	if (IS_NETMAP_DESC(parent) && parent->mem &&
	    parent->req.nr_arg2 == d->req.nr_arg2) {
		d->mem = parent->mem;
		d->memsize = parent->memsize;
	} else {
		void *m;

		d->memsize = d->req.nr_memsize;
		m = mmap(NULL, d->memsize, PROT_READ | PROT_WRITE, MAP_SHARED, d->fd, 0);
		if (m == MAP_FAILED)
			return EINVAL;
		d->mem = m;
		d->done_mmap = 1;
	}
	nifp = NETMAP_IF(d->mem, d->req.nr_offset);
	r = NETMAP_RXRING(nifp, d->first_rx_ring);
	if ((void *)r == (void *)nifp) /* no RX ring bound: a TX-only descriptor */
		r = NETMAP_TXRING(nifp, d->first_tx_ring);
	d->nifp = nifp;
	d->some_ring = r;
	d->buf_start = NETMAP_BUF(r, 0);
	d->buf_end = (char *)d->mem + d->memsize;
	return 0;
}

/*
 * Open a port by name (see nm_parse) and register it with NIOCREGIF.
 *   req    initial request fields (nr_arg3 extra buffers, ring geometry...), or NULL;
 *   flags  NM_OPEN_* and NETMAP_NO_TX_POLL / NETMAP_DO_RX_POLL;
 *   arg    a parent descriptor to take fields or the mapping from, or NULL.
 * A name that is neither netmap: nor vale returns NULL with errno 0.
 */
static inline struct nm_desc *
nm_open(const char *ifname, const struct nmreq *req, uint64_t new_flags,
    const struct nm_desc *arg)
{
	const struct nm_desc *parent = arg;
	struct nm_desc *d;
	char why[NM_VALE_ERRMSG_LEN];
	uint32_t reg;
	int saved;

	if (strncmp(ifname, "netmap:", 7) != 0 &&
	    strncmp(ifname, NM_BDG_NAME, strlen(NM_BDG_NAME)) != 0) {
		errno = 0; /* not ours to open: not an error */
		return NULL;
	}
	d = (struct nm_desc *)calloc(1, sizeof(*d));
	if (d == NULL) {
		errno = ENOMEM;
		return NULL;
	}
	why[0] = '\0';
	d->self = d;
	d->fd = open(NETMAP_DEVICE_NAME, O_RDWR);
	if (d->fd < 0) {
		snprintf(why, sizeof(why), "cannot open %s: %s", NETMAP_DEVICE_NAME,
		    strerror(errno));
		goto fail;
	}
	if (req)
		d->req = *req;
	if (!(new_flags & NM_OPEN_IFNAME) && nm_parse(ifname, d, why) < 0)
		goto fail;

	d->req.nr_version = NETMAP_API;
	d->req.nr_ringid &= NETMAP_RING_MASK;

	if (IS_NETMAP_DESC(parent) && new_flags) {
		d->req.nr_arg1 = (new_flags & NM_OPEN_ARG1) ? parent->req.nr_arg1 : 4;
		if (new_flags & NM_OPEN_ARG2)
			d->req.nr_arg2 = parent->req.nr_arg2;
		d->req.nr_arg3 = (new_flags & NM_OPEN_ARG3) ? parent->req.nr_arg3 : 0;
		if (new_flags & NM_OPEN_RING_CFG) {
			d->req.nr_tx_slots = parent->req.nr_tx_slots;
			d->req.nr_rx_slots = parent->req.nr_rx_slots;
			d->req.nr_tx_rings = parent->req.nr_tx_rings;
			d->req.nr_rx_rings = parent->req.nr_rx_rings;
		}
		if (new_flags & NM_OPEN_IFNAME) {
			memcpy(d->req.nr_name, parent->req.nr_name, sizeof(d->req.nr_name));
			d->req.nr_ringid = parent->req.nr_ringid;
			d->req.nr_flags = parent->req.nr_flags;
		}
	}
	d->req.nr_ringid = (uint16_t)(d->req.nr_ringid |
	    (new_flags & (NETMAP_NO_TX_POLL | NETMAP_DO_RX_POLL)));

	if (ioctl(d->fd, NIOCREGIF, &d->req)) {
		snprintf(why, sizeof(why), "NIOCREGIF failed: %s", strerror(errno));
		goto fail;
	}

	/* Which rings nm_inject / nm_dispatch / nm_nextpkt walk. */
	reg = d->req.nr_flags & NR_REG_MASK;
	if (reg == NR_REG_SW) {
		/* the host ring comes right after the hardware ones */
		d->first_tx_ring = d->last_tx_ring = d->req.nr_tx_rings;
		d->first_rx_ring = d->last_rx_ring = d->req.nr_rx_rings;
	} else if (reg == NR_REG_ALL_NIC || reg == NR_REG_NIC_SW) {
		uint16_t host = reg == NR_REG_NIC_SW ? 1 : 0;

		d->first_tx_ring = d->first_rx_ring = 0;
		d->last_tx_ring = (uint16_t)(d->req.nr_tx_rings ?
		    d->req.nr_tx_rings - 1 + host : host);
		d->last_rx_ring = (uint16_t)(d->req.nr_rx_rings ?
		    d->req.nr_rx_rings - 1 + host : host);
	} else if (reg == NR_REG_ONE_NIC) {
		d->first_tx_ring = d->last_tx_ring = d->first_rx_ring = d->last_rx_ring =
		    (uint16_t)(d->req.nr_ringid & NETMAP_RING_MASK);
	} else { /* pipes and the rest: one ring pair, number 0 */
		d->first_tx_ring = d->last_tx_ring = 0;
		d->first_rx_ring = d->last_rx_ring = 0;
	}

	/* A parent is consulted even with NM_OPEN_NO_MMAP: it may share its mapping. */
	if ((!(new_flags & NM_OPEN_NO_MMAP) || parent) && nm_mmap(d, parent)) {
		snprintf(why, sizeof(why), "mmap failed: %s", strerror(errno));
		goto fail;
	}
	d->cur_tx_ring = d->first_tx_ring;
	d->cur_rx_ring = d->first_rx_ring;
	return d;

fail:
	saved = errno;
	nm_close(d);
	if (why[0])
		D("%s %s", why, ifname);
	errno = saved ? saved : EINVAL;
	return NULL;
}

/* Unmap (if the mapping is ours), close and free. 0, or EINVAL for a bad d. */
static inline int
nm_close(struct nm_desc *d)
{
	if (d == NULL || d->self != d)
		return EINVAL;
	if (d->done_mmap && d->mem)
		munmap(d->mem, d->memsize);
	if (d->fd != -1)
		close(d->fd);
	memset(d, 0, sizeof(*d));
	free(d);
	return 0;
}

/* A ring that this descriptor did not bind has offset 0: it is nifp itself. */
static inline int
nm_vale_bound_(const struct nm_desc *d, const struct netmap_ring *r)
{
	return (const void *)r != (const void *)d->nifp;
}

/*
 * Queue one frame of size bytes on the first TX ring, from cur_tx_ring on, with
 * room for it (several slots chained with NS_MOREFRAG when it exceeds a buffer).
 * Advances head and cur; the frame leaves on the next txsync or poll. Returns size,
 * or 0 when no ring has room.
 */
static inline int
nm_inject(struct nm_desc *d, const void *buf, size_t size)
{
	const char *src = (const char *)buf;
	unsigned int n = (unsigned int)(d->last_tx_ring - d->first_tx_ring + 1);
	unsigned int c, ri = d->cur_tx_ring;

	for (c = 0; c < n; c++, ri++) {
		struct netmap_ring *ring;
		size_t rem = size;
		uint32_t i, last;

		if (ri > d->last_tx_ring)
			ri = d->first_tx_ring;
		ring = NETMAP_TXRING(d->nifp, ri);
		if (!nm_vale_bound_(d, ring) || ring->cur == ring->tail)
			continue;
		/* last: the slot that takes the final piece, if the ring has it */
		last = ring->cur;
		while (rem > ring->nr_buf_size) {
			rem -= ring->nr_buf_size;
			last = nm_ring_next(ring, last);
			if (last == ring->tail)
				break;
		}
		if (last == ring->tail)
			continue;
		for (i = ring->cur; i != last; i = nm_ring_next(ring, i)) {
			struct netmap_slot *s = &ring->slot[i];

			s->len = (uint16_t)ring->nr_buf_size;
			s->flags = NS_MOREFRAG;
			nm_pkt_copy(src, NETMAP_BUF(ring, s->buf_idx), (int)ring->nr_buf_size);
			src += ring->nr_buf_size;
		}
		ring->slot[last].len = (uint16_t)rem;
		ring->slot[last].flags = 0;
		nm_pkt_copy(src, NETMAP_BUF(ring, ring->slot[last].buf_idx), (int)rem);
		ring->head = ring->cur = nm_ring_next(ring, last);
		d->cur_tx_ring = (uint16_t)ri;
		return (int)size;
	}
	return 0;
}

/*
 * Hand up to cnt received frames (all there are when cnt <= 0) to cb, from the RX
 * rings in turn starting at cur_rx_ring, and release their slots. A frame chained
 * with NS_MOREFRAG is one call: hdr.len counts every fragment, hdr.caplen only the
 * bytes contiguous from buf. hdr.flags has NM_MORE_PKTS on every call but the
 * last. The rings are not synced. Returns the number of frames.
 */
static inline int
nm_dispatch(struct nm_desc *d, int cnt, nm_cb_t cb, unsigned char *arg)
{
	unsigned int c, n = (unsigned int)(d->last_rx_ring - d->first_rx_ring + 1);
	unsigned int ri = d->cur_rx_ring;
	int got = 0;

	if (cnt == 0)
		cnt = -1; /* as pcap: 0 means no limit, like any negative count */
	d->hdr.buf = NULL;
	d->hdr.flags = NM_MORE_PKTS;
	d->hdr.d = d;
	for (c = 0; c < n && got != cnt; c++, ri++) {
		struct netmap_ring *ring;

		if (ri > d->last_rx_ring)
			ri = d->first_rx_ring;
		ring = NETMAP_RXRING(d->nifp, ri);
		if (!nm_vale_bound_(d, ring))
			continue;
		for (; !nm_ring_empty(ring) && got != cnt; got++) {
			uint32_t i = ring->cur;
			struct netmap_slot *slot = &ring->slot[i];
			uint8_t *contig;

			/* The previous frame goes out now that we know it is not the last. */
			if (d->hdr.buf)
				cb(arg, &d->hdr, d->hdr.buf);
			d->cur_rx_ring = (uint16_t)ri;
			d->hdr.slot = slot;
			d->hdr.buf = (uint8_t *)NETMAP_BUF(ring, slot->buf_idx);
			d->hdr.len = d->hdr.caplen = slot->len;
			contig = d->hdr.buf;
			while ((slot->flags & NS_MOREFRAG) && nm_ring_next(ring, i) != ring->tail) {
				uint8_t *next_buf;
				uint32_t prev_len = slot->len;

				i = nm_ring_next(ring, i);
				slot = &ring->slot[i];
				d->hdr.len += slot->len;
				next_buf = (uint8_t *)NETMAP_BUF(ring, slot->buf_idx);
				if (contig != NULL && prev_len == ring->nr_buf_size &&
				    next_buf == contig + ring->nr_buf_size) {
					d->hdr.caplen += slot->len;
					contig = next_buf;
				} else {
					contig = NULL;
				}
			}
			d->hdr.ts = ring->ts;
			ring->head = ring->cur = nm_ring_next(ring, i);
		}
	}
	if (d->hdr.buf) {
		d->hdr.flags = 0;
		cb(arg, &d->hdr, d->hdr.buf);
	}
	return got;
}

/*
 * The next received frame's buffer (its first slot only), or NULL when every RX
 * ring is empty. Fills ts, caplen and len of hdr (only those: a pcap header fits)
 * and releases the slot. The rings are not synced.
 */
static inline unsigned char *
nm_nextpkt(struct nm_desc *d, struct nm_pkthdr *hdr)
{
	unsigned int ri = d->cur_rx_ring;

	do {
		struct netmap_ring *ring = NETMAP_RXRING(d->nifp, ri);

		if (nm_vale_bound_(d, ring) && !nm_ring_empty(ring)) {
			uint32_t i = ring->cur;
			unsigned char *buf = (unsigned char *)NETMAP_BUF(ring, ring->slot[i].buf_idx);

			hdr->ts = ring->ts;
			hdr->len = hdr->caplen = ring->slot[i].len;
			ring->head = ring->cur = nm_ring_next(ring, i);
			d->cur_rx_ring = (uint16_t)ri;
			return buf;
		}
		if (++ri > d->last_rx_ring)
			ri = d->first_rx_ring;
	} while (ri != d->cur_rx_ring);
	return NULL;
}

#endif /* !HAVE_NETMAP_WITH_LIBS */
#endif /* NETMAP_WITH_LIBS */

#endif /* _NET_NETMAP_USER_H_ */
