package netstack

import (
	"errors"
	"os"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// The offload path (Linux): a TUN opened with IFF_VNET_HDR and TSO
// offloads, as wireguard's CreateTUN does, prefixes every packet with a
// virtio-net header (include/uapi/linux/virtio_net.h). wireguard's
// NativeTun.Read splits each TCP super-packet the kernel hands over into
// MTU-sized packets and fills in their checksums, and its Write coalesces
// them again; gVisor then handles every one of them. Here the Stack reads
// and writes the descriptor itself instead: a super-packet of up to 64 KiB
// goes into gVisor whole (one trip through IP and TCP instead of ~44), and
// gVisor's TCP sends super-packets of its own (host GSO) that the kernel
// segments, or, since the workstation is local, never segments at all.

// vnetMaxIovecs bounds the views gathered into one writev; a packet
// with more is flattened.
const vnetMaxIovecs = 32

// vnetTUN is a Linux TUN with virtio-net headers, read and written
// directly.
type vnetTUN struct {
	f  *os.File
	rc syscall.RawConn

	// wmu serializes writes; it guards the scratch state below, which lets
	// the write callback be a method value made once instead of a closure
	// per packet.
	wmu     sync.Mutex
	hdr     [vnetHdrLen]byte // guarded by wmu
	iov     []unix.Iovec     // guarded by wmu
	flat    []byte           // guarded by wmu; for packets with too many views
	wErr    error            // guarded by wmu
	writeFn func(fd uintptr) bool
}

var _ vnetIO = (*vnetTUN)(nil)

// openVnet returns the device's descriptor for direct use if it is a
// Linux TUN with IFF_VNET_HDR set, else nil.
func openVnet(dev tun.Device) vnetIO {
	f := dev.File()
	if f == nil {
		return nil
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return nil
	}
	var flags uint16
	var ierr error
	if err := rc.Control(func(fd uintptr) {
		var ifr *unix.Ifreq
		if ifr, ierr = unix.NewIfreq("x"); ierr != nil {
			return
		}
		if ierr = unix.IoctlIfreq(int(fd), unix.TUNGETIFF, ifr); ierr == nil {
			flags = ifr.Uint16()
		}
	}); err != nil || ierr != nil {
		return nil
	}
	if flags&unix.IFF_VNET_HDR == 0 || flags&unix.IFF_TUN == 0 {
		return nil
	}
	v := &vnetTUN{f: f, rc: rc, iov: make([]unix.Iovec, 0, vnetMaxIovecs+1)}
	v.writeFn = v.writev
	return v
}

// read reads one packet with its virtio-net header into buf.
func (v *vnetTUN) read(buf []byte) (int, error) {
	n, err := v.f.Read(buf)
	if errors.Is(err, syscall.EBADFD) {
		err = os.ErrClosed
	}
	return n, err
}

// write sends one packet from gVisor with the virtio-net header that
// describes its GSO and checksum state (vnetGSOHeader, gvisor.go G6),
// gathering its views (G7) with writev.
func (v *vnetTUN) write(pkt *stack.PacketBuffer) error {
	v.wmu.Lock()
	defer v.wmu.Unlock()
	vnetGSOHeader(&v.hdr, pkt)
	v.iov = append(v.iov[:0], iovec(v.hdr[:]))
	it := packetViews(pkt)
	for b := it.next(); b != nil; b = it.next() {
		if len(v.iov) == cap(v.iov) {
			// Rare: more views than iovecs. Flatten the packet instead.
			size := pkt.Size()
			if cap(v.flat) < size {
				v.flat = make([]byte, maxIPPacket)
			}
			CopyPacket(v.flat[:size], pkt)
			v.iov = append(v.iov[:1], iovec(v.flat[:size]))
			break
		}
		v.iov = append(v.iov, iovec(b))
	}
	v.wErr = nil
	if err := v.rc.Write(v.writeFn); err != nil {
		return err
	}
	return v.wErr
}

// writev is the RawConn callback: one writev of v.iov. It reports false
// (wait for writability and retry) on EAGAIN.
func (v *vnetTUN) writev(fd uintptr) bool {
	_, _, errno := unix.Syscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&v.iov[0])), uintptr(len(v.iov)))
	switch errno {
	case 0:
		v.wErr = nil
	case unix.EAGAIN:
		return false
	case unix.EINTR:
		return false
	case unix.EBADFD:
		v.wErr = os.ErrClosed
	default:
		v.wErr = errno
	}
	return true
}

func iovec(b []byte) unix.Iovec {
	iov := unix.Iovec{Base: &b[0]}
	iov.SetLen(len(b))
	return iov
}
