package server

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/store"
)

// Discovery defaults (Config.DiscoveryBurst, DiscoveryEvery,
// MaxUnclaimed).
const (
	defaultDiscoveryBurst = 10
	defaultDiscoveryEvery = 10 * time.Second
	defaultMaxUnclaimed   = 1000
)

// discoveryWarnEvery spaces the warnings about refused discoveries: one
// per reason per interval, however many contacts are refused.
var discoveryWarnEvery = time.Minute

// Reasons a discovery is refused (the metric's reason label).
const (
	refusedRate = "rate" // the client address discovered too many machines lately
	refusedCap  = "cap"  // too many discovered machines are unclaimed
)

// discoveryGate decides whether a PXE contact from an unknown MAC may
// create a record: each client address has a token bucket of
// discoveries, and the discovered-and-unclaimed records
// (fleet.Machine.Unassigned) are capped. Known machines never pass
// through it.
type discoveryGate struct {
	perAddr *limiter
	max     int

	mu sync.Mutex
	// unclaimed is the set of unassigned machines' MACs, loaded from the
	// store on first use and kept by note (every machine change is
	// published, and publishing notes it).
	unclaimed map[fleet.MAC]struct{}
	// warned is when each reason was last warned about; refused counts
	// its refusals since.
	warned  map[string]time.Time
	refused map[string]int
}

func newDiscoveryGate(burst int, every time.Duration, max int) *discoveryGate {
	return &discoveryGate{perAddr: newLimiter(burst, every), max: max,
		warned: map[string]time.Time{}, refused: map[string]int{}}
}

// admit reports why the discovery of mac by a contact from addr is
// refused ("" when it may be stored; the MAC then counts as unclaimed
// until note or forget says otherwise).
func (g *discoveryGate) admit(ctx context.Context, st store.Store, mac fleet.MAC, addr string, now time.Time) (string, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.unclaimed == nil {
		ms, err := st.ListMachines(ctx)
		if err != nil {
			return "", err
		}
		g.unclaimed = map[fleet.MAC]struct{}{}
		for _, m := range ms {
			if m.Unassigned() {
				g.unclaimed[m.MAC] = struct{}{}
			}
		}
	}
	if _, ok := g.unclaimed[mac]; !ok && len(g.unclaimed) >= g.max {
		return refusedCap, nil
	}
	if ok, _ := g.perAddr.allow(addr, now); !ok {
		return refusedRate, nil
	}
	g.unclaimed[mac] = struct{}{}
	return "", nil
}

// note keeps the unclaimed set up to date with a changed (or deleted)
// machine.
func (g *discoveryGate) note(m fleet.Machine, deleted bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.unclaimed == nil {
		return // loaded from the store on first use
	}
	if deleted || !m.Unassigned() {
		delete(g.unclaimed, m.MAC)
	} else {
		g.unclaimed[m.MAC] = struct{}{}
	}
}

// forget drops mac from the unclaimed set (an admitted discovery that
// was not stored).
func (g *discoveryGate) forget(mac fleet.MAC) { g.note(fleet.Machine{MAC: mac}, true) }

// refusal counts a refused discovery for reason and says whether to
// warn now, with how many were refused since the last warning.
func (g *discoveryGate) refusal(reason string, now time.Time) (warn bool, since int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.refused[reason]++
	if last, ok := g.warned[reason]; ok && now.Sub(last) < discoveryWarnEvery {
		return false, 0
	}
	g.warned[reason] = now
	since = g.refused[reason]
	g.refused[reason] = 0
	return true, since
}

// pxeContact records a PXE contact: a known machine's always; an unknown
// one's (a discovery) only when the discovery gate admits it. A refused
// discovery is answered as a discovered machine would be (fleet.Discover)
// but not stored, counted in bty_discoveries_refused_total, and warned
// about at most once per discoveryWarnEvery; stored is then false.
func (s *Server) pxeContact(ctx context.Context, mac fleet.MAC, v fleet.Visit) (c store.Contact, stored bool, err error) {
	addr, now := v.IP, v.At
	var reason string
	if s.discovery.perAddr.spent(addr, now) {
		// An address that used up its discoveries (a flood of made-up
		// MACs, most likely): a read first, so an unknown MAC from it
		// is refused without taking the store's one writer.
		rec, err := store.Resolve(ctx, s.store, mac) // another NIC of a known machine is known
		if err != nil {
			return c, false, err
		}
		if _, err := s.store.GetMachine(ctx, rec); errors.Is(err, store.ErrNotFound) {
			reason = refusedRate
		} else if err != nil {
			return c, false, err
		}
	}
	if reason == "" {
		c, err = store.KnownContact(ctx, s.store, mac, v)
		if !errors.Is(err, store.ErrNotFound) {
			return c, err == nil, err
		}
		if reason, err = s.discovery.admit(ctx, s.store, mac, addr, now); err != nil {
			return c, false, err
		}
	}
	if reason != "" {
		s.metrics.discoveriesRefused.WithLabelValues(reason).Inc()
		if warn, n := s.discovery.refusal(reason, now); warn {
			msg := "discoveries refused: this client address discovered too many machines lately; they are served the discovery boot but not recorded"
			if reason == refusedCap {
				msg = "discoveries refused: too many discovered machines are unclaimed; new ones are served the discovery boot but not recorded (assign or delete some)"
			}
			s.log.Warn(msg, "reason", reason, "refused", n, "mac", mac, "ip", addr,
				"max_unclaimed", s.discovery.max, "next_warning_in", discoveryWarnEvery)
		}
		// Not recorded, so no flash cycle: the tui is served without a
		// token, and reports nothing back.
		c = store.Contact{}
		c.Machine, c.Decision = fleet.Discover(mac, fleet.Visit{IP: addr, At: now})
		return c, false, nil
	}
	c, err = store.PXEContact(ctx, s.store, mac, v)
	if err != nil {
		s.discovery.forget(mac)
	}
	return c, err == nil, err
}
