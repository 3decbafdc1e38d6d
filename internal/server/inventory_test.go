package server

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/btyproject/bty/internal/api"
	"github.com/btyproject/bty/internal/fleet"
)

// inventoryBody is an inventory report listing nics.
func inventoryBody(t *testing.T, nics ...string) string {
	t.Helper()
	inv := api.Inventory{Firmware: "uefi", CPUModel: "AMD EPYC 7543", CPUs: 64, MemoryBytes: 256 << 30,
		Disks: []api.InventoryDisk{{Name: "nvme0n1", Model: "SAMSUNG MZQL23T8", Serial: "S64H", SizeBytes: 3840755982336, Transport: "nvme"}},
		PCI:   []api.PCIDevice{{Address: "0000:41:00.0", Vendor: "0x10de", Device: "0x20b5", Class: "0x030200", Kind: "gpu"}}}
	for i, n := range nics {
		inv.NICs = append(inv.NICs, api.NIC{MAC: fleet.MustParseMAC(n), Name: fmt.Sprintf("eno%d", i+1), SpeedMbps: 25000, Link: true})
	}
	b, err := json.Marshal(inv)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func (ts *testServer) machine(t *testing.T, mac string) fleet.Machine {
	t.Helper()
	var m fleet.Machine
	r := ts.do(t, "GET", "/machines/"+mac, nil, ts.auth())
	if r.code != 200 {
		t.Fatalf("GET /machines/%s: %d %s", mac, r.code, r.body)
	}
	r.json(t, &m)
	return m
}

// TestPXEInventory: the route takes an inventory only in the machine's
// flash cycle (its token, from its address) and within its bounds; a
// refusal of any kind writes nothing; an accepted one is on the record
// (GET /machines/{mac}) with its derived labels, and the answer carries
// nothing but the status.
func TestPXEInventory(t *testing.T) {
	ts := startServer(t, nil)
	const mac = "52:54:00:1e:00:01"
	if r := ts.do(t, "PUT", "/machines/"+mac, strings.NewReader(`{"boot_policy":"tui","labels":{"role":"ci"}}`), ts.auth()); r.code != 201 {
		t.Fatalf("PUT: %d %s", r.code, r.body)
	}
	_, cycle := ts.boot(t, "127.0.0.1", mac)
	if cycle == "" {
		t.Fatal("no flash cycle")
	}
	before := ts.machine(t, mac)
	body := inventoryBody(t, mac, "52:54:00:1e:00:02")
	tooMany := make([]string, fleet.MaxInventoryNICs+1)
	for i := range tooMany {
		tooMany[i] = fmt.Sprintf("52:54:00:1f:%02x:%02x", i/256, i%256)
	}
	for _, tc := range []struct {
		name, ip, cycle, body string
		code                  int
		says                  string
	}{
		{"another address", "127.0.0.2", cycle, body, 403, "refused"},
		{"wrong token", "127.0.0.1", fleet.NewCycleToken(), body, 403, "refused"},
		{"no token", "127.0.0.3", "", body, 403, "refused"},
		{"oversized", "127.0.0.4", cycle, `{"cpu_model":"` + strings.Repeat("x", fleet.MaxInventoryBytes) + `"}`, 413, "larger than"},
		{"too many NICs", "127.0.0.5", cycle, inventoryBody(t, tooMany...), 400, "nics"},
		{"long serial", "127.0.0.6", cycle, `{"disks":[{"serial":"` + strings.Repeat("s", fleet.MaxInventoryText+1) + `"}]}`, 400, "disks[0].serial"},
		{"not JSON", "127.0.0.7", cycle, `{"nics":`, 400, "JSON"},
		{"bad MAC", "127.0.0.8", cycle, `{"nics":[{"mac":"not-a-mac"}]}`, 400, "inventory"},
	} {
		r := ts.callFrom(t, tc.ip, "POST", "/pxe/"+mac+"/inventory", tc.cycle, strings.NewReader(tc.body))
		if r.code != tc.code || !strings.Contains(string(r.body), tc.says) {
			t.Errorf("%s: %d %s, want %d saying %q", tc.name, r.code, r.body, tc.code, tc.says)
		}
	}
	if diff := cmp.Diff(before, ts.machine(t, mac)); diff != "" {
		t.Fatalf("refused inventories changed the record (-before +after):\n%s", diff)
	}
	if owner, err := ts.st.MachineByNIC(context.Background(), fleet.MustParseMAC("52:54:00:1e:00:02")); err == nil {
		t.Fatalf("a refused inventory linked a NIC to %v", owner)
	}

	r := ts.callFrom(t, "127.0.0.1", "POST", "/pxe/"+mac+"/inventory", cycle, strings.NewReader(body))
	var st map[string]any
	if r.code != 200 || json.Unmarshal(r.body, &st) != nil || len(st) != 1 || st["status"] != "recorded" {
		t.Fatalf("inventory from the cycle: %d %s", r.code, r.body)
	}
	m := ts.machine(t, mac)
	if m.Inventory == nil || m.InventoryAt == nil || len(m.Inventory.NICs) != 2 || m.Inventory.CPUModel != "AMD EPYC 7543" {
		t.Fatalf("the record's inventory: %+v at %v", m.Inventory, m.InventoryAt)
	}
	wantDerived := fleet.Labels{"firmware": "uefi", "cpus": "64", "memory-gib": "256", "nvme": "1", "gpu": "nvidia"}
	if diff := cmp.Diff(wantDerived, m.DerivedLabels); diff != "" {
		t.Errorf("derived labels (-want +got):\n%s", diff)
	}
	if m.Labels["role"] != "ci" || len(m.Labels) != 1 {
		t.Errorf("the operator's labels changed: %v", m.Labels)
	}
	// Selectors match the derived labels.
	var page []fleet.Machine
	if r := ts.do(t, "GET", "/machines?selector=gpu%3Dnvidia,role%3Dci", nil, ts.auth()); r.code != 200 {
		t.Fatalf("GET /machines?selector: %d %s", r.code, r.body)
	} else if r.json(t, &page); len(page) != 1 || page[0].MAC.String() != mac {
		t.Errorf("selector gpu=nvidia,role=ci: %d machines", len(page))
	} else if page[0].Inventory != nil || page[0].InventoryAt == nil || page[0].DerivedLabels["gpu"] != "nvidia" {
		t.Errorf("a list's record: inventory %v (want it left out), inventory_at %v, derived %v", page[0].Inventory != nil, page[0].InventoryAt, page[0].DerivedLabels)
	}
	page = nil
	ts.do(t, "GET", "/machines?selector=gpu%3Damd", nil, ts.auth()).json(t, &page)
	if len(page) != 0 {
		t.Errorf("selector gpu=amd: %d machines", len(page))
	}

	// The machine page shows the inventory and the derived labels.
	page2 := ts.do(t, "GET", "/ui/machines/"+mac, nil, map[string]string{"Cookie": CookieName + "=" + ts.token})
	html := string(page2.body)
	if page2.code != 200 {
		t.Fatalf("GET /ui/machines: %d %.2000s", page2.code, html)
	}
	for _, want := range []string{`<h2 id="h-inventory">Inventory</h2>`, "AMD EPYC 7543", "nvme0n1", "SAMSUNG MZQL23T8", "S64H", "3.5 TiB",
		"<code>52:54:00:1e:00:02</code>", "25000 Mb/s", "this machine", "<code>gpu=nvidia</code>", "<code>0x10de:0x20b5</code>"} {
		if !strings.Contains(html, want) {
			t.Errorf("the machine page lacks %q", want)
		}
	}

	// One report per boot: a burst from one address is held back.
	codes := map[int]int{}
	for range 4 {
		codes[ts.callFrom(t, "127.0.0.1", "POST", "/pxe/"+mac+"/inventory", cycle, strings.NewReader(body)).code]++
	}
	if codes[429] == 0 {
		t.Errorf("a burst of inventories: %v, want some 429", codes)
	}
}

// TestPXESecondNIC: after the inventory linked a machine's second NIC,
// a PXE contact from that NIC is the machine's (no discovered record;
// the script names the NIC that asked, for the live env to bring up)
// and the live env's calls by it reach the machine's record. Another
// machine's inventory claiming that NIC, or another record's MAC,
// changes nothing of theirs.
func TestPXESecondNIC(t *testing.T) {
	ts := startServer(t, nil)
	const (
		primary = "52:54:00:2e:00:01"
		second  = "52:54:00:2e:00:02"
		other   = "52:54:00:2e:0b:01" // another machine's record
		hostile = "52:54:00:2e:0c:01"
	)
	for mac, policy := range map[string]string{primary: "tui", other: "local", hostile: "tui"} {
		if r := ts.do(t, "PUT", "/machines/"+mac, strings.NewReader(`{"boot_policy":"`+policy+`"}`), ts.auth()); r.code != 201 {
			t.Fatalf("PUT %s: %d %s", mac, r.code, r.body)
		}
	}
	_, cycle := ts.boot(t, "127.0.0.1", primary)
	if r := ts.callFrom(t, "127.0.0.1", "POST", "/pxe/"+primary+"/inventory", cycle, strings.NewReader(inventoryBody(t, primary, second))); r.code != 200 {
		t.Fatalf("inventory: %d %s", r.code, r.body)
	}

	// The machine boots from its second NIC.
	script, cycle2 := ts.boot(t, "127.0.0.1", second)
	if cycle2 == "" || !strings.Contains(script, "bty.mac="+second) || !strings.Contains(script, "bty.mode=interactive") {
		t.Fatalf("the second NIC's script:\n%s", script)
	}
	if r := ts.do(t, "GET", "/machines/"+second, nil, ts.auth()); r.code != 404 {
		t.Fatalf("GET /machines/%s: %d, want 404 (no record for the second NIC)", second, r.code)
	}
	var page []fleet.Machine
	ts.do(t, "GET", "/machines", nil, ts.auth()).json(t, &page)
	if len(page) != 3 {
		t.Fatalf("%d machines, want 3 (none discovered)", len(page))
	}
	if r := ts.callFrom(t, "127.0.0.1", "POST", "/pxe/"+second+"/failed", cycle2, strings.NewReader("disk on fire")); r.code != 200 {
		t.Fatalf("failed by the second NIC: %d %s", r.code, r.body)
	}
	if m := ts.machine(t, primary); m.LastFailure != "disk on fire" {
		t.Fatalf("the primary's last failure: %q", m.LastFailure)
	}

	// A hostile machine in its own cycle claims the second NIC and the
	// other machine's MAC.
	_, hcycle := ts.boot(t, "127.0.0.9", hostile)
	if r := ts.callFrom(t, "127.0.0.9", "POST", "/pxe/"+hostile+"/inventory", hcycle, strings.NewReader(inventoryBody(t, hostile, second, other))); r.code != 200 {
		t.Fatalf("hostile inventory: %d %s", r.code, r.body)
	}
	if owner, err := ts.st.MachineByNIC(context.Background(), fleet.MustParseMAC(second)); err != nil || owner.String() != primary {
		t.Fatalf("the second NIC after the claim: %v, %v; want %s", owner, err, primary)
	}
	if script, _ := ts.boot(t, "127.0.0.4", other); !strings.Contains(script, "booting from the local disk") {
		t.Fatalf("the other machine's own MAC was taken:\n%s", script)
	}
	html := string(ts.do(t, "GET", "/ui/machines/"+hostile, nil, map[string]string{"Cookie": CookieName + "=" + ts.token}).body)
	if n := strings.Count(html, "not linked: another record has this MAC"); n != 2 {
		t.Errorf("the hostile machine's page shows %d NICs not linked, want 2", n)
	}
	if m := ts.machine(t, other); m.Inventory != nil || m.LastSeenIP != "127.0.0.4" {
		t.Fatalf("the other machine's record: inventory %v, last seen %q", m.Inventory, m.LastSeenIP)
	}
}
