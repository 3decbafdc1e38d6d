package server

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/btyproject/bty/internal/fleet"
)

// TestBrowserWorkflows: in a real browser, upload a workflow file
// through the form, set a machine to cijoe-online with it, see its runs
// section follow a running run's log live until the run ends, and find
// bty-web's SSH key on the settings page.
func TestBrowserWorkflows(t *testing.T) {
	findChromium(t) // skip before starting anything
	ts := startServer(t, func(c *Config) { c.Cijoe = standIn(t) })
	const mac = "52:54:00:f3:0c:01"
	ts.addImage(t, "job.img")
	if r := ts.do(t, "PUT", "/machines/"+mac, strings.NewReader(`{"image":"job.img","hostname":"wf1"}`), ts.auth()); r.code != 201 {
		t.Fatal(r.code, string(r.body))
	}
	file := filepath.Join(t.TempDir(), "browser.yaml")
	if err := os.WriteFile(file, []byte(uiWorkflow), 0o644); err != nil {
		t.Fatal(err)
	}
	b := newBrowser(t, ts)
	b.open("/ui/workflows")
	b.wantPath("/ui/login")
	if code := b.login(testPassword); code != 200 {
		t.Fatalf("login: HTTP %d", code)
	}
	b.wantPath("/ui/workflows")
	if got := b.text(`nav a[aria-current="page"]`); got != "Workflows" {
		t.Errorf("current nav entry %q", got)
	}

	// A workflow file through the form, its name left empty.
	b.must("choosing the file", chromedp.SetUploadFiles(chromedp.CSS("#workflow-file"), []string{file}))
	b.poll("the file's name as the name's placeholder", `document.getElementById("workflow-name").placeholder === "browser.yaml"`)
	if code := b.click("#workflow-submit"); code != 200 {
		t.Fatalf("upload: HTTP %d", code)
	}
	b.wantPath("/ui/workflows/browser.yaml")
	if got := b.text("#flash"); !strings.HasPrefix(got, "Stored workflow browser.yaml") {
		t.Errorf("flash after the upload: %q", got)
	}
	if got := b.text("#workflow-text"); got != strings.TrimSpace(uiWorkflow) {
		t.Errorf("the workflow shows %q", got)
	}
	if b.count("#workflow-text script, #workflow-text b") != 0 {
		t.Error("the workflow's text was rendered as markup")
	}
	if got, _ := os.ReadFile(filepath.Join(ts.cfg.StateDir, "workflows", "browser.yaml")); string(got) != uiWorkflow {
		t.Fatalf("stored %q", got)
	}
	b.screenshot("30-workflow.png")

	// A refused one through the textarea: the line named, nothing stored.
	b.open("/ui/workflows")
	b.fill("#workflow-name", "broken.yaml")
	b.fill("#workflow-yaml", "steps:\n- name: a\n  run: [unclosed\n")
	if code := b.click("#workflow-submit"); code != 400 {
		t.Errorf("a broken workflow: HTTP %d, want 400", code)
	}
	if got := b.text("#workflow-yaml-error"); !strings.Contains(got, "line 3") {
		t.Errorf("the error shown: %q", got)
	}
	if got := b.attr("#workflow-yaml", "aria-invalid"); got != "true" {
		t.Errorf("textarea aria-invalid %q", got)
	}
	if _, err := os.Stat(filepath.Join(ts.cfg.StateDir, "workflows", "broken.yaml")); err == nil {
		t.Error("the broken workflow was stored")
	}

	// The machine: cijoe-online with the workflow.
	b.open("/ui/machines/" + mac)
	if got := js[[]string](b, `Array.from(document.querySelectorAll("#cijoe_workflow_ref-options option")).map(o => o.value)`); len(got) != 1 || got[0] != "browser.yaml" {
		t.Errorf("workflow suggestions %q", got)
	}
	b.choose("#provisioning_mode", "cijoe-online")
	b.fill("#cijoe_workflow_ref", "browser.yaml")
	b.fill("#cijoe_ssh_user", "ubuntu")
	b.fill("#cijoe_ssh_port", "2222")
	if code := b.click("#save"); code != 200 {
		t.Fatalf("save: HTTP %d", code)
	}
	b.wantPath("/ui/machines/" + mac)
	if got := b.text("dd.f-provisioning_mode"); got != "cijoe-online" {
		t.Errorf("provisioning shown %q", got)
	}
	if got := b.text("dd.f-cijoe_workflow_ref"); got != "browser.yaml" {
		t.Errorf("workflow shown %q", got)
	}
	if got := b.text("#runs #h-runs"); got != "Workflow runs" {
		t.Errorf("runs section heading %q", got)
	}
	if got := b.text("#runs-next"); !strings.Contains(got, "as ubuntu on port 2222") {
		t.Errorf("runs section says %q", got)
	}
	if got := b.text("#known-good"); !strings.HasPrefix(got, "None yet") || b.count("#reflash-known-good") != 0 {
		t.Errorf("baseline shown %q, button %d", got, b.count("#reflash-known-good"))
	}
	if b.count("#cijoe-missing") != 0 {
		t.Error("a cijoe-missing warning with cijoe there")
	}

	// A running run: its log follows live, then the section shows its end.
	now := time.Now().UTC()
	run := saveRun(t, ts, fleet.Run{MAC: fleet.MustParseMAC(mac), Source: fleet.RunOnline, Workflow: "browser.yaml", Image: "job.img",
		Result: fleet.RunRunning, CreatedAt: now, StartedAt: &now}, "first line of the log\n")
	b.open("/ui/machines/" + mac)
	js[int](b, `window.__samePage = 1`)
	if got := b.text("#run-log"); got != "first line of the log" {
		t.Fatalf("pre#run-log %q", got)
	}
	logf, err := os.OpenFile(filepath.Join(ts.srv.runs.runDir(run.ID), "log"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(logf, "second <line> ✓\n")
	logf.Close()
	b.poll("the appended line in the live log", `document.getElementById("run-log")?.textContent === "first line of the log\nsecond <line> ✓\n"`)
	b.screenshot("31-machine-run-live.png")
	end := time.Now().UTC()
	exit := 0
	run.Result, run.EndedAt, run.ExitStatus = fleet.RunSuccess, &end, &exit
	saveRun(t, ts, run, "")
	b.poll("the ended run in the table", `!document.getElementById("run-log") && document.querySelector("#run-`+fmt.Sprint(run.ID)+`")?.dataset.result === "success"`)
	if js[int](b, `window.__samePage || 0`) != 1 {
		t.Error("the page reloaded (want the runs section swapped in)")
	}
	if got := b.attr(fmt.Sprintf("#run-%d a.run-log-link", run.ID), "href"); got != fmt.Sprintf("/runs/%d/log", run.ID) {
		t.Errorf("log link %q", got)
	}

	// The settings page: the public key, cijoe's path, max_runs.
	b.open("/ui/settings")
	pub, err := ts.srv.sshKey.publicKey()
	if err != nil {
		t.Fatal(err)
	}
	if got := b.read("#ssh-public-key", "e.value"); got != pub || !strings.HasPrefix(got, "ssh-ed25519 ") || !strings.HasSuffix(got, " bty-web") {
		t.Errorf("the key shown %q, want %q", got, pub)
	}
	if got := b.attr("#ssh-public-key", "readonly"); got != "" || b.count("#ssh-public-key[readonly]") != 1 {
		t.Error("the key's textarea is not read-only")
	}
	if got := b.text("#cijoe-path"); got != "cijoe: "+standIn(t) {
		t.Errorf("cijoe shown %q", got)
	}
	b.fill("#max_runs", "3")
	if code := b.click("#max-runs-apply"); code != 200 {
		t.Fatalf("max_runs: HTTP %d", code)
	}
	if got := b.read("#max_runs", "e.value"); got != "3" || ts.srv.maxRuns(t.Context()) != 3 {
		t.Errorf("max_runs after applying 3: field %q, server %d", got, ts.srv.maxRuns(t.Context()))
	}
	b.screenshot("32-settings-cijoe.png")
}
