#!/usr/bin/python3
"""stages.py torgate perf.data: torgate's samples by stage of its work.

Profile a router with frame pointers (Go's default):
    perf record -F 999 -g -p PID -o perf.data -- sleep 10
Stage: the first rule (in order) whose regex matches any frame of the
sample's stack. Kind: the leaf frame: the hypervisor's irq-enable
(pvm_irq_enable: what a context switch or a system call's return costs
on the benchmark VM), other kernel, user. For a router without frame
pointers (hev's release build), use syscalls.py, which needs only the
kernel's part of each stack.
"""
import re, subprocess, sys
from collections import Counter, defaultdict

RULES = {
 "torgate": [
  ("GC", r"runtime\.(gcBgMarkWorker|gcDrain|gcAssist|bgsweep|bgscavenge|markroot|scanobject|gcStart)"),
  ("sysmon", r"runtime\.sysmon"),
  ("flow set-up: SOCKS dial", r"torgate/socks\.|upstream\."),
  ("flow set-up: gVisor endpoint, handshake", r"tcp\.\(\*Forwarder\)|forwardTCP|CreateEndpoint|tunnel\.\(\*Tunnel\)\.(ServeTCP|HandleTCP)"),
  ("relay pumps", r"tunnel\.\(\*direction\)|tunnel\.\(\*pumpPool\)|tunnel\.\(\*poller\)"),
  ("gVisor TCP processors", r"tcp\.\(\*processor\)|tcp\.\(\*dispatcher\)"),
  ("TUN read loop", r"netstack\.\(\*Stack\)\.readLoop|lan\."),
  ("stack growth", r"runtime\.(morestack|newstack)"),
  ("netpoll", r"runtime\.netpoll"),
  ("Go scheduler", r"runtime\.(schedule|findRunnable|mstart|park_m|goexit0|mcall|stopm|startm|wakep|mPark|notesleep|gopark|goready|ready)"),
  ("timers", r"runtime\.(runTimer|runtimer|timerproc)|time\.\(\*Timer\)"),
 ],
}
KER = re.compile(r"^ffffffff")

def main():
    ruleset, path = sys.argv[1], sys.argv[2]
    rules = [(n, re.compile(r)) for n, r in RULES[ruleset]]
    out = subprocess.run(["perf", "script", "-i", path, "-F", "ip,sym"], capture_output=True, text=True).stdout
    stage, kind, total = Counter(), defaultdict(Counter), 0
    for block in out.split("\n\n"):
        frames = [l.split(None, 1) for l in block.strip().splitlines() if l.strip()]
        if not frames:
            continue
        total += 1
        ip, leaf = frames[0][0], (frames[0][1] if len(frames[0]) > 1 else "?")
        k = "hypervisor irq-enable" if "pvm_irq_enable" in leaf else ("kernel" if KER.match(ip) else "user")
        syms = [f[1] if len(f) > 1 else "" for f in frames]
        s = "other"
        for n, r in rules:
            if any(r.search(x) for x in syms):
                s = n
                break
        stage[s] += 1
        kind[s][k] += 1
    print(f"{total} samples")
    print(f"| stage | share | of which hypervisor irq-enable | kernel | user |")
    print("| --- | --: | --: | --: | --: |")
    for s, n in stage.most_common():
        kk = kind[s]
        print(f"| {s} | {100*n/total:.1f} % | {100*kk['hypervisor irq-enable']/total:.1f} | {100*kk['kernel']/total:.1f} | {100*kk['user']/total:.1f} |")
    tk = Counter()
    for s in kind:
        tk.update(kind[s])
    print(f"| all | 100 % | {100*tk['hypervisor irq-enable']/total:.1f} | {100*tk['kernel']/total:.1f} | {100*tk['user']/total:.1f} |")

main()
