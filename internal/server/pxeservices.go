package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/btyproject/bty/internal/netboot"
)

// Settings keys of the proxy-DHCP responder.
const (
	SettingProxyIface  = "proxydhcp_iface"
	SettingProxySubnet = "proxydhcp_subnet"
)

// pxeServices are the TFTP server and the proxy-DHCP responder.
type pxeServices struct {
	mu     sync.Mutex
	tftp   *netboot.TFTP
	proxy  *netboot.ProxyDHCP
	cancel context.CancelFunc
	done   chan struct{}
	// port is the HTTP port iPXE clients are sent to.
	port int
}

// StartPXEServices starts TFTP (unless BTY_TFTP_PORT=0) and, when an
// interface is configured (BTY_PROXYDHCP_IFACE, else the stored
// setting), proxy-DHCP. A port that cannot be bound is an error that
// says how to turn the service off.
func (s *Server) StartPXEServices(ctx context.Context, reg *prometheus.Registry, httpPort int) error {
	ps := &s.pxe
	ps.port = httpPort
	ps.proxy = netboot.NewProxyDHCP(s.log)
	// A machine whose next boot is its disk gets no boot file from
	// proxy-DHCP (proxydecide.go).
	ps.proxy.SetDecline(s.declineFunc(newProxyDecider()))
	if err := ps.proxy.Register(reg); err != nil {
		return err
	}
	if s.cfg.TFTPPort > 0 {
		ps.tftp = netboot.NewTFTP(s.cfg.IPXEDir, s.log)
		if err := ps.tftp.Register(reg); err != nil {
			return err
		}
		addr := net.JoinHostPort(s.cfg.Host, strconv.Itoa(s.cfg.TFTPPort))
		conn, err := net.ListenPacket("udp", addr)
		if err != nil {
			return fmt.Errorf("TFTP on %s: %w; run as root (port 69), or set BTY_TFTP_PORT to another port or 0 to turn TFTP off", addr, err)
		}
		tctx, cancel := context.WithCancel(ctx)
		ps.cancel, ps.done = cancel, make(chan struct{})
		go func() {
			defer close(ps.done)
			if err := ps.tftp.Serve(tctx, conn); err != nil {
				s.log.Error("TFTP stopped", "err", err)
			}
		}()
		s.log.Info("TFTP serving iPXE binaries", "addr", conn.LocalAddr().String(), "dir", s.cfg.IPXEDir)
		if missing := missingIPXE(s.cfg.IPXEDir); len(missing) > 0 {
			s.log.Warn("iPXE binaries missing: PXE clients asking for them get 'file not found'; install Debian's ipxe package or set BTY_IPXE_DIR",
				"dir", s.cfg.IPXEDir, "missing", strings.Join(missing, ","))
		}
	}
	iface, subnet := s.cfg.ProxyDHCPIface, ""
	if iface == "" {
		iface, _ = s.store.Setting(ctx, SettingProxyIface)
		subnet, _ = s.store.Setting(ctx, SettingProxySubnet)
	}
	if iface != "" {
		if err := s.applyProxyDHCP(iface, subnet); err != nil {
			return fmt.Errorf("%w; fix BTY_PROXYDHCP_IFACE or the proxy-DHCP setting", err)
		}
	}
	return nil
}

func (s *Server) stopPXEServices() {
	ps := &s.pxe
	if ps.proxy != nil {
		ps.proxy.Stop()
	}
	if ps.cancel != nil {
		ps.cancel()
		<-ps.done
		ps.cancel = nil
	}
}

// applyProxyDHCP (re)starts proxy-DHCP on iface ("" stops it), serving
// from the interface's address in subnet (any IPv4 address when "").
func (s *Server) applyProxyDHCP(iface, subnet string) error {
	ps := &s.pxe
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if iface == "" {
		if ps.proxy != nil {
			ps.proxy.Stop()
		}
		return nil
	}
	if ps.proxy == nil {
		return errProxyUnavailable
	}
	ip, err := ifaceAddr(iface, subnet)
	if err != nil {
		return err
	}
	scheme := "http"
	if s.tls() {
		scheme = "https"
	}
	base := scheme + "://" + net.JoinHostPort(ip.String(), strconv.Itoa(ps.port))
	return ps.proxy.Start(iface, ip, base)
}

var errProxyUnavailable = errors.New("proxy-DHCP is not running in this server process")

// ifaceAddr is iface's IPv4 address, the one inside subnet when given.
func ifaceAddr(iface, subnet string) (net.IP, error) {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return nil, fmt.Errorf("proxy-DHCP: no interface %q: %w", iface, err)
	}
	var want *net.IPNet
	if subnet != "" {
		if _, want, err = net.ParseCIDR(subnet); err != nil {
			return nil, fmt.Errorf("proxy-DHCP: subnet %q: want CIDR like 10.0.0.0/24", subnet)
		}
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return nil, err
	}
	for _, a := range addrs {
		n, ok := a.(*net.IPNet)
		if !ok || n.IP.To4() == nil {
			continue
		}
		if want == nil || want.Contains(n.IP) {
			return n.IP.To4(), nil
		}
	}
	if want != nil {
		return nil, fmt.Errorf("proxy-DHCP: interface %s has no IPv4 address in %s", iface, subnet)
	}
	return nil, fmt.Errorf("proxy-DHCP: interface %s has no IPv4 address", iface)
}

// ipxeBinaries are the files TFTP serves from IPXEDir.
var ipxeBinaries = []string{"undionly.kpxe", "ipxe.efi", "snponly.efi"}

// missingIPXE lists the iPXE binaries dir lacks.
func missingIPXE(dir string) []string {
	var missing []string
	for _, f := range ipxeBinaries {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			missing = append(missing, f)
		}
	}
	return missing
}
