package server

import (
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/btyproject/bty/internal/api"
	"github.com/btyproject/bty/internal/version"
)

type settingsData struct {
	V                         api.Settings
	Iface, Subnet, ProxyError string
	IPXEMissing               string
	Version, DB, ImageRoot    string
	BootDir                   string
}

func (s *Server) uiSettings(w http.ResponseWriter, r *http.Request) {
	s.renderSettings(w, r, http.StatusOK, "", "", "")
}

// renderSettings shows the settings page; iface and subnet, when a
// change was refused, are what the user asked for.
func (s *Server) renderSettings(w http.ResponseWriter, r *http.Request, code int, iface, subnet, proxyErr string) {
	v := s.settings(r.Context())
	d := settingsData{V: v, Iface: v.ProxyDHCPIface, Subnet: v.ProxyDHCPSubnet, ProxyError: proxyErr,
		Version: version.Version, DB: s.cfg.DBPath(), ImageRoot: s.cfg.ImageRoot, BootDir: s.cfg.BootDir}
	if proxyErr != "" {
		d.Iface, d.Subnet = iface, subnet
	}
	if s.cfg.TFTPPort != 0 {
		d.IPXEMissing = strings.Join(missingIPXE(s.cfg.IPXEDir), ", ")
	}
	s.render(w, r, code, "settings", uiPage{Title: "Settings", Nav: "settings", LoggedIn: true, Data: d})
}

func (s *Server) uiProxyDHCP(w http.ResponseWriter, r *http.Request) {
	if !parseForm(w, r) {
		return
	}
	iface, subnet := strings.TrimSpace(r.PostForm.Get("proxydhcp_iface")), strings.TrimSpace(r.PostForm.Get("proxydhcp_subnet"))
	var se *settingError
	if err := s.setProxyDHCP(r.Context(), iface, subnet, clientAddr(r)); errors.As(err, &se) {
		s.renderSettings(w, r, se.code, iface, subnet, se.msg)
		return
	} else if err != nil {
		s.uiInternal(w, r, err)
		return
	}
	if iface == "" {
		s.setFlash(w, "Proxy-DHCP is off.")
	} else {
		msg := "Proxy-DHCP now answers PXE clients on " + iface + "."
		if st := s.settings(r.Context()).ProxyDHCPStatus; st.Running {
			msg = "Proxy-DHCP now answers PXE clients on " + iface + " as " + st.ServerIP + "."
		}
		s.setFlash(w, msg)
	}
	redirect(w, r, "/ui/settings")
}

func (s *Server) uiRevokeAll(w http.ResponseWriter, r *http.Request) {
	n, err := s.revokeAll(w, r)
	if err != nil {
		s.uiInternal(w, r, err)
		return
	}
	s.setFlash(w, "Revoked every session ("+strconv.Itoa(n)+"). Log in again.")
	redirect(w, r, "/ui/login")
}
