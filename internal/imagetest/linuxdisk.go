package imagetest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// LinuxDisk is a small GPT disk image made with sgdisk and mkfs.ext4 -d:
// partition 1 (8 MiB, BIOS boot, empty) and partition 2 (48 MiB ext4)
// holding files (a path ending in "/" is a directory).
type LinuxDisk struct {
	Path string
	Size int64
	// RootStart and RootSize locate partition 2.
	RootStart, RootSize int64
}

// NewLinuxDisk builds a LinuxDisk in a temp dir. It skips t when sgdisk
// or mkfs.ext4 are missing.
func NewLinuxDisk(t testing.TB, files map[string]string) *LinuxDisk {
	t.Helper()
	for _, tool := range []string{"sgdisk", "mkfs.ext4"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (make test installs it)", tool)
		}
	}
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	for name, content := range files {
		p := filepath.Join(tree, name)
		if strings.HasSuffix(name, "/") {
			must(t, os.MkdirAll(p, 0o755))
			continue
		}
		must(t, os.MkdirAll(filepath.Dir(p), 0o755))
		must(t, os.WriteFile(p, []byte(content), 0o644))
	}
	must(t, os.MkdirAll(tree, 0o755))
	const mib = 1 << 20
	d := &LinuxDisk{Path: filepath.Join(dir, "linux.img"), Size: 58 * mib, RootStart: 9 * mib, RootSize: 48 * mib}
	root := filepath.Join(dir, "root.fs")
	for _, c := range [][]string{
		{"truncate", "-s", "48M", root},
		{"mkfs.ext4", "-q", "-F", "-d", tree, root},
		{"truncate", "-s", "58M", d.Path},
		{"sgdisk", "-n", "1:1M:+8M", "-t", "1:ef02", "-n", "2:9M:+48M", "-t", "2:8304", d.Path},
		{"dd", "if=" + root, "of=" + d.Path, "bs=1M", "seek=9", "conv=notrunc,sparse", "status=none"},
	} {
		_, err := run(dir, nil, c[0], c[1:]...)
		must(t, err)
	}
	return d
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
