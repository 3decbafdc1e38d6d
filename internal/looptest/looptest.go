// Package looptest gives tests real block devices: file-backed loop
// devices, filled with random bytes so that any range a flash forgets to
// write or zero shows up in a comparison. Tests using it skip with a
// stated reason when not root or when losetup is missing.
package looptest

import (
	"crypto/rand"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/btyproject/bty/internal/imagetest"
)

// RequireRoot skips t unless it runs as root with losetup available.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for loop devices (run make test as root)")
	}
	if _, err := exec.LookPath("losetup"); err != nil {
		t.Skip("needs losetup (util-linux)")
	}
}

// Device is an attached loop device and its backing file.
type Device struct {
	Path    string
	Backing string
	Size    int64
}

// New attaches a loop device over a new size-byte file full of random
// bytes; it is detached when the test ends.
func New(t testing.TB, size int64, extra ...string) *Device {
	t.Helper()
	RequireRoot(t)
	size = (size + 511) / 512 * 512 // loop devices have whole sectors
	backing := filepath.Join(t.TempDir(), "disk.raw")
	f, err := os.Create(backing)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(f, rand.Reader, size); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"-f", "--show"}, extra...)
	out, err := exec.Command("losetup", append(args, backing)...).Output()
	if err != nil {
		t.Fatalf("losetup: %v: %s", err, stderrOf(err))
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", dev, err, out)
		}
	})
	return &Device{Path: dev, Backing: backing, Size: size}
}

// SHA256 returns the sha256 of the first n bytes of the device, read
// through the device node.
func (d *Device) SHA256(t testing.TB, n int64) string {
	t.Helper()
	return imagetest.SHA256(t, d.Path, 0, n)
}

// ReadAt reads n bytes at off through the device node.
func (d *Device) ReadAt(t testing.TB, off, n int64) []byte {
	t.Helper()
	f, err := os.Open(d.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}

// Run runs a command and fails the test with its output on error.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// MountExt4 makes an ext4 filesystem on dev and mounts it on a temp dir
// until the test ends.
func MountExt4(t testing.TB, dev string) string {
	t.Helper()
	Run(t, "mkfs.ext4", "-q", "-F", dev)
	dir := t.TempDir()
	Run(t, "mount", dev, dir)
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

func stderrOf(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}
