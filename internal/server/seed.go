package server

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/store"
)

// handlePXESeed serves a machine's cloud-init user-data or meta-data
// (what) to its live env. The route is open, like every PXE route, so
// the seed, which may hold secrets, goes only to the machine's open
// flash cycle: with the cycle's token (X-Bty-Cycle), from the address of
// the contact that opened it, before done or failed, and each half once
// per cycle (store.ReleaseSeed). Anything else is a 403 that does not
// say which rule failed; the server's log does.
func (s *Server) handlePXESeed(what string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		mac, ok := pathMAC(w, r)
		if !ok {
			return
		}
		m, err := store.ReleaseSeed(r.Context(), s.store, mac, what, cycleCall(r))
		if errors.Is(err, fleet.ErrCycleRefused) {
			s.refuseCycleCall(w, r, mac, what, err)
			return
		}
		if err != nil {
			s.internalError(w, r, err)
			return
		}
		s.publishMachine(m)
		m = m.AsFlashed()
		var body string
		switch what {
		case "user-data":
			if m.UserData == "" && m.ProvisioningMode == fleet.ModeCijoeOnline {
				// cijoe-online seeds cloud-init for bty-web's key
				// (vendor-data) even when the record has no seed.
				body = "#cloud-config\n# bty-web: the machine's record has no user-data (provisioning cijoe-online)\n"
				break
			}
			if m.UserData == "" {
				// The cycle's own live env asking: it may know there
				// is none.
				writeError(w, http.StatusNotFound, "no user-data on the record of "+mac.String())
				return
			}
			body = m.UserData
		default:
			body = m.MetaData
			if body == "" {
				body = synthMetaData(m)
			}
		}
		s.log.Info("seed served", "mac", mac, "what", what, "ip", clientAddr(r), "bytes", len(body))
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write([]byte(body))
	}
}

// synthMetaData is the NoCloud meta-data of a machine without its own:
// an instance-id made of the MAC and the time of the PXE contact that
// opened this flash cycle, so every reflash is a new instance to cloud-init
// (which runs again), and the record's hostname.
func synthMetaData(m fleet.Machine) string {
	id := "bty-" + m.MAC.Hex()
	if m.Cycle != nil {
		id += "-" + m.Cycle.StartedAt.UTC().Format("20060102T150405.000000000Z")
	}
	var b strings.Builder
	fmt.Fprintf(&b, "instance-id: %s\n", id)
	if m.Hostname != "" {
		fmt.Fprintf(&b, "local-hostname: %s\n", strings.ToLower(m.Hostname))
	}
	return b.String()
}
