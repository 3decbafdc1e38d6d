package server

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/btyproject/bty/internal/api"
	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/store"
)

// The routes of workflow runs (docs/reference.md, "cijoe-online").

// maxRunPage bounds GET /machines/{mac}/runs's page.
const maxRunPage = 1000

// maxOfflineLog caps an offline cijoe log the live env uploads.
const maxOfflineLog = 4 << 20

// handleRuns answers GET /machines/{mac}/runs: a page (limit, default
// 50; offset) of the machine's runs, newest first.
func (s *Server) handleRuns(w http.ResponseWriter, r *http.Request) {
	mac, ok := pathMAC(w, r)
	if !ok {
		return
	}
	limit, offset, ok := pageParams(w, r, 50, maxRunPage)
	if !ok {
		return
	}
	if _, ok := s.apiMachine(w, r, mac); !ok {
		return
	}
	runs, total, err := s.store.ListRuns(r.Context(), mac, limit, offset)
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	w.Header().Set("X-Total-Count", strconv.Itoa(total))
	writeJSON(w, http.StatusOK, api.RunPage{Runs: runs, Total: total})
}

// runFromPath reads run {id}; on failure it has answered.
func (s *Server) runFromPath(w http.ResponseWriter, r *http.Request) (fleet.Run, bool) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id < 1 {
		writeError(w, http.StatusBadRequest, "run id: want the positive number of a run (GET /machines/{mac}/runs, bty-ctl machines runs MAC)")
		return fleet.Run{}, false
	}
	run, err := s.store.GetRun(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no workflow run %d", id))
		return run, false
	}
	if err != nil {
		s.internalError(w, r, err)
		return run, false
	}
	return run, true
}

func (s *Server) handleRunGet(w http.ResponseWriter, r *http.Request) {
	if run, ok := s.runFromPath(w, r); ok {
		writeJSON(w, http.StatusOK, run)
	}
}

// handleRunLog answers GET /runs/{id}/log: the log from ?offset= (0 by
// default), with its whole size so far in X-Log-Size and the run's
// result in X-Run-Result, so a client can follow it.
func (s *Server) handleRunLog(w http.ResponseWriter, r *http.Request) {
	run, ok := s.runFromPath(w, r)
	if !ok {
		return
	}
	var offset int64
	if v := r.URL.Query().Get("offset"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			writeError(w, http.StatusBadRequest, "offset: want a number of bytes from 0")
			return
		}
		offset = n
	}
	f, err := os.Open(filepath.Join(s.runs.runDir(run.ID), "log"))
	if errors.Is(err, os.ErrNotExist) {
		if _, perr := os.Stat(filepath.Join(s.runs.runDir(run.ID), prunedMark)); perr == nil {
			writeError(w, http.StatusGone, fmt.Sprintf("run %d's log is no longer kept (bty-web keeps the logs of each machine's %d latest runs)", run.ID, keepRunDirs))
			return
		}
		// No line written yet.
		w.Header().Set("X-Log-Size", "0")
		w.Header().Set("X-Run-Result", string(run.Result))
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		return
	}
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	size := fi.Size()
	offset = min(offset, size)
	w.Header().Set("X-Log-Size", strconv.FormatInt(size, 10))
	w.Header().Set("X-Run-Result", string(run.Result))
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		s.internalError(w, r, err)
		return
	}
	_, _ = io.Copy(w, io.LimitReader(f, size-offset))
}

// handleRunReport answers GET /runs/{id}/report: cijoe's report.html.
func (s *Server) handleRunReport(w http.ResponseWriter, r *http.Request) {
	run, ok := s.runFromPath(w, r)
	if !ok {
		return
	}
	s.serveRunFile(w, r, run, "report.html")
}

// handleRunOutput answers GET /runs/{id}/output/{path...}: a file of
// cijoe's output directory (what its report links to).
func (s *Server) handleRunOutput(w http.ResponseWriter, r *http.Request) {
	run, ok := s.runFromPath(w, r)
	if !ok {
		return
	}
	s.serveRunFile(w, r, run, r.PathValue("path"))
}

// serveRunFile serves name from run's cijoe-output directory, confined
// to it (os.Root: no .., no symlink out). Workflow output is not
// bty-web's: it is served sandboxed (no script, no same-origin access
// to the session), never as bty-web's own page.
func (s *Server) serveRunFile(w http.ResponseWriter, r *http.Request, run fleet.Run, name string) {
	root, err := os.OpenRoot(filepath.Join(s.runs.runDir(run.ID), "cijoe-output"))
	if err != nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("run %d has no cijoe output (cijoe made none, it did not start, or the run's directory was pruned)", run.ID))
		return
	}
	defer root.Close()
	f, err := root.Open(strings.TrimPrefix(name, "/"))
	if err != nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("run %d's cijoe output has no %s", run.ID, name))
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || fi.IsDir() {
		writeError(w, http.StatusNotFound, fmt.Sprintf("run %d's cijoe output has no file %s", run.ID, name))
		return
	}
	w.Header().Set("Content-Security-Policy", "sandbox; default-src 'self' 'unsafe-inline' data:")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	http.ServeContent(w, r, fi.Name(), fi.ModTime(), f)
}

// handleRunCancel answers POST /runs/{id}/cancel.
func (s *Server) handleRunCancel(w http.ResponseWriter, r *http.Request) {
	run, ok := s.runFromPath(w, r)
	if !ok {
		return
	}
	out, err := s.cancelRun(run)
	if errors.Is(err, errRunEnded) {
		writeError(w, http.StatusConflict, err.Error())
		return
	}
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	s.log.Info("workflow run cancel asked", "mac", run.MAC, "run", run.ID, "client", clientAddr(r))
	writeJSON(w, http.StatusOK, out)
}

var errRunEnded = errors.New("the run already ended")

// cancelRun cancels a queued or running run: a running one ends when
// its cijoe has stopped (the answer may still say running).
func (s *Server) cancelRun(run fleet.Run) (fleet.Run, error) {
	if !run.Running() {
		return run, fmt.Errorf("run %d is %s: %w", run.ID, run.Result, errRunEnded)
	}
	if s.runs.cancel(run.ID) {
		return run, nil
	}
	// Queued (now off the queue), or left by a previous bty-web.
	s.runs.appendLog(run.ID, "[bty-web] run cancelled by an operator before it started\n")
	return s.runs.save(run.End(fleet.RunCancelled, "cancelled by an operator before it started", nil, time.Now()))
}

// handlePXERunUpload records the log of an offline cijoe run (bty-tui
// driven by a server, provisioning cijoe) as one of the machine's runs.
// The route is open, like every PXE route: it is taken only in the
// machine's open flash cycle (its token, from its address), bounded
// in size and rate. Query: workflow (its name), exit (cijoe's status).
func (s *Server) handlePXERunUpload(w http.ResponseWriter, r *http.Request) {
	mac, ok := pathMAC(w, r)
	if !ok {
		return
	}
	call := cycleCall(r)
	mac, err := store.Resolve(r.Context(), s.store, mac) // another NIC's MAC: its machine's
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	m, err := s.store.GetMachine(r.Context(), mac)
	if errors.Is(err, store.ErrNotFound) {
		s.refuseCycleCall(w, r, mac, "run upload", err)
		return
	}
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	if err := m.CheckCycle(call.Token, call.IP, call.At); err != nil {
		s.refuseCycleCall(w, r, mac, "run upload", err)
		return
	}
	if ok, _ := s.progressLimit.allow("runlog "+mac.String()+" "+call.IP, call.At); !ok {
		writeError(w, http.StatusTooManyRequests, "too many run uploads for this machine: one per flash is expected")
		return
	}
	q := r.URL.Query()
	wf := q.Get("workflow")
	if len(wf) > fleet.MaxNameBytes || strings.ContainsAny(wf, "\x00\r\n") {
		writeError(w, http.StatusBadRequest, "workflow: give the workflow file's name (one line, at most 255 bytes)")
		return
	}
	exit, err := strconv.Atoi(q.Get("exit"))
	if err != nil || exit < 0 || exit > 255 {
		writeError(w, http.StatusBadRequest, "exit: give cijoe's exit status (0-255)")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxOfflineLog))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("the log is larger than %d bytes: send its end", maxOfflineLog))
		return
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "reading the log: "+err.Error())
		return
	}
	now := time.Now().UTC()
	run := fleet.Run{MAC: mac, Source: fleet.RunOffline, Workflow: wf, Image: m.Image, Result: fleet.RunRunning,
		CreatedAt: now, StartedAt: &now}
	if m.Flash != nil {
		run.FlashID, run.Image, run.ImageSHA256 = m.Flash.ID, m.Flash.Image, m.Flash.ImageSHA256
	}
	res, reason := fleet.RunSuccess, ""
	if exit != 0 {
		res, reason = fleet.RunFailed, fmt.Sprintf("cijoe exited %d on the flashed disk (offline, bty-tui)", exit)
	}
	run, err = s.runs.save(run)
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	lw := s.runs.logWriter(run.ID)
	_, _ = lw.Write(body)
	lw.Close()
	if _, err := s.runs.save(run.End(res, reason, &exit, now)); err != nil {
		s.internalError(w, r, err)
		return
	}
	s.log.Info("offline cijoe log uploaded", "mac", mac, "run", run.ID, "bytes", len(body), "exit", exit, "ip", call.IP)
	writeJSON(w, http.StatusOK, api.ReportStatus{Status: "recorded"})
}
