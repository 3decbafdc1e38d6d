package ctl

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
)

// TestSchedulesMisuseIsLocal: a bad cron, zone, action, selector,
// window, max-parallel, a missing name or a bad id is exit 2 naming the
// flag, in text and --json, and never reaches the server.
func TestSchedulesMisuseIsLocal(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.login()
	url, conns := countingServer(t)
	tok, _ := os.ReadFile(h.tokenFile())
	var s session
	json.Unmarshal(tok, &s)
	s.Server = url
	b, _ := json.Marshal(s)
	os.WriteFile(h.tokenFile(), b, 0o600)
	h.env["BTY_SERVER"] = url

	add := func(extra ...string) []string {
		return append([]string{"schedules", "add", "--name", "n", "--selector", "role=ci", "--cron", "0 3 * * *"}, extra...)
	}
	tests := []struct {
		name, command string
		args          []string
		want          string
	}{
		{"cron", "schedules-add", add("--cron", "0 3 * *"), "--cron"},
		{"tz", "schedules-add", add("--tz", "Mars/Base"), "--tz"},
		{"action", "schedules-add", add("--action", "wipe"), "--action"},
		{"window", "schedules-add", add("--window", "3d"), "--window"},
		{"max-parallel", "schedules-add", add("--max-parallel", "0"), "--max-parallel"},
		{"no name", "schedules-add", add("--name", ""), "--name"},
		{"no selector", "schedules-add", add("--selector", ""), "--selector"},
		{"bad selector", "schedules-add", add("--selector", "role in ("), "--selector"},
		{"get id", "schedules-get", []string{"schedules", "get", "x"}, `schedule id "x"`},
		{"delete id", "schedules-delete", []string{"schedules", "delete", "0"}, "positive number"},
		{"pause id", "schedules-pause", []string{"schedules", "pause", "1.5"}, "positive number"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := h.run("", tc.args...)
			if r.code != 2 || !strings.Contains(r.stderr, tc.want) {
				t.Errorf("exit %d, want 2 with %q on stderr\nstdout:\n%s\nstderr:\n%s", r.code, tc.want, r.stdout, r.stderr)
			}
			r = h.run("", append(tc.args, "--json")...)
			doc := envelope(t, r, tc.command)
			if r.code != 2 || doc["ok"] != false || !strings.Contains(doc["error"].(string), tc.want) {
				t.Errorf("--json: exit %d, %v", r.code, doc)
			}
		})
	}
	if n := conns.Load(); n != 0 {
		t.Errorf("misuse reached the server: %d connections", n)
	}
}

// TestSchedulesCommands: add (the next time shown in the zone), list
// (table and --json), get, pause (list shows it), resume, delete;
// unknown ids exit 1. Needs bty-web's /schedules routes.
func TestSchedulesCommands(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.login()
	h.want(h.run("", "schedules", "list"), 0, "no schedules on "+h.srv.URL)
	r := h.run("", "schedules", "add", "--name", "nightly-ci", "--selector", "role=ci", "--cron", "0 3 * * *", "--tz", "Europe/Berlin")
	h.want(r, 0, "added schedule 1 (nightly-ci): reflash 0 3 * * * Europe/Berlin of role=ci, next ")
	if !strings.Contains(r.stdout, " 03:00 CE") {
		t.Errorf("next time not 03:00 Berlin time: %s", r.stdout)
	}
	doc := envelope(t, h.run("", "schedules", "add", "--name", "weekly", "--selector", "gpu", "--cron", "@weekly",
		"--action", "known-good", "--max-parallel", "4", "--window", "30m", "--json"), "schedules-add")
	sch, _ := doc["schedule"].(map[string]any)
	if doc["ok"] != true || sch["id"] != float64(2) || sch["action"] != "known-good" || sch["max_parallel"] != float64(4) || sch["window"] != "30m" {
		t.Fatalf("add --json: %v", doc)
	}

	r = h.run("", "schedules", "list")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if r.code != 0 || len(lines) != 3 || !strings.HasPrefix(lines[0], "ID") || !strings.Contains(lines[1], "nightly-ci") ||
		!strings.Contains(lines[1], "not fired yet") || !strings.Contains(lines[2], "known-good") {
		t.Errorf("list:\n%s\n%s", r.stdout, r.stderr)
	}
	doc = envelope(t, h.run("", "schedules", "list", "--json"), "schedules-list")
	if l, _ := doc["schedules"].([]any); len(l) != 2 {
		t.Errorf("list --json: %v", doc)
	}
	h.want(h.run("", "schedules", "get", "1"), 0, "selector:    role=ci")
	h.want(h.run("", "schedules", "pause", "1"), 0, "paused schedule 1 (nightly-ci)")
	r = h.run("", "schedules", "list")
	if !strings.Contains(strings.Split(r.stdout, "\n")[1], "paused") {
		t.Errorf("list after pause:\n%s", r.stdout)
	}
	h.want(h.run("", "schedules", "resume", "1"), 0, "resumed schedule 1 (nightly-ci): next ")
	h.want(h.run("", "schedules", "delete", "1"), 0, "deleted schedule 1")
	h.want(h.run("", "schedules", "delete", "1"), 1, "schedule 1")
	h.want(h.run("", "schedules", "get", "1"), 1, "schedule 1")
	h.want(h.run("", "schedules", "pause", "9"), 1, "schedule 9")
}
