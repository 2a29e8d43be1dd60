/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Port-name parsing of the inline legacy API (nm_parse, which nm_open runs), with no
 * device: what each name puts into the NIOCREGIF request, and which names are
 * refused with EINVAL. Also nm_open's answers that need no device: a name that is
 * not netmap's returns NULL with errno 0, and with no /dev/netmap (no module, no
 * preloaded libvale_netmap) it fails with ENOENT.
 */
#define NETMAP_WITH_LIBS
#include <net/netmap_user.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int failures;

static void
check(int ok, const char *what, const char *name)
{
	if (!ok) {
		fprintf(stderr, "nm_open_parse: FAIL %s: %s\n", name, what);
		failures++;
	}
}

/* A name that parses: the request fields it yields. */
static void
good(const char *name, const char *ifname, uint32_t flags, uint16_t ringid, uint16_t memid)
{
	struct nm_desc d;
	char err[NM_VALE_ERRMSG_LEN] = "";

	memset(&d, 0xa5, sizeof(d));
	memset(&d.req, 0, sizeof(d.req));
	d.self = NULL;
	errno = 0;
	if (nm_parse(name, &d, err) != 0) {
		fprintf(stderr, "nm_open_parse: FAIL %s: refused (%s)\n", name, err);
		failures++;
		return;
	}
	check(strcmp(d.req.nr_name, ifname) == 0, "nr_name", name);
	check(d.req.nr_flags == flags, "nr_flags", name);
	check(d.req.nr_ringid == ringid, "nr_ringid", name);
	check(d.req.nr_arg2 == memid, "nr_arg2 (mem id)", name);
	check(d.self == &d, "self", name);
	printf("ok   %-24s -> %-16s flags 0x%05x ring %u mem %u\n", name, d.req.nr_name,
	    (unsigned)d.req.nr_flags, (unsigned)d.req.nr_ringid, (unsigned)d.req.nr_arg2);
}

/* A name that must be refused; msg is a piece of the expected message. */
static void
bad(const char *name, const char *msg)
{
	struct nm_desc d;
	char err[NM_VALE_ERRMSG_LEN] = "";

	memset(&d, 0, sizeof(d));
	errno = 0;
	if (nm_parse(name, &d, err) == 0) {
		fprintf(stderr, "nm_open_parse: FAIL %s: accepted\n", name);
		failures++;
		return;
	}
	check(errno == EINVAL, "errno EINVAL", name);
	check(strstr(err, msg) != NULL, msg, name);
	check(d.self == NULL, "self left alone", name);
	printf("ok   %-24s refused: %s\n", name, err);
}

/* Fields the caller set before parsing are kept: flags and ring bits are ORed. */
static void
ors_into_the_template(void)
{
	struct nm_desc d;

	memset(&d, 0, sizeof(d));
	d.req.nr_flags = NR_NO_TX_POLL;
	d.req.nr_ringid = NETMAP_NO_TX_POLL;
	d.req.nr_arg3 = 7;
	check(nm_parse("vale0:a-2/x", &d, NULL) == 0, "parses", "template");
	check(d.req.nr_flags == (NR_NO_TX_POLL | NR_REG_ONE_NIC | NR_EXCLUSIVE), "flags ORed",
	    "template");
	check(d.req.nr_ringid == (NETMAP_NO_TX_POLL | 2), "ringid ORed", "template");
	check(d.req.nr_arg3 == 7, "arg3 kept", "template");
	/* A NULL err is allowed on failure too. */
	check(nm_parse("vale0:a/q", &d, NULL) == -1 && errno == EINVAL, "NULL err", "template");
}

static void
open_without_device(void)
{
	struct nm_desc *d;

	errno = EAGAIN;
	d = nm_open("eth0", NULL, 0, NULL);
	check(d == NULL && errno == 0, "not a netmap name: NULL, errno 0", "eth0");
	d = nm_open("tap:x", NULL, 0, NULL);
	check(d == NULL && errno == 0, "not a netmap name: NULL, errno 0", "tap:x");
	check(nm_close(NULL) == EINVAL, "nm_close(NULL) is EINVAL", "nm_close");

	if (access(NETMAP_DEVICE_NAME, F_OK) == 0 || getenv("LD_PRELOAD") != NULL) {
		printf("SKIP nm_open ENOENT: %s exists or a library is preloaded\n",
		    NETMAP_DEVICE_NAME);
		return;
	}
	errno = 0;
	d = nm_open("vale0:a", NULL, 0, NULL);
	check(d == NULL && errno == ENOENT, "no device: NULL, errno ENOENT", "vale0:a");
	printf("ok   nm_open without a device: %s\n", strerror(ENOENT));
}

int
main(void)
{
	good("vale0:a", "vale0:a", NR_REG_ALL_NIC, 0, 0);
	good("vale:a", "vale:a", NR_REG_ALL_NIC, 0, 0);
	good("vale0:", "vale0:", NR_REG_ALL_NIC, 0, 0);
	good("vale_x1:port_2", "vale_x1:port_2", NR_REG_ALL_NIC, 0, 0);
	good("valeX:p{3", "valeX:p", NR_REG_PIPE_MASTER, 3, 0);
	good("valeX:p}3", "valeX:p", NR_REG_PIPE_SLAVE, 3, 0);
	good("netmap:eth0", "eth0", NR_REG_ALL_NIC, 0, 0);
	good("netmap:eth0-1", "eth0", NR_REG_ONE_NIC, 1, 0);
	good("netmap:eth0^", "eth0", NR_REG_SW, 0, 0);
	good("netmap:eth0*", "eth0", NR_REG_NIC_SW, 0, 0);
	good("netmap:eth0*/R", "eth0", NR_REG_NIC_SW | NR_RX_RINGS_ONLY, 0, 0);
	good("vale0:a-4094", "vale0:a", NR_REG_ONE_NIC, 4094, 0);
	good("vale0:a/T", "vale0:a", NR_REG_ALL_NIC | NR_TX_RINGS_ONLY, 0, 0);
	good("vale0:a/R", "vale0:a", NR_REG_ALL_NIC | NR_RX_RINGS_ONLY, 0, 0);
	good("vale0:a/t", "vale0:a", NR_REG_ALL_NIC | NR_MONITOR_TX, 0, 0);
	good("vale0:a/r", "vale0:a", NR_REG_ALL_NIC | NR_MONITOR_RX, 0, 0);
	good("vale0:a/rt", "vale0:a", NR_REG_ALL_NIC | NR_MONITOR_RX | NR_MONITOR_TX, 0, 0);
	good("vale0:a/z", "vale0:a", NR_REG_ALL_NIC | NR_ZCOPY_MON, 0, 0);
	good("vale0:a/xT", "vale0:a", NR_REG_ALL_NIC | NR_EXCLUSIVE | NR_TX_RINGS_ONLY, 0, 0);
	good("vale0:a@3", "vale0:a", NR_REG_ALL_NIC, 0, 3);
	good("vale0:a-2/T@5", "vale0:a", NR_REG_ONE_NIC | NR_TX_RINGS_ONLY, 2, 5);
	good("vale0:a@2/x", "vale0:a", NR_REG_ALL_NIC | NR_EXCLUSIVE, 0, 2);
	good("vale0:a{0/xT@2", "vale0:a", NR_REG_PIPE_MASTER | NR_EXCLUSIVE | NR_TX_RINGS_ONLY,
	    0, 2);
	good("vale0:a/T@2/R", "vale0:a", NR_REG_ALL_NIC | NR_TX_RINGS_ONLY | NR_RX_RINGS_ONLY,
	    0, 2);
	good("netmap:0123456789abcde", "0123456789abcde", NR_REG_ALL_NIC, 0, 0);

	bad("vale0a", "no ':' after the switch name");
	bad("vale0-x:a", "switch name:");
	bad("vale0:a.b", "port name:");
	bad("vale0:a-", "no number after '-'");
	bad("vale0:a{", "no number after '{'");
	bad("vale0:a-4095", "ring 4095: the range is 0 to 4094");
	bad("vale0:a--1", "ring -1:");
	bad("vale0:a-1x", "'x' where");
	bad("vale0:a^1", "'1' where");
	bad("vale0:a^-1", "'-' where");
	bad("vale0:a/", "no flags after '/'");
	bad("vale0:a/q", "flag 'q'");
	bad("vale0:a/T/R", "flag '/'");
	bad("vale0:a@", "no memory id");
	bad("vale0:a@0", "memory id 0:");
	bad("vale0:a@x", "no memory id after '@'");
	bad("vale0:a@65536", "memory id 65536: the range is 1 to 65535");
	bad("vale0:a@1@2", "memory id given twice");
	bad("vale0:a@1x", "'x' after the memory id");
	bad("netmap:0123456789abcdef", "name is 16 characters; the limit is 15");
	bad("vale0:abcdefghijk", "name is 17 characters");
	bad("eth0", "neither a netmap: nor a vale name");

	ors_into_the_template();
	open_without_device();

	if (failures) {
		fprintf(stderr, "nm_open_parse: %d failures\n", failures);
		return 1;
	}
	printf("nm_open_parse: all passed\n");
	return 0;
}
