#!/usr/bin/python3
"""syscalls.py perf.data [perf.data...]: each profile's samples by system call
(the __x64_sys_* frame of a kernel stack), page faults, other kernel work
(interrupts, softirqs outside a system call), and user code; and within
each, the share spent in the hypervisor's pvm_irq_enable."""
import re, subprocess, sys
from collections import Counter
SYS = re.compile(r"__x64_sys_(\w+)|__ia32_sys_(\w+)")
def split(path):
    out = subprocess.run(["perf", "script", "-i", path, "-F", "ip,sym"], capture_output=True, text=True).stdout
    c, irq, total = Counter(), Counter(), 0
    for block in out.split("\n\n"):
        frames = [l.split(None, 1) for l in block.strip().splitlines() if l.strip()]
        if not frames: continue
        total += 1
        syms = [f[1] if len(f) > 1 else "" for f in frames]
        k = None
        if "do_syscall_64" in syms:
            i = syms.index("do_syscall_64")
            j = i - 1
            while j >= 0 and syms[j] in ("x64_sys_call",):
                j -= 1
            name = syms[j] if j >= 0 else "?"
            m = SYS.search(name)
            k = "sys " + (m.group(1) or m.group(2)) if m else "sys " + name
        if k is None:
            if frames[0][0].startswith("ffffffff"):
                k = "page fault" if any("exc_page_fault" in s for s in syms) else "kernel, no syscall (irq, softirq, switch)"
            else:
                k = "user"
        c[k] += 1
        if "pvm_irq_enable" in syms[0]: irq[k] += 1
    return c, irq, total
res = [split(p) for p in sys.argv[1:]]
keys = Counter()
for c, _, t in res:
    for k, v in c.items(): keys[k] += v / t
print("| where | " + " | ".join(sys.argv[1:]) + " |")
print("| --- |" + " --: |" * len(res))
for k, _ in keys.most_common():
    row = [f"{100*c[k]/t:.1f} ({100*i[k]/t:.1f})" for c, i, t in res]
    if max(c[k]/t for c, _, t in res) < 0.005: continue
    print(f"| {k} | " + " | ".join(row) + " |")
