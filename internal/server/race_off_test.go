//go:build !race

package server

// raceDetector: the tests run under -race, which slows SQLite (compiled
// from C to Go) many times over, so wall-clock bounds do not hold.
const raceDetector = false
