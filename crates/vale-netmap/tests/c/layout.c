/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * The layouts and values our net/netmap.h and net/netmap_user.h declare.
 *
 * Prints one line per fact ("size STRUCT N", "offset STRUCT.FIELD N",
 * "const NAME N") so a test can compare them with the Rust definitions, and checks
 * each against the x86-64 / aarch64 Linux numbers (those of
 * crates/vale-abi/src/layout.rs and crates/vale-netmap/src/abi.rs). Exits 1 if
 * any differs; on other targets it only prints.
 */
#define NETMAP_WITH_LIBS
#include <net/netmap_user.h>

#include <stddef.h>
#include <stdio.h>

#if defined(__linux__) && (defined(__x86_64__) || defined(__aarch64__))
#define CHECKED 1
#else
#define CHECKED 0
#endif

static int failures;

static void
fact(const char *kind, const char *name, unsigned long long got, unsigned long long want)
{
	printf("%s %s %llu\n", kind, name, got);
	if (CHECKED && got != want) {
		fprintf(stderr, "layout: %s %s is %llu, expected %llu\n", kind, name, got, want);
		failures++;
	}
}

#define SIZE(T, n) fact("size", #T, sizeof(struct T), n)
#define OFF(T, f, n) fact("offset", #T "." #f, offsetof(struct T, f), n)
#define CONST(c, n) fact("const", #c, (unsigned long long)(c), n)

static void
shared_memory(void)
{
	SIZE(netmap_slot, 16);
	OFF(netmap_slot, buf_idx, 0);
	OFF(netmap_slot, len, 4);
	OFF(netmap_slot, flags, 6);
	OFF(netmap_slot, ptr, 8);

	SIZE(netmap_ring, 256);
	fact("align", "netmap_ring", __alignof__(struct netmap_ring), 128);
	OFF(netmap_ring, buf_ofs, 0);
	OFF(netmap_ring, num_slots, 8);
	OFF(netmap_ring, nr_buf_size, 12);
	OFF(netmap_ring, ringid, 16);
	OFF(netmap_ring, dir, 18);
	OFF(netmap_ring, head, 20);
	OFF(netmap_ring, cur, 24);
	OFF(netmap_ring, tail, 28);
	OFF(netmap_ring, flags, 32);
	OFF(netmap_ring, ts, 40);
	OFF(netmap_ring, offset_mask, 56);
	OFF(netmap_ring, buf_align, 64);
	OFF(netmap_ring, sem, 128);
	OFF(netmap_ring, slot, 256);

	SIZE(netmap_if, 56);
	OFF(netmap_if, ni_name, 0);
	OFF(netmap_if, ni_version, 16);
	OFF(netmap_if, ni_flags, 20);
	OFF(netmap_if, ni_tx_rings, 24);
	OFF(netmap_if, ni_rx_rings, 28);
	OFF(netmap_if, ni_bufs_head, 32);
	OFF(netmap_if, ni_host_tx_rings, 36);
	OFF(netmap_if, ni_host_rx_rings, 40);
	OFF(netmap_if, ni_spare1, 44);
	OFF(netmap_if, ring_ofs, 56);
	fact("size", "netmap_if.ring_ofs[0]", sizeof(((struct netmap_if *)0)->ring_ofs[0]), 8);

	SIZE(nm_csb_atok, 64);
	OFF(nm_csb_atok, head, 0);
	OFF(nm_csb_atok, cur, 4);
	OFF(nm_csb_atok, appl_need_kick, 8);
	OFF(nm_csb_atok, sync_flags, 12);
	SIZE(nm_csb_ktoa, 64);
	OFF(nm_csb_ktoa, hwcur, 0);
	OFF(nm_csb_ktoa, hwtail, 4);
	OFF(nm_csb_ktoa, kern_need_kick, 8);
}

static void
legacy(void)
{
	SIZE(nmreq, 60);
	OFF(nmreq, nr_name, 0);
	OFF(nmreq, nr_version, 16);
	OFF(nmreq, nr_offset, 20);
	OFF(nmreq, nr_memsize, 24);
	OFF(nmreq, nr_tx_slots, 28);
	OFF(nmreq, nr_rx_slots, 32);
	OFF(nmreq, nr_tx_rings, 36);
	OFF(nmreq, nr_rx_rings, 38);
	OFF(nmreq, nr_ringid, 40);
	OFF(nmreq, nr_cmd, 42);
	OFF(nmreq, nr_arg1, 44);
	OFF(nmreq, nr_arg2, 46);
	OFF(nmreq, nr_arg3, 48);
	OFF(nmreq, nr_flags, 52);
	OFF(nmreq, spare2, 56);

	SIZE(nm_ifreq, 272);
	OFF(nm_ifreq, nifr_name, 0);
	OFF(nm_ifreq, data, 16);
}

static void
control(void)
{
	SIZE(nmreq_option, 24);
	OFF(nmreq_option, nro_next, 0);
	OFF(nmreq_option, nro_reqtype, 8);
	OFF(nmreq_option, nro_status, 12);
	OFF(nmreq_option, nro_size, 16);

	SIZE(nmreq_header, 88);
	OFF(nmreq_header, nr_version, 0);
	OFF(nmreq_header, nr_reqtype, 2);
	OFF(nmreq_header, nr_reserved, 4);
	OFF(nmreq_header, nr_name, 8);
	OFF(nmreq_header, nr_options, 72);
	OFF(nmreq_header, nr_body, 80);

	SIZE(nmreq_register, 56);
	OFF(nmreq_register, nr_offset, 0);
	OFF(nmreq_register, nr_memsize, 8);
	OFF(nmreq_register, nr_tx_slots, 16);
	OFF(nmreq_register, nr_rx_slots, 20);
	OFF(nmreq_register, nr_tx_rings, 24);
	OFF(nmreq_register, nr_rx_rings, 26);
	OFF(nmreq_register, nr_host_tx_rings, 28);
	OFF(nmreq_register, nr_host_rx_rings, 30);
	OFF(nmreq_register, nr_mem_id, 32);
	OFF(nmreq_register, nr_ringid, 34);
	OFF(nmreq_register, nr_mode, 36);
	OFF(nmreq_register, nr_extra_bufs, 40);
	OFF(nmreq_register, nr_flags, 48);

	SIZE(nmreq_port_info_get, 32);
	OFF(nmreq_port_info_get, nr_memsize, 0);
	OFF(nmreq_port_info_get, nr_tx_slots, 8);
	OFF(nmreq_port_info_get, nr_rx_slots, 12);
	OFF(nmreq_port_info_get, nr_tx_rings, 16);
	OFF(nmreq_port_info_get, nr_rx_rings, 18);
	OFF(nmreq_port_info_get, nr_host_tx_rings, 20);
	OFF(nmreq_port_info_get, nr_host_rx_rings, 22);
	OFF(nmreq_port_info_get, nr_mem_id, 24);

	SIZE(nmreq_vale_attach, 64);
	OFF(nmreq_vale_attach, reg, 0);
	OFF(nmreq_vale_attach, port_index, 56);
	SIZE(nmreq_vale_detach, 8);
	OFF(nmreq_vale_detach, port_index, 0);
	SIZE(nmreq_vale_list, 8);
	OFF(nmreq_vale_list, nr_bridge_idx, 0);
	OFF(nmreq_vale_list, nr_port_idx, 4);
	SIZE(nmreq_port_hdr, 8);
	OFF(nmreq_port_hdr, nr_hdr_len, 0);
	SIZE(nmreq_vale_newif, 16);
	OFF(nmreq_vale_newif, nr_tx_slots, 0);
	OFF(nmreq_vale_newif, nr_rx_slots, 4);
	OFF(nmreq_vale_newif, nr_tx_rings, 8);
	OFF(nmreq_vale_newif, nr_rx_rings, 10);
	OFF(nmreq_vale_newif, nr_mem_id, 12);
	SIZE(nmreq_vale_polling, 16);
	OFF(nmreq_vale_polling, nr_mode, 0);
	OFF(nmreq_vale_polling, nr_first_cpu_id, 4);
	OFF(nmreq_vale_polling, nr_num_polling_cpus, 8);

	SIZE(nmreq_pools_info, 64);
	OFF(nmreq_pools_info, nr_memsize, 0);
	OFF(nmreq_pools_info, nr_mem_id, 8);
	OFF(nmreq_pools_info, nr_if_pool_offset, 16);
	OFF(nmreq_pools_info, nr_if_pool_objtotal, 24);
	OFF(nmreq_pools_info, nr_if_pool_objsize, 28);
	OFF(nmreq_pools_info, nr_ring_pool_offset, 32);
	OFF(nmreq_pools_info, nr_ring_pool_objtotal, 40);
	OFF(nmreq_pools_info, nr_ring_pool_objsize, 44);
	OFF(nmreq_pools_info, nr_buf_pool_offset, 48);
	OFF(nmreq_pools_info, nr_buf_pool_objtotal, 56);
	OFF(nmreq_pools_info, nr_buf_pool_objsize, 60);

	SIZE(nmreq_sync_kloop_start, 8);
	OFF(nmreq_sync_kloop_start, sleep_us, 0);

	SIZE(nmreq_opt_sync_kloop_eventfds, 24);
	OFF(nmreq_opt_sync_kloop_eventfds, eventfds, 24);
	fact("size", "nmreq_opt_sync_kloop_eventfds.eventfds[0]",
	    sizeof(((struct nmreq_opt_sync_kloop_eventfds *)0)->eventfds[0]), 8);
	SIZE(nmreq_opt_sync_kloop_mode, 32);
	OFF(nmreq_opt_sync_kloop_mode, mode, 24);
	SIZE(nmreq_opt_extmem, 96);
	OFF(nmreq_opt_extmem, nro_usrptr, 24);
	OFF(nmreq_opt_extmem, nro_info, 32);
	SIZE(nmreq_opt_csb, 40);
	OFF(nmreq_opt_csb, csb_atok, 24);
	OFF(nmreq_opt_csb, csb_ktoa, 32);
	SIZE(nmreq_opt_offsets, 56);
	OFF(nmreq_opt_offsets, nro_max_offset, 24);
	OFF(nmreq_opt_offsets, nro_initial_offset, 32);
	OFF(nmreq_opt_offsets, nro_offset_bits, 40);
	OFF(nmreq_opt_offsets, nro_tx_align, 44);
	OFF(nmreq_opt_offsets, nro_min_gap, 48);
}

static void
user_side(void)
{
	/* Not seen by the device, but programs built against either header agree. */
	SIZE(nm_pkthdr, 56);
	OFF(nm_pkthdr, ts, 0);
	OFF(nm_pkthdr, caplen, 16);
	OFF(nm_pkthdr, len, 20);
	OFF(nm_pkthdr, flags, 24);
	OFF(nm_pkthdr, d, 32);
	OFF(nm_pkthdr, slot, 40);
	OFF(nm_pkthdr, buf, 48);
	OFF(nm_desc, self, 0);
	OFF(nm_desc, fd, 8);
	OFF(nm_desc, mem, 16);
	OFF(nm_desc, memsize, 24);
	OFF(nm_desc, done_mmap, 32);
	OFF(nm_desc, nifp, 40);
	OFF(nm_desc, first_tx_ring, 48);
	OFF(nm_desc, cur_rx_ring, 58);
	OFF(nm_desc, req, 60);
	OFF(nm_desc, hdr, 120);
	OFF(nm_desc, some_ring, 176);
	OFF(nm_desc, msg, 248);
	SIZE(nm_desc, 760);
}

static void
constants(void)
{
	CONST(NETMAP_API, 14);
	CONST(NETMAP_MIN_API, 14);
	CONST(NETMAP_MAX_API, 15);
	CONST(NIOCCTRL, 0xc0586997);
	CONST(NIOCTXSYNC, 0x6994);
	CONST(NIOCRXSYNC, 0x6995);
	CONST(NIOCGINFO, 0xc03c6991);
	CONST(NIOCREGIF, 0xc03c6992);
	CONST(NIOCCONFIG, 0xc1106996);
	CONST(NETMAP_REQ_MAXSIZE, 4096);
	CONST(NETMAP_REQ_IFNAMSIZ, 64);

	CONST(NETMAP_REQ_REGISTER, 1);
	CONST(NETMAP_REQ_PORT_INFO_GET, 2);
	CONST(NETMAP_REQ_VALE_ATTACH, 3);
	CONST(NETMAP_REQ_VALE_DETACH, 4);
	CONST(NETMAP_REQ_VALE_LIST, 5);
	CONST(NETMAP_REQ_PORT_HDR_SET, 6);
	CONST(NETMAP_REQ_PORT_HDR_GET, 7);
	CONST(NETMAP_REQ_VALE_NEWIF, 8);
	CONST(NETMAP_REQ_VALE_DELIF, 9);
	CONST(NETMAP_REQ_VALE_POLLING_ENABLE, 10);
	CONST(NETMAP_REQ_VALE_POLLING_DISABLE, 11);
	CONST(NETMAP_REQ_POOLS_INFO_GET, 12);
	CONST(NETMAP_REQ_SYNC_KLOOP_START, 13);
	CONST(NETMAP_REQ_SYNC_KLOOP_STOP, 14);
	CONST(NETMAP_REQ_CSB_ENABLE, 15);

	CONST(NETMAP_REQ_OPT_EXTMEM, 1);
	CONST(NETMAP_REQ_OPT_SYNC_KLOOP_EVENTFDS, 2);
	CONST(NETMAP_REQ_OPT_CSB, 3);
	CONST(NETMAP_REQ_OPT_SYNC_KLOOP_MODE, 4);
	CONST(NETMAP_REQ_OPT_OFFSETS, 5);
	CONST(NETMAP_REQ_OPT_MAX, 6);

	CONST(NR_REG_DEFAULT, 0);
	CONST(NR_REG_ALL_NIC, 1);
	CONST(NR_REG_SW, 2);
	CONST(NR_REG_NIC_SW, 3);
	CONST(NR_REG_ONE_NIC, 4);
	CONST(NR_REG_PIPE_MASTER, 5);
	CONST(NR_REG_PIPE_SLAVE, 6);
	CONST(NR_REG_NULL, 7);
	CONST(NR_REG_ONE_SW, 8);
	CONST(NR_REG_MASK, 0xf);

	CONST(NR_MONITOR_TX, 0x100);
	CONST(NR_MONITOR_RX, 0x200);
	CONST(NR_ZCOPY_MON, 0x400);
	CONST(NR_EXCLUSIVE, 0x800);
	CONST(NR_RX_RINGS_ONLY, 0x2000);
	CONST(NR_TX_RINGS_ONLY, 0x4000);
	CONST(NR_ACCEPT_VNET_HDR, 0x8000);
	CONST(NR_DO_RX_POLL, 0x10000);
	CONST(NR_NO_TX_POLL, 0x20000);

	CONST(NETMAP_HW_RING, 0x4000);
	CONST(NETMAP_SW_RING, 0x2000);
	CONST(NETMAP_RING_MASK, 0x0fff);
	CONST(NETMAP_NO_TX_POLL, 0x1000);
	CONST(NETMAP_DO_RX_POLL, 0x8000);
	CONST(NETMAP_BDG_ATTACH, 1);
	CONST(NETMAP_BDG_DETACH, 2);
	CONST(NETMAP_BDG_REGOPS, 3);
	CONST(NETMAP_BDG_LIST, 4);
	CONST(NETMAP_BDG_VNET_HDR, 5);
	CONST(NETMAP_BDG_NEWIF, 6);
	CONST(NETMAP_BDG_DELIF, 7);
	CONST(NETMAP_PT_HOST_CREATE, 8);
	CONST(NETMAP_PT_HOST_DELETE, 9);
	CONST(NETMAP_BDG_POLLING_ON, 10);
	CONST(NETMAP_BDG_POLLING_OFF, 11);
	CONST(NETMAP_VNET_HDR_GET, 12);
	CONST(NETMAP_BDG_HOST, 1);
	CONST(NM_IFRDATA_LEN, 256);

	CONST(NS_BUF_CHANGED, 0x1);
	CONST(NS_REPORT, 0x2);
	CONST(NS_FORWARD, 0x4);
	CONST(NS_NO_LEARN, 0x8);
	CONST(NS_INDIRECT, 0x10);
	CONST(NS_MOREFRAG, 0x20);
	CONST(NS_TXMON, 0x40);
	CONST(NS_PORT_SHIFT, 8);
	CONST(NS_PORT_MASK, 0xff00);
	CONST(NETMAP_MAX_FRAGS, 64);
	CONST(NR_TIMESTAMP, 0x2);
	CONST(NR_FORWARD, 0x4);
	CONST(NI_PRIV_MEM, 0x1);
	CONST(NM_CACHE_ALIGN, 128);
	CONST(NETMAP_POLLING_MODE_SINGLE_CPU, 1);
	CONST(NETMAP_POLLING_MODE_MULTI_CPU, 2);
	CONST(NM_OPT_SYNC_KLOOP_DIRECT_TX, 1);
	CONST(NM_OPT_SYNC_KLOOP_DIRECT_RX, 2);

	CONST(NM_OPEN_NO_MMAP, 0x40000);
	CONST(NM_OPEN_IFNAME, 0x80000);
	CONST(NM_OPEN_ARG1, 0x100000);
	CONST(NM_OPEN_ARG2, 0x200000);
	CONST(NM_OPEN_ARG3, 0x400000);
	CONST(NM_OPEN_RING_CFG, 0x800000);
	CONST(NM_MORE_PKTS, 1);
	CONST(NM_ERRBUF_SIZE, 512);
}

int
main(void)
{
	shared_memory();
	legacy();
	control();
	user_side();
	constants();
	if (failures) {
		fprintf(stderr, "layout: %d differences\n", failures);
		return 1;
	}
	return 0;
}
