package fleet

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Rollouts of a new image (docs/reference.md, "Rollouts"): the machines
// a label selector picks are reflashed with the image, canaries first
// and alone, then the rest at most MaxParallel at a time, stopping on
// failure. This file is the rule only: Advance decides from the records
// it is given; bty-web reads them, starts the reflashes Advance asks
// for and keeps the Rollout in its store.

// RolloutState is where a rollout is.
type RolloutState string

// The rollout states. Running and paused are live; the others ended.
const (
	RolloutRunning   RolloutState = "running"
	RolloutPaused    RolloutState = "paused"
	RolloutSucceeded RolloutState = "succeeded"
	RolloutFailed    RolloutState = "failed"
	RolloutAborted   RolloutState = "aborted"
)

// Live reports whether a rollout in state s may still start reflashes
// (running) or be resumed (paused).
func (s RolloutState) Live() bool { return s == RolloutRunning || s == RolloutPaused }

// RolloutMachineState is where one machine of a rollout is.
type RolloutMachineState string

// The states of a rollout's machine. Pending, waiting, flashing and
// verifying are open; succeeded, failed and skipped ended.
const (
	RMPending   RolloutMachineState = "pending"   // its turn has not come
	RMWaiting   RolloutMachineState = "waiting"   // its turn came; it is busy (a flash, a recovery): waited for
	RMFlashing  RolloutMachineState = "flashing"  // the rollout's reflash runs
	RMVerifying RolloutMachineState = "verifying" // flashed and ready; waiting for its cijoe-online run
	RMSucceeded RolloutMachineState = "succeeded"
	RMFailed    RolloutMachineState = "failed"
	RMSkipped   RolloutMachineState = "skipped" // quarantined, deleted, or the rollout stopped before its turn
)

// Ended reports whether s is final.
func (s RolloutMachineState) Ended() bool {
	return s == RMSucceeded || s == RMFailed || s == RMSkipped
}

// inFlight reports whether a machine in state s holds one of the
// rollout's slots: its turn came and it has not ended.
func (s RolloutMachineState) inFlight() bool {
	return s == RMWaiting || s == RMFlashing || s == RMVerifying
}

// Bounds of a rollout's settings.
const (
	MaxRolloutParallel = 64
	MaxRolloutCanary   = 64
	// MaxRolloutMachines bounds the machines one rollout takes.
	MaxRolloutMachines = 10000
	// RolloutRunGrace is how long a machine flashed ready with
	// provisioning cijoe-online may go without a workflow run recorded
	// for its flash before it counts as failed (bty-web queues the run
	// when the flash ends, so this only catches a run that was never
	// recorded).
	RolloutRunGrace = 5 * time.Minute
)

// RolloutMachine is one machine of a rollout.
type RolloutMachine struct {
	MAC MAC `json:"mac"`
	// Order is the machine's place in the rollout, from 1: canaries
	// first, then the rest by MAC.
	Order  int                 `json:"order"`
	Canary bool                `json:"canary"`
	State  RolloutMachineState `json:"state"`
	// PreviousImage is the record's image before the rollout assigned
	// its own ("" before the machine's turn, or when it had none).
	PreviousImage string `json:"previous_image"`
	// FlashID is the rollout's reflash of the machine, RunID the
	// cijoe-online run that followed it (0: none yet).
	FlashID int64 `json:"flash_id"`
	RunID   int64 `json:"run_id"`
	// Detail says why the machine waits, failed or was skipped.
	Detail    string     `json:"detail"`
	StartedAt *time.Time `json:"started_at"`
	EndedAt   *time.Time `json:"ended_at"`
}

// Rollout is one rollout of an image (docs/reference.md, "Rollouts").
type Rollout struct {
	ID       int64  `json:"id"`
	Selector string `json:"selector"`
	Image    string `json:"image"`
	// Canary machines are reflashed first, alone (in parallel with each
	// other); the rest start only once every canary succeeded.
	Canary int `json:"canary"`
	// MaxParallel bounds the machines in flight after the canaries.
	MaxParallel int `json:"max_parallel"`
	// MaxFailures is how many failed machines the rollout tolerates
	// before it stops (0: it stops on the first).
	MaxFailures int          `json:"max_failures"`
	State       RolloutState `json:"state"`
	// Reason says why the rollout failed or was aborted.
	Reason    string    `json:"reason"`
	CreatedAt time.Time `json:"created_at"`
	// StartedAt is the first reflash; EndedAt is set once the rollout
	// stopped (succeeded, failed, aborted) and no machine of it is in
	// flight any more.
	StartedAt *time.Time       `json:"started_at"`
	EndedAt   *time.Time       `json:"ended_at"`
	Machines  []RolloutMachine `json:"machines"`
}

// RolloutRequest is the body of POST /rollouts. Nil numbers take their
// defaults: canary 1, max_parallel 1, max_failures 0.
type RolloutRequest struct {
	Selector    string `json:"selector"`
	Image       string `json:"image"`
	Canary      *int   `json:"canary"`
	MaxParallel *int   `json:"max_parallel"`
	MaxFailures *int   `json:"max_failures"`
}

// Validate checks r's numbers (the selector and the image are the
// server's to check: it parses the one and knows the catalog).
func (r RolloutRequest) Validate() error {
	switch {
	case strings.TrimSpace(r.Selector) == "":
		return &ValidationError{Field: "selector", Msg: "selector is empty: name the machines with a label selector like role=ci (an empty one would pick every machine)"}
	case strings.TrimSpace(r.Image) == "":
		return &ValidationError{Field: "image", Msg: "image is empty: name an image of the catalog (GET /images)"}
	case r.Canary != nil && (*r.Canary < 0 || *r.Canary > MaxRolloutCanary):
		return &ValidationError{Field: "canary", Msg: fmt.Sprintf("canary %d: want 0 to %d", *r.Canary, MaxRolloutCanary)}
	case r.MaxParallel != nil && (*r.MaxParallel < 1 || *r.MaxParallel > MaxRolloutParallel):
		return &ValidationError{Field: "max_parallel", Msg: fmt.Sprintf("max_parallel %d: want 1 to %d", *r.MaxParallel, MaxRolloutParallel)}
	case r.MaxFailures != nil && (*r.MaxFailures < 0 || *r.MaxFailures > MaxRolloutMachines):
		return &ValidationError{Field: "max_failures", Msg: fmt.Sprintf("max_failures %d: want 0 (stop on the first failure) to %d", *r.MaxFailures, MaxRolloutMachines)}
	}
	return nil
}

// NewRollout is the rollout r asks for over machines, the selector's
// picks resolved once (any order): they are ordered by MAC, the first
// r.Canary machines that are not quarantined become the canaries and
// move to the front; quarantined machines are skipped with the reason.
// It is running, nothing started yet (Advance starts the canaries).
func NewRollout(r RolloutRequest, machines []Machine, now time.Time) Rollout {
	now = now.UTC()
	ro := Rollout{Selector: strings.TrimSpace(r.Selector), Image: strings.TrimSpace(r.Image), Canary: 1, MaxParallel: 1,
		State: RolloutRunning, CreatedAt: now, Machines: []RolloutMachine{}}
	if r.Canary != nil {
		ro.Canary = *r.Canary
	}
	if r.MaxParallel != nil {
		ro.MaxParallel = *r.MaxParallel
	}
	if r.MaxFailures != nil {
		ro.MaxFailures = *r.MaxFailures
	}
	sorted := make([]Machine, len(machines))
	copy(sorted, machines)
	sortMachines(sorted)
	var canaries, rest []RolloutMachine
	for _, m := range sorted {
		rm := RolloutMachine{MAC: m.MAC, State: RMPending}
		switch {
		case m.Quarantined():
			rm.State, rm.Detail, rm.EndedAt = RMSkipped, "quarantined: "+m.Quarantine.Reason, &now
			rest = append(rest, rm)
		case len(canaries) < ro.Canary:
			rm.Canary = true
			canaries = append(canaries, rm)
		default:
			rest = append(rest, rm)
		}
	}
	ro.Canary = len(canaries)
	ro.Machines = append(canaries, rest...)
	for i := range ro.Machines {
		ro.Machines[i].Order = i + 1
	}
	return ro
}

func sortMachines(ms []Machine) {
	slices.SortFunc(ms, func(a, b Machine) int { return strings.Compare(a.MAC.String(), b.MAC.String()) })
}

// Errors of the operator's actions on a rollout.
var (
	ErrRolloutNotRunning = errors.New("the rollout is not running")
	ErrRolloutNotPaused  = errors.New("the rollout is not paused")
	ErrRolloutEnded      = errors.New("the rollout has ended")
)

// Pause stops r from starting reflashes; those in flight go on.
func (r Rollout) Pause() (Rollout, error) {
	if r.State != RolloutRunning {
		return r, fmt.Errorf("pausing rollout %d (%s): %w; only a running rollout pauses", r.ID, r.State, ErrRolloutNotRunning)
	}
	r.State = RolloutPaused
	return r, nil
}

// Resume lets a paused r start reflashes again.
func (r Rollout) Resume() (Rollout, error) {
	if r.State != RolloutPaused {
		return r, fmt.Errorf("resuming rollout %d (%s): %w", r.ID, r.State, ErrRolloutNotPaused)
	}
	r.State = RolloutRunning
	return r, nil
}

// Abort ends a running or paused r: nothing new starts, the machines
// whose reflash has not started are skipped (their records keep their
// old image), those in flight finish and are recorded.
func (r Rollout) Abort(reason string, now time.Time) (Rollout, error) {
	if !r.State.Live() {
		return r, fmt.Errorf("aborting rollout %d (%s): %w", r.ID, r.State, ErrRolloutEnded)
	}
	now = now.UTC()
	r.State = RolloutAborted
	r.Reason = truncate(strings.TrimSpace(cmpOr(reason, "aborted by an operator")), MaxFailureLen)
	r.Machines = cloneMachines(r.Machines)
	r.skipUnstarted("the rollout was aborted before its turn", now)
	r.endIfSettled(now)
	return r, nil
}

func cmpOr(s, def string) string {
	if strings.TrimSpace(s) == "" {
		return def
	}
	return s
}

func cloneMachines(ms []RolloutMachine) []RolloutMachine {
	return append([]RolloutMachine(nil), ms...)
}

// skipUnstarted skips the machines whose reflash has not started.
func (r *Rollout) skipUnstarted(detail string, now time.Time) {
	for i := range r.Machines {
		m := &r.Machines[i]
		if m.State == RMPending || m.State == RMWaiting {
			m.State, m.Detail, m.EndedAt = RMSkipped, detail, &now
		}
	}
}

// endIfSettled sets EndedAt once r stopped and nothing is in flight.
func (r *Rollout) endIfSettled(now time.Time) {
	if r.State.Live() || r.EndedAt != nil {
		return
	}
	for _, m := range r.Machines {
		if m.State.inFlight() {
			return
		}
	}
	r.EndedAt = &now
}

// Active reports whether bty-web must still advance r: it is live, or
// it stopped with machines still in flight.
func (r Rollout) Active() bool { return r.State.Live() || r.EndedAt == nil }

// Holds reports whether r holds mac: r is active and the machine's
// part in it has not ended (a machine is in at most one such rollout).
func (r Rollout) Holds(mac MAC) bool {
	if !r.Active() {
		return false
	}
	for _, m := range r.Machines {
		if m.MAC == mac {
			return !m.State.Ended()
		}
	}
	return false
}

// Count is how many of r's machines are in state s.
func (r Rollout) Count(s RolloutMachineState) int {
	n := 0
	for _, m := range r.Machines {
		if m.State == s {
			n++
		}
	}
	return n
}

// RolloutView is what Advance knows of one machine of a rollout (a
// pending machine without one waits for a later step): its record
// (Found false: deleted), the rollout's flash of it (when one
// started and is still in the history) and the workflow run that
// followed that flash (nil: none recorded).
type RolloutView struct {
	Machine Machine
	Found   bool
	Flash   *Flash
	Run     *Run
}

// Advance is one step of rollout r at now, given what each machine's
// record, rollout flash and run say: it moves the machines in flight on
// (a flash ended, a run ended), stops the rollout on failure, and picks
// the machines whose reflash starts now (start; bty-web reports back
// with Started or NotStarted). It decides nothing else and has no side
// effects.
func Advance(r Rollout, views map[MAC]RolloutView, now time.Time) (out Rollout, start []MAC) {
	now = now.UTC()
	r.Machines = cloneMachines(r.Machines)
	if !r.Active() {
		return r, nil
	}
	// Machines in flight: did their flash or run end?
	for i := range r.Machines {
		m := &r.Machines[i]
		v := views[m.MAC]
		switch m.State {
		case RMFlashing:
			f := v.Flash
			switch {
			case f == nil:
				m.fail(fmt.Sprintf("flash %d is no longer in the history (the machine was deleted?)", m.FlashID), now)
			case f.Running():
			case f.Result == FlashReady && f.Provisioning == ModeCijoeOnline:
				m.State, m.Detail = RMVerifying, fmt.Sprintf("flash %d ready; waiting for its cijoe-online workflow run", f.ID)
			case f.Result == FlashReady:
				m.State, m.Detail, m.EndedAt = RMSucceeded, fmt.Sprintf("flash %d ready", f.ID), &now
			default:
				m.fail(fmt.Sprintf("flash %d %s: %s", f.ID, f.Result, cmpOr(f.Reason, "no reason given")), now)
			}
		}
		if m.State == RMVerifying {
			run := v.Run
			switch {
			case run == nil:
				if f := v.Flash; f != nil && f.EndedAt != nil && now.Sub(*f.EndedAt) > RolloutRunGrace {
					m.fail(fmt.Sprintf("no workflow run was recorded for flash %d within %s of its end", f.ID, RolloutRunGrace), now)
				}
			case !run.Result.Ended():
				m.RunID = run.ID
				m.Detail = fmt.Sprintf("flash %d ready; workflow run %d %s", m.FlashID, run.ID, run.Result)
			case run.Result == RunSuccess:
				m.RunID = run.ID
				m.State, m.Detail, m.EndedAt = RMSucceeded, fmt.Sprintf("flash %d ready, workflow run %d success", m.FlashID, run.ID), &now
			default:
				m.RunID = run.ID
				m.fail(fmt.Sprintf("workflow run %d after flash %d %s: %s", run.ID, m.FlashID, run.Result, cmpOr(run.Reason, "no reason given")), now)
			}
		}
	}
	// Stop on failure: a canary's, the first one, or beyond MaxFailures.
	if r.State.Live() {
		failed, firstCanary := 0, ""
		var first *RolloutMachine
		for i := range r.Machines {
			m := &r.Machines[i]
			if m.State != RMFailed {
				continue
			}
			failed++
			if first == nil {
				first = m
			}
			if m.Canary && firstCanary == "" {
				firstCanary = fmt.Sprintf("canary %s failed: %s", m.MAC, m.Detail)
			}
		}
		switch {
		case firstCanary != "":
			r.stop(firstCanary, now)
		case failed > r.MaxFailures && r.MaxFailures == 0:
			r.stop(fmt.Sprintf("machine %s failed: %s", first.MAC, first.Detail), now)
		case failed > r.MaxFailures:
			r.stop(fmt.Sprintf("%d machines failed, more than max_failures %d; the first, %s: %s", failed, r.MaxFailures, first.MAC, first.Detail), now)
		}
	}
	if r.State == RolloutRunning {
		start = r.pick(views, now)
	}
	if r.State.Live() && len(start) == 0 {
		done := true
		for _, m := range r.Machines {
			if !m.State.Ended() {
				done = false
				break
			}
		}
		if done {
			r.State = RolloutSucceeded
			if n := r.Count(RMFailed); n > 0 {
				r.Reason = fmt.Sprintf("%d machines failed, within max_failures %d", n, r.MaxFailures)
			}
		}
	}
	r.endIfSettled(now)
	return r, start
}

func (m *RolloutMachine) fail(detail string, now time.Time) {
	m.State, m.Detail, m.EndedAt = RMFailed, truncate(detail, MaxFailureLen), &now
}

// stop fails r for reason: nothing new starts, the machines not started
// are skipped, those in flight finish.
func (r *Rollout) stop(reason string, now time.Time) {
	r.State, r.Reason = RolloutFailed, truncate(reason, MaxFailureLen)
	r.skipUnstarted("the rollout stopped before its turn: "+r.Reason, now)
}

// pick decides which machines start now: during the canary phase (a
// canary not yet succeeded) only canaries, all at once; after it the
// rest, in order, at most MaxParallel in flight. A machine whose turn
// came that is busy waits (state waiting, holding its slot); one found
// quarantined or deleted at its turn is skipped.
func (r *Rollout) pick(views map[MAC]RolloutView, now time.Time) []MAC {
	canaryPhase := false
	for _, m := range r.Machines {
		if m.Canary && !m.State.Ended() {
			canaryPhase = true
		}
	}
	limit, inFlight := r.MaxParallel, 0
	if canaryPhase {
		limit = r.Canary
	}
	for _, m := range r.Machines {
		if m.State.inFlight() && m.State != RMWaiting {
			inFlight++
		}
	}
	var start []MAC
	for i := range r.Machines {
		m := &r.Machines[i]
		if canaryPhase && !m.Canary {
			break // canaries come first in the order
		}
		if m.State != RMPending && m.State != RMWaiting {
			continue
		}
		if m.State == RMPending && inFlight >= limit {
			break
		}
		v, known := views[m.MAC]
		switch {
		case !known:
			// Not read for this step (the caller reads only the next
			// few pending machines): its turn is for the next step.
			return start
		case !v.Found:
			m.State, m.Detail, m.EndedAt = RMSkipped, "the machine was deleted", &now
			continue
		case v.Machine.Quarantined():
			m.State, m.Detail, m.EndedAt = RMSkipped, "quarantined: "+v.Machine.Quarantine.Reason, &now
			continue
		}
		inFlight++
		if busy := v.Machine.Busy(); busy != "" {
			m.State, m.Detail = RMWaiting, "busy, waiting: "+busy
			continue
		}
		start = append(start, m.MAC)
	}
	return start
}

// Started records that the rollout's reflash of mac started as flash
// flashID; previousImage is the record's image it replaced.
func (r Rollout) Started(mac MAC, flashID int64, previousImage string, now time.Time) Rollout {
	now = now.UTC()
	r.Machines = cloneMachines(r.Machines)
	for i := range r.Machines {
		m := &r.Machines[i]
		if m.MAC == mac {
			m.State, m.FlashID, m.PreviousImage, m.Detail, m.StartedAt = RMFlashing, flashID, previousImage, "", &now
		}
	}
	if r.StartedAt == nil {
		r.StartedAt = &now
	}
	return r
}

// NotStarted records that mac's reflash could not start: busy (it
// waits and is tried again) or a failure with detail.
func (r Rollout) NotStarted(mac MAC, busy bool, detail string, now time.Time) Rollout {
	now = now.UTC()
	r.Machines = cloneMachines(r.Machines)
	for i := range r.Machines {
		m := &r.Machines[i]
		if m.MAC != mac {
			continue
		}
		if busy {
			m.State, m.Detail = RMWaiting, truncate("busy, waiting: "+detail, MaxFailureLen)
		} else {
			m.fail("the reflash did not start: "+detail, now)
		}
	}
	return r
}
