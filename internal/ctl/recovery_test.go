package ctl

import (
	"strings"
	"testing"
)

// TestRecoveryCommands: machines set --health-every/--health-fail-after
// (checked before anything is sent), report-failure starts a recovery
// the server shows, a second is refused, actions lists the step, clear
// stops it and a second clear is refused.
func TestRecoveryCommands(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.login()
	const mac = "52:54:00:77:2b:01"
	h.want(h.run("", "machines", "set", mac, "--health-every", "30s", "--health-fail-after", "2m"), 0, "")
	h.want(h.run("", "machines", "set", mac, "--health-every", "1s"), 2, "--health-every")
	h.want(h.run("", "machines", "set", mac, "--health-fail-after", "soon"), 2, "--health-fail-after")
	h.want(h.run("", "machines", "get", mac), 0, "every 30s, recovery after 2m0s failing (tcp:22)")
	h.want(h.run("", "machines", "report-failure", mac), 2, "--reason")
	h.want(h.run("", "machines", "report-failure", mac, "--reason", "job 9 broke the NIC"), 0, "recovery queued")
	h.want(h.run("", "machines", "report-failure", mac, "--reason", "again"), 1, "already recovering")
	r := h.run("", "machines", "actions", mac)
	h.want(r, 0, "reported: job 9 broke the NIC")
	if !strings.Contains(r.stdout, "failure") {
		t.Errorf("actions lack the failure step:\n%s", r.stdout)
	}
	h.want(h.run("", "machines", "get", mac), 0, "job 9 broke the NIC")
	h.want(h.run("", "machines", "clear", mac), 0, "cleared")
	h.want(h.run("", "machines", "clear", mac), 1, "nothing to clear")
	h.want(h.run("", "machines", "actions", mac), 0, "cleared")
}
