package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/btyproject/bty/internal/api"
	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/power"
	"github.com/btyproject/bty/internal/store"
)

// Reflash on demand, the flash history and readiness (docs/reference.md,
// "One-shot reflash", "Readiness", "Flash history").

// handleReflash starts a demand flash (fleet.Machine.Reflash): the next
// PXE contact gets the live env flashing the request's image (else the
// record's), then the machine boots its disk as its policy says. With a
// power driver the BMC is asked, in the background, for a one-time PXE
// boot and a power cycle (or on); without one the answer says the
// machine must be rebooted by other means. A flash in progress is a 409
// naming it.
func (s *Server) handleReflash(w http.ResponseWriter, r *http.Request) {
	mac, ok := pathMAC(w, r)
	if !ok {
		return
	}
	var req fleet.ReflashRequest
	if r.ContentLength != 0 && !decodeJSON(w, r, &req, 4<<10) {
		return
	}
	res, code, err := s.startReflash(r.Context(), mac, req)
	s.answer(w, r, code, res, code, err)
}

// powerFlash boots machine m into its demand flash through its BMC: a
// one-time PXE boot where the BMC offers it, then a power cycle (on for
// a machine that is off), and records how (fleet.Machine.Powered). A
// failure ends the flash failed with the BMC's error.
func (s *Server) powerFlash(m fleet.Machine) {
	id := m.Flash.ID
	ctx, cancel := context.WithTimeout(context.Background(), 2*powerTimeout)
	defer cancel()
	how, err := s.bootIntoFlash(ctx, m)
	if err != nil {
		s.log.Warn("reflash: power failed", "mac", m.MAC, "flash", id, "err", err)
	}
	at := time.Now()
	m2, werr := store.UpdateFlash(ctx, s.store, m.MAC, func(x fleet.Machine) (fleet.Machine, bool) {
		return x.Powered(id, how, err, at), true
	})
	if werr != nil {
		s.log.Error("reflash: recording the power action", "mac", m.MAC, "flash", id, "err", werr)
		return
	}
	s.flashChanged(m2, at)
}

// bootIntoFlash asks m's BMC for a one-time PXE boot and a power cycle
// (on, when the machine is off); how says what happened:
// "pxe-once+cycle", "pxe-once+on", "cycle" or "on".
func (s *Server) bootIntoFlash(ctx context.Context, m fleet.Machine) (how string, err error) {
	d, err := s.newPowerDriver(m.Power)
	if err != nil {
		return "", fmt.Errorf("its power settings are not usable: %w", err)
	}
	release, err := s.bmcs.acquire(ctx, m.Power.Address)
	if err != nil {
		return "", fmt.Errorf("waiting for the BMC at %s (another action holds it): %w", m.Power.Address, err)
	}
	defer release()
	pxe, perr := d.PXEOnce(ctx)
	switch {
	case errors.Is(perr, power.ErrCredentials), errors.Is(perr, power.ErrUnreachable):
		// Nothing else would go through either.
		s.metrics.powerActions.WithLabelValues(m.Power.Driver, powerResult(perr)).Inc()
		return "", fmt.Errorf("one-time PXE boot through the %s BMC at %s: %w", m.Power.Driver, m.Power.Address, perr)
	case perr != nil:
		// The BMC may still power the machine; its boot order decides.
		s.log.Warn("reflash: the BMC did not set a one-time PXE boot; power cycling alone", "mac", m.MAC, "address", m.Power.Address, "err", perr)
		pxe = false
	}
	s.bmcs.space()
	st, err := d.Power(ctx, power.Status)
	action := power.Cycle
	how = "cycle"
	if err == nil && st == power.StateOff {
		action, how = power.On, "on"
	}
	if pxe {
		how = "pxe-once+" + how
	}
	s.bmcs.space()
	_, err = d.Power(ctx, action)
	s.metrics.powerActions.WithLabelValues(m.Power.Driver, powerResult(err)).Inc()
	if err != nil {
		return how, fmt.Errorf("%s through the %s BMC at %s: %w", action, m.Power.Driver, m.Power.Address, err)
	}
	s.log.Info("reflash: machine powered into its flash", "mac", m.MAC, "how", how)
	return how, nil
}

// powerResult is the bty_power_actions_total result of a power call's
// error.
func powerResult(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, power.ErrCredentials):
		return "credentials"
	case errors.Is(err, power.ErrUnreachable):
		return "unreachable"
	}
	return "error"
}

// bmcGap is the pause between two commands to one BMC; flashWatchEvery
// how often the flashes in progress are checked (deadlines, TCP ready
// checks).
const (
	bmcGap          = time.Second
	flashWatchEvery = 5 * time.Second
)

// bmcGates serializes the actions on one BMC (one session at a time,
// with a pause between commands: some BMCs stop answering a burst).
type bmcGates struct {
	mu    sync.Mutex
	gates map[string]chan struct{}
	gap   time.Duration
}

func newBMCGates(gap time.Duration) *bmcGates {
	return &bmcGates{gates: map[string]chan struct{}{}, gap: gap}
}

// acquire waits for the BMC at address to be free (or ctx to end) and
// returns its release.
func (b *bmcGates) acquire(ctx context.Context, address string) (func(), error) {
	b.mu.Lock()
	g, ok := b.gates[address]
	if !ok {
		g = make(chan struct{}, 1)
		b.gates[address] = g
	}
	b.mu.Unlock()
	select {
	case g <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return func() {
		// The pause before the next session to it, without holding up
		// the caller's answer.
		go func() {
			time.Sleep(b.gap)
			<-g
		}()
	}, nil
}

// space is the pause between two commands in one session.
func (b *bmcGates) space() { time.Sleep(b.gap) }

// flashChanged publishes m and counts its flash's end (flashEnded).
func (s *Server) flashChanged(m fleet.Machine, at time.Time) {
	s.publishMachine(m)
	s.flashEnded(m, at)
}

// flashEnded counts the duration of m's flash and logs it when the flash
// ended at at (a change made at at that did not end it: nothing).
func (s *Server) flashEnded(m fleet.Machine, at time.Time) {
	f := m.Flash
	if f == nil || f.Running() || f.EndedAt == nil || !f.EndedAt.Equal(at.UTC()) {
		return
	}
	s.metrics.flashDuration.WithLabelValues(string(f.Result)).Observe(f.Duration(at).Seconds())
	s.runs.afterFlash(m)
	s.recov.afterFlash(m)
	s.wake.notify()
	s.log.Info("flash ended", "mac", f.MAC, "flash", f.ID, "trigger", f.Trigger, "result", f.Result, "phase", f.Phase,
		"took", f.Duration(at).Round(time.Second), "reason", f.Reason)
}

// maxFlashPage bounds GET /machines/{mac}/flashes's page.
const maxFlashPage = 1000

// handleFlashes answers GET /machines/{mac}/flashes: a page (limit,
// default 50; offset) of the machine's flashes, newest first, with the
// total in X-Total-Count.
func (s *Server) handleFlashes(w http.ResponseWriter, r *http.Request) {
	mac, ok := pathMAC(w, r)
	if !ok {
		return
	}
	limit, offset, ok := pageParams(w, r, 50, maxFlashPage)
	if !ok {
		return
	}
	if _, ok := s.apiMachine(w, r, mac); !ok {
		return
	}
	fs, total, err := s.store.ListFlashes(r.Context(), mac, limit, offset)
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	w.Header().Set("X-Total-Count", strconv.Itoa(total))
	writeJSON(w, http.StatusOK, api.FlashPage{Flashes: fs, Total: total})
}

// pageParams reads limit (default def, at most max) and offset.
func pageParams(w http.ResponseWriter, r *http.Request, def, maxLimit int) (limit, offset int, ok bool) {
	limit = def
	q := r.URL.Query()
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxLimit {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("limit: want a number from 1 to %d", maxLimit))
			return 0, 0, false
		}
		limit = n
	}
	if v := q.Get("offset"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			writeError(w, http.StatusBadRequest, "offset: want a number from 0")
			return 0, 0, false
		}
		offset = n
	}
	return limit, offset, true
}

// flashFromPath reads the machine's flash {id}; on failure it has
// answered.
func (s *Server) flashFromPath(w http.ResponseWriter, r *http.Request) (fleet.Flash, bool) {
	mac, ok := pathMAC(w, r)
	if !ok {
		return fleet.Flash{}, false
	}
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id < 1 {
		writeError(w, http.StatusBadRequest, "flash id: want the positive number a reflash answered (bty-ctl machines history "+mac.String()+")")
		return fleet.Flash{}, false
	}
	f, err := s.store.GetFlash(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) || err == nil && f.MAC != mac {
		writeError(w, http.StatusNotFound, fmt.Sprintf("machine %s has no flash %d", mac, id))
		return fleet.Flash{}, false
	}
	if err != nil {
		s.internalError(w, r, err)
		return fleet.Flash{}, false
	}
	return f, true
}

// handleFlashGet answers GET /machines/{mac}/flashes/{id}.
func (s *Server) handleFlashGet(w http.ResponseWriter, r *http.Request) {
	if f, ok := s.flashFromPath(w, r); ok {
		writeJSON(w, http.StatusOK, f)
	}
}

// handleFlashCancel cancels a flash in progress: it ends cancelled and
// the machine's PXE contacts get what its policy says again. A live env
// already writing the disk is not stopped (its report is then only
// recorded on the machine). A flash that already ended is a 409.
func (s *Server) handleFlashCancel(w http.ResponseWriter, r *http.Request) {
	f, ok := s.flashFromPath(w, r)
	if !ok {
		return
	}
	m, err := s.cancelFlash(r.Context(), f)
	if errors.Is(err, store.ErrUnchanged) {
		writeError(w, http.StatusConflict, fmt.Sprintf("flash %d of %s is not in progress (%s)", f.ID, f.MAC, f.Result))
		return
	}
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, m.Flash)
}

// maxProgressBody caps a progress or done report's body.
const maxProgressBody = 4 << 10

// readProgress reads an optional fleet.Progress body (empty: zero). A
// body that is not one is ignored: the report itself counts.
func readProgress(w http.ResponseWriter, r *http.Request) fleet.Progress {
	var p fleet.Progress
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxProgressBody))
	if err != nil || len(body) == 0 {
		return p
	}
	if json.Unmarshal(body, &p) != nil {
		return fleet.Progress{}
	}
	return p.Sane()
}

// handlePXEProgress records the live env's progress in its flash cycle
// (open route, like done): the first marks the image fetch.
func (s *Server) handlePXEProgress(w http.ResponseWriter, r *http.Request) {
	mac, ok := pathMAC(w, r)
	if !ok {
		return
	}
	p := readProgress(w, r)
	call := cycleCall(r)
	// The live env reports every 10 s at most: more often from one
	// address is dropped before the store (answered as recorded).
	if ok, _ := s.progressLimit.allow(mac.String()+" "+call.IP, call.At); !ok {
		writeJSON(w, http.StatusOK, api.ReportStatus{Status: "recorded"})
		return
	}
	m, err := store.FlashProgress(r.Context(), s.store, mac, p, call)
	s.answerReport(w, r, mac, "progress", m, err)
}

// handlePXEReady records the flashed OS's phone-home: open, accepted
// only with the flash's cycle token (X-Bty-Cycle, or ?cycle= for
// cloud-init's phone_home, which cannot set headers) while the flash
// waits for ready. The caller's address becomes the OS address. The
// body (phone_home's form) is read up to 16 KiB and ignored.
func (s *Server) handlePXEReady(w http.ResponseWriter, r *http.Request) {
	mac, ok := pathMAC(w, r)
	if !ok {
		return
	}
	_, _ = io.Copy(io.Discard, http.MaxBytesReader(w, r.Body, 16<<10))
	call := cycleCall(r)
	if call.Token == "" {
		call.Token = r.URL.Query().Get("cycle")
	}
	m, err := store.PhoneHome(r.Context(), s.store, mac, call)
	if s.answerReport(w, r, mac, "ready", m, err) {
		s.log.Info("machine ready (phone-home)", "mac", mac, "ip", call.IP, "flash", m.Flash.ID)
		s.flashEnded(m, call.At)
	}
}

// watchFlashes checks the flashes in progress every interval until ctx
// ends (checkFlashes).
func (s *Server) watchFlashes(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.checkFlashes(ctx)
		}
	}
}

// maxReadyProbes bounds the TCP ready checks running at once.
const maxReadyProbes = 32

// checkFlashes marks the flashes past their deadline timeout and probes
// the TCP ready checks of those waiting for ready: a flash whose port
// answers on the machine's last seen address is ready.
func (s *Server) checkFlashes(ctx context.Context) {
	fs, err := s.store.RunningFlashes(ctx)
	if err != nil {
		s.log.Error("checking flashes in progress", "err", err)
		return
	}
	sem := make(chan struct{}, maxReadyProbes)
	var wg sync.WaitGroup
	for _, f := range fs {
		now := time.Now()
		if !now.Before(f.Deadline) {
			m, err := store.UpdateFlash(ctx, s.store, f.MAC, func(m fleet.Machine) (fleet.Machine, bool) {
				if m.Flash == nil || m.Flash.ID != f.ID {
					return m, false
				}
				return m.TimeOut(now)
			})
			if err == nil {
				s.flashChanged(m, now)
			} else if !errors.Is(err, store.ErrUnchanged) && !errors.Is(err, store.ErrNotFound) {
				s.log.Error("flash timeout", "mac", f.MAC, "flash", f.ID, "err", err)
			}
			continue
		}
		port := f.ReadyCheck.Port()
		if !f.AwaitingReady() || port == 0 {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			s.probeReady(ctx, f, port)
		}()
	}
	wg.Wait()
}

// probeReady dials the TCP ready check of flash f on its machine's last
// seen address; an answer makes the flash ready.
func (s *Server) probeReady(ctx context.Context, f fleet.Flash, port int) {
	m, err := s.store.GetMachine(ctx, f.MAC)
	if err != nil || m.Flash == nil || m.Flash.ID != f.ID || m.LastSeenIP == "" {
		return
	}
	addr := net.JoinHostPort(m.LastSeenIP, strconv.Itoa(port))
	d := net.Dialer{Timeout: 2 * time.Second}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return
	}
	c.Close()
	at := time.Now()
	m, err = store.UpdateFlash(ctx, s.store, f.MAC, func(m fleet.Machine) (fleet.Machine, bool) {
		if m.Flash == nil || m.Flash.ID != f.ID || !m.Flash.AwaitingReady() {
			return m, false
		}
		return m.Ready(m.LastSeenIP, at), true
	})
	if err == nil {
		s.log.Info("machine ready (tcp)", "mac", f.MAC, "address", addr, "flash", f.ID)
		s.flashChanged(m, at)
	}
}
