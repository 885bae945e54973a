//go:build linux

package main

import (
	"bytes"
	"errors"
	"math"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// RigCPU is the CPU the rest of the test rig used during one run: the
// processes on either side of the path under test, and the whole machine.
// It shows how much of a small machine's CPU the measurement itself takes,
// and so how much is left for the router. Process figures are user+system
// time of the process's own threads (children excluded); softirq work the
// kernel does on a process's behalf may or may not be charged to it, which
// is why Machine is the figure to compare across paths.
type RigCPU struct {
	// Socks, Target and IperfServer are the servers in the gateway
	// namespace: the SOCKS server (idle on the kernel path), the
	// short-connection target and the iperf3 server.
	Socks float64 `json:"socks_s"`
	// SocksUser and SocksSys split Socks into user (utime) and system
	// (stime) time; SocksCtxSwitches is the SOCKS server's context
	// switches, summed over its live threads (see ctxSwitches).
	SocksUser        float64 `json:"socks_user_s,omitempty"`
	SocksSys         float64 `json:"socks_sys_s,omitempty"`
	SocksCtxSwitches int64   `json:"socks_ctx_switches,omitempty"`
	Target           float64 `json:"target_s"`
	IperfServer      float64 `json:"iperf_server_s"`
	// Client is what ran in the workstation namespace: the load generator
	// or the iperf3 client (from its rusage when it exited).
	Client float64 `json:"client_s"`
	// Machine is the busy time of all CPUs together (/proc/stat: user,
	// nice, system, irq, softirq, steal), whoever used it.
	Machine float64 `json:"machine_busy_s"`
	// Wall is the run's duration.
	Wall float64 `json:"wall_s"`
}

// PerConn is CPU microseconds per completed connection in a
// short-connection run.
type PerConn struct {
	Machine float64 `json:"machine_us"`
	Router  float64 `json:"router_us"`
	Socks   float64 `json:"socks_us"`
	Target  float64 `json:"target_us"`
	Load    float64 `json:"load_us"`
	// Other is Machine minus every process measured (router, SOCKS server,
	// target, iperf3 server, load generator): kernel work charged to no one
	// of them (softirq on idle CPUs), the harness, anything else running.
	Other float64 `json:"other_us"`
	// The user (utime) and system (stime) parts of Router and Socks.
	RouterUser float64 `json:"router_user_us,omitempty"`
	RouterSys  float64 `json:"router_sys_us,omitempty"`
	SocksUser  float64 `json:"socks_user_us,omitempty"`
	SocksSys   float64 `json:"socks_sys_us,omitempty"`
	// Context switches per completed connection (not µs), voluntary and
	// involuntary, of the router's and the SOCKS server's threads: where
	// a switch is dear (a guest with pti=on) they explain CPU that the
	// user/system split alone does not.
	RouterCtxSw float64 `json:"router_ctx_switches,omitempty"`
	SocksCtxSw  float64 `json:"socks_ctx_switches,omitempty"`
}

// perConn divides one run's CPU by its completed connections; ok is false
// for a run that is not a short-connection run or completed none.
func perConn(s Sample) (PerConn, bool) {
	if s.Load == nil || s.Load.OK == 0 || s.Err != "" {
		return PerConn{}, false
	}
	us := 1e6 / float64(s.Load.OK)
	r := s.Rig
	procs := s.CPU + r.Socks + r.Target + r.IperfServer + r.Client
	return PerConn{
		Machine:     r.Machine * us,
		Router:      s.CPU * us,
		Socks:       r.Socks * us,
		Target:      r.Target * us,
		Load:        r.Client * us,
		Other:       (r.Machine - procs) * us,
		RouterUser:  s.CPUUser * us,
		RouterSys:   s.CPUSys * us,
		SocksUser:   r.SocksUser * us,
		SocksSys:    r.SocksSys * us,
		RouterCtxSw: float64(s.CtxSwitches) / float64(s.Load.OK),
		SocksCtxSw:  float64(r.SocksCtxSwitches) / float64(s.Load.OK),
	}, true
}

// medianPerConn is the per-field median over the runs that have one; nil
// when none has.
func medianPerConn(samples []Sample) *PerConn {
	var ps []PerConn
	for _, s := range samples {
		if p, ok := perConn(s); ok {
			ps = append(ps, p)
		}
	}
	if len(ps) == 0 {
		return nil
	}
	m := func(field func(PerConn) float64) float64 { return medianBy(ps, field) }
	return &PerConn{
		Machine:     m(func(p PerConn) float64 { return p.Machine }),
		Router:      m(func(p PerConn) float64 { return p.Router }),
		Socks:       m(func(p PerConn) float64 { return p.Socks }),
		Target:      m(func(p PerConn) float64 { return p.Target }),
		Load:        m(func(p PerConn) float64 { return p.Load }),
		Other:       m(func(p PerConn) float64 { return p.Other }),
		RouterUser:  m(func(p PerConn) float64 { return p.RouterUser }),
		RouterSys:   m(func(p PerConn) float64 { return p.RouterSys }),
		SocksUser:   m(func(p PerConn) float64 { return p.SocksUser }),
		SocksSys:    m(func(p PerConn) float64 { return p.SocksSys }),
		RouterCtxSw: m(func(p PerConn) float64 { return p.RouterCtxSw }),
		SocksCtxSw:  m(func(p PerConn) float64 { return p.SocksCtxSw }),
	}
}

// medianRig is the per-field median over the runs without error.
func medianRig(samples []Sample) RigCPU {
	var rs []RigCPU
	for _, s := range samples {
		if s.Err == "" {
			rs = append(rs, s.Rig)
		}
	}
	m := func(field func(RigCPU) float64) float64 { return medianBy(rs, field) }
	return RigCPU{
		Socks:            m(func(r RigCPU) float64 { return r.Socks }),
		SocksUser:        m(func(r RigCPU) float64 { return r.SocksUser }),
		SocksSys:         m(func(r RigCPU) float64 { return r.SocksSys }),
		SocksCtxSwitches: int64(math.Round(m(func(r RigCPU) float64 { return float64(r.SocksCtxSwitches) }))),
		Target:           m(func(r RigCPU) float64 { return r.Target }),
		IperfServer:      m(func(r RigCPU) float64 { return r.IperfServer }),
		Client:           m(func(r RigCPU) float64 { return r.Client }),
		Machine:          m(func(r RigCPU) float64 { return r.Machine }),
		Wall:             m(func(r RigCPU) float64 { return r.Wall }),
	}
}

// rigSnapshot holds the counters read when a run starts.
type rigSnapshot struct {
	socks         procSnap
	target, iperf float64
	machine       float64
	start         time.Time
}

// rigBegin reads the servers' and the machine's CPU counters, and the
// SOCKS server's context switches.
func (e *env) rigBegin() rigSnapshot {
	var s rigSnapshot
	s.socks = readProc(e.socksPID)
	s.target, _ = cpuSeconds(e.targetPID)
	s.iperf, _ = cpuSeconds(e.iperfPID)
	s.machine, _ = machineBusySeconds()
	s.start = time.Now()
	return s
}

// rigEnd reads them again; client is the client's own CPU seconds.
func (e *env) rigEnd(s rigSnapshot, client float64) RigCPU {
	socks, socksCtx := readProc(e.socksPID).since(s.socks)
	target, _ := cpuSeconds(e.targetPID)
	iperf, _ := cpuSeconds(e.iperfPID)
	machine, _ := machineBusySeconds()
	return RigCPU{
		Socks:            roundUS(socks.user + socks.sys),
		SocksUser:        socks.user,
		SocksSys:         socks.sys,
		SocksCtxSwitches: socksCtx,
		Target:           roundUS(target - s.target),
		IperfServer:      roundUS(iperf - s.iperf),
		Client:           roundUS(client),
		Machine:          roundUS(machine - s.machine),
		Wall:             roundUS(time.Since(s.start).Seconds()),
	}
}

// roundUS rounds seconds to microseconds, so that results.json shows 1.91
// and not the 1.9099999999999997 of a difference of tick counts.
func roundUS(s float64) float64 { return math.Round(s*1e6) / 1e6 }

// exitedCPU is the user+system CPU seconds of a command that has exited
// (0 if it never ran).
func exitedCPU(cmd *exec.Cmd) float64 {
	if cmd.ProcessState == nil {
		return 0
	}
	return (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()
}

// machineBusySeconds is the busy time of all CPUs so far, from the first
// line of /proc/stat: user, nice, system, irq, softirq and steal (guest
// time is already inside user and nice; idle and iowait are not busy).
func machineBusySeconds() (float64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 9 || f[0] != "cpu" {
		return 0, errors.New("malformed /proc/stat")
	}
	var busy float64
	for _, i := range []int{1, 2, 3, 6, 7, 8} { // user nice system irq softirq steal
		v, err := strconv.ParseFloat(f[i], 64)
		if err != nil {
			return 0, err
		}
		busy += v
	}
	return busy / clockTicks, nil
}

// procName is the command name of pid (/proc/PID/comm), for checking that
// a pid the harness measures is the server itself and not a wrapper.
func procName(pid int) string {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	return strings.TrimSpace(string(b))
}
