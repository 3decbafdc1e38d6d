package server

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/labels"
	"github.com/btyproject/bty/internal/store"
)

// The schedule runner (docs/reference.md, "Schedules"): every
// scheduleTickEvery, and whenever a flash or run ends, it decides each
// schedule's due occurrence (fleet.Schedule.Decide), stores that before
// starting anything, then starts the occurrence's next machines
// (fleet.Schedule.Step) through autoReflash and stores each start. A
// restart reads the same store: a fired occurrence is never fired again,
// and one in progress goes on.

// scheduleTickEvery is how often the runner looks at the schedules.
const scheduleTickEvery = 30 * time.Second

// scheduleRunner serializes the runner's ticks (the loop's and tests')
// and tracks its loop.
type scheduleRunner struct {
	mu sync.Mutex
	wg sync.WaitGroup
}

// wait returns once the loop started by startSchedules has ended.
func (r *scheduleRunner) wait() { r.wg.Wait() }

// newScheduleMetrics registers the runner's counters.
func newScheduleMetrics(reg prometheus.Registerer) (fires, skips prometheus.Counter) {
	fires = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "bty_schedule_fires_total", Help: "Schedule occurrences fired.",
	})
	skips = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "bty_schedule_skips_total", Help: "Schedule occurrences skipped unfired: missed past their window, or while paused.",
	})
	reg.MustRegister(fires, skips)
	return fires, skips
}

// startSchedules runs the schedule runner in a goroutine
// until ctx ends (sched.wait waits for that).
func (s *Server) startSchedules(ctx context.Context) {
	if s.cfg.manualTicks {
		return // tests call scheduleTick with a fake now
	}
	s.sched.wg.Add(1)
	go func() {
		defer s.sched.wg.Done()
		s.wake.loop(ctx, scheduleTickEvery, s.scheduleTick)
	}()
}

// scheduleTick advances every schedule at now.
func (s *Server) scheduleTick(ctx context.Context, now time.Time) {
	s.sched.mu.Lock()
	defer s.sched.mu.Unlock()
	list, err := s.store.ListSchedules(ctx)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Error("schedules: listing them", "err", err)
		}
		return
	}
	for _, sch := range list {
		if ctx.Err() != nil {
			return
		}
		if err := s.tickSchedule(ctx, sch, now); err != nil && !errors.Is(err, store.ErrNotFound) && ctx.Err() == nil {
			s.log.Error("schedule: tick failed", "schedule", sch.ID, "name", sch.Name, "err", err)
		}
	}
}

// tickSchedule decides sch's due occurrence, then starts what it may.
func (s *Server) tickSchedule(ctx context.Context, sch fleet.Schedule, now time.Time) error {
	reqs, err := labels.Parse(sch.Selector)
	if err != nil {
		s.log.Warn("schedule: its selector does not parse; fix it with PUT /schedules/{id}", "schedule", sch.ID, "name", sch.Name, "err", err)
		return nil
	}
	if fire, skipped, _ := sch.Due(now); fire != nil || skipped > 0 {
		var ms []fleet.Machine
		if fire != nil {
			page, err := s.store.QueryMachines(ctx, store.MachineQuery{Selector: reqs})
			if err != nil {
				return err
			}
			ms = page.Machines
		}
		var (
			fired bool
			skips int
		)
		sch, err = s.store.ModifySchedule(ctx, sch.ID, func(cur fleet.Schedule) (fleet.Schedule, error) {
			next, f := cur.Decide(reqs, ms, now)
			fired, skips = f, next.Skipped-cur.Skipped
			return next, nil
		})
		if err != nil {
			return err
		}
		if skips > 0 {
			s.metrics.scheduleSkips.Add(float64(skips))
			s.log.Warn("schedule: occurrences skipped (missed while bty-web was down or the schedule paused, or past their window)",
				"schedule", sch.ID, "name", sch.Name, "skipped", skips, "last", sch.LastSkipAt, "window", sch.Window, "paused", sch.Paused)
		}
		if fired {
			s.metrics.scheduleFires.Inc()
			o := sch.Occurrence
			c := o.Counts()
			s.log.Info("schedule fired", "schedule", sch.ID, "name", sch.Name, "at", o.At, "action", sch.Action,
				"machines", len(o.Machines), "queued", c[fleet.SchedQueued], "skipped", c[fleet.SchedSkipped], "window_end", o.WindowEnd)
			for _, om := range o.Machines {
				if om.State == fleet.SchedSkipped {
					s.log.Info("schedule: machine skipped", "schedule", sch.ID, "mac", om.MAC, "reason", om.Reason)
				}
			}
		}
	}
	o := sch.Occurrence
	if o == nil || o.EndedAt != nil {
		return nil
	}
	ms := map[fleet.MAC]fleet.Machine{}
	for _, om := range o.Machines {
		if om.State != fleet.SchedQueued && om.State != fleet.SchedStarted {
			continue
		}
		m, err := s.store.GetMachine(ctx, om.MAC)
		switch {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			return err
		default:
			ms[om.MAC] = m
		}
	}
	var start []fleet.MAC
	before := sch
	sch, err = s.store.ModifySchedule(ctx, sch.ID, func(cur fleet.Schedule) (fleet.Schedule, error) {
		var next fleet.Schedule
		next, start = cur.Step(ms, now)
		return next, nil
	})
	if err != nil {
		return err
	}
	s.logStep(before, sch)
	for _, mac := range start {
		if ctx.Err() != nil {
			return nil
		}
		res, code, rerr := s.autoReflash(ctx, mac, fleet.ReflashRequest{Trigger: fleet.TriggerSchedule, TriggerID: sch.ID,
			Cause: "schedule " + sch.Name, KnownGood: sch.Action == fleet.ActionKnownGood})
		var busy *fleet.FlashInProgressError
		isBusy := errors.As(rerr, &busy)
		if rerr == nil {
			s.log.Info("schedule: reflash started", "schedule", sch.ID, "name", sch.Name, "mac", mac, "flash", res.Flash.ID, "image", res.Flash.Image)
		} else {
			if code == http.StatusInternalServerError {
				s.log.Error("schedule: starting a reflash", "schedule", sch.ID, "mac", mac, "err", rerr)
			} else {
				s.log.Warn("schedule: reflash refused", "schedule", sch.ID, "name", sch.Name, "mac", mac, "busy", isBusy, "err", rerr)
			}
		}
		sch, err = s.store.ModifySchedule(ctx, sch.ID, func(cur fleet.Schedule) (fleet.Schedule, error) {
			if rerr == nil {
				return cur.Started(mac, res.Flash.ID, now), nil
			}
			return cur.Refused(mac, rerr.Error(), isBusy, now), nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// logStep logs what a step changed: machines done, failed or skipped,
// and the occurrence's end.
func (s *Server) logStep(before, after fleet.Schedule) {
	if after.Occurrence == nil || before.Occurrence == nil {
		return
	}
	was := map[fleet.MAC]string{}
	for _, om := range before.Occurrence.Machines {
		was[om.MAC] = om.State
	}
	for _, om := range after.Occurrence.Machines {
		if om.State == was[om.MAC] || om.State == fleet.SchedQueued {
			continue
		}
		s.log.Info("schedule: machine "+om.State, "schedule", after.ID, "name", after.Name, "mac", om.MAC, "flash", om.FlashID, "reason", om.Reason)
	}
	if after.Occurrence.EndedAt != nil && before.Occurrence.EndedAt == nil {
		c := after.Occurrence.Counts()
		s.log.Info("schedule: occurrence ended", "schedule", after.ID, "name", after.Name, "at", after.Occurrence.At,
			"done", c[fleet.SchedDone], "failed", c[fleet.SchedFailed], "skipped", c[fleet.SchedSkipped])
	}
}
