// Package gate decides whether integration tests run: the one gate that
// nstest.Integration, nstest.RequireRoot and testnet.Require apply. It
// imports nothing but the standard library's os and testing, so that a
// test binary which must not link cgo (internal/privs: capabilities are
// per thread, and Keep refuses a cgo binary) can use it; nstest itself
// links the net package, and with it cgo. Other tests call
// nstest.Integration.
package gate

import (
	"os"
	"testing"
)

// Environment variables that choose the test set.
const (
	// EnvIntegration=1 opts in to the integration tests (Integration)
	// outside CI.
	EnvIntegration = "TORGATE_TEST_INTEGRATION"
	// EnvHermetic=1 keeps them out even under CI.
	EnvHermetic = "TORGATE_TEST_HERMETIC"
)

// Integration gates a test that needs more than the Go toolchain: root,
// network namespaces, TUN, a real tor or a private Tor network
// (internal/testnet), or that measures the process's memory. Such a test
// calls nstest.Integration (nstest.RequireRoot and testnet.Require do)
// before anything else, and runs only when opted in:
//
//   - CI=true: CI runs "go test -count=1 ./..." as root with tor
//     installed, and there such a test never skips: a missing capability
//     or tool fails it (nstest.RequireRoot, testnet.Require).
//   - TORGATE_TEST_INTEGRATION=1: a developer's opt-in; missing
//     requirements skip.
//
// Otherwise it skips, naming the variable, so that a plain
// "go test ./..." stays fast and hermetic, even as root with tor on PATH.
//
// TORGATE_TEST_HERMETIC=1 skips it even under CI: .ci/run sets it when it
// runs the hermetic tests of a package under qemu user-mode emulation
// (arm64, armv7, mips), where namespaces, netlink and TUN ioctls go through
// the emulator's syscall translation and would test qemu, not torgate.
// That is a choice of test set, not a missing capability.
func Integration(tb testing.TB) {
	tb.Helper()
	if os.Getenv(EnvHermetic) == "1" {
		tb.Skip(EnvHermetic + "=1: hermetic tests only")
	}
	if !CI() && os.Getenv(EnvIntegration) != "1" {
		tb.Skip("integration test (root, namespaces, TUN, tor or RSS): set " + EnvIntegration + "=1 to run it (CI=true always does)")
	}
}

// CI reports whether the tests run under CI (CI=true), where a missing
// requirement of an integration test is a failure, not a skip.
func CI() bool { return os.Getenv("CI") == "true" }
