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

// TestBulkCommands: set, reflash, power and clear with --selector act on
// the machines it picks and list each one's outcome; a refusal makes the
// exit 1; --selector with a MAC, or with a flag a bulk action does not
// take, is exit 2.
func TestBulkCommands(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.login()
	const a, b, c = "52:54:00:77:3c:01", "52:54:00:77:3c:02", "52:54:00:77:3c:03"
	h.want(h.run("", "machines", "set", a, "--label", "role=ci"), 0, "")
	h.want(h.run("", "machines", "set", b, "--label", "role=ci"), 0, "")
	h.want(h.run("", "machines", "set", c, "--label", "role=build"), 0, "")
	r := h.run("", "machines", "set", "--selector", "role=ci", "--policy", "flash")
	h.want(r, 0, "set on 2 machines: 2 done, 0 refused")
	if strings.Contains(r.stdout, c) {
		t.Errorf("bulk set listed %s:\n%s", c, r.stdout)
	}
	h.want(h.run("", "machines", "get", a), 0, "boot policy:           flash")
	h.want(h.run("", "machines", "get", c), 0, "boot policy:           local")
	h.want(h.run("", "machines", "set", "--selector", "role=ci", "--hostname", "x"), 2, "--hostname")
	h.want(h.run("", "machines", "set", a, "--selector", "role=ci", "--policy", "flash"), 2, "no MAC")
	h.want(h.run("", "machines", "set", "--selector", "role in ci", "--policy", "flash"), 2, "--selector")
	// No image: every reflash is refused, exit 1, each one listed.
	r = h.run("", "machines", "reflash", "--selector", "role=ci")
	h.want(r, 1, "refused")
	if !strings.Contains(r.stdout, a) || !strings.Contains(r.stdout, "FAILED") {
		t.Errorf("bulk reflash:\n%s", r.stdout)
	}
	h.want(h.run("", "machines", "reflash", "--selector", "role=ci", "--wait"), 2, "--wait")
	h.want(h.run("", "machines", "power", "--selector", "role=build", "status"), 1, "no power driver")
	h.want(h.run("", "machines", "clear", "--selector", "role"), 0, "clear on 3 machines: 3 done")
	h.want(h.run("", "machines", "reflash"), 2, "give one MAC, or --selector")
}
