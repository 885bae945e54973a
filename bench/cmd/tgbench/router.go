//go:build linux

package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The router-under-test contract.
//
// The router is a shell command template (run with sh -c inside the
// gateway namespace, with exec prepended so the router keeps the pid the
// harness measures). The harness substitutes:
//
//	{tun}      name of the TUN device the router must create (or attach to)
//	           in its own namespace, in name mode
//	{tunfd}    in fd mode: the number of an open TUN file descriptor (3)
//	           that the harness created inside the workstation namespace
//	           and passes to the router
//	{socks}    the SOCKS5 server's host:port (127.0.0.1:1080); {sockshost}
//	           and {socksport} are its two halves
//	{socksunix} the path of a unix socket served by the same SOCKS5
//	           server (a short path under the temporary directory, removed
//	           at exit), for routers that reach Tor that way in production:
//	           torgate's managed Tor is a unix SocksPort, so
//	           "--socks unix:{socksunix}" measures that path
//	{mtu}      the MTU under test
//	{metrics}  an admin endpoint, unix:PATH (a socket in the harness's
//	           temporary directory), where a Go router serves Prometheus
//	           /metrics; the harness scrapes it each second of a run and
//	           records the peaks (metrics.go)
//	{config}   the path of the file the harness wrote from the spec's
//	           Config (named peers that read a config file: hev)
//	{torgate}  the torgate binary given with --torgate
//	{tgbench}  this binary (its "router" subcommand is torgate with pprof)
//
// Name mode (the template has {tun}): the harness waits for the device to
// appear in the gateway namespace, gives the router --settle to finish
// configuring it, moves it into the workstation namespace and configures
// it there (address, MTU, up, default route). A TUN keeps working when
// moved; the router keeps its descriptor. Fd mode (the template has
// {tunfd}): the device is created and configured in the workstation
// namespace before the router starts. Either way the router must forward
// every TCP flow it sees on the TUN to its original destination through
// the SOCKS server, and keep running until SIGTERM.
type routerProc struct {
	cmd  *exec.Cmd
	pid  int
	done chan struct{}
	err  error // set before done is closed
	log  *os.File
}

// expandRouter fills the template.
func expandRouter(tmpl string, vars map[string]string) string {
	for k, v := range vars {
		tmpl = strings.ReplaceAll(tmpl, "{"+k+"}", v)
	}
	return tmpl
}

// ipNetnsExec is the prefix that runs a command in namespace ns for
// startRouter: ip netns exec, which also gives it a mount namespace with
// the namespace's /sys.
func ipNetnsExec(ns string) []string { return []string{"ip", "netns", "exec", ns} }

// nsenterNet is the prefix that runs a command in namespace ns's network
// namespace only, in the harness's mount namespace: for torgate --lan,
// whose pin of its LAN namespace (lan.NamespaceName) must outlive it, and
// would not in the private mount namespace of ip netns exec.
func nsenterNet(ns string) []string { return []string{"nsenter", "--net=/var/run/netns/" + ns} }

// startRouter runs the router command after enter (ipNetnsExec or
// nsenterNet). extra files, if any, become descriptors 3, 4, ...
func startRouter(enter []string, command string, logPath string, extra []*os.File) (*routerProc, error) {
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(log, "\n==== %s: %s\n", time.Now().Format(time.RFC3339), command)
	cmd := exec.Command(enter[0], append(enter[1:], "sh", "-c", "exec "+command)...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.ExtraFiles = extra
	// Its own process group, so an interrupt of the harness reaches the
	// router only through our orderly SIGTERM.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, fmt.Errorf("start router: %w", err)
	}
	p := &routerProc{cmd: cmd, pid: cmd.Process.Pid, done: make(chan struct{}), log: log}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// alive reports whether the router is still running.
func (p *routerProc) alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM, then SIGKILL after 5 s, and waits.
func (p *routerProc) stop() {
	if p.alive() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			p.cmd.Process.Kill()
			<-p.done
		}
	}
	p.log.Close()
}

// procCPU is a process's CPU time so far, all threads (children
// excluded), in seconds: user is utime, sys is stime.
type procCPU struct{ user, sys float64 }

// cpuSeconds is the process's user+system CPU time so far, all threads.
func cpuSeconds(pid int) (float64, error) {
	c, err := readCPU(pid)
	return c.user + c.sys, err
}

// readCPU reads pid's utime and stime from /proc/PID/stat.
func readCPU(pid int) (procCPU, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procCPU{}, err
	}
	return parseStatCPU(b)
}

// parseStatCPU takes utime and stime from the text of a /proc/PID/stat.
func parseStatCPU(b []byte) (procCPU, error) {
	// Fields after the parenthesised command name (which may itself hold
	// spaces and parentheses, hence the last ')'); utime and stime are
	// fields 14 and 15 (1-based) of the whole line.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procCPU{}, errors.New("malformed /proc stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return procCPU{}, errors.New("short /proc stat")
	}
	ut, err1 := strconv.ParseFloat(f[11], 64)
	st, err2 := strconv.ParseFloat(f[12], 64)
	if err := errors.Join(err1, err2); err != nil {
		return procCPU{}, err
	}
	return procCPU{user: ut / clockTicks, sys: st / clockTicks}, nil
}

// ctxSwitches is the number of context switches of pid so far: the sum
// over its threads of voluntary_ctxt_switches (it blocked: a read with
// nothing to read, a futex wait) and nonvoluntary_ctxt_switches (it was
// preempted) from /proc/PID/task/TID/status. /proc/PID/status alone
// counts only the main thread. Only live threads are counted: a thread
// that exits between two readings takes its switches with it (the kernel
// adds them to the process's rusage, which only the process itself or its
// parent can read), so a difference undercounts a process whose threads
// come and go. Go runtimes rarely end threads and hev runs one, so for the
// routers measured here the loss is small.
func ctxSwitches(pid int) (int64, error) {
	var sum int64
	err := eachThread(pid, "status", func(b []byte) error {
		vol, nonvol, err := parseCtxtSwitches(b)
		sum += vol + nonvol
		return err
	})
	return sum, err
}

// eachThread calls f with the file name of each of pid's live threads
// (/proc/PID/task/TID/name). A thread that exits after the listing is
// skipped; f's error, naming the file, ends the walk; no thread readable
// is an error.
func eachThread(pid int, name string, f func([]byte) error) error {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	read := 0
	for _, t := range tasks {
		b, err := os.ReadFile(filepath.Join(dir, t.Name(), name))
		if err != nil {
			continue // the thread exited after the listing
		}
		if err := f(b); err != nil {
			return fmt.Errorf("%s/%s/%s: %w", dir, t.Name(), name, err)
		}
		read++
	}
	if read == 0 {
		return fmt.Errorf("%s: no thread's %s readable", dir, name)
	}
	return nil
}

// parseCtxtSwitches takes the voluntary and involuntary context switch
// counts from the text of a /proc status file.
func parseCtxtSwitches(status []byte) (vol, nonvol int64, err error) {
	var haveVol, haveNonvol bool
	for line := range strings.SplitSeq(string(status), "\n") {
		key, val, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		var dst *int64
		switch key {
		case "voluntary_ctxt_switches":
			dst, haveVol = &vol, true
		case "nonvoluntary_ctxt_switches":
			dst, haveNonvol = &nonvol, true
		default:
			continue
		}
		// Unsigned in the kernel; 63 bits so that the count fits an int64.
		n, err := strconv.ParseUint(strings.TrimSpace(val), 10, 63)
		if err != nil {
			return 0, 0, fmt.Errorf("%s: %w", key, err)
		}
		*dst = int64(n)
	}
	if !haveVol || !haveNonvol {
		return 0, 0, errors.New("no ctxt_switches lines")
	}
	return vol, nonvol, nil
}

// procSnap is one reading of a process's CPU and context switches; ok
// says which of the two could be read.
type procSnap struct {
	cpu          procCPU
	ctxSw        int64
	cpuOK, ctxOK bool
}

func readProc(pid int) procSnap {
	var s procSnap
	var err error
	s.cpu, err = readCPU(pid)
	s.cpuOK = err == nil
	s.ctxSw, err = ctxSwitches(pid)
	s.ctxOK = err == nil
	return s
}

// since is what the process used from s0 to s. A figure that could not
// be read at either end is zero rather than a difference with a zero.
func (s procSnap) since(s0 procSnap) (cpu procCPU, ctxSw int64) {
	if s.cpuOK && s0.cpuOK {
		cpu = procCPU{user: roundUS(s.cpu.user - s0.cpu.user), sys: roundUS(s.cpu.sys - s0.cpu.sys)}
	}
	if s.ctxOK && s0.ctxOK {
		ctxSw = s.ctxSw - s0.ctxSw
	}
	return cpu, ctxSw
}

// clockTicks is sysconf(_SC_CLK_TCK), 100 on every Linux this runs on.
const clockTicks = 100

// resetPeakRSS makes VmHWM start again from the current RSS.
func resetPeakRSS(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

// peakRSSMiB reads VmHWM, the peak resident set since the last reset.
func peakRSSMiB(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				kb, err := strconv.ParseFloat(f[0], 64)
				return kb / 1024, err
			}
		}
	}
	return 0, errors.New("no VmHWM")
}

// routerUsage is a router's CPU, context switches and peak memory over
// one measurement.
type routerUsage struct {
	pid int
	p0  procSnap
}

func beginUsage(pid int) routerUsage {
	resetPeakRSS(pid)
	return routerUsage{pid: pid, p0: readProc(pid)}
}

// end reads the counters again and fills in s's router figures.
func (u routerUsage) end(s *Sample) {
	cpu, ctxSw := readProc(u.pid).since(u.p0)
	s.CPU, s.CPUUser, s.CPUSys = roundUS(cpu.user+cpu.sys), cpu.user, cpu.sys
	s.CtxSwitches = ctxSw
	s.RSSMiB, _ = peakRSSMiB(u.pid)
}
