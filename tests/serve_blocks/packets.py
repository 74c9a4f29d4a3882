"""Ethernet/IPv4/TCP packet builder and parser for the serve-block tests, with an
independent (RFC 1071) checksum implementation to verify what the kernel wrote.

Nothing here imports bcc: it is plain bytes in, bytes out.
"""
import struct

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10

CLI_MAC = bytes.fromhex("02000000c001")
SRV_MAC = bytes.fromhex("02000000c002")
CLI_IP = bytes([10, 68, 0, 1])
SRV_IP = bytes([10, 68, 0, 2])
CLI_PORT, SRV_PORT = 40000, 6379


# What the seqadj harnesses return (harness_seqadj.c), and the RESP the flows carry.
H_PASS, H_INIT, H_CONSUMED, H_RESEND, H_REFUSED = 0, 1, 2, 3, 4
M = 0xFFFFFFFF

PING = b"*1\r\n$4\r\nPING\r\n"
GET = b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n"
GET2 = b"*2\r\n$3\r\nget\r\n$4\r\nkey2\r\n"
SET = b"*3\r\n$3\r\nSET\r\n$1\r\na\r\n$1\r\nb\r\n"
REPLY = b"$5\r\nhello\r\n"
REPLY2 = b"$6\r\nworld!\r\n"


def csum16(data, seed=0):
    """One's-complement sum of data folded to 16 bits (not complemented)."""
    if len(data) % 2:
        data += b"\0"
    s = seed
    for (w,) in struct.iter_unpack("!H", data):
        s += w
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def pseudo_sum(saddr, daddr, tcp_len):
    return csum16(saddr + daddr + struct.pack("!BBH", 0, 6, tcp_len))


# --- options -------------------------------------------------------------------
def opt_nop():
    return b"\x01"


def opt_mss(mss=1460):
    return struct.pack("!BBH", 2, 4, mss)


def opt_sackperm():
    return b"\x04\x02"


def opt_ws(shift=7):
    return struct.pack("!BBB", 3, 3, shift)


def opt_ts(tsval, tsecr):
    return struct.pack("!BBII", 8, 10, tsval, tsecr)


def opt_sack(*blocks):
    return struct.pack("!BB", 5, 2 + 8 * len(blocks)) + b"".join(
        struct.pack("!II", a, b) for a, b in blocks)


def linux_syn_opts(tsval, mss=1460, ws=7):
    """The option layout of a Linux SYN: MSS, SACK-perm, TS, NOP, WS."""
    return opt_mss(mss) + opt_sackperm() + opt_ts(tsval, 0) + opt_nop() + opt_ws(ws)


def linux_ts_opts(tsval, tsecr):
    """NOP NOP TS, the layout of every established Linux segment."""
    return opt_nop() + opt_nop() + opt_ts(tsval, tsecr)


# --- build -----------------------------------------------------------------------
def tcp_packet(seq, ack, flags, payload=b"", options=b"", window=502, to_server=True,
               csum="full", ip_id=0x1234, sport=None, dport=None, saddr=None, daddr=None):
    """One Ethernet/IPv4/TCP frame. csum: "full" (CHECKSUM_NONE-style, a complete
    checksum), "partial" (CHECKSUM_PARTIAL-style, only the folded pseudo-header
    sum, as the Linux stack leaves it for offload) or "zero"."""
    if len(options) % 4:
        options += b"\0" * (4 - len(options) % 4)
    if to_server:
        smac, dmac = CLI_MAC, SRV_MAC
        saddr, daddr = saddr or CLI_IP, daddr or SRV_IP
        sport, dport = sport or CLI_PORT, dport or SRV_PORT
    else:
        smac, dmac = SRV_MAC, CLI_MAC
        saddr, daddr = saddr or SRV_IP, daddr or CLI_IP
        sport, dport = sport or SRV_PORT, dport or CLI_PORT
    doff = (20 + len(options)) // 4
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                      doff << 4, flags, window, 0, 0) + options
    seg = tcp + payload
    ps = pseudo_sum(saddr, daddr, len(seg))
    if csum == "full":
        check = (~csum16(seg, ps)) & 0xFFFF
    elif csum == "partial":
        check = ps
    else:
        check = 0
    seg = seg[:16] + struct.pack("!H", check) + seg[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(seg), ip_id, 0x4000, 64, 6, 0,
                     saddr, daddr)
    ip = ip[:10] + struct.pack("!H", (~csum16(ip)) & 0xFFFF) + ip[12:]
    return dmac + smac + b"\x08\x00" + ip + seg


# --- parse -----------------------------------------------------------------------
class Pkt:
    """A parsed frame; fields in host order, options as a list of (kind, bytes)."""

    def __init__(self, frame):
        self.raw = frame
        self.dmac, self.smac = frame[0:6], frame[6:12]
        ip = frame[14:34]
        (vihl, self.tos, self.tot_len, self.ip_id, self.frag, self.ttl, self.proto,
         self.ip_check, self.saddr, self.daddr) = struct.unpack("!BBHHHBBH4s4s", ip)
        assert vihl == 0x45, hex(vihl)
        self.ip_csum_ok = csum16(ip) == 0xFFFF
        seg = frame[14 + 20:14 + self.tot_len]
        self.seg = seg
        (self.sport, self.dport, self.seq, self.ack, off, self.flags, self.window,
         self.check, self.urg) = struct.unpack("!HHIIBBHHH", seg[:20])
        self.thl = (off >> 4) * 4
        self.optbytes = seg[20:self.thl]
        self.payload = seg[self.thl:]
        ps = pseudo_sum(self.saddr, self.daddr, len(seg))
        self.tcp_csum_ok = csum16(seg, ps) == 0xFFFF
        self.tcp_csum_is_pseudo = self.check == ps
        self.options = []
        i = 0
        while i < len(self.optbytes):
            k = self.optbytes[i]
            if k == 0:
                break
            if k == 1:
                self.options.append((1, b""))
                i += 1
                continue
            n = self.optbytes[i + 1]
            self.options.append((k, self.optbytes[i + 2:i + n]))
            i += n

    def opt(self, kind):
        for k, v in self.options:
            if k == kind:
                return v
        return None

    @property
    def ts(self):
        v = self.opt(8)
        return struct.unpack("!II", v) if v is not None else None
