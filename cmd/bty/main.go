// Command bty inspects images, discovers disks and flashes images onto
// them. All logic lives in internal/cli.
//
// In the live environment (bty-media's initramfs) the same binary is
// also /init, the environment's PID 1 (internal/live), and
// /sbin/modprobe, which the kernel runs to load a module it lacks.
package main

import (
	"context"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/btyproject/bty/internal/cli"
	"github.com/btyproject/bty/internal/live"
)

func main() {
	switch filepath.Base(os.Args[0]) {
	case "init":
		os.Exit(live.Main())
	case "modprobe":
		os.Exit(live.Modprobe(os.Args[1:]))
	}
	if os.Getpid() == 1 {
		os.Exit(live.Main())
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// The first Ctrl-C stops the work cleanly; a second one kills at once.
	go func() { <-ctx.Done(); stop() }()
	code := cli.Run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
