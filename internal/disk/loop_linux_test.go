package disk

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// These tests use real loop devices, filesystems and (where the kernel
// has it) device-mapper. They skip, saying why, when not root or when a
// tool is missing; every device and mount is released in t.Cleanup.

func needLoop(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to attach loop devices")
	}
	if _, err := exec.LookPath("losetup"); err != nil {
		t.Skip("needs losetup (util-linux)")
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skip("kernel has no loop driver (/dev/loop-control missing)")
	}
}

func needTool(t *testing.T, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Skipf("needs %s", name)
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// newLoop attaches a loop device to a new file of size bytes (filled with
// fill when not nil) and returns the device path and the file path.
func newLoop(t *testing.T, size int64, fill []byte, losetupArgs ...string) (dev, file string) {
	t.Helper()
	file = filepath.Join(t.TempDir(), "backing.img")
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	if fill != nil {
		if _, err := f.Write(fill); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"-f", "--show"}, losetupArgs...)
	dev = run(t, "losetup", append(args, file)...)
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v\n%s", dev, err, out)
		}
	})
	return dev, file
}

// mountFS makes a filesystem of type fstype on dev and mounts it on a new
// directory whose name has a space in it (to exercise mountinfo escapes).
func mountFS(t *testing.T, fstype, dev string) string {
	t.Helper()
	needTool(t, "mkfs."+fstype)
	force := "-f" // mkfs.btrfs, mkfs.xfs
	if strings.HasPrefix(fstype, "ext") {
		force = "-F"
	}
	run(t, "mkfs."+fstype, "-q", force, dev)
	dir := filepath.Join(t.TempDir(), "mount point")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, "mount", dev, dir)
	t.Cleanup(func() { unmount(t, dir) })
	return dir
}

// unmount does not trust the code under test to say whether dir is still
// mounted: it asks the kernel, and EINVAL (not a mount point) means the
// test already unmounted it.
func unmount(t *testing.T, dir string) {
	t.Helper()
	if err := unix.Unmount(dir, 0); err != nil && err != unix.EINVAL {
		t.Errorf("unmounting %s: %v", dir, err)
	}
}

func hasProblem(problems []string, substr string) bool {
	for _, p := range problems {
		if strings.Contains(p, substr) {
			return true
		}
	}
	return false
}

func TestGetErrors(t *testing.T) {
	dir := t.TempDir()
	regular := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(regular, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "nosuch")
	dangling := filepath.Join(dir, "dangling")
	if err := os.Symlink(missing, dangling); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		path    string
		want    error
		wantMsg string
	}{
		{regular, ErrNotBlockDevice, regular + " is not a block device"},
		{dir, ErrNotBlockDevice, dir + " is not a block device"},
		{"/dev/null", ErrNotBlockDevice, "/dev/null is not a block device"},
		{missing, ErrNotExist, missing + " does not exist"},
		{dangling, ErrNotExist, dangling + " does not exist"},
	}
	for _, tt := range tests {
		_, err := Get(tt.path)
		if !errors.Is(err, tt.want) {
			t.Errorf("Get(%s) = %v, want %v", tt.path, err, tt.want)
			continue
		}
		if !strings.HasPrefix(err.Error(), tt.wantMsg) {
			t.Errorf("Get(%s) error %q does not start with %q", tt.path, err, tt.wantMsg)
		}
		if tt.want == ErrNotExist && !errors.Is(err, os.ErrNotExist) {
			t.Errorf("Get(%s) error %v does not match os.ErrNotExist", tt.path, err)
		}
	}

	if _, err := OpenTarget(regular, false); !errors.Is(err, ErrNotBlockDevice) {
		t.Errorf("OpenTarget(regular file) = %v, want ErrNotBlockDevice", err)
	}
	if _, err := OpenTarget(missing, false); !errors.Is(err, ErrNotExist) || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("OpenTarget(missing) = %v, want ErrNotExist", err)
	}
}

func TestSystemDiskIsFlagged(t *testing.T) {
	f, err := os.Open(filepath.Join(ProcRoot, "self", "mountinfo"))
	if err != nil {
		t.Skipf("no mountinfo: %v", err)
	}
	mounts, err := ParseMountinfo(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	var root *Mount
	for i := range mounts {
		if mounts[i].Mountpoint == "/" {
			root = &mounts[i] // the last one is the one in effect
		}
	}
	if root == nil || root.Major == 0 {
		t.Skip("/ is not on a block device here (overlay, tmpfs or an anonymous device); nothing to check")
	}
	// Walk down by hand: partition -> whole disk.
	dir, err := filepath.EvalSymlinks(fmt.Sprintf("%s/dev/block/%d:%d", SysRoot, root.Major, root.Minor))
	if err != nil {
		t.Skipf("no sysfs entry for / (%d:%d): %v", root.Major, root.Minor, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "partition")); err == nil {
		dir = filepath.Dir(dir)
	}
	path := filepath.Join(DevRoot, filepath.Base(dir))
	if _, err := os.Stat(path); err != nil {
		t.Skipf("the device node of / is missing: %v", err)
	}
	d, err := Get(path)
	if err != nil {
		t.Fatal(err)
	}
	if !d.System {
		t.Errorf("Get(%s).System = false, want true (/ is on it)", path)
	}
	if !hasProblem(d.Problems(), "the running system or the live media is on this disk (/ is mounted from ") {
		t.Errorf("Get(%s).Problems() = %q, want the running system named", path, d.Problems())
	}
	disks, err := List()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, ld := range disks {
		if ld.Name == d.Name {
			found = true
			if !ld.System {
				t.Errorf("List() shows %s with System = false", ld.Name)
			}
		}
	}
	if !found {
		t.Errorf("List() does not show the system disk %s", d.Name)
	}
}

func TestLoopGet(t *testing.T) {
	needLoop(t)
	const size = 8 << 20
	dev, file := newLoop(t, size, nil)
	link := filepath.Join(t.TempDir(), "by-id-link")
	if err := os.Symlink(dev, link); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{dev, link} {
		d, err := Get(p)
		if err != nil {
			t.Fatal(err)
		}
		if d.Path != dev || d.Name != filepath.Base(dev) {
			t.Errorf("Get(%s) path, name = %s, %s; want %s", p, d.Path, d.Name, dev)
		}
		if d.SizeBytes != size {
			t.Errorf("Get(%s).SizeBytes = %d, want %d", p, d.SizeBytes, size)
		}
		if d.Type != "loop" || d.Transport != "loop" || d.BackingFile != file {
			t.Errorf("Get(%s) type, transport, backing file = %q, %q, %q; want loop, loop, %s", p, d.Type, d.Transport, d.BackingFile, file)
		}
		if d.LogicalBlockSize != 512 {
			t.Errorf("Get(%s).LogicalBlockSize = %d, want 512", p, d.LogicalBlockSize)
		}
		if pr := d.Problems(); pr != nil {
			t.Errorf("Get(%s).Problems() = %q, want none for an idle loop device", p, pr)
		}
	}
	if got := Partitions(filepath.Base(dev)); got != nil {
		t.Errorf("Partitions(%s) = %q, want none", filepath.Base(dev), got)
	}
	disks, err := List()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, d := range disks {
		found = found || d.Path == dev
	}
	if !found {
		t.Errorf("List() does not include %s", dev)
	}
}

func TestLoopMounted(t *testing.T) {
	needLoop(t)
	dev, _ := newLoop(t, 32<<20, nil)
	dir := mountFS(t, "ext4", dev)

	d, err := Get(dev)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Mountpoints) != 1 || d.Mountpoints[0] != dir {
		t.Errorf("Mountpoints = %q, want [%q]", d.Mountpoints, dir)
	}
	if !hasProblem(d.Problems(), "mounted at "+dir+"; unmount first") {
		t.Errorf("Problems() = %q, want it to name the mount point %q", d.Problems(), dir)
	}
	tg, err := OpenTarget(dev, false)
	if err == nil {
		tg.Close()
		t.Fatalf("OpenTarget(%s) succeeded while mounted", dev)
	}
	if !errors.Is(err, ErrBusy) {
		t.Fatalf("OpenTarget(%s) = %v, want ErrBusy", dev, err)
	}

	// Unmounted, the same device opens: the refusal came from the mount.
	run(t, "umount", dir)
	d, err = Get(dev)
	if err != nil {
		t.Fatal(err)
	}
	if pr := d.Problems(); pr != nil {
		t.Errorf("after umount Problems() = %q, want none", pr)
	}
	tg, err = OpenTarget(dev, false)
	if err != nil {
		t.Fatalf("OpenTarget after umount: %v", err)
	}
	tg.Close()
}

// btrfs reports an anonymous device number in mountinfo; the mount must
// still be found through its source.
func TestLoopMountedBtrfs(t *testing.T) {
	needLoop(t)
	dev, _ := newLoop(t, 128<<20, nil)
	dir := mountFS(t, "btrfs", dev)
	d, err := Get(dev)
	if err != nil {
		t.Fatal(err)
	}
	if !hasProblem(d.Problems(), "mounted at "+dir) {
		t.Errorf("Problems() = %q, want it to name the btrfs mount point %q", d.Problems(), dir)
	}
}

func TestLoopReadOnly(t *testing.T) {
	needLoop(t)
	t.Run("losetup -r", func(t *testing.T) {
		dev, _ := newLoop(t, 1<<20, nil, "-r")
		d, err := Get(dev)
		if err != nil {
			t.Fatal(err)
		}
		if !d.ReadOnly || !hasProblem(d.Problems(), "read-only") {
			t.Errorf("ReadOnly = %v, Problems() = %q; want read-only", d.ReadOnly, d.Problems())
		}
		if tg, err := OpenTarget(dev, false); !errors.Is(err, ErrReadOnly) {
			if err == nil {
				tg.Close()
			}
			t.Errorf("OpenTarget(%s) on a read-only device = %v, want ErrReadOnly", dev, err)
		}
	})
	// Kernels since 5.12 show BLKROSET in sysfs too; older ones only
	// answer through BLKROGET, so that path is checked on its own.
	t.Run("blockdev --setro", func(t *testing.T) {
		needTool(t, "blockdev")
		dev, _ := newLoop(t, 1<<20, nil)
		if blkROGet(dev) {
			t.Fatalf("BLKROGET says a fresh loop device is read-only")
		}
		run(t, "blockdev", "--setro", dev)
		if !blkROGet(dev) {
			t.Errorf("BLKROGET does not see blockdev --setro")
		}
		t.Cleanup(func() { exec.Command("blockdev", "--setrw", dev).Run() })
		d, err := Get(dev)
		if err != nil {
			t.Fatal(err)
		}
		if !d.ReadOnly || !hasProblem(d.Problems(), "read-only") {
			t.Errorf("ReadOnly = %v, Problems() = %q; want read-only", d.ReadOnly, d.Problems())
		}
	})
}

func TestLoopHeldByDM(t *testing.T) {
	needLoop(t)
	needTool(t, "dmsetup")
	// Ask /proc/misc first: dmsetup would create /dev/mapper/control
	// even when the kernel has no device-mapper.
	if misc, _ := os.ReadFile("/proc/misc"); !strings.Contains(string(misc), "device-mapper") {
		t.Skip("kernel has no device-mapper (not in /proc/misc)")
	}
	if out, err := exec.Command("dmsetup", "targets").CombinedOutput(); err != nil || !strings.Contains(string(out), "linear") {
		t.Skipf("kernel has no device-mapper linear target (dmsetup targets: %v %s)", err, bytes.TrimSpace(out))
	}
	const size = 32 << 20
	dev, _ := newLoop(t, size, nil)
	name := fmt.Sprintf("bty-test-%d", os.Getpid())
	run(t, "dmsetup", "create", name, "--noudevsync", "--table", fmt.Sprintf("0 %d linear %s 0", size/512, dev))
	t.Cleanup(func() {
		if out, err := exec.Command("dmsetup", "remove", "--noudevsync", name).CombinedOutput(); err != nil {
			t.Errorf("dmsetup remove %s: %v\n%s", name, err, out)
		}
	})
	holders := dirNames(filepath.Join(SysRoot, "block", filepath.Base(dev), "holders"))
	if len(holders) != 1 || !strings.HasPrefix(holders[0], "dm-") {
		t.Fatalf("sysfs holders of %s = %q, want one dm device", dev, holders)
	}
	dm := holders[0]

	d, err := Get(dev)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Holders) != 1 || d.Holders[0] != dm {
		t.Errorf("Holders = %q, want [%s]", d.Holders, dm)
	}
	if !hasProblem(d.Problems(), "held by "+dm+" (LVM or device-mapper); deactivate it first") {
		t.Errorf("Problems() = %q, want held by %s", d.Problems(), dm)
	}
	if tg, err := OpenTarget(dev, false); !errors.Is(err, ErrBusy) {
		if err == nil {
			tg.Close()
		}
		t.Errorf("OpenTarget(%s) under dm = %v, want ErrBusy", dev, err)
	}

	// A filesystem mounted on the dm device is named on the disk below.
	dir := mountFS(t, "ext4", filepath.Join(DevRoot, dm))
	d, err = Get(dev)
	if err != nil {
		t.Fatal(err)
	}
	if !hasProblem(d.Problems(), "mounted at "+dir) {
		t.Errorf("Problems() = %q, want the mount on %s (%s) named", d.Problems(), dm, dir)
	}
}

func TestLoopSwap(t *testing.T) {
	needLoop(t)
	needTool(t, "mkswap")
	needTool(t, "swapon")
	dev, _ := newLoop(t, 16<<20, nil)
	run(t, "mkswap", dev)
	run(t, "swapon", dev)
	t.Cleanup(func() {
		if out, err := exec.Command("swapoff", dev).CombinedOutput(); err != nil {
			t.Errorf("swapoff %s: %v\n%s", dev, err, out)
		}
	})
	d, err := Get(dev)
	if err != nil {
		t.Fatal(err)
	}
	if !hasProblem(d.Problems(), "in use as swap ("+dev+"); run swapoff "+dev+" first") {
		t.Errorf("Problems() = %q, want swap named", d.Problems())
	}
	if tg, err := OpenTarget(dev, false); !errors.Is(err, ErrBusy) {
		if err == nil {
			tg.Close()
		}
		t.Errorf("OpenTarget(%s) while swapped on = %v, want ErrBusy", dev, err)
	}
}

func TestOpenTargetExclusive(t *testing.T) {
	needLoop(t)
	const size = 4 << 20
	dev, _ := newLoop(t, size, nil)
	first, err := OpenTarget(dev, false)
	if err != nil {
		t.Fatal(err)
	}
	if first.Size() != size || first.LogicalBlockSize() != 512 || first.Path() != dev || first.File() == nil {
		t.Errorf("Size, LogicalBlockSize, Path = %d, %d, %s; want %d, 512, %s", first.Size(), first.LogicalBlockSize(), first.Path(), size, dev)
	}
	second, err := OpenTarget(dev, false)
	if err == nil {
		second.Close()
		t.Fatal("a second OpenTarget succeeded while the first is open")
	}
	if !errors.Is(err, ErrBusy) {
		t.Fatalf("second OpenTarget = %v, want ErrBusy", err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	second, err = OpenTarget(dev, true)
	if err != nil {
		t.Fatalf("OpenTarget after the first closed: %v", err)
	}
	second.Close()
}

func TestRereadPartitionsPlainLoop(t *testing.T) {
	needLoop(t)
	dev, _ := newLoop(t, 4<<20, nil)
	tg, err := OpenTarget(dev, false)
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	if err := tg.RereadPartitions(); err != nil {
		t.Errorf("RereadPartitions on a loop device without partscan = %v, want nil", err)
	}
}

func TestZeroRange(t *testing.T) {
	needLoop(t)
	const size = 8 << 20
	tests := []struct {
		name     string
		direct   bool
		forceW   bool // the device "refused" BLKZEROOUT earlier
		off, n   int64
		wantMeth ZeroMethod
	}{
		{name: "zeroout, odd sectors", off: 3 * 512, n: 1<<20 + 5*512, wantMeth: ZeroOut},
		{name: "zeroout, O_DIRECT", direct: true, off: 512, n: 4096, wantMeth: ZeroOut},
		{name: "write fallback spanning chunks", forceW: true, off: 7 * 512, n: zeroChunk + 3*512, wantMeth: ZeroWrite},
		{name: "write fallback, O_DIRECT", direct: true, forceW: true, off: 1 << 20, n: 2<<20 + 512, wantMeth: ZeroWrite},
		{name: "up to the last sector", off: size - 3*512, n: 3 * 512, wantMeth: ZeroOut},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			orig := make([]byte, size)
			if _, err := rand.Read(orig); err != nil {
				t.Fatal(err)
			}
			dev, file := newLoop(t, size, orig)
			tg, err := OpenTarget(dev, tt.direct)
			if err != nil {
				t.Fatal(err)
			}
			defer tg.Close()
			tg.noZeroOut.Store(tt.forceW)
			m, err := tg.ZeroRange(tt.off, tt.n)
			if err != nil {
				t.Fatal(err)
			}
			if m != tt.wantMeth {
				t.Errorf("method = %q, want %q", m, tt.wantMeth)
			}
			if err := tg.Sync(); err != nil {
				t.Fatal(err)
			}
			if err := tg.Close(); err != nil {
				t.Fatal(err)
			}
			// Read back through the device (a fresh open, O_DIRECT so no
			// cache can answer) and through the backing file.
			checkZeroed(t, readDevice(t, dev), orig, tt.off, tt.n)
			got, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			checkZeroed(t, got, orig, tt.off, tt.n)
		})
	}

	t.Run("rejects bad ranges", func(t *testing.T) {
		dev, _ := newLoop(t, size, nil)
		tg, err := OpenTarget(dev, false)
		if err != nil {
			t.Fatal(err)
		}
		defer tg.Close()
		for _, r := range [][2]int64{{1, 512}, {512, 100}, {size - 512, 1024}, {-512, 512}} {
			if _, err := tg.ZeroRange(r[0], r[1]); err == nil {
				t.Errorf("ZeroRange(%d, %d) succeeded, want an error", r[0], r[1])
			}
		}
		if _, err := tg.ZeroRange(1, 512); err == nil || !strings.Contains(err.Error(), "not aligned to the 512-byte logical block size") {
			t.Errorf("ZeroRange(1, 512) = %v, want a clear alignment error", err)
		}
	})
}

// TestZeroRangeConcurrentWrites zeroes every other 256 KiB chunk while
// other goroutines write a pattern into the chunks between.
func TestZeroRangeConcurrentWrites(t *testing.T) {
	needLoop(t)
	const size, chunk = 16 << 20, 256 << 10
	orig := make([]byte, size)
	if _, err := rand.Read(orig); err != nil {
		t.Fatal(err)
	}
	dev, _ := newLoop(t, size, orig)
	tg, err := OpenTarget(dev, false)
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	pattern := bytes.Repeat([]byte{0xA5}, chunk)
	var wg sync.WaitGroup
	errs := make(chan error, size/chunk)
	for off := int64(0); off < size; off += chunk {
		wg.Add(1)
		go func(off int64) {
			defer wg.Done()
			var err error
			if (off/chunk)%2 == 0 {
				_, err = tg.ZeroRange(off, chunk)
			} else {
				_, err = tg.WriteAt(pattern, off)
			}
			errs <- err
		}(off)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := tg.Sync(); err != nil {
		t.Fatal(err)
	}
	got := readDevice(t, dev)
	for off := 0; off < size; off += chunk {
		want := pattern
		if (off/chunk)%2 == 0 {
			want = make([]byte, chunk)
		}
		if !bytes.Equal(got[off:off+chunk], want) {
			t.Fatalf("chunk at %d has wrong contents", off)
		}
	}
}

// readDevice reads the whole device with O_DIRECT, bypassing the page
// cache, through an aligned buffer.
func readDevice(t *testing.T, dev string) []byte {
	t.Helper()
	f, err := os.OpenFile(dev, os.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out bytes.Buffer
	buf := alignedBuf(1 << 20)
	for {
		n, err := f.Read(buf)
		out.Write(buf[:n])
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return out.Bytes()
}

func alignedBuf(n int) []byte {
	b := make([]byte, n+4096)
	skip := 0
	if r := int(uintptr(unsafe.Pointer(&b[0])) % 4096); r != 0 {
		skip = 4096 - r
	}
	return b[skip : skip+n]
}

// checkZeroed verifies got is orig with [off, off+n) zeroed, naming the
// first wrong byte; it looks hardest at both edges.
func checkZeroed(t *testing.T, got, orig []byte, off, n int64) {
	t.Helper()
	if len(got) != len(orig) {
		t.Fatalf("read %d bytes, want %d", len(got), len(orig))
	}
	end := off + n
	for i := range got {
		i64 := int64(i)
		want := orig[i]
		if i64 >= off && i64 < end {
			want = 0
		}
		if got[i] != want {
			t.Fatalf("byte %d = %#x, want %#x (range [%d, %d))", i, got[i], want, off, end)
		}
	}
	// The edges must have been meaningful: random data just outside.
	if off > 0 && bytes.Equal(orig[off-8:off], make([]byte, 8)) {
		t.Fatalf("test data before the range is zero; the edge check proves nothing")
	}
}
