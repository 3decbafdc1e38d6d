package server

import (
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/store"
)

// handlePXEInventory records the live env's hardware report (POST
// /pxe/{mac}/inventory; docs/reference.md, "Inventory"). The route is
// open like done: it is taken only in the machine's open flash cycle,
// with its token, from the address of its PXE contact
// (store.RecordInventory); a refusal writes nothing. The body is
// bounded (fleet.MaxInventoryBytes, 413), checked (fleet.DecodeInventory,
// 400) and rate limited per machine and address (429) before the store
// is asked.
func (s *Server) handlePXEInventory(w http.ResponseWriter, r *http.Request) {
	mac, ok := pathMAC(w, r)
	if !ok {
		return
	}
	call := cycleCall(r)
	// One report per boot is expected: a few more from one address are
	// dropped before the body is read or the store asked.
	if ok, _ := s.progressLimit.allow("inventory "+mac.String()+" "+call.IP, call.At); !ok {
		writeError(w, http.StatusTooManyRequests, "too many inventory reports for this machine: one per boot is expected; try again in a few seconds")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, fleet.MaxInventoryBytes))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("the inventory is larger than %d bytes: send fewer devices", fleet.MaxInventoryBytes))
		return
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "reading the inventory: "+err.Error())
		return
	}
	inv, err := fleet.DecodeInventory(body)
	if err != nil {
		writeError(w, http.StatusBadRequest, "inventory: "+err.Error())
		return
	}
	m, err := store.RecordInventory(r.Context(), s.store, mac, inv, call)
	if !s.answerReport(w, r, mac, "inventory", m, err) {
		return
	}
	s.log.Info("inventory recorded", "mac", m.MAC, "via", mac, "ip", call.IP, "nics", len(inv.NICs), "disks", len(inv.Disks),
		"derived_labels", m.DerivedLabels.String())
	s.warnUnlinked(r, m)
}

// warnUnlinked logs the NICs of m's inventory the store did not link to
// it (another record has the MAC, or another machine linked it first:
// docs/reference.md, "Inventory"), at most once a minute per machine.
func (s *Server) warnUnlinked(r *http.Request, m fleet.Machine) {
	if m.Inventory == nil {
		return
	}
	var unlinked []string
	for _, n := range m.Inventory.NICs {
		if n.MAC == m.MAC {
			continue
		}
		if owner, err := s.store.MachineByNIC(r.Context(), n.MAC); err != nil || owner != m.MAC {
			unlinked = append(unlinked, n.MAC.String())
		}
	}
	if len(unlinked) == 0 {
		return
	}
	if ok, _ := s.warnLimit.allow("unlinked "+m.MAC.String(), *m.InventoryAt); ok {
		s.log.Warn("inventory: NICs not linked to the machine: another record has the MAC or another machine linked it first (delete a stray record to let the next report link it)",
			"mac", m.MAC, "nics", unlinked)
	}
}

// nicLinks are the MACs of m's inventory's other NICs with whether each
// is linked to m (a contact from it is m's), for the machine page.
func (s *Server) nicLinks(r *http.Request, m fleet.Machine) map[fleet.MAC]bool {
	out := map[fleet.MAC]bool{}
	if m.Inventory == nil {
		return out
	}
	for _, n := range m.Inventory.NICs {
		owner, err := s.store.MachineByNIC(r.Context(), n.MAC)
		out[n.MAC] = n.MAC == m.MAC || err == nil && owner == m.MAC
	}
	return out
}
