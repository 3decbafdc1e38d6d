package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/btyproject/bty/internal/api"
	"github.com/btyproject/bty/internal/fleet"
)

// addImage puts a small raw image named name into the catalog.
func (ts *testServer) addImage(t *testing.T, name string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(ts.cfg.ImageRoot, name), make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
}

// flashOf reads mac's flash id through the API.
func (ts *testServer) flashOf(t *testing.T, mac string, id int64) fleet.Flash {
	t.Helper()
	var f fleet.Flash
	r := ts.do(t, "GET", fmt.Sprintf("/machines/%s/flashes/%d", mac, id), nil, ts.auth())
	if r.code != 200 {
		t.Fatalf("GET flash %d: %d %s", id, r.code, r.body)
	}
	r.json(t, &f)
	return f
}

// TestReflashOnDemand is the one-shot reflash through the API, every
// phase checked: a machine whose policy is local and which has no image
// is reflashed with an image, host name and cloud-init seed for this one
// flash; the Redfish BMC is asked for a one-time PXE boot and powers the
// (off) machine on; a second request is a 409 naming the first; the PXE
// contact gets the flash with the overrides and bty.ready=phone-home;
// progress, done and the disk boot are phases; the phone-home is taken
// only with the flash's token and only while awaited; the record's
// policy and image are unchanged; a cancelled flash stops serving the
// live env.
func TestReflashOnDemand(t *testing.T) {
	bmc, actions := redfishBMC(t, "admin", "pw-reflash-1")
	ts := startServer(t, nil)
	ts.addImage(t, "job.img")
	const mac = "52:54:00:f1:a5:01"
	body, _ := json.Marshal(map[string]any{"boot_policy": "local", "provisioning_mode": "cloud-init",
		"user_data": "#cloud-config\nruncmd: [true]\n",
		"power":     map[string]string{"driver": "redfish", "address": bmc.URL, "username": "admin", "password": "pw-reflash-1"}})
	if r := ts.do(t, "PUT", "/machines/"+mac, strings.NewReader(string(body)), ts.auth()); r.code != 201 {
		t.Fatalf("PUT: %d %s", r.code, r.body)
	}
	post := func(body string) resp {
		return ts.do(t, "POST", "/machines/"+mac+"/reflash", strings.NewReader(body), ts.auth())
	}
	for body, want := range map[string]string{
		``:                           "no image assigned",
		`{"image": "missing.img"}`:   "not in the catalog",
		`{"image": "../etc/passwd"}`: "image",
		`{"image": "job.img", "hostname": "-bad-"}`:         "hostname",
		`{"image": "job.img", "provisioning": "sometimes"}`: "provisioning_mode",
	} {
		if r := post(body); r.code != 400 || !strings.Contains(r.errMsg(t), want) {
			t.Errorf("reflash %q: %d %s, want 400 with %q", body, r.code, r.body, want)
		}
	}
	if r := ts.do(t, "POST", "/machines/52:54:00:f1:a5:99/reflash", strings.NewReader(`{"image":"job.img"}`), ts.auth()); r.code != 404 {
		t.Errorf("unknown machine: %d", r.code)
	}
	if r := ts.do(t, "POST", "/machines/"+mac+"/reflash", strings.NewReader(`{"image":"job.img"}`), nil); r.code != 401 {
		t.Errorf("unauthenticated: %d", r.code)
	}

	r := post(`{"image": "job.img", "hostname": "ci-job-7"}`)
	var res api.ReflashResult
	if r.code != 202 {
		t.Fatalf("reflash: %d %s", r.code, r.body)
	}
	r.json(t, &res)
	id := res.Flash.ID
	if id == 0 || res.Power != "pending" || res.Flash.Trigger != fleet.TriggerDemand || res.Flash.Image != "job.img" ||
		res.Flash.Hostname != "ci-job-7" || res.Flash.ReadyCheck != fleet.ReadyPhoneHome || res.Flash.Phase != fleet.PhaseRequested {
		t.Fatalf("reflash answer: %+v", res)
	}
	if r := post(`{"image": "job.img"}`); r.code != 409 || !strings.Contains(r.errMsg(t), fmt.Sprintf("flash %d", id)) {
		t.Fatalf("second reflash: %d %s", r.code, r.body)
	}
	// The BMC: a one-time PXE boot, then on (the machine was off).
	deadline := time.Now().Add(20 * time.Second)
	f := ts.flashOf(t, mac, id)
	for f.Power == "" && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		f = ts.flashOf(t, mac, id)
	}
	if f.Power != "pxe-once+on" || f.PowerAt == nil || f.Phase != fleet.PhasePower || f.Result != fleet.FlashRunning {
		t.Fatalf("after the power action: %+v", f)
	}
	if got := actions(); !slices.Equal(got, []string{"boot:Pxe/Once", "On"}) {
		t.Fatalf("BMC actions %v, want a one-time PXE boot, then On", got)
	}

	// The PXE contact: the live env with this flash's overrides.
	script, cycle := ts.boot(t, "127.0.0.1", mac)
	for _, want := range []string{"bty.image_url=" + ts.URL + "/images/job.img", "bty.hostname=ci-job-7", "bty.ready=phone-home", "bty.provisioning=cloud-init"} {
		if !strings.Contains(script, want) {
			t.Errorf("the flash script lacks %q:\n%s", want, script)
		}
	}
	if cycle == "" {
		t.Fatalf("no cycle token in %s", script)
	}
	// Progress: only in the cycle.
	prog := `{"bytes_written": 1048576, "total_bytes": 4194304, "rate": 52428800}`
	if r := ts.callFrom(t, "127.0.0.2", "POST", "/pxe/"+mac+"/progress", cycle, strings.NewReader(prog)); r.code != 403 {
		t.Errorf("progress from another address: %d", r.code)
	}
	if r := ts.callFrom(t, "127.0.0.1", "POST", "/pxe/"+mac+"/progress", cycle, strings.NewReader(prog)); r.code != 200 {
		t.Fatalf("progress: %d %s", r.code, r.body)
	}
	// Ready before done: not awaited.
	if r := ts.callFrom(t, "127.0.0.1", "POST", "/pxe/"+mac+"/ready?cycle="+cycle, "", nil); r.code != 403 {
		t.Errorf("ready before done: %d", r.code)
	}
	f = ts.flashOf(t, mac, id)
	if f.Phase != fleet.PhaseFetch || f.FetchAt == nil || f.PXEAt == nil || f.BytesWritten != 1<<20 || f.TotalBytes != 4<<20 {
		t.Fatalf("after progress: %+v", f)
	}
	sum := strings.Repeat("ab", 32)
	if r := ts.callFrom(t, "127.0.0.1", "POST", "/pxe/"+mac+"/done", cycle,
		strings.NewReader(`{"image":"job.img","bytes_written":4194304,"total_bytes":4194304,"rate":60000000,"sha256":"`+sum+`","bytes_fetched":1048576,"chunks_total":1300,"chunks_zero":20,"chunks_equal":1250}`)); r.code != 200 {
		t.Fatalf("done: %d %s", r.code, r.body)
	}
	// The disk boot: the policy (local) again.
	if script, c := ts.boot(t, "127.0.0.1", mac); c != "" || strings.Contains(script, "bty.image_url") {
		t.Fatalf("the contact after done: %s", script)
	}
	f = ts.flashOf(t, mac, id)
	if f.Phase != fleet.PhaseDisk || f.DoneAt == nil || f.DiskAt == nil || f.Result != fleet.FlashRunning || f.BytesWritten != 4<<20 || f.ImageSHA256 != sum ||
		f.BytesFetched != 1<<20 || f.ChunksTotal != 1300 || f.ChunksZero != 20 || f.ChunksEqual != 1250 {
		t.Fatalf("after done and the disk boot: %+v", f)
	}
	// Phone-home: a wrong token, none, then the right one from the OS's
	// own address (a new lease); a second one is not awaited.
	for _, q := range []string{"?cycle=" + strings.Repeat("0", 32), "", "?cycle=short"} {
		if r := ts.callFrom(t, "127.0.0.3", "POST", "/pxe/"+mac+"/ready"+q, "", strings.NewReader("instance_id=x")); r.code != 403 {
			t.Errorf("ready %q: %d", q, r.code)
		}
	}
	// Another machine's flash token does not make this one ready.
	const other = "52:54:00:f1:a5:0f"
	if r := ts.do(t, "PUT", "/machines/"+other, strings.NewReader(`{"image":"job.img","boot_policy":"flash","ready_check":"tcp:22"}`), ts.auth()); r.code != 201 {
		t.Fatal(r.code)
	}
	_, otherCycle := ts.boot(t, "127.0.0.4", other)
	if r := ts.callFrom(t, "127.0.0.4", "POST", "/pxe/"+other+"/done", otherCycle, nil); r.code != 200 {
		t.Fatal(r.code)
	}
	if r := ts.callFrom(t, "127.0.0.4", "POST", "/pxe/"+mac+"/ready?cycle="+otherCycle, "", nil); r.code != 403 {
		t.Errorf("ready with another machine's token: %d", r.code)
	}
	if r := ts.callFrom(t, "127.0.0.3", "POST", "/pxe/"+mac+"/ready?cycle="+cycle, "", strings.NewReader("instance_id=x&hostname=ci-job-7")); r.code != 200 || strings.Join(strings.Fields(string(r.body)), "") != `{"status":"recorded"}` {
		t.Fatalf("phone-home: %d %s", r.code, r.body)
	}
	if r := ts.callFrom(t, "127.0.0.3", "POST", "/pxe/"+mac+"/ready?cycle="+cycle, "", nil); r.code != 403 {
		t.Errorf("a second phone-home: %d", r.code)
	}
	f = ts.flashOf(t, mac, id)
	if f.Result != fleet.FlashReady || f.ReadyAt == nil || f.EndedAt == nil || f.OSAddress != "127.0.0.3" || f.Phase != fleet.PhaseReady {
		t.Fatalf("after phone-home: %+v", f)
	}
	for p, at := range map[fleet.Phase]*time.Time{"power": f.PowerAt, "pxe": f.PXEAt, "fetch": f.FetchAt, "done": f.DoneAt, "disk": f.DiskAt, "ready": f.ReadyAt} {
		if at == nil || at.Before(f.RequestedAt) {
			t.Errorf("phase %s at %v, requested %v", p, at, f.RequestedAt)
		}
	}
	var m fleet.Machine
	ts.do(t, "GET", "/machines/"+mac, nil, ts.auth()).json(t, &m)
	if m.BootPolicy != fleet.PolicyLocal || m.Image != "" || m.Hostname != "" || m.Flash == nil || m.Flash.ID != id {
		t.Fatalf("the record after the reflash: policy %q image %q host %q flash %+v", m.BootPolicy, m.Image, m.Hostname, m.Flash)
	}
	metrics := string(ts.do(t, "GET", "/metrics", nil, nil).body)
	if !strings.Contains(metrics, `bty_flash_duration_seconds_count{result="ready"} 1`) {
		t.Errorf("metrics lack the ready flash:\n%s", grepLines(metrics, "bty_flash_duration"))
	}

	// Cancel: a new request, cancelled before the machine boots; its PXE
	// contact then gets the policy (local).
	r = post(`{"image": "job.img"}`)
	if r.code != 202 {
		t.Fatalf("reflash again: %d %s", r.code, r.body)
	}
	r.json(t, &res)
	cancel := fmt.Sprintf("/machines/%s/flashes/%d/cancel", mac, res.Flash.ID)
	if r := ts.do(t, "POST", cancel, nil, ts.auth()); r.code != 200 {
		t.Fatalf("cancel: %d %s", r.code, r.body)
	}
	if r := ts.do(t, "POST", cancel, nil, ts.auth()); r.code != 409 {
		t.Errorf("cancel twice: %d", r.code)
	}
	if script, _ := ts.boot(t, "127.0.0.1", mac); strings.Contains(script, "bty.image_url") {
		t.Fatalf("a cancelled reflash still serves the live env: %s", script)
	}
	if f := ts.flashOf(t, mac, res.Flash.ID); f.Result != fleet.FlashCancelled || f.EndedAt == nil {
		t.Fatalf("cancelled flash: %+v", f)
	}
	var page api.FlashPage
	ts.do(t, "GET", "/machines/"+mac+"/flashes", nil, ts.auth()).json(t, &page)
	if page.Total != 2 || len(page.Flashes) != 2 || page.Flashes[0].ID != res.Flash.ID || page.Flashes[1].ID != id {
		t.Fatalf("history: %+v", page)
	}
	// A delta flash's totals, from the done report, in the history.
	if h := page.Flashes[1]; h.BytesFetched != 1<<20 || h.ChunksTotal != 1300 || h.ChunksEqual != 1250 || page.Flashes[0].ChunksTotal != 0 {
		t.Errorf("history's delta totals: %+v", page.Flashes)
	}
	if ui := ts.do(t, "GET", "/ui/machines/"+mac, nil, ts.auth()); !strings.Contains(string(ui.body), "fetched 1.0 MiB, wrote 4.0 MiB, 1,250 of 1,280 data chunks equal") {
		t.Errorf("the machine page's history lacks the delta totals: %d\n%s", ui.code, grepLines(string(ui.body), "chunks equal"))
	}
	if r := ts.do(t, "GET", "/machines/52:54:00:f1:a5:99/flashes/"+fmt.Sprint(id), nil, ts.auth()); r.code != 404 {
		t.Errorf("another machine's flash: %d", r.code)
	}
	if r := ts.do(t, "GET", "/machines/"+mac+"/flashes?limit=0", nil, ts.auth()); r.code != 400 {
		t.Errorf("limit 0: %d", r.code)
	}
}

// TestReflashBMCRefuses: a BMC that refuses the password ends the
// reflash failed at once with the BMC's error (never the password), and
// the machine's PXE contacts are not turned into flashes by it.
func TestReflashBMCRefuses(t *testing.T) {
	bmc, actions := redfishBMC(t, "admin", "right-pw")
	ts := startServer(t, nil)
	ts.addImage(t, "job.img")
	const mac = "52:54:00:f1:a5:02"
	body := `{"image":"job.img","power":{"driver":"redfish","address":"` + bmc.URL + `","username":"admin","password":"wrong-pw-42"}}`
	if r := ts.do(t, "PUT", "/machines/"+mac, strings.NewReader(body), ts.auth()); r.code != 201 {
		t.Fatalf("PUT: %d %s", r.code, r.body)
	}
	r := ts.do(t, "POST", "/machines/"+mac+"/reflash", nil, ts.auth())
	if r.code != 202 {
		t.Fatalf("reflash: %d %s", r.code, r.body)
	}
	var res api.ReflashResult
	r.json(t, &res)
	deadline := time.Now().Add(30 * time.Second)
	f := ts.flashOf(t, mac, res.Flash.ID)
	for f.Running() && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		f = ts.flashOf(t, mac, res.Flash.ID)
	}
	if f.Result != fleet.FlashFailed || !strings.Contains(f.Reason, "credentials") || !strings.Contains(f.Reason, bmc.URL) || strings.Contains(f.Reason, "wrong-pw-42") {
		t.Fatalf("flash after a refused BMC: %+v", f)
	}
	if len(actions()) != 0 {
		t.Errorf("the BMC acted: %v", actions())
	}
	if script, _ := ts.boot(t, "127.0.0.1", mac); strings.Contains(script, "bty.image_url") {
		t.Fatalf("a failed reflash still serves the live env: %s", script)
	}
	// The password is on no surface the flash reaches.
	cookie := map[string]string{"Cookie": CookieName + "=" + ts.token}
	id := fmt.Sprint(res.Flash.ID)
	for what, body := range map[string][]byte{
		"the reflash answer":   r.body,
		"GET flashes":          ts.do(t, "GET", "/machines/"+mac+"/flashes", nil, ts.auth()).body,
		"GET flash":            ts.do(t, "GET", "/machines/"+mac+"/flashes/"+id, nil, ts.auth()).body,
		"the machine page":     ts.do(t, "GET", "/ui/machines/"+mac, nil, cookie).body,
		"the reflash page":     ts.do(t, "GET", "/ui/machines/"+mac+"/reflash", nil, cookie).body,
		"the dashboard":        ts.do(t, "GET", "/ui/dashboard", nil, cookie).body,
		"/metrics":             ts.do(t, "GET", "/metrics", nil, nil).body,
		"the plain export":     ts.do(t, "GET", "/state/export", nil, ts.auth()).body,
		"the machine's events": firstEvent(t, ts, mac),
	} {
		if len(body) == 0 {
			t.Errorf("%s: empty", what)
		}
		if strings.Contains(string(body), "wrong-pw-42") {
			t.Errorf("%s shows the BMC password", what)
		}
	}
}

// firstEvent reads the first event of the machine's own event stream
// (its record, sent on connect).
func firstEvent(t *testing.T, ts *testServer, mac string) []byte {
	t.Helper()
	br := ts.subscribe(t, "?snapshot=0&mac="+mac)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("the machine's event stream ended: %v", err)
		}
		if strings.HasPrefix(line, "data: ") {
			if !strings.Contains(line, `"mac":"`+mac+`"`) {
				t.Fatalf("the machine's stream sent another machine: %s", line)
			}
			return []byte(line)
		}
	}
}

// TestFlashReadyTCPAndTimeout: a policy flash whose ready check is a TCP
// port is ready when the port answers on the machine's address (the
// watcher's probe); one that never reports is marked timeout with the
// phase it was stuck in; a machine without power gets the note to
// reboot it by hand.
func TestFlashReadyTCPAndTimeout(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.FlashDeadline = 300 * time.Millisecond })
	ts.addImage(t, "job.img")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	port := l.Addr().(*net.TCPAddr).Port
	const mac, mac2 = "52:54:00:f1:a5:03", "52:54:00:f1:a5:04"
	body := fmt.Sprintf(`{"image":"job.img","boot_policy":"flash","ready_check":"tcp:%d","flash_deadline":"1h"}`, port)
	if r := ts.do(t, "PUT", "/machines/"+mac, strings.NewReader(body), ts.auth()); r.code != 201 {
		t.Fatalf("PUT: %d %s", r.code, r.body)
	}
	for _, bad := range []string{`{"ready_check":"tcp:0"}`, `{"ready_check":"ssh"}`, `{"flash_deadline":"3s"}`, `{"flash_deadline":"forever"}`} {
		if r := ts.do(t, "PUT", "/machines/"+mac, strings.NewReader(bad), ts.auth()); r.code != 400 {
			t.Errorf("PUT %s: %d", bad, r.code)
		}
	}
	_, cycle := ts.boot(t, "127.0.0.1", mac)
	if r := ts.callFrom(t, "127.0.0.1", "POST", "/pxe/"+mac+"/done", cycle, nil); r.code != 200 {
		t.Fatalf("done: %d", r.code)
	}
	ts.srv.checkFlashes(context.Background())
	var m fleet.Machine
	ts.do(t, "GET", "/machines/"+mac, nil, ts.auth()).json(t, &m)
	if f := m.Flash; f == nil || f.Trigger != fleet.TriggerPolicy || f.Result != fleet.FlashReady || f.OSAddress != "127.0.0.1" {
		t.Fatalf("tcp ready: %+v", f)
	}

	if r := ts.do(t, "PUT", "/machines/"+mac2, strings.NewReader(`{"image":"job.img"}`), ts.auth()); r.code != 201 {
		t.Fatal(r.code)
	}
	r := ts.do(t, "POST", "/machines/"+mac2+"/reflash", nil, ts.auth())
	var res api.ReflashResult
	r.json(t, &res)
	if r.code != 202 || res.Power != "none" || !strings.Contains(res.Note, "reboot it by other means") || res.Flash.Power != "none" {
		t.Fatalf("reflash without power: %d %+v", r.code, res)
	}
	time.Sleep(400 * time.Millisecond)
	ts.srv.checkFlashes(context.Background())
	f := ts.flashOf(t, mac2, res.Flash.ID)
	if f.Result != fleet.FlashTimeout || !strings.Contains(f.Reason, "stuck in phase requested") {
		t.Fatalf("timeout: %+v", f)
	}
	metrics := string(ts.do(t, "GET", "/metrics", nil, nil).body)
	if !strings.Contains(metrics, `bty_flash_duration_seconds_count{result="timeout"} 1`) {
		t.Errorf("metrics:\n%s", grepLines(metrics, "bty_flash_duration"))
	}
}

// TestProgressThrottled: progress reports from one address for one
// machine beyond a burst of 3 per 5 s are answered but never reach the
// store.
func TestProgressThrottled(t *testing.T) {
	ts := startServer(t, nil)
	ts.addImage(t, "job.img")
	const mac = "52:54:00:f1:a5:05"
	if r := ts.do(t, "PUT", "/machines/"+mac, strings.NewReader(`{"image":"job.img","boot_policy":"flash"}`), ts.auth()); r.code != 201 {
		t.Fatal(r.code)
	}
	_, cycle := ts.boot(t, "127.0.0.1", mac)
	for i := 1; i <= 10; i++ {
		if r := ts.callFrom(t, "127.0.0.1", "POST", "/pxe/"+mac+"/progress", cycle, strings.NewReader(fmt.Sprintf(`{"bytes_written":%d}`, i))); r.code != 200 {
			t.Fatalf("progress %d: %d", i, r.code)
		}
	}
	var m fleet.Machine
	ts.do(t, "GET", "/machines/"+mac, nil, ts.auth()).json(t, &m)
	if m.Flash == nil || m.Flash.BytesWritten != 3 {
		t.Fatalf("after 10 quick reports the flash says %+v, want the third's figures", m.Flash)
	}
}

// TestBMCGates: actions on one BMC run one at a time with a pause
// between them, without the pause delaying the caller; other BMCs do
// not wait.
func TestBMCGates(t *testing.T) {
	g := newBMCGates(200 * time.Millisecond)
	ctx := context.Background()
	start := time.Now()
	release, err := g.acquire(ctx, "10.0.0.9:623")
	if err != nil {
		t.Fatal(err)
	}
	release()
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("release held the caller %v", d)
	}
	other, err := g.acquire(ctx, "10.0.0.10:623")
	if err != nil || time.Since(start) > 100*time.Millisecond {
		t.Fatalf("another BMC waited: %v %v", time.Since(start), err)
	}
	other()
	again, err := g.acquire(ctx, "10.0.0.9:623")
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Errorf("the next session to the same BMC came %v after the last, want the 200ms pause", d)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := g.acquire(short, "10.0.0.9:623"); err == nil {
		t.Error("a second session while one is open was not made to wait")
	}
	again()
}
