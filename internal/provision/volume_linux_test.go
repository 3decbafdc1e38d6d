package provision

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/btyproject/bty/internal/disk"
	"github.com/btyproject/bty/internal/layout"
)

// TestPartitionNode checks that a kernel partition node is used only
// when sysfs says it covers exactly the partition's range, on a fake
// sysfs and /dev.
func TestPartitionNode(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to make a device node")
	}
	sys, dev := t.TempDir(), t.TempDir()
	oldSys, oldDev := disk.SysRoot, disk.DevRoot
	disk.SysRoot, disk.DevRoot = sys, dev
	t.Cleanup(func() { disk.SysRoot, disk.DevRoot = oldSys, oldDev })

	real := filepath.Join(sys, "devices", "virtual", "block", "vdz")
	part := filepath.Join(real, "vdz2")
	if err := os.MkdirAll(part, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, v := range map[string]string{"partition": "2\n", "start": "2048\n", "size": "4096\n"} {
		if err := os.WriteFile(filepath.Join(part, name), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(sys, "class", "block"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(real, filepath.Join(sys, "class", "block", "vdz")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(part, filepath.Join(sys, "class", "block", "vdz2")); err != nil {
		t.Fatal(err)
	}
	d := disk.Disk{Path: filepath.Join(dev, "vdz"), Name: "vdz"}
	p := layout.Partition{Number: 2, Start: 2048 * 512, Size: 4096 * 512}

	if node, ok := partitionNode(d, p); ok {
		t.Fatalf("no node in /dev yet, but got %s", node)
	}
	if err := unix.Mknod(filepath.Join(dev, "vdz2"), unix.S_IFBLK|0o600, int(unix.Mkdev(7, 250))); err != nil {
		t.Fatal(err)
	}
	if node, ok := partitionNode(d, p); !ok || node != filepath.Join(dev, "vdz2") {
		t.Errorf("partitionNode = %q, %v; want %s", node, ok, filepath.Join(dev, "vdz2"))
	}
	stale := p
	stale.Start += 512
	if node, ok := partitionNode(d, stale); ok {
		t.Errorf("the kernel's view starts elsewhere, yet %s was used", node)
	}
	other := p
	other.Number = 3
	if node, ok := partitionNode(d, other); ok {
		t.Errorf("partition 3 has no node, yet %s was used", node)
	}
}
