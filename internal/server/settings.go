package server

import (
	"errors"
	"net"
	"net/http"
	"strings"
	"time"
)

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
