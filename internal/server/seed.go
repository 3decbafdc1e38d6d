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
// the seed, which may hold secrets, goes only to the machine itself
// while it flashes: its last PXE contact was served the flash live env,
// no done has come since, and the request comes from the address of that
// contact. Anything else is a 404 that does not say which rule failed;
// the server's log does.
func (s *Server) handlePXESeed(what string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		mac, ok := pathMAC(w, r)
		if !ok {
			return
		}
		refuse := func(why string) {
			s.log.Info("seed refused", "mac", mac, "what", what, "ip", clientAddr(r), "why", why)
			writeError(w, http.StatusNotFound, "no "+what+" for "+mac.String()+" here: it is served only to the machine, from the address of its last PXE contact, while it flashes")
		}
		m, err := s.store.GetMachine(r.Context(), mac)
		switch {
		case errors.Is(err, store.ErrNotFound):
			refuse("unknown machine")
			return
		case err != nil:
			s.internalError(w, r, err)
			return
		case !m.InFlashCycle():
			refuse("not in a flash cycle (last served " + string(m.LastServed) + ")")
			return
		case clientAddr(r) != m.LastSeenIP:
			refuse("asked from another address than the last PXE contact (" + m.LastSeenIP + ")")
			return
		}
		var body string
		switch what {
		case "user-data":
			if m.UserData == "" {
				refuse("no user_data on the record")
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
// started this flash, so every reflash is a new instance to cloud-init
// (which runs again), and the record's hostname.
func synthMetaData(m fleet.Machine) string {
	id := "bty-" + m.MAC.Hex()
	if m.LastSeenAt != nil {
		id += "-" + m.LastSeenAt.UTC().Format("20060102T150405.000000000Z")
	}
	var b strings.Builder
	fmt.Fprintf(&b, "instance-id: %s\n", id)
	if m.Hostname != "" {
		fmt.Fprintf(&b, "local-hostname: %s\n", strings.ToLower(m.Hostname))
	}
	return b.String()
}
