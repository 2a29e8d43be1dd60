/* nmlegacy: an old-style netmap program, on the inline nm_open() API of
 * <net/netmap_user.h> (NETMAP_WITH_LIBS), which registers with the legacy NIOCREGIF.
 *
 *   nmlegacy tx NAME COUNT     nm_inject COUNT 60-byte broadcast frames (sequence numbers),
 *                               NIOCTXSYNC when the ring is full and once at the end
 *   nmlegacy rx NAME COUNT MS  nm_dispatch until COUNT frames arrived or MS ms passed
 *                               without one; prints "received N bad_seq B ts T"
 */
#define NETMAP_WITH_LIBS
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>

#include <net/netmap_user.h>

static uint32_t got, bad, next_seq;
static long stamped;

static void on_frame(u_char *arg, const struct nm_pkthdr *h, const u_char *buf)
{
	uint32_t seq;
	(void)arg;
	memcpy(&seq, buf + 14, 4);
	if (buf[12] == 0x88 && buf[13] == 0xb5) { /* ours: a sequence number */
		if (h->len != 60 || seq < next_seq)
			bad++;
		next_seq = seq + 1;
	}
	if (h->ts.tv_sec > 1000000000)
		stamped++;
	got++;
}

static double now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

int main(int argc, char **argv)
{
	struct nm_desc *d;
	unsigned char f[60];

	if (argc < 4) {
		fprintf(stderr, "usage: nmlegacy tx|rx NAME COUNT [MS]\n");
		return 2;
	}
	d = nm_open(argv[2], NULL, 0, NULL);
	if (d == NULL) {
		perror("nm_open");
		return 2;
	}
	printf("opened %s: %u tx rings, %u rx rings, mem_id %u\n", d->req.nr_name,
	       d->req.nr_tx_rings, d->req.nr_rx_rings, d->req.nr_arg2);
	fflush(stdout);
	uint32_t count = (uint32_t)atoi(argv[3]);
	if (strcmp(argv[1], "tx") == 0) {
		memset(f, 0, sizeof(f));
		memset(f, 0xff, 6);
		memcpy(f + 6, "\x02\x00\x00\x00\x00\x02", 6);
		f[12] = 0x88;
		f[13] = 0xb5;
		for (uint32_t i = 0; i < count; i++) {
			memcpy(f + 14, &i, 4);
			while (nm_inject(d, f, sizeof(f)) == 0) {
				struct pollfd pf = {.fd = d->fd, .events = POLLOUT};
				poll(&pf, 1, 1000);
			}
		}
		ioctl(d->fd, NIOCTXSYNC, NULL);
		printf("sent %u\n", count);
	} else {
		int ms = argc > 4 ? atoi(argv[4]) : 1000;
		double idle_since = now_ms();
		while (got < count && now_ms() - idle_since < ms) {
			struct pollfd pf = {.fd = d->fd, .events = POLLIN};
			if (poll(&pf, 1, 50) > 0) {
				if (nm_dispatch(d, -1, on_frame, NULL) > 0)
					idle_since = now_ms();
			}
		}
		printf("received %u bad_seq %u ts %ld\n", got, bad, stamped);
	}
	nm_close(d);
	return (strcmp(argv[1], "rx") == 0 && (got != count || bad)) ? 1 : 0;
}
