package server

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/labels"
	"github.com/btyproject/bty/internal/provision"
	"github.com/btyproject/bty/internal/store"
)

// pathMAC normalises the {mac} of a request; on failure it answers 400
// and returns false.
func pathMAC(w http.ResponseWriter, r *http.Request) (fleet.MAC, bool) {
	mac, err := fleet.ParseMAC(r.PathValue("mac"))
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return fleet.MAC{}, false
	}
	return mac, true
}

// The page sizes of GET /machines (docs/reference.md, "Routes").
const (
	defaultMachinesLimit = 1000
	maxMachinesLimit     = 10000
)

// machinesQuery reads the query of GET /machines: the filter (q,
// policy, discovered), the order (sort, dir) and the page (limit, and
// after or offset). A bad value is an error for a 400 that names it.
func machinesQuery(v url.Values) (store.MachineQuery, error) {
	q := store.MachineQuery{Search: strings.TrimSpace(v.Get("q")), Policy: fleet.Policy(v.Get("policy")),
		Sort: v.Get("sort"), Limit: defaultMachinesLimit}
	bad := func(name, msg string) error { return fmt.Errorf("%s=%q: %s", name, v.Get(name), msg) }
	if q.Policy != "" && !q.Policy.Valid() {
		return q, bad("policy", "not a boot policy (want one of local, flash, tui)")
	}
	if q.Sort != "" && !slices.Contains(store.MachineSorts, q.Sort) {
		return q, bad("sort", "not a column (want one of "+strings.Join(store.MachineSorts, ", ")+")")
	}
	switch v.Get("dir") {
	case "", "asc":
	case "desc":
		q.Desc = true
	default:
		return q, bad("dir", "want asc or desc")
	}
	if sel := v.Get("selector"); sel != "" {
		reqs, err := labels.Parse(sel)
		if err != nil {
			return q, fmt.Errorf("selector: %w", err)
		}
		q.Selector = reqs
	}
	switch v.Get("discovered") {
	case "", "0":
	case "1":
		q.Unassigned = true
	default:
		return q, bad("discovered", "want 1 (only machines discovered by PXE with no image) or 0")
	}
	if raw := v.Get("limit"); raw != "" {
		n, err := strconv.Atoi(raw)
		if err != nil || n < 1 || n > maxMachinesLimit {
			return q, bad("limit", fmt.Sprintf("want a whole number from 1 to %d", maxMachinesLimit))
		}
		q.Limit = n
	}
	if raw := v.Get("offset"); raw != "" {
		n, err := strconv.Atoi(raw)
		if err != nil || n < 0 {
			return q, bad("offset", "want a whole number, 0 or more")
		}
		q.Offset = n
	}
	if raw := v.Get("after"); raw != "" {
		mac, err := fleet.ParseMAC(raw)
		if err != nil {
			return q, bad("after", err.Error())
		}
		if q.Sort != "" && q.Sort != store.SortMAC {
			return q, bad("after", "a MAC cursor works only in MAC order (sort=mac, the default); use offset with other orders")
		}
		q.After = mac
	}
	return q, nil
}

// handleMachines answers one page of machines (a JSON array, as before
// pages), the counts in X-Total-Count and X-Matched-Count, and the next
// page, if any, in a Link header (RFC 8288): in MAC order an after=MAC
// cursor, which neither repeats nor skips a machine while others come
// and go, else offset.
func (s *Server) handleMachines(w http.ResponseWriter, r *http.Request) {
	v := r.URL.Query()
	q, err := machinesQuery(v)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	limit := q.Limit
	q.Limit++ // one more says whether a next page exists
	p, err := s.store.QueryMachines(r.Context(), q)
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	h := w.Header()
	h.Set("X-Total-Count", strconv.Itoa(p.Total))
	h.Set("X-Matched-Count", strconv.Itoa(p.Matched))
	if len(p.Machines) > limit {
		p.Machines = p.Machines[:limit]
		next := cloneValues(v)
		next.Set("limit", strconv.Itoa(limit))
		if q.Sort == "" || q.Sort == store.SortMAC {
			next.Del("offset")
			next.Set("after", p.Machines[limit-1].MAC.String())
		} else {
			next.Set("offset", strconv.Itoa(q.Offset+limit))
		}
		h.Set("Link", fmt.Sprintf(`<%s?%s>; rel="next"`, r.URL.Path, next.Encode()))
	}
	for i := range p.Machines {
		p.Machines[i] = p.Machines[i].Listed()
	}
	writeJSON(w, http.StatusOK, p.Machines)
}

func (s *Server) handleMachineGet(w http.ResponseWriter, r *http.Request) {
	mac, ok := pathMAC(w, r)
	if !ok {
		return
	}
	if m, ok := s.apiMachine(w, r, mac); ok {
		m.Drift = s.drift(r.Context(), m)
		writeJSON(w, http.StatusOK, m)
	}
}

// drift is how m's record differs from its known-good baseline, by the
// catalog's sha256 of its image and the stored workflow's.
func (s *Server) drift(ctx context.Context, m fleet.Machine) []fleet.DriftItem {
	if m.LastKnownGood.IsZero() {
		return nil
	}
	var imageSHA, wfSHA string
	if e, ok := s.catalog.get(ctx, m.Image); ok && e.DecodedSHA256 != nil {
		imageSHA = *e.DecodedSHA256
	}
	if wf, err := s.workflows.read(m.CijoeWorkflowRef); err == nil {
		wfSHA = fleet.SHA256Hex(wf)
	}
	return m.DriftFrom(imageSHA, wfSHA)
}

// apiMachine reads the machine mac for an API route; on failure it has
// answered (404 unknown, 500 otherwise) and returns false.
func (s *Server) apiMachine(w http.ResponseWriter, r *http.Request, mac fleet.MAC) (fleet.Machine, bool) {
	m, err := s.store.GetMachine(r.Context(), mac)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, "no machine "+mac.String())
		return m, false
	}
	if err != nil {
		s.internalError(w, r, err)
		return m, false
	}
	return m, true
}

func (s *Server) handleMachinePut(w http.ResponseWriter, r *http.Request) {
	mac, ok := pathMAC(w, r)
	if !ok {
		return
	}
	var u fleet.MachineUpdate
	if !decodeJSON(w, r, &u, 4*fleet.MaxSeedBytes) {
		return
	}
	m, created, err := s.updateMachine(r.Context(), mac, u)
	if fleet.IsValidation(err) {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	code := http.StatusOK
	if created {
		code = http.StatusCreated
	}
	writeJSON(w, code, m)
}

// machineUpdateErrors checks every field of u, so a form can show each
// problem next to its field: fleet's bounds (MachineUpdate.Validate),
// then, for a field within them, its finer rules (names as checkName,
// host names as RFC 1123, seeds as bty flash checks them). PUT
// /machines, the UI's forms and POST /state/import all check here.
func machineUpdateErrors(u fleet.MachineUpdate) []*fleet.ValidationError {
	errs := u.Validate()
	bad := map[string]bool{}
	for _, e := range errs {
		bad[e.Field] = true
	}
	if u.Hostname != nil && *u.Hostname != "" && !bad["hostname"] {
		if err := provision.CheckHostname(*u.Hostname); err != nil {
			errs = append(errs, &fleet.ValidationError{Field: "hostname", Msg: err.Error()})
		}
	}
	for _, f := range []struct {
		field string
		v     *string
	}{{"image", u.Image}} {
		if f.v != nil && *f.v != "" && !bad[f.field] {
			if err := checkName(*f.v); err != nil {
				errs = append(errs, &fleet.ValidationError{Field: f.field, Msg: err.Error() + "; use a name from GET /images"})
			}
		}
	}
	if !bad["labels"] {
		for _, k := range slices.Sorted(maps.Keys(u.Labels)) {
			if err := labels.Check(k, u.Labels[k]); err != nil {
				errs = append(errs, &fleet.ValidationError{Field: "labels", Msg: err.Error()})
				break
			}
		}
	}
	// The seed is checked as bty flash checks --user-data/--meta-data:
	// a #cloud-config that is not YAML is refused with its line.
	for _, f := range []struct {
		field string
		v     *string
		check func([]byte) error
	}{{"user_data", u.UserData, provision.CheckUserData}, {"meta_data", u.MetaData, provision.CheckMetaData}} {
		if f.v != nil && *f.v != "" && !bad[f.field] {
			if err := f.check([]byte(*f.v)); err != nil {
				errs = append(errs, &fleet.ValidationError{Field: f.field, Msg: err.Error()})
			}
		}
	}
	return errs
}

// updateMachine validates u (a *fleet.ValidationError names the field)
// and applies it, publishing the change.
func (s *Server) updateMachine(ctx context.Context, mac fleet.MAC, u fleet.MachineUpdate) (fleet.Machine, bool, error) {
	if errs := machineUpdateErrors(u); len(errs) > 0 {
		return fleet.Machine{}, false, errs[0]
	}
	perrs, err := s.powerErrors(ctx, mac, u.Power)
	if err != nil {
		return fleet.Machine{}, false, err
	}
	if len(perrs) > 0 {
		return fleet.Machine{}, false, perrs[0]
	}
	if u.Power, err = s.sealPassword(u.Power); err != nil {
		return fleet.Machine{}, false, err
	}
	// cijoe-online needs a stored workflow: checked on the record as
	// the update would leave it.
	if u.ProvisioningMode != nil || u.CijoeWorkflowRef != nil || u.Labels != nil {
		cur, err := s.store.GetMachine(ctx, mac)
		switch {
		case errors.Is(err, store.ErrNotFound):
			cur = fleet.NewMachine(mac, u, time.Now())
		case err != nil:
			return fleet.Machine{}, false, err
		default:
			cur = cur.Apply(u, time.Now())
		}
		if e := s.checkWorkflowRef(cur); e != nil {
			return fleet.Machine{}, false, e
		}
		if len(cur.Labels) > fleet.MaxLabels {
			return fleet.Machine{}, false, &fleet.ValidationError{Field: "labels", Msg: fmt.Sprintf("the machine would have %d labels; the limit is %d: remove some (KEY: null)", len(cur.Labels), fleet.MaxLabels)}
		}
	}
	m, created, err := store.PutMachine(ctx, s.store, mac, u, time.Now())
	if err != nil {
		return fleet.Machine{}, false, err
	}
	s.publishMachine(m)
	return m, created, nil
}

// deleteMachine deletes a machine (store.ErrNotFound when unknown) and
// publishes the deletion.
func (s *Server) deleteMachine(ctx context.Context, mac fleet.MAC) error {
	runs, _, err := s.store.ListRuns(ctx, mac, 0, 0)
	if err != nil {
		return err
	}
	if err := s.store.DeleteMachine(ctx, mac); err != nil {
		return err
	}
	s.runs.removeAll(runs)
	s.publishDelete(mac)
	return nil
}

func (s *Server) handleMachineDelete(w http.ResponseWriter, r *http.Request) {
	mac, ok := pathMAC(w, r)
	if !ok {
		return
	}
	err := s.deleteMachine(r.Context(), mac)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, "no machine "+mac.String())
		return
	}
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
