//go:build linux

package main

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// A run's bottleneck. A closed-loop load goes as fast as its slowest
// part allows, and on a small machine that part may be the rig (the
// SOCKS server, the target, the load generator) rather than the router:
// then two routers of different cost show the same rate. Naming, for
// every run, the process that used (nearly) a whole core says which
// figure a rate is really a measure of.

// bottleneckCores is the utilisation, in cores, from which a process
// counts as the bottleneck: a single-threaded process cannot go past
// 1.0, and one at 0.9 or more of a core is (nearly) always running, the
// rest being the scheduler's and the wake-ups' latency.
const bottleneckCores = 0.9

// bottleneckMachine is the share of all CPUs from which the machine as a
// whole is the bottleneck when no process is: its processes then wait
// for a CPU rather than for each other.
const bottleneckMachine = 0.9

// Utilisation is one run's CPU use as a rate: each measured process's CPU
// seconds over the run's wall seconds, in cores (a multi-threaded
// process, a Go router for one, can exceed 1), and the machine's busy
// time over wall × CPUs (0 to 1).
type Utilisation struct {
	Router      float64 `json:"router_cores,omitempty"`
	Socks       float64 `json:"socks_cores"`
	Target      float64 `json:"target_cores"`
	IperfServer float64 `json:"iperf_server_cores"`
	Client      float64 `json:"client_cores"`
	Machine     float64 `json:"machine_busy"`
}

// Bottleneck names what bound one run.
type Bottleneck struct {
	// Name is the process at bottleneckCores or more (the highest if
	// several: router, socks, target, iperf3-server or client), or
	// "machine" when no process is but the machine is at
	// bottleneckMachine or more, or "none".
	Name string `json:"name"`
	// Value is the process's cores, or the machine's busy share for
	// "machine" and "none".
	Value float64 `json:"value"`
}

// utilisation computes a run's utilisation from its CPU figures (router
// is the router's CPU seconds, 0 on the kernel path).
func utilisation(router float64, r RigCPU, cpus int) Utilisation {
	if r.Wall <= 0 || cpus <= 0 {
		return Utilisation{}
	}
	return Utilisation{
		Router:      roundCores(router / r.Wall),
		Socks:       roundCores(r.Socks / r.Wall),
		Target:      roundCores(r.Target / r.Wall),
		IperfServer: roundCores(r.IperfServer / r.Wall),
		Client:      roundCores(r.Client / r.Wall),
		Machine:     roundCores(r.Machine / (r.Wall * float64(cpus))),
	}
}

func roundCores(x float64) float64 { return float64(int64(x*1000+0.5)) / 1000 }

// bottleneck names the bottleneck of a run with utilisation u.
func (u Utilisation) bottleneck() Bottleneck {
	best := Bottleneck{Name: "none", Value: u.Machine}
	top := 0.0
	for _, p := range []struct {
		name  string
		cores float64
	}{
		{"router", u.Router},
		{"socks", u.Socks},
		{"target", u.Target},
		{"iperf3-server", u.IperfServer},
		{"client", u.Client},
	} {
		if p.cores >= bottleneckCores && p.cores > top {
			best, top = Bottleneck{Name: p.name, Value: p.cores}, p.cores
		}
	}
	if top == 0 && u.Machine >= bottleneckMachine {
		best.Name = "machine"
	}
	return best
}

// String is the bottleneck for a table: a process with its cores ("socks
// 0.97"), the machine with its busy share ("machine 95 %").
func (b Bottleneck) String() string {
	switch b.Name {
	case "":
		return "-"
	case "none", "machine":
		return fmt.Sprintf("%s %.0f %%", b.Name, 100*b.Value)
	}
	return fmt.Sprintf("%s %.2f", b.Name, b.Value)
}

// summarizeBottlenecks renders the bottlenecks of a row's runs: one entry
// per name, most frequent first, with the median value and the count
// when more than one run had it ("socks 0.97 ×3", "router 1.12 ×2, none
// 71 % ×1"). Failed runs (no name) are left out.
func summarizeBottlenecks(samples []Sample) string {
	byName := map[string][]float64{}
	var names []string
	for _, s := range samples {
		if s.Err != "" || s.Bottleneck == nil {
			continue
		}
		n := s.Bottleneck.Name
		if _, ok := byName[n]; !ok {
			names = append(names, n)
		}
		byName[n] = append(byName[n], s.Bottleneck.Value)
	}
	if len(names) == 0 {
		return "-"
	}
	slices.SortStableFunc(names, func(a, b string) int { return cmp.Compare(len(byName[b]), len(byName[a])) })
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = fmt.Sprintf("%s ×%d", Bottleneck{Name: n, Value: median(byName[n])}, len(byName[n]))
	}
	return strings.Join(parts, ", ")
}
