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

// TestFlashHistory: every flash is a row of its own, written in the
// machine's transaction with an ID of its own; pages come newest first,
// per machine or fleet-wide; running ones and recent ones are found;
// the cycle token's hash is kept (for phone-home) but never the token;
// deleting a machine deletes its history.
func TestFlashHistory(t *testing.T) {
	s, path := openTest(t)
	ctx := context.Background()
	a, b := fleet.MustParseMAC("52:54:00:00:0f:01"), fleet.MustParseMAC("52:54:00:00:0f:02")
	for _, mac := range []fleet.MAC{a, b} {
		if _, _, err := store.PutMachine(ctx, s, mac, fleet.MachineUpdate{Image: ptr("x.img"), BootPolicy: ptr(fleet.PolicyFlash), ReadyCheck: ptr(fleet.ReadyNone)}, t0); err != nil {
			t.Fatal(err)
		}
	}
	// a: three policy flashes, each done (ready at once: ready check none).
	var tokens []string
	for i := range 3 {
		at := t0.Add(time.Duration(i) * time.Hour)
		c, err := store.PXEContact(ctx, s, a, visit("10.0.0.1", at))
		if err != nil || c.Machine.Flash == nil || c.Machine.Flash.ID == 0 {
			t.Fatalf("contact %d: %+v %v", i, c.Machine.Flash, err)
		}
		tokens = append(tokens, c.Decision.Cycle)
		m, err := store.FlashDone(ctx, s, a, fleet.Progress{BytesWritten: 1000, TotalBytes: 2000, Rate: 10}, call(c.Decision.Cycle, "10.0.0.1", at.Add(time.Minute)))
		if err != nil || m.Flash.Result != fleet.FlashReady || m.Flash.BytesWritten != 1000 {
			t.Fatalf("done %d: %+v %v", i, m.Flash, err)
		}
		// The disk boot after it.
		if _, err := store.PXEContact(ctx, s, a, visit("10.0.0.1", at.Add(2*time.Minute))); err != nil {
			t.Fatal(err)
		}
	}
	// b: one demand flash, left running.
	m, err := store.Reflash(ctx, s, b, fleet.ReflashRequest{}, fleet.FlashRun{At: t0.Add(30 * time.Minute)})
	if err != nil || m.Flash.ID == 0 || m.Flash.Trigger != fleet.TriggerDemand {
		t.Fatalf("reflash: %+v %v", m.Flash, err)
	}
	if _, err := store.Reflash(ctx, s, b, fleet.ReflashRequest{}, fleet.FlashRun{At: t0.Add(31 * time.Minute)}); !errors.As(err, new(*fleet.FlashInProgressError)) {
		t.Fatalf("second reflash: %v", err)
	}

	fs, n, err := s.ListFlashes(ctx, a, 2, 0)
	if err != nil || n != 3 || len(fs) != 2 || fs[0].ID <= fs[1].ID || !fs[0].RequestedAt.Equal(t0.Add(2*time.Hour)) {
		t.Fatalf("a's first page: %+v %d %v", fs, n, err)
	}
	if fs[0].DiskAt != nil {
		t.Errorf("a flash ready at done has no disk phase: %+v", fs[0])
	}
	fs2, _, _ := s.ListFlashes(ctx, a, 2, 2)
	if len(fs2) != 1 || fs2[0].ID >= fs[1].ID {
		t.Fatalf("a's second page: %+v", fs2)
	}
	all, n, err := s.ListFlashes(ctx, fleet.MAC{}, 0, 0)
	if err != nil || n != 4 || len(all) != 4 || all[0].MAC != b {
		t.Fatalf("every flash: %+v %d %v", all, n, err)
	}
	run, err := s.RunningFlashes(ctx)
	if err != nil || len(run) != 1 || run[0].MAC != b {
		t.Fatalf("running: %+v %v", run, err)
	}
	since, err := s.FlashesSince(ctx, t0.Add(30*time.Minute), 0)
	if err != nil || len(since) != 3 || !since[0].RequestedAt.Equal(t0.Add(30*time.Minute)) {
		t.Fatalf("since: %+v %v", since, err)
	}
	g, err := s.GetFlash(ctx, all[1].ID)
	if err != nil || g.ID != all[1].ID || g.TokenHash != fleet.HashCycleToken(tokens[2]) {
		t.Fatalf("get: %+v %v", g, err)
	}
	if _, err := s.GetFlash(ctx, 9999); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("get unknown: %v", err)
	}
	// The token never lands in the database; its hash does.
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var docs string
	if err := db.QueryRow(`SELECT group_concat(doc, ' ') FROM flashes`).Scan(&docs); err != nil {
		t.Fatal(err)
	}
	for _, tok := range tokens {
		if strings.Contains(docs, tok) {
			t.Fatal("a cycle token is stored in the flash history")
		}
	}
	if !strings.Contains(docs, fleet.HashCycleToken(tokens[0])) {
		t.Error("the token hash is not kept for phone-home")
	}
	// A machine that PXE-boots into the live env again before it
	// reports: its first flash ends failed in the history, not left
	// running.
	cm := fleet.MustParseMAC("52:54:00:00:0f:03")
	if _, _, err := store.PutMachine(ctx, s, cm, fleet.MachineUpdate{Image: ptr("x.img"), BootPolicy: ptr(fleet.PolicyFlash)}, t0); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if _, err := store.PXEContact(ctx, s, cm, visit("10.0.0.9", t0.Add(time.Duration(i)*time.Minute))); err != nil {
			t.Fatal(err)
		}
	}
	cf, _, _ := s.ListFlashes(ctx, cm, 0, 0)
	if len(cf) != 2 || cf[0].Result != fleet.FlashRunning || cf[1].Result != fleet.FlashFailed || !strings.Contains(cf[1].Reason, "PXE-booted again") {
		t.Fatalf("a replaced flash: %+v", cf)
	}
	if run, _ := s.RunningFlashes(ctx); len(run) != 2 { // b's and cm's latest
		t.Fatalf("running after a replaced flash: %+v", run)
	}
	if err := s.DeleteMachine(ctx, a); err != nil {
		t.Fatal(err)
	}
	if _, n, _ := s.ListFlashes(ctx, a, 0, 0); n != 0 {
		t.Errorf("a deleted machine's history: %d rows", n)
	}
}

// countingStore counts the writes asked of a store.
type countingStore struct {
	store.Store
	writes int
}

func (c *countingStore) ModifyMachine(ctx context.Context, mac fleet.MAC, fn func(fleet.Machine, bool) (fleet.Machine, error)) (fleet.Machine, error) {
	c.writes++
	return c.Store.ModifyMachine(ctx, mac, fn)
}

// TestRefusedCallsDoNotWrite: a live env or phone-home call refused by
// what the record says now never takes the store's one writer (a flood
// of them on the open routes must not queue the fleet's writes).
func TestRefusedCallsDoNotWrite(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	mac := fleet.MustParseMAC("52:54:00:00:0f:10")
	if _, _, err := store.PutMachine(ctx, s, mac, fleet.MachineUpdate{Image: ptr("x.img"), BootPolicy: ptr(fleet.PolicyFlash)}, t0); err != nil {
		t.Fatal(err)
	}
	c, err := store.PXEContact(ctx, s, mac, visit("10.0.0.1", t0))
	if err != nil {
		t.Fatal(err)
	}
	cs := &countingStore{Store: s}
	wrong := call(fleet.NewCycleToken(), "10.0.0.1", t0.Add(time.Minute))
	for what, err := range map[string]error{
		"done, wrong token": func() error { _, err := store.FlashDone(ctx, cs, mac, fleet.Progress{}, wrong); return err }(),
		"progress, other ip": func() error {
			_, err := store.FlashProgress(ctx, cs, mac, fleet.Progress{}, call(c.Decision.Cycle, "10.0.0.2", t0))
			return err
		}(),
		"failed, unknown MAC": func() error {
			_, err := store.FlashFailed(ctx, cs, fleet.MustParseMAC("52:54:00:00:0f:11"), "x", wrong)
			return err
		}(),
		"ready, before done": func() error {
			_, err := store.PhoneHome(ctx, cs, mac, call(c.Decision.Cycle, "10.0.0.9", t0))
			return err
		}(),
		"ready, unknown MAC": func() error {
			_, err := store.PhoneHome(ctx, cs, fleet.MustParseMAC("52:54:00:00:0f:11"), wrong)
			return err
		}(),
	} {
		if !errors.Is(err, fleet.ErrCycleRefused) {
			t.Errorf("%s: %v, want refused", what, err)
		}
	}
	if cs.writes != 0 {
		t.Fatalf("refused calls asked for %d writes", cs.writes)
	}
	if _, err := store.FlashProgress(ctx, cs, mac, fleet.Progress{BytesWritten: 1}, call(c.Decision.Cycle, "10.0.0.1", t0.Add(time.Minute))); err != nil || cs.writes != 1 {
		t.Fatalf("an accepted progress: %v, %d writes", err, cs.writes)
	}
}
