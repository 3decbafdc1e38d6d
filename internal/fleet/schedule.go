package fleet

import (
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/robfig/cron/v3"
)

// Schedules (docs/reference.md, "Schedules"): a label selector, a cron
// expression in a time zone, an action, a concurrency limit and a
// window. The functions here decide, given the schedule, the machines
// and the time now, which occurrence fires, which are skipped, and
// which machines start next; bty-web's runner stores the result and
// starts the reflashes. Every function takes now: tests pass a fake
// clock.

// ScheduleAction is what a schedule does to each machine.
type ScheduleAction string

// The schedule actions.
const (
	ActionReflash   ScheduleAction = "reflash"    // reflash the record's image
	ActionKnownGood ScheduleAction = "known-good" // reflash the machine's known-good baseline
)

// ScheduleActions are the actions, in the order messages list them.
var ScheduleActions = []ScheduleAction{ActionReflash, ActionKnownGood}

// The limits of a schedule's fields.
const (
	DefaultScheduleParallel = 1
	MaxScheduleParallel     = 64
	DefaultScheduleWindow   = 2 * time.Hour
	MinScheduleWindow       = time.Minute
	MaxScheduleWindow       = 24 * time.Hour
	MaxScheduleNameLen      = 128
	MaxScheduleCronLen      = 256
	MaxSchedules            = 256
	// maxSkipCount bounds the counting of skipped occurrences after a
	// long stop (a minutely schedule after a month down).
	maxSkipCount = 10000
)

// The states of a machine in an occurrence.
const (
	SchedQueued  = "queued"  // selected, not started yet (waiting for its turn, or for the machine)
	SchedStarted = "started" // its reflash is running
	SchedDone    = "done"    // its reflash ended ready
	SchedFailed  = "failed"  // its reflash ended otherwise, or could not be followed
	SchedSkipped = "skipped" // never started: Reason says why
)

// The reasons a machine is skipped.
const (
	SkipQuarantined = "quarantined"
	SkipNoBaseline  = "no known-good baseline"
	SkipNoImage     = "no image assigned"
	SkipGone        = "machine deleted"
	SkipWindow      = "the window closed before it could start"
	SkipSuperseded  = "the next occurrence fired before it could start"
)

// Schedule is one schedule and the state of its latest occurrence.
type Schedule struct {
	ID   int64  `json:"id"`
	Name string `json:"name"`
	// Selector is a label selector (docs/reference.md, "Labels and
	// selectors"), checked by bty-web (internal/labels): never empty.
	Selector string `json:"selector"`
	// Cron is a standard 5-field cron expression or a descriptor
	// (@daily, @hourly, ...), read in time zone TZ (an IANA name).
	Cron        string         `json:"cron"`
	TZ          string         `json:"tz"`
	Action      ScheduleAction `json:"action"`
	MaxParallel int            `json:"max_parallel"`
	// Window is how long after its time an occurrence may still start
	// machines ("2h").
	Window    string    `json:"window"`
	Paused    bool      `json:"paused"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	// LastFireAt is the time of the last occurrence that fired (its
	// scheduled time, not when it fired); LastSkipAt the last one
	// skipped unfired and Skipped how many were. Together they are the
	// mark up to which occurrences are decided: none fires twice.
	LastFireAt *time.Time `json:"last_fire_at"`
	LastSkipAt *time.Time `json:"last_skip_at"`
	Skipped    int        `json:"skipped"`
	// NextFireAt is the next occurrence's time (null while paused).
	NextFireAt *time.Time `json:"next_fire_at"`
	// Occurrence is the latest fired occurrence (null before the
	// first).
	Occurrence *Occurrence `json:"occurrence"`
}

// Occurrence is one firing of a schedule and its machines.
type Occurrence struct {
	// At is the scheduled time; FiredAt when bty-web fired it;
	// WindowEnd when unstarted machines are skipped; EndedAt when every
	// machine was done, failed or skipped (null before).
	At        time.Time  `json:"at"`
	FiredAt   time.Time  `json:"fired_at"`
	WindowEnd time.Time  `json:"window_end"`
	EndedAt   *time.Time `json:"ended_at"`
	// Machines are the machines the selector picked at FiredAt, by MAC.
	Machines []OccurrenceMachine `json:"machines"`
}

// OccurrenceMachine is one machine of an occurrence.
type OccurrenceMachine struct {
	MAC   MAC    `json:"mac"`
	State string `json:"state"`
	// FlashID is the reflash the occurrence started (0 before).
	FlashID int64 `json:"flash_id"`
	// Reason says why it waits (queued), failed or was skipped.
	Reason string     `json:"reason"`
	At     *time.Time `json:"at"`
}

// ScheduleUpdate is the body of POST /schedules (a new schedule: name,
// selector and cron required) and PUT /schedules/{id} (absent fields
// keep their value).
type ScheduleUpdate struct {
	Name        *string         `json:"name"`
	Selector    *string         `json:"selector"`
	Cron        *string         `json:"cron"`
	TZ          *string         `json:"tz"`
	Action      *ScheduleAction `json:"action"`
	MaxParallel *int            `json:"max_parallel"`
	Window      *string         `json:"window"`
	Paused      *bool           `json:"paused"`
}

// Apply returns s with u's fields set (defaults for what a new schedule
// leaves unset) and checked: one *ValidationError per bad field.
// UpdatedAt (and CreatedAt of a new schedule, ID 0) become now. The
// selector is checked by the caller, which has the parser.
func (s Schedule) Apply(u ScheduleUpdate, now time.Time) (Schedule, []error) {
	set := func(dst *string, v *string) {
		if v != nil {
			*dst = strings.TrimSpace(*v)
		}
	}
	set(&s.Name, u.Name)
	set(&s.Selector, u.Selector)
	set(&s.Cron, u.Cron)
	set(&s.TZ, u.TZ)
	set(&s.Window, u.Window)
	if u.Action != nil {
		s.Action = *u.Action
	}
	if u.MaxParallel != nil {
		s.MaxParallel = *u.MaxParallel
	}
	if u.Paused != nil {
		s.Paused = *u.Paused
	}
	if s.ID == 0 {
		s.CreatedAt = now.UTC()
		if s.TZ == "" {
			s.TZ = "UTC"
		}
		if s.Action == "" {
			s.Action = ActionReflash
		}
		if s.MaxParallel == 0 && u.MaxParallel == nil {
			s.MaxParallel = DefaultScheduleParallel
		}
		if s.Window == "" {
			s.Window = DefaultScheduleWindow.String()
		}
	}
	s.UpdatedAt = now.UTC()
	return s, s.Validate()
}

// Validate checks every field but the selector: one *ValidationError
// per bad field.
func (s Schedule) Validate() []error {
	var errs []error
	bad := func(field, msg string) { errs = append(errs, &ValidationError{Field: field, Msg: msg}) }
	switch {
	case s.Name == "":
		bad("name", "give the schedule a name (--name nightly-ci)")
	case utf8.RuneCountInString(s.Name) > MaxScheduleNameLen || !utf8.ValidString(s.Name) || strings.ContainsFunc(s.Name, isControl):
		bad("name", fmt.Sprintf("at most %d characters of one line", MaxScheduleNameLen))
	}
	if s.Selector == "" {
		bad("selector", "give a label selector (role=ci,rack!=r3): a schedule never reflashes every machine by default")
	}
	if _, err := s.loc(); err != nil {
		errs = append(errs, err)
	} else if _, err := s.spec(); err != nil {
		errs = append(errs, err)
	}
	if !slices.Contains(ScheduleActions, s.Action) {
		errs = append(errs, oneOfError("action", string(s.Action), ScheduleActions))
	}
	if s.MaxParallel < 1 || s.MaxParallel > MaxScheduleParallel {
		bad("max_parallel", fmt.Sprintf("%d: give 1 to %d (how many of its reflashes run at once)", s.MaxParallel, MaxScheduleParallel))
	}
	if _, err := ParseScheduleWindow(s.Window); err != nil {
		errs = append(errs, err)
	}
	return errs
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// ParseScheduleWindow is s as a window within MinScheduleWindow and
// MaxScheduleWindow.
func ParseScheduleWindow(s string) (time.Duration, error) {
	if s == "" {
		return 0, &ValidationError{Field: "window", Msg: "give a duration like 2h or 30m"}
	}
	return parseBounded("window", s, MinScheduleWindow, MaxScheduleWindow, "like 2h or 30m")
}

// loc is the schedule's time zone.
func (s Schedule) loc() (*time.Location, error) {
	if s.TZ == "" || s.TZ == "Local" || len(s.TZ) > 64 {
		return nil, &ValidationError{Field: "tz", Msg: fmt.Sprintf("%q: name an IANA time zone like Europe/Berlin or UTC", truncate(s.TZ, 64))}
	}
	l, err := time.LoadLocation(s.TZ)
	if err != nil {
		return nil, &ValidationError{Field: "tz", Msg: fmt.Sprintf("%q is not a time zone bty-web knows: name an IANA zone like Europe/Berlin or UTC", s.TZ)}
	}
	return l, nil
}

// cronParser reads the standard 5 fields (minute hour day-of-month
// month day-of-week) and the descriptors (@daily, @hourly, ...).
var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// spec is the parsed cron expression in the schedule's zone.
func (s Schedule) spec() (*cron.SpecSchedule, error) {
	bad := func(msg string) error {
		return &ValidationError{Field: "cron", Msg: fmt.Sprintf("%q: %s", truncate(s.Cron, 64), msg)}
	}
	switch {
	case s.Cron == "":
		return nil, bad("give a cron expression: 5 fields, minute hour day-of-month month day-of-week, like '0 3 * * *' (03:00 daily), or @daily")
	case len(s.Cron) > MaxScheduleCronLen:
		return nil, bad(fmt.Sprintf("at most %d bytes", MaxScheduleCronLen))
	case strings.Contains(s.Cron, "TZ="):
		return nil, bad("give the time zone in tz, not in the expression")
	case strings.HasPrefix(s.Cron, "@every"):
		return nil, bad("@every is not anchored to the clock: give 5 fields like '*/30 * * * *'")
	}
	loc, err := s.loc()
	if err != nil {
		return nil, err
	}
	sched, err := cronParser.Parse(s.Cron)
	if err != nil {
		return nil, bad(err.Error() + " (5 fields: minute hour day-of-month month day-of-week, like '0 3 * * *', or @daily)")
	}
	spec, ok := sched.(*cron.SpecSchedule)
	if !ok {
		return nil, bad("not a calendar expression")
	}
	c := *spec
	c.Location = loc
	return &c, nil
}

// Next is the schedule's first occurrence after t (the zero time when
// it has none within five years, or the expression does not parse).
func (s Schedule) Next(t time.Time) time.Time {
	spec, err := s.spec()
	if err != nil {
		return time.Time{}
	}
	n := spec.Next(t)
	if n.IsZero() {
		return n
	}
	return n.UTC()
}

// window is the schedule's window (DefaultScheduleWindow when it does
// not parse, which Validate refuses).
func (s Schedule) window() time.Duration {
	d, err := ParseScheduleWindow(s.Window)
	if err != nil || d == 0 {
		return DefaultScheduleWindow
	}
	return d
}

// mark is the time up to which occurrences are decided: the latest of
// the last change (an occurrence before a schedule was made or changed
// is not its), the last fired and the last skipped occurrence.
func (s Schedule) mark() time.Time {
	m := s.CreatedAt
	for _, t := range []*time.Time{&s.UpdatedAt, s.LastFireAt, s.LastSkipAt} {
		if t != nil && t.After(m) {
			m = *t
		}
	}
	return m
}

// Due decides the occurrences after the schedule's mark up to now (the
// missed-run rule, docs/reference.md, "Schedules"): the latest of them
// fires (fire non-nil) if now is still within its window, and every
// other, or that one too when its window has closed, is skipped
// (skipped counts them; lastSkip is the latest). A paused schedule
// fires nothing: its occurrences are skipped. An occurrence exactly at
// the mark was decided already, so none is decided twice.
func (s Schedule) Due(now time.Time) (fire *time.Time, skipped int, lastSkip *time.Time) {
	spec, err := s.spec()
	if err != nil {
		return nil, 0, nil
	}
	w := s.window()
	from := s.mark()
	skip := func(t time.Time) {
		skipped++
		t = t.UTC()
		lastSkip = &t
	}
	// Occurrences whose window closed by now are skipped, whatever
	// follows: count them (bounded) and start the search after them.
	if closed := now.Add(-w); closed.After(from) {
		for t := spec.Next(from); !t.IsZero() && !t.After(closed); t = spec.Next(t) {
			if skipped == maxSkipCount {
				// Too many to count: decided up to closed.
				c := closed.UTC()
				lastSkip = &c
				break
			}
			skip(t)
		}
		from = closed
	}
	var latest time.Time
	for t := spec.Next(from); !t.IsZero() && !t.After(now); t = spec.Next(t) {
		if !latest.IsZero() {
			skip(latest)
		}
		latest = t
	}
	if latest.IsZero() {
		return nil, skipped, lastSkip
	}
	if s.Paused {
		skip(latest)
		return nil, skipped, lastSkip
	}
	at := latest.UTC()
	return &at, skipped, lastSkip
}

// WithNext is s with NextFireAt set to the next occurrence after now
// (null while paused).
func (s Schedule) WithNext(now time.Time) Schedule {
	s.NextFireAt = nil
	if s.Paused {
		return s
	}
	from := now
	if m := s.mark(); m.After(from) {
		from = m
	}
	if n := s.Next(from); !n.IsZero() {
		s.NextFireAt = &n
	}
	return s
}

// Decide applies Due at now: it records the skipped occurrences and,
// when one fires, opens its occurrence with the machines ms that match
// reqs (the schedule's parsed selector) as they are now: quarantined
// ones, and for a known-good schedule those without a baseline, are
// skipped at once; the rest are queued. An occurrence still open is
// closed first (its queued machines skipped). fired reports whether
// an occurrence fired; the caller stores the result before starting
// any machine (Step), so a restart never fires it again.
func (s Schedule) Decide(reqs []LabelRequirement, ms []Machine, now time.Time) (out Schedule, fired bool) {
	fire, n, lastSkip := s.Due(now)
	if n > 0 {
		s.Skipped += n
		s.LastSkipAt = lastSkip
	}
	if fire == nil {
		return s.WithNext(now), false
	}
	at := now.UTC()
	if o := s.Occurrence; o != nil && o.EndedAt == nil {
		for i := range o.Machines {
			if o.Machines[i].State == SchedQueued {
				o.Machines[i].State, o.Machines[i].Reason, o.Machines[i].At = SchedSkipped, SkipSuperseded, &at
			}
		}
		o.EndedAt = &at
	}
	o := &Occurrence{At: *fire, FiredAt: at, WindowEnd: fire.Add(s.window()), Machines: []OccurrenceMachine{}}
	for _, m := range ms {
		if !m.Labels.Matches(reqs) {
			continue
		}
		om := OccurrenceMachine{MAC: m.MAC, State: SchedQueued}
		switch {
		case m.Quarantined():
			om.State, om.Reason, om.At = SchedSkipped, SkipQuarantined, &at
		case s.Action == ActionKnownGood && (m.LastKnownGood.IsZero() || m.LastKnownGood.RunID == 0):
			om.State, om.Reason, om.At = SchedSkipped, SkipNoBaseline, &at
		case s.Action == ActionReflash && m.Image == "":
			om.State, om.Reason, om.At = SchedSkipped, SkipNoImage, &at
		}
		o.Machines = append(o.Machines, om)
	}
	slices.SortFunc(o.Machines, func(a, b OccurrenceMachine) int { return strings.Compare(a.MAC.String(), b.MAC.String()) })
	s.Occurrence = o
	s.LastFireAt = fire
	s = s.endIfDone(now)
	return s.WithNext(now), true
}

// inFlight reports whether om's reflash is still running on m: m's
// latest flash is the one the occurrence started, from this schedule.
func (s Schedule) inFlight(om OccurrenceMachine, m Machine) bool {
	return m.Flash != nil && m.Flash.ID == om.FlashID && m.Flash.Trigger == TriggerSchedule &&
		m.Flash.TriggerID == s.ID && m.Flash.Running()
}

// Step advances the open occurrence at now, given the current records
// of its machines (by MAC; a missing one was deleted): started machines
// whose reflash ended become done or failed; within the window, queued
// machines start in MAC order while fewer than MaxParallel of the
// occurrence's reflashes are in flight, a busy one (Machine.Busy)
// waiting with the reason and the next one tried; once the window has
// closed, queued machines are skipped. start are the machines to
// reflash now; the caller records each with Started (or Refused). A
// paused schedule starts none.
func (s Schedule) Step(ms map[MAC]Machine, now time.Time) (out Schedule, start []MAC) {
	o := s.Occurrence
	if o == nil || o.EndedAt != nil {
		return s, nil
	}
	o = cloneOccurrence(o)
	s.Occurrence = o
	at := now.UTC()
	flying := 0
	for i := range o.Machines {
		om := &o.Machines[i]
		m, ok := ms[om.MAC]
		switch {
		case om.State == SchedQueued && ok && m.Flash != nil && m.Flash.Trigger == TriggerSchedule && m.Flash.TriggerID == s.ID &&
			!m.Flash.RequestedAt.Before(o.FiredAt):
			// Started by this occurrence before bty-web could record
			// it (a stop between the two): adopt it, never start twice.
			om.State, om.FlashID, om.Reason, om.At = SchedStarted, m.Flash.ID, "", &at
		case om.State != SchedStarted:
			continue
		}
		switch {
		case !ok:
			om.State, om.Reason, om.At = SchedFailed, SkipGone, &at
		case s.inFlight(*om, m):
			flying++
		case m.Flash == nil || m.Flash.ID != om.FlashID:
			om.State, om.Reason, om.At = SchedFailed, fmt.Sprintf("flash %d is no longer the machine's latest", om.FlashID), &at
		case m.Flash.Result == FlashReady:
			om.State, om.Reason, om.At = SchedDone, "", &at
		default:
			reason := string(m.Flash.Result)
			if m.Flash.Reason != "" {
				reason += ": " + m.Flash.Reason
			}
			om.State, om.Reason, om.At = SchedFailed, reason, &at
		}
	}
	closed := !now.Before(o.WindowEnd)
	for i := range o.Machines {
		om := &o.Machines[i]
		if om.State != SchedQueued {
			continue
		}
		m, ok := ms[om.MAC]
		switch {
		case !ok:
			om.State, om.Reason, om.At = SchedSkipped, SkipGone, &at
		case m.Quarantined():
			om.State, om.Reason, om.At = SchedSkipped, SkipQuarantined, &at
		case closed:
			reason := SkipWindow
			if om.Reason != "" {
				reason += " (" + om.Reason + ")"
			}
			om.State, om.Reason, om.At = SchedSkipped, reason, &at
		case s.Paused || flying >= s.MaxParallel:
		case m.Busy() != "":
			om.Reason = "waiting: " + m.Busy()
		default:
			start = append(start, om.MAC)
			flying++
		}
	}
	return s.endIfDone(now), start
}

// Started records that mac's reflash, flash id, started at now.
func (s Schedule) Started(mac MAC, id int64, now time.Time) Schedule {
	return s.setMachine(mac, now, func(om *OccurrenceMachine) {
		om.State, om.FlashID, om.Reason = SchedStarted, id, ""
	})
}

// Refused records that mac's reflash could not start: busy keeps it
// queued (tried again on a later tick, within the window), otherwise it
// is skipped with the reason.
func (s Schedule) Refused(mac MAC, reason string, busy bool, now time.Time) Schedule {
	s = s.setMachine(mac, now, func(om *OccurrenceMachine) {
		if busy {
			om.Reason = "waiting: " + reason
			return
		}
		om.State, om.Reason = SchedSkipped, reason
	})
	return s.endIfDone(now)
}

func (s Schedule) setMachine(mac MAC, now time.Time, fn func(*OccurrenceMachine)) Schedule {
	if s.Occurrence == nil {
		return s
	}
	s.Occurrence = cloneOccurrence(s.Occurrence)
	at := now.UTC()
	for i := range s.Occurrence.Machines {
		if om := &s.Occurrence.Machines[i]; om.MAC == mac && om.State == SchedQueued {
			fn(om)
			om.At = &at
		}
	}
	return s
}

// endIfDone ends the occurrence once no machine is queued or started.
func (s Schedule) endIfDone(now time.Time) Schedule {
	o := s.Occurrence
	if o == nil || o.EndedAt != nil {
		return s
	}
	for _, om := range o.Machines {
		if om.State == SchedQueued || om.State == SchedStarted {
			return s
		}
	}
	o = cloneOccurrence(o)
	at := now.UTC()
	o.EndedAt = &at
	s.Occurrence = o
	return s
}

// Counts is how many machines of the occurrence are in each state.
func (o *Occurrence) Counts() map[string]int {
	c := map[string]int{}
	if o != nil {
		for _, om := range o.Machines {
			c[om.State]++
		}
	}
	return c
}

func cloneOccurrence(o *Occurrence) *Occurrence {
	c := *o
	c.Machines = slices.Clone(o.Machines)
	return &c
}
