//go:build linux

package main

import (
	"errors"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestPerConn: CPU per connection is each run's CPU over its completed
// connections, as are its user and system parts and the context switches,
// the median is taken per field, and the Markdown gets the kernel path
// once per test and a line per router.
func TestPerConn(t *testing.T) {
	kernel := Sample{Value: 1000, Load: &LoadResult{OK: 1000}, Rig: RigCPU{Target: 0.1, Client: 0.1, Machine: 0.25, Wall: 1}}
	router := func(cpu float64) Sample {
		return Sample{Value: 500, CPU: cpu, CPUUser: cpu * 0.4, CPUSys: cpu * 0.6, CtxSwitches: int64(cpu * 10000), Load: &LoadResult{OK: 500},
			Rig: RigCPU{Socks: 0.1, SocksUser: 0.03, SocksSys: 0.07, SocksCtxSwitches: 1500, Target: 0.05, Client: 0.05, Machine: 0.5, Wall: 1}}
	}
	failed := Sample{Err: "load: boom"}
	rows := finish([]Row{
		{MTU: 1500, Test: "conn-closed", Router: "a", KernelRuns: []Sample{kernel, kernel, kernel}, RouterRuns: []Sample{router(0.2), router(0.25), failed}},
		{MTU: 1500, Test: "conn-closed", Router: "b", KernelRuns: []Sample{kernel}, RouterRuns: []Sample{router(0.1)}},
		{MTU: 1500, Test: "tcp-down-1", Router: "a", KernelRuns: []Sample{{Value: 10, Rig: RigCPU{Machine: 2}}}, RouterRuns: []Sample{{Value: 5, CPU: 1, Rig: RigCPU{Machine: 3}}}},
	})
	near := func(what string, got, want float64) {
		t.Helper()
		if math.Abs(got-want) > 1e-6 {
			t.Errorf("%s = %v, want %v", what, got, want)
		}
	}
	k, r := rows[0].KernelPerConn, rows[0].RouterPerConn
	if k == nil || r == nil {
		t.Fatal("no per-connection figures")
	}
	near("kernel machine", k.Machine, 250)
	near("kernel other", k.Other, 50)
	near("router", r.Router, 450) // median of 400 and 500; the failed run is left out
	near("router socks", r.Socks, 200)
	near("router target+load", r.Target+r.Load, 200)
	near("router machine", r.Machine, 1000)
	near("router user", r.RouterUser, 180) // 0.4 of 450
	near("router sys", r.RouterSys, 270)
	near("router ctx sw/conn", r.RouterCtxSw, 4.5) // median of 2000 and 2500 over 500
	near("socks user", r.SocksUser, 60)
	near("socks sys", r.SocksSys, 140)
	near("socks ctx sw/conn", r.SocksCtxSw, 3)
	near("kernel router ctx sw/conn", k.RouterCtxSw, 0)
	near("router ctx sw/s", rows[0].RouterCtxPerSec, 2250)
	near("router cpu user s", rows[0].RouterCPUUser, 0.09)
	near("router rig socks ctx sw", float64(rows[0].RouterRig.SocksCtxSwitches), 1500)
	near("router rig machine s", rows[0].RouterRig.Machine, 0.5)
	if rows[2].KernelPerConn != nil || rows[2].RouterPerConn != nil {
		t.Error("iperf row has per-connection figures")
	}
	near("iperf machine s", rows[2].RouterRig.Machine, 3)

	md := (&Report{CPUs: 2, Rows: rows}).Markdown()
	for _, want := range []string{
		"| MTU | test | path | conn/s | machine | router | router, 2nd source | SOCKS server | target + load | other | router user / sys | router ctx sw/conn | SOCKS user / sys | SOCKS ctx sw/conn | bottleneck |\n",
		"| 1500 | conn-closed | kernel | 1000 | 250 | - | - | 0 | 200 | 50 | - | - | 0 / 0 | 0.0 | - |\n",
		"| 1500 | conn-closed | a | 500 | 1000 | 450 | - | 200 | 200 | 150 | 180 / 270 | 4.5 | 60 / 140 | 3.0 | - |\n",
		"| 1500 | conn-closed | b | 500 | 1000 | 200 | - | 200 | 200 | 400 | 80 / 120 | 2.0 | 60 / 140 | 3.0 | - |\n",
		"| 2.0 / 3.0 |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("Markdown lacks %q:\n%s", want, md)
		}
	}
	if n := strings.Count(md, "| conn-closed | kernel |"); n != 1 {
		t.Errorf("kernel path listed %d times per test, want 1:\n%s", n, md)
	}
}

func TestMachineBusySeconds(t *testing.T) {
	s, err := machineBusySeconds()
	if err != nil || s <= 0 {
		t.Fatalf("machineBusySeconds() = %v, %v", s, err)
	}
}

// TestParseRouterSpec: a known peer's name with a binary path expands to
// the peer's template; a value with placeholders stays a template; an
// unknown name with a bare path is an error.
func TestParseRouterSpec(t *testing.T) {
	tests := []struct {
		name     string
		arg      string
		index    int
		want     routerSpec
		wantConf string // a line the config must have
		wantErr  error
	}{
		{
			name: "hev by path", arg: "hev=/tmp/peers/hev-socks5-tunnel", index: 1,
			want:     routerSpec{Name: "hev", Peer: "hev", Template: "/tmp/peers/hev-socks5-tunnel {config}"},
			wantConf: "  name: {tun}",
		},
		{
			name: "tun2socks by path", arg: "tun2socks=/tmp/peers/tun2socks", index: 2,
			want: routerSpec{Name: "tun2socks", Peer: "tun2socks", Template: "/tmp/peers/tun2socks --device tun://{tun} --proxy socks5://{socks} --mtu {mtu} --loglevel warn"},
		},
		{
			name: "torgate by path", arg: "torgate=/tmp/tg", index: 0,
			want: routerSpec{Name: "torgate", Peer: "torgate", Template: "/tmp/tg run --tun {tun} --addr '' --admin {metrics} --socks unix:{socksunix} --mtu {mtu}"},
		},
		{
			name: "torgate alone is run.sh's build", arg: "torgate", index: 0,
			want: routerSpec{Name: "torgate", Peer: "torgate", Template: "{torgate} run --tun {tun} --addr '' --admin {metrics} --socks unix:{socksunix} --mtu {mtu}"},
		},
		{
			name: "suffix names a second build", arg: "torgate-old=/tmp/old build/torgate", index: 1,
			want: routerSpec{Name: "torgate-old", Peer: "torgate", Template: "'/tmp/old build/torgate' run --tun {tun} --addr '' --admin {metrics} --socks unix:{socksunix} --mtu {mtu}"},
		},
		{
			name: "hev alone is from PATH", arg: "hev", index: 3,
			want:     routerSpec{Name: "hev", Peer: "hev", Template: "hev-socks5-tunnel {config}"},
			wantConf: "  port: {socksport}",
		},
		{
			name: "named template kept", arg: "t2s=tun2socks -device tun://{tun} -proxy socks5://{socks}", index: 1,
			want: routerSpec{Name: "t2s", Template: "tun2socks -device tun://{tun} -proxy socks5://{socks}"},
		},
		{
			name: "known name with a template kept", arg: "torgate={torgate} run --tun {tun} --socks {socks}", index: 0,
			want: routerSpec{Name: "torgate", Template: "{torgate} run --tun {tun} --socks {socks}"},
		},
		{
			name: "bare template, first", arg: "{torgate} run --tun {tun}", index: 0,
			want: routerSpec{Name: "torgate", Template: "{torgate} run --tun {tun}"},
		},
		{
			name: "bare template with an env assignment", arg: "env GOMAXPROCS=1 {torgate} run --tun {tun}", index: 1,
			want: routerSpec{Name: "router1", Template: "env GOMAXPROCS=1 {torgate} run --tun {tun}"},
		},
		{name: "unknown peer", arg: "wireguard=/usr/bin/wg", index: 1, wantErr: errUnknownPeer},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseRouterSpec(tt.arg, tt.index)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("parseRouterSpec(%q) error = %v, want %v", tt.arg, err, tt.wantErr)
			}
			if tt.wantErr != nil {
				return
			}
			conf := got.Config
			got.Config = ""
			if got != tt.want {
				t.Errorf("parseRouterSpec(%q) =\n%+v, want\n%+v", tt.arg, got, tt.want)
			}
			if tt.wantConf == "" && conf != "" || !strings.Contains(conf, tt.wantConf) {
				t.Errorf("config %q, want a line %q", conf, tt.wantConf)
			}
		})
	}
}

// TestCheckRouters: every named peer passes validation ({tun} may be in
// the config file only); a template without a TUN or needing -torgate
// without one fails.
func TestCheckRouters(t *testing.T) {
	var specs []routerSpec
	for _, p := range peers {
		specs = append(specs, p.spec(p.name, "/bin/"+p.name))
	}
	if err := checkRouters(specs, ""); err != nil {
		t.Errorf("named peers: %v", err)
	}
	torgate, _ := findPeer("torgate")
	if err := checkRouters([]routerSpec{torgate.spec("torgate", "")}, ""); err == nil {
		t.Error("{torgate} without -torgate accepted")
	}
	if err := checkRouters([]routerSpec{{Name: "x", Template: "/bin/x --socks {socks}"}}, ""); err == nil {
		t.Error("template without {tun} or {tunfd} accepted")
	}
	if err := checkRouters([]routerSpec{specs[0], specs[0]}, ""); err == nil {
		t.Error("two routers with one name accepted")
	}
}

// TestHevConfig: the harness's YAML for hev-socks5-tunnel, filled.
func TestHevConfig(t *testing.T) {
	hev, _ := findPeer("hev")
	got := expandRouter(hev.config, map[string]string{"tun": "tgb1", "mtu": "1500", "sockshost": "127.0.0.1", "socksport": "1080"})
	want := `tunnel:
  name: tgb1
  mtu: 1500
socks5:
  address: 127.0.0.1
  port: 1080
misc:
  log-file: stderr
  log-level: warn
`
	if got != want {
		t.Errorf("hev config:\n%s\nwant:\n%s", got, want)
	}
}

// scrapeText is a trimmed /metrics page of torgate (client_golang's Go and
// process collectors plus one of torgate's own).
const scrapeText = `# HELP go_goroutines Number of goroutines that currently exist.
# TYPE go_goroutines gauge
go_goroutines 42
go_memstats_heap_alloc_bytes 4.194304e+06
go_memstats_heap_inuse_bytes 8.388608e+06
go_memstats_sys_bytes 2.097152e+07
go_gc_duration_seconds{quantile="0.5"} 0.0001
process_resident_memory_bytes 3.145728e+07
torgate_netstack_packets_in_total 12
`

func TestGoPeakObserve(t *testing.T) {
	var g GoPeak
	if err := g.observe(strings.NewReader(scrapeText)); err != nil {
		t.Fatal(err)
	}
	// A later, lower scrape leaves the peaks; a higher heap raises it.
	lower := strings.NewReplacer("go_goroutines 42", "go_goroutines 7", "8.388608e+06", "1.6777216e+07").Replace(scrapeText)
	if err := g.observe(strings.NewReader(lower)); err != nil {
		t.Fatal(err)
	}
	want := GoPeak{RSSMiB: 30, HeapInuseMiB: 16, HeapAllocMiB: 4, SysMiB: 20, Goroutines: 42, Scrapes: 2}
	if g != want {
		t.Errorf("peak = %+v, want %+v", g, want)
	}
	if err := g.observe(strings.NewReader("# nothing\nother_metric 1\n")); err == nil {
		t.Error("a scrape without the metrics was accepted")
	}
	if g.Scrapes != 2 {
		t.Errorf("scrapes = %d after a failed one, want 2", g.Scrapes)
	}
}

// TestScraper scrapes a loopback /metrics as the harness scrapes a router.
func TestScraper(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		io.WriteString(w, scrapeText)
	}))
	defer srv.Close()
	s, err := startScrape(t.Context(), srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	g, err := s.stop(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if g.Scrapes < 1 || g.Goroutines != 42 || g.HeapInuseMiB != 8 {
		t.Errorf("peak = %+v", g)
	}
	srv.Close()
	s, err = startScrape(t.Context(), srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.stop(t.Context()); err == nil {
		t.Error("no error from a router that never answered")
	}
}

// TestGoColumns: a row's Go peaks are the highest over its runs without
// error, and the main table shows router µs/conn, peak RSS, heap and
// goroutines per test per router ("-" where a router has none).
func TestGoColumns(t *testing.T) {
	run := func(heap, goroutines float64) Sample {
		return Sample{Value: 500, CPU: 0.25, RSSMiB: 40, Load: &LoadResult{OK: 500},
			Go: &GoPeak{HeapInuseMiB: heap, Goroutines: goroutines, RSSMiB: 38, Scrapes: 3}}
	}
	kernel := Sample{Value: 1000, Load: &LoadResult{OK: 1000}}
	failed := Sample{Err: "load: boom", Go: &GoPeak{HeapInuseMiB: 99, Scrapes: 1}}
	rows := finish([]Row{
		{MTU: 1500, Test: "conn-closed", Router: "torgate", KernelRuns: []Sample{kernel, kernel, kernel}, RouterRuns: []Sample{run(12.5, 40), run(10, 55), failed}},
		{MTU: 1500, Test: "conn-closed", Router: "hev", KernelRuns: []Sample{kernel}, RouterRuns: []Sample{{Value: 400, CPU: 0.2, RSSMiB: 5, Load: &LoadResult{OK: 400}}}},
		{MTU: 1500, Test: "tcp-down-1", Router: "torgate", KernelRuns: []Sample{{Value: 10}}, RouterRuns: []Sample{{Value: 5, CPU: 1, RSSMiB: 20, Go: &GoPeak{HeapInuseMiB: 3, Goroutines: 20, Scrapes: 4}}}},
	})
	g := rows[0].RouterGo
	if g == nil || g.HeapInuseMiB != 12.5 || g.Goroutines != 55 || g.Scrapes != 6 {
		t.Errorf("row Go peak = %+v, want heap 12.5, goroutines 55, scrapes 6 (the failed run left out)", g)
	}
	if rows[1].RouterGo != nil {
		t.Errorf("hev has Go figures: %+v", rows[1].RouterGo)
	}
	md := (&Report{CPUs: 2, Rows: rows, Routers: []routerSpec{{Name: "hev", Template: "hev {config}", Config: "tunnel:\n  name: {tun}\n"}}}).Markdown()
	for _, want := range []string{
		"| router CPU s | router µs/conn | router peak RSS MiB | router peak heap MiB | router peak goroutines |",
		"| 1500 | conn-closed (1 runs failed) | torgate | 1000 conn/s | 500 conn/s | 0.50 | 0.2 | 500 | 40.0 | 12.5 | 55 |",
		"| 1500 | conn-closed | hev | 1000 conn/s | 400 conn/s | 0.40 | 0.2 | 500 | 5.0 | - | - |",
		"| 1500 | tcp-down-1 | torgate | 10 Mbit/s | 5 Mbit/s | 0.50 | 1.0 | - | 20.0 | 3.0 | 20 |",
		"    tunnel:\n      name: {tun}\n",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("Markdown lacks %q:\n%s", want, md)
		}
	}
}
