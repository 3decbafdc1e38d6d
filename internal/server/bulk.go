package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"

	"github.com/btyproject/bty/internal/api"
	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/labels"
	"github.com/btyproject/bty/internal/store"
)

// Bulk actions on the machines a label selector picks (docs/reference.md,
// "Labels and selectors").

// maxBulk bounds the machines one bulk action may change; bulkWorkers
// how many it changes at once (a power action may wait on a BMC).
const (
	maxBulk     = 1000
	bulkWorkers = 8
)

// The bulk actions.
const (
	bulkSet       = "set"
	bulkReflash   = "reflash"
	bulkKnownGood = "known-good"
	bulkPower     = "power"
	bulkClear     = "clear"
)

var bulkActions = []string{bulkSet, bulkReflash, bulkKnownGood, bulkPower, bulkClear}

// handleBulk answers POST /machines/bulk: one action on every machine
// the selector picks, each machine's outcome in the answer
// (api.BulkResult). The selector is required (no accidental "every
// machine"); a malformed request or a selection larger than maxBulk is a
// 400 that changes nothing; a machine's own refusal (busy, no image, a
// BMC that fails) is its item's error, and the others go on.
func (s *Server) handleBulk(w http.ResponseWriter, r *http.Request) {
	var req api.BulkRequest
	if !decodeJSON(w, r, &req, 4*fleet.MaxSeedBytes) {
		return
	}
	res, code, err := s.bulk(r.Context(), req)
	s.answer(w, r, http.StatusOK, res, code, err)
}

// bulk checks req, selects its machines and runs its action on each.
func (s *Server) bulk(ctx context.Context, req api.BulkRequest) (api.BulkResult, int, error) {
	bad := func(format string, a ...any) (api.BulkResult, int, error) {
		return api.BulkResult{}, http.StatusBadRequest, fmt.Errorf(format, a...)
	}
	if req.Selector == "" {
		return bad("selector: required (like role=ci,rack!=r3): a bulk action never applies to every machine by default")
	}
	reqs, err := labels.Parse(req.Selector)
	if err != nil {
		return bad("selector: %v", err)
	}
	var act func(context.Context, fleet.Machine) (api.BulkItem, error)
	switch req.Action {
	case bulkSet:
		if req.Update == nil || req.Update.IsEmpty() {
			return bad("update: give the fields to set on every selected machine (as in PUT /machines/{mac})")
		}
		if req.Update.Hostname != nil && *req.Update.Hostname != "" {
			return bad("update.hostname: a host name belongs to one machine; set it with PUT /machines/{mac}")
		}
		if errs := machineUpdateErrors(*req.Update); len(errs) > 0 {
			return bad("update.%s", errs[0].Error())
		}
		u := *req.Update
		act = func(ctx context.Context, m fleet.Machine) (api.BulkItem, error) {
			_, _, err := s.updateMachine(ctx, m.MAC, u)
			return api.BulkItem{}, err
		}
	case bulkReflash, bulkKnownGood:
		rr := fleet.ReflashRequest{Image: req.Image, KnownGood: req.Action == bulkKnownGood}
		if errs := rr.Validate(); len(errs) > 0 {
			return bad("%s", errs[0].Error())
		}
		act = func(ctx context.Context, m fleet.Machine) (api.BulkItem, error) {
			res, _, err := s.startReflash(ctx, m.MAC, rr)
			return api.BulkItem{FlashID: res.Flash.ID, Note: res.Note}, err
		}
	case bulkPower:
		a, ok := parseAction(req.Power)
		if !ok {
			return bad(`power: want "on", "off", "cycle" or "status"`)
		}
		act = func(ctx context.Context, m fleet.Machine) (api.BulkItem, error) {
			res, _, err := s.powerAction(ctx, m, a)
			return api.BulkItem{State: res.State}, err
		}
	case bulkClear:
		act = func(ctx context.Context, m fleet.Machine) (api.BulkItem, error) {
			_, code, err := s.clearMachineCtx(ctx, m.MAC)
			if code == http.StatusConflict {
				return api.BulkItem{Note: "nothing to clear"}, nil
			}
			return api.BulkItem{}, err
		}
	default:
		return bad("action %q: want one of %v", req.Action, bulkActions)
	}
	page, err := s.store.QueryMachines(ctx, store.MachineQuery{Selector: reqs, Limit: maxBulk + 1})
	if err != nil {
		return api.BulkResult{}, http.StatusInternalServerError, err
	}
	if n := len(page.Machines); n > maxBulk {
		return bad("selector %q picks %d machines; a bulk action changes at most %d: narrow it", req.Selector, page.Matched, maxBulk)
	}
	out := api.BulkResult{Selector: req.Selector, Action: req.Action, Matched: len(page.Machines), Results: make([]api.BulkItem, len(page.Machines))}
	sem := make(chan struct{}, bulkWorkers)
	var wg sync.WaitGroup
	for i, m := range page.Machines {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			item, err := act(ctx, m)
			item.MAC = m.MAC
			if err != nil {
				item.Error = err.Error()
			}
			out.Results[i] = item
		}()
	}
	wg.Wait()
	for _, it := range out.Results {
		if it.Error != "" {
			out.Failed++
		} else {
			out.OK++
		}
	}
	s.log.Info("bulk action", "action", req.Action, "selector", req.Selector, "matched", out.Matched, "ok", out.OK, "failed", out.Failed)
	return out, http.StatusOK, nil
}

// errNothingToClear is clearMachineCtx's 409.
var errNothingToClear = errors.New("is neither quarantined nor recovering: nothing to clear")
