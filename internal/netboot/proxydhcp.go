package netboot

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"github.com/prometheus/client_golang/prometheus"
)

// Ports the proxy-DHCP responder listens on: the DHCP server port, where
// PXE clients broadcast their DISCOVER, and the PXE boot server port,
// where UEFI firmware and iPXE send a DHCPREQUEST to the proxy server for
// the boot file (dnsmasq's proxy mode does the same).
const (
	DHCPPort = 67
	PXEPort  = 4011
)

// BootstrapPath is the HTTP path clients that already run iPXE are sent to.
const BootstrapPath = "/pxe-bootstrap.ipxe"

// PXE vendor options (option 43 sub-options), PXE specification 2.1.
const (
	pxeDiscoveryControl = 6
	pxeMenuPrompt       = 10
	pxeBootItem         = 71
	// discoveryBootFile is PXE_DISCOVERY_CONTROL bit 3: no prompt, menu or
	// boot server discovery; download the boot file named in this offer.
	discoveryBootFile = 0x08
)

// Boot kinds, the "boot" label of bty_proxydhcp_replies_total.
const (
	bootBIOS = "bios"
	bootUEFI = "uefi"
	bootIPXE = "ipxe"
)

// ProxyDHCP is a proxy-DHCP responder (PXE specification 2.1, as
// dnsmasq's --dhcp-range=NET,proxy): beside the network's own DHCP
// server, it tells PXE clients where to boot from and never hands out an
// address. BIOS clients get undionly.kpxe and UEFI x86-64 clients
// ipxe.efi from the TFTP server at the server address; clients already
// running iPXE get the HTTP URL of /pxe-bootstrap.ipxe. Other DHCP
// traffic is ignored.
//
// A PXE firmware client (BIOS or UEFI, not iPXE) may be left without a
// boot file: see SetDecline.
//
// Start, Stop and Status may be called from any goroutine; Start on a
// running responder replaces its configuration (the settings page
// changes the interface live).
type ProxyDHCP struct {
	logger *slog.Logger

	mu  sync.Mutex
	run *proxyRun // nil when stopped

	replies  *prometheus.CounterVec // by boot kind and port
	ignored  *prometheus.CounterVec // by reason
	declined prometheus.Counter

	nReplies, nIgnored, nDeclined atomic.Int64

	// decline is SetDecline's hook (nil: every PXE client is answered);
	// declines remembers whom it declined lately.
	decline  atomic.Pointer[DeclineFunc]
	declines *declineWindow
	now      func() time.Time // time.Now; tests move the clock
}

// DeclineFunc is asked, for a PXE firmware client's request the
// responder would answer with a boot file, whether to leave that client
// without one instead, and why (for the log). mac is the client's
// hardware address. It runs in the DHCP packet's goroutine: it must be
// quick and bound its own work.
type DeclineFunc func(mac net.HardwareAddr) (decline bool, why string)

// DeclineWindow is how long a client declined once gets no answer at
// all: the rest of its firmware's DHCP retries (DISCOVERs on port 67,
// and requests on port 4011) in the same boot. PXE firmware gives up on
// a proxy-DHCP-less network within about a minute (OVMF and BIOS PXE
// ROMs retry after 4, 8, 16 and 32 s).
const DeclineWindow = 2 * time.Minute

// maxDeclined bounds the clients remembered as declined. When it is
// reached, clients not remembered are answered as if no hook were set
// (the hook is not asked), so a flood of made-up MACs cannot make the
// responder forget a real machine it declined.
const maxDeclined = 4096

// ProxyStatus describes a ProxyDHCP's current configuration.
type ProxyStatus struct {
	Running      bool
	Interface    string
	ServerIP     net.IP // siaddr and server identifier of every reply
	BootstrapURL string // the boot file iPXE clients get
}

// ProxyStats are a ProxyDHCP's counters since NewProxyDHCP.
type ProxyStats struct {
	Replies  int64 // offers (port 67) and acks (port 4011) sent
	Ignored  int64 // DHCP packets not answered, declined clients' retries among them
	Declined int64 // clients left without a boot file by the hook (SetDecline)
}

// proxyConfig is what a reply is built from.
type proxyConfig struct {
	serverIP     net.IP // 4-byte form
	bootstrapURL string
}

type proxyRun struct {
	iface   string
	cfg     proxyConfig
	servers []*server4.Server
	wg      sync.WaitGroup
}

// NewProxyDHCP returns a stopped responder.
func NewProxyDHCP(logger *slog.Logger) *ProxyDHCP {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &ProxyDHCP{
		logger: logger.With("component", "proxydhcp"),
		replies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bty_proxydhcp_replies_total",
			Help: "Proxy-DHCP replies to PXE clients, by boot kind (bios, uefi, ipxe) and port (67, 4011).",
		}, []string{"boot", "port"}),
		ignored: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bty_proxydhcp_ignored_total",
			Help: "DHCP packets the proxy-DHCP responder did not answer, by reason.",
		}, []string{"reason"}),
		declined: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bty_proxydhcp_declined_total",
			Help: "PXE firmware clients left without a boot file because their next boot is the local disk (their retries in the same boot are counted in bty_proxydhcp_ignored_total{reason=\"declined\"}).",
		}),
		declines: newDeclineWindow(DeclineWindow, maxDeclined),
		now:      time.Now,
	}
}

// SetDecline sets the hook asked before a PXE firmware client gets a
// boot file (nil: none). When it declines, that client gets no answer,
// and none to any request of its own for DeclineWindow (its firmware's
// retries in the same boot), the hook not asked again: so the firmware
// gives up on PXE and goes on to its next boot option. iPXE's own
// requests are always answered. It may be called at any time.
func (p *ProxyDHCP) SetDecline(f DeclineFunc) {
	if f == nil {
		p.decline.Store(nil)
		return
	}
	p.decline.Store(&f)
}

// Register adds the responder's metrics (bty_proxydhcp_replies_total,
// bty_proxydhcp_ignored_total, bty_proxydhcp_declined_total) to reg.
func (p *ProxyDHCP) Register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{p.replies, p.ignored, p.declined} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("registering proxy-DHCP metrics: %w", err)
		}
	}
	return nil
}

// Stats returns the counters so far.
func (p *ProxyDHCP) Stats() ProxyStats {
	return ProxyStats{Replies: p.nReplies.Load(), Ignored: p.nIgnored.Load(), Declined: p.nDeclined.Load()}
}

// Status returns the running configuration, if any.
func (p *ProxyDHCP) Status() ProxyStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.run == nil {
		return ProxyStatus{}
	}
	return ProxyStatus{Running: true, Interface: p.run.iface, ServerIP: p.run.cfg.serverIP, BootstrapURL: p.run.cfg.bootstrapURL}
}

// Start answers PXE clients on iface (UDP ports 67 and 4011, bound to the
// interface; needs root or CAP_NET_BIND_SERVICE + CAP_NET_RAW). serverIP
// is where clients fetch iPXE by TFTP (the TFTP server must listen on
// port 69 there); nil means the interface's first IPv4 address. httpURL
// is the bty-web base URL iPXE clients chain to, e.g.
// "http://10.0.0.1:8080". A running responder is stopped first; if the
// new one cannot start, the responder stays stopped and the error says
// why.
func (p *ProxyDHCP) Start(iface string, serverIP net.IP, httpURL string) error {
	if iface == "" {
		return errors.New("proxy-DHCP: no interface given: name the interface PXE clients are on (BTY_PROXYDHCP_IFACE or the settings page)")
	}
	server, err := checkServerURL(httpURL)
	if err != nil {
		return fmt.Errorf("proxy-DHCP: HTTP base URL: %w", err)
	}
	cfg := proxyConfig{bootstrapURL: server + BootstrapPath}
	if len(cfg.bootstrapURL) > 127 {
		return fmt.Errorf("proxy-DHCP: boot file URL %q is longer than the 127 bytes a DHCP reply holds; use a shorter host name", cfg.bootstrapURL)
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	p.stopLocked()

	if serverIP == nil {
		if serverIP, err = interfaceIPv4(iface); err != nil {
			return fmt.Errorf("proxy-DHCP: %w", err)
		}
	}
	if cfg.serverIP = serverIP.To4(); cfg.serverIP == nil || cfg.serverIP.IsUnspecified() {
		return fmt.Errorf("proxy-DHCP: server address %s is not a usable IPv4 address", serverIP)
	}

	run := &proxyRun{iface: iface, cfg: cfg}
	for _, port := range []int{DHCPPort, PXEPort} {
		conn, err := listenDHCP(iface, port)
		if err != nil {
			run.close()
			return fmt.Errorf("proxy-DHCP on %s: %w", iface, err)
		}
		srv, err := server4.NewServer(iface, nil, p.handler(cfg, port), server4.WithConn(conn))
		if err != nil {
			conn.Close()
			run.close()
			return fmt.Errorf("proxy-DHCP on %s port %d: %w", iface, port, err)
		}
		run.servers = append(run.servers, srv)
	}
	for _, srv := range run.servers {
		run.wg.Add(1)
		go func() {
			defer run.wg.Done()
			// Serve returns when Stop closes the connection.
			_ = srv.Serve()
		}()
	}
	p.run = run
	p.logger.Info("proxy-DHCP answering PXE clients", "iface", iface, "server_ip", cfg.serverIP.String(),
		"bios", "undionly.kpxe", "uefi", "ipxe.efi", "ipxe", cfg.bootstrapURL)
	return nil
}

// Stop stops answering. It is a no-op on a stopped responder.
func (p *ProxyDHCP) Stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stopLocked()
}

func (p *ProxyDHCP) stopLocked() {
	if p.run == nil {
		return
	}
	p.run.close()
	p.run.wg.Wait()
	p.logger.Info("proxy-DHCP stopped", "iface", p.run.iface)
	p.run = nil
}

func (r *proxyRun) close() {
	for _, s := range r.servers {
		s.Close()
	}
}

// interfaceIPv4 returns the first global IPv4 address of iface.
func interfaceIPv4(iface string) (net.IP, error) {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return nil, fmt.Errorf("interface %q: %w (see `ip link` for the names)", iface, err)
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return nil, fmt.Errorf("addresses of %s: %w", iface, err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip := n.IP.To4(); ip != nil && !ip.IsLinkLocalUnicast() {
				return ip, nil
			}
		}
	}
	return nil, fmt.Errorf("interface %s has no IPv4 address: give it one on the PXE clients' network, or configure the server address", iface)
}

func (p *ProxyDHCP) handler(cfg proxyConfig, port int) server4.Handler {
	portLabel := strconv.Itoa(port)
	return func(conn net.PacketConn, peer net.Addr, req *dhcpv4.DHCPv4) {
		reply, boot, reason := buildReply(req, cfg, port)
		if reply != nil && boot != bootIPXE {
			switch verdict := p.decide(req.ClientHWAddr, port, boot); verdict {
			case "":
			case declinedNow:
				return
			default:
				reply, reason = nil, verdict
			}
		}
		if reply == nil {
			p.nIgnored.Add(1)
			p.ignored.WithLabelValues(reason).Inc()
			p.logger.Debug("proxy-DHCP ignored a packet", "port", port, "mac", req.ClientHWAddr.String(), "reason", reason)
			return
		}
		// RFC 2131 4.1: a reply on port 67 goes to the relay agent, or
		// broadcast (the client has no address yet); on port 4011 the
		// client has one and is answered where it asked from.
		dst := peer
		if port == DHCPPort {
			if gi := req.GatewayIPAddr; gi != nil && !gi.IsUnspecified() {
				dst = &net.UDPAddr{IP: gi, Port: DHCPPort}
			} else {
				dst = &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ClientPort}
			}
		}
		if _, err := conn.WriteTo(reply.ToBytes(), dst); err != nil {
			p.logger.Warn("proxy-DHCP reply not sent", "port", port, "mac", req.ClientHWAddr.String(), "to", dst.String(), "err", err)
			return
		}
		p.nReplies.Add(1)
		p.replies.WithLabelValues(boot, portLabel).Inc()
		p.logger.Info("proxy-DHCP answered a PXE client", "port", port, "type", reply.MessageType().String(),
			"mac", req.ClientHWAddr.String(), "boot", boot, "file", reply.BootFileName, "to", dst.String())
	}
}

// Reasons a PXE firmware client's request goes unanswered because of
// the decline hook (bty_proxydhcp_ignored_total's reason label).
const (
	ignoredDeclined = "declined"         // declined lately: a retry in the same boot
	ignoredPending  = "decision_pending" // the hook is deciding about the same client
)

// declinedNow is decide's answer for a client the hook declined just
// now (counted and logged there): not answered, not counted as ignored.
const declinedNow = "-declined-now"

// decide is "" when the firmware client hw's request (port, boot kind
// boot) is answered; ignoredDeclined or ignoredPending when it is
// ignored; declinedNow when the hook declined it now.
func (p *ProxyDHCP) decide(hw net.HardwareAddr, port int, boot string) string {
	fp := p.decline.Load()
	if fp == nil {
		return ""
	}
	key := hw.String()
	switch p.declines.begin(key, p.now()) {
	case windowDeclined:
		return ignoredDeclined
	case windowPending:
		// Firmware retries: a duplicate of a request being decided is
		// dropped rather than decided twice.
		return ignoredPending
	case windowFull:
		p.logger.Debug("proxy-DHCP: too many clients declined lately to remember another; answering", "mac", key)
		return ""
	}
	decline, why := false, ""
	defer func() { p.declines.end(key, decline, p.now()) }()
	decline, why = (*fp)(hw)
	if !decline {
		return ""
	}
	p.nDeclined.Add(1)
	p.declined.Inc()
	p.logger.Info("proxy-DHCP left a PXE client without a boot file: its firmware goes on to its next boot option",
		"port", port, "mac", key, "boot", boot, "why", why, "quiet_for", p.declines.dur.String())
	return declinedNow
}

// declineWindow remembers the clients declined lately, and those being
// decided, by MAC.
type declineWindow struct {
	dur time.Duration
	max int

	mu sync.Mutex
	// until is when each declined client's window ends; the zero time
	// while the hook decides about it.
	until map[string]time.Time
}

func newDeclineWindow(dur time.Duration, max int) *declineWindow {
	return &declineWindow{dur: dur, max: max, until: map[string]time.Time{}}
}

// What begin found.
const (
	windowAsk      = iota // ask the hook (now marked pending)
	windowDeclined        // declined lately: ignore
	windowPending         // being decided: ignore
	windowFull            // too many remembered: answer without asking
)

// begin looks key up at now; windowAsk marks it pending until end.
func (w *declineWindow) begin(key string, now time.Time) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	if t, ok := w.until[key]; ok {
		if t.IsZero() {
			return windowPending
		}
		if now.Before(t) {
			return windowDeclined
		}
		delete(w.until, key)
	}
	if len(w.until) >= w.max {
		for k, t := range w.until {
			if !t.IsZero() && !now.Before(t) {
				delete(w.until, k)
			}
		}
		if len(w.until) >= w.max {
			return windowFull
		}
	}
	w.until[key] = time.Time{}
	return windowAsk
}

// end records the hook's answer about key (pending since begin).
func (w *declineWindow) end(key string, declined bool, now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if declined {
		w.until[key] = now.Add(w.dur)
	} else {
		delete(w.until, key)
	}
}

// isIPXE reports whether req comes from iPXE: user class "iPXE" (iPXE
// sends it raw, not RFC 3004-encoded; both are accepted) or iPXE's own
// encapsulated option 175.
func isIPXE(req *dhcpv4.DHCPv4) bool {
	if raw := req.Options.Get(dhcpv4.OptionUserClassInformation); raw != nil {
		if string(raw) == "iPXE" {
			return true
		}
		for _, c := range req.UserClass() {
			if c == "iPXE" {
				return true
			}
		}
	}
	return req.Options.Has(dhcpv4.GenericOptionCode(175))
}

// clientArch returns the client system architecture: option 93's first
// value, else the number in a "PXEClient:Arch:NNNNN" vendor class.
func clientArch(req *dhcpv4.DHCPv4) (int, bool) {
	if v := req.Options.Get(dhcpv4.OptionClientSystemArchitectureType); len(v) >= 2 {
		return int(v[0])<<8 | int(v[1]), true
	}
	vc := req.ClassIdentifier()
	if rest, ok := strings.CutPrefix(vc, "PXEClient:Arch:"); ok && len(rest) >= 5 {
		if n, err := strconv.Atoi(rest[:5]); err == nil {
			return n, true
		}
	}
	return 0, false
}

// buildReply is the responder's decision: the reply to send for a packet
// received on port, with the boot kind, or nil and why not.
//
// Port 67: a PXE client's DISCOVER gets an OFFER. Port 4011: its REQUEST
// gets an ACK. Both carry yiaddr 0.0.0.0, siaddr and option 54 = the
// server, option 60 "PXEClient", the client's UUID (option 97) echoed
// and the boot file. Option 43 (PXE_DISCOVERY_CONTROL = 8, boot from the
// file named here; an empty menu prompt) goes in every reply except an
// OFFER to a UEFI client (arch >= 6): like dnsmasq, that offer makes
// UEFI firmware ask port 4011, whose ACK carries it.
func buildReply(req *dhcpv4.DHCPv4, cfg proxyConfig, port int) (*dhcpv4.DHCPv4, string, string) {
	if req.OpCode != dhcpv4.OpcodeBootRequest {
		return nil, "", "not_request"
	}
	mt := req.MessageType()
	var replyType dhcpv4.MessageType
	switch {
	case port == DHCPPort && mt == dhcpv4.MessageTypeDiscover:
		replyType = dhcpv4.MessageTypeOffer
	case port == PXEPort && mt == dhcpv4.MessageTypeRequest:
		replyType = dhcpv4.MessageTypeAck
	default:
		return nil, "", "message_type"
	}
	pxe := strings.HasPrefix(req.ClassIdentifier(), "PXEClient")
	ipxe := isIPXE(req)
	if !pxe && !ipxe {
		return nil, "", "not_pxe"
	}
	if port == PXEPort {
		if sid := req.ServerIdentifier(); sid != nil && !sid.IsUnspecified() && !sid.Equal(cfg.serverIP) {
			return nil, "", "other_server"
		}
	}
	arch, haveArch := clientArch(req)
	var boot, file string
	switch {
	case ipxe:
		boot, file = bootIPXE, cfg.bootstrapURL
	case !haveArch:
		return nil, "", "no_arch"
	case arch == 0:
		boot, file = bootBIOS, "undionly.kpxe"
	case arch == 7 || arch == 9:
		boot, file = bootUEFI, "ipxe.efi"
	default:
		return nil, "", "unsupported_arch"
	}

	reply, err := dhcpv4.New(dhcpv4.WithReply(req))
	if err != nil {
		return nil, "", "internal"
	}
	reply.GatewayIPAddr = req.GatewayIPAddr
	reply.YourIPAddr = net.IPv4zero
	reply.ClientIPAddr = net.IPv4zero
	if replyType == dhcpv4.MessageTypeAck && req.ClientIPAddr != nil && !req.ClientIPAddr.IsUnspecified() {
		reply.ClientIPAddr = req.ClientIPAddr
	} else {
		reply.SetBroadcast()
	}
	reply.ServerIPAddr = cfg.serverIP
	reply.BootFileName = file
	reply.UpdateOption(dhcpv4.OptMessageType(replyType))
	reply.UpdateOption(dhcpv4.OptServerIdentifier(cfg.serverIP))
	reply.UpdateOption(dhcpv4.OptClassIdentifier("PXEClient"))
	if uuid := req.Options.Get(dhcpv4.OptionClientMachineIdentifier); len(uuid) == 17 {
		reply.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionClientMachineIdentifier, uuid))
	}
	if replyType == dhcpv4.MessageTypeAck || !haveArch || arch < 6 {
		reply.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionVendorSpecificInformation, pxeVendorOptions(req)))
	}
	return reply, boot, ""
}

// pxeVendorOptions is option 43 for a reply to req: discovery control
// "boot from the file in this packet", an empty menu prompt, and the boot
// item of a boot server request echoed back (as dnsmasq does).
func pxeVendorOptions(req *dhcpv4.DHCPv4) []byte {
	var b bytes.Buffer
	b.Write([]byte{pxeDiscoveryControl, 1, discoveryBootFile})
	b.Write([]byte{pxeMenuPrompt, 4, 0, 'P', 'X', 'E'})
	if item := subOption(req.Options.Get(dhcpv4.OptionVendorSpecificInformation), pxeBootItem); len(item) == 4 {
		b.Write([]byte{pxeBootItem, 4})
		b.Write(item)
	}
	b.WriteByte(255)
	return b.Bytes()
}

// subOption returns sub-option code of an encapsulated option, or nil.
func subOption(enc []byte, code byte) []byte {
	for len(enc) > 0 {
		c := enc[0]
		if c == 255 {
			return nil
		}
		if c == 0 {
			enc = enc[1:]
			continue
		}
		if len(enc) < 2 || len(enc) < 2+int(enc[1]) {
			return nil
		}
		if c == code {
			return enc[2 : 2+enc[1]]
		}
		enc = enc[2+enc[1]:]
	}
	return nil
}
