package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/store"
)

// The rollout runner (docs/reference.md, "Rollouts"): every
// rolloutTickEvery, and whenever a flash or a run ends (s.wake), it
// reads the active rollouts from the store, what their machines'
// records, flashes and runs say, lets fleet.Advance decide, starts the
// reflashes it asks for (autoReflash, trigger rollout) and saves the
// rollout. Its state is the store's: a restart resumes every active
// rollout where it was.

// rolloutTickEvery is how often the runner looks at the active
// rollouts when nothing wakes it.
const rolloutTickEvery = 10 * time.Second

// maxRolloutStreams bounds the GET /rollouts/{id}/events streams open
// at once, over every rollout.
const maxRolloutStreams = 64

// rolloutRunner advances the rollouts; mu makes one tick or operator
// action (create, pause, resume, abort) at a time, so each is a
// read-modify-write no other interleaves with.
type rolloutRunner struct {
	s  *Server
	mu sync.Mutex

	// wmu guards the event streams' watchers, by rollout, and their
	// count (at most maxStreams, maxRolloutStreams but in tests).
	wmu        sync.Mutex
	watch      map[int64]map[chan struct{}]struct{}
	streams    int
	maxStreams int
}

func newRolloutRunner(s *Server) *rolloutRunner {
	return &rolloutRunner{s: s, watch: map[int64]map[chan struct{}]struct{}{}, maxStreams: maxRolloutStreams}
}

// start runs the runner until ctx ends.
func (rr *rolloutRunner) start(ctx context.Context) {
	if rr.s.cfg.manualTicks {
		return // tests tick it themselves
	}
	go rr.s.wake.loop(ctx, rolloutTickEvery, rr.tick)
}

// tick advances every active rollout at now.
func (rr *rolloutRunner) tick(ctx context.Context, now time.Time) {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	rs, err := rr.s.store.ActiveRollouts(ctx)
	if err != nil {
		if ctx.Err() == nil {
			rr.s.log.Error("rollouts: reading the active rollouts", "err", err)
		}
		return
	}
	for _, r := range rs {
		if _, err := rr.advance(ctx, r, now); err != nil && ctx.Err() == nil {
			rr.s.log.Error("rollouts: advancing", "rollout", r.ID, "err", err)
		}
	}
}

// advance is one step of r at now (rr.mu held): fleet.Advance, the
// reflashes it asks for, Advance again on their outcome (a refused
// start stops the rollout at once), and the rollout saved when it
// changed.
func (rr *rolloutRunner) advance(ctx context.Context, r fleet.Rollout, now time.Time) (fleet.Rollout, error) {
	saved := encodeRollout(r) // as the store has it
	for range len(r.Machines) + 1 {
		views, err := rr.views(ctx, r)
		if err != nil {
			return r, err
		}
		var start []fleet.MAC
		r, start = fleet.Advance(r, views, now)
		if len(start) == 0 {
			break
		}
		for _, mac := range start {
			r = rr.startOne(ctx, r, mac, now)
		}
		// Saved at once: the flashes started are on record.
		out, err := rr.save(ctx, r)
		if err != nil {
			return r, err
		}
		r, saved = out, encodeRollout(out)
	}
	if encodeRollout(r) == saved {
		return r, nil
	}
	if !r.State.Live() && r.EndedAt != nil {
		rr.s.log.Info("rollout ended", "rollout", r.ID, "image", r.Image, "state", r.State, "reason", r.Reason,
			"succeeded", r.Count(fleet.RMSucceeded), "failed", r.Count(fleet.RMFailed), "skipped", r.Count(fleet.RMSkipped))
	}
	return rr.save(ctx, r)
}

// save writes r and tells its event streams.
func (rr *rolloutRunner) save(ctx context.Context, r fleet.Rollout) (fleet.Rollout, error) {
	out, err := rr.s.store.SaveRollout(ctx, r)
	if err != nil {
		return r, fmt.Errorf("saving rollout %d: %w", r.ID, err)
	}
	rr.notify(out.ID)
	return out, nil
}

func encodeRollout(r fleet.Rollout) string {
	b, _ := json.Marshal(r)
	return string(b)
}

// views reads what Advance needs: the record, the rollout's flash and
// the run after it of every machine in flight, and the records of the
// next pending machines whose turn may come in this step.
func (rr *rolloutRunner) views(ctx context.Context, r fleet.Rollout) (map[fleet.MAC]fleet.RolloutView, error) {
	views := map[fleet.MAC]fleet.RolloutView{}
	pending := 0
	for _, m := range r.Machines {
		switch {
		case m.State.Ended():
			continue
		case m.State == fleet.RMPending:
			// At most the slots that can open in one step.
			if pending >= max(r.MaxParallel, r.Canary) {
				continue
			}
			pending++
		}
		var v fleet.RolloutView
		rec, err := rr.s.store.GetMachine(ctx, m.MAC)
		switch {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			return nil, err
		default:
			v.Machine, v.Found = rec, true
		}
		if m.FlashID != 0 {
			f, err := rr.s.store.GetFlash(ctx, m.FlashID)
			switch {
			case errors.Is(err, store.ErrNotFound):
			case err != nil:
				return nil, err
			default:
				v.Flash = &f
			}
		}
		if m.FlashID != 0 && v.Flash != nil && v.Flash.Result == fleet.FlashReady {
			runs, _, err := rr.s.store.ListRuns(ctx, m.MAC, 20, 0)
			if err != nil {
				return nil, err
			}
			for i := range runs { // newest first: the latest run of the flash
				if runs[i].FlashID == m.FlashID {
					v.Run = &runs[i]
					break
				}
			}
		}
		views[m.MAC] = v
	}
	return views, nil
}

// startOne starts r's reflash of mac with r's image, as POST
// /machines/{mac}/reflash would (the BMC powers it), and then assigns
// the image to the record: a machine's record changes only when its
// turn came and its reflash started.
func (rr *rolloutRunner) startOne(ctx context.Context, r fleet.Rollout, mac fleet.MAC, now time.Time) fleet.Rollout {
	cur, err := rr.s.store.GetMachine(ctx, mac)
	if err != nil {
		return r.NotStarted(mac, false, err.Error(), now)
	}
	image := r.Image
	res, code, err := rr.s.autoReflash(ctx, mac, fleet.ReflashRequest{Image: &image, Trigger: fleet.TriggerRollout,
		TriggerID: r.ID, Cause: "rollout " + strconv.FormatInt(r.ID, 10) + " of " + r.Image})
	if err != nil {
		rr.s.log.Warn("rollout: reflash not started", "rollout", r.ID, "mac", mac, "status", code, "err", err)
		return r.NotStarted(mac, code == http.StatusConflict, err.Error(), now)
	}
	rr.s.log.Info("rollout: reflash started", "rollout", r.ID, "mac", mac, "flash", res.Flash.ID, "image", image, "previous_image", cur.Image)
	m, err := rr.s.store.ModifyMachine(ctx, mac, func(m fleet.Machine, found bool) (fleet.Machine, error) {
		if !found {
			return m, fmt.Errorf("machine %s: %w", mac, store.ErrNotFound)
		}
		return m.Apply(fleet.MachineUpdate{Image: &image}, time.Now()), nil
	})
	if err != nil {
		rr.s.log.Error("rollout: assigning the image to the record", "rollout", r.ID, "mac", mac, "image", image, "err", err)
	} else {
		rr.s.publishMachine(m)
	}
	return r.Started(mac, res.Flash.ID, cur.Image, now)
}

// subscribe registers an event stream of rollout id: c receives (at
// most one pending value) on every change. ok is false when
// rr.maxStreams are open; open is how many are.
func (rr *rolloutRunner) subscribe(id int64) (c chan struct{}, done func(), open int, ok bool) {
	rr.wmu.Lock()
	defer rr.wmu.Unlock()
	if rr.streams >= rr.maxStreams {
		return nil, nil, rr.streams, false
	}
	rr.streams++
	c = make(chan struct{}, 1)
	if rr.watch[id] == nil {
		rr.watch[id] = map[chan struct{}]struct{}{}
	}
	rr.watch[id][c] = struct{}{}
	return c, func() {
		rr.wmu.Lock()
		defer rr.wmu.Unlock()
		rr.streams--
		delete(rr.watch[id], c)
		if len(rr.watch[id]) == 0 {
			delete(rr.watch, id)
		}
	}, rr.streams, true
}

// notify wakes rollout id's event streams without blocking.
func (rr *rolloutRunner) notify(id int64) {
	rr.wmu.Lock()
	defer rr.wmu.Unlock()
	for c := range rr.watch[id] {
		select {
		case c <- struct{}{}:
		default:
		}
	}
}
