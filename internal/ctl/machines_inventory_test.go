package ctl

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/btyproject/bty/internal/api"
	"github.com/btyproject/bty/internal/fleet"
)

// TestMachinesGetInventory: machines get shows the derived labels and a
// short hardware summary of the last inventory, or says there is none.
func TestMachinesGetInventory(t *testing.T) {
	at := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	inv := api.Inventory{Firmware: "uefi", CPUModel: "AMD EPYC 7543", CPUs: 64, MemoryBytes: 256 << 30,
		NICs: []api.NIC{{MAC: fleet.MustParseMAC("52:54:00:aa:00:01"), Name: "eno1", SpeedMbps: 25000, Link: true},
			{MAC: fleet.MustParseMAC("52:54:00:aa:00:02"), Name: "eno2"}},
		Disks: []api.InventoryDisk{{Name: "nvme0n1", Model: "SAMSUNG MZQL23T8", Serial: "S64H", SizeBytes: 3840755982336, Transport: "nvme"}},
		PCI: []api.PCIDevice{{Address: "0000:41:00.0", Vendor: "0x10de", Device: "0x20b5", Class: "0x030200", Kind: "gpu"},
			{Address: "0000:00:03.0", Vendor: "0x8086", Device: "0x1572", Class: "0x020000"}}}
	m := fleet.Machine{MAC: fleet.MustParseMAC("52:54:00:aa:00:01"), BootPolicy: fleet.PolicyLocal}.Inventoried(inv, at)
	var b bytes.Buffer
	printMachine(&b, m)
	out := b.String()
	for _, want := range []string{
		"derived labels:        cpus=64,firmware=uefi,gpu=nvidia,memory-gib=256,nvme=1\n",
		"hardware:              uefi, 64 x AMD EPYC 7543, 256 GiB memory (reported ",
		"nic:                   52:54:00:aa:00:01 eno1, link 25000 Mb/s\n",
		"nic:                   52:54:00:aa:00:02 eno2, no link\n",
		"disk:                  nvme0n1 nvme 3.5 TiB SAMSUNG MZQL23T8, serial S64H\n",
		"gpu:                   0000:41:00.0 0x10de:0x20b5\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("machines get lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "0x8086") {
		t.Errorf("a NIC's PCI function is listed as a GPU:\n%s", out)
	}
	b.Reset()
	printMachine(&b, fleet.Machine{MAC: m.MAC})
	if !strings.Contains(b.String(), "hardware:              - (no inventory yet") {
		t.Errorf("without an inventory:\n%s", b.String())
	}
}
