package netboot

import (
	"bytes"
	"net"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
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
