package netstack

import (
	"flag"
	"fmt"
	"os"
	"testing"

	"gvisor.dev/gvisor/pkg/refs"
)

// TestMain runs the package's tests with gVisor's reference leak checking
// on (style guide, "Refcounts"): every packet buffer, chunk, segment and
// address state is tracked from its InitRefs to its last DecRef, and
// whatever is still referenced once every test's Stack is closed is a
// leak, which fails the run. The mode must be set before the first
// reference-counted object exists: one made before and released after
// would not be in the map and would panic in refs.Unregister.
//
// Benchmarks run without it: the check takes a global lock for every
// object made and released, which would be what they measure.
func TestMain(m *testing.M) {
	flag.Parse()
	check := flag.Lookup("test.bench").Value.String() == ""
	if check {
		refs.SetLeakMode(refs.LeaksPanic)
	}
	code := m.Run()
	if check && code == 0 {
		code = leakCheck()
	}
	os.Exit(code)
}

// leakCheck runs refs.DoLeakCheck and turns its panic into a failure
// that names the leaked objects.
func leakCheck() (code int) {
	defer func() {
		if r := recover(); r != nil {
			fmt.Fprintf(os.Stderr, "gVisor reference leak check (refs.LeaksPanic) after all tests:\n%v\n", r)
			fmt.Println("FAIL")
			code = 1
		}
	}()
	refs.DoLeakCheck()
	return 0
}
