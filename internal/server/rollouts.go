package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/btyproject/bty/internal/api"
	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/labels"
	"github.com/btyproject/bty/internal/store"
)

// The rollout routes (docs/reference.md, "Rollouts"); the runner that
// advances them is rolloutrun.go, their UI pages ui_rollouts.go.

// rolloutRoutes registers the rollout routes, API and UI.
func (s *Server) rolloutRoutes() {
	m := s.mux
	m.HandleFunc("POST /rollouts", s.requireAuth(s.handleRolloutCreate))
	m.HandleFunc("GET /rollouts", s.requireAuth(s.handleRollouts))
	m.HandleFunc("GET /rollouts/{id}", s.requireAuth(s.handleRolloutGet))
	m.HandleFunc("POST /rollouts/{id}/pause", s.requireAuth(s.handleRolloutAction(rolloutPause)))
	m.HandleFunc("POST /rollouts/{id}/resume", s.requireAuth(s.handleRolloutAction(rolloutResume)))
	m.HandleFunc("POST /rollouts/{id}/abort", s.requireAuth(s.handleRolloutAction(rolloutAbort)))
	m.HandleFunc("GET /rollouts/{id}/events", s.requireAuth(s.handleRolloutEvents))
	m.HandleFunc("GET /ui/rollouts", s.uiAuth(s.uiRollouts))
	m.HandleFunc("POST /ui/rollouts", s.uiAuth(s.uiRolloutCreate))
	m.HandleFunc("GET /ui/rollouts/{id}", s.uiAuth(s.uiRollout))
	m.HandleFunc("GET /ui/rollouts/{id}/machines", s.uiAuth(s.uiRolloutMachines))
	m.HandleFunc("POST /ui/rollouts/{id}/{action}", s.uiAuth(s.uiRolloutAction))
}

// maxRolloutsList bounds GET /rollouts?limit=.
const maxRolloutsList = 1000

// rolloutError is a refused rollout request with its HTTP status.
type rolloutError struct {
	code int
	err  error
}

func (e *rolloutError) Error() string { return e.err.Error() }
func (e *rolloutError) Unwrap() error { return e.err }

func refuse(code int, format string, a ...any) error {
	return &rolloutError{code: code, err: fmt.Errorf(format, a...)}
}

// rolloutStatus is the HTTP status of err from createRollout or
// rolloutAct.
func rolloutStatus(err error) int {
	var re *rolloutError
	switch {
	case errors.As(err, &re):
		return re.code
	case fleet.IsValidation(err):
		return http.StatusBadRequest
	case errors.Is(err, store.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, fleet.ErrRolloutNotRunning), errors.Is(err, fleet.ErrRolloutNotPaused), errors.Is(err, fleet.ErrRolloutEnded):
		return http.StatusConflict
	}
	return http.StatusInternalServerError
}

// createRollout checks req, resolves its selector once and stores the
// rollout, then advances it (its canaries start at once). Refusals are
// *rolloutError or validation errors (rolloutStatus).
func (s *Server) createRollout(ctx context.Context, req fleet.RolloutRequest) (fleet.Rollout, error) {
	req.Selector, req.Image = strings.TrimSpace(req.Selector), strings.TrimSpace(req.Image)
	if err := req.Validate(); err != nil {
		return fleet.Rollout{}, err
	}
	reqs, err := labels.Parse(req.Selector)
	if err != nil {
		return fleet.Rollout{}, &fleet.ValidationError{Field: "selector", Msg: "selector: " + err.Error()}
	}
	if errs := machineUpdateErrors(fleet.MachineUpdate{Image: &req.Image}); len(errs) > 0 {
		return fleet.Rollout{}, errs[0]
	}
	if e, ok := s.catalog.get(ctx, req.Image); !ok || e.Error != "" {
		return fleet.Rollout{}, &fleet.ValidationError{Field: "image",
			Msg: strconv.Quote(req.Image) + " is not in the catalog: upload it (bty-ctl images upload) or name one from GET /images"}
	}
	rr := s.rollouts
	rr.mu.Lock()
	defer rr.mu.Unlock()
	page, err := s.store.QueryMachines(ctx, store.MachineQuery{Selector: reqs, Limit: fleet.MaxRolloutMachines + 1})
	if err != nil {
		return fleet.Rollout{}, err
	}
	switch {
	case len(page.Machines) == 0:
		return fleet.Rollout{}, refuse(http.StatusBadRequest, "selector %q picks no machine: check the machines' labels (bty-ctl machines list --selector %q)", req.Selector, req.Selector)
	case len(page.Machines) > fleet.MaxRolloutMachines:
		return fleet.Rollout{}, refuse(http.StatusBadRequest, "selector %q picks more than %d machines: narrow it", req.Selector, fleet.MaxRolloutMachines)
	}
	active, err := s.store.ActiveRollouts(ctx)
	if err != nil {
		return fleet.Rollout{}, err
	}
	for _, m := range page.Machines {
		for _, a := range active {
			if a.Holds(m.MAC) {
				return fleet.Rollout{}, refuse(http.StatusConflict, "machine %s is in rollout %d (%s, image %s), which has not ended: wait for it, or abort it (bty-ctl rollout abort %d)",
					m.MAC, a.ID, a.State, a.Image, a.ID)
			}
		}
	}
	now := time.Now()
	r := fleet.NewRollout(req, page.Machines, now)
	if r.Count(fleet.RMSkipped) == len(r.Machines) {
		return fleet.Rollout{}, refuse(http.StatusConflict, "every machine selector %q picks is quarantined: clear the quarantine first (see the machines' pages)", req.Selector)
	}
	r, err = rr.save(ctx, r)
	if err != nil {
		return fleet.Rollout{}, err
	}
	s.log.Info("rollout created", "rollout", r.ID, "selector", r.Selector, "image", r.Image, "machines", len(r.Machines),
		"canary", r.Canary, "max_parallel", r.MaxParallel, "max_failures", r.MaxFailures)
	return rr.advance(ctx, r, now)
}

// rolloutOp is an operator's action on a rollout.
type rolloutOp string

const (
	rolloutPause  rolloutOp = "pause"
	rolloutResume rolloutOp = "resume"
	rolloutAbort  rolloutOp = "abort"
)

// rolloutAct applies op to rollout id, saves it and advances it (a
// resumed rollout starts its next machines at once).
func (s *Server) rolloutAct(ctx context.Context, id int64, op rolloutOp) (fleet.Rollout, error) {
	rr := s.rollouts
	rr.mu.Lock()
	defer rr.mu.Unlock()
	r, err := s.store.GetRollout(ctx, id)
	if err != nil {
		return r, err
	}
	now := time.Now()
	switch op {
	case rolloutPause:
		r, err = r.Pause()
	case rolloutResume:
		r, err = r.Resume()
	case rolloutAbort:
		r, err = r.Abort("", now)
	default:
		err = refuse(http.StatusNotFound, "no rollout action %q: pause, resume or abort", op)
	}
	if err != nil {
		return r, err
	}
	s.log.Info("rollout "+string(op), "rollout", id)
	if r, err = rr.save(ctx, r); err != nil {
		return r, err
	}
	return rr.advance(ctx, r, now)
}

func (s *Server) handleRolloutCreate(w http.ResponseWriter, r *http.Request) {
	var req api.RolloutRequest
	if !decodeJSON(w, r, &req, 64<<10) {
		return
	}
	ro, err := s.createRollout(r.Context(), req)
	if err != nil {
		s.rolloutFailed(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, ro)
}

// rolloutFailed answers err with its status (a 500 only with an id).
func (s *Server) rolloutFailed(w http.ResponseWriter, r *http.Request, err error) {
	code := rolloutStatus(err)
	if code == http.StatusInternalServerError {
		s.internalError(w, r, err)
		return
	}
	writeError(w, code, err.Error())
}

func (s *Server) handleRollouts(w http.ResponseWriter, r *http.Request) {
	limit := 50
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxRolloutsList {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("limit=%q: want a whole number from 1 to %d", v, maxRolloutsList))
			return
		}
		limit = n
	}
	rs, err := s.store.ListRollouts(r.Context(), limit)
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, rs)
}

// rolloutID is the {id} of the path, or a 400 answered.
func rolloutID(w http.ResponseWriter, r *http.Request) (int64, bool) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id < 1 {
		writeError(w, http.StatusBadRequest, "rollout id: want the positive number of a rollout (GET /rollouts, bty-ctl rollout list)")
		return 0, false
	}
	return id, true
}

func (s *Server) rolloutFromPath(w http.ResponseWriter, r *http.Request) (fleet.Rollout, bool) {
	id, ok := rolloutID(w, r)
	if !ok {
		return fleet.Rollout{}, false
	}
	ro, err := s.store.GetRollout(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no rollout %d", id))
		return ro, false
	}
	if err != nil {
		s.internalError(w, r, err)
		return ro, false
	}
	return ro, true
}

func (s *Server) handleRolloutGet(w http.ResponseWriter, r *http.Request) {
	if ro, ok := s.rolloutFromPath(w, r); ok {
		writeJSON(w, http.StatusOK, ro)
	}
}

func (s *Server) handleRolloutAction(op rolloutOp) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, ok := rolloutID(w, r)
		if !ok {
			return
		}
		ro, err := s.rolloutAct(r.Context(), id, op)
		if errors.Is(err, store.ErrNotFound) {
			writeError(w, http.StatusNotFound, fmt.Sprintf("no rollout %d", id))
			return
		}
		if err != nil {
			s.rolloutFailed(w, r, err)
			return
		}
		s.log.Info("rollout action", "rollout", id, "action", op, "client", clientAddr(r))
		writeJSON(w, http.StatusOK, ro)
	}
}

// handleRolloutEvents streams a rollout's progress: a "rollout" event
// with the rollout on connect and on every change, comment heartbeats,
// and an "end" event with the final rollout once it ended (then the
// stream closes; one that ended before is sent as "end" at once). Like
// GET /events/machines, every write must go through within the event
// write timeout, and the streams open at once are bounded
// (maxRolloutStreams: 503 beyond).
func (s *Server) handleRolloutEvents(w http.ResponseWriter, r *http.Request) {
	id, ok := rolloutID(w, r)
	if !ok {
		return
	}
	fl, ok := w.(http.Flusher)
	if !ok {
		writeError(w, http.StatusInternalServerError, "streaming is not supported by this connection")
		return
	}
	// Subscribed first, then read: no change falls between the two.
	wake, done, open, ok := s.rollouts.subscribe(id)
	if !ok {
		writeError(w, http.StatusServiceUnavailable, fmt.Sprintf("%d rollout event streams are open, the most bty-web keeps: close one, or poll GET /rollouts/%d", open, id))
		return
	}
	defer done()
	if _, ok := s.rolloutFromPath(w, r); !ok {
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	write := func(text string) error {
		_ = rc.SetWriteDeadline(time.Now().Add(s.eventWriteTimeout))
		if _, err := io.WriteString(w, text); err != nil {
			return err
		}
		fl.Flush()
		return nil
	}
	tick := time.NewTicker(heartbeatEvery)
	defer tick.Stop()
	last := ""
	for {
		ro, err := s.store.GetRollout(r.Context(), id)
		if err != nil {
			return
		}
		b, err := json.Marshal(ro)
		if err != nil {
			return
		}
		if string(b) != last {
			last = string(b)
			event := "rollout"
			if !ro.Active() {
				event = "end"
			}
			if write("event: "+event+"\ndata: "+last+"\n\n") != nil || event == "end" {
				return
			}
		}
		select {
		case <-r.Context().Done():
			return
		case <-wake:
		case <-tick.C:
			if write(": heartbeat\n\n") != nil {
				return
			}
		}
	}
}
