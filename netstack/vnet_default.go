//go:build !linux

package netstack

import (
	"errors"

	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// The offload path needs Linux's virtio-net TUN headers; elsewhere the
// Stack always uses the device's Read and Write.

const (
	vnetHdrLen           = 10
	vnetFlagNeedsCsum    = 1
	vnetGSONone          = 0
	vnetGSOTCPv4         = 1
	vnetGSOTCPv6         = 4
	maxIPPacket          = 65535
	vnetDefaultGSOMaxLen = maxIPPacket
)

type vnetTUN struct{}

type vnetHeader struct {
	needsCsum bool
	gsoType   uint8
}

func openVnet(tun.Device) *vnetTUN { return nil }

func decodeVnet([]byte) vnetHeader { return vnetHeader{} }

func (*vnetTUN) read([]byte) (int, error) { return 0, errors.ErrUnsupported }

func (*vnetTUN) write(*stack.PacketBuffer) error { return errors.ErrUnsupported }
