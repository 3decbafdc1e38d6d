package server

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/btyproject/bty/internal/fleet"
)

// TestCycleAgainstAStranger is issue 17's items 1-3 tried again the way
// they broke: someone on the provisioning network (127.0.0.2) sends a
// machine's MAC while the machine (127.0.0.1) is in its flash cycle. The
// stranger gets neither the seed nor a cycle, cannot report done or
// failed, cannot use up the boot-the-disk-once turn, learns nothing from
// the open routes' answers (not even whether the MAC exists); the
// machine's flash goes through; the conflict is shown on the machine's
// page, the dashboard and /metrics.
func TestCycleAgainstAStranger(t *testing.T) {
	ts := startServer(t, nil)
	const (
		mac      = "52:54:00:c7:c1:01"
		machine  = "127.0.0.1"
		stranger = "127.0.0.2"
	)
	secret := "#cloud-config\npassword: hunter2-secret\n"
	b, _ := json.Marshal(map[string]string{"user_data": secret, "boot_policy": "flash", "image": "a.img",
		"hostname": "victim-host", "provisioning_mode": "cloud-init"})
	if r := ts.do(t, "PUT", "/machines/"+mac, strings.NewReader(string(b)), ts.auth()); r.code != 201 {
		t.Fatalf("PUT: %d %s", r.code, r.body)
	}
	get := func() fleet.Machine {
		var m fleet.Machine
		ts.do(t, "GET", "/machines/"+mac, nil, ts.auth()).json(t, &m)
		return m
	}
	noLeak := func(what string, r resp) {
		t.Helper()
		for _, s := range []string{"hunter2", "victim-host", "a.img", "cloud-init", machine} {
			if strings.Contains(string(r.body), s) {
				t.Errorf("%s: the answer carries %q: %s", what, s, r.body)
			}
		}
	}

	// Item 2: done for a machine that never PXE-booted is refused and
	// changes nothing.
	before := get()
	if r := ts.callFrom(t, stranger, "POST", "/pxe/"+mac+"/done", "", nil); r.code != 403 {
		t.Fatalf("done before any contact: %d %s", r.code, r.body)
	}
	if d := cmp.Diff(before, get()); d != "" {
		t.Fatalf("a refused done changed the record (-before +after):\n%s", d)
	}

	// The machine PXE-boots: a flash script with its cycle token.
	script, cycle := ts.boot(t, machine, mac)
	if cycle == "" || !strings.Contains(script, "bty.image_url=") {
		t.Fatalf("the machine's script: %s", script)
	}
	inCycle := get()

	// Item 1: the stranger sends the MAC mid-cycle. It is served the
	// local disk with no token, the cycle stays the machine's, last
	// seen is untouched; only the conflict is recorded.
	sScript, sCycle := ts.boot(t, stranger, mac)
	if sCycle != "" || !strings.Contains(sScript, "booting from the local disk") || strings.Contains(sScript, "bty.image_url") {
		t.Fatalf("the stranger's script: %s", sScript)
	}
	noLeak("the stranger's script", resp{body: []byte(sScript)})
	afterConflict := get()
	if afterConflict.LastConflictIP != stranger || afterConflict.LastConflictAt == nil {
		t.Fatalf("conflict not recorded: %+v", afterConflict)
	}
	if d := cmp.Diff(inCycle, afterConflict, cmpopts.IgnoreFields(fleet.Machine{}, "LastConflictAt", "LastConflictIP")); d != "" {
		t.Fatalf("the stranger's contact changed the record (-before +after):\n%s", d)
	}
	// Neither without the token nor with the machine's own token (say,
	// sniffed) does the stranger get the seed.
	for _, tok := range []string{"", fleet.NewCycleToken(), cycle} {
		for _, what := range []string{"user-data", "meta-data"} {
			r := ts.callFrom(t, stranger, "GET", "/pxe/"+mac+"/"+what, tok, nil)
			if r.code != 403 {
				t.Errorf("%s to the stranger (token %q): %d %s", what, tok, r.code, r.body)
			}
			noLeak(what+" to the stranger", r)
		}
	}
	// Item 3: failed and done from the stranger are refused with the
	// same answer as for a MAC that does not exist: nothing to learn.
	const unknown = "52:54:00:c7:c1:99"
	for _, route := range []string{"done", "failed"} {
		r := ts.callFrom(t, stranger, "POST", "/pxe/"+mac+"/"+route, cycle, strings.NewReader("x"))
		u := ts.callFrom(t, stranger, "POST", "/pxe/"+unknown+"/"+route, cycle, strings.NewReader("x"))
		if r.code != 403 || u.code != r.code || strings.ReplaceAll(string(u.body), unknown, mac) != string(r.body) {
			t.Errorf("%s: known %d %s, unknown %d %s; want the same 403", route, r.code, r.body, u.code, u.body)
		}
		noLeak(route+" to the stranger", r)
	}
	if d := cmp.Diff(afterConflict, get()); d != "" {
		t.Fatalf("the stranger's reports changed the record (-before +after):\n%s", d)
	}

	// The machine's flash goes through: its seed, once, then done.
	if r := ts.callFrom(t, machine, "GET", "/pxe/"+mac+"/user-data", cycle, nil); r.code != 200 || string(r.body) != secret {
		t.Fatalf("user-data to the machine: %d %s", r.code, r.body)
	}
	if r := ts.callFrom(t, machine, "GET", "/pxe/"+mac+"/user-data", cycle, nil); r.code != 403 {
		t.Fatalf("user-data twice: %d", r.code)
	}
	r := ts.callFrom(t, machine, "POST", "/pxe/"+mac+"/done", cycle, nil)
	if r.code != 200 || !statusOnly(r) {
		t.Fatalf("done from the machine: %d %s", r.code, r.body)
	}
	if m := get(); m.NextBoot != fleet.NextLocal || m.LastFlashedAt == nil {
		t.Fatalf("after done: %+v", m)
	}

	// After done, the stranger's contact does not use up the machine's
	// boot-the-disk-once turn ...
	ts.boot(t, stranger, mac)
	if m := get(); m.NextBoot != fleet.NextLocal {
		t.Fatalf("the stranger used up the disk turn: next boot %q", m.NextBoot)
	}
	// ... the machine's does, and its next boot reflashes.
	if s, c := ts.boot(t, machine, mac); c != "" || !strings.Contains(s, "booting from the local disk") {
		t.Fatalf("the machine's disk boot: %s", s)
	}
	if _, c := ts.boot(t, machine, mac); c == "" {
		t.Fatal("the machine's next boot does not reflash")
	}

	// Shown: the machine's page, the dashboard, bty-ctl's record (the
	// wire fields) and /metrics.
	cookie := map[string]string{"Cookie": CookieName + "=" + ts.token}
	page := ts.do(t, "GET", "/ui/machines/"+mac, nil, cookie)
	if page.code != 200 || !strings.Contains(string(page.body), `id="conflict-warning"`) || !strings.Contains(string(page.body), stranger) {
		t.Errorf("the machine page does not show the conflict: %d", page.code)
	}
	dash := ts.do(t, "GET", "/ui/dashboard", nil, cookie)
	if !strings.Contains(string(dash.body), `id="pxe-conflicts"`) || !strings.Contains(string(dash.body), mac) {
		t.Errorf("the dashboard does not show the conflict")
	}
	metrics := string(ts.do(t, "GET", "/metrics", nil, nil).body)
	for _, want := range []string{"bty_pxe_conflicts_total 2", `bty_cycle_calls_refused_total{call="user-data"} 4`,
		`bty_cycle_calls_refused_total{call="done"} 3`, `bty_cycle_calls_refused_total{call="failed"} 2`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	// The token is never stored or shown: not on the wire, not in the UI.
	if strings.Contains(string(ts.do(t, "GET", "/machines/"+mac, nil, ts.auth()).body), cycle) ||
		strings.Contains(string(page.body), cycle) {
		t.Error("the cycle token is shown")
	}
}

// statusOnly reports whether r's body is {"status": "recorded"} and
// nothing else.
func statusOnly(r resp) bool {
	var v map[string]any
	return json.Unmarshal(r.body, &v) == nil && len(v) == 1 && v["status"] == "recorded"
}
