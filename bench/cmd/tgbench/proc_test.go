//go:build linux

package main

import (
	"math"
	"os"
	"testing"
	"time"
)

// TestParseStatCPU: utime and stime are fields 14 and 15 of
// /proc/PID/stat, counted after the last ')' so that a command name with
// spaces and parentheses does not shift them.
func TestParseStatCPU(t *testing.T) {
	tests := []struct {
		name    string
		stat    string
		want    procCPU
		wantErr bool
	}{
		{
			name: "plain",
			stat: "14980 (cat) R 14976 14976 10271 0 -1 4194304 100 0 0 0 250 37 0 0 20 0 1 0 77187 3133440 389\n",
			want: procCPU{user: 2.5, sys: 0.37},
		},
		{
			name: "name with spaces and parentheses",
			stat: "7 (a) b (c) S 1 7 7 0 -1 4194560 5 0 0 0 1 12345 3 4 20 0 9 0 100 0 0\n",
			want: procCPU{user: 0.01, sys: 123.45},
		},
		{name: "no parenthesis", stat: "7 tgbench S 1 7 7", wantErr: true},
		{name: "short", stat: "7 (x) S 1 7 7 0 -1 4194560 5 0 0 0 1", wantErr: true},
		{name: "not a number", stat: "7 (x) S 1 7 7 0 -1 4194560 5 0 0 0 x 2 0 0", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStatCPU([]byte(tt.stat))
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseStatCPU() error = %v, want error %v", err, tt.wantErr)
			}
			if math.Abs(got.user-tt.want.user) > 1e-9 || math.Abs(got.sys-tt.want.sys) > 1e-9 {
				t.Errorf("parseStatCPU() = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// statusText is the tail of a thread's /proc/PID/task/TID/status.
const statusText = `Name:	tgbench
Umask:	0022
State:	S (sleeping)
Tgid:	4242
Pid:	4250
Threads:	9
VmHWM:	   24576 kB
Cpus_allowed_list:	0-1
Mems_allowed_list:	0
voluntary_ctxt_switches:	15021
nonvoluntary_ctxt_switches:	387
`

func TestParseCtxtSwitches(t *testing.T) {
	tests := []struct {
		name             string
		status           string
		wantVol, wantNon int64
		wantErr          bool
	}{
		{name: "thread status", status: statusText, wantVol: 15021, wantNon: 387},
		{name: "no trailing newline, spaces", status: "voluntary_ctxt_switches: 0\nnonvoluntary_ctxt_switches: 33", wantVol: 0, wantNon: 33},
		{name: "missing nonvoluntary", status: "Name:\tx\nvoluntary_ctxt_switches:\t5\n", wantErr: true},
		{name: "missing both", status: "Name:\tx\n", wantErr: true},
		{name: "not a number", status: "voluntary_ctxt_switches:\tmany\nnonvoluntary_ctxt_switches:\t1\n", wantErr: true},
		{name: "negative", status: "voluntary_ctxt_switches:\t-1\nnonvoluntary_ctxt_switches:\t1\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vol, non, err := parseCtxtSwitches([]byte(tt.status))
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseCtxtSwitches() error = %v, want error %v", err, tt.wantErr)
			}
			if vol != tt.wantVol || non != tt.wantNon {
				t.Errorf("parseCtxtSwitches() = %d, %d, want %d, %d", vol, non, tt.wantVol, tt.wantNon)
			}
		})
	}
}

// TestReadProcSelf reads this test process's own counters (no root
// needed): sleeping is a voluntary context switch, so the count grows.
func TestReadProcSelf(t *testing.T) {
	s0 := readProc(os.Getpid())
	if !s0.cpuOK || !s0.ctxOK {
		t.Fatalf("readProc(self) = %+v", s0)
	}
	for range 5 {
		time.Sleep(time.Millisecond)
	}
	_, ctx := readProc(os.Getpid()).since(s0)
	if ctx <= 0 {
		t.Errorf("context switches over 5 sleeps = %d, want > 0", ctx)
	}
}

// TestProcSnapSince: a figure unread at either end is zero, not the whole
// count since the process started.
func TestProcSnapSince(t *testing.T) {
	full := procSnap{cpu: procCPU{user: 3, sys: 2}, ctxSw: 1000, cpuOK: true, ctxOK: true}
	start := procSnap{cpu: procCPU{user: 1, sys: 0.5}, ctxSw: 400, cpuOK: true, ctxOK: true}
	cpu, ctx := full.since(start)
	if cpu != (procCPU{user: 2, sys: 1.5}) || ctx != 600 {
		t.Errorf("since = %+v, %d, want {2 1.5}, 600", cpu, ctx)
	}
	cpu, ctx = full.since(procSnap{})
	if cpu != (procCPU{}) || ctx != 0 {
		t.Errorf("since an unread start = %+v, %d, want zeros", cpu, ctx)
	}
	gone := readProc(-1) // no such process
	if gone.cpuOK || gone.ctxOK {
		t.Errorf("readProc(-1) = %+v, want nothing read", gone)
	}
	if cpu, ctx = gone.since(start); cpu != (procCPU{}) || ctx != 0 {
		t.Errorf("since with an unread end = %+v, %d, want zeros", cpu, ctx)
	}
}

// FuzzProcParsers: the /proc parsers never panic, and what they accept
// they read as the kernel writes it (no negative counts).
func FuzzProcParsers(f *testing.F) {
	f.Add([]byte("14980 (cat) R 14976 14976 10271 0 -1 4194304 100 0 0 0 250 37 0 0 20 0 1 0 77187 3133440 389\n"))
	f.Add([]byte(statusText))
	f.Fuzz(func(t *testing.T, b []byte) {
		parseStatCPU(b)
		if vol, non, err := parseCtxtSwitches(b); err == nil && (vol < 0 || non < 0) {
			t.Errorf("parseCtxtSwitches accepted negative counts %d, %d", vol, non)
		}
	})
}
