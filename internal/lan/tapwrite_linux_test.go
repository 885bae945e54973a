package lan

import (
	"bytes"
	"io"
	"os"
	"testing"
)

// TestTapWritevNoAllocs: the LAN path writes every frame to the macvtap
// with tapFile.Writev (a virtio-net header, the Ethernet and IP headers,
// netstack's payload views: one writev), so it must not allocate per
// frame. A pipe stands in for the tap: the same RawConn, the same writev.
func TestTapWritevNoAllocs(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	tf, err := newTapFile(w)
	if err != nil {
		t.Fatal(err)
	}
	parts := [][]byte{[]byte("hdr-"), []byte("head-"), []byte("tail")}
	allocs := testing.AllocsPerRun(100, func() {
		if err := tf.Writev(parts); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("Writev allocates %v times per frame, want 0", allocs)
	}
	w.Close()
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if want := bytes.Repeat([]byte("hdr-head-tail"), 101); !bytes.Equal(got, want) {
		t.Fatalf("read %q, want 101 frames", got)
	}
}
