package live

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/vishvananda/netlink"

	"github.com/btyproject/bty/internal/fleet"
)

// lease is the network configuration DHCP gave one interface.
type lease struct {
	Iface    string
	Addr     net.IPNet
	Router   net.IP
	DNS      []net.IP
	Duration time.Duration
}

// ensureNetwork brings the network up once (the interface with the MAC
// the machine PXE-booted with, else the first to get a lease), trying
// until it works: without it there is nothing to flash from.
func (s *system) ensureNetwork(ctx context.Context) *lease {
	s.netMu.Lock()
	defer s.netMu.Unlock()
	if s.network != nil {
		return s.network
	}
	for attempt := 1; ; attempt++ {
		l, err := s.dhcp(ctx, s.params.MAC)
		if err == nil {
			s.network = l
			ones, _ := l.Addr.Mask.Size()
			s.say("network up on %s %s/%d", l.Iface, l.Addr.IP, ones)
			return l
		}
		wait := min(time.Duration(attempt)*5*time.Second, 30*time.Second)
		s.say("no network yet (attempt %d): %v; trying again in %s", attempt, err, wait)
		time.Sleep(wait)
	}
}

// dhcp asks for a lease on every candidate interface at once and
// configures the first that gets one.
func (s *system) dhcp(ctx context.Context, mac fleet.MAC) (*lease, error) {
	var links []netlink.Link
	deadline := time.Now().Add(20 * time.Second)
	for {
		links = candidateLinks(mac)
		if len(links) > 0 || time.Now().After(deadline) {
			break
		}
		// The NIC's driver may still be on its way (a USB NIC, a
		// device that appears after its bus driver).
		if s.mods != nil {
			s.mods.probe()
		}
		time.Sleep(500 * time.Millisecond)
	}
	if len(links) == 0 {
		if !mac.IsZero() {
			return nil, fmt.Errorf("no network interface with MAC %s (interfaces: %s); is its driver in the live env?", mac, linkNames())
		}
		return nil, fmt.Errorf("no network interface (interfaces: %s); is its driver in the live env?", linkNames())
	}
	for _, l := range links {
		if err := netlink.LinkSetUp(l); err != nil {
			s.log.Warn("bringing the link up", "iface", l.Attrs().Name, "err", err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 45*time.Second)
	defer cancel()
	type result struct {
		l   *lease
		err error
	}
	results := make(chan result, len(links))
	for _, l := range links {
		go func() {
			ls, err := requestLease(ctx, l.Attrs().Name)
			results <- result{ls, err}
		}()
	}
	var errs []error
	for range links {
		r := <-results
		if r.err != nil {
			errs = append(errs, r.err)
			continue
		}
		cancel()
		if err := configure(r.l); err != nil {
			return nil, err
		}
		return r.l, nil
	}
	return nil, errors.Join(errs...)
}

// candidateLinks are the Ethernet interfaces, or only the one with mac.
func candidateLinks(mac fleet.MAC) []netlink.Link {
	all, err := netlink.LinkList()
	if err != nil {
		return nil
	}
	var out []netlink.Link
	for _, l := range all {
		a := l.Attrs()
		if l.Type() != "device" || a.Flags&net.FlagLoopback != 0 || len(a.HardwareAddr) != 6 {
			continue
		}
		if !mac.IsZero() && a.HardwareAddr.String() != mac.String() {
			continue
		}
		out = append(out, l)
	}
	return out
}

func linkNames() string {
	all, _ := netlink.LinkList()
	var names []string
	for _, l := range all {
		names = append(names, l.Attrs().Name+" "+l.Attrs().HardwareAddr.String())
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

// requestLease runs DHCP (discover, offer, request, ack) on iface. A
// link without carrier yet gets a few tries while it comes up.
func requestLease(ctx context.Context, iface string) (*lease, error) {
	var last error
	for ctx.Err() == nil {
		c, err := nclient4.New(iface, nclient4.WithTimeout(3*time.Second), nclient4.WithRetry(2))
		if err != nil {
			return nil, fmt.Errorf("DHCP on %s: %w", iface, err)
		}
		l, err := c.Request(ctx, clientID(iface)...)
		c.Close()
		if err == nil {
			ack := l.ACK
			mask := ack.SubnetMask()
			if mask == nil {
				mask = ack.YourIPAddr.DefaultMask()
			}
			out := &lease{Iface: iface, Addr: net.IPNet{IP: ack.YourIPAddr, Mask: mask},
				DNS: ack.DNS(), Duration: ack.IPAddressLeaseTime(time.Hour)}
			if r := ack.Router(); len(r) > 0 {
				out.Router = r[0]
			}
			return out, nil
		}
		last = err
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	if last == nil {
		last = ctx.Err()
	}
	return nil, fmt.Errorf("DHCP on %s: no lease: %w", iface, last)
}

// clientID identifies the live env to the DHCP server as PXE firmware
// and iPXE do (option 61: hardware type 1 and the MAC), so a server that
// keys its leases by client identifier (dnsmasq does) gives it the
// address iPXE had, the one bty-web saw the PXE contact from; without
// it the lease may follow the installed OS's identifier instead.
func clientID(iface string) []dhcpv4.Modifier {
	ifi, err := net.InterfaceByName(iface)
	if err != nil || len(ifi.HardwareAddr) != 6 {
		return nil
	}
	return []dhcpv4.Modifier{dhcpv4.WithOption(dhcpv4.OptClientIdentifier(append([]byte{1}, ifi.HardwareAddr...)))}
}

// configure puts the lease on its interface: address, default route,
// resolv.conf.
func configure(l *lease) error {
	link, err := netlink.LinkByName(l.Iface)
	if err != nil {
		return fmt.Errorf("configuring %s: %w", l.Iface, err)
	}
	if err := netlink.AddrReplace(link, &netlink.Addr{IPNet: &l.Addr}); err != nil {
		return fmt.Errorf("setting %s on %s: %w", l.Addr.String(), l.Iface, err)
	}
	if l.Router != nil && !l.Router.IsUnspecified() {
		err := netlink.RouteReplace(&netlink.Route{LinkIndex: link.Attrs().Index, Gw: l.Router,
			Dst: &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}})
		if err != nil {
			return fmt.Errorf("default route via %s on %s: %w", l.Router, l.Iface, err)
		}
	}
	var b strings.Builder
	seen := map[string]bool{}
	for _, d := range l.DNS {
		if !seen[d.String()] {
			seen[d.String()] = true
			fmt.Fprintf(&b, "nameserver %s\n", d)
		}
	}
	_ = os.MkdirAll("/etc", 0o755)
	return os.WriteFile("/etc/resolv.conf", []byte(b.String()), 0o644)
}

// keepLease renews the lease (a fresh request on the same interface)
// every half lease, for a live env that runs for long (the server
// appliance).
func (s *system) keepLease(ctx context.Context, l *lease) {
	for {
		d := max(l.Duration/2, time.Minute)
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
		nl, err := requestLease(ctx, l.Iface)
		if err != nil {
			s.log.Warn("renewing the DHCP lease", "iface", l.Iface, "err", err)
			continue
		}
		if !nl.Addr.IP.Equal(l.Addr.IP) {
			s.say("DHCP gave %s a new address %s (was %s)", l.Iface, nl.Addr.IP, l.Addr.IP)
		}
		if err := configure(nl); err != nil {
			s.log.Warn("applying the renewed lease", "err", err)
		}
		l = nl
	}
}

// loopbackUp brings lo up (the kernel gives it 127.0.0.1/8 then): local
// services (the appliance's bty-web) are reached on it.
func loopbackUp() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return err
	}
	return netlink.LinkSetUp(lo)
}
