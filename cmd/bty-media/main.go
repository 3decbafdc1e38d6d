// Command bty-media builds bty's live environment: the netboot kernel and
// initrd, a USB stick image and a server appliance image. All logic lives
// in internal/media.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/btyproject/bty/internal/media"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// The first Ctrl-C stops the build cleanly; a second one kills at once.
	go func() { <-ctx.Done(); stop() }()
	code := media.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
