package server

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/store"
)

// noRedirect is a client that shows redirects instead of following them.
var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// formResp is a posted form's answer.
type formResp struct {
	*http.Response
	body string
}

func (ts *testServer) form(t *testing.T, path string, vals url.Values, hdr map[string]string) formResp {
	t.Helper()
	req, err := http.NewRequest("POST", ts.URL+path, strings.NewReader(vals.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return formResp{res, string(b)}
}

func TestSafeNext(t *testing.T) {
	for in, want := range map[string]string{
		"":                          "/ui/dashboard",
		"/ui/machines?q=a":          "/ui/machines?q=a",
		"//evil.example/ui/":        "/ui/dashboard",
		"https://evil.example/ui/x": "/ui/dashboard",
		"/ui/\\evil":                "/ui/dashboard",
		"/healthz":                  "/ui/dashboard",
		"/ui/login?next=/ui/x":      "/ui/dashboard",
		"/ui/machines\r\nX: y":      "/ui/dashboard",
	} {
		if got := safeNext(in); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestUILoginForm(t *testing.T) {
	ts := startServer(t, nil)
	origin := map[string]string{"Origin": ts.URL}

	res := ts.form(t, "/ui/login", url.Values{"password": {"wrong"}}, origin)
	if res.StatusCode != http.StatusUnauthorized || len(res.Cookies()) != 0 {
		t.Fatalf("wrong password: %d, cookies %v", res.StatusCode, res.Cookies())
	}
	// A login form posted from another site is refused (login CSRF).
	res = ts.form(t, "/ui/login", url.Values{"password": {testPassword}}, map[string]string{"Origin": "http://evil.example"})
	if res.StatusCode != http.StatusForbidden || len(res.Cookies()) != 0 {
		t.Fatalf("foreign origin login: %d, cookies %v", res.StatusCode, res.Cookies())
	}
	// Success: an HttpOnly, SameSite=Strict cookie and a redirect to a
	// local next only.
	res = ts.form(t, "/ui/login", url.Values{"password": {testPassword}, "next": {"//evil.example/"}}, origin)
	if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/ui/dashboard" {
		t.Fatalf("login: %d to %q", res.StatusCode, res.Header.Get("Location"))
	}
	var c *http.Cookie
	for _, k := range res.Cookies() {
		if k.Name == CookieName {
			c = k
		}
	}
	if c == nil || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/" || c.MaxAge <= 0 {
		t.Fatalf("session cookie %+v", c)
	}
	// The cookie opens the API and the pages.
	if r := ts.do(t, "GET", "/machines", nil, map[string]string{"Cookie": CookieName + "=" + c.Value}); r.code != 200 {
		t.Fatalf("GET /machines with the UI cookie: %d", r.code)
	}
	// The rate limit covers the form too.
	var last int
	for range 12 {
		last = ts.form(t, "/ui/login", url.Values{"password": {"nope"}}, origin).StatusCode
	}
	if last != http.StatusTooManyRequests {
		t.Fatalf("12 more attempts: last status %d, want 429", last)
	}
}

func TestUIPagesNeedSession(t *testing.T) {
	ts := startServer(t, nil)
	for _, p := range []string{"/ui/dashboard", "/ui/machines?q=a", "/ui/machines/52:54:00:00:00:01", "/ui/images", "/ui/boot", "/ui/settings"} {
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
	res, err := noRedirect.Get(ts.URL + "/ui")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.Header.Get("Location") != "/ui/dashboard" {
		t.Errorf("/ui redirects to %q", res.Header.Get("Location"))
	}
	// Posts without a session change nothing.
	mac := "52:54:00:00:00:01"
	pol := fleet.PolicyTUI
	if _, _, err := store.PutMachine(t.Context(), ts.st, fleet.MustParseMAC(mac), fleet.MachineUpdate{BootPolicy: &pol}, time.Now()); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/ui/machines/" + mac + "/delete", "/ui/settings/revoke-all", "/ui/machines/bulk"} {
		res := ts.form(t, p, url.Values{"mac": {mac}, "action": {"policy"}, "policy": {"flash"}}, map[string]string{"Origin": ts.URL})
		if res.StatusCode != http.StatusUnauthorized {
			t.Errorf("POST %s without session: %d, want 401", p, res.StatusCode)
		}
	}
	if m, err := ts.st.GetMachine(t.Context(), fleet.MustParseMAC(mac)); err != nil || m.BootPolicy != fleet.PolicyTUI {
		t.Fatalf("machine after refused posts: %+v, %v", m, err)
	}
}

func TestUIEscapesAndValidates(t *testing.T) {
	ts := startServer(t, nil)
	cookie := map[string]string{"Cookie": CookieName + "=" + ts.token, "Origin": ts.URL}
	// An image whose name is markup: listed escaped, never as markup.
	evil := `"><img src=x onerror=alert(1)>.img`
	if err := os.WriteFile(filepath.Join(ts.cfg.ImageRoot, evil), make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	mac := "52:54:00:00:00:07"
	img := evil
	if _, _, err := store.PutMachine(t.Context(), ts.st, fleet.MustParseMAC(mac), fleet.MachineUpdate{Image: &img}, time.Now()); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/ui/images", "/ui/machines", "/ui/machines/" + mac} {
		r := ts.do(t, "GET", p, nil, cookie)
		if r.code != 200 {
			t.Fatalf("GET %s: %d", p, r.code)
		}
		if strings.Contains(string(r.body), "<img src=x") || !strings.Contains(string(r.body), "&lt;img src=x onerror=alert(1)&gt;.img") {
			t.Errorf("%s: the image name is not escaped", p)
		}
		if csp := r.header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
			t.Errorf("%s: CSP %q", p, csp)
		}
	}
	// Every refused field is reported at once and nothing is saved.
	res := ts.form(t, "/ui/machines/"+mac, url.Values{"hostname": {"-bad"}, "boot_policy": {"sometimes"},
		"provisioning_mode": {"magic"}, "image": {"../etc/passwd"}}, cookie)
	if res.StatusCode != http.StatusBadRequest {
		t.Fatalf("bad form: %d", res.StatusCode)
	}
	m, _ := ts.st.GetMachine(t.Context(), fleet.MustParseMAC(mac))
	if m.Image != evil || m.BootPolicy != fleet.PolicyLocal || m.Hostname != "" {
		t.Fatalf("a refused form changed the machine: %+v", m)
	}
	for _, id := range []string{`id="hostname-error"`, `id="boot_policy-error"`, `id="provisioning_mode-error"`, `id="image-error"`} {
		if !strings.Contains(res.body, id) {
			t.Errorf("the refused form does not show %s", id)
		}
	}
	if !strings.Contains(res.body, `value="-bad"`) {
		t.Error("the refused form lost what the user typed")
	}
	// A bulk change with an unknown policy changes nothing.
	res = ts.form(t, "/ui/machines/bulk", url.Values{"mac": {mac}, "action": {"policy"}, "policy": {"sometimes"}}, cookie)
	if res.StatusCode != http.StatusSeeOther {
		t.Fatalf("bulk: %d", res.StatusCode)
	}
	if m, _ := ts.st.GetMachine(t.Context(), fleet.MustParseMAC(mac)); m.BootPolicy != fleet.PolicyLocal {
		t.Fatalf("bulk with a bad policy changed it to %q", m.BootPolicy)
	}
	// Unknown machine and image: 404 pages, bad MAC: 400.
	for p, want := range map[string]int{"/ui/machines/52:54:00:00:00:99": 404, "/ui/machines/zz": 400, "/ui/images/nope.img/delete": 404, "/ui/images/..%2Fx/delete": 400} {
		if r := ts.do(t, "GET", p, nil, cookie); r.code != want {
			t.Errorf("GET %s: %d, want %d", p, r.code, want)
		}
	}
}

func TestUIStaticAssets(t *testing.T) {
	ts := startServer(t, nil)
	for _, p := range []string{"/ui/static/vendor/htmx.min.js", "/ui/static/vendor/htmx-ext-sse.min.js", "/ui/static/vendor/pico.min.css", "/ui/static/app.js", "/ui/static/app.css"} {
		r := ts.do(t, "GET", p, nil, nil)
		if r.code != 200 || len(r.body) < 500 || r.header.Get("ETag") == "" {
			t.Fatalf("GET %s: %d, %d bytes, ETag %q", p, r.code, len(r.body), r.header.Get("ETag"))
		}
		if r2 := ts.do(t, "GET", p, nil, map[string]string{"If-None-Match": r.header.Get("ETag")}); r2.code != http.StatusNotModified {
			t.Errorf("GET %s with its ETag: %d, want 304", p, r2.code)
		}
	}
	if r := ts.do(t, "GET", "/ui/static/../../server.go", nil, nil); r.code == 200 {
		t.Fatal("static handler served a path outside its directory")
	}
	// The vendored files are the ones scripts/vendor-web.sh pinned.
	sums, err := os.ReadFile("web/static/vendor/SHA256SUMS")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(sums)), "\n") {
		f := strings.Fields(line)
		r := ts.do(t, "GET", "/ui/static/vendor/"+f[1], nil, nil)
		if got := fmt.Sprintf("%x", sha256.Sum256(r.body)); got != f[0] {
			t.Errorf("%s served with sha256 %s, SHA256SUMS says %s", f[1], got, f[0])
		}
	}
}

func TestUIDashboardShowsErrors(t *testing.T) {
	ts := startServer(t, nil)
	cookie := map[string]string{"Cookie": CookieName + "=" + ts.token}
	// A failed upload is logged as a warning and shows on the dashboard.
	ts.srv.log.Warn("proxy-DHCP: test warning", "iface", "eth9")
	r := ts.do(t, "GET", "/ui/dashboard", nil, cookie)
	body := string(r.body)
	for _, want := range []string{"proxy-DHCP: test warning", `iface=&#34;eth9&#34;`, `id="count-machines">0<`, "bty-live-x86_64.vmlinuz"} {
		if !strings.Contains(body, want) {
			t.Errorf("dashboard lacks %q", want)
		}
	}
}

// TestUISeedForm: the machine form's user-data textarea: a #cloud-config
// that is not YAML is refused with its line next to the field, the text
// typed is kept and nothing is saved; a good one is saved with LF line
// ends, and an empty textarea clears it.
func TestUISeedForm(t *testing.T) {
	ts := startServer(t, nil)
	cookie := map[string]string{"Cookie": CookieName + "=" + ts.token, "Origin": ts.URL}
	mac := "52:54:00:00:5e:0a"
	if _, _, err := store.PutMachine(t.Context(), ts.st, fleet.MustParseMAC(mac), fleet.MachineUpdate{}, time.Now()); err != nil {
		t.Fatal(err)
	}
	base := url.Values{"boot_policy": {"flash"}, "provisioning_mode": {"cloud-init"}, "hostname": {"n10"}}
	with := func(ud, md string) url.Values {
		v := url.Values{}
		for k, vs := range base {
			v[k] = vs
		}
		v.Set("user_data", ud)
		v.Set("meta_data", md)
		return v
	}
	res := ts.form(t, "/ui/machines/"+mac, with("#cloud-config\r\nruncmd:\r\n  - [a,\r\n", ""), cookie)
	if res.StatusCode != http.StatusBadRequest || !strings.Contains(res.body, `id="user_data-error"`) || !strings.Contains(res.body, "line 3") {
		t.Fatalf("bad user-data: %d, error shown %v", res.StatusCode, strings.Contains(res.body, "user_data-error"))
	}
	if !strings.Contains(res.body, "  - [a,\n") {
		t.Error("the refused form lost the user-data typed")
	}
	if m, _ := ts.st.GetMachine(t.Context(), fleet.MustParseMAC(mac)); m.UserData != "" || m.BootPolicy != fleet.PolicyLocal {
		t.Fatalf("a refused form saved: %+v", m)
	}
	res = ts.form(t, "/ui/machines/"+mac, with("#cloud-config", "instance-id: [\r\n"), cookie)
	if res.StatusCode != http.StatusBadRequest || !strings.Contains(res.body, `id="meta_data-error"`) {
		t.Fatalf("bad meta-data: %d", res.StatusCode)
	}
	good := "#cloud-config\r\nhostname: n10\r\n"
	if res = ts.form(t, "/ui/machines/"+mac, with(good, ""), cookie); res.StatusCode != http.StatusSeeOther {
		t.Fatalf("good user-data: %d %s", res.StatusCode, res.body)
	}
	if m, _ := ts.st.GetMachine(t.Context(), fleet.MustParseMAC(mac)); m.UserData != "#cloud-config\nhostname: n10\n" || m.MetaData != "" {
		t.Fatalf("saved %q %q", m.UserData, m.MetaData)
	}
	page := string(ts.do(t, "GET", "/ui/machines/"+mac, nil, cookie).body)
	if !strings.Contains(page, "user-data 28 bytes") || !strings.Contains(page, ">#cloud-config\nhostname: n10\n</textarea>") {
		t.Errorf("the machine page does not show the saved user-data:\n%s", page)
	}
	if res = ts.form(t, "/ui/machines/"+mac, with("  \r\n", ""), cookie); res.StatusCode != http.StatusSeeOther {
		t.Fatalf("clearing: %d", res.StatusCode)
	}
	if m, _ := ts.st.GetMachine(t.Context(), fleet.MustParseMAC(mac)); m.UserData != "" {
		t.Fatalf("not cleared: %q", m.UserData)
	}
}

// putFlash makes f the latest flash of the known machine mac (ID 0: a
// new record in the history) and returns it as stored.
func putFlash(t *testing.T, ts *testServer, mac fleet.MAC, f fleet.Flash) fleet.Flash {
	t.Helper()
	m, err := ts.st.ModifyMachine(t.Context(), mac, func(m fleet.Machine, found bool) (fleet.Machine, error) {
		if !found {
			return m, store.ErrNotFound
		}
		f.MAC = mac
		m.Flash = &f
		return m, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return *m.Flash
}

// flashMessage is the one-shot message a UI answer leaves for the next
// page ("" when none).
func flashMessage(r formResp) string {
	for _, c := range r.Cookies() {
		if c.Name == flashCookie {
			v, _ := url.QueryUnescape(c.Value)
			return v
		}
	}
	return ""
}

var (
	tagRE   = regexp.MustCompile(`<[^>]*>`)
	punctRE = regexp.MustCompile(` ([,.;:)])`)
)

// pageText is an HTML page's text: tags dropped, white space collapsed
// (none before punctuation).
func pageText(s string) string {
	return punctRE.ReplaceAllString(strings.Join(strings.Fields(html.UnescapeString(tagRE.ReplaceAllString(s, " "))), " "), "$1")
}

// between is the part of s from the first start to the next end after
// it ("" when either is missing).
func between(s, start, end string) string {
	_, after, ok := strings.Cut(s, start)
	if !ok {
		return ""
	}
	in, _, ok := strings.Cut(after, end)
	if !ok {
		return ""
	}
	return in
}

// TestUIFlashHistory: the machine page shows its latest flash (result,
// phase, trigger, image, how it was started, each phase as an offset
// from the request) and its history, newest first, 20 a page with a
// link to the older ones; a flash that did not end ready shows its
// reason; a running one its progress and a cancel button.
func TestUIFlashHistory(t *testing.T) {
	ts := startServer(t, nil)
	cookie := map[string]string{"Cookie": CookieName + "=" + ts.token, "Origin": ts.URL}
	mac := fleet.MustParseMAC("52:54:00:f1:00:01")
	host := "h1"
	if _, _, err := store.PutMachine(t.Context(), ts.st, mac, fleet.MachineUpdate{Hostname: &host}, time.Now()); err != nil {
		t.Fatal(err)
	}
	page := func(q string) string {
		r := ts.do(t, "GET", "/ui/machines/"+mac.String()+q, nil, cookie)
		if r.code != 200 {
			t.Fatalf("GET the machine page%s: %d", q, r.code)
		}
		return string(r.body)
	}
	if p := page(""); !strings.Contains(p, "Not flashed through bty-web yet") || strings.Contains(p, `id="flash-history"`) ||
		!strings.Contains(p, `href="/ui/machines/`+mac.String()+`/reflash"`) {
		t.Fatal("a machine never flashed: no empty state, or a history table, or no reflash button")
	}
	t0 := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *time.Time { v := t0.Add(d); return &v }
	// 22 older flashes: image old-N.img, alternately failed and ready.
	for i := 1; i <= 22; i++ {
		f := fleet.Flash{Trigger: fleet.TriggerPolicy, Image: fmt.Sprintf("old-%d.img", i), Result: fleet.FlashReady, Phase: fleet.PhaseReady,
			RequestedAt: t0.Add(-time.Duration(23-i) * time.Hour), BytesWritten: int64(i) << 20}
		if i%2 == 1 {
			f.Result, f.Phase, f.Reason = fleet.FlashFailed, fleet.PhaseFetch, fmt.Sprintf("disk error %d", i)
		}
		end := f.RequestedAt.Add(time.Duration(i) * time.Minute)
		f.EndedAt = &end
		putFlash(t, ts, mac, f)
	}
	last := putFlash(t, ts, mac, fleet.Flash{Trigger: fleet.TriggerDemand, Image: "deb.img", Result: fleet.FlashReady, Phase: fleet.PhaseReady,
		Power: "pxe-once+cycle", RequestedAt: t0, PowerAt: at(3 * time.Second), PXEAt: at(41 * time.Second), FetchAt: at(62 * time.Second),
		DoneAt: at(250 * time.Second), DiskAt: at(280 * time.Second), ReadyAt: at(315 * time.Second), EndedAt: at(315 * time.Second),
		BytesWritten: 3 << 30, TotalBytes: 3 << 30, ReadyCheck: fleet.ReadyTCP22})

	p := page("")
	latest := pageText(between(p, `id="flash-latest"`, `id="reflash-link"`))
	for _, want := range []string{fmt.Sprintf("Flash %d: ready", last.ID), "phase reached ready, after 5m15s",
		"Trigger demand", "Image deb.img", "one-time PXE boot and power cycle by the BMC",
		"power +3s PXE +41s fetch +1m02s done +4m10s disk +4m40s ready +5m15s", "Written 3.0 GiB of data (image 3.0 GiB; the rest zeroed or sparse)"} {
		if !strings.Contains(latest, want) {
			t.Errorf("the latest flash lacks %q:\n%s", want, latest)
		}
	}
	if strings.Contains(latest, "Reason") || strings.Contains(p, `id="flash-cancel"`) {
		t.Error("a ready flash shows a reason or a cancel button")
	}
	rows := regexp.MustCompile(`(?s)<tr data-flash="(\d+)">(.*?)</tr>`).FindAllStringSubmatch(between(p, `id="flash-history"`, `</table>`), -1)
	if len(rows) != 20 {
		t.Fatalf("the history shows %d rows, want 20", len(rows))
	}
	if rows[0][1] != fmt.Sprint(last.ID) || rows[19][1] != fmt.Sprint(last.ID-19) {
		t.Errorf("history rows %s..%s, want %d..%d (newest first)", rows[0][1], rows[19][1], last.ID, last.ID-19)
	}
	// Flash 21 (the second row): failed, with its reason, duration, bytes.
	if got, want := pageText(rows[2][2]), fmt.Sprintf("%d 2026-11-30 08:00:00 UTC policy old-21.img failed fetch 21m00s 21 MiB disk error 21", last.ID-2); got != want {
		t.Errorf("history row:\n got %q\nwant %q", got, want)
	}
	if !strings.Contains(pageText(p), "Flashes 1–20 of 23, newest first.") {
		t.Error("the history does not count its flashes")
	}
	older := between(p, `id="history-older" href="`, `"`)
	if older != "/ui/machines/"+mac.String()+"?flashes_offset=20#h-history" {
		t.Fatalf("older link %q", older)
	}
	p2 := page("?flashes_offset=20")
	rows2 := regexp.MustCompile(`<tr data-flash="(\d+)">`).FindAllStringSubmatch(p2, -1)
	if len(rows2) != 3 || rows2[2][1] != fmt.Sprint(last.ID-22) || strings.Contains(p2, `id="history-older"`) ||
		!strings.Contains(p2, `id="history-newer" href="/ui/machines/`+mac.String()+`#h-history"`) {
		t.Errorf("the second page: rows %v, links wrong", rows2)
	}
	// The live fragment is the section alone.
	frag := ts.do(t, "GET", "/ui/machines/"+mac.String()+"/flash?flashes_offset=20", nil, cookie)
	if fb := string(frag.body); frag.code != 200 || strings.Contains(fb, "<html") || !strings.HasPrefix(strings.TrimSpace(fb), `<section id="flash-section"`) ||
		strings.Count(fb, "<tr data-flash=") != 3 {
		t.Errorf("the flash fragment: %d\n%s", frag.code, fb)
	}

	// A running flash: its progress and a cancel button; one that
	// timed out: its reason.
	run := putFlash(t, ts, mac, fleet.Flash{Trigger: fleet.TriggerDemand, Image: "deb.img", Result: fleet.FlashRunning, Phase: fleet.PhaseFetch,
		Power: "none", RequestedAt: time.Now().Add(-time.Minute), BytesWritten: 1 << 30, TotalBytes: 4 << 30, Rate: 100 << 20,
		Deadline: time.Now().Add(time.Hour)})
	latest = pageText(between(page(""), `id="flash-latest"`, `id="reflash-link"`))
	for _, want := range []string{fmt.Sprintf("Flash %d: running, now in phase fetch", run.ID), "Written 1.0 GiB of 4.0 GiB (25%) at 100 MiB/s",
		"no power driver: rebooted by hand", "Cancel this flash"} {
		if !strings.Contains(latest, want) {
			t.Errorf("the running flash lacks %q:\n%s", want, latest)
		}
	}
	ended := run
	ended.Result, ended.Reason, ended.EndedAt = fleet.FlashTimeout, "stuck in phase fetch: no done", at(time.Hour)
	putFlash(t, ts, mac, ended)
	if latest = pageText(between(page(""), `id="flash-latest"`, `id="reflash-link"`)); !strings.Contains(latest, "Reason stuck in phase fetch: no done") ||
		strings.Contains(latest, "Cancel this flash") {
		t.Errorf("the timed-out flash:\n%s", latest)
	}
}

// TestUIReflash: the reflash confirmation offers the catalog's images
// and says the machine must be rebooted by hand (no power driver) or
// that its BMC will cycle it; the POST starts a demand flash with the
// overrides (checked through the API); a second one is a 409 page
// showing the flash in progress with its cancel; bad overrides are
// shown at their field; the cancel asks first, then ends the flash.
func TestUIReflash(t *testing.T) {
	ts := startServer(t, nil)
	cookie := map[string]string{"Cookie": CookieName + "=" + ts.token, "Origin": ts.URL}
	for _, n := range []string{"a.img", "b.img"} {
		if err := os.WriteFile(filepath.Join(ts.cfg.ImageRoot, n), make([]byte, 4096), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	const mac = "52:54:00:f1:00:02"
	if r := ts.do(t, "PUT", "/machines/"+mac, strings.NewReader(`{"image":"a.img","hostname":"r1"}`), ts.auth()); r.code != 201 {
		t.Fatal(r.code, string(r.body))
	}
	confirm := string(ts.do(t, "GET", "/ui/machines/"+mac+"/reflash", nil, cookie).body)
	for _, want := range []string{`id="reflash-form"`, `<option value="b.img">b.img</option>`, "the machine's: a.img", "reboot it by hand"} {
		if !strings.Contains(confirm, want) {
			t.Errorf("the confirmation lacks %q", want)
		}
	}
	flashes := func() []fleet.Flash {
		var p struct{ Flashes []fleet.Flash }
		ts.do(t, "GET", "/machines/"+mac+"/flashes", nil, ts.auth()).json(t, &p)
		return p.Flashes
	}
	post := func(path string, vals url.Values, hdr map[string]string) formResp {
		return ts.form(t, "/ui/machines/"+mac+path, vals, hdr)
	}
	if r := post("/reflash", url.Values{"image": {"b.img"}}, map[string]string{"Cookie": cookie["Cookie"], "Origin": "http://evil.example"}); r.StatusCode != 403 {
		t.Errorf("cross-origin reflash: %d", r.StatusCode)
	}
	if r := post("/reflash", url.Values{"image": {"b.img"}}, map[string]string{"Origin": ts.URL}); r.StatusCode != 401 {
		t.Errorf("reflash without a session: %d", r.StatusCode)
	}
	if fs := flashes(); len(fs) != 0 {
		t.Fatalf("refused reflashes started %d flashes", len(fs))
	}
	r := post("/reflash", url.Values{"image": {"b.img"}, "provisioning": {"cloud-init"}, "hostname": {"r1-new"}}, cookie)
	if r.StatusCode != 303 || r.Header.Get("Location") != "/ui/machines/"+mac {
		t.Fatalf("reflash: %d to %q\n%s", r.StatusCode, r.Header.Get("Location"), r.body)
	}
	fs := flashes()
	if len(fs) != 1 {
		t.Fatalf("%d flashes after the reflash, want 1", len(fs))
	}
	f := fs[0]
	if f.Trigger != fleet.TriggerDemand || f.Image != "b.img" || f.Provisioning != fleet.ModeCloudInit || f.Hostname != "r1-new" ||
		f.Result != fleet.FlashRunning || f.Power != "none" || f.ReadyCheck != fleet.ReadyPhoneHome {
		t.Errorf("the flash started: %+v", f)
	}
	if msg := flashMessage(r); !strings.Contains(msg, fmt.Sprintf("flash %d of b.img", f.ID)) || !strings.Contains(msg, "reboot it by hand") {
		t.Errorf("the outcome message: %q", msg)
	}
	// The record keeps its own settings.
	var m fleet.Machine
	ts.do(t, "GET", "/machines/"+mac, nil, ts.auth()).json(t, &m)
	if m.Image != "a.img" || m.Hostname != "r1" {
		t.Errorf("the reflash changed the record: %s %s", m.Image, m.Hostname)
	}

	// A second reflash: 409, the flash in progress with its cancel.
	r = post("/reflash", url.Values{}, cookie)
	cancelPath := fmt.Sprintf("/ui/machines/%s/flashes/%d/cancel", mac, f.ID)
	if r.StatusCode != 409 || !strings.Contains(r.body, fmt.Sprintf(`id="running-flash" class="warning" data-flash="%d"`, f.ID)) ||
		!strings.Contains(r.body, `id="running-cancel" href="`+cancelPath+`"`) || !strings.Contains(r.body, "is in progress") {
		t.Fatalf("a reflash while one runs: %d\n%s", r.StatusCode, r.body)
	}
	if n := len(flashes()); n != 1 {
		t.Fatalf("%d flashes after the refused reflash", n)
	}
	// The API, sharing the UI's reflash, answers as it always did.
	api := func(body string) resp {
		return ts.do(t, "POST", "/machines/"+mac+"/reflash", strings.NewReader(body), ts.auth())
	}
	if r := api(""); r.code != 409 || r.errMsg(t) != (&fleet.FlashInProgressError{Flash: f}).Error() {
		t.Errorf("API reflash while one runs: %d %s", r.code, r.body)
	}
	if r := api(`{"image":"nope.img"}`); r.code != 400 || r.errMsg(t) != `image: "nope.img" is not in the catalog: upload it (bty-ctl images upload) or name one from GET /images` {
		t.Errorf("API reflash of an image not in the catalog: %d %s", r.code, r.body)
	}
	if r := ts.do(t, "POST", "/machines/52:54:00:f1:00:99/reflash", nil, ts.auth()); r.code != 404 || r.errMsg(t) != "no machine 52:54:00:f1:00:99" {
		t.Errorf("API reflash of an unknown machine: %d %s", r.code, r.body)
	}
	// The confirmation, while it runs, offers the cancel instead.
	if c := string(ts.do(t, "GET", "/ui/machines/"+mac+"/reflash", nil, cookie).body); strings.Contains(c, `id="reflash-form"`) || !strings.Contains(c, `id="running-cancel"`) {
		t.Error("the confirmation offers a reflash while one runs")
	}
	// Bad overrides: at their field, nothing started.
	for field, vals := range map[string]url.Values{
		"hostname-error":     {"hostname": {"-bad"}},
		"image-error":        {"image": {"nope.img"}},
		"provisioning-error": {"provisioning": {"magic"}},
	} {
		r := post("/reflash", vals, cookie)
		if r.StatusCode != 400 || !strings.Contains(r.body, `id="`+field+`"`) {
			t.Errorf("reflash with %v: %d, %s shown %v", vals, r.StatusCode, field, strings.Contains(r.body, field))
		}
	}
	if r := post("/reflash", url.Values{"image": {"nope.img"}}, cookie); !strings.Contains(r.body, "not in the catalog") {
		t.Error("an image not in the catalog: the reason is not shown")
	}

	// The cancel: asked first, refused cross-origin, then done.
	c := string(ts.do(t, "GET", cancelPath, nil, cookie).body)
	if !strings.Contains(c, fmt.Sprintf("Cancel flash %d of r1 (%s) (b.img, phase requested)?", f.ID, mac)) || !strings.Contains(c, `action="`+cancelPath+`"`) {
		t.Fatalf("the cancel confirmation:\n%s", c)
	}
	if r := ts.form(t, cancelPath, nil, map[string]string{"Cookie": cookie["Cookie"], "Origin": "http://evil.example"}); r.StatusCode != 403 {
		t.Errorf("cross-origin cancel: %d", r.StatusCode)
	}
	if fs := flashes(); fs[0].Result != fleet.FlashRunning {
		t.Fatal("the refused cancel cancelled")
	}
	r = ts.form(t, cancelPath, nil, cookie)
	if r.StatusCode != 303 || flashMessage(r) != fmt.Sprintf("Cancelled flash %d (b.img).", f.ID) {
		t.Fatalf("cancel: %d %q", r.StatusCode, flashMessage(r))
	}
	if fs := flashes(); fs[0].Result != fleet.FlashCancelled {
		t.Fatalf("after the cancel: %+v", fs[0])
	}
	if r := ts.form(t, cancelPath, nil, cookie); r.StatusCode != 303 || !strings.Contains(flashMessage(r), "not in progress any more (cancelled)") {
		t.Errorf("a second cancel: %d %q", r.StatusCode, flashMessage(r))
	}
	for p, want := range map[string]int{"/flashes/999/cancel": 404, "/flashes/x/cancel": 400} {
		if r := ts.do(t, "GET", "/ui/machines/"+mac+p, nil, cookie); r.code != want {
			t.Errorf("GET %s: %d, want %d", p, r.code, want)
		}
	}
	// Now a reflash goes through again, with the machine's own image.
	if r := post("/reflash", url.Values{}, cookie); r.StatusCode != 303 {
		t.Fatalf("reflash after the cancel: %d", r.StatusCode)
	}
	if fs := flashes(); len(fs) != 2 || fs[0].Image != "a.img" || fs[0].Hostname != "r1" {
		t.Errorf("the second flash: %+v", fs[0])
	}

	// With a power driver the confirmation says the BMC cycles it.
	bmc, _ := redfishBMC(t, "admin", "pw")
	if r := ts.do(t, "PUT", "/machines/"+mac, strings.NewReader(`{"power":{"driver":"redfish","address":"`+bmc.URL+`","username":"admin","password":"pw"}}`), ts.auth()); r.code != 200 {
		t.Fatal(r.code)
	}
	ts.form(t, fmt.Sprintf("/ui/machines/%s/flashes/%d/cancel", mac, flashes()[0].ID), nil, cookie)
	if c := pageText(string(ts.do(t, "GET", "/ui/machines/"+mac+"/reflash", nil, cookie).body)); !strings.Contains(c, "Its redfish BMC at "+bmc.URL+" will be asked for a one-time PXE boot and a power cycle") {
		t.Errorf("the confirmation with a BMC:\n%s", c)
	}
}

// TestUIReadinessFields: the machine form's ready check and flash
// deadline: refused values are shown at their field with what was
// typed and nothing is saved; good ones are saved; a form without the
// fields leaves them as they are.
func TestUIReadinessFields(t *testing.T) {
	ts := startServer(t, nil)
	cookie := map[string]string{"Cookie": CookieName + "=" + ts.token, "Origin": ts.URL}
	mac := fleet.MustParseMAC("52:54:00:f1:00:03")
	if _, _, err := store.PutMachine(t.Context(), ts.st, mac, fleet.MachineUpdate{}, time.Now()); err != nil {
		t.Fatal(err)
	}
	p := string(ts.do(t, "GET", "/ui/machines/"+mac.String(), nil, cookie).body)
	if !strings.Contains(p, `id="ready_check" name="ready_check"`) || !strings.Contains(p, `id="flash_deadline" name="flash_deadline"`) ||
		!strings.Contains(p, "default (tcp:22)") {
		t.Fatal("the form lacks the ready check or the flash deadline")
	}
	save := func(rc, dl string) formResp {
		return ts.form(t, "/ui/machines/"+mac.String(), url.Values{"boot_policy": {"local"}, "ready_check": {rc}, "flash_deadline": {dl}}, cookie)
	}
	r := save("tcp:99999", "5s")
	if r.StatusCode != 400 {
		t.Fatalf("bad values: %d", r.StatusCode)
	}
	for _, want := range []string{`id="ready_check-error"`, `id="flash_deadline-error"`, `value="tcp:99999"`, `value="5s"`, `aria-invalid="true"`} {
		if !strings.Contains(r.body, want) {
			t.Errorf("the refused form lacks %s", want)
		}
	}
	if e := between(r.body, `id="ready_check-error" class="field-error">`, "<"); !strings.Contains(e, "tcp:PORT") {
		t.Errorf("ready_check error %q", e)
	}
	if m, _ := ts.st.GetMachine(t.Context(), mac); m.ReadyCheck != "" || m.FlashDeadline != "" {
		t.Fatalf("a refused form saved %q %q", m.ReadyCheck, m.FlashDeadline)
	}
	if r := save("tcp:2222", "45m"); r.StatusCode != 303 {
		t.Fatalf("good values: %d\n%s", r.StatusCode, r.body)
	}
	if m, _ := ts.st.GetMachine(t.Context(), mac); m.ReadyCheck != "tcp:2222" || m.FlashDeadline != "45m" {
		t.Fatalf("saved %q %q", m.ReadyCheck, m.FlashDeadline)
	}
	if r := ts.form(t, "/ui/machines/"+mac.String(), url.Values{"boot_policy": {"local"}}, cookie); r.StatusCode != 303 {
		t.Fatal(r.StatusCode)
	}
	if m, _ := ts.st.GetMachine(t.Context(), mac); m.ReadyCheck != "tcp:2222" || m.FlashDeadline != "45m" {
		t.Fatalf("a form without the fields changed them: %q %q", m.ReadyCheck, m.FlashDeadline)
	}
	if r := save("", ""); r.StatusCode != 303 {
		t.Fatal(r.StatusCode)
	}
	if m, _ := ts.st.GetMachine(t.Context(), mac); m.ReadyCheck != "" || m.FlashDeadline != "" {
		t.Fatalf("clearing left %q %q", m.ReadyCheck, m.FlashDeadline)
	}
}

// TestUIDashboardFlashes: the dashboard lists the fleet's last 10
// flashes, newest first, and charts the last 4 weeks' ended flashes
// (one marker each); with none, both say so.
func TestUIDashboardFlashes(t *testing.T) {
	ts := startServer(t, nil)
	cookie := map[string]string{"Cookie": CookieName + "=" + ts.token}
	dash := func() string { return string(ts.do(t, "GET", "/ui/dashboard", nil, cookie).body) }
	if d := dash(); !strings.Contains(d, "No flashes recorded yet.") || !strings.Contains(d, `id="flash-chart-empty"`) {
		t.Fatal("the dashboard without flashes: no empty states")
	}
	now := time.Now()
	results := []fleet.FlashResult{fleet.FlashReady, fleet.FlashFailed, fleet.FlashTimeout, fleet.FlashCancelled}
	var last fleet.Flash
	for i := range 12 {
		mac := fleet.MustParseMAC(fmt.Sprintf("52:54:00:f2:00:%02x", i))
		host := fmt.Sprintf("d%d", i)
		if _, _, err := store.PutMachine(t.Context(), ts.st, mac, fleet.MachineUpdate{}, now); err != nil {
			t.Fatal(err)
		}
		req := now.Add(-time.Duration(12-i) * 24 * time.Hour)
		end := req.Add(time.Duration(i+1) * time.Minute)
		last = putFlash(t, ts, mac, fleet.Flash{Trigger: fleet.TriggerPolicy, Image: "x.img", Hostname: host, Result: results[i%4],
			Phase: fleet.PhaseDone, RequestedAt: req, EndedAt: &end})
	}
	// One older than 4 weeks: listed nowhere but the history.
	old := now.Add(-40 * 24 * time.Hour)
	putFlash(t, ts, fleet.MustParseMAC("52:54:00:f2:00:00"), fleet.Flash{Image: "x.img", Result: fleet.FlashReady, RequestedAt: old, EndedAt: &old})
	d := dash()
	rows := regexp.MustCompile(`(?s)<tr data-flash="(\d+)">(.*?)</tr>`).FindAllStringSubmatch(between(d, `id="recent-flashes"`, `</table>`), -1)
	if len(rows) != 10 {
		t.Fatalf("recent flashes: %d rows, want 10", len(rows))
	}
	// The newest first: the old one (inserted last), then d11's.
	if got := pageText(rows[1][2]); !strings.HasPrefix(got, "d11 x.img cancelled 12m00s ") {
		t.Errorf("second row %q", got)
	}
	if !strings.Contains(rows[1][2], `href="/ui/machines/52:54:00:f2:00:0b"`) || rows[1][1] != fmt.Sprint(last.ID) {
		t.Errorf("second row links %q", rows[1][2])
	}
	svg := between(d, "<svg", "</svg>")
	if n := strings.Count(svg, `<g class="pt pt-`); n != 12 {
		t.Errorf("the chart has %d points, want 12", n)
	}
	for _, want := range []string{"ready (3)", "failed (3)", "timeout (3)", "cancelled (3)", "d11 (52:54:00:f2:00:0b), x.img, cancelled in 12m00s (phase done)"} {
		if !strings.Contains(svg, want) {
			t.Errorf("the chart lacks %q", want)
		}
	}
}

// TestUIPowerSettings: the machine form's Power control fieldset sets,
// changes and removes a machine's BMC settings; an empty password keeps
// the stored one; a refused value is shown at its field with what was
// typed (never the password) and nothing is saved; the password is in
// no page and no log line; a cross-origin post is refused.
func TestUIPowerSettings(t *testing.T) {
	const secret, typed = "bmc-UIform-8123", "bmc-Typed-5550"
	var logs syncBuffer // every log line, debug included
	ts, _ := customServer(t, nil, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	cookie := map[string]string{"Cookie": CookieName + "=" + ts.token, "Origin": ts.URL}
	const mac = "52:54:00:f1:00:07"
	if r := ts.do(t, "PUT", "/machines/"+mac, strings.NewReader(`{"hostname":"bmc1"}`), ts.auth()); r.code != 201 {
		t.Fatal(r.code)
	}
	page := func() string { return string(ts.do(t, "GET", "/ui/machines/"+mac, nil, cookie).body) }
	type wirePower struct {
		Driver, Address, Username, System string
		CipherSuite                       int  `json:"cipher_suite"`
		Insecure                          bool `json:"insecure"`
		PasswordSet                       bool `json:"password_set"`
	}
	stored := func() *wirePower { // what GET /machines/{mac} answers
		t.Helper()
		r := ts.do(t, "GET", "/machines/"+mac, nil, ts.auth())
		if r.code != 200 {
			t.Fatal(r.code)
		}
		var m struct{ Power *wirePower }
		if err := json.Unmarshal(r.body, &m); err != nil {
			t.Fatal(err)
		}
		return m.Power
	}
	// The form as the page would post it, with changes.
	save := func(hdr map[string]string, kv ...string) formResp {
		t.Helper()
		v := url.Values{"boot_policy": {"local"}, "hostname": {"bmc1"}, "power": {"1"}, "power_driver": {"ipmi"},
			"power_address": {"10.0.0.5:623"}, "power_username": {"admin"}, "power_cipher_suite": {"3"}}
		for i := 0; i+1 < len(kv); i += 2 {
			v.Set(kv[i], kv[i+1])
		}
		return ts.form(t, "/ui/machines/"+mac, v, hdr)
	}

	p := page()
	for _, want := range []string{`id="power-fields"`, `<legend>Power control (BMC)</legend>`, `name="power" value="1"`,
		`<option value="none" selected>none</option>`, `id="power_password" name="power_password" type="password" value="" autocomplete="new-password"`,
		`placeholder="required"`, `id="power_insecure" name="power_insecure" type="checkbox"`} {
		if !strings.Contains(p, want) {
			t.Errorf("the page lacks %s", want)
		}
	}

	// Set ipmi settings.
	if r := save(cookie, "power_password", secret); r.StatusCode != 303 {
		t.Fatalf("set ipmi: %d\n%s", r.StatusCode, r.body)
	}
	want := wirePower{Driver: "ipmi", Address: "10.0.0.5:623", Username: "admin", CipherSuite: 3, PasswordSet: true}
	if got := stored(); got == nil || *got != want {
		t.Fatalf("stored %+v, want %+v", got, want)
	}
	p = page()
	for _, want := range []string{`<option value="ipmi" selected>ipmi</option>`, `value="10.0.0.5:623"`, `value="admin"`,
		`placeholder="set — leave empty to keep"`, `id="power-form"`} {
		if !strings.Contains(p, want) {
			t.Errorf("the page after saving lacks %s", want)
		}
	}
	if strings.Contains(p, secret) {
		t.Fatal("the machine page shows the BMC password")
	}

	// A new address without a password keeps the stored password.
	if r := save(cookie, "power_address", "10.0.0.6"); r.StatusCode != 303 {
		t.Fatalf("change the address: %d\n%s", r.StatusCode, r.body)
	}
	want.Address = "10.0.0.6"
	if got := stored(); got == nil || *got != want {
		t.Fatalf("stored %+v, want %+v", got, want)
	}
	if m, _ := ts.st.GetMachine(t.Context(), fleet.MustParseMAC(mac)); m.Power == nil || openPW(ts, m.Power) != secret {
		t.Fatal("an empty password field did not keep the stored password")
	}

	// Refused values: at their fields, the rest as typed, no password
	// shown back, nothing saved.
	r := save(cookie, "power_address", "bmc:notaport", "power_username", "root", "power_password", typed, "hostname", "bmc2")
	if r.StatusCode != 400 {
		t.Fatalf("bad address: %d", r.StatusCode)
	}
	for _, want := range []string{`id="power_address-error"`, `value="bmc:notaport"`, `value="root"`, `value="bmc2"`,
		`aria-describedby="power_address-help power_address-error" aria-invalid="true"`, `id="power_password-retype"`, "Nothing was saved"} {
		if !strings.Contains(r.body, want) {
			t.Errorf("the refused form lacks %s", want)
		}
	}
	if e := between(r.body, `id="power_address-error" class="field-error">`, "<"); !strings.Contains(e, "port") {
		t.Errorf("power.address error %q", e)
	}
	if strings.Contains(r.body, typed) || strings.Contains(r.body, secret) {
		t.Fatal("the refused form shows a BMC password")
	}
	if got := stored(); got == nil || *got != want {
		t.Fatalf("a refused form saved %+v", got)
	}
	if m, _ := ts.st.GetMachine(t.Context(), fleet.MustParseMAC(mac)); m.Hostname != "bmc1" || openPW(ts, m.Power) != secret {
		t.Fatalf("a refused form saved hostname %q or the password", m.Hostname)
	}
	r = save(cookie, "power_cipher_suite", "three", "power_address", "bmc:notaport")
	if r.StatusCode != 400 || !strings.Contains(r.body, `id="power_cipher_suite-error"`) || !strings.Contains(r.body, `value="three"`) ||
		!strings.Contains(r.body, `id="power_address-error"`) {
		t.Errorf("a cipher suite that is not a number and a bad address: %d, not both marked", r.StatusCode)
	}
	// A refused redfish address: at its field, redfish still chosen.
	r = save(cookie, "power_driver", "redfish", "power_address", "not a url", "power_system", "1")
	if r.StatusCode != 400 || !strings.Contains(r.body, `id="power_address-error"`) || !strings.Contains(r.body, `<option value="redfish" selected>`) {
		t.Errorf("a bad redfish address: %d", r.StatusCode)
	}

	// A form without the fieldset leaves power control as it is.
	if r := ts.form(t, "/ui/machines/"+mac, url.Values{"boot_policy": {"local"}}, cookie); r.StatusCode != 303 {
		t.Fatal(r.StatusCode)
	}
	if got := stored(); got == nil || *got != want {
		t.Fatalf("a form without the fieldset changed power to %+v", got)
	}

	// Cross-origin: refused, nothing changed.
	if r := save(map[string]string{"Cookie": cookie["Cookie"], "Origin": "http://evil.example"}, "power_driver", "none"); r.StatusCode != 403 {
		t.Errorf("cross-origin save: %d", r.StatusCode)
	}
	if got := stored(); got == nil || *got != want {
		t.Fatalf("a cross-origin post changed power to %+v", got)
	}

	// Redfish settings replace ipmi's; the ipmi-only cipher suite the
	// page still shows is not carried over.
	if r := save(cookie, "power_driver", "redfish", "power_address", "https://bmc1.example", "power_system", "System.Embedded.1",
		"power_insecure", "1"); r.StatusCode != 303 {
		t.Fatalf("set redfish: %d\n%s", r.StatusCode, r.body)
	}
	want = wirePower{Driver: "redfish", Address: "https://bmc1.example", Username: "admin", System: "System.Embedded.1", Insecure: true, PasswordSet: true}
	if got := stored(); got == nil || *got != want {
		t.Fatalf("stored %+v, want %+v", got, want)
	}
	if p := page(); !strings.Contains(p, `value="System.Embedded.1"`) || !regexp.MustCompile(`id="power_insecure"[^>]* checked`).MatchString(p) {
		t.Error("the page does not show the redfish system or the insecure checkbox checked")
	}

	// Driver none removes power control.
	if r := save(cookie, "power_driver", "none"); r.StatusCode != 303 {
		t.Fatalf("driver none: %d\n%s", r.StatusCode, r.body)
	}
	if got := stored(); got != nil {
		t.Fatalf("driver none left %+v", got)
	}
	if p := page(); !strings.Contains(p, `<option value="none" selected>none</option>`) || strings.Contains(p, `id="power-form"`) {
		t.Error("the page after removing power control")
	}

	// Stored settings that lack the password (an import without
	// secrets): saving other fields with the fieldset unchanged works.
	drv, addr, user := "ipmi", "10.0.0.7", "admin"
	if _, _, err := store.PutMachine(t.Context(), ts.st, fleet.MustParseMAC(mac),
		fleet.MachineUpdate{Power: &fleet.PowerUpdate{Driver: &drv, Address: &addr, Username: &user}}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if r := save(cookie, "power_address", addr, "power_cipher_suite", "", "hostname", "bmc3"); r.StatusCode != 303 {
		t.Fatalf("an unchanged fieldset without a stored password: %d\n%s", r.StatusCode, r.body)
	}
	if r := save(cookie, "power_address", "10.0.0.8", "power_cipher_suite", ""); r.StatusCode != 400 || !strings.Contains(r.body, `id="power_password-error"`) {
		t.Errorf("a change that leaves no password: %d", r.StatusCode)
	}

	if l := logs.String(); strings.Contains(l, secret) || strings.Contains(l, typed) {
		t.Error("the log has a BMC password")
	}
}

// openPW is a stored power setting's password, opened.
func openPW(ts *testServer, p *fleet.Power) string {
	if p == nil {
		return ""
	}
	pw, _ := ts.srv.secrets.open(p.Password)
	return pw
}
