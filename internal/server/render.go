package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/btyproject/bty/internal/netboot"
)

// scriptParams are what an iPXE script needs.
type scriptParams struct {
	ServerURL    string
	MAC          string
	ImageURL     string
	ImageSHA256  string
	Provisioning string
	Hostname     string
	// Message is echoed on the console first (server-made text only).
	Message string
}

func renderScript(policy string, p scriptParams) ([]byte, error) {
	script, err := netboot.Script(netboot.Params{
		Policy:       netboot.Policy(policy),
		ServerURL:    p.ServerURL,
		MAC:          p.MAC,
		ImageURL:     p.ImageURL,
		ImageSHA256:  p.ImageSHA256,
		Provisioning: p.Provisioning,
		Hostname:     p.Hostname,
	})
	if err != nil || p.Message == "" {
		return script, err
	}
	// The message is echoed on the line after #!ipxe, reduced to
	// characters iPXE prints as they are.
	msg := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune(" :.,()-_/", r) {
			return r
		}
		return -1
	}, p.Message)
	first, rest, _ := bytes.Cut(script, []byte("\n"))
	var b bytes.Buffer
	b.Write(first)
	b.WriteString("\necho " + msg + "\n")
	b.Write(rest)
	return b.Bytes(), nil
}

func renderBootstrap(serverURL string) ([]byte, error) { return netboot.Bootstrap(serverURL) }

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
		var missing []string
		for _, f := range []string{"undionly.kpxe", "ipxe.efi", "snponly.efi"} {
			if _, err := os.Stat(filepath.Join(s.cfg.IPXEDir, f)); err != nil {
				missing = append(missing, f)
			}
		}
		if len(missing) > 0 {
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

// proxyStatus is the proxy-DHCP state on the wire.
type proxyStatus struct {
	Running      bool   `json:"running"`
	Interface    string `json:"interface"`
	ServerIP     string `json:"server_ip"`
	BootstrapURL string `json:"bootstrap_url"`
}

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

// settingsDoc is GET/PUT /settings.
type settingsDoc struct {
	ProxyDHCPIface  *string `json:"proxydhcp_iface"`
	ProxyDHCPSubnet *string `json:"proxydhcp_subnet"`
}

type ifaceInfo struct {
	Name  string   `json:"name"`
	Addrs []string `json:"addrs"`
	Up    bool     `json:"up"`
}

func (s *Server) handleSettingsGet(w http.ResponseWriter, r *http.Request) {
	iface, _ := s.store.Setting(r.Context(), SettingProxyIface)
	subnet, _ := s.store.Setting(r.Context(), SettingProxySubnet)
	var ifs []ifaceInfo
	if all, err := net.Interfaces(); err == nil {
		for _, ifi := range all {
			info := ifaceInfo{Name: ifi.Name, Up: ifi.Flags&net.FlagUp != 0, Addrs: []string{}}
			if addrs, err := ifi.Addrs(); err == nil {
				for _, a := range addrs {
					info.Addrs = append(info.Addrs, a.String())
				}
			}
			ifs = append(ifs, info)
		}
	}
	status := proxyStatus{}
	if s.pxe.proxy != nil {
		st := s.pxe.proxy.Status()
		status = proxyStatus{Running: st.Running, Interface: st.Interface, BootstrapURL: st.BootstrapURL}
		if st.ServerIP != nil {
			status.ServerIP = st.ServerIP.String()
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"proxydhcp_iface": iface, "proxydhcp_subnet": subnet, "proxydhcp_env_override": s.cfg.ProxyDHCPIface,
		"proxydhcp_status": status, "interfaces": ifs, "tftp_port": s.cfg.TFTPPort,
	})
}

// handleSettingsPut stores the proxy-DHCP settings and applies them
// live; a setting that cannot be applied is refused and not stored.
func (s *Server) handleSettingsPut(w http.ResponseWriter, r *http.Request) {
	var d settingsDoc
	if !decodeJSON(w, r, &d, 64<<10) {
		return
	}
	ctx := r.Context()
	iface, _ := s.store.Setting(ctx, SettingProxyIface)
	subnet, _ := s.store.Setting(ctx, SettingProxySubnet)
	if d.ProxyDHCPIface != nil {
		iface = strings.TrimSpace(*d.ProxyDHCPIface)
	}
	if d.ProxyDHCPSubnet != nil {
		subnet = strings.TrimSpace(*d.ProxyDHCPSubnet)
	}
	if s.cfg.ProxyDHCPIface != "" {
		writeError(w, http.StatusConflict, "proxy-DHCP is set by BTY_PROXYDHCP_IFACE="+s.cfg.ProxyDHCPIface+"; unset it to manage it here")
		return
	}
	if err := s.applyProxyDHCP(iface, subnet); errors.Is(err, errProxyUnavailable) {
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	} else if err != nil {
		// The responder stops when a new setting cannot start: bring
		// the stored one back.
		oldIface, _ := s.store.Setting(ctx, SettingProxyIface)
		oldSubnet, _ := s.store.Setting(ctx, SettingProxySubnet)
		if rerr := s.applyProxyDHCP(oldIface, oldSubnet); rerr != nil {
			s.log.Error("proxy-DHCP: restoring the previous setting", "iface", oldIface, "err", rerr)
		}
		writeError(w, http.StatusBadRequest, err.Error()+"; the previous setting stays")
		return
	}
	now := time.Now()
	for k, v := range map[string]string{SettingProxyIface: iface, SettingProxySubnet: subnet} {
		if err := s.store.SetSetting(ctx, k, v, now); err != nil {
			s.internalError(w, r, err)
			return
		}
	}
	s.log.Info("proxy-DHCP settings changed", "iface", iface, "subnet", subnet, "client", clientAddr(r))
	s.handleSettingsGet(w, r)
}

// imageURL is where the live env downloads an image from.
func imageURL(base, name string) string { return base + "/images/" + url.PathEscape(name) }
