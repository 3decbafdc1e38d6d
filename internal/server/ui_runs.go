package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/store"
)

// Workflow runs in the browser UI: the machine page's "Workflow runs"
// section (the known-good baseline, drift, the latest runs, the live log
// of a run in progress), the reflash to known-good and the cancel of a
// run.

// machineRunRows is how many runs the machine page lists.
const machineRunRows = 20

// runLogTail is how much of a running run's log the page shows (and
// app.js keeps).
const runLogTail = 64 << 10

// runView is a run as the pages show it.
type runView struct {
	fleet.Run
	Running bool
	// Took is how long it ran (so far); "" when it never started.
	Took string
}

func newRunView(r fleet.Run, now time.Time) runView {
	v := runView{Run: r, Running: r.Running()}
	if r.StartedAt != nil {
		end := now
		if r.EndedAt != nil {
			end = *r.EndedAt
		}
		v.Took = shortDuration(end.Sub(*r.StartedAt))
	}
	return v
}

// runsSection is the machine page's "Workflow runs" section.
type runsSection struct {
	MAC fleet.MAC
	// Online: the machine's provisioning is cijoe-online.
	Online bool
	// CijoeMissing says why runs will fail (cijoe not found); "" when
	// it is there or the machine is not in cijoe-online.
	CijoeMissing string
	Baseline     *fleet.KnownGood
	Drift        []fleet.DriftItem
	// Error is a refused reflash to known-good.
	Error string
	Runs  []runView
	Total int
	// Live is the latest run when queued or running; LogTail the end of
	// its log and LogSize the log's whole size (where polling resumes).
	Live    *runView
	LogTail string
	LogSize int64
	// Timeout, User and Port are what the next run uses.
	Timeout, User string
	Port          int
}

// runsSectionOf reads m's runs section.
func (s *Server) runsSectionOf(ctx context.Context, m fleet.Machine) (runsSection, error) {
	now := time.Now()
	d := runsSection{MAC: m.MAC, Online: m.ProvisioningMode == fleet.ModeCijoeOnline, Drift: s.drift(ctx, m),
		Timeout: m.WorkflowTimeout().String(), User: m.SSHUser(m.Flash), Port: m.SSHPort()}
	if !m.LastKnownGood.IsZero() && m.LastKnownGood.RunID != 0 {
		d.Baseline = m.LastKnownGood
	}
	if d.Online {
		if _, err := s.cijoePath(); err != nil {
			d.CijoeMissing = err.Error()
		}
	}
	runs, total, err := s.store.ListRuns(ctx, m.MAC, machineRunRows, 0)
	if err != nil {
		return d, err
	}
	d.Total = total
	for _, r := range runs {
		d.Runs = append(d.Runs, newRunView(r, now))
	}
	if len(d.Runs) > 0 && d.Runs[0].Running {
		d.Live = &d.Runs[0]
		d.LogTail, d.LogSize = s.runLogTail(d.Live.ID)
	}
	return d, nil
}

// runLogTail is the last runLogTail bytes of run id's log (from a line
// start when cut) and the log's size; "" and 0 when there is none yet.
func (s *Server) runLogTail(id int64) (string, int64) {
	f, err := os.Open(filepath.Join(s.runs.runDir(id), "log"))
	if err != nil {
		return "", 0
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", 0
	}
	size := fi.Size()
	from := max(size-runLogTail, 0)
	b := make([]byte, size-from)
	n, _ := f.ReadAt(b, from)
	b = b[:n]
	if from > 0 {
		// Drop the line cut in half.
		for i, c := range b {
			if c == '\n' {
				b = b[i+1:]
				break
			}
		}
	}
	return string(b), from + int64(n)
}

// uiMachineRuns is the machine page's runs section alone (the
// template's "runs-section"), for the page to swap in when the machine
// changes or its live run ends (app.js).
func (s *Server) uiMachineRuns(w http.ResponseWriter, r *http.Request) {
	m, ok := s.fragmentMachine(w, r)
	if !ok {
		return
	}
	d, err := s.runsSectionOf(r.Context(), m)
	if err != nil {
		s.uiInternal(w, r, err)
		return
	}
	s.renderPageFragment(w, r, "machine", "runs-section", d)
}

// uiReflashKnownGood reflashes the machine to its known-good baseline
// (startReflash with KnownGood); a refusal (no baseline, its image gone,
// a flash in progress) is shown in the machine page's runs section.
func (s *Server) uiReflashKnownGood(w http.ResponseWriter, r *http.Request) {
	m, ok := s.uiLoadMachine(w, r)
	if !ok {
		return
	}
	res, code, err := s.startReflash(r.Context(), m.MAC, fleet.ReflashRequest{KnownGood: true})
	switch {
	case err == nil:
	case code == http.StatusNotFound:
		s.uiError(w, r, code, "No such machine", err.Error()+": it may have been deleted meanwhile.")
		return
	case code == http.StatusInternalServerError:
		s.uiInternal(w, r, err)
		return
	default:
		if cur, gerr := s.store.GetMachine(r.Context(), m.MAC); gerr == nil {
			m = cur
		}
		s.renderMachineWith(w, r, code, m, m, powerFormOf(m.Power), nil, "Nothing was started: "+err.Error())
		return
	}
	msg := fmt.Sprintf("Reflash to the known-good baseline requested: flash %d of %s, then its workflow runs again.", res.Flash.ID, res.Flash.Image)
	if res.Power == "none" {
		msg += " This machine has no power driver: reboot it by hand now; its next PXE boot flashes the image."
	} else {
		msg += " Its BMC is being asked for a one-time PXE boot and a power cycle."
	}
	s.log.Info("reflash to known-good from the UI", "mac", m.MAC, "flash", res.Flash.ID, "client", clientAddr(r))
	s.setFlash(w, msg)
	redirect(w, r, "/ui/machines/"+m.MAC.String())
}

// uiRunCancel cancels a queued or running run and shows the outcome on
// its machine's page.
func (s *Server) uiRunCancel(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id < 1 {
		s.uiError(w, r, http.StatusBadRequest, "Bad run id", "A run id is a positive number: pick the run on its machine's page.")
		return
	}
	run, err := s.store.GetRun(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		s.uiError(w, r, http.StatusNotFound, "No such run", fmt.Sprintf("There is no workflow run %d (its machine may have been deleted).", id))
		return
	}
	if err != nil {
		s.uiInternal(w, r, err)
		return
	}
	_, err = s.cancelRun(run)
	switch {
	case errors.Is(err, errRunEnded):
		s.setFlash(w, fmt.Sprintf("Run %d was not queued or running any more (%s): nothing was cancelled.", run.ID, run.Result))
	case err != nil:
		s.uiInternal(w, r, err)
		return
	default:
		s.log.Info("workflow run cancel asked", "mac", run.MAC, "run", run.ID, "client", clientAddr(r))
		msg := fmt.Sprintf("Cancelled run %d.", run.ID)
		if run.Result == fleet.RunRunning {
			msg = fmt.Sprintf("Cancelling run %d: it ends cancelled once cijoe has stopped.", run.ID)
		}
		s.setFlash(w, msg)
	}
	redirect(w, r, "/ui/machines/"+run.MAC.String()+"#runs")
}
