package netboot

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/client4"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
)

// The test network, inside namespaces the test creates: the server side
// of a veth pair in one, the client side in the other (RFC 5737
// TEST-NET-1 addresses, never seen outside them).
var (
	nsServerIP = net.IPv4(192, 0, 2, 1).To4()
	nsClientIP = net.IPv4(192, 0, 2, 2).To4()
)

const (
	nsServerIf = "bty-pxe-s"
	nsClientIf = "bty-pxe-c"
	nsHTTP     = "http://192.0.2.1:8080"
)

type netnsPair struct{ server, client string }

// newNetnsPair creates two network namespaces joined by a veth pair and
// removes them when the test ends, failed or not.
func newNetnsPair(t *testing.T) netnsPair {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and binds UDP port 67")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs ip (iproute2; scripts/install-deps.sh test installs it)")
	}
	var r [3]byte
	rand.Read(r[:])
	id := hex.EncodeToString(r[:])
	n := netnsPair{server: "bty-pxe-s-" + id, client: "bty-pxe-c-" + id}
	ip := func(args ...string) error {
		out, err := exec.Command("ip", args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	if err := ip("netns", "add", n.server); err != nil {
		t.Skipf("cannot create a network namespace here: %v", err)
	}
	t.Cleanup(func() { _ = ip("netns", "del", n.server) })
	if err := ip("netns", "add", n.client); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ip("netns", "del", n.client) })
	for _, args := range [][]string{
		{"link", "add", nsServerIf, "netns", n.server, "type", "veth", "peer", "name", nsClientIf, "netns", n.client},
		{"-n", n.server, "addr", "add", nsServerIP.String() + "/24", "dev", nsServerIf},
		{"-n", n.server, "link", "set", nsServerIf, "up"},
		{"-n", n.client, "link", "set", nsClientIf, "up"},
		{"-n", n.server, "link", "set", "lo", "up"},
		{"-n", n.client, "link", "set", "lo", "up"},
	} {
		if err := ip(args...); err != nil {
			t.Fatal(err)
		}
	}
	// Wait for the veth to be up on both ends (carrier), or the first
	// broadcast may be lost.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		out, _ := exec.Command("ip", "-n", n.client, "-o", "link", "show", nsClientIf).Output()
		if strings.Contains(string(out), "LOWER_UP") && !strings.Contains(string(out), "NO-CARRIER") {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return n
}

// addClientAddr gives the client side its address, as the network's DHCP
// server would before a ProxyDHCPREQUEST to port 4011. Until then the
// client has none, like firmware sending its first DISCOVER, so offers
// reach it only broadcast.
func (n netnsPair) addClientAddr(t *testing.T) {
	t.Helper()
	out, err := exec.Command("ip", "-n", n.client, "addr", "add", nsClientIP.String()+"/24", "dev", nsClientIf).CombinedOutput()
	if err != nil {
		t.Fatalf("ip addr add: %v: %s", err, out)
	}
}

// inNetns runs fn on an OS thread moved into namespace ns. The thread is
// thrown away afterwards (it stays locked), so no other goroutine ever
// runs in the namespace; sockets fn opens stay in it.
func inNetns(t *testing.T, ns string, fn func() error) error {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: the goroutine exits locked and the runtime
		// ends the thread instead of reusing it in the wrong namespace.
		f, err := os.Open(filepath.Join("/run/netns", ns))
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// discoverFrom broadcasts a DISCOVER with mods from the client namespace
// as firmware does, from 0.0.0.0:68 (a raw IP socket; insomniacslk's
// client4, as nclient4 needs a module go.mod does not have), and returns
// the first OFFER with the DISCOVER's transaction ID, or nil if none came
// within timeout. It returns the DISCOVER too.
func discoverFrom(t *testing.T, n netnsPair, timeout time.Duration, mods ...dhcpv4.Modifier) (*dhcpv4.DHCPv4, *dhcpv4.DHCPv4) {
	t.Helper()
	hw := testHW
	var offer, sent *dhcpv4.DHCPv4
	err := inNetns(t, n.client, func() error {
		ifi, err := net.InterfaceByName(nsClientIf)
		if err != nil {
			return err
		}
		hw = ifi.HardwareAddr
		sent, err = dhcpv4.NewDiscovery(hw, mods...)
		if err != nil {
			return err
		}
		sendFd, err := client4.MakeBroadcastSocket(nsClientIf)
		if err != nil {
			return err
		}
		defer unix.Close(sendFd)
		recvFd, err := client4.MakeListeningSocket(nsClientIf)
		if err != nil {
			return err
		}
		defer unix.Close(recvFd)
		c := client4.NewClient()
		c.ReadTimeout = timeout
		offer, err = c.SendReceive(sendFd, recvFd, sent, dhcpv4.MessageTypeOffer)
		if err != nil && strings.Contains(err.Error(), "timed out") {
			// client4's receiving goroutine may still be in recvfrom
			// until its socket timeout: let it end before the close.
			time.Sleep(200 * time.Millisecond)
			offer = nil
			return nil
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return offer, sent
}

// requestFrom sends req from the client namespace's address to
// server:port over UDP, as iPXE and UEFI firmware do for a
// ProxyDHCPREQUEST, and returns the reply and where it came from, or nil
// after timeout.
func requestFrom(t *testing.T, n netnsPair, server net.IP, port int, req *dhcpv4.DHCPv4, timeout time.Duration) (*dhcpv4.DHCPv4, *net.UDPAddr) {
	t.Helper()
	var reply *dhcpv4.DHCPv4
	var from *net.UDPAddr
	err := inNetns(t, n.client, func() error {
		conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: nsClientIP})
		if err != nil {
			return err
		}
		defer conn.Close()
		if _, err := conn.WriteToUDP(req.ToBytes(), &net.UDPAddr{IP: server, Port: port}); err != nil {
			return err
		}
		buf := make([]byte, 1500)
		conn.SetReadDeadline(time.Now().Add(timeout))
		for {
			nr, addr, err := conn.ReadFromUDP(buf)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return nil
			} else if err != nil {
				return err
			}
			m, err := dhcpv4.FromBytes(buf[:nr])
			if err != nil || m.TransactionID != req.TransactionID {
				continue
			}
			reply, from = m, addr
			return nil
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return reply, from
}

func startProxy(t *testing.T, n netnsPair, p *ProxyDHCP, httpURL string) {
	t.Helper()
	if err := inNetns(t, n.server, func() error { return p.Start(nsServerIf, nil, httpURL) }); err != nil {
		t.Fatal(err)
	}
}

// TestProxyDHCPNetns runs the responder in one namespace and real DHCP
// clients in the other.
func TestProxyDHCPNetns(t *testing.T) {
	n := newNetnsPair(t)
	p := NewProxyDHCP(slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})))
	reg := prometheus.NewRegistry()
	if err := p.Register(reg); err != nil {
		t.Fatal(err)
	}
	startProxy(t, n, p, nsHTTP)
	t.Cleanup(p.Stop)

	st := p.Status()
	if !st.Running || st.Interface != nsServerIf || !st.ServerIP.Equal(nsServerIP) || st.BootstrapURL != nsHTTP+BootstrapPath {
		t.Errorf("Status() = %+v", st)
	}

	bootstrap := nsHTTP + BootstrapPath
	for _, tc := range []struct {
		name  string
		mods  []dhcpv4.Modifier
		file  string
		opt43 []byte
	}{
		{"uefi x86-64", pxeMods(vendorUEFI, 7, false), "ipxe.efi", nil},
		{"bios", pxeMods(vendorBIOS, 0, false), "undionly.kpxe", pxe43},
		{"ipxe", pxeMods(vendorUEFI, 7, true), bootstrap, nil},
		{"ipxe on bios", pxeMods(vendorBIOS, 0, true), bootstrap, pxe43},
	} {
		t.Run("discover "+tc.name, func(t *testing.T) {
			offer, sent := discoverFrom(t, n, 3*time.Second, tc.mods...)
			if offer == nil {
				t.Fatal("no offer")
			}
			checkProxyReply(t, offer, sent, nsServerIP, dhcpv4.MessageTypeOffer, tc.file, tc.opt43)
			if !offer.IsBroadcast() {
				t.Errorf("offer to a client without an address has no broadcast flag")
			}
		})
	}

	t.Run("non-PXE discover gets no answer", func(t *testing.T) {
		before := p.Stats()
		offer, _ := discoverFrom(t, n, time.Second, dhcpv4.WithOption(dhcpv4.OptClassIdentifier("udhcp 1.36.1")))
		if offer != nil {
			t.Fatalf("answered a non-PXE client:\n%s", offer.Summary())
		}
		if after := p.Stats(); after.Replies != before.Replies || after.Ignored <= before.Ignored {
			t.Errorf("stats %+v -> %+v: want the DISCOVERs counted as ignored", before, after)
		}
	})

	n.addClientAddr(t)
	for _, tc := range []struct {
		name string
		mods []dhcpv4.Modifier
		file string
	}{
		{"uefi", pxeMods(vendorUEFI, 7, false), "ipxe.efi"},
		{"ipxe", pxeMods(vendorUEFI, 7, true), bootstrap},
	} {
		t.Run("port 4011 "+tc.name, func(t *testing.T) {
			req := request(t, nsServerIP, tc.mods...)
			ack, from := requestFrom(t, n, nsServerIP, PXEPort, req, 3*time.Second)
			if ack == nil {
				t.Fatal("no ACK on port 4011")
			}
			// iPXE accepts a ProxyDHCPACK only from port 4011.
			if !from.IP.Equal(nsServerIP) || from.Port != PXEPort {
				t.Errorf("ACK from %v, want %v:%d", from, nsServerIP, PXEPort)
			}
			checkProxyReply(t, ack, req, nsServerIP, dhcpv4.MessageTypeAck, tc.file, pxe43)
			if !ack.ClientIPAddr.Equal(nsClientIP) {
				t.Errorf("ciaddr %v, want the client's %v", ack.ClientIPAddr, nsClientIP)
			}
		})
	}

	t.Run("restart with a new URL", func(t *testing.T) {
		startProxy(t, n, p, "http://192.0.2.1:9090")
		offer, _ := discoverFrom(t, n, 3*time.Second, pxeMods(vendorBIOS, 0, true)...)
		if offer == nil || offer.BootFileName != "http://192.0.2.1:9090"+BootstrapPath {
			t.Fatalf("after restart: offer %v", offer)
		}
	})

	t.Run("stopped", func(t *testing.T) {
		p.Stop()
		if p.Status().Running {
			t.Errorf("Status().Running after Stop")
		}
		if offer, _ := discoverFrom(t, n, time.Second, pxeMods(vendorBIOS, 0, false)...); offer != nil {
			t.Errorf("answered after Stop:\n%s", offer.Summary())
		}
		if err := inNetns(t, n.server, func() error {
			// The ports are free again.
			for _, port := range []int{DHCPPort, PXEPort} {
				c, err := net.ListenUDP("udp4", &net.UDPAddr{Port: port})
				if err != nil {
					return fmt.Errorf("port %d still held after Stop: %w", port, err)
				}
				c.Close()
			}
			return nil
		}); err != nil {
			t.Error(err)
		}
	})

	if got := metricValue(t, reg, "bty_proxydhcp_replies_total", map[string]string{"boot": "uefi", "port": "67"}); got < 1 {
		t.Errorf("bty_proxydhcp_replies_total{boot=uefi,port=67} = %v", got)
	}
	if got := metricValue(t, reg, "bty_proxydhcp_replies_total", map[string]string{"boot": "ipxe", "port": "4011"}); got != 1 {
		t.Errorf("bty_proxydhcp_replies_total{boot=ipxe,port=4011} = %v, want 1", got)
	}
	if got := metricValue(t, reg, "bty_proxydhcp_ignored_total", map[string]string{"reason": "not_pxe"}); got < 1 {
		t.Errorf("bty_proxydhcp_ignored_total{reason=not_pxe} = %v", got)
	}
}

// proxyView is what a PXE client takes from a proxy reply.
type proxyView struct {
	Type                   string
	Yiaddr, Siaddr, Ciaddr string
	Broadcast              bool
	File, ServerID, Vendor string
	Opt43, UUID            string
	Options                []int // every option code present
}

func viewOf(m *dhcpv4.DHCPv4) *proxyView {
	if m == nil {
		return nil
	}
	v := &proxyView{
		Type: m.MessageType().String(), Yiaddr: m.YourIPAddr.String(), Siaddr: m.ServerIPAddr.String(),
		Ciaddr: m.ClientIPAddr.String(), Broadcast: m.IsBroadcast(), File: m.BootFileName,
		ServerID: fmt.Sprint(m.ServerIdentifier()), Vendor: m.ClassIdentifier(),
		Opt43: hex.EncodeToString(m.Options.Get(dhcpv4.OptionVendorSpecificInformation)),
		UUID:  hex.EncodeToString(m.Options.Get(dhcpv4.OptionClientMachineIdentifier)),
	}
	for code := range m.Options {
		v.Options = append(v.Options, int(code))
	}
	slices.Sort(v.Options)
	return v
}

// startDnsmasq runs dnsmasq in proxy mode in the server namespace with
// the boot files bty's responder hands out, until the test ends.
func startDnsmasq(t *testing.T, n netnsPair) {
	t.Helper()
	dir := t.TempDir()
	args := []string{"netns", "exec", n.server, "dnsmasq", "-d", "--conf-file=/dev/null", "--port=0",
		"--interface=" + nsServerIf, "--bind-interfaces", "--log-dhcp",
		"--dhcp-leasefile=" + filepath.Join(dir, "leases"), "--pid-file=" + filepath.Join(dir, "pid"),
		"--dhcp-range=192.0.2.0,proxy,255.255.255.0",
		// No pxe-service menu: the boot file comes from dhcp-boot. A
		// prompt turns dnsmasq's PXE support on; "PXE" with timeout 0
		// is the prompt it sends by default.
		"--pxe-prompt=PXE,0",
		"--dhcp-userclass=set:ipxe,iPXE",
		"--dhcp-match=set:efi,option:client-arch,7", "--dhcp-match=set:efi,option:client-arch,9",
		"--dhcp-match=set:bios,option:client-arch,0",
		"--dhcp-boot=tag:ipxe," + nsHTTP + BootstrapPath + ",," + nsServerIP.String(),
		"--dhcp-boot=tag:!ipxe,tag:efi,ipxe.efi,," + nsServerIP.String(),
		"--dhcp-boot=tag:!ipxe,tag:bios,undionly.kpxe,," + nsServerIP.String(),
	}
	cmd := exec.Command("ip", args...)
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		t.Logf("dnsmasq output:\n%s", out.String())
	})
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), "proxy on subnet") {
		if time.Now().After(deadline) {
			t.Fatalf("dnsmasq did not start:\n%s", out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestProxyDHCPMatchesDnsmasq sends the same DISCOVERs and port-4011
// REQUESTs to bty's responder and to dnsmasq in proxy mode (a
// well-known proxy-DHCP server, the reference) and compares what a client
// gets.
func TestProxyDHCPMatchesDnsmasq(t *testing.T) {
	if _, err := exec.LookPath("dnsmasq"); err != nil {
		t.Skip("dnsmasq not installed (scripts/install-deps.sh test installs dnsmasq-base): it is the reference")
	}
	n := newNetnsPair(t)
	type probe struct {
		name string
		port int
		mods []dhcpv4.Modifier
	}
	probes := []probe{
		{"uefi x86-64", 67, pxeMods(vendorUEFI, 7, false)},
		{"uefi bc", 67, pxeMods("PXEClient:Arch:00009:UNDI:003016", 9, false)},
		{"bios", 67, pxeMods(vendorBIOS, 0, false)},
		{"ipxe uefi", 67, pxeMods(vendorUEFI, 7, true)},
		{"ipxe bios", 67, pxeMods(vendorBIOS, 0, true)},
		{"not pxe", 67, []dhcpv4.Modifier{dhcpv4.WithOption(dhcpv4.OptClassIdentifier("udhcp 1.36.1"))}},
		{"4011 uefi", 4011, pxeMods(vendorUEFI, 7, false)},
		{"4011 ipxe", 4011, pxeMods(vendorUEFI, 7, true)},
		{"4011 bios", 4011, pxeMods(vendorBIOS, 0, false)},
	}
	ours, theirs := map[string]*proxyView{}, map[string]*proxyView{}
	run := func(t *testing.T, port int, into map[string]*proxyView) {
		for _, pr := range probes {
			if pr.port != port {
				continue
			}
			var reply *dhcpv4.DHCPv4
			if pr.port == DHCPPort {
				reply, _ = discoverFrom(t, n, 1500*time.Millisecond, pr.mods...)
			} else {
				reply, _ = requestFrom(t, n, nsServerIP, PXEPort, request(t, nsServerIP, pr.mods...), 1500*time.Millisecond)
			}
			into[pr.name] = viewOf(reply)
		}
	}
	// DISCOVERs come from a client with no address yet; the port 4011
	// REQUESTs after it has one.
	for _, port := range []int{DHCPPort, PXEPort} {
		if port == PXEPort {
			n.addClientAddr(t)
		}
		t.Run(fmt.Sprintf("bty port %d", port), func(t *testing.T) {
			p := NewProxyDHCP(slog.New(slog.NewTextHandler(testWriter{t}, nil)))
			startProxy(t, n, p, nsHTTP)
			defer p.Stop()
			run(t, port, ours)
		})
		t.Run(fmt.Sprintf("dnsmasq port %d", port), func(t *testing.T) {
			startDnsmasq(t, n)
			run(t, port, theirs)
		})
	}
	for _, pr := range probes {
		if (ours[pr.name] == nil) != (pr.name == "not pxe") {
			t.Errorf("%s: bty's reply %+v", pr.name, ours[pr.name])
		}
		if d := cmp.Diff(theirs[pr.name], ours[pr.name]); d != "" {
			t.Errorf("%s: bty's reply differs from dnsmasq's (-dnsmasq +bty):\n%s", pr.name, d)
		} else {
			t.Logf("%s: same as dnsmasq: %+v", pr.name, ours[pr.name])
		}
	}
}

// TestProxyDHCPDeclineNetns: with real sockets, a firmware client the
// hook declines gets no offer to its DISCOVER nor to its retry, nor an
// ACK on port 4011 (the hook asked once); the same machine's iPXE still
// gets the bootstrap URL.
func TestProxyDHCPDeclineNetns(t *testing.T) {
	n := newNetnsPair(t)
	p := NewProxyDHCP(slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})))
	var mu sync.Mutex
	var asked []string
	p.SetDecline(func(mac net.HardwareAddr) (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		asked = append(asked, mac.String())
		return true, "local disk"
	})
	startProxy(t, n, p, nsHTTP)
	t.Cleanup(p.Stop)

	for i := range 2 {
		if offer, _ := discoverFrom(t, n, time.Second, pxeMods(vendorUEFI, 7, false)...); offer != nil {
			t.Fatalf("DISCOVER %d of a declined firmware client got an offer:\n%s", i+1, offer.Summary())
		}
	}
	offer, sent := discoverFrom(t, n, 3*time.Second, pxeMods(vendorUEFI, 7, true)...)
	if offer == nil || offer.BootFileName != nsHTTP+BootstrapPath {
		t.Fatalf("iPXE on the declined machine got %v, want the bootstrap URL", offer)
	}
	n.addClientAddr(t)
	req := request(t, nsServerIP, pxeMods(vendorUEFI, 7, false)...)
	req.ClientHWAddr = sent.ClientHWAddr
	if ack, _ := requestFrom(t, n, nsServerIP, PXEPort, req, time.Second); ack != nil {
		t.Fatalf("port 4011 request of a declined client got an ACK:\n%s", ack.Summary())
	}
	mu.Lock()
	defer mu.Unlock()
	if len(asked) != 1 || asked[0] != sent.ClientHWAddr.String() {
		t.Errorf("hook asked for %v, want once for %s", asked, sent.ClientHWAddr)
	}
	if st := p.Stats(); st.Declined != 1 || st.Ignored != 2 || st.Replies != 1 {
		t.Errorf("Stats() = %+v, want 1 declined, 2 retries ignored, 1 reply (iPXE)", st)
	}
}
