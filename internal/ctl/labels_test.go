package ctl

import (
	"strings"
	"testing"
)

// TestLabelsCommands: machines set --label sets and removes labels
// (checked before anything is sent), machines list --selector lists
// the machines a selector picks, machines get shows them.
func TestLabelsCommands(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.login()
	const a, b = "52:54:00:77:1a:01", "52:54:00:77:1a:02"
	h.want(h.run("", "machines", "set", a, "--label", "role=ci", "--label", "rack=r1"), 0, "role=ci")
	h.want(h.run("", "machines", "set", b, "--label", "role=ci", "--label", "rack=r3"), 0, "rack=r3")
	h.want(h.run("", "machines", "set", a, "--label", "rack-", "--label", "gpu=a100"), 0, "gpu=a100,role=ci")
	for _, bad := range []string{"rack", "ro le=x", "role=c i"} {
		h.want(h.run("", "machines", "set", a, "--label", bad), 2, "label")
	}
	r := h.run("", "machines", "list", "--selector", "role=ci,rack!=r3")
	h.want(r, 0, a)
	if strings.Contains(r.stdout, b) {
		t.Errorf("--selector role=ci,rack!=r3 lists %s:\n%s", b, r.stdout)
	}
	r = h.run("", "machines", "list", "--selector", "gpu")
	if !strings.Contains(r.stdout, "gpu=a100,role=ci") || strings.Contains(r.stdout, b) {
		t.Errorf("--selector gpu:\n%s", r.stdout)
	}
	h.want(h.run("", "machines", "list", "--selector", "quarantined"), 0, "")
	h.want(h.run("", "machines", "list", "--selector", "tier in a"), 2, "--selector")
	h.want(h.run("", "machines", "get", b), 0, "labels:                rack=r3,role=ci")
}
