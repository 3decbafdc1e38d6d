package server

import (
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/store"
	"github.com/btyproject/bty/internal/store/sqlitestore"
)

// refusedWarnings counts the warnings about refused discoveries in the
// server's recent log.
func refusedWarnings(ts *testServer) int {
	n := 0
	for _, e := range ts.srv.recent.last(50) {
		if strings.HasPrefix(e.Msg, "discoveries refused") {
			n++
		}
	}
	return n
}

func metricValue(t *testing.T, ts *testServer, series string) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindSubmatch(ts.do(t, "GET", "/metrics", nil, nil).body)
	if m == nil {
		t.Fatalf("no %s in /metrics", series)
	}
	return string(m[1])
}

// pxeMACs makes a PXE contact for each of n MACs 02:dd:00:00:xx:yy
// (from offset), checking each is answered with the discovery boot.
func pxeMACs(t *testing.T, ts *testServer, offset, n int) {
	t.Helper()
	for i := offset; i < offset+n; i++ {
		mac := fmt.Sprintf("02:dd:00:00:%02x:%02x", i>>8, i&0xff)
		r := ts.do(t, "GET", "/pxe/"+mac, nil, nil)
		if r.code != 200 || !strings.HasPrefix(string(r.body), "#!ipxe") {
			t.Fatalf("PXE %s: %d %s", mac, r.code, r.body)
		}
	}
}

func countMachines(t *testing.T, ts *testServer) int {
	t.Helper()
	ms, err := ts.st.ListMachines(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return len(ms)
}

// TestDiscoveryRateLimited: 30 unknown MACs from one address with a
// burst of 10 make 10 records; the other 20 are served the discovery
// boot, not stored, counted, and warned about once. A known machine's
// contact is still recorded.
func TestDiscoveryRateLimited(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.DiscoveryBurst = 10; c.DiscoveryEvery = time.Hour })
	pxeMACs(t, ts, 0, 30)
	if n := countMachines(t, ts); n != 10 {
		t.Errorf("30 discoveries with a burst of 10 made %d records, want 10", n)
	}
	if v := metricValue(t, ts, `bty_discoveries_refused_total{reason="rate"}`); v != "20" {
		t.Errorf("refused (rate) = %s, want 20", v)
	}
	if v := metricValue(t, ts, `bty_pxe_contacts_total{policy="tui"}`); v != "30" {
		t.Errorf("tui contacts = %s, want 30 (refused ones are served the discovery boot too)", v)
	}
	if n := refusedWarnings(ts); n != 1 {
		t.Errorf("%d warnings about refused discoveries, want 1", n)
	}
	// A known machine, from the same exhausted address, is recorded.
	mac := fleet.MustParseMAC("02:dd:00:00:00:00")
	before, err := ts.st.GetMachine(context.Background(), mac)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond)
	pxeMACs(t, ts, 0, 1)
	after, err := ts.st.GetMachine(context.Background(), mac)
	if err != nil {
		t.Fatal(err)
	}
	if !after.LastSeenAt.After(*before.LastSeenAt) {
		t.Errorf("a known machine's contact was not recorded: last seen %s, then %s", before.LastSeenAt, after.LastSeenAt)
	}
	if v := metricValue(t, ts, `bty_discoveries_refused_total{reason="rate"}`); v != "20" {
		t.Errorf("refused (rate) = %s after a known machine's contact, want 20", v)
	}
}

// TestDiscoveryCapped: with at most 5 unclaimed discovered machines, 8
// unknown MACs make 5 records; the 3 others are served the discovery
// boot, not stored, counted and warned about once. Deleting one makes
// room for the next.
func TestDiscoveryCapped(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.MaxUnclaimed = 5; c.DiscoveryBurst = 100 })
	pxeMACs(t, ts, 0, 8)
	if n := countMachines(t, ts); n != 5 {
		t.Errorf("8 discoveries with a cap of 5 made %d records, want 5", n)
	}
	if v := metricValue(t, ts, `bty_discoveries_refused_total{reason="cap"}`); v != "3" {
		t.Errorf("refused (cap) = %s, want 3", v)
	}
	if v := metricValue(t, ts, `bty_pxe_contacts_total{policy="tui"}`); v != "8" {
		t.Errorf("tui contacts = %s, want 8", v)
	}
	if n := refusedWarnings(ts); n != 1 {
		t.Errorf("%d warnings about refused discoveries, want 1", n)
	}
	// A known unclaimed machine is still recorded at the cap.
	pxeMACs(t, ts, 0, 1)
	if v := metricValue(t, ts, `bty_discoveries_refused_total{reason="cap"}`); v != "3" {
		t.Errorf("refused (cap) = %s after a known machine's contact, want 3", v)
	}
	if r := ts.do(t, "DELETE", "/machines/02:dd:00:00:00:00", nil, ts.auth()); r.code != 204 {
		t.Fatalf("delete: %d", r.code)
	}
	pxeMACs(t, ts, 100, 2)
	if n := countMachines(t, ts); n != 5 {
		t.Errorf("after a delete and 2 more discoveries: %d records, want 5", n)
	}
	if v := metricValue(t, ts, `bty_discoveries_refused_total{reason="cap"}`); v != "4" {
		t.Errorf("refused (cap) = %s, want 4", v)
	}
}

func TestConfigDiscovery(t *testing.T) {
	env := map[string]string{"BTY_DISCOVERY_BURST": "3", "BTY_DISCOVERY_EVERY": "1m", "BTY_MAX_UNCLAIMED": "50"}
	c, err := ConfigFromEnv(func(k string) string { return env[k] })
	if err != nil || c.DiscoveryBurst != 3 || c.DiscoveryEvery != time.Minute || c.MaxUnclaimed != 50 {
		t.Errorf("got %d %s %d (%v)", c.DiscoveryBurst, c.DiscoveryEvery, c.MaxUnclaimed, err)
	}
	c, err = ConfigFromEnv(func(string) string { return "" })
	if err != nil || c.DiscoveryBurst != 10 || c.DiscoveryEvery != 10*time.Second || c.MaxUnclaimed != 1000 {
		t.Errorf("defaults: %d %s %d (%v)", c.DiscoveryBurst, c.DiscoveryEvery, c.MaxUnclaimed, err)
	}
	for k, v := range map[string]string{"BTY_DISCOVERY_BURST": "0", "BTY_DISCOVERY_EVERY": "soon", "BTY_MAX_UNCLAIMED": "-1"} {
		if _, err := ConfigFromEnv(func(key string) string {
			if key == k {
				return v
			}
			return ""
		}); err == nil || !strings.Contains(err.Error(), k) {
			t.Errorf("%s=%s: %v", k, v, err)
		}
	}
}

// countingStore is a real store that counts ModifyMachine calls: the
// writes that go through the store's one writer.
type countingStore struct {
	*sqlitestore.SQLite
	modifies atomic.Int64
}

func (c *countingStore) ModifyMachine(ctx context.Context, mac fleet.MAC, fn func(fleet.Machine, bool) (fleet.Machine, error)) (fleet.Machine, error) {
	c.modifies.Add(1)
	return c.SQLite.ModifyMachine(ctx, mac, fn)
}

// TestDiscoveryFloodSparesTheWriter: once an address has used up its
// discoveries, its contacts for unknown MACs are refused after a read,
// without a write transaction (a flood of made-up MACs queued behind
// every known machine's contact in the one writer); a known machine
// from that address is still served and recorded.
func TestDiscoveryFloodSparesTheWriter(t *testing.T) {
	var st *countingStore
	ts, sq := customServer(t, func(sq *sqlitestore.SQLite) store.Store { st = &countingStore{SQLite: sq}; return st }, slog.New(slog.DiscardHandler))

	pxeMACs(t, ts, 0, defaultDiscoveryBurst) // the address's burst: recorded
	before := st.modifies.Load()
	pxeMACs(t, ts, 100, 50) // the flood: refused
	if n := st.modifies.Load() - before; n != 0 {
		t.Errorf("50 refused discoveries took the writer %d times, want 0", n)
	}
	if ms, _ := sq.ListMachines(context.Background()); len(ms) != defaultDiscoveryBurst {
		t.Errorf("%d machines stored, want %d", len(ms), defaultDiscoveryBurst)
	}
	// A known machine from the flooding address: served and recorded.
	known := fmt.Sprintf("02:dd:00:00:%02x:%02x", 0, 3)
	before = st.modifies.Load()
	if _, c := ts.boot(t, "127.0.0.1", known); c == "" {
		t.Error("a known machine from a flooding address got no live env")
	}
	if st.modifies.Load() == before {
		t.Error("the known machine's contact was not recorded")
	}
}

// customServer runs a server over a real SQLite store that wrap may
// wrap (nil: as it is), logging to log, behind httptest, logged in.
func customServer(t *testing.T, wrap func(*sqlitestore.SQLite) store.Store, log *slog.Logger) (*testServer, *sqlitestore.SQLite) {
	t.Helper()
	dir := t.TempDir()
	cfg := Config{StateDir: dir, ImageRoot: filepath.Join(dir, "images"), BootDir: filepath.Join(dir, "boot"),
		Host: "127.0.0.1", SessionTTL: time.Hour}
	sq, err := sqlitestore.Open(context.Background(), cfg.DBPath(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sq.Close() })
	if _, err := EnsureAdminPassword(context.Background(), sq, testPassword); err != nil {
		t.Fatal(err)
	}
	var st store.Store = sq
	if wrap != nil {
		st = wrap(sq)
	}
	srv := New(cfg, st, log, nil)
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(func() { hs.Close(); srv.Close() })
	ts := &testServer{URL: hs.URL, cfg: cfg, srv: srv, st: sq}
	ts.token = ts.login(t, testPassword)
	return ts, sq
}
