"""A blind gap (BRC's filters missing) must not leave state that breaks connections
opened during it.

A served connection that closes is kept (brc_transient) to translate its last FIN/ACKs
by the offsets its answers made. A client may reuse its ports for a new connection
once Redis, which closed first (QUIT), holds the old one in TIME_WAIT. When that new
connection opens while BRC is detached, BRC never sees its SYN, so nothing replaces the
old entry: after the re-attach the new connection's segments were translated by the
closed one's offsets, Redis dropped them and the client stalled. Re-attaching ends the
gap by forgetting those flows (module_utils/brc_maps.end_blind_gap), as it empties the
cache.
"""
import socket
import time

import brc_attach
from ansible.module_utils.brc_resp import encode
from serve_lab import PORT

KEY = b"gap:reused-port"
VALUE = b"gap-value"


class Client:
    """A raw RESP connection from the client namespace, from a chosen local port."""

    def __init__(self, lab, cport):
        with brc_attach.in_netns(lab.pair.client):
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind((lab.pair.client_ip, cport))
            self.sock.settimeout(10)
            self.sock.connect((lab.pair.server_ip, PORT))
        self.file = self.sock.makefile("rb")

    def get(self):
        self.sock.sendall(encode(b"GET", KEY))
        head = self.file.readline()
        assert head == b"$%d\r\n" % len(VALUE), head
        return self.file.readline().rstrip(b"\r\n")

    def quit_and_wait_for_close(self):
        """QUIT: Redis closes first, so its side of the tuple waits in TIME_WAIT and ours
        is free for a new connection at once."""
        self.sock.sendall(encode(b"QUIT"))
        assert self.file.readline() == b"+OK\r\n"
        assert self.file.read() == b""
        self.close()

    def close(self):
        self.file.close()
        self.sock.close()


def _free_port(lab):
    with brc_attach.in_netns(lab.pair.client):
        with socket.socket() as s:
            s.bind((lab.pair.client_ip, 0))
            return s.getsockname()[1]


def test_a_connection_opened_during_a_gap_on_a_closed_served_tuple_is_not_translated(lab):
    lab.serve(verify_sample=0)
    lab.refresh_auth()
    lab.cli("SET", KEY.decode(), VALUE.decode())
    deadline = time.monotonic() + 90       # a hold another test's connections left (a reset with writes pending)
    while lab.brc.held_s() > 0 and time.monotonic() < deadline:
        time.sleep(min(lab.brc.held_s(), 5))
    cport = _free_port(lab)
    before = lab.counters()
    old = Client(lab, cport)
    assert [old.get() for _ in range(20)] == [VALUE] * 20
    old.quit_and_wait_for_close()
    served = lab.delta(lab.counters(), before)
    assert served.get("hit", 0) > 0 and served.get("serve_flows_kept", 0) == 1, sorted(served.items())

    lab.brc.detach()
    try:
        new = Client(lab, cport)             # its SYN passes while BRC sees nothing
    finally:
        lab.brc.attach()
    try:
        assert [new.get() for _ in range(20)] == [VALUE] * 20
    finally:
        new.close()
    # the new connection is untracked: it holds everything for a second after its last
    # segment, which the lab's next tests would see
    deadline = time.monotonic() + 90
    while lab.brc.held_s() > 0 and time.monotonic() < deadline:
        time.sleep(min(lab.brc.held_s(), 5))
