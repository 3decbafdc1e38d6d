package fleet

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestDerivedLabels(t *testing.T) {
	gpu := func(vendor, device string) PCIDevice {
		return PCIDevice{Address: "0000:01:00.0", Vendor: vendor, Device: device, Class: "0x030000", Kind: "gpu"}
	}
	for _, tc := range []struct {
		name string
		inv  *Inventory
		want Labels
	}{
		{"none", nil, nil},
		{"empty", &Inventory{}, nil},
		{"server", &Inventory{Firmware: "uefi", CPUs: 64, MemoryBytes: 503 << 30,
			Disks: []InventoryDisk{{Transport: "nvme"}, {Transport: "nvme"}, {Transport: "sata"}},
			PCI:   []PCIDevice{gpu("0x1a03", "0x2000"), gpu("0x10de", "0x20b0"), {Vendor: "0x144d", Device: "0xa808", Class: "0x010802", Kind: "nvme"}}},
			Labels{"firmware": "uefi", "cpus": "64", "memory-gib": "503", "nvme": "2", "gpu": "nvidia"}},
		{"bmc video only", &Inventory{Firmware: "bios", PCI: []PCIDevice{gpu("0x1a03", "0x2000")}},
			Labels{"firmware": "bios", "gpu": "aspeed"}},
		{"unknown vendor", &Inventory{PCI: []PCIDevice{gpu("0x1eb1", "0x0001")}}, Labels{"gpu": "pci-1eb1-0001"}},
		{"memory rounds to nearest", &Inventory{MemoryBytes: 15<<30 + 700<<20}, Labels{"memory-gib": "16"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, tc.inv.DerivedLabels()); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestAllLabelsOwnWins(t *testing.T) {
	m := Machine{Labels: Labels{"gpu": "a100", "role": "ci"}, DerivedLabels: Labels{"gpu": "nvidia", "nvme": "2"}}
	want := Labels{"gpu": "a100", "role": "ci", "nvme": "2"}
	if diff := cmp.Diff(want, m.AllLabels()); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if m.DerivedLabels["gpu"] != "nvidia" {
		t.Error("AllLabels changed DerivedLabels")
	}
}

func TestInventoried(t *testing.T) {
	inv := Inventory{Firmware: "uefi"}
	m := Machine{MAC: testMAC}.Inventoried(inv, t0)
	if m.Inventory == nil || !m.InventoryAt.Equal(t0) || m.DerivedLabels["firmware"] != "uefi" || !m.UpdatedAt.Equal(t0) {
		t.Fatalf("Inventoried: %+v", m)
	}
}

func TestDecodeInventory(t *testing.T) {
	good := `{"firmware":"uefi","cpu_model":"AMD EPYC 7543","cpus":64,"memory_bytes":1,
		"nics":[{"mac":"52:54:00:00:00:01","name":"eno1","speed_mbps":25000,"link":true}],
		"disks":[{"name":"nvme0n1","model":"X","serial":"S1","size_bytes":1000,"transport":"nvme"}],
		"pci":[{"address":"0000:01:00.0","vendor":"0x10de","device":"0x2204","class":"0x030000","kind":"gpu"}],
		"a_field_from_a_newer_live_env":1}`
	inv, err := DecodeInventory([]byte(good))
	if err != nil || len(inv.NICs) != 1 || inv.NICs[0].SpeedMbps != 25000 || inv.PCI[0].Kind != "gpu" {
		t.Fatalf("DecodeInventory(good) = %+v, %v", inv, err)
	}
	nics := func(n int) string {
		var b []string
		for i := range n {
			b = append(b, fmt.Sprintf(`{"mac":"52:54:00:00:%02x:%02x"}`, i/256, i%256))
		}
		return `{"nics":[` + strings.Join(b, ",") + `]}`
	}
	if _, err := DecodeInventory([]byte(nics(MaxInventoryNICs))); err != nil {
		t.Errorf("%d NICs: %v", MaxInventoryNICs, err)
	}
	for name, body := range map[string]string{
		"not an object":      `null`,
		"two values":         `{} {}`,
		"bad mac":            `{"nics":[{"mac":"zz"}]}`,
		"no mac":             `{"nics":[{"name":"eth0"}]}`,
		"mac twice":          `{"nics":[{"mac":"52:54:00:00:00:01"},{"mac":"52:54:00:00:00:01"}]}`,
		"too many nics":      nics(MaxInventoryNICs + 1),
		"too many disks":     `{"disks":[` + strings.TrimSuffix(strings.Repeat(`{},`, MaxInventoryDisks+1), ",") + `]}`,
		"too many pci":       `{"pci":[` + strings.TrimSuffix(strings.Repeat(`{"vendor":"0x1234","device":"0x1111","class":"0x020000"},`, MaxInventoryPCI+1), ",") + `]}`,
		"long model":         `{"disks":[{"model":"` + strings.Repeat("m", MaxInventoryText+1) + `"}]}`,
		"control in serial":  `{"disks":[{"serial":"a\nb"}]}`,
		"negative size":      `{"disks":[{"size_bytes":-1}]}`,
		"unknown transport":  `{"disks":[{"transport":"floppy"}]}`,
		"firmware":           `{"firmware":"coreboot"}`,
		"negative memory":    `{"memory_bytes":-5}`,
		"bad vendor":         `{"pci":[{"vendor":"10de","device":"0x2204","class":"0x030000","kind":"gpu"}]}`,
		"kind not its class": `{"pci":[{"vendor":"0x10de","device":"0x2204","class":"0x020000","kind":"gpu"}]}`,
		"oversized":          `{"cpu_model":"` + strings.Repeat("x", MaxInventoryBytes) + `"}`,
	} {
		if _, err := DecodeInventory([]byte(body)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// FuzzInventory: whatever a caller of the open inventory route sends,
// an inventory DecodeInventory accepts is within every bound, derives
// labels that are valid label values, and leaves a record that encodes
// as JSON and reads back as the same inventory.
func FuzzInventory(f *testing.F) {
	for _, s := range []string{`{}`, `null`, `{"nics":[{"mac":"52:54:00:00:00:01","speed_mbps":1000,"link":true}]}`,
		`{"firmware":"bios","cpus":4,"memory_bytes":8589934592,"disks":[{"name":"vda","size_bytes":1,"transport":"virtio"}]}`,
		`{"pci":[{"address":"0000:00:02.0","vendor":"0x1234","device":"0x1111","class":"0x030000","kind":"gpu"}]}`,
		`{"pci":[{"vendor":"0x1eb1","device":"0xffff","class":"0x030200","kind":"gpu"}]}`,
		`{"disks":[{"model":"\u0000"}]}`, `{"cpus":-1}`, `[{}]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		inv, err := DecodeInventory(b)
		if err != nil {
			return
		}
		if len(inv.NICs) > MaxInventoryNICs || len(inv.Disks) > MaxInventoryDisks || len(inv.PCI) > MaxInventoryPCI {
			t.Fatalf("accepted %d NICs, %d disks, %d PCI devices", len(inv.NICs), len(inv.Disks), len(inv.PCI))
		}
		for _, d := range inv.Disks {
			if len(d.Model) > MaxInventoryText || len(d.Serial) > MaxInventoryText || strings.ContainsAny(d.Model+d.Serial+d.Name, "\x00\r\n") {
				t.Fatalf("accepted disk %+v", d)
			}
		}
		for k, v := range inv.DerivedLabels() {
			if v == "" || len(v) > MaxLabelValBytes || strings.Trim(strings.ToLower(v), "abcdefghijklmnopqrstuvwxyz0123456789-") != "" {
				t.Fatalf("derived label %s=%q", k, v)
			}
		}
		m := Machine{MAC: testMAC, BootPolicy: PolicyLocal}.Inventoried(inv, t0)
		out, err := json.Marshal(m)
		if err != nil {
			t.Fatalf("the record does not encode: %v", err)
		}
		var back Machine
		if err := json.Unmarshal(out, &back); err != nil {
			t.Fatalf("the record does not decode: %v", err)
		}
		if diff := cmp.Diff(m.Inventory, back.Inventory, cmp.Comparer(func(a, b MAC) bool { return a == b })); diff != "" {
			t.Fatalf("the inventory does not read back (-want +got):\n%s", diff)
		}
		if _, err := m.ForImport(t0.Add(time.Hour)); err != nil {
			t.Fatalf("an accepted inventory is refused on import: %v", err)
		}
	})
}
