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

func TestImportMachinesRoundTrip(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	status := fleet.WorkflowSuccess
	in := []fleet.Machine{
		{MAC: fleet.MustParseMAC("52:54:00:00:00:01"), Image: "a.img", ProvisioningMode: "cloud-init", Hostname: "n1", BootPolicy: fleet.PolicyFlash,
			NextBoot: fleet.NextLocal, DiscoveredAt: &t0, LastSeenAt: &t0, LastSeenIP: "10.0.0.5", LastFlashedAt: &t0,
			LastWorkflowRunAt: &t0, LastWorkflowStatus: &status, LastWorkflowOutputPath: "/x", CreatedAt: t0, UpdatedAt: t0,
			LastFailedAt: &t0, LastFailure: "writing /dev/sda: input/output error"},
		{MAC: fleet.MustParseMAC("52:54:00:00:00:02"), BootPolicy: fleet.PolicyTUI, NextBoot: fleet.NextFlash, CreatedAt: t0, UpdatedAt: t0},
	}
	// An existing record with the same MAC is replaced.
	if _, _, err := store.PutMachine(ctx, s, fleet.MustParseMAC("52:54:00:00:00:01"), fleet.MachineUpdate{}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := s.ImportMachines(ctx, in); err != nil {
		t.Fatal(err)
	}
	got, err := s.ListMachines(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(in, got); diff != "" {
		t.Errorf("(-imported +read back):\n%s", diff)
	}
	// One bad record: nothing is written.
	bad := []fleet.Machine{{MAC: fleet.MustParseMAC("52:54:00:00:00:03"), BootPolicy: fleet.PolicyLocal}, {MAC: fleet.MustParseMAC("52:54:00:00:00:04"), BootPolicy: "reboot"}}
	if err := s.ImportMachines(ctx, bad); !fleet.IsValidation(err) {
		t.Fatalf("bad import: %v", err)
	}
	if _, err := s.GetMachine(ctx, fleet.MustParseMAC("52:54:00:00:00:03")); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a record of a refused import was written: %v", err)
	}
}
