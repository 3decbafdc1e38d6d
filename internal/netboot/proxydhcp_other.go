//go:build !linux

package netboot

import (
	"errors"
	"net"
)

func listenDHCP(iface string, port int) (net.PacketConn, error) {
	return nil, errors.New("proxy-DHCP is implemented for Linux only")
}
