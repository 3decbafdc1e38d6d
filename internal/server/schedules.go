package server

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/labels"
	"github.com/btyproject/bty/internal/store"
)

// The schedules API (docs/reference.md, "Schedules"); schedulerun.go
// fires them, ui_schedules.go is their page.

// maxScheduleBody bounds the body of POST and PUT /schedules.
const maxScheduleBody = 16 << 10

func (s *Server) scheduleRoutes() {
	m := s.mux
	m.HandleFunc("GET /schedules", s.requireAuth(s.handleSchedules))
	m.HandleFunc("POST /schedules", s.requireAuth(s.handleScheduleCreate))
	m.HandleFunc("GET /schedules/{id}", s.requireAuth(s.handleScheduleGet))
	m.HandleFunc("PUT /schedules/{id}", s.requireAuth(s.handleSchedulePut))
	m.HandleFunc("DELETE /schedules/{id}", s.requireAuth(s.handleScheduleDelete))
	s.uiScheduleRoutes()
}

// applySchedule is cur with u applied and checked, the selector with
// the label parser: the errors are *fleet.ValidationError, one per bad
// field.
func applySchedule(cur fleet.Schedule, u fleet.ScheduleUpdate, now time.Time) (fleet.Schedule, []error) {
	next, errs := cur.Apply(u, now)
	if next.Selector != "" {
		if _, err := labels.Parse(next.Selector); err != nil {
			errs = append(errs, &fleet.ValidationError{Field: "selector", Msg: err.Error()})
		}
	}
	return next, errs
}

// joinErrors is the errors' messages in one line.
func joinErrors(errs []error) string {
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "; ")
}

// scheduleID reads {id}; on failure it answers 404 and returns false.
func scheduleID(w http.ResponseWriter, r *http.Request) (int64, bool) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id < 1 {
		writeError(w, http.StatusNotFound, "no schedule "+strconv.Quote(r.PathValue("id"))+": a schedule's id is a positive number (GET /schedules lists them)")
		return 0, false
	}
	return id, true
}

func (s *Server) handleSchedules(w http.ResponseWriter, r *http.Request) {
	list, err := s.store.ListSchedules(r.Context())
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	now := time.Now()
	for i := range list {
		list[i] = list[i].WithNext(now)
	}
	writeJSON(w, http.StatusOK, list)
}

func (s *Server) handleScheduleCreate(w http.ResponseWriter, r *http.Request) {
	var u fleet.ScheduleUpdate
	if !decodeJSON(w, r, &u, maxScheduleBody) {
		return
	}
	sch, code, err := s.createSchedule(r, u)
	s.answer(w, r, http.StatusCreated, sch, code, err)
}

// createSchedule checks and stores a new schedule: the schedule, or an
// error with its status.
func (s *Server) createSchedule(r *http.Request, u fleet.ScheduleUpdate) (fleet.Schedule, int, error) {
	now := time.Now()
	sch, errs := applySchedule(fleet.Schedule{}, u, now)
	if len(errs) > 0 {
		return sch, http.StatusBadRequest, errors.New(joinErrors(errs))
	}
	sch, err := s.store.CreateSchedule(r.Context(), sch, fleet.MaxSchedules)
	switch {
	case errors.Is(err, store.ErrLimit):
		return sch, http.StatusConflict, err
	case err != nil:
		return sch, http.StatusInternalServerError, err
	}
	sch = sch.WithNext(now)
	s.log.Info("schedule created", "schedule", sch.ID, "name", sch.Name, "selector", sch.Selector, "cron", sch.Cron, "tz", sch.TZ,
		"action", sch.Action, "next", sch.NextFireAt, "client", clientAddr(r))
	return sch, 0, nil
}

func (s *Server) handleScheduleGet(w http.ResponseWriter, r *http.Request) {
	id, ok := scheduleID(w, r)
	if !ok {
		return
	}
	sch, err := s.store.GetSchedule(r.Context(), id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, err.Error())
	case err != nil:
		s.internalError(w, r, err)
	default:
		writeJSON(w, http.StatusOK, sch.WithNext(time.Now()))
	}
}

func (s *Server) handleSchedulePut(w http.ResponseWriter, r *http.Request) {
	id, ok := scheduleID(w, r)
	if !ok {
		return
	}
	var u fleet.ScheduleUpdate
	if !decodeJSON(w, r, &u, maxScheduleBody) {
		return
	}
	sch, code, err := s.updateSchedule(r, id, u)
	s.answer(w, r, http.StatusOK, sch, code, err)
}

// updateSchedule applies u to schedule id: the schedule, or an error
// with its status.
func (s *Server) updateSchedule(r *http.Request, id int64, u fleet.ScheduleUpdate) (fleet.Schedule, int, error) {
	now := time.Now()
	sch, err := s.store.ModifySchedule(r.Context(), id, func(cur fleet.Schedule) (fleet.Schedule, error) {
		next, errs := applySchedule(cur, u, now)
		if len(errs) > 0 {
			return cur, &fleet.ValidationError{Field: "schedule", Msg: joinErrors(errs)}
		}
		return next.WithNext(now), nil
	})
	switch {
	case errors.Is(err, store.ErrNotFound):
		return sch, http.StatusNotFound, err
	case fleet.IsValidation(err):
		return sch, http.StatusBadRequest, errors.New(err.(*fleet.ValidationError).Msg)
	case err != nil:
		return sch, http.StatusInternalServerError, err
	}
	s.log.Info("schedule changed", "schedule", sch.ID, "name", sch.Name, "paused", sch.Paused, "cron", sch.Cron, "tz", sch.TZ,
		"next", sch.NextFireAt, "client", clientAddr(r))
	s.wake.notify()
	return sch, 0, nil
}

func (s *Server) handleScheduleDelete(w http.ResponseWriter, r *http.Request) {
	id, ok := scheduleID(w, r)
	if !ok {
		return
	}
	err := s.store.DeleteSchedule(r.Context(), id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, err.Error())
	case err != nil:
		s.internalError(w, r, err)
	default:
		s.log.Info("schedule deleted", "schedule", id, "client", clientAddr(r))
		w.WriteHeader(http.StatusNoContent)
	}
}
