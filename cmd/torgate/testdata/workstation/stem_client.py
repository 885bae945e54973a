# Tor Browser's use of the gateway's filtered control port, played by
# stem (Debian's python3-stem): authenticate, version, circuit state, the
# SOCKS listener, optionally NEWNYM, and what must be refused.
# usage: stem_client.py HOST PORT [newnym]
# Prints one line per step; the Go test reads them.
import socket
import sys

import stem
import stem.socket
from stem import Signal
from stem.control import Controller, Listener

host, port = sys.argv[1], int(sys.argv[2])
newnym = len(sys.argv) > 3 and sys.argv[3] == "newnym"



class TCPControlSocket(stem.socket.ControlSocket):
    """A control connection to any address: stem 1.8's ControlPort takes
    IPv4 addresses only ("Invalid IP address" for IPv6)."""

    def __init__(self, host, port):
        super().__init__()
        self.host, self.port = host, port
        self.connect()

    def _make_socket(self):
        return socket.create_connection((self.host, self.port), timeout=30)


if ":" in host:
    controller = Controller(TCPControlSocket(host, port))
else:
    controller = Controller.from_port(address=host, port=port)

with controller as c:
    c.authenticate()
    print("authenticated")
    print("version", c.get_version())
    print("circuit-established", c.get_info("status/circuit-established"))
    for addr, p in c.get_listeners(Listener.SOCKS):
        print("listener", addr, p)
    for what, call in [
        ("address", lambda: c.get_info("address")),
        ("setconf", lambda: c.set_conf("SocksPort", "0")),
        ("ns/all", lambda: c.get_info("ns/all")),
        ("saveconf", lambda: c.save_conf()),
    ]:
        try:
            call()
            print("allowed", what)
        except (stem.ControllerError, ValueError) as e:
            print("refused", what, type(e).__name__)
    if newnym:
        c.signal(Signal.NEWNYM)
        print("newnym ok")
