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
