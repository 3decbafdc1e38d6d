package server

// Real-browser tests of the /ui pages: chromedp drives Debian's chromium
// (headless, no sandbox since the tests run as root) against a real
// bty-web from startServer. Every assertion reads back what the page
// shows (DOM text, attributes, HTTP status codes). The tests skip only
// when no chromium is found ($BTY_CHROMIUM, then chromium,
// chromium-browser, google-chrome in PATH).
//
// Screenshots of every page visited go to $BTY_SCREENSHOT_DIR, or to
// bty-ui-screenshots under the system temporary directory.

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/fetch"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/dustin/go-humanize"

	"github.com/btyproject/bty/internal/fleet"
)

// browserTimeout bounds each browser test as a whole; stepTimeout bounds
// one wait or query, so a missing element fails in seconds, not minutes.
const (
	browserTimeout = 90 * time.Second
	stepTimeout    = 10 * time.Second
)

// findChromium returns the browser to drive, or skips the test.
func findChromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("BTY_CHROMIUM"); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("BTY_CHROMIUM=%s: %v", p, err)
		}
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("no chromium found (set BTY_CHROMIUM, or install chromium: scripts/install-deps.sh)")
	return ""
}

var (
	shotDirOnce sync.Once
	shotDir     string
	shotDirErr  error
)

// screenshotDir is $BTY_SCREENSHOT_DIR, or bty-ui-screenshots under the
// system temporary directory; it is created once per test binary.
func screenshotDir(t *testing.T) string {
	t.Helper()
	shotDirOnce.Do(func() {
		shotDir = os.Getenv("BTY_SCREENSHOT_DIR")
		if shotDir == "" {
			shotDir = filepath.Join(os.TempDir(), "bty-ui-screenshots")
		}
		shotDirErr = os.MkdirAll(shotDir, 0o755)
	})
	if shotDirErr != nil {
		t.Fatalf("screenshot directory: %v", shotDirErr)
	}
	return shotDir
}

// browser is one chromium process with one tab, for one test (its
// subtests share it).
type browser struct {
	t   *testing.T
	ctx context.Context // the tab; ends after browserTimeout
	ts  *testServer
	js  *jsErrors
}

// jsErrors collects the errors the pages report: uncaught exceptions and
// browser log errors other than HTTP statuses fail the test;
// console.error calls are logged.
type jsErrors struct {
	mu      sync.Mutex
	list    []string
	console map[string]int // console.error messages and their counts
}

// on returns the browser for a subtest: same tab, failures reported to t.
func (b *browser) on(t *testing.T) *browser {
	c := *b
	c.t = t
	return &c
}

const desktopWidth, desktopHeight = 1280, 900

func newBrowser(t *testing.T, ts *testServer) *browser {
	t.Helper()
	exe := findChromium(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.WindowSize(desktopWidth, desktopHeight),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("lang", "en-US"),
	)
	ctx, cancel := context.WithTimeout(context.Background(), browserTimeout)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	tabCtx, cancelTab := chromedp.NewContext(allocCtx)
	b := &browser{t: t, ctx: tabCtx, ts: ts, js: &jsErrors{console: map[string]int{}}}
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc()
		cancel()
		b.js.mu.Lock()
		defer b.js.mu.Unlock()
		for _, e := range b.js.list {
			t.Errorf("page error: %s", e)
		}
		for m, n := range b.js.console {
			t.Logf("console.error (%d times): %s", n, m)
		}
	})
	start := time.Now()
	if err := chromedp.Do(tabCtx); err != nil { // starts the browser
		t.Fatalf("starting %s: %v", exe, err)
	}
	t.Logf("chromium %s up in %s", exe, time.Since(start).Round(time.Millisecond))
	if err := chromedp.Listen(tabCtx, func(ev any) {
		// This runs in the tab's event loop: record and return.
		var msg string
		switch ev := ev.(type) {
		case *runtime.EventExceptionThrown:
			d := ev.ExceptionDetails
			msg = d.Text
			if d.Exception != nil && d.Exception.Description != "" {
				msg += " " + d.Exception.Description
			}
			msg = fmt.Sprintf("uncaught exception at %s:%d: %s", d.URL, d.LineNumber+1, msg)
		case *runtime.EventConsoleAPICalled:
			// console.error is logged, not failed: htmx reports harmless
			// conditions there too.
			if ev.Type == runtime.ConsoleAPICalledTypeError {
				var args []string
				for _, a := range ev.Args {
					args = append(args, string(a.Value)+a.Description)
				}
				b.js.mu.Lock()
				b.js.console[strings.Join(args, " ")]++
				b.js.mu.Unlock()
			}
		case *cdplog.EventEntryAdded:
			// Error responses the tests provoke (401, 400, 404) are
			// logged by the network source; anything else at error
			// level (a CSP violation, a script that failed to load) is
			// a bug of the page.
			if e := ev.Entry; e.Level == cdplog.EntryLevelError && e.Source != cdplog.EntrySourceNetwork {
				msg = fmt.Sprintf("browser log (%s) at %s: %s", e.Source, e.URL, e.Text)
			}
		}
		if msg != "" {
			b.js.mu.Lock()
			b.js.list = append(b.js.list, msg)
			b.js.mu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(tabCtx, chromedp.EmulateViewport(desktopWidth, desktopHeight)); err != nil {
		t.Fatal(err)
	}
	return b
}

// step runs actions with stepTimeout.
func (b *browser) step(actions ...chromedp.Action[chromedp.Void]) error {
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	return chromedp.Do(ctx, actions...)
}

// must runs actions with stepTimeout and fails the test on an error.
func (b *browser) must(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := b.step(actions...); err != nil {
		b.t.Fatalf("%s: %v (page %s)", what, err, b.location())
	}
}

// run runs one action with a value under stepTimeout.
func run[T any](b *browser, a chromedp.Action[T]) (T, error) {
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	return chromedp.Run(ctx, a)
}

// open navigates to path on the test server and returns the HTTP status
// of the main document (after redirects) and the final URL path.
func (b *browser) open(path string) int {
	b.t.Helper()
	res, err := run(b, chromedp.NavigateResponse(b.ts.URL+path))
	if err != nil {
		b.t.Fatalf("opening %s: %v", path, err)
	}
	return int(res.Status)
}

// location is the path (and query) of the current page.
func (b *browser) location() string {
	loc, err := run(b, chromedp.Location())
	if err != nil {
		return "?(" + err.Error() + ")"
	}
	return strings.TrimPrefix(loc, b.ts.URL)
}

// js evaluates a JavaScript expression into T.
func js[T any](b *browser, expr string) T {
	b.t.Helper()
	v, err := run(b, chromedp.Evaluate[T](expr))
	if err != nil {
		b.t.Fatalf("evaluating %s: %v (page %s)", expr, err, b.location())
	}
	return v
}

// text is the trimmed textContent of the first element matching sel,
// waiting for it to exist. It reads in one evaluation, so a live update
// replacing the element between the lookup and the read cannot fail it.
func (b *browser) text(sel string) string {
	b.t.Helper()
	return strings.TrimSpace(b.read(sel, `e.textContent`))
}

// read waits for sel and evaluates expr (over the element e) to a string.
func (b *browser) read(sel, expr string) string {
	b.t.Helper()
	deadline := time.Now().Add(stepTimeout)
	for {
		ctx, cancel := context.WithTimeout(b.ctx, time.Second)
		v, err := chromedp.Run(ctx, chromedp.Evaluate[*string](fmt.Sprintf(
			`(() => { const e = document.querySelector(%s); return e ? String(%s) : null })()`, jsq(sel), expr)))
		cancel()
		if err == nil && v != nil {
			return *v
		}
		if time.Now().After(deadline) || b.ctx.Err() != nil {
			b.t.Fatalf("no %s on %s (last error %v)", sel, b.location(), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitFor waits until sel matches an element.
func (b *browser) waitFor(sel string) {
	b.t.Helper()
	b.must("waiting for "+sel, chromedp.WaitReady(chromedp.CSS(sel)))
}

// poll waits until the JavaScript expression is truthy. It evaluates
// from Go every 50 ms and ignores evaluation errors, so it also works
// across a navigation (a form post, a reload) the page does meanwhile.
func (b *browser) poll(what, expr string) {
	b.t.Helper()
	if err := b.tryPoll(expr, stepTimeout); err != nil {
		b.t.Fatalf("waiting for %s (%s): %v (page %s)", what, expr, err, b.location())
	}
}

func (b *browser) tryPoll(expr string, d time.Duration) error {
	deadline := time.Now().Add(d)
	var last error
	for {
		ctx, cancel := context.WithTimeout(b.ctx, time.Second)
		v, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`!!(`+expr+`)`))
		cancel()
		if err == nil && v {
			return nil
		}
		if err != nil {
			last = err
		}
		if time.Now().After(deadline) {
			if last != nil {
				return fmt.Errorf("still false after %s (last error %v)", d, last)
			}
			return fmt.Errorf("still false after %s", d)
		}
		if b.ctx.Err() != nil {
			return b.ctx.Err()
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// jsq quotes s as a JavaScript string literal.
func jsq(s string) string {
	q, _ := json.Marshal(s)
	return string(q)
}

// fill sets a text input as typing would (value, then input and change
// events).
func (b *browser) fill(sel, value string) {
	b.t.Helper()
	b.waitFor(sel)
	ok := js[bool](b, fmt.Sprintf(`(() => { const e = document.querySelector(%s); if (!e) return false;
		e.focus(); e.value = %s; e.dispatchEvent(new Event('input', {bubbles: true}));
		e.dispatchEvent(new Event('change', {bubbles: true})); return true })()`, jsq(sel), jsq(value)))
	if !ok {
		b.t.Fatalf("no %s on %s", sel, b.location())
	}
}

// choose selects the option with value in a select (then fires input
// and change events); it fails when the select has no such option.
func (b *browser) choose(sel, value string) {
	b.t.Helper()
	b.waitFor(sel)
	opts := js[[]string](b, fmt.Sprintf(`Array.from(document.querySelector(%s).options).map(o => o.value)`, jsq(sel)))
	if !slices.Contains(opts, value) {
		b.t.Fatalf("%s has no option %q (options %q) on %s", sel, value, opts, b.location())
	}
	js[bool](b, fmt.Sprintf(`(() => { const e = document.querySelector(%s); e.value = %s;
		e.dispatchEvent(new Event('input', {bubbles: true})); e.dispatchEvent(new Event('change', {bubbles: true})); return true })()`,
		jsq(sel), jsq(value)))
}

// options lists the option values of a select.
func (b *browser) options(sel string) []string {
	b.t.Helper()
	b.waitFor(sel)
	return js[[]string](b, fmt.Sprintf(`Array.from(document.querySelector(%s).options).map(o => o.value)`, jsq(sel)))
}

// click clicks the element (a real mouse click at its centre) and waits
// for the page it leads to; it returns that page's HTTP status.
func (b *browser) click(sel string) int {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	res, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS(sel)))
	if err != nil {
		b.t.Fatalf("clicking %s on %s (want a new page): %v", sel, b.location(), err)
	}
	return int(res.Status)
}

// clickSlowNav clicks like click, but holds back the GET of the page
// the click leads to (a document request matching the URL glob under
// the test server) for delay before letting it go: a slow network.
func (b *browser) clickSlowNav(sel, glob string, delay time.Duration) int {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	paused := chromedp.Events(ctx, fetch.RequestPaused)
	if _, err := chromedp.Call(ctx, fetch.Enable, fetch.EnableParams{Patterns: []*fetch.RequestPattern{
		{URLPattern: b.ts.URL + glob, ResourceType: network.ResourceTypeDocument}}}); err != nil {
		b.t.Fatalf("intercepting requests: %v", err)
	}
	defer func() {
		if _, err := chromedp.Call(b.ctx, fetch.Disable, cdp.Empty{}); err != nil {
			b.t.Errorf("ending the interception: %v", err)
		}
	}()
	held := make(chan error, 1)
	go func() {
		for ev, err := range paused {
			if err != nil {
				held <- err
				return
			}
			get := ev.Request.Method == "GET"
			if get {
				time.Sleep(delay)
			}
			if _, err := chromedp.Call(ctx, fetch.ContinueRequest, fetch.ContinueRequestParams{RequestID: ev.RequestID}); err != nil {
				held <- err
				return
			}
			if get {
				held <- nil
				return
			}
		}
	}()
	res, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS(sel)))
	if err != nil {
		b.t.Fatalf("clicking %s on %s (want a new page): %v", sel, b.location(), err)
	}
	select {
	case err := <-held:
		if err != nil {
			b.t.Fatalf("holding back the page: %v", err)
		}
	case <-ctx.Done():
		b.t.Fatal("the click led to no GET of a page matching " + glob)
	}
	return int(res.Status)
}

// clickHere clicks the element without waiting for a new page. A live
// update can replace the element between finding and clicking it; then
// the click is tried again on the new one.
func (b *browser) clickHere(sel string) {
	b.t.Helper()
	var err error
	for range 5 {
		if err = b.step(chromedp.Click(chromedp.CSS(sel))); err == nil || !strings.Contains(err.Error(), "node") {
			break
		}
		b.t.Logf("clicking %s again after %v", sel, err)
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		b.t.Fatalf("clicking %s: %v (page %s)", sel, err, b.location())
	}
}

// waitLiveTable waits, on /ui/machines, until the table's SSE stream is
// open and the refresh it triggers on connecting (the snapshot event)
// has been swapped in, so the rows the test then works with stay put.
func (b *browser) waitLiveTable() {
	b.t.Helper()
	waitSSESubscriber(b.t, b.ts)
	b.poll("the first live refresh of the table", `performance.getEntriesByType("resource").some(e =>
		e.initiatorType === "xmlhttprequest" && new URL(e.name).pathname === "/ui/machines" && e.responseEnd > 0)
		&& !document.querySelector(".htmx-request, .htmx-swapping, .htmx-settling")`)
}

// attr reads an attribute of the first element matching sel ("" when
// absent), waiting for the element.
func (b *browser) attr(sel, name string) string {
	b.t.Helper()
	return b.read(sel, fmt.Sprintf(`e.getAttribute(%s) ?? ""`, jsq(name)))
}

// count is the number of elements matching sel now.
func (b *browser) count(sel string) int {
	b.t.Helper()
	return js[int](b, fmt.Sprintf(`document.querySelectorAll(%s).length`, jsq(sel)))
}

// path is the current page's path (percent-decoded) and its query.
func (b *browser) path() (string, url.Values) {
	b.t.Helper()
	u, err := url.Parse(b.ts.URL + b.location())
	if err != nil {
		b.t.Fatal(err)
	}
	return u.Path, u.Query()
}

// wantPath fails unless the browser is on path.
func (b *browser) wantPath(want string) {
	b.t.Helper()
	if p, _ := b.path(); p != want {
		b.t.Fatalf("the browser is on %s, want %s", b.location(), want)
	}
}

// sessionCookie is the browser's bty-token cookie for the test server.
func (b *browser) sessionCookie() *network.Cookie {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	res, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{b.ts.URL + "/ui/dashboard"}})
	if err != nil {
		b.t.Fatalf("reading cookies: %v", err)
	}
	for _, c := range res.Cookies {
		if c.Name == CookieName {
			return c
		}
	}
	return nil
}

// login logs in through the login form (the browser must be on it).
func (b *browser) login(pw string) int {
	b.t.Helper()
	b.fill("#password", pw)
	return b.click("#login-submit")
}

// macRow is the id of a machine's row in table#machines.
func macRow(mac string) string { return "tr#m-" + strings.ReplaceAll(mac, ":", "") }

// rowText is the trimmed text of a cell of a machine's row.
func (b *browser) rowText(mac, cell string) string {
	b.t.Helper()
	return b.text(macRow(mac) + " td." + cell)
}

// screenshot saves a full-page PNG of the current page at the desktop
// width.
func (b *browser) screenshot(name string) {
	buf, err := run(b, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Errorf("screenshot %s: %v", name, err)
		return
	}
	b.saveShot(name, buf)
}

// phoneScreenshot reloads the current page at a 390 px wide mobile
// viewport, saves a full-page PNG, and goes back to the desktop size.
// It reports problems without stopping the test, so it can run deferred
// after a failure.
func (b *browser) phoneScreenshot(name string) {
	defer func() {
		if err := b.step(chromedp.EmulateViewport(desktopWidth, desktopHeight), chromedp.Reload()); err != nil {
			b.t.Errorf("back to the desktop viewport: %v", err)
		}
	}()
	if err := b.step(chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile, chromedp.EmulateScale(2)), chromedp.Reload()); err != nil {
		b.t.Errorf("phone viewport: %v", err)
		return
	}
	if w, err := run(b, chromedp.Evaluate[int](`document.documentElement.clientWidth`)); err != nil || w != 390 {
		b.t.Errorf("phone viewport is %d px wide (%v), want 390", w, err)
	}
	// Nothing may be wider than the phone: no horizontal scrolling of
	// the whole page (wide tables scroll inside their own container).
	if sw, err := run(b, chromedp.Evaluate[int](`document.documentElement.scrollWidth`)); err != nil || sw > 390 {
		b.t.Errorf("%s: the page is %d px wide at a 390 px viewport (horizontal scrolling) (%v)", name, sw, err)
	}
	buf, err := run(b, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Errorf("phone screenshot %s: %v", name, err)
		return
	}
	b.saveShot(name, buf)
}

func (b *browser) saveShot(name string, png []byte) {
	dir := screenshotDir(b.t)
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, png, 0o644); err != nil {
		b.t.Errorf("writing %s: %v", p, err)
		return
	}
	b.t.Logf("screenshot %s", p)
}

// TestBrowserSmoke: the harness drives a real chromium against a real
// server and reads back what the page shows.
func TestBrowserSmoke(t *testing.T) {
	findChromium(t) // skip before starting anything
	ts := startServer(t, nil)
	b := newBrowser(t, ts)
	if code := b.open("/healthz"); code != 200 {
		t.Fatalf("/healthz in the browser: HTTP %d", code)
	}
	if body := b.text("body"); !strings.Contains(body, `"ok"`) {
		t.Errorf("/healthz shows %q", body)
	}
	if code := b.open("/no-such-page"); code != 404 {
		t.Errorf("/no-such-page in the browser: HTTP %d, want 404", code)
	}
	b.screenshot("00-smoke-404.png")
}

// Machines of the flow.
const (
	macSeed  = "52:54:00:aa:00:01" // configured through the API before login
	macDisc  = "52:54:00:aa:00:02" // discovered by PXE before login
	macLive  = "52:54:00:12:34:56" // discovered by PXE while the table is open
	seedName = "seed.img"
)

// TestBrowserFlow is the acceptance flow in a real browser: log
// in through the form, read the dashboard, watch a PXE discovery appear
// live in the machine table, edit a machine (a refused value first),
// bulk-change machines, delete one, upload an image and a boot file with
// progress, change settings, log out, and revoke every session.
func TestBrowserFlow(t *testing.T) {
	findChromium(t) // skip before starting anything
	ts := startServer(t, nil)
	h := ts.auth()
	if r := ts.do(t, "PUT", "/images/"+seedName, bytes.NewReader(randomBytes(t, 256<<10)), h); r.code != 201 {
		t.Fatalf("seeding an image: %d %s", r.code, r.body)
	}
	waitCatalog(t, ts, seedName)
	if r := ts.do(t, "PUT", "/machines/"+macSeed, strings.NewReader(`{"hostname":"alpha","image":"seed.img","boot_policy":"tui"}`), h); r.code != 201 {
		t.Fatalf("seeding a machine: %d %s", r.code, r.body)
	}
	if r := ts.report(t, macSeed, "done", nil); r.code != 200 {
		t.Fatalf("marking %s flashed: %d %s", macSeed, r.code, r.body)
	}
	if r := ts.do(t, "PUT", "/machines/"+macSeed, strings.NewReader(`{"boot_policy":"local"}`), h); r.code != 200 {
		t.Fatalf("seeding a machine: %d %s", r.code, r.body)
	}
	if r := ts.do(t, "GET", "/pxe/"+macDisc, nil, nil); r.code != 200 {
		t.Fatalf("discovering %s: %d %s", macDisc, r.code, r.body)
	}
	b := newBrowser(t, ts)
	start := time.Now()
	defer func() { t.Logf("browser flow took %s", time.Since(start).Round(time.Millisecond)) }()

	step := func(name string, f func(t *testing.T, b *browser)) bool {
		t.Helper()
		return t.Run(name, func(t *testing.T) {
			b := b.on(t)
			defer func() {
				if t.Failed() {
					b.screenshot("fail-" + name + ".png")
				}
			}()
			f(t, b)
		})
	}
	var cookie string // the session cookie's value after login

	if !step("Login", func(t *testing.T, b *browser) {
		// A page without a session leads to the login form, which
		// remembers where to come back to.
		if code := b.open("/ui/machines"); code != 200 {
			t.Errorf("/ui/machines without a session ends with HTTP %d, want 200 (the login page)", code)
		}
		p, q := b.path()
		if p != "/ui/login" || q.Get("next") != "/ui/machines" {
			t.Fatalf("without a session /ui/machines led to %s, want /ui/login?next=/ui/machines", b.location())
		}
		b.waitFor("form#login-form")
		if m := b.attr("form#login-form", "method"); !strings.EqualFold(m, "post") {
			t.Errorf("form#login-form method %q, want post", m)
		}
		if ty := b.attr("input#password", "type"); ty != "password" {
			t.Errorf("input#password type %q, want password", ty)
		}
		b.screenshot("01-login.png")

		// A wrong password: 401 and a message on the form.
		if code := b.login("not the password"); code != 401 {
			t.Errorf("wrong password: HTTP %d, want 401", code)
		}
		if msg := b.text("#login-error"); msg == "" {
			t.Error("wrong password: #login-error is empty")
		} else {
			t.Logf("wrong password says: %s", msg)
		}
		if b.sessionCookie() != nil {
			t.Error("a wrong password left a session cookie")
		}
		b.screenshot("01b-login-wrong-password.png")

		// The right one: back to where we wanted to go.
		if code := b.login(testPassword); code != 200 {
			t.Errorf("login: HTTP %d, want 200 after the redirect", code)
		}
		b.wantPath("/ui/machines")
		c := b.sessionCookie()
		if c == nil {
			t.Fatalf("no %s cookie after login", CookieName)
		}
		if !c.HTTPOnly || c.SameSite != network.CookieSameSiteStrict {
			t.Errorf("%s cookie: HttpOnly %v SameSite %q, want HttpOnly and Strict", CookieName, c.HTTPOnly, c.SameSite)
		}
		if js[bool](b, `document.cookie.includes("`+CookieName+`")`) {
			t.Errorf("page scripts can read the %s cookie", CookieName)
		}
		cookie = c.Value
		// Logged in, /ui goes to the dashboard.
		if code := b.open("/ui"); code != 200 {
			t.Errorf("/ui: HTTP %d", code)
		}
		b.wantPath("/ui/dashboard")
	}) {
		return
	}

	step("Dashboard", func(t *testing.T, b *browser) {
		// Every page has the navigation and the logout form.
		pages := []string{"/ui/dashboard", "/ui/machines", "/ui/images", "/ui/boot", "/ui/settings"}
		for _, p := range append(pages, "/ui/machines/"+macSeed) {
			if code := b.open(p); code != 200 {
				t.Errorf("%s: HTTP %d", p, code)
				continue
			}
			for _, href := range pages {
				if b.count(`nav a[href="`+href+`"]`) == 0 {
					t.Errorf("%s: no nav link to %s", p, href)
				}
			}
			if b.count("form#logout-form button#logout") != 1 {
				t.Errorf("%s: no form#logout-form with button#logout", p)
			}
			if a := b.attr("form#logout-form", "action"); a != "/ui/logout" {
				t.Errorf("%s: form#logout-form action %q", p, a)
			}
		}
		if code := b.open("/ui/dashboard"); code != 200 {
			t.Fatalf("/ui/dashboard: HTTP %d", code)
		}
		for sel, want := range map[string]string{
			"#count-machines": "2", "#count-discovered": "1", "#count-flashed-24h": "1", "#count-images": "1",
		} {
			if got := b.text(sel); got != want {
				t.Errorf("%s shows %q, want %q", sel, got, want)
			}
		}
		missing := b.text("#boot-missing")
		for _, f := range bootArtifacts {
			if !strings.Contains(missing, f) {
				t.Errorf("#boot-missing does not name %s: %q", f, missing)
			}
		}
		// The wrong password above was logged as a warning.
		if errs := b.text("#last-errors"); !strings.Contains(errs, "login refused") {
			t.Errorf("#last-errors does not show the refused login: %q", errs)
		}
		b.screenshot("02-dashboard.png")
		b.phoneScreenshot("phone-02-dashboard.png")
	})

	step("MachinesLive", func(t *testing.T, b *browser) {
		if code := b.click(`nav a[href="/ui/machines"]`); code != 200 {
			t.Fatalf("/ui/machines: HTTP %d", code)
		}
		b.wantPath("/ui/machines")
		b.waitFor("table#machines tbody#machine-rows")
		if n := b.count("#machine-rows tr[data-mac]"); n != 2 {
			t.Errorf("%d machine rows, want 2", n)
		}
		if got := b.rowText(macSeed, "hostname"); got != "alpha" {
			t.Errorf("%s hostname cell %q", macSeed, got)
		}
		if got := b.rowText(macSeed, "policy"); !strings.Contains(got, "local") {
			t.Errorf("%s policy cell %q", macSeed, got)
		}
		if got := b.rowText(macSeed, "image"); !strings.Contains(got, seedName) {
			t.Errorf("%s image cell %q", macSeed, got)
		}
		if b.count(macRow(macSeed)+".discovered") != 0 {
			t.Errorf("%s has an image but its row is marked discovered", macSeed)
		}
		if b.count(macRow(macDisc)+".discovered") != 1 {
			t.Errorf("%s came from PXE with no image but its row is not marked discovered", macDisc)
		}
		if got := b.attr(macRow(macSeed), "data-mac"); got != macSeed {
			t.Errorf("data-mac %q, want %q", got, macSeed)
		}
		if got := b.attr(macRow(macSeed)+" input.select-row", "value"); got != macSeed {
			t.Errorf("select-row value %q, want %q", got, macSeed)
		}
		if got := b.attr(macRow(macSeed)+" a.machine-link", "href"); got != "/ui/machines/"+macSeed && got != "/ui/machines/"+url.PathEscape(macSeed) {
			t.Errorf("machine-link href %q", got)
		}
		for _, c := range []string{"mac", "hostname", "image", "policy", "next-boot", "last-seen", "last-flashed"} {
			if b.count(macRow(macDisc)+" td."+c) != 1 {
				t.Errorf("the row of %s has no td.%s", macDisc, c)
			}
		}
		// Nothing runs workflows yet: no column shows their (never written) status.
		if n := b.count("#machine-rows td.workflow"); n != 0 {
			t.Errorf("%d td.workflow cells: the workflow status column is back before its feature", n)
		}
		if got := b.rowText(macSeed, "last-flashed"); got == "" || got == "—" {
			t.Errorf("%s was flashed but td.last-flashed is %q", macSeed, got)
		}

		// Live: a machine PXE-boots while the table is open.
		b.waitLiveTable()
		js[int](b, `window.__btyNoReload = 42`)
		if r := ts.do(t, "GET", "/pxe/"+macLive, nil, nil); r.code != 200 {
			t.Fatalf("PXE contact: %d %s", r.code, r.body)
		}
		b.waitFor(macRow(macLive))
		if js[int](b, `window.__btyNoReload || 0`) != 42 {
			t.Error("the page reloaded to show the new machine (want a live update)")
		}
		if b.count(macRow(macLive)+".discovered") != 1 {
			t.Errorf("the live row of %s is not marked discovered: class %q", macLive, b.attr(macRow(macLive), "class"))
		}
		if got := b.attr(macRow(macLive), "data-mac"); got != macLive {
			t.Errorf("live row data-mac %q", got)
		}
		if got := b.rowText(macLive, "mac"); !strings.Contains(got, macLive) {
			t.Errorf("live row td.mac %q", got)
		}
		if got := b.rowText(macLive, "policy"); !strings.Contains(got, "tui") {
			t.Errorf("live row td.policy %q, want tui", got)
		}
		// Screenshots at the end (also after a failure): taking one here
		// would let the next change miss the window this checks.
		defer b.phoneScreenshot("phone-03-machines.png")
		defer b.screenshot("03-machines.png")
		// A change made elsewhere shows up too, even when it comes right
		// after the previous update (the table must not drop the last of
		// a quick series of events).
		if r := ts.do(t, "PUT", "/machines/"+macSeed, strings.NewReader(`{"hostname":"alpha2"}`), h); r.code != 200 {
			t.Fatalf("API update: %d %s", r.code, r.body)
		}
		b.poll("the live hostname change", fmt.Sprintf(`document.querySelector(%s)?.textContent.trim() === "alpha2"`, jsq(macRow(macSeed)+" td.hostname")))
		if js[int](b, `window.__btyNoReload || 0`) != 42 {
			t.Error("the page reloaded to show a changed machine (want a live update)")
		}
		if n := b.count("#machine-rows tr[data-mac]"); n != 3 {
			t.Errorf("%d rows after the live updates, want 3", n)
		}
	})

	step("MachinesFilterSort", func(t *testing.T, b *browser) {
		b.open("/ui/machines")
		b.waitLiveTable()
		macs := func() []string {
			return js[[]string](b, `Array.from(document.querySelectorAll("#machine-rows tr[data-mac]")).filter(r => r.offsetParent !== null).map(r => r.dataset.mac)`)
		}
		// The filter applies as one types or picks (no submit button
		// with scripts on); wait for the rows and for htmx to be idle.
		visible := `Array.from(document.querySelectorAll("#machine-rows tr[data-mac]")).filter(r => r.offsetParent !== null).length`
		idle := `!document.querySelector(".htmx-request, .htmx-swapping, .htmx-settling")`
		b.fill("#q", "alpha2")
		b.poll("the text filter", visible+` === 1 && `+idle)
		if got := macs(); len(got) != 1 || got[0] != macSeed {
			t.Errorf("filter q=alpha2 shows %v, want [%s]", got, macSeed)
		}
		b.fill("#q", "")
		b.choose("#policy-filter", "tui")
		b.poll("the policy filter", visible+` === 2 && `+idle)
		time.Sleep(400 * time.Millisecond) // past the search field's 300 ms delay
		b.poll("the policy filter", visible+` === 2 && `+idle)
		if got := macs(); !slices.Contains(got, macDisc) || !slices.Contains(got, macLive) {
			t.Errorf("policy filter tui shows %v, want %s and %s", got, macDisc, macLive)
		}
		// Sorting: the column headers link to ?sort=...; the order follows.
		b.open("/ui/machines")
		b.waitLiveTable()
		if b.count(`#machines th a[href*="sort=hostname"]`) == 0 {
			t.Error("no sort link on the hostname column")
		}
		if b.count(`#machines th a[href*="sort=mac"]`) == 0 {
			t.Fatal("no sort link on the MAC column")
		}
		if code := b.click(`#machines th a[href*="sort=mac"]`); code != 200 {
			t.Errorf("sorting: HTTP %d", code)
		}
		_, q := b.path()
		first := macs()
		if q.Get("sort") != "mac" || len(first) != 3 {
			t.Fatalf("after clicking the MAC header: %s with rows %v", b.location(), first)
		}
		asc := slices.IsSorted(first)
		desc := slices.IsSortedFunc(first, func(a, b string) int { return strings.Compare(b, a) })
		if !asc && !desc {
			t.Errorf("sorted by MAC (%s) the rows are %v", b.location(), first)
		}
		for _, dir := range []string{"asc", "desc"} {
			b.open("/ui/machines?sort=mac&dir=" + dir)
			b.waitLiveTable()
			got := macs()
			want := slices.Sorted(slices.Values(got))
			if dir == "desc" {
				slices.Reverse(want)
			}
			if len(got) != 3 || !slices.Equal(got, want) {
				t.Errorf("?sort=mac&dir=%s: rows %v", dir, got)
			}
		}
		b.open("/ui/machines?sort=hostname&dir=desc")
		b.waitLiveTable()
		if got := macs(); len(got) != 3 || got[0] != macSeed {
			t.Errorf("?sort=hostname&dir=desc: rows %v, want %s (alpha2; the others have none) first", got, macSeed)
		}
	})

	detail := "/ui/machines/" + macLive
	step("MachineRecord", func(t *testing.T, b *browser) {
		// Every field of the record is on the page, and free text is
		// shown as text, never as markup.
		markup := `<img id="xss" src="/nope" onerror="window.__xss=1">`
		if r := ts.do(t, "PUT", "/machines/"+macSeed, strings.NewReader(fmt.Sprintf(`{"cijoe_workflow_ref":%q,"provisioning_mode":"cloud-init"}`, markup)), h); r.code != 200 {
			t.Fatalf("API update: %d %s", r.code, r.body)
		}
		var m fleet.Machine
		ts.do(t, "GET", "/machines/"+macSeed, nil, h).json(t, &m)
		if code := b.open("/ui/machines/" + macSeed); code != 200 {
			t.Fatalf("machine page: HTTP %d", code)
		}
		fields := b.text("dl#machine-fields")
		for name, v := range map[string]string{"mac": m.MAC.String(), "hostname": m.Hostname, "image": m.Image, "provisioning_mode": string(m.ProvisioningMode),
			"cijoe_workflow_ref": m.CijoeWorkflowRef, "boot_policy": string(m.BootPolicy)} {
			if !strings.Contains(fields, v) {
				t.Errorf("dl#machine-fields does not show %s %q:\n%s", name, v, fields)
			}
		}
		for name, v := range map[string]*time.Time{"discovered_at": m.DiscoveredAt, "last_seen_at": m.LastSeenAt, "last_flashed_at": m.LastFlashedAt,
			"created_at": &m.CreatedAt, "updated_at": &m.UpdatedAt} {
			if v == nil {
				continue
			}
			if sel := fmt.Sprintf(`dl#machine-fields time[datetime=%q]`, v.UTC().Format(time.RFC3339)); b.count(sel) == 0 {
				t.Errorf("dl#machine-fields has no %s for %s (%s)", sel, name, v)
			}
		}
		if b.count("#xss") != 0 || js[bool](b, `!!window.__xss`) {
			t.Error("the workflow reference was rendered as markup")
		}
		if v, _ := run(b, chromedp.Value(chromedp.CSS("#cijoe_workflow_ref"))); v != markup {
			t.Errorf("input#cijoe_workflow_ref value %q, want %q", v, markup)
		}
		// Policy local: the script boots the disk.
		if s := b.text("pre#ipxe-script"); !strings.Contains(s, "sanboot") || !strings.Contains(s, "exit") || strings.Contains(s, "kernel ") {
			t.Errorf("pre#ipxe-script for policy local:\n%s", s)
		}
	})

	step("MachineEdit", func(t *testing.T, b *browser) {
		b.open("/ui/machines")
		b.waitLiveTable()
		if code := b.click(macRow(macLive) + " a.machine-link"); code != 200 {
			t.Fatalf("machine page: HTTP %d", code)
		}
		b.wantPath(detail)
		fields := b.text("dl#machine-fields")
		for _, want := range []string{macLive, "tui", "127.0.0.1"} {
			if !strings.Contains(fields, want) {
				t.Errorf("dl#machine-fields lacks %q: %q", want, fields)
			}
		}
		if s := b.text("pre#ipxe-script"); !strings.HasPrefix(s, "#!ipxe") || !strings.Contains(s, "bty.mode=interactive") {
			t.Errorf("pre#ipxe-script for a tui machine:\n%s", s)
		}
		if opts := b.options("select#image"); !slices.Contains(opts, "") || !slices.Contains(opts, seedName) {
			t.Errorf("select#image options %q, want \"\" and %q", opts, seedName)
		}
		for _, sel := range []string{"select#provisioning_mode", "input#hostname", "input#cijoe_workflow_ref", "select#boot_policy", "form#machine-form button#save"} {
			if b.count(sel) != 1 {
				t.Errorf("the edit form has no %s", sel)
			}
		}
		if opts := b.options("select#boot_policy"); !slices.Contains(opts, "flash") || !slices.Contains(opts, "local") || !slices.Contains(opts, "tui") {
			t.Errorf("select#boot_policy options %q", opts)
		}
		b.screenshot("04-machine-detail.png")
		b.phoneScreenshot("phone-04-machine-detail.png")

		// A bad hostname: 400, the message by the field, nothing saved.
		b.fill("#hostname", "bad_host!")
		b.choose("#boot_policy", "flash")
		if code := b.click("#save"); code != 400 {
			t.Errorf("saving hostname bad_host!: HTTP %d, want 400", code)
		}
		if msg := b.text("#hostname-error"); msg == "" {
			t.Error("#hostname-error is empty after a bad hostname")
		} else {
			t.Logf("bad hostname says: %s", msg)
		}
		if v, _ := run(b, chromedp.Value(chromedp.CSS("#hostname"))); v != "bad_host!" {
			t.Errorf("the re-rendered form lost what was typed: hostname %q", v)
		}
		var m fleet.Machine
		ts.do(t, "GET", "/machines/"+macLive, nil, h).json(t, &m)
		if m.Hostname != "" || m.BootPolicy != "tui" {
			t.Errorf("a refused form changed the machine: hostname %q policy %q", m.Hostname, m.BootPolicy)
		}
		b.screenshot("04b-machine-invalid.png")

		// A good one, with policy flash and an image.
		b.fill("#hostname", "node-a1")
		b.choose("#boot_policy", "flash")
		b.choose("#image", seedName)
		if code := b.click("#save"); code != 200 {
			t.Errorf("saving: HTTP %d, want 200 after the redirect", code)
		}
		b.wantPath(detail)
		if f := b.text("#flash"); f == "" {
			t.Error("no #flash message after saving")
		}
		ts.do(t, "GET", "/machines/"+macLive, nil, h).json(t, &m)
		if m.Hostname != "node-a1" || m.BootPolicy != "flash" || m.Image != seedName {
			t.Errorf("after saving: hostname %q policy %q image %q", m.Hostname, m.BootPolicy, m.Image)
		}
		if f := b.text("dl#machine-fields"); !strings.Contains(f, "node-a1") || !strings.Contains(f, "flash") {
			t.Errorf("dl#machine-fields after saving: %q", f)
		}
		if s := b.text("pre#ipxe-script"); !strings.Contains(s, "kernel ") || !strings.Contains(s, "bty.image_url="+ts.URL+"/images/"+seedName) ||
			!strings.Contains(s, "bty.hostname=node-a1") {
			t.Errorf("pre#ipxe-script for flash with an image:\n%s", s)
		}
		// The cloud-init seed in its textarea: a #cloud-config that is not
		// YAML is refused with its line beside the field and kept in the
		// textarea, nothing saved; a good one (typed with CRLF, as a
		// browser on Windows sends it) is saved with LF.
		badUD := "#cloud-config\nusers:\n  - name: a\n   bad: [\n"
		b.fill("#user_data", badUD)
		if code := b.click("#save"); code != 400 {
			t.Errorf("saving a broken #cloud-config: HTTP %d, want 400", code)
		}
		if msg := b.text("#user_data-error"); !strings.Contains(msg, "line 4") {
			t.Errorf("#user_data-error %q, want the YAML error's line 4", msg)
		}
		if v, _ := run(b, chromedp.Value(chromedp.CSS("#user_data"))); v != badUD {
			t.Errorf("the re-rendered form lost the user-data typed: %q", v)
		}
		ts.do(t, "GET", "/machines/"+macLive, nil, h).json(t, &m)
		if m.UserData != "" {
			t.Errorf("a refused form saved user_data %q", m.UserData)
		}
		b.fill("#user_data", "#cloud-config\r\nhostname: node-a1\r\n")
		if code := b.click("#save"); code != 200 {
			t.Errorf("saving good user-data: HTTP %d, want 200 after the redirect", code)
		}
		ts.do(t, "GET", "/machines/"+macLive, nil, h).json(t, &m)
		if m.UserData != "#cloud-config\nhostname: node-a1\n" {
			t.Errorf("saved user_data %q, want the LF text", m.UserData)
		}
		if f := b.text("dl#machine-fields"); !strings.Contains(f, "user-data 32 bytes") {
			t.Errorf("dl#machine-fields does not show the seed's size: %q", f)
		}

		// Back in the table.
		if code := b.click(`nav a[href="/ui/machines"]`); code != 200 {
			t.Fatalf("/ui/machines: HTTP %d", code)
		}
		if got := b.rowText(macLive, "hostname"); got != "node-a1" {
			t.Errorf("row hostname %q, want node-a1", got)
		}
		if got := b.rowText(macLive, "policy"); !strings.Contains(got, "flash") {
			t.Errorf("row policy %q, want flash", got)
		}
		if got := b.rowText(macLive, "image"); !strings.Contains(got, seedName) {
			t.Errorf("row image %q", got)
		}
		if b.count(macRow(macLive)+".discovered") != 0 {
			t.Error("the row is still marked discovered after an image was assigned")
		}
	})

	step("Bulk", func(t *testing.T, b *browser) {
		b.open("/ui/machines")
		b.waitLiveTable()
		b.clickHere(macRow(macSeed) + " input.select-row")
		b.clickHere(macRow(macLive) + " input.select-row")
		// A live update while rows are checked keeps them checked.
		js[int](b, `(document.getElementById("machines-table") || document.querySelector("#machines")).__btyOld = 1`)
		if r := ts.do(t, "GET", "/pxe/"+macDisc, nil, nil); r.code != 200 {
			t.Fatalf("PXE contact: %d", r.code)
		}
		if err := b.tryPoll(`!(document.getElementById("machines-table") || document.querySelector("#machines")).__btyOld
			&& !document.querySelector(".htmx-request, .htmx-swapping, .htmx-settling")`, 3*time.Second); err != nil {
			t.Logf("no live refresh of the table seen after a PXE contact: %v", err)
		}
		checked := js[[]string](b, `Array.from(document.querySelectorAll("#machine-rows input.select-row:checked")).map(e => e.value)`)
		if slices.Sort(checked); !slices.Equal(checked, []string{macLive, macSeed}) {
			t.Errorf("after a live update the checked rows are %v, want %s and %s", checked, macSeed, macLive)
		}
		b.choose("#bulk-action", "policy")
		b.choose("#bulk-policy", "tui")
		if code := b.click("#bulk-apply"); code != 200 {
			t.Errorf("bulk apply: HTTP %d", code)
		}
		b.wantPath("/ui/machines")
		for _, mac := range []string{macSeed, macLive} {
			b.poll("policy tui in the row of "+mac, fmt.Sprintf(`document.querySelector(%s)?.textContent.includes("tui")`, jsq(macRow(mac)+" td.policy")))
		}
		if f := js[string](b, `document.querySelector("#flash")?.textContent.trim() ?? ""`); !strings.Contains(f, "2") {
			t.Errorf("#flash after the bulk change is %q, want the count of machines changed", f)
		} else {
			t.Logf("bulk policy says: %s", f)
		}
		for _, mac := range []string{macSeed, macLive} {
			var m fleet.Machine
			ts.do(t, "GET", "/machines/"+mac, nil, h).json(t, &m)
			if m.BootPolicy != "tui" {
				t.Errorf("after bulk policy tui, %s has %q", mac, m.BootPolicy)
			}
		}
		var m fleet.Machine
		ts.do(t, "GET", "/machines/"+macDisc, nil, h).json(t, &m)
		if m.BootPolicy != "tui" || m.Image != "" {
			t.Errorf("an unselected machine changed: %+v", m)
		}
		// Bulk image on the discovered machine.
		b.open("/ui/machines")
		b.waitLiveTable()
		b.clickHere(macRow(macDisc) + " input.select-row")
		b.choose("#bulk-action", "image")
		b.choose("#bulk-image", seedName)
		// On a slow network the page the form leads to can arrive after
		// the live refresh the change triggers on the old page: hold that
		// page back (700 ms) so the refresh reaches the server first. The
		// one-shot message must still show on the new page.
		if code := b.clickSlowNav("#bulk-apply", "/ui/machines*", 700*time.Millisecond); code != 200 {
			t.Errorf("bulk image: HTTP %d", code)
		}
		if f := js[string](b, `document.querySelector("#flash")?.textContent.trim() ?? ""`); f == "" {
			t.Error("no #flash after the bulk image change on a slow network (the live refresh of the old page took the one-shot message)")
		} else {
			t.Logf("bulk image says: %s", f)
		}
		b.poll("the bulk image", fmt.Sprintf(`document.querySelector(%s)?.textContent.includes(%s)`, jsq(macRow(macDisc)+" td.image"), jsq(seedName)))
		ts.do(t, "GET", "/machines/"+macDisc, nil, h).json(t, &m)
		if m.Image != seedName {
			t.Errorf("after bulk image, %s has image %q", macDisc, m.Image)
		}
		if b.count(macRow(macDisc)+".discovered") != 0 {
			t.Error("the row is still marked discovered after bulk image")
		}
		b.screenshot("03b-machines-bulk.png")
	})

	step("Delete", func(t *testing.T, b *browser) {
		b.open("/ui/machines/" + macDisc)
		if code := b.click("a#delete-link"); code != 200 {
			t.Fatalf("delete link: HTTP %d", code)
		}
		b.wantPath("/ui/machines/" + macDisc + "/delete")
		if a := b.attr("form#delete-form", "action"); a != "" && a != "/ui/machines/"+macDisc+"/delete" && a != "/ui/machines/"+url.PathEscape(macDisc)+"/delete" {
			t.Errorf("form#delete-form action %q", a)
		}
		if body := b.text("main"); !strings.Contains(body, macDisc) {
			t.Errorf("the confirmation does not name the machine: %q", body)
		}
		b.screenshot("04c-machine-delete-confirm.png")
		if code := b.click("#confirm-delete"); code != 200 {
			t.Errorf("confirm delete: HTTP %d", code)
		}
		b.wantPath("/ui/machines")
		if f := b.text("#flash"); f == "" {
			t.Error("no #flash after deleting")
		}
		b.waitFor(macRow(macSeed))
		if b.count(macRow(macDisc)) != 0 {
			t.Error("the deleted machine's row is still there")
		}
		if r := ts.do(t, "GET", "/machines/"+macDisc, nil, h); r.code != 404 {
			t.Errorf("deleted machine: GET %d", r.code)
		}
	})

	step("Images", func(t *testing.T, b *browser) {
		if code := b.open("/ui/images"); code != 200 {
			t.Fatalf("/ui/images: HTTP %d", code)
		}
		if got := b.text(`#images tr[data-name="` + seedName + `"] td.format`); got != "raw" {
			t.Errorf("%s format cell %q, want raw", seedName, got)
		}
		// A real 4 MiB disk image, compressed with zstd.
		raw := patternImage(4 << 20)
		zst := compress(t, "zstd", raw)
		dir := t.TempDir()
		src := filepath.Join(dir, "x.img.zst")
		if err := os.WriteFile(src, zst, 0o644); err != nil {
			t.Fatal(err)
		}
		b.must("choosing the file", chromedp.SetUploadFiles(chromedp.CSS("#image-file"), []string{src}))
		if b.count("progress#upload-progress") != 1 {
			t.Error("no progress#upload-progress")
		}
		// Throttle the upload (about 2 MB/s for this one URL) so the bar
		// can be seen part-way.
		if _, err := chromedp.Call(b.ctx, network.EmulateNetworkConditionsByRule, network.EmulateNetworkConditionsByRuleParams{
			MatchedNetworkConditions: []*network.Conditions{{URLPattern: ts.URL + "/images/x.img.zst", UploadThroughput: 2e6, DownloadThroughput: -1}},
		}); err != nil {
			t.Fatalf("throttling: %v", err)
		}
		requests := chromedp.Events(b.ctx, network.RequestWillBeSent)
		b.clickHere("#upload")
		b.poll("the progress bar part-way", `(p => p && p.max > 1 && p.value > 0 && p.value < p.max)(document.querySelector("#upload-progress"))
			&& /\d+ ?%/.test(document.querySelector("#upload-status")?.textContent ?? "")`)
		t.Logf("during the upload: %s", b.text("#upload-status"))
		// The file goes by XHR PUT straight to the API.
		for ev, err := range requests {
			if err != nil {
				t.Errorf("no request for the upload seen: %v", err)
				break
			}
			if strings.HasSuffix(ev.Request.URL, "x.img.zst") {
				if ev.Request.Method != "PUT" || ev.Request.URL != ts.URL+"/images/x.img.zst" || ev.Type != network.ResourceTypeXHR {
					t.Errorf("the upload went as %s %s (%s), want an XHR PUT to /images/x.img.zst", ev.Request.Method, ev.Request.URL, ev.Type)
				}
				break
			}
		}
		b.screenshot("05a-images-uploading.png")
		b.poll("the upload to finish", `/uploaded/i.test(document.querySelector("#upload-status")?.textContent ?? "")`)
		if _, err := chromedp.Call(b.ctx, network.EmulateNetworkConditionsByRule, network.EmulateNetworkConditionsByRuleParams{
			MatchedNetworkConditions: []*network.Conditions{}}); err != nil {
			t.Fatalf("unthrottling: %v", err)
		}
		status := b.text("#upload-status")
		if !strings.Contains(status, "x.img.zst") {
			t.Errorf("#upload-status %q does not name x.img.zst", status)
		}
		if v, mx := js[float64](b, `document.querySelector("#upload-progress").value`), js[float64](b, `document.querySelector("#upload-progress").max`); mx <= 0 || v != mx {
			t.Errorf("progress at the end: %v of %v", v, mx)
		}
		onDisk, err := os.ReadFile(filepath.Join(ts.cfg.ImageRoot, "x.img.zst"))
		if err != nil {
			t.Fatalf("the upload is not in the image root: %v", err)
		}
		if sha(onDisk) != sha(zst) {
			t.Errorf("sha256 on disk %s, source %s", sha(onDisk), sha(zst))
		}
		e := waitCatalog(t, ts, "x.img.zst")
		row := `#images tr[data-name="x.img.zst"]`
		if b.tryPoll(fmt.Sprintf(`document.querySelector(%s)`, jsq(row)), 3*time.Second) != nil {
			t.Log("the new image's row did not appear live; reloading")
			b.open("/ui/images")
		}
		// The hashes are computed in the background: reload until the
		// row has one.
		deadline := time.Now().Add(stepTimeout)
		for !strings.Contains(b.text(row+" td.sha256"), (*e.SHA256)[:12]) && time.Now().Before(deadline) {
			time.Sleep(200 * time.Millisecond)
			b.open("/ui/images")
		}
		if got := b.text(row + " td.format"); got != "zst" {
			t.Errorf("format cell %q, want zst", got)
		}
		if got := b.text(row + " td.size"); got != humanize.IBytes(uint64(len(zst))) && !strings.Contains(got, fmt.Sprint(len(zst))) {
			t.Errorf("size cell %q, want %s (%d bytes)", got, humanize.IBytes(uint64(len(zst))), len(zst))
		}
		if got := b.text(row + " td.virtual-size"); got != "4.0 MiB" && !strings.Contains(got, "4194304") {
			t.Errorf("virtual size cell %q, want 4.0 MiB", got)
		}
		// The cell shows the file's hash (whole, or shortened to a prefix
		// of at least 12 digits), possibly with the decoded one.
		if got := strings.Fields(strings.NewReplacer("…", " ", "...", " ").Replace(b.text(row + " td.sha256"))); len(got) == 0 ||
			len(got[0]) < 12 || !strings.HasPrefix(*e.SHA256, got[0]) {
			t.Errorf("sha256 cell %q, want the file's %s", got, *e.SHA256)
		}
		b.screenshot("05-images.png")

		// Delete it through the confirmation page.
		if code := b.click(row + " a.delete-link"); code != 200 {
			t.Fatalf("image delete link: HTTP %d", code)
		}
		b.wantPath("/ui/images/x.img.zst/delete")
		b.screenshot("05b-image-delete-confirm.png")
		if code := b.click("form#delete-form #confirm-delete"); code != 200 {
			t.Errorf("confirm image delete: HTTP %d", code)
		}
		b.wantPath("/ui/images")
		if f := b.text("#flash"); f == "" {
			t.Error("no #flash after deleting the image")
		}
		if b.count(row) != 0 {
			t.Error("the deleted image's row is still there")
		}
		if _, err := os.Stat(filepath.Join(ts.cfg.ImageRoot, "x.img.zst")); !os.IsNotExist(err) {
			t.Errorf("the deleted image is still on disk: %v", err)
		}

		// The name field overrides the file's name.
		b.fill("#image-name", "custom.img.zst")
		b.must("choosing the file", chromedp.SetUploadFiles(chromedp.CSS("#image-file"), []string{src}))
		b.clickHere("#upload")
		b.poll("the named upload to finish", `/uploaded/i.test(document.querySelector("#upload-status")?.textContent ?? "")`)
		if st := b.text("#upload-status"); !strings.Contains(st, "custom.img.zst") {
			t.Errorf("#upload-status %q does not name custom.img.zst", st)
		}
		if got, err := os.ReadFile(filepath.Join(ts.cfg.ImageRoot, "custom.img.zst")); err != nil || sha(got) != sha(zst) {
			t.Errorf("custom.img.zst on disk: %v", err)
		}
		// A file that is not what its name says is refused, with the
		// reason on the page, and nothing is kept.
		bad := filepath.Join(dir, "bad.img.zst")
		if err := os.WriteFile(bad, randomBytes(t, 64<<10), 0o644); err != nil {
			t.Fatal(err)
		}
		b.must("choosing the bad file", chromedp.SetUploadFiles(chromedp.CSS("#image-file"), []string{bad}))
		b.clickHere("#upload")
		b.poll("the refused upload to end", `/fail|refus|error/i.test(document.querySelector("#upload-status")?.textContent ?? "")`)
		if st := b.text("#upload-status"); strings.Contains(strings.ToLower(st), "uploaded bad") || !strings.Contains(st, "400") && !strings.Contains(strings.ToLower(st), "not") {
			t.Errorf("#upload-status after a refused upload: %q", st)
		} else {
			t.Logf("refused upload says: %s", st)
		}
		if _, err := os.Stat(filepath.Join(ts.cfg.ImageRoot, "bad.img.zst")); !os.IsNotExist(err) {
			t.Errorf("a refused upload was kept: %v", err)
		}
		b.screenshot("05c-images-upload-refused.png")
		b.open("/ui/images")
		if b.count(`#images tr[data-name="bad.img.zst"]`) != 0 || b.count(`#images tr[data-name="custom.img.zst"]`) != 1 {
			t.Errorf("after the uploads the rows are %v, want custom.img.zst and no bad.img.zst",
				js[[]string](b, `Array.from(document.querySelectorAll("#images tr[data-name]")).map(r => r.dataset.name)`))
		}
	})

	step("Boot", func(t *testing.T, b *browser) {
		if code := b.click(`nav a[href="/ui/boot"]`); code != 200 {
			t.Fatalf("/ui/boot: HTTP %d", code)
		}
		const name = "bty-live-x86_64.vmlinuz"
		row := `#boot-files tr[data-name="` + name + `"]`
		for _, n := range bootArtifacts {
			if got := b.text(`#boot-files tr[data-name="` + n + `"] td.present`); got != "missing" {
				t.Errorf("%s present cell %q, want missing", n, got)
			}
		}
		if opts := b.options("select#boot-name"); !slices.Contains(opts, bootArtifacts[0]) || !slices.Contains(opts, bootArtifacts[1]) {
			t.Errorf("select#boot-name options %q", opts)
		}
		kernel := randomBytes(t, 300<<10)
		src := filepath.Join(t.TempDir(), "vmlinuz")
		if err := os.WriteFile(src, kernel, 0o644); err != nil {
			t.Fatal(err)
		}
		b.choose("#boot-name", name)
		b.must("choosing the boot file", chromedp.SetUploadFiles(chromedp.CSS("#boot-file"), []string{src}))
		b.clickHere("#boot-upload-submit")
		b.poll("the boot upload to finish", `/uploaded/i.test(document.querySelector("#boot-upload-status")?.textContent ?? "")`)
		if st := b.text("#boot-upload-status"); !strings.Contains(st, name) {
			t.Errorf("#boot-upload-status %q does not name %s", st, name)
		}
		if v, mx := js[float64](b, `document.querySelector("#boot-upload-progress").value`), js[float64](b, `document.querySelector("#boot-upload-progress").max`); mx <= 0 || v != mx {
			t.Errorf("boot progress at the end: %v of %v", v, mx)
		}
		onDisk, err := os.ReadFile(filepath.Join(ts.cfg.BootDir, name))
		if err != nil || sha(onDisk) != sha(kernel) {
			t.Errorf("the boot file on disk: %v (sha256 match %v)", err, err == nil && sha(onDisk) == sha(kernel))
		}
		if b.tryPoll(fmt.Sprintf(`document.querySelector(%s)?.textContent.trim() === "present"`, jsq(row+" td.present")), 3*time.Second) != nil {
			b.open("/ui/boot")
		}
		if got := b.text(row + " td.present"); got != "present" {
			t.Errorf("after the upload, present cell %q", got)
		}
		if got := b.text(row + " td.size"); got != humanize.IBytes(300<<10) && !strings.Contains(got, "307200") {
			t.Errorf("size cell %q, want %s", got, humanize.IBytes(300<<10))
		}
		b.screenshot("06-boot.png")
	})

	step("Settings", func(t *testing.T, b *browser) {
		if code := b.click(`nav a[href="/ui/settings"]`); code != 200 {
			t.Fatalf("/ui/settings: HTTP %d", code)
		}
		if opts := b.options("select#proxydhcp_iface"); !slices.Contains(opts, "") || !slices.Contains(opts, "lo") {
			t.Errorf("select#proxydhcp_iface options %q, want \"\" (off) and lo", opts)
		}
		b.screenshot("07-settings.png")
		// A bad subnet is refused by the form.
		b.choose("#proxydhcp_iface", "lo")
		b.fill("#proxydhcp_subnet", "banana")
		if code := b.click("#proxy-apply"); code != 400 {
			t.Errorf("bad subnet: HTTP %d, want 400", code)
		}
		if msg := b.text("#proxy-error"); msg == "" {
			t.Error("#proxy-error is empty after a bad subnet")
		}
		if v, _ := ts.st.Setting(context.Background(), SettingProxyIface); v != "" {
			t.Errorf("a refused setting was stored: iface %q", v)
		}
		b.screenshot("07b-settings-error.png")
		// Off is accepted.
		b.open("/ui/settings")
		b.choose("#proxydhcp_iface", "")
		b.fill("#proxydhcp_subnet", "")
		if code := b.click("#proxy-apply"); code != 200 {
			t.Errorf("proxy-DHCP off: HTTP %d", code)
		}
		if f := b.text("#flash"); f == "" {
			t.Error("no #flash after applying proxy-DHCP settings")
		}
	})

	step("Logout", func(t *testing.T, b *browser) {
		if cookie == "" {
			t.Skip("no session cookie from the login step")
		}
		b.open("/ui/dashboard")
		if code := b.click("#logout"); code != 200 {
			t.Errorf("logout: HTTP %d", code)
		}
		b.wantPath("/ui/login")
		if c := b.sessionCookie(); c != nil && c.Value == cookie {
			t.Error("the session cookie survived logout")
		}
		b.screenshot("08-logged-out.png")
		b.open("/ui/machines")
		if p, q := b.path(); p != "/ui/login" || q.Get("next") != "/ui/machines" {
			t.Errorf("after logout /ui/machines led to %s", b.location())
		}
		if r := ts.do(t, "GET", "/machines", nil, map[string]string{"Cookie": CookieName + "=" + cookie}); r.code != 401 {
			t.Errorf("the old cookie after logout: GET /machines %d, want 401", r.code)
		}
		if r := ts.do(t, "GET", "/machines", nil, map[string]string{"Authorization": "Bearer " + cookie}); r.code != 401 {
			t.Errorf("the old token after logout: GET /machines %d, want 401", r.code)
		}
		if r := ts.do(t, "GET", "/machines", nil, h); r.code != 200 {
			t.Errorf("logging out the browser also ended another session: %d", r.code)
		}
	})

	step("RevokeAll", func(t *testing.T, b *browser) {
		b.open("/ui/settings")
		b.wantPath("/ui/login")
		if code := b.login(testPassword); code != 200 {
			t.Fatalf("login again: HTTP %d", code)
		}
		b.wantPath("/ui/settings")
		other := ts.login(t, testPassword)
		if code := b.click("#revoke-all"); code != 200 {
			t.Errorf("revoke all: HTTP %d", code)
		}
		b.wantPath("/ui/login")
		for name, tok := range map[string]string{"the harness token": ts.token, "another session": other} {
			if r := ts.do(t, "GET", "/machines", nil, map[string]string{"Authorization": "Bearer " + tok}); r.code != 401 {
				t.Errorf("%s after revoke-all: %d, want 401", name, r.code)
			}
		}
		b.open("/ui/dashboard")
		b.wantPath("/ui/login")
	})
}

// waitSSESubscriber waits until the server has a live SSE subscriber
// (the machine table's stream), so an event is not sent before the page
// listens.
func waitSSESubscriber(t *testing.T, ts *testServer) {
	t.Helper()
	deadline := time.Now().Add(stepTimeout)
	for !regexp.MustCompile(`(?m)^bty_sse_subscribers [1-9]`).Match(ts.do(t, "GET", "/metrics", nil, nil).body) {
		if time.Now().After(deadline) {
			t.Fatal("the machine table opened no SSE stream (bty_sse_subscribers stays 0)")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// patternImage is a disk-like image: a pseudo-random first MiB, then
// numbered 4 KiB blocks with zeros between.
func patternImage(n int) []byte {
	b := make([]byte, n)
	r := mrand.New(mrand.NewPCG(1, 2))
	for i := 0; i < min(n, 1<<20); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	for off := 1 << 20; off+16 <= n; off += 4096 {
		copy(b[off:], fmt.Sprintf("block %08d", off/4096))
	}
	return b
}

// TestBrowserFormRefusals: the /ui forms refuse a post from another
// origin (403) or without a session (401, or a redirect to the login
// page), and change nothing; the same post from the UI's own origin is
// accepted. Plain net/http, no browser: a browser would not send these.
func TestBrowserFormRefusals(t *testing.T) {
	ts := startServer(t, nil)
	h := ts.auth()
	const mac = "52:54:00:00:00:42"
	if r := ts.do(t, "PUT", "/machines/"+mac, strings.NewReader(`{"hostname":"before"}`), h); r.code != 201 {
		t.Fatalf("creating %s: %d %s", mac, r.code, r.body)
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	send := func(method, path string, form url.Values, hdr map[string]string) (int, http.Header, string) {
		t.Helper()
		var body io.Reader
		if form != nil {
			body = strings.NewReader(form.Encode())
		}
		req, err := http.NewRequest(method, ts.URL+path, body)
		if err != nil {
			t.Fatal(err)
		}
		if form != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		res, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, res.Header, string(b)
	}
	hostname := func() string {
		var m fleet.Machine
		ts.do(t, "GET", "/machines/"+mac, nil, h).json(t, &m)
		return m.Hostname
	}
	form := func(host string) url.Values {
		return url.Values{"image": {""}, "provisioning_mode": {"none"}, "hostname": {host}, "cijoe_workflow_ref": {""},
			"boot_policy": {"local"}}
	}
	cookie := CookieName + "=" + ts.token

	// Redirects of pages.
	if code, hdr, _ := send("GET", "/ui", nil, nil); code != 303 || hdr.Get("Location") != "/ui/dashboard" {
		t.Errorf("GET /ui: %d to %q, want 303 to /ui/dashboard", code, hdr.Get("Location"))
	}
	for _, p := range []string{"/ui/dashboard", "/ui/machines", "/ui/machines/" + mac, "/ui/images", "/ui/boot", "/ui/settings"} {
		code, hdr, _ := send("GET", p, nil, nil)
		loc, _ := url.Parse(hdr.Get("Location"))
		if code != 303 || loc == nil || loc.Path != "/ui/login" || loc.Query().Get("next") != p {
			t.Errorf("GET %s without a session: %d to %q, want 303 to /ui/login?next=%s", p, code, hdr.Get("Location"), p)
		}
		if code, _, _ := send("GET", p, nil, map[string]string{"Cookie": cookie}); code != 200 {
			t.Errorf("GET %s with the session cookie: %d, want 200", p, code)
		}
	}

	path := "/ui/machines/" + mac
	// Another origin, with a valid session cookie: 403.
	if code, _, body := send("POST", path, form("evil1"), map[string]string{"Cookie": cookie, "Origin": "http://evil.example"}); code != 403 {
		t.Errorf("POST %s from another origin: %d, want 403\n%s", path, code, body)
	}
	// No session: 401 (or off to the login page).
	code, hdr, _ := send("POST", path, form("evil2"), map[string]string{"Origin": ts.URL})
	if code != 401 && !(code == 303 && strings.HasPrefix(hdr.Get("Location"), "/ui/login")) {
		t.Errorf("POST %s without a session: %d (Location %q), want 401 or 303 to /ui/login", path, code, hdr.Get("Location"))
	}
	// A revoked or made-up token is no session either.
	if code, _, _ := send("POST", path, form("evil3"), map[string]string{"Origin": ts.URL, "Cookie": CookieName + "=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}); code != 401 && code != 303 {
		t.Errorf("POST %s with a made-up cookie: %d, want 401", path, code)
	}
	if got := hostname(); got != "before" {
		t.Fatalf("a refused post changed the hostname to %q", got)
	}
	// Other state-changing forms refuse another origin too.
	for _, p := range []string{"/ui/machines/" + mac + "/delete", "/ui/machines/bulk", "/ui/settings/revoke-all", "/ui/settings/proxydhcp", "/ui/logout", "/ui/images/x.img/delete"} {
		if code, _, _ := send("POST", p, url.Values{"mac": {mac}, "action": {"policy"}, "policy": {"tui"}}, map[string]string{"Cookie": cookie, "Origin": "http://evil.example"}); code != 403 {
			t.Errorf("POST %s from another origin: %d, want 403", p, code)
		}
	}
	if r := ts.do(t, "GET", "/machines", nil, h); r.code != 200 {
		t.Fatalf("a refused revoke-all or logout ended the session: %d", r.code)
	}
	if got := hostname(); got != "before" {
		t.Fatalf("a refused post changed the machine: hostname %q", got)
	}
	// The same post from the UI's own origin is accepted: the refusals
	// above are about origin and session, not the form.
	code, hdr, body := send("POST", path, form("after"), map[string]string{"Cookie": cookie, "Origin": ts.URL})
	if code != 303 || hdr.Get("Location") != path && hdr.Get("Location") != "/ui/machines/"+url.PathEscape(mac) {
		t.Errorf("POST %s from our origin: %d to %q, want 303 back to the machine\n%s", path, code, hdr.Get("Location"), body)
	}
	if got := hostname(); got != "after" {
		t.Errorf("after an accepted post the hostname is %q", got)
	}

	// Login form: a wrong password is 401, a login from another origin
	// 403, a good one sets a strict HttpOnly cookie and goes to next.
	if code, _, _ := send("POST", "/ui/login", url.Values{"password": {"wrong"}}, map[string]string{"Origin": ts.URL}); code != 401 {
		t.Errorf("POST /ui/login with a wrong password: %d, want 401", code)
	}
	if code, hdr, _ := send("POST", "/ui/login", url.Values{"password": {testPassword}}, map[string]string{"Origin": "http://evil.example"}); code != 403 || hdr.Get("Set-Cookie") != "" {
		t.Errorf("POST /ui/login from another origin: %d (Set-Cookie %q), want 403 and no cookie", code, hdr.Get("Set-Cookie"))
	}
	code, hdr, _ = send("POST", "/ui/login", url.Values{"password": {testPassword}, "next": {"/ui/images"}}, map[string]string{"Origin": ts.URL})
	if code != 303 || hdr.Get("Location") != "/ui/images" {
		t.Errorf("POST /ui/login: %d to %q, want 303 to /ui/images", code, hdr.Get("Location"))
	}
	var sc *http.Cookie
	for _, c := range (&http.Response{Header: hdr}).Cookies() {
		if c.Name == CookieName {
			sc = c
		}
	}
	if sc == nil || !sc.HttpOnly || sc.SameSite != http.SameSiteStrictMode || sc.Value == "" {
		t.Errorf("login cookie %+v, want HttpOnly SameSite=Strict", sc)
	}
	// No open redirect after login.
	code, hdr, _ = send("POST", "/ui/login", url.Values{"password": {testPassword}, "next": {"//evil.example/ui/x"}}, map[string]string{"Origin": ts.URL})
	if code != 303 || hdr.Get("Location") != "/ui/dashboard" {
		t.Errorf("login with next=//evil.example: %d to %q, want /ui/dashboard", code, hdr.Get("Location"))
	}
}

// TestBrowserLocalTime: times are sent as <time datetime> in UTC and the
// page shows them in the browser's time zone (here Asia/Tokyo, UTC+9, no
// daylight saving time), marked data-local="1".
func TestBrowserLocalTime(t *testing.T) {
	findChromium(t) // skip before starting anything
	ts := startServer(t, nil)
	const mac = "52:54:00:77:00:01"
	seen := time.Date(2026, 3, 4, 20, 30, 15, 0, time.UTC) // 2026-03-05 05:30:15 in Tokyo
	archive := fmt.Sprintf(`{"format":"bty-state-v1","machines":[{"mac":%q,"hostname":"tz1","boot_policy":"local",
		"discovered_at":%q,"last_seen_at":%q,"last_seen_ip":"192.0.2.7","created_at":%q,"updated_at":%q}]}`,
		mac, seen.Add(-time.Hour).Format(time.RFC3339), seen.Format(time.RFC3339), seen.Add(-time.Hour).Format(time.RFC3339), seen.Format(time.RFC3339))
	if r := ts.do(t, "POST", "/state/import", strings.NewReader(archive), ts.auth()); r.code != 200 {
		t.Fatalf("import: %d %s", r.code, r.body)
	}
	b := newBrowser(t, ts)
	if _, err := chromedp.Call(b.ctx, emulation.SetTimezoneOverride, emulation.SetTimezoneOverrideParams{TimezoneID: "Asia/Tokyo"}); err != nil {
		t.Fatalf("setting the time zone: %v", err)
	}
	if z := js[string](b, `Intl.DateTimeFormat().resolvedOptions().timeZone`); z != "Asia/Tokyo" {
		t.Fatalf("the browser's time zone is %q", z)
	}
	b.open("/ui/machines/" + mac)
	b.wantPath("/ui/login")
	if code := b.login(testPassword); code != 200 {
		t.Fatalf("login: HTTP %d", code)
	}
	b.wantPath("/ui/machines/" + mac)
	want := seen.In(time.FixedZone("JST", 9*3600)).Format("2006-01-02 15:04:05")
	sel := fmt.Sprintf(`time[datetime=%q]`, seen.Format(time.RFC3339))
	check := func(where string) {
		t.Helper()
		s := where + " " + sel
		// Wait until the element is localised and stays so (a live update
		// may replace it with a fresh UTC rendering, localised again).
		if err := b.tryPoll(fmt.Sprintf(`(e => e?.getAttribute("data-local") === "1" && e.textContent.includes(%s))(document.querySelector(%s))`,
			jsq(want), jsq(s)), stepTimeout); err != nil {
			t.Errorf("%s shows %q (data-local %q), want %q (Asia/Tokyo)", s, b.text(s), b.attr(s, "data-local"), want)
		}
	}
	check("dl#machine-fields")
	b.screenshot("09-machine-detail-tokyo.png")
	b.open("/ui/machines")
	b.waitLiveTable()
	check(macRow(mac) + " td.last-seen")
	b.screenshot("09b-machines-tokyo.png")
}

// TestBrowserFlashLive: the machine page's flash section follows the
// flash as it goes (over the page's SSE stream, without a reload): a
// demand flash waiting for its PXE boot, then the PXE contact, then the
// live env's progress report.
func TestBrowserFlashLive(t *testing.T) {
	findChromium(t) // skip before starting anything
	ts := startServer(t, nil)
	const mac = "52:54:00:f3:00:01"
	if err := os.WriteFile(filepath.Join(ts.cfg.ImageRoot, "live.img"), make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := ts.do(t, "PUT", "/machines/"+mac, strings.NewReader(`{"image":"live.img","hostname":"fl1"}`), ts.auth()); r.code != 201 {
		t.Fatal(r.code, string(r.body))
	}
	if r := ts.do(t, "POST", "/machines/"+mac+"/reflash", nil, ts.auth()); r.code != 202 {
		t.Fatalf("reflash: %d %s", r.code, r.body)
	}
	b := newBrowser(t, ts)
	b.open("/ui/machines/" + mac)
	b.wantPath("/ui/login")
	if code := b.login(testPassword); code != 200 {
		t.Fatalf("login: HTTP %d", code)
	}
	b.wantPath("/ui/machines/" + mac)
	if r, p := b.text("#flash-result"), b.text("#flash-phase"); r != "running" || p != "requested" {
		t.Fatalf("the flash shows %s, phase %s; want running, requested", r, p)
	}
	js[int](b, `window.__samePage = 1`)
	waitSSESubscriber(t, ts)
	_, cycle := ts.boot(t, "127.0.0.1", mac)
	if cycle == "" {
		t.Fatal("the PXE contact opened no flash cycle")
	}
	b.poll("phase pxe shown live", `document.getElementById("flash-phase")?.textContent.trim() === "pxe"`)
	body := `{"image":"live.img","bytes_written":1048576,"total_bytes":4194304,"rate":2097152}`
	if r := ts.callFrom(t, "127.0.0.1", "POST", "/pxe/"+mac+"/progress", cycle, strings.NewReader(body)); r.code/100 != 2 {
		t.Fatalf("progress: %d %s", r.code, r.body)
	}
	b.poll("phase fetch shown live", `document.getElementById("flash-phase")?.textContent.trim() === "fetch"`)
	if got := strings.Join(strings.Fields(b.text("#flash-progress")), " "); got != "1.0 MiB of 4.0 MiB (25%) at 2.0 MiB/s" {
		t.Errorf("progress shown %q", got)
	}
	if got := strings.Join(strings.Fields(b.text("#flash-phases")), " "); !strings.HasPrefix(got, "PXE +") || !strings.Contains(got, "fetch +") {
		t.Errorf("phases shown %q", got)
	}
	if js[int](b, `window.__samePage || 0`) != 1 {
		t.Error("the page reloaded (want a live update)")
	}
	b.screenshot("20-machine-flash-live.png")
}

// TestBrowserPowerSettings: the machine page's Power control fieldset
// renders, and a browser fills and saves it (the password then only as
// "password set", the field empty).
func TestBrowserPowerSettings(t *testing.T) {
	findChromium(t) // skip before starting anything
	ts := startServer(t, nil)
	const mac, secret = "52:54:00:f3:00:07", "bmc-Browser-3141"
	if r := ts.do(t, "PUT", "/machines/"+mac, strings.NewReader(`{"hostname":"pw1"}`), ts.auth()); r.code != 201 {
		t.Fatal(r.code, string(r.body))
	}
	b := newBrowser(t, ts)
	b.open("/ui/machines/" + mac)
	b.wantPath("/ui/login")
	if code := b.login(testPassword); code != 200 {
		t.Fatalf("login: HTTP %d", code)
	}
	b.wantPath("/ui/machines/" + mac)
	if got := strings.Join(b.options("#power_driver"), ","); got != "none,ipmi,redfish" {
		t.Fatalf("driver options %s", got)
	}
	b.choose("#power_driver", "ipmi")
	b.fill("#power_address", "10.0.0.9")
	b.fill("#power_username", "admin")
	b.fill("#power_password", secret)
	if code := b.click("#save"); code != 200 {
		t.Fatalf("save: HTTP %d", code)
	}
	b.wantPath("/ui/machines/" + mac)
	if got := b.text("dd.f-power"); !strings.Contains(got, "ipmi BMC at 10.0.0.9") || !strings.Contains(got, "password set") {
		t.Errorf("the record shows %q", got)
	}
	if v, ph := b.read("#power_password", "e.value"), b.attr("#power_password", "placeholder"); v != "" || ph != "set — leave empty to keep" {
		t.Errorf("the password field after saving: value %q, placeholder %q", v, ph)
	}
	if js[bool](b, `document.documentElement.outerHTML.includes(`+jsq(secret)+`)`) {
		t.Error("the page has the BMC password")
	}
	b.screenshot("21-machine-power-settings.png")
}
