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
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
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

	mu         sync.Mutex
	exceptions []string // uncaught JavaScript exceptions of the pages
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
	b := &browser{t: t, ctx: tabCtx, ts: ts}
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc()
		cancel()
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, e := range b.exceptions {
			t.Errorf("uncaught JavaScript exception in a page: %s", e)
		}
	})
	start := time.Now()
	if err := chromedp.Do(tabCtx); err != nil { // starts the browser
		t.Fatalf("starting %s: %v", exe, err)
	}
	t.Logf("chromium %s up in %s", exe, time.Since(start).Round(time.Millisecond))
	if err := chromedp.Listen(tabCtx, func(ev any) {
		if ev, ok := ev.(*runtime.EventExceptionThrown); ok {
			d := ev.ExceptionDetails
			msg := d.Text
			if d.Exception != nil && d.Exception.Description != "" {
				msg += " " + d.Exception.Description
			}
			b.mu.Lock()
			b.exceptions = append(b.exceptions, fmt.Sprintf("%s:%d: %s", d.URL, d.LineNumber+1, msg))
			b.mu.Unlock()
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
// waiting for it to exist.
func (b *browser) text(sel string) string {
	b.t.Helper()
	s, err := run(b, chromedp.TextContent(chromedp.CSS(sel)))
	if err != nil {
		b.t.Fatalf("text of %s: %v (page %s)", sel, err, b.location())
	}
	return strings.TrimSpace(s)
}

// exists reports whether sel matches now (no waiting).
func (b *browser) exists(sel string) bool {
	b.t.Helper()
	return js[bool](b, fmt.Sprintf(`document.querySelector(%q) !== null`, sel))
}

// waitFor waits until sel matches an element.
func (b *browser) waitFor(sel string) {
	b.t.Helper()
	b.must("waiting for "+sel, chromedp.WaitReady(chromedp.CSS(sel)))
}

// waitGone waits until nothing matches sel.
func (b *browser) waitGone(sel string) {
	b.t.Helper()
	b.must("waiting for "+sel+" to go", chromedp.WaitNotPresent(chromedp.CSS(sel)))
}

// poll waits until the JavaScript expression is truthy.
func (b *browser) poll(what, expr string) {
	b.t.Helper()
	if _, err := run(b, chromedp.Poll[bool](expr, chromedp.WithPollingInterval(50*time.Millisecond))); err != nil {
		b.t.Fatalf("waiting for %s (%s): %v (page %s)", what, expr, err, b.location())
	}
}

// screenshot saves a full-page PNG of the current page at the desktop
// width.
func (b *browser) screenshot(name string) {
	b.t.Helper()
	buf, err := run(b, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Errorf("screenshot %s: %v", name, err)
		return
	}
	b.saveShot(name, buf)
}

// phoneScreenshot reloads the current page at a 390 px wide mobile
// viewport, saves a full-page PNG, and goes back to the desktop size.
func (b *browser) phoneScreenshot(name string) {
	b.t.Helper()
	b.must("phone viewport", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile, chromedp.EmulateScale(2)), chromedp.Reload())
	if w := js[int](b, `document.documentElement.clientWidth`); w != 390 {
		b.t.Errorf("phone viewport is %d px wide, want 390", w)
	}
	// Nothing may be wider than the phone: no horizontal scrolling of
	// the whole page (wide tables scroll inside their own container).
	if sw := js[int](b, `document.documentElement.scrollWidth`); sw > 390 {
		b.t.Errorf("%s: the page is %d px wide at a 390 px viewport (horizontal scrolling)", name, sw)
	}
	buf, err := run(b, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Errorf("phone screenshot %s: %v", name, err)
	} else {
		b.saveShot(name, buf)
	}
	b.must("desktop viewport", chromedp.EmulateViewport(desktopWidth, desktopHeight), chromedp.Reload())
}

func (b *browser) saveShot(name string, png []byte) {
	b.t.Helper()
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
