package sqlitestore

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/store"
)

// TestRuns: a run is inserted with a new ID and the machine's record is
// written in the same call; updates keep the ID; lists are newest first
// and paged; unfinished runs are found; a baseline survives a reopen;
// deleting the machine deletes its runs.
func TestRuns(t *testing.T) {
	s, path := openTest(t)
	ctx := context.Background()
	mac := fleet.MustParseMAC("52:54:00:00:00:07")
	if _, _, err := s.SaveRun(ctx, fleet.Run{MAC: mac, Result: fleet.RunQueued}, nil); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("run of an unknown machine: %v, want ErrNotFound", err)
	}
	if _, _, err := store.PutMachine(ctx, s, mac, fleet.MachineUpdate{Image: ptr("a.img"), UserData: ptr("#cloud-config\n")}, t0); err != nil {
		t.Fatal(err)
	}
	r1, m, err := s.SaveRun(ctx, fleet.Run{MAC: mac, Result: fleet.RunRunning, Workflow: "w.yaml", CreatedAt: t0}, func(m fleet.Machine, r fleet.Run) fleet.Machine {
		return m.WithRun(r, "/state/runs/1", m.UserData, m.MetaData, t0)
	})
	if err != nil || r1.ID == 0 || m.LastWorkflowStatus == nil || *m.LastWorkflowStatus != fleet.WorkflowRunning {
		t.Fatalf("first run: %+v, machine status %v, %v", r1, m.LastWorkflowStatus, err)
	}
	r2, _, err := s.SaveRun(ctx, fleet.Run{MAC: mac, Result: fleet.RunQueued, CreatedAt: t0.Add(time.Minute)}, nil)
	if err != nil || r2.ID <= r1.ID {
		t.Fatalf("second run: %+v, %v", r2, err)
	}
	exit := 0
	done := r1.End(fleet.RunSuccess, "", &exit, t0.Add(2*time.Minute))
	done.KnownGood = true
	got, m, err := s.SaveRun(ctx, done, func(m fleet.Machine, r fleet.Run) fleet.Machine {
		return m.WithRun(r, "/state/runs/1", m.UserData, m.MetaData, t0.Add(2*time.Minute))
	})
	if err != nil || got.ID != r1.ID || m.LastKnownGood == nil || m.LastKnownGood.RunID != r1.ID || m.LastKnownGood.UserData != "#cloud-config\n" {
		t.Fatalf("ending the first run: %+v, baseline %+v, %v", got, m.LastKnownGood, err)
	}
	if _, _, err := s.SaveRun(ctx, fleet.Run{ID: 999, MAC: mac, Result: fleet.RunFailed}, nil); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("updating an unknown run: %v, want ErrNotFound", err)
	}
	runs, total, err := s.ListRuns(ctx, mac, 1, 0)
	if err != nil || total != 2 || len(runs) != 1 || runs[0].ID != r2.ID {
		t.Errorf("ListRuns page 1: %+v, total %d, %v", runs, total, err)
	}
	runs, _, _ = s.ListRuns(ctx, fleet.MAC{}, 10, 1)
	if len(runs) != 1 || runs[0].ID != r1.ID || runs[0].Result != fleet.RunSuccess || !runs[0].KnownGood {
		t.Errorf("ListRuns all, offset 1: %+v", runs)
	}
	un, err := s.UnfinishedRuns(ctx)
	if err != nil || len(un) != 1 || un[0].ID != r2.ID {
		t.Errorf("UnfinishedRuns: %+v, %v", un, err)
	}
	if _, err := s.GetRun(ctx, 12345); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetRun unknown: %v", err)
	}
	s.Close()
	s2, err := Open(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	m2, err := s2.GetMachine(ctx, mac)
	if err != nil || m2.LastKnownGood == nil || *m2.LastKnownGood != *m.LastKnownGood {
		t.Fatalf("baseline after reopening: %+v, want %+v (%v)", m2.LastKnownGood, m.LastKnownGood, err)
	}
	if r, err := s2.GetRun(ctx, r1.ID); err != nil || r.Result != fleet.RunSuccess {
		t.Errorf("GetRun after reopening: %+v, %v", r, err)
	}
	if err := s2.DeleteMachine(ctx, mac); err != nil {
		t.Fatal(err)
	}
	if runs, total, _ := s2.ListRuns(ctx, fleet.MAC{}, 0, 0); total != 0 || len(runs) != 0 {
		t.Errorf("runs after deleting the machine: %d", total)
	}
}
