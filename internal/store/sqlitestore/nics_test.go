package sqlitestore

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/labels"
	"github.com/btyproject/bty/internal/store"
)

var (
	nicA1 = fleet.MustParseMAC("52:54:00:00:0a:01") // machine A's record
	nicA2 = fleet.MustParseMAC("52:54:00:00:0a:02") // A's second NIC
	nicB1 = fleet.MustParseMAC("52:54:00:00:0b:01") // machine B's record
	nicB2 = fleet.MustParseMAC("52:54:00:00:0b:02")
)

// tuiMachine makes a machine whose next contact opens a flash cycle
// from ip at at, and returns the cycle's token.
func tuiMachine(t *testing.T, s *SQLite, mac fleet.MAC, ip string, at time.Time) string {
	t.Helper()
	ctx := context.Background()
	if _, _, err := store.PutMachine(ctx, s, mac, fleet.MachineUpdate{BootPolicy: ptr(fleet.PolicyTUI)}, at); err != nil {
		t.Fatal(err)
	}
	c, err := store.PXEContact(ctx, s, mac, visit(ip, at))
	if err != nil || c.Decision.Cycle == "" {
		t.Fatalf("contact: %+v, %v", c.Decision, err)
	}
	return c.Decision.Cycle
}

func inventoryOf(nics ...fleet.MAC) fleet.Inventory {
	inv := fleet.Inventory{Firmware: "uefi", CPUs: 8, MemoryBytes: 31 << 30,
		Disks: []fleet.InventoryDisk{{Name: "nvme0n1", Transport: "nvme"}, {Name: "nvme1n1", Transport: "nvme"}, {Name: "sda", Transport: "sata"}},
		PCI:   []fleet.PCIDevice{{Address: "0000:01:00.0", Vendor: "0x10de", Device: "0x2204", Class: "0x030000", Kind: "gpu"}}}
	for i, n := range nics {
		inv.NICs = append(inv.NICs, fleet.NIC{MAC: n, Name: "eth" + string(rune('0'+i)), SpeedMbps: 1000, Link: true})
	}
	return inv
}

// TestInventoryLinksNICs: an inventory links the machine's other NICs;
// a PXE contact and the live env's calls from a linked NIC reach the
// machine's record, and no record is discovered for it.
func TestInventoryLinksNICs(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	tok := tuiMachine(t, s, nicA1, "10.0.0.3", t0)
	m, err := store.RecordInventory(ctx, s, nicA1, inventoryOf(nicA1, nicA2), call(tok, "10.0.0.3", t0.Add(time.Second)))
	if err != nil {
		t.Fatal(err)
	}
	if m.InventoryAt == nil || len(m.Inventory.NICs) != 2 {
		t.Fatalf("recorded: %+v", m)
	}
	if got, err := s.MachineByNIC(ctx, nicA2); err != nil || got != nicA1 {
		t.Fatalf("MachineByNIC(second NIC) = %v, %v; want %v", got, err, nicA1)
	}
	if _, err := s.MachineByNIC(ctx, nicA1); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the record's own MAC is linked: %v", err)
	}
	// The machine boots from its second NIC (another address, once the
	// first cycle is over).
	at := t0.Add(fleet.DefaultCycleTTL + time.Minute)
	c, err := store.PXEContact(ctx, s, nicA2, visit("10.0.0.9", at))
	if err != nil {
		t.Fatal(err)
	}
	if c.Discovered || c.Machine.MAC != nicA1 || c.Via != nicA2 || c.Decision.Serve != fleet.PolicyTUI || c.Decision.Cycle == "" {
		t.Fatalf("contact from the second NIC: discovered %v, machine %v, via %v, %+v", c.Discovered, c.Machine.MAC, c.Via, c.Decision)
	}
	if _, err := s.GetMachine(ctx, nicA2); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a record appeared for the second NIC: %v", err)
	}
	if n := len(mustList(t, s)); n != 1 {
		t.Fatalf("%d records, want 1", n)
	}
	// Its live env calls back by the second NIC's MAC: A's cycle.
	m, err = store.FlashFailed(ctx, s, nicA2, "boom", call(c.Decision.Cycle, "10.0.0.9", at.Add(time.Second)))
	if err != nil || m.MAC != nicA1 || m.LastFailure != "boom" {
		t.Fatalf("failed by the second NIC: %v, %v", m.MAC, err)
	}
	got, _ := s.GetMachine(ctx, nicA1)
	if got.LastFailure != "boom" {
		t.Fatalf("A's record: last failure %q", got.LastFailure)
	}
	// Deleting A removes its links: the NIC is unknown again.
	if err := s.DeleteMachine(ctx, nicA1); err != nil {
		t.Fatal(err)
	}
	if _, err := s.MachineByNIC(ctx, nicA2); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("link after deleting the machine: %v", err)
	}
}

// TestInventoryCannotClaim: an inventory never links a MAC that is
// another record's own, nor one another machine linked first; a record
// written for a linked MAC takes it back.
func TestInventoryCannotClaim(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	tokA := tuiMachine(t, s, nicA1, "10.0.0.3", t0)
	tokB := tuiMachine(t, s, nicB1, "10.0.0.4", t0)
	if _, err := store.RecordInventory(ctx, s, nicA1, inventoryOf(nicA1, nicA2), call(tokA, "10.0.0.3", t0)); err != nil {
		t.Fatal(err)
	}
	// B claims A's record MAC and A's linked NIC, and one of its own.
	if _, err := store.RecordInventory(ctx, s, nicB1, inventoryOf(nicB1, nicA1, nicA2, nicB2), call(tokB, "10.0.0.4", t0)); err != nil {
		t.Fatal(err)
	}
	for nic, want := range map[fleet.MAC]fleet.MAC{nicA2: nicA1, nicB2: nicB1} {
		if got, err := s.MachineByNIC(ctx, nic); err != nil || got != want {
			t.Errorf("MachineByNIC(%v) = %v, %v; want %v", nic, got, err, want)
		}
	}
	if _, err := s.MachineByNIC(ctx, nicA1); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("B linked A's record MAC: %v", err)
	}
	// A contact from A's MAC is still A's.
	c, err := store.PXEContact(ctx, s, nicA1, visit("10.0.0.3", t0.Add(time.Minute)))
	if err != nil || c.Machine.MAC != nicA1 || !c.Via.IsZero() {
		t.Fatalf("A's contact: %v via %v, %v", c.Machine.MAC, c.Via, err)
	}
	// An operator's record for B's second NIC takes the MAC back.
	if _, _, err := store.PutMachine(ctx, s, nicB2, fleet.MachineUpdate{Hostname: ptr("own")}, t0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.MachineByNIC(ctx, nicB2); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a record's MAC stays linked: %v", err)
	}
	c, err = store.PXEContact(ctx, s, nicB2, visit("10.0.0.8", t0.Add(time.Minute)))
	if err != nil || c.Machine.MAC != nicB2 || c.Machine.Hostname != "own" {
		t.Fatalf("contact from the record's MAC: %v %q, %v", c.Machine.MAC, c.Machine.Hostname, err)
	}
}

// TestInventoryRefusedWritesNothing: an inventory outside the cycle
// (wrong address, wrong token) is refused and changes nothing.
func TestInventoryRefusedWritesNothing(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	tok := tuiMachine(t, s, nicA1, "10.0.0.3", t0)
	before, _ := s.GetMachine(ctx, nicA1)
	for name, c := range map[string]store.CycleCall{
		"other address": call(tok, "10.0.0.66", t0),
		"wrong token":   call(fleet.NewCycleToken(), "10.0.0.3", t0),
		"no token":      call("", "10.0.0.3", t0),
	} {
		if _, err := store.RecordInventory(ctx, s, nicA1, inventoryOf(nicA1, nicA2), c); !errors.Is(err, fleet.ErrCycleRefused) {
			t.Errorf("%s: %v, want refused", name, err)
		}
	}
	after, _ := s.GetMachine(ctx, nicA1)
	if diff := cmp.Diff(before, after); diff != "" {
		t.Errorf("a refused inventory changed the record (-before +after):\n%s", diff)
	}
	if _, err := s.MachineByNIC(ctx, nicA2); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a refused inventory linked a NIC: %v", err)
	}
}

// TestDerivedLabelsSelect: the labels derived from the inventory are
// on the record and matched by selectors, the machine's own label
// winning on a key clash.
func TestDerivedLabelsSelect(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	tokA := tuiMachine(t, s, nicA1, "10.0.0.3", t0)
	tokB := tuiMachine(t, s, nicB1, "10.0.0.4", t0)
	m, err := store.RecordInventory(ctx, s, nicA1, inventoryOf(nicA1), call(tokA, "10.0.0.3", t0))
	if err != nil {
		t.Fatal(err)
	}
	want := fleet.Labels{"firmware": "uefi", "cpus": "8", "memory-gib": "31", "nvme": "2", "gpu": "nvidia"}
	if diff := cmp.Diff(want, m.DerivedLabels); diff != "" {
		t.Fatalf("derived labels (-want +got):\n%s", diff)
	}
	got, _ := s.GetMachine(ctx, nicA1)
	if diff := cmp.Diff(want, got.DerivedLabels); diff != "" {
		t.Fatalf("derived labels read back (-want +got):\n%s", diff)
	}
	// B: BIOS, no NVMe; its operator says gpu=a100 and nvme=4 by hand.
	invB := inventoryOf(nicB1)
	invB.Firmware, invB.Disks, invB.PCI = "bios", nil, nil
	if _, err := store.RecordInventory(ctx, s, nicB1, invB, call(tokB, "10.0.0.4", t0)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := store.PutMachine(ctx, s, nicB1, fleet.MachineUpdate{Labels: fleet.LabelUpdate{"gpu": ptr("a100"), "nvme": ptr("4")}}, t0); err != nil {
		t.Fatal(err)
	}
	// A's operator says firmware=bios by hand, over the derived uefi.
	if _, _, err := store.PutMachine(ctx, s, nicA1, fleet.MachineUpdate{Labels: fleet.LabelUpdate{"firmware": ptr("bios")}}, t0); err != nil {
		t.Fatal(err)
	}
	for sel, want := range map[string][]fleet.MAC{
		"nvme=2":           {nicA1},
		"nvme":             {nicA1, nicB1},
		"nvme=4":           {nicB1},
		"gpu=nvidia":       {nicA1},
		"gpu=a100":         {nicB1},
		"firmware=uefi":    nil,
		"firmware=bios":    {nicA1, nicB1},
		"cpus=8,!nvme":     nil,
		"memory-gib=31":    {nicA1, nicB1},
		"gpu notin (a100)": {nicA1},
	} {
		reqs, err := labels.Parse(sel)
		if err != nil {
			t.Fatal(err)
		}
		p, err := s.QueryMachines(ctx, store.MachineQuery{Selector: reqs})
		if err != nil {
			t.Fatal(err)
		}
		var gotMACs []fleet.MAC
		for _, m := range p.Machines {
			gotMACs = append(gotMACs, m.MAC)
			if !m.AllLabels().Matches(reqs) {
				t.Errorf("%s: %v matched in SQL but not by AllLabels %v", sel, m.MAC, m.AllLabels())
			}
		}
		if !slices.Equal(gotMACs, want) {
			t.Errorf("selector %q: %v, want %v", sel, gotMACs, want)
		}
	}
}

func mustList(t *testing.T, s *SQLite) []fleet.Machine {
	t.Helper()
	ms, err := s.ListMachines(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

// TestImportInventory: a restored record keeps its inventory, links its
// NICs again and derives its labels from the inventory, never taking
// the export's derived_labels; a bad inventory is refused.
func TestImportInventory(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	inv := inventoryOf(nicA1, nicA2)
	at := t0
	m := fleet.Machine{MAC: nicA1, BootPolicy: fleet.PolicyLocal, Inventory: &inv, InventoryAt: &at,
		DerivedLabels: fleet.Labels{"forged": "yes"}}
	if err := s.ImportMachines(ctx, []fleet.Machine{m}); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetMachine(ctx, nicA1)
	if err != nil || got.Inventory == nil || got.DerivedLabels["forged"] != "" || got.DerivedLabels["gpu"] != "nvidia" {
		t.Fatalf("imported: %+v, %v", got.DerivedLabels, err)
	}
	if owner, err := s.MachineByNIC(ctx, nicA2); err != nil || owner != nicA1 {
		t.Fatalf("link after import: %v, %v", owner, err)
	}
	p, err := s.QueryMachines(ctx, store.MachineQuery{Selector: []fleet.LabelRequirement{{Key: "forged", Op: fleet.LabelExists}}})
	if err != nil || len(p.Machines) != 0 {
		t.Fatalf("a forged derived label is selectable: %v, %v", p.Machines, err)
	}
	bad := inventoryOf(nicA1)
	bad.NICs = append(bad.NICs, bad.NICs[0])
	m.Inventory = &bad
	if err := s.ImportMachines(ctx, []fleet.Machine{m}); !fleet.IsValidation(err) {
		t.Fatalf("import of a bad inventory: %v, want a validation error", err)
	}
}
