package lan

import (
	"fmt"
	"hash/fnv"
)

// ifNameSize is Linux's IFNAMSIZ: interface names have at most 15 bytes.
const ifNameSize = 16

// TapName is the name of the macvtap torgate puts on iface: "tg-IFACE",
// or for names too long for IFNAMSIZ "tg-" plus a prefix and a hash.
func TapName(iface string) string {
	n := "tg-" + iface
	if len(n) <= ifNameSize-1 {
		return n
	}
	h := fnv.New32a()
	h.Write([]byte(iface))
	return fmt.Sprintf("tg-%.4s%08x", iface, h.Sum32())
}
