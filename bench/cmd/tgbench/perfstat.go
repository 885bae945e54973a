//go:build linux

package main

import (
	"bytes"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// A second measure of the router's CPU (-perf-stat), beside /proc/PID/stat:
// perf stat's task-clock, the scheduler's own count of the nanoseconds the
// process's threads were on a CPU, read through a perf event rather than
// the tick-sampled utime/stime the first figure is scaled from. If the two
// disagree, a per-connection figure is not to be trusted; on this rig they
// must, since the softirq work a system call triggers is charged to the
// task that runs it either way. Where perf cannot count (no perf, or no
// permission), the sum of the threads' /proc/PID/task/TID/schedstat run
// times is the second source: the same scheduler clock, without perf.

// perfStartup is how long perf stat gets to attach before the load starts.
// The router is idle then, so a longer wait costs nothing but wall time.
const perfStartup = 200 * time.Millisecond

// perfStat is one perf stat (and schedstat) reading in progress.
type perfStat struct {
	pid     int
	cmd     *exec.Cmd // nil when perf could not be started
	out     bytes.Buffer
	err     error // why perf could not be started
	sched0  float64
	schedOK bool
}

// startPerfStat attaches perf stat to pid's threads and reads their
// schedstat run times.
func startPerfStat(pid int) *perfStat {
	p := &perfStat{pid: pid}
	p.sched0, p.err = schedRunSeconds(pid)
	p.schedOK = p.err == nil
	path, err := exec.LookPath("perf")
	if err != nil {
		p.err = err
		return p
	}
	cmd := exec.Command(path, "stat", "-e", "task-clock", "-x,", "-p", strconv.Itoa(pid))
	cmd.Stderr = &p.out // perf stat writes its counts to stderr
	if err := cmd.Start(); err != nil {
		p.err = err
		return p
	}
	p.cmd = cmd
	time.Sleep(perfStartup)
	return p
}

// stop ends the reading and returns the router's CPU seconds in between
// and their source.
func (p *perfStat) stop() (secs float64, source string, err error) {
	var perfErr error
	if p.cmd != nil {
		// SIGINT: perf stat prints its counts and exits.
		p.cmd.Process.Signal(syscall.SIGINT)
		done := make(chan error, 1)
		go func() { done <- p.cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			p.cmd.Process.Kill()
			<-done
		}
		secs, perfErr = parsePerfTaskClock(p.out.Bytes())
		if perfErr == nil {
			return secs, "perf task-clock", nil
		}
	} else {
		perfErr = p.err
	}
	if p.schedOK {
		if s1, err := schedRunSeconds(p.pid); err == nil {
			return roundUS(s1 - p.sched0), "schedstat", nil
		}
	}
	return 0, "", fmt.Errorf("perf: %v; no schedstat either", perfErr)
}

// parsePerfTaskClock reads the task-clock line of perf stat -x, output,
// "3128.68,msec,task-clock,3128680,100.00,0.029,CPUs utilized", and
// returns seconds. "<not counted>" or "<not supported>" is an error.
func parsePerfTaskClock(out []byte) (float64, error) {
	for line := range strings.SplitSeq(string(out), "\n") {
		f := strings.Split(strings.TrimSpace(line), ",")
		if len(f) < 3 || f[2] != "task-clock" {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return 0, fmt.Errorf("perf stat: task-clock %q", f[0])
		}
		switch f[1] {
		case "msec":
			return roundUS(v / 1e3), nil
		case "ns", "nsec":
			return roundUS(v / 1e9), nil
		}
		return 0, fmt.Errorf("perf stat: task-clock unit %q", f[1])
	}
	return 0, fmt.Errorf("perf stat: no task-clock line in %q", bytes.TrimSpace(out))
}

// schedRunSeconds is the sum over pid's live threads of the time they
// spent on a CPU (the first field of /proc/PID/task/TID/schedstat, in
// ns). /proc/PID/schedstat alone is the main thread's. A thread that
// exits in between takes its time with it, as for ctxSwitches.
func schedRunSeconds(pid int) (float64, error) {
	var ns float64
	err := eachThread(pid, "schedstat", func(b []byte) error {
		f := strings.Fields(string(b))
		if len(f) < 1 {
			return errors.New("empty")
		}
		v, err := strconv.ParseFloat(f[0], 64)
		ns += v
		return err
	})
	return ns / 1e9, err
}

// medianPerfPerConn is the median over runs of the second source's router
// µs per completed connection, and that source ("" when no run has one;
// "mixed" if runs fell back differently).
func medianPerfPerConn(samples []Sample) (float64, string) {
	var us []float64
	source := ""
	for _, s := range samples {
		if s.Err != "" || s.PerfSource == "" || s.Load == nil || s.Load.OK == 0 {
			continue
		}
		us = append(us, s.PerfRouter*1e6/float64(s.Load.OK))
		if source == "" {
			source = s.PerfSource
		} else if source != s.PerfSource {
			source = "mixed"
		}
	}
	return median(us), source
}
