package server

import (
	"errors"
	"net/http"
	"time"

	"github.com/btyproject/bty/internal/provision"
	"github.com/btyproject/bty/internal/store"
)

// pathMAC normalises the {mac} of a request; on failure it answers 400
// and returns false.
func pathMAC(w http.ResponseWriter, r *http.Request) (string, bool) {
	mac, err := store.NormalizeMAC(r.PathValue("mac"))
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return "", false
	}
	return mac, true
}

func (s *Server) handleMachines(w http.ResponseWriter, r *http.Request) {
	ms, err := s.store.ListMachines(r.Context())
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, ms)
}

func (s *Server) handleMachineGet(w http.ResponseWriter, r *http.Request) {
	mac, ok := pathMAC(w, r)
	if !ok {
		return
	}
	m, err := s.store.GetMachine(r.Context(), mac)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, "no machine "+mac)
		return
	}
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, m)
}

func (s *Server) handleMachinePut(w http.ResponseWriter, r *http.Request) {
	mac, ok := pathMAC(w, r)
	if !ok {
		return
	}
	var u store.MachineUpdate
	if !decodeJSON(w, r, &u, 1<<20) {
		return
	}
	if u.Hostname != nil && *u.Hostname != "" {
		if err := provision.CheckHostname(*u.Hostname); err != nil {
			writeError(w, http.StatusBadRequest, "hostname: "+err.Error())
			return
		}
	}
	if u.Image != nil && *u.Image != "" {
		if err := checkName(*u.Image); err != nil {
			writeError(w, http.StatusBadRequest, "image: "+err.Error()+"; use a name from GET /images")
			return
		}
	}
	m, created, err := s.store.PutMachine(r.Context(), mac, u, time.Now())
	var ve *store.ValidationError
	if errors.As(err, &ve) {
		writeError(w, http.StatusBadRequest, ve.Error())
		return
	}
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	s.publishMachine(m)
	code := http.StatusOK
	if created {
		code = http.StatusCreated
	}
	writeJSON(w, code, m)
}

func (s *Server) handleMachineDelete(w http.ResponseWriter, r *http.Request) {
	mac, ok := pathMAC(w, r)
	if !ok {
		return
	}
	err := s.store.DeleteMachine(r.Context(), mac)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, "no machine "+mac)
		return
	}
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	s.hub.publish(machineEvent{Type: "delete", MAC: mac})
	w.WriteHeader(http.StatusNoContent)
}
