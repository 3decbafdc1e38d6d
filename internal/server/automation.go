package server

import (
	"context"
	"sync"
	"time"

	"github.com/btyproject/bty/internal/api"
	"github.com/btyproject/bty/internal/fleet"
)

// The automation's shared parts: schedules, failure recovery and
// rollouts (docs/reference.md, "Schedules", "Failure recovery",
// "Rollouts") reflash machines through autoReflash and wake on a
// flash's or run's end (wakeups) instead of waiting for their next
// tick. Each runner decides in a tick(ctx, now) that tests call with a
// fake now; its state lives in the store, so a restart resumes it.

// wakeups tells the automation's runners that something they may wait
// for happened: a flash or a run ended, a machine changed.
type wakeups struct {
	mu   sync.Mutex
	subs []chan struct{}
}

// subscribe is a channel that receives (at most one pending value) on
// every notify.
func (w *wakeups) subscribe() <-chan struct{} {
	c := make(chan struct{}, 1)
	w.mu.Lock()
	w.subs = append(w.subs, c)
	w.mu.Unlock()
	return c
}

// notify wakes every subscriber without blocking.
func (w *wakeups) notify() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, c := range w.subs {
		select {
		case c <- struct{}{}:
		default:
		}
	}
}

// loop calls tick with the time now every interval and on every
// wakeup, until ctx ends: the driver of a runner.
func (w *wakeups) loop(ctx context.Context, interval time.Duration, tick func(context.Context, time.Time)) {
	wake := w.subscribe()
	t := time.NewTicker(interval)
	defer t.Stop()
	tick(ctx, time.Now())
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-wake:
		}
		tick(ctx, time.Now())
	}
}

// autoReflash starts an automatic reflash of mac (a schedule's, a
// recovery's or a rollout's: req.Trigger and its id or cause are set),
// as POST /machines/{mac}/reflash does, powering the machine through its
// BMC. The answer is the flash, or an error with its HTTP status (409:
// busy, no baseline; 400: no image).
func (s *Server) autoReflash(ctx context.Context, mac fleet.MAC, req fleet.ReflashRequest) (api.ReflashResult, int, error) {
	return s.startReflash(ctx, mac, req)
}
