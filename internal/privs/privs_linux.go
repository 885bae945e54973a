package privs

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// CanDrop reports whether Keep can work in this binary: ErrCgo if it links
// cgo (checked with a harmless read, changing nothing), nil otherwise. A
// caller asks before it takes anything it would later have to give up.
func CanDrop() error {
	if _, _, e := syscall.AllThreadsSyscall(unix.SYS_PRCTL, unix.PR_CAPBSET_READ, 0, 0); e == syscall.ENOTSUP {
		return ErrCgo
	}
	return nil
}

// Keep leaves the process with exactly keep in its effective, permitted
// and bounding sets, and nothing inheritable or ambient, on every thread.
// It needs CAP_SETPCAP (root has it) to shrink the bounding set, so it
// does that first; without CAP_SETPCAP (a non-root process given a few
// capabilities) the bounding set is left alone: such a process gains
// nothing from it at exec. It is one-way: what it drops cannot come back.
//
// A failure after the bounding set was changed leaves the process with
// less than before, never more.
func Keep(keep Set) error {
	last, err := lastCap()
	if err != nil {
		return err
	}
	// Probe: ENOTSUP means cgo, before anything changed.
	if err := CanDrop(); err != nil {
		return err
	}
	cur, err := Read(0)
	if err != nil {
		return err
	}
	for c := Cap(0); c <= last; c++ {
		if keep.Has(c) || !cur.Effective.Has(CapSetPCAP) || !cur.Bounding.Has(c) {
			continue
		}
		if _, _, e := syscall.AllThreadsSyscall(unix.SYS_PRCTL, unix.PR_CAPBSET_DROP, uintptr(c), 0); e != 0 {
			return fmt.Errorf("privs: drop %v from the bounding set: %w", c, e)
		}
	}
	if _, _, e := syscall.AllThreadsSyscall6(unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0, 0); e != 0 && e != syscall.EINVAL {
		// EINVAL: a kernel before 4.3 has no ambient set.
		return fmt.Errorf("privs: clear the ambient set: %w", e)
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	for i := range data {
		w := uint32(uint64(keep) >> (32 * i))
		data[i].Effective, data[i].Permitted = w, w
	}
	_, _, e := syscall.AllThreadsSyscall(unix.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0)
	runtime.KeepAlive(&hdr)
	runtime.KeepAlive(&data)
	if e != 0 {
		return fmt.Errorf("privs: capset: %w", e)
	}
	return nil
}

// lastCap is the highest capability this kernel knows.
func lastCap() (Cap, error) {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		return 0, fmt.Errorf("privs: %w", err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n < 0 || n > 63 {
		return 0, fmt.Errorf("privs: cap_last_cap %q", b)
	}
	return Cap(n), nil
}

// Sets are a process's capability sets as /proc/PID/status shows them.
type Sets struct {
	Effective, Permitted, Inheritable, Bounding, Ambient Set
}

// Read returns the capability sets of process pid (0: this process;
// /proc/self/status shows the calling thread's, which after Keep are
// every thread's).
func Read(pid int) (Sets, error) {
	p := "/proc/self/status"
	if pid != 0 {
		p = fmt.Sprintf("/proc/%d/status", pid)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return Sets{}, fmt.Errorf("privs: %w", err)
	}
	return parseStatus(string(b))
}

// parseStatus reads the Cap* lines of a /proc/PID/status.
func parseStatus(s string) (Sets, error) {
	var out Sets
	fields := map[string]*Set{"CapEff": &out.Effective, "CapPrm": &out.Permitted, "CapInh": &out.Inheritable, "CapBnd": &out.Bounding, "CapAmb": &out.Ambient}
	seen := 0
	for l := range strings.Lines(s) {
		k, v, ok := strings.Cut(l, ":")
		dst := fields[k]
		if !ok || dst == nil {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		if err != nil {
			return Sets{}, fmt.Errorf("privs: %s: %w", k, err)
		}
		*dst = Set(n)
		seen++
	}
	if seen < 4 {
		return Sets{}, errors.New("privs: no capability lines in status")
	}
	return out, nil
}
