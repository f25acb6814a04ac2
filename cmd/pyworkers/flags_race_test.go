//go:build race

package main_test

// Under -race the binary under test is built with the race detector too.
var raceFlag = []string{"-race"}
