package netboot

import (
	"fmt"
	"net"

	"github.com/insomniacslk/dhcp/dhcpv4/server4"
)

// listenDHCP opens a UDP socket on 0.0.0.0:port bound to iface
// (SO_BINDTODEVICE), able to broadcast: replies to clients without an
// address go to 255.255.255.255 on that interface only.
func listenDHCP(iface string, port int) (net.PacketConn, error) {
	conn, err := server4.NewIPv4UDPConn(iface, &net.UDPAddr{IP: net.IPv4zero, Port: port})
	if err != nil {
		return nil, fmt.Errorf("listening on udp port %d: %w (needs root or CAP_NET_BIND_SERVICE and CAP_NET_RAW; is another DHCP or proxy-DHCP server, e.g. dnsmasq, using the port?)", port, err)
	}
	return conn, nil
}
