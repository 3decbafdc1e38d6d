package live

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/btyproject/bty/internal/client"
	"github.com/btyproject/bty/internal/fleet"
)

// fakeRoot builds a machine's sysfs and procfs under a temporary
// directory, the links relative as the kernel's are: files maps a path
// to its content, links a path to its target.
func fakeRoot(t *testing.T, files, links map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for p, c := range files {
		full := filepath.Join(root, p)
		if strings.HasSuffix(p, "/") {
			if err := os.MkdirAll(full, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for p, target := range links {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, full); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

const pciRoot = "sys/devices/pci0000:00/"

func TestCollectInventory(t *testing.T) {
	nvme := pciRoot + "0000:00:04.0/nvme/nvme0/"
	ata := pciRoot + "0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0/"
	virtio := pciRoot + "0000:00:05.0/virtio1/"
	vscsi := pciRoot + "0000:00:06.0/virtio2/host1/target1:0:0/1:0:0:1/"
	usb := pciRoot + "0000:00:14.0/usb1/1-1/1-1:1.0/host2/target2:0:0/2:0:0:0/"
	files := map[string]string{
		"sys/firmware/efi/": "",
		"proc/cpuinfo": "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7543 32-Core Processor\n\n" +
			"processor\t: 1\nmodel name\t: AMD EPYC 7543 32-Core Processor\n\nprocessor\t: 2\n\nprocessor\t: 3\n",
		"proc/meminfo": "MemTotal:       32765432 kB\nMemFree:        1000 kB\n",
		// NICs: two physical, one with no link; lo, a bridge and an
		// InfiniBand port are left out.
		pciRoot + "0000:00:03.0/net/eno1/address": "52:54:00:aa:00:01\n",
		pciRoot + "0000:00:03.0/net/eno1/speed":   "25000\n",
		pciRoot + "0000:00:03.0/net/eno1/carrier": "1\n",
		pciRoot + "0000:00:03.0/net/eno1/type":    "1\n",
		pciRoot + "0000:00:03.1/net/eno2/address": "52:54:00:AA:00:02\n",
		pciRoot + "0000:00:03.1/net/eno2/speed":   "-1\n",
		pciRoot + "0000:00:03.1/net/eno2/carrier": "0\n",
		pciRoot + "0000:00:07.0/net/ib0/address":  "80:00:02:08:fe:80:00:00:00:00:00:00:00:02:c9:03:00:0a:0b:0c\n",
		pciRoot + "0000:00:07.0/net/ib0/type":     "32\n",
		"sys/devices/virtual/net/lo/address":      "00:00:00:00:00:00\n",
		"sys/devices/virtual/net/br0/address":     "52:54:00:bb:00:01\n",
		// Disks.
		nvme + "nvme0n1/size": "7501476528\n", nvme + "nvme0n1/wwid": "eui.0025388a01000001\n",
		nvme + "model": "SAMSUNG MZQL23T8HCLS-00A07               \n", nvme + "serial": "S64HNE0T000001      \n",
		ata + "block/sda/size": "937703088\n", ata + "model": "Micron_5300_MTFD\n", ata + "wwid": "naa.500a0751e5a0c0de\n",
		virtio + "block/vda/size": "16777216\n", virtio + "block/vda/serial": "vol-1234\n",
		vscsi + "block/sdc/size": "2048\n", vscsi + "model": "QEMU HARDDISK\x00\x07\n",
		usb + "block/sdb/size": "60063744\n", usb + "model": "Ultra Fit\n",
		"sys/devices/virtual/block/loop0/size": "2048\n",
		// PCI functions: a GPU, an NVMe controller, a NIC, and one
		// whose IDs are not sysfs's form.
		pciRoot + "0000:41:00.0/vendor": "0x10de\n", pciRoot + "0000:41:00.0/device": "0x20b5\n", pciRoot + "0000:41:00.0/class": "0x030200\n",
		pciRoot + "0000:00:04.0/vendor": "0x144d\n", pciRoot + "0000:00:04.0/device": "0xa80a\n", pciRoot + "0000:00:04.0/class": "0x010802\n",
		pciRoot + "0000:00:03.0/vendor": "0x8086\n", pciRoot + "0000:00:03.0/device": "0x1572\n", pciRoot + "0000:00:03.0/class": "0x020000\n",
		pciRoot + "0000:00:08.0/vendor": "garbage\n", pciRoot + "0000:00:08.0/device": "0x0001\n", pciRoot + "0000:00:08.0/class": "0x030000\n",
	}
	links := map[string]string{
		"sys/class/net/eno1":                     "../../devices/pci0000:00/0000:00:03.0/net/eno1",
		"sys/class/net/eno2":                     "../../devices/pci0000:00/0000:00:03.1/net/eno2",
		"sys/class/net/ib0":                      "../../devices/pci0000:00/0000:00:07.0/net/ib0",
		"sys/class/net/lo":                       "../../devices/virtual/net/lo",
		"sys/class/net/br0":                      "../../devices/virtual/net/br0",
		pciRoot + "0000:00:03.0/net/eno1/device": "../../../0000:00:03.0",
		pciRoot + "0000:00:03.1/net/eno2/device": "../../../0000:00:03.1",
		pciRoot + "0000:00:07.0/net/ib0/device":  "../../../0000:00:07.0",

		"sys/block/nvme0n1":         "../devices/pci0000:00/0000:00:04.0/nvme/nvme0/nvme0n1",
		nvme + "nvme0n1/device":     "../../nvme0",
		"sys/block/sda":             "../devices/pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0/block/sda",
		ata + "block/sda/device":    "../../../0:0:0:0",
		"sys/block/vda":             "../devices/pci0000:00/0000:00:05.0/virtio1/block/vda",
		virtio + "block/vda/device": "../../../virtio1",
		"sys/block/sdc":             "../devices/pci0000:00/0000:00:06.0/virtio2/host1/target1:0:0/1:0:0:1/block/sdc",
		vscsi + "block/sdc/device":  "../../../1:0:0:1",
		"sys/block/sdb":             "../devices/pci0000:00/0000:00:14.0/usb1/1-1/1-1:1.0/host2/target2:0:0/2:0:0:0/block/sdb",
		usb + "block/sdb/device":    "../../../2:0:0:0",
		"sys/block/loop0":           "../devices/virtual/block/loop0",

		"sys/bus/pci/devices/0000:41:00.0": "../../../devices/pci0000:00/0000:41:00.0",
		"sys/bus/pci/devices/0000:00:04.0": "../../../devices/pci0000:00/0000:00:04.0",
		"sys/bus/pci/devices/0000:00:03.0": "../../../devices/pci0000:00/0000:00:03.0",
		"sys/bus/pci/devices/0000:00:08.0": "../../../devices/pci0000:00/0000:00:08.0",
	}
	root := fakeRoot(t, files, links)
	want := fleet.Inventory{
		Firmware: "uefi", CPUModel: "AMD EPYC 7543 32-Core Processor", CPUs: 4, MemoryBytes: 32765432 << 10,
		NICs: []fleet.NIC{
			{MAC: fleet.MustParseMAC("52:54:00:aa:00:01"), Name: "eno1", SpeedMbps: 25000, Link: true},
			{MAC: fleet.MustParseMAC("52:54:00:aa:00:02"), Name: "eno2"},
		},
		Disks: []fleet.InventoryDisk{
			{Name: "nvme0n1", Model: "SAMSUNG MZQL23T8HCLS-00A07", Serial: "S64HNE0T000001", SizeBytes: 7501476528 * 512, Transport: "nvme"},
			{Name: "sda", Model: "Micron_5300_MTFD", Serial: "naa.500a0751e5a0c0de", SizeBytes: 937703088 * 512, Transport: "sata"},
			{Name: "sdb", Model: "Ultra Fit", SizeBytes: 60063744 * 512, Transport: "usb"},
			{Name: "sdc", Model: "QEMU HARDDISK", SizeBytes: 2048 * 512, Transport: "scsi"},
			{Name: "vda", Serial: "vol-1234", SizeBytes: 16777216 * 512, Transport: "virtio"},
		},
		PCI: []fleet.PCIDevice{
			{Address: "0000:00:03.0", Vendor: "0x8086", Device: "0x1572", Class: "0x020000"},
			{Address: "0000:00:04.0", Vendor: "0x144d", Device: "0xa80a", Class: "0x010802", Kind: "nvme"},
			{Address: "0000:41:00.0", Vendor: "0x10de", Device: "0x20b5", Class: "0x030200", Kind: "gpu"},
		},
	}
	got := collectInventory(root)
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b fleet.MAC) bool { return a == b })); diff != "" {
		t.Errorf("collectInventory (-want +got):\n%s", diff)
	}
	// What it collects is what bty-web takes.
	if err := got.Check(); err != nil {
		t.Errorf("the server would refuse it: %v", err)
	}
	if l := got.DerivedLabels(); l["nvme"] != "1" || l["gpu"] != "nvidia" || l["firmware"] != "uefi" {
		t.Errorf("derived labels %v", l)
	}
}

// TestCollectInventoryBIOSAndBounds: no /sys/firmware/efi is BIOS; an
// empty tree is an empty inventory; lists and text are cut to what the
// server takes.
func TestCollectInventoryBIOSAndBounds(t *testing.T) {
	if got := collectInventory(t.TempDir()); got.Firmware != "bios" || got.CPUs != 0 || got.NICs != nil {
		t.Errorf("empty tree: %+v", got)
	}
	files := map[string]string{}
	links := map[string]string{}
	for i := range fleet.MaxInventoryNICs + 5 {
		dev := pciRoot + "0000:10:" + twoHex(i) + ".0/"
		files[dev+"net/e"+twoHex(i)+"/address"] = "52:54:00:cc:00:" + twoHex(i)
		links[dev+"net/e"+twoHex(i)+"/device"] = "../../../0000:10:" + twoHex(i) + ".0"
		links["sys/class/net/e"+twoHex(i)] = "../../devices/pci0000:00/0000:10:" + twoHex(i) + ".0/net/e" + twoHex(i)
	}
	files[pciRoot+"0000:20:00.0/model"] = strings.Repeat("long model ", 40)
	files[pciRoot+"0000:20:00.0/ata1/block/sda/size"] = "8"
	links[pciRoot+"0000:20:00.0/ata1/block/sda/device"] = "../../../../0000:20:00.0"
	links["sys/block/sda"] = "../devices/pci0000:00/0000:20:00.0/ata1/block/sda"
	got := collectInventory(fakeRoot(t, files, links))
	if len(got.NICs) != fleet.MaxInventoryNICs || len(got.Disks) != 1 || len(got.Disks[0].Model) > fleet.MaxInventoryText {
		t.Errorf("%d NICs, disks %+v", len(got.NICs), got.Disks)
	}
	if err := got.Check(); err != nil {
		t.Errorf("the server would refuse it: %v", err)
	}
}

func twoHex(i int) string { return fmt.Sprintf("%02x", i) }

// TestSendInventory: the report is tried again after a network or
// server error, never after a 4xx (a refusal or an inventory out of
// bounds would be refused again).
func TestSendInventory(t *testing.T) {
	defer func(d time.Duration) { inventoryPause = d }(inventoryPause)
	inventoryPause = time.Millisecond
	for _, tc := range []struct {
		name  string
		errs  []error
		tries int
		fails bool
	}{
		{"accepted", []error{nil}, 1, false},
		{"server error, then accepted", []error{&client.APIError{StatusCode: 503}, nil}, 2, false},
		{"refused", []error{&client.APIError{StatusCode: 403}, nil}, 1, true},
		{"too large", []error{&client.APIError{StatusCode: 413}, nil}, 1, true},
		{"unreachable", []error{errors.New("connection refused"), errors.New("connection refused"), errors.New("connection refused"), nil}, inventoryTries, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tries := 0
			inv, err := sendInventory(context.Background(), func(ctx context.Context, inv fleet.Inventory) error {
				tries++
				if _, ok := ctx.Deadline(); !ok {
					t.Error("a try without a deadline")
				}
				return tc.errs[tries-1]
			}, t.TempDir())
			if tries != tc.tries || (err != nil) != tc.fails || inv.Firmware != "bios" {
				t.Errorf("%d tries, %v, %+v; want %d tries, failing %v", tries, err, inv, tc.tries, tc.fails)
			}
		})
	}
}
