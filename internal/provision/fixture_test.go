package provision_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/btyproject/bty/internal/looptest"
)

const mib = 1 << 20

// part describes one partition of a test disk, made with the real tools.
type part struct {
	// fs is ext4, ext2, xfs, btrfs, vfat, swap, luks, lvm, or "" for a
	// partition left zero.
	fs      string
	sizeMiB int
	// files are created in the filesystem (in subvol for btrfs);
	// a path ending in "/" is a directory.
	files map[string]string
	// subvol, for btrfs, puts files in this subvolume (a "home"
	// subvolume is made beside it), Fedora-style.
	subvol string
	// code is the sgdisk type code (GPT) or sfdisk type (MBR).
	code string
	// logical puts an MBR partition inside the extended partition.
	logical bool
}

// layout is where a built disk's partitions sit.
type layout struct {
	path   string
	size   int64
	starts []int64
	sizes  []int64
}

// rootWithCloud is a minimal root tree with cloud-init installed.
func rootWithCloud(hostname string) map[string]string {
	return map[string]string{
		"etc/hostname":                    hostname + "\n",
		"etc/cloud/cloud.cfg":             "datasource_list: [ NoCloud, None ]\n",
		"etc/cloud/cloud.cfg.d/":          "",
		"usr/bin/":                        "",
		"var/lib/cloud/":                  "",
		"etc/fstab":                       "UUID=1234 / ext4 defaults 0 1\n",
		"etc/os-release":                  "ID=debian\n",
		"usr/lib/os-release":              "ID=debian\n",
		"var/lib/cloud/seed/nocloud-net/": "",
	}
}

// rootWithoutCloud is a root tree without cloud-init.
func rootWithoutCloud() map[string]string {
	return map[string]string{"etc/hostname": "plain\n", "etc/os-release": "ID=debian\n", "usr/bin/": ""}
}

// makeDisk builds a disk image file with scheme "gpt", "mbr" or "none"
// (a single filesystem as the whole disk).
func makeDisk(t *testing.T, scheme string, parts []part) layout {
	t.Helper()
	dir := t.TempDir()
	var lo layout
	cursor := int64(mib)
	if scheme == "none" {
		cursor = 0
	}
	inExtended := false
	for _, p := range parts {
		if p.logical && !inExtended {
			inExtended = true
		}
		if p.logical {
			cursor += mib // room for the extended boot record
		}
		lo.starts = append(lo.starts, cursor)
		lo.sizes = append(lo.sizes, int64(p.sizeMiB)*mib)
		cursor += int64(p.sizeMiB) * mib
	}
	lo.size = cursor
	if scheme != "none" {
		lo.size += mib // the backup GPT
	}
	lo.path = filepath.Join(dir, "disk.img")
	run(t, "truncate", "-s", fmt.Sprint(lo.size), lo.path)

	switch scheme {
	case "gpt":
		args := []string{}
		for i, p := range parts {
			code := p.code
			if code == "" {
				code = "8300"
			}
			args = append(args, "-n", fmt.Sprintf("%d:%d:%d", i+1, lo.starts[i]/512, (lo.starts[i]+lo.sizes[i])/512-1),
				"-t", fmt.Sprintf("%d:%s", i+1, code))
		}
		run(t, "sgdisk", append(args, lo.path)...)
	case "mbr":
		var script strings.Builder
		script.WriteString("label: dos\n")
		extDone := false
		for i, p := range parts {
			code := p.code
			if code == "" {
				code = "83"
			}
			if p.logical && !extDone {
				extStart := lo.starts[i] - mib
				fmt.Fprintf(&script, "start=%d, size=%d, type=5\n", extStart/512, (lo.size-extStart)/512)
				extDone = true
			}
			fmt.Fprintf(&script, "start=%d, size=%d, type=%s\n", lo.starts[i]/512, lo.sizes[i]/512, code)
		}
		cmd := exec.Command("sfdisk", "--no-reread", "--no-tell-kernel", lo.path)
		cmd.Stdin = strings.NewReader(script.String())
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("sfdisk: %v\n%s\n%s", err, script.String(), out)
		}
	}
	for i, p := range parts {
		if p.fs == "" {
			continue
		}
		fsPath := makeFS(t, dir, i, p)
		run(t, "dd", "if="+fsPath, "of="+lo.path, "bs=1M", fmt.Sprintf("seek=%d", lo.starts[i]/mib),
			"conv=notrunc,sparse", "status=none")
		os.Remove(fsPath)
	}
	return lo
}

// makeFS makes partition p's filesystem as a file.
func makeFS(t *testing.T, dir string, i int, p part) string {
	t.Helper()
	fsPath := filepath.Join(dir, fmt.Sprintf("p%d.fs", i))
	run(t, "truncate", "-s", fmt.Sprintf("%dM", p.sizeMiB), fsPath)
	stage := filepath.Join(dir, fmt.Sprintf("p%d.tree", i))
	writeTree(t, stage, p.files)
	switch p.fs {
	case "ext4", "ext2":
		run(t, "mkfs."+p.fs, "-q", "-F", "-d", stage, fsPath)
	case "xfs":
		run(t, "mkfs.xfs", "-q", "-f", fsPath)
		fillMounted(t, fsPath, "", stage)
	case "btrfs":
		if p.subvol == "" {
			run(t, "mkfs.btrfs", "-q", "-f", "--rootdir", stage, fsPath)
			break
		}
		run(t, "mkfs.btrfs", "-q", "-f", fsPath)
		fillMounted(t, fsPath, p.subvol, stage)
	case "vfat":
		run(t, "mkfs.vfat", "-F", "32", fsPath)
	case "swap":
		run(t, "mkswap", fsPath)
	case "luks":
		key := filepath.Join(dir, "key")
		if err := os.WriteFile(key, []byte("bty-test-passphrase"), 0o600); err != nil {
			t.Fatal(err)
		}
		run(t, "cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2", "--pbkdf", "pbkdf2",
			"--pbkdf-force-iterations", "1000", "--key-file", key, fsPath)
	case "lvm":
		dev := strings.TrimSpace(run(t, "losetup", "-f", "--show", fsPath))
		out, err := exec.Command("pvcreate", "-q", dev).CombinedOutput()
		exec.Command("losetup", "-d", dev).Run()
		if err != nil {
			t.Fatalf("pvcreate: %v: %s", err, out)
		}
	default:
		t.Fatalf("unknown fs %q", p.fs)
	}
	return fsPath
}

// fillMounted mounts a filesystem image and copies stage into it (into a
// new btrfs subvolume when subvol is set).
func fillMounted(t *testing.T, fsPath, subvol, stage string) {
	t.Helper()
	mnt := t.TempDir()
	dev := strings.TrimSpace(run(t, "losetup", "-f", "--show", fsPath))
	defer exec.Command("losetup", "-d", dev).Run()
	run(t, "mount", dev, mnt)
	defer run(t, "umount", mnt)
	dst := mnt
	if subvol != "" {
		run(t, "btrfs", "subvolume", "create", filepath.Join(mnt, subvol))
		run(t, "btrfs", "subvolume", "create", filepath.Join(mnt, "home"))
		dst = filepath.Join(mnt, subvol)
	}
	run(t, "cp", "-a", stage+"/.", dst)
}

func writeTree(t *testing.T, root string, files map[string]string) {
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

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	return looptest.Run(t, name, args...)
}

// requireTools skips unless the named tools are present.
func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (make test installs it)", tool)
		}
	}
}
