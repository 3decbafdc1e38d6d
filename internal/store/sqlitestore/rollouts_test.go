package sqlitestore

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/store"
)

// TestRollouts: a rollout is saved with a new id, read back whole (its
// machines' list included), listed newest first with a limit, listed as
// active until it stopped with nothing in flight, and survives a
// reopen of the database.
func TestRollouts(t *testing.T) {
	ctx := context.Background()
	s, path := openTest(t)
	now := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	a, _ := fleet.ParseMAC("52:54:00:00:00:01")
	b, _ := fleet.ParseMAC("52:54:00:00:00:02")
	r := fleet.NewRollout(fleet.RolloutRequest{Selector: "role=ci", Image: "new.img"}, []fleet.Machine{{MAC: b}, {MAC: a}}, now)
	first, err := s.SaveRollout(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	if first.ID == 0 {
		t.Fatal("no id")
	}
	second, err := s.SaveRollout(ctx, fleet.NewRollout(fleet.RolloutRequest{Selector: "x=y", Image: "other.img"}, []fleet.Machine{{MAC: a}}, now))
	if err != nil || second.ID <= first.ID {
		t.Fatalf("second: %+v %v", second, err)
	}
	got, err := s.GetRollout(ctx, first.ID)
	if err != nil || got.Selector != "role=ci" || len(got.Machines) != 2 || got.Machines[0].MAC != a || !got.Machines[0].Canary || !got.CreatedAt.Equal(now) {
		t.Fatalf("read back: %+v %v", got, err)
	}
	if _, err := s.GetRollout(ctx, 999); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown id: %v", err)
	}
	if _, err := s.SaveRollout(ctx, fleet.Rollout{ID: 999, State: fleet.RolloutRunning}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("saving an unknown id: %v", err)
	}
	list, err := s.ListRollouts(ctx, 0)
	if err != nil || len(list) != 2 || list[0].ID != second.ID || list[1].ID != first.ID {
		t.Fatalf("list: %+v %v", list, err)
	}
	if list, _ := s.ListRollouts(ctx, 1); len(list) != 1 || list[0].ID != second.ID {
		t.Fatalf("list limit 1: %+v", list)
	}
	// The second ends: no longer active.
	ended, err := second.Abort("test", now)
	if err != nil || ended.Active() {
		t.Fatalf("abort: %+v %v", ended, err)
	}
	if _, err := s.SaveRollout(ctx, ended); err != nil {
		t.Fatal(err)
	}
	act, err := s.ActiveRollouts(ctx)
	if err != nil || len(act) != 1 || act[0].ID != first.ID {
		t.Fatalf("active: %+v %v", act, err)
	}
	// A restart reads them back.
	s.Close()
	s2, err := Open(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if act, err := s2.ActiveRollouts(ctx); err != nil || len(act) != 1 || act[0].ID != first.ID || act[0].State != fleet.RolloutRunning {
		t.Fatalf("active after reopen: %+v %v", act, err)
	}
	if got, err := s2.GetRollout(ctx, second.ID); err != nil || got.State != fleet.RolloutAborted || got.Reason != "test" {
		t.Fatalf("aborted after reopen: %+v %v", got, err)
	}
}
