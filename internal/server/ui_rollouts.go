package server

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/store"
)

// Rollouts in the browser UI (docs/reference.md, "Rollouts"): the list
// with a form to start one, and a rollout's page whose machines' states
// follow GET /rollouts/{id}/events live (htmx's SSE extension swaps in
// the section from GET /ui/rollouts/{id}/machines), with pause, resume
// and abort buttons. Everything goes through createRollout and
// rolloutAct, the API's own checks.

func init() { uiPages = append(uiPages, "rollouts", "rollout") }

// rolloutForm is the start form's values and its problem.
type rolloutForm struct {
	Selector, Image                  string
	Canary, MaxParallel, MaxFailures string
	Error                            string
}

type rolloutsData struct {
	Rollouts []fleet.Rollout
	Images   []imageOption
	Form     rolloutForm
	MaxPar   int
}

// rolloutData is a rollout's page, and its live section alone.
type rolloutData struct {
	R fleet.Rollout
	// Live: the rollout is still advanced; the page follows its events.
	Live bool
}

func (s *Server) uiRollouts(w http.ResponseWriter, r *http.Request) {
	s.renderRollouts(w, r, http.StatusOK, rolloutForm{Canary: "1", MaxParallel: "1", MaxFailures: "0"})
}

func (s *Server) renderRollouts(w http.ResponseWriter, r *http.Request, code int, f rolloutForm) {
	rs, err := s.store.ListRollouts(r.Context(), 100)
	if err != nil {
		s.uiInternal(w, r, err)
		return
	}
	imgs, err := s.catalog.list(r.Context())
	if err != nil {
		s.uiInternal(w, r, err)
		return
	}
	d := rolloutsData{Rollouts: rs, Form: f, MaxPar: fleet.MaxRolloutParallel}
	for _, e := range imgs {
		if e.Error == "" {
			d.Images = append(d.Images, imageOption{Name: e.Name})
		}
	}
	s.render(w, r, code, "rollouts", uiPage{Title: "Rollouts", Nav: "rollouts", LoggedIn: true, Data: d})
}

// uiRolloutCreate starts the rollout the form asks for, as POST
// /rollouts does; a refused one is shown again with the reason.
func (s *Server) uiRolloutCreate(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		s.uiError(w, r, http.StatusBadRequest, "Bad request", "The form could not be read: "+err.Error())
		return
	}
	f := rolloutForm{Selector: strings.TrimSpace(r.PostFormValue("selector")), Image: r.PostFormValue("image"),
		Canary: strings.TrimSpace(r.PostFormValue("canary")), MaxParallel: strings.TrimSpace(r.PostFormValue("max_parallel")),
		MaxFailures: strings.TrimSpace(r.PostFormValue("max_failures"))}
	req := fleet.RolloutRequest{Selector: f.Selector, Image: f.Image}
	for _, n := range []struct {
		name, v string
		p       **int
	}{{"canary", f.Canary, &req.Canary}, {"max parallel", f.MaxParallel, &req.MaxParallel}, {"max failures", f.MaxFailures, &req.MaxFailures}} {
		if n.v == "" {
			continue
		}
		v, err := strconv.Atoi(n.v)
		if err != nil {
			f.Error = fmt.Sprintf("Nothing was started: %s %q is not a whole number.", n.name, n.v)
			s.renderRollouts(w, r, http.StatusBadRequest, f)
			return
		}
		*n.p = &v
	}
	ro, err := s.createRollout(r.Context(), req)
	if err != nil {
		code := rolloutStatus(err)
		if code == http.StatusInternalServerError {
			s.uiInternal(w, r, err)
			return
		}
		f.Error = "Nothing was started: " + err.Error()
		s.renderRollouts(w, r, code, f)
		return
	}
	s.setFlash(w, fmt.Sprintf("Rollout %d of %s started over %d machines.", ro.ID, ro.Image, len(ro.Machines)))
	redirect(w, r, "/ui/rollouts/"+strconv.FormatInt(ro.ID, 10))
}

// uiLoadRollout reads the rollout of the path, or answers an error page.
func (s *Server) uiLoadRollout(w http.ResponseWriter, r *http.Request) (fleet.Rollout, bool) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id < 1 {
		s.uiError(w, r, http.StatusBadRequest, "Bad rollout id", "A rollout id is a positive number: see the Rollouts page.")
		return fleet.Rollout{}, false
	}
	ro, err := s.store.GetRollout(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		s.uiError(w, r, http.StatusNotFound, "No such rollout", fmt.Sprintf("There is no rollout %d: see the Rollouts page.", id))
		return ro, false
	}
	if err != nil {
		s.uiInternal(w, r, err)
		return ro, false
	}
	return ro, true
}

func (s *Server) uiRollout(w http.ResponseWriter, r *http.Request) {
	ro, ok := s.uiLoadRollout(w, r)
	if !ok {
		return
	}
	s.render(w, r, http.StatusOK, "rollout", uiPage{Title: fmt.Sprintf("Rollout %d", ro.ID), Nav: "rollouts", LoggedIn: true,
		Data: rolloutData{R: ro, Live: ro.Active()}})
}

// uiRolloutMachines is the rollout page's live part alone: the section
// ("rollout-section"), or with ?final=1 the whole live block, which no
// longer follows the events once the rollout ended.
func (s *Server) uiRolloutMachines(w http.ResponseWriter, r *http.Request) {
	ro, ok := s.uiLoadRollout(w, r)
	if !ok {
		return
	}
	name := "rollout-section"
	if r.URL.Query().Get("final") == "1" {
		name = "rollout-live"
	}
	s.renderPageFragment(w, r, "rollout", name, rolloutData{R: ro, Live: ro.Active()})
}

// uiRolloutAction pauses, resumes or aborts the rollout, as the API
// does, and goes back to its page with the outcome.
func (s *Server) uiRolloutAction(w http.ResponseWriter, r *http.Request) {
	ro, ok := s.uiLoadRollout(w, r)
	if !ok {
		return
	}
	op := rolloutOp(r.PathValue("action"))
	if op != rolloutPause && op != rolloutResume && op != rolloutAbort {
		s.uiError(w, r, http.StatusNotFound, "No such action", "A rollout can be paused, resumed or aborted.")
		return
	}
	back := "/ui/rollouts/" + strconv.FormatInt(ro.ID, 10)
	out, err := s.rolloutAct(r.Context(), ro.ID, op)
	switch code := rolloutStatus(err); {
	case err == nil:
		s.setFlash(w, fmt.Sprintf("Rollout %d is %s.", out.ID, out.State))
	case code == http.StatusInternalServerError:
		s.uiInternal(w, r, err)
		return
	default:
		s.setFlash(w, "Not done: "+err.Error())
	}
	redirect(w, r, back)
}
