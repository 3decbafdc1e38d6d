package fleet

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// The recovery's decisions, driven with explicit times (the fake clock).

var rp = RecoveryPolicy{CycleWait: 10 * time.Minute, MaxReflashes: 3, Backoff: 5 * time.Minute, PerDay: 3, MaxActive: 2}

func watched() Machine {
	return Machine{MAC: MustParseMAC("52:54:00:00:00:01"), Image: "a.img", HealthEvery: "30s", LastSeenIP: "10.0.0.5"}
}

func TestHealthChecked(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 3, 0, 0, 0, time.UTC)
	m := watched()
	if !m.CheckDue(time.Time{}, t0) || m.CheckDue(t0, t0.Add(29*time.Second)) || !m.CheckDue(t0, t0.Add(30*time.Second)) {
		t.Fatal("a 30s watch is due at once, then every 30s")
	}
	m, changed := m.Checked(nil, t0, time.Minute)
	if !changed || !m.Health.OK || !m.Health.Since.Equal(t0) {
		t.Fatalf("first check: %+v %v", m.Health, changed)
	}
	if _, changed := m.Checked(nil, t0.Add(30*time.Second), time.Minute); changed {
		t.Fatal("the same result within the refresh must not write")
	}
	m2, changed := m.Checked(nil, t0.Add(2*time.Minute), time.Minute)
	if !changed || !m2.Health.Since.Equal(t0) || !m2.Health.CheckedAt.Equal(t0.Add(2*time.Minute)) {
		t.Fatalf("a refresh keeps since: %+v", m2.Health)
	}
	if (Machine{HealthEvery: "30s"}).CheckDue(time.Time{}, t0) {
		t.Fatal("a machine with no address (never booted) is not checked")
	}
	m3, changed := m2.Checked(errors.New("connection refused"), t0.Add(3*time.Minute), time.Minute)
	if !changed || m3.Health.OK || !m3.Health.Since.Equal(t0.Add(3*time.Minute)) || m3.Health.Detail != "connection refused" {
		t.Fatalf("a failure: %+v", m3.Health)
	}
	if m3.State() != "offline" {
		t.Fatalf("state %q, want offline", m3.State())
	}
	// Not watched: never due; quarantined: not watched.
	if (Machine{}).CheckDue(time.Time{}, t0) {
		t.Fatal("an unwatched machine is not due")
	}
	q := watched()
	q.Quarantine = &Quarantine{At: t0}
	if q.Watched() || q.CheckDue(time.Time{}, t0) {
		t.Fatal("a quarantined machine is not checked")
	}
	f := watched()
	f.Flash = &Flash{ID: 1, Result: FlashRunning}
	if f.CheckDue(time.Time{}, t0) {
		t.Fatal("a flashing machine is not checked")
	}
}

func TestHealthBounds(t *testing.T) {
	for _, c := range []struct {
		every, after string
		ok           bool
	}{{"", "", true}, {"30s", "5m", true}, {"1s", "", false}, {"2h", "", false}, {"30s", "1s", false}, {"x", "", false}, {"", "25h", false}} {
		errs := MachineUpdate{HealthEvery: &c.every, HealthFailAfter: &c.after}.Validate()
		if (len(errs) == 0) != c.ok {
			t.Errorf("every %q after %q: %v, want ok %v", c.every, c.after, errs, c.ok)
		}
	}
	if d := (Machine{}).FailAfter(); d != DefaultHealthFailAfter {
		t.Fatalf("default fail after %v", d)
	}
	if p := (Machine{ReadyCheck: "tcp:8080"}).HealthPort(); p != 8080 {
		t.Fatalf("tcp:8080 port %d", p)
	}
	if p := (Machine{ProvisioningMode: ModeCloudInit}).HealthPort(); p != 22 {
		t.Fatalf("phone-home health port %d, want 22", p)
	}
}

// TestRecoveryCycleHeals: a power cycle after which the check passes
// ends the recovery without a reflash.
func TestRecoveryCycleHeals(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 3, 0, 0, 0, time.UTC)
	m, act := watched().StartRecovery("health check failing", 0, rp, t0)
	if act != ActFailure || m.Recovery == nil || m.Recovery.Step != StepQueued || m.State() != "recovering" || m.Busy() == "" {
		t.Fatalf("start: %v %+v", act, m.Recovery)
	}
	if a := m.NextRecovery(rp, 2, t0); a != ActNone {
		t.Fatalf("with 2 recoveries active (MaxActive 2) it must wait, got %q", a)
	}
	if a := m.NextRecovery(rp, 1, t0); a != ActCycle {
		t.Fatalf("queued with a free slot: %q, want power-cycle", a)
	}
	m = m.RecoveryStepped(ActCycle, rp, 0, "", t0)
	if a := m.NextRecovery(rp, 0, t0.Add(time.Minute)); a != ActNone {
		t.Fatalf("waiting for health: %q", a)
	}
	// A check that passed before the cycle does not count.
	m.Health = &Health{OK: true, Since: t0.Add(-time.Hour)}
	if a := m.NextRecovery(rp, 0, t0.Add(time.Minute)); a != ActNone {
		t.Fatalf("an old OK must not end the recovery: %q", a)
	}
	m.Health = &Health{OK: true, Since: t0.Add(2 * time.Minute)}
	if a := m.NextRecovery(rp, 0, t0.Add(3*time.Minute)); a != ActRecovered {
		t.Fatalf("healthy after the cycle: %q", a)
	}
	// A cycle that did not happen (the BMC failed: no wait) does not
	// count a passing check: the reflash is due at once.
	nc := m.RecoveryStepped(ActCycle, RecoveryPolicy{MaxReflashes: 3}, 0, "", t0)
	nc.Health = &Health{OK: true, Since: t0.Add(time.Second)}
	if a := nc.NextRecovery(rp, 0, t0.Add(2*time.Second)); a != ActReflash {
		t.Fatalf("healthy after a failed cycle: %q, want reflash", a)
	}
	m = m.RecoveryStepped(ActRecovered, rp, 0, "", t0.Add(3*time.Minute))
	if m.Recovery != nil || m.Quarantine != nil {
		t.Fatalf("recovered: %+v %+v", m.Recovery, m.Quarantine)
	}
}

// TestRecoveryQuarantine: every reflash fails; the backoff doubles
// between them and the machine is quarantined after MaxReflashes.
func TestRecoveryQuarantine(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 3, 0, 0, 0, time.UTC)
	m, _ := watched().StartRecovery("flash 3 failed", 0, rp, t0)
	m = m.RecoveryStepped(ActCycle, rp, 0, "", t0)
	now := t0
	if a := m.NextRecovery(rp, 0, now.Add(rp.CycleWait-time.Second)); a != ActNone {
		t.Fatalf("before the cycle wait: %q", a)
	}
	now = now.Add(rp.CycleWait)
	var waits []time.Duration
	for i := 1; ; i++ {
		a := m.NextRecovery(rp, 0, now)
		if a != ActReflash {
			t.Fatalf("reflash %d: %q", i, a)
		}
		id := int64(10 + i)
		m = m.RecoveryStepped(ActReflash, rp, id, "", now)
		if m.Recovery.Reflashes != i || m.Recovery.FlashID != id {
			t.Fatalf("after reflash %d: %+v", i, m.Recovery)
		}
		m.Flash = &Flash{ID: id, Trigger: TriggerFailure, Result: FlashRunning}
		if a := m.NextRecovery(rp, 0, now.Add(time.Hour)); a != ActNone {
			t.Fatalf("while the reflash runs: %q", a)
		}
		now = now.Add(20 * time.Minute)
		m.Flash.Result, m.Flash.Reason = FlashFailed, "disk error"
		a = m.NextRecovery(rp, 0, now)
		if i == rp.MaxReflashes {
			if a != ActQuarantine {
				t.Fatalf("after %d failed reflashes: %q, want quarantine", i, a)
			}
			m = m.RecoveryStepped(a, rp, 0, "flash 13 ended failed: disk error", now)
			break
		}
		if a != ActBackoff {
			t.Fatalf("failed reflash %d: %q, want backoff", i, a)
		}
		m = m.RecoveryStepped(ActBackoff, rp, 0, "", now)
		wait := m.Recovery.NextAt.Sub(now)
		waits = append(waits, wait)
		if a := m.NextRecovery(rp, 0, now.Add(wait-time.Second)); a != ActNone {
			t.Fatalf("inside the backoff: %q", a)
		}
		now = now.Add(wait)
	}
	if len(waits) != 2 || waits[0] != 5*time.Minute || waits[1] != 10*time.Minute {
		t.Fatalf("backoffs %v, want [5m 10m]", waits)
	}
	if m.Quarantine == nil || m.Recovery != nil || !strings.Contains(m.Quarantine.Reason, "3 reflashes") ||
		!strings.Contains(m.Quarantine.Reason, "disk error") || m.State() != "quarantined" || m.Watched() {
		t.Fatalf("quarantined: %+v %+v %q", m.Quarantine, m.Recovery, m.State())
	}
	// Quarantined: no new recovery, no step, until cleared.
	if _, a := m.StartRecovery("again", 0, rp, now); a != ActNone {
		t.Fatalf("a quarantined machine started a recovery: %q", a)
	}
	c, ok := m.Clear(now)
	if !ok || c.Quarantine != nil || !c.Watched() {
		t.Fatalf("cleared: %+v", c.Quarantine)
	}
	if _, ok := c.Clear(now); ok {
		t.Fatal("clearing twice must say nothing to clear")
	}
}

// TestRecoveryCaps: the daily cap quarantines instead of recovering; a
// ready reflash ends the recovery; a cancelled one stops it.
func TestRecoveryCaps(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 3, 0, 0, 0, time.UTC)
	m, a := watched().StartRecovery("bad again", rp.PerDay, rp, t0)
	if a != ActQuarantine || m.Quarantine == nil || m.Recovery != nil || !strings.Contains(m.Quarantine.Reason, "3 recoveries in 24 hours") {
		t.Fatalf("at the daily cap: %q %+v", a, m.Quarantine)
	}
	m, _ = watched().StartRecovery("bad", rp.PerDay-1, rp, t0)
	if m.Recovery == nil {
		t.Fatal("below the cap a recovery starts")
	}
	if _, a := m.StartRecovery("twice", 0, rp, t0); a != ActNone {
		t.Fatal("a recovering machine must not start a second recovery")
	}
	m = m.RecoveryStepped(ActCycle, rp, 0, "", t0)
	m = m.RecoveryStepped(ActReflash, rp, 7, "", t0.Add(rp.CycleWait))
	m.Flash = &Flash{ID: 7, Result: FlashReady}
	if a := m.NextRecovery(rp, 0, t0.Add(time.Hour)); a != ActRecovered {
		t.Fatalf("ready reflash: %q", a)
	}
	m.Flash = &Flash{ID: 7, Result: FlashCancelled}
	if a := m.NextRecovery(rp, 0, t0.Add(time.Hour)); a != ActCancelled {
		t.Fatalf("cancelled reflash: %q", a)
	}
	// A later flash replaced the recovery's (an operator's): its end
	// is the step's; an older one is not.
	m.Flash = &Flash{ID: 8, Result: FlashFailed}
	if a := m.NextRecovery(rp, 0, t0.Add(time.Hour)); a != ActBackoff {
		t.Fatalf("a later failed flash: %q", a)
	}
	m.Flash = &Flash{ID: 6, Result: FlashReady}
	if a := m.NextRecovery(rp, 0, t0.Add(time.Hour)); a != ActNone {
		t.Fatalf("an older flash: %q", a)
	}
}
