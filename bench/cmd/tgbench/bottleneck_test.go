//go:build linux

package main

import (
	"os"
	"strings"
	"testing"
)

// TestBottleneck: the naming rule. A process at 0.9 of a core or more is
// the bottleneck (the highest if several, a multi-threaded one past 1.0
// included); else the machine at 90 % or more; else none.
func TestBottleneck(t *testing.T) {
	for _, tc := range []struct {
		name string
		u    Utilisation
		want Bottleneck
	}{
		{name: "idle", u: Utilisation{Router: 0.2, Socks: 0.1, Machine: 0.3}, want: Bottleneck{Name: "none", Value: 0.3}},
		{name: "socks at a core", u: Utilisation{Router: 0.7, Socks: 0.97, Target: 0.3, Client: 0.4, Machine: 0.95}, want: Bottleneck{Name: "socks", Value: 0.97}},
		{name: "just at the threshold", u: Utilisation{Router: 0.9, Machine: 0.5}, want: Bottleneck{Name: "router", Value: 0.9}},
		{name: "just below", u: Utilisation{Router: 0.899, Machine: 0.5}, want: Bottleneck{Name: "none", Value: 0.5}},
		{name: "the highest of several", u: Utilisation{Router: 0.92, Socks: 0.95, Client: 0.91, Machine: 1}, want: Bottleneck{Name: "socks", Value: 0.95}},
		{name: "a multi-threaded router past one core", u: Utilisation{Router: 1.35, Socks: 0.6, Machine: 0.98}, want: Bottleneck{Name: "router", Value: 1.35}},
		{name: "the machine, no process", u: Utilisation{Router: 0.6, Socks: 0.6, Target: 0.3, Client: 0.4, Machine: 0.96}, want: Bottleneck{Name: "machine", Value: 0.96}},
		{name: "the machine at the threshold", u: Utilisation{Machine: 0.9}, want: Bottleneck{Name: "machine", Value: 0.9}},
		{name: "iperf3 server", u: Utilisation{IperfServer: 0.99, Client: 0.8, Machine: 0.9}, want: Bottleneck{Name: "iperf3-server", Value: 0.99}},
		{name: "target", u: Utilisation{Target: 1.1, Client: 0.95, Machine: 1}, want: Bottleneck{Name: "target", Value: 1.1}},
		{name: "kernel path: no router", u: Utilisation{Client: 0.93, Target: 0.8, Machine: 0.97}, want: Bottleneck{Name: "client", Value: 0.93}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.u.bottleneck(); got != tc.want {
				t.Errorf("bottleneck(%+v) = %+v, want %+v", tc.u, got, tc.want)
			}
		})
	}
}

// TestUtilisation: cores are CPU seconds over wall seconds; the machine
// is busy seconds over wall × CPUs.
func TestUtilisation(t *testing.T) {
	u := utilisation(4, RigCPU{Socks: 7.8, Target: 2, IperfServer: 0, Client: 3, Machine: 15, Wall: 8}, 2)
	want := Utilisation{Router: 0.5, Socks: 0.975, Target: 0.25, Client: 0.375, Machine: 0.938} // rounded to 3 places
	if u != want {
		t.Errorf("utilisation = %+v, want %+v", u, want)
	}
	if got := utilisation(1, RigCPU{Socks: 1}, 2); got != (Utilisation{}) {
		t.Errorf("utilisation without wall time = %+v, want zero", got)
	}
}

// TestSummarizeBottlenecks: one entry per name, most frequent first,
// median value, count; failed runs and runs without a verdict left out.
func TestSummarizeBottlenecks(t *testing.T) {
	s := func(name string, v float64) Sample { return Sample{Bottleneck: &Bottleneck{Name: name, Value: v}} }
	for _, tc := range []struct {
		name    string
		samples []Sample
		want    string
	}{
		{name: "none recorded", samples: []Sample{{}, {}}, want: "-"},
		{name: "one name", samples: []Sample{s("socks", 0.95), s("socks", 0.97), s("socks", 0.99)}, want: "socks 0.97 ×3"},
		{name: "two names", samples: []Sample{s("none", 0.71), s("router", 1.1), s("router", 1.14)}, want: "router 1.12 ×2, none 71 % ×1"},
		{name: "machine", samples: []Sample{s("machine", 0.95)}, want: "machine 95 % ×1"},
		{name: "failed run left out", samples: []Sample{s("socks", 0.95), {Err: "boom", Bottleneck: &Bottleneck{Name: "none"}}}, want: "socks 0.95 ×1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := summarizeBottlenecks(tc.samples); got != tc.want {
				t.Errorf("summarizeBottlenecks = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestBottleneckColumns: the row's summaries reach both tables.
func TestBottleneckColumns(t *testing.T) {
	run := func(name string, v float64) Sample {
		return Sample{Value: 1500, CPU: 4, Load: &LoadResult{OK: 12000}, Rig: RigCPU{Wall: 8, Machine: 15},
			Bottleneck: &Bottleneck{Name: name, Value: v}, PerfRouter: 4.2, PerfSource: "perf task-clock"}
	}
	kernel := Sample{Value: 10000, Load: &LoadResult{OK: 80000}, Rig: RigCPU{Wall: 8, Machine: 14}, Bottleneck: &Bottleneck{Name: "machine", Value: 0.92}}
	rows := finish([]Row{{MTU: 1500, Test: "conn-closed", Router: "hev",
		KernelRuns: []Sample{kernel, kernel}, RouterRuns: []Sample{run("socks", 0.97), run("socks", 0.99)}}})
	if rows[0].RouterBottleneck != "socks 0.98 ×2" || rows[0].KernelBottleneck != "machine 92 % ×2" {
		t.Errorf("row bottlenecks = %q / %q", rows[0].KernelBottleneck, rows[0].RouterBottleneck)
	}
	if rows[0].RouterPerfPerConn != 350 || rows[0].PerfSource != "perf task-clock" {
		t.Errorf("perf µs/conn = %v (%s), want 350 (perf task-clock)", rows[0].RouterPerfPerConn, rows[0].PerfSource)
	}
	md := (&Report{CPUs: 2, Rows: rows, Upstream: "microsocks"}).Markdown()
	for _, want := range []string{
		"SOCKS5 server behind the routers: microsocks\n",
		"| 14.0 / 15.0 | machine 92 % ×2 | socks 0.98 ×2 |\n",
		"| 1500 | conn-closed | kernel | 10000 | 175 | - | - | 0 | 0 | 175 | - | - | 0 / 0 | 0.0 | machine 92 % ×2 |\n",
		"| 1500 | conn-closed | hev | 1500 | 1250 | 333 | 350 | 0 | 0 | 917 | 0 / 0 | 0.0 | 0 / 0 | 0.0 | socks 0.98 ×2 |\n",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("Markdown lacks %q:\n%s", want, md)
		}
	}
}

// TestParsePerfTaskClock: perf stat -x, output, in msec or ns, and what
// perf prints when it could not count.
func TestParsePerfTaskClock(t *testing.T) {
	for _, tc := range []struct {
		name string
		out  string
		want float64
		ok   bool
	}{
		{name: "msec", out: "3128.68,msec,task-clock,3128680,100.00,0.391,CPUs utilized\n", want: 3.12868, ok: true},
		{name: "ns", out: "2500000000,ns,task-clock,2500000000,100.00,,\n", want: 2.5, ok: true},
		{name: "among other lines", out: "\n# started on ...\n\n812.5,msec,task-clock,812500,100.00,0.1,CPUs utilized\n", want: 0.8125, ok: true},
		{name: "not counted", out: "<not counted>,msec,task-clock,0,100.00,,\n"},
		{name: "not supported", out: "<not supported>,msec,task-clock,0,100.00,,\n"},
		{name: "no line", out: "Error:\nNo permission to enable task-clock event.\n"},
		{name: "odd unit", out: "5,fortnights,task-clock,0,100.00,,\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parsePerfTaskClock([]byte(tc.out))
			if (err == nil) != tc.ok || got != tc.want {
				t.Errorf("parsePerfTaskClock = %v, %v; want %v, ok %v", got, err, tc.want, tc.ok)
			}
		})
	}
}

// TestSchedRunSelf: this process's threads have run, and the sum grows.
func TestSchedRunSelf(t *testing.T) {
	a, err := schedRunSeconds(os.Getpid())
	if err != nil {
		t.Skipf("no schedstat here: %v", err) // CONFIG_SCHED_INFO unset
	}
	x := 0
	for i := range 20_000_000 {
		x += i
	}
	b, err := schedRunSeconds(os.Getpid())
	if err != nil || b <= a || x == 0 {
		t.Errorf("schedstat run time %v then %v (%v)", a, b, err)
	}
}

// TestCheckUpstream: microsocks has no unix socket and refuses torgate's
// credentials, so routers that need either are refused before anything
// starts.
func TestCheckUpstream(t *testing.T) {
	torgate, _ := findPeer("torgate")
	hev, _ := findPeer("hev")
	for _, tc := range []struct {
		name     string
		upstream string
		routers  []routerSpec
		err      string
	}{
		{name: "tgbench takes all", upstream: "tgbench", routers: []routerSpec{torgate.spec("torgate", ""), hev.spec("hev", "/x/hev")}},
		{name: "microsocks and hev", upstream: "microsocks", routers: []routerSpec{hev.spec("hev", "/x/hev")}},
		{name: "microsocks and a unix socket", upstream: "microsocks", routers: []routerSpec{{Name: "r", Template: "/x/r --tun {tun} --socks unix:{socksunix}"}}, err: "no unix socket"},
		{name: "microsocks and torgate", upstream: "microsocks", routers: []routerSpec{torgate.spec("torgate", "")}, err: "no unix socket"},
		{name: "microsocks and torgate over TCP", upstream: "microsocks", routers: []routerSpec{{Name: "tg", Template: "{torgate} run --tun {tun} --socks {socks}"}}, err: "isolation credentials"},
		{name: "another tgbench build", upstream: "tgbench=/bin/sh", routers: []routerSpec{torgate.spec("torgate", "")}},
		{name: "another tgbench build, missing", upstream: "tgbench=/nonexistent/tgbench", err: "no such file"},
		{name: "unknown", upstream: "dante", err: "want tgbench, tgbench=PATH or microsocks"},
		{name: "microsocks with a path", upstream: "microsocks=/x", err: "want tgbench"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkUpstream(tc.upstream, tc.routers)
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Errorf("checkUpstream = %v, want %q", err, tc.err)
			}
		})
	}
}
