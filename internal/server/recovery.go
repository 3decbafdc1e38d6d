package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/power"
	"github.com/btyproject/bty/internal/store"
)

// Health watching and failure recovery (docs/reference.md, "Failure
// recovery"). The decisions are fleet's (Machine.Checked,
// StartRecovery, NextRecovery, RecoveryStepped); the recoverer probes,
// powers, reflashes, and writes each step to the record and the
// machine's history (fleet.Action).

// recoveryEvery is how often the recoverer ticks (it also wakes on every
// flash's end).
const recoveryEvery = 5 * time.Second

// healthRefresh is how often a health check that keeps its result is
// written to the record anyway (its checked_at).
const healthRefresh = 5 * time.Minute

// maxHealthProbes bounds the health checks dialing at once.
const maxHealthProbes = 32

// recoverer runs the health checks and recoveries.
type recoverer struct {
	s      *Server
	policy fleet.RecoveryPolicy
	// mu guards last: when each machine was last checked (the record
	// keeps only changes).
	mu   sync.Mutex
	last map[fleet.MAC]time.Time
	// tickMu makes ticks one at a time (the loop's and tests').
	tickMu sync.Mutex
	// dial is the health check's TCP dial (tests keep it).
	dial func(ctx context.Context, addr string) error
}

func newRecoverer(s *Server) *recoverer {
	p := s.cfg.Recovery
	def := fleet.DefaultRecoveryPolicy
	if p.CycleWait <= 0 {
		p.CycleWait = def.CycleWait
	}
	if p.Backoff <= 0 {
		p.Backoff = def.Backoff
	}
	if p.MaxReflashes <= 0 {
		p.MaxReflashes = def.MaxReflashes
	}
	if p.PerDay <= 0 {
		p.PerDay = def.PerDay
	}
	if p.MaxActive <= 0 {
		p.MaxActive = def.MaxActive
	}
	return &recoverer{s: s, policy: p, last: map[fleet.MAC]time.Time{}, dial: dialTCP}
}

func dialTCP(ctx context.Context, addr string) error {
	d := net.Dialer{Timeout: 3 * time.Second}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	return c.Close()
}

// tick checks the machines due for a health check, starts the
// recoveries their failures call for, and advances every recovery one
// step, as of now.
func (rc *recoverer) tick(ctx context.Context, now time.Time) {
	rc.tickMu.Lock()
	defer rc.tickMu.Unlock()
	ms, err := rc.s.store.ListMachines(ctx)
	if err != nil {
		rc.s.log.Error("recovery: listing machines", "err", err)
		return
	}
	rc.check(ctx, ms, now)
	if ms, err = rc.s.store.ListMachines(ctx); err != nil {
		rc.s.log.Error("recovery: listing machines", "err", err)
		return
	}
	active := 0
	for _, m := range ms {
		if m.Recovery != nil && m.Recovery.Step != fleet.StepQueued {
			active++
		}
	}
	for _, m := range ms {
		if m.Recovery == nil && m.Watched() && !m.Flash.Running() && m.Health != nil && !m.Health.OK && now.Sub(m.Health.Since) >= m.FailAfter() {
			m2, err := rc.start(ctx, m.MAC, fmt.Sprintf("health check failing since %s: %s", m.Health.Since.Format(time.RFC3339), m.Health.Detail), now)
			if err != nil {
				continue
			}
			m = m2
		}
		if m.Recovery == nil {
			continue
		}
		queued := m.Recovery.Step == fleet.StepQueued
		if rc.advance(ctx, m, active, now) && queued {
			active++
		}
	}
}

// check runs the due health checks (fleet.Machine.CheckDue), at most
// maxHealthProbes at once, and writes the results that change a record.
func (rc *recoverer) check(ctx context.Context, ms []fleet.Machine, now time.Time) {
	sem := make(chan struct{}, maxHealthProbes)
	var wg sync.WaitGroup
	rc.mu.Lock()
	known := make(map[fleet.MAC]time.Time, len(ms))
	for _, m := range ms {
		if t, ok := rc.last[m.MAC]; ok {
			known[m.MAC] = t
		}
	}
	rc.last = known // deleted machines drop out
	rc.mu.Unlock()
	for _, m := range ms {
		rc.mu.Lock()
		last := rc.last[m.MAC]
		rc.mu.Unlock()
		if !m.CheckDue(last, now) {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			rc.probe(ctx, m, now)
		}()
	}
	wg.Wait()
}

// probe checks m's health once and records the result.
func (rc *recoverer) probe(ctx context.Context, m fleet.Machine, now time.Time) {
	var err error
	if host := m.HealthAddress(); host == "" {
		err = errors.New("the machine has no known address yet (no PXE contact, no ready check)")
	} else {
		addr := net.JoinHostPort(host, strconv.Itoa(m.HealthPort()))
		if err = rc.dial(ctx, addr); err != nil {
			err = fmt.Errorf("tcp %s: %w", addr, errors.Unwrap(err))
		}
	}
	rc.mu.Lock()
	rc.last[m.MAC] = now
	rc.mu.Unlock()
	var changed bool
	m2, werr := rc.s.store.ModifyMachine(ctx, m.MAC, func(x fleet.Machine, found bool) (fleet.Machine, error) {
		if !found || x.Flash.Running() {
			return x, store.ErrUnchanged
		}
		x, changed = x.Checked(err, now, healthRefresh)
		if !changed {
			return x, store.ErrUnchanged
		}
		return x, nil
	})
	if werr != nil {
		if !errors.Is(werr, store.ErrUnchanged) && !errors.Is(werr, store.ErrNotFound) {
			rc.s.log.Error("recording a health check", "mac", m.MAC, "err", werr)
		}
		return
	}
	if was := m.Health; was == nil || was.OK != m2.Health.OK {
		rc.s.log.Info("health check changed", "mac", m.MAC, "ok", m2.Health.OK, "detail", m2.Health.Detail)
		rc.s.publishMachine(m2)
	}
}

// ErrRecovering and ErrQuarantined refuse a failure report for a
// machine already recovering or in quarantine.
var (
	errRecovering  = errors.New("is already recovering")
	errQuarantined = errors.New("is in quarantine")
)

// start queues a recovery of mac for reason at now (or quarantines it at
// once: fleet.Machine.StartRecovery) and records the step.
func (rc *recoverer) start(ctx context.Context, mac fleet.MAC, reason string, now time.Time) (fleet.Machine, error) {
	recent, err := rc.s.store.CountActions(ctx, mac, fleet.ActFailure, now.Add(-24*time.Hour))
	if err != nil {
		return fleet.Machine{}, err
	}
	var (
		act  fleet.RecoveryAction
		seen fleet.Machine
	)
	m, err := rc.s.store.ModifyMachine(ctx, mac, func(x fleet.Machine, found bool) (fleet.Machine, error) {
		if !found {
			return x, fmt.Errorf("machine %s: %w", mac, store.ErrNotFound)
		}
		seen = x
		switch {
		case x.Quarantine != nil:
			return x, errQuarantined
		case x.Recovery != nil:
			return x, errRecovering
		}
		x, act = x.StartRecovery(reason, recent, rc.policy, now)
		return x, nil
	})
	if err != nil {
		return seen, err // the record as it was: why it was refused
	}
	detail := ""
	if act == fleet.ActQuarantine {
		detail = m.Quarantine.Reason
	}
	rc.record(ctx, m, act, reason, detail, 0, now)
	return m, nil
}

// advance does m's next recovery step (fleet.Machine.NextRecovery) and
// reports whether it took one.
func (rc *recoverer) advance(ctx context.Context, m fleet.Machine, active int, now time.Time) bool {
	p := rc.policy
	act := m.NextRecovery(p, active, now)
	var (
		detail string
		flash  int64
	)
	switch act {
	case fleet.ActNone:
		return false
	case fleet.ActCycle:
		detail, p = rc.cycle(ctx, m, p)
	case fleet.ActReflash:
		var ok bool
		flash, detail, ok = rc.reflash(ctx, m)
		if !ok {
			if detail == "" {
				return false // busy: the next tick tries again
			}
			act = fleet.ActQuarantine
		}
	case fleet.ActBackoff, fleet.ActQuarantine, fleet.ActCancelled:
		if f := m.Flash; f != nil && f.ID >= m.Recovery.FlashID {
			detail = fmt.Sprintf("flash %d ended %s: %s", f.ID, f.Result, f.Reason)
		}
	case fleet.ActRecovered:
		detail = "healthy again"
		if f := m.Flash; f != nil && f.ID >= m.Recovery.FlashID && f.Result == fleet.FlashReady {
			detail = fmt.Sprintf("flash %d of %s is ready", f.ID, f.Image)
		}
	}
	started := m.Recovery.StartedAt
	reason := m.Recovery.Reason
	m2, err := rc.s.store.ModifyMachine(ctx, m.MAC, func(x fleet.Machine, found bool) (fleet.Machine, error) {
		if !found || x.Recovery == nil || !x.Recovery.StartedAt.Equal(started) {
			return x, store.ErrUnchanged
		}
		return x.RecoveryStepped(act, p, flash, detail, now), nil
	})
	if err != nil {
		if !errors.Is(err, store.ErrUnchanged) {
			rc.s.log.Error("recording a recovery step", "mac", m.MAC, "step", act, "err", err)
		}
		return false
	}
	rc.record(ctx, m2, act, reason, detail, flash, now)
	return true
}

// cycle power cycles m through its BMC for recovery; without a power
// driver, or when the BMC fails, recovery goes on to the reflash at
// once (the policy returned has no cycle wait).
func (rc *recoverer) cycle(ctx context.Context, m fleet.Machine, p fleet.RecoveryPolicy) (string, fleet.RecoveryPolicy) {
	if m.Power == nil {
		p.CycleWait = 0
		return "no power driver: nothing to power cycle, reflashing instead", p
	}
	action := power.Cycle
	if st, err := rc.statusOf(ctx, m); err == nil && st == string(power.StateOff) {
		action = power.On
	}
	res, _, err := rc.s.powerAction(ctx, m, action)
	if err != nil {
		p.CycleWait = 0
		return err.Error() + "; reflashing instead", p
	}
	return fmt.Sprintf("power %s through the %s BMC; waiting up to %s for the health check", action, res.Driver, p.CycleWait), p
}

func (rc *recoverer) statusOf(ctx context.Context, m fleet.Machine) (string, error) {
	res, _, err := rc.s.powerAction(ctx, m, power.Status)
	return res.State, err
}

// reflash starts recovery's reflash of m: to its known-good baseline
// when it has a usable one, else to the record's image. ok false with
// no detail: the machine is busy (try again); with a detail: nothing
// can be flashed (recovery gives up).
func (rc *recoverer) reflash(ctx context.Context, m fleet.Machine) (id int64, detail string, ok bool) {
	req := fleet.ReflashRequest{Trigger: fleet.TriggerFailure, Cause: m.Recovery.Reason}
	what := "the record's image " + m.Image
	if _, err := rc.s.checkKnownGood(ctx, m); err == nil {
		req.KnownGood = true
		what = "its known-good baseline (" + m.LastKnownGood.Image + ")"
	}
	res, code, err := rc.s.autoReflash(ctx, m.MAC, req)
	switch {
	case err == nil:
		return res.Flash.ID, fmt.Sprintf("reflash %d to %s", res.Flash.ID, what), true
	case code == http.StatusConflict && m.Flash.Running():
		return 0, "", false
	case code == http.StatusInternalServerError:
		rc.s.log.Error("recovery: starting a reflash", "mac", m.MAC, "err", err)
		return 0, "", false
	}
	return 0, "nothing to reflash: " + err.Error(), false
}

// record writes step act of m's recovery to its history and the log,
// and publishes m.
func (rc *recoverer) record(ctx context.Context, m fleet.Machine, act fleet.RecoveryAction, reason, detail string, flash int64, now time.Time) {
	rc.s.publishMachine(m)
	if act == fleet.ActNone {
		return
	}
	a := fleet.Action{MAC: m.MAC, At: now.UTC(), Trigger: fleet.TriggerFailure, Action: act, Reason: reason, Detail: detail, FlashID: flash}
	if _, err := rc.s.store.SaveAction(ctx, a); err != nil {
		rc.s.log.Error("recording a recovery step", "mac", m.MAC, "step", act, "err", err)
	}
	rc.s.metrics.recoverySteps.WithLabelValues(string(act)).Inc()
	level := rc.s.log.Info
	if act == fleet.ActQuarantine {
		level = rc.s.log.Warn
	}
	level("recovery", "mac", m.MAC, "step", act, "reason", reason, "detail", detail, "flash", flash)
}

// afterFlash starts the recovery of a watched machine whose flash (not
// recovery's own: that is the recovery's step) failed or timed out.
func (rc *recoverer) afterFlash(m fleet.Machine) {
	f := m.Flash
	if f == nil || (f.Result != fleet.FlashFailed && f.Result != fleet.FlashTimeout) || f.Trigger == fleet.TriggerFailure ||
		!m.Watched() || m.Recovery != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	reason := fmt.Sprintf("flash %d (%s) ended %s: %s", f.ID, f.Trigger, f.Result, f.Reason)
	if _, err := rc.start(ctx, m.MAC, reason, time.Now()); err != nil && !errors.Is(err, errRecovering) && !errors.Is(err, errQuarantined) {
		rc.s.log.Error("recovery: starting after a failed flash", "mac", m.MAC, "err", err)
	}
	rc.s.wake.notify()
}
