package live

import (
	"bytes"
	"context"
	"encoding/json"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/google/go-cmp/cmp"

	"github.com/btyproject/bty/internal/client"
	"github.com/btyproject/bty/internal/event"
	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/provision"
)

const testCycle = "0123456789abcdef0123456789abcdef"

var testMAC = fleet.MustParseMAC("52:54:00:b7:70:01")

// progressCall is one POST the test server received.
type progressCall struct {
	Path, Cycle string
	Body        fleet.Progress
}

// progressServer answers POST /pxe/{mac}/progress with status, after
// hold returns (nil: at once), and passes each call on.
func progressServer(t *testing.T, status int, hold func()) (*client.Client, <-chan progressCall) {
	t.Helper()
	calls := make(chan progressCall, 100)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var c progressCall
		c.Path, c.Cycle = r.Method+" "+r.URL.Path, r.Header.Get("X-Bty-Cycle")
		if err := json.NewDecoder(r.Body).Decode(&c.Body); err != nil {
			t.Errorf("progress body: %v", err)
		}
		calls <- c
		if hold != nil {
			hold()
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		if status == http.StatusOK {
			w.Write([]byte(`{"status":"recorded"}`))
		} else {
			w.Write([]byte(`{"error":"refused"}`))
		}
	}))
	t.Cleanup(srv.Close)
	c, err := client.New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	return c, calls
}

func nextCall(t *testing.T, calls <-chan progressCall) progressCall {
	t.Helper()
	select {
	case c := <-calls:
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("no progress report reached the server")
		return progressCall{}
	}
}

func noCall(t *testing.T, calls <-chan progressCall, why string) {
	t.Helper()
	select {
	case c := <-calls:
		t.Errorf("%s, yet the server got %+v", why, c)
	case <-time.After(300 * time.Millisecond):
	}
}

func progress(written, total int64) event.Event {
	return event.Event{Event: event.Progress, BytesWritten: written, TotalBytes: total, Rate: 50 << 20}
}

func TestProgressReporterThrottles(t *testing.T) {
	c, calls := progressServer(t, http.StatusOK, nil)
	r := clientReporter(context.Background(), c, testMAC, testCycle, "debian 13.img.zst", 4<<30, nil)
	defer r.Close()
	var mu sync.Mutex
	now := time.Unix(1000, 0)
	r.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }

	r.Emit(event.Event{Event: event.Started, TotalBytes: 1 << 30})
	r.Emit(progress(0, 1<<30))
	noCall(t, calls, "nothing was written yet")

	r.Emit(progress(1<<20, 1<<30)) // the first bytes: reported at once
	got := nextCall(t, calls)
	want := progressCall{Path: "POST /pxe/52:54:00:b7:70:01/progress", Cycle: testCycle,
		Body: fleet.Progress{Image: "debian 13.img.zst", BytesWritten: 1 << 20, TotalBytes: 1 << 30, Rate: 50 << 20}}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("first report (-want +got):\n%s", d)
	}

	r.Emit(progress(2<<20, 1<<30))
	advance(9 * time.Second)
	r.Emit(progress(3<<20, 1<<30))
	noCall(t, calls, "less than 10 s passed")

	advance(time.Second)
	r.Emit(progress(4<<20, 0)) // a stream without a size: bty.image_size stands in
	got = nextCall(t, calls)
	want.Body.BytesWritten, want.Body.TotalBytes = 4<<20, 4<<30
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("report after 10 s (-want +got):\n%s", d)
	}
	noCall(t, calls, "one report per 10 s")
}

// TestProgressReporterHungServer: a server that does not answer never
// slows Emit, each call gives up after its timeout, and the next report
// carries the latest figures.
func TestProgressReporterHungServer(t *testing.T) {
	release := make(chan struct{})
	c, calls := progressServer(t, http.StatusOK, func() { <-release })
	defer close(release)
	r := clientReporter(context.Background(), c, testMAC, testCycle, "x.img", 0, nil)
	r.timeout = 200 * time.Millisecond
	r.every = 0 // every Emit queues a report
	start := time.Now()
	for i := int64(1); i <= 10000; i++ {
		r.Emit(progress(i, 10000))
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("10000 Emits took %s against a hung server", d)
	}
	// The latest figures reach the server (the sender may have taken
	// the first Emit's, or already the last's).
	for c := nextCall(t, calls); c.Body.BytesWritten != 10000; c = nextCall(t, calls) {
	}
	// Each hung call gives up after its timeout: later figures still go.
	r.Emit(progress(20000, 20000))
	if c := nextCall(t, calls); c.Body.BytesWritten != 20000 {
		t.Errorf("after hung calls the reporter sent %d bytes written, want 20000", c.Body.BytesWritten)
	}
	done := make(chan struct{})
	go func() { r.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Error("Close waits on the hung server")
	}
}

// TestProgressReporterStopsOn403: a refused report ends the reports.
func TestProgressReporterStopsOn403(t *testing.T) {
	c, calls := progressServer(t, http.StatusForbidden, nil)
	r := clientReporter(context.Background(), c, testMAC, testCycle, "x.img", 0, nil)
	defer r.Close()
	r.every = 0
	r.Emit(progress(1, 10))
	nextCall(t, calls)
	select {
	case <-r.done:
	case <-time.After(5 * time.Second):
		t.Fatal("the reporter still runs after a 403")
	}
	r.Emit(progress(2, 10))
	noCall(t, calls, "the server refused the first report")
}

func TestImageName(t *testing.T) {
	for in, want := range map[string]string{
		"http://192.0.2.1:8080/images/debian%2013.img.zst": "debian 13.img.zst",
		"http://h/images/a%2Fb.img":                        "a/b.img", // the server's Sane drops it
		"http://h/images/x.raw?sig=1":                      "x.raw",
		"http://h/images/dir/":                             "dir",
		"http://h":                                         "",
	} {
		if got := imageName(in); got != want {
			t.Errorf("imageName(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestVendorData: bty's vendor-data is phone_home only, the key only, or
// both, as asked: each is vendor-data cloud-init takes
// (provision.CheckVendorData), a #cloud-config mapping with exactly the
// expected keys; phone_home gets the ready URL with the cycle's token,
// ssh_authorized_keys bty-web's key line. Nothing asked, nothing seeded.
func TestVendorData(t *testing.T) {
	key := "ssh-ed25519 " + testSSHKey + " bty-web"
	base := Params{Server: "http://192.0.2.1:8080/bty/", MAC: testMAC, Cycle: testCycle}
	wantURL := "http://192.0.2.1:8080/bty/pxe/52:54:00:b7:70:01/ready?cycle=" + testCycle
	for _, tc := range []struct {
		name      string
		phoneHome bool
		sshKey    string
		keys      []string
	}{
		{"phone_home only", true, "", []string{"phone_home"}},
		{"key only", false, key, []string{"ssh_authorized_keys"}},
		{"both", true, key, []string{"phone_home", "ssh_authorized_keys"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := base
			p.PhoneHome, p.SSHKey = tc.phoneHome, tc.sshKey
			b, err := vendorData(p)
			if err != nil {
				t.Fatal(err)
			}
			if err := provision.CheckVendorData(b); err != nil {
				t.Errorf("vendor-data refused: %v\n%s", err, b)
			}
			if !bytes.HasPrefix(b, []byte("#cloud-config\n")) {
				t.Errorf("vendor-data does not start with #cloud-config:\n%s", b)
			}
			var raw map[string]any
			if err := yaml.Unmarshal(b, &raw); err != nil {
				t.Fatalf("%v\n%s", err, b)
			}
			if got := slices.Sorted(maps.Keys(raw)); !slices.Equal(got, tc.keys) {
				t.Errorf("keys %q, want %q\n%s", got, tc.keys, b)
			}
			var doc struct {
				PhoneHome struct {
					URL   string   `yaml:"url"`
					Post  []string `yaml:"post"`
					Tries int      `yaml:"tries"`
				} `yaml:"phone_home"`
				Keys []string `yaml:"ssh_authorized_keys"`
			}
			if err := yaml.Unmarshal(b, &doc); err != nil {
				t.Fatalf("%v\n%s", err, b)
			}
			if tc.phoneHome && (doc.PhoneHome.URL != wantURL || doc.PhoneHome.Tries != 30 || strings.Join(doc.PhoneHome.Post, ",") != "instance_id,hostname") {
				t.Errorf("phone_home = %+v, want url %s, post [instance_id hostname], tries 30\n%s", doc.PhoneHome, wantURL, b)
			}
			if tc.sshKey != "" && (len(doc.Keys) != 1 || doc.Keys[0] != key) {
				t.Errorf("ssh_authorized_keys = %q, want [%q]\n%s", doc.Keys, key, b)
			}
		})
	}
	if b, err := vendorData(base); b != nil || err != nil {
		t.Errorf("nothing asked: vendor-data %q, %v; want none", b, err)
	}
	noCycle := base
	noCycle.Cycle, noCycle.PhoneHome = "", true
	if _, err := vendorData(noCycle); err == nil {
		t.Error("no error for phone_home without a cycle token")
	}
}

func TestUserDataSetsKeys(t *testing.T) {
	for ud, want := range map[string]bool{
		"#cloud-config\nssh_authorized_keys: [\"ssh-ed25519 AAAA me\"]\n":    true,
		"#cloud-config\nusers:\n  - name: x\n    ssh_authorized_keys: [a]\n": false,
		"#cloud-config\n":                          false,
		"#!/bin/sh\necho ssh_authorized_keys: x\n": false,
		"#cloud-config\nssh_authorized_keys: [\n":  false, // does not parse: cloud-init ignores it too
	} {
		if got := userDataSetsKeys([]byte(ud)); got != want {
			t.Errorf("userDataSetsKeys(%q) = %v, want %v", ud, got, want)
		}
	}
}
