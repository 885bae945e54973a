//go:build race

package torgate_test

// raceEnabled: the race detector multiplies memory use and keeps its
// shadow memory, so RSS assertions mean nothing under it.
const raceEnabled = true
