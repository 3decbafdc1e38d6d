package server

import (
	"bytes"
	"context"
	"fmt"
	"html"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/store"
)

const uiWorkflow = "doc: proves <b>escaping</b>\nsteps:\n- name: hello\n  run: echo '<script>alert(1)</script>'\n"

// multipartForm posts fields and one file (name "file") as
// multipart/form-data, like the upload form without JavaScript.
func (ts *testServer) multipartForm(t *testing.T, path string, fields map[string]string, fileName string, file []byte, hdr map[string]string) formResp {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for k, v := range fields {
		if err := mw.WriteField(k, v); err != nil {
			t.Fatal(err)
		}
	}
	fw, err := mw.CreateFormFile("file", fileName)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fw.Write(file); err != nil {
		t.Fatal(err)
	}
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest("POST", ts.URL+path, &buf)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var b bytes.Buffer
	if _, err := b.ReadFrom(res.Body); err != nil {
		t.Fatal(err)
	}
	return formResp{res, b.String()}
}

// flashOf is the one-shot message a response leaves for the next page.
func flashOf(res formResp) string {
	for _, c := range res.Cookies() {
		if c.Name == flashCookie {
			msg, _ := url.QueryUnescape(c.Value)
			return msg
		}
	}
	return ""
}

// storedWorkflow is the workflow's bytes on disk (nil when none).
func storedWorkflow(t *testing.T, ts *testServer, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(ts.cfg.StateDir, "workflows", name))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestUIWorkflowPagesNeedSession(t *testing.T) {
	ts := startServer(t, nil)
	if _, err := ts.srv.workflows.put("kept.yaml", []byte(uiWorkflow)); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/ui/workflows", "/ui/workflows/kept.yaml", "/ui/machines/52:54:00:00:00:01/runs"} {
		res, err := noRedirect.Get(ts.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		want := "/ui/login?next=" + url.QueryEscape(p)
		if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != want {
			t.Errorf("GET %s without session: %d to %q, want 303 to %q", p, res.StatusCode, res.Header.Get("Location"), want)
		}
	}
	origin := map[string]string{"Origin": ts.URL}
	for _, p := range []string{"/ui/workflows", "/ui/workflows/kept.yaml/delete", "/ui/settings/max-runs", "/ui/runs/1/cancel",
		"/ui/machines/52:54:00:00:00:01/reflash-known-good"} {
		res := ts.form(t, p, url.Values{"name": {"new.yaml"}, "yaml": {uiWorkflow}, "max_runs": {"9"}}, origin)
		if res.StatusCode != http.StatusUnauthorized {
			t.Errorf("POST %s without session: %d, want 401", p, res.StatusCode)
		}
	}
	if storedWorkflow(t, ts, "new.yaml") != nil || storedWorkflow(t, ts, "kept.yaml") == nil {
		t.Error("a post without a session stored or deleted a workflow")
	}
	if n := ts.srv.maxRuns(t.Context()); n != defaultMaxRuns {
		t.Errorf("a post without a session set max_runs to %d", n)
	}
	// A cookie-authenticated post from another site changes nothing.
	evil := map[string]string{"Cookie": CookieName + "=" + ts.token, "Origin": "http://evil.example"}
	if res := ts.form(t, "/ui/workflows", url.Values{"name": {"new.yaml"}, "yaml": {uiWorkflow}}, evil); res.StatusCode != http.StatusForbidden {
		t.Errorf("cross-origin upload: %d, want 403", res.StatusCode)
	}
	if res := ts.form(t, "/ui/workflows/kept.yaml/delete", nil, evil); res.StatusCode != http.StatusForbidden {
		t.Errorf("cross-origin delete: %d, want 403", res.StatusCode)
	}
	if storedWorkflow(t, ts, "new.yaml") != nil || storedWorkflow(t, ts, "kept.yaml") == nil {
		t.Error("a cross-origin post stored or deleted a workflow")
	}
}

func TestUIWorkflows(t *testing.T) {
	ts := startServer(t, nil)
	cookie := map[string]string{"Cookie": CookieName + "=" + ts.token, "Origin": ts.URL}

	r := ts.do(t, "GET", "/ui/workflows", nil, cookie)
	if r.code != 200 || !strings.Contains(string(r.body), "No workflows yet") || !strings.Contains(string(r.body), `aria-current="page">Workflows</a>`) {
		t.Fatalf("empty workflows page: %d\n%s", r.code, r.body)
	}

	// Refused uploads: shown again with the problem, nothing stored.
	for _, c := range []struct {
		name, yaml, field, want string
		code                    int
	}{
		{"bad.yaml", "steps:\n- name: a\n  run: [unclosed\n", "workflow-yaml-error", "line 3", 400},
		{"bad.yaml", "doc: x\nsteps:\n- name: a\n  run: ok\n- name: b\n", "workflow-yaml-error", "line 5", 400},
		{"bad.yaml", "doc: no steps\n", "workflow-yaml-error", "no steps", 400},
		{"bad.txt", uiWorkflow, "workflow-name-error", ".yaml or .yml", 400},
		{"../bad.yaml", uiWorkflow, "workflow-name-error", "starts with a dot", 400},
		{"a/bad.yaml", uiWorkflow, "workflow-name-error", "letters, digits", 400},
		{"", uiWorkflow, "workflow-name-error", "needs a name", 400},
		{"big.yaml", "steps:\n- name: a\n  run: x\n#" + strings.Repeat("x", fleet.MaxWorkflowBytes), "workflow-yaml-error", "at most", 413},
	} {
		res := ts.form(t, "/ui/workflows", url.Values{"name": {c.name}, "yaml": {c.yaml}}, cookie)
		if res.StatusCode != c.code {
			t.Errorf("upload %q %.40q: %d, want %d", c.name, c.yaml, res.StatusCode, c.code)
			continue
		}
		i := strings.Index(res.body, `id="`+c.field+`"`)
		if i < 0 {
			t.Errorf("upload %q %.40q: no %s on the page", c.name, c.yaml, c.field)
			continue
		}
		if msg := res.body[i:min(len(res.body), i+400)]; !strings.Contains(msg, c.want) {
			t.Errorf("upload %q %.40q: %s says %q, want it to name %q", c.name, c.yaml, c.field, msg, c.want)
		}
		if !strings.Contains(res.body, `id="form-error"`) {
			t.Errorf("upload %q: no form error headline", c.name)
		}
		if c.code == 400 && !strings.Contains(res.body, html.EscapeString(c.yaml)) {
			t.Errorf("upload %q: the refused YAML is not shown again", c.name)
		}
	}
	if ws, err := ts.srv.workflows.list(); err != nil || len(ws) != 0 {
		t.Fatalf("refused uploads stored %v (%v)", ws, err)
	}

	// A file, no name: stored under the file's name, byte for byte.
	res := ts.multipartForm(t, "/ui/workflows", map[string]string{"name": "", "yaml": ""}, "prov.yaml", []byte(uiWorkflow), cookie)
	if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/ui/workflows/prov.yaml" {
		t.Fatalf("file upload: %d to %q\n%s", res.StatusCode, res.Header.Get("Location"), res.body)
	}
	if got := storedWorkflow(t, ts, "prov.yaml"); string(got) != uiWorkflow {
		t.Fatalf("stored %q, want %q", got, uiWorkflow)
	}
	// A file that is not a workflow: refused with its line, nothing stored.
	res = ts.multipartForm(t, "/ui/workflows", map[string]string{"name": "other.yaml"}, "x.yaml", []byte("steps:\n- run: ls\n"), cookie)
	if res.StatusCode != 400 || !strings.Contains(res.body, "line 2") || storedWorkflow(t, ts, "other.yaml") != nil {
		t.Errorf("bad file: %d, stored %q", res.StatusCode, storedWorkflow(t, ts, "other.yaml"))
	}
	// The textarea: CRLF from the browser stored as LF, under the name given.
	res = ts.form(t, "/ui/workflows", url.Values{"name": {"typed.yml"}, "yaml": {strings.ReplaceAll(uiWorkflow, "\n", "\r\n")}}, cookie)
	if res.StatusCode != http.StatusSeeOther || string(storedWorkflow(t, ts, "typed.yml")) != uiWorkflow {
		t.Fatalf("textarea upload: %d, stored %q", res.StatusCode, storedWorkflow(t, ts, "typed.yml"))
	}
	// The flash message names it; replacing says so.
	res = ts.form(t, "/ui/workflows", url.Values{"name": {"typed.yml"}, "yaml": {uiWorkflow + "# v2\n"}}, cookie)
	if flash := flashOf(res); !strings.HasPrefix(flash, "Replaced workflow typed.yml") {
		t.Errorf("replacing: flash %q", flash)
	}

	const mac = "52:54:00:00:0a:01"
	mode, ref := fleet.ModeCijoeOnline, "prov.yaml"
	if _, _, err := ts.srv.updateMachine(t.Context(), fleet.MustParseMAC(mac), fleet.MachineUpdate{ProvisioningMode: &mode, CijoeWorkflowRef: &ref}); err != nil {
		t.Fatal(err)
	}

	// The list: name, size, short sha with the full one as title, the
	// machine naming it as a link.
	sum := fleet.SHA256Hex([]byte(uiWorkflow))
	r = ts.do(t, "GET", "/ui/workflows", nil, cookie)
	body := string(r.body)
	row := body[strings.Index(body, `<tr data-name="prov.yaml">`):]
	row = row[:strings.Index(row, "</tr>")]
	for _, want := range []string{`href="/ui/workflows/prov.yaml"`, fmt.Sprintf(`title="%s">%s</code>`, sum, sum[:12]),
		fmt.Sprintf("%d B", len(uiWorkflow)), `href="/ui/machines/` + mac + `"`} {
		if !strings.Contains(row, want) {
			t.Errorf("the row of prov.yaml lacks %q:\n%s", want, row)
		}
	}

	// One workflow: its text escaped, never markup.
	r = ts.do(t, "GET", "/ui/workflows/prov.yaml", nil, cookie)
	body = string(r.body)
	if r.code != 200 || strings.Contains(body, "<script>alert") || strings.Contains(body, "<b>escaping") ||
		!strings.Contains(body, html.EscapeString(uiWorkflow)) || !strings.Contains(body, sum) {
		t.Errorf("workflow page: %d\n%s", r.code, body)
	}
	if r := ts.do(t, "GET", "/ui/workflows/nope.yaml", nil, cookie); r.code != 404 {
		t.Errorf("unknown workflow page: %d", r.code)
	}

	// Deleting one a machine names: 409 naming it, nothing deleted.
	res = ts.form(t, "/ui/workflows/prov.yaml/delete", nil, cookie)
	if res.StatusCode != http.StatusConflict || !strings.Contains(res.body, `id="workflow-error"`) || !strings.Contains(res.body, mac) {
		t.Errorf("deleting a used workflow: %d\n%s", res.StatusCode, res.body)
	}
	if storedWorkflow(t, ts, "prov.yaml") == nil {
		t.Fatal("a used workflow was deleted")
	}
	// An unused one goes.
	res = ts.form(t, "/ui/workflows/typed.yml/delete", nil, cookie)
	if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/ui/workflows" || storedWorkflow(t, ts, "typed.yml") != nil {
		t.Errorf("deleting typed.yml: %d to %q, still stored: %v", res.StatusCode, res.Header.Get("Location"), storedWorkflow(t, ts, "typed.yml") != nil)
	}
	if res := ts.form(t, "/ui/workflows/typed.yml/delete", nil, cookie); res.StatusCode != 404 {
		t.Errorf("deleting it again: %d, want 404", res.StatusCode)
	}
}

func TestUIMachineCijoeFields(t *testing.T) {
	ts := startServer(t, nil)
	cookie := map[string]string{"Cookie": CookieName + "=" + ts.token, "Origin": ts.URL}
	const mac = "52:54:00:00:0a:02"
	pol := fleet.PolicyLocal
	if _, _, err := store.PutMachine(t.Context(), ts.st, fleet.MustParseMAC(mac), fleet.MachineUpdate{BootPolicy: &pol}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.srv.workflows.put("flow.yaml", []byte(uiWorkflow)); err != nil {
		t.Fatal(err)
	}
	r := ts.do(t, "GET", "/ui/machines/"+mac, nil, cookie)
	body := string(r.body)
	for _, want := range []string{`list="cijoe_workflow_ref-options"`, `<datalist id="cijoe_workflow_ref-options"><option value="flow.yaml"></datalist>`,
		`id="cijoe_ssh_user"`, `id="cijoe_ssh_port" name="cijoe_ssh_port" type="number"`, `id="cijoe_timeout"`, `id="runs"`} {
		if !strings.Contains(body, want) {
			t.Errorf("machine page lacks %q", want)
		}
	}
	form := func(mode, ref, user, port, timeout string) url.Values {
		return url.Values{"image": {""}, "provisioning_mode": {mode}, "hostname": {""}, "cijoe_workflow_ref": {ref},
			"boot_policy": {"local"}, "cijoe_ssh_user": {user}, "cijoe_ssh_port": {port}, "cijoe_timeout": {timeout}}
	}
	get := func() fleet.Machine {
		m, err := ts.st.GetMachine(t.Context(), fleet.MustParseMAC(mac))
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	// Refused: each at its field, what was typed kept, nothing saved.
	for _, c := range []struct {
		form        url.Values
		field, want string
	}{
		{form("cijoe-online", "missing.yaml", "", "", ""), "cijoe_workflow_ref-error", "flow.yaml"},
		{form("cijoe-online", "", "", "", ""), "cijoe_workflow_ref-error", "needs a workflow"},
		{form("none", "", "", "abc", ""), "cijoe_ssh_port-error", "not a number"},
		{form("none", "", "", "70000", ""), "cijoe_ssh_port-error", "1-65535"},
		{form("none", "", "-root", "", ""), "cijoe_ssh_user-error", "login name"},
		{form("none", "", "", "", "5s"), "cijoe_timeout-error", "1m0s to 24h0m0s"},
	} {
		res := ts.form(t, "/ui/machines/"+mac, c.form, cookie)
		i := strings.Index(res.body, `id="`+c.field+`"`)
		if res.StatusCode != 400 || i < 0 {
			t.Errorf("%v: %d, %s shown: %v", c.form, res.StatusCode, c.field, i >= 0)
			continue
		}
		if msg := res.body[i:min(len(res.body), i+300)]; !strings.Contains(msg, c.want) {
			t.Errorf("%v: %s says %q, want %q", c.form, c.field, msg, c.want)
		}
		for _, k := range []string{"cijoe_ssh_port", "cijoe_ssh_user", "cijoe_timeout", "cijoe_workflow_ref"} {
			if v := c.form.Get(k); v != "" && !strings.Contains(res.body, `value="`+html.EscapeString(v)+`"`) {
				t.Errorf("%v: the refused form lost %s %q", c.form, k, v)
			}
		}
	}
	if m := get(); m.ProvisioningMode != "" || m.CijoeWorkflowRef != "" || m.CijoeSSHPort != 0 || m.CijoeSSHUser != "" || m.CijoeTimeout != "" {
		t.Fatalf("refused forms changed the machine: %+v", m)
	}
	// Saved.
	res := ts.form(t, "/ui/machines/"+mac, form("cijoe-online", "flow.yaml", "ubuntu", "2222", "45m"), cookie)
	if res.StatusCode != http.StatusSeeOther {
		t.Fatalf("save: %d\n%s", res.StatusCode, res.body)
	}
	m := get()
	if m.ProvisioningMode != fleet.ModeCijoeOnline || m.CijoeWorkflowRef != "flow.yaml" || m.CijoeSSHUser != "ubuntu" || m.CijoeSSHPort != 2222 || m.CijoeTimeout != "45m" {
		t.Fatalf("saved machine: %+v", m)
	}
	body = string(ts.do(t, "GET", "/ui/machines/"+mac, nil, cookie).body)
	for _, want := range []string{`value="ubuntu"`, `value="2222"`, `value="45m"`, "as ubuntu on port 2222, for at most 45m0s"} {
		if !strings.Contains(body, want) {
			t.Errorf("after saving, the page lacks %q", want)
		}
	}
	// Empty port: back to 22 (0). A form without the fields keeps them.
	if res := ts.form(t, "/ui/machines/"+mac, form("cijoe-online", "flow.yaml", "", "", ""), cookie); res.StatusCode != 303 || get().CijoeSSHPort != 0 || get().CijoeSSHUser != "" {
		t.Errorf("emptying: %d, %+v", res.StatusCode, get())
	}
	if res := ts.form(t, "/ui/machines/"+mac, url.Values{"image": {""}, "provisioning_mode": {"cijoe-online"}, "hostname": {"h1"},
		"cijoe_workflow_ref": {"flow.yaml"}, "boot_policy": {"local"}}, cookie); res.StatusCode != 303 || get().Hostname != "h1" {
		t.Errorf("an older form: %d, %+v", res.StatusCode, get())
	}
}

// saveRun stores run r of its machine as the runner does (the record
// following it, a successful known-good run its baseline) and writes its
// log.
func saveRun(t *testing.T, ts *testServer, r fleet.Run, log string) fleet.Run {
	t.Helper()
	out, _, err := ts.st.SaveRun(context.Background(), r, func(m fleet.Machine, r fleet.Run) fleet.Machine {
		return m.WithRun(r, ts.srv.runs.runDir(r.ID), m.UserData, m.MetaData, time.Now())
	})
	if err != nil {
		t.Fatal(err)
	}
	if log != "" {
		dir := ts.srv.runs.runDir(out.ID)
		if err := os.MkdirAll(dir, 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "log"), []byte(log), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func TestUIMachineRuns(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.Cijoe = "/nonexistent/bin/cijoe" })
	cookie := map[string]string{"Cookie": CookieName + "=" + ts.token, "Origin": ts.URL}
	const mac = "52:54:00:00:0a:03"
	ts.addImage(t, "job.img")
	if _, err := ts.srv.workflows.put("flow.yaml", []byte(uiWorkflow)); err != nil {
		t.Fatal(err)
	}
	img, mode, ref, pol := "job.img", fleet.ModeCijoeOnline, "flow.yaml", fleet.PolicyLocal
	if _, _, err := ts.srv.updateMachine(t.Context(), fleet.MustParseMAC(mac), fleet.MachineUpdate{Image: &img, ProvisioningMode: &mode, CijoeWorkflowRef: &ref, BootPolicy: &pol}); err != nil {
		t.Fatal(err)
	}
	page := func() string {
		t.Helper()
		r := ts.do(t, "GET", "/ui/machines/"+mac, nil, cookie)
		if r.code != 200 {
			t.Fatalf("machine page: %d", r.code)
		}
		return string(r.body)
	}
	body := page()
	// cijoe missing: the warning says runs fail and how to fix it.
	if !strings.Contains(body, `id="cijoe-missing"`) || !strings.Contains(body, "Runs of this machine will fail") ||
		!strings.Contains(body, "/nonexistent/bin/cijoe") || !strings.Contains(body, "BTY_CIJOE") {
		t.Errorf("no cijoe-missing warning:\n%s", body)
	}
	if !strings.Contains(body, "None yet: a successful cijoe-online run records one.") || strings.Contains(body, `id="reflash-known-good"`) ||
		!strings.Contains(body, "No workflow runs recorded.") {
		t.Errorf("no baseline, no runs: page shows otherwise")
	}
	// Reflash to known-good without one: the error, no flash.
	res := ts.form(t, "/ui/machines/"+mac+"/reflash-known-good", nil, cookie)
	if res.StatusCode != http.StatusConflict || !strings.Contains(res.body, `id="runs-error"`) || !strings.Contains(res.body, html.EscapeString(fleet.ErrNoKnownGood.Error())) {
		t.Errorf("reflash to known-good without a baseline: %d\n%s", res.StatusCode, res.body)
	}
	if m, _ := ts.st.GetMachine(t.Context(), fleet.MustParseMAC(mac)); m.Flash != nil {
		t.Fatalf("a refused reflash started flash %+v", m.Flash)
	}

	// A successful run becomes the baseline; a later one is running.
	now := time.Now().UTC().Add(-time.Minute)
	ended := now.Add(42 * time.Second)
	exit := 0
	sum := fleet.SHA256Hex([]byte(uiWorkflow))
	// The catalog's hash of the image, so the record matches its
	// baseline once the catalog has hashed it.
	imgSum := *waitCatalog(t, ts, "job.img").DecodedSHA256
	good := saveRun(t, ts, fleet.Run{MAC: fleet.MustParseMAC(mac), Source: fleet.RunOnline, Workflow: "flow.yaml", WorkflowSHA256: sum,
		Image: "job.img", ImageSHA256: imgSum, Result: fleet.RunSuccess, CreatedAt: now, StartedAt: &now, EndedAt: &ended,
		ExitStatus: &exit, Report: true, KnownGood: true}, "all good\n")
	var long strings.Builder
	long.WriteString("FIRST-LINE\n")
	for i := 0; long.Len() < 70<<10; i++ {
		fmt.Fprintf(&long, "line %d of the cijoe output <step>\n", i)
	}
	long.WriteString("LAST-LINE\n")
	live := saveRun(t, ts, fleet.Run{MAC: fleet.MustParseMAC(mac), Source: fleet.RunOnline, Workflow: "flow.yaml", Image: "job.img",
		Result: fleet.RunRunning, CreatedAt: now, StartedAt: &now}, long.String())

	body = page()
	kg := body[strings.Index(body, `id="known-good"`):]
	kg = kg[:strings.Index(kg, "</dl>")]
	for _, want := range []string{"job.img", fmt.Sprintf(`title="%s">%s</code>`, imgSum, imgSum[:12]), "flow.yaml",
		fmt.Sprintf(`title="%s">%s</code>`, sum, sum[:12]), fmt.Sprintf(`href="/runs/%d/log">run %d</a>`, good.ID, good.ID)} {
		if !strings.Contains(kg, want) {
			t.Errorf("the baseline lacks %q:\n%s", want, kg)
		}
	}
	if !strings.Contains(body, `id="reflash-known-good"`) {
		t.Error("no Reflash to known-good button with a baseline")
	}
	if strings.Contains(body, `id="drift"`) {
		t.Error("drift shown for a record that matches its baseline")
	}
	rowOf := func(body string, id int64) string {
		t.Helper()
		i := strings.Index(body, fmt.Sprintf(`<tr id="run-%d"`, id))
		if i < 0 {
			t.Fatalf("no row for run %d", id)
		}
		row := body[i:]
		return row[:strings.Index(row, "</tr>")]
	}
	g := rowOf(body, good.ID)
	for _, want := range []string{"success", "online", "42s", fmt.Sprintf(`href="/runs/%d/log"`, good.ID), fmt.Sprintf(`href="/runs/%d/report"`, good.ID), "known-good-mark", "<td>0</td>"} {
		if !strings.Contains(g, want) {
			t.Errorf("row of the good run lacks %q:\n%s", want, g)
		}
	}
	if strings.Contains(g, "run-cancel") {
		t.Error("an ended run has a Cancel button")
	}
	l := rowOf(body, live.ID)
	if !strings.Contains(l, fmt.Sprintf(`action="/ui/runs/%d/cancel"`, live.ID)) || strings.Contains(l, "/report") || strings.Contains(l, "known-good-mark") {
		t.Errorf("row of the running run:\n%s", l)
	}
	// The live log: its end (cut at a line), escaped, with the offset to
	// poll from.
	i := strings.Index(body, `<pre id="run-log"`)
	if i < 0 {
		t.Fatal("no pre#run-log for a running run")
	}
	pre := body[i : i+strings.Index(body[i:], "</pre>")]
	if !strings.Contains(pre, fmt.Sprintf(`data-offset="%d"`, long.Len())) || !strings.Contains(pre, fmt.Sprintf(`data-src="/runs/%d/log"`, live.ID)) ||
		!strings.Contains(pre, "LAST-LINE") || strings.Contains(pre, "FIRST-LINE") || strings.Contains(pre, "<step>") || !strings.Contains(pre, "&lt;step&gt;") {
		t.Errorf("pre#run-log: %.300s … %.100s", pre, pre[max(0, len(pre)-100):])
	}
	if n := len(html.UnescapeString(pre)); n > runLogTail+512 || n < runLogTail-512 {
		t.Errorf("pre#run-log holds %d bytes, want about %d", n, runLogTail)
	}
	// The page's JavaScript reads the log with the session cookie.
	if r := ts.do(t, "GET", fmt.Sprintf("/runs/%d/log?offset=%d", live.ID, long.Len()-10), nil, map[string]string{"Cookie": CookieName + "=" + ts.token}); r.code != 200 ||
		string(r.body) != "LAST-LINE\n" || r.header.Get("X-Run-Result") != "running" {
		t.Errorf("log with the cookie: %d %q %q", r.code, r.body, r.header.Get("X-Run-Result"))
	}
	// The fragment is the section alone.
	r := ts.do(t, "GET", "/ui/machines/"+mac+"/runs", nil, cookie)
	if r.code != 200 || !strings.HasPrefix(strings.TrimSpace(string(r.body)), `<section id="runs"`) || strings.Contains(string(r.body), "<html") {
		t.Errorf("runs fragment: %d %.200s", r.code, r.body)
	}
	if r := ts.do(t, "GET", "/ui/machines/52:54:00:00:0a:99/runs", nil, cookie); r.code != 404 {
		t.Errorf("runs fragment of an unknown machine: %d", r.code)
	}

	// Drift: the record's image moved on.
	ts.addImage(t, "new.img")
	img2 := "new.img"
	if _, _, err := ts.srv.updateMachine(t.Context(), fleet.MustParseMAC(mac), fleet.MachineUpdate{Image: &img2}); err != nil {
		t.Fatal(err)
	}
	body = page()
	if i := strings.Index(body, `id="drift"`); i < 0 || !strings.Contains(body[i:], `<tr data-field="image"><td>image</td><td><code class="hash" title="job.img">job.img</code></td><td><code class="hash" title="new.img">new.img</code></td></tr>`) {
		t.Errorf("no drift of the image shown")
	}

	// Cancel: bad id, unknown run, the running run, then again.
	if res := ts.form(t, "/ui/runs/x/cancel", nil, cookie); res.StatusCode != 400 {
		t.Errorf("cancel run x: %d", res.StatusCode)
	}
	if res := ts.form(t, "/ui/runs/9999/cancel", nil, cookie); res.StatusCode != 404 {
		t.Errorf("cancel run 9999: %d", res.StatusCode)
	}
	res = ts.form(t, "/ui/runs/"+strconv.FormatInt(live.ID, 10)+"/cancel", nil, cookie)
	if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/ui/machines/"+mac+"#runs" {
		t.Fatalf("cancel: %d to %q", res.StatusCode, res.Header.Get("Location"))
	}
	if got, err := ts.st.GetRun(t.Context(), live.ID); err != nil || got.Result != fleet.RunCancelled {
		t.Fatalf("after cancel: %+v %v", got, err)
	}
	res = ts.form(t, "/ui/runs/"+strconv.FormatInt(good.ID, 10)+"/cancel", nil, cookie)
	if f := flashOf(res); res.StatusCode != http.StatusSeeOther || !strings.Contains(f, "nothing was cancelled") {
		t.Errorf("cancel an ended run: %d, flash %q", res.StatusCode, f)
	}
	if got, _ := ts.st.GetRun(t.Context(), good.ID); got.Result != fleet.RunSuccess {
		t.Errorf("cancelling an ended run changed it to %s", got.Result)
	}
	if body := page(); strings.Contains(body, `id="run-log"`) || !strings.Contains(rowOf(body, live.ID), "cancelled") {
		t.Error("after the cancel: a live log is still shown, or the run does not show cancelled")
	}
}

// TestUIReflashKnownGood: the button reflashes to the baseline: its
// image, whatever the record names now.
func TestUIReflashKnownGood(t *testing.T) {
	ts := startServer(t, nil)
	cookie := map[string]string{"Cookie": CookieName + "=" + ts.token, "Origin": ts.URL}
	const mac = "52:54:00:00:0a:04"
	ts.addImage(t, "good.img")
	ts.addImage(t, "other.img")
	if _, err := ts.srv.workflows.put("flow.yaml", []byte(uiWorkflow)); err != nil {
		t.Fatal(err)
	}
	img, mode, ref := "good.img", fleet.ModeCijoeOnline, "flow.yaml"
	if _, _, err := ts.srv.updateMachine(t.Context(), fleet.MustParseMAC(mac), fleet.MachineUpdate{Image: &img, ProvisioningMode: &mode, CijoeWorkflowRef: &ref}); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	good := saveRun(t, ts, fleet.Run{MAC: fleet.MustParseMAC(mac), Source: fleet.RunOnline, Workflow: "flow.yaml", Image: "good.img",
		Result: fleet.RunSuccess, CreatedAt: now, StartedAt: &now, EndedAt: &now, KnownGood: true}, "ok\n")
	if err := os.WriteFile(filepath.Join(ts.srv.runs.runDir(good.ID), "workflow.yaml"), []byte(uiWorkflow), 0o640); err != nil {
		t.Fatal(err)
	}
	img = "other.img"
	if _, _, err := ts.srv.updateMachine(t.Context(), fleet.MustParseMAC(mac), fleet.MachineUpdate{Image: &img}); err != nil {
		t.Fatal(err)
	}
	res := ts.form(t, "/ui/machines/"+mac+"/reflash-known-good", nil, cookie)
	if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/ui/machines/"+mac {
		t.Fatalf("reflash to known-good: %d\n%s", res.StatusCode, res.body)
	}
	m, err := ts.st.GetMachine(t.Context(), fleet.MustParseMAC(mac))
	if err != nil || m.Flash == nil || m.Flash.Image != "good.img" || m.Flash.KnownGoodRun != good.ID {
		t.Fatalf("after the reflash: %+v %v", m.Flash, err)
	}
	// A second one while it runs: 409 naming the flash, shown on the page.
	res = ts.form(t, "/ui/machines/"+mac+"/reflash-known-good", nil, cookie)
	if res.StatusCode != http.StatusConflict || !strings.Contains(res.body, `id="runs-error"`) || !strings.Contains(res.body, "Nothing was started") {
		t.Errorf("a second reflash: %d", res.StatusCode)
	}
}

func TestUISettingsCijoe(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.Cijoe = "/nonexistent/bin/cijoe" })
	cookie := map[string]string{"Cookie": CookieName + "=" + ts.token, "Origin": ts.URL}
	body := string(ts.do(t, "GET", "/ui/settings", nil, cookie).body)
	pub, err := ts.srv.sshKey.publicKey()
	if err != nil || !strings.HasPrefix(pub, "ssh-ed25519 ") {
		t.Fatalf("public key %q %v", pub, err)
	}
	if !strings.Contains(html.UnescapeString(body), `readonly spellcheck="false" autocomplete="off">`+pub+`</textarea>`) || !strings.Contains(body, "authorized_keys") {
		t.Errorf("settings page does not show the public key %q", pub)
	}
	if strings.Contains(body, "PRIVATE KEY") {
		t.Error("settings page has the private key")
	}
	if !strings.Contains(body, `id="cijoe-path" class="warning"`) || !strings.Contains(body, "cijoe is not on bty-web&#39;s PATH (/nonexistent/bin/cijoe)") {
		t.Errorf("no warning that cijoe is missing")
	}
	if !strings.Contains(body, `id="max_runs" name="max_runs" type="number" min="1" max="64" step="1" value="4"`) {
		t.Errorf("max_runs field with the default 4 missing")
	}
	for _, bad := range []string{"0", "65", "abc", "", "-3"} {
		res := ts.form(t, "/ui/settings/max-runs", url.Values{"max_runs": {bad}}, cookie)
		if res.StatusCode != 400 || !strings.Contains(res.body, `id="max_runs-alert"`) || !strings.Contains(res.body, `value="`+bad+`"`) {
			t.Errorf("max_runs %q: %d", bad, res.StatusCode)
		}
	}
	if n := ts.srv.maxRuns(t.Context()); n != defaultMaxRuns {
		t.Fatalf("refused values set max_runs to %d", n)
	}
	res := ts.form(t, "/ui/settings/max-runs", url.Values{"max_runs": {"7"}}, cookie)
	if res.StatusCode != http.StatusSeeOther || ts.srv.maxRuns(t.Context()) != 7 {
		t.Fatalf("max_runs 7: %d, now %d", res.StatusCode, ts.srv.maxRuns(t.Context()))
	}
	if body := string(ts.do(t, "GET", "/ui/settings", nil, cookie).body); !strings.Contains(body, `value="7"`) {
		t.Error("the settings page does not show max_runs 7")
	}

	// With cijoe there: its path, no warning.
	ts2 := startServer(t, func(c *Config) { c.Cijoe = standIn(t) })
	body = string(ts2.do(t, "GET", "/ui/settings", nil, map[string]string{"Cookie": CookieName + "=" + ts2.token}).body)
	if !strings.Contains(body, `<p id="cijoe-path">cijoe: <code>`+standIn(t)+`</code>`) {
		t.Errorf("settings page does not name cijoe at %s", standIn(t))
	}
}
