package server

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/btyproject/bty/internal/api"
	"github.com/btyproject/bty/internal/version"
)

type settingsData struct {
	V                         api.Settings
	Iface, Subnet, ProxyError string
	IPXEMissing               string
	Version, DB, ImageRoot    string
	BootDir                   string
	// SSHKeyError says why bty-web's SSH key cannot be shown;
	// CijoeMissing why cijoe cannot run (both "" when fine).
	SSHKeyError, CijoeMissing string
	// MaxRuns is the max_runs field's text (as typed when refused),
	// MaxRunsError why it was refused; MaxMaxRuns its upper bound.
	MaxRuns, MaxRunsError string
	MaxMaxRuns            int
}

// settingsForm is what a refused settings form asked for, and why it
// was refused.
type settingsForm struct {
	Iface, Subnet, ProxyError string
	MaxRuns, MaxRunsError     string
}

func (s *Server) uiSettings(w http.ResponseWriter, r *http.Request) {
	s.renderSettings(w, r, http.StatusOK, settingsForm{})
}

// renderSettings shows the settings page; a refused form's fields show
// what the user asked for.
func (s *Server) renderSettings(w http.ResponseWriter, r *http.Request, code int, f settingsForm) {
	v := s.settings(r.Context())
	d := settingsData{V: v, Iface: v.ProxyDHCPIface, Subnet: v.ProxyDHCPSubnet, ProxyError: f.ProxyError,
		Version: version.Version, DB: s.cfg.DBPath(), ImageRoot: s.cfg.ImageRoot, BootDir: s.cfg.BootDir,
		MaxRuns: strconv.Itoa(v.MaxRuns), MaxRunsError: f.MaxRunsError, MaxMaxRuns: maxMaxRuns}
	if f.ProxyError != "" {
		d.Iface, d.Subnet = f.Iface, f.Subnet
	}
	if f.MaxRunsError != "" {
		d.MaxRuns = f.MaxRuns
	}
	if _, err := s.sshKey.publicKey(); err != nil {
		d.SSHKeyError = err.Error()
	}
	if _, err := s.cijoePath(); err != nil {
		d.CijoeMissing = err.Error()
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
		s.renderSettings(w, r, se.code, settingsForm{Iface: iface, Subnet: subnet, ProxyError: se.msg})
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

// uiMaxRuns stores max_runs (1 to maxMaxRuns) as PUT /settings does and
// lets queued runs start in the new slots.
func (s *Server) uiMaxRuns(w http.ResponseWriter, r *http.Request) {
	if !parseForm(w, r) {
		return
	}
	text := strings.TrimSpace(r.PostForm.Get("max_runs"))
	n, err := strconv.Atoi(text)
	if err != nil || n < 1 || n > maxMaxRuns {
		s.renderSettings(w, r, http.StatusBadRequest, settingsForm{MaxRuns: text,
			MaxRunsError: fmt.Sprintf("Not changed: want 1 to %d cijoe runs at once (a whole number).", maxMaxRuns)})
		return
	}
	if err := s.store.SetSetting(r.Context(), SettingMaxRuns, strconv.Itoa(n), time.Now()); err != nil {
		s.uiInternal(w, r, err)
		return
	}
	s.log.Info("max_runs changed", "max_runs", n, "client", clientAddr(r))
	s.runs.kick()
	s.setFlash(w, fmt.Sprintf("At most %d cijoe run%s now run at once; the rest queue.", n, plural(n)))
	redirect(w, r, "/ui/settings#h-cijoe")
}
