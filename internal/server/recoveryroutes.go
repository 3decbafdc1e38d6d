package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/btyproject/bty/internal/api"
	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/store"
)

// The failure recovery's routes (docs/reference.md, "Failure recovery").

// maxActionPage bounds GET /machines/{mac}/actions's page.
const maxActionPage = 1000

// handleReportFailure answers POST /machines/{mac}/report-failure: a CI
// system (or an operator) says the machine is bad; recovery starts
// (202 with the record). A machine recovering, in quarantine or
// flashing is a 409 that says so.
func (s *Server) handleReportFailure(w http.ResponseWriter, r *http.Request) {
	mac, ok := pathMAC(w, r)
	if !ok {
		return
	}
	var req api.FailureReport
	if !decodeJSON(w, r, &req, 16<<10) {
		return
	}
	if len(req.Reason) > fleet.MaxFailureLen {
		writeError(w, http.StatusBadRequest, "reason: at most "+strconv.Itoa(fleet.MaxFailureLen)+" bytes")
		return
	}
	reason := "reported: " + cleanReason(req.Reason)
	m, ok := s.apiMachine(w, r, mac)
	if !ok {
		return
	}
	if b := m.Flash; b.Running() {
		writeError(w, http.StatusConflict, "machine "+mac.String()+": "+m.Busy()+"; report the failure after it ends, or cancel it")
		return
	}
	m, err := s.recov.start(r.Context(), mac, reason, time.Now())
	switch {
	case errors.Is(err, errRecovering):
		writeError(w, http.StatusConflict, "machine "+mac.String()+" "+err.Error()+" ("+string(m.Recovery.Step)+"): "+m.Recovery.Reason)
		return
	case errors.Is(err, errQuarantined):
		writeError(w, http.StatusConflict, "machine "+mac.String()+" "+err.Error()+": clear it first (POST /machines/"+mac.String()+"/clear, bty-ctl machines clear)")
		return
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, "no machine "+mac.String())
		return
	case err != nil:
		s.internalError(w, r, err)
		return
	}
	s.wake.notify()
	writeJSON(w, http.StatusAccepted, m)
}

// handleClear answers POST /machines/{mac}/clear: the machine leaves
// quarantine (and any recovery in progress stops); automation may act
// on it again. One that is in neither is a 409.
func (s *Server) handleClear(w http.ResponseWriter, r *http.Request) {
	mac, ok := pathMAC(w, r)
	if !ok {
		return
	}
	m, code, err := s.clearMachineCtx(r.Context(), mac)
	s.answer(w, r, http.StatusOK, m, code, err)
}

// clearMachineCtx clears mac's quarantine and recovery
// (fleet.Machine.Clear) and records it; shared with the UI and bulk
// actions.
func (s *Server) clearMachineCtx(ctx context.Context, mac fleet.MAC) (fleet.Machine, int, error) {
	now := time.Now()
	var was *fleet.Quarantine
	var rec *fleet.Recovery
	m, err := s.store.ModifyMachine(ctx, mac, func(x fleet.Machine, found bool) (fleet.Machine, error) {
		if !found {
			return x, store.ErrNotFound
		}
		was, rec = x.Quarantine, x.Recovery
		x, ok := x.Clear(now)
		if !ok {
			return x, store.ErrUnchanged
		}
		return x, nil
	})
	switch {
	case errors.Is(err, store.ErrNotFound):
		return m, http.StatusNotFound, errors.New("no machine " + mac.String())
	case errors.Is(err, store.ErrUnchanged):
		return m, http.StatusConflict, fmt.Errorf("machine %s %w", mac, errNothingToClear)
	case err != nil:
		return m, http.StatusInternalServerError, err
	}
	reason := "cleared by an operator"
	switch {
	case was != nil:
		reason = "quarantine cleared by an operator (was: " + was.Reason + ")"
	case rec != nil:
		reason = "recovery stopped by an operator (was: " + rec.Reason + ")"
	}
	s.recov.record(ctx, m, fleet.ActCleared, reason, "", 0, now)
	return m, http.StatusOK, nil
}

// handleActions answers GET /machines/{mac}/actions: a page (limit,
// default 50; offset) of the machine's automation history, newest
// first, with the total in X-Total-Count.
func (s *Server) handleActions(w http.ResponseWriter, r *http.Request) {
	mac, ok := pathMAC(w, r)
	if !ok {
		return
	}
	limit, offset, ok := pageParams(w, r, 50, maxActionPage)
	if !ok {
		return
	}
	if _, ok := s.apiMachine(w, r, mac); !ok {
		return
	}
	as, total, err := s.store.ListActions(r.Context(), mac, limit, offset)
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	w.Header().Set("X-Total-Count", strconv.Itoa(total))
	writeJSON(w, http.StatusOK, api.ActionPage{Actions: as, Total: total})
}

// uiClear clears the machine's quarantine or recovery (clearMachine)
// and shows the outcome on its page.
func (s *Server) uiClear(w http.ResponseWriter, r *http.Request) {
	m, ok := s.uiLoadMachine(w, r)
	if !ok {
		return
	}
	m2, code, err := s.clearMachineCtx(r.Context(), m.MAC)
	switch {
	case code == http.StatusInternalServerError:
		s.uiInternal(w, r, err)
		return
	case err != nil:
		s.setFlash(w, "Nothing was cleared: "+err.Error())
	default:
		s.log.Info("quarantine cleared from the UI", "mac", m.MAC, "state", m2.State(), "client", clientAddr(r))
		s.setFlash(w, "Cleared: the machine is "+m2.State()+"; health checks, recovery, schedules and rollouts act on it again.")
	}
	redirect(w, r, "/ui/machines/"+m.MAC.String())
}
