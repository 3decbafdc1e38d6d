package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/btyproject/bty/internal/api"
	"github.com/btyproject/bty/internal/fleet"
)

// osPort is a TCP port on 127.0.0.1 standing for a machine's OS: open
// answers its health check, closed refuses it.
type osPort struct {
	t    *testing.T
	port int
	l    net.Listener
}

func newOSPort(t *testing.T) *osPort {
	p := &osPort{t: t}
	p.open()
	p.port = p.l.Addr().(*net.TCPAddr).Port
	t.Cleanup(p.close)
	return p
}

func (p *osPort) open() {
	addr := "127.0.0.1:0"
	if p.port != 0 {
		addr = fmt.Sprintf("127.0.0.1:%d", p.port)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		p.t.Fatal(err)
	}
	p.l = l
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
}

func (p *osPort) close() {
	if p.l != nil {
		p.l.Close()
		p.l = nil
	}
}

// TestRecovery drives health watching and recovery with a fake clock
// against real TCP ports and a Redfish BMC: a machine whose OS stops
// answering is power cycled and recovers when it answers again; when it
// does not, it is reflashed (trigger failure, with the reason), backs
// off, and is quarantined after the cap, every step in its history; a
// quarantined machine is not checked, refuses a failure report, and is
// cleared by an operator; a failed flash of a watched machine and a CI
// system's report start recoveries; a healthy machine beside them is
// never touched.
func TestRecovery(t *testing.T) {
	bmc, resets := redfishBMC(t, "admin", "pw-recover-1")
	ts := startServer(t, func(c *Config) {
		c.manualTicks = true
		c.Recovery = fleet.RecoveryPolicy{CycleWait: time.Minute, Backoff: time.Minute, MaxReflashes: 2, PerDay: 5, MaxActive: 2}
	})
	ts.addImage(t, "job.img")
	sick, well := newOSPort(t), newOSPort(t)
	const mac, other, flaky = "52:54:00:4e:c0:01", "52:54:00:4e:c0:02", "52:54:00:4e:c0:03"
	put := func(mac string, body map[string]any) {
		t.Helper()
		b, _ := json.Marshal(body)
		if r := ts.do(t, "PUT", "/machines/"+mac, strings.NewReader(string(b)), ts.auth()); r.code != 201 && r.code != 200 {
			t.Fatalf("PUT %s: %d %s", mac, r.code, r.body)
		}
	}
	put(mac, map[string]any{"image": "job.img", "boot_policy": "local", "health_every": "5s", "health_fail_after": "10s",
		"ready_check": fmt.Sprintf("tcp:%d", sick.port),
		"power":       map[string]string{"driver": "redfish", "address": bmc.URL, "username": "admin", "password": "pw-recover-1"}})
	put(other, map[string]any{"image": "job.img", "boot_policy": "local", "health_every": "5s", "ready_check": fmt.Sprintf("tcp:%d", well.port)})
	for _, bad := range []string{`{"health_every":"1s"}`, `{"health_every":"soon"}`, `{"health_fail_after":"2d"}`} {
		if r := ts.do(t, "PUT", "/machines/"+mac, strings.NewReader(bad), ts.auth()); r.code != 400 {
			t.Errorf("PUT %s: %d, want 400", bad, r.code)
		}
	}
	// A PXE contact from 127.0.0.1 gives each its address.
	ts.boot(t, "127.0.0.1", mac)
	ts.boot(t, "127.0.0.1", other)
	get := func(mac string) fleet.Machine {
		t.Helper()
		var m fleet.Machine
		ts.do(t, "GET", "/machines/"+mac, nil, ts.auth()).json(t, &m)
		return m
	}
	actions := func(mac string) []fleet.RecoveryAction {
		t.Helper()
		var p api.ActionPage
		r := ts.do(t, "GET", "/machines/"+mac+"/actions", nil, ts.auth())
		if r.code != 200 {
			t.Fatalf("actions: %d %s", r.code, r.body)
		}
		r.json(t, &p)
		var out []fleet.RecoveryAction
		for i := len(p.Actions) - 1; i >= 0; i-- {
			out = append(out, p.Actions[i].Action)
		}
		return out
	}
	ctx := context.Background()
	t0 := time.Now()
	tick := func(d time.Duration) { ts.srv.recov.tick(ctx, t0.Add(d)) }

	tick(0)
	if m := get(mac); m.Health == nil || !m.Health.OK || m.State() != "ready" {
		t.Fatalf("healthy at first: %+v", m.Health)
	}
	// The OS stops answering: failing, then after fail_after recovery
	// starts and power cycles the machine.
	sick.close()
	tick(5 * time.Second)
	if m := get(mac); m.Health.OK || m.State() != "offline" || m.Recovery != nil {
		t.Fatalf("failing: %+v %+v", m.Health, m.Recovery)
	}
	tick(10 * time.Second)
	if m := get(mac); m.Recovery != nil {
		t.Fatal("recovery started before fail_after (10s)")
	}
	tick(16 * time.Second)
	m := get(mac)
	if m.Recovery == nil || m.Recovery.Step != fleet.StepCycle || !strings.Contains(m.Recovery.Reason, "health check failing") {
		t.Fatalf("recovery: %+v", m.Recovery)
	}
	if got := resets(); len(got) != 1 || (got[0] != "On" && got[0] != "PowerCycle") {
		t.Fatalf("BMC resets %v, want one power cycle (or on)", got)
	}
	// It answers again: recovered, without a reflash.
	sick.open()
	tick(30 * time.Second)
	m = get(mac)
	if m.Recovery != nil || !m.Health.OK || m.Flash != nil {
		t.Fatalf("after the cycle: recovery %+v health %+v flash %+v", m.Recovery, m.Health, m.Flash)
	}
	if got := actions(mac); !slices.Equal(got, []fleet.RecoveryAction{fleet.ActFailure, fleet.ActCycle, fleet.ActRecovered}) {
		t.Fatalf("history %v", got)
	}

	// It fails for good: cycle, reflash (failed), backoff, reflash
	// (failed), quarantine.
	sick.close()
	tick(40 * time.Second)
	tick(51 * time.Second)
	if m = get(mac); m.Recovery == nil || m.Recovery.Step != fleet.StepCycle {
		t.Fatalf("second recovery: %+v", m.Recovery)
	}
	now := 51*time.Second + time.Minute
	for i := 1; i <= 2; i++ {
		tick(now)
		m = get(mac)
		if m.Recovery == nil || m.Recovery.Step != fleet.StepReflash || m.Flash == nil || m.Flash.ID != m.Recovery.FlashID {
			t.Fatalf("reflash %d: %+v %+v", i, m.Recovery, m.Flash)
		}
		f := m.Flash
		if f.Trigger != fleet.TriggerFailure || !strings.Contains(f.Cause, "health check failing") || f.Image != "job.img" {
			t.Fatalf("reflash %d: trigger %q cause %q image %q", i, f.Trigger, f.Cause, f.Image)
		}
		if r := ts.do(t, "POST", "/machines/"+mac+"/report-failure", strings.NewReader(`{"reason":"x"}`), ts.auth()); r.code != 409 {
			t.Fatalf("a report while flashing: %d", r.code)
		}
		// The flash fails in its live env.
		_, cycle := ts.boot(t, "127.0.0.1", mac)
		if r := ts.callFrom(t, "127.0.0.1", "POST", "/pxe/"+mac+"/failed", cycle, strings.NewReader("disk error")); r.code != 200 {
			t.Fatalf("failed report: %d %s", r.code, r.body)
		}
		now += time.Second
		tick(now)
		if i == 1 {
			if m = get(mac); m.Recovery == nil || m.Recovery.Step != fleet.StepBackoff {
				t.Fatalf("after the failed reflash: %+v", m.Recovery)
			}
			tick(now + 30*time.Second)
			if m = get(mac); m.Recovery.Step != fleet.StepBackoff {
				t.Fatal("the backoff was not waited for")
			}
			now += time.Minute
		}
	}
	m = get(mac)
	if m.Quarantine == nil || m.Recovery != nil || m.State() != "quarantined" || !strings.Contains(m.Quarantine.Reason, "2 reflashes") ||
		!strings.Contains(m.Quarantine.Reason, "disk error") {
		t.Fatalf("quarantine: %+v %+v", m.Quarantine, m.Recovery)
	}
	want := []fleet.RecoveryAction{fleet.ActFailure, fleet.ActCycle, fleet.ActRecovered, fleet.ActFailure, fleet.ActCycle,
		fleet.ActReflash, fleet.ActBackoff, fleet.ActReflash, fleet.ActQuarantine}
	if got := actions(mac); !slices.Equal(got, want) {
		t.Fatalf("history %v, want %v", got, want)
	}
	var hist api.FlashPage
	ts.do(t, "GET", "/machines/"+mac+"/flashes", nil, ts.auth()).json(t, &hist)
	if hist.Total != 2 {
		t.Fatalf("%d flashes, want the 2 reflashes", hist.Total)
	}
	// Quarantined: no checks, no reports, no recovery, even healthy.
	sick.open()
	tick(now + 10*time.Minute)
	if m2 := get(mac); m2.Health.OK || m2.Quarantine == nil {
		t.Fatalf("a quarantined machine was checked: %+v", m2.Health)
	}
	if r := ts.do(t, "POST", "/machines/"+mac+"/report-failure", strings.NewReader(`{"reason":"x"}`), ts.auth()); r.code != 409 || !strings.Contains(r.errMsg(t), "clear it first") {
		t.Fatalf("report on a quarantined machine: %d %s", r.code, r.body)
	}
	if r := ts.do(t, "POST", "/machines/"+mac+"/clear", nil, ts.auth()); r.code != 200 {
		t.Fatalf("clear: %d %s", r.code, r.body)
	}
	if r := ts.do(t, "POST", "/machines/"+mac+"/clear", nil, ts.auth()); r.code != 409 {
		t.Fatalf("clear twice: %d", r.code)
	}
	tick(now + 11*time.Minute)
	if m2 := get(mac); m2.Quarantine != nil || m2.Health == nil || !m2.Health.OK {
		t.Fatalf("after clearing: %+v %+v", m2.Quarantine, m2.Health)
	}

	// A failed flash of a watched machine starts a recovery.
	flakyPort := newOSPort(t)
	put(flaky, map[string]any{"image": "job.img", "boot_policy": "local", "health_every": "1m", "ready_check": fmt.Sprintf("tcp:%d", flakyPort.port)})
	if r := ts.do(t, "POST", "/machines/"+flaky+"/reflash", nil, ts.auth()); r.code != 202 {
		t.Fatalf("reflash: %d %s", r.code, r.body)
	}
	_, cycle := ts.boot(t, "127.0.0.1", flaky)
	if r := ts.callFrom(t, "127.0.0.1", "POST", "/pxe/"+flaky+"/failed", cycle, strings.NewReader("no disk")); r.code != 200 {
		t.Fatalf("failed: %d", r.code)
	}
	if m := get(flaky); m.Recovery == nil || !strings.Contains(m.Recovery.Reason, "(demand) ended failed: no disk") {
		t.Fatalf("after a failed flash: %+v", m.Recovery)
	}

	// A CI system's report starts one; a second is a 409.
	if r := ts.do(t, "POST", "/machines/"+other+"/report-failure", strings.NewReader(`{"reason":"job 7: kernel oops"}`), ts.auth()); r.code != 202 {
		t.Fatalf("report: %d %s", r.code, r.body)
	}
	if r := ts.do(t, "POST", "/machines/"+other+"/report-failure", strings.NewReader(`{"reason":"again"}`), ts.auth()); r.code != 409 || !strings.Contains(r.errMsg(t), "already recovering") {
		t.Fatalf("second report: %d %s", r.code, r.body)
	}
	if m := get(other); m.Recovery == nil || m.Recovery.Reason != "reported: job 7: kernel oops" {
		t.Fatalf("reported: %+v", m.Recovery)
	}
	for _, route := range []string{"/machines/" + other + "/report-failure", "/machines/" + other + "/clear"} {
		if r := ts.do(t, "POST", route, nil, nil); r.code != 401 {
			t.Errorf("POST %s without a login: %d", route, r.code)
		}
	}
	if r := ts.do(t, "GET", "/machines/"+other+"/actions", nil, nil); r.code != 401 {
		t.Errorf("GET actions without a login: %d", r.code)
	}
	metrics := string(ts.do(t, "GET", "/metrics", nil, nil).body)
	if !strings.Contains(metrics, `bty_recovery_steps_total{step="quarantine"} 1`) {
		t.Errorf("metrics:\n%s", grepLines(metrics, "bty_recovery"))
	}
}

// TestUIRecovery: the machine form sets the health watch (a bad value
// refused at its field, nothing saved); the machine page shows the
// state, the recovery and its steps; the dashboard counts machines by
// state and lists the latest steps; the page's Clear button clears a
// quarantine.
func TestUIRecovery(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.manualTicks = true })
	cookie := map[string]string{"Cookie": CookieName + "=" + ts.token, "Origin": ts.URL}
	const mac = "52:54:00:4e:c0:0a"
	if r := ts.do(t, "PUT", "/machines/"+mac, strings.NewReader(`{"boot_policy":"local"}`), ts.auth()); r.code != 201 {
		t.Fatal(r.code)
	}
	form := func(every, after string) url.Values {
		return url.Values{"image": {""}, "provisioning_mode": {"none"}, "hostname": {""}, "cijoe_workflow_ref": {""},
			"boot_policy": {"local"}, "health_every": {every}, "health_fail_after": {after}}
	}
	if res := ts.form(t, "/ui/machines/"+mac, form("1s", ""), cookie); res.StatusCode != 400 || !strings.Contains(res.body, `id="health_every-error"`) {
		t.Fatalf("a bad health_every: %d", res.StatusCode)
	}
	if res := ts.form(t, "/ui/machines/"+mac, form("30s", "2m"), cookie); res.StatusCode != http.StatusSeeOther {
		t.Fatalf("saving the health watch: %d %.300s", res.StatusCode, res.body)
	}
	if m, _ := ts.st.GetMachine(t.Context(), fleet.MustParseMAC(mac)); m.HealthEvery != "30s" || m.HealthFailAfter != "2m" {
		t.Fatalf("saved %q %q", m.HealthEvery, m.HealthFailAfter)
	}
	page := func(path string) string {
		t.Helper()
		r := ts.do(t, "GET", path, nil, cookie)
		if r.code != 200 {
			t.Fatalf("GET %s: %d", path, r.code)
		}
		return string(r.body)
	}
	if body := page("/ui/machines/" + mac); !strings.Contains(body, "checked every 30s on TCP port 22") || strings.Contains(body, `id="clear"`) {
		t.Errorf("the watch is not shown, or Clear is offered with nothing to clear")
	}
	// No image: recovery cannot reflash and quarantines at once.
	if r := ts.do(t, "POST", "/machines/"+mac+"/report-failure", strings.NewReader(`{"reason":"job 12 failed"}`), ts.auth()); r.code != 202 {
		t.Fatalf("report: %d %s", r.code, r.body)
	}
	now := time.Now()
	ts.srv.recov.tick(t.Context(), now)
	ts.srv.recov.tick(t.Context(), now.Add(time.Second))
	body := page("/ui/machines/" + mac)
	for _, want := range []string{`class="state state-quarantined"`, "reported: job 12 failed", "nothing to reflash", `id="clear"`, `data-action="power-cycle"`, `data-action="quarantine"`} {
		if !strings.Contains(body, want) {
			t.Errorf("machine page lacks %q", want)
		}
	}
	dash := page("/ui/dashboard")
	if !strings.Contains(dash, `<li data-state="quarantined"><span class="state state-quarantined">quarantined</span> <strong class="state-count">1</strong>`) ||
		!strings.Contains(dash, `id="recent-actions"`) || !strings.Contains(dash, "job 12 failed") {
		t.Errorf("dashboard states/failures:\n%s", grepLines(dash, "state"))
	}
	if res := ts.form(t, "/ui/machines/"+mac+"/clear", nil, cookie); res.StatusCode != http.StatusSeeOther {
		t.Fatalf("clear: %d", res.StatusCode)
	}
	if m, _ := ts.st.GetMachine(t.Context(), fleet.MustParseMAC(mac)); m.Quarantine != nil {
		t.Fatal("the Clear button left the quarantine")
	}
	if body := page("/ui/machines/" + mac); !strings.Contains(body, `data-action="cleared"`) || strings.Contains(body, `id="clear"`) {
		t.Error("after clearing: no cleared step, or Clear still offered")
	}
}
