// Command bty-web is bty's fleet server. All logic lives in
// internal/server.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	// Schedules name IANA time zones (docs/reference.md, "Schedules"):
	// the zone database is built in, so a host without tzdata works.
	_ "time/tzdata"

	"github.com/btyproject/bty/internal/server"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() { <-ctx.Done(); stop() }()
	code := server.Main(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
