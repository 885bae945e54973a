package main

import (
	"testing"

	"github.com/torgate/torgate/internal/doccheck"
)

// TestLimitsDoc holds the command's rows of docs/limits.md to its
// constants.
func TestLimitsDoc(t *testing.T) {
	doccheck.Limits(t, doccheck.GroupCmd, map[string][]any{
		"garbage collector (`torgate` binary)": {defaultGCPercent},
		// No constant: the command leaves GOMAXPROCS to Go (and to the
		// operator); the row names the value it was measured with.
		"CPUs for Go code":      {1},
		"`torgate exec --wait`": {defaultExecWait},
	})
}
