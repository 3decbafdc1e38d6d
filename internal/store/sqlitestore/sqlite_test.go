package sqlitestore

import (
	"bufio"
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/store"
)

func openTest(t *testing.T) (*SQLite, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "state", "state.db")
	s, err := Open(context.Background(), path, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

func ptr[T any](v T) *T { return &v }

// visit is a PXE contact from ip at at that opens a flash cycle if it
// is served the live env.
func visit(ip string, at time.Time) fleet.Visit {
	return fleet.Visit{IP: ip, At: at, Token: fleet.NewCycleToken(), TTL: time.Hour}
}

// call is a live env call in the cycle whose token is token.
func call(token, ip string, at time.Time) store.CycleCall {
	return store.CycleCall{Token: token, IP: ip, At: at}
}

// t0 has a sub-second part, to show times round-trip exactly.
var t0 = time.Date(2026, 11, 22, 10, 0, 0, 123456789, time.UTC)

func TestOpenCreatesPrivateFiles(t *testing.T) {
	s, path := openTest(t)
	for p, want := range map[string]os.FileMode{filepath.Dir(path): 0o700 | os.ModeDir, path: 0o600} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Errorf("%s: mode %v, want %v", p, fi.Mode(), want)
		}
	}
	if s.Path() != path {
		t.Errorf("Path() = %q, want %q", s.Path(), path)
	}
	var mode, sync string
	if err := s.r.QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
		t.Errorf("journal_mode = %q, %v; want wal", mode, err)
	}
	// synchronous is per connection: ask the write connection.
	err := s.write(context.Background(), func(ctx context.Context, tx dbtx) error {
		return tx.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&sync)
	})
	if err != nil || sync != "2" {
		t.Errorf("synchronous = %q, %v; want 2 (FULL)", sync, err)
	}
	if err := s.Ping(context.Background()); err != nil {
		t.Error(err)
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	notDB := filepath.Join(dir, "garbage.db")
	if err := os.WriteFile(notDB, []byte(strings.Repeat("this is not sqlite ", 100)), 0o600); err != nil {
		t.Fatal(err)
	}
	fileAsDir := filepath.Join(dir, "file")
	if err := os.WriteFile(fileAsDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path string
		want       []string
	}{
		{"not a database", notDB, []string{notDB, "not a bty-web database"}},
		{"parent is a file", filepath.Join(fileAsDir, "state.db"), []string{fileAsDir, "BTY_STATE_DIR"}},
		{"path is a directory", dir, []string{dir, "directory"}},
	}
	if os.Geteuid() != 0 {
		ro := filepath.Join(dir, "ro")
		if err := os.Mkdir(ro, 0o500); err != nil {
			t.Fatal(err)
		}
		tests = append(tests, struct {
			name, path string
			want       []string
		}{"read-only directory", filepath.Join(ro, "state.db"), []string{ro, "not writable", "BTY_STATE_DIR"}})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Open(context.Background(), tt.path, nil)
			if err == nil {
				s.Close()
				t.Fatal("opened, want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestMigrations(t *testing.T) {
	s, path := openTest(t)
	versions := func(db *sql.DB) []int {
		t.Helper()
		rows, err := db.Query("SELECT version FROM schema_version ORDER BY version")
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var vs []int
		for rows.Next() {
			var v int
			rows.Scan(&v)
			vs = append(vs, v)
		}
		return vs
	}
	var want []int
	for i := 1; i <= SchemaVersion(); i++ {
		want = append(want, i)
	}
	if SchemaVersion() < 1 {
		t.Fatal("no embedded migrations")
	}
	if diff := cmp.Diff(want, versions(s.r)); diff != "" {
		t.Errorf("schema_version after first open (-want +got):\n%s", diff)
	}
	if _, _, err := store.PutMachine(context.Background(), s, fleet.MustParseMAC("aa:bb:cc:dd:ee:ff"), fleet.MachineUpdate{Image: ptr("x.raw")}, t0); err != nil {
		t.Fatal(err)
	}
	s.Close()

	// Re-opening applies nothing again and keeps the data.
	for range 2 {
		s2, err := Open(context.Background(), path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, versions(s2.r)); diff != "" {
			t.Errorf("schema_version after re-open (-want +got):\n%s", diff)
		}
		if m, err := s2.GetMachine(context.Background(), fleet.MustParseMAC("aa:bb:cc:dd:ee:ff")); err != nil || m.Image != "x.raw" {
			t.Errorf("after re-open: %+v, %v", m, err)
		}
		s2.Close()
	}

	// A database from a newer bty-web is refused and left alone.
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	newer := SchemaVersion() + 1
	if _, err := db.Exec("INSERT INTO schema_version (version, name, applied_at) VALUES (?, 'future.sql', 'x')", newer); err != nil {
		t.Fatal(err)
	}
	db.Close()
	_, err = Open(context.Background(), path, nil)
	var tooNew *SchemaTooNewError
	if !errors.As(err, &tooNew) || tooNew.Version != newer || tooNew.Have != SchemaVersion() {
		t.Fatalf("open of a newer database: %v, want a SchemaTooNewError", err)
	}
	for _, w := range []string{path, fmt.Sprint(newer), "newer bty-web"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %q", err, w)
		}
	}
}

func TestLoadMigrationsRefusesGaps(t *testing.T) {
	ms, err := loadMigrations(migrationFS)
	if err != nil || len(ms) == 0 || ms[0].version != 1 {
		t.Fatalf("embedded migrations: %v, %v", ms, err)
	}
	// Exercise the gap check with a synthetic set.
	gap := testFS{"migrations/0001_a.sql": "SELECT 1;", "migrations/0003_c.sql": "SELECT 1;"}
	if _, err := loadMigrations(gap); err == nil || !strings.Contains(err.Error(), "0003_c.sql") {
		t.Errorf("gap: %v, want an error naming 0003_c.sql", err)
	}
	bad := testFS{"migrations/init.sql": "SELECT 1;"}
	if _, err := loadMigrations(bad); err == nil {
		t.Error("unnumbered migration accepted")
	}
}

func TestMachineCRUD(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	var mac = fleet.MustParseMAC("52:54:00:12:34:56")

	if _, err := s.GetMachine(ctx, mac); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetMachine of unknown: %v, want ErrNotFound", err)
	}
	if err := s.DeleteMachine(ctx, mac); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("DeleteMachine of unknown: %v, want ErrNotFound", err)
	}
	if ms, err := s.ListMachines(ctx); err != nil || ms == nil || len(ms) != 0 {
		t.Fatalf("ListMachines of empty store: %#v, %v; want an empty non-nil slice", ms, err)
	}

	m, created, err := store.PutMachine(ctx, s, mac, fleet.MachineUpdate{Image: ptr("debian.qcow2"), Hostname: ptr("node1")}, t0)
	if err != nil || !created {
		t.Fatalf("PutMachine create: %v, created=%v", err, created)
	}
	want := fleet.Machine{MAC: mac, Image: "debian.qcow2", Hostname: "node1", BootPolicy: fleet.PolicyLocal, NextBoot: fleet.NextFlash,
		CreatedAt: t0, UpdatedAt: t0}
	if diff := cmp.Diff(want, m); diff != "" {
		t.Errorf("created machine (-want +got):\n%s", diff)
	}
	got, err := s.GetMachine(ctx, mac)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("GetMachine after create (-want +got):\n%s", diff)
	}

	t1 := t0.Add(time.Minute)
	// A non-UTC now is stored and returned as the same instant in UTC.
	m, created, err = store.PutMachine(ctx, s, mac, fleet.MachineUpdate{
		ProvisioningMode: ptr(fleet.ModeCloudInit), CijoeWorkflowRef: ptr("wf.yaml"), CijoeSSHUser: ptr("debian"), CijoeSSHPort: ptr(2222), CijoeTimeout: ptr("2h"),
		BootPolicy: ptr(fleet.PolicyFlash), Hostname: ptr(""),
	}, t1.In(time.FixedZone("CET", 3600)))
	if err != nil || created {
		t.Fatalf("PutMachine update: %v, created=%v", err, created)
	}
	want.ProvisioningMode, want.CijoeWorkflowRef = "cloud-init", "wf.yaml"
	want.CijoeSSHUser, want.CijoeSSHPort, want.CijoeTimeout = "debian", 2222, "2h"
	want.BootPolicy, want.Hostname, want.UpdatedAt = fleet.PolicyFlash, "", t1
	if diff := cmp.Diff(want, m); diff != "" {
		t.Errorf("updated machine (-want +got):\n%s", diff)
	}
	if got, _ := s.GetMachine(ctx, mac); !cmp.Equal(want, got) {
		t.Errorf("GetMachine after update (-want +got):\n%s", cmp.Diff(want, got))
	}

	// A second machine; the list is ordered by MAC.
	if _, _, err := store.PutMachine(ctx, s, fleet.MustParseMAC("00:00:00:00:00:01"), fleet.MachineUpdate{}, t1); err != nil {
		t.Fatal(err)
	}
	ms, err := s.ListMachines(ctx)
	if err != nil || len(ms) != 2 || ms[0].MAC.String() != "00:00:00:00:00:01" || !cmp.Equal(ms[1], want) {
		t.Fatalf("ListMachines: %+v, %v", ms, err)
	}

	if err := s.DeleteMachine(ctx, mac); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetMachine(ctx, mac); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetMachine after delete: %v, want ErrNotFound", err)
	}
}

func TestValidation(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	var mac = fleet.MustParseMAC("aa:bb:cc:dd:ee:ff")
	for _, tt := range []struct {
		name  string
		u     fleet.MachineUpdate
		field string
	}{
		{"boot policy", fleet.MachineUpdate{BootPolicy: ptr(fleet.Policy("pxe"))}, "boot_policy"},
		{"empty boot policy", fleet.MachineUpdate{BootPolicy: ptr(fleet.Policy(""))}, "boot_policy"},
		{"boot policy case", fleet.MachineUpdate{BootPolicy: ptr(fleet.Policy("Flash"))}, "boot_policy"},
		{"provisioning mode", fleet.MachineUpdate{ProvisioningMode: ptr(fleet.Mode("ansible"))}, "provisioning_mode"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := store.PutMachine(ctx, s, mac, tt.u, t0)
			var ve *fleet.ValidationError
			if !errors.As(err, &ve) || ve.Field != tt.field {
				t.Fatalf("PutMachine: %v, want a fleet.ValidationError on %s", err, tt.field)
			}
			if !strings.Contains(err.Error(), tt.field) {
				t.Errorf("error %q does not name the field", err)
			}
		})
	}
	if _, err := s.GetMachine(ctx, mac); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a refused PutMachine stored something: %v", err)
	}
	for _, mode := range fleet.Modes {
		for _, pol := range fleet.Policies {
			if _, _, err := store.PutMachine(ctx, s, mac, fleet.MachineUpdate{ProvisioningMode: ptr(mode), BootPolicy: ptr(pol)}, t0); err != nil {
				t.Errorf("mode %q policy %q: %v", mode, pol, err)
			}
		}
	}

	// A zero MAC (none parsed) is refused, not stored as "".
	var zero fleet.MAC
	errs := map[string]error{}
	_, _, errs["PutMachine"] = store.PutMachine(ctx, s, zero, fleet.MachineUpdate{}, t0)
	_, errs["PXEContact"] = store.PXEContact(ctx, s, zero, visit("10.0.0.1", t0))
	_, errs["FlashDone"] = store.FlashDone(ctx, s, zero, fleet.Progress{}, call("", "10.0.0.1", t0))
	for name, err := range errs {
		if !fleet.IsValidation(err) {
			t.Errorf("%s(zero MAC): %v, want a ValidationError", name, err)
		}
	}
	if ms, _ := s.ListMachines(ctx); len(ms) != 1 {
		t.Errorf("%d machines stored, want 1", len(ms))
	}
}

func TestPXEContactDiscovery(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	var mac = fleet.MustParseMAC("52:54:00:00:00:01")
	// KnownContact does not discover: ErrNotFound, nothing written.
	if _, err := store.KnownContact(ctx, s, mac, visit("192.0.2.10", t0)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("KnownContact of an unknown MAC: %v, want ErrNotFound", err)
	}
	if _, err := s.GetMachine(ctx, mac); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("KnownContact stored a record: %v", err)
	}
	v := visit("192.0.2.10", t0)
	c, err := store.PXEContact(ctx, s, mac, v)
	if err != nil {
		t.Fatal(err)
	}
	want := fleet.Machine{MAC: mac, BootPolicy: fleet.PolicyTUI, NextBoot: fleet.NextFlash, DiscoveredAt: ptr(t0), LastSeenAt: ptr(t0),
		LastSeenIP: "192.0.2.10", CreatedAt: t0, UpdatedAt: t0, LastServed: fleet.PolicyTUI,
		Cycle: &fleet.Cycle{TokenHash: fleet.HashCycleToken(v.Token), IP: "192.0.2.10", StartedAt: t0, ExpiresAt: t0.Add(time.Hour)}}
	wantD := fleet.Decide(want)
	wantD.Cycle = v.Token
	if diff := cmp.Diff(store.Contact{Machine: want, Decision: wantD, Discovered: true}, c); diff != "" {
		t.Errorf("first contact (-want +got):\n%s", diff)
	}
	if got, _ := s.GetMachine(ctx, mac); !cmp.Equal(want, got) {
		t.Errorf("stored (-want +got):\n%s", cmp.Diff(want, got))
	}

	// A later contact (KnownContact now finds it; the first cycle has
	// expired) updates last_seen_* and opens a new cycle; updated_at
	// stays.
	t1 := t0.Add(time.Hour)
	v = visit("192.0.2.11", t1)
	c, err = store.KnownContact(ctx, s, mac, v)
	if err != nil {
		t.Fatal(err)
	}
	want.LastSeenAt, want.LastSeenIP = ptr(t1), "192.0.2.11"
	want.Cycle = &fleet.Cycle{TokenHash: fleet.HashCycleToken(v.Token), IP: "192.0.2.11", StartedAt: t1, ExpiresAt: t1.Add(time.Hour)}
	if diff := cmp.Diff(store.Contact{Machine: want, Decision: fleet.Decision{Serve: fleet.PolicyTUI, Why: "interactive live env (tui)", Cycle: v.Token}}, c); diff != "" {
		t.Errorf("second contact (-want +got):\n%s", diff)
	}
	if got, _ := s.GetMachine(ctx, mac); !cmp.Equal(want, got) {
		t.Errorf("stored (-want +got):\n%s", cmp.Diff(want, got))
	}

	// An operator-created machine is served its policy, not discovered.
	var known = fleet.MustParseMAC("52:54:00:00:00:02")
	if _, _, err := store.PutMachine(ctx, s, known, fleet.MachineUpdate{}, t0); err != nil {
		t.Fatal(err)
	}
	c, err = store.PXEContact(ctx, s, known, visit("192.0.2.12", t1))
	if err != nil || c.Decision.Serve != fleet.PolicyLocal || c.Discovered || c.Machine.DiscoveredAt != nil {
		t.Errorf("contact of a local machine: %+v, %v", c, err)
	}
}

func TestFlashCadence(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	var mac = fleet.MustParseMAC("52:54:00:00:00:03")
	now := t0
	tick := func() time.Time { now = now.Add(time.Minute); return now }
	if _, _, err := store.PutMachine(ctx, s, mac, fleet.MachineUpdate{BootPolicy: ptr(fleet.PolicyFlash), Image: ptr("d.raw")}, tick()); err != nil {
		t.Fatal(err)
	}
	var token string // the open cycle's
	contact := func(wantServe fleet.Policy, wantNext fleet.NextBoot) {
		t.Helper()
		c, err := store.PXEContact(ctx, s, mac, visit("10.0.0.5", tick()))
		token = c.Decision.Cycle
		if err != nil {
			t.Fatal(err)
		}
		if c.Decision.Serve != wantServe || c.Machine.NextBoot != wantNext || c.Machine.BootPolicy != fleet.PolicyFlash {
			t.Fatalf("contact: serve %s, next %s, policy %s; want serve %s, next %s",
				c.Decision.Serve, c.Machine.NextBoot, c.Machine.BootPolicy, wantServe, wantNext)
		}
		if m, _ := s.GetMachine(ctx, mac); m.NextBoot != wantNext {
			t.Fatalf("stored next_boot %s, want %s", m.NextBoot, wantNext)
		}
	}
	done := func() {
		t.Helper()
		at := tick()
		before, _ := s.GetMachine(ctx, mac)
		m, err := store.FlashDone(ctx, s, mac, fleet.Progress{}, call(token, "10.0.0.5", at))
		if err != nil {
			t.Fatal(err)
		}
		if m.NextBoot != fleet.NextLocal || m.BootPolicy != before.BootPolicy || m.LastFlashedAt == nil || !m.LastFlashedAt.Equal(at) || !m.UpdatedAt.Equal(at) {
			t.Fatalf("after done: %+v", m)
		}
		if got, _ := s.GetMachine(ctx, mac); !cmp.Equal(m, got) {
			t.Fatalf("FlashDone returned %+v, stored %+v", m, got)
		}
	}

	contact(fleet.PolicyFlash, fleet.NextFlash) // flashes
	done()
	contact(fleet.PolicyLocal, fleet.NextFlash) // boots the fresh disk once
	contact(fleet.PolicyFlash, fleet.NextFlash) // next reboot reflashes
	contact(fleet.PolicyFlash, fleet.NextFlash) // a flash that never said done keeps reflashing
	done()
	// A repeated done is refused and changes nothing.
	before, _ := s.GetMachine(ctx, mac)
	if _, err := store.FlashDone(ctx, s, mac, fleet.Progress{}, call(token, "10.0.0.5", tick())); !errors.Is(err, fleet.ErrCycleRefused) {
		t.Fatalf("second done in a cycle: %v, want refused", err)
	}
	if after, _ := s.GetMachine(ctx, mac); !cmp.Equal(before, after) {
		t.Fatalf("a refused done changed the record (-before +after):\n%s", cmp.Diff(before, after))
	}
	contact(fleet.PolicyLocal, fleet.NextFlash)
	contact(fleet.PolicyFlash, fleet.NextFlash)

	// done then a policy change: changing the policy resets next_boot.
	done()
	if m, _, err := store.PutMachine(ctx, s, mac, fleet.MachineUpdate{BootPolicy: ptr(fleet.PolicyFlash)}, tick()); err != nil || m.NextBoot != fleet.NextLocal {
		t.Fatalf("same policy again: next_boot %s, %v; want it left local", m.NextBoot, err)
	}
	if m, _, err := store.PutMachine(ctx, s, mac, fleet.MachineUpdate{BootPolicy: ptr(fleet.PolicyLocal)}, tick()); err != nil || m.NextBoot != fleet.NextFlash {
		t.Fatalf("policy change: next_boot %s, %v; want flash", m.NextBoot, err)
	}
	c, err := store.PXEContact(ctx, s, mac, visit("10.0.0.5", tick()))
	if err != nil || c.Decision.Serve != fleet.PolicyLocal || c.Machine.Cycle != nil {
		t.Fatalf("local machine: %+v, %v", c, err)
	}
	// done on a local machine: no cycle, refused.
	if _, err := store.FlashDone(ctx, s, mac, fleet.Progress{}, call(token, "10.0.0.5", tick())); !errors.Is(err, fleet.ErrCycleRefused) {
		t.Fatalf("done on a local machine: %v, want refused", err)
	}
	c, err = store.PXEContact(ctx, s, mac, visit("10.0.0.5", tick()))
	if err != nil || c.Decision.Serve != fleet.PolicyLocal || c.Machine.BootPolicy != fleet.PolicyLocal {
		t.Fatalf("local machine after done: %+v, %v", c, err)
	}
	if _, _, err := store.PutMachine(ctx, s, mac, fleet.MachineUpdate{BootPolicy: ptr(fleet.PolicyFlash)}, tick()); err != nil {
		t.Fatal(err)
	}
	contact(fleet.PolicyFlash, fleet.NextFlash) // back on flash: reflashes at once

	if _, err := store.FlashDone(ctx, s, fleet.MustParseMAC("52:54:00:99:99:99"), fleet.Progress{}, call(token, "10.0.0.5", now)); !errors.Is(err, store.ErrNotFound) || !errors.Is(err, fleet.ErrCycleRefused) {
		t.Errorf("FlashDone of unknown: %v, want ErrNotFound", err)
	}
}

func TestPXEContactCadenceBumpsUpdatedAt(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	var mac = fleet.MustParseMAC("52:54:00:00:00:04")
	store.PutMachine(ctx, s, mac, fleet.MachineUpdate{BootPolicy: ptr(fleet.PolicyFlash), Image: ptr("a.img")}, t0)
	t1, t2, t3 := t0.Add(time.Second), t0.Add(2*time.Second), t0.Add(3*time.Second)
	c, _ := store.PXEContact(ctx, s, mac, visit("10.0.0.1", t0))
	if _, err := store.FlashDone(ctx, s, mac, fleet.Progress{}, call(c.Decision.Cycle, "10.0.0.1", t1)); err != nil {
		t.Fatal(err)
	}
	c, _ = store.PXEContact(ctx, s, mac, visit("10.0.0.1", t2)) // next_boot local -> flash: a state change
	if !c.Machine.UpdatedAt.Equal(t2) {
		t.Errorf("updated_at %v after the cadence advanced, want %v", c.Machine.UpdatedAt, t2)
	}
	c, _ = store.PXEContact(ctx, s, mac, visit("10.0.0.1", t3)) // last_seen only
	if !c.Machine.UpdatedAt.Equal(t2) || !c.Machine.LastSeenAt.Equal(t3) {
		t.Errorf("plain contact: updated_at %v last_seen %v, want %v and %v", c.Machine.UpdatedAt, c.Machine.LastSeenAt, t2, t3)
	}
}

func TestSessions(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	h := func(tok string) []byte { sum := sha256.Sum256([]byte(tok)); return sum[:] }
	a, b, c := h("a"), h("b"), h("c")

	if err := s.CreateSession(ctx, a, t0.Add(time.Hour), t0); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateSession(ctx, b, t0.Add(2*time.Hour), t0); err != nil {
		t.Fatal(err)
	}
	valid := func(hash []byte, now time.Time) bool {
		t.Helper()
		ok, err := s.SessionValid(ctx, hash, now)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if !valid(a, t0) || !valid(b, t0) || valid(c, t0) {
		t.Error("fresh sessions: want a and b valid, c not")
	}
	if valid(a, t0.Add(time.Hour)) || !valid(a, t0.Add(time.Hour-time.Nanosecond)) {
		t.Error("a should expire exactly at its expiry")
	}
	if valid([]byte("short"), t0) {
		t.Error("a malformed hash is valid")
	}
	if err := s.CreateSession(ctx, []byte("short"), t0.Add(time.Hour), t0); !fleet.IsValidation(err) {
		t.Errorf("CreateSession with a 5-byte hash: %v, want a ValidationError", err)
	}

	// Creating a session later purges expired ones.
	later := t0.Add(90 * time.Minute)
	if err := s.CreateSession(ctx, c, later.Add(time.Hour), later); err != nil {
		t.Fatal(err)
	}
	var n int
	s.r.QueryRow("SELECT count(*) FROM sessions").Scan(&n)
	if n != 2 {
		t.Errorf("%d sessions stored after purge, want 2 (b, c)", n)
	}

	if err := s.RevokeSession(ctx, b); err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeSession(ctx, b); err != nil {
		t.Errorf("revoking twice: %v", err)
	}
	if valid(b, later) || !valid(c, later) {
		t.Error("after revoking b: want b invalid, c valid")
	}
	s.CreateSession(ctx, a, later.Add(time.Hour), later)
	if n, err := s.RevokeAllSessions(ctx); err != nil || n != 2 {
		t.Errorf("RevokeAllSessions = %d, %v; want 2", n, err)
	}
	if valid(a, later) || valid(c, later) {
		t.Error("sessions valid after RevokeAllSessions")
	}

	// Only the hash is stored.
	var stored []byte
	s.CreateSession(ctx, a, later.Add(time.Hour), later)
	s.r.QueryRow("SELECT token_hash FROM sessions").Scan(&stored)
	if !cmp.Equal(stored, a) {
		t.Errorf("stored %x, want the hash %x", stored, a)
	}
}

func TestSettings(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	if _, err := s.Setting(ctx, "admin_password_hash"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unset setting: %v, want ErrNotFound", err)
	}
	for _, v := range []string{"$argon2id$v=19$...", "", "second"} {
		if err := s.SetSetting(ctx, "admin_password_hash", v, t0); err != nil {
			t.Fatal(err)
		}
		if got, err := s.Setting(ctx, "admin_password_hash"); err != nil || got != v {
			t.Errorf("Setting = %q, %v; want %q", got, err, v)
		}
	}
	if err := s.SetSetting(ctx, "", "x", t0); !fleet.IsValidation(err) {
		t.Errorf("empty key: %v, want a ValidationError", err)
	}
}

func TestImageHashes(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	mtime := time.Date(2026, 1, 2, 3, 4, 5, 678, time.Local)
	if _, err := s.ImageHash(ctx, "d.raw", 10, mtime); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("uncached: %v, want ErrNotFound", err)
	}
	if err := s.SetImageHash(ctx, "d.raw", 10, mtime, "aaaa"); err != nil {
		t.Fatal(err)
	}
	if h, err := s.ImageHash(ctx, "d.raw", 10, mtime.UTC()); err != nil || h != "aaaa" {
		t.Errorf("cached: %q, %v", h, err)
	}
	for name, args := range map[string]struct {
		size  int64
		mtime time.Time
	}{"size changed": {11, mtime}, "mtime changed": {10, mtime.Add(time.Nanosecond)}} {
		if _, err := s.ImageHash(ctx, "d.raw", args.size, args.mtime); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s: %v, want store.ErrNotFound (stale)", name, err)
		}
	}
	if err := s.SetImageHash(ctx, "d.raw", 11, mtime, "bbbb"); err != nil {
		t.Fatal(err)
	}
	if h, err := s.ImageHash(ctx, "d.raw", 11, mtime); err != nil || h != "bbbb" {
		t.Errorf("replaced: %q, %v", h, err)
	}
	if _, err := s.ImageHash(ctx, "d.raw", 10, mtime); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("old entry still answers: %v", err)
	}
}

func TestCloseIdempotentAndRefusesWrites(t *testing.T) {
	s, _ := openTest(t)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := store.PXEContact(context.Background(), s, fleet.MustParseMAC("aa:bb:cc:dd:ee:ff"), visit("", t0)); !errors.Is(err, ErrClosed) {
		t.Errorf("write after Close: %v, want ErrClosed", err)
	}
}

func TestCancelledContext(t *testing.T) {
	s, _ := openTest(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := store.PutMachine(ctx, s, fleet.MustParseMAC("aa:bb:cc:dd:ee:ff"), fleet.MachineUpdate{}, t0); !errors.Is(err, context.Canceled) {
		t.Errorf("PutMachine with a cancelled context: %v", err)
	}
	if _, err := s.GetMachine(context.Background(), fleet.MustParseMAC("aa:bb:cc:dd:ee:ff")); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a cancelled write was stored: %v", err)
	}
}

// TestBatchIsolation: in one group-commit batch a failing write is
// rolled back alone; the others commit.
func TestBatchIsolation(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	boom := errors.New("boom")
	var wg sync.WaitGroup
	errs := make([]error, 64)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mac := benchMAC(i)
			errs[i] = s.write(ctx, func(ctx context.Context, tx dbtx) error {
				if err := insertMachine(ctx, tx, fleet.Machine{MAC: mac, BootPolicy: fleet.PolicyLocal, NextBoot: fleet.NextFlash, CreatedAt: t0, UpdatedAt: t0}); err != nil {
					return err
				}
				if i%2 == 1 {
					return boom
				}
				return nil
			})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		_, gerr := s.GetMachine(ctx, benchMAC(i))
		switch {
		case i%2 == 0 && (err != nil || gerr != nil):
			t.Errorf("write %d: %v, get: %v; want it committed", i, err, gerr)
		case i%2 == 1 && (!errors.Is(err, boom) || !errors.Is(gerr, store.ErrNotFound)):
			t.Errorf("write %d: %v, get: %v; want boom and rolled back", i, err, gerr)
		}
	}
}

func TestConcurrentWriters(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	const goroutines, contacts, macs = 8, 200, 50
	var wg sync.WaitGroup
	errc := make(chan error, goroutines*contacts*2)
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range contacts {
				mac := benchMAC((g*contacts + i) % macs) // goroutines share MACs
				ip := fmt.Sprintf("10.0.%d.%d", g, i%250)
				c, err := store.PXEContact(ctx, s, mac, visit(ip, time.Now()))
				if err != nil {
					errc <- err
				}
				if i%20 == 0 {
					if _, err := s.ListMachines(ctx); err != nil {
						errc <- err
					}
					if _, _, err := store.PutMachine(ctx, s, mac, fleet.MachineUpdate{BootPolicy: ptr(fleet.PolicyFlash)}, time.Now()); err != nil {
						errc <- err
					}
					// Other goroutines' contacts for the MAC may have
					// replaced the cycle meanwhile: refused is fine.
					if _, err := store.FlashDone(ctx, s, mac, fleet.Progress{}, call(c.Decision.Cycle, ip, time.Now())); err != nil && !errors.Is(err, fleet.ErrCycleRefused) {
						errc <- err
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	ms, err := s.ListMachines(ctx)
	if err != nil || len(ms) != macs {
		t.Fatalf("%d machines, %v; want %d", len(ms), err, macs)
	}
	checkIntegrity(t, s.path)
}

func checkIntegrity(t *testing.T, path string) {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var res string
	if err := db.QueryRow("PRAGMA integrity_check").Scan(&res); err != nil || res != "ok" {
		t.Errorf("integrity_check: %q, %v", res, err)
	}
}

// TestKill9 runs TestHelperWriter in a child process, kills it with
// SIGKILL while it writes, and checks that every write it reported as
// returned is in the reopened database, which must pass integrity_check.
func TestKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the kill -9 test")
	}
	path := filepath.Join(t.TempDir(), "state.db")
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperWriter$", "-test.count=1")
	cmd.Env = append(os.Environ(), "BTY_STORE_HELPER_DB="+path)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var committed []string
	sc := bufio.NewScanner(out)
	killed := false
	for sc.Scan() {
		mac, ok := strings.CutPrefix(sc.Text(), "committed ")
		if !ok {
			continue
		}
		committed = append(committed, mac)
		if len(committed) == 300 && !killed {
			// Mid-loop: the child has more writes in flight.
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			killed = true
		}
	}
	err = cmd.Wait()
	if !killed {
		t.Fatalf("the child ended before it was killed (%v); %d writes", err, len(committed))
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child: %v, want killed by SIGKILL", err)
	}
	t.Logf("child reported %d committed writes before SIGKILL", len(committed))

	checkIntegrity(t, path)
	s, err := Open(context.Background(), path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, mac := range committed {
		m, err := s.GetMachine(context.Background(), fleet.MustParseMAC(mac))
		if err != nil {
			t.Errorf("write of %s reported committed but lost: %v", mac, err)
			continue
		}
		if m.Image != "img-"+mac {
			t.Errorf("%s: image %q, want %q", mac, m.Image, "img-"+mac)
		}
	}
	// The store still takes writes.
	if _, _, err := store.PutMachine(context.Background(), s, fleet.MustParseMAC("aa:bb:cc:dd:ee:ff"), fleet.MachineUpdate{}, t0); err != nil {
		t.Error(err)
	}
}

// TestHelperWriter is the child of TestKill9: it writes machines from
// several goroutines until killed, printing each MAC once its write has
// returned.
func TestHelperWriter(t *testing.T) {
	path := os.Getenv("BTY_STORE_HELPER_DB")
	if path == "" {
		t.Skip("helper process for TestKill9")
	}
	s, err := Open(context.Background(), path, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 1_000_000; i++ {
				mac := benchMAC(g<<20 | i)
				var err error
				if i%2 == 0 {
					_, _, err = store.PutMachine(context.Background(), s, mac, fleet.MachineUpdate{Image: ptr("img-" + mac.String())}, time.Now())
				} else {
					_, _, err = store.PutMachine(context.Background(), s, mac, fleet.MachineUpdate{Image: ptr("img-" + mac.String()), BootPolicy: ptr(fleet.PolicyFlash)}, time.Now())
					if err == nil {
						_, err = store.PXEContact(context.Background(), s, mac, visit("10.0.0.1", time.Now()))
					}
				}
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(2)
				}
				mu.Lock()
				// Unbuffered: the line is out before the next write starts.
				fmt.Fprintf(os.Stdout, "committed %s\n", mac)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
}

// TestWritePanic: a panicking write function panics in its caller, is
// rolled back, and leaves the writer working.
func TestWritePanic(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	func() {
		defer func() {
			if p := recover(); p != "boom" {
				t.Errorf("recovered %v, want boom", p)
			}
		}()
		s.write(ctx, func(ctx context.Context, tx dbtx) error {
			insertMachine(ctx, tx, fleet.Machine{MAC: fleet.MustParseMAC("aa:bb:cc:dd:ee:ff"), BootPolicy: fleet.PolicyLocal, NextBoot: fleet.NextFlash, CreatedAt: t0, UpdatedAt: t0})
			panic("boom")
		})
		t.Error("write returned, want a panic")
	}()
	if _, err := s.GetMachine(ctx, fleet.MustParseMAC("aa:bb:cc:dd:ee:ff")); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the panicking write was kept: %v", err)
	}
	if _, err := store.PXEContact(ctx, s, fleet.MustParseMAC("aa:bb:cc:dd:ee:ff"), visit("10.0.0.1", t0)); err != nil {
		t.Errorf("writer broken after a panic: %v", err)
	}
}
