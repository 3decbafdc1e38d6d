package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/btyproject/bty/internal/api"
	"github.com/btyproject/bty/internal/fleet"
)

// cijoe-online in the lab (part of TestFleetIPMI's guest lifecycle):
// bty-web runs the stand-in cijoe (e2e/testdata/cijoe, which runs each
// step over real SSH with the config bty-web wrote) against the flashed
// OS, logging in with the key bty-web made and the live env seeded
// through cloud-init's vendor-data for the image's default user.

// onlineWorkflows uploads the two workflows of the lifecycle: good.yaml
// writes a file on the guest and reads it back in a second step (the
// proof both ran there, over one login each); bad.yaml's second step
// fails.
func onlineWorkflows(t *testing.T, w *btyWeb, dir, token string) {
	t.Helper()
	good := fmt.Sprintf("doc: bty e2e, written on the guest and read back\nsteps:\n"+
		"- name: write-proof\n  run: echo cijoe-proof-%[1]s > /tmp/bty-cijoe-proof\n"+
		"- name: read-proof\n  run: cat /tmp/bty-cijoe-proof && hostname\n", token)
	bad := "steps:\n- name: first-ok\n  run: \"true\"\n- name: second-fails\n  run: echo about to fail; exit 3\n- name: never\n  run: touch /tmp/bty-never\n"
	for name, body := range map[string]string{"good.yaml": good, "bad.yaml": bad} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		w.ctlRun(t, "", "workflows", "upload", p)
	}
}

// waitOnlineRun waits for the run that follows flash f of mac to end
// and returns it with its log.
func waitOnlineRun(t *testing.T, w *btyWeb, mac string, f fleet.Flash, timeout time.Duration) (fleet.Run, string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		out := w.ctlRun(t, "", "machines", "runs", mac, "--limit", "5", "--json")
		var doc struct {
			api.RunPage
		}
		if err := json.Unmarshal([]byte(out), &doc); err != nil {
			t.Fatalf("machines runs --json: %v\n%s", err, out)
		}
		for _, r := range doc.Runs {
			if r.FlashID == f.ID && r.Result.Ended() {
				log := w.ctlRun(t, "", "machines", "run-log", strconv.FormatInt(r.ID, 10))
				t.Logf("run %d after flash %d: %s (%s), exit %v, took %s\nlog:\n%s", r.ID, f.ID, r.Result, r.Reason, exitOf(r),
					r.EndedAt.Sub(*r.StartedAt).Round(100*time.Millisecond), log)
				return r, log
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no ended workflow run after flash %d within %v: %s", f.ID, timeout, out)
		}
		time.Sleep(2 * time.Second)
	}
}

func exitOf(r fleet.Run) string {
	if r.ExitStatus == nil {
		return "none"
	}
	return strconv.Itoa(*r.ExitStatus)
}

// checkGoodRun: the good workflow ran on the guest as the image's
// default user, the second step read back what the first wrote, cijoe's
// report is served, and the run is the machine's baseline.
func checkGoodRun(t *testing.T, w *btyWeb, mac, token string, f fleet.Flash, r fleet.Run, log string) {
	t.Helper()
	if r.Result != fleet.RunSuccess || !r.KnownGood || !r.Report || r.User != "debian" {
		t.Errorf("the good workflow's run: %+v, want success, known-good, a report, as the image's default user debian", r)
	}
	if !strings.Contains(log, "cijoe-proof-"+token) || !strings.Contains(log, "# step read-proof") {
		t.Errorf("the run's log lacks the proof read back on the guest (cijoe-proof-%s)", token)
	}
	report := fmt.Sprintf("/runs/%d/report", r.ID)
	if code := w.getStatus(t, report); code != 401 {
		t.Errorf("GET %s without a login: %d, want 401", report, code)
	}
	if code := w.callStatus(t, "GET", report, "Authorization: Bearer "+w.apiToken(t)); code != 200 {
		t.Errorf("GET %s: %d", report, code)
	}
	m := w.machineGet(t, mac)
	k := m.LastKnownGood
	if k == nil || k.RunID != r.ID || k.Image != f.Image || k.ImageSHA256 != f.ImageSHA256 || k.Workflow != "good.yaml" || k.WorkflowSHA256 == "" ||
		k.UserDataSHA256 != fleet.SeedHash(m.UserData) {
		t.Errorf("the baseline after the good run: %+v (run %d, flash image %s %s)", k, r.ID, f.Image, f.ImageSHA256)
	}
	out := w.ctlRun(t, "", "machines", "get", mac)
	if !strings.Contains(out, "run "+strconv.FormatInt(r.ID, 10)) {
		t.Errorf("machines get does not show the baseline's run %d:\n%s", r.ID, out)
	}
}

// apiToken logs in to w over the API (from inside the lab) and returns
// the session token.
func (w *btyWeb) apiToken(t *testing.T) string {
	t.Helper()
	body, err := json.Marshal(map[string]string{"password": w.password})
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("ip", "netns", "exec", w.ns, "curl", "-s", "-X", "POST", "-H", "Content-Type: application/json",
		"--data-binary", string(body), w.url+"/auth/login").Output()
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	var s api.Session
	if err := json.Unmarshal(out, &s); err != nil || s.Token == "" {
		t.Fatalf("login: %v %.200s", err, out)
	}
	return s.Token
}
