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
	var path [32]byte
	p := append(path[:0], "/proc/"...)
	p = strconv.AppendInt(p, int64(pid), 10)
	p = append(p, "/stat\x00"...)
	atFDCWD := unix.AT_FDCWD // a negative constant: convert at run time
	r, _, errno := unix.Syscall6(unix.SYS_OPENAT, uintptr(atFDCWD), uintptr(unsafe.Pointer(&p[0])),
		uintptr(unix.O_RDONLY|unix.O_CLOEXEC), 0, 0, 0)
	if errno == unix.ENOENT || errno == unix.ESRCH {
		return absent(pid)
	}
	if errno != 0 {
		return false, false
	}
	fd := int(r)
	var buf [512]byte
	n, err := unix.Read(fd, buf[:])
	unix.Close(fd)
	if err == unix.ESRCH {
		return absent(pid) // reaped between open and read
	}
	if err != nil || n <= 0 {
		return false, false
	}
	return statExiting(buf[:n])
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
	// The command name (field 2) is in parentheses and may hold anything,
	// ')' included: the fields resume after the last ')'.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return false, false
	}
	rest := stat[i+1:]
	// Fields after the name: state, ppid, pgrp, session, tty_nr, tpgid,
	// flags.
	var field [7][]byte
	for k := range field {
		rest = bytes.TrimLeft(rest, " ")
		end := bytes.IndexByte(rest, ' ')
		if end < 0 {
			end = len(rest)
		}
		field[k], rest = rest[:end], rest[end:]
	}
	if len(field[0]) != 1 || len(field[6]) == 0 {
		return false, false
	}
	switch field[0][0] {
	case 'Z', 'X', 'x':
		return true, true
	}
	var flags uint64
	for _, c := range field[6] {
		if c < '0' || c > '9' {
			return false, false
		}
		flags = flags*10 + uint64(c-'0')
	}
	return flags&pfExiting != 0, true
}
