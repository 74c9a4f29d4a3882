# -*- coding: utf-8 -*-
# A strict RESP2 client over one socket: a command goes out as an array of bulk strings
# and exactly one reply is read back, any byte out of place an error. The brc_probe
# module and the consistency checker (tests/tools/checker.py) judge what BRC answers
# with this one reader, so a reply one accepts the other cannot refuse.
#
# Replies: simple string -> str, error -> RedisError (a str), integer -> int, bulk
# string -> bytes, array -> list, nil -> None.

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import socket


class RespError(Exception):
    """The connection cannot go on: no reply in time, or bytes that are not RESP."""


class Stall(RespError):
    pass


class ProtocolError(RespError):
    pass


class RedisError(str):
    """An error reply (-ERR ...), as its text."""


def encode(*args):
    """One command as a RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class RespConnection:
    """One connection: encode commands, read exactly one reply each (pipeline() sends
    several at once and reads as many replies)."""

    encode = staticmethod(encode)

    def __init__(self, host, port, timeout):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def _fill(self):
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise Stall("no reply within the timeout")
        if not chunk:
            raise ProtocolError("connection closed by peer")
        self.buf += chunk

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def read_reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RedisError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self._fill()
            data, tail, self.buf = self.buf[:n], self.buf[n:n + 2], self.buf[n + 2:]
            if tail != b"\r\n":
                raise ProtocolError("bulk string not terminated by CRLF")
            return data
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.read_reply() for _ in range(n)]
        raise ProtocolError("unexpected reply type byte %r" % kind)

    def call(self, *args):
        self.sock.sendall(encode(*args))
        return self.read_reply()

    def pipeline(self, commands):
        self.sock.sendall(b"".join(encode(*c) for c in commands))
        return [self.read_reply() for _ in commands]
