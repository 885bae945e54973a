"""Services recipes: one machine flooding the gateway's SOCKS or control port.

usage: svcflood.py SECONDS HOST PORT KIND:N...
  Opens, from this host, N TCP connections of each KIND to HOST:PORT, in
  the order given, 16 every 20 ms (a KIND starts a batch of its own), and
  plays KIND on each:
    silent       connects and sends nothing
    greet        sends half a SOCKS5 greeting (05 01) and stops
    hang=NAME:P  SOCKS5 no-auth greeting, then CONNECT NAME:P (a port whose
                 upstream never answers), and waits
    burst=NAME   N workers each doing SOCKS5 CONNECT NAME:80 and a GET,
                 again and again until SECONDS are over (50 ms apart after
                 a failure)
    long         sends 100 KiB without a newline
    binary       sends a line of 1 KiB of random bytes (NULs among them)
    nul          sends a line of 1 KiB of NULs
  When all are open (or 5 s passed) and one more second went by, prints
  "svcflood: ready ..."; then holds them until SECONDS are over (or it is
  killed), counting every half second how many of each KIND are open, and
  prints "svcflood: done" with, per KIND, as JSON (the test reads it): how
  many were opened, connected, refused, closed by the gateway (reset, and
  after how long), open at the end, held at most (the largest half-second
  count after ready), the first bytes the gateway sent on any of them, and
  for burst the CONNECTs answered 0x00 and the failed ones. Plain sockets,
  no scapy.
"""

import json
import os
import resource
import selectors
import socket
import struct
import sys
import time

seconds, host, port = float(sys.argv[1]), sys.argv[2], int(sys.argv[3])
kinds = []
for spec in sys.argv[4:]:
    kind, n = spec.rsplit(":", 1)
    kinds.append((kind, int(n)))
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
family = socket.AF_INET6 if ":" in host else socket.AF_INET
sel = selectors.DefaultSelector()
began = time.monotonic()
end = began + seconds
BATCH, PAUSE = 16, 0.02  # opening pace
RETRY = 0.05  # a burst worker's pause after a failure


class Stats:
    def __init__(self):
        self.opened = self.connected = self.refused = self.closed = self.reset = 0
        self.ok = self.failed = 0  # burst: CONNECTs answered 0x00 / not
        self.closed_after = []
        self.held_max = 0
        self.first = b""


stats = {}
conns = []  # every connection but burst's
retries = []  # (when, kind): burst workers to restart


def connect_request(name, p):
    n = name.encode()
    return b"\x05\x01\x00\x03" + bytes([len(n)]) + n + struct.pack("!H", p)


class Conn:
    """One connection and the state of its KIND."""

    def __init__(self, kind):
        self.kind = kind
        self.base = kind.split("=", 1)[0]
        self.st = stats.setdefault(kind, Stats())
        self.out = b""
        self.rx = b""
        self.state = "connecting"
        self.opened = time.monotonic()
        self.s = socket.socket(family, socket.SOCK_STREAM)
        self.s.setblocking(False)
        self.s.connect_ex((host, port))
        self.st.opened += 1
        sel.register(self.s, selectors.EVENT_WRITE, self)
        if self.base != "burst":
            conns.append(self)

    def is_open(self):
        return self.state not in ("connecting", "done")

    def send(self, data):
        self.out += data
        self.flush()

    def flush(self):
        try:
            n = self.s.send(self.out) if self.out else 0
        except OSError:
            return
        self.out = self.out[n:]
        sel.modify(self.s, selectors.EVENT_READ | (selectors.EVENT_WRITE if self.out else 0), self)

    def on_connected(self):
        if self.s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
            self.st.refused += 1
            self.finish(ok=False)
            return
        self.st.connected += 1
        self.state = "open"
        sel.modify(self.s, selectors.EVENT_READ, self)
        if self.base == "greet":
            self.send(b"\x05\x01")
        elif self.base in ("hang", "burst"):
            self.state = "greeting"
            self.send(b"\x05\x01\x00")
        elif self.base == "long":
            self.send(b"A" * (100 << 10))
        elif self.base == "binary":
            self.send(os.urandom(1024).replace(b"\n", b"\0") + b"\r\n")
        elif self.base == "nul":
            self.send(b"\0" * 1024 + b"\r\n")

    def on_data(self, data):
        if len(self.st.first) < 60:
            self.st.first += data[: 60 - len(self.st.first)]
        if self.base not in ("hang", "burst"):
            return
        self.rx += data
        if self.state == "greeting" and len(self.rx) >= 2:
            self.rx = self.rx[2:]
            self.state = "request"
            name, p = self.kind.split("=", 1)[1], 80
            if ":" in name:
                name, p = name.rsplit(":", 1)
            self.send(connect_request(name, int(p)))
        if self.state == "request" and len(self.rx) >= 2:
            if self.rx[1] == 0:
                self.st.ok += 1
                self.state = "http"
                self.send(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
            else:
                self.st.failed += 1
                self.state = "refused"

    def on_closed(self, reset):
        if self.base == "burst":
            ok = self.state == "http"
            if self.state in ("open", "greeting", "request"):
                self.st.failed += 1
            self.finish(ok)
            return
        self.st.closed += 1
        self.st.reset += reset
        self.st.closed_after.append(time.monotonic() - self.opened)
        self.finish(ok=False)

    def finish(self, ok):
        sel.unregister(self.s)
        self.s.close()
        self.state = "done"
        if self.base == "burst":
            retries.append((time.monotonic() + (0 if ok else RETRY), self.kind))


def step(timeout):
    now = time.monotonic()
    while retries and retries[0][0] <= now and now < end:
        Conn(retries.pop(0)[1])
    for key, ev in sel.select(timeout):
        c = key.data
        if c.state == "connecting":
            c.on_connected()
            continue
        if ev & selectors.EVENT_WRITE and c.out:
            c.flush()
        if ev & selectors.EVENT_READ:
            try:
                data = c.s.recv(65536)
            except ConnectionResetError:
                c.on_closed(1)
                continue
            except OSError:
                c.on_closed(0)
                continue
            if not data:
                c.on_closed(0)
            else:
                c.on_data(data)


def run_for(d):
    until = time.monotonic() + d
    while time.monotonic() < until:
        step(max(0, until - time.monotonic()))


for kind, n in kinds:
    for i in range(0, n, BATCH):
        for _ in range(min(BATCH, n - i)):
            Conn(kind)
        run_for(PAUSE)
ready_by = time.monotonic() + 5
while time.monotonic() < ready_by and any(c.state == "connecting" for c in conns):
    step(0.1)
run_for(1)


def open_now(kind):
    return sum(1 for c in conns if c.kind == kind and c.is_open())


print(
    "svcflood: ready after %.1fs: %s; still connecting %d"
    % (
        time.monotonic() - began,
        ", ".join("%s connected %d refused %d open %d" % (k, s.connected, s.refused, open_now(k)) for k, s in stats.items()),
        sum(c.state == "connecting" for c in conns),
    ),
    flush=True,
)
next_sample = time.monotonic()
while time.monotonic() < end:
    if time.monotonic() >= next_sample:
        for k, s in stats.items():
            s.held_max = max(s.held_max, open_now(k))
        next_sample += 0.5
    step(0.1)


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if xs else 0


report = {}
for k, s in stats.items():
    r = {"opened": s.opened, "connected": s.connected, "refused": s.refused}
    if k.startswith("burst"):
        r.update(ok=s.ok, failed=s.failed)
    else:
        r.update(
            closed=s.closed,
            reset=s.reset,
            closed_median_s=round(median(s.closed_after), 1),
            open=open_now(k),
            held_max=s.held_max,
            connecting=sum(1 for c in conns if c.kind == k and c.state == "connecting"),
            first=s.first[:40].decode("latin-1"),
        )
    report[k.split("=", 1)[0]] = r
print("svcflood: done after %.1fs %s" % (time.monotonic() - began, json.dumps(report, sort_keys=True)), flush=True)
