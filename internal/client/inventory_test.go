package client_test

import (
	"testing"

	"github.com/btyproject/bty/internal/api"
	"github.com/btyproject/bty/internal/client"
	"github.com/btyproject/bty/internal/client/clienttest"
	"github.com/btyproject/bty/internal/fleet"
)

// TestPXEInventory: the live env's inventory report reaches the record
// in the machine's flash cycle (and its derived labels with it); outside
// it, or out of bounds, it is refused with the status the live env
// stops trying on.
func TestPXEInventory(t *testing.T) {
	t.Parallel()
	ts, c := loggedIn(t)
	cx := ctx(t)
	anon, _ := client.New(ts.URL)
	mac := fleet.MustParseMAC("52:54:00:12:34:5a")
	inv := api.Inventory{Firmware: "uefi", CPUs: 2, NICs: []api.NIC{{MAC: mac, Name: "eth0", Link: true}}}
	if err := anon.PXEInventory(cx, mac, fleet.NewCycleToken(), inv); !client.IsForbidden(err) {
		t.Fatalf("PXEInventory for an unknown machine: %v, want 403", err)
	}
	_, cycle := clienttest.PXEBoot(t, ts.URL, mac)
	bad := inv
	bad.Firmware = "coreboot"
	if err := anon.PXEInventory(cx, mac, cycle, bad); client.StatusCode(err) != 400 {
		t.Fatalf("PXEInventory out of bounds: %v, want 400", err)
	}
	if err := anon.PXEInventory(cx, mac, cycle, inv); err != nil {
		t.Fatal(err)
	}
	m, err := c.Machine(cx, mac)
	if err != nil || m.Inventory == nil || m.Inventory.CPUs != 2 || m.DerivedLabels["firmware"] != "uefi" || m.InventoryAt == nil {
		t.Fatalf("Machine after the inventory = %+v, %v", m.Inventory, err)
	}
}
