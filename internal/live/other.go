//go:build !linux

package live

import (
	"fmt"
	"os"
)

// Main is the live environment's init; it exists on Linux only.
func Main() int {
	fmt.Fprintln(os.Stderr, "bty: the live environment's init runs on Linux only")
	return 1
}

// Modprobe is the live environment's modprobe; Linux only.
func Modprobe([]string) int { return Main() }
