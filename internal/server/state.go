package server

import (
	"errors"
	"fmt"
	"net/http"
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

func (s *Server) handleExport(w http.ResponseWriter, r *http.Request) {
	ms, err := s.store.ListMachines(r.Context())
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	a := api.StateArchive{Format: archiveFormat, ExportedAt: time.Now().UTC().Truncate(time.Second), Version: version.Version,
		Machines: ms, Settings: map[string]string{}}
	for _, k := range exportedSettings {
		if v, err := s.store.Setting(r.Context(), k); err == nil {
			a.Settings[k] = v
		}
	}
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="bty-state-%s.json"`, a.ExportedAt.Format("20060102T150405Z")))
	writeJSON(w, http.StatusOK, a)
}

// handleImport restores an archive: its machines replace records with
// the same MAC (others are kept), in one transaction; its settings are
// stored (applied at the next start or settings change).
func (s *Server) handleImport(w http.ResponseWriter, r *http.Request) {
	var a api.StateArchive
	if !decodeJSON(w, r, &a, 256<<20) {
		return
	}
	if a.Format != archiveFormat {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("not a bty state archive: format %q, want %q (from GET /state/export)", a.Format, archiveFormat))
		return
	}
	// Every MAC was parsed as the archive was decoded (fleet.MAC);
	// ImportMachines checks the rest of each record.
	err := s.store.ImportMachines(r.Context(), a.Machines)
	var ve *fleet.ValidationError
	if errors.As(err, &ve) {
		writeError(w, http.StatusBadRequest, "nothing imported: "+ve.Error())
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
