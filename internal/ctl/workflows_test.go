package ctl

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/btyproject/bty/internal/api"
	"github.com/btyproject/bty/internal/fleet"
)

const smokeWorkflow = "doc: smoke test\nsteps:\n- name: uname\n  run: uname -a\n- name: disks\n  run: lsblk\n"

// TestWorkflowsMisuseIsLocal: what bty-ctl can tell is wrong without the
// server (a missing file, a bad workflow name, a bad run id, a flag
// that does not go with another, a value out of range) is exit 2, in
// text and --json, and never reaches the server.
func TestWorkflowsMisuseIsLocal(t *testing.T) {
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

	dir := t.TempDir()
	big := filepath.Join(dir, "big.yaml")
	os.WriteFile(big, make([]byte, fleet.MaxWorkflowBytes+1), 0o644)
	good := filepath.Join(dir, "smoke.yaml")
	os.WriteFile(good, []byte(smokeWorkflow), 0o644)
	const mac = "52:54:00:77:00:10"
	tests := []struct {
		name, command string
		args          []string
		want          string
	}{
		{"missing file", "workflows-upload", []string{"workflows", "upload", filepath.Join(dir, "nope.yaml")}, "no file"},
		{"directory", "workflows-upload", []string{"workflows", "upload", dir}, "not a regular file"},
		{"too big", "workflows-upload", []string{"workflows", "upload", big}, "at most 1048576"},
		{"name without suffix", "workflows-upload", []string{"workflows", "upload", good, "--name", "smoke"}, "end it in .yaml or .yml"},
		{"name with slash", "workflows-get", []string{"workflows", "get", "wf/smoke.yaml"}, "use only letters"},
		{"delete bad name", "workflows-delete", []string{"workflows", "delete", ".hidden.yaml"}, "starts with a dot"},
		{"runs bad MAC", "machines-runs", []string{"machines", "runs", "52:54:00"}, "invalid MAC address"},
		{"runs bad limit", "machines-runs", []string{"machines", "runs", mac, "--limit", "0"}, "--limit"},
		{"run-log bad id", "machines-run-log", []string{"machines", "run-log", "seven"}, `run id "seven"`},
		{"run-cancel bad id", "machines-run-cancel", []string{"machines", "run-cancel", "0"}, "positive number"},
		{"known-good with image", "machines-reflash", []string{"machines", "reflash", mac, "--known-good", "--image", "a.img"}, "--known-good restores"},
		{"known-good with hostname", "machines-reflash", []string{"machines", "reflash", mac, "--known-good", "--hostname", "n1"}, "--known-good restores"},
		{"known-good with cancel", "machines-reflash", []string{"machines", "reflash", mac, "--known-good", "--cancel"}, "--cancel takes no other flag"},
		{"ssh port", "machines-set", []string{"machines", "set", mac, "--cijoe-ssh-port", "70000"}, "--cijoe-ssh-port 70000"},
		{"ssh user", "machines-set", []string{"machines", "set", mac, "--cijoe-ssh-user", "-root"}, "--cijoe-ssh-user"},
		{"run timeout", "machines-set", []string{"machines", "set", mac, "--cijoe-timeout", "10s"}, "--cijoe-timeout"},
		{"max runs", "settings-set", []string{"settings", "set", "--max-runs", "65"}, "--max-runs 65"},
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

// TestWorkflowsCommands: upload (created, then replaced, with the
// sha256), list (table and --json, with the machines using it), get to
// stdout and to a file, the server's line error shown as is, delete
// refused while a machine uses it, then done; unknown names exit 1.
// Needs bty-web's /workflows routes.
func TestWorkflowsCommands(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.login()
	dir := t.TempDir()
	file := filepath.Join(dir, "smoke.yaml")
	os.WriteFile(file, []byte(smokeWorkflow), 0o644)
	sum := fleet.SHA256Hex([]byte(smokeWorkflow))

	h.want(h.run("", "workflows", "list"), 0, "no workflows on "+h.srv.URL)
	h.want(h.run("", "workflows", "upload", file), 0, "created workflow smoke.yaml on "+h.srv.URL+": ")
	r := h.run("", "workflows", "upload", file, "--json")
	doc := envelope(t, r, "workflows-upload")
	w, _ := doc["workflow"].(map[string]any)
	if r.code != 0 || doc["created"] != false || w["name"] != "smoke.yaml" || w["sha256"] != sum {
		t.Fatalf("second upload --json: exit %d, %v", r.code, doc)
	}
	h.want(h.run("", "workflows", "upload", file, "--name", "copy.yml"), 0, "sha256 "+sum)

	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("steps:\n- name: a\n  run: true\n- run: false\n"), 0o644)
	r = h.run("", "workflows", "upload", bad)
	h.want(r, 1, "line 4: step 2 has no name:")

	const mac = "52:54:00:77:00:11"
	h.want(h.run("", "machines", "set", mac, "--provisioning", "cijoe-online", "--cijoe-workflow", "smoke.yaml"), 0, "machine "+mac)
	r = h.run("", "workflows", "list")
	h.want(r, 0, "smoke.yaml")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "NAME") || !strings.Contains(lines[1], "copy.yml") ||
		!strings.Contains(lines[2], sum[:12]) || !strings.Contains(lines[2], "1 ("+mac+")") || strings.Contains(lines[2], sum[:13]) {
		t.Errorf("workflows list:\n%s", r.stdout)
	}
	doc = envelope(t, h.run("", "workflows", "list", "--json"), "workflows-list")
	if ws, _ := doc["workflows"].([]any); len(ws) != 2 {
		t.Errorf("workflows list --json: %v", doc)
	}

	r = h.run("", "workflows", "get", "smoke.yaml")
	if r.code != 0 || r.stdout != smokeWorkflow {
		t.Errorf("workflows get: exit %d\n%q\n%s", r.code, r.stdout, r.stderr)
	}
	out := filepath.Join(dir, "fetched.yaml")
	h.want(h.run("", "workflows", "get", "smoke.yaml", "-o", out), 0, "wrote workflow smoke.yaml to "+out)
	if got, err := os.ReadFile(out); err != nil || string(got) != smokeWorkflow {
		t.Errorf("workflows get -o wrote %q, %v", got, err)
	}
	doc = envelope(t, h.run("", "workflows", "get", "smoke.yaml", "--json"), "workflows-get")
	if doc["yaml"] != smokeWorkflow || doc["sha256"] != sum {
		t.Errorf("workflows get --json: %v", doc)
	}
	h.want(h.run("", "workflows", "get", "nope.yaml"), 1, "nope.yaml")

	h.want(h.run("", "workflows", "delete", "smoke.yaml"), 1, mac)
	h.want(h.run("", "workflows", "delete", "copy.yml"), 0, "deleted workflow copy.yml")
	h.want(h.run("", "workflows", "delete", "copy.yml"), 1, "copy.yml")
}

// zeroMiBSHA256 is the sha256 of 1 MiB of zeros, the test's good.img.
const zeroMiBSHA256 = "30e14955ebf1352266dc2ff8067e68104607e750abb9d3b36582b8af909fcb58"

// addRuns records two runs of mac in the server's store, as bty-web's
// runner would: an old success that became the baseline, and a queued
// one. It returns them.
func addRuns(t *testing.T, h *harness, mac fleet.MAC) (done, queued fleet.Run) {
	t.Helper()
	ctx := context.Background()
	t0 := time.Now().UTC().Add(-time.Hour).Truncate(time.Second)
	exit := 0
	start := t0.Add(10 * time.Second)
	r := fleet.Run{MAC: mac, Source: fleet.RunOnline, Workflow: "smoke.yaml", WorkflowSHA256: fleet.SHA256Hex([]byte(smokeWorkflow)),
		Image: "good.img", ImageSHA256: zeroMiBSHA256, Result: fleet.RunRunning, CreatedAt: t0, StartedAt: &start}
	r = r.End(fleet.RunSuccess, "", &exit, t0.Add(75*time.Second))
	r.KnownGood = true
	done, _, err := h.srv.Store.SaveRun(ctx, r, func(m fleet.Machine, r fleet.Run) fleet.Machine {
		return m.WithRun(r, "/state/runs/1", m.UserData, m.MetaData, r.CreatedAt.Add(2*time.Minute))
	})
	if err != nil {
		t.Fatal(err)
	}
	// The runner keeps the workflow as it ran beside the run's log: a
	// reflash to known-good reruns that copy.
	dir := filepath.Join(h.srv.Config.StateDir, "runs", strconv.FormatInt(done.ID, 10))
	if err := os.MkdirAll(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "workflow.yaml"), []byte(smokeWorkflow), 0o640); err != nil {
		t.Fatal(err)
	}
	queued, _, err = h.srv.Store.SaveRun(ctx, fleet.Run{MAC: mac, Source: fleet.RunOnline, Workflow: "smoke.yaml", Image: "good.img",
		Result: fleet.RunQueued, CreatedAt: t0.Add(5 * time.Minute)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return done, queued
}

// TestMachinesBaseline: machines get shows the baseline a successful run
// recorded, the last workflow run and the cijoe ssh settings that
// machines set --cijoe-ssh-* change; reflash --known-good flashes the
// baseline's image and says whose baseline it is.
func TestMachinesBaseline(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.login()
	if err := os.WriteFile(filepath.Join(h.srv.Config.ImageRoot, "good.img"), make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	const mac = "52:54:00:77:00:12"
	h.want(h.run("", "machines", "set", mac, "--image", "good.img"), 0, "cijoe ssh port:        - (22)")
	done, _ := addRuns(t, h, fleet.MustParseMAC(mac))

	r := h.run("", "machines", "get", mac)
	for _, want := range []string{
		"last known good:       good.img (sha256 30e14955ebf1), workflow smoke.yaml (sha256 " + done.WorkflowSHA256[:12] + "), run " + strconv.FormatInt(done.ID, 10) + " at ",
		"last workflow:         success at ",
		"cijoe ssh user:        - (the image's default user, else root)",
		"cijoe timeout:         - (30m0s)",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("machines get lacks %q:\n%s", want, r.stdout)
		}
	}
	r = h.run("", "machines", "set", mac, "--cijoe-ssh-user", "ci", "--cijoe-ssh-port", "2222", "--cijoe-timeout", "45m", "--json")
	m := envelope(t, r, "machines-set")["machine"].(map[string]any)
	if r.code != 0 || m["cijoe_ssh_user"] != "ci" || m["cijoe_ssh_port"] != float64(2222) || m["cijoe_timeout"] != "45m" {
		t.Fatalf("machines set --cijoe-ssh-*: exit %d, %v", r.code, m)
	}
	r = h.run("", "machines", "get", mac)
	for _, want := range []string{"cijoe ssh user:        ci\n", "cijoe ssh port:        2222\n", "cijoe timeout:         45m\n"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("machines get lacks %q:\n%s", want, r.stdout)
		}
	}

	r = h.run("", "machines", "reflash", mac, "--known-good")
	h.want(r, 0, "good.img, the known-good baseline of run "+strconv.FormatInt(done.ID, 10))
	h.want(h.run("", "machines", "reflash", mac, "--cancel"), 0, "cancelled")
}

// TestMachinesDrift: once the record leaves its baseline, machines get
// prints one drift line per difference; a machine without a baseline
// cannot reflash --known-good. Needs bty-web's drift and known-good
// checks.
func TestMachinesDrift(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.login()
	for _, n := range []string{"good.img", "new.img"} {
		if err := os.WriteFile(filepath.Join(h.srv.Config.ImageRoot, n), make([]byte, 1<<20), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	const mac, other = "52:54:00:77:00:13", "52:54:00:77:00:14"
	h.want(h.run("", "machines", "set", mac, "--image", "good.img"), 0, "machine "+mac)
	addRuns(t, h, fleet.MustParseMAC(mac))
	h.want(h.run("", "machines", "set", mac, "--image", "new.img"), 0, "machine "+mac)
	r := h.run("", "machines", "get", mac)
	h.want(r, 0, "drift:                 image: baseline good.img, now new.img")
	if n := strings.Count(r.stdout, "drift:"); n < 1 {
		t.Errorf("drift lines: %d", n)
	}

	h.want(h.run("", "machines", "set", other, "--image", "good.img"), 0, "machine "+other)
	r = h.run("", "machines", "reflash", other, "--known-good")
	h.want(r, 1, "no known-good baseline")
	if strings.Contains(r.stderr, "internal") {
		t.Errorf("reflash --known-good without a baseline: %s", r.stderr)
	}
}

// TestMachinesRunsCommands: machines runs lists the runs newest first
// with the known-good mark; run-log prints a log and the result, and
// --follow waits for the run to end and exits by its result; run-cancel
// ends a queued run and refuses one that ended. Needs bty-web's run
// routes.
func TestMachinesRunsCommands(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.login()
	const mac = "52:54:00:77:00:15"
	h.want(h.run("", "machines", "set", mac, "--policy", "local"), 0, "machine "+mac)
	h.want(h.run("", "machines", "runs", mac), 0, mac+" has no workflow runs yet")
	done, queued := addRuns(t, h, fleet.MustParseMAC(mac))

	r := h.run("", "machines", "runs", mac)
	h.want(r, 0, "KNOWN GOOD")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[1], strconv.FormatInt(queued.ID, 10)+" ") || !strings.Contains(lines[1], "queued") ||
		!strings.Contains(lines[2], "success") || !strings.Contains(lines[2], "1m5s") || !strings.Contains(lines[2], "yes") {
		t.Errorf("machines runs:\n%s", r.stdout)
	}
	r = h.run("", "machines", "runs", mac, "--limit", "1", "--json")
	doc := envelope(t, r, "machines-runs")
	if runs, _ := doc["runs"].([]any); r.code != 0 || doc["total"] != float64(2) || len(runs) != 1 {
		t.Errorf("machines runs --limit 1 --json: exit %d, %v", r.code, doc)
	}

	id := strconv.FormatInt(queued.ID, 10)
	h.want(h.run("", "machines", "run-log", id), 0, "run "+id+": queued")
	h.want(h.run("", "machines", "run-log", "999999"), 1, "999999")

	// --follow: the run ends failed while bty-ctl waits.
	old := runLogPoll
	runLogPoll = 50 * time.Millisecond
	t.Cleanup(func() { runLogPoll = old })
	res := make(chan result, 1)
	go func() { res <- h.run("", "machines", "run-log", id, "--follow") }()
	time.Sleep(300 * time.Millisecond)
	exit := 3
	if _, _, err := h.srv.Store.SaveRun(context.Background(), queued.End(fleet.RunFailed, "step disks failed", &exit, time.Now()), nil); err != nil {
		t.Fatal(err)
	}
	select {
	case r = <-res:
	case <-time.After(30 * time.Second):
		t.Fatal("run-log --follow did not return after the run ended")
	}
	h.want(r, 1, "run "+id+": failed (cijoe exit 3): step disks failed")

	h.want(h.run("", "machines", "run-cancel", strconv.FormatInt(done.ID, 10)), 1, "HTTP 409")
	_, third := addRuns(t, h, fleet.MustParseMAC(mac))
	r = h.run("", "machines", "run-cancel", strconv.FormatInt(third.ID, 10), "--json")
	doc = envelope(t, r, "machines-run-cancel")
	if run, _ := doc["run"].(map[string]any); r.code != 0 || run["result"] != "cancelled" {
		t.Errorf("run-cancel --json: exit %d, %v", r.code, doc)
	}
	h.want(h.run("", "machines", "run-cancel", "999999"), 1, "999999")
}

// TestSettingsCijoe: settings get shows bty-web's SSH public key, its
// cijoe and max runs, and settings set --max-runs changes the last.
// Needs bty-web's cijoe-online settings.
func TestSettingsCijoe(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.login()
	r := h.run("", "settings", "get")
	h.want(r, 0, "ssh public key:        ssh-ed25519 AAAA")
	if !strings.Contains(r.stdout, "cijoe:                 ") || !strings.Contains(r.stdout, "max runs:              ") {
		t.Errorf("settings get:\n%s", r.stdout)
	}
	h.want(h.run("", "settings", "set", "--max-runs", "3"), 0, "max runs:              3\n")
	doc := envelope(t, h.run("", "settings", "get", "--json"), "settings-get")
	if s, _ := doc["settings"].(map[string]any); s["max_runs"] != float64(3) {
		t.Errorf("settings get --json after --max-runs 3: %v", doc)
	}
}

// TestCijoeWarnings: machines set warns about a cijoe-online record
// without a workflow, and about a bty-web without cijoe (when its
// settings could be read); other modes get neither.
func TestCijoeWarnings(t *testing.T) {
	online := api.Machine{ProvisioningMode: fleet.ModeCijoeOnline}
	if ws := cijoeWarnings(online, nil); len(ws) != 1 || !strings.Contains(ws[0], "--cijoe-workflow") {
		t.Errorf("no workflow, no settings: %q", ws)
	}
	online.CijoeWorkflowRef = "smoke.yaml"
	if ws := cijoeWarnings(online, &api.Settings{Cijoe: ""}); len(ws) != 1 || !strings.Contains(ws[0], "not on bty-web's PATH") {
		t.Errorf("no cijoe on the server: %q", ws)
	}
	if ws := cijoeWarnings(online, &api.Settings{Cijoe: "/usr/bin/cijoe"}); len(ws) != 0 {
		t.Errorf("complete: %q", ws)
	}
	if ws := cijoeWarnings(api.Machine{ProvisioningMode: fleet.ModeCloudInit}, &api.Settings{}); len(ws) != 0 {
		t.Errorf("cloud-init: %q", ws)
	}
}
