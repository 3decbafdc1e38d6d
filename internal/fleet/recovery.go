package fleet

import (
	"fmt"
	"time"
)

// Health watching, failure recovery and quarantine (docs/reference.md,
// "Failure recovery"). A record with health_every set is checked while
// its OS runs; the state below is what bty-web found and did.

// Health is the last state a machine's health check found.
type Health struct {
	// OK is the result of the last check; Since when the check has given
	// that result without a break; CheckedAt the last check; Detail the
	// failing check's error ("" when OK).
	OK        bool      `json:"ok"`
	Since     time.Time `json:"since"`
	CheckedAt time.Time `json:"checked_at"`
	Detail    string    `json:"detail"`
}

// RecoveryStep is where a recovery is.
type RecoveryStep string

// The recovery steps, in order.
const (
	StepCycle   RecoveryStep = "power-cycle" // the BMC power cycled the machine; waiting for it to be healthy
	StepReflash RecoveryStep = "reflash"     // a reflash (known-good, else the record's image) is running
	StepBackoff RecoveryStep = "backoff"     // the last reflash failed; the next waits until NextAt
)

// Recovery is a machine's recovery in progress (docs/reference.md,
// "Failure recovery").
type Recovery struct {
	// Reason is what started it: a failing health check, a failed
	// flash, a CI system's report.
	Reason    string       `json:"reason"`
	StartedAt time.Time    `json:"started_at"`
	Step      RecoveryStep `json:"step"`
	StepAt    time.Time    `json:"step_at"`
	// Reflashes counts the reflashes this recovery started; FlashID is
	// the latest (0 before one).
	Reflashes int   `json:"reflashes"`
	FlashID   int64 `json:"flash_id"`
	// NextAt is when the step may next act (a backoff, or the deadline
	// of waiting for health after the power cycle).
	NextAt *time.Time `json:"next_at"`
	// Cycled says the power cycle went through: only then can a passing
	// health check end the recovery before a reflash (a machine the BMC
	// could not cycle was not rebooted; its failure stands).
	Cycled bool `json:"cycled"`
}

// Quarantine is a machine taken out of automation after its recovery
// failed: schedules, rollouts and recovery leave it alone until an
// operator clears it.
type Quarantine struct {
	At     time.Time `json:"at"`
	Reason string    `json:"reason"`
}

// Quarantined reports whether m is in quarantine.
func (m Machine) Quarantined() bool { return m.Quarantine != nil }

// Busy says why automation (a schedule, a rollout, recovery) must wait
// for m before reflashing it ("" when it need not): a flash in progress
// or a recovery. A quarantined machine is not busy but excluded
// (Quarantined).
func (m Machine) Busy() string {
	switch {
	case m.Flash.Running():
		return fmt.Sprintf("flash %d (%s) is in progress", m.Flash.ID, m.Flash.Trigger)
	case m.Recovery != nil:
		return "recovery (" + string(m.Recovery.Step) + ") is in progress: " + m.Recovery.Reason
	}
	return ""
}

// StepQueued is a recovery waiting for a slot (RecoveryPolicy.MaxActive).
const StepQueued RecoveryStep = "queued"

// Health watch bounds: health_every from MinHealthEvery to
// MaxHealthEvery; health_fail_after from MinHealthFailAfter to
// MaxHealthFailAfter, DefaultHealthFailAfter when "".
const (
	MinHealthEvery         = 5 * time.Second
	MaxHealthEvery         = time.Hour
	MinHealthFailAfter     = 10 * time.Second
	MaxHealthFailAfter     = 24 * time.Hour
	DefaultHealthFailAfter = 5 * time.Minute
)

// ParseHealthEvery is a record's health_every ("" 0: not watched).
func ParseHealthEvery(s string) (time.Duration, error) {
	return parseBounded("health_every", s, MinHealthEvery, MaxHealthEvery, "like 30s or 1m (empty: no health watch)")
}

// ParseHealthFailAfter is a record's health_fail_after ("" 0: the
// default).
func ParseHealthFailAfter(s string) (time.Duration, error) {
	return parseBounded("health_fail_after", s, MinHealthFailAfter, MaxHealthFailAfter, "like 5m (empty: 5m)")
}

// Watched reports whether m's health is checked: health_every is set
// and m is not quarantined.
func (m Machine) Watched() bool {
	d, err := ParseHealthEvery(m.HealthEvery)
	return err == nil && d > 0 && m.Quarantine == nil
}

// FailAfter is how long m's check must fail before recovery starts.
func (m Machine) FailAfter() time.Duration {
	if d, err := ParseHealthFailAfter(m.HealthFailAfter); err == nil && d > 0 {
		return d
	}
	return DefaultHealthFailAfter
}

// HealthPort is the TCP port m's health check dials: its ready check's
// port, else 22 (a phone-home or none check has no port to dial).
func (m Machine) HealthPort() int {
	if p := m.ReadyCheck.Effective(m.ProvisioningMode).Port(); p != 0 {
		return p
	}
	return 22
}

// HealthAddress is where m's OS answers: its latest flash's OS
// address, else its last seen address.
func (m Machine) HealthAddress() string {
	if m.Flash != nil && m.Flash.OSAddress != "" {
		return m.Flash.OSAddress
	}
	return m.LastSeenIP
}

// CheckDue reports whether m's health check should run at now: m is
// watched (or waits for health after recovery's power cycle), its OS is
// meant to run (it has an address: a machine never booted through
// bty-web is not failing, it is not there yet), no flash runs (a flash
// has its own ready check), and its interval has passed since last
// (the zero time: never checked).
func (m Machine) CheckDue(last, now time.Time) bool {
	if !m.Watched() && (m.Recovery == nil || m.Recovery.Step != StepCycle) {
		return false
	}
	if m.Flash.Running() || m.HealthAddress() == "" {
		return false
	}
	every, _ := ParseHealthEvery(m.HealthEvery)
	if every == 0 {
		every = MinHealthEvery * 2 // a recovery of an unwatched machine (a report) checks every 10s
	}
	return last.IsZero() || now.Sub(last) >= every
}

// Checked is m with the result of a health check at now (err nil: it
// answered), and whether the stored record changes: a change of result,
// or the stored check older than refresh.
func (m Machine) Checked(err error, now time.Time, refresh time.Duration) (Machine, bool) {
	ok := err == nil
	detail := ""
	if err != nil {
		detail = truncate(err.Error(), 500)
	}
	h := m.Health
	if h != nil && h.OK == ok && now.Sub(h.CheckedAt) < refresh {
		return m, false
	}
	n := Health{OK: ok, Since: now.UTC(), CheckedAt: now.UTC(), Detail: detail}
	if h != nil && h.OK == ok {
		n.Since = h.Since
	}
	m.Health = &n
	return m, true
}

// RecoveryPolicy bounds recovery (docs/reference.md, "Failure
// recovery").
type RecoveryPolicy struct {
	// CycleWait is how long after a power cycle the machine has to pass
	// its health check before it is reflashed.
	CycleWait time.Duration
	// MaxReflashes is how many reflashes one recovery tries before the
	// machine is quarantined.
	MaxReflashes int
	// Backoff is the wait before the second reflash, doubled before
	// each further one.
	Backoff time.Duration
	// PerDay caps the recoveries a machine may start in 24 hours: one
	// more failure quarantines it (no recovery loop).
	PerDay int
	// MaxActive caps the recoveries past queued at once, fleet-wide.
	MaxActive int
}

// DefaultRecoveryPolicy is bty-web's recovery policy.
var DefaultRecoveryPolicy = RecoveryPolicy{CycleWait: 10 * time.Minute, MaxReflashes: 3, Backoff: 5 * time.Minute, PerDay: 3, MaxActive: 2}

// RecoveryAction is what recovery does next (NextRecovery).
type RecoveryAction string

// The actions; each is a row of the machine's history (fleet.Action).
const (
	ActNone       RecoveryAction = ""
	ActFailure    RecoveryAction = "failure"     // a failure was seen: recovery queued
	ActCycle      RecoveryAction = "power-cycle" // power cycle through the BMC
	ActReflash    RecoveryAction = "reflash"     // reflash to known-good, else the record's image
	ActBackoff    RecoveryAction = "backoff"     // a reflash failed: wait before the next
	ActRecovered  RecoveryAction = "recovered"   // healthy again: recovery ends
	ActQuarantine RecoveryAction = "quarantine"  // recovery gave up
	ActCancelled  RecoveryAction = "cancelled"   // an operator cancelled the recovery's flash
	ActCleared    RecoveryAction = "cleared"     // an operator cleared the quarantine
)

// StartRecovery is m with a recovery queued for reason at now, or
// quarantined at once when it already started p.PerDay recoveries in
// the last 24 hours (recent); the action says which. A machine
// recovering or quarantined is returned unchanged with ActNone.
func (m Machine) StartRecovery(reason string, recent int, p RecoveryPolicy, now time.Time) (Machine, RecoveryAction) {
	if m.Recovery != nil || m.Quarantine != nil {
		return m, ActNone
	}
	reason = truncate(reason, MaxFailureLen)
	if p.PerDay > 0 && recent >= p.PerDay {
		m.Quarantine = &Quarantine{At: now.UTC(), Reason: fmt.Sprintf("%d recoveries in 24 hours, then: %s", recent, reason)}
		return m, ActQuarantine
	}
	m.Recovery = &Recovery{Reason: reason, StartedAt: now.UTC(), Step: StepQueued, StepAt: now.UTC()}
	return m, ActFailure
}

// NextRecovery is what m's recovery does at now (ActNone: wait), with
// active the number of recoveries past queued fleet-wide (for a queued
// one). The caller acts, then records the step (RecoveryStepped).
func (m Machine) NextRecovery(p RecoveryPolicy, active int, now time.Time) RecoveryAction {
	r := m.Recovery
	if r == nil || m.Quarantine != nil {
		return ActNone
	}
	due := r.NextAt == nil || !now.Before(*r.NextAt)
	switch r.Step {
	case StepQueued:
		if m.Flash.Running() || (p.MaxActive > 0 && active >= p.MaxActive) {
			return ActNone
		}
		return ActCycle
	case StepCycle:
		if h := m.Health; r.Cycled && h != nil && h.OK && h.Since.After(r.StepAt) {
			return ActRecovered
		}
		if due {
			return m.reflashOrGiveUp(p)
		}
	case StepReflash:
		// The recovery's reflash, or a later one (an operator's) that
		// replaced it: its end is the step's.
		f := m.Flash
		if f == nil || f.ID < r.FlashID || f.Running() {
			return ActNone
		}
		switch f.Result {
		case FlashReady:
			return ActRecovered
		case FlashCancelled:
			return ActCancelled
		}
		if r.Reflashes >= p.MaxReflashes {
			return ActQuarantine
		}
		return ActBackoff
	case StepBackoff:
		if due && !m.Flash.Running() {
			return m.reflashOrGiveUp(p)
		}
	}
	return ActNone
}

func (m Machine) reflashOrGiveUp(p RecoveryPolicy) RecoveryAction {
	if m.Recovery.Reflashes >= p.MaxReflashes {
		return ActQuarantine
	}
	return ActReflash
}

// RecoveryStepped is m after its recovery took action a at now: flash
// is the reflash it started (ActReflash), detail what happened (a
// failed power cycle, the failed flash). Recovered and cancelled end
// the recovery; quarantine ends it and quarantines m.
func (m Machine) RecoveryStepped(a RecoveryAction, p RecoveryPolicy, flash int64, detail string, now time.Time) Machine {
	if m.Recovery == nil {
		return m
	}
	r := *m.Recovery
	at := now.UTC()
	switch a {
	case ActCycle:
		// A cycle that did not happen (no power driver, the BMC
		// failed) is stepped with no wait: the reflash is due at once.
		r.Step, r.StepAt, r.Cycled = StepCycle, at, p.CycleWait > 0
		next := at.Add(p.CycleWait)
		r.NextAt = &next
	case ActReflash:
		r.Step, r.StepAt, r.FlashID, r.NextAt = StepReflash, at, flash, nil
		r.Reflashes++
	case ActBackoff:
		r.Step, r.StepAt = StepBackoff, at
		next := at.Add(p.Backoff << min(max(r.Reflashes-1, 0), 10))
		r.NextAt = &next
	case ActQuarantine:
		reason := fmt.Sprintf("recovery gave up after %d reflashes: %s", r.Reflashes, r.Reason)
		if detail != "" {
			reason += " (last: " + truncate(detail, 500) + ")"
		}
		m.Quarantine = &Quarantine{At: at, Reason: reason}
		m.Recovery = nil
		m.UpdatedAt = at
		return m
	case ActRecovered, ActCancelled:
		m.Recovery = nil
		m.UpdatedAt = at
		return m
	default:
		return m
	}
	m.Recovery = &r
	m.UpdatedAt = at
	return m
}

// Clear is m out of quarantine (and any recovery) at now; ok false
// when it was in neither.
func (m Machine) Clear(now time.Time) (Machine, bool) {
	if m.Quarantine == nil && m.Recovery == nil {
		return m, false
	}
	m.Quarantine, m.Recovery, m.Health = nil, nil, nil
	m.UpdatedAt = now.UTC()
	return m, true
}

// State is the machine's state on the dashboard: quarantined,
// recovering, flashing, offline (its health check fails), ready (its
// health check or latest flash passed), or idle (nothing known).
func (m Machine) State() string {
	switch {
	case m.Quarantine != nil:
		return "quarantined"
	case m.Recovery != nil:
		return "recovering"
	case m.Flash.Running():
		return "flashing"
	case m.Health != nil && !m.Health.OK && (m.Flash == nil || m.Flash.EndedAt == nil || m.Health.Since.After(*m.Flash.EndedAt)):
		return "offline"
	case m.Health != nil && m.Health.OK, m.Flash != nil && m.Flash.Result == FlashReady:
		return "ready"
	}
	return "idle"
}

// MachineStates lists the states State answers, in dashboard order.
var MachineStates = []string{"ready", "flashing", "recovering", "quarantined", "offline", "idle"}

// Action is one step of the automation on a machine (docs/reference.md,
// "Failure recovery"): recovery's steps, a quarantine and its clearing.
type Action struct {
	ID      int64          `json:"id"`
	MAC     MAC            `json:"mac"`
	At      time.Time      `json:"at"`
	Trigger Trigger        `json:"trigger"`
	Action  RecoveryAction `json:"action"`
	// Reason is why recovery runs (the failure); Detail what this step
	// did or found; FlashID the reflash it started (0: none).
	Reason  string `json:"reason"`
	Detail  string `json:"detail"`
	FlashID int64  `json:"flash_id"`
}
