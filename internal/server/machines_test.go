package server

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/btyproject/bty/internal/fleet"
)

// fleetMAC is the i-th machine of a test fleet.
func fleetMAC(i int) fleet.MAC {
	return fleet.MustParseMAC(fmt.Sprintf("02:%02x:00:%02x:%02x:%02x", i%7, (i>>16)&0xff, (i>>8)&0xff, i&0xff))
}

// importFleet stores n machines in one transaction (POST /state/import's
// store call): discovered by PXE, seen from an address, a third each on
// local, flash and tui, every fifth with a hostname and an image.
func importFleet(t testing.TB, ts *testServer, n int) {
	t.Helper()
	now := time.Now().UTC().Truncate(time.Second)
	ms := make([]fleet.Machine, n)
	for i := range ms {
		seen := now.Add(-time.Duration(i) * time.Second)
		m := fleet.Machine{MAC: fleetMAC(i), BootPolicy: fleet.Policies[i%3], NextBoot: fleet.NextFlash,
			DiscoveredAt: &seen, LastSeenAt: &seen, LastSeenIP: fmt.Sprintf("10.%d.%d.%d", i>>16&0xff, i>>8&0xff, i&0xff),
			LastServed: fleet.PolicyTUI, CreatedAt: seen, UpdatedAt: seen}
		if i%5 == 0 {
			m.Hostname, m.Image = fmt.Sprintf("node-%d", i), "debian-13.qcow2"
		}
		ms[i] = m
	}
	if err := ts.st.ImportMachines(context.Background(), ms); err != nil {
		t.Fatal(err)
	}
}

// nextLink is the target of a Link header's rel="next" ("" if none).
func nextLink(h http.Header) string {
	m := regexp.MustCompile(`<([^>]*)>;\s*rel="next"`).FindStringSubmatch(h.Get("Link"))
	if m == nil {
		return ""
	}
	return m[1]
}

// TestMachinesPages: GET /machines answers pages with the counts in
// headers and the next page in Link, in MAC order by an after=MAC
// cursor, in other orders by offset; filters and orders are the
// store's; bad values are 400s that name the parameter.
func TestMachinesPages(t *testing.T) {
	ts := startServer(t, nil)
	importFleet(t, ts, 25)
	var all []string
	next, pages := "/machines?limit=10", 0
	for next != "" {
		r := ts.do(t, "GET", next, nil, ts.auth())
		if r.code != 200 || r.header.Get("X-Total-Count") != "25" || r.header.Get("X-Matched-Count") != "25" {
			t.Fatalf("GET %s: %d, total %q matched %q: %s", next, r.code, r.header.Get("X-Total-Count"), r.header.Get("X-Matched-Count"), r.body)
		}
		var ms []fleet.Machine
		r.json(t, &ms)
		for _, m := range ms {
			all = append(all, m.MAC.String())
		}
		pages++
		next = nextLink(r.header)
		if next != "" && !strings.Contains(next, "after=") {
			t.Errorf("next page in MAC order is %q, want an after= cursor", next)
		}
	}
	if pages != 3 || len(all) != 25 || !slicesSorted(all) {
		t.Errorf("%d pages of %d machines: %v", pages, len(all), all)
	}

	// A filter and another order: offset pages, counts of the matches.
	r := ts.do(t, "GET", "/machines?policy=local&sort=last_seen&dir=desc&limit=4", nil, ts.auth())
	var ms []fleet.Machine
	r.json(t, &ms)
	if r.code != 200 || len(ms) != 4 || r.header.Get("X-Matched-Count") != "9" || r.header.Get("X-Total-Count") != "25" {
		t.Fatalf("policy=local page: %d, %d machines, headers %v", r.code, len(ms), r.header)
	}
	for i, m := range ms {
		if m.BootPolicy != fleet.PolicyLocal || (i > 0 && !m.LastSeenAt.Before(*ms[i-1].LastSeenAt)) {
			t.Errorf("row %d: %s %s %v (want local, newest first)", i, m.MAC, m.BootPolicy, m.LastSeenAt)
		}
	}
	u, err := url.Parse(nextLink(r.header))
	if err != nil || u.Path != "/machines" || u.Query().Get("offset") != "4" || u.Query().Get("policy") != "local" || u.Query().Get("sort") != "last_seen" {
		t.Errorf("next of the filtered page: %q (%v)", r.header.Get("Link"), err)
	}
	r = ts.do(t, "GET", "/machines?q=NODE-1&discovered=0", nil, ts.auth())
	r.json(t, &ms)
	if r.code != 200 || len(ms) != 2 || r.header.Get("Link") != "" { // node-10, node-15
		t.Errorf("q=NODE-1: %d, %d machines, Link %q", r.code, len(ms), r.header.Get("Link"))
	}
	// The default page is bounded; so is any asked for.
	if defaultMachinesLimit != 1000 || maxMachinesLimit != 10000 {
		t.Errorf("page sizes %d and %d, want the documented 1000 and 10000", defaultMachinesLimit, maxMachinesLimit)
	}

	for _, c := range []struct{ query, want string }{
		{"limit=0", "limit"}, {"limit=10001", "limit"}, {"limit=ten", "limit"},
		{"offset=-1", "offset"}, {"offset=x", "offset"},
		{"sort=color", "sort"}, {"dir=up", "dir"}, {"policy=reboot", "policy"}, {"discovered=yes", "discovered"},
		{"after=nope", "after"}, {"after=02:00:00:00:00:01&sort=hostname", "after"},
	} {
		r := ts.do(t, "GET", "/machines?"+c.query, nil, ts.auth())
		if r.code != 400 || !strings.Contains(string(r.body), c.want+"=") {
			t.Errorf("?%s: %d %s, want 400 naming %s", c.query, r.code, r.body, c.want)
		}
	}
}

func slicesSorted(s []string) bool {
	for i := 1; i < len(s); i++ {
		if s[i-1] >= s[i] {
			return false
		}
	}
	return true
}

// TestUIMachinesPages: the machine table shows one page of 100 rows with
// the counts, and previous/next links that keep the filter and order; a
// page past the end shows the last one; the row route renders one row.
func TestUIMachinesPages(t *testing.T) {
	ts := startServer(t, nil)
	importFleet(t, ts, 250)
	cookie := map[string]string{"Cookie": CookieName + "=" + ts.token}
	rows := regexp.MustCompile(`<tr id="m-[0-9a-f]{12}" data-mac="([^"]+)"`)
	get := func(path string) (string, []string) {
		t.Helper()
		r := ts.do(t, "GET", path, nil, cookie)
		if r.code != 200 {
			t.Fatalf("GET %s: %d", path, r.code)
		}
		var macs []string
		for _, m := range rows.FindAllStringSubmatch(string(r.body), -1) {
			macs = append(macs, m[1])
		}
		return string(r.body), macs
	}
	body, macs := get("/ui/machines")
	if len(macs) != 100 || !strings.Contains(body, "rows 1–100 of 250 matching (250 total)") || !slicesSorted(macs) {
		t.Errorf("page 1: %d rows, count line %q", len(macs), regexp.MustCompile(`id="machine-count"[^>]*>[^<]*`).FindString(body))
	}
	if !strings.Contains(body, `id="page-next" rel="next" href="/ui/machines?dir=asc&amp;page=2&amp;sort=mac"`) || strings.Contains(body, `id="page-prev"`) {
		t.Errorf("page 1's pager is wrong: %s", regexp.MustCompile(`(?s)<nav class="pager".*?</nav>`).FindString(body))
	}
	body, macs3 := get("/ui/machines?sort=mac&dir=asc&page=3")
	if len(macs3) != 50 || !strings.Contains(body, "rows 201–250 of 250 matching (250 total)") || strings.Contains(body, `id="page-next"`) ||
		!strings.Contains(body, `href="/ui/machines?dir=asc&amp;page=2&amp;sort=mac"`) {
		t.Errorf("page 3: %d rows", len(macs3))
	}
	if !strings.Contains(body, `name="back" value="/ui/machines?dir=asc&amp;page=3&amp;sort=mac"`) {
		t.Error("the bulk form does not lead back to the page it was sent from")
	}
	if _, past := get("/ui/machines?page=99"); len(past) != 50 || past[0] != macs3[0] {
		t.Errorf("page 99 of 3 shows %d rows, want the last page", len(past))
	}
	// Filter and order are the store's; the pager keeps them.
	body, fm := get("/ui/machines?policy=flash&sort=last_seen&dir=desc&q=10.0")
	if len(fm) != 83 || !strings.Contains(body, "rows 1–83 of 83 matching (250 total)") {
		t.Errorf("policy=flash q=10.0: %d rows, %s", len(fm), regexp.MustCompile(`id="machine-count"[^>]*>[^<]*`).FindString(body))
	}
	body, fm = get("/ui/machines?policy=tui&sort=hostname&dir=desc")
	if len(fm) != 83 || !strings.Contains(body, "rows 1–83 of 83 matching (250 total)") || !strings.Contains(body, `<td class="hostname" data-label="Hostname">node-95</td>`) {
		t.Errorf("policy=tui sorted by hostname, descending: %d rows", len(fm))
	} else if i := strings.Index(body, `data-mac="`+fm[0]+`"`); !strings.Contains(body[i:i+900], "node-95") {
		t.Errorf("policy=tui sorted by hostname, descending: the first row is %s, want node-95's", fm[0])
	}
	body, fm = get("/ui/machines?q=zzz")
	if len(fm) != 0 || !strings.Contains(body, "No machine matches the filter.") || !strings.Contains(body, "0 of 250 machines match") {
		t.Errorf("q=zzz: %d rows", len(fm))
	}

	// One row, for the live table.
	mac := macs[5]
	r := ts.do(t, "GET", "/ui/machines/"+mac+"/row?selected=1", nil, cookie)
	if r.code != 200 || strings.Count(string(r.body), "<tr ") != 1 || !strings.Contains(string(r.body), `data-mac="`+mac+`"`) ||
		!strings.Contains(string(r.body), "checked") || strings.Contains(string(r.body), "<html") {
		t.Errorf("row of %s: %d %s", mac, r.code, r.body)
	}
	if r := ts.do(t, "GET", "/ui/machines/02:ff:ff:ff:ff:ff/row", nil, cookie); r.code != 404 {
		t.Errorf("row of an unknown machine: %d", r.code)
	}
	if r := ts.do(t, "GET", "/ui/machines/"+mac+"/row", nil, nil); r.code == 200 && strings.Contains(string(r.body), "data-mac") {
		t.Errorf("the row route answered without a session: %d", r.code)
	}
}

// TestFleetOf100k: with 100,000 machines in a real SQLite store, the
// machine page answers quickly and small, GET /machines answers one
// bounded page, and the event stream without snapshot sends none. The
// numbers are logged (go test -v -run TestFleetOf100k); the time bounds
// hold without -race only.
func TestFleetOf100k(t *testing.T) {
	if testing.Short() {
		t.Skip("builds 100,000 machines (-short)")
	}
	const n = 100000
	ts := startServer(t, nil)
	start := time.Now()
	importFleet(t, ts, n)
	t.Logf("stored %d machines in %s", n, time.Since(start).Round(time.Millisecond))
	cookie := map[string]string{"Cookie": CookieName + "=" + ts.token}

	timed := func(path string, hdr map[string]string) (resp, time.Duration) {
		t.Helper()
		best := time.Duration(1 << 62)
		var r resp
		for range 3 {
			start := time.Now()
			r = ts.do(t, "GET", path, nil, hdr)
			best = min(best, time.Since(start))
			if r.code != 200 {
				t.Fatalf("GET %s: %d %.200s", path, r.code, r.body)
			}
		}
		t.Logf("GET %s: %d bytes in %s (best of 3)", path, len(r.body), best.Round(time.Microsecond))
		return r, best
	}
	for _, path := range []string{"/ui/machines", "/ui/machines?sort=last_seen&dir=desc", "/ui/machines?q=node-99&sort=hostname", "/ui/machines?page=1000"} {
		r, d := timed(path, cookie)
		if len(r.body) > 200<<10 {
			t.Errorf("GET %s: %d bytes, want under 200 KiB", path, len(r.body))
		}
		if d > 500*time.Millisecond && !raceDetector {
			t.Errorf("GET %s took %s, want under 500 ms", path, d)
		}
		if path == "/ui/machines" && !strings.Contains(string(r.body), "rows 1–100 of 100000 matching (100000 total)") {
			t.Errorf("the count line of page 1 is wrong")
		}
	}
	r, d := timed("/machines", ts.auth())
	var ms []fleet.Machine
	if err := json.Unmarshal(r.body, &ms); err != nil || len(ms) != defaultMachinesLimit || r.header.Get("X-Total-Count") != "100000" || nextLink(r.header) == "" {
		t.Errorf("GET /machines: %d machines (%v), total %q, Link %q", len(ms), err, r.header.Get("X-Total-Count"), r.header.Get("Link"))
	}
	if len(r.body) > 2<<20 || (d > time.Second && !raceDetector) {
		t.Errorf("GET /machines: %d bytes in %s, want a bounded page", len(r.body), d)
	}

	// The event stream: no snapshot; the first bytes are a comment, the
	// first event the first change.
	req, _ := http.NewRequest("GET", ts.URL+"/events/machines?snapshot=0", nil)
	req.Header.Set("Authorization", "Bearer "+ts.token)
	start = time.Now()
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	cr := &countingReader{r: res.Body}
	br := bufio.NewReader(cr)
	line, err := br.ReadString('\n')
	if err != nil || strings.HasPrefix(line, "event: snapshot") {
		t.Fatalf("the stream starts with %q (%v)", line, err)
	}
	t.Logf("GET /events/machines?snapshot=0: first line %q after %s", strings.TrimSpace(line), time.Since(start).Round(time.Microsecond))
	ts.do(t, "PUT", "/machines/"+fleetMAC(7).String(), strings.NewReader(`{"hostname":"changed"}`), ts.auth())
	ev, data := readSSE(t, br)
	if ev != "machine" || !strings.Contains(data, `"changed"`) {
		t.Errorf("first event %s %.100s, want the change", ev, data)
	}
	if cr.n > 64<<10 {
		t.Errorf("the stream sent %d bytes before the first change's event, want no snapshot", cr.n)
	}
	t.Logf("GET /events/machines?snapshot=0: %d bytes up to the first change's event", cr.n)
}

type countingReader struct {
	r interface{ Read([]byte) (int, error) }
	n int
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += n
	return n, err
}
