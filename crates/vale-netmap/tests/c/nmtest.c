/* nmtest: a netmap client written the way netmap programs are (raw NIOCCTRL as
 * libnetmap sends it, the ring macros, poll), against our headers, for the shim's tests.
 *
 *   nmtest tx NAME COUNT [ioctl|pollsync|exit] [one=N] [txonly]
 *       sends COUNT 60-byte broadcast frames carrying a sequence number, syncing by
 *       NIOCTXSYNC (ioctl), by poll(events = 0) (pollsync), or (exit) by one last
 *       NIOCTXSYNC right before the process ends without closing anything: netmap
 *       forwards inside that sync, so every frame must still arrive.
 *   nmtest rx NAME COUNT MS [one=N] [rxonly] [montx|monrx]
 *       receives until COUNT frames arrived or MS ms passed without one; checks that
 *       the sequence numbers of frames of ours (type 0x88b5) increase; prints
 *       "received N bad_seq B".
 *   nmtest errors NAME      each error path, one line per check; exit status = failures
 *   nmtest rings NAME       per-descriptor netmap_if on a port of 2 rings (ONE_NIC, TX/RX only)
 *   nmtest poll2 NAME       two descriptors of one port and a pipe in one poll
 *   nmtest notxpoll NAME COUNT    frames left in the TX ring stay there with NO_TX_POLL
 *   nmtest scribble NAME COUNT MS  receives like rx while writing garbage over sem[]
 *       of every ring it holds
 *   nmtest extra NAME       extra buffers: the list, its reserve, sending from one
 *   nmtest exclusive NAME   NR_EXCLUSIVE against other descriptors
 *   nmtest share PORT       descriptors asking for an existing mapping's nr_mem_id (as
 *       libnetmap's `@N`, lb's pipes and pkt-gen's threads do) share it
 *   nmtest lowfds NAME      with fds 0, 1 and 2 closed (`2>&-`), opens and registers
 *       NAME: the device takes fd 0 as in netmap, no fd the library hides takes
 *       another below 512, and the port sends; reports on fd 100 (its stdout, moved)
 *   nmtest threads NAME     one descriptor shared by threads: one sleeps in poll while
 *       two others issue NIOCCTRL requests that valed answers (VALE_LIST, VALE_DELIF):
 *       the poll sees no hang-up, each request gets its own answer
 *   nmtest hangup NAME      registers, says "ready", then polls for input for up to 10 s
 *       while the test kills valed: prints the poll's result and revents
 *   nmtest pipe PORT        both ends of pipe PORT{7 / PORT}7 in one process: frames
 *       both ways in order, by buffer swap (zero copy), a full peer holding the sender
 *   nmtest fds NAME         mmap windows (length, offset, MAP_FIXED) of NAME, then
 *       closefrom() over a second port NAMEx and every descriptor the library hides:
 *       the number is an ordinary one again, NAME still asks and sends 10 frames;
 *       close_range() marking it close-on-exec keeps it, closing it forgets it
 *   nmtest forks NAME       forks 200 times while a thread dups and closes NAME's
 *       descriptor; each child closes it and exits: none may hang
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <net/netmap.h>
#include <net/netmap_user.h>

struct port {
	int fd;
	void *mem;
	struct netmap_if *nifp;
	struct nmreq_register reg;
};

static int failures;
/* Rings each way a REGISTER asks for (0: the daemon's default), as `@conf:rings=N` does. */
static uint16_t want_rings;
/* Extra buffers a REGISTER asks for (nr_extra_bufs). */
static uint32_t want_extra;

static void check(int ok, const char *what)
{
	printf("%s %s\n", ok ? "ok" : "FAIL", what);
	if (!ok)
		failures++;
}

static void hdr_init(struct nmreq_header *h, uint16_t type, const char *name, void *body)
{
	memset(h, 0, sizeof(*h));
	h->nr_version = NETMAP_API;
	h->nr_reqtype = type;
	snprintf(h->nr_name, sizeof(h->nr_name), "%s", name);
	h->nr_body = (uintptr_t)body;
}

/* REGISTER as libnetmap's nmport_register does; returns 0 or an errno. */
static int reg_port(struct port *p, const char *name, uint32_t mode, uint16_t ring, uint64_t flags)
{
	struct nmreq_header h;

	memset(p, 0, sizeof(*p));
	p->fd = open("/dev/netmap", O_RDWR);
	if (p->fd < 0)
		return errno;
	p->reg.nr_mode = mode;
	p->reg.nr_ringid = ring;
	p->reg.nr_flags = flags;
	p->reg.nr_tx_rings = p->reg.nr_rx_rings = want_rings;
	p->reg.nr_extra_bufs = want_extra;
	hdr_init(&h, NETMAP_REQ_REGISTER, name, &p->reg);
	if (ioctl(p->fd, NIOCCTRL, &h) < 0)
		return errno;
	p->mem = mmap(NULL, p->reg.nr_memsize, PROT_READ | PROT_WRITE, MAP_SHARED, p->fd, 0);
	if (p->mem == MAP_FAILED)
		return errno;
	p->nifp = NETMAP_IF(p->mem, p->reg.nr_offset);
	return 0;
}

static void open_or_die(struct port *p, const char *name, uint32_t mode, uint16_t ring, uint64_t flags)
{
	int e = reg_port(p, name, mode, ring, flags);
	if (e) {
		fprintf(stderr, "register %s: %s\n", name, strerror(e));
		exit(2);
	}
}

static void close_port(struct port *p)
{
	munmap(p->mem, p->reg.nr_memsize);
	close(p->fd);
}

static void opts(int argc, char **argv, int from, uint32_t *mode, uint16_t *ring, uint64_t *flags)
{
	for (int i = from; i < argc; i++) {
		if (strncmp(argv[i], "one=", 4) == 0) {
			*mode = NR_REG_ONE_NIC;
			*ring = (uint16_t)atoi(argv[i] + 4);
		} else if (strcmp(argv[i], "txonly") == 0) {
			*flags |= NR_TX_RINGS_ONLY;
		} else if (strcmp(argv[i], "rxonly") == 0) {
			*flags |= NR_RX_RINGS_ONLY;
		} else if (strcmp(argv[i], "montx") == 0) {
			*flags |= NR_MONITOR_TX;
		} else if (strcmp(argv[i], "monrx") == 0) {
			*flags |= NR_MONITOR_RX;
		}
	}
}

static int has(int argc, char **argv, int from, const char *word)
{
	for (int i = from; i < argc; i++)
		if (strcmp(argv[i], word) == 0)
			return 1;
	return 0;
}

static void put_frame(struct netmap_ring *r, struct netmap_slot *s, uint32_t seq)
{
	unsigned char *f = (unsigned char *)NETMAP_BUF(r, s->buf_idx);
	memset(f, 0xff, 6);
	memcpy(f + 6, "\x02\x00\x00\x00\x00\x01", 6);
	f[12] = 0x88;
	f[13] = 0xb5;
	memcpy(f + 14, &seq, 4);
	memset(f + 18, 0, 42);
	s->len = 60;
	s->flags = 0;
}

static double now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static double cpu_ms(void)
{
	struct rusage u;
	getrusage(RUSAGE_SELF, &u);
	return (u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1e3 +
	       (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e3;
}

static int cmd_tx(int argc, char **argv)
{
	struct port p;
	uint32_t mode = NR_REG_ALL_NIC, count = (uint32_t)atoi(argv[3]), sent = 0;
	uint16_t ring = 0;
	uint64_t flags = 0;
	int by_ioctl = has(argc, argv, 4, "ioctl"), at_exit = has(argc, argv, 4, "exit");

	opts(argc, argv, 4, &mode, &ring, &flags);
	open_or_die(&p, argv[2], mode, ring, flags);
	while (sent < count) {
		int moved = 0;
		for (int i = 0; i < p.reg.nr_tx_rings && sent < count; i++) {
			struct netmap_ring *r = NETMAP_TXRING(p.nifp, i);
			if ((char *)r == (char *)p.nifp)
				continue; /* not bound by this descriptor */
			while (!nm_ring_empty(r) && sent < count) {
				put_frame(r, &r->slot[r->head], sent++);
				r->head = r->cur = nm_ring_next(r, r->head);
				moved = 1;
			}
		}
		if (by_ioctl || at_exit) {
			if (ioctl(p.fd, NIOCTXSYNC, NULL) < 0) {
				perror("NIOCTXSYNC");
				return 2;
			}
		} else {
			struct pollfd pf = {.fd = p.fd, .events = moved ? 0 : POLLOUT};
			if (poll(&pf, 1, moved ? 0 : 1000) < 0) {
				perror("poll");
				return 2;
			}
		}
	}
	if (at_exit) {
		printf("sent %u\n", sent);
		fflush(stdout);
		_exit(0); /* no munmap, no close: the process just ends */
	}
	/* As pkt-gen does: wait until the rings are drained (a pipe's peer may be full;
	 * what is still in a TX ring when the descriptor closes is lost, as in netmap). */
	double until = now_ms() + 5000;
	for (int busy = 1; busy && now_ms() < until;) {
		busy = 0;
		for (int i = 0; i < p.reg.nr_tx_rings; i++) {
			struct netmap_ring *r = NETMAP_TXRING(p.nifp, i);
			if ((char *)r != (char *)p.nifp && nm_tx_pending(r))
				busy = 1;
		}
		struct pollfd pf = {.fd = p.fd, .events = POLLOUT};
		if (busy)
			poll(&pf, 1, 100);
	}
	printf("sent %u\n", sent);
	fflush(stdout);
	close_port(&p);
	return 0;
}

/* Receives on every bound RX ring; returns frames received. */
static uint32_t rx_loop(struct port *p, uint32_t count, int ms, uint32_t *bad, int scribble)
{
	uint32_t got = 0, next = 0;
	double idle_since = now_ms();

	while (got < count && now_ms() - idle_since < ms) {
		struct pollfd pf = {.fd = p->fd, .events = POLLIN};
		int rc = poll(&pf, 1, 50);
		if (rc < 0) {
			perror("poll");
			exit(2);
		}
		if (scribble) {
			for (int i = 0; i < p->reg.nr_tx_rings; i++)
				memset(NETMAP_TXRING(p->nifp, i)->sem, 0xa5 ^ (int)got, sizeof(((struct netmap_ring *)0)->sem));
			for (int i = 0; i < p->reg.nr_rx_rings; i++)
				memset(NETMAP_RXRING(p->nifp, i)->sem, 0x5a ^ (int)got, sizeof(((struct netmap_ring *)0)->sem));
		}
		for (int i = 0; i < p->reg.nr_rx_rings; i++) {
			struct netmap_ring *r = NETMAP_RXRING(p->nifp, i);
			if ((char *)r == (char *)p->nifp)
				continue;
			while (!nm_ring_empty(r)) {
				struct netmap_slot *s = &r->slot[r->cur];
				uint32_t seq;
				const unsigned char *f = (const unsigned char *)NETMAP_BUF(r, s->buf_idx);
				memcpy(&seq, f + 14, 4);
				/* Frames of ours (type 0x88b5) carry a sequence number. */
				if (f[12] == 0x88 && f[13] == 0xb5) {
					if (s->len != 60 || seq < next)
						(*bad)++;
					next = seq + 1;
				}
				got++;
				idle_since = now_ms();
				r->head = r->cur = nm_ring_next(r, r->cur);
			}
		}
	}
	return got;
}

static int cmd_rx(int argc, char **argv, int scribble)
{
	struct port p;
	uint32_t mode = NR_REG_ALL_NIC, bad = 0;
	uint16_t ring = 0;
	uint64_t flags = 0;

	opts(argc, argv, 5, &mode, &ring, &flags);
	open_or_die(&p, argv[2], mode, ring, flags);
	printf("ready\n");
	fflush(stdout);
	uint32_t got = rx_loop(&p, (uint32_t)atoi(argv[3]), atoi(argv[4]), &bad, scribble);
	printf("received %u bad_seq %u\n", got, bad);
	close_port(&p);
	return got == (uint32_t)atoi(argv[3]) && bad == 0 ? 0 : 1;
}

/* A request of `type` with no body where netmap expects one: EINVAL (netmap's
 * nmreq_copyin), never a fault. The name is one valed would refuse otherwise (no such
 * port or interface: ENXIO), so only the body check answers EINVAL. */
static int null_body(int fd, uint16_t type)
{
	struct nmreq_header h;
	hdr_init(&h, type, "nmnobody0", NULL);
	return ioctl(fd, NIOCCTRL, &h) < 0 && errno == EINVAL;
}

static int cmd_errors(const char *name)
{
	struct nmreq_header h;
	struct nmreq_register reg;
	struct port p;
	char buf[128];
	int fd = open("/dev/netmap", O_RDWR), rc;

	check(fd >= 0, "open /dev/netmap");

	memset(&reg, 0, sizeof(reg));
	reg.nr_mode = NR_REG_ALL_NIC;
	hdr_init(&h, NETMAP_REQ_REGISTER, name, &reg);
	h.nr_version = 13;
	rc = ioctl(fd, NIOCCTRL, &h);
	check(rc < 0 && errno == EINVAL, "version 13: EINVAL");
	h.nr_version = NETMAP_API;
	h.nr_reqtype = 99;
	rc = ioctl(fd, NIOCCTRL, &h);
	check(rc < 0 && errno == EINVAL, "unknown request type: EINVAL");

	rc = ioctl(fd, NIOCTXSYNC, NULL);
	check(rc < 0 && errno == ENXIO, "TXSYNC before REGISTER: ENXIO");
	check(mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 0) == MAP_FAILED && errno == EINVAL,
	      "mmap before REGISTER: EINVAL");
	struct pollfd pf = {.fd = fd, .events = POLLIN};
	check(poll(&pf, 1, 0) == 1 && (pf.revents & POLLERR), "poll before REGISTER: POLLERR");
	check(ioctl(fd, 0x1234, NULL) < 0 && errno == EOPNOTSUPP, "unknown ioctl: EOPNOTSUPP");

	struct {
		struct nmreq_option o;
		char body[64];
	} opt;
	memset(&opt, 0, sizeof(opt));
	opt.o.nro_reqtype = NETMAP_REQ_OPT_EXTMEM;
	hdr_init(&h, NETMAP_REQ_REGISTER, name, &reg);
	h.nr_options = (uintptr_t)&opt;
	rc = ioctl(fd, NIOCCTRL, &h);
	check(rc < 0 && errno == EOPNOTSUPP && opt.o.nro_status == EOPNOTSUPP,
	      "an option: EOPNOTSUPP, its nro_status too");

	reg.nr_mode = NR_REG_SW;
	hdr_init(&h, NETMAP_REQ_REGISTER, name, &reg);
	check(ioctl(fd, NIOCCTRL, &h) < 0 && errno == EINVAL, "host rings (NR_REG_SW): EINVAL");
	reg.nr_mode = NR_REG_NIC_SW;
	check(ioctl(fd, NIOCCTRL, &h) < 0 && errno == EINVAL, "NR_REG_NIC_SW: EINVAL");
	reg.nr_mode = NR_REG_ONE_NIC;
	reg.nr_ringid = 7;
	check(ioctl(fd, NIOCCTRL, &h) < 0 && errno == EINVAL, "ONE_NIC ring out of range: EINVAL");
	reg.nr_ringid = 0;
	reg.nr_mode = NR_REG_ALL_NIC;
	hdr_init(&h, NETMAP_REQ_REGISTER, "netmap:eth0", &reg);
	check(ioctl(fd, NIOCCTRL, &h) < 0 && errno == ENXIO, "netmap:eth0 (no NIC rings): ENXIO");
	hdr_init(&h, NETMAP_REQ_REGISTER, "vale0:bad name!", &reg);
	check(ioctl(fd, NIOCCTRL, &h) < 0 && errno == EINVAL, "a malformed name: EINVAL");

	struct nmreq_port_hdr ph = {.nr_hdr_len = 12};
	hdr_init(&h, NETMAP_REQ_PORT_HDR_SET, name, &ph);
	check(ioctl(fd, NIOCCTRL, &h) < 0 && errno == EINVAL, "PORT_HDR_SET 12: EINVAL");

	struct nmreq_port_info_get pi;
	memset(&pi, 0, sizeof(pi));
	hdr_init(&h, NETMAP_REQ_PORT_INFO_GET, "vale0:nosuchport", &pi);
	check(ioctl(fd, NIOCCTRL, &h) < 0 && errno == ENXIO, "PORT_INFO_GET of no port: ENXIO");
	/* A body exactly where the type has one, and none where it has none. */
	check(null_body(fd, NETMAP_REQ_REGISTER), "REGISTER with a NULL body: EINVAL");
	check(null_body(fd, NETMAP_REQ_PORT_INFO_GET), "PORT_INFO_GET with a NULL body: EINVAL");
	check(null_body(fd, NETMAP_REQ_PORT_HDR_GET), "PORT_HDR_GET with a NULL body: EINVAL");
	check(null_body(fd, NETMAP_REQ_PORT_HDR_SET), "PORT_HDR_SET with a NULL body: EINVAL");
	check(null_body(fd, NETMAP_REQ_POOLS_INFO_GET), "POOLS_INFO_GET with a NULL body: EINVAL");
	check(null_body(fd, NETMAP_REQ_VALE_LIST), "VALE_LIST with a NULL body: EINVAL");
	check(null_body(fd, NETMAP_REQ_VALE_NEWIF), "VALE_NEWIF with a NULL body: EINVAL");
	check(null_body(fd, NETMAP_REQ_VALE_ATTACH), "VALE_ATTACH with a NULL body: EINVAL");
	check(null_body(fd, NETMAP_REQ_VALE_DETACH), "VALE_DETACH with a NULL body: EINVAL");
	hdr_init(&h, NETMAP_REQ_VALE_DELIF, "nmnobody0", &ph);
	check(ioctl(fd, NIOCCTRL, &h) < 0 && errno == EINVAL, "VALE_DELIF with a body: EINVAL");
	hdr_init(&h, NETMAP_REQ_VALE_DELIF, "nmnobody0", NULL);
	check(ioctl(fd, NIOCCTRL, &h) < 0 && errno == ENXIO, "VALE_DELIF without one: valed's answer");

	memset(&reg, 0, sizeof(reg));
	reg.nr_mode = NR_REG_ALL_NIC;
	hdr_init(&h, NETMAP_REQ_REGISTER, name, &reg);
	check(ioctl(fd, NIOCCTRL, &h) == 0, "after all that, the descriptor still registers");
	close(fd);

	/* A registered descriptor. */
	check(reg_port(&p, name, NR_REG_ALL_NIC, 0, 0) == 0, "REGISTER");
	check(p.reg.nr_mem_id >= 2 && p.reg.nr_host_tx_rings == 0 && p.reg.nr_offset == 0,
	      "REGISTER answers a private mem_id, no host rings, offset 0");
	memset(&reg, 0, sizeof(reg));
	reg.nr_mode = NR_REG_ALL_NIC;
	hdr_init(&h, NETMAP_REQ_REGISTER, name, &reg);
	check(ioctl(p.fd, NIOCCTRL, &h) < 0 && errno == EBUSY, "second REGISTER: EBUSY");
	check(mmap(NULL, p.reg.nr_memsize + 4096, PROT_READ, MAP_SHARED, p.fd, 0) == MAP_FAILED &&
		  errno == EINVAL, "mmap past nr_memsize: EINVAL");
	hdr_init(&h, NETMAP_REQ_PORT_HDR_GET, name, NULL);
	check(ioctl(p.fd, NIOCCTRL, &h) < 0 && errno == EINVAL, "registered: PORT_HDR_GET, NULL body: EINVAL");
	hdr_init(&h, NETMAP_REQ_PORT_INFO_GET, name, NULL);
	check(ioctl(p.fd, NIOCCTRL, &h) < 0 && errno == EINVAL, "registered: PORT_INFO_GET, NULL body: EINVAL");
	hdr_init(&h, NETMAP_REQ_POOLS_INFO_GET, name, NULL);
	check(ioctl(p.fd, NIOCCTRL, &h) < 0 && errno == EINVAL, "registered: POOLS_INFO_GET, NULL body: EINVAL");
	ph.nr_hdr_len = 99;
	hdr_init(&h, NETMAP_REQ_PORT_HDR_GET, name, &ph);
	check(ioctl(p.fd, NIOCCTRL, &h) == 0 && ph.nr_hdr_len == 0, "PORT_HDR_GET: 0");
	hdr_init(&h, NETMAP_REQ_PORT_INFO_GET, name, &pi);
	check(ioctl(p.fd, NIOCCTRL, &h) == 0 && pi.nr_memsize == p.reg.nr_memsize &&
		  pi.nr_tx_rings == p.reg.nr_tx_rings && pi.nr_rx_slots == p.reg.nr_rx_slots,
	      "PORT_INFO_GET agrees with REGISTER");
	int other = open("/dev/netmap", O_RDWR);
	memset(&pi, 0, sizeof(pi));
	hdr_init(&h, NETMAP_REQ_PORT_INFO_GET, name, &pi);
	check(ioctl(other, NIOCCTRL, &h) == 0 && pi.nr_memsize == p.reg.nr_memsize &&
		  pi.nr_tx_slots == p.reg.nr_tx_slots,
	      "PORT_INFO_GET from another descriptor: the memsize a REGISTER gets");
	close(other);
	struct nmreq_pools_info pools;
	memset(&pools, 0, sizeof(pools));
	hdr_init(&h, NETMAP_REQ_POOLS_INFO_GET, name, &pools);
	check(ioctl(p.fd, NIOCCTRL, &h) == 0 && pools.nr_memsize == p.reg.nr_memsize &&
		  pools.nr_buf_pool_objsize == NETMAP_TXRING(p.nifp, 0)->nr_buf_size,
	      "POOLS_INFO_GET: memsize and buffer size");
	struct nmreq_vale_list vl;
	memset(&vl, 0, sizeof(vl));
	hdr_init(&h, NETMAP_REQ_VALE_LIST, "", &vl);
	int found = 0;
	while (ioctl(p.fd, NIOCCTRL, &h) == 0) {
		if (strcmp(h.nr_name, name) == 0)
			found = 1;
		vl.nr_port_idx++;
		h.nr_name[0] = '\0';
	}
	check(found && errno == ENOENT, "VALE_LIST walks to this port, then ENOENT");

	/* The kernel's ioctls on any file work on the device too. */
	int on = 1;
	check(ioctl(p.fd, FIONBIO, &on) == 0, "FIONBIO: done");
	memset(&vl, 0, sizeof(vl));
	hdr_init(&h, NETMAP_REQ_VALE_LIST, name, &vl);
	check(ioctl(p.fd, NIOCCTRL, &h) == 0, "after FIONBIO, requests to valed still get answers");
	check(fcntl(p.fd, F_SETFL, O_NONBLOCK) == 0, "F_SETFL O_NONBLOCK: done");
	int answered = 1;
	for (int i = 0; i < 50; i++) /* an answer not there yet would read EAGAIN */
		answered &= ioctl(p.fd, NIOCCTRL, &h) == 0;
	check(answered, "after O_NONBLOCK, requests to valed still get answers");
	check(ioctl(p.fd, FIOCLEX) == 0 && (fcntl(p.fd, F_GETFD) & FD_CLOEXEC), "FIOCLEX sets close-on-exec");
	check(ioctl(p.fd, FIONCLEX) == 0 && !(fcntl(p.fd, F_GETFD) & FD_CLOEXEC),
	      "FIONCLEX clears it");

	/* epoll cannot watch ring state: refused as for a regular file, other fds served. */
	int ep = epoll_create1(EPOLL_CLOEXEC), pp[2];
	struct epoll_event ev = {.events = EPOLLIN};
	check(ep >= 0 && epoll_ctl(ep, EPOLL_CTL_ADD, p.fd, &ev) < 0 && errno == EPERM,
	      "epoll_ctl ADD of the device: EPERM");
	check(epoll_ctl(ep, EPOLL_CTL_MOD, p.fd, &ev) < 0 && errno == EPERM,
	      "epoll_ctl MOD of the device: EPERM");
	check(pipe(pp) == 0 && epoll_ctl(ep, EPOLL_CTL_ADD, pp[0], &ev) == 0 &&
		  write(pp[1], "x", 1) == 1 && epoll_wait(ep, &ev, 1, 1000) == 1,
	      "epoll on another descriptor works");
	close(pp[0]);
	close(pp[1]);
	close(ep);

	/* netmap's prologue: a head past tail reinitialises the ring, nothing is sent. */
	struct netmap_ring *r = NETMAP_TXRING(p.nifp, 0);
	uint32_t head = r->head, tail = r->tail;
	r->head = r->cur = r->num_slots + 5;
	r->tail = 3;
	ioctl(p.fd, NIOCTXSYNC, NULL);
	check(r->head == head && r->cur == head && r->tail == tail, "a bad head reinitialises the ring");
	r->cur = nm_ring_next(r, tail); /* cur past tail */
	ioctl(p.fd, NIOCTXSYNC, NULL);
	check(r->cur == head, "a bad cur reinitialises the ring");
	pf.fd = p.fd;
	pf.events = POLLOUT;
	r->head = r->num_slots + 1;
	check(poll(&pf, 1, 0) >= 1 && (pf.revents & POLLERR) && r->head == head,
	      "poll on a bad ring: POLLERR, ring reinitialised");

	struct netmap_ring *rx = NETMAP_RXRING(p.nifp, 0);
	rx->ts.tv_sec = 0;
	ioctl(p.fd, NIOCRXSYNC, NULL);
	check(rx->ts.tv_sec > 1000000000, "RXSYNC stamps ring->ts");
	close_port(&p);

	snprintf(buf, sizeof(buf), "%s", name);
	check(reg_port(&p, buf, NR_REG_ALL_NIC, 0, 0) == 0, "the port opens again after close");
	close_port(&p);
	printf("failures %d\n", failures);
	return failures;
}

/* The netmap_if of a descriptor lists exactly the rings it bound. */
static int bound_only(struct port *p, int tx_ring, int rx_ring)
{
	int ok = 1;
	for (int i = 0; i < (int)p->nifp->ni_tx_rings; i++) {
		int bound = p->nifp->ring_ofs[i] != 0;
		ok &= bound == (tx_ring == -2 || tx_ring == i);
	}
	for (int i = 0; i < (int)p->nifp->ni_rx_rings; i++) {
		int bound = p->nifp->ring_ofs[i + p->nifp->ni_tx_rings + p->nifp->ni_host_tx_rings] != 0;
		ok &= bound == (rx_ring == -2 || rx_ring == i);
	}
	return ok;
}

static int cmd_rings(const char *name)
{
	struct port a, b, t, r;
	want_rings = 2;
	open_or_die(&a, name, NR_REG_ONE_NIC, 0, 0);
	open_or_die(&b, name, NR_REG_ONE_NIC, 1, 0);
	check(a.reg.nr_tx_rings == 2 && a.reg.nr_rx_rings == 2, "the port has 2 rings each way");
	check(a.reg.nr_mem_id != b.reg.nr_mem_id, "each descriptor its own mem_id");
	check(bound_only(&a, 0, 0), "ONE_NIC 0 lists only ring 0");
	check(bound_only(&b, 1, 1), "ONE_NIC 1 lists only ring 1");
	check(a.nifp->ni_host_tx_rings == 1 && a.nifp->ni_host_rx_rings == 1,
	      "host ring placeholders counted");
	check(strcmp(a.nifp->ni_name, name) == 0, "ni_name is the port");
	/* Rings are the port's real memory: what a writes in ring 0's buffer b sees. */
	struct netmap_ring *ra = NETMAP_TXRING(a.nifp, 0);
	check(ra->num_slots > 0 && ra->nr_buf_size >= 2048, "ring 0 mapped");
	open_or_die(&t, name, NR_REG_ALL_NIC, 0, NR_TX_RINGS_ONLY);
	open_or_die(&r, name, NR_REG_ALL_NIC, 0, NR_RX_RINGS_ONLY);
	check(bound_only(&t, -2, -1), "TX_RINGS_ONLY lists no RX ring");
	check(bound_only(&r, -1, -2), "RX_RINGS_ONLY lists no TX ring");
	/* One frame on each TX ring of a and b. */
	struct netmap_ring *rb = NETMAP_TXRING(b.nifp, 1);
	put_frame(ra, &ra->slot[ra->head], 1000);
	ra->head = ra->cur = nm_ring_next(ra, ra->head);
	put_frame(rb, &rb->slot[rb->head], 1001);
	rb->head = rb->cur = nm_ring_next(rb, rb->head);
	check(ioctl(a.fd, NIOCTXSYNC, NULL) == 0 && ioctl(b.fd, NIOCTXSYNC, NULL) == 0,
	      "TXSYNC on ring 0 and ring 1");
	printf("failures %d\n", failures);
	fflush(stdout);
	/* Stay until told (stdin closes) so the test can look at valed's view. */
	char c;
	while (read(0, &c, 1) > 0)
		;
	close_port(&a);
	close_port(&b);
	close_port(&t);
	close_port(&r);
	return failures;
}

static int cmd_poll2(const char *name)
{
	struct port a, b;
	int pp[2];
	open_or_die(&a, name, NR_REG_ALL_NIC, 0, 0);
	open_or_die(&b, name, NR_REG_ALL_NIC, 0, 0);
	check(pipe(pp) == 0, "pipe");
	check(write(pp[1], "x", 1) == 1, "pipe written");
	struct pollfd pf[3] = {
		{.fd = a.fd, .events = POLLIN},
		{.fd = pp[0], .events = POLLIN},
		{.fd = b.fd, .events = POLLIN | POLLOUT},
	};
	int rc = poll(pf, 3, 1000);
	check(rc == 2 && pf[0].revents == 0 && pf[1].revents == POLLIN && pf[2].revents == POLLOUT,
	      "pipe readable, b writable, a nothing");
	char c;
	check(read(pp[0], &c, 1) == 1, "pipe drained");
	/* Nothing to read anywhere: a poll sleeps, no busy loop. */
	pf[2].events = POLLIN;
	double c0 = cpu_ms(), t0 = now_ms();
	rc = poll(pf, 3, 300);
	double waited = now_ms() - t0, burned = cpu_ms() - c0;
	check(rc == 0 && waited >= 290, "nothing ready: poll times out");
	printf("slept %.0f ms using %.1f ms of CPU\n", waited, burned);
	check(burned < waited / 4, "poll sleeps instead of spinning");
	/* select over the same: b writable at once, nothing readable within 100 ms. */
	fd_set rs, ws;
	FD_ZERO(&rs);
	FD_ZERO(&ws);
	FD_SET(a.fd, &rs);
	FD_SET(b.fd, &ws);
	FD_SET(pp[0], &rs);
	struct timeval tv = {.tv_sec = 0, .tv_usec = 100000};
	int maxfd = (a.fd > b.fd ? a.fd : b.fd) > pp[0] ? (a.fd > b.fd ? a.fd : b.fd) : pp[0];
	rc = select(maxfd + 1, &rs, &ws, NULL, &tv);
	check(rc == 1 && FD_ISSET(b.fd, &ws) && !FD_ISSET(a.fd, &rs) && !FD_ISSET(pp[0], &rs),
	      "select: b writable, a and the pipe not readable");
	printf("waiting\n");
	fflush(stdout);
	/* The test now sends one frame to the port: both descriptors see it. */
	int seen_a = 0, seen_b = 0;
	double until = now_ms() + 5000;
	while ((!seen_a || !seen_b) && now_ms() < until) {
		pf[0].revents = pf[2].revents = 0;
		rc = poll(pf, 3, 1000);
		seen_a |= (pf[0].revents & POLLIN) != 0;
		seen_b |= (pf[2].revents & POLLIN) != 0;
	}
	check(seen_a && seen_b, "a frame wakes the poll on both descriptors");
	/* Nobody consumed the frame (both descriptors bind the same ring): select says
	 * readable, and after a consumes it neither is. */
	FD_ZERO(&rs);
	FD_SET(b.fd, &rs);
	tv.tv_sec = 1;
	tv.tv_usec = 0;
	rc = select(b.fd + 1, &rs, NULL, NULL, &tv);
	check(rc == 1 && FD_ISSET(b.fd, &rs), "select: b readable");
	struct netmap_ring *arx = NETMAP_RXRING(a.nifp, 0);
	arx->head = arx->cur = arx->tail;
	ioctl(a.fd, NIOCRXSYNC, NULL);
	pf[0].revents = pf[2].revents = 0;
	rc = poll(pf, 3, 0);
	check(rc == 0, "consumed through a: neither descriptor readable");
	printf("failures %d\n", failures);
	close_port(&a);
	close_port(&b);
	return failures;
}

static int cmd_notxpoll(const char *name, uint32_t count)
{
	struct port p;
	open_or_die(&p, name, NR_REG_ALL_NIC, 0, NR_NO_TX_POLL);
	struct netmap_ring *r = NETMAP_TXRING(p.nifp, 0);
	for (uint32_t i = 0; i < count; i++) {
		put_frame(r, &r->slot[r->head], i);
		r->head = r->cur = nm_ring_next(r, r->head);
	}
	struct pollfd pf = {.fd = p.fd, .events = POLLIN};
	poll(&pf, 1, 200);
	printf("polled without txsync\n");
	fflush(stdout);
	char c;
	if (read(0, &c, 1) != 1) /* the test checks nothing arrived, then says go */
		return 2;
	pf.events = POLLOUT;
	poll(&pf, 1, 200);
	printf("polled for output\n");
	fflush(stdout);
	while (read(0, &c, 1) > 0)
		;
	close_port(&p);
	return 0;
}

/* Walks a descriptor's extra-buffer list; returns its length, or -1 if it is broken
 * (an index outside the pool, or a loop). */
static int list_len(struct port *p, uint32_t nbufs)
{
	struct netmap_ring *r = NETMAP_TXRING(p->nifp, 0);
	int n = 0;
	for (uint32_t i = p->nifp->ni_bufs_head; i != 0; i = *(uint32_t *)NETMAP_BUF(r, i)) {
		if (i < 2 || i >= nbufs || n > (int)nbufs)
			return -1;
		n++;
	}
	return n;
}

static uint32_t pool_bufs(struct port *p, const char *name)
{
	struct nmreq_header h;
	struct nmreq_pools_info pools;
	memset(&pools, 0, sizeof(pools));
	hdr_init(&h, NETMAP_REQ_POOLS_INFO_GET, name, &pools);
	if (ioctl(p->fd, NIOCCTRL, &h) < 0)
		return 0;
	return pools.nr_buf_pool_objtotal;
}

static int cmd_extra(const char *name)
{
	struct port a, b, c, d;
	want_extra = 64;
	open_or_die(&a, name, NR_REG_ALL_NIC, 0, 0);
	uint32_t nbufs = pool_bufs(&a, name);
	check(a.reg.nr_extra_bufs == 64, "the creating open gets the 64 extra buffers it asked for");
	check(list_len(&a, nbufs) == 64, "ni_bufs_head lists 64 buffers inside the pool");
	want_extra = 100;
	open_or_die(&b, name, NR_REG_ALL_NIC, 0, 0);
	check(b.reg.nr_extra_bufs == 0 && b.nifp->ni_bufs_head == 0,
	      "a later open gets what is left of the reserve: none");
	/* Send from an extra buffer: swap it into a TX slot (NS_BUF_CHANGED). */
	struct netmap_ring *r = NETMAP_TXRING(a.nifp, 0);
	struct netmap_slot *s = &r->slot[r->head];
	uint32_t mine = a.nifp->ni_bufs_head;
	a.nifp->ni_bufs_head = *(uint32_t *)NETMAP_BUF(r, mine);
	*(uint32_t *)NETMAP_BUF(r, s->buf_idx) = a.nifp->ni_bufs_head;
	a.nifp->ni_bufs_head = s->buf_idx; /* the slot's old buffer joins the list */
	s->buf_idx = mine;
	put_frame(r, s, 4242);
	s->flags = NS_BUF_CHANGED;
	r->head = r->cur = nm_ring_next(r, r->head);
	check(ioctl(a.fd, NIOCTXSYNC, NULL) == 0, "TXSYNC of a frame in an extra buffer");
	check(list_len(&a, nbufs) == 64, "the list still holds 64 after the swap");
	close_port(&a);
	want_extra = 10;
	open_or_die(&c, name, NR_REG_ALL_NIC, 0, 0);
	check(c.reg.nr_extra_bufs == 10 && list_len(&c, nbufs) == 10,
	      "closing gives them back: the next open gets 10");
	want_extra = 0;
	open_or_die(&d, name, NR_REG_ALL_NIC, 0, 0);
	check(d.reg.nr_extra_bufs == 0 && d.nifp->ni_bufs_head == 0, "asking for none gets none");
	close_port(&b);
	close_port(&c);
	close_port(&d);
	printf("failures %d\n", failures);
	return failures;
}

static int cmd_exclusive(const char *name)
{
	struct port x, y, z;
	check(reg_port(&x, name, NR_REG_ALL_NIC, 0, NR_EXCLUSIVE) == 0, "an exclusive REGISTER");
	check(reg_port(&y, name, NR_REG_ALL_NIC, 0, 0) == EBUSY, "another descriptor: EBUSY");
	close(y.fd);
	close_port(&x);
	check(reg_port(&y, name, NR_REG_ALL_NIC, 0, 0) == 0, "after close it opens");
	check(reg_port(&z, name, NR_REG_ALL_NIC, 0, NR_EXCLUSIVE) == EBUSY,
	      "exclusive while another holds it: EBUSY");
	close(z.fd);
	close_port(&y);
	printf("failures %d\n", failures);
	return failures;
}

/* REGISTER asking for mapping `mem_id`, without mmap: the program uses the mapping it
 * has (libnetmap's mmap cache). */
static int reg_in(struct port *p, const char *name, uint32_t mode, uint16_t ring, uint16_t mem_id)
{
	struct nmreq_header h;
	memset(p, 0, sizeof(*p));
	p->fd = open("/dev/netmap", O_RDWR);
	p->reg.nr_mode = mode;
	p->reg.nr_ringid = ring;
	p->reg.nr_mem_id = mem_id;
	p->reg.nr_tx_rings = p->reg.nr_rx_rings = want_rings;
	hdr_init(&h, NETMAP_REQ_REGISTER, name, &p->reg);
	return ioctl(p->fd, NIOCCTRL, &h) < 0 ? errno : 0;
}

static int cmd_share(const char *port)
{
	struct port a, b, pm, ps, other;
	char mname[64], sname[64];
	want_rings = 2;
	open_or_die(&a, port, NR_REG_ONE_NIC, 0, 0);
	check(reg_in(&b, port, NR_REG_ONE_NIC, 1, a.reg.nr_mem_id) == 0, "a second descriptor asks for the first's mapping");
	check(b.reg.nr_mem_id == a.reg.nr_mem_id && b.reg.nr_offset != a.reg.nr_offset &&
		  b.reg.nr_memsize == a.reg.nr_memsize,
	      "it gets the same mem_id and size, its own netmap_if");
	struct netmap_if *bif = NETMAP_IF(a.mem, b.reg.nr_offset);
	check(bif->ring_ofs[0] == 0 && bif->ring_ofs[1] != 0, "its netmap_if, in the first's mapping, lists only ring 1");
	check(NETMAP_TXRING(bif, 1)->num_slots == NETMAP_TXRING(a.nifp, 0)->num_slots,
	      "ring 1 is reachable through the shared mapping");
	/* A pipe of the port in the port's mapping, as lb opens it: zero copy possible. */
	snprintf(mname, sizeof(mname), "%s{0", port);
	snprintf(sname, sizeof(sname), "%s}0", port);
	want_rings = 0;
	check(reg_in(&pm, mname, NR_REG_ALL_NIC, 0, a.reg.nr_mem_id) == 0 &&
		  pm.reg.nr_mem_id == a.reg.nr_mem_id,
	      "a pipe of the port shares the port's mapping");
	open_or_die(&ps, sname, NR_REG_ALL_NIC, 0, 0);
	struct netmap_if *pif = NETMAP_IF(a.mem, pm.reg.nr_offset);
	check(strcmp(pif->ni_name, mname) == 0, "the pipe's netmap_if is in it");
	/* Move a buffer of the port's RX ring into the pipe (lb's swap) and send it. */
	struct netmap_ring *prx = NETMAP_RXRING(a.nifp, 0), *ptx = NETMAP_TXRING(pif, 0);
	struct netmap_slot *from = &prx->slot[0], *to = &ptx->slot[ptx->head];
	uint32_t idx = from->buf_idx;
	from->buf_idx = to->buf_idx;
	from->flags = NS_BUF_CHANGED;
	to->buf_idx = idx;
	put_frame(ptx, to, 31337);
	to->flags = NS_BUF_CHANGED;
	ptx->head = ptx->cur = nm_ring_next(ptx, ptx->head);
	ioctl(pm.fd, NIOCTXSYNC, NULL);
	ioctl(ps.fd, NIOCRXSYNC, NULL);
	struct netmap_ring *srx = NETMAP_RXRING(ps.nifp, 0);
	uint32_t seq = 0, got_idx = 0;
	if (!nm_ring_empty(srx)) {
		got_idx = srx->slot[srx->cur].buf_idx;
		memcpy(&seq, NETMAP_BUF(srx, got_idx) + 14, 4);
	}
	check(seq == 31337 && got_idx == idx, "a port buffer crosses the pipe by index");
	check(reg_in(&other, "vale9:elsewhere", NR_REG_ALL_NIC, 0, a.reg.nr_mem_id) == 0 &&
		  other.reg.nr_mem_id != a.reg.nr_mem_id,
	      "another port's memory is never shared: a mapping of its own");
	close(other.fd);
	close(pm.fd);
	close_port(&ps);
	close(b.fd);
	close_port(&a);
	printf("failures %d\n", failures);
	return failures;
}

static int cmd_pipe(const char *port)
{
	struct port m, s;
	char mname[64], sname[64];
	snprintf(mname, sizeof(mname), "%s{7", port);
	snprintf(sname, sizeof(sname), "%s}7", port);
	open_or_die(&m, mname, NR_REG_ALL_NIC, 0, 0);
	open_or_die(&s, sname, NR_REG_ALL_NIC, 0, 0);
	check(m.reg.nr_tx_rings == 1 && m.reg.nr_rx_rings == 1 && m.nifp->ni_tx_rings == 1,
	      "a pipe end has one ring each way");
	check(strcmp(m.nifp->ni_name, mname) == 0, "ni_name is the pipe's name");
	struct port again;
	check(reg_port(&again, sname, NR_REG_ALL_NIC, 0, 0) == EBUSY, "an end opened twice: EBUSY");
	close(again.fd);
	struct netmap_ring *tx = NETMAP_TXRING(m.nifp, 0), *rx = NETMAP_RXRING(s.nifp, 0);
	/* The master's TX buffers, to see them arrive by swap. */
	uint32_t n = tx->num_slots, *mine = calloc(n, sizeof(uint32_t));
	for (uint32_t i = 0; i < n; i++)
		mine[i] = tx->slot[i].buf_idx;
	uint32_t sent = 0, got = 0, bad = 0, swapped = 0;
	for (int round = 0; round < 20; round++) {
		while (!nm_ring_empty(tx)) { /* fill everything there is room for */
			put_frame(tx, &tx->slot[tx->head], sent++);
			tx->head = tx->cur = nm_ring_next(tx, tx->head);
		}
		ioctl(m.fd, NIOCTXSYNC, NULL);
		ioctl(s.fd, NIOCRXSYNC, NULL);
		while (!nm_ring_empty(rx)) {
			struct netmap_slot *sl = &rx->slot[rx->cur];
			uint32_t seq;
			memcpy(&seq, NETMAP_BUF(rx, sl->buf_idx) + 14, 4);
			if (seq != got || sl->len != 60)
				bad++;
			if (round == 0)
				for (uint32_t i = 0; i < n; i++)
					swapped += mine[i] == sl->buf_idx;
			got++;
			rx->head = rx->cur = nm_ring_next(rx, rx->cur);
		}
	}
	ioctl(m.fd, NIOCTXSYNC, NULL); /* the last frames the full peer held back */
	ioctl(s.fd, NIOCRXSYNC, NULL);
	while (!nm_ring_empty(rx)) {
		uint32_t seq;
		memcpy(&seq, NETMAP_BUF(rx, rx->slot[rx->cur].buf_idx) + 14, 4);
		bad += seq != got++;
		rx->head = rx->cur = nm_ring_next(rx, rx->cur);
	}
	ioctl(s.fd, NIOCRXSYNC, NULL);
	ioctl(m.fd, NIOCTXSYNC, NULL);
	printf("pipe: sent %u received %u out of order %u swapped %u\n", sent, got, bad, swapped);
	check(got == sent && bad == 0, "every frame across the pipe, in order");
	check(swapped > 0, "frames arrive in the sender's own buffers (zero copy)");
	/* The other way. */
	struct netmap_ring *stx = NETMAP_TXRING(s.nifp, 0), *mrx = NETMAP_RXRING(m.nifp, 0);
	put_frame(stx, &stx->slot[stx->head], 77);
	stx->head = stx->cur = nm_ring_next(stx, stx->head);
	ioctl(s.fd, NIOCTXSYNC, NULL);
	ioctl(m.fd, NIOCRXSYNC, NULL);
	uint32_t seq = 0;
	if (!nm_ring_empty(mrx))
		memcpy(&seq, NETMAP_BUF(mrx, mrx->slot[mrx->cur].buf_idx) + 14, 4);
	check(seq == 77, "slave to master");
	close_port(&m);
	close_port(&s);
	printf("failures %d\n", failures);
	return failures;
}

static int cmd_hangup(const char *name)
{
	struct port p;
	open_or_die(&p, name, NR_REG_ALL_NIC, 0, 0);
	printf("ready\n");
	fflush(stdout);
	struct pollfd pf = {.fd = p.fd, .events = POLLIN};
	double t0 = now_ms();
	int rc = poll(&pf, 1, 10000);
	printf("poll %d revents%s%s%s after %.0f ms\n", rc, pf.revents & POLLIN ? " IN" : "",
	       pf.revents & POLLERR ? " ERR" : "", pf.revents & POLLHUP ? " HUP" : "", now_ms() - t0);
	return 0;
}

struct shared {
	int fd;
	const char *name;
	volatile int stop;
	int delif_errno; /* what DELIF of no such interface answers, alone */
	unsigned lists, list_bad, delifs, delif_bad, polls, hangups;
};

/* VALE_LIST of the port by name: its place, every time. */
static void *lister(void *arg)
{
	struct shared *s = arg;
	while (!s->stop) {
		struct nmreq_header h;
		struct nmreq_vale_list vl;
		memset(&vl, 0, sizeof(vl));
		hdr_init(&h, NETMAP_REQ_VALE_LIST, s->name, &vl);
		s->list_bad += ioctl(s->fd, NIOCCTRL, &h) != 0;
		s->lists++;
	}
	return NULL;
}

/* VALE_DELIF of no such interface: the same refusal every time. */
static void *deleter(void *arg)
{
	struct shared *s = arg;
	while (!s->stop) {
		struct nmreq_header h;
		hdr_init(&h, NETMAP_REQ_VALE_DELIF, "nmnope0", NULL);
		s->delif_bad += !(ioctl(s->fd, NIOCCTRL, &h) < 0 && errno == s->delif_errno);
		s->delifs++;
	}
	return NULL;
}

static int cmd_threads(const char *name)
{
	struct port p;
	struct shared s;
	struct nmreq_header h;
	pthread_t a, b;

	open_or_die(&p, name, NR_REG_ALL_NIC, 0, 0);
	memset(&s, 0, sizeof(s));
	s.fd = p.fd;
	s.name = name;
	hdr_init(&h, NETMAP_REQ_VALE_DELIF, "nmnope0", NULL);
	check(ioctl(p.fd, NIOCCTRL, &h) < 0, "DELIF of no such interface fails");
	s.delif_errno = errno;
	check(pthread_create(&a, NULL, lister, &s) == 0 && pthread_create(&b, NULL, deleter, &s) == 0,
	      "two threads issue requests on the descriptor");
	/* Nothing arrives: every poll times out, none says the device hung up. */
	double until = now_ms() + 1500;
	while (now_ms() < until) {
		struct pollfd pf = {.fd = p.fd, .events = POLLIN};
		int rc = poll(&pf, 1, 100);
		s.polls++;
		s.hangups += rc != 0 || pf.revents != 0;
	}
	s.stop = 1;
	pthread_join(a, NULL);
	pthread_join(b, NULL);
	printf("polls %u (%u woke), lists %u (%u failed), delifs %u (%u other answers)\n", s.polls,
	       s.hangups, s.lists, s.list_bad, s.delifs, s.delif_bad);
	check(s.hangups == 0 && s.polls >= 10, "poll slept through the requests' answers");
	check(s.lists > 10 && s.list_bad == 0, "every VALE_LIST got its own answer");
	check(s.delifs > 10 && s.delif_bad == 0, "every VALE_DELIF got its own answer");
	close_port(&p);
	printf("failures %d\n", failures);
	return failures;
}

/* Which descriptors below 512 are open (the directory's own excluded). */
static void low_fds(char open_[512])
{
	DIR *d = opendir("/proc/self/fd");
	memset(open_, 0, 512);
	if (!d)
		return;
	for (struct dirent *e; (e = readdir(d));) {
		int fd = atoi(e->d_name);
		if (e->d_name[0] != '.' && fd != dirfd(d) && fd < 512)
			open_[fd] = 1;
	}
	closedir(d);
}

static int cmd_lowfds(const char *name)
{
	struct port p;
	char before[512], after[512], list[256] = "";
	int out = dup2(1, 100);
	if (out < 0)
		return 2;
	FILE *o = fdopen(out, "w");
	setvbuf(o, NULL, _IOLBF, 0);
	close(0);
	close(1);
	close(2);
	low_fds(before);
	int e = reg_port(&p, name, NR_REG_ALL_NIC, 0, 0);
	fprintf(o, "%s register: %s\n", e ? "FAIL" : "ok", strerror(e));
	if (e)
		return 1;
	fprintf(o, "%s the device is fd %d, the lowest free, as in netmap\n", p.fd == 0 ? "ok" : "FAIL", p.fd);
	failures += p.fd != 0;
	low_fds(after);
	int n = 0;
	for (int fd = 0; fd < 512; fd++) {
		if (after[fd] && !before[fd] && fd != p.fd) {
			size_t at = strlen(list);
			snprintf(list + at, sizeof(list) - at, " %d", fd);
			n++;
		}
	}
	fprintf(o, "%s no new fd below 512 but the device's (found:%s)\n", n == 0 ? "ok" : "FAIL", list);
	failures += n != 0;
	errno = 0;
	int f1 = fcntl(1, F_GETFD), f2 = fcntl(2, F_GETFD);
	fprintf(o, "%s fds 1 and 2 stay closed\n", f1 < 0 && f2 < 0 && errno == EBADF ? "ok" : "FAIL");
	failures += !(f1 < 0 && f2 < 0 && errno == EBADF);
	/* Output to the closed stderr goes nowhere, and the ring still works. */
	fprintf(stderr, "this must not land in shared memory\n");
	fflush(stderr);
	struct netmap_ring *r = NETMAP_TXRING(p.nifp, 0);
	for (uint32_t i = 0; i < 10; i++) {
		put_frame(r, &r->slot[r->head], i);
		r->head = r->cur = nm_ring_next(r, r->head);
	}
	int ok = ioctl(p.fd, NIOCTXSYNC, NULL) == 0 && strcmp(p.nifp->ni_name, name) == 0;
	fprintf(o, "%s sent 10, netmap_if intact\n", ok ? "ok" : "FAIL");
	failures += !ok;
	fprintf(o, "failures %d\n", failures);
	close_port(&p);
	return failures;
}

/* The line of /proc/self/maps for the mapping that holds `addr`, or "". */
static void maps_line(void *addr, char *out, size_t n)
{
	FILE *f = fopen("/proc/self/maps", "r");
	char line[512];
	out[0] = 0;
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		unsigned long lo, hi;
		if (sscanf(line, "%lx-%lx", &lo, &hi) == 2 && lo <= (unsigned long)addr && (unsigned long)addr < hi) {
			snprintf(out, n, "%s", line);
			break;
		}
	}
	fclose(f);
}

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif
#ifndef CLOSE_RANGE_UNSHARE
#define CLOSE_RANGE_UNSHARE (1U << 1)
#endif

/* PORT_INFO_GET of `name` on p's descriptor answers (valed's connection alive) and a
 * TXSYNC succeeds (its rings and kick alive). */
static int still_asks(struct port *p, const char *name)
{
	struct nmreq_header h;
	struct nmreq_port_info_get info;
	memset(&info, 0, sizeof(info));
	hdr_init(&h, NETMAP_REQ_PORT_INFO_GET, name, &info);
	return ioctl(p->fd, NIOCCTRL, &h) == 0 && info.nr_memsize == p->reg.nr_memsize &&
	       ioctl(p->fd, NIOCTXSYNC, NULL) == 0;
}

static void *unsharer(void *arg)
{
	(void)arg;
	close_range(3, ~0U, CLOSE_RANGE_UNSHARE);
	return NULL;
}

static int cmd_fds(const char *name)
{
	struct port a, b;
	char aname[64], line[512];
	struct nmreq_header h;
	struct nmreq_port_info_get info;
	const long pg = 4096;
	open_or_die(&b, name, NR_REG_ALL_NIC, 0, 0);
	snprintf(aname, sizeof(aname), "%sx", name);
	open_or_die(&a, aname, NR_REG_ALL_NIC, 0, 0);
	check(a.fd > b.fd, "the second port's descriptor is above the first's");
	/* A name longer than ni_name's 16 bytes is cut there with its NUL, as strlcpy cuts. */
	struct port l;
	char lname[64];
	snprintf(lname, sizeof(lname), "%s0123456789abc", name);
	open_or_die(&l, lname, NR_REG_ALL_NIC, 0, 0);
	check(strlen(l.nifp->ni_name) == 15 && strncmp(l.nifp->ni_name, lname, 15) == 0, "a long name is cut to 15 in ni_name");
	close_port(&l);

	/* mmap as netmap's: a page-aligned window, where the program says. */
	size_t size = b.reg.nr_memsize;
	errno = 0;
	check(mmap(NULL, 0, PROT_READ, MAP_SHARED, b.fd, 0) == MAP_FAILED && errno == EINVAL, "length 0: EINVAL");
	errno = 0;
	check(mmap(NULL, pg, PROT_READ, MAP_SHARED, b.fd, (off_t)((size + pg - 1) / pg * pg)) == MAP_FAILED &&
		      errno == EINVAL,
	      "a window past the end: EINVAL");
	errno = 0;
	check(mmap(NULL, size, PROT_READ, MAP_SHARED, b.fd, pg) == MAP_FAILED && errno == EINVAL,
	      "a window that runs past the end: EINVAL");
	struct netmap_ring *txr = NETMAP_TXRING(b.nifp, 0);
	size_t ring_at = (size_t)((char *)txr - (char *)b.mem), off = ring_at / pg * pg;
	char *w = mmap(NULL, 2 * pg, PROT_READ, MAP_SHARED, b.fd, (off_t)off);
	check(w != MAP_FAILED && memcmp(w + (ring_at - off), txr, sizeof(*txr)) == 0,
	      "a window from the TX ring's page shows that ring");
	if (w != MAP_FAILED)
		munmap(w, 2 * pg);
	char *r = mmap(NULL, 3 * pg, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *fx = mmap(r, 2 * pg, PROT_READ, MAP_SHARED | MAP_FIXED, b.fd, 0);
	check(fx == r && strcmp(NETMAP_IF(fx, b.reg.nr_offset)->ni_name, name) == 0,
	      "MAP_FIXED: mapped where asked, the netmap_if there");
	maps_line(r + 2 * pg, line, sizeof(line));
	check(strstr(line, "memfd") == NULL, "two pages asked, two pages mapped (the third is still the reservation)");
	errno = 0;
	check(mmap(r, pg, PROT_READ, MAP_SHARED | MAP_FIXED_NOREPLACE, b.fd, 0) == MAP_FAILED && errno == EEXIST,
	      "MAP_FIXED_NOREPLACE over a mapping: EEXIST");
	munmap(r, 3 * pg);

	/* What must leave the ports alone: flags the kernel refuses, a vfork child that
	 * closes everything before its exec (CPython's subprocess does), a thread that
	 * closes everything in a table of its own. */
	errno = 0;
	check(close_range(b.fd, b.fd, 0x80) < 0 && errno == EINVAL, "close_range with unknown flags: EINVAL");
	check(still_asks(&b, name), "and the port is untouched");
	pid_t child = vfork();
	if (child == 0) {
		close_range(3, ~0U, 0);
		close(b.fd);
		_exit(0);
	}
	int st;
	check(child > 0 && waitpid(child, &st, 0) == child && still_asks(&b, name),
	      "a vfork child's close_range and close leave the parent's port working");
	pthread_t t;
	check(pthread_create(&t, NULL, unsharer, NULL) == 0 && pthread_join(t, NULL) == 0 && still_asks(&b, name),
	      "close_range(CLOSE_RANGE_UNSHARE) in another thread leaves it working");

	/* closefrom over the second port and every descriptor the library hides. */
	int was = a.fd;
	closefrom(was);
	int e = eventfd(0, 0);
	check(e == was, "closefrom freed the second port's number");
	errno = 0;
	check(ioctl(e, NIOCTXSYNC, NULL) < 0 && errno == ENOTTY, "that number is an ordinary descriptor again (ENOTTY)");
	memset(&info, 0, sizeof(info));
	hdr_init(&h, NETMAP_REQ_PORT_INFO_GET, name, &info);
	check(ioctl(b.fd, NIOCCTRL, &h) == 0 && info.nr_memsize == b.reg.nr_memsize,
	      "the first port still asks valed (its connection was kept)");
	for (uint32_t i = 0; i < 5; i++) {
		put_frame(txr, &txr->slot[txr->head], i);
		txr->head = txr->cur = nm_ring_next(txr, txr->head);
	}
	check(ioctl(b.fd, NIOCTXSYNC, NULL) == 0, "and syncs");
	close(e);

	/* close_range: close-on-exec keeps the port, closing forgets it. */
	check(close_range(b.fd, b.fd, CLOSE_RANGE_CLOEXEC) == 0 && fcntl(b.fd, F_GETFD) == FD_CLOEXEC,
	      "close_range(CLOEXEC) marks it");
	for (uint32_t i = 5; i < 10; i++) {
		put_frame(txr, &txr->slot[txr->head], i);
		txr->head = txr->cur = nm_ring_next(txr, txr->head);
	}
	struct pollfd pfd = { .fd = b.fd, .events = POLLOUT };
	check(poll(&pfd, 1, 1000) == 1 && (pfd.revents & POLLOUT), "and it still polls (and sends)");
	munmap(b.mem, b.reg.nr_memsize);
	int bfd = b.fd;
	check(close_range(bfd, bfd, 0) == 0, "close_range closes it");
	e = eventfd(0, 0);
	errno = 0;
	check(e == bfd && ioctl(e, NIOCTXSYNC, NULL) < 0 && errno == ENOTTY, "and its number is an ordinary one");
	close(e);
	printf("failures %d\n", failures);
	return failures;
}

static volatile int stop_dups;

static void *dupper(void *arg)
{
	int fd = *(int *)arg;
	while (!stop_dups) {
		int d = dup(fd);
		if (d >= 0)
			close(d);
	}
	return NULL;
}

static int cmd_forks(const char *name)
{
	struct port p;
	pthread_t t;
	int hung = 0, forks = 200;
	open_or_die(&p, name, NR_REG_ALL_NIC, 0, 0);
	pthread_create(&t, NULL, dupper, &p.fd);
	for (int i = 0; i < forks; i++) {
		pid_t pid = fork();
		if (pid == 0) {
			close(p.fd);
			_exit(0);
		}
		int done = 0, st;
		for (int ms = 0; ms < 3000 && !done; ms++) {
			done = waitpid(pid, &st, WNOHANG) == pid;
			if (!done)
				usleep(1000);
		}
		if (!done) {
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			hung++;
		}
	}
	stop_dups = 1;
	pthread_join(t, NULL);
	printf("forks %d hung %d\n", forks, hung);
	check(hung == 0, "no child hangs closing the descriptor");
	close_port(&p);
	printf("failures %d\n", failures);
	return failures;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc < 3) {
		fprintf(stderr, "usage: nmtest tx|rx|errors|rings|poll2|notxpoll|scribble NAME ...\n");
		return 2;
	}
	if (strcmp(argv[1], "tx") == 0 && argc >= 4)
		return cmd_tx(argc, argv);
	if (strcmp(argv[1], "rx") == 0 && argc >= 5)
		return cmd_rx(argc, argv, 0);
	if (strcmp(argv[1], "scribble") == 0 && argc >= 5)
		return cmd_rx(argc, argv, 1);
	if (strcmp(argv[1], "errors") == 0)
		return cmd_errors(argv[2]);
	if (strcmp(argv[1], "rings") == 0)
		return cmd_rings(argv[2]);
	if (strcmp(argv[1], "poll2") == 0)
		return cmd_poll2(argv[2]);
	if (strcmp(argv[1], "extra") == 0)
		return cmd_extra(argv[2]);
	if (strcmp(argv[1], "share") == 0)
		return cmd_share(argv[2]);
	if (strcmp(argv[1], "pipe") == 0)
		return cmd_pipe(argv[2]);
	if (strcmp(argv[1], "hangup") == 0)
		return cmd_hangup(argv[2]);
	if (strcmp(argv[1], "threads") == 0)
		return cmd_threads(argv[2]);
	if (strcmp(argv[1], "lowfds") == 0)
		return cmd_lowfds(argv[2]);
	if (strcmp(argv[1], "fds") == 0)
		return cmd_fds(argv[2]);
	if (strcmp(argv[1], "forks") == 0)
		return cmd_forks(argv[2]);
	if (strcmp(argv[1], "exclusive") == 0)
		return cmd_exclusive(argv[2]);
	if (strcmp(argv[1], "notxpoll") == 0 && argc >= 4)
		return cmd_notxpoll(argv[2], (uint32_t)atoi(argv[3]));
	fprintf(stderr, "nmtest: bad arguments\n");
	return 2;
}
