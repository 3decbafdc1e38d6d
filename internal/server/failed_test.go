package server

import (
	"strings"
	"testing"

	"github.com/btyproject/bty/internal/fleet"
)

func TestPXEFailed(t *testing.T) {
	ts := startServer(t, nil)
	const mac = "52:54:00:0f:00:01"
	if r := ts.do(t, "POST", "/pxe/"+mac+"/failed", strings.NewReader("x"), nil); r.code != 403 {
		t.Fatalf("unknown machine: %d", r.code)
	}
	if r := ts.do(t, "POST", "/pxe/zz/failed", strings.NewReader("x"), nil); r.code != 400 {
		t.Fatalf("bad MAC: %d", r.code)
	}
	get := func() fleet.Machine {
		var m fleet.Machine
		ts.do(t, "GET", "/machines/"+mac, nil, ts.auth()).json(t, &m)
		return m
	}
	// Plain text, no credentials (an open route like done), in the
	// flash cycle of a discovery contact.
	r := ts.report(t, mac, "failed", strings.NewReader("writing /dev/sda:\r\n input/output error\x00"))
	if r.code != 200 || !statusOnly(r) {
		t.Fatalf("text report: %d %s", r.code, r.body)
	}
	if m := get(); m.LastFailure != "writing /dev/sda: input/output error" || m.LastFailedAt == nil {
		t.Fatalf("text report stored %+v", m)
	}
	// JSON, and a bad JSON body is refused.
	_, cycle := ts.boot(t, "127.0.0.1", mac)
	r = ts.callFromHdr(t, "127.0.0.1", "POST", "/pxe/"+mac+"/failed", strings.NewReader(`{"reason": `),
		map[string]string{"Content-Type": "application/json", cycleHeader: cycle})
	if r.code != 400 {
		t.Fatalf("bad JSON: %d", r.code)
	}
	r = ts.callFromHdr(t, "127.0.0.1", "POST", "/pxe/"+mac+"/failed", strings.NewReader(`{"reason": "no disk"}`),
		map[string]string{"Content-Type": "application/json", cycleHeader: cycle})
	if m := get(); r.code != 200 || m.LastFailure != "no disk" {
		t.Fatalf("JSON report: %d %+v", r.code, m)
	}
	if r := ts.report(t, mac, "failed", strings.NewReader(strings.Repeat("x", maxFailureBody+1))); r.code != 413 {
		t.Fatalf("oversized report: %d", r.code)
	}
	if r := ts.report(t, mac, "failed", strings.NewReader(" \n")); r.code != 200 || !strings.Contains(get().LastFailure, "no reason given") {
		t.Fatalf("empty report: %d %s", r.code, r.body)
	}
	// The record, the dashboard and the metrics show it.
	cookie := map[string]string{"Cookie": CookieName + "=" + ts.token}
	if body := string(ts.do(t, "GET", "/ui/machines/"+mac, nil, cookie).body); !strings.Contains(body, "no reason given") {
		t.Error("the machine page does not show the last failure")
	}
	if body := string(ts.do(t, "GET", "/ui/machines", nil, cookie).body); !strings.Contains(body, "failed <time") {
		t.Error("the machines table does not mark the failure")
	}
	if body := string(ts.do(t, "GET", "/ui/dashboard", nil, cookie).body); !strings.Contains(body, "flash failed") || !strings.Contains(body, "no disk") {
		t.Error("the dashboard does not list the failure")
	}
	if body := string(ts.do(t, "GET", "/metrics", nil, nil).body); !strings.Contains(body, "bty_flashes_failed_total 3") {
		t.Errorf("metrics: %s", grepLine(body, "bty_flashes_failed_total"))
	}
}

func grepLine(s, sub string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			return l
		}
	}
	return ""
}
