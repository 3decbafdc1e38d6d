package server

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/netboot"
	"github.com/btyproject/bty/internal/store"
)

// Bounds of the proxy-DHCP's decisions (docs/reference.md, "Proxy-DHCP:
// no boot file for the local disk"). Proxy-DHCP is an open, unauthenticated UDP port: anyone
// on the network can send any MAC, each packet in a goroutine of its
// own. Over a bound, a firmware client is answered as if there were no
// rule (ipxe.efi, and /pxe/MAC decides over HTTP), and the store is not
// touched.
const (
	// proxyLookups is how many decisions read the store at once.
	proxyLookups = 4
	// proxyRecordBurst and proxyRecordEvery bound the contacts the
	// proxy-DHCP records (writes): a burst, then one per interval.
	proxyRecordBurst = 20
	proxyRecordEvery = 100 * time.Millisecond
	// proxyDecideTimeout bounds one decision's store work.
	proxyDecideTimeout = 2 * time.Second
)

// proxyDecider holds the bounds of Server.proxyDecline.
type proxyDecider struct {
	lookups chan struct{}
	records *limiter
}

func newProxyDecider() *proxyDecider {
	return &proxyDecider{lookups: make(chan struct{}, proxyLookups), records: newLimiter(proxyRecordBurst, proxyRecordEvery)}
}

// proxyDecline is the proxy-DHCP's decline hook (netboot.DeclineFunc):
// a PXE firmware request from a known machine whose next boot is its
// local disk (fleet.Decide serves local) gets no boot file, so the
// firmware gives up on PXE and goes on to its next boot option, the
// disk, with no iPXE in the way. The contact is recorded as a DHCP visit
// (fleet.Visit.DHCP: last_seen_at, and a flash machine's boot-the-disk-
// once turn is used) and the machine published. Unknown MACs, and
// machines that boot anything else, are answered (discovery and the
// live env go through iPXE and /pxe/MAC as before).
//
// The netboot responder asks only on the first request of a boot: once
// declined, the MAC's retries get no answer for netboot.DeclineWindow
// without asking again (else the second DISCOVER would see the next boot
// flipped back to flash and boot the live env).
func (s *Server) proxyDecline(d *proxyDecider, hw net.HardwareAddr) (bool, string) {
	mac, err := fleet.ParseMAC(hw.String())
	if err != nil {
		return false, ""
	}
	select {
	case d.lookups <- struct{}{}:
		defer func() { <-d.lookups }()
	default:
		s.proxyBusy(mac, "store lookups")
		return false, ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), proxyDecideTimeout)
	defer cancel()
	// A read first: the store's one writer is taken only for a machine
	// that is declined.
	rec, err := store.Resolve(ctx, s.store, mac) // another NIC's MAC: its machine's
	if err != nil {
		return false, ""
	}
	m, err := s.store.GetMachine(ctx, rec)
	if errors.Is(err, store.ErrNotFound) {
		return false, ""
	}
	if err != nil {
		s.log.Warn("proxy-DHCP: reading the machine failed; answering its firmware (iPXE and /pxe/MAC decide)", "mac", mac, "err", err)
		return false, ""
	}
	if fleet.Decide(m).Serve != fleet.PolicyLocal {
		return false, ""
	}
	now := time.Now()
	if ok, _ := d.records.allow("", now); !ok {
		s.proxyBusy(mac, "recorded contacts")
		return false, ""
	}
	c, err := store.KnownContact(ctx, s.store, mac, fleet.Visit{At: now, DHCP: true})
	if err != nil {
		// Deleted meanwhile (ErrNotFound), or the store failed: let
		// /pxe/MAC decide.
		if !errors.Is(err, store.ErrNotFound) {
			s.log.Warn("proxy-DHCP: recording the contact failed; answering its firmware (iPXE and /pxe/MAC decide)", "mac", mac, "err", err)
		}
		return false, ""
	}
	s.publishMachine(c.Machine)
	if c.Decision.Serve != fleet.PolicyLocal {
		// The record changed between the read and the write.
		return false, ""
	}
	return true, c.Decision.Why
}

// proxyBusy warns (once a minute) that a proxy-DHCP decision went over a
// bound.
func (s *Server) proxyBusy(mac fleet.MAC, what string) {
	if ok, _ := s.warnLimit.allow("proxy-DHCP busy", time.Now()); ok {
		s.log.Warn("proxy-DHCP: too many "+what+" at once; answering PXE firmware as if every machine netboots (iPXE and /pxe/MAC decide) until it eases (one warning per minute)",
			"mac", mac, "max_lookups", proxyLookups, "max_records_per_second", int(time.Second/proxyRecordEvery))
	}
}

// declineFunc is proxyDecline with d, as the netboot hook.
func (s *Server) declineFunc(d *proxyDecider) netboot.DeclineFunc {
	return func(hw net.HardwareAddr) (bool, string) { return s.proxyDecline(d, hw) }
}
