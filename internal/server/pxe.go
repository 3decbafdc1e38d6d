package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/btyproject/bty/internal/api"
	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/netboot"
	"github.com/btyproject/bty/internal/store"
)

// serverURL is the base URL PXE clients reached this server by: the
// scheme of the connection and the Host they asked for.
func (s *Server) serverURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// handlePXE answers a PXE contact with the iPXE script of the machine's
// boot policy, recording discovery (within the discovery gate's limits:
// Server.pxeContact) and last_seen_*. A script that boots the live env
// opens a flash cycle and carries its token (bty.cycle); a contact from
// another address during an open cycle is a conflict: served the local
// disk, logged, and shown on the machine (fleet.Machine.Contact).
func (s *Server) handlePXE(w http.ResponseWriter, r *http.Request) {
	mac, ok := pathMAC(w, r)
	if !ok {
		return
	}
	v := fleet.Visit{IP: clientAddr(r), At: time.Now(), Token: fleet.NewCycleToken(), TTL: s.cfg.CycleTTL, FlashDeadline: s.cfg.FlashDeadline}
	c, stored, err := s.pxeContact(r.Context(), mac, v)
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	if c.Discovered {
		s.log.Info("machine discovered", "mac", mac, "ip", v.IP)
	}
	if c.Decision.Conflict {
		s.metrics.cycleConflicts.Inc()
		if ok, _ := s.warnLimit.allow(mac.String(), v.At); ok {
			s.log.Warn("PXE conflict: another address sent the MAC of a machine in its flash cycle; served the local disk, nothing changed (one warning per machine per minute)",
				"mac", mac, "ip", v.IP, "cycle_ip", c.Machine.Cycle.IP)
		}
	}
	if stored {
		s.flashChanged(c.Machine, v.At)
	}
	m := c.Machine
	if !c.Via.IsZero() {
		// Another NIC of the machine asked (docs/reference.md,
		// "Inventory"): its script names that NIC, so the live env
		// brings it up and calls back by it, which reaches this record.
		m.MAC = c.Via
	}
	script, policy := s.bootScript(r.Context(), m, c.Decision, s.serverURL(r), false)
	s.metrics.pxeContacts.WithLabelValues(string(policy)).Inc()
	writeScript(w, script)
}

// bootScript renders the iPXE script of decision d (fleet.Decide, or
// what a contact returned) for machine m, with base the server URL the
// machine reaches; policy is what the script does in the end. A preview
// (the UI's) logs nothing.
//
// A flash carries its flash's image, provisioning and host name (a
// demand's overrides: fleet.Machine.AsFlashed), and bty.ready=phone-home
// when the flash's ready check is phone-home.
func (s *Server) bootScript(ctx context.Context, m fleet.Machine, d fleet.Decision, base string, preview bool) (script []byte, policy fleet.Policy) {
	mac := m.MAC
	m = m.AsFlashed()
	p := netboot.Params{Policy: d.Serve, ServerURL: base, MAC: mac,
		Provisioning: m.ProvisioningMode, Hostname: m.Hostname, Note: d.Note, Cycle: d.Cycle}
	if d.Serve != fleet.PolicyLocal && d.Cycle != "" {
		rc := m.ReadyCheck.Effective(m.ProvisioningMode)
		if m.Flash.Running() {
			rc = m.Flash.ReadyCheck
		}
		p.PhoneHome = rc == fleet.ReadyPhoneHome
	}
	if p.Policy == fleet.PolicyFlash {
		if m.ProvisioningMode == fleet.ModeCijoeOnline {
			// The live env seeds bty-web's key (cijoe-online's login).
			blob, err := s.sshKey.keyBlob()
			if err != nil {
				s.log.Error("cijoe-online: bty-web's SSH key", "mac", mac, "err", err)
			}
			p.SSHKey = blob
		}
		p.ImageURL = imageURL(p.ServerURL, m.Image)
		e, ok := s.catalog.get(ctx, m.Image)
		if ok && e.DecodedSHA256 != nil {
			p.ImageSHA256 = *e.DecodedSHA256
		}
		if ok && e.VirtualSizeBytes != nil {
			p.ImageSize = *e.VirtualSizeBytes
		}
		if !ok && !preview {
			s.log.Warn("flash: assigned image is not in the catalog", "mac", mac, "image", m.Image)
		}
	}
	script, err := netboot.Script(p)
	if err != nil {
		if !preview {
			s.log.Error("rendering the iPXE script", "mac", mac, "policy", p.Policy, "err", err)
		}
		// A script the firmware can run: say why and boot the disk.
		script, _ = netboot.Script(netboot.Params{Policy: fleet.PolicyLocal, ServerURL: p.ServerURL, MAC: mac,
			Note: "bty: cannot build the " + string(p.Policy) + " script for " + mac.String() + " (see the server log), booting the local disk"})
		p.Policy = fleet.PolicyLocal
	}
	return script, p.Policy
}

func writeScript(w http.ResponseWriter, script []byte) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(script)
}

// cycleHeader carries a live env's flash cycle token on its calls back.
const cycleHeader = "X-Bty-Cycle"

// cycleCall is r as a call in a flash cycle: the token it carries, its
// address, now.
func cycleCall(r *http.Request) store.CycleCall {
	return store.CycleCall{Token: r.Header.Get(cycleHeader), IP: clientAddr(r), At: time.Now()}
}

// handlePXEDone records that the live env flashed the machine, if the
// call belongs to its open flash cycle (store.FlashDone).
func (s *Server) handlePXEDone(w http.ResponseWriter, r *http.Request) {
	mac, ok := pathMAC(w, r)
	if !ok {
		return
	}
	p := readProgress(w, r)
	call := cycleCall(r)
	m, err := store.FlashDone(r.Context(), s.store, mac, p, call)
	if s.answerReport(w, r, mac, "done", m, err) {
		s.metrics.flashesDone.Inc()
		s.log.Info("flash done", "mac", mac, "ip", call.IP, "bytes_written", p.BytesWritten, "rate", int64(p.Rate))
		s.flashEnded(m, call.At)
	}
}

// answerReport answers a live env's report (done, failed) with its
// status only: the route is open, so the answer says nothing a stranger
// could use, not even whether the MAC is known. A report outside the
// machine's flash cycle is a 403 whose reason goes to the log only. It
// publishes the record and reports whether the report was recorded.
func (s *Server) answerReport(w http.ResponseWriter, r *http.Request, mac fleet.MAC, what string, m fleet.Machine, err error) bool {
	if errors.Is(err, fleet.ErrCycleRefused) {
		s.refuseCycleCall(w, r, mac, what, err)
		return false
	}
	if err != nil {
		s.internalError(w, r, err)
		return false
	}
	s.publishMachine(m)
	writeJSON(w, http.StatusOK, api.ReportStatus{Status: "recorded"})
	return true
}

// refuseCycleCall answers a live env call (seed, done, failed) that is
// not its machine's open cycle's with one 403 whatever the reason, and
// logs the reason (rate limited per machine).
func (s *Server) refuseCycleCall(w http.ResponseWriter, r *http.Request, mac fleet.MAC, what string, why error) {
	s.metrics.cycleRefused.WithLabelValues(what).Inc()
	if ok, _ := s.warnLimit.allow("refused "+mac.String(), time.Now()); ok {
		s.log.Warn("live env call refused (one warning per machine per minute)", "mac", mac, "call", what, "ip", clientAddr(r), "why", why.Error())
	}
	writeError(w, http.StatusForbidden, "refused: "+what+" for "+mac.String()+" is taken only from the machine in its open flash cycle, with the bty.cycle token its boot script carried, from the address of that PXE contact (the server log says why)")
}

// maxFailureBody caps a failure report's body.
const maxFailureBody = 16 << 10

// handlePXEFailed records the live env's report of a failed flash: the
// reason goes on the record (and the dashboard's warnings); the boot
// policy is untouched, so a flash machine tries again on its next boot.
// The body is {"reason": "..."} or plain text.
func (s *Server) handlePXEFailed(w http.ResponseWriter, r *http.Request) {
	mac, ok := pathMAC(w, r)
	if !ok {
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxFailureBody))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("the failure report is larger than %d bytes: send a shorter reason", maxFailureBody))
		return
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "reading the failure report: "+err.Error())
		return
	}
	reason := string(body)
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		var doc api.FailureReport
		if err := json.Unmarshal(body, &doc); err != nil {
			writeError(w, http.StatusBadRequest, `send {"reason": "..."} as JSON, or the reason as plain text: `+err.Error())
			return
		}
		reason = doc.Reason
	}
	reason = cleanReason(reason)
	call := cycleCall(r)
	m, err := store.FlashFailed(r.Context(), s.store, mac, reason, call)
	if s.answerReport(w, r, mac, "failed", m, err) {
		s.metrics.flashesFailed.Inc()
		s.log.Warn("flash failed", "mac", mac, "ip", call.IP, "reason", reason)
		s.flashEnded(m, call.At)
	}
}

// cleanReason makes a reported reason one line of printable text.
func cleanReason(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == utf8.RuneError {
			return ' '
		}
		return r
	}, s)
	s = strings.Join(strings.Fields(s), " ")
	if s == "" {
		return "no reason given"
	}
	return s
}

func (s *Server) handleBootstrap(w http.ResponseWriter, r *http.Request) {
	script, err := netboot.Bootstrap(s.serverURL(r))
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	writeScript(w, script)
}

// imageURL is where the live env downloads an image from.
func imageURL(base, name string) string { return base + "/images/" + url.PathEscape(name) }
