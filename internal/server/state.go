package server

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/btyproject/bty/internal/api"
	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/version"
)

// archiveFormat names the archive's version. The whole fleet state goes
// in it; secrets (the admin password hash, sessions) never do.
const archiveFormat = "bty-state-v1"

// exportedSettings are the settings an archive carries.
var exportedSettings = []string{SettingProxyIface, SettingProxySubnet}

// With ?secrets=1 the archive also carries the machines' BMC passwords
// (and says so in its "secrets" member): an archive to restore a server
// from without setting every password again, to be kept like a
// password file. Without it no secret is in the archive.
func (s *Server) handleExport(w http.ResponseWriter, r *http.Request) {
	var withSecrets bool
	switch v := r.URL.Query().Get("secrets"); v {
	case "", "0":
	case "1":
		withSecrets = true
	default:
		writeError(w, http.StatusBadRequest, fmt.Sprintf("secrets=%q: want 1 (include the BMC passwords) or 0 (the default: none)", v))
		return
	}
	ms, err := s.store.ListMachines(r.Context())
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	a := api.StateArchive{Format: archiveFormat, ExportedAt: time.Now().UTC().Truncate(time.Second), Version: version.Version,
		Machines: ms, Settings: map[string]string{}}
	if withSecrets {
		a.Secrets = &api.ArchiveSecrets{Warning: secretsWarning, BMCPasswords: map[string]string{}}
		for _, m := range ms {
			if m.Power == nil || m.Power.Password == "" {
				continue
			}
			pw, err := s.secrets.open(m.Power.Password)
			if err != nil {
				s.internalError(w, r, fmt.Errorf("exporting the BMC password of %s: %w", m.MAC, err))
				return
			}
			a.Secrets.BMCPasswords[m.MAC.String()] = pw
		}
		s.log.Warn("state exported with secrets (BMC passwords)", "machines_with_passwords", len(a.Secrets.BMCPasswords), "client", clientAddr(r))
	}
	for _, k := range exportedSettings {
		if v, err := s.store.Setting(r.Context(), k); err == nil {
			a.Settings[k] = v
		}
	}
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="bty-state-%s.json"`, a.ExportedAt.Format("20060102T150405Z")))
	writeJSON(w, http.StatusOK, a)
}

// secretsWarning is said in an archive that carries secrets.
const secretsWarning = "this archive holds the machines' BMC passwords in clear (exported with ?secrets=1): keep it like a password file, and delete it when restored"

// handleImport restores an archive: its machines replace records with
// the same MAC (others are kept), in one transaction, only when every
// record passes PUT /machines' checks; its settings are stored (applied
// at the next start or settings change).
func (s *Server) handleImport(w http.ResponseWriter, r *http.Request) {
	var a api.StateArchive
	if !decodeJSON(w, r, &a, 256<<20) {
		return
	}
	if a.Format != archiveFormat {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("not a bty state archive: format %q, want %q (from GET /state/export)", a.Format, archiveFormat))
		return
	}
	if a.Secrets != nil {
		known := map[string]*fleet.Machine{}
		for i := range a.Machines {
			known[a.Machines[i].MAC.String()] = &a.Machines[i]
		}
		for mac, pw := range a.Secrets.BMCPasswords {
			m := known[mac]
			if m == nil || m.Power == nil {
				writeError(w, http.StatusBadRequest, "nothing imported: secrets.bmc_passwords names "+strconv.Quote(mac)+", which is not a machine of the archive with power settings")
				return
			}
			m.Power.Password, m.Power.PasswordSet = pw, pw != ""
		}
	}
	// An archive's machines carry no password but the secrets' (and a
	// stored form that is not sealed by this server is no password).
	for i := range a.Machines {
		if p := a.Machines[i].Power; p != nil && sealed(p.Password) {
			p.Password, p.PasswordSet = "", false
		}
	}
	// Every MAC was parsed as the archive was decoded (fleet.MAC). Every
	// record is checked before anything is written: the whole record
	// as fleet.Machine.ForImport checks it (which ImportMachines does
	// again), its settable fields exactly as PUT /machines checks them.
	// ImportMachines then writes all records or none.
	for _, m := range a.Machines {
		if _, err := m.ForImport(time.Now()); err != nil {
			writeError(w, http.StatusBadRequest, importRefused(err))
			return
		}
		if errs := machineUpdateErrors(m.Settable()); len(errs) > 0 {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("nothing imported: machine %s: %v", m.MAC, errs[0]))
			return
		}
		if m.Power != nil {
			c, _ := s.powerConfig(m.Power) // not sealed yet
			if c.Password == "" {
				c.Password = "-" // an archive without secrets has none
			}
			if errs := c.Validate(); len(errs) > 0 {
				writeError(w, http.StatusBadRequest, fmt.Sprintf("nothing imported: machine %s: power.%s: %s", m.MAC, errs[0].Field, errs[0].Msg))
				return
			}
		}
	}
	for i := range a.Machines {
		if p := a.Machines[i].Power; p != nil && p.Password != "" {
			pw, err := s.secrets.seal(p.Password)
			if err != nil {
				s.internalError(w, r, err)
				return
			}
			c := *p
			c.Password = pw
			a.Machines[i].Power = &c
		}
	}
	err := s.store.ImportMachines(r.Context(), a.Machines)
	var ve *fleet.ValidationError
	if errors.As(err, &ve) {
		writeError(w, http.StatusBadRequest, importRefused(ve))
		return
	}
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	for _, k := range exportedSettings {
		if v, ok := a.Settings[k]; ok {
			if err := s.store.SetSetting(r.Context(), k, v, time.Now()); err != nil {
				s.internalError(w, r, err)
				return
			}
		}
	}
	for _, m := range a.Machines {
		s.publishMachine(m)
	}
	s.log.Info("state imported", "machines", len(a.Machines), "client", clientAddr(r))
	writeJSON(w, http.StatusOK, api.Imported{ImportedMachines: len(a.Machines)})
}

// importRefused is the message for a record fleet.Machine.ForImport
// refuses: its *ValidationError's Field is the machine's MAC ("mac"
// when it has none).
func importRefused(err error) string {
	var ve *fleet.ValidationError
	if errors.As(err, &ve) && ve.Field != "mac" {
		return "nothing imported: machine " + ve.Error()
	}
	return "nothing imported: " + err.Error()
}
