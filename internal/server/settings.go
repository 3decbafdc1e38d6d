package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/btyproject/bty/internal/api"
)

func (s *Server) settings(ctx context.Context) api.Settings {
	v := api.Settings{ProxyDHCPEnvOverride: s.cfg.ProxyDHCPIface, TFTPPort: s.cfg.TFTPPort, Interfaces: []api.Interface{}}
	v.ProxyDHCPIface, _ = s.store.Setting(ctx, SettingProxyIface)
	v.ProxyDHCPSubnet, _ = s.store.Setting(ctx, SettingProxySubnet)
	if all, err := net.Interfaces(); err == nil {
		for _, ifi := range all {
			info := api.Interface{Name: ifi.Name, Up: ifi.Flags&net.FlagUp != 0, Addrs: []string{}}
			if addrs, err := ifi.Addrs(); err == nil {
				for _, a := range addrs {
					info.Addrs = append(info.Addrs, a.String())
				}
			}
			v.Interfaces = append(v.Interfaces, info)
		}
	}
	v.SSHPublicKey, _ = s.sshKey.publicKey()
	v.Cijoe, _ = s.cijoePath()
	v.MaxRuns = s.maxRuns(ctx)
	if s.pxe.proxy != nil {
		st := s.pxe.proxy.Status()
		v.ProxyDHCPStatus = api.ProxyDHCPStatus{Running: st.Running, Interface: st.Interface, BootstrapURL: st.BootstrapURL}
		if st.ServerIP != nil {
			v.ProxyDHCPStatus.ServerIP = st.ServerIP.String()
		}
	}
	return v
}

func (s *Server) handleSettingsGet(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.settings(r.Context()))
}

// settingError is a settings change refused, with its HTTP status.
type settingError struct {
	code int
	msg  string
}

func (e *settingError) Error() string { return e.msg }

// setProxyDHCP applies proxy-DHCP on iface within subnet live and stores
// the setting; a setting that cannot be applied is refused (a
// *settingError), not stored, and the previous one stays in force.
func (s *Server) setProxyDHCP(ctx context.Context, iface, subnet, client string) error {
	iface, subnet = strings.TrimSpace(iface), strings.TrimSpace(subnet)
	if s.cfg.ProxyDHCPIface != "" {
		return &settingError{http.StatusConflict, "proxy-DHCP is set by BTY_PROXYDHCP_IFACE=" + s.cfg.ProxyDHCPIface + "; unset it to manage it here"}
	}
	if err := s.applyProxyDHCP(iface, subnet); errors.Is(err, errProxyUnavailable) {
		return &settingError{http.StatusServiceUnavailable, err.Error()}
	} else if err != nil {
		// The responder stops when a new setting cannot start: bring
		// the stored one back.
		oldIface, _ := s.store.Setting(ctx, SettingProxyIface)
		oldSubnet, _ := s.store.Setting(ctx, SettingProxySubnet)
		if rerr := s.applyProxyDHCP(oldIface, oldSubnet); rerr != nil {
			s.log.Error("proxy-DHCP: restoring the previous setting", "iface", oldIface, "err", rerr)
		}
		return &settingError{http.StatusBadRequest, err.Error() + "; the previous setting stays"}
	}
	now := time.Now()
	for k, v := range map[string]string{SettingProxyIface: iface, SettingProxySubnet: subnet} {
		if err := s.store.SetSetting(ctx, k, v, now); err != nil {
			return err
		}
	}
	s.log.Info("proxy-DHCP settings changed", "iface", iface, "subnet", subnet, "client", client)
	return nil
}

// handleSettingsPut stores the proxy-DHCP settings and applies them
// live; a setting that cannot be applied is refused and not stored.
func (s *Server) handleSettingsPut(w http.ResponseWriter, r *http.Request) {
	var d api.SettingsUpdate
	if !decodeJSON(w, r, &d, 64<<10) {
		return
	}
	ctx := r.Context()
	if d.MaxRuns != nil {
		if *d.MaxRuns < 1 || *d.MaxRuns > maxMaxRuns {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("max_runs: want 1 to %d cijoe runs at once", maxMaxRuns))
			return
		}
		if err := s.store.SetSetting(ctx, SettingMaxRuns, strconv.Itoa(*d.MaxRuns), time.Now()); err != nil {
			s.internalError(w, r, err)
			return
		}
		s.log.Info("max_runs changed", "max_runs", *d.MaxRuns, "client", clientAddr(r))
		s.runs.kick()
		if d.ProxyDHCPIface == nil && d.ProxyDHCPSubnet == nil {
			s.handleSettingsGet(w, r)
			return
		}
	}
	iface, _ := s.store.Setting(ctx, SettingProxyIface)
	subnet, _ := s.store.Setting(ctx, SettingProxySubnet)
	if d.ProxyDHCPIface != nil {
		iface = *d.ProxyDHCPIface
	}
	if d.ProxyDHCPSubnet != nil {
		subnet = *d.ProxyDHCPSubnet
	}
	var se *settingError
	if err := s.setProxyDHCP(ctx, iface, subnet, clientAddr(r)); errors.As(err, &se) {
		writeError(w, se.code, se.msg)
		return
	} else if err != nil {
		s.internalError(w, r, err)
		return
	}
	s.handleSettingsGet(w, r)
}
