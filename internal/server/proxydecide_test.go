package server

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/store"
	"github.com/btyproject/bty/internal/store/sqlitestore"
)

// TestProxyDecline is the proxy-DHCP's decision over a real SQLite
// store: a known machine whose next boot is its disk is declined (no
// boot file) and its contact recorded as a DHCP visit; a flash
// machine's disk turn is used by it, so it is declined once and offered
// after; flash, tui and unknown machines are offered without a write.
func TestProxyDecline(t *testing.T) {
	var st *decideStore
	ts, sq := customServer(t, func(sq *sqlitestore.SQLite) store.Store {
		st = &decideStore{countingStore: &countingStore{SQLite: sq}}
		return st
	}, slog.New(slog.DiscardHandler))
	ctx := context.Background()
	put := func(mac, body string) {
		t.Helper()
		if r := ts.do(t, "PUT", "/machines/"+mac, strings.NewReader(body), ts.auth()); r.code != 201 && r.code != 200 {
			t.Fatalf("PUT %s: %d %s", mac, r.code, r.body)
		}
	}
	get := func(mac string) fleet.Machine {
		t.Helper()
		m, err := sq.GetMachine(ctx, fleet.MustParseMAC(mac))
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	hw := func(mac string) net.HardwareAddr {
		h, err := net.ParseMAC(mac)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	decide := ts.srv.declineFunc(newProxyDecider())
	events := ts.srv.hub

	const (
		local   = "52:54:00:dc:00:01"
		flash   = "52:54:00:dc:00:02"
		tui     = "52:54:00:dc:00:03"
		unknown = "52:54:00:dc:00:04"
	)
	put(local, `{"boot_policy": "local"}`)
	put(flash, `{"boot_policy": "flash", "image": "a.img"}`)
	put(tui, `{"boot_policy": "tui"}`)

	t.Run("local machine: declined, contact recorded", func(t *testing.T) {
		before := get(local)
		seq := events.end()
		start := time.Now()
		ok, why := decide(hw(local))
		if !ok || why != "local disk" {
			t.Fatalf("decide = %v %q, want declined with why \"local disk\"", ok, why)
		}
		after := get(local)
		if after.LastSeenAt == nil || after.LastSeenAt.Before(start.Add(-time.Second)) {
			t.Errorf("last_seen_at %v, want the contact's time", after.LastSeenAt)
		}
		if after.LastSeenIP != before.LastSeenIP || after.Cycle != nil || after.LastServed != fleet.PolicyLocal {
			t.Errorf("after the DHCP contact: ip %q cycle %+v served %q; want no address, no cycle, served local", after.LastSeenIP, after.Cycle, after.LastServed)
		}
		if events.end() == seq {
			t.Error("the recorded contact was not published")
		}
	})

	for _, mac := range []string{flash, tui} {
		t.Run(string(get(mac).BootPolicy)+" machine: offered, nothing written", func(t *testing.T) {
			before, writes := get(mac), st.modifies.Load()
			if ok, why := decide(hw(mac)); ok {
				t.Fatalf("declined (%s): the firmware must get ipxe.efi", why)
			}
			if n := st.modifies.Load() - writes; n != 0 {
				t.Errorf("the decision took the store's writer %d times, want 0", n)
			}
			if d := cmp.Diff(before, get(mac)); d != "" {
				t.Errorf("the record changed (-before +after):\n%s", d)
			}
		})
	}

	t.Run("unknown MAC: offered, nothing stored", func(t *testing.T) {
		writes := st.modifies.Load()
		if ok, why := decide(hw(unknown)); ok {
			t.Fatalf("declined (%s): unknown machines must get ipxe.efi (discovery)", why)
		}
		if n := st.modifies.Load() - writes; n != 0 {
			t.Errorf("took the store's writer %d times, want 0", n)
		}
		if _, err := sq.GetMachine(ctx, fleet.MustParseMAC(unknown)); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetMachine(unknown) = %v, want not found: a DHCP request discovers nothing", err)
		}
	})

	t.Run("flash machine after done: declined once, then offered", func(t *testing.T) {
		// The live env flashed it: done in the cycle of its PXE contact.
		if r := ts.report(t, flash, "done", nil); r.code != 200 {
			t.Fatalf("done: %d %s", r.code, r.body)
		}
		done := get(flash)
		if done.NextBoot != fleet.NextLocal {
			t.Fatalf("after done: next_boot %q", done.NextBoot)
		}
		ok, why := decide(hw(flash))
		if !ok || !strings.Contains(why, "local disk once") {
			t.Fatalf("decide = %v %q, want declined (the disk boots once)", ok, why)
		}
		m := get(flash)
		if m.NextBoot != fleet.NextFlash {
			t.Errorf("next_boot %q after the DHCP contact, want flash (the disk turn is used)", m.NextBoot)
		}
		if m.LastSeenIP != "127.0.0.1" || !m.LastSeenAt.After(*done.LastSeenAt) || m.LastFlashedAt == nil || !m.LastFlashedAt.Equal(*done.LastFlashedAt) {
			t.Errorf("after the DHCP contact: ip %q seen %v flashed %v; want the live env's address kept, seen later, flashed unchanged", m.LastSeenIP, m.LastSeenAt, m.LastFlashedAt)
		}
		// Asked again (what netboot's decline window prevents within a
		// boot), the next boot is a reflash: offered.
		if ok, _ := decide(hw(flash)); ok {
			t.Error("declined again: the next boot after the disk turn must reflash")
		}
		if _, cycle := ts.boot(t, "127.0.0.1", flash); cycle == "" {
			t.Error("the next PXE contact does not reflash")
		}
	})

	t.Run("recorded contacts are capped", func(t *testing.T) {
		d := newProxyDecider()
		d.records = newLimiter(1, time.Hour)
		capped := ts.srv.declineFunc(d)
		const other = "52:54:00:dc:00:05"
		put(other, `{"boot_policy": "local"}`)
		if ok, _ := capped(hw(local)); !ok {
			t.Fatal("first decision refused")
		}
		before, writes := get(other), st.modifies.Load()
		if ok, _ := capped(hw(other)); ok {
			t.Error("declined over the cap: want the firmware answered (iPXE and /pxe/MAC decide)")
		}
		if n := st.modifies.Load() - writes; n != 0 {
			t.Errorf("over the cap the store's writer was taken %d times, want 0", n)
		}
		if d := cmp.Diff(before, get(other)); d != "" {
			t.Errorf("over the cap the record changed:\n%s", d)
		}
	})

	t.Run("store lookups are bounded", func(t *testing.T) {
		d := newProxyDecider()
		for range cap(d.lookups) {
			d.lookups <- struct{}{}
		}
		reads := st.gets.Load()
		if ok, _ := ts.srv.declineFunc(d)(hw(local)); ok {
			t.Error("declined with every lookup slot taken: want the firmware answered without a store read")
		}
		if n := st.gets.Load() - reads; n != 0 {
			t.Errorf("%d store reads with every slot taken, want 0", n)
		}
	})
}

// decideStore is a countingStore that also counts GetMachine calls.
type decideStore struct {
	*countingStore
	gets atomic.Int64
}

func (s *decideStore) GetMachine(ctx context.Context, mac fleet.MAC) (fleet.Machine, error) {
	s.gets.Add(1)
	return s.countingStore.GetMachine(ctx, mac)
}
