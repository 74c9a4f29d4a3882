"""The agent's adoption proof, piece by piece, against the real thing: sock_diag on real
sockets of this host (what Redis has not read, the client's window shift as the kernel
negotiated it), and which CLIENT LIST entries are a connection at rest."""
import socket

from ansible.module_utils import brc_adopt


def _pair(rcvbuf=None, family=socket.AF_INET, host="127.0.0.1"):
    listener = socket.socket(family)
    listener.bind((host, 0))
    listener.listen()
    c = socket.socket(family)
    if rcvbuf:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)   # before connect: the window shift
    c.connect((host, listener.getsockname()[1]))
    s, _addr = listener.accept()
    listener.close()
    return c, s


def _state(c):
    srv, cli = c.getpeername(), c.getsockname()
    return brc_adopt.sock_state(srv[0], srv[1], cli[0], cli[1])


def test_sock_state_reports_what_the_server_has_not_read():
    c, s = _pair()
    try:
        c.sendall(b"*1\r\n$4\r\nPING\r\n")
        for _i in range(200):              # bounded: the bytes cross loopback at once
            st = _state(c)
            if st["rqueue"]:
                break
        assert st["rqueue"] == 14
        s.recv(100)
        assert _state(c)["rqueue"] == 0 and _state(c)["notsent"] == 0
    finally:
        c.close()
        s.close()


def test_sock_state_has_the_clients_window_shift_and_a_sane_mss():
    shifts = []
    for rcvbuf in (4096, None):
        c, s = _pair(rcvbuf)
        try:
            st = _state(c)
            # the shift the client announced in its SYN: its own socket's receive shift
            # (struct tcp_info: __u8 tcpi_snd_wscale : 4, tcpi_rcv_wscale : 4)
            client_shift = c.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[6] >> 4
            assert st["wscale"] == client_shift, (st, client_shift)
            assert 536 <= st["mss"] <= 65535, st
            shifts.append(client_shift)
        finally:
            c.close()
            s.close()
    assert shifts[0] < shifts[1], shifts     # a small buffer announces a smaller shift


def test_sock_state_finds_ipv4_clients_of_a_dual_stack_listener_and_none_for_a_closed_one():
    c, s = _pair(family=socket.AF_INET6, host="::1")
    try:
        assert _state(c) is not None
    finally:
        c.close()
        s.close()
    listener = socket.socket(socket.AF_INET6)
    listener.bind(("::", 0))
    listener.listen()
    c = socket.create_connection(("127.0.0.1", listener.getsockname()[1]))
    s, _addr = listener.accept()
    try:
        assert _state(c) is not None          # the server socket is AF_INET6, v4-mapped
    finally:
        listener.close()
        c.close()
        s.close()
    assert brc_adopt.sock_state("127.0.0.1", 1, "127.0.0.1", 2) is None


REST = ("id=7 addr=10.71.0.1:40000 laddr=10.71.0.2:6379 fd=9 name= age=3 idle=0 flags=N db=0 sub=0 "
        "psub=0 ssub=0 multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=1024 rbp=0 obl=0 oll=0 "
        "omem=0 tot-mem=1800 events=r cmd=get user=default redir=-1 resp=2")


def test_a_connection_at_rest_is_one_with_no_flags_no_buffers_and_no_reply_mode_last():
    v6 = REST.replace("addr=10.71.0.1:40000 laddr=10.71.0.2:6379", "addr=[fd00::1]:40001 laddr=[fd00::2]:6379")
    clients = brc_adopt.parse_client_list(REST + "\n" + v6)
    entry = clients[("10.71.0.1:40000", "10.71.0.2:6379")]
    assert brc_adopt.not_at_boundary(entry, 64) is None
    assert ("[fd00::1]:40001", "[fd00::2]:6379") in clients
    assert brc_adopt.peer_text("fd00::1", 40001) == "[fd00::1]:40001"
    for change, why in (("flags=N", "flags=x"), ("flags=N", "flags=b"), ("flags=N", "flags=t"),
                        ("qbuf=0", "qbuf=26"), ("omem=0", "omem=20504"), ("oll=0", "oll=1"),
                        ("sub=0", "sub=1"), ("multi=-1", "multi=2"), ("cmd=get", "cmd=client|reply"),
                        ("resp=2", "resp=1"), ("db=0", "db=x")):
        bad = dict(entry)
        k, v = why.split("=", 1)
        bad[k] = v
        assert brc_adopt.not_at_boundary(bad, 64), why
    assert brc_adopt.not_at_boundary(None, 64) == "not in CLIENT LIST"
    # a replica's link: its query buffer alone matters (the master's stream to it is no reply)
    link = dict(entry, flags="S", cmd="replconf|ack", omem="20504", oll="1", obl="0")
    assert brc_adopt.replica_link(link) and brc_adopt.not_at_boundary(link, 64) is None
    assert brc_adopt.not_at_boundary(dict(link, qbuf="40"), 64) == "qbuf=40"
    for flags in ("M", "SP", "O"):
        assert not brc_adopt.replica_link(dict(entry, flags=flags))
        assert brc_adopt.not_at_boundary(dict(entry, flags=flags), 64) == "flags " + flags
    assert brc_adopt.not_at_boundary(dict(entry, user="u" * 65), 64)
