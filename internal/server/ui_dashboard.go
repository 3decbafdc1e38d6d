package server

import (
	"html/template"
	"net/http"
	"sort"
	"time"

	"github.com/btyproject/bty/internal/fleet"
)

type dashData struct {
	Machines, Discovered, Flashed24h, Images int
	ImagesBytes                              int64
	DiscoveredList, FlashedList              []fleet.Machine
	BootMissing                              []string
	BootDir                                  string
	MissingImages                            []fleet.Machine
	Conflicts                                []fleet.Machine
	Errors                                   []logEntry
	// RecentFlashes are the fleet's last flashes, newest first; Chart
	// the SVG chart of the last 4 weeks' (flashChart).
	RecentFlashes []flashView
	Chart         template.HTML
	// States counts the machines by fleet.Machine.State, in
	// fleet.MachineStates order, with the first few of the states that
	// need attention; Actions are the fleet's latest recovery steps
	// (docs/reference.md, "Failure recovery").
	States  []stateCount
	Actions []fleet.Action
}

// stateCount is one state's machines on the dashboard.
type stateCount struct {
	State    string
	Count    int
	Machines []fleet.Machine // recovering, quarantined, offline: the first 10
}

// The dashboard's flash views: how many recent flashes it lists, the
// chart's window and the most flashes the chart reads.
const (
	dashFlashes     = 10
	dashChartWindow = 28 * 24 * time.Hour
	dashChartMax    = 5000
)

func (s *Server) uiDashboard(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	ms, err := s.store.ListMachines(ctx)
	if err != nil {
		s.uiInternal(w, r, err)
		return
	}
	imgs, err := s.catalog.list(ctx)
	if err != nil {
		s.uiInternal(w, r, err)
		return
	}
	boot, err := s.bootFiles()
	if err != nil {
		s.uiInternal(w, r, err)
		return
	}
	d := dashData{Machines: len(ms), Images: len(imgs), BootDir: s.cfg.BootDir, Errors: s.recent.last(10)}
	inCatalog := map[string]bool{}
	for _, e := range imgs {
		d.ImagesBytes += e.SizeBytes
		inCatalog[e.Name] = true
	}
	since := time.Now().Add(-24 * time.Hour)
	byState := map[string]*stateCount{}
	for _, st := range fleet.MachineStates {
		d.States = append(d.States, stateCount{State: st})
	}
	for i := range d.States {
		byState[d.States[i].State] = &d.States[i]
	}
	for _, m := range ms {
		if c := byState[m.State()]; c != nil {
			c.Count++
			if (c.State == "recovering" || c.State == "quarantined" || c.State == "offline") && len(c.Machines) < 10 {
				c.Machines = append(c.Machines, m)
			}
		}
		if m.Unassigned() {
			d.Discovered++
			d.DiscoveredList = append(d.DiscoveredList, m)
		}
		if m.LastFlashedAt != nil && m.LastFlashedAt.After(since) {
			d.Flashed24h++
			d.FlashedList = append(d.FlashedList, m)
		}
		if m.LastConflictAt != nil && m.LastConflictAt.After(since) {
			d.Conflicts = append(d.Conflicts, m)
		}
		if m.Image != "" && !inCatalog[m.Image] {
			d.MissingImages = append(d.MissingImages, m)
		}
	}
	sort.Slice(d.DiscoveredList, func(i, j int) bool {
		return d.DiscoveredList[i].DiscoveredAt.After(*d.DiscoveredList[j].DiscoveredAt)
	})
	sort.Slice(d.FlashedList, func(i, j int) bool {
		return d.FlashedList[i].LastFlashedAt.After(*d.FlashedList[j].LastFlashedAt)
	})
	d.DiscoveredList = d.DiscoveredList[:min(len(d.DiscoveredList), 10)]
	d.FlashedList = d.FlashedList[:min(len(d.FlashedList), 10)]
	d.MissingImages = d.MissingImages[:min(len(d.MissingImages), 10)]
	sort.Slice(d.Conflicts, func(i, j int) bool { return d.Conflicts[i].LastConflictAt.After(*d.Conflicts[j].LastConflictAt) })
	d.Conflicts = d.Conflicts[:min(len(d.Conflicts), 10)]
	for _, f := range boot {
		if f.Required && !f.Present {
			d.BootMissing = append(d.BootMissing, f.Name)
		}
	}
	if d.Actions, _, err = s.store.ListActions(ctx, fleet.MAC{}, 10, 0); err != nil {
		s.uiInternal(w, r, err)
		return
	}
	now := time.Now()
	recent, _, err := s.store.ListFlashes(ctx, fleet.MAC{}, dashFlashes, 0)
	if err != nil {
		s.uiInternal(w, r, err)
		return
	}
	for _, f := range recent {
		d.RecentFlashes = append(d.RecentFlashes, newFlashView(f, now))
	}
	from := now.Add(-dashChartWindow)
	window, err := s.store.FlashesSince(ctx, from, dashChartMax)
	if err != nil {
		s.uiInternal(w, r, err)
		return
	}
	d.Chart = flashChart(window, from, now)
	s.render(w, r, http.StatusOK, "dashboard", uiPage{Title: "Dashboard", Nav: "dashboard", LoggedIn: true, Data: d})
}

// uiInternal logs err with an error_id and renders a 500 page that
// shows only the id (as internalError does for the API).
func (s *Server) uiInternal(w http.ResponseWriter, r *http.Request, err error) {
	id := s.logInternal("page failed", r, err)
	s.uiError(w, r, http.StatusInternalServerError, "Server error",
		"The page could not be built (error id "+id+"): the server's log has the details under that id.")
}
