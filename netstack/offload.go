package netstack

import (
	"sync"

	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/torgate/torgate/internal/vnet"
)

// The offload path's constants; the header's layout is internal/vnet's.
const (
	vnetHdrLen           = vnet.HdrLen
	maxIPPacket          = 65535
	vnetDefaultGSOMaxLen = maxIPPacket
)

// vnetIO is what the offload path reads and writes: one packet or TCP
// super-packet per call, behind its virtio-net header. A Linux TUN with
// IFF_VNET_HDR (vnetTUN, vnet_linux.go) is one, and so is any
// OffloadDevice that accepted offloads (offloadLink).
type vnetIO interface {
	// read reads one packet into buf[vnet.HdrLen:], its header into
	// buf[:vnet.HdrLen], and returns the total length.
	read(buf []byte) (int, error)
	// write sends one packet gVisor made, with the header describing its
	// GSO and checksum state (gvisor.go G6).
	write(pkt *stack.PacketBuffer) error
}

// OffloadDevice is a tun.Device that, like a Linux TUN opened with
// IFF_VNET_HDR, carries whole TCP super-packets of up to 64 KiB behind a
// virtio-net header (internal/vnet) in both directions: lan.Device on a
// macvtap. Unless Config.NoOffload is set, New calls EnableOffload once,
// before Start; if it reports true, the Stack reads and writes with
// ReadVnet and WriteVnet only, else with Read and Write only.
//
// Every header crossing this interface counts CsumStart and HdrLen from
// the IP header, as on a TUN; a device with a link-layer header in front
// shifts them (vnet.Header.Shift).
type OffloadDevice interface {
	tun.Device
	// EnableOffload asks the device to hand over and take super-packets
	// and partial checksums; false leaves it as it was.
	EnableOffload() bool
	// ReadVnet blocks for one inbound packet, puts it at
	// buf[vnet.HdrLen:] behind its header, and returns the total length.
	// The device has checked the header (vnet.Header.Check); the Stack
	// trusts its checksum flags. len(buf) is vnet.HdrLen+65535. After
	// Close it returns os.ErrClosed.
	ReadVnet(buf []byte) (int, error)
	// WriteVnet sends one packet: hdr (vnet.HdrLen bytes) is its header,
	// and the packet is the concatenation of pkt. The device keeps none
	// of the slices after it returns. A packet it cannot send is its own
	// counted drop, not an error; after Close it returns os.ErrClosed.
	// Calls are serialised.
	WriteVnet(hdr []byte, pkt [][]byte) error
}

// offloadLink is the offload path on an OffloadDevice.
type offloadLink struct {
	dev OffloadDevice

	mu   sync.Mutex // serialises writes; guards the scratch below
	hdr  [vnetHdrLen]byte
	bufs [][]byte
}

var _ vnetIO = (*offloadLink)(nil)

// openOffload returns the offload path on dev if it is an OffloadDevice
// that accepts offloads, else nil.
func openOffload(dev tun.Device) vnetIO {
	od, ok := dev.(OffloadDevice)
	if !ok || !od.EnableOffload() {
		return nil
	}
	return &offloadLink{dev: od}
}

func (o *offloadLink) read(buf []byte) (int, error) { return o.dev.ReadVnet(buf) }

func (o *offloadLink) write(pkt *stack.PacketBuffer) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	vnetGSOHeader(&o.hdr, pkt)
	o.bufs = o.bufs[:0]
	it := packetViews(pkt)
	for b := it.next(); b != nil; b = it.next() {
		o.bufs = append(o.bufs, b)
	}
	err := o.dev.WriteVnet(o.hdr[:], o.bufs)
	clear(o.bufs) // keep no references to gVisor's views
	return err
}
