package server

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/btyproject/bty/internal/api"
	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/sshdtest"
)

// standIn is the stand-in cijoe (e2e/testdata/cijoe): it reads the
// config bty-web writes and runs each step over real SSH.
func standIn(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	p, err := filepath.Abs(filepath.Join(filepath.Dir(file), "..", "..", "e2e", "testdata", "cijoe"))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// runsServer is a server running the stand-in cijoe, with an sshd that
// lets bty-web's key in, and a cijoe-online machine pointing at it.
type runsServer struct {
	*testServer
	sshd *sshdtest.Server
}

func startRunsServer(t *testing.T, mod func(*Config)) *runsServer {
	t.Helper()
	ts := startServer(t, func(c *Config) {
		c.Cijoe = standIn(t)
		if mod != nil {
			mod(c)
		}
	})
	ts.srv.runs.sshWait = 2 * time.Second
	var st api.Settings
	ts.do(t, "GET", "/settings", nil, ts.auth()).json(t, &st)
	if !strings.HasPrefix(st.SSHPublicKey, "ssh-ed25519 ") || !strings.HasSuffix(st.SSHPublicKey, " bty-web") {
		t.Fatalf("settings ssh_public_key %q", st.SSHPublicKey)
	}
	return &runsServer{testServer: ts, sshd: sshdtest.Start(t, st.SSHPublicKey)}
}

// putWorkflow uploads a workflow and returns the answer.
func (ts *runsServer) putWorkflow(t *testing.T, name, body string) resp {
	t.Helper()
	return ts.do(t, "PUT", "/workflows/"+name, strings.NewReader(body), ts.auth())
}

// onlineMachine makes mac a cijoe-online machine running workflow wf
// against the sshd, ready at done.
func (ts *runsServer) onlineMachine(t *testing.T, mac, wf string) {
	t.Helper()
	ts.addImage(t, "job.img")
	body := fmt.Sprintf(`{"image":"job.img","boot_policy":"flash","provisioning_mode":"cijoe-online","cijoe_workflow_ref":%q,"ready_check":"none","cijoe_ssh_user":%q,"cijoe_ssh_port":%d}`,
		wf, ts.sshd.User, ts.sshd.Port)
	if r := ts.do(t, "PUT", "/machines/"+mac, strings.NewReader(body), ts.auth()); r.code/100 != 2 {
		t.Fatalf("PUT machine: %d %s", r.code, r.body)
	}
}

// flash runs mac's flash cycle from 127.0.0.1 to done (ready at done:
// its run starts) and returns the flash.
func (ts *runsServer) flash(t *testing.T, mac string) fleet.Flash {
	t.Helper()
	_, cycle := ts.boot(t, "127.0.0.1", mac)
	if r := ts.callFrom(t, "127.0.0.1", "POST", "/pxe/"+mac+"/done", cycle, nil); r.code != 200 {
		t.Fatalf("done: %d %s", r.code, r.body)
	}
	var m fleet.Machine
	ts.do(t, "GET", "/machines/"+mac, nil, ts.auth()).json(t, &m)
	if m.Flash == nil || m.Flash.Result != fleet.FlashReady {
		t.Fatalf("flash after done: %+v", m.Flash)
	}
	// Back to the disk: the next boot reflashes.
	ts.boot(t, "127.0.0.1", mac)
	return *m.Flash
}

// lastRun is mac's newest run.
func (ts *runsServer) lastRun(t *testing.T, mac string) fleet.Run {
	t.Helper()
	var p api.RunPage
	r := ts.do(t, "GET", "/machines/"+mac+"/runs?limit=1", nil, ts.auth())
	r.json(t, &p)
	if r.code != 200 || len(p.Runs) != 1 {
		t.Fatalf("runs of %s: %d %s", mac, r.code, r.body)
	}
	return p.Runs[0]
}

// waitRun waits for run id to satisfy ok (at most 60 s).
func (ts *runsServer) waitRun(t *testing.T, id int64, what string, ok func(fleet.Run) bool) fleet.Run {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var run fleet.Run
		ts.do(t, "GET", fmt.Sprintf("/runs/%d", id), nil, ts.auth()).json(t, &run)
		if ok(run) {
			return run
		}
		if time.Now().After(deadline) {
			t.Fatalf("run %d never became %s: %+v\nlog:\n%s", id, what, run, ts.runLog(t, id))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func ended(r fleet.Run) bool { return r.Result.Ended() }

func (ts *runsServer) runLog(t *testing.T, id int64) string {
	t.Helper()
	return string(ts.do(t, "GET", fmt.Sprintf("/runs/%d/log", id), nil, ts.auth()).body)
}

const twoSteps = `doc: writes a file on the target and reads it back
steps:
- name: write
  run: echo proof-%[1]s > %[2]s
- name: read
  run: cat %[2]s
`

const failSecond = `steps:
- name: first
  run: "true"
- name: second-fails
  run: exit 3
- name: never
  run: touch %s
`

// TestCijoeOnline: bty-web's key is made 0600 and never served; a
// workflow is checked on upload; a cijoe-online flash runs the workflow
// over real SSH once ready; a success is the baseline, drift shows when
// the record moves on; a failing run leaves the baseline; a reflash to
// known-good reruns the baseline's workflow; runs are history with
// their log and report.
func TestCijoeOnline(t *testing.T) {
	ts := startRunsServer(t, nil)
	const mac = "52:54:00:c1:00:01"

	// The key: 0600 in a 0700 directory, the private half never in an
	// answer.
	key, err := os.ReadFile(filepath.Join(ts.cfg.StateDir, "keys", "id_ed25519"))
	if err != nil || !strings.Contains(string(key), "OPENSSH PRIVATE KEY") {
		t.Fatalf("private key: %v %.40q", err, key)
	}
	for p, want := range map[string]os.FileMode{"keys": 0o700, "keys/id_ed25519": 0o600} {
		if fi, err := os.Stat(filepath.Join(ts.cfg.StateDir, p)); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: %v %v, want %v", p, fi.Mode().Perm(), err, want)
		}
	}

	// Workflows are checked on upload.
	for _, bad := range []struct{ name, body, want string }{
		{"w.yaml", "steps:\n- name: a\n  run: [unclosed\n", "line 3"},
		{"w.yaml", "doc: x\nsteps:\n- name: a\n  run: ok\n- name: b\n", "line 5"},
		{"w.yaml", "doc: no steps\n", "no steps"},
		{"../w.yaml", "steps: []\n", ""},
		{"w.txt", twoSteps, "yaml"},
	} {
		r := ts.putWorkflow(t, bad.name, bad.body)
		if r.code != 400 && r.code != 404 {
			t.Errorf("PUT %s %q: %d, want 400", bad.name, bad.body, r.code)
		} else if r.code == 400 && !strings.Contains(r.errMsg(t), bad.want) {
			t.Errorf("PUT %s %q: %q, want it to name %q", bad.name, bad.body, r.errMsg(t), bad.want)
		}
	}
	if r := ts.putWorkflow(t, "big.yaml", "steps:\n- name: a\n  run: x\n#"+strings.Repeat("x", fleet.MaxWorkflowBytes)); r.code != 413 {
		t.Errorf("oversized workflow: %d", r.code)
	}
	marker := filepath.Join(t.TempDir(), "marker")
	wf := fmt.Sprintf(twoSteps, "one", marker)
	if r := ts.putWorkflow(t, "two.yaml", wf); r.code != 201 {
		t.Fatalf("PUT two.yaml: %d %s", r.code, r.body)
	}

	// cijoe-online with a missing workflow is a field-level error.
	if r := ts.do(t, "PUT", "/machines/"+mac, strings.NewReader(`{"provisioning_mode":"cijoe-online","cijoe_workflow_ref":"nope.yaml"}`), ts.auth()); r.code != 400 ||
		!strings.Contains(r.errMsg(t), "cijoe_workflow_ref") || !strings.Contains(r.errMsg(t), "two.yaml") {
		t.Errorf("missing workflow: %d %s", r.code, r.body)
	}
	ts.onlineMachine(t, mac, "two.yaml")
	var list []api.Workflow
	ts.do(t, "GET", "/workflows", nil, ts.auth()).json(t, &list)
	if len(list) != 1 || list[0].SHA256 != fleet.SHA256Hex([]byte(wf)) || list[0].Size != int64(len(wf)) || len(list[0].Machines) != 1 {
		t.Errorf("GET /workflows: %+v", list)
	}
	if r := ts.do(t, "DELETE", "/workflows/two.yaml", nil, ts.auth()); r.code != 409 || !strings.Contains(r.errMsg(t), mac) {
		t.Errorf("DELETE a referenced workflow: %d %s", r.code, r.body)
	}

	// The flash becomes ready: the run follows and succeeds.
	f := ts.flash(t, mac)
	run := ts.waitRun(t, ts.lastRun(t, mac).ID, "ended", ended)
	log := ts.runLog(t, run.ID)
	if run.Result != fleet.RunSuccess || run.FlashID != f.ID || run.ExitStatus == nil || *run.ExitStatus != 0 || !run.Report || !run.KnownGood ||
		run.WorkflowSHA256 != fleet.SHA256Hex([]byte(wf)) || run.Image != "job.img" || run.User != ts.sshd.User {
		t.Fatalf("run: %+v\nlog:\n%s", run, log)
	}
	if !strings.Contains(log, "proof-one") || !strings.Contains(log, "# step read") {
		t.Errorf("the log lacks the read-back proof:\n%s", log)
	}
	cfg, err := os.ReadFile(filepath.Join(ts.cfg.StateDir, "runs", strconv.FormatInt(run.ID, 10), "config.toml"))
	if err != nil || !strings.Contains(string(cfg), fmt.Sprintf("port = %d", ts.sshd.Port)) || !strings.Contains(string(cfg), `key_filename = "`+filepath.Join(ts.cfg.StateDir, "keys", "id_ed25519")+`"`) {
		t.Errorf("config.toml: %v\n%s", err, cfg)
	}
	rep := ts.do(t, "GET", fmt.Sprintf("/runs/%d/report", run.ID), nil, ts.auth())
	if rep.code != 200 || !strings.Contains(string(rep.body), "read") || !strings.Contains(rep.header.Get("Content-Security-Policy"), "sandbox") {
		t.Errorf("report: %d %v %.200s", rep.code, rep.header, rep.body)
	}
	for _, p := range []string{"/runs/%d/output/..%%2F..%%2Fkeys%%2Fid_ed25519", "/runs/%d/output/../config.toml", "/runs/%d/output/%%2E%%2E/log"} {
		if r := ts.do(t, "GET", fmt.Sprintf(p, run.ID), nil, ts.auth()); r.code == 200 || strings.Contains(string(r.body), "PRIVATE KEY") {
			t.Errorf("GET %s: %d, must not escape cijoe-output", fmt.Sprintf(p, run.ID), r.code)
		}
	}
	for _, p := range []string{"/settings", "/state/export?secrets=1", "/machines/" + mac, fmt.Sprintf("/runs/%d/log", run.ID)} {
		if b := ts.do(t, "GET", p, nil, ts.auth()).body; strings.Contains(string(b), "PRIVATE KEY") || strings.Contains(string(b), strings.Split(string(key), "\n")[1]) {
			t.Errorf("GET %s carries the private key", p)
		}
	}
	var m fleet.Machine
	ts.do(t, "GET", "/machines/"+mac, nil, ts.auth()).json(t, &m)
	k := m.LastKnownGood
	if k == nil || k.RunID != run.ID || k.Image != "job.img" || k.Workflow != "two.yaml" || k.WorkflowSHA256 != run.WorkflowSHA256 ||
		m.LastWorkflowStatus == nil || *m.LastWorkflowStatus != fleet.WorkflowSuccess || len(m.Drift) != 0 {
		t.Fatalf("baseline: %+v, status %v, drift %+v", k, m.LastWorkflowStatus, m.Drift)
	}

	// The record moves on: its workflow's content and its seed drift.
	if r := ts.putWorkflow(t, "two.yaml", wf+"# changed\n"); r.code != 200 {
		t.Fatalf("replace two.yaml: %d", r.code)
	}
	if r := ts.do(t, "PUT", "/machines/"+mac, strings.NewReader(`{"user_data":"#cloud-config\nhostname: x\n"}`), ts.auth()); r.code != 200 {
		t.Fatalf("PUT user_data: %d %s", r.code, r.body)
	}
	ts.do(t, "GET", "/machines/"+mac, nil, ts.auth()).json(t, &m)
	fields := []string{}
	for _, d := range m.Drift {
		fields = append(fields, d.Field)
	}
	if strings.Join(fields, ",") != "user_data,workflow_sha256" {
		t.Errorf("drift: %+v, want user_data and workflow_sha256", m.Drift)
	}

	// A failing workflow: failed with the step's status, the baseline
	// unchanged, the log naming the step, later steps not run.
	never := filepath.Join(t.TempDir(), "never")
	if r := ts.putWorkflow(t, "fail.yaml", fmt.Sprintf(failSecond, never)); r.code != 201 {
		t.Fatalf("PUT fail.yaml: %d %s", r.code, r.body)
	}
	if r := ts.do(t, "PUT", "/machines/"+mac, strings.NewReader(`{"cijoe_workflow_ref":"fail.yaml"}`), ts.auth()); r.code != 200 {
		t.Fatal(r.code)
	}
	ts.flash(t, mac)
	bad := ts.waitRun(t, ts.lastRun(t, mac).ID, "ended", ended)
	blog := ts.runLog(t, bad.ID)
	if bad.Result != fleet.RunFailed || bad.ExitStatus == nil || *bad.ExitStatus != 3 || bad.KnownGood || !strings.Contains(bad.Reason, "exited 3") {
		t.Errorf("failing run: %+v", bad)
	}
	if !strings.Contains(blog, "second-fails") {
		t.Errorf("the failing run's log does not show the step:\n%s", blog)
	}
	if _, err := os.Stat(never); err == nil {
		t.Error("a step after the failing one ran")
	}
	ts.do(t, "GET", "/machines/"+mac, nil, ts.auth()).json(t, &m)
	if m.LastKnownGood == nil || m.LastKnownGood.RunID != run.ID || *m.LastWorkflowStatus != fleet.WorkflowFailed {
		t.Errorf("after the failing run: baseline %+v, status %v", m.LastKnownGood, *m.LastWorkflowStatus)
	}

	// Back to known-good: the baseline's image, seed and workflow (its
	// copy from run 1, not the replaced file).
	if r := ts.do(t, "POST", "/machines/"+mac+"/reflash", strings.NewReader(`{"known_good":true,"image":"job.img"}`), ts.auth()); r.code != 400 {
		t.Errorf("known_good with an image: %d", r.code)
	}
	var res api.ReflashResult
	r := ts.do(t, "POST", "/machines/"+mac+"/reflash", strings.NewReader(`{"known_good":true}`), ts.auth())
	r.json(t, &res)
	if r.code != 202 || res.Flash.KnownGoodRun != run.ID || res.Flash.Provisioning != fleet.ModeCijoeOnline || res.Flash.UserDataSHA256 != "" {
		t.Fatalf("reflash to known-good: %d %s", r.code, r.body)
	}
	os.Remove(marker)
	_, cycle := ts.boot(t, "127.0.0.1", mac)
	if ud := ts.callFrom(t, "127.0.0.1", "GET", "/pxe/"+mac+"/user-data", cycle, nil); ud.code != 200 || strings.Contains(string(ud.body), "hostname: x") {
		t.Errorf("the known-good flash's user-data: %d %q, want the baseline's (none: bty's minimal one)", ud.code, ud.body)
	}
	if r := ts.callFrom(t, "127.0.0.1", "POST", "/pxe/"+mac+"/done", cycle, nil); r.code != 200 {
		t.Fatal(r.code)
	}
	again := ts.waitRun(t, ts.lastRun(t, mac).ID, "ended", ended)
	if again.Result != fleet.RunSuccess || again.WorkflowSHA256 != run.WorkflowSHA256 || again.FlashID != res.Flash.ID {
		t.Errorf("the known-good run: %+v\n%s", again, ts.runLog(t, again.ID))
	}
	var page api.RunPage
	ts.do(t, "GET", "/machines/"+mac+"/runs", nil, ts.auth()).json(t, &page)
	if page.Total != 3 || len(page.Runs) != 3 || page.Runs[0].ID != again.ID || page.Runs[2].ID != run.ID {
		t.Errorf("history: %+v", page)
	}
}

// TestRunsBounded: at most max_runs run at once (the others queue);
// cancel stops a running or queued run; a run past its timeout is
// marked timeout; runs a previous bty-web left are marked interrupted;
// cijoe missing from PATH fails a run at once, and the settings say so.
func TestRunsBounded(t *testing.T) {
	ts := startRunsServer(t, nil)
	ts.srv.runs.timeout = func(m fleet.Machine) time.Duration {
		if m.Hostname == "short" {
			return 3 * time.Second
		}
		return time.Minute
	}
	if r := ts.do(t, "PUT", "/settings", strings.NewReader(`{"max_runs":0}`), ts.auth()); r.code != 400 {
		t.Errorf("max_runs 0: %d", r.code)
	}
	if r := ts.do(t, "PUT", "/settings", strings.NewReader(`{"max_runs":1}`), ts.auth()); r.code != 200 {
		t.Fatalf("max_runs 1: %d %s", r.code, r.body)
	}
	if r := ts.putWorkflow(t, "sleep.yaml", "steps:\n- name: sleep\n  run: sleep 30\n"); r.code != 201 {
		t.Fatal(r.code)
	}
	const a, b = "52:54:00:c1:00:0a", "52:54:00:c1:00:0b"
	ts.onlineMachine(t, a, "sleep.yaml")
	ts.onlineMachine(t, b, "sleep.yaml")
	ts.flash(t, a)
	ra := ts.waitRun(t, ts.lastRun(t, a).ID, "running", func(r fleet.Run) bool { return r.Result == fleet.RunRunning })
	ts.flash(t, b)
	rb := ts.lastRun(t, b)
	time.Sleep(500 * time.Millisecond)
	if rb = ts.waitRun(t, rb.ID, "queued", func(r fleet.Run) bool { return true }); rb.Result != fleet.RunQueued {
		t.Fatalf("with max_runs 1 the second run is %s, want queued", rb.Result)
	}
	// Cancel the running one: it ends cancelled and the queued one starts.
	if r := ts.do(t, "POST", fmt.Sprintf("/runs/%d/cancel", ra.ID), nil, ts.auth()); r.code != 200 {
		t.Fatalf("cancel: %d %s", r.code, r.body)
	}
	ra = ts.waitRun(t, ra.ID, "ended", ended)
	if ra.Result != fleet.RunCancelled {
		t.Errorf("cancelled run: %+v", ra)
	}
	if r := ts.do(t, "POST", fmt.Sprintf("/runs/%d/cancel", ra.ID), nil, ts.auth()); r.code != 409 {
		t.Errorf("cancel an ended run: %d", r.code)
	}
	rb = ts.waitRun(t, rb.ID, "running", func(r fleet.Run) bool { return r.Result != fleet.RunQueued })
	if rb.Result != fleet.RunRunning {
		t.Fatalf("the queued run after the cancel: %+v", rb)
	}
	ts.do(t, "POST", fmt.Sprintf("/runs/%d/cancel", rb.ID), nil, ts.auth())
	ts.waitRun(t, rb.ID, "ended", ended)

	// Timeout.
	if r := ts.do(t, "PUT", "/machines/"+a, strings.NewReader(`{"hostname":"short"}`), ts.auth()); r.code != 200 {
		t.Fatal(r.code)
	}
	ts.flash(t, a)
	rt := ts.waitRun(t, ts.lastRun(t, a).ID, "ended", ended)
	if rt.Result != fleet.RunTimeout || !strings.Contains(rt.Reason, "timeout") {
		t.Errorf("timed-out run: %+v", rt)
	}

	// A reflash of the machine stops its running run.
	if r := ts.do(t, "PUT", "/machines/"+a, strings.NewReader(`{"hostname":"long"}`), ts.auth()); r.code != 200 {
		t.Fatal(r.code)
	}
	ts.flash(t, a)
	rr := ts.waitRun(t, ts.lastRun(t, a).ID, "running", func(r fleet.Run) bool { return r.Result == fleet.RunRunning })
	if r := ts.do(t, "POST", "/machines/"+a+"/reflash", nil, ts.auth()); r.code != 202 {
		t.Fatalf("reflash: %d %s", r.code, r.body)
	}
	if rr = ts.waitRun(t, rr.ID, "ended", ended); rr.Result != fleet.RunCancelled || !strings.Contains(rr.Reason, "reflashed") {
		t.Errorf("the run of a reflashed machine: %+v", rr)
	}
	var m fleet.Machine
	ts.do(t, "GET", "/machines/"+a, nil, ts.auth()).json(t, &m)
	if m.Flash != nil && m.Flash.Running() {
		ts.do(t, "POST", fmt.Sprintf("/machines/%s/flashes/%d/cancel", a, m.Flash.ID), nil, ts.auth())
	}

	// A restart: runs left queued or running are interrupted.
	left, _, err := ts.st.SaveRun(context.Background(), fleet.Run{MAC: fleet.MustParseMAC(b), Result: fleet.RunRunning, CreatedAt: time.Now()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ts.srv.runs.start(context.Background())
	if r := ts.waitRun(t, left.ID, "ended", ended); r.Result != fleet.RunInterrupted {
		t.Errorf("after a restart: %+v", r)
	}

	// cijoe missing.
	ts.srv.cfg.Cijoe = filepath.Join(t.TempDir(), "cijoe")
	var st api.Settings
	ts.do(t, "GET", "/settings", nil, ts.auth()).json(t, &st)
	if st.Cijoe != "" || st.MaxRuns != 1 {
		t.Errorf("settings without cijoe: %+v", st)
	}
	ts.flash(t, a)
	rm := ts.waitRun(t, ts.lastRun(t, a).ID, "ended", ended)
	if rm.Result != fleet.RunFailed || !strings.Contains(rm.Reason, "not on bty-web's PATH") {
		t.Errorf("run without cijoe: %+v", rm)
	}
}

// TestRunsAuthAndUpload: every run and workflow route needs a login;
// the live env's upload of an offline cijoe log is taken only in the
// machine's flash cycle.
func TestRunsAuthAndUpload(t *testing.T) {
	ts := startServer(t, nil)
	for _, p := range []struct{ method, path string }{
		{"GET", "/workflows"}, {"GET", "/workflows/w.yaml"}, {"PUT", "/workflows/w.yaml"}, {"DELETE", "/workflows/w.yaml"},
		{"GET", "/machines/52:54:00:c1:00:02/runs"}, {"GET", "/runs/1"}, {"GET", "/runs/1/log"}, {"GET", "/runs/1/report"},
		{"GET", "/runs/1/output/report.html"}, {"POST", "/runs/1/cancel"},
	} {
		if r := ts.do(t, p.method, p.path, strings.NewReader("steps: []"), nil); r.code != 401 {
			t.Errorf("%s %s without a token: %d", p.method, p.path, r.code)
		}
	}
	const mac = "52:54:00:c1:00:02"
	ts.addImage(t, "job.img")
	if r := ts.do(t, "PUT", "/machines/"+mac, strings.NewReader(`{"image":"job.img","boot_policy":"flash"}`), ts.auth()); r.code != 201 {
		t.Fatal(r.code)
	}
	_, cycle := ts.boot(t, "127.0.0.1", mac)
	path := "/pxe/" + mac + "/runs?workflow=offline.yaml&exit=2"
	for name, c := range map[string]string{"no token": "", "a wrong token": strings.Repeat("0", 32)} {
		if r := ts.callFrom(t, "127.0.0.1", "POST", path, c, strings.NewReader("log")); r.code != 403 {
			t.Errorf("upload with %s: %d", name, r.code)
		}
	}
	if r := ts.callFrom(t, "127.0.0.1", "POST", "/pxe/"+mac+"/runs?workflow=offline.yaml&exit=x", cycle, strings.NewReader("log")); r.code != 400 {
		t.Errorf("upload with a bad exit: %d", r.code)
	}
	if r := ts.callFrom(t, "127.0.0.1", "POST", path, cycle, strings.NewReader("# step one\nboom\n")); r.code != 200 {
		t.Fatalf("upload: %d %s", r.code, r.body)
	}
	var p api.RunPage
	ts.do(t, "GET", "/machines/"+mac+"/runs", nil, ts.auth()).json(t, &p)
	if len(p.Runs) != 1 || p.Runs[0].Source != fleet.RunOffline || p.Runs[0].Result != fleet.RunFailed || *p.Runs[0].ExitStatus != 2 || p.Runs[0].KnownGood {
		t.Fatalf("uploaded run: %+v", p.Runs)
	}
	if log := ts.do(t, "GET", fmt.Sprintf("/runs/%d/log", p.Runs[0].ID), nil, ts.auth()); string(log.body) != "# step one\nboom\n" || log.header.Get("X-Log-Size") != "16" {
		t.Errorf("uploaded log: %q %v", log.body, log.header)
	}
	if log := ts.do(t, "GET", fmt.Sprintf("/runs/%d/log?offset=12", p.Runs[0].ID), nil, ts.auth()); string(log.body) != "oom\n" {
		t.Errorf("log from offset 12: %q", log.body)
	}
}

// TestCijoeOnlineScript: the flash script of a cijoe-online machine
// carries bty-web's key blob (and only then), and its seed is served
// even when the record has no user-data.
func TestCijoeOnlineScript(t *testing.T) {
	ts := startServer(t, nil)
	ts.addImage(t, "job.img")
	if r := ts.do(t, "PUT", "/workflows/w.yaml", strings.NewReader("steps:\n- name: a\n  run: \"true\"\n"), ts.auth()); r.code != 201 {
		t.Fatal(r.code)
	}
	var st api.Settings
	ts.do(t, "GET", "/settings", nil, ts.auth()).json(t, &st)
	blob := strings.Fields(st.SSHPublicKey)[1]
	const online, plain = "52:54:00:c1:00:03", "52:54:00:c1:00:04"
	for mac, mode := range map[string]string{online: "cijoe-online", plain: "cloud-init"} {
		body := fmt.Sprintf(`{"image":"job.img","boot_policy":"flash","provisioning_mode":%q,"cijoe_workflow_ref":"w.yaml","user_data":"#cloud-config\n"}`, mode)
		if mode == "cijoe-online" {
			body = `{"image":"job.img","boot_policy":"flash","provisioning_mode":"cijoe-online","cijoe_workflow_ref":"w.yaml"}`
		}
		if r := ts.do(t, "PUT", "/machines/"+mac, strings.NewReader(body), ts.auth()); r.code != 201 {
			t.Fatalf("PUT %s: %d %s", mac, r.code, r.body)
		}
	}
	script, cycle := ts.boot(t, "127.0.0.1", online)
	if !strings.Contains(script, "bty.ssh_key="+blob) || !strings.Contains(script, "bty.provisioning=cijoe-online") {
		t.Errorf("cijoe-online script lacks the key or the mode:\n%s", script)
	}
	if ud := ts.callFrom(t, "127.0.0.1", "GET", "/pxe/"+online+"/user-data", cycle, nil); ud.code != 200 || !strings.HasPrefix(string(ud.body), "#cloud-config\n") {
		t.Errorf("cijoe-online user-data without a record seed: %d %q", ud.code, ud.body)
	}
	if script, _ := ts.boot(t, "127.0.0.1", plain); strings.Contains(script, "bty.ssh_key") {
		t.Errorf("a cloud-init script carries bty-web's key:\n%s", script)
	}
}

// TestRunsPruned: past a machine's keepRunDirs newest runs, older run
// directories are emptied (their log answers 410) except the
// baseline's; their records stay.
func TestRunsPruned(t *testing.T) {
	ts := startServer(t, nil)
	const mac = "52:54:00:c1:00:05"
	if r := ts.do(t, "PUT", "/machines/"+mac, strings.NewReader(`{}`), ts.auth()); r.code != 201 {
		t.Fatal(r.code)
	}
	var ids []int64
	for i := 0; i < keepRunDirs+3; i++ {
		exit := 0
		r := fleet.Run{MAC: fleet.MustParseMAC(mac), Result: fleet.RunRunning, CreatedAt: time.Now()}.End(fleet.RunSuccess, "", &exit, time.Now())
		r.KnownGood = i == 1
		r, err := ts.srv.runs.save(r)
		if err != nil {
			t.Fatal(err)
		}
		ts.srv.runs.appendLog(r.ID, fmt.Sprintf("run %d\n", i))
		ids = append(ids, r.ID)
	}
	ts.srv.runs.prune(fleet.MustParseMAC(mac))
	for i, id := range ids {
		code := ts.do(t, "GET", fmt.Sprintf("/runs/%d/log", id), nil, ts.auth()).code
		want := 200
		if i < 3 && i != 1 {
			want = 410
		}
		if code != want {
			t.Errorf("run %d (the %d. oldest) log: %d, want %d", id, i+1, code, want)
		}
	}
	var p api.RunPage
	ts.do(t, "GET", "/machines/"+mac+"/runs?limit=1000", nil, ts.auth()).json(t, &p)
	if p.Total != keepRunDirs+3 {
		t.Errorf("records after pruning: %d", p.Total)
	}
}
