package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/store"
)

func TestFlashFailed(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	var mac = fleet.MustParseMAC("52:54:00:00:00:0f")
	pol, img := fleet.PolicyFlash, "a.img"
	if _, _, err := store.PutMachine(ctx, s, mac, fleet.MachineUpdate{BootPolicy: &pol, Image: &img}, t0); err != nil {
		t.Fatal(err)
	}
	at := t0.Add(time.Minute)
	if _, err := store.FlashFailed(ctx, s, mac, "x", call("", "10.0.0.3", at)); !errors.Is(err, fleet.ErrCycleRefused) {
		t.Fatalf("failed before any contact: %v, want refused", err)
	}
	c, err := store.PXEContact(ctx, s, mac, visit("10.0.0.3", t0))
	if err != nil {
		t.Fatal(err)
	}
	m, err := store.FlashFailed(ctx, s, mac, "no disk found", call(c.Decision.Cycle, "10.0.0.3", at))
	if err != nil {
		t.Fatal(err)
	}
	if m.LastFailure != "no disk found" || m.LastFailedAt == nil || !m.LastFailedAt.Equal(at) || !m.UpdatedAt.Equal(at) {
		t.Fatalf("after FlashFailed: %+v", m)
	}
	// The cadence is untouched: the next contact flashes again.
	if m.BootPolicy != fleet.PolicyFlash || m.NextBoot != fleet.NextFlash || m.LastFlashedAt != nil {
		t.Fatalf("FlashFailed changed the cadence: %+v", m)
	}
	got, err := s.GetMachine(ctx, mac)
	if err != nil || got.LastFailure != "no disk found" || !got.LastFailedAt.Equal(at) {
		t.Fatalf("stored: %+v, %v", got, err)
	}
	// Long reasons are cut.
	at = at.Add(time.Second)
	c, _ = store.PXEContact(ctx, s, mac, visit("10.0.0.3", at))
	m, err = store.FlashFailed(ctx, s, mac, strings.Repeat("é", fleet.MaxFailureLen+50), call(c.Decision.Cycle, "10.0.0.3", at.Add(time.Second)))
	if err != nil || len([]rune(m.LastFailure)) != fleet.MaxFailureLen {
		t.Fatalf("long reason: %d runes, %v", len([]rune(m.LastFailure)), err)
	}
	if _, err := store.FlashFailed(ctx, s, fleet.MustParseMAC("52:54:00:00:00:99"), "x", call(c.Decision.Cycle, "10.0.0.3", at)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown MAC: %v", err)
	}
}

// TestMigrationFromV1 opens a schema-1 database (no failure columns): the
// migration adds them and keeps the records.
func TestMigrationFromV1(t *testing.T) {
	s, path := openTest(t)
	ctx := context.Background()
	if _, _, err := store.PutMachine(ctx, s, fleet.MustParseMAC("52:54:00:00:00:01"), fleet.MachineUpdate{Hostname: ptr("old")}, t0); err != nil {
		t.Fatal(err)
	}
	s.Close()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{`ALTER TABLE machines DROP COLUMN last_failure`, `ALTER TABLE machines DROP COLUMN last_failed_at`,
		`ALTER TABLE machines DROP COLUMN user_data`, `ALTER TABLE machines DROP COLUMN meta_data`, `ALTER TABLE machines DROP COLUMN last_served`,
		`ALTER TABLE machines DROP COLUMN cycle_token_hash`, `ALTER TABLE machines DROP COLUMN cycle_ip`,
		`ALTER TABLE machines DROP COLUMN cycle_started_at`, `ALTER TABLE machines DROP COLUMN cycle_expires_at`,
		`ALTER TABLE machines DROP COLUMN cycle_seed_served`, `ALTER TABLE machines DROP COLUMN last_conflict_at`,
		`ALTER TABLE machines DROP COLUMN last_conflict_ip`, `ALTER TABLE machines DROP COLUMN power`,
		`ALTER TABLE machines DROP COLUMN ready_check`, `ALTER TABLE machines DROP COLUMN flash_deadline`,
		`ALTER TABLE machines DROP COLUMN flash`, `DROP TABLE flashes`,
		`ALTER TABLE machines DROP COLUMN cijoe_ssh_user`, `ALTER TABLE machines DROP COLUMN cijoe_ssh_port`,
		`ALTER TABLE machines DROP COLUMN cijoe_timeout`, `DROP TABLE runs`,
		`ALTER TABLE machines DROP COLUMN labels`, `DROP TABLE machine_labels`,
		`ALTER TABLE machines DROP COLUMN health_every`, `ALTER TABLE machines DROP COLUMN health_fail_after`,
		`ALTER TABLE machines DROP COLUMN health`, `ALTER TABLE machines DROP COLUMN recovery`, `ALTER TABLE machines DROP COLUMN quarantine`,
		`DROP TABLE actions`,
		`DROP TABLE schedules`,
		`DROP TABLE rollouts`,
		`ALTER TABLE machines DROP COLUMN inventory`, `ALTER TABLE machines DROP COLUMN inventory_at`, `DROP TABLE machine_nics`,
		`UPDATE machines SET last_known_good = 'old.img'`,
		`DELETE FROM schema_version WHERE version >= 2`} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	db.Close()
	s2, err := Open(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	m, err := s2.GetMachine(ctx, fleet.MustParseMAC("52:54:00:00:00:01"))
	if err != nil || m.Hostname != "old" || m.LastFailure != "" || m.LastFailedAt != nil {
		t.Fatalf("after upgrading: %+v, %v", m, err)
	}
	// Version 1's last_known_good was an image name: it reads as a
	// baseline of that image alone.
	if k := m.LastKnownGood; k == nil || *k != (fleet.KnownGood{Image: "old.img"}) {
		t.Errorf("last_known_good after upgrading: %+v, want the image old.img", k)
	}
	if _, _, err := store.PutMachine(ctx, s2, fleet.MustParseMAC("52:54:00:00:00:01"), fleet.MachineUpdate{BootPolicy: ptr(fleet.PolicyTUI)}, t0); err != nil {
		t.Fatal(err)
	}
	c, err := store.PXEContact(ctx, s2, fleet.MustParseMAC("52:54:00:00:00:01"), visit("10.0.0.3", t0))
	if err != nil || c.Machine.Cycle == nil {
		t.Fatalf("PXEContact after upgrading: %+v, %v", c.Machine.Cycle, err)
	}
	if _, err := store.FlashFailed(ctx, s2, fleet.MustParseMAC("52:54:00:00:00:01"), "boom", call(c.Decision.Cycle, "10.0.0.3", t0)); err != nil {
		t.Fatalf("FlashFailed after upgrading: %v", err)
	}
	// The failure in the interactive live env is a flash of the history.
	fs, n, err := s2.ListFlashes(ctx, fleet.MustParseMAC("52:54:00:00:00:01"), 10, 0)
	if err != nil || n != 1 || len(fs) != 1 || fs[0].Trigger != fleet.TriggerTUI || fs[0].Result != fleet.FlashFailed || fs[0].Reason != "boom" || fs[0].ID == 0 {
		t.Fatalf("flash history after upgrading: %+v, %d, %v", fs, n, err)
	}
}
