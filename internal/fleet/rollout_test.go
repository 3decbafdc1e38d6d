package fleet

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// rolloutWorld is a fake fleet for Advance: records, the rollout's
// flashes by machine and the runs that followed them, and a clock.
type rolloutWorld struct {
	t      *testing.T
	now    time.Time
	views  map[MAC]RolloutView
	nextID int64
}

func newRolloutWorld(t *testing.T, n int) (*rolloutWorld, []Machine) {
	w := &rolloutWorld{t: t, now: time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC), views: map[MAC]RolloutView{}, nextID: 100}
	var ms []Machine
	// Created in reverse MAC order: the rollout orders them itself.
	for i := n; i >= 1; i-- {
		mac, err := ParseMAC(fmt.Sprintf("52:54:00:00:00:%02x", i))
		if err != nil {
			t.Fatal(err)
		}
		m := Machine{MAC: mac, Image: "old.img"}
		ms = append(ms, m)
		w.views[mac] = RolloutView{Machine: m, Found: true}
	}
	return w, ms
}

func mac(t *testing.T, i int) MAC {
	m, err := ParseMAC(fmt.Sprintf("52:54:00:00:00:%02x", i))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func intp(v int) *int { return &v }

// step advances r one minute later and starts the reflashes Advance
// asks for (each a running flash with provisioning mode), returning
// the MACs started.
func (w *rolloutWorld) step(r Rollout, mode Mode) (Rollout, []MAC) {
	w.t.Helper()
	w.now = w.now.Add(time.Minute)
	r, start := Advance(r, w.views, w.now)
	for _, m := range start {
		v := w.views[m]
		if v.Machine.Busy() != "" {
			w.t.Fatalf("Advance started busy machine %s: %s", m, v.Machine.Busy())
		}
		w.nextID++
		f := &Flash{ID: w.nextID, MAC: m, Trigger: TriggerRollout, TriggerID: r.ID, Image: r.Image, Provisioning: mode, Result: FlashRunning, RequestedAt: w.now}
		v.Flash, v.Machine.Flash, v.Run = f, f, nil
		w.views[m] = v
		r = r.Started(m, f.ID, v.Machine.Image, w.now)
	}
	return r, start
}

// end ends machine i's current flash with res.
func (w *rolloutWorld) end(i int, res FlashResult) {
	w.t.Helper()
	v := w.views[mac(w.t, i)]
	if !v.Flash.Running() {
		w.t.Fatalf("machine %d has no running flash", i)
	}
	f := *v.Flash
	at := w.now
	f.Result, f.EndedAt = res, &at
	if res != FlashReady {
		f.Reason = "the disk said no"
	}
	v.Flash, v.Machine.Flash = &f, &f
	w.views[mac(w.t, i)] = v
}

// run records machine i's run after its flash with result res.
func (w *rolloutWorld) run(i int, res RunResult) {
	v := w.views[mac(w.t, i)]
	w.nextID++
	v.Run = &Run{ID: w.nextID, MAC: v.Machine.MAC, FlashID: v.Flash.ID, Result: res}
	if res.Ended() && res != RunSuccess {
		v.Run.Reason = "cijoe exited 1"
	}
	w.views[mac(w.t, i)] = v
}

func rolloutStates(r Rollout) string {
	var s []string
	for _, m := range r.Machines {
		s = append(s, fmt.Sprintf("%s:%s", m.MAC.String()[15:], m.State))
	}
	return strings.Join(s, " ")
}

func macsOf(t *testing.T, is ...int) []MAC {
	var out []MAC
	for _, i := range is {
		out = append(out, mac(t, i))
	}
	return out
}

func wantStart(t *testing.T, got []MAC, is ...int) {
	t.Helper()
	if want := macsOf(t, is...); !slices.Equal(got, want) {
		t.Fatalf("started %v, want %v", got, want)
	}
}

// TestRolloutCanaryFirstThenParallel: the canary starts alone; nothing
// else while it flashes; then the rest, at most max_parallel in flight,
// in MAC order; the rollout succeeds when all did.
func TestRolloutCanaryFirstThenParallel(t *testing.T) {
	w, ms := newRolloutWorld(t, 5)
	r := NewRollout(RolloutRequest{Selector: "role=ci", Image: "new.img", MaxParallel: intp(2)}, ms, w.now)
	if r.Canary != 1 || r.MaxParallel != 2 || r.MaxFailures != 0 || r.State != RolloutRunning {
		t.Fatalf("defaults: %+v", r)
	}
	for i, m := range r.Machines {
		if m.Order != i+1 || m.MAC != mac(t, i+1) || m.Canary != (i == 0) {
			t.Fatalf("machine %d: %+v, want order by MAC, the first the canary", i, m)
		}
	}
	r, start := w.step(r, ModeNone)
	wantStart(t, start, 1)
	if r.StartedAt == nil || r.Machines[0].State != RMFlashing || r.Machines[0].PreviousImage != "old.img" {
		t.Fatalf("after the canary started: %+v", r)
	}
	for range 3 {
		if r, start = w.step(r, ModeNone); len(start) != 0 {
			t.Fatalf("started %v while the canary flashes (%s)", start, rolloutStates(r))
		}
	}
	w.end(1, FlashReady)
	r, start = w.step(r, ModeNone)
	wantStart(t, start, 2, 3)
	if r.Machines[0].State != RMSucceeded {
		t.Fatalf("canary: %s", rolloutStates(r))
	}
	if r, start = w.step(r, ModeNone); len(start) != 0 {
		t.Fatalf("started %v with max_parallel 2 in flight (%s)", start, rolloutStates(r))
	}
	w.end(3, FlashReady)
	r, start = w.step(r, ModeNone)
	wantStart(t, start, 4)
	w.end(2, FlashReady)
	w.end(4, FlashReady)
	r, start = w.step(r, ModeNone)
	wantStart(t, start, 5)
	if r.State != RolloutRunning || r.EndedAt != nil {
		t.Fatalf("ended early: %+v", r)
	}
	w.end(5, FlashReady)
	r, _ = w.step(r, ModeNone)
	if r.State != RolloutSucceeded || r.EndedAt == nil || r.Count(RMSucceeded) != 5 {
		t.Fatalf("at the end: %s %v %s", r.State, r.EndedAt, rolloutStates(r))
	}
	if r2, start := w.step(r, ModeNone); len(start) != 0 || r2.EndedAt != r.EndedAt {
		t.Fatal("an ended rollout moved")
	}
}

// TestRolloutStopsOnFirstFailure: with max_failures 0 the first failed
// flash stops the rollout: nothing new starts, the one in flight
// finishes and is recorded, the pending ones are skipped.
func TestRolloutStopsOnFirstFailure(t *testing.T) {
	w, ms := newRolloutWorld(t, 5)
	r := NewRollout(RolloutRequest{Selector: "a=b", Image: "new.img", MaxParallel: intp(2)}, ms, w.now)
	r, _ = w.step(r, ModeNone)
	w.end(1, FlashReady)
	r, start := w.step(r, ModeNone)
	wantStart(t, start, 2, 3)
	w.end(2, FlashFailed)
	r, start = w.step(r, ModeNone)
	if len(start) != 0 || r.State != RolloutFailed || !strings.Contains(r.Reason, mac(t, 2).String()) || !strings.Contains(r.Reason, "the disk said no") {
		t.Fatalf("after the failure: started %v, %s %q", start, r.State, r.Reason)
	}
	if r.EndedAt != nil || r.Machines[2].State != RMFlashing || r.Machines[3].State != RMSkipped || r.Machines[4].State != RMSkipped {
		t.Fatalf("machine 3 should still flash, 4 and 5 be skipped, the rollout not ended: %s", rolloutStates(r))
	}
	if !r.Active() || !r.Holds(mac(t, 3)) || r.Holds(mac(t, 4)) {
		t.Fatal("the stopped rollout should still hold the machine in flight only")
	}
	w.end(3, FlashReady)
	r, start = w.step(r, ModeNone)
	if len(start) != 0 || r.Machines[2].State != RMSucceeded || r.EndedAt == nil || r.State != RolloutFailed || r.Active() {
		t.Fatalf("after the last in flight ended: %s %v %s", r.State, r.EndedAt, rolloutStates(r))
	}
}

// TestRolloutMaxFailures: failures up to max_failures are tolerated;
// one more stops the rollout.
func TestRolloutMaxFailures(t *testing.T) {
	w, ms := newRolloutWorld(t, 5)
	r := NewRollout(RolloutRequest{Selector: "a=b", Image: "new.img", MaxFailures: intp(1)}, ms, w.now)
	r, _ = w.step(r, ModeNone)
	w.end(1, FlashReady)
	r, start := w.step(r, ModeNone)
	wantStart(t, start, 2)
	w.end(2, FlashTimeout)
	r, start = w.step(r, ModeNone)
	wantStart(t, start, 3)
	if r.State != RolloutRunning || r.Machines[1].State != RMFailed {
		t.Fatalf("one failure with max_failures 1: %s %s", r.State, rolloutStates(r))
	}
	w.end(3, FlashCancelled)
	r, start = w.step(r, ModeNone)
	if len(start) != 0 || r.State != RolloutFailed || !strings.Contains(r.Reason, "2 machines failed, more than max_failures 1") || r.EndedAt == nil {
		t.Fatalf("two failures: started %v, %s %q %v", start, r.State, r.Reason, r.EndedAt)
	}
	if r.Machines[3].State != RMSkipped || r.Machines[4].State != RMSkipped {
		t.Fatal(rolloutStates(r))
	}
}

// TestRolloutCanaryFailureStops: a failed canary stops the rollout
// whatever max_failures; the rest never start.
func TestRolloutCanaryFailureStops(t *testing.T) {
	w, ms := newRolloutWorld(t, 3)
	r := NewRollout(RolloutRequest{Selector: "a=b", Image: "new.img", MaxFailures: intp(5), Canary: intp(2), MaxParallel: intp(3)}, ms, w.now)
	r, start := w.step(r, ModeNone)
	wantStart(t, start, 1, 2) // the canaries together, the third not
	w.end(1, FlashFailed)
	r, start = w.step(r, ModeNone)
	if len(start) != 0 || r.State != RolloutFailed || !strings.HasPrefix(r.Reason, "canary ") || r.Machines[2].State != RMSkipped {
		t.Fatalf("after a canary failed: %v %s %q %s", start, r.State, r.Reason, rolloutStates(r))
	}
}

// TestRolloutPauseResumeAbort: paused starts nothing (in flight goes
// on); resume picks up; abort skips the pending, lets the one in flight
// end, and refuses a second abort.
func TestRolloutPauseResumeAbort(t *testing.T) {
	w, ms := newRolloutWorld(t, 4)
	r := NewRollout(RolloutRequest{Selector: "a=b", Image: "new.img", Canary: intp(0)}, ms, w.now)
	if r.Canary != 0 || r.Machines[0].Canary {
		t.Fatal("canary 0 still made a canary")
	}
	r, start := w.step(r, ModeNone)
	wantStart(t, start, 1)
	r, err := r.Pause()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Pause(); err == nil {
		t.Error("paused twice")
	}
	w.end(1, FlashReady)
	r, start = w.step(r, ModeNone)
	if len(start) != 0 || r.State != RolloutPaused || r.Machines[0].State != RMSucceeded {
		t.Fatalf("paused: started %v, %s %s", start, r.State, rolloutStates(r))
	}
	if r, start = w.step(r, ModeNone); len(start) != 0 {
		t.Fatal("paused rollout started", start)
	}
	if r, err = r.Resume(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Resume(); err == nil {
		t.Error("resumed a running rollout")
	}
	r, start = w.step(r, ModeNone)
	wantStart(t, start, 2)
	r, err = r.Abort("", w.now)
	if err != nil {
		t.Fatal(err)
	}
	if r.State != RolloutAborted || r.Reason != "aborted by an operator" || r.EndedAt != nil ||
		r.Machines[1].State != RMFlashing || r.Machines[2].State != RMSkipped || r.Machines[3].State != RMSkipped {
		t.Fatalf("aborted: %s %q %v %s", r.State, r.Reason, r.EndedAt, rolloutStates(r))
	}
	if _, err := r.Abort("again", w.now); err == nil {
		t.Error("aborted twice")
	}
	r, start = w.step(r, ModeNone)
	if len(start) != 0 || r.EndedAt != nil {
		t.Fatal("aborted rollout started or ended with a flash in flight")
	}
	w.end(2, FlashReady)
	r, _ = w.step(r, ModeNone)
	if r.State != RolloutAborted || r.EndedAt == nil || r.Machines[1].State != RMSucceeded {
		t.Fatalf("after the last flash: %s %v %s", r.State, r.EndedAt, rolloutStates(r))
	}
}

// TestRolloutBusyWaited: a machine busy at its turn (a flash of its own
// in progress, a recovery) waits, holding its slot, and is not started
// until it is free.
func TestRolloutBusyWaited(t *testing.T) {
	w, ms := newRolloutWorld(t, 3)
	v := w.views[mac(t, 1)]
	v.Machine.Flash = &Flash{ID: 7, Trigger: TriggerDemand, Result: FlashRunning}
	w.views[mac(t, 1)] = v
	r := NewRollout(RolloutRequest{Selector: "a=b", Image: "new.img"}, ms, w.now)
	r, start := w.step(r, ModeNone)
	if len(start) != 0 || r.Machines[0].State != RMWaiting || !strings.Contains(r.Machines[0].Detail, "flash 7 (demand)") {
		t.Fatalf("busy canary: started %v, %+v", start, r.Machines[0])
	}
	// Its own flash ends, then a recovery takes it.
	v.Machine.Flash = &Flash{ID: 7, Result: FlashReady}
	v.Machine.Recovery = &Recovery{Reason: "health check failing", Step: StepCycle}
	w.views[mac(t, 1)] = v
	r, start = w.step(r, ModeNone)
	if len(start) != 0 || r.Machines[0].State != RMWaiting || !strings.Contains(r.Machines[0].Detail, "recovery") || r.Machines[1].State != RMPending {
		t.Fatalf("recovering canary: %v %s %+v", start, rolloutStates(r), r.Machines[0])
	}
	v.Machine.Recovery = nil
	w.views[mac(t, 1)] = v
	r, start = w.step(r, ModeNone)
	wantStart(t, start, 1)
	if r.Machines[0].State != RMFlashing {
		t.Fatal(rolloutStates(r))
	}
	// A busy machine of the rest holds its slot (max_parallel 1).
	v = w.views[mac(t, 2)]
	v.Machine.Flash = &Flash{ID: 8, Trigger: TriggerSchedule, Result: FlashRunning}
	w.views[mac(t, 2)] = v
	w.end(1, FlashReady)
	r, start = w.step(r, ModeNone)
	if len(start) != 0 || r.Machines[1].State != RMWaiting || r.Machines[2].State != RMPending {
		t.Fatalf("busy machine 2: started %v, %s", start, rolloutStates(r))
	}
}

// TestRolloutQuarantineSkipped: a quarantined machine is skipped at the
// start (with the reason) and never made a canary; one quarantined
// later is skipped at its turn.
func TestRolloutQuarantineSkipped(t *testing.T) {
	w, ms := newRolloutWorld(t, 3)
	for i := range ms {
		if ms[i].MAC == mac(t, 1) {
			ms[i].Quarantine = &Quarantine{Reason: "3 reflashes failed"}
		}
	}
	r := NewRollout(RolloutRequest{Selector: "a=b", Image: "new.img"}, ms, w.now)
	if r.Machines[0].MAC != mac(t, 2) || !r.Machines[0].Canary || r.Machines[1].MAC != mac(t, 1) ||
		r.Machines[1].State != RMSkipped || r.Machines[1].Detail != "quarantined: 3 reflashes failed" {
		t.Fatalf("order with a quarantined machine: %+v", r.Machines)
	}
	v := w.views[mac(t, 3)]
	v.Machine.Quarantine = &Quarantine{Reason: "later"}
	w.views[mac(t, 3)] = v
	r, start := w.step(r, ModeNone)
	wantStart(t, start, 2)
	w.end(2, FlashReady)
	r, start = w.step(r, ModeNone)
	if len(start) != 0 || r.Machines[2].State != RMSkipped || r.Machines[2].Detail != "quarantined: later" || r.State != RolloutSucceeded {
		t.Fatalf("quarantined at its turn: %v %s %s", start, r.State, rolloutStates(r))
	}
}

// TestRolloutCijoeOnline: a machine whose flash provisions cijoe-online
// succeeds only once the run after its flash succeeds, and fails when
// that run fails.
func TestRolloutCijoeOnline(t *testing.T) {
	w, ms := newRolloutWorld(t, 2)
	r := NewRollout(RolloutRequest{Selector: "a=b", Image: "new.img"}, ms, w.now)
	r, _ = w.step(r, ModeCijoeOnline)
	w.end(1, FlashReady)
	r, start := w.step(r, ModeCijoeOnline)
	if len(start) != 0 || r.Machines[0].State != RMVerifying {
		t.Fatalf("ready, no run yet: %v %s", start, rolloutStates(r))
	}
	w.run(1, RunRunning)
	r, start = w.step(r, ModeCijoeOnline)
	if len(start) != 0 || r.Machines[0].State != RMVerifying || r.Machines[0].RunID == 0 {
		t.Fatalf("run running: %v %+v", start, r.Machines[0])
	}
	w.run(1, RunSuccess)
	r, start = w.step(r, ModeCijoeOnline)
	wantStart(t, start, 2)
	if r.Machines[0].State != RMSucceeded {
		t.Fatal(rolloutStates(r))
	}
	w.end(2, FlashReady)
	w.run(2, RunFailed)
	r, _ = w.step(r, ModeCijoeOnline)
	if r.Machines[1].State != RMFailed || !strings.Contains(r.Machines[1].Detail, "cijoe exited 1") || r.State != RolloutFailed || r.EndedAt == nil {
		t.Fatalf("failed run: %s %q %+v", r.State, r.Reason, r.Machines[1])
	}

	// No run recorded at all: failed after the grace.
	w, ms = newRolloutWorld(t, 1)
	r = NewRollout(RolloutRequest{Selector: "a=b", Image: "new.img"}, ms, w.now)
	r, _ = w.step(r, ModeCijoeOnline)
	w.end(1, FlashReady)
	r, _ = w.step(r, ModeCijoeOnline)
	w.now = w.now.Add(RolloutRunGrace)
	if r, _ = w.step(r, ModeCijoeOnline); r.Machines[0].State != RMFailed || !strings.Contains(r.Machines[0].Detail, "no workflow run") {
		t.Fatalf("no run after the grace: %+v", r.Machines[0])
	}
}

// TestRolloutStartRefused: a reflash refused as busy waits and is tried
// again; one refused otherwise fails the machine and stops the rollout.
func TestRolloutStartRefused(t *testing.T) {
	w, ms := newRolloutWorld(t, 2)
	r := NewRollout(RolloutRequest{Selector: "a=b", Image: "new.img"}, ms, w.now)
	r, start := Advance(r, w.views, w.now)
	wantStart(t, start, 1)
	r = r.NotStarted(mac(t, 1), true, "flash 9 is in progress", w.now)
	if r.Machines[0].State != RMWaiting {
		t.Fatal(rolloutStates(r))
	}
	r, start = Advance(r, w.views, w.now)
	wantStart(t, start, 1)
	r = r.NotStarted(mac(t, 1), false, `"new.img" is not in the catalog`, w.now)
	r, start = Advance(r, w.views, w.now)
	if len(start) != 0 || r.State != RolloutFailed || !strings.Contains(r.Reason, "not in the catalog") || r.Machines[1].State != RMSkipped || r.EndedAt == nil {
		t.Fatalf("refused start: %v %s %q %s", start, r.State, r.Reason, rolloutStates(r))
	}
}

func TestRolloutRequestValidate(t *testing.T) {
	for _, c := range []struct {
		r     RolloutRequest
		field string
	}{
		{RolloutRequest{Image: "x"}, "selector"},
		{RolloutRequest{Selector: "a=b"}, "image"},
		{RolloutRequest{Selector: "a=b", Image: "x", Canary: intp(-1)}, "canary"},
		{RolloutRequest{Selector: "a=b", Image: "x", MaxParallel: intp(0)}, "max_parallel"},
		{RolloutRequest{Selector: "a=b", Image: "x", MaxParallel: intp(MaxRolloutParallel + 1)}, "max_parallel"},
		{RolloutRequest{Selector: "a=b", Image: "x", MaxFailures: intp(-1)}, "max_failures"},
	} {
		err := c.r.Validate()
		if ve, ok := err.(*ValidationError); !ok || ve.Field != c.field {
			t.Errorf("%+v: %v, want a ValidationError on %s", c.r, err, c.field)
		}
	}
	if err := (RolloutRequest{Selector: "a=b", Image: "x", Canary: intp(0), MaxParallel: intp(4), MaxFailures: intp(2)}).Validate(); err != nil {
		t.Error(err)
	}
}

// TestRolloutCanariesAlone: with two canaries, one done and one still
// flashing, no other machine starts though a canary slot is free.
func TestRolloutCanariesAlone(t *testing.T) {
	w, ms := newRolloutWorld(t, 4)
	r := NewRollout(RolloutRequest{Selector: "a=b", Image: "new.img", Canary: intp(2), MaxParallel: intp(4)}, ms, w.now)
	r, start := w.step(r, ModeNone)
	wantStart(t, start, 1, 2)
	w.end(1, FlashReady)
	if r, start = w.step(r, ModeNone); len(start) != 0 {
		t.Fatalf("started %v while canary 2 flashes (%s)", start, rolloutStates(r))
	}
	w.end(2, FlashReady)
	_, start = w.step(r, ModeNone)
	wantStart(t, start, 3, 4)
}
