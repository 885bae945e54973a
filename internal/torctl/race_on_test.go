//go:build race

package torctl

// raceEnabled: the race detector instruments allocations too, so the
// allocation checks do not hold under it.
const raceEnabled = true
