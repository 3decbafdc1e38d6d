package server

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/btyproject/bty/internal/api"
	"github.com/btyproject/bty/internal/fleet"
)

// rolloutMachines registers machines with the labels, image old.img,
// boot policy local and ready check none (a flash is ready at its done
// report), and no power driver.
func (ts *testServer) rolloutMachines(t *testing.T, labels string, macs ...string) {
	t.Helper()
	for _, mac := range macs {
		body := `{"image":"old.img","boot_policy":"local","ready_check":"none","labels":` + labels + `}`
		if r := ts.do(t, "PUT", "/machines/"+mac, strings.NewReader(body), ts.auth()); r.code != 201 {
			t.Fatalf("PUT %s: %d %s", mac, r.code, r.body)
		}
	}
}

// flashToReady drives mac's requested flash to its end through the live
// env's routes: a PXE contact (the live env, a cycle token), then done
// (ready at once: ready check none) or failed.
func (ts *testServer) flashToEnd(t *testing.T, mac string, ok bool) {
	t.Helper()
	script, cycle := ts.boot(t, "127.0.0.1", mac)
	if cycle == "" || !strings.Contains(script, "new.img") {
		t.Fatalf("%s's PXE contact did not get the live env flashing new.img:\n%s", mac, script)
	}
	route, body := "done", ""
	if !ok {
		route, body = "failed", `{"reason":"disk on fire"}`
	}
	if r := ts.callFrom(t, "127.0.0.1", "POST", "/pxe/"+mac+"/"+route, cycle, strings.NewReader(body)); r.code != 200 {
		t.Fatalf("%s %s: %d %s", mac, route, r.code, r.body)
	}
}

func (ts *testServer) rollout(t *testing.T, id int64) fleet.Rollout {
	t.Helper()
	var ro fleet.Rollout
	r := ts.do(t, "GET", fmt.Sprintf("/rollouts/%d", id), nil, ts.auth())
	if r.code != 200 {
		t.Fatalf("GET rollout %d: %d %s", id, r.code, r.body)
	}
	r.json(t, &ro)
	return ro
}

// tickRollouts runs the rollout runner's step now (the runner's own
// loop runs too; the two take turns).
func (ts *testServer) tickRollouts(t *testing.T) {
	ts.srv.rollouts.tick(context.Background(), time.Now())
}

func rolloutMachineStates(ro fleet.Rollout) string {
	var s []string
	for _, m := range ro.Machines {
		s = append(s, m.MAC.String()[12:]+":"+string(m.State))
	}
	return strings.Join(s, " ")
}

// TestRolloutEndToEnd: three machines labelled role=ci (a fourth is
// not); POST /rollouts starts the canary alone, with the image assigned
// to its record only; its flash ending ready starts the other two
// (max_parallel 2); every flash is a history row with trigger rollout
// and the rollout's id; the rollout succeeds; the SSE stream follows it
// and ends with an "end" event. A second rollout over a machine of a
// running one is a 409; an empty selection, an image not in the catalog
// and bad numbers are 400s.
func TestRolloutEndToEnd(t *testing.T) {
	ts := startServer(t, nil)
	ts.addImage(t, "old.img")
	ts.addImage(t, "new.img")
	macs := []string{"52:54:00:70:00:01", "52:54:00:70:00:02", "52:54:00:70:00:03"}
	// Registered in reverse: the order is the MACs', not the records'.
	ts.rolloutMachines(t, `{"role":"ci"}`, macs[2], macs[1], macs[0])
	ts.rolloutMachines(t, `{"role":"db"}`, "52:54:00:70:00:09")

	for body, want := range map[string]string{
		`{"selector":"role=nothing","image":"new.img"}`:                   `selector "role=nothing" picks no machine`,
		`{"selector":"role=ci","image":"missing.img"}`:                    "not in the catalog",
		`{"selector":"role=ci","image":"new.img","max_parallel":0}`:       "max_parallel",
		`{"selector":"","image":"new.img"}`:                               "selector is empty",
		`{"selector":"role in (","image":"new.img"}`:                      "selector",
		`{"selector":"role=ci","image":"new.img","canary":-1}`:            "canary",
		`{"selector":"role=ci","image":"new.img","max_parallel":1000000}`: "max_parallel",
	} {
		if r := ts.do(t, "POST", "/rollouts", strings.NewReader(body), ts.auth()); r.code != 400 || !strings.Contains(r.errMsg(t), want) {
			t.Errorf("POST /rollouts %s: %d %s, want 400 with %q", body, r.code, r.body, want)
		}
	}

	r := ts.do(t, "POST", "/rollouts", strings.NewReader(`{"selector":"role=ci","image":"new.img","max_parallel":2}`), ts.auth())
	if r.code != 201 {
		t.Fatalf("POST /rollouts: %d %s", r.code, r.body)
	}
	var ro fleet.Rollout
	r.json(t, &ro)
	if ro.ID == 0 || ro.State != fleet.RolloutRunning || ro.Canary != 1 || ro.MaxParallel != 2 || len(ro.Machines) != 3 {
		t.Fatalf("created: %+v", ro)
	}
	for i, m := range ro.Machines {
		if m.MAC.String() != macs[i] || m.Order != i+1 || m.Canary != (i == 0) {
			t.Fatalf("machine %d: %+v, want %s in MAC order, the first the canary", i, m, macs[i])
		}
	}
	if ro.Machines[0].State != fleet.RMFlashing || ro.Machines[0].FlashID == 0 || ro.Machines[0].PreviousImage != "old.img" ||
		ro.Machines[1].State != fleet.RMPending || ro.Machines[2].State != fleet.RMPending {
		t.Fatalf("after creation the canary alone should flash: %s", rolloutMachineStates(ro))
	}

	// The event stream, opened now: the current rollout first.
	req, _ := http.NewRequest("GET", fmt.Sprintf("%s/rollouts/%d/events", ts.URL, ro.ID), nil)
	req.Header.Set("Authorization", "Bearer "+ts.token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("events: %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
	br := bufio.NewReader(res.Body)
	ev, data := readSSE(t, br)
	var first fleet.Rollout
	if err := json.Unmarshal([]byte(data), &first); err != nil || ev != "rollout" || first.ID != ro.ID || first.Machines[0].State != fleet.RMFlashing {
		t.Fatalf("first event %s %s", ev, data)
	}

	// A machine in a running rollout is not taken by another.
	if r := ts.do(t, "POST", "/rollouts", strings.NewReader(`{"selector":"role in (ci,db)","image":"new.img"}`), ts.auth()); r.code != 409 ||
		!strings.Contains(r.errMsg(t), fmt.Sprintf("rollout %d", ro.ID)) {
		t.Fatalf("overlapping rollout: %d %s", r.code, r.body)
	}

	var m fleet.Machine
	ts.do(t, "GET", "/machines/"+macs[0], nil, ts.auth()).json(t, &m)
	if m.Image != "new.img" || !m.Flash.Running() || m.Flash.Trigger != fleet.TriggerRollout || m.Flash.TriggerID != ro.ID {
		t.Fatalf("canary record: image %q flash %+v", m.Image, m.Flash)
	}
	for _, mac := range macs[1:] {
		ts.do(t, "GET", "/machines/"+mac, nil, ts.auth()).json(t, &m)
		if m.Image != "old.img" || m.Flash != nil {
			t.Fatalf("%s before its turn: image %q flash %+v", mac, m.Image, m.Flash)
		}
	}
	// Ticks change nothing while the canary flashes.
	ts.tickRollouts(t)
	if got := ts.rollout(t, ro.ID); got.Machines[1].State != fleet.RMPending {
		t.Fatalf("a tick during the canary: %s", rolloutMachineStates(got))
	}

	ts.flashToEnd(t, macs[0], true)
	ts.tickRollouts(t)
	ro = ts.rollout(t, ro.ID)
	if ro.Machines[0].State != fleet.RMSucceeded || ro.Machines[1].State != fleet.RMFlashing || ro.Machines[2].State != fleet.RMFlashing {
		t.Fatalf("after the canary: %s", rolloutMachineStates(ro))
	}
	ts.flashToEnd(t, macs[2], true)
	ts.flashToEnd(t, macs[1], true)
	ts.tickRollouts(t)
	ro = ts.rollout(t, ro.ID)
	if ro.State != fleet.RolloutSucceeded || ro.EndedAt == nil || ro.Count(fleet.RMSucceeded) != 3 {
		t.Fatalf("at the end: %s %s", ro.State, rolloutMachineStates(ro))
	}
	for i, mac := range macs {
		var page api.FlashPage
		ts.do(t, "GET", "/machines/"+mac+"/flashes", nil, ts.auth()).json(t, &page)
		if page.Total != 1 {
			t.Fatalf("%s: %d flashes", mac, page.Total)
		}
		f := page.Flashes[0]
		if f.ID != ro.Machines[i].FlashID || f.Trigger != fleet.TriggerRollout || f.TriggerID != ro.ID || f.Image != "new.img" ||
			f.Result != fleet.FlashReady || f.Cause != fmt.Sprintf("rollout %d of new.img", ro.ID) {
			t.Fatalf("%s's history row: %+v", mac, f)
		}
		ts.do(t, "GET", "/machines/"+mac, nil, ts.auth()).json(t, &m)
		if m.Image != "new.img" {
			t.Errorf("%s: image %q after the rollout", mac, m.Image)
		}
	}
	// The canary's flash was requested before the others'.
	if !ro.Machines[0].StartedAt.Before(*ro.Machines[1].StartedAt) && !ro.Machines[0].StartedAt.Equal(*ro.Machines[1].StartedAt) {
		t.Error("the canary did not start first")
	}

	// The stream saw the others flash, and ends with the final rollout.
	sawRest := false
	for {
		ev, data := readSSE(t, br)
		var got fleet.Rollout
		if err := json.Unmarshal([]byte(data), &got); err != nil {
			t.Fatal(err)
		}
		if got.Machines[1].State == fleet.RMFlashing {
			sawRest = true
		}
		if ev == "end" {
			if got.State != fleet.RolloutSucceeded || !sawRest {
				t.Fatalf("end event: %s (saw the rest flash: %v)", got.State, sawRest)
			}
			break
		}
		if ev != "rollout" {
			t.Fatalf("event %q", ev)
		}
	}
	if _, err := br.ReadString('\n'); err == nil {
		// The server closes the stream after "end"; EOF follows.
		if _, err := br.ReadString('\n'); err == nil {
			t.Error("the stream went on after its end event")
		}
	}
	// An ended rollout's stream is its "end" event alone.
	var list []fleet.Rollout
	ts.do(t, "GET", "/rollouts", nil, ts.auth()).json(t, &list)
	if len(list) != 1 || list[0].ID != ro.ID {
		t.Fatalf("GET /rollouts: %+v", list)
	}
}

// TestRolloutPauseAbortAndFailure: pause stops new reflashes, resume
// starts them, abort skips the pending machines (their records keep
// their image), a second abort is a 409; a flash failing stops a
// rollout, the rest skipped.
func TestRolloutPauseAbortAndFailure(t *testing.T) {
	ts := startServer(t, nil)
	ts.addImage(t, "old.img")
	ts.addImage(t, "new.img")
	macs := []string{"52:54:00:71:00:01", "52:54:00:71:00:02", "52:54:00:71:00:03"}
	ts.rolloutMachines(t, `{"role":"ci"}`, macs...)
	var ro fleet.Rollout
	if r := ts.do(t, "POST", "/rollouts", strings.NewReader(`{"selector":"role=ci","image":"new.img"}`), ts.auth()); r.code != 201 {
		t.Fatalf("POST: %d %s", r.code, r.body)
	} else {
		r.json(t, &ro)
	}
	post := func(action string) resp {
		return ts.do(t, "POST", fmt.Sprintf("/rollouts/%d/%s", ro.ID, action), nil, ts.auth())
	}
	if r := post("resume"); r.code != 409 {
		t.Errorf("resume a running rollout: %d %s", r.code, r.body)
	}
	if r := post("pause"); r.code != 200 {
		t.Fatalf("pause: %d %s", r.code, r.body)
	}
	ts.flashToEnd(t, macs[0], true)
	ts.tickRollouts(t)
	ro = ts.rollout(t, ro.ID)
	if ro.State != fleet.RolloutPaused || ro.Machines[0].State != fleet.RMSucceeded || ro.Machines[1].State != fleet.RMPending {
		t.Fatalf("paused: %s %s", ro.State, rolloutMachineStates(ro))
	}
	if r := post("resume"); r.code != 200 {
		t.Fatalf("resume: %d %s", r.code, r.body)
	}
	ro = ts.rollout(t, ro.ID)
	if ro.State != fleet.RolloutRunning || ro.Machines[1].State != fleet.RMFlashing || ro.Machines[2].State != fleet.RMPending {
		t.Fatalf("resumed: %s %s", ro.State, rolloutMachineStates(ro))
	}
	if r := post("abort"); r.code != 200 {
		t.Fatalf("abort: %d %s", r.code, r.body)
	}
	ro = ts.rollout(t, ro.ID)
	if ro.State != fleet.RolloutAborted || ro.EndedAt != nil || ro.Machines[1].State != fleet.RMFlashing || ro.Machines[2].State != fleet.RMSkipped {
		t.Fatalf("aborted: %s %v %s", ro.State, ro.EndedAt, rolloutMachineStates(ro))
	}
	if r := post("abort"); r.code != 409 {
		t.Errorf("abort twice: %d %s", r.code, r.body)
	}
	var m fleet.Machine
	ts.do(t, "GET", "/machines/"+macs[2], nil, ts.auth()).json(t, &m)
	if m.Image != "old.img" || m.Flash != nil {
		t.Fatalf("the skipped machine: image %q flash %+v", m.Image, m.Flash)
	}
	ts.flashToEnd(t, macs[1], true)
	ts.tickRollouts(t)
	if ro = ts.rollout(t, ro.ID); ro.EndedAt == nil || ro.Machines[1].State != fleet.RMSucceeded {
		t.Fatalf("after the last flash of the aborted rollout: %v %s", ro.EndedAt, rolloutMachineStates(ro))
	}

	// A new rollout of the same machines: the canary's flash fails.
	ts.addImage(t, "newer.img")
	var ro2 fleet.Rollout
	if r := ts.do(t, "POST", "/rollouts", strings.NewReader(`{"selector":"role=ci","image":"new.img","max_failures":3}`), ts.auth()); r.code != 201 {
		t.Fatalf("second rollout: %d %s", r.code, r.body)
	} else {
		r.json(t, &ro2)
	}
	ts.flashToEnd(t, macs[0], false)
	ts.tickRollouts(t)
	ro2 = ts.rollout(t, ro2.ID)
	if ro2.State != fleet.RolloutFailed || ro2.EndedAt == nil || !strings.Contains(ro2.Reason, "disk on fire") ||
		ro2.Machines[1].State != fleet.RMSkipped || ro2.Machines[2].State != fleet.RMSkipped {
		t.Fatalf("failed canary: %s %q %s", ro2.State, ro2.Reason, rolloutMachineStates(ro2))
	}
	if r := ts.do(t, "POST", fmt.Sprintf("/rollouts/%d/pause", ro2.ID), nil, ts.auth()); r.code != 409 {
		t.Errorf("pause an ended rollout: %d", r.code)
	}
	if r := ts.do(t, "GET", "/rollouts/999", nil, ts.auth()); r.code != 404 {
		t.Errorf("unknown rollout: %d", r.code)
	}
	if r := ts.do(t, "POST", "/rollouts/999/abort", nil, ts.auth()); r.code != 404 {
		t.Errorf("abort an unknown rollout: %d", r.code)
	}
}

// TestRolloutRoutesNeedLogin: every rollout route refuses a request
// without a session, the API with 401, the UI's pages with a redirect
// to the login page.
func TestRolloutRoutesNeedLogin(t *testing.T) {
	ts := startServer(t, nil)
	for _, c := range []struct{ method, path string }{
		{"POST", "/rollouts"}, {"GET", "/rollouts"}, {"GET", "/rollouts/1"}, {"POST", "/rollouts/1/pause"},
		{"POST", "/rollouts/1/resume"}, {"POST", "/rollouts/1/abort"}, {"GET", "/rollouts/1/events"},
		{"POST", "/ui/rollouts"}, {"POST", "/ui/rollouts/1/abort"},
	} {
		body := strings.NewReader(`{"selector":"a=b","image":"x.img"}`)
		if r := ts.do(t, c.method, c.path, body, nil); r.code != 401 {
			t.Errorf("%s %s without a session: %d", c.method, c.path, r.code)
		}
	}
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, p := range []string{"/ui/rollouts", "/ui/rollouts/1", "/ui/rollouts/1/machines"} {
		res, err := noRedirect.Get(ts.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode/100 != 3 || !strings.HasPrefix(res.Header.Get("Location"), "/ui/login") {
			t.Errorf("GET %s without a session: %d %s", p, res.StatusCode, res.Header.Get("Location"))
		}
	}
}

// TestRolloutUIPages: the list with its form, a started rollout's page
// with its machines and the live section, the nav link.
func TestRolloutUIPages(t *testing.T) {
	ts := startServer(t, nil)
	ts.addImage(t, "old.img")
	ts.addImage(t, "new.img")
	ts.rolloutMachines(t, `{"role":"ci"}`, "52:54:00:72:00:01", "52:54:00:72:00:02")
	cookie := map[string]string{"Cookie": "bty-token=" + ts.token}
	r := ts.do(t, "GET", "/ui/rollouts", nil, cookie)
	if r.code != 200 || !strings.Contains(string(r.body), `<option value="new.img"`) || !strings.Contains(string(r.body), `href="/ui/rollouts" aria-current="page"`) {
		t.Fatalf("rollouts page: %d\n%s", r.code, r.body)
	}
	post := map[string]string{"Cookie": "bty-token=" + ts.token, "Origin": ts.URL, "Content-Type": "application/x-www-form-urlencoded"}
	r = ts.do(t, "POST", "/ui/rollouts", strings.NewReader("selector=role%3Dnone&image=new.img&canary=1&max_parallel=1&max_failures=0"), post)
	if r.code != 400 || !strings.Contains(string(r.body), "picks no machine") {
		t.Fatalf("form with an empty selection: %d\n%s", r.code, r.body)
	}
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ := http.NewRequest("POST", ts.URL+"/ui/rollouts", strings.NewReader("selector=role%3Dci&image=new.img&canary=1&max_parallel=2&max_failures=0"))
	for k, v := range post {
		req.Header.Set(k, v)
	}
	res, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	loc := res.Header.Get("Location")
	if res.StatusCode != 303 || !strings.HasPrefix(loc, "/ui/rollouts/") {
		t.Fatalf("start from the form: %d %s", res.StatusCode, loc)
	}
	r = ts.do(t, "GET", loc, nil, cookie)
	page := string(r.body)
	for _, want := range []string{`sse-connect="/rollouts/`, `hx-trigger="sse:rollout"`, `data-mac="52:54:00:72:00:01" data-state="flashing"`,
		`data-mac="52:54:00:72:00:02" data-state="pending"`, `id="rollout-pause"`, `id="rollout-abort"`} {
		if !strings.Contains(page, want) {
			t.Errorf("rollout page lacks %q:\n%s", want, page)
		}
	}
	r = ts.do(t, "GET", loc+"/machines?final=1", nil, cookie)
	if r.code != 200 || !strings.Contains(string(r.body), `id="rollout-live"`) || strings.Contains(string(r.body), "<html") {
		t.Fatalf("live fragment: %d\n%s", r.code, r.body)
	}
}

// TestRolloutResumedFromStore: the runner keeps nothing in memory: a
// running rollout found in the store (as a previous bty-web left it,
// its canary's flash ended meanwhile) is advanced by the next tick, and
// a flash's end wakes the runner without a manual tick.
func TestRolloutResumedFromStore(t *testing.T) {
	ts := startServer(t, nil)
	ts.addImage(t, "old.img")
	ts.addImage(t, "new.img")
	macs := []string{"52:54:00:73:00:01", "52:54:00:73:00:02"}
	ts.rolloutMachines(t, `{"role":"ci"}`, macs...)
	var ms []fleet.Machine
	for _, mac := range macs {
		var m fleet.Machine
		ts.do(t, "GET", "/machines/"+mac, nil, ts.auth()).json(t, &m)
		ms = append(ms, m)
	}
	// Written straight to the store: no request of this process made it.
	ro, err := ts.st.SaveRollout(context.Background(), fleet.NewRollout(fleet.RolloutRequest{Selector: "role=ci", Image: "new.img"}, ms, time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	ts.tickRollouts(t)
	if got := ts.rollout(t, ro.ID); got.Machines[0].State != fleet.RMFlashing || got.Machines[1].State != fleet.RMPending {
		t.Fatalf("after a tick: %s", rolloutMachineStates(got))
	}
	// The canary's end wakes the runner: the next machine starts with
	// no tick from the test.
	ts.flashToEnd(t, macs[0], true)
	// (Well within the runner's 10 s period.)
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := ts.rollout(t, ro.ID)
		if got.Machines[1].State == fleet.RMFlashing {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the runner did not wake on the flash's end: %s", rolloutMachineStates(got))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRolloutStreamsBounded: beyond the bound on rollout event streams
// a new one is a 503 saying to poll; one closed frees its place; an
// unknown rollout's stream is a 404 that takes no place.
func TestRolloutStreamsBounded(t *testing.T) {
	ts := startServer(t, nil)
	ts.addImage(t, "old.img")
	ts.addImage(t, "new.img")
	ts.rolloutMachines(t, `{"role":"ci"}`, "52:54:00:74:00:01")
	ts.srv.rollouts.wmu.Lock()
	ts.srv.rollouts.maxStreams = 1
	ts.srv.rollouts.wmu.Unlock()
	var ro fleet.Rollout
	ts.do(t, "POST", "/rollouts", strings.NewReader(`{"selector":"role=ci","image":"new.img"}`), ts.auth()).json(t, &ro)
	open := func() *http.Response {
		req, _ := http.NewRequest("GET", fmt.Sprintf("%s/rollouts/%d/events", ts.URL, ro.ID), nil)
		req.Header.Set("Authorization", "Bearer "+ts.token)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	if r := ts.do(t, "GET", "/rollouts/999/events", nil, ts.auth()); r.code != 404 {
		t.Fatalf("unknown rollout's stream: %d", r.code)
	}
	first := open()
	if first.StatusCode != 200 {
		t.Fatalf("first stream: %d", first.StatusCode)
	}
	second := open()
	b := make([]byte, 512)
	n, _ := second.Body.Read(b)
	second.Body.Close()
	if second.StatusCode != 503 || !strings.Contains(string(b[:n]), "poll GET /rollouts/") {
		t.Fatalf("second stream: %d %s", second.StatusCode, b[:n])
	}
	first.Body.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		res := open()
		res.Body.Close()
		if res.StatusCode == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a closed stream's place was not freed: %d", res.StatusCode)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
