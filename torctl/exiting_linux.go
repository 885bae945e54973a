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

// procExiting reports whether process pid is exiting or gone, from
// /proc/PID/stat: no such process, a zombie or dead task, or PF_EXITING.
// The kernel sets PF_EXITING in do_exit before it closes the process's
// files (exit_signals precedes exit_files), so once a killed tor's
// sockets read as closed, this already says so. Any other failure to read
// (a /proc mounted with hidepid) reports false: no evidence. It runs once
// per stream the upstream ends, so it does not allocate (unix.Open would
// copy the path).
func procExiting(pid int) bool {
	var path [32]byte
	p := append(path[:0], "/proc/"...)
	p = strconv.AppendInt(p, int64(pid), 10)
	p = append(p, "/stat\x00"...)
	atFDCWD := unix.AT_FDCWD // a negative constant: convert at run time
	r, _, errno := unix.Syscall6(unix.SYS_OPENAT, uintptr(atFDCWD), uintptr(unsafe.Pointer(&p[0])),
		uintptr(unix.O_RDONLY|unix.O_CLOEXEC), 0, 0, 0)
	if errno != 0 {
		return errno == unix.ENOENT || errno == unix.ESRCH
	}
	fd := int(r)
	var buf [512]byte
	n, err := unix.Read(fd, buf[:])
	unix.Close(fd)
	if err == unix.ESRCH {
		return true
	}
	if err != nil || n <= 0 {
		return false
	}
	return statExiting(buf[:n])
}

// statExiting reads the state and flags fields of a /proc/PID/stat line.
func statExiting(stat []byte) bool {
	// The command name (field 2) is in parentheses and may hold anything,
	// ')' included: the fields resume after the last ')'.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return false
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
		return false
	}
	switch field[0][0] {
	case 'Z', 'X', 'x':
		return true
	}
	var flags uint64
	for _, c := range field[6] {
		if c < '0' || c > '9' {
			return false
		}
		flags = flags*10 + uint64(c-'0')
	}
	return flags&pfExiting != 0
}
