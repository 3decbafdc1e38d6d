package server

import (
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
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
