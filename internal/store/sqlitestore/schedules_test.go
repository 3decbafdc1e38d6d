package sqlitestore

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/store"
)

// TestSchedules: a created schedule gets an id and reads back whole
// (its occurrence included) after the store is reopened; list is by
// id; modify writes fn's result and nothing when fn fails; the cap
// refuses one more; delete removes it and unknown ids are not found.
func TestSchedules(t *testing.T) {
	s, path := openTest(t)
	ctx := context.Background()
	t0 := time.Date(2026, 5, 1, 3, 0, 0, 0, time.UTC)
	end := t0.Add(2 * time.Hour)
	a := fleet.Schedule{Name: "nightly", Selector: "role=ci", Cron: "0 3 * * *", TZ: "Europe/Berlin", Action: fleet.ActionReflash,
		MaxParallel: 2, Window: "2h", CreatedAt: t0, UpdatedAt: t0, LastFireAt: &t0,
		Occurrence: &fleet.Occurrence{At: t0, FiredAt: t0, WindowEnd: end, Machines: []fleet.OccurrenceMachine{
			{MAC: fleet.MustParseMAC("52:54:00:00:00:01"), State: fleet.SchedStarted, FlashID: 4, At: &t0}}}}
	a, err := s.CreateSchedule(ctx, a, 2)
	if err != nil || a.ID == 0 {
		t.Fatalf("create: %+v, %v", a, err)
	}
	b, err := s.CreateSchedule(ctx, fleet.Schedule{Name: "weekly", Selector: "rack=r1", Cron: "@weekly", TZ: "UTC", Action: fleet.ActionKnownGood}, 2)
	if err != nil || b.ID <= a.ID {
		t.Fatalf("second: %+v, %v", b, err)
	}
	if _, err := s.CreateSchedule(ctx, fleet.Schedule{Name: "third"}, 2); !errors.Is(err, store.ErrLimit) {
		t.Errorf("a third past max 2: %v", err)
	}
	s.Close()
	s, err = Open(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.GetSchedule(ctx, a.ID)
	if d := cmp.Diff(a, got); err != nil || d != "" {
		t.Fatalf("get after reopening: %v (-want +got):\n%s", err, d)
	}
	all, err := s.ListSchedules(ctx)
	if err != nil || len(all) != 2 || all[0].ID != a.ID || all[1].Name != "weekly" {
		t.Fatalf("list: %+v, %v", all, err)
	}

	m, err := s.ModifySchedule(ctx, a.ID, func(x fleet.Schedule) (fleet.Schedule, error) {
		x.Paused = true
		x.ID = 999 // ignored: the row keeps its id
		return x, nil
	})
	if err != nil || !m.Paused || m.ID != a.ID {
		t.Fatalf("modify: %+v, %v", m, err)
	}
	boom := errors.New("boom")
	if _, err := s.ModifySchedule(ctx, a.ID, func(x fleet.Schedule) (fleet.Schedule, error) {
		x.Name = "changed"
		return x, boom
	}); !errors.Is(err, boom) {
		t.Errorf("modify with an error: %v", err)
	}
	if got, _ := s.GetSchedule(ctx, a.ID); got.Name != "nightly" || !got.Paused {
		t.Errorf("after the failed modify: %+v", got)
	}
	if _, err := s.ModifySchedule(ctx, 12345, func(x fleet.Schedule) (fleet.Schedule, error) { return x, nil }); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("modify unknown: %v", err)
	}

	if err := s.DeleteSchedule(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteSchedule(ctx, a.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("delete twice: %v", err)
	}
	if _, err := s.GetSchedule(ctx, a.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("get deleted: %v", err)
	}
	if all, _ := s.ListSchedules(ctx); len(all) != 1 {
		t.Errorf("after delete: %+v", all)
	}
}
