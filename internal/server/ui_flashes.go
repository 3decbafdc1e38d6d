package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/btyproject/bty/internal/api"
	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/human"
	"github.com/btyproject/bty/internal/store"
	"github.com/dustin/go-humanize"
)

// Flashes in the browser UI: the machine page's latest flash and
// history, the reflash confirmation and the cancel of a running flash.
// The reflash itself is startReflash, shared with POST
// /machines/{mac}/reflash.

// startReflash requests a demand flash of machine mac with req's
// overrides (see handleReflash): on success the 202's answer; on
// failure the HTTP status that fits and an error whose text is the
// API's: a *fleet.ValidationError (400), a *fleet.FlashInProgressError
// (409), a 404 naming the machine, or, with status 500, an internal
// error for the log only.
func (s *Server) startReflash(ctx context.Context, mac fleet.MAC, req fleet.ReflashRequest) (api.ReflashResult, int, error) {
	if errs := machineUpdateErrors(fleet.MachineUpdate{Image: req.Image, ProvisioningMode: req.Provisioning, Hostname: req.Hostname}); len(errs) > 0 {
		return api.ReflashResult{}, http.StatusBadRequest, errs[0]
	}
	cur, err := s.store.GetMachine(ctx, mac)
	if errors.Is(err, store.ErrNotFound) {
		return api.ReflashResult{}, http.StatusNotFound, errors.New("no machine " + mac.String())
	}
	if err != nil {
		return api.ReflashResult{}, http.StatusInternalServerError, err
	}
	if errs := req.Validate(); len(errs) > 0 {
		return api.ReflashResult{}, http.StatusBadRequest, errs[0]
	}
	image := cur.Image
	if req.Image != nil {
		image = *req.Image
	}
	if req.KnownGood {
		if code, err := s.checkKnownGood(ctx, cur); err != nil {
			return api.ReflashResult{}, code, err
		}
		image = cur.LastKnownGood.Image
	}
	entry, inCatalog := s.catalog.get(ctx, image)
	if image != "" && !inCatalog {
		return api.ReflashResult{}, http.StatusBadRequest, &fleet.ValidationError{Field: "image",
			Msg: strconv.Quote(image) + " is not in the catalog: upload it (bty-ctl images upload) or name one from GET /images"}
	}
	run := fleet.FlashRun{At: time.Now(), DefaultDeadline: s.cfg.FlashDeadline}
	if inCatalog && entry.DecodedSHA256 != nil {
		run.ImageSHA256 = *entry.DecodedSHA256
	}
	m, err := store.Reflash(ctx, s.store, mac, req, run)
	var busy *fleet.FlashInProgressError
	switch {
	case errors.Is(err, fleet.ErrNoKnownGood):
		return api.ReflashResult{}, http.StatusConflict, err
	case errors.As(err, &busy):
		return api.ReflashResult{}, http.StatusConflict, busy
	case fleet.IsValidation(err):
		return api.ReflashResult{}, http.StatusBadRequest, err
	case errors.Is(err, store.ErrNotFound):
		return api.ReflashResult{}, http.StatusNotFound, errors.New("no machine " + mac.String())
	case err != nil:
		return api.ReflashResult{}, http.StatusInternalServerError, err
	}
	s.publishMachine(m)
	f := *m.Flash
	s.runs.supersede(mac, f.ID)
	s.log.Info("reflash requested", "mac", mac, "flash", f.ID, "image", f.Image, "deadline", f.Deadline)
	res := api.ReflashResult{Flash: f, Power: "pending"}
	if m.Power == nil {
		res.Power = "none"
		res.Note = "machine " + mac.String() + " has no power driver: reboot it by other means (its next PXE boot flashes " + f.Image + "), or give it one with bty-ctl machines set " + mac.String() + " --power-driver ..."
		m, err = store.UpdateFlash(ctx, s.store, mac, func(m fleet.Machine) (fleet.Machine, bool) {
			return m.Powered(f.ID, "none", nil, time.Now()), true
		})
		if err == nil {
			s.publishMachine(m)
			res.Flash = *m.Flash
		}
	} else {
		go s.powerFlash(m)
	}
	return res, http.StatusAccepted, nil
}

// cancelFlash cancels flash f of its machine (fleet.Machine.Cancel) and
// publishes the change; store.ErrUnchanged when f is not in progress.
// (handleFlashCancel does the same for the API.)
func (s *Server) cancelFlash(ctx context.Context, f fleet.Flash) (fleet.Machine, error) {
	at := time.Now()
	m, err := store.UpdateFlash(ctx, s.store, f.MAC, func(m fleet.Machine) (fleet.Machine, bool) {
		return m.Cancel(f.ID, at)
	})
	if err != nil {
		return m, err
	}
	s.log.Info("flash cancelled", "mac", f.MAC, "flash", f.ID)
	s.flashChanged(m, at)
	return m, nil
}

// shortDuration is d rounded to the second as "41s", "1m02s" or
// "2h05m": compact enough for a phase's offset and a table cell.
func shortDuration(d time.Duration) string {
	d = d.Round(time.Second)
	if d < 0 {
		d = 0
	}
	h, m, sec := int(d.Hours()), int(d.Minutes())%60, int(d.Seconds())%60
	switch {
	case h > 0:
		return fmt.Sprintf("%dh%02dm", h, m)
	case m > 0:
		return fmt.Sprintf("%dm%02ds", m, sec)
	}
	return fmt.Sprintf("%ds", sec)
}

// phaseStep is one phase a flash reached, as an offset from its request.
type phaseStep struct {
	Phase  fleet.Phase
	At     time.Time
	Offset string // "+1m02s"
}

// flashView is a flash as the pages show it.
type flashView struct {
	fleet.Flash
	Running bool
	// Duration is how long it took (or has taken so far).
	Duration string
	// Steps are the phases reached after the request, in order.
	Steps []phaseStep
	// Written is the bytes written; Total the image's bytes ("" when
	// unknown); Percent the share written when Total is known (-1 else);
	// RateText the last rate ("" when none).
	Written, Total, RateText string
	Percent                  int
	// DataOnly: Written counts the data written at done (not the
	// ranges zeroed or left sparse).
	DataOnly bool
	// Powered says how the machine was started, in words.
	Powered string
	// Delta sums up a delta flash ("" for a whole one): fetched,
	// written, chunks equal.
	Delta string
}

// deltaText is "fetched 52 MiB, wrote 48 MiB, 1,250 of 1,300 chunks
// equal" for a delta flash, "" for another.
func deltaText(f fleet.Flash) string {
	if f.ChunksTotal <= 0 {
		return ""
	}
	return fmt.Sprintf("fetched %s, wrote %s, %s of %s data chunks equal", human.Bytes(f.BytesFetched), human.Bytes(f.BytesWritten),
		humanize.Comma(f.ChunksEqual), humanize.Comma(f.ChunksTotal-f.ChunksZero))
}

// powerWords describes Flash.Power.
var powerWords = map[string]string{
	"pxe-once+cycle": "one-time PXE boot and power cycle by the BMC",
	"pxe-once+on":    "one-time PXE boot and power on by the BMC",
	"cycle":          "power cycle by the BMC (it could not set a one-time PXE boot)",
	"on":             "power on by the BMC (it could not set a one-time PXE boot)",
	"none":           "no power driver: rebooted by hand or other means",
	"":               "started by the machine's own PXE boot",
}

func newFlashView(f fleet.Flash, now time.Time) flashView {
	v := flashView{Flash: f, Running: f.Running(), Duration: shortDuration(f.Duration(now)), Percent: -1,
		Written: human.Bytes(f.BytesWritten)}
	v.Powered = powerWords[f.Power]
	v.Delta = deltaText(f)
	if v.Powered == "" {
		v.Powered = f.Power
	}
	for _, p := range fleet.Phases[1:] {
		if at := f.PhaseAt(p); at != nil {
			v.Steps = append(v.Steps, phaseStep{Phase: p, At: *at, Offset: "+" + shortDuration(at.Sub(f.RequestedAt))})
		}
	}
	if f.TotalBytes > 0 {
		v.Total = human.Bytes(f.TotalBytes)
		v.Percent = int(min(100, f.BytesWritten*100/f.TotalBytes))
	}
	if f.DoneAt != nil {
		// done's figure is the data written; the rest of the image was
		// zeroed without sending it, or left as holes: no percentage.
		v.Percent, v.DataOnly = -1, true
	}
	if f.Rate > 0 {
		v.RateText = human.Bytes(int64(f.Rate)) + "/s"
	}
	return v
}

// machineHistoryRows is how many flashes the machine page lists.
const machineHistoryRows = 20

// flashSection is the machine page's flash section: the latest flash
// and a page of the history (newest first, from Offset).
type flashSection struct {
	MAC    fleet.MAC
	Latest *flashView
	// History is the page of flashes; Total all of the machine's.
	History []flashView
	Total   int
	// Offset, First and Last place the page (First, Last 1-based; 0
	// when empty); Newer and Older link to the pages beside it.
	Offset, First, Last int
	Newer, Older        string
	PowerDriver         bool
}

// flashSectionOf reads m's flash history page at offset.
func (s *Server) flashSectionOf(ctx context.Context, m fleet.Machine, offset int) (flashSection, error) {
	now := time.Now()
	d := flashSection{MAC: m.MAC, Offset: max(offset, 0), PowerDriver: m.Power != nil}
	if m.Flash != nil {
		v := newFlashView(*m.Flash, now)
		d.Latest = &v
	}
	fs, total, err := s.store.ListFlashes(ctx, m.MAC, machineHistoryRows, d.Offset)
	if err != nil {
		return d, err
	}
	d.Total = total
	for _, f := range fs {
		d.History = append(d.History, newFlashView(f, now))
	}
	if len(fs) > 0 {
		d.First, d.Last = d.Offset+1, d.Offset+len(fs)
	}
	base := "/ui/machines/" + m.MAC.String()
	if d.Offset > 0 {
		d.Newer = base + "#h-history"
		if n := d.Offset - machineHistoryRows; n > 0 {
			d.Newer = base + "?flashes_offset=" + strconv.Itoa(n) + "#h-history"
		}
	}
	if d.Offset+len(fs) < total {
		d.Older = base + "?flashes_offset=" + strconv.Itoa(d.Offset+machineHistoryRows) + "#h-history"
	}
	return d, nil
}

// flashesOffset is the page's ?flashes_offset= (0 when absent or bad).
func flashesOffset(r *http.Request) int {
	n, err := strconv.Atoi(r.URL.Query().Get("flashes_offset"))
	if err != nil || n < 0 {
		return 0
	}
	return n
}

// uiMachineFlash is the machine page's flash section alone (the
// template's "flash-section"), for the page to swap in when the machine
// changes (app.js, on the machine's SSE events).
func (s *Server) uiMachineFlash(w http.ResponseWriter, r *http.Request) {
	m, ok := s.fragmentMachine(w, r)
	if !ok {
		return
	}
	d, err := s.flashSectionOf(r.Context(), m, flashesOffset(r))
	if err != nil {
		s.uiInternal(w, r, err)
		return
	}
	s.renderPageFragment(w, r, "machine", "flash-section", d)
}

// renderPageFragment writes the template name of page's set, without
// the layout.
func (s *Server) renderPageFragment(w http.ResponseWriter, r *http.Request, page, name string, data any) {
	var buf strings.Builder
	if err := s.ui.pages[page].ExecuteTemplate(&buf, name, data); err != nil {
		s.uiInternal(w, r, fmt.Errorf("rendering %s: %w", name, err))
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write([]byte(buf.String()))
}

// reflashData is the reflash confirmation page.
type reflashData struct {
	M    fleet.Machine
	Name string
	// Running is the flash in progress (the page offers its cancel
	// instead of a reflash).
	Running *flashView
	// The overrides' form: values, options and field errors.
	Image, Provisioning, Hostname string
	Images                        []imageOption
	Modes                         []fleet.Mode
	Errors                        map[string]string
	FormError                     string
}

func machineName(m fleet.Machine) string {
	if m.Hostname != "" {
		return m.Hostname + " (" + m.MAC.String() + ")"
	}
	return m.MAC.String()
}

// renderReflash renders the reflash page for m with the form's values.
func (s *Server) renderReflash(w http.ResponseWriter, r *http.Request, code int, m fleet.Machine, d reflashData) {
	d.M, d.Name, d.Modes = m, machineName(m), fleet.Modes[1:]
	if m.Flash.Running() {
		v := newFlashView(*m.Flash, time.Now())
		d.Running = &v
	}
	imgs, err := s.catalog.list(r.Context())
	if err != nil {
		s.uiInternal(w, r, err)
		return
	}
	for _, e := range imgs {
		if e.Error == "" {
			d.Images = append(d.Images, imageOption{Name: e.Name})
		}
	}
	s.render(w, r, code, "reflash", uiPage{Title: "Reflash " + d.Name, Nav: "machines", LoggedIn: true, Data: d})
}

// uiReflashConfirm is the reflash confirmation: optional overrides, and
// whether the BMC will start the machine or it must be rebooted by hand.
func (s *Server) uiReflashConfirm(w http.ResponseWriter, r *http.Request) {
	m, ok := s.uiLoadMachine(w, r)
	if !ok {
		return
	}
	s.renderReflash(w, r, http.StatusOK, m, reflashData{})
}

// uiReflash requests the reflash (startReflash) with the form's
// overrides (blank: the machine's own) and shows the outcome on the
// machine page; a refused override is shown next to its field, a flash
// in progress (409) with its cancel button.
func (s *Server) uiReflash(w http.ResponseWriter, r *http.Request) {
	m, ok := s.uiLoadMachine(w, r)
	if !ok || !parseForm(w, r) {
		return
	}
	f := r.PostForm
	d := reflashData{Image: strings.TrimSpace(f.Get("image")), Provisioning: strings.TrimSpace(f.Get("provisioning")),
		Hostname: strings.TrimSpace(f.Get("hostname"))}
	var req fleet.ReflashRequest
	if d.Image != "" {
		req.Image = &d.Image
	}
	if d.Provisioning != "" {
		mode := fleet.Mode(d.Provisioning)
		req.Provisioning = &mode
	}
	if d.Hostname != "" {
		req.Hostname = &d.Hostname
	}
	res, code, err := s.startReflash(r.Context(), m.MAC, req)
	var ve *fleet.ValidationError
	var busy *fleet.FlashInProgressError
	switch {
	case err == nil:
	case errors.As(err, &busy):
		cur, gerr := s.store.GetMachine(r.Context(), m.MAC)
		if gerr == nil {
			m = cur
		}
		d.FormError = "Nothing was started: " + busy.Error()
		s.renderReflash(w, r, http.StatusConflict, m, d)
		return
	case errors.As(err, &ve):
		field := map[string]string{"provisioning_mode": "provisioning"}[ve.Field]
		if field == "" {
			field = ve.Field
		}
		d.Errors = map[string]string{field: ve.Msg}
		d.FormError = "Nothing was started: correct the marked field."
		s.renderReflash(w, r, http.StatusBadRequest, m, d)
		return
	case code == http.StatusNotFound:
		s.uiError(w, r, code, "No such machine", err.Error()+": it may have been deleted meanwhile.")
		return
	default:
		s.uiInternal(w, r, err)
		return
	}
	msg := fmt.Sprintf("Reflash requested: flash %d of %s.", res.Flash.ID, res.Flash.Image)
	if res.Power == "none" {
		msg += " This machine has no power driver: reboot it by hand now; its next PXE boot flashes the image."
	} else {
		msg += " Its BMC is being asked for a one-time PXE boot and a power cycle; the flash's status below follows."
	}
	s.log.Info("reflash from the UI", "mac", m.MAC, "flash", res.Flash.ID, "client", clientAddr(r))
	s.setFlash(w, msg)
	redirect(w, r, "/ui/machines/"+m.MAC.String())
}

// uiFlashFromPath loads the machine's flash {id}, rendering 400/404
// pages when it cannot.
func (s *Server) uiFlashFromPath(w http.ResponseWriter, r *http.Request) (fleet.Machine, fleet.Flash, bool) {
	m, ok := s.uiLoadMachine(w, r)
	if !ok {
		return m, fleet.Flash{}, false
	}
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id < 1 {
		s.uiError(w, r, http.StatusBadRequest, "Bad flash id", "A flash id is a positive number: pick the flash on the machine's page.")
		return m, fleet.Flash{}, false
	}
	f, err := s.store.GetFlash(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) || err == nil && f.MAC != m.MAC {
		s.uiError(w, r, http.StatusNotFound, "No such flash", fmt.Sprintf("Machine %s has no flash %d.", m.MAC, id))
		return m, fleet.Flash{}, false
	}
	if err != nil {
		s.uiInternal(w, r, err)
		return m, fleet.Flash{}, false
	}
	return m, f, true
}

// uiFlashCancelConfirm asks before cancelling a flash in progress.
func (s *Server) uiFlashCancelConfirm(w http.ResponseWriter, r *http.Request) {
	m, f, ok := s.uiFlashFromPath(w, r)
	if !ok {
		return
	}
	mac := m.MAC.String()
	if !f.Running() {
		s.setFlash(w, fmt.Sprintf("Flash %d is not in progress (it ended %s): nothing to cancel.", f.ID, f.Result))
		redirect(w, r, "/ui/machines/"+mac)
		return
	}
	d := confirmData{Question: fmt.Sprintf("Cancel flash %d of %s (%s, phase %s)?", f.ID, machineName(m), f.Image, f.Phase),
		Button: "Cancel the flash", Action: fmt.Sprintf("/ui/machines/%s/flashes/%d/cancel", mac, f.ID), Back: "/ui/machines/" + mac,
		Details: []string{"It ends cancelled and the machine's PXE boots get what its boot policy says again.",
			"A live env already writing the disk is not stopped: the disk may be left half written until the machine is flashed again."}}
	s.render(w, r, http.StatusOK, "confirm", uiPage{Title: "Cancel flash", Nav: "machines", LoggedIn: true, Data: d})
}

// uiFlashCancel cancels a flash in progress and shows the outcome on
// the machine page.
func (s *Server) uiFlashCancel(w http.ResponseWriter, r *http.Request) {
	m, f, ok := s.uiFlashFromPath(w, r)
	if !ok {
		return
	}
	_, err := s.cancelFlash(r.Context(), f)
	switch {
	case errors.Is(err, store.ErrUnchanged):
		if g, gerr := s.store.GetFlash(r.Context(), f.ID); gerr == nil {
			f = g
		}
		s.setFlash(w, fmt.Sprintf("Flash %d was not in progress any more (%s): nothing was cancelled.", f.ID, f.Result))
	case err != nil:
		s.uiInternal(w, r, err)
		return
	default:
		s.setFlash(w, fmt.Sprintf("Cancelled flash %d (%s).", f.ID, f.Image))
	}
	redirect(w, r, "/ui/machines/"+m.MAC.String())
}

// checkKnownGood says why machine m cannot be reflashed to its
// known-good baseline now (with the HTTP status), or nil: it needs a
// baseline from a run, its image still in the catalog with the same
// content, its seed kept, and that run's workflow copy.
func (s *Server) checkKnownGood(ctx context.Context, m fleet.Machine) (int, error) {
	k := m.LastKnownGood
	if k.IsZero() || k.RunID == 0 {
		return http.StatusConflict, fleet.ErrNoKnownGood
	}
	entry, ok := s.catalog.get(ctx, k.Image)
	if !ok {
		return http.StatusConflict, fmt.Errorf("the known-good image %s is no longer in the catalog: upload it again (sha256 %s)", k.Image, k.ImageSHA256)
	}
	if k.ImageSHA256 != "" && entry.DecodedSHA256 != nil && *entry.DecodedSHA256 != k.ImageSHA256 {
		return http.StatusConflict, fmt.Errorf("the catalog's %s changed since the known-good (sha256 %s, was %s): the known-good image is gone; upload it again under its name or reflash the new one", k.Image, *entry.DecodedSHA256, k.ImageSHA256)
	}
	if (k.UserDataSHA256 != "" && k.UserData == "") || (k.MetaDataSHA256 != "" && k.MetaData == "") {
		return http.StatusConflict, errors.New("the known-good baseline kept only the hashes of its seed (the record's seed changed while its run went on): reflash with the record's seed instead")
	}
	if _, err := os.Stat(filepath.Join(s.runs.runDir(k.RunID), "workflow.yaml")); err != nil {
		return http.StatusConflict, fmt.Errorf("the known-good run %d's workflow copy is gone from %s: reflash with the record's workflow instead", k.RunID, s.runs.runDir(k.RunID))
	}
	return 0, nil
}
