package server

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/store"
)

// Schedules in the browser UI (docs/reference.md, "Schedules"): the
// list, each with its next fire time in its own zone and its latest
// occurrence; a form to add one; pause, resume and delete. Every change
// goes through the checks of POST and PUT /schedules.

func (s *Server) uiScheduleRoutes() {
	m := s.mux
	m.HandleFunc("GET /ui/schedules", s.uiAuth(s.uiSchedules))
	m.HandleFunc("POST /ui/schedules", s.uiAuth(s.uiScheduleAdd))
	m.HandleFunc("POST /ui/schedules/{id}/pause", s.uiAuth(s.uiSchedulePause(true)))
	m.HandleFunc("POST /ui/schedules/{id}/resume", s.uiAuth(s.uiSchedulePause(false)))
	m.HandleFunc("POST /ui/schedules/{id}/delete", s.uiAuth(s.uiScheduleDelete))
}

// scheduleForm is the add form's values and its problems.
type scheduleForm struct {
	Name, Selector, Cron, TZ, Action, MaxParallel, Window string
	// Errors are field: message; Error the form's headline.
	Errors map[string]string
	Error  string
}

// scheduleView is one schedule as the page shows it.
type scheduleView struct {
	S fleet.Schedule
	// Next is the next fire time in the schedule's zone ("" none).
	Next string
	// OccurrenceAt is the latest occurrence's time in the zone; Counts
	// its machines by state.
	OccurrenceAt string
	Counts       map[string]int
}

type schedulesData struct {
	Schedules []scheduleView
	Form      scheduleForm
	Actions   []fleet.ScheduleAction
	Max       int
}

// inZone formats t in the zone tz ("2006-01-02 15:04 CEST").
func inZone(t *time.Time, tz string) string {
	if t == nil || t.IsZero() {
		return ""
	}
	loc, err := time.LoadLocation(tz)
	if err != nil {
		loc = time.UTC
	}
	return t.In(loc).Format("2006-01-02 15:04 MST")
}

func (s *Server) uiSchedules(w http.ResponseWriter, r *http.Request) {
	s.renderSchedules(w, r, http.StatusOK, scheduleForm{TZ: "UTC", Action: string(fleet.ActionReflash),
		MaxParallel: strconv.Itoa(fleet.DefaultScheduleParallel), Window: "2h"})
}

func (s *Server) renderSchedules(w http.ResponseWriter, r *http.Request, code int, f scheduleForm) {
	list, err := s.store.ListSchedules(r.Context())
	if err != nil {
		s.uiInternal(w, r, err)
		return
	}
	now := time.Now()
	d := schedulesData{Form: f, Actions: fleet.ScheduleActions, Max: fleet.MaxScheduleParallel}
	for _, sch := range list {
		sch = sch.WithNext(now)
		v := scheduleView{S: sch, Next: inZone(sch.NextFireAt, sch.TZ), Counts: sch.Occurrence.Counts()}
		if o := sch.Occurrence; o != nil {
			v.OccurrenceAt = inZone(&o.At, sch.TZ)
		}
		d.Schedules = append(d.Schedules, v)
	}
	s.render(w, r, code, "schedules", uiPage{Title: "Schedules", Nav: "schedules", LoggedIn: true, Data: d})
}

// uiScheduleAdd creates the schedule the form describes, or shows the
// form again with its problems (nothing stored).
func (s *Server) uiScheduleAdd(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxScheduleBody)
	if err := r.ParseForm(); err != nil {
		s.uiError(w, r, http.StatusBadRequest, "Bad request", "The form could not be read: "+err.Error())
		return
	}
	v := func(k string) string { return strings.TrimSpace(r.PostFormValue(k)) }
	f := scheduleForm{Name: v("name"), Selector: v("selector"), Cron: v("cron"), TZ: v("tz"), Action: v("action"),
		MaxParallel: v("max_parallel"), Window: v("window"), Errors: map[string]string{}}
	action := fleet.ScheduleAction(f.Action)
	u := fleet.ScheduleUpdate{Name: &f.Name, Selector: &f.Selector, Cron: &f.Cron, TZ: &f.TZ, Action: &action, Window: &f.Window}
	if f.MaxParallel != "" {
		n, err := strconv.Atoi(f.MaxParallel)
		if err != nil {
			n = -1 // refused below, naming the field
		}
		u.MaxParallel = &n
	}
	if f.Window == "" {
		u.Window = nil
	}
	if _, errs := applySchedule(fleet.Schedule{}, u, time.Now()); len(errs) > 0 {
		for _, e := range errs {
			var ve *fleet.ValidationError
			if errors.As(e, &ve) {
				f.Errors[ve.Field] = ve.Msg
			}
		}
		f.Error = "Nothing was stored: correct the marked fields."
		s.renderSchedules(w, r, http.StatusBadRequest, f)
		return
	}
	sch, code, err := s.createSchedule(r, u)
	switch {
	case code == http.StatusInternalServerError:
		s.uiInternal(w, r, err)
		return
	case err != nil:
		f.Error = "Nothing was stored: " + err.Error()
		s.renderSchedules(w, r, code, f)
		return
	}
	next := "never (no time matches within five years)"
	if sch.NextFireAt != nil {
		next = inZone(sch.NextFireAt, sch.TZ)
	}
	s.setFlash(w, fmt.Sprintf("Added schedule %s (id %d): next fires %s.", sch.Name, sch.ID, next))
	redirect(w, r, "/ui/schedules")
}

// uiSchedulePause pauses or resumes a schedule, as PUT /schedules/{id}
// with paused does.
func (s *Server) uiSchedulePause(paused bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
		if err != nil || id < 1 {
			s.uiError(w, r, http.StatusNotFound, "No such schedule", "There is no schedule "+strconv.Quote(r.PathValue("id"))+".")
			return
		}
		sch, code, err := s.updateSchedule(r, id, fleet.ScheduleUpdate{Paused: &paused})
		switch {
		case code == http.StatusNotFound:
			s.uiError(w, r, http.StatusNotFound, "No such schedule", fmt.Sprintf("There is no schedule %d (deleted meanwhile?), so nothing changed.", id))
			return
		case err != nil && code == http.StatusInternalServerError:
			s.uiInternal(w, r, err)
			return
		case err != nil:
			s.uiError(w, r, code, "Not changed", err.Error())
			return
		}
		msg := fmt.Sprintf("Paused schedule %s: it fires nothing, and its occurrences are skipped, until it is resumed.", sch.Name)
		if !paused {
			msg = fmt.Sprintf("Resumed schedule %s: next fires %s.", sch.Name, inZone(sch.NextFireAt, sch.TZ))
		}
		s.setFlash(w, msg)
		redirect(w, r, "/ui/schedules")
	}
}

func (s *Server) uiScheduleDelete(w http.ResponseWriter, r *http.Request) {
	id, perr := strconv.ParseInt(r.PathValue("id"), 10, 64)
	var err error
	if perr != nil || id < 1 {
		err = store.ErrNotFound
	} else {
		err = s.store.DeleteSchedule(r.Context(), id)
	}
	switch {
	case errors.Is(err, store.ErrNotFound):
		s.uiError(w, r, http.StatusNotFound, "No such schedule", "There is no schedule "+strconv.Quote(r.PathValue("id"))+" (deleted meanwhile?), so nothing was deleted.")
	case err != nil:
		s.uiInternal(w, r, err)
	default:
		s.log.Info("schedule deleted", "schedule", id, "client", clientAddr(r))
		s.setFlash(w, fmt.Sprintf("Deleted schedule %d. Reflashes it started go on.", id))
		redirect(w, r, "/ui/schedules")
	}
}
