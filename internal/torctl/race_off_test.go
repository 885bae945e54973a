//go:build !race

package torctl

const raceEnabled = false
