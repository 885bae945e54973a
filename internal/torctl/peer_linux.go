package torctl

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// This file verifies, with the kernel's help, that the peer of an attach-mode
// control connection is the process whose pid the attached Tor reports
// (GETINFO process/pid), so that its /proc entry can stand as evidence of
// Tor's death (Tor.ProcessState). The pid Tor reports is only a claim: a
// relay (socat, an SSH forward, a container's port mapping) or another
// program could stand between, and trusting a wrong process would turn a
// dying Tor's closed streams into clean ends. So the kernel must name that
// process as the one holding the other end of the connection.

// verifyPeer returns the evidence for the tor process pid at the other end
// of nc, or an *EvidenceError saying why there is none.
func verifyPeer(nc net.Conn, pid int) (procEvidence, error) {
	if pid <= 0 {
		return procEvidence{}, &EvidenceError{Reason: fmt.Sprintf("tor reported pid %d", pid)}
	}
	// The start time is read before and after the check: the same value
	// means one process was checked, not a dead one's pid reused meanwhile.
	start, err := procStart(pid)
	if err != nil {
		return procEvidence{}, &EvidenceError{Reason: "cannot read tor's /proc/PID/stat", Err: err}
	}
	switch c := nc.(type) {
	case *net.UnixConn:
		err = verifyUnix(c, pid)
	case *net.TCPConn:
		err = verifyTCP(c, pid)
	default:
		err = &EvidenceError{Reason: fmt.Sprintf("control connection is a %T, not a unix or TCP socket", nc)}
	}
	if err != nil {
		return procEvidence{}, err
	}
	if again, err := procStart(pid); err != nil || again != start {
		return procEvidence{}, &EvidenceError{Reason: "tor's process changed while it was verified", Err: err}
	}
	return procEvidence{pid: pid, start: start}, nil
}

// verifyUnix: SO_PEERCRED names the process that created the listening
// socket, in torgate's pid namespace (0 if it has none there).
func verifyUnix(c *net.UnixConn, pid int) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return &EvidenceError{Reason: "no socket", Err: err}
	}
	var cred *unix.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return &EvidenceError{Reason: "no socket", Err: err}
	}
	if cerr != nil {
		return &EvidenceError{Reason: "SO_PEERCRED failed", Err: cerr}
	}
	if int(cred.Pid) != pid {
		return &EvidenceError{Reason: fmt.Sprintf("tor reports pid %d but the control socket's peer is pid %d", pid, cred.Pid)}
	}
	return nil
}

// verifyTCP: the peer's socket (found in /proc/net/tcp or tcp6 by its
// addresses, which are ours swapped) must be one of pid's open files.
func verifyTCP(c *net.TCPConn, pid int) error {
	la, ra := c.LocalAddr().(*net.TCPAddr), c.RemoteAddr().(*net.TCPAddr)
	local, lok := netip.AddrFromSlice(la.IP)
	remote, rok := netip.AddrFromSlice(ra.IP)
	if !lok || !rok {
		return &EvidenceError{Reason: "control connection has no IP addresses"}
	}
	own, err := socketInode(c)
	if err != nil {
		return err
	}
	return verifyTCPPeer(own, netip.AddrPortFrom(local.Unmap(), uint16(la.Port)), netip.AddrPortFrom(remote.Unmap(), uint16(ra.Port)), pid)
}

// socketInode returns the inode of c's socket, as /proc/net/tcp names it.
func socketInode(c *net.TCPConn) (uint64, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, &EvidenceError{Reason: "no socket", Err: err}
	}
	var st unix.Stat_t
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.Fstat(int(fd), &st) }); err != nil {
		return 0, &EvidenceError{Reason: "no socket", Err: err}
	}
	if serr != nil {
		return 0, &EvidenceError{Reason: "fstat of the control connection failed", Err: serr}
	}
	return uint64(st.Ino), nil
}

// verifyTCPPeer checks the connection from local to remote, whose socket
// here has inode own. The peer must be on loopback: a socket's inode only
// names a socket of this host's kernel, and a remote Tor's pid means
// nothing here.
func verifyTCPPeer(own uint64, local, remote netip.AddrPort, pid int) error {
	if !remote.Addr().IsLoopback() {
		return &EvidenceError{Reason: "control port is not on loopback"}
	}
	inode, err := peerInode(own, local, remote)
	if err != nil {
		return err
	}
	return holdsSocket(pid, inode)
}

// tcpRow is one socket of a /proc/net/tcp{,6} table.
type tcpRow struct {
	local, remote string // as printed
	six           bool   // from tcp6
	inode         uint64 // 0 for a socket no process holds (TIME_WAIT)
}

// peerInode finds the inode of the socket whose local address is remote
// and whose remote address is local: the peer's end of our connection,
// whose own socket has inode own. A v4 connection to a dual-stack
// listener has its peer in tcp6, as a mapped address.
//
// The tables are those of this thread's network namespace, where Go's
// dialer made the connection: an unlocked goroutine's thread is in the
// process's own namespace. /proc/net (/proc/self/net) would show the
// thread group leader's, which a goroutine locked to the main thread may
// have moved elsewhere (as a test does to run a router in a namespace).
// Our own socket's row must be there (else the namespace is not ours),
// and it tells how the kernel printed the addresses: each 32-bit word in
// the kernel's byte order, which is not the program's under an emulator
// of another byte order.
func peerInode(own uint64, local, remote netip.AddrPort) (uint64, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var rows []tcpRow
	for _, f := range []string{"/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"} {
		var err error
		if rows, err = readTCPTable(f, rows); err != nil {
			return 0, &EvidenceError{Reason: "cannot read " + f, Err: err}
		}
	}
	var order binary.ByteOrder
	for _, r := range rows {
		if r.inode != own {
			continue
		}
		for _, o := range []binary.ByteOrder{binary.LittleEndian, binary.BigEndian} {
			if procNetAddr(local, r.six, o) == r.local && procNetAddr(remote, r.six, o) == r.remote {
				order = o
			}
		}
		break
	}
	if order == nil {
		return 0, &EvidenceError{Reason: "the control connection's own socket is not in this network namespace's /proc/net/tcp"}
	}
	for _, six := range []bool{false, true} {
		if !six && !remote.Addr().Is4() {
			continue
		}
		l, r := procNetAddr(remote, six, order), procNetAddr(local, six, order)
		for _, row := range rows {
			if row.six == six && row.local == l && row.remote == r && row.inode != 0 {
				return row.inode, nil
			}
		}
	}
	return 0, &EvidenceError{Reason: "the control connection's peer socket is not in /proc/net/tcp"}
}

// readTCPTable appends the sockets of a /proc/net/tcp{,6} table to rows.
func readTCPTable(file string, rows []tcpRow) ([]tcpRow, error) {
	six := strings.HasSuffix(file, "6")
	f, err := os.Open(file)
	if err != nil {
		return rows, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// sl local_address rem_address st tx_queue:rx_queue tr:tm->when
		// retrnsmt uid timeout inode ...
		fs := bytes.Fields(sc.Bytes())
		if len(fs) < 10 {
			continue
		}
		ino, err := strconv.ParseUint(string(fs[9]), 10, 64)
		if err != nil {
			continue // the header
		}
		rows = append(rows, tcpRow{local: string(fs[1]), remote: string(fs[2]), six: six, inode: ino})
	}
	return rows, sc.Err()
}

// procNetAddr formats ap as /proc/net/tcp does: each 32-bit word of the
// address (in network order) printed as a number in the kernel's byte
// order, in hex, then the port in hex. 127.0.0.1:9051 is "0100007F:235B"
// on x86.
func procNetAddr(ap netip.AddrPort, six bool, order binary.ByteOrder) string {
	var a []byte
	if six {
		b := netip.AddrFrom16(ap.Addr().As16()).As16() // v4 as v4-mapped
		a = b[:]
	} else {
		b := ap.Addr().As4()
		a = b[:]
	}
	s := make([]byte, 0, 2*len(a)+5)
	for i := 0; i < len(a); i += 4 {
		s = fmt.Appendf(s, "%08X", order.Uint32(a[i:i+4]))
	}
	return string(fmt.Appendf(s, ":%04X", ap.Port()))
}

// holdsSocket reports whether process pid has socket inode among its open
// files. Reading another user's /proc/PID/fd takes privilege
// (CAP_SYS_PTRACE or the same user): without it there is no evidence.
func holdsSocket(pid int, inode uint64) error {
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	ents, err := os.ReadDir(dir)
	if err != nil {
		return &EvidenceError{Reason: "cannot read tor's open files (/proc/PID/fd: tor runs as another user?); attach to Tor's unix ControlSocket instead, which needs no such access", Err: err}
	}
	want := "socket:[" + strconv.FormatUint(inode, 10) + "]"
	for _, e := range ents {
		if l, err := os.Readlink(dir + "/" + e.Name()); err == nil && l == want {
			return nil
		}
	}
	return &EvidenceError{Reason: fmt.Sprintf("the control connection's peer socket is not one of pid %d's open files", pid)}
}
