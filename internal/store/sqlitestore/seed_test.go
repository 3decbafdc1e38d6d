package sqlitestore

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/store"
	"github.com/google/go-cmp/cmp"
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
	if m.Cycle != nil {
		t.Fatal("a flash cycle before any contact")
	}
	t1 := t0.Add(time.Minute)
	const ip = "192.0.2.7"
	c, err := store.PXEContact(ctx, s, mac, visit(ip, t1))
	if err != nil || c.Decision.Serve != fleet.PolicyFlash || c.Machine.LastServed != fleet.PolicyFlash || c.Machine.Cycle == nil {
		t.Fatalf("flash contact: %+v %v", c, err)
	}
	tok := c.Decision.Cycle
	if got, _ := s.GetMachine(ctx, mac); got.LastServed != fleet.PolicyFlash || !cmp.Equal(got.Cycle, c.Machine.Cycle) {
		t.Fatalf("stored after the flash contact: %+v", got)
	}
	// The seed: each half once, to the cycle's token from its address.
	if _, err := store.ReleaseSeed(ctx, s, mac, "user-data", call(tok, "192.0.2.8", t1)); !errors.Is(err, fleet.ErrCycleRefused) {
		t.Fatalf("seed from another address: %v", err)
	}
	m, err = store.ReleaseSeed(ctx, s, mac, "user-data", call(tok, ip, t1))
	if err != nil || m.UserData != ud || !m.Cycle.UserDataServed || m.Cycle.MetaDataServed {
		t.Fatalf("user-data: %+v %v", m.Cycle, err)
	}
	if got, _ := s.GetMachine(ctx, mac); !got.Cycle.UserDataServed {
		t.Fatal("the release was not stored")
	}
	if _, err := store.ReleaseSeed(ctx, s, mac, "user-data", call(tok, ip, t1)); !errors.Is(err, fleet.ErrCycleRefused) {
		t.Fatalf("user-data twice: %v", err)
	}
	if m, err = store.ReleaseSeed(ctx, s, mac, "meta-data", call(tok, ip, t1)); err != nil || !m.Cycle.MetaDataServed {
		t.Fatalf("meta-data: %v", err)
	}
	m, err = store.FlashDone(ctx, s, mac, fleet.Progress{}, call(tok, ip, t1.Add(time.Minute)))
	if err != nil || m.CheckCycle(tok, ip, t1.Add(time.Minute)) == nil {
		t.Fatalf("done ends the cycle's calls: %+v %v", m, err)
	}
	c, _ = store.PXEContact(ctx, s, mac, visit(ip, t1.Add(2*time.Minute)))
	if c.Decision.Serve != fleet.PolicyLocal || c.Machine.LastServed != fleet.PolicyLocal || c.Machine.Cycle != nil {
		t.Fatalf("the local contact after done: %+v", c)
	}
	c, _ = store.PXEContact(ctx, s, mac, visit(ip, t1.Add(3*time.Minute)))
	if c.Decision.Serve != fleet.PolicyFlash || c.Machine.Cycle == nil {
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
