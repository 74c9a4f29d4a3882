"""TLS connections (Redis's tls-port) pass BRC untouched and are counted as never answered.

The real build serves a real redis-server (serve_lab). Redis is given a TLS listener at
run time (a self-signed certificate, CONFIG SET tls-port); the toolkit's loader reads
tls-port from Redis itself into brc_server. redis-cli --tls then writes and reads through
BRC: every reply is Redis's own (compared with what was written), the segments are
counted under tls_connections / tls_segments and reported as unseen by the why-not-answered
split, and plain connections go on being answered in the kernel meanwhile.
"""
import os
import subprocess
import tempfile
import time

from ansible.module_utils import brc_outcomes

from serve_lab import PORT

TLS_PORT = PORT + 1


def _self_signed(workdir):
    key, cert = os.path.join(workdir, "redis.key"), os.path.join(workdir, "redis.crt")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=brc-test", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    os.chmod(key, 0o644)    # redis-server runs as root here; readable is enough
    return key, cert


def _tls_cli(lab, cert, *args):
    out = lab.pair.run(lab.pair.client, ["redis-cli", "--tls", "--cacert", cert, "-h", lab.pair.server_ip,
                               "-p", str(TLS_PORT)] + [str(a) for a in args])
    return out.stdout.strip()


def _cli(lab, *args):
    return lab.cli(*args).strip()


def test_tls_connections_pass_untouched_and_are_counted(lab):
    workdir = tempfile.mkdtemp(prefix="brc-tls-")
    key, cert = _self_signed(workdir)
    for name, value in (("tls-cert-file", cert), ("tls-key-file", key), ("tls-ca-cert-file", cert),
                        ("tls-auth-clients", "no"), ("tls-port", TLS_PORT)):
        assert _cli(lab, "CONFIG", "SET", name, value) == "OK", name
    try:
        loaded = lab.refresh_auth()
        assert loaded["after"]["server"]["tls_port"] == TLS_PORT
        lab.serve()
        time.sleep(1.5)     # past the lease of any untracked traffic before
        assert _cli(lab, "SET", "tls:plain", "p") == "OK"
        before = lab.counters()
        values = {}
        for i in range(5):
            k, v = "tls:k%d" % i, "value-%d-%s" % (i, os.urandom(4).hex())
            assert _tls_cli(lab, cert, "SET", k, v) == "OK"
            values[k] = v
        for _round in range(3):
            for k, v in values.items():
                assert _tls_cli(lab, cert, "GET", k) == v
        plain = [_cli(lab, "GET", "tls:plain") for _i in range(6)]
        after = lab.counters()
    finally:
        lab.cli("CONFIG", "SET", "tls-port", "0")
        lab.refresh_auth()
        subprocess.run(["rm", "-rf", workdir])
    assert plain == ["p"] * 6
    d = lab.delta(after, before)
    sent = 5 + 15                       # one redis-cli connection per command
    assert d.get("tls_connections", 0) == sent, d
    assert d.get("tls_segments", 0) >= sent, d
    # The TLS GETs are in none of the GET numbers: only the plain ones are.
    assert d.get("hit", 0) + d.get("req_get", 0) == 6, d
    assert d.get("hit", 0) >= 4, d      # plain connections kept being answered meanwhile
    split = brc_outcomes.breakdown(d)
    assert split["unseen"]["tls_segments"] == d["tls_segments"]
