package server

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestBrowserLiveRow: on a page of a large table, a change to one
// machine on the page swaps that row alone (one GET of its row, no
// re-fetch of the table, the other rows' elements untouched); a change
// to a machine on another page refreshes the page's counts, at most
// once per throttle period, not per event.
func TestBrowserLiveRow(t *testing.T) {
	findChromium(t) // skip before starting anything
	ts := startServer(t, nil)
	importFleet(t, ts, 150) // two pages
	b := newBrowser(t, ts)
	b.open("/ui/machines")
	b.wantPath("/ui/login")
	if code := b.login(testPassword); code != 200 {
		t.Fatalf("login: HTTP %d", code)
	}
	b.wantPath("/ui/machines")
	b.waitLiveTable()
	if got := b.text("#machine-count"); got != "rows 1–100 of 150 matching (150 total)" {
		t.Errorf("count line %q", got)
	}
	if n := b.count("#machine-rows tr[data-mac]"); n != 100 {
		t.Fatalf("%d rows on page 1, want 100", n)
	}
	// requests counts the page's requests so far: of the table, of rows.
	requests := func() (table, rows int) {
		t.Helper()
		v := js[[]int](b, `(() => { const es = performance.getEntriesByType("resource").map(e => new URL(e.name).pathname);
			return [es.filter(p => p === "/ui/machines").length, es.filter(p => /^\/ui\/machines\/[^/]+\/row$/.test(p)).length] })()`)
		return v[0], v[1]
	}
	mark := `document.getElementById("machines-table").__old = 1;
		document.querySelectorAll("#machine-rows tr[data-mac]").forEach(r => r.__old = 1); 1`
	js[int](b, mark)
	table0, rows0 := requests()
	// Three quick changes to one machine on the page.
	mac := fleetMAC(0).String() // first in MAC order
	for i := range 3 {
		if r := ts.do(t, "PUT", "/machines/"+mac, strings.NewReader(fmt.Sprintf(`{"hostname":"live-%d"}`, i)), ts.auth()); r.code != 200 {
			t.Fatalf("PUT: %d %s", r.code, r.body)
		}
	}
	b.poll("the row's new hostname", fmt.Sprintf(`document.querySelector(%s)?.textContent.trim() === "live-2"`, jsq(macRow(mac)+" td.hostname")))
	time.Sleep(2500 * time.Millisecond) // past the table's throttle: a refresh would have come by now
	table1, rows1 := requests()
	if table1 != table0 {
		t.Errorf("a change to a machine on the page re-fetched the table %d times", table1-table0)
	}
	if rows1-rows0 < 1 || rows1-rows0 > 3 {
		t.Errorf("%d row requests for 3 changes of one row, want 1 to 3 (coalesced)", rows1-rows0)
	}
	if old := js[int](b, `document.querySelectorAll("#machine-rows tr[data-mac]").length - Array.from(document.querySelectorAll("#machine-rows tr[data-mac]")).filter(r => r.__old).length`); old != 1 {
		t.Errorf("%d rows were replaced, want only the changed one", old)
	}
	if js[int](b, `document.getElementById("machines-table").__old || 0`) != 1 {
		t.Error("the table element was replaced")
	}
	t.Logf("one row changed 3 times: %d row requests, %d table requests", rows1-rows0, table1-table0)

	// Changes off the page (new machines sorting after page 1): the
	// count line follows, by a few throttled refreshes, not one per event.
	for i := range 20 {
		if r := ts.do(t, "PUT", fmt.Sprintf("/machines/02:ff:00:00:00:%02x", i), strings.NewReader(`{}`), ts.auth()); r.code != 201 {
			t.Fatalf("PUT: %d %s", r.code, r.body)
		}
	}
	b.poll("the count line after 20 discoveries", `document.getElementById("machine-count")?.textContent.trim() === "rows 1–100 of 170 matching (170 total)"`)
	time.Sleep(2500 * time.Millisecond)
	table2, _ := requests()
	if n := table2 - table1; n < 1 || n > 3 {
		t.Errorf("%d table refreshes for 20 changes off the page, want 1 to 3 (throttled)", n)
	}
	t.Logf("20 changes off the page: %d table refreshes", table2-table1)
}
