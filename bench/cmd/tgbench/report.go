//go:build linux

package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Report is one sitting's results; results.json holds it as is.
type Report struct {
	Date    string       `json:"date"`
	Commit  string       `json:"commit,omitempty"`
	Routers []routerSpec `json:"routers"`
	Note    string       `json:"note,omitempty"`
	CPUs    int          `json:"cpus"`
	Kernel  string       `json:"kernel"`
	Repeat  int          `json:"repeat"`
	IperfS  float64      `json:"iperf_seconds"`
	LoadS   float64      `json:"load_seconds"`
	Workers int          `json:"closed_loop_workers"`
	// Dests is how many destinations the short connections were spread
	// over; 0 in results written before there was a choice: one.
	Dests int `json:"destinations,omitempty"`
	// Closer is who closed the short connections first; empty in results
	// written before there was a choice: the server.
	Closer string `json:"closer,omitempty"`
	// Upstream is the SOCKS5 server behind the routers (-upstream);
	// empty in results written before there was a choice: tgbench.
	Upstream string `json:"upstream,omitempty"`
	// Paths are the paths measured (-paths), LANRouters the LAN path's
	// routers; empty in results written before the LAN path: the TUN
	// path alone.
	Paths      []string     `json:"paths,omitempty"`
	LANRouters []routerSpec `json:"lan_routers,omitempty"`
	Rows       []Row        `json:"rows"`
}

// Row is one test at one MTU through one router, with the kernel path
// measured right before each router run.
type Row struct {
	MTU    int    `json:"mtu"`
	Test   string `json:"test"`
	Router string `json:"router"`
	// Path is pathTUN or pathLAN; empty (the TUN path) in results written
	// before the LAN path. On the LAN path the kernel runs are the
	// gateway kernel's forwarding.
	Path string `json:"path,omitempty"`
	Unit string `json:"unit"`
	// KernelRuns[i] was measured right before RouterRuns[i].
	KernelRuns []Sample `json:"kernel_runs"`
	RouterRuns []Sample `json:"router_runs"`
	// Medians over the runs without error, and router/kernel.
	KernelMedian float64 `json:"kernel_median"`
	RouterMedian float64 `json:"router_median"`
	Ratio        float64 `json:"ratio"`
	// Router resource use: median CPU seconds per run, peak RSS over all.
	RouterCPU     float64 `json:"router_cpu_s"`
	RouterPeakRSS float64 `json:"router_peak_rss_mib"`
	// The medians of the runs' user and system parts of RouterCPU.
	RouterCPUUser float64 `json:"router_cpu_user_s,omitempty"`
	RouterCPUSys  float64 `json:"router_cpu_sys_s,omitempty"`
	// RouterCtxPerSec is the median over runs of the router's context
	// switches per second of the run, for every test (the per-connection
	// figure is in RouterPerConn).
	RouterCtxPerSec float64 `json:"router_ctx_switches_per_s,omitempty"`
	// Short-connection tests: median p99 latency, total failures.
	KernelP99      float64 `json:"kernel_p99_ms,omitempty"`
	RouterP99      float64 `json:"router_p99_ms,omitempty"`
	KernelFailures int     `json:"kernel_failures"`
	RouterFailures int     `json:"router_failures"`
	Errors         int     `json:"errors"`
	// The rig's CPU on each path: per-field medians over the runs without
	// error.
	KernelRig RigCPU `json:"kernel_rig_cpu"`
	RouterRig RigCPU `json:"router_rig_cpu"`
	// Short-connection tests: CPU microseconds per completed connection,
	// per-field medians of the runs' own figures (so the fields need not
	// add up exactly).
	KernelPerConn *PerConn `json:"kernel_us_per_conn,omitempty"`
	RouterPerConn *PerConn `json:"router_us_per_conn,omitempty"`
	// KernelBottleneck and RouterBottleneck summarise the runs'
	// bottlenecks (summarizeBottlenecks), e.g. "socks 0.97 ×3".
	KernelBottleneck string `json:"kernel_bottleneck,omitempty"`
	RouterBottleneck string `json:"router_bottleneck,omitempty"`
	// RouterPerfPerConn is the median over runs of the router's CPU µs
	// per completed connection by the second source (Sample.PerfRouter).
	RouterPerfPerConn float64 `json:"router_perf_us_per_conn,omitempty"`
	PerfSource        string  `json:"perf_source,omitempty"`
	// RouterGo is the peak over the runs of what the router's /metrics
	// reported (routers with {metrics}: torgate), per field.
	RouterGo *GoPeak `json:"router_go_peak,omitempty"`
}

// Sample is one run of one test on one path.
type Sample struct {
	Value float64 `json:"value"`
	// The router's CPU seconds over the run (utime+stime, all threads),
	// and the same split into user (utime) and system (stime) time.
	CPU     float64 `json:"cpu_s,omitempty"`
	CPUUser float64 `json:"cpu_user_s,omitempty"`
	CPUSys  float64 `json:"cpu_sys_s,omitempty"`
	// CtxSwitches is the router's context switches over the run,
	// voluntary and involuntary, summed over its live threads (see
	// ctxSwitches).
	CtxSwitches int64       `json:"ctx_switches,omitempty"`
	RSSMiB      float64     `json:"peak_rss_mib,omitempty"`
	Load        *LoadResult `json:"load,omitempty"`
	// Go is the peak of the router's /metrics over the run, for a router
	// that serves them ({metrics}).
	Go  *GoPeak `json:"go_peak,omitempty"`
	Err string  `json:"error,omitempty"`
	// Rig is the CPU the rest of the rig and the machine used in this run.
	Rig RigCPU `json:"rig_cpu"`
	// Util is Rig (and the router's CPU) as cores over the run's wall
	// time, and Bottleneck what it names as the run's bound
	// (bottleneck.go). Absent in results written before they existed.
	Util       *Utilisation `json:"utilisation,omitempty"`
	Bottleneck *Bottleneck  `json:"bottleneck,omitempty"`
	// PerfRouter is the router's CPU seconds over the load by a second
	// source, PerfSource ("perf task-clock" or "schedstat"), when
	// -perf-stat asked for it (short-connection tests only).
	PerfRouter float64 `json:"perf_router_s,omitempty"`
	PerfSource string  `json:"perf_source,omitempty"`
	PerfErr    string  `json:"perf_error,omitempty"`
}

// perfNote is the second CPU source's figure for the log, "" without one.
func (s Sample) perfNote() string {
	if s.PerfSource == "" {
		return ""
	}
	return fmt.Sprintf("; router cpu %.2fs by %s (/proc: %.2fs)", s.PerfRouter, s.PerfSource, s.CPU)
}

func (s Sample) extra() string {
	if s.Load == nil {
		return ""
	}
	l := s.Load
	return fmt.Sprintf("  p50 %.2fms p99 %.2fms failures %d port_busy %d late %d", l.P50, l.P99, l.Failures, l.PortBusy, l.Late)
}

// median is the median of xs, 0 for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// medianBy is the median of field over xs.
func medianBy[T any](xs []T, field func(T) float64) float64 {
	vs := make([]float64, len(xs))
	for i, x := range xs {
		vs[i] = field(x)
	}
	return median(vs)
}

// finish computes the medians and totals of each row.
func finish(rows []Row) []Row {
	for i := range rows {
		r := &rows[i]
		r.Unit = unitOf(r.Test)
		var kv, rv, cpu, cpuUser, cpuSys, kp, rp, csw []float64
		r.KernelFailures, r.RouterFailures, r.Errors, r.RouterPeakRSS, r.RouterGo = 0, 0, 0, 0, nil
		for _, s := range r.KernelRuns {
			if s.Err != "" {
				r.Errors++
				continue
			}
			kv = append(kv, s.Value)
			if s.Load != nil {
				kp = append(kp, s.Load.P99)
				r.KernelFailures += s.Load.Failures
			}
		}
		for _, s := range r.RouterRuns {
			if s.Err != "" {
				r.Errors++
				continue
			}
			rv = append(rv, s.Value)
			cpu, cpuUser, cpuSys = append(cpu, s.CPU), append(cpuUser, s.CPUUser), append(cpuSys, s.CPUSys)
			if s.CtxSwitches > 0 && s.Rig.Wall > 0 {
				csw = append(csw, float64(s.CtxSwitches)/s.Rig.Wall)
			}
			r.RouterPeakRSS = max(r.RouterPeakRSS, s.RSSMiB)
			if s.Go != nil {
				if r.RouterGo == nil {
					r.RouterGo = &GoPeak{}
				}
				r.RouterGo.raise(*s.Go)
				r.RouterGo.Scrapes += s.Go.Scrapes
			}
			if s.Load != nil {
				rp = append(rp, s.Load.P99)
				r.RouterFailures += s.Load.Failures
			}
		}
		r.KernelMedian, r.RouterMedian = median(kv), median(rv)
		if r.KernelMedian > 0 {
			r.Ratio = r.RouterMedian / r.KernelMedian
		}
		r.RouterCPU, r.RouterCPUUser, r.RouterCPUSys = median(cpu), median(cpuUser), median(cpuSys)
		r.RouterCtxPerSec = math.Round(median(csw))
		r.KernelP99, r.RouterP99 = median(kp), median(rp)
		r.KernelRig, r.RouterRig = medianRig(r.KernelRuns), medianRig(r.RouterRuns)
		r.KernelBottleneck, r.RouterBottleneck = summarizeBottlenecks(r.KernelRuns), summarizeBottlenecks(r.RouterRuns)
		r.RouterPerfPerConn, r.PerfSource = medianPerfPerConn(r.RouterRuns)
		r.KernelPerConn, r.RouterPerConn = medianPerConn(r.KernelRuns), medianPerConn(r.RouterRuns)
	}
	return rows
}

// Markdown renders the report as the table kept in bench/README.md.
func (rep *Report) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s, commit %s, %d CPUs, kernel %s; medians of %d runs; iperf3 %gs, loads %gs, closed loop %d workers, %d destination(s), %s closes first\n\n",
		rep.Date, orDash(rep.Commit), rep.CPUs, rep.Kernel, rep.Repeat, rep.IperfS, rep.LoadS, rep.Workers, max(rep.Dests, 1), cmp.Or(rep.Closer, closerServer))
	for _, r := range slices.Concat(rep.Routers, rep.LANRouters) {
		fmt.Fprintf(&b, "Router %s: `%s`\n\n", r.Name, r.Template)
		if r.Config != "" {
			// Indented: a code block in Markdown.
			fmt.Fprintf(&b, "with {config}:\n\n    %s\n\n", strings.ReplaceAll(strings.TrimSpace(r.Config), "\n", "\n    "))
		}
	}
	if slices.Contains(rep.Paths, pathLAN) {
		b.WriteString("Rows marked (lan) are the LAN path: a workstation on a veth whose gateway end the router serves (torgate --lan) or whose TCP the gateway REDIRECTs (redsocks); its kernel figure is the gateway kernel's forwarding.\n\n")
	}
	if rep.Upstream != "" {
		fmt.Fprintf(&b, "SOCKS5 server behind the routers: %s\n\n", rep.Upstream)
	}
	if rep.Note != "" {
		fmt.Fprintf(&b, "Settings: %s\n\n", rep.Note)
	}
	b.WriteString("Router CPU s: median per run. µs/conn: router CPU per completed connection (short-connection tests; by part in the table below). " +
		"Peak RSS: VmHWM, the highest over the runs. Peak heap / goroutines: the highest go_memstats_heap_inuse_bytes / go_goroutines scraped from the router's /metrics each second (routers that serve them). " +
		"Bottleneck: per run, the measured process (router, socks, target, iperf3-server, client) that used 0.9 of a core or more over the run's wall time (the highest if several; a multi-threaded process can pass 1.00), else \"machine\" when all CPUs together were 90 % busy or more, else \"none\" (with the machine's busy share); the runs' verdicts with their median and count.\n\n")
	b.WriteString("| MTU | test | router | kernel | router | ratio | router CPU s | router µs/conn | router peak RSS MiB | router peak heap MiB | router peak goroutines | p99 ms kernel / router | failures kernel / router | machine CPU s kernel / router | bottleneck kernel | bottleneck router |\n")
	b.WriteString("| --: | --- | --- | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: | --- | --- |\n")
	for _, r := range rep.Rows {
		p99, fails := "", ""
		if !strings.HasPrefix(r.Test, "tcp-") {
			p99 = fmt.Sprintf("%.2f / %.2f", r.KernelP99, r.RouterP99)
			fails = fmt.Sprintf("%d / %d", r.KernelFailures, r.RouterFailures)
		}
		errs := ""
		if r.Errors > 0 {
			errs = fmt.Sprintf(" (%d runs failed)", r.Errors)
		}
		usConn, heap, goroutines := "-", "-", "-"
		if r.RouterPerConn != nil {
			usConn = fmt.Sprintf("%.0f", r.RouterPerConn.Router)
		}
		if r.RouterGo != nil {
			heap, goroutines = fmt.Sprintf("%.1f", r.RouterGo.HeapInuseMiB), fmt.Sprintf("%.0f", r.RouterGo.Goroutines)
		}
		fmt.Fprintf(&b, "| %d | %s%s | %s | %.0f %s | %.0f %s | %.2f | %.1f | %s | %.1f | %s | %s | %s | %s | %.1f / %.1f | %s | %s |\n",
			r.MTU, r.Test, errs, r.label(r.Router), r.KernelMedian, r.Unit, r.RouterMedian, r.Unit, r.Ratio, r.RouterCPU, usConn, r.RouterPeakRSS, heap, goroutines, p99, fails,
			r.KernelRig.Machine, r.RouterRig.Machine, orDash(r.KernelBottleneck), orDash(r.RouterBottleneck))
	}
	rep.perConnTable(&b)
	return b.String()
}

// perConnTable renders the short-connection tests' CPU per connection, by
// process: the kernel path once per test, then each router.
func (rep *Report) perConnTable(b *strings.Builder) {
	var rows []Row
	for _, r := range rep.Rows {
		if r.KernelPerConn != nil || r.RouterPerConn != nil {
			rows = append(rows, r)
		}
	}
	if len(rows) == 0 {
		return
	}
	fmt.Fprintf(b, "\nCPU per completed connection, µs (medians over runs of CPU s / connections; %d CPUs). "+
		"Machine: busy time of all CPUs (/proc/stat). Target + load: the short-connection server and the load generator. "+
		"Other: machine minus every process measured (softirq not charged to them, the harness, anything else running). "+
		"User / sys: the router's and the SOCKS server's CPU split into utime and stime (/proc/PID/stat). "+
		"Ctx sw/conn: context switches per connection (a count, not µs), voluntary and involuntary, summed over the process's threads (/proc/PID/task/*/status; threads that exit during a run are not counted). "+
		"Router, 2nd source: the router's CPU per connection by perf stat's task-clock over the load (-perf-stat; or its threads' schedstat run time where perf cannot count, marked \"(schedstat)\"), to check the /proc figure. "+
		"Bottleneck: as in the table above.\n\n", rep.CPUs)
	b.WriteString("| MTU | test | path | conn/s | machine | router | router, 2nd source | SOCKS server | target + load | other | router user / sys | router ctx sw/conn | SOCKS user / sys | SOCKS ctx sw/conn | bottleneck |\n")
	b.WriteString("| --: | --- | --- | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: | --- |\n")
	line := func(r Row, path string, value float64, p *PerConn, router bool) {
		bn := r.KernelBottleneck
		if router {
			bn = r.RouterBottleneck
		}
		if p == nil {
			fmt.Fprintf(b, "| %d | %s | %s | %.0f | - | - | - | - | - | - | - | - | - | - | %s |\n", r.MTU, r.Test, path, value, orDash(bn))
			return
		}
		ro, ro2, roSplit, roCtx := "-", "-", "-", "-"
		if router {
			ro = fmt.Sprintf("%.0f", p.Router)
			roSplit = userSys(p.RouterUser, p.RouterSys)
			roCtx = fmt.Sprintf("%.1f", p.RouterCtxSw)
			if r.PerfSource != "" {
				ro2 = fmt.Sprintf("%.0f", r.RouterPerfPerConn)
				if r.PerfSource != "perf task-clock" {
					ro2 += " (" + r.PerfSource + ")"
				}
			}
		}
		fmt.Fprintf(b, "| %d | %s | %s | %.0f | %.0f | %s | %s | %.0f | %.0f | %.0f | %s | %s | %s | %.1f | %s |\n",
			r.MTU, r.Test, path, value, p.Machine, ro, ro2, p.Socks, p.Target+p.Load, p.Other,
			roSplit, roCtx, userSys(p.SocksUser, p.SocksSys), p.SocksCtxSw, orDash(bn))
	}
	for i, r := range rows {
		if i == 0 || rows[i-1].MTU != r.MTU || rows[i-1].Test != r.Test || rows[i-1].Path != r.Path {
			line(r, r.label("kernel"), r.KernelMedian, r.KernelPerConn, false)
		}
		line(r, r.label(r.Router), r.RouterMedian, r.RouterPerConn, true)
	}
}

// label is name as the tables show it: marked "(lan)" on the LAN path.
func (r Row) label(name string) string {
	if r.Path == pathLAN {
		return name + " (lan)"
	}
	return name
}

// userSys renders a user / system split in µs.
func userSys(user, sys float64) string {
	return fmt.Sprintf("%.0f / %.0f", user, sys)
}

// String is the run's rig CPU for the log.
func (r RigCPU) String() string {
	return fmt.Sprintf("rig cpu: socks %.2fs (user %.2f sys %.2f, ctxsw %d) target %.2fs iperf3-server %.2fs client %.2fs machine %.2fs in %.1fs",
		r.Socks, r.SocksUser, r.SocksSys, r.SocksCtxSwitches, r.Target, r.IperfServer, r.Client, r.Machine, r.Wall)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// writeReport writes results.json and results.md and prints the table.
func (e *env) writeReport(rep *Report, stdout io.Writer) error {
	js, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	md := rep.Markdown()
	if err := os.WriteFile(filepath.Join(e.f.out, "results.json"), js, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(e.f.out, "results.md"), []byte(md), 0o644); err != nil {
		return err
	}
	fmt.Fprint(stdout, md)
	fmt.Fprintf(stdout, "\nresults: %s\n", e.f.out)
	return nil
}
