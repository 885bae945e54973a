//go:build linux

package main

import (
	"math"
	"strings"
	"testing"
)

// TestPerConn: CPU per connection is each run's CPU over its completed
// connections, the median is taken per field, and the Markdown gets the
// kernel path once per test and a line per router.
func TestPerConn(t *testing.T) {
	kernel := Sample{Value: 1000, Load: &LoadResult{OK: 1000}, Rig: RigCPU{Target: 0.1, Client: 0.1, Machine: 0.25}}
	router := func(cpu float64) Sample {
		return Sample{Value: 500, CPU: cpu, Load: &LoadResult{OK: 500}, Rig: RigCPU{Socks: 0.1, Target: 0.05, Client: 0.05, Machine: 0.5}}
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
	near("router rig machine s", rows[0].RouterRig.Machine, 0.5)
	if rows[2].KernelPerConn != nil || rows[2].RouterPerConn != nil {
		t.Error("iperf row has per-connection figures")
	}
	near("iperf machine s", rows[2].RouterRig.Machine, 3)

	md := (&Report{CPUs: 2, Rows: rows}).Markdown()
	for _, want := range []string{
		"| 1500 | conn-closed | kernel | 1000 | 250 | - | 0 | 200 | 50 |",
		"| 1500 | conn-closed | a | 500 | 1000 | 450 | 200 | 200 | 150 |",
		"| 1500 | conn-closed | b | 500 | 1000 | 200 | 200 | 200 | 400 |",
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
