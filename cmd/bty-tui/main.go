// Command bty-tui flashes images from a terminal or serial console; all
// logic lives in internal/tui.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/btyproject/bty/internal/tui"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGHUP)
	code := tui.Main(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
