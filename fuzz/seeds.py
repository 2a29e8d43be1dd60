#!/usr/bin/env python3
"""Writes the hand-made seed inputs of each fuzz target into fuzz/corpus/TARGET/seed-*:
valid inputs that reach deep (a whole request, a TSO frame, a descriptor chain), from
which libFuzzer mutates. Run it again after changing a target's input format."""
import json, os, struct

HERE = os.path.dirname(os.path.abspath(__file__))


def put(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def eth(et, payload, dst=b"\x02\0\0\0\0\x0b", src=b"\x02\0\0\0\0\x0a"):
    return dst + src + struct.pack("!H", et) + payload


def ipv4_tcp(payload_len, flags=0x18):
    tcp = struct.pack("!HHIIBBHHH", 1234, 80, 1, 0, 5 << 4, flags, 65535, 0, 0)
    total = 20 + len(tcp) + payload_len
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 1, 0x4000, 64, 6, 0,
                     bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
    return ip + tcp + bytes(i % 251 for i in range(payload_len))


def ipv6_tcp(payload_len):
    tcp = struct.pack("!HHIIBBHHH", 1234, 80, 1, 0, 5 << 4, 0x18, 65535, 0, 0)
    ip = struct.pack("!IHBB16s16s", 6 << 28, len(tcp) + payload_len, 6, 64,
                     b"\xfd" + b"\0" * 14 + b"\x01", b"\xfd" + b"\0" * 14 + b"\x02")
    return ip + tcp + bytes(i % 251 for i in range(payload_len))


def ipv4_udp(payload):
    udp = struct.pack("!HHHH", 5555, 4789, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                     bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
    return ip + udp


def vnet(flags, gso, hdr_len, gso_size, start, off):
    return struct.pack("<BBHHHH", flags, gso, hdr_len, gso_size, start, off)


tcp4 = eth(0x0800, ipv4_tcp(3000))
tcp6 = eth(0x86DD, ipv6_tcp(3000))
qinq = eth(0x88A8, struct.pack("!HH", 100, 0x8100) + struct.pack("!HH", 200, 0x0800) + ipv4_tcp(2000))
vxlan = eth(0x0800, ipv4_udp(struct.pack("!II", 0x08000000, 42 << 8) + eth(0x0800, ipv4_tcp(64))))

# Control protocol: one datagram each.
reqs = {
    "open": {"op": "open", "version": 3, "name": "vale0:a", "geometry": {"tx_slots": 256}, "exclusive": True},
    "open-pipe": {"op": "open", "version": 3, "name": "vale0:p{1", "geometry": {}},
    "open-monitor": {"op": "open", "version": 3, "name": "vale0:a/rt"},
    "list-page": {"op": "list", "page": {"version": 3, "after": "vale0:a"}},
    "stats": {"op": "stats", "port": "vale0:a"},
    "fdb": {"op": "fdb", "switch": "vale0"},
    "set": {"op": "set", "key": "bridge_batch", "value": "64"},
    "attach": {"op": "attach", "port": "vale0:eth0", "xdp": True},
    "create": {"op": "create", "port": "vale0:t0", "spec": {"kind": "tap"}},
    "vhost": {"op": "vhost_user", "port": "vale0:vm", "socket": "/tmp/vm.sock", "client": False},
    "qemu": {"op": "qemu_stream", "port": "vale0:q", "listen": "/tmp/q.sock"},
}
for n, r in reqs.items():
    put("control", n, json.dumps(r).encode())
put("control", "reply-error", json.dumps({"status": "error", "kind": "busy", "message": "x"}).encode())

# Engine: setup byte (hdr_len index, monitor bit), batch, then ops (see engine.rs).
talk = bytes([6]) + struct.pack("<H", 100)
slot = lambda s, bi, ln, fl: bytes([2, s]) + struct.pack("<IHH", bi, ln, fl)
publish = lambda h, c: bytes([4, h, c])
put("engine", "talk", bytes([0, 31]) + talk * 4)
put("engine", "slots", bytes([0, 31]) + slot(0, 1, 60, 0) + slot(1, 2, 60, 0x20) + slot(2, 3, 40, 0) + publish(3, 3) + talk)
put("engine", "vnet-hdr", bytes([1, 7]) + slot(0, 5, 200, 0) + publish(1, 1) + talk + bytes([5, 1]) + talk)
put("engine", "monitor", bytes([4, 63]) + talk + bytes([1, 0x80 | 3]) + struct.pack("<I", 9) + talk)
put("engine", "raw", bytes([2, 0]) + bytes([0]) + struct.pack("<I", 4096) + bytes([16]) + b"\xff" * 32 + publish(2, 2) + talk)

# vhost-user chains: control (size index, mergeable, two lengths), then guest memory
# from address 0: TX table at 0, avail at 0x100, used at 0x180; RX at 0x300.
def desc(addr, ln, flags, nxt):
    return struct.pack("<QIHH", addr, ln, flags, nxt)

def memory(tx_descs, tx_avail, rx_descs, rx_avail):
    m = bytearray(0x700)
    t = b"".join(tx_descs); m[0:len(t)] = t
    a = struct.pack("<HH", 0, len(tx_avail)) + b"".join(struct.pack("<H", i) for i in tx_avail)
    m[0x100:0x100 + len(a)] = a
    r = b"".join(rx_descs); m[0x300:0x300 + len(r)] = r
    a = struct.pack("<HH", 0, len(rx_avail)) + b"".join(struct.pack("<H", i) for i in rx_avail)
    m[0x400:0x400 + len(a)] = a
    m[0x600:0x700] = bytes(range(256))
    return bytes(m)

W, N = 2, 1
put("vhost_chain", "one-each", bytes([4, 0, 8, 2]) + memory(
    [desc(0x600, 100, 0, 0)], [0], [desc(0x1000, 4096, W, 0)], [0]))
put("vhost_chain", "chained-mergeable", bytes([4, 1, 200, 20]) + memory(
    [desc(0x600, 12, N, 1), desc(0x610, 200, 0, 0)], [0],
    [desc(0x1000, 512, W | N, 1), desc(0x2000, 1024, W, 0), desc(0x3000, 2048, W, 0)], [0, 2]))
put("vhost_chain", "loop", bytes([2, 0, 1, 1]) + memory(
    [desc(0x600, 64, N, 1), desc(0x640, 64, N, 0)], [0], [desc(0x8000, 64, W, 0)], [0]))
# Guest memory is two regions split at 0x8000: a TX frame and an RX buffer across it,
# then an indirect descriptor (not offered: refused).
put("vhost_chain", "across-regions", bytes([4, 1, 8, 2]) + memory(
    [desc(0x7ff0, 100, 0, 0)], [0], [desc(0x7f00, 4096, W, 0)], [0]))
put("vhost_chain", "indirect", bytes([4, 0, 8, 2]) + memory(
    [desc(0x600, 32, 4, 0)], [0], [desc(0x1000, 2048, W | 4, 0)], [0]))

# vhost-user messages: fd count and kinds (0x80 sealable, low bits pages), then the stream.
def msg(req, body, flags=1):
    return struct.pack("<III", req, flags, len(body)) + body

mem_table = struct.pack("<II", 1, 0) + struct.pack("<QQQQ", 0, 4096, 0x7f0000000000, 0)
put("vhost_msg", "qemu-start", bytes([1, 0x81] + [0] * 7) +
    msg(18, struct.pack("<II", 0, 0), 1 | 8) +
    msg(2, struct.pack("<Q", (1 << 30) | (1 << 32))) +
    msg(5, mem_table) + msg(12, struct.pack("<Q", 0)) + msg(12, struct.pack("<Q", 1)))
put("vhost_msg", "mem-outside", bytes([1, 0x01] + [0] * 7) +
    msg(5, struct.pack("<II", 1, 0) + struct.pack("<QQQQ", 0, 8192, 0, 4096)))
put("vhost_msg", "mem-slots", bytes([0] * 9) + msg(37, b"\0" * 40))

# Offload: 10-byte virtio-net header, then the frame.
put("offload", "tso4", vnet(1, 1, 54, 1448, 34, 16) + tcp4)
put("offload", "tso6", vnet(1, 4, 74, 1000, 54, 16) + tcp6)
put("offload", "tso-qinq", vnet(1, 1, 62, 500, 42, 16) + qinq)
put("offload", "csum", vnet(1, 0, 0, 0, 34, 16) + eth(0x0800, ipv4_tcp(100)))
put("offload", "plain", vnet(0, 0, 0, 0, 0, 0) + eth(0x0800, ipv4_tcp(10)))

# Wire: frames.
put("wire", "tcp4", tcp4[:200])
put("wire", "tcp6", tcp6[:200])
put("wire", "qinq", qinq[:200])
put("wire", "vxlan", vxlan)

# VXLAN uplink: datagrams, each after a length byte: a valid one (VNI 42, an ARP
# broadcast), one without the I flag, one for VNI 43, a short one.
vx = lambda flags, vni, frame: struct.pack("!B3xI", flags, vni << 8) + frame
arp = eth(0x0806, bytes(28), dst=b"\xff" * 6)
dgrams = [vx(0x08, 42, arp), vx(0x00, 42, arp), vx(0x08, 43, arp), vx(0x08, 42, b"\x02" * 6)]
put("vxlan", "datagrams", b"".join(bytes([len(d)]) + d for d in dgrams))

# netmap: nmreq_header (88 bytes), nmreq_register (56), then options (24 each).
name = b"vale0:a".ljust(64, b"\0")
hdr = lambda version, reqtype, opts: struct.pack("<HHI", version, reqtype, 0) + name + struct.pack("<QQ", opts, 1)
reg = lambda mode, flags: struct.pack("<QQIIHHHHHHIIIQ", 0, 0, 1024, 1024, 1, 1, 0, 0, 0, 0, mode, 4, 0, flags)
opt = lambda nxt, t: struct.pack("<QIIQ", nxt, t, 0, 0)
put("netmap_ioctl", "register", hdr(14, 1, 0) + reg(1, 0x800))
put("netmap_ioctl", "register-monitor", hdr(15, 1, 0) + reg(4, 0x100 | 0x200))
put("netmap_ioctl", "options", hdr(14, 1, 1) + reg(1, 0) + opt(2, 1) + opt(0, 2))
legacy = b"vale0:b".ljust(16, b"\0") + struct.pack("<IIIIIHHHHHHII", 14, 0, 0, 512, 512, 1, 1, 0, 0, 0, 0, 0, 1)
put("netmap_ioctl", "legacy", legacy.ljust(144, b"\0"))

# memif: first byte 0 = handshake (steps of a control byte and a 128-byte message),
# 1 = rings (8 config bytes, then the region's bytes).
def mmsg(kind, body=b""):
    return (struct.pack("<H", kind) + body).ljust(128, b"\0")
init = mmsg(3, struct.pack("<HIB", 0x0200, 7, 0) + b"\0" * 24 + b"DPDK 22.11.11".ljust(32, b"\0"))
region = mmsg(4, struct.pack("<HQ", 0, 4227328))
ring = lambda flags, off: mmsg(5, struct.pack("<HHHIBH", flags, 0, 0, off, 10, 0))
connect = mmsg(6, b"net_memif0".ljust(32, b"\0"))
steps = [(4, init), (1, region), (1, ring(1, 0)), (1, ring(0, 16512)), (0, connect)]
put("memif", "dpdk-handshake", b"\0" + b"".join(bytes([c]) + m for c, m in steps))
put("memif", "secret", b"\0" + bytes([6]) + init)
def mdesc(flags, length, off):
    return struct.pack("<HHIII", flags, 0, length, off, 0)
# log2 4 rings at 0 and 1024; C2S descriptors of 60 and a chain, S2C buffers posted.
body = bytearray(8192)
for j in range(4):
    body[128 + 16 * j:144 + 16 * j] = mdesc(1 if j == 1 else 0, 60 if j != 1 else 2048, 4096 + 64 * j)
for j in range(16):
    body[1024 + 128 + 16 * j:1024 + 144 + 16 * j] = mdesc(0, 2048, 8192 + 2048 * (j % 8))
put("memif", "rings", b"\x01" + struct.pack("<BHHHB", 4, 0, 1024, 3, 16) + bytes(body))
# 2 = valed's own region as a client (a geometry byte, then rounds of a server write:
# offset u16, length u8, the bytes, and an op byte): log2 4 of 256-byte buffers; the
# server moves the S2C tail by 2 (rings of 16 at 0 and 384) and writes a length of 60.
put("memif", "own", b"\x02" + bytes([0x81]) + struct.pack("<HB", 384 + 128 + 4, 4) + struct.pack("<I", 60) + b"\x00"
    + struct.pack("<HB", 384 + 64, 2) + struct.pack("<H", 2) + b"\x01")
