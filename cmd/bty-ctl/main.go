// Command bty-ctl manages a remote bty-web: sessions, machines, images,
// live-env artifacts and settings. All logic lives in internal/ctl.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/btyproject/bty/internal/ctl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// The first Ctrl-C cancels the request in flight; a second one kills at once.
	go func() { <-ctx.Done(); stop() }()
	code := ctl.Run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
