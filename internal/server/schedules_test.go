package server

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/btyproject/bty/internal/api"
	"github.com/btyproject/bty/internal/fleet"
)

// schedule reads schedule id through the API.
func (ts *testServer) schedule(t *testing.T, id int64) api.Schedule {
	t.Helper()
	r := ts.do(t, "GET", fmt.Sprintf("/schedules/%d", id), nil, ts.auth())
	if r.code != 200 {
		t.Fatalf("GET schedule %d: %d %s", id, r.code, r.body)
	}
	var s api.Schedule
	r.json(t, &s)
	return s
}

// flashes is mac's flash history, newest first.
func (ts *testServer) flashes(t *testing.T, mac string) []fleet.Flash {
	t.Helper()
	r := ts.do(t, "GET", "/machines/"+mac+"/flashes", nil, ts.auth())
	if r.code != 200 {
		t.Fatalf("GET flashes of %s: %d %s", mac, r.code, r.body)
	}
	var p api.FlashPage
	r.json(t, &p)
	return p.Flashes
}

func machineStates(s api.Schedule) map[string]string {
	out := map[string]string{}
	for _, om := range s.Occurrence.Machines {
		out[om.MAC.String()] = om.State
	}
	return out
}

// TestScheduleRunner: a schedule made through the API fires at its cron
// time (ticks driven with fake times; the server's own loop is off): it reflashes the machines its selector picks
// one at a time (max_parallel 1), each a history row with trigger
// schedule, the schedule's id and its name as the cause; a
// quarantined machine is skipped; the next starts only after the
// running flash ended; a new runner over the same store (a restart)
// fires nothing again and starts nothing twice; a machine not started
// when the window closes is skipped; pause, delete.
func TestScheduleRunner(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.manualTicks = true })
	ts.addImage(t, "a.img")
	ctx := context.Background()
	const (
		m1, m2, m3 = "52:54:00:5c:00:01", "52:54:00:5c:00:02", "52:54:00:5c:00:03"
		quar, db   = "52:54:00:5c:00:04", "52:54:00:5c:00:05"
	)
	for mac, role := range map[string]string{m1: "ci", m2: "ci", m3: "ci", quar: "ci", db: "db"} {
		body := fmt.Sprintf(`{"image": "a.img", "labels": {"role": %q}}`, role)
		if r := ts.do(t, "PUT", "/machines/"+mac, strings.NewReader(body), ts.auth()); r.code != 201 {
			t.Fatalf("PUT %s: %d %s", mac, r.code, r.body)
		}
	}
	if _, err := ts.st.ModifyMachine(ctx, fleet.MustParseMAC(quar), func(m fleet.Machine, _ bool) (fleet.Machine, error) {
		m.Quarantine = &fleet.Quarantine{At: time.Now().UTC(), Reason: "recovery gave up"}
		return m, nil
	}); err != nil {
		t.Fatal(err)
	}

	for body, want := range map[string]string{
		`{"name": "x", "selector": "role=ci", "cron": "0 3 * *"}`:                       "cron",
		`{"name": "x", "selector": "role=ci", "cron": "0 3 * * *", "tz": "Mars/Base"}`:  "tz",
		`{"name": "x", "selector": "role in (", "cron": "0 3 * * *"}`:                   "selector",
		`{"name": "x", "cron": "0 3 * * *"}`:                                            "selector",
		`{"name": "x", "selector": "role=ci", "cron": "@daily", "max_parallel": 65}`:    "max_parallel",
		`{"name": "x", "selector": "role=ci", "cron": "@daily", "action": "wipe"}`:      "action",
		`{"name": "x", "selector": "role=ci", "cron": "@daily", "window": "48h"}`:       "window",
		`{"name": "x", "selector": "role=ci", "cron": "@daily", "trigger": "schedule"}`: "unknown field",
	} {
		if r := ts.do(t, "POST", "/schedules", strings.NewReader(body), ts.auth()); r.code != 400 || !strings.Contains(r.errMsg(t), want) {
			t.Errorf("POST %s: %d %s, want 400 naming %s", body, r.code, r.body, want)
		}
	}
	r := ts.do(t, "POST", "/schedules", strings.NewReader(`{"name": "nightly", "selector": "role=ci", "cron": "0 3 * * *", "tz": "Europe/Berlin", "window": "2h"}`), ts.auth())
	if r.code != 201 {
		t.Fatalf("POST /schedules: %d %s", r.code, r.body)
	}
	var sch api.Schedule
	r.json(t, &sch)
	if sch.ID == 0 || sch.Action != fleet.ActionReflash || sch.MaxParallel != 1 || sch.NextFireAt == nil || sch.Occurrence != nil {
		t.Fatalf("created: %+v", sch)
	}
	if h := sch.NextFireAt.In(mustZone(t, "Europe/Berlin")); h.Hour() != 3 || h.Minute() != 0 {
		t.Errorf("next fire %v is not 03:00 in Berlin", h)
	}
	var list []api.Schedule
	ts.do(t, "GET", "/schedules", nil, ts.auth()).json(t, &list)
	if len(list) != 1 || list[0].ID != sch.ID || list[0].NextFireAt == nil {
		t.Fatalf("GET /schedules: %+v", list)
	}

	at := *sch.NextFireAt
	ts.srv.scheduleTick(ctx, at.Add(time.Minute))
	got := ts.schedule(t, sch.ID)
	want := map[string]string{m1: "started", m2: "queued", m3: "queued", quar: "skipped"}
	if d := fmt.Sprint(machineStates(got)); d != fmt.Sprint(want) || got.LastFireAt == nil || !got.LastFireAt.Equal(at) {
		t.Fatalf("after the first tick: %v (last fire %v), want %v fired at %v", d, got.LastFireAt, want, at)
	}
	if reason := got.Occurrence.Machines[3].Reason; reason != fleet.SkipQuarantined {
		t.Errorf("quarantined machine's reason %q", reason)
	}
	hist := ts.flashes(t, m1)
	if len(hist) != 1 || hist[0].Trigger != fleet.TriggerSchedule || hist[0].TriggerID != sch.ID || hist[0].Cause != "schedule nightly" ||
		hist[0].ID != got.Occurrence.Machines[0].FlashID || !hist[0].Running() {
		t.Fatalf("m1's history: %+v", hist)
	}
	for _, mac := range []string{m2, m3, quar, db} {
		if h := ts.flashes(t, mac); len(h) != 0 {
			t.Errorf("%s was flashed: %+v", mac, h)
		}
	}

	// Flash 1 runs: the next tick starts nothing.
	ts.srv.scheduleTick(ctx, at.Add(2*time.Minute))
	if h := ts.flashes(t, m2); len(h) != 0 {
		t.Fatalf("m2 started while m1's flash runs: %+v", h)
	}
	// It ends (cancelled): m1 failed, m2 starts.
	if r := ts.do(t, "POST", fmt.Sprintf("/machines/%s/flashes/%d/cancel", m1, hist[0].ID), nil, ts.auth()); r.code != 200 {
		t.Fatalf("cancel: %d %s", r.code, r.body)
	}
	ts.srv.scheduleTick(ctx, at.Add(3*time.Minute))
	got = ts.schedule(t, sch.ID)
	if s := machineStates(got); s[m1] != "failed" || s[m2] != "started" || s[m3] != "queued" {
		t.Fatalf("after m1's flash ended: %v", s)
	}
	if h := ts.flashes(t, m2); len(h) != 1 || h[0].Trigger != fleet.TriggerSchedule || h[0].TriggerID != sch.ID {
		t.Fatalf("m2's history: %+v", h)
	}

	// A restart: a new server over the same store fires nothing again
	// and starts nothing twice.
	srv2 := New(ts.cfg, ts.st, nil, nil)
	defer srv2.Close()
	srv2.scheduleTick(ctx, at.Add(4*time.Minute))
	srv2.scheduleTick(ctx, at.Add(30*time.Minute))
	after := ts.schedule(t, sch.ID)
	if !after.LastFireAt.Equal(at) || !after.Occurrence.FiredAt.Equal(got.Occurrence.FiredAt) || after.Skipped != 0 {
		t.Fatalf("after the restart: last fire %v, fired at %v, skipped %d", after.LastFireAt, after.Occurrence.FiredAt, after.Skipped)
	}
	if len(ts.flashes(t, m1)) != 1 || len(ts.flashes(t, m2)) != 1 || len(ts.flashes(t, m3)) != 0 {
		t.Fatal("the restart started a reflash again")
	}

	// The window closes (2h) with m2 still flashing: m3 is skipped.
	srv2.scheduleTick(ctx, at.Add(2*time.Hour))
	got = ts.schedule(t, sch.ID)
	if s := machineStates(got); s[m3] != "skipped" || !strings.Contains(got.Occurrence.Machines[2].Reason, "window") || got.Occurrence.EndedAt != nil {
		t.Fatalf("at the window's end: %v %+v", s, got.Occurrence)
	}
	if len(ts.flashes(t, m3)) != 0 {
		t.Fatal("m3 flashed after the window")
	}

	// Pause: no next fire; the API shows it; then delete.
	r = ts.do(t, "PUT", fmt.Sprintf("/schedules/%d", sch.ID), strings.NewReader(`{"paused": true}`), ts.auth())
	var paused api.Schedule
	if r.code != 200 {
		t.Fatalf("pause: %d %s", r.code, r.body)
	}
	r.json(t, &paused)
	if !paused.Paused || paused.NextFireAt != nil || paused.Name != "nightly" || paused.Cron != "0 3 * * *" {
		t.Errorf("paused: %+v", paused)
	}
	if r := ts.do(t, "PUT", fmt.Sprintf("/schedules/%d", sch.ID), strings.NewReader(`{"cron": "bogus"}`), ts.auth()); r.code != 400 || !strings.Contains(r.errMsg(t), "cron") {
		t.Errorf("bad PUT: %d %s", r.code, r.body)
	}
	if r := ts.do(t, "PUT", "/schedules/999", strings.NewReader(`{"paused": false}`), ts.auth()); r.code != 404 {
		t.Errorf("PUT unknown: %d", r.code)
	}
	if r := ts.do(t, "DELETE", fmt.Sprintf("/schedules/%d", sch.ID), nil, ts.auth()); r.code != 204 {
		t.Fatalf("delete: %d %s", r.code, r.body)
	}
	for _, path := range []string{fmt.Sprintf("/schedules/%d", sch.ID), "/schedules/abc"} {
		if r := ts.do(t, "GET", path, nil, ts.auth()); r.code != 404 {
			t.Errorf("GET %s: %d", path, r.code)
		}
	}
}

func mustZone(t *testing.T, name string) *time.Location {
	t.Helper()
	l, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestScheduleRoutesNeedAuth: every schedules route refuses a caller
// without a session (the API 401, the UI's GET to the login page, its
// posts 401) and changes nothing.
func TestScheduleRoutesNeedAuth(t *testing.T) {
	ts := startServer(t, nil)
	r := ts.do(t, "POST", "/schedules", strings.NewReader(`{"name": "n", "selector": "role=ci", "cron": "@daily"}`), ts.auth())
	if r.code != 201 {
		t.Fatalf("create: %d %s", r.code, r.body)
	}
	body := `{"name": "n", "selector": "role=ci", "cron": "@daily"}`
	for _, c := range []struct{ method, path string }{
		{"GET", "/schedules"}, {"POST", "/schedules"}, {"GET", "/schedules/1"}, {"PUT", "/schedules/1"}, {"DELETE", "/schedules/1"},
	} {
		for _, hdr := range []map[string]string{nil, {"Authorization": "Bearer not-a-token"}} {
			if r := ts.do(t, c.method, c.path, strings.NewReader(body), hdr); r.code != http.StatusUnauthorized {
				t.Errorf("%s %s with %v: %d, want 401", c.method, c.path, hdr, r.code)
			}
		}
	}
	res, err := noRedirect.Get(ts.URL + "/ui/schedules")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusSeeOther || !strings.HasPrefix(res.Header.Get("Location"), "/ui/login") {
		t.Errorf("GET /ui/schedules: %d %s", res.StatusCode, res.Header.Get("Location"))
	}
	for _, p := range []string{"/ui/schedules", "/ui/schedules/1/pause", "/ui/schedules/1/resume", "/ui/schedules/1/delete"} {
		if r := ts.form(t, p, url.Values{"name": {"x"}}, map[string]string{"Origin": ts.URL}); r.StatusCode != http.StatusUnauthorized {
			t.Errorf("POST %s: %d", p, r.StatusCode)
		}
	}
	var list []api.Schedule
	ts.do(t, "GET", "/schedules", nil, ts.auth()).json(t, &list)
	if len(list) != 1 || list[0].Paused {
		t.Errorf("changed without a session: %+v", list)
	}
}

// TestScheduleUI: the page lists a schedule with its next time in its
// zone; the form adds one (a bad field is shown, nothing stored); pause,
// resume and delete work from the page; a form from elsewhere is
// refused.
func TestScheduleUI(t *testing.T) {
	ts := startServer(t, nil)
	cookie := map[string]string{"Cookie": CookieName + "=" + ts.token, "Origin": ts.URL}
	get := func() string {
		t.Helper()
		r := ts.do(t, "GET", "/ui/schedules", nil, map[string]string{"Cookie": cookie["Cookie"]})
		if r.code != 200 {
			t.Fatalf("GET /ui/schedules: %d", r.code)
		}
		return string(r.body)
	}
	if page := get(); !strings.Contains(page, "No schedules yet") || !strings.Contains(page, `href="/ui/schedules" aria-current="page"`) {
		t.Fatalf("empty page:\n%s", page)
	}
	vals := url.Values{"name": {"weekly <b>"}, "selector": {"role=ci"}, "cron": {"0 4 * * 1"}, "tz": {"Asia/Tokyo"},
		"action": {"known-good"}, "max_parallel": {"3"}, "window": {"90m"}}
	bad := url.Values{}
	for k, v := range vals {
		bad[k] = v
	}
	bad.Set("tz", "Nowhere/Nope")
	bad.Set("max_parallel", "zero")
	if r := ts.form(t, "/ui/schedules", bad, cookie); r.StatusCode != 400 || !strings.Contains(r.body, "Nowhere/Nope") ||
		!strings.Contains(r.body, "max_parallel") && !strings.Contains(r.body, "give 1 to 64") {
		t.Fatalf("bad form: %d\n%s", r.StatusCode, r.body)
	}
	if r := ts.form(t, "/ui/schedules", vals, map[string]string{"Cookie": cookie["Cookie"], "Origin": "http://evil.example"}); r.StatusCode != 403 {
		t.Errorf("cross-origin add: %d", r.StatusCode)
	}
	var list []api.Schedule
	ts.do(t, "GET", "/schedules", nil, ts.auth()).json(t, &list)
	if len(list) != 0 {
		t.Fatalf("refused forms stored %+v", list)
	}
	if r := ts.form(t, "/ui/schedules", vals, cookie); r.StatusCode != 303 {
		t.Fatalf("add: %d\n%s", r.StatusCode, r.body)
	}
	ts.do(t, "GET", "/schedules", nil, ts.auth()).json(t, &list)
	if len(list) != 1 || list[0].Action != fleet.ActionKnownGood || list[0].MaxParallel != 3 || list[0].Window != "90m" || list[0].TZ != "Asia/Tokyo" {
		t.Fatalf("added: %+v", list)
	}
	id := list[0].ID
	page := get()
	next := list[0].NextFireAt.In(mustZone(t, "Asia/Tokyo")).Format("2006-01-02 15:04 MST")
	if !strings.Contains(page, next) || !strings.Contains(page, "04:00 JST") || !strings.Contains(page, "weekly &lt;b&gt;") || !strings.Contains(page, "not fired yet") {
		t.Fatalf("page lacks the next time %s or the escaped name:\n%s", next, page)
	}
	if r := ts.form(t, fmt.Sprintf("/ui/schedules/%d/pause", id), nil, cookie); r.StatusCode != 303 {
		t.Fatalf("pause: %d", r.StatusCode)
	}
	if page := get(); !strings.Contains(page, "paused") || !strings.Contains(page, fmt.Sprintf("/ui/schedules/%d/resume", id)) {
		t.Errorf("paused page:\n%s", page)
	}
	if r := ts.form(t, fmt.Sprintf("/ui/schedules/%d/resume", id), nil, cookie); r.StatusCode != 303 {
		t.Fatalf("resume: %d", r.StatusCode)
	}
	if s := ts.schedule(t, id); s.Paused {
		t.Error("still paused after resume")
	}
	if r := ts.form(t, fmt.Sprintf("/ui/schedules/%d/delete", id), nil, cookie); r.StatusCode != 303 {
		t.Fatalf("delete: %d", r.StatusCode)
	}
	if r := ts.form(t, fmt.Sprintf("/ui/schedules/%d/delete", id), nil, cookie); r.StatusCode != 404 {
		t.Errorf("delete again: %d", r.StatusCode)
	}
	if page := get(); !strings.Contains(page, "No schedules yet") {
		t.Error("deleted schedule still listed")
	}
}
