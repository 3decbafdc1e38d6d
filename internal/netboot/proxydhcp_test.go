package netboot

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/prometheus/client_golang/prometheus"
)

// PXE client requests as firmware and iPXE send them.
const (
	vendorUEFI = "PXEClient:Arch:00007:UNDI:003016"
	vendorBIOS = "PXEClient:Arch:00000:UNDI:002001"
)

var testUUID = append([]byte{0}, bytes.Repeat([]byte{0xab}, 16)...)

func archOpt(a uint16) dhcpv4.Option {
	return dhcpv4.OptGeneric(dhcpv4.OptionClientSystemArchitectureType, []byte{byte(a >> 8), byte(a)})
}

// pxeMods are the options of a PXE client's packet: vendor class,
// architecture (option 93), NDI (94), UUID (97) and, for iPXE, the user
// class iPXE sends (raw "iPXE", not RFC 3004-encoded).
func pxeMods(vendor string, arch int, ipxe bool) []dhcpv4.Modifier {
	var m []dhcpv4.Modifier
	if vendor != "" {
		m = append(m, dhcpv4.WithOption(dhcpv4.OptClassIdentifier(vendor)))
	}
	if arch >= 0 {
		m = append(m, dhcpv4.WithOption(archOpt(uint16(arch))))
	}
	m = append(m,
		dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.GenericOptionCode(94), []byte{1, 3, 16})),
		dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionClientMachineIdentifier, testUUID)))
	if ipxe {
		m = append(m, dhcpv4.WithUserClass("iPXE", false))
	}
	return m
}

var testHW = net.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}

func discover(t *testing.T, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	d, err := dhcpv4.NewDiscovery(testHW, mods...)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// request is a ProxyDHCPREQUEST to port 4011 from a client that has an
// address (what iPXE and UEFI firmware send after their DHCP lease).
func request(t *testing.T, server net.IP, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	mods = append([]dhcpv4.Modifier{
		dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithHwAddr(testHW),
		dhcpv4.WithClientIP(net.IPv4(192, 0, 2, 2)),
	}, mods...)
	if server != nil {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptServerIdentifier(server)))
	}
	r, err := dhcpv4.New(mods...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// pxe43 is option 43 of every reply that carries it: discovery control 8
// (boot from the file in the packet) and an empty menu prompt, as dnsmasq
// sends with no pxe-service configured.
var pxe43 = []byte{6, 1, 8, 10, 4, 0, 'P', 'X', 'E', 255}

func TestBuildReply(t *testing.T) {
	server := net.IPv4(192, 0, 2, 1).To4()
	cfg := proxyConfig{serverIP: server, bootstrapURL: "http://192.0.2.1:8080/pxe-bootstrap.ipxe"}
	bootItem := dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionVendorSpecificInformation, []byte{71, 4, 0x80, 0x00, 0x00, 0x00, 255}))

	tests := []struct {
		name     string
		req      *dhcpv4.DHCPv4
		port     int
		file     string // "" = ignored
		boot     string
		reason   string // when ignored
		with43   []byte // nil = no option 43
		wantType dhcpv4.MessageType
	}{
		{"uefi x86-64 discover", discover(t, pxeMods(vendorUEFI, 7, false)...), 67, "ipxe.efi", bootUEFI, "", nil, dhcpv4.MessageTypeOffer},
		{"uefi bc discover", discover(t, pxeMods("PXEClient:Arch:00009:UNDI:003016", 9, false)...), 67, "ipxe.efi", bootUEFI, "", nil, dhcpv4.MessageTypeOffer},
		{"bios discover", discover(t, pxeMods(vendorBIOS, 0, false)...), 67, "undionly.kpxe", bootBIOS, "", pxe43, dhcpv4.MessageTypeOffer},
		{"bios arch from vendor class only", discover(t, pxeMods(vendorBIOS, -1, false)...), 67, "undionly.kpxe", bootBIOS, "", pxe43, dhcpv4.MessageTypeOffer},
		{"ipxe on uefi", discover(t, pxeMods(vendorUEFI, 7, true)...), 67, cfg.bootstrapURL, bootIPXE, "", nil, dhcpv4.MessageTypeOffer},
		{"ipxe on bios", discover(t, pxeMods(vendorBIOS, 0, true)...), 67, cfg.bootstrapURL, bootIPXE, "", pxe43, dhcpv4.MessageTypeOffer},
		{"ipxe rfc3004 user class", discover(t, append(pxeMods(vendorBIOS, 0, false), dhcpv4.WithUserClass("iPXE", true))...), 67, cfg.bootstrapURL, bootIPXE, "", pxe43, dhcpv4.MessageTypeOffer},
		{"ipxe option 175 only", discover(t, append(pxeMods("", -1, false), dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.GenericOptionCode(175), []byte{19, 1, 1})))...), 67, cfg.bootstrapURL, bootIPXE, "", pxe43, dhcpv4.MessageTypeOffer},
		{"not pxe", discover(t, dhcpv4.WithOption(dhcpv4.OptClassIdentifier("udhcp 1.36.1"))), 67, "", "", "not_pxe", nil, 0},
		{"no vendor class", discover(t, dhcpv4.WithOption(archOpt(0))), 67, "", "", "not_pxe", nil, 0},
		{"uefi ia32", discover(t, pxeMods("PXEClient:Arch:00006:UNDI:003016", 6, false)...), 67, "", "", "unsupported_arch", nil, 0},
		{"uefi arm64", discover(t, pxeMods("PXEClient:Arch:00011:UNDI:003016", 11, false)...), 67, "", "", "unsupported_arch", nil, 0},
		{"pxe without arch", discover(t, pxeMods("PXEClient", -1, false)...), 67, "", "", "no_arch", nil, 0},
		{"request on 67", request(t, server, pxeMods(vendorUEFI, 7, false)...), 67, "", "", "message_type", nil, 0},
		{"discover on 4011", discover(t, pxeMods(vendorUEFI, 7, false)...), 4011, "", "", "message_type", nil, 0},
		{"uefi request on 4011", request(t, server, pxeMods(vendorUEFI, 7, false)...), 4011, "ipxe.efi", bootUEFI, "", pxe43, dhcpv4.MessageTypeAck},
		{"uefi request without server id", request(t, nil, pxeMods(vendorUEFI, 7, false)...), 4011, "ipxe.efi", bootUEFI, "", pxe43, dhcpv4.MessageTypeAck},
		{"ipxe request on 4011", request(t, server, pxeMods(vendorUEFI, 7, true)...), 4011, cfg.bootstrapURL, bootIPXE, "", pxe43, dhcpv4.MessageTypeAck},
		{"boot item echoed", request(t, server, append(pxeMods(vendorUEFI, 7, false), bootItem)...), 4011, "ipxe.efi", bootUEFI, "",
			[]byte{6, 1, 8, 10, 4, 0, 'P', 'X', 'E', 71, 4, 0x80, 0, 0, 0, 255}, dhcpv4.MessageTypeAck},
		{"request for another proxy", request(t, net.IPv4(192, 0, 2, 99), pxeMods(vendorUEFI, 7, false)...), 4011, "", "", "other_server", nil, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			reply, boot, reason := buildReply(tc.req, cfg, tc.port)
			if tc.file == "" {
				if reply != nil {
					t.Fatalf("answered a packet it should ignore:\n%s", reply.Summary())
				}
				if reason != tc.reason {
					t.Errorf("reason %q, want %q", reason, tc.reason)
				}
				return
			}
			if reply == nil {
				t.Fatalf("ignored (%s)", reason)
			}
			// Round-trip through the wire format, as a client sees it.
			got, err := dhcpv4.FromBytes(reply.ToBytes())
			if err != nil {
				t.Fatal(err)
			}
			checkProxyReply(t, got, tc.req, server, tc.wantType, tc.file, tc.with43)
			if boot != tc.boot {
				t.Errorf("boot kind %q, want %q", boot, tc.boot)
			}
		})
	}
}

// checkProxyReply checks what every proxy reply must be.
func checkProxyReply(t *testing.T, got, req *dhcpv4.DHCPv4, server net.IP, typ dhcpv4.MessageType, file string, opt43 []byte) {
	t.Helper()
	if got.OpCode != dhcpv4.OpcodeBootReply || got.TransactionID != req.TransactionID || !bytes.Equal(got.ClientHWAddr, req.ClientHWAddr) {
		t.Errorf("not a reply to the request: op %v xid %v chaddr %v", got.OpCode, got.TransactionID, got.ClientHWAddr)
	}
	if got.MessageType() != typ {
		t.Errorf("message type %v, want %v", got.MessageType(), typ)
	}
	if !got.YourIPAddr.Equal(net.IPv4zero) {
		t.Errorf("yiaddr %v: a proxy must not hand out addresses", got.YourIPAddr)
	}
	if got.Options.Has(dhcpv4.OptionIPAddressLeaseTime) || got.Options.Has(dhcpv4.OptionSubnetMask) || got.Options.Has(dhcpv4.OptionRouter) {
		t.Errorf("reply carries lease options: %s", got.Summary())
	}
	if !got.ServerIPAddr.Equal(server) {
		t.Errorf("siaddr (next-server) %v, want %v", got.ServerIPAddr, server)
	}
	if sid := got.ServerIdentifier(); !sid.Equal(server) {
		t.Errorf("server identifier %v, want %v", sid, server)
	}
	if got.ClassIdentifier() != "PXEClient" {
		t.Errorf("option 60 %q, want PXEClient", got.ClassIdentifier())
	}
	if got.BootFileName != file {
		t.Errorf("boot file %q, want %q", got.BootFileName, file)
	}
	if uuid := got.Options.Get(dhcpv4.OptionClientMachineIdentifier); !bytes.Equal(uuid, req.Options.Get(dhcpv4.OptionClientMachineIdentifier)) {
		t.Errorf("option 97 %x, want the client's %x echoed", uuid, req.Options.Get(dhcpv4.OptionClientMachineIdentifier))
	}
	if o43 := got.Options.Get(dhcpv4.OptionVendorSpecificInformation); !bytes.Equal(o43, opt43) {
		t.Errorf("option 43 %x, want %x", o43, opt43)
	}
}

func TestSubOption(t *testing.T) {
	enc := []byte{0, 6, 1, 8, 71, 4, 1, 2, 3, 4, 255, 9, 1, 1}
	if got := subOption(enc, 71); !bytes.Equal(got, []byte{1, 2, 3, 4}) {
		t.Errorf("71: %x", got)
	}
	for _, bad := range [][]byte{nil, {71}, {71, 5, 1}, {6, 1, 8, 255, 71, 1, 1}} {
		if got := subOption(bad, 71); got != nil {
			t.Errorf("%x: %x, want nil", bad, got)
		}
	}
}

func TestProxyStartRefuses(t *testing.T) {
	p := NewProxyDHCP(nil)
	for _, tc := range []struct{ iface, url, want string }{
		{"", "http://192.0.2.1:8080", "no interface"},
		{"lo", "192.0.2.1:8080", "HTTP base URL"},
		{"lo", "http://" + string(bytes.Repeat([]byte("a"), 120)), "127 bytes"},
		{"bty-no-such-if0", "http://192.0.2.1:8080", "bty-no-such-if0"},
	} {
		if err := p.Start(tc.iface, nil, tc.url); err == nil || !bytes.Contains([]byte(err.Error()), []byte(tc.want)) {
			t.Errorf("Start(%q, nil, %q) = %v, want an error mentioning %q", tc.iface, tc.url, err, tc.want)
		}
	}
	if p.Status().Running {
		t.Errorf("running after failed starts")
	}
	p.Stop() // no-op
}

// packetSink is a net.PacketConn that keeps what is written to it: the
// handler's replies, without a socket.
type packetSink struct {
	mu   sync.Mutex
	sent []*dhcpv4.DHCPv4
}

func (c *packetSink) WriteTo(b []byte, _ net.Addr) (int, error) {
	m, err := dhcpv4.FromBytes(b)
	if err != nil {
		return 0, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sent = append(c.sent, m)
	return len(b), nil
}

// take returns the replies written since the last take.
func (c *packetSink) take() []*dhcpv4.DHCPv4 {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.sent
	c.sent = nil
	return s
}

func (c *packetSink) ReadFrom([]byte) (int, net.Addr, error) { return 0, nil, net.ErrClosed }
func (c *packetSink) Close() error                           { return nil }
func (c *packetSink) LocalAddr() net.Addr                    { return &net.UDPAddr{} }
func (c *packetSink) SetDeadline(time.Time) error            { return nil }
func (c *packetSink) SetReadDeadline(time.Time) error        { return nil }
func (c *packetSink) SetWriteDeadline(time.Time) error       { return nil }

// declineHook is a DeclineFunc declining the MACs in local, counting its
// calls per MAC; block, when set, holds each call until it is closed.
type declineHook struct {
	mu    sync.Mutex
	local map[string]bool
	calls map[string]int
	block chan struct{}
}

func (h *declineHook) fn(mac net.HardwareAddr) (bool, string) {
	h.mu.Lock()
	h.calls[mac.String()]++
	decline, block := h.local[mac.String()], h.block
	h.mu.Unlock()
	if block != nil {
		<-block
	}
	return decline, "local disk"
}

func (h *declineHook) called(mac net.HardwareAddr) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.calls[mac.String()]
}

func (h *declineHook) set(mac net.HardwareAddr, local bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.local[mac.String()] = local
}

// TestProxyDecline: a firmware client the hook declines gets no reply,
// and none to its retries (port 67 and 4011) for DeclineWindow, the hook
// asked once; iPXE on the same machine still gets the bootstrap URL;
// other machines get their boot file; after the window the hook is
// asked again.
func TestProxyDecline(t *testing.T) {
	server := net.IPv4(192, 0, 2, 1).To4()
	cfg := proxyConfig{serverIP: server, bootstrapURL: "http://192.0.2.1:8080/pxe-bootstrap.ipxe"}
	var logs bytes.Buffer
	var logMu sync.Mutex
	p := NewProxyDHCP(slog.New(slog.NewTextHandler(lockedWriter{&logMu, &logs}, &slog.HandlerOptions{Level: slog.LevelDebug})))
	reg := prometheus.NewRegistry()
	if err := p.Register(reg); err != nil {
		t.Fatal(err)
	}
	clock := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	var clockMu sync.Mutex
	p.now = func() time.Time { clockMu.Lock(); defer clockMu.Unlock(); return clock }
	advance := func(d time.Duration) { clockMu.Lock(); clock = clock.Add(d); clockMu.Unlock() }

	local := testHW
	other := net.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x34, 0x99}
	hook := &declineHook{local: map[string]bool{local.String(): true}, calls: map[string]int{}}
	p.SetDecline(hook.fn)
	h67, h4011 := p.handler(cfg, DHCPPort), p.handler(cfg, PXEPort)
	conn := &packetSink{}
	peer := &net.UDPAddr{IP: net.IPv4zero, Port: 68}
	from := func(hw net.HardwareAddr, req *dhcpv4.DHCPv4) *dhcpv4.DHCPv4 {
		req.ClientHWAddr = hw
		return req
	}
	// exchange sends req to handler h and returns the one reply, or nil.
	exchange := func(t *testing.T, h func(net.PacketConn, net.Addr, *dhcpv4.DHCPv4), req *dhcpv4.DHCPv4) *dhcpv4.DHCPv4 {
		t.Helper()
		h(conn, peer, req)
		got := conn.take()
		if len(got) > 1 {
			t.Fatalf("%d replies to one request", len(got))
		}
		if len(got) == 0 {
			return nil
		}
		return got[0]
	}
	firmware := func() *dhcpv4.DHCPv4 { return discover(t, pxeMods(vendorUEFI, 7, false)...) }
	ipxe := func() *dhcpv4.DHCPv4 { return discover(t, pxeMods(vendorUEFI, 7, true)...) }

	if r := exchange(t, h67, from(local, firmware())); r != nil {
		t.Fatalf("the declined firmware DISCOVER got a reply:\n%s", r.Summary())
	}
	if n := hook.called(local); n != 1 {
		t.Fatalf("hook asked %d times, want 1", n)
	}
	logMu.Lock()
	line := logs.String()
	logMu.Unlock()
	if !strings.Contains(line, `msg="proxy-DHCP left a PXE client without a boot file`) || !strings.Contains(line, "mac="+local.String()) ||
		!strings.Contains(line, `why="local disk"`) || !strings.Contains(line, "level=INFO") {
		t.Errorf("no Info line with the MAC and why for the decline:\n%s", line)
	}

	// The machine's next boot flips (a flash machine's disk turn is
	// used): asked again, the hook would now say "answer". The
	// firmware's retries within the window must get nothing all the
	// same, and must not ask.
	hook.set(local, false)
	for i, step := range []time.Duration{4 * time.Second, 8 * time.Second, 16 * time.Second, 32 * time.Second, 50 * time.Second} {
		advance(step)
		if r := exchange(t, h67, from(local, firmware())); r != nil {
			t.Fatalf("retry %d (at +%s) got a reply: the window did not hold:\n%s", i+1, step, r.Summary())
		}
		if r := exchange(t, h4011, from(local, request(t, server, pxeMods(vendorUEFI, 7, false)...))); r != nil {
			t.Fatalf("port 4011 request %d got a reply: the window did not hold:\n%s", i+1, r.Summary())
		}
	}
	if n := hook.called(local); n != 1 {
		t.Errorf("hook asked %d times during the window, want once", n)
	}
	// iPXE on that machine (a later boot chained from elsewhere, or a
	// site's own DHCP) is always answered, without asking.
	if r := exchange(t, h67, from(local, ipxe())); r == nil || r.BootFileName != cfg.bootstrapURL {
		t.Errorf("iPXE got %v, want the bootstrap URL", r)
	}
	// Another machine, not declined: its boot file.
	if r := exchange(t, h67, from(other, firmware())); r == nil || r.BootFileName != "ipxe.efi" {
		t.Errorf("another machine's firmware got %v, want ipxe.efi", r)
	}
	if r := exchange(t, h4011, from(other, request(t, server, pxeMods(vendorUEFI, 7, false)...))); r == nil || r.BootFileName != "ipxe.efi" {
		t.Errorf("another machine's port 4011 request got %v, want ipxe.efi", r)
	}
	if n := hook.called(other); n != 2 {
		t.Errorf("hook asked %d times for a machine it did not decline, want every request (2)", n)
	}
	// After the window: the next boot asks again (now: answered).
	advance(DeclineWindow)
	if r := exchange(t, h67, from(local, firmware())); r == nil || r.BootFileName != "ipxe.efi" {
		t.Errorf("after the window: %v, want ipxe.efi (the hook now answers)", r)
	}
	if n := hook.called(local); n != 2 {
		t.Errorf("after the window the hook was asked %d times in all, want 2", n)
	}

	st := p.Stats()
	if st.Declined != 1 || st.Ignored != 10 {
		t.Errorf("Stats() = %+v, want 1 declined and the 10 retries ignored", st)
	}
	if got := metricValue(t, reg, "bty_proxydhcp_declined_total", nil); got != 1 {
		t.Errorf("bty_proxydhcp_declined_total = %v, want 1", got)
	}
	if got := metricValue(t, reg, "bty_proxydhcp_ignored_total", map[string]string{"reason": ignoredDeclined}); got != 10 {
		t.Errorf(`bty_proxydhcp_ignored_total{reason="declined"} = %v, want 10`, got)
	}

	// Without a hook, everyone is answered.
	p.SetDecline(nil)
	p.declines = newDeclineWindow(DeclineWindow, maxDeclined)
	hook.set(local, true)
	if r := exchange(t, h67, from(local, firmware())); r == nil || r.BootFileName != "ipxe.efi" {
		t.Errorf("with no hook: %v, want ipxe.efi", r)
	}
}

// TestProxyDeclineConcurrent: a duplicate request arriving while the
// hook decides about the same MAC is dropped, not decided twice (the
// second decision would see the first one's write).
func TestProxyDeclineConcurrent(t *testing.T) {
	cfg := proxyConfig{serverIP: net.IPv4(192, 0, 2, 1).To4(), bootstrapURL: "http://192.0.2.1:8080/pxe-bootstrap.ipxe"}
	p := NewProxyDHCP(nil)
	reg := prometheus.NewRegistry()
	if err := p.Register(reg); err != nil {
		t.Fatal(err)
	}
	hook := &declineHook{local: map[string]bool{testHW.String(): true}, calls: map[string]int{}, block: make(chan struct{})}
	p.SetDecline(hook.fn)
	h := p.handler(cfg, DHCPPort)
	conn := &packetSink{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		h(conn, &net.UDPAddr{}, discover(t, pxeMods(vendorUEFI, 7, false)...))
	}()
	for hook.called(testHW) == 0 {
		time.Sleep(time.Millisecond)
	}
	h(conn, &net.UDPAddr{}, discover(t, pxeMods(vendorUEFI, 7, false)...)) // while the first is decided
	close(hook.block)
	<-done
	if n := hook.called(testHW); n != 1 {
		t.Errorf("hook asked %d times, want once", n)
	}
	if got := conn.take(); len(got) != 0 {
		t.Errorf("%d replies, want none", len(got))
	}
	if got := metricValue(t, reg, "bty_proxydhcp_ignored_total", map[string]string{"reason": ignoredPending}); got != 1 {
		t.Errorf(`ignored{reason="decision_pending"} = %v, want 1`, got)
	}
}

// TestDeclineWindowBounded: the window remembers at most max clients;
// past that, a new client is answered without asking (nobody declined
// is forgotten), and expired entries make room.
func TestDeclineWindowBounded(t *testing.T) {
	w := newDeclineWindow(time.Minute, 2)
	t0 := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	for _, k := range []string{"a", "b"} {
		if got := w.begin(k, t0); got != windowAsk {
			t.Fatalf("begin(%s) = %d, want ask", k, got)
		}
		w.end(k, true, t0)
	}
	if got := w.begin("c", t0.Add(time.Second)); got != windowFull {
		t.Errorf("a third client while two are declined: %d, want full", got)
	}
	if got := w.begin("a", t0.Add(time.Second)); got != windowDeclined {
		t.Errorf("a declined client in its window: %d, want declined", got)
	}
	if got := w.begin("c", t0.Add(time.Minute)); got != windowAsk {
		t.Errorf("after the windows ended: %d, want ask", got)
	}
	w.end("c", false, t0.Add(time.Minute))
	if len(w.until) != 0 {
		t.Errorf("remembered %v, want nothing (expired entries purged, an answered client not kept)", w.until)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
