#!/usr/bin/python3
"""devpath.py perf.data COMM MBITS [perf.data COMM MBITS]: where a router's
downstream CPU goes per Gbit, the TUN path beside the LAN path.

Record the whole machine while one stream runs down (the router's write
into its device runs the workstation's receive in the same system call, so
a per-process record would split it from its cause only by stack):
    perf record -a -g -F 999 -o perf.data -- sleep 4
MBITS is the stream's rate over that window (the run's iperf3 figure);
figures are the router's samples (comm COMM) per Gbit/s. Each sample goes
to the first region whose frame it has, in this order: the device write
(tun_get_user, tap_get_user; split into the workstation's TCP receive,
the backlog queue, the qdisc, macvlan and the veth, the rest of the
device's own work), socket reads (what the relay takes from its SOCKS
connection), the inbound read (ACKs from the workstation), gVisor's
sending, the Go runtime's scheduler, the rest.
"""
import subprocess, sys
from collections import Counter

DEVICE = ("tun_get_user", "tap_get_user")
DEVICE_PARTS = [  # inside the device write, first match wins
    ("workstation TCP receive", ("tcp_v4_rcv", "tcp_v6_rcv")),
    ("backlog queue (veth to workstation)", ("process_backlog", "enqueue_to_backlog", "netif_rx")),
    ("qdisc, and macvlan and veth below it", ("sch_direct_xmit", "__qdisc_run", "pfifo_fast_enqueue", "pfifo_fast_dequeue")),
    ("macvlan, veth (no qdisc)", ("macvlan_start_xmit", "veth_xmit")),
]
REGIONS = [
    ("socket reads", ("unix_stream_recvmsg", "unix_stream_read_generic", "tcp_recvmsg")),
    ("inbound read (ACKs)", ("tun_do_read", "tap_do_read", "readLoopVnet", "readDirect")),
    ("gVisor sending", ("sendData", "sendSegmentFromPacketBuffer", "buildTCPHdr", "writeVnet")),
    ("Go scheduler", ("runtime.schedule", "runtime.findRunnable", "runtime.mcall", "runtime.park_m")),
]


def split(path, comm):
    out = subprocess.run(["perf", "script", "-i", path, "-F", "comm,ip,sym"],
                         capture_output=True, text=True).stdout
    c = Counter()
    for block in out.split("\n\n"):
        lines = block.strip().splitlines()
        if not lines or lines[0].split()[0] != comm:
            continue
        syms = set()
        for l in lines[1:]:
            p = l.split(None, 1)
            if len(p) > 1:
                syms.add(p[1].split("+")[0].strip())
        c["all"] += 1
        if syms & set(DEVICE):
            c["device write"] += 1
            part = "device's own work"
            for name, fs in DEVICE_PARTS:
                if syms & set(fs):
                    part = name
                    break
            c["  " + part] += 1
            continue
        region = "rest"
        for name, fs in REGIONS:
            if any(s.endswith(f) or s == f for s in syms for f in fs):
                region = name
                break
        c[region] += 1
    return c


def main():
    a = sys.argv[1:]
    runs = [(a[i], a[i + 1], float(a[i + 2]) / 1000) for i in range(0, len(a), 3)]
    cs = [split(p, comm) for p, comm, _ in runs]
    keys = ["all", "device write"] + ["  " + n for n, _ in DEVICE_PARTS] + ["  device's own work"] + [n for n, _ in REGIONS] + ["rest"]
    print("| samples per Gbit/s | " + " | ".join(p for p, _, _ in runs) + " |")
    print("| --- |" + " --: |" * len(runs))
    for k in keys:
        print(f"| {k} | " + " | ".join(f"{c[k] / g:.1f}" for c, (_, _, g) in zip(cs, runs)) + " |")


main()
