//go:build !linux

package netstack

import "golang.zx2c4.com/wireguard/tun"

// The TUN offload path needs Linux's virtio-net TUN headers; elsewhere a
// TUN always goes through the device's Read and Write (an OffloadDevice
// still may not).

func openVnet(tun.Device) vnetIO { return nil }
