package sqlitestore

import (
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	gocmp "github.com/google/go-cmp/cmp"

	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/store"
)

// refMatches and refCompare are the machine table's filter and order as
// bty-web's UI computed them in Go over every record before the store
// did the work (internal/server/ui_machines.go, matches and
// compareMachines): QueryMachines must give the same answer.
func refMatches(m fleet.Machine, q store.MachineQuery) bool {
	s := strings.ToLower(strings.TrimSpace(q.Search))
	if s != "" {
		flat := strings.NewReplacer(":", "", "-", "", ".", "").Replace(s)
		if !(strings.Contains(m.MAC.String(), s) || (flat != "" && strings.Contains(m.MAC.Hex(), flat)) ||
			strings.Contains(strings.ToLower(m.Hostname), s) || strings.Contains(strings.ToLower(m.Image), s) ||
			strings.Contains(m.LastSeenIP, s)) {
			return false
		}
	}
	return (q.Policy == "" || m.BootPolicy == q.Policy) && (!q.Unassigned || m.Unassigned())
}

func refTimeKey(t *time.Time) int64 {
	if t == nil {
		return 0
	}
	return t.UnixNano()
}

func refCompare(key string) func(a, b fleet.Machine) int {
	return func(a, b fleet.Machine) int {
		var c int
		switch key {
		case "hostname":
			c = cmp.Compare(a.Hostname, b.Hostname)
		case "image":
			c = cmp.Compare(a.Image, b.Image)
		case "policy":
			c = cmp.Compare(a.BootPolicy, b.BootPolicy)
		case "next_boot":
			c = cmp.Compare(fleet.Decide(a).Why, fleet.Decide(b).Why)
		case "last_seen":
			c = cmp.Compare(refTimeKey(a.LastSeenAt), refTimeKey(b.LastSeenAt))
		case "last_flashed":
			c = cmp.Compare(refTimeKey(a.LastFlashedAt), refTimeKey(b.LastFlashedAt))
		}
		if c == 0 {
			c = cmp.Compare(a.MAC.String(), b.MAC.String())
		}
		return c
	}
}

// refQuery is QueryMachines done in Go over every record.
func refQuery(all []fleet.Machine, q store.MachineQuery) store.MachinePage {
	var shown []fleet.Machine
	for _, m := range all {
		if refMatches(m, q) {
			shown = append(shown, m)
		}
	}
	slices.SortStableFunc(shown, refCompare(q.Sort))
	if q.Desc {
		slices.Reverse(shown)
	}
	p := store.MachinePage{Total: len(all), Matched: len(shown), Machines: []fleet.Machine{}}
	if !q.After.IsZero() {
		i := slices.IndexFunc(shown, func(m fleet.Machine) bool {
			if q.Desc {
				return m.MAC.String() < q.After.String()
			}
			return m.MAC.String() > q.After.String()
		})
		if i < 0 {
			i = len(shown)
		}
		shown = shown[i:]
	}
	shown = shown[min(q.Offset, len(shown)):]
	if q.Limit > 0 {
		shown = shown[:min(q.Limit, len(shown))]
	}
	return store.MachinePage{Total: p.Total, Matched: p.Matched, Machines: append(p.Machines, shown...)}
}

// randomFleet stores n machines with every kind of value the filter and
// the orders look at: ties on each sort column, missing times, every
// policy and next boot, discovered and not, upper-case and non-ASCII
// names.
func randomFleet(t *testing.T, s *SQLite, n int) []fleet.Machine {
	t.Helper()
	r := rand.New(rand.NewPCG(7, 11))
	pick := func(vs ...string) string { return vs[r.IntN(len(vs))] }
	var ms []fleet.Machine
	for i := range n {
		m := fleet.Machine{
			MAC:        fleet.MustParseMAC(fmt.Sprintf("%02x:00:5e:%02x:%02x:%02x", 2+2*r.IntN(3), r.IntN(4), i>>8, i&0xff)),
			Image:      pick("", "", "debian-13.qcow2", "Ubuntu-24.04.img.zst", "ÉCOLE.raw", "a"),
			Hostname:   pick("", "", "node-1", "Node-2", "web-a", "db"),
			BootPolicy: fleet.Policies[r.IntN(3)],
			NextBoot:   []fleet.NextBoot{fleet.NextFlash, fleet.NextLocal}[r.IntN(2)],
			LastSeenIP: pick("", "10.0.0.1", "10.0.0.12", "192.168.1.5", "fe80::1"),
			CreatedAt:  t0, UpdatedAt: t0,
		}
		tm := func() *time.Time {
			if r.IntN(3) == 0 {
				return nil
			}
			v := t0.Add(time.Duration(r.IntN(5)) * time.Hour)
			return &v
		}
		m.DiscoveredAt, m.LastSeenAt, m.LastFlashedAt = tm(), tm(), tm()
		ms = append(ms, m)
	}
	if err := s.ImportMachines(context.Background(), slices.Clone(ms)); err != nil {
		t.Fatal(err)
	}
	all, err := s.ListMachines(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return all
}

func macsOf(ms []fleet.Machine) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.MAC.String()
	}
	return out
}

// TestQueryMachinesMatchesReference: every filter, order and page of
// QueryMachines is what the UI computed in Go over every record.
func TestQueryMachinesMatchesReference(t *testing.T) {
	s, _ := openTest(t)
	all := randomFleet(t, s, 300)
	searches := []string{"", "NODE", "node-2", "0a", "00:5e:01", "005e01", "00-5e-01", "10.0.0.1", "école", "É", "UBUNTU", ".", "zz-none"}
	var qs []store.MachineQuery
	for _, sort := range append([]string{""}, store.MachineSorts...) {
		for _, desc := range []bool{false, true} {
			for _, search := range searches {
				qs = append(qs, store.MachineQuery{Sort: sort, Desc: desc, Search: search, Limit: 40})
			}
			qs = append(qs,
				store.MachineQuery{Sort: sort, Desc: desc},
				store.MachineQuery{Sort: sort, Desc: desc, Policy: fleet.PolicyFlash, Offset: 20, Limit: 25},
				store.MachineQuery{Sort: sort, Desc: desc, Unassigned: true, Offset: 3},
				store.MachineQuery{Sort: sort, Desc: desc, Unassigned: true, Policy: fleet.PolicyTUI, Search: "node", Offset: 1000, Limit: 5},
			)
		}
	}
	for _, desc := range []bool{false, true} {
		for _, after := range []int{0, 1, 150, 299} {
			qs = append(qs, store.MachineQuery{After: all[after].MAC, Desc: desc, Limit: 30},
				store.MachineQuery{After: all[after].MAC, Desc: desc, Policy: fleet.PolicyLocal, Sort: store.SortMAC})
		}
	}
	for _, q := range qs {
		got, err := s.QueryMachines(context.Background(), q)
		if err != nil {
			t.Fatalf("%+v: %v", q, err)
		}
		want := refQuery(all, q)
		if got.Total != want.Total || got.Matched != want.Matched {
			t.Errorf("%+v: total %d matched %d, want %d %d", q, got.Total, got.Matched, want.Total, want.Matched)
		}
		if d := gocmp.Diff(macsOf(want.Machines), macsOf(got.Machines)); d != "" {
			t.Errorf("%+v: page (-want +got):\n%s", q, d)
		}
	}
	// The records come back whole.
	p, err := s.QueryMachines(context.Background(), store.MachineQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if d := gocmp.Diff(all, p.Machines); d != "" {
		t.Errorf("QueryMachines{} differs from ListMachines (-list +query):\n%s", d)
	}
}

// TestNextBootWhyIsDecide: the SQL expression the next_boot order uses
// is fleet.Decide(m).Why for every policy, next boot and image.
func TestNextBootWhyIsDecide(t *testing.T) {
	s, _ := openTest(t)
	var ms []fleet.Machine
	i := 0
	for _, p := range append(slices.Clone(fleet.Policies), "") {
		for _, nb := range []fleet.NextBoot{fleet.NextFlash, fleet.NextLocal} {
			for _, img := range []string{"", "debian.img"} {
				i++
				ms = append(ms, fleet.Machine{MAC: fleet.MustParseMAC(fmt.Sprintf("02:00:00:00:00:%02x", i)), BootPolicy: p, NextBoot: nb, Image: img, CreatedAt: t0, UpdatedAt: t0})
			}
		}
	}
	err := s.write(context.Background(), func(ctx context.Context, tx dbtx) error {
		for _, m := range ms {
			if err := insertMachine(ctx, tx, m); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		var why string
		if err := s.r.QueryRow(`SELECT `+nextBootWhy+` FROM machines WHERE mac = ?`, m.MAC.String()).Scan(&why); err != nil {
			t.Fatal(err)
		}
		if want := fleet.Decide(m).Why; why != want {
			t.Errorf("policy %q next %q image %q: SQL says %q, fleet.Decide %q", m.BootPolicy, m.NextBoot, m.Image, why, want)
		}
	}
}

func TestQueryMachinesRefusesBadQueries(t *testing.T) {
	s, _ := openTest(t)
	for _, q := range []store.MachineQuery{
		{Sort: "color"}, {Offset: -1}, {Limit: -5}, {Policy: "reboot"},
		{Sort: store.SortHostname, After: fleet.MustParseMAC("02:00:00:00:00:01")},
	} {
		if _, err := s.QueryMachines(context.Background(), q); !fleet.IsValidation(err) {
			t.Errorf("%+v: err %v, want a validation error", q, err)
		}
	}
}

// TestQuerySelector: a label selector filters in the database (the
// label rows follow every write: set, change, removal, delete) with
// Kubernetes' meaning of each operator, and combines with the other
// filters and the counts.
func TestQuerySelector(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	ptr := func(s string) *string { return &s }
	set := func(mac string, u fleet.LabelUpdate) {
		t.Helper()
		if _, _, err := store.PutMachine(ctx, s, fleet.MustParseMAC(mac), fleet.MachineUpdate{Labels: u}, t0); err != nil {
			t.Fatal(err)
		}
	}
	set("52:54:00:00:00:01", fleet.LabelUpdate{"role": ptr("ci"), "rack": ptr("r1"), "gpu": ptr("a100")})
	set("52:54:00:00:00:02", fleet.LabelUpdate{"role": ptr("ci"), "rack": ptr("r3")})
	set("52:54:00:00:00:03", fleet.LabelUpdate{"role": ptr("build")})
	set("52:54:00:00:00:04", nil)
	macs := func(sel []fleet.LabelRequirement) string {
		t.Helper()
		p, err := s.QueryMachines(ctx, store.MachineQuery{Selector: sel})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, m := range p.Machines {
			out = append(out, m.MAC.String()[15:])
		}
		if p.Total != 4 || p.Matched != len(p.Machines) {
			t.Errorf("counts: total %d matched %d of %d", p.Total, p.Matched, len(p.Machines))
		}
		return strings.Join(out, " ")
	}
	req := func(k string, op fleet.LabelOp, vals ...string) fleet.LabelRequirement {
		return fleet.LabelRequirement{Key: k, Op: op, Values: vals}
	}
	for _, tt := range []struct {
		sel  []fleet.LabelRequirement
		want string
	}{
		{nil, "01 02 03 04"},
		{[]fleet.LabelRequirement{req("role", fleet.LabelEquals, "ci")}, "01 02"},
		{[]fleet.LabelRequirement{req("role", fleet.LabelEquals, "ci"), req("rack", fleet.LabelNotEquals, "r3")}, "01"},
		{[]fleet.LabelRequirement{req("rack", fleet.LabelNotEquals, "r3")}, "01 03 04"},
		{[]fleet.LabelRequirement{req("role", fleet.LabelIn, "ci", "build")}, "01 02 03"},
		{[]fleet.LabelRequirement{req("role", fleet.LabelNotIn, "ci")}, "03 04"},
		{[]fleet.LabelRequirement{req("gpu", fleet.LabelExists)}, "01"},
		{[]fleet.LabelRequirement{req("role", fleet.LabelNotExists)}, "04"},
	} {
		if got := macs(tt.sel); got != tt.want {
			t.Errorf("selector %+v: %q, want %q", tt.sel, got, tt.want)
		}
	}
	// A change and a removal move the machine; a delete drops its rows.
	set("52:54:00:00:00:02", fleet.LabelUpdate{"rack": nil, "role": ptr("build")})
	if got := macs([]fleet.LabelRequirement{req("role", fleet.LabelEquals, "build")}); got != "02 03" {
		t.Errorf("after relabelling 02: %q", got)
	}
	if got := macs([]fleet.LabelRequirement{req("rack", fleet.LabelExists)}); got != "01" {
		t.Errorf("after removing 02's rack: %q", got)
	}
	m, _ := s.GetMachine(ctx, fleet.MustParseMAC("52:54:00:00:00:02"))
	if m.Labels.String() != "role=build" {
		t.Errorf("02's labels: %v", m.Labels)
	}
	if err := s.DeleteMachine(ctx, fleet.MustParseMAC("52:54:00:00:00:01")); err != nil {
		t.Fatal(err)
	}
	var rows int
	if err := s.r.QueryRowContext(ctx, `SELECT count(*) FROM machine_labels WHERE mac = '52:54:00:00:00:01'`).Scan(&rows); err != nil || rows != 0 {
		t.Errorf("label rows of a deleted machine: %d %v", rows, err)
	}
}
