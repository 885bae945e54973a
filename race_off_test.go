//go:build !race

package torgate_test

const raceEnabled = false
