// Package layouttest builds disk images with the real tools (sgdisk,
// sfdisk, mkfs.*, cryptsetup, pvcreate) for the tests of partition
// tables, filesystem probes and provisioning. Tests skip, with the
// reason, when a tool is missing (RequireTools).
package layouttest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/btyproject/bty/internal/looptest"
)

// MiB is a mebibyte.
const MiB = 1 << 20

// Part describes one partition of a test disk.
type Part struct {
	// FS is ext4, ext2, xfs, btrfs, vfat, swap, luks, lvm, or "" for a
	// partition left zero.
	FS      string
	SizeMiB int
	// Files are created in the filesystem (in Subvol for btrfs); a path
	// ending in "/" is a directory.
	Files map[string]string
	// Subvol, for btrfs, puts Files in this subvolume (a "home"
	// subvolume is made beside it), Fedora-style.
	Subvol string
	// Code is the sgdisk type code (GPT) or sfdisk type (MBR).
	Code string
	// Logical puts an MBR partition inside the extended partition.
	Logical bool
}

// Disk is a built disk image and where its partitions sit.
type Disk struct {
	Path          string
	Size          int64
	Starts, Sizes []int64
}

// MakeDisk builds a disk image file with scheme "gpt", "mbr" or "none"
// (a single filesystem as the whole disk).
func MakeDisk(t testing.TB, scheme string, parts []Part) Disk {
	t.Helper()
	dir := t.TempDir()
	var lo Disk
	cursor := int64(MiB)
	if scheme == "none" {
		cursor = 0
	}
	inExtended := false
	for _, p := range parts {
		if p.Logical && !inExtended {
			inExtended = true
		}
		if p.Logical {
			cursor += MiB // room for the extended boot record
		}
		lo.Starts = append(lo.Starts, cursor)
		lo.Sizes = append(lo.Sizes, int64(p.SizeMiB)*MiB)
		cursor += int64(p.SizeMiB) * MiB
	}
	lo.Size = cursor
	if scheme != "none" {
		lo.Size += MiB // the backup GPT
	}
	lo.Path = filepath.Join(dir, "disk.img")
	looptest.Run(t, "truncate", "-s", fmt.Sprint(lo.Size), lo.Path)

	switch scheme {
	case "gpt":
		args := []string{}
		for i, p := range parts {
			code := p.Code
			if code == "" {
				code = "8300"
			}
			args = append(args, "-n", fmt.Sprintf("%d:%d:%d", i+1, lo.Starts[i]/512, (lo.Starts[i]+lo.Sizes[i])/512-1),
				"-t", fmt.Sprintf("%d:%s", i+1, code))
		}
		looptest.Run(t, "sgdisk", append(args, lo.Path)...)
	case "mbr":
		var script strings.Builder
		script.WriteString("label: dos\n")
		extDone := false
		for i, p := range parts {
			code := p.Code
			if code == "" {
				code = "83"
			}
			if p.Logical && !extDone {
				extStart := lo.Starts[i] - MiB
				fmt.Fprintf(&script, "start=%d, size=%d, type=5\n", extStart/512, (lo.Size-extStart)/512)
				extDone = true
			}
			fmt.Fprintf(&script, "start=%d, size=%d, type=%s\n", lo.Starts[i]/512, lo.Sizes[i]/512, code)
		}
		cmd := exec.Command("sfdisk", "--no-reread", "--no-tell-kernel", lo.Path)
		cmd.Stdin = strings.NewReader(script.String())
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("sfdisk: %v\n%s\n%s", err, script.String(), out)
		}
	}
	for i, p := range parts {
		if p.FS == "" {
			continue
		}
		fsPath := makeFS(t, dir, i, p)
		looptest.Run(t, "dd", "if="+fsPath, "of="+lo.Path, "bs=1M", fmt.Sprintf("seek=%d", lo.Starts[i]/MiB),
			"conv=notrunc,sparse", "status=none")
		os.Remove(fsPath)
	}
	return lo
}

// makeFS makes partition p's filesystem as a file.
func makeFS(t testing.TB, dir string, i int, p Part) string {
	t.Helper()
	fsPath := filepath.Join(dir, fmt.Sprintf("p%d.fs", i))
	looptest.Run(t, "truncate", "-s", fmt.Sprintf("%dM", p.SizeMiB), fsPath)
	stage := filepath.Join(dir, fmt.Sprintf("p%d.tree", i))
	writeTree(t, stage, p.Files)
	switch p.FS {
	case "ext4", "ext2":
		looptest.Run(t, "mkfs."+p.FS, "-q", "-F", "-d", stage, fsPath)
	case "xfs":
		looptest.Run(t, "mkfs.xfs", "-q", "-f", fsPath)
		fillMounted(t, fsPath, "", stage)
	case "btrfs":
		if p.Subvol == "" {
			looptest.Run(t, "mkfs.btrfs", "-q", "-f", "--rootdir", stage, fsPath)
			break
		}
		looptest.Run(t, "mkfs.btrfs", "-q", "-f", fsPath)
		fillMounted(t, fsPath, p.Subvol, stage)
	case "vfat":
		looptest.Run(t, "mkfs.vfat", "-F", "32", fsPath)
	case "swap":
		looptest.Run(t, "mkswap", fsPath)
	case "luks":
		key := filepath.Join(dir, "key")
		if err := os.WriteFile(key, []byte("bty-test-passphrase"), 0o600); err != nil {
			t.Fatal(err)
		}
		looptest.Run(t, "cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2", "--pbkdf", "pbkdf2",
			"--pbkdf-force-iterations", "1000", "--key-file", key, fsPath)
	case "lvm":
		dev := strings.TrimSpace(looptest.Run(t, "losetup", "-f", "--show", fsPath))
		out, err := exec.Command("pvcreate", "-q", dev).CombinedOutput()
		exec.Command("losetup", "-d", dev).Run()
		if err != nil {
			t.Fatalf("pvcreate: %v: %s", err, out)
		}
	default:
		t.Fatalf("unknown fs %q", p.FS)
	}
	return fsPath
}

// fillMounted mounts a filesystem image and copies stage into it (into a
// new btrfs subvolume when subvol is set).
func fillMounted(t testing.TB, fsPath, subvol, stage string) {
	t.Helper()
	mnt := t.TempDir()
	dev := strings.TrimSpace(looptest.Run(t, "losetup", "-f", "--show", fsPath))
	defer exec.Command("losetup", "-d", dev).Run()
	looptest.Run(t, "mount", dev, mnt)
	defer looptest.Run(t, "umount", mnt)
	dst := mnt
	if subvol != "" {
		looptest.Run(t, "btrfs", "subvolume", "create", filepath.Join(mnt, subvol))
		looptest.Run(t, "btrfs", "subvolume", "create", filepath.Join(mnt, "home"))
		dst = filepath.Join(mnt, subvol)
	}
	looptest.Run(t, "cp", "-a", stage+"/.", dst)
}

func writeTree(t testing.TB, root string, files map[string]string) {
	t.Helper()
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		p := filepath.Join(root, name)
		if strings.HasSuffix(name, "/") {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// RequireTools skips t unless the named tools are present.
func RequireTools(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (make test installs it)", tool)
		}
	}
}
