/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * net/netmap.h for building netmap programs against valed (vale-rs).
 *
 * This header is part of vale-rs, not of netmap. It declares the netmap device
 * interface (API 14, NIOCCTRL versions 14 and 15) as programs see it: the shared
 * memory structures, the control requests and their options, the legacy request, the
 * ioctl numbers and every mode and flag value. It was written from the published
 * interface (names, values, layouts); the layouts are checked byte for byte against
 * vale-rs's Rust definitions (crates/vale-abi/src/layout.rs and
 * crates/vale-netmap/src/abi.rs) by crates/vale-netmap/tests/c/layout.c.
 *
 * Unlike some versions of the original, it is self-contained: it includes the
 * system headers it needs.
 */

#ifndef _NET_NETMAP_H_
#define _NET_NETMAP_H_

/* Lets a program (or a build script) tell these headers from netmap's own. */
#define VALE_NETMAP_HEADERS 1

#include <stdint.h>
#include <sys/types.h>  /* ssize_t */
#include <sys/time.h>   /* struct timeval */
#include <sys/ioctl.h>  /* _IO, _IOWR */
#include <net/if.h>     /* IF_NAMESIZE (and IFNAMSIZ outside strict ISO modes) */

/* ---- versions ---------------------------------------------------------------- */

#define NETMAP_API     14 /* what programs put in nr_version */
#define NETMAP_MIN_API 14 /* oldest nr_version NIOCCTRL accepts */
#define NETMAP_MAX_API 15 /* newest nr_version NIOCCTRL accepts */

/* The alignment of the ring's application area (a generous cache line). */
#define NM_CACHE_ALIGN 128

#if defined(__GNUC__) || defined(__clang__)
#define NM_VALE_ALIGNED_(n) __attribute__((__aligned__(n)))
#else
#error "net/netmap.h (vale-rs) needs a compiler with GNU attributes (gcc, clang)"
#endif

/* ---- shared memory: slots --------------------------------------------------- */

/* One descriptor of a ring: which buffer, how many bytes, and flags. */
struct netmap_slot {
	uint32_t buf_idx; /* buffer index in the port's memory */
	uint16_t len;     /* bytes of the frame (fragment) in the buffer */
	uint16_t flags;   /* NS_* below */
	uint64_t ptr;     /* NS_INDIRECT address, or the offset bits (NETMAP_ROFFSET) */
};

/* Slot flags set by the program. */
#define NS_BUF_CHANGED 0x0001 /* buf_idx was swapped: the switch must reload it */
#define NS_REPORT      0x0002 /* ask for a completion report (ignored by VALE) */
#define NS_FORWARD     0x0004 /* with NR_FORWARD: pass to the other side (host rings) */
#define NS_NO_LEARN    0x0008 /* the switch must not learn this frame's source MAC */
#define NS_INDIRECT    0x0010 /* payload at the user address in ptr (valed drops it) */
#define NS_MOREFRAG    0x0020 /* another slot of the same frame follows */
#define NS_TXMON       0x0040 /* on a monitor: the copy was taken on the TX side */

/* On TX rings, a non-zero high byte of flags names the destination port and
 * overrides the switch's lookup (valed does not implement this). */
#define NS_PORT_SHIFT 8
#define NS_PORT_MASK  (0xff << NS_PORT_SHIFT)
/* On RX rings the high byte counts the fragments of a frame. */
#define NS_RFRAGS(_slot) (((_slot)->flags >> 8) & 0xff)

/* Longest NS_MOREFRAG chain a port accepts. */
#define NETMAP_MAX_FRAGS 64

/* ---- shared memory: rings --------------------------------------------------- */

/*
 * A ring header; num_slots slots follow it. head, cur and flags belong to the
 * program, tail to the switch; head..tail-1 (modulo num_slots) is the program's
 * part of the ring. The const fields are set by the switch and never change.
 * sem[] is the program's: valed keeps nothing there.
 */
struct netmap_ring {
	const int64_t buf_ofs;      /* buffer 0 is at (char *)ring + buf_ofs */
	const uint32_t num_slots;
	const uint32_t nr_buf_size; /* bytes per buffer */
	const uint16_t ringid;
	const uint16_t dir;         /* 0 TX, 1 RX */

	uint32_t head;              /* first slot the program owns */
	uint32_t cur;               /* wake-up point for poll */
	uint32_t tail;              /* first slot the switch owns */

	uint32_t flags;             /* NR_TIMESTAMP, NR_FORWARD */

	struct timeval ts;          /* time of the last rxsync */

	const uint64_t offset_mask; /* bits of slot.ptr used as a buffer offset */
	const uint64_t buf_align;   /* alignment required of offsets on TX */

	uint8_t sem[128] NM_VALE_ALIGNED_(NM_CACHE_ALIGN); /* the program's scratch */

	struct netmap_slot slot[];  /* num_slots of them */
};

/* Ring flags. */
#define NR_TIMESTAMP 0x0002 /* stamp ts on every sync */
#define NR_FORWARD   0x0004 /* honour NS_FORWARD */

/* Nothing for the program on this ring: head has caught up with tail. */
static inline int
nm_ring_empty(struct netmap_ring *ring)
{
	return ring->head == ring->tail;
}

/* ---- shared memory: the interface ------------------------------------------- */

/*
 * What NIOCCTRL REGISTER's nr_offset points at: the port's name and ring counts
 * and, relative to this struct, the offsets of the rings the descriptor bound
 * (0 for the others). TX rings come first, then the host TX rings, then the RX
 * rings, then the host RX rings.
 */
struct netmap_if {
	char ni_name[IF_NAMESIZE];
	const uint32_t ni_version;
	const uint32_t ni_flags;        /* NI_PRIV_MEM */
	const uint32_t ni_tx_rings;     /* hardware (non-host) TX rings */
	const uint32_t ni_rx_rings;     /* hardware (non-host) RX rings */
	uint32_t ni_bufs_head;          /* first extra buffer, chained through word 0 */
	const uint32_t ni_host_tx_rings;
	const uint32_t ni_host_rx_rings;
	uint32_t ni_spare1[3];
	const ssize_t ring_ofs[];
};

#define NI_PRIV_MEM 0x1 /* the port has memory of its own (every VALE port) */

/* ---- legacy request (NIOCREGIF, NIOCGINFO) ---------------------------------- */

/* The pre-NIOCCTRL request, still used by the inline nm_open() of old programs. */
struct nmreq {
	char nr_name[IF_NAMESIZE];
	uint32_t nr_version;  /* NETMAP_API */
	uint32_t nr_offset;   /* out: offset of the netmap_if in the mapping */
	uint32_t nr_memsize;  /* out: bytes to mmap */
	uint32_t nr_tx_slots;
	uint32_t nr_rx_slots;
	uint16_t nr_tx_rings;
	uint16_t nr_rx_rings;
	uint16_t nr_ringid;   /* ring number and the NETMAP_* bits below */
	uint16_t nr_cmd;      /* NETMAP_BDG_* sub-command, 0 to register */
	uint16_t nr_arg1;
	uint16_t nr_arg2;     /* memory allocator id */
	uint32_t nr_arg3;     /* extra buffers wanted / obtained */
	uint32_t nr_flags;    /* NR_REG_* mode in the low bits, NR_* flags above */
	uint32_t spare2[1];
};

/* nmreq.nr_ringid bits. */
#define NETMAP_HW_RING    0x4000 /* with NR_REG_DEFAULT: one hardware ring */
#define NETMAP_SW_RING    0x2000 /* with NR_REG_DEFAULT: the host rings */
#define NETMAP_RING_MASK  0x0fff /* the ring number */
#define NETMAP_NO_TX_POLL 0x1000 /* poll() does not txsync */
#define NETMAP_DO_RX_POLL 0x8000 /* poll() does rxsync (always the case) */

/* nmreq.nr_cmd values. */
#define NETMAP_BDG_ATTACH      1
#define NETMAP_BDG_DETACH      2
#define NETMAP_BDG_REGOPS      3
#define NETMAP_BDG_LIST        4
#define NETMAP_BDG_VNET_HDR    5
#define NETMAP_BDG_NEWIF       6
#define NETMAP_BDG_DELIF       7
#define NETMAP_PT_HOST_CREATE  8
#define NETMAP_PT_HOST_DELETE  9
#define NETMAP_BDG_POLLING_ON  10
#define NETMAP_BDG_POLLING_OFF 11
#define NETMAP_VNET_HDR_GET    12

/* nmreq.nr_arg1 with NETMAP_BDG_ATTACH: attach the host rings too. */
#define NETMAP_BDG_HOST 1

/* The NR_REG_* mode in nmreq.nr_flags. */
#define NR_REG_MASK 0xf

/* For NIOCCONFIG (external modules; valed answers EOPNOTSUPP). */
#define NM_IFRDATA_LEN 256
struct nm_ifreq {
	char nifr_name[IF_NAMESIZE];
	char data[NM_IFRDATA_LEN];
};

#define NIOCGINFO  _IOWR('i', 145, struct nmreq)
#define NIOCREGIF  _IOWR('i', 146, struct nmreq)
#define NIOCCONFIG _IOWR('i', 150, struct nm_ifreq)

/* ---- NIOCCTRL: header, options, request types -------------------------------- */

/* Header, body and options of one NIOCCTRL together may not exceed this. */
#define NETMAP_REQ_MAXSIZE 4096

/* Options are a list; each starts with this header and its body follows it. */
struct nmreq_option {
	uint64_t nro_next;    /* (struct nmreq_option *) next, or 0 */
	uint32_t nro_reqtype; /* NETMAP_REQ_OPT_* */
	uint32_t nro_status;  /* out: 0 if applied, else an errno (EOPNOTSUPP: unknown) */
	uint64_t nro_size;    /* bytes, for options of variable size */
};

#define NETMAP_REQ_IFNAMSIZ 64

/* What NIOCCTRL takes; nr_body points at the request-specific struct. */
struct nmreq_header {
	uint16_t nr_version;  /* NETMAP_API */
	uint16_t nr_reqtype;  /* NETMAP_REQ_* */
	uint32_t nr_reserved; /* 0 */
	char nr_name[NETMAP_REQ_IFNAMSIZ];
	uint64_t nr_options;  /* (struct nmreq_option *) first option, or 0 */
	uint64_t nr_body;     /* (struct nmreq_xxx *) */
};

/* nmreq_header.nr_reqtype */
enum {
	NETMAP_REQ_REGISTER = 1,      /* struct nmreq_register */
	NETMAP_REQ_PORT_INFO_GET,     /* struct nmreq_port_info_get */
	NETMAP_REQ_VALE_ATTACH,       /* struct nmreq_vale_attach */
	NETMAP_REQ_VALE_DETACH,       /* struct nmreq_vale_detach */
	NETMAP_REQ_VALE_LIST,         /* struct nmreq_vale_list */
	NETMAP_REQ_PORT_HDR_SET,      /* struct nmreq_port_hdr */
	NETMAP_REQ_PORT_HDR_GET,      /* struct nmreq_port_hdr */
	NETMAP_REQ_VALE_NEWIF,        /* struct nmreq_vale_newif */
	NETMAP_REQ_VALE_DELIF,        /* no body */
	NETMAP_REQ_VALE_POLLING_ENABLE,  /* struct nmreq_vale_polling */
	NETMAP_REQ_VALE_POLLING_DISABLE, /* struct nmreq_vale_polling */
	NETMAP_REQ_POOLS_INFO_GET,    /* struct nmreq_pools_info */
	NETMAP_REQ_SYNC_KLOOP_START,  /* struct nmreq_sync_kloop_start */
	NETMAP_REQ_SYNC_KLOOP_STOP,   /* no body */
	NETMAP_REQ_CSB_ENABLE         /* options only */
};

/* nmreq_option.nro_reqtype */
enum {
	NETMAP_REQ_OPT_EXTMEM = 1,          /* struct nmreq_opt_extmem */
	NETMAP_REQ_OPT_SYNC_KLOOP_EVENTFDS, /* struct nmreq_opt_sync_kloop_eventfds */
	NETMAP_REQ_OPT_CSB,                 /* struct nmreq_opt_csb */
	NETMAP_REQ_OPT_SYNC_KLOOP_MODE,     /* struct nmreq_opt_sync_kloop_mode */
	NETMAP_REQ_OPT_OFFSETS,             /* struct nmreq_opt_offsets */
	NETMAP_REQ_OPT_MAX                  /* one past the last type */
};

/* ---- NIOCCTRL bodies ---------------------------------------------------------- */

/* NETMAP_REQ_REGISTER: bind this descriptor to a port (or some of its rings). */
struct nmreq_register {
	uint64_t nr_offset;         /* out: offset of this descriptor's netmap_if */
	uint64_t nr_memsize;        /* out: bytes to mmap */
	uint32_t nr_tx_slots;       /* in (when creating) / out */
	uint32_t nr_rx_slots;
	uint16_t nr_tx_rings;
	uint16_t nr_rx_rings;
	uint16_t nr_host_tx_rings;
	uint16_t nr_host_rx_rings;

	uint16_t nr_mem_id;         /* in: allocator wanted (0: any); out: the one used */
	uint16_t nr_ringid;         /* ring for NR_REG_ONE_NIC / NR_REG_ONE_SW */
	uint32_t nr_mode;           /* NR_REG_* */
	uint32_t nr_extra_bufs;     /* in: wanted; out: obtained (see ni_bufs_head) */

	uint64_t nr_flags;          /* NR_* flags below */
};

/* nmreq_register.nr_flags (and the legacy nmreq.nr_flags above NR_REG_MASK). */
#define NR_MONITOR_TX      0x100   /* copy monitor of the port's TX side */
#define NR_MONITOR_RX      0x200   /* copy monitor of the port's RX side */
#define NR_ZCOPY_MON       0x400   /* zero-copy monitor */
#define NR_EXCLUSIVE       0x800   /* nobody else may bind these rings */
#define NR_RX_RINGS_ONLY   0x2000  /* bind no TX ring */
#define NR_TX_RINGS_ONLY   0x4000  /* bind no RX ring */
#define NR_ACCEPT_VNET_HDR 0x8000  /* the program copes with a virtio-net header */
#define NR_DO_RX_POLL      0x10000 /* poll() rxsyncs (it always does) */
#define NR_NO_TX_POLL      0x20000 /* poll() does not txsync */

/* nmreq_register.nr_mode (the low bits of the legacy nmreq.nr_flags). */
enum {
	NR_REG_DEFAULT = 0,     /* legacy: the mode is in nr_ringid's NETMAP_*_RING bits */
	NR_REG_ALL_NIC = 1,     /* every hardware ring */
	NR_REG_SW = 2,          /* the host rings */
	NR_REG_NIC_SW = 3,      /* both */
	NR_REG_ONE_NIC = 4,     /* hardware ring nr_ringid */
	NR_REG_PIPE_MASTER = 5, /* legacy: pipe nr_ringid, master end ("x{N") */
	NR_REG_PIPE_SLAVE = 6,  /* legacy: pipe nr_ringid, slave end ("x}N") */
	NR_REG_NULL = 7,        /* no rings, memory only */
	NR_REG_ONE_SW = 8       /* host ring nr_ringid */
};

#define NIOCCTRL   _IOWR('i', 151, struct nmreq_header)
#define NIOCTXSYNC _IO('i', 148) /* push what the program put in its TX rings */
#define NIOCRXSYNC _IO('i', 149) /* see what arrived in its RX rings */

/* NETMAP_REQ_PORT_INFO_GET: a port's geometry, without binding it. */
struct nmreq_port_info_get {
	uint64_t nr_memsize;
	uint32_t nr_tx_slots;
	uint32_t nr_rx_slots;
	uint16_t nr_tx_rings;
	uint16_t nr_rx_rings;
	uint16_t nr_host_tx_rings;
	uint16_t nr_host_rx_rings;
	uint16_t nr_mem_id;     /* in/out */
	uint16_t pad[3];
};

/* Port names that start with this live on a VALE switch ("vale0:a"). */
#define NM_BDG_NAME "vale"

/* NETMAP_REQ_VALE_ATTACH: attach the interface named in the header to a switch. */
struct nmreq_vale_attach {
	struct nmreq_register reg;
	uint32_t port_index;    /* out */
	uint32_t pad1;
};

/* NETMAP_REQ_VALE_DETACH */
struct nmreq_vale_detach {
	uint32_t port_index;    /* out */
	uint32_t pad1;
};

/* NETMAP_REQ_VALE_LIST: walk the ports, nr_port_idx by nr_port_idx, until ENOENT. */
struct nmreq_vale_list {
	uint16_t nr_bridge_idx; /* in/out */
	uint16_t pad1;
	uint32_t nr_port_idx;   /* in/out */
};

/* NETMAP_REQ_PORT_HDR_SET / _GET: the virtio-net header length of a port. */
struct nmreq_port_hdr {
	uint32_t nr_hdr_len;
	uint32_t pad1;
};

/* NETMAP_REQ_VALE_NEWIF: create a persistent port named in the header. */
struct nmreq_vale_newif {
	uint32_t nr_tx_slots;
	uint32_t nr_rx_slots;
	uint16_t nr_tx_rings;
	uint16_t nr_rx_rings;
	uint16_t nr_mem_id;
	uint16_t pad1;
};

/* NETMAP_REQ_VALE_POLLING_ENABLE / _DISABLE (valed answers EOPNOTSUPP). */
struct nmreq_vale_polling {
	uint32_t nr_mode;       /* NETMAP_POLLING_MODE_* */
	uint32_t nr_first_cpu_id;
	uint32_t nr_num_polling_cpus;
	uint32_t pad1;
};
#define NETMAP_POLLING_MODE_SINGLE_CPU 1
#define NETMAP_POLLING_MODE_MULTI_CPU  2

/* NETMAP_REQ_POOLS_INFO_GET (and the body of the EXTMEM option). */
struct nmreq_pools_info {
	uint64_t nr_memsize;
	uint16_t nr_mem_id;     /* in/out */
	uint16_t pad1[3];
	uint64_t nr_if_pool_offset;
	uint32_t nr_if_pool_objtotal;
	uint32_t nr_if_pool_objsize;
	uint64_t nr_ring_pool_offset;
	uint32_t nr_ring_pool_objtotal;
	uint32_t nr_ring_pool_objsize;
	uint64_t nr_buf_pool_offset;
	uint32_t nr_buf_pool_objtotal;
	uint32_t nr_buf_pool_objsize;
};

/* NETMAP_REQ_SYNC_KLOOP_START (valed answers EOPNOTSUPP). */
struct nmreq_sync_kloop_start {
	uint32_t sleep_us;
	uint32_t pad1;
};

/* ---- CSB (shared sync words), NETMAP_REQ_OPT_CSB ------------------------------ */

/* Written by the application, read by the kernel side. One cache line. */
struct nm_csb_atok {
	uint32_t head;
	uint32_t cur;
	uint32_t appl_need_kick;
	uint32_t sync_flags;
	uint32_t pad[12];
};

/* Written by the kernel side, read by the application. One cache line. */
struct nm_csb_ktoa {
	uint32_t hwcur;
	uint32_t hwtail;
	uint32_t kern_need_kick;
	uint32_t pad[13];
};

/* Fences for the CSB protocol (the compiler's builtins, so C and C++ alike). */
static inline void
nm_stst_barrier(void)
{
	__atomic_thread_fence(__ATOMIC_RELEASE);
}

static inline void
nm_ldld_barrier(void)
{
	__atomic_thread_fence(__ATOMIC_ACQUIRE);
}

static inline void
nm_stld_barrier(void)
{
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
}

/* Publish a ring's cur, then its head; earlier slot writes are visible first. */
static inline void
nm_sync_kloop_appl_write(struct nm_csb_atok *atok, uint32_t cur, uint32_t head)
{
	nm_stst_barrier();
	atok->cur = cur;
	nm_stst_barrier();
	atok->head = head;
}

/* Read hwtail, then hwcur; later loads of slots see what came before them. */
static inline void
nm_sync_kloop_appl_read(struct nm_csb_ktoa *ktoa, uint32_t *hwtail, uint32_t *hwcur)
{
	*hwtail = ktoa->hwtail;
	nm_ldld_barrier();
	*hwcur = ktoa->hwcur;
	nm_ldld_barrier();
}

/* ---- options ------------------------------------------------------------------ */

/* NETMAP_REQ_OPT_SYNC_KLOOP_EVENTFDS: one pair per ring. */
struct nmreq_opt_sync_kloop_eventfds {
	struct nmreq_option nro_opt;
	struct {
		int32_t ioeventfd; /* application -> loop */
		int32_t irqfd;     /* loop -> application */
	} eventfds[];
};

/* NETMAP_REQ_OPT_SYNC_KLOOP_MODE */
struct nmreq_opt_sync_kloop_mode {
	struct nmreq_option nro_opt;
	uint32_t mode;          /* NM_OPT_SYNC_KLOOP_DIRECT_* */
};
#define NM_OPT_SYNC_KLOOP_DIRECT_TX (1 << 0)
#define NM_OPT_SYNC_KLOOP_DIRECT_RX (1 << 1)

/* NETMAP_REQ_OPT_EXTMEM: use memory the program allocated. */
struct nmreq_opt_extmem {
	struct nmreq_option nro_opt;
	uint64_t nro_usrptr;           /* in: the memory */
	struct nmreq_pools_info nro_info; /* in/out */
};

/* NETMAP_REQ_OPT_CSB: arrays of CSB entries, one per bound ring. */
struct nmreq_opt_csb {
	struct nmreq_option nro_opt;
	uint64_t csb_atok;      /* (struct nm_csb_atok *) */
	uint64_t csb_ktoa;      /* (struct nm_csb_ktoa *) */
};

/* NETMAP_REQ_OPT_OFFSETS: a buffer offset in the low bits of slot.ptr. */
struct nmreq_opt_offsets {
	struct nmreq_option nro_opt;
	uint64_t nro_max_offset;
	uint64_t nro_initial_offset;
	uint32_t nro_offset_bits;
	uint32_t nro_tx_align;
	uint64_t nro_min_gap;   /* 0 */
};

#endif /* _NET_NETMAP_H_ */
