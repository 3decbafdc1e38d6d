package server

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/store"
	"github.com/btyproject/bty/internal/store/sqlitestore"
)

// failingStore is a real store whose machine reads and writes fail, when
// told to, with an error that names the database file as the real one
// does.
type failingStore struct {
	*sqlitestore.SQLite
	fail atomic.Bool
}

func (f *failingStore) err() error {
	return fmt.Errorf("state database %s: reading machines: disk I/O error (10)", f.Path())
}

func (f *failingStore) Ping(ctx context.Context) error {
	if f.fail.Load() {
		return f.err()
	}
	return f.SQLite.Ping(ctx)
}

func (f *failingStore) ListMachines(ctx context.Context) ([]fleet.Machine, error) {
	if f.fail.Load() {
		return nil, f.err()
	}
	return f.SQLite.ListMachines(ctx)
}

func (f *failingStore) QueryMachines(ctx context.Context, q store.MachineQuery) (store.MachinePage, error) {
	if f.fail.Load() {
		return store.MachinePage{}, f.err()
	}
	return f.SQLite.QueryMachines(ctx, q)
}

func (f *failingStore) ModifyMachine(ctx context.Context, mac fleet.MAC, fn func(fleet.Machine, bool) (fleet.Machine, error)) (fleet.Machine, error) {
	if f.fail.Load() {
		return fleet.Machine{}, f.err()
	}
	return f.SQLite.ModifyMachine(ctx, mac, fn)
}

var _ store.Store = (*failingStore)(nil)

// syncBuffer is a log sink the handlers write to concurrently.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestInternalErrorHidesDetails: a 500 (issue 17, item 14) tells the
// client an error id and nothing of the error, on an open route, an
// authenticated one and a UI page; the server's log has the same id with
// the full error.
func TestInternalErrorHidesDetails(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{StateDir: filepath.Join(dir, "state"), ImageRoot: filepath.Join(dir, "images"),
		BootDir: filepath.Join(dir, "boot"), Host: "127.0.0.1", MaxUpload: 1 << 20, SessionTTL: time.Hour}
	for _, d := range []string{cfg.ImageRoot, cfg.BootDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	sq, err := sqlitestore.Open(ctx, cfg.DBPath(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sq.Close()
	if _, err := EnsureAdminPassword(ctx, sq, testPassword); err != nil {
		t.Fatal(err)
	}
	st := &failingStore{SQLite: sq}
	var logs syncBuffer
	srv := New(cfg, st, slog.New(slog.NewTextHandler(&logs, nil)), nil)
	defer srv.Close()
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	ts := &testServer{URL: hs.URL, cfg: cfg, srv: srv, st: sq}
	ts.token = ts.login(t, testPassword)
	st.fail.Store(true)

	idRE := regexp.MustCompile(`id ([0-9a-f]{8})\b`)
	check := func(t *testing.T, body string) {
		t.Helper()
		for _, leak := range []string{cfg.DBPath(), dir, "disk I/O", "state database"} {
			if strings.Contains(body, leak) {
				t.Errorf("the answer shows %q:\n%s", leak, body)
			}
		}
		m := idRE.FindStringSubmatch(body)
		if m == nil {
			t.Fatalf("no error id in the answer:\n%s", body)
		}
		var line string
		for _, l := range strings.Split(logs.String(), "\n") {
			if strings.Contains(l, "error_id="+m[1]) {
				line = l
			}
		}
		if line == "" {
			t.Fatalf("no log line with error_id=%s in:\n%s", m[1], logs.String())
		}
		if !strings.Contains(line, cfg.DBPath()) || !strings.Contains(line, "disk I/O error") {
			t.Errorf("log line for %s lacks the full error: %s", m[1], line)
		}
	}

	t.Run("open route", func(t *testing.T) {
		r := ts.do(t, "GET", "/pxe/02:00:00:00:00:01", nil, nil)
		if r.code != http.StatusInternalServerError {
			t.Fatalf("GET /pxe: %d %s, want 500", r.code, r.body)
		}
		msg := r.errMsg(t)
		if !regexp.MustCompile(`^internal error \(id [0-9a-f]{8}\): see the server log$`).MatchString(msg) {
			t.Errorf("error %q, want \"internal error (id XXXXXXXX): see the server log\"", msg)
		}
		check(t, string(r.body))
	})
	t.Run("health check", func(t *testing.T) {
		r := ts.do(t, "GET", "/healthz", nil, nil)
		if r.code != http.StatusServiceUnavailable {
			t.Fatalf("GET /healthz: %d %s, want 503", r.code, r.body)
		}
		check(t, string(r.body))
	})
	t.Run("authenticated route", func(t *testing.T) {
		r := ts.do(t, "GET", "/machines", nil, ts.auth())
		if r.code != http.StatusInternalServerError {
			t.Fatalf("GET /machines: %d %s, want 500", r.code, r.body)
		}
		check(t, string(r.body))
	})
	t.Run("UI page", func(t *testing.T) {
		r := ts.do(t, "GET", "/ui/dashboard", nil, map[string]string{"Cookie": CookieName + "=" + ts.token})
		if r.code != http.StatusInternalServerError {
			t.Fatalf("GET /ui/dashboard: %d %s, want 500", r.code, r.body)
		}
		check(t, string(r.body))
	})
	// Two failures get two ids.
	a := idRE.FindStringSubmatch(string(ts.do(t, "GET", "/pxe/02:00:00:00:00:02", nil, nil).body))
	b := idRE.FindStringSubmatch(string(ts.do(t, "GET", "/pxe/02:00:00:00:00:02", nil, nil).body))
	if a == nil || b == nil || a[1] == b[1] {
		t.Errorf("ids %v and %v: want two different ids", a, b)
	}
}
