package defaults

import (
	"testing"
	"time"
)

func TestSet(t *testing.T) {
	n, d, s := 0, 5*time.Second, "kept"
	Set(&n, 7)
	Set(&d, time.Minute)
	Set(&s, "default")
	if n != 7 || d != 5*time.Second || s != "kept" {
		t.Fatalf("got %d %v %q", n, d, s)
	}
}
