"""A real controller (stem) against ctlport, driven by TestStem.

Usage: stem_client.py PORT. Prints one line per step; exits non-zero on
the first step that does not go as a Tor Browser or Whonix script
expects of a filtered control port.
"""
import sys

import stem
from stem.control import Controller, Listener, Signal


def refused(what, f, *args):
    try:
        f(*args)
    except stem.ControllerError as e:
        print('refused', what, type(e).__name__, e)
        return
    raise AssertionError('%s was not refused' % what)


def main():
    port = int(sys.argv[1])
    with Controller.from_port(address='127.0.0.1', port=port) as c:
        c.authenticate()
        print('version', c.get_version())
        established = c.get_info('status/circuit-established')
        assert established == '1', established
        print('circuit-established', established)
        socks = c.get_listeners(Listener.SOCKS)
        assert socks == [('10.152.152.10', 9150)], socks
        print('socks', socks)
        c.signal(Signal.NEWNYM)
        print('newnym ok')
        refused('getinfo address', c.get_info, 'address')
        refused('getinfo circuit-status', c.get_info, 'circuit-status')
        refused('getinfo ns/all', c.get_info, 'ns/all')
        refused('set_conf', c.set_conf, 'SocksPort', '0.0.0.0:9050')
        refused('save_conf', c.save_conf)
        refused('signal reload', c.signal, Signal.RELOAD)
        # Still usable after the refusals.
        assert c.get_info('status/circuit-established') == '1'
    print('ok')


if __name__ == '__main__':
    main()
