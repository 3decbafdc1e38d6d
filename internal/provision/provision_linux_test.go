package provision_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/goccy/go-yaml"

	"github.com/btyproject/bty/internal/event"
	"github.com/btyproject/bty/internal/fault"
	"github.com/btyproject/bty/internal/flash"
	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/imagetest"
	"github.com/btyproject/bty/internal/layout/layouttest"
	"github.com/btyproject/bty/internal/looptest"
	"github.com/btyproject/bty/internal/provision"
)

const userData = "#cloud-config\nwrite_files:\n  - path: /etc/bty-proof\n    content: provisioned by bty\n"

// setup gives a test its own TMPDIR (so leftover mount points are
// attributable) and the tools the fixtures need.
func setup(t *testing.T, tools ...string) {
	t.Helper()
	looptest.RequireRoot(t)
	layouttest.RequireTools(t, append([]string{"sgdisk", "sfdisk", "mkfs.ext4"}, tools...)...)
	t.Setenv("TMPDIR", t.TempDir())
}

// flashDisk flashes the built disk onto a fresh random-filled loop device
// with the given provisioning options.
func flashDisk(t *testing.T, lo layouttest.Disk, o flash.Options) (*looptest.Device, *flash.Result, []event.Event, error) {
	t.Helper()
	dev := looptest.New(t, lo.Size+8*layouttest.MiB)
	rec := &event.Recorder{}
	o.Image, o.Target, o.Sink = lo.Path, dev.Path, rec
	res, err := flash.Run(context.Background(), o)
	assertClean(t, dev.Path)
	return dev, res, rec.Events(), err
}

// assertClean fails t when a mount point bty made is left, or a loop
// device still sits on target.
func assertClean(t *testing.T, target string) {
	t.Helper()
	if left, _ := filepath.Glob(filepath.Join(os.TempDir(), "bty-mnt-*")); len(left) > 0 {
		t.Errorf("mount points left behind: %v", left)
	}
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(mi), filepath.Join(os.TempDir(), "bty-mnt-")) {
		t.Errorf("a bty mount is still mounted:\n%s", mi)
	}
	files, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, f := range files {
		b, _ := os.ReadFile(f)
		if strings.TrimSpace(string(b)) == target {
			t.Errorf("a loop device is still attached to %s: %s", target, f)
		}
	}
}

// readFile reads path from the filesystem in [start, start+size) of dev,
// mounted read-only through a loop device; ok is false when it is absent.
func readFile(t *testing.T, dev string, start, size int64, path string) (string, bool) {
	t.Helper()
	loop := strings.TrimSpace(run(t, "losetup", "-f", "--show", "-r", "-o", fmt.Sprint(start), "--sizelimit", fmt.Sprint(size), dev))
	defer run(t, "losetup", "-d", loop)
	mnt := t.TempDir()
	run(t, "mount", "-o", "ro", loop, mnt)
	defer run(t, "umount", mnt)
	b, err := os.ReadFile(filepath.Join(mnt, path))
	if errors.Is(err, os.ErrNotExist) {
		return "", false
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(b), true
}

func metaData(t *testing.T, s string) map[string]string {
	t.Helper()
	var m map[string]string
	if err := yaml.Unmarshal([]byte(s), &m); err != nil {
		t.Fatalf("meta-data %q: %v", s, err)
	}
	return m
}

func writeInput(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCloudInitSeedsTheRootPartition(t *testing.T) {
	setup(t, "mkfs.xfs", "mkfs.btrfs", "mkfs.vfat")
	cases := []struct {
		name     string
		scheme   string
		parts    []layouttest.Part
		hostname string
		// want: the partition index in parts, its number, fs, subvolume
		idx      int
		number   int
		fs       string
		subvol   string
		wantHost string
	}{
		{
			name:   "gpt esp + ext4 root",
			scheme: "gpt",
			parts: []layouttest.Part{
				{FS: "vfat", SizeMiB: 40, Code: "ef00"},
				{FS: "ext4", SizeMiB: 64, Files: rootWithCloud("img-host")},
			},
			hostname: "node-7", idx: 1, number: 2, fs: "ext4", wantHost: "node-7",
		},
		{
			name:   "mbr ext2 boot + logical xfs root",
			scheme: "mbr",
			parts: []layouttest.Part{
				{FS: "ext2", SizeMiB: 16, Files: map[string]string{"grub/": ""}},
				{FS: "swap", SizeMiB: 8, Code: "82", Logical: true},
				{FS: "xfs", SizeMiB: 300, Files: rootWithCloud("mbr-host"), Logical: true},
			},
			idx: 2, number: 6, fs: "xfs", wantHost: "mbr-host",
		},
		{
			name:   "gpt btrfs root in a subvolume",
			scheme: "gpt",
			parts: []layouttest.Part{
				{FS: "ext4", SizeMiB: 16, Files: map[string]string{"grub/": ""}},
				{FS: "btrfs", SizeMiB: 128, Files: rootWithCloud("fedora-host"), Subvol: "root"},
			},
			hostname: "fc-1.lab.example", idx: 1, number: 2, fs: "btrfs", subvol: "root", wantHost: "fc-1.lab.example",
		},
		{
			name:     "ext4 on the whole disk",
			scheme:   "none",
			parts:    []layouttest.Part{{FS: "ext4", SizeMiB: 48, Files: rootWithCloud("bare")}},
			hostname: "", idx: 0, number: 0, fs: "ext4", wantHost: "bare",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			lo := layouttest.MakeDisk(t, c.scheme, c.parts)
			imageSHA := imagetest.SHA256(t, lo.Path, 0, lo.Size)
			dev, res, events, err := flashDisk(t, lo, flash.Options{Provision: fleet.ModeCloudInit,
				UserData: flash.FileInput(writeInput(t, "user-data", userData)), Hostname: c.hostname})
			if err != nil {
				t.Fatalf("flash: %v (kind %v)", err, fault.KindOf(err))
			}
			p := res.Provision
			if p == nil || p.Partition != c.number || p.Filesystem != c.fs || p.Subvolume != c.subvol {
				t.Fatalf("provisioned %+v; want partition %d (%s, subvolume %q)", p, c.number, c.fs, c.subvol)
			}
			start, size := lo.Starts[c.idx], lo.Sizes[c.idx]
			seed := filepath.Join(c.subvol, "var/lib/cloud/seed/nocloud-net")
			ud, ok := readFile(t, dev.Path, start, size, seed+"/user-data")
			if !ok || ud != userData {
				t.Errorf("user-data on the disk = %q (present %v); want %q", ud, ok, userData)
			}
			md, ok := readFile(t, dev.Path, start, size, seed+"/meta-data")
			if !ok {
				t.Fatal("no meta-data on the disk")
			}
			m := metaData(t, md)
			if m["local-hostname"] != c.wantHost || !strings.HasPrefix(m["instance-id"], "bty-") || m["instance-id"] != p.InstanceID {
				t.Errorf("meta-data = %v; want local-hostname %s and instance-id %s", m, c.wantHost, p.InstanceID)
			}
			// Every other partition is byte for byte the image's.
			for i := range c.parts {
				if i == c.idx {
					continue
				}
				if got, want := imagetest.SHA256(t, dev.Path, lo.Starts[i], lo.Sizes[i]), imagetest.SHA256(t, lo.Path, lo.Starts[i], lo.Sizes[i]); got != want {
					t.Errorf("partition %d changed: sha256 %s, image %s", i+1, got, want)
				}
			}
			if imagetest.SHA256(t, dev.Path, 0, lo.Size) == imageSHA {
				t.Error("the disk equals the image: nothing was provisioned")
			}
			var saw bool
			for _, e := range events {
				if e.Event == event.Provisioning && strings.Contains(e.Note, "cloud-init found on") {
					saw = true
				}
			}
			if !saw || events[len(events)-1].Event != event.Done {
				t.Errorf("events lack the provisioning note or do not end with done: %+v", events)
			}
		})
	}
}

func TestCloudInitRefusesAndWritesNothing(t *testing.T) {
	setup(t, "cryptsetup", "pvcreate")
	withFiles := func(extra map[string]string) map[string]string {
		m := rootWithCloud("x")
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	boot := layouttest.Part{FS: "ext2", SizeMiB: 16, Files: map[string]string{"grub/": ""}}
	cases := []struct {
		name  string
		parts []layouttest.Part
		want  string
	}{
		{"no cloud-init", []layouttest.Part{boot, {FS: "ext4", SizeMiB: 48, Files: rootWithoutCloud()}},
			"no partition of"},
		{"luks root", []layouttest.Part{boot, {FS: "luks", SizeMiB: 32}},
			"partition 2 is encrypted (LUKS)"},
		{"lvm root", []layouttest.Part{boot, {FS: "lvm", SizeMiB: 32, Code: "8e00"}},
			"partition 2 is an LVM physical volume"},
		{"cloud-init disabled", []layouttest.Part{boot, {FS: "ext4", SizeMiB: 48, Files: withFiles(map[string]string{"etc/cloud/cloud-init.disabled": ""})}},
			"cloud-init is disabled in this image"},
		{"separate /var", []layouttest.Part{boot, {FS: "ext4", SizeMiB: 48, Files: withFiles(map[string]string{"etc/fstab": "UUID=1 / ext4 defaults 0 1\nUUID=2 /var xfs defaults 0 2\n"})}},
			"mounts /var from another filesystem"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			lo := layouttest.MakeDisk(t, "gpt", c.parts)
			dev, res, events, err := flashDisk(t, lo, flash.Options{Provision: fleet.ModeCloudInit,
				UserData: flash.FileInput(writeInput(t, "user-data", userData))})
			if err == nil {
				t.Fatalf("flash succeeded; want an error containing %q", c.want)
			}
			if fault.KindOf(err) != fault.Failed || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error (kind %v) = %v; want exit 1 and %q", fault.KindOf(err), err, c.want)
			}
			if !strings.Contains(err.Error(), "the image is written to") {
				t.Errorf("error does not say the image is written: %v", err)
			}
			if got, want := imagetest.SHA256(t, dev.Path, 0, lo.Size), imagetest.SHA256(t, lo.Path, 0, lo.Size); got != want {
				t.Errorf("the disk differs from the image (sha256 %s, want %s): something was written", got, want)
			}
			if res.Provision == nil || res.Provision.SeedDir != "" {
				t.Errorf("result says a seed was written: %+v", res.Provision)
			}
			if last := events[len(events)-1]; last.Event != event.Failed {
				t.Errorf("last event %s; want failed", last.Event)
			}
		})
	}
}

func TestCloudInitMetaDataAndDatasources(t *testing.T) {
	setup(t)
	files := rootWithCloud("img")
	files["etc/cloud/cloud.cfg"] = "datasource_list: [ NoCloud, None ]\n"
	files["etc/cloud/cloud.cfg.d/50-azure.cfg"] = "datasource_list: [ Azure ]\n"
	lo := layouttest.MakeDisk(t, "gpt", []layouttest.Part{{FS: "ext4", SizeMiB: 48, Files: files}})
	userMeta := "instance-id: keep-me\nlocal-hostname: old\nplatform: lab\n"
	dev, res, _, err := flashDisk(t, lo, flash.Options{Provision: fleet.ModeCloudInit,
		UserData: flash.FileInput(writeInput(t, "user-data", userData)), MetaData: flash.FileInput(writeInput(t, "meta-data", userMeta)), Hostname: "new-name"})
	if err != nil {
		t.Fatal(err)
	}
	md, _ := readFile(t, dev.Path, lo.Starts[0], lo.Sizes[0], "var/lib/cloud/seed/nocloud-net/meta-data")
	m := metaData(t, md)
	if m["instance-id"] != "keep-me" || m["local-hostname"] != "new-name" || m["platform"] != "lab" {
		t.Errorf("meta-data = %v; want the user's instance-id and platform, --hostname's local-hostname", m)
	}
	ov, ok := readFile(t, dev.Path, lo.Starts[0], lo.Sizes[0], "etc/cloud/cloud.cfg.d/99-bty-nocloud.cfg")
	if !ok || !strings.Contains(ov, "datasource_list: [ NoCloud, Azure ]") {
		t.Errorf("override = %q (present %v); want NoCloud put before Azure", ov, ok)
	}
	if !strings.Contains(strings.Join(res.Notes, "\n"), "lacked NoCloud") {
		t.Errorf("notes do not mention the datasource override: %v", res.Notes)
	}
}

// standInCijoe puts the repository's stand-in cijoe first on PATH.
func standInCijoe(t *testing.T) {
	t.Helper()
	src, err := filepath.Abs("../../e2e/testdata/cijoe")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(src); err != nil {
		t.Fatalf("stand-in cijoe: %v", err)
	}
	bin := t.TempDir()
	if err := os.Symlink(src, filepath.Join(bin, "cijoe")); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
}

func workflow(t *testing.T, steps ...string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("doc: bty test workflow\nsteps:\n")
	for i, s := range steps {
		fmt.Fprintf(&b, "- name: step%d\n  run: %s\n", i+1, s)
	}
	return writeInput(t, "workflow.yaml", b.String())
}

func TestCijoeRunsAgainstTheLargestPartition(t *testing.T) {
	setup(t, "mkfs.btrfs")
	standInCijoe(t)
	cases := []struct {
		name   string
		parts  []layouttest.Part
		idx    int
		subvol string
	}{
		{"ext4", []layouttest.Part{{FS: "ext2", SizeMiB: 16, Files: map[string]string{"grub/": ""}}, {FS: "ext4", SizeMiB: 64, Files: rootWithoutCloud()}}, 1, ""},
		{"btrfs subvolume", []layouttest.Part{{FS: "btrfs", SizeMiB: 128, Files: rootWithoutCloud(), Subvol: "root"}, {FS: "ext2", SizeMiB: 16}}, 0, "root"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			lo := layouttest.MakeDisk(t, "gpt", c.parts)
			logDir := t.TempDir()
			cfg := writeInput(t, "config.toml", "[cijoe]\n")
			wf := workflow(t, `echo "workflow sees $BTY_ROOTFS"`, `echo cijoe-token-42 > "$BTY_ROOTFS/etc/cijoe-proof"`)
			dev, res, events, err := flashDisk(t, lo, flash.Options{Provision: fleet.ModeCijoe,
				CijoeWorkflow: wf, CijoeConfig: cfg, LogDir: logDir})
			if err != nil {
				t.Fatalf("flash: %v", err)
			}
			if res.Provision.Partition != c.idx+1 || res.Provision.Subvolume != c.subvol {
				t.Errorf("provisioned %+v; want partition %d subvolume %q", res.Provision, c.idx+1, c.subvol)
			}
			got, ok := readFile(t, dev.Path, lo.Starts[c.idx], lo.Sizes[c.idx], filepath.Join(c.subvol, "etc/cijoe-proof"))
			if !ok || got != "cijoe-token-42\n" {
				t.Errorf("etc/cijoe-proof = %q (present %v); the workflow did not write into the root", got, ok)
			}
			if res.Provision.LogPath == "" || filepath.Dir(res.Provision.LogPath) != logDir {
				t.Fatalf("log path %q; want a file in %s", res.Provision.LogPath, logDir)
			}
			log, err := os.ReadFile(res.Provision.LogPath)
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{"workflow sees /", "loaded config " + cfg, "all 2 steps passed", "cijoe exit status 0"} {
				if !strings.Contains(string(log), want) {
					t.Errorf("log lacks %q:\n%s", want, log)
				}
			}
			var outputs int
			for _, e := range events {
				if e.Event == event.Output && strings.HasPrefix(e.Line, "workflow sees /") {
					outputs++
				}
			}
			last := events[len(events)-1]
			if outputs != 1 || last.Event != event.Done || last.LogPath != res.Provision.LogPath {
				t.Errorf("want one output event with the workflow's line and done carrying the log path; got %d, last %+v", outputs, last)
			}
		})
	}
}

func TestCijoeFailures(t *testing.T) {
	setup(t, "cryptsetup")
	standInCijoe(t)
	disk := []layouttest.Part{{FS: "ext2", SizeMiB: 16}, {FS: "ext4", SizeMiB: 48, Files: rootWithoutCloud()}}

	t.Run("workflow fails", func(t *testing.T) {
		lo := layouttest.MakeDisk(t, "gpt", disk)
		_, res, _, err := flashDisk(t, lo, flash.Options{Provision: fleet.ModeCijoe, LogDir: t.TempDir(),
			CijoeWorkflow: workflow(t, "echo before", "exit 3", "echo never")})
		if err == nil || fault.KindOf(err) != fault.Failed || !strings.Contains(err.Error(), "exited with status 3") {
			t.Fatalf("err = %v; want exit 1 naming status 3", err)
		}
		if !strings.Contains(err.Error(), res.Provision.LogPath) || res.Provision.LogPath == "" {
			t.Errorf("error does not name the log %q: %v", res.Provision.LogPath, err)
		}
		log, _ := os.ReadFile(res.Provision.LogPath)
		if !strings.Contains(string(log), "before") || strings.Contains(string(log), "\nnever") {
			t.Errorf("log:\n%s", log)
		}
	})

	t.Run("largest partition is LUKS", func(t *testing.T) {
		lo := layouttest.MakeDisk(t, "gpt", []layouttest.Part{{FS: "ext4", SizeMiB: 16, Files: rootWithoutCloud()}, {FS: "luks", SizeMiB: 40}})
		marker := filepath.Join(t.TempDir(), "ran")
		_, _, _, err := flashDisk(t, lo, flash.Options{Provision: fleet.ModeCijoe, LogDir: t.TempDir(),
			CijoeWorkflow: workflow(t, "touch "+marker)})
		if err == nil || !strings.Contains(err.Error(), "encrypted (LUKS)") {
			t.Fatalf("err = %v; want a LUKS refusal", err)
		}
		if _, err := os.Stat(marker); err == nil {
			t.Error("the workflow ran")
		}
	})

	t.Run("interrupted", func(t *testing.T) {
		lo := layouttest.MakeDisk(t, "gpt", disk)
		dev := looptest.New(t, lo.Size+8*layouttest.MiB)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var once sync.Once
		sink := event.Func(func(e event.Event) {
			if e.Event == event.Output && strings.Contains(e.Line, "sleeping") {
				once.Do(cancel)
			}
		})
		start := time.Now()
		_, err := flash.Run(ctx, flash.Options{Image: lo.Path, Target: dev.Path, Sink: sink, Provision: fleet.ModeCijoe,
			LogDir: t.TempDir(), CijoeWorkflow: workflow(t, "echo sleeping; sleep 120")})
		if err == nil || !strings.Contains(err.Error(), "interrupted") {
			t.Fatalf("err = %v; want interrupted", err)
		}
		if d := time.Since(start); d > 30*time.Second {
			t.Errorf("took %s to stop", d)
		}
		assertClean(t, dev.Path)
		if out, _ := exec.Command("pgrep", "-f", "sleep 120").Output(); len(out) > 0 {
			t.Errorf("the workflow's sleep still runs: %s", out)
		}
	})
}

func TestRunNeedsAFlashedDisk(t *testing.T) {
	setup(t)
	dev := looptest.New(t, 8*layouttest.MiB) // random bytes: no table, no filesystem
	_, err := provision.Run(context.Background(), provision.Options{Mode: fleet.ModeCloudInit, Target: dev.Path, UserData: []byte(userData)})
	if err == nil || !strings.Contains(err.Error(), "no partition has a Linux filesystem") {
		t.Errorf("err = %v", err)
	}
	assertClean(t, dev.Path)
}

// TestXFSSameUUIDMounted provisions an xfs root while another copy of the
// same filesystem (same UUID) is mounted, as when one image is flashed
// onto several disks of one host.
func TestXFSSameUUIDMounted(t *testing.T) {
	setup(t, "mkfs.xfs")
	lo := layouttest.MakeDisk(t, "gpt", []layouttest.Part{{FS: "xfs", SizeMiB: 300, Files: rootWithCloud("x")}})
	loop := strings.TrimSpace(run(t, "losetup", "-f", "--show", "-r", "-o", fmt.Sprint(lo.Starts[0]), "--sizelimit", fmt.Sprint(lo.Sizes[0]), lo.Path))
	defer run(t, "losetup", "-d", loop)
	mnt := t.TempDir()
	run(t, "mount", "-o", "ro", loop, mnt)
	defer run(t, "umount", mnt)
	_, res, _, err := flashDisk(t, lo, flash.Options{Provision: fleet.ModeCloudInit, UserData: flash.FileInput(writeInput(t, "user-data", userData))})
	if err != nil || res.Provision.Filesystem != "xfs" {
		t.Fatalf("provisioning an xfs whose twin is mounted: %v", err)
	}
}

// fileMode is the permission bits of path in the filesystem in
// [start, start+size) of dev.
func fileMode(t *testing.T, dev string, start, size int64, path string) os.FileMode {
	t.Helper()
	loop := strings.TrimSpace(run(t, "losetup", "-f", "--show", "-r", "-o", fmt.Sprint(start), "--sizelimit", fmt.Sprint(size), dev))
	defer run(t, "losetup", "-d", loop)
	mnt := t.TempDir()
	run(t, "mount", "-o", "ro", loop, mnt)
	defer run(t, "umount", mnt)
	st, err := os.Stat(filepath.Join(mnt, path))
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode().Perm()
}

// TestCloudInitVendorData: vendor-data lands beside user-data (mode
// 0600 like it), and an image's own vendor-data is kept, with a note.
func TestCloudInitVendorData(t *testing.T) {
	setup(t)
	const vendorData = "#cloud-config\nphone_home:\n  url: \"http://192.0.2.1:8080/pxe/52:54:00:b7:70:01/ready?cycle=0123456789abcdef0123456789abcdef\"\n  post: [instance_id, hostname]\n  tries: 30\n"
	const theirs = "#cloud-config\npackages: [image-authors-choice]\n"
	const seed = "var/lib/cloud/seed/nocloud-net/"
	cases := []struct {
		name  string
		files map[string]string
		want  string
		kept  bool
	}{
		{"written", rootWithCloud("v"), vendorData, false},
		{"the image's kept", func() map[string]string {
			m := rootWithCloud("v")
			m[seed+"vendor-data"] = theirs
			return m
		}(), theirs, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			lo := layouttest.MakeDisk(t, "gpt", []layouttest.Part{{FS: "ext4", SizeMiB: 48, Files: c.files}})
			dev, res, _, err := flashDisk(t, lo, flash.Options{Provision: fleet.ModeCloudInit,
				UserData:   flash.FileInput(writeInput(t, "user-data", userData)),
				VendorData: flash.Input{Path: "(test)", Data: []byte(vendorData)}})
			if err != nil {
				t.Fatalf("flash: %v", err)
			}
			got, ok := readFile(t, dev.Path, lo.Starts[0], lo.Sizes[0], seed+"vendor-data")
			if !ok || got != c.want {
				t.Errorf("vendor-data on the disk = %q (present %v); want %q", got, ok, c.want)
			}
			if ud, _ := readFile(t, dev.Path, lo.Starts[0], lo.Sizes[0], seed+"user-data"); ud != userData {
				t.Errorf("user-data on the disk = %q; want the user's, untouched", ud)
			}
			if res.Provision.ImageVendorData != c.kept {
				t.Errorf("ImageVendorData = %v, want %v", res.Provision.ImageVendorData, c.kept)
			}
			notes := strings.Join(res.Notes, "\n")
			if c.kept != strings.Contains(notes, "already holds a vendor-data, kept as it is") {
				t.Errorf("notes %q: want the kept vendor-data noted only when kept (%v)", res.Notes, c.kept)
			}
			if !c.kept {
				if m := fileMode(t, dev.Path, lo.Starts[0], lo.Sizes[0], seed+"vendor-data"); m != 0o600 {
					t.Errorf("vendor-data mode %v, want 0600 like user-data", m)
				}
				if strings.Contains(notes, "also holds vendor-data") {
					t.Errorf("notes call bty's own vendor-data the image's: %q", res.Notes)
				}
			}
		})
	}
}

// TestCloudInitDefaultUserAndKey: the image's default user is the last
// system_info.default_user.name of cloud.cfg and cloud.cfg.d/*.cfg in
// name order (a file that does not parse is skipped with a note, one
// that sets system_info without default_user changes nothing), and
// vendor-data carrying ssh_authorized_keys lands in the seed as YAML
// with the key.
func TestCloudInitDefaultUserAndKey(t *testing.T) {
	setup(t)
	const key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIP+trxoTcLtFU0qCbpFj/vGWWvcMpSnBOEp9a3B0r2yi bty-web"
	const vendorData = "#cloud-config\nssh_authorized_keys:\n  - \"" + key + "\"\n"
	files := rootWithCloud("u")
	files["etc/cloud/cloud.cfg"] = "datasource_list: [ NoCloud, None ]\nsystem_info:\n  distro: debian\n  default_user:\n    name: debian\n    lock_passwd: true\n"
	files["etc/cloud/cloud.cfg.d/10-broken.cfg"] = "system_info: [ unclosed\n"
	files["etc/cloud/cloud.cfg.d/50-no-user.cfg"] = "system_info:\n  package_mirrors: []\n"
	files["etc/cloud/cloud.cfg.d/90-x.cfg"] = "system_info:\n  default_user:\n    name: ops\n"
	files["etc/cloud/cloud.cfg.d/95-other.yaml"] = "system_info:\n  default_user:\n    name: not-a-cfg-file\n"
	lo := layouttest.MakeDisk(t, "gpt", []layouttest.Part{{FS: "ext4", SizeMiB: 48, Files: files}})
	dev, res, _, err := flashDisk(t, lo, flash.Options{Provision: fleet.ModeCloudInit,
		UserData:   flash.FileInput(writeInput(t, "user-data", userData)),
		VendorData: flash.Input{Path: "(test)", Data: []byte(vendorData)}})
	if err != nil {
		t.Fatalf("flash: %v", err)
	}
	if res.Provision.DefaultUser != "ops" {
		t.Errorf("DefaultUser = %q, want ops (90-x.cfg overrides cloud.cfg's debian)", res.Provision.DefaultUser)
	}
	notes := strings.Join(res.Notes, "\n")
	if !strings.Contains(notes, "/etc/cloud/cloud.cfg.d/10-broken.cfg does not parse") || strings.Contains(notes, "50-no-user.cfg") {
		t.Errorf("notes %q: want 10-broken.cfg noted as not parsing, and nothing about 50-no-user.cfg", res.Notes)
	}
	got, ok := readFile(t, dev.Path, lo.Starts[0], lo.Sizes[0], "var/lib/cloud/seed/nocloud-net/vendor-data")
	if !ok {
		t.Fatal("no vendor-data in the seed")
	}
	if !strings.HasPrefix(got, "#cloud-config\n") {
		t.Errorf("vendor-data does not start with #cloud-config:\n%s", got)
	}
	var doc map[string]any
	if err := yaml.Unmarshal([]byte(got), &doc); err != nil {
		t.Fatalf("vendor-data on the disk is not YAML: %v\n%s", err, got)
	}
	keys, _ := doc["ssh_authorized_keys"].([]any)
	if len(doc) != 1 || len(keys) != 1 || keys[0] != key {
		t.Errorf("vendor-data = %v, want only ssh_authorized_keys: [%q]", doc, key)
	}
	if ud, _ := readFile(t, dev.Path, lo.Starts[0], lo.Sizes[0], "var/lib/cloud/seed/nocloud-net/user-data"); ud != userData {
		t.Errorf("user-data on the disk = %q; want the user's, untouched", ud)
	}

	// Without system_info.default_user anywhere, there is none.
	lo = layouttest.MakeDisk(t, "gpt", []layouttest.Part{{FS: "ext4", SizeMiB: 48, Files: rootWithCloud("n")}})
	_, res, _, err = flashDisk(t, lo, flash.Options{Provision: fleet.ModeCloudInit,
		UserData: flash.FileInput(writeInput(t, "user-data", userData))})
	if err != nil {
		t.Fatalf("flash: %v", err)
	}
	if res.Provision.DefaultUser != "" {
		t.Errorf("DefaultUser = %q for an image that names none", res.Provision.DefaultUser)
	}
}

// TestCloudInitSeedOptional: with SeedOptional, an image without
// /etc/cloud (or with cloud-init disabled) flashes fine, bit for bit the
// image, with a note saying the key was not seeded; without it the same
// image still fails as before. Other problems stay errors.
func TestCloudInitSeedOptional(t *testing.T) {
	setup(t)
	boot := layouttest.Part{FS: "ext2", SizeMiB: 16, Files: map[string]string{"grub/": ""}}
	disabled := rootWithCloud("d")
	disabled["etc/cloud/cloud-init.disabled"] = ""
	separateVar := rootWithCloud("v")
	separateVar["etc/fstab"] = "UUID=1 / ext4 defaults 0 1\nUUID=2 /var xfs defaults 0 2\n"
	cases := []struct {
		name  string
		parts []layouttest.Part
		note  string // "" : the flash fails even with SeedOptional
		err   string
	}{
		{"no cloud-init", []layouttest.Part{boot, {FS: "ext4", SizeMiB: 48, Files: rootWithoutCloud()}},
			"the image has no cloud-init: bty-web's SSH key was not seeded; the image must authorise it itself", "no partition of"},
		{"no linux filesystem", []layouttest.Part{{FS: "vfat", SizeMiB: 40, Code: "ef00"}},
			"the image has no cloud-init: bty-web's SSH key was not seeded", "no partition of the image holds a Linux filesystem"},
		{"cloud-init disabled", []layouttest.Part{boot, {FS: "ext4", SizeMiB: 48, Files: disabled}},
			"cloud-init is disabled in this image: bty-web's SSH key was not seeded", "cloud-init is disabled in this image"},
		{"separate /var", []layouttest.Part{boot, {FS: "ext4", SizeMiB: 48, Files: separateVar}},
			"", "mounts /var from another filesystem"},
	}
	if _, err := exec.LookPath("mkfs.vfat"); err != nil {
		cases = append(cases[:1], cases[2:]...)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			lo := layouttest.MakeDisk(t, "gpt", c.parts)
			want := imagetest.SHA256(t, lo.Path, 0, lo.Size)
			opts := func(optional bool) flash.Options {
				return flash.Options{Provision: fleet.ModeCloudInit, SeedOptional: optional,
					UserData:   flash.Input{Path: "(test)", Data: []byte("#cloud-config\n")},
					VendorData: flash.Input{Path: "(test)", Data: []byte("#cloud-config\nssh_authorized_keys: [\"ssh-ed25519 AAAA bty-web\"]\n")}}
			}
			dev, res, events, err := flashDisk(t, lo, opts(true))
			if c.note == "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Errorf("with SeedOptional: err = %v, want one containing %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("with SeedOptional: %v", err)
			}
			if got := imagetest.SHA256(t, dev.Path, 0, lo.Size); got != want {
				t.Errorf("the disk differs from the image: something was written")
			}
			if res.Provision == nil || res.Provision.SeedDir != "" || res.Provision.DefaultUser != "" {
				t.Errorf("result %+v; want provisioning without a seed", res.Provision)
			}
			if !strings.Contains(strings.Join(res.Notes, "\n"), c.note) {
				t.Errorf("notes %q lack %q", res.Notes, c.note)
			}
			if last := events[len(events)-1]; last.Event != event.Done {
				t.Errorf("last event %s; want done", last.Event)
			}

			_, _, _, err = flashDisk(t, lo, opts(false))
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("without SeedOptional: err = %v, want one containing %q", err, c.err)
			}
		})
	}
}
