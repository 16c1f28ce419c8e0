//go:build !race

package policy

// raceEnabled is set under -race (see race_test.go).
const raceEnabled = false
