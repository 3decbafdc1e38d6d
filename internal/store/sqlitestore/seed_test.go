package sqlitestore

import (
	"context"
	"testing"
	"time"

	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/store"
)

// TestSeedAndFlashCycle: user_data and meta_data are stored, kept by
// updates that do not name them and cleared by ""; last_served follows
// each contact, and the flash cycle opens with a flash contact and
// closes with done.
func TestSeedAndFlashCycle(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	var mac = fleet.MustParseMAC("52:54:00:00:00:07")
	ud, md := "#cloud-config\nhostname: n7\n", "instance-id: x\n"
	m, _, err := store.PutMachine(ctx, s, mac, fleet.MachineUpdate{UserData: &ud, MetaData: &md, BootPolicy: ptr(fleet.PolicyFlash), Image: ptr("a.img")}, t0)
	if err != nil || m.UserData != ud || m.MetaData != md {
		t.Fatalf("put: %+v %v", m, err)
	}
	if m, _, _ = store.PutMachine(ctx, s, mac, fleet.MachineUpdate{Hostname: ptr("n7")}, t0); m.UserData != ud || m.MetaData != md {
		t.Fatalf("an update without the seed changed it: %q %q", m.UserData, m.MetaData)
	}
	if got, _ := s.GetMachine(ctx, mac); got.UserData != ud || got.MetaData != md {
		t.Fatalf("stored: %q %q", got.UserData, got.MetaData)
	}
	if m.InFlashCycle() {
		t.Fatal("in a flash cycle before any contact")
	}
	t1 := t0.Add(time.Minute)
	c, err := store.PXEContact(ctx, s, mac, "192.0.2.7", t1)
	if err != nil || c.Decision.Serve != fleet.PolicyFlash || c.Machine.LastServed != fleet.PolicyFlash || !c.Machine.InFlashCycle() {
		t.Fatalf("flash contact: %+v %v", c, err)
	}
	if got, _ := s.GetMachine(ctx, mac); got.LastServed != fleet.PolicyFlash || !got.InFlashCycle() {
		t.Fatalf("stored after the flash contact: %+v", got)
	}
	m, err = store.FlashDone(ctx, s, mac, t1.Add(time.Minute))
	if err != nil || m.InFlashCycle() {
		t.Fatalf("done closes the cycle: %+v %v", m, err)
	}
	c, _ = store.PXEContact(ctx, s, mac, "192.0.2.7", t1.Add(2*time.Minute))
	if c.Decision.Serve != fleet.PolicyLocal || c.Machine.LastServed != fleet.PolicyLocal || c.Machine.InFlashCycle() {
		t.Fatalf("the local contact after done: %+v", c)
	}
	c, _ = store.PXEContact(ctx, s, mac, "192.0.2.7", t1.Add(3*time.Minute))
	if c.Decision.Serve != fleet.PolicyFlash || !c.Machine.InFlashCycle() {
		t.Fatalf("the next flash contact opens a new cycle: %+v", c)
	}
	empty := ""
	if m, _, _ = store.PutMachine(ctx, s, mac, fleet.MachineUpdate{UserData: &empty, MetaData: &empty}, t0); m.UserData != "" || m.MetaData != "" {
		t.Fatalf("clearing: %q %q", m.UserData, m.MetaData)
	}
	if r := (fleet.Machine{UserData: "u", MetaData: "m", Hostname: "h"}).Redacted(); r.UserData != "" || r.MetaData != "" || r.Hostname != "h" {
		t.Fatalf("Redacted: %+v", r)
	}
}
