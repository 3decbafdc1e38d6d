package server

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/provision"
	"github.com/btyproject/bty/internal/store"
)

// pathMAC normalises the {mac} of a request; on failure it answers 400
// and returns false.
func pathMAC(w http.ResponseWriter, r *http.Request) (fleet.MAC, bool) {
	mac, err := fleet.ParseMAC(r.PathValue("mac"))
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return fleet.MAC{}, false
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
		writeError(w, http.StatusNotFound, "no machine "+mac.String())
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
	var u fleet.MachineUpdate
	if !decodeJSON(w, r, &u, 4*fleet.MaxSeedBytes) {
		return
	}
	m, created, err := s.updateMachine(r.Context(), mac, u)
	if fleet.IsValidation(err) {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	code := http.StatusOK
	if created {
		code = http.StatusCreated
	}
	writeJSON(w, code, m)
}

// machineUpdateErrors checks every field of u, so a form can show each
// problem next to its field: fleet's bounds (MachineUpdate.Validate),
// then, for a field within them, its finer rules (names as checkName,
// host names as RFC 1123, seeds as bty flash checks them). PUT
// /machines, the UI's forms and POST /state/import all check here.
func machineUpdateErrors(u fleet.MachineUpdate) []*fleet.ValidationError {
	errs := u.Validate()
	bad := map[string]bool{}
	for _, e := range errs {
		bad[e.Field] = true
	}
	if u.Hostname != nil && *u.Hostname != "" && !bad["hostname"] {
		if err := provision.CheckHostname(*u.Hostname); err != nil {
			errs = append(errs, &fleet.ValidationError{Field: "hostname", Msg: err.Error()})
		}
	}
	for _, f := range []struct {
		field string
		v     *string
	}{{"image", u.Image}, {"last_known_good", u.LastKnownGood}} {
		if f.v != nil && *f.v != "" && !bad[f.field] {
			if err := checkName(*f.v); err != nil {
				errs = append(errs, &fleet.ValidationError{Field: f.field, Msg: err.Error() + "; use a name from GET /images"})
			}
		}
	}
	// The seed is checked as bty flash checks --user-data/--meta-data:
	// a #cloud-config that is not YAML is refused with its line.
	for _, f := range []struct {
		field string
		v     *string
		check func([]byte) error
	}{{"user_data", u.UserData, provision.CheckUserData}, {"meta_data", u.MetaData, provision.CheckMetaData}} {
		if f.v != nil && *f.v != "" && !bad[f.field] {
			if err := f.check([]byte(*f.v)); err != nil {
				errs = append(errs, &fleet.ValidationError{Field: f.field, Msg: err.Error()})
			}
		}
	}
	return errs
}

// updateMachine validates u (a *fleet.ValidationError names the field)
// and applies it, publishing the change.
func (s *Server) updateMachine(ctx context.Context, mac fleet.MAC, u fleet.MachineUpdate) (fleet.Machine, bool, error) {
	if errs := machineUpdateErrors(u); len(errs) > 0 {
		return fleet.Machine{}, false, errs[0]
	}
	m, created, err := store.PutMachine(ctx, s.store, mac, u, time.Now())
	if err != nil {
		return fleet.Machine{}, false, err
	}
	s.publishMachine(m)
	return m, created, nil
}

// deleteMachine deletes a machine (store.ErrNotFound when unknown) and
// publishes the deletion.
func (s *Server) deleteMachine(ctx context.Context, mac fleet.MAC) error {
	if err := s.store.DeleteMachine(ctx, mac); err != nil {
		return err
	}
	s.publishDelete(mac)
	return nil
}

func (s *Server) handleMachineDelete(w http.ResponseWriter, r *http.Request) {
	mac, ok := pathMAC(w, r)
	if !ok {
		return
	}
	err := s.deleteMachine(r.Context(), mac)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, "no machine "+mac.String())
		return
	}
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
