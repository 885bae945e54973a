package torctl

import (
	"bytes"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"
)

// pfExiting is the kernel's PF_EXITING task flag (include/linux/sched.h),
// shown in field 9 of /proc/PID/stat.
const pfExiting = 0x4

// procState reports whether process pid is exiting or gone, and whether
// it knows. It reads /proc/PID/stat: a zombie or dead task, or
// PF_EXITING, is exiting; the kernel sets that flag in do_exit before it
// closes the process's files (exit_signals precedes exit_files), so once a
// killed tor's sockets read as closed, this already says so. /proc may
// hide another user's process (hidepid, as hardened systems mount it, with
// tor running as debian-tor): an absent entry is gone only if kill(pid, 0),
// which hidepid does not touch, finds no such process; otherwise nothing
// is known. It runs once per stream the upstream ends, so it does not
// allocate (unix.Open would copy the path).
func procState(pid int) (exiting, known bool) {
	var buf [512]byte
	n, errno := readStat(pid, &buf)
	if errno == unix.ENOENT || errno == unix.ESRCH {
		return absent(pid)
	}
	if errno != 0 || n <= 0 {
		return false, false
	}
	exiting, _, ok := statFields(buf[:n])
	return exiting, ok
}

// procStateSince is procState for the process that had pid and start
// time start (field 22 of /proc/PID/stat) when it was verified: a
// different start time means that process is gone and its pid reused.
// The process was visible in /proc when it was verified, so an absent
// entry means it is gone, whoever now holds its pid. Like procState it
// does not allocate.
func procStateSince(pid int, start uint64) (gone, known bool) {
	var buf [512]byte
	n, errno := readStat(pid, &buf)
	if errno == unix.ENOENT || errno == unix.ESRCH {
		return true, true
	}
	if errno != 0 || n <= 0 {
		return false, false
	}
	exiting, st, ok := statFields(buf[:n])
	if !ok || st == 0 {
		return false, false
	}
	return exiting || st != start, true
}

// procStart returns the start time of process pid (field 22 of
// /proc/PID/stat, in clock ticks since boot), which tells it from a later
// process given the same pid.
func procStart(pid int) (uint64, error) {
	var buf [512]byte
	n, errno := readStat(pid, &buf)
	if errno != 0 {
		return 0, errno
	}
	_, st, ok := statFields(buf[:n])
	if !ok || st == 0 {
		return 0, unix.EINVAL
	}
	return st, nil
}

// readStat reads /proc/PID/stat into buf without allocating: n bytes, or
// the errno of the open or the read.
func readStat(pid int, buf *[512]byte) (n int, errno unix.Errno) {
	var path [32]byte
	p := append(path[:0], "/proc/"...)
	p = strconv.AppendInt(p, int64(pid), 10)
	p = append(p, "/stat\x00"...)
	atFDCWD := unix.AT_FDCWD // a negative constant: convert at run time
	r, _, e := unix.Syscall6(unix.SYS_OPENAT, uintptr(atFDCWD), uintptr(unsafe.Pointer(&p[0])),
		uintptr(unix.O_RDONLY|unix.O_CLOEXEC), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	fd := int(r)
	n, err := unix.Read(fd, buf[:])
	unix.Close(fd)
	if err != nil {
		if e, ok := err.(unix.Errno); ok {
			return 0, e // ESRCH: reaped between open and read
		}
		return 0, unix.EIO
	}
	return n, 0
}

// absent tells a process that is gone from one /proc hides.
func absent(pid int) (gone, known bool) {
	if unix.Kill(pid, 0) == unix.ESRCH {
		return true, true
	}
	return false, false
}

// statExiting reads the state and flags fields of a /proc/PID/stat line;
// ok (known) is false if the line does not parse.
func statExiting(stat []byte) (exiting, ok bool) {
	exiting, _, ok = statFields(stat)
	return exiting, ok
}

// statFields reads the state, flags and start time (fields 3, 9 and 22)
// of a /proc/PID/stat line. ok is false if state or flags do not parse;
// start is 0 if the line ends before field 22 or it does not parse.
func statFields(stat []byte) (exiting bool, start uint64, ok bool) {
	// The command name (field 2) is in parentheses and may hold anything,
	// ')' included: the fields resume after the last ')'.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return false, 0, false
	}
	rest := stat[i+1:]
	// Fields after the name, from 3 (state) to 22 (starttime).
	var field [20][]byte
	for k := range field {
		rest = bytes.TrimLeft(rest, " ")
		end := bytes.IndexAny(rest, " \n")
		if end < 0 {
			end = len(rest)
		}
		field[k], rest = rest[:end], rest[end:]
	}
	// Indexes: field N of proc(5) is field[N-3].
	const state, flags, starttime = 0, 6, 19
	if len(field[state]) != 1 || len(field[flags]) == 0 {
		return false, 0, false
	}
	start, _ = decimal(field[starttime])
	switch field[state][0] {
	case 'Z', 'X', 'x':
		return true, start, true
	}
	fl, ok := decimal(field[flags])
	if !ok {
		return false, 0, false
	}
	return fl&pfExiting != 0, start, true
}

// decimal parses an unsigned decimal field without allocating.
func decimal(b []byte) (uint64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	var v uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + uint64(c-'0')
	}
	return v, true
}
