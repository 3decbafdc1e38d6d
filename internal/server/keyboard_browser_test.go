package server

import (
	"fmt"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/store"
)

// TestBrowserKeyboard walks the main path with the keyboard alone: log
// in, skip to the content, reach a machine through the table, edit it,
// save. Keys go to whatever has focus, as a user's would.
func TestBrowserKeyboard(t *testing.T) {
	findChromium(t)
	ts := startServer(t, nil)
	const mac = "52:54:00:66:00:01"
	pol := fleet.PolicyTUI
	if _, _, err := store.PutMachine(t.Context(), ts.st, fleet.MustParseMAC(mac), fleet.MachineUpdate{BootPolicy: &pol}, time.Now()); err != nil {
		t.Fatal(err)
	}
	b := newBrowser(t, ts)
	press := func(keys string) {
		t.Helper()
		if err := b.step(chromedp.KeyEvent(keys)); err != nil {
			t.Fatalf("pressing %q: %v", keys, err)
		}
	}
	active := func() string {
		return js[string](b, `(e => e ? (e.id || e.className || e.tagName) : "")(document.activeElement)`)
	}
	// tabTo presses Tab until the focused element matches sel.
	tabTo := func(sel string) {
		t.Helper()
		for range 60 {
			if js[bool](b, fmt.Sprintf(`document.activeElement?.matches(%s) ?? false`, jsq(sel))) {
				return
			}
			press(kb.Tab)
		}
		t.Fatalf("Tab never reached %s (focus on %q, page %s)", sel, active(), b.location())
	}

	b.open("/ui/machines")
	b.wantPath("/ui/login")
	if got := active(); got != "password" {
		t.Fatalf("the login page opens with focus on %q, want the password field", got)
	}
	press(testPassword)
	press(kb.Enter)
	// Loaded, not only navigated: a Tab pressed while the new document
	// still loads lands on its body (seen on a busy machine).
	b.poll("the machines page after a keyboard login", `location.pathname === "/ui/machines" && document.readyState === "complete" && !!document.querySelector("a.skip-link")`)

	// The first Tab reaches the skip link, which shows itself and jumps
	// to the content.
	press(kb.Tab)
	if got := active(); got != "skip-link" {
		t.Fatalf("first Tab focuses %q, want the skip link", got)
	}
	if left := js[float64](b, `document.activeElement.getBoundingClientRect().left`); left < 0 {
		t.Fatalf("the focused skip link is off screen (left %v)", left)
	}
	press(kb.Enter)
	b.poll("focus on the content after the skip link", `document.activeElement?.id === "main"`)

	b.waitLiveTable()
	tabTo(macRow(mac) + " a.machine-link")
	press(kb.Enter)
	b.poll("the machine page", fmt.Sprintf(`location.pathname === %s`, jsq("/ui/machines/"+mac)))

	tabTo("#hostname")
	press("kbd-host")
	press(kb.Enter) // submits the form
	b.poll("the saved message", `document.querySelector("#flash")?.textContent.includes("Saved")`)
	m, err := ts.st.GetMachine(t.Context(), fleet.MustParseMAC(mac))
	if err != nil || m.Hostname != "kbd-host" {
		t.Fatalf("after the keyboard edit: %+v, %v", m, err)
	}
	// Every form control on the page has a label.
	if n := js[int](b, `Array.from(document.querySelectorAll("input:not([type=hidden]), select, textarea")).filter(e =>
		!(e.labels && e.labels.length) && !e.getAttribute("aria-label")).length`); n != 0 {
		t.Fatalf("%d form controls without a label on the machine page", n)
	}
}
