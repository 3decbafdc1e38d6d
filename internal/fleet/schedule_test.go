package fleet

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// utc is a time in UTC: the tests' fake clock.
func utc(s string) time.Time {
	t, err := time.Parse("2006-01-02 15:04", s)
	if err != nil {
		panic(err)
	}
	return t
}

func newSchedule(t *testing.T, u ScheduleUpdate, now time.Time) Schedule {
	t.Helper()
	sel := "role=ci"
	if u.Selector == nil {
		u.Selector = &sel
	}
	name := "nightly"
	if u.Name == nil {
		u.Name = &name
	}
	s, errs := Schedule{}.Apply(u, now)
	if len(errs) > 0 {
		t.Fatalf("Apply: %v", errs)
	}
	s.ID = 7
	return s
}

func str(s string) *string { return &s }

// TestScheduleNextAcrossDST: '0 3 * * *' in Europe/Berlin fires at 03:00
// local every day, which is 02:00 UTC before the spring change (29
// March 2026) and 01:00 UTC after, and 02:00 UTC again after the
// autumn change (25 October 2026); a time in the hour that does not
// exist on the spring day (02:30) does not fire that day, and one in
// the hour that comes twice in autumn fires twice.
func TestScheduleNextAcrossDST(t *testing.T) {
	s := newSchedule(t, ScheduleUpdate{Cron: str("0 3 * * *"), TZ: str("Europe/Berlin")}, utc("2026-03-01 00:00"))
	var got []time.Time
	for n := utc("2026-03-27 12:00"); len(got) < 3; {
		n = s.Next(n)
		got = append(got, n)
	}
	want := []time.Time{utc("2026-03-28 02:00"), utc("2026-03-29 01:00"), utc("2026-03-30 01:00")}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("spring (-want +got):\n%s", d)
	}
	if n := s.Next(utc("2026-10-24 12:00")); !n.Equal(utc("2026-10-25 02:00")) {
		t.Errorf("autumn: next %v, want 2026-10-25 02:00 UTC (03:00 CET)", n)
	}
	s.Cron = "30 2 * * *"
	if n := s.Next(utc("2026-03-28 12:00")); !n.Equal(utc("2026-03-30 00:30")) {
		t.Errorf("02:30 on the spring day: next %v, want the day after, 2026-03-30 00:30 UTC (02:30 CEST)", n)
	}
	// 02:30 comes twice when the clocks go back: both fire.
	if n := s.Next(utc("2026-10-24 12:00")); !n.Equal(utc("2026-10-25 00:30")) || !s.Next(n).Equal(utc("2026-10-25 01:30")) {
		t.Errorf("02:30 on the autumn day: %v then %v, want 00:30 and 01:30 UTC", n, s.Next(n))
	}
	s.TZ, s.Cron = "UTC", "@daily"
	if n := s.Next(utc("2026-03-28 12:00")); !n.Equal(utc("2026-03-29 00:00")) {
		t.Errorf("@daily UTC: next %v", n)
	}
}

// TestScheduleValidate: each bad field is one error naming it; the
// defaults of a new schedule are reflash, 1 at a time, a 2h window, UTC.
func TestScheduleValidate(t *testing.T) {
	now := utc("2026-05-01 10:00")
	s := newSchedule(t, ScheduleUpdate{Cron: str("0 3 * * *")}, now)
	if s.Action != ActionReflash || s.MaxParallel != 1 || s.Window != "2h0m0s" || s.TZ != "UTC" || !s.CreatedAt.Equal(now) {
		t.Errorf("defaults: %+v", s)
	}
	kg, zero, big := ActionKnownGood, 0, 65
	bogus := ScheduleAction("wipe")
	tests := []struct {
		name  string
		u     ScheduleUpdate
		field string
	}{
		{"good", ScheduleUpdate{Action: &kg, TZ: str("America/New_York"), Window: str("30m")}, ""},
		{"no name", ScheduleUpdate{Name: str(" ")}, "name"},
		{"two-line name", ScheduleUpdate{Name: str("a\nb")}, "name"},
		{"no selector", ScheduleUpdate{Selector: str("")}, "selector"},
		{"six fields", ScheduleUpdate{Cron: str("0 0 3 * * *")}, "cron"},
		{"bad field", ScheduleUpdate{Cron: str("61 3 * * *")}, "cron"},
		{"@every", ScheduleUpdate{Cron: str("@every 1h")}, "cron"},
		{"CRON_TZ", ScheduleUpdate{Cron: str("CRON_TZ=UTC 0 3 * * *")}, "cron"},
		{"unknown zone", ScheduleUpdate{TZ: str("Mars/Olympus")}, "tz"},
		{"Local", ScheduleUpdate{TZ: str("Local")}, "tz"},
		{"action", ScheduleUpdate{Action: &bogus}, "action"},
		{"parallel 0", ScheduleUpdate{MaxParallel: &zero}, "max_parallel"},
		{"parallel 65", ScheduleUpdate{MaxParallel: &big}, "max_parallel"},
		{"window short", ScheduleUpdate{Window: str("30s")}, "window"},
		{"window long", ScheduleUpdate{Window: str("25h")}, "window"},
		{"window empty", ScheduleUpdate{Window: str("")}, "window"},
	}
	for _, tt := range tests {
		_, errs := s.Apply(tt.u, now)
		switch {
		case tt.field == "" && len(errs) > 0:
			t.Errorf("%s: %v", tt.name, errs)
		case tt.field != "" && (len(errs) != 1 || errs[0].(*ValidationError).Field != tt.field):
			t.Errorf("%s: %v, want one error for %s", tt.name, errs, tt.field)
		}
	}
}

// TestScheduleMissedRuns: down across three hourly occurrences, only the
// latest fires, and only while within its window; the others are
// counted skipped; an occurrence decided (fired or skipped) is never
// decided again, whatever the clock says next.
func TestScheduleMissedRuns(t *testing.T) {
	s := newSchedule(t, ScheduleUpdate{Cron: str("0 * * * *"), Window: str("30m")}, utc("2026-05-01 09:30"))
	last := utc("2026-05-01 10:00")
	s.LastFireAt = &last

	// Down from 10:05 to 13:10: 11:00, 12:00, 13:00 were missed.
	got, fired := s.Decide(nil, nil, utc("2026-05-01 13:10"))
	if !fired || !got.LastFireAt.Equal(utc("2026-05-01 13:00")) || got.Skipped != 2 || !got.LastSkipAt.Equal(utc("2026-05-01 12:00")) {
		t.Fatalf("13:10: fired %v, last fire %v, skipped %d (last %v); want 13:00 fired, 11:00 and 12:00 skipped",
			fired, got.LastFireAt, got.Skipped, got.LastSkipAt)
	}
	if o := got.Occurrence; o == nil || !o.At.Equal(utc("2026-05-01 13:00")) || !o.WindowEnd.Equal(utc("2026-05-01 13:30")) {
		t.Errorf("occurrence %+v", o)
	}
	// The same clock again (a second tick, or a restart reading the
	// stored schedule): nothing fires.
	if again, fired := got.Decide(nil, nil, utc("2026-05-01 13:10")); fired || again.Skipped != 2 {
		t.Errorf("the same occurrence again: fired %v, skipped %d", fired, again.Skipped)
	}
	if again, fired := got.Decide(nil, nil, utc("2026-05-01 13:59")); fired || again.Skipped != 2 {
		t.Errorf("before 14:00: fired %v, skipped %d", fired, again.Skipped)
	}
	if next := got.WithNext(utc("2026-05-01 13:10")).NextFireAt; next == nil || !next.Equal(utc("2026-05-01 14:00")) {
		t.Errorf("next fire %v, want 14:00", next)
	}

	// Down until 13:40: 13:00's window closed at 13:30, so nothing
	// fires and all three are skipped.
	got, fired = s.Decide(nil, nil, utc("2026-05-01 13:40"))
	if fired || got.Skipped != 3 || !got.LastSkipAt.Equal(utc("2026-05-01 13:00")) || !got.LastFireAt.Equal(last) || got.Occurrence != nil {
		t.Fatalf("13:40: fired %v, skipped %d (last %v), last fire %v", fired, got.Skipped, got.LastSkipAt, got.LastFireAt)
	}
	if again, fired := got.Decide(nil, nil, utc("2026-05-01 13:45")); fired || again.Skipped != 3 {
		t.Errorf("13:45: fired %v, skipped %d", fired, again.Skipped)
	}
	// The next occurrence fires as usual.
	if again, fired := got.Decide(nil, nil, utc("2026-05-01 14:00")); !fired || !again.LastFireAt.Equal(utc("2026-05-01 14:00")) {
		t.Errorf("14:00: fired %v at %v", fired, again.LastFireAt)
	}

	// A new schedule does not fire for times before it was made.
	fresh := newSchedule(t, ScheduleUpdate{Cron: str("0 * * * *")}, utc("2026-05-01 13:10"))
	if _, fired := fresh.Decide(nil, nil, utc("2026-05-01 13:20")); fired {
		t.Error("a schedule made at 13:10 fired 13:00")
	}
	// Paused: the occurrence is skipped, and does not fire on resume.
	paused := got
	paused.Paused = true
	p, fired := paused.Decide(nil, nil, utc("2026-05-01 14:05"))
	if fired || p.Skipped != 4 || p.NextFireAt != nil {
		t.Errorf("paused: fired %v, skipped %d, next %v", fired, p.Skipped, p.NextFireAt)
	}
	p.Paused = false
	if _, fired := p.Decide(nil, nil, utc("2026-05-01 14:06")); fired {
		t.Error("14:00, skipped while paused, fired on resume")
	}
}

func machine(mac string, labels Labels) Machine {
	return Machine{MAC: MustParseMAC(mac), Image: "a.img", Labels: labels}
}

// running is m with a running flash of schedule 7.
func running(m Machine, id int64, at time.Time) Machine {
	m.Flash = &Flash{ID: id, MAC: m.MAC, Trigger: TriggerSchedule, TriggerID: 7, Result: FlashRunning, RequestedAt: at}
	return m
}

func ended(m Machine, r FlashResult) Machine {
	f := *m.Flash
	f.Result = r
	m.Flash = &f
	return m
}

func byMAC(ms ...Machine) map[MAC]Machine {
	out := map[MAC]Machine{}
	for _, m := range ms {
		out[m.MAC] = m
	}
	return out
}

func states(s Schedule) map[string]string {
	out := map[string]string{}
	for _, om := range s.Occurrence.Machines {
		out[om.MAC.String()] = om.State
		if om.Reason != "" {
			out[om.MAC.String()] += ": " + om.Reason
		}
	}
	return out
}

const (
	mac1 = "52:54:00:00:00:01"
	mac2 = "52:54:00:00:00:02"
	mac3 = "52:54:00:00:00:03"
	mac4 = "52:54:00:00:00:04"
	mac5 = "52:54:00:00:00:05"
)

// TestScheduleSelection: the selector picks only matching machines; a
// quarantined one is skipped, and with known-good one without a
// baseline too; a machine without an image is skipped by reflash.
func TestScheduleSelection(t *testing.T) {
	reqs := []LabelRequirement{{Key: "role", Op: LabelEquals, Values: []string{"ci"}}}
	ci := Labels{"role": "ci"}
	q := machine(mac2, ci)
	q.Quarantine = &Quarantine{At: utc("2026-05-01 01:00"), Reason: "flash failed 3 times"}
	noImage := machine(mac4, ci)
	noImage.Image = ""
	base := machine(mac5, ci)
	base.LastKnownGood = &KnownGood{Image: "a.img", RunID: 3}
	ms := []Machine{machine(mac3, ci), q, machine(mac1, Labels{"role": "db"}), noImage, base}

	s := newSchedule(t, ScheduleUpdate{Cron: str("0 3 * * *")}, utc("2026-05-01 00:00"))
	got, fired := s.Decide(reqs, ms, utc("2026-05-01 03:00"))
	want := map[string]string{mac2: "skipped: quarantined", mac3: "queued", mac4: "skipped: no image assigned", mac5: "queued"}
	if d := cmp.Diff(want, states(got)); !fired || d != "" {
		t.Errorf("reflash: fired %v (-want +got):\n%s", fired, d)
	}
	if o := got.Occurrence; o.Machines[0].MAC.String() != mac2 || o.Machines[3].MAC.String() != mac5 {
		t.Errorf("not by MAC: %+v", o.Machines)
	}

	kg := ActionKnownGood
	s, _ = s.Apply(ScheduleUpdate{Action: &kg}, utc("2026-05-01 00:00"))
	got, _ = s.Decide(reqs, ms, utc("2026-05-01 03:00"))
	want = map[string]string{mac2: "skipped: quarantined", mac3: "skipped: no known-good baseline", mac4: "skipped: no known-good baseline", mac5: "queued"}
	if d := cmp.Diff(want, states(got)); d != "" {
		t.Errorf("known-good (-want +got):\n%s", d)
	}
}

// TestScheduleMaxParallel: with max 1 and three machines, one starts;
// the next only after the first's flash ended; a failed flash is
// recorded and the third then starts; the occurrence ends when all
// have.
func TestScheduleMaxParallel(t *testing.T) {
	ci := Labels{"role": "ci"}
	m1, m2, m3 := machine(mac1, ci), machine(mac2, ci), machine(mac3, ci)
	s := newSchedule(t, ScheduleUpdate{Cron: str("0 3 * * *")}, utc("2026-05-01 00:00"))
	s, _ = s.Decide(nil, []Machine{m3, m1, m2}, utc("2026-05-01 03:00"))

	at := utc("2026-05-01 03:00")
	s, start := s.Step(byMAC(m1, m2, m3), at)
	if d := cmp.Diff([]MAC{m1.MAC}, start); d != "" {
		t.Fatalf("first step (-want +got):\n%s", d)
	}
	s = s.Started(m1.MAC, 101, at)
	m1 = running(m1, 101, at)
	for _, now := range []time.Time{at.Add(time.Minute), at.Add(20 * time.Minute)} {
		if _, start := s.Step(byMAC(m1, m2, m3), now); len(start) != 0 {
			t.Fatalf("%v: started %v while flash 101 runs", now, start)
		}
	}
	m1 = ended(m1, FlashReady)
	s, start = s.Step(byMAC(m1, m2, m3), at.Add(25*time.Minute))
	if d := cmp.Diff([]MAC{m2.MAC}, start); d != "" || states(s)[mac1] != "done" {
		t.Fatalf("after 101 ended (-want +got):\n%s\n%v", d, states(s))
	}
	s = s.Started(m2.MAC, 102, at.Add(25*time.Minute))
	m2 = ended(running(m2, 102, at), FlashFailed)
	m2.Flash.Reason = "disk write error"
	s, start = s.Step(byMAC(m1, m2, m3), at.Add(40*time.Minute))
	if d := cmp.Diff([]MAC{m3.MAC}, start); d != "" || states(s)[mac2] != "failed: failed: disk write error" {
		t.Fatalf("after 102 failed (-want +got):\n%s\n%v", d, states(s))
	}
	s = s.Started(m3.MAC, 103, at.Add(40*time.Minute))
	m3 = ended(running(m3, 103, at), FlashReady)
	s, _ = s.Step(byMAC(m1, m2, m3), at.Add(50*time.Minute))
	if s.Occurrence.EndedAt == nil || !s.Occurrence.EndedAt.Equal(at.Add(50*time.Minute)) {
		t.Errorf("not ended: %+v", s.Occurrence)
	}
	if c := s.Occurrence.Counts(); c[SchedDone] != 2 || c[SchedFailed] != 1 {
		t.Errorf("counts %v", c)
	}

	// With max 2, two start at once.
	two := 2
	s2 := newSchedule(t, ScheduleUpdate{Cron: str("0 3 * * *"), MaxParallel: &two}, utc("2026-05-01 00:00"))
	m1, m2, m3 = machine(mac1, ci), machine(mac2, ci), machine(mac3, ci)
	s2, _ = s2.Decide(nil, []Machine{m1, m2, m3}, at)
	if _, start := s2.Step(byMAC(m1, m2, m3), at); len(start) != 2 {
		t.Errorf("max 2 started %v", start)
	}
}

// TestScheduleBusyAndWindow: a busy machine waits (the others start
// past it), is retried while the window is open, and is skipped,
// with why it waited, when the window closes; one quarantined after
// the fire is skipped; a machine the occurrence started before bty-web
// recorded it is adopted, not started again.
func TestScheduleBusyAndWindow(t *testing.T) {
	ci := Labels{"role": "ci"}
	m1, m2, m3 := machine(mac1, ci), machine(mac2, ci), machine(mac3, ci)
	three := 3
	s := newSchedule(t, ScheduleUpdate{Cron: str("0 3 * * *"), MaxParallel: &three, Window: str("1h")}, utc("2026-05-01 00:00"))
	at := utc("2026-05-01 03:00")
	s, _ = s.Decide(nil, []Machine{m1, m2, m3}, at)

	// m1 has a demand flash running; m2 was started by this occurrence
	// just before a restart; m3 gets quarantined.
	m1.Flash = &Flash{ID: 50, MAC: m1.MAC, Trigger: TriggerDemand, Result: FlashRunning, RequestedAt: at.Add(-time.Hour)}
	m2 = running(m2, 60, at.Add(time.Second))
	m3.Quarantine = &Quarantine{At: at, Reason: "x"}
	s, start := s.Step(byMAC(m1, m2, m3), at.Add(time.Minute))
	want := map[string]string{mac1: "queued: waiting: flash 50 (demand) is in progress", mac2: "started", mac3: "skipped: quarantined"}
	if d := cmp.Diff(want, states(s)); len(start) != 0 || d != "" {
		t.Fatalf("start %v (-want +got):\n%s", start, d)
	}
	if s.Occurrence.Machines[1].FlashID != 60 {
		t.Errorf("adopted flash %d, want 60", s.Occurrence.Machines[1].FlashID)
	}
	// Still busy at 03:59: waits. At 04:00 the window closed: skipped.
	if s2, start := s.Step(byMAC(m1, m2, m3), at.Add(59*time.Minute)); len(start) != 0 || states(s2)[mac1] == "skipped" {
		t.Fatalf("03:59: %v %v", start, states(s2))
	}
	s2, _ := s.Step(byMAC(m1, m2, m3), at.Add(time.Hour))
	if got := states(s2)[mac1]; !strings.HasPrefix(got, "skipped: "+SkipWindow) || !strings.Contains(got, "flash 50") {
		t.Errorf("at the window's end: %q", got)
	}
	if s2.Occurrence.EndedAt != nil {
		t.Error("ended while flash 60 runs")
	}
	// Had the demand flash ended at 03:30, m1 would have started then.
	m1 = ended(m1, FlashReady)
	if _, start := s.Step(byMAC(m1, m2, m3), at.Add(30*time.Minute)); len(start) != 1 || start[0] != m1.MAC {
		t.Errorf("after the demand flash ended: start %v", start)
	}
	// A refusal for a busy machine keeps it queued; another skips it.
	r := s.Refused(m1.MAC, "flash 51 is in progress", true, at)
	if states(r)[mac1] != "queued: waiting: flash 51 is in progress" {
		t.Errorf("busy refusal: %v", states(r))
	}
	r = s.Refused(m1.MAC, "the known-good image is gone", false, at)
	if states(r)[mac1] != "skipped: the known-good image is gone" {
		t.Errorf("refusal: %v", states(r))
	}
}
