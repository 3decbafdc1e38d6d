package kmod_test

// Tests against the modules of Debian's current kernel (linux-image-amd64),
// fetched with apt-get into a cache shared with internal/media's tests.

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/btyproject/bty/internal/kmod"
	"github.com/btyproject/bty/internal/media"
)

// testCache is $BTY_MEDIA_CACHE, else a fixed directory under the temp
// dir, so the kernel package is downloaded once for every test run.
func testCache() string {
	if d := os.Getenv("BTY_MEDIA_CACHE"); d != "" {
		return d
	}
	return filepath.Join(os.TempDir(), "bty-media-test-cache")
}

var (
	kernelOnce sync.Once
	kernel     *media.Kernel
	kernelErr  error
	fullIndex  *kmod.Index
)

// debianKernel returns the unpacked Debian kernel and its full index.
// Without BTY_MEDIA_TEST=1 it only uses a kernel already in the cache.
func debianKernel(t *testing.T) (*media.Kernel, *kmod.Index) {
	t.Helper()
	if os.Getenv("BTY_MEDIA_TEST") != "1" {
		m, _ := filepath.Glob(filepath.Join(testCache(), "unpacked", "linux-image-*"))
		if len(m) == 0 {
			t.Skipf("needs Debian's kernel package (about 70 MB, apt-get download): set BTY_MEDIA_TEST=1 to fetch it into %s (make test does)", testCache())
		}
	}
	kernelOnce.Do(func() {
		log := slog.New(slog.NewTextHandler(io.Discard, nil))
		kernel, kernelErr = media.FetchKernel(context.Background(), testCache(), "", log)
		if kernelErr == nil {
			fullIndex, kernelErr = kmod.Scan(kernel.ModDir, kernel.Version)
		}
	})
	if kernelErr != nil {
		t.Fatalf("fetching Debian's kernel: %v", kernelErr)
	}
	return kernel, fullIndex
}

func TestScanDebianKernel(t *testing.T) {
	k, ix := debianKernel(t)
	if ix.Kernel != k.Version || len(ix.Modules) < 2000 {
		t.Fatalf("index of %s: kernel %q, %d modules; want thousands", k.ModDir, ix.Kernel, len(ix.Modules))
	}
	vn := ix.Modules["virtio_net"]
	if vn == nil {
		t.Fatal("no virtio_net in the index")
	}
	if vn.Path != "kernel/drivers/net/virtio_net.ko" {
		t.Errorf("virtio_net path = %q", vn.Path)
	}
	for _, d := range []string{"virtio_ring", "virtio"} {
		if !slices.Contains(vn.Depends, d) {
			t.Errorf("virtio_net depends = %v, want %s among them", vn.Depends, d)
		}
	}
	if us := ix.Modules["usb_storage"]; us == nil || !strings.HasSuffix(us.Path, "/usb-storage.ko") {
		t.Errorf("usb-storage.ko is not indexed as usb_storage: %+v", us)
	}
	if ext4 := ix.Modules["ext4"]; ext4 == nil || !slices.Contains(ext4.SoftPre, "crypto-crc32c") {
		t.Errorf("ext4's softdep pre = %v, want crypto-crc32c", ext4)
	}
	// Every path is a file, every dependency is indexed.
	for name, m := range ix.Modules {
		if _, err := os.Stat(filepath.Join(k.ModDir, m.Path)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		for _, d := range m.Depends {
			if ix.Modules[d] == nil {
				t.Errorf("%s depends on %s, which is not indexed", name, d)
			}
		}
	}
}

func TestResolveDebianKernel(t *testing.T) {
	_, ix := debianKernel(t)
	tests := []struct{ q, want string }{
		// A modern virtio-net PCI function: virtio_pci binds the PCI
		// device, then virtio_net the virtio device it exposes.
		{"pci:v00001AF4d00001041sv00001AF4sd00001100bc02sc00i00", "virtio_pci"},
		{"virtio:d00000001v00001AF4", "virtio_net"},
		{"virtio:d00000002v00001AF4", "virtio_blk"},
		{"pci:v00008086d000010D3sv00008086sd0000A01Fbc02sc00i00", "e1000e"}, // QEMU's e1000e
		{"pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00", "e1000"},  // QEMU's e1000
		{"pci:v00001B36d00000010sv00001AF4sd00001100bc01sc08i02", "nvme"},   // QEMU's NVMe
		{"pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01", "ahci"},   // QEMU q35's AHCI
		{"fs-ext4", "ext4"},
		{"crypto-crc32c", "crc32c_generic"},
		{"usb-storage", "usb_storage"},
	}
	for _, tc := range tests {
		if got := ix.Resolve(tc.q); !slices.Contains(got, tc.want) {
			t.Errorf("Resolve(%q) = %v, want %s among them", tc.q, got, tc.want)
		}
	}
	if got := ix.Resolve("pci:v0000FFFFd0000FFFFsv00000000sd00000000bc00sc00i00"); len(got) != 0 {
		t.Errorf("Resolve(unknown device) = %v, want none", got)
	}
}

func TestLoadOrderDebianKernel(t *testing.T) {
	_, ix := debianKernel(t)
	order, err := ix.LoadOrder("btrfs")
	if err != nil {
		t.Fatal(err)
	}
	if order[len(order)-1] != "btrfs" {
		t.Errorf("LoadOrder(btrfs) = %v: btrfs is not last", order)
	}
	for _, dep := range []string{"xor", "raid6_pq", "libcrc32c", "zstd_compress"} {
		if !slices.Contains(order[:len(order)-1], dep) {
			t.Errorf("LoadOrder(btrfs) = %v: no %s before btrfs", order, dep)
		}
	}
	// For a whole live env's worth of modules: each once, each after
	// everything it depends on.
	names := []string{"virtio_net", "e1000e", "ext4", "xfs", "btrfs", "vfat", "exfat", "nvme", "ahci", "usb_storage", "uas", "r8152", "sd_mod"}
	order, err = ix.LoadOrder(names...)
	if err != nil {
		t.Fatal(err)
	}
	pos := map[string]int{}
	for i, n := range order {
		if _, dup := pos[n]; dup {
			t.Errorf("%s appears twice in %v", n, order)
		}
		pos[n] = i
	}
	for _, n := range order {
		for _, d := range ix.Modules[n].Depends {
			if p, ok := pos[d]; !ok || p > pos[n] {
				t.Errorf("%s comes before its dependency %s in %v", n, d, order)
			}
		}
	}
	for _, n := range names {
		if _, ok := pos[n]; !ok {
			t.Errorf("%s is not in the load order", n)
		}
	}
}

func TestSubsetDebianKernel(t *testing.T) {
	_, ix := debianKernel(t)
	sub, err := ix.Subset([]string{"btrfs", "virtio-net"})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"btrfs", "virtio_net", "xor", "raid6_pq", "libcrc32c", "virtio_ring", "crc32c_generic"} {
		if sub.Modules[want] == nil {
			t.Errorf("Subset(btrfs, virtio-net) lacks %s", want)
		}
	}
	if len(sub.Modules) > 40 {
		t.Errorf("Subset(btrfs, virtio-net) has %d modules: more than their closure", len(sub.Modules))
	}
	// The subset loads on its own.
	if _, err := sub.LoadOrder("btrfs", "virtio_net"); err != nil {
		t.Errorf("the subset cannot order its own modules: %v", err)
	}
	if _, err := ix.Subset([]string{"ext4", "no_such_driver"}); err == nil || !strings.Contains(err.Error(), "no_such_driver") {
		t.Errorf("Subset with an unknown name: error %v, want one naming no_such_driver", err)
	}
	// atkbd is built into Debian's kernel: not a loadable module.
	if _, err := ix.Subset([]string{"atkbd"}); err == nil {
		t.Error("Subset(atkbd) (built in) gave no error")
	}
}

// TestScanCompressed scans real modules compressed the way distributions
// ship them (xz with a CRC32 check, zstd, gzip) and expects the same
// index as for the plain files.
func TestScanCompressed(t *testing.T) {
	k, ix := debianKernel(t)
	tools := map[string][]string{
		".xz":  {"xz", "--check=crc32", "-k"},
		".zst": {"zstd", "-q", "-k"},
		".gz":  {"gzip", "-k"},
	}
	dir := t.TempDir()
	mods := []string{"virtio_net", "virtio_ring", "virtio", "net_failover"}
	suffix := []string{".xz", ".zst", ".gz", ""}
	plain := map[string][]byte{}
	for i, name := range mods {
		m := ix.Modules[name]
		if m == nil {
			t.Fatalf("no %s in the Debian kernel", name)
		}
		b, err := os.ReadFile(filepath.Join(k.ModDir, m.Path))
		if err != nil {
			t.Fatal(err)
		}
		plain[name] = b
		dst := filepath.Join(dir, m.Path)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			t.Fatal(err)
		}
		if s := suffix[i]; s != "" {
			tool := tools[s]
			if _, err := exec.LookPath(tool[0]); err != nil {
				t.Skipf("%s is not installed (apt-get install xz-utils zstd gzip)", tool[0])
			}
			if out, err := exec.Command(tool[0], append(tool[1:], dst)...).CombinedOutput(); err != nil {
				t.Fatalf("%s: %v: %s", tool[0], err, out)
			}
			os.Remove(dst)
		}
	}
	got, err := kmod.Scan(dir, k.Version)
	if err != nil {
		t.Fatal(err)
	}
	for i, name := range mods {
		g := got.Modules[name]
		if g == nil {
			t.Errorf("%s%s not indexed", name, suffix[i])
			continue
		}
		want := *ix.Modules[name]
		if g.Path != want.Path+suffix[i] {
			t.Errorf("%s path = %q, want %q", name, g.Path, want.Path+suffix[i])
		}
		if kmod.UncompressedPath(g.Path) != want.Path {
			t.Errorf("UncompressedPath(%q) = %q", g.Path, kmod.UncompressedPath(g.Path))
		}
		g.Path = want.Path
		if !slices.Equal(g.Depends, want.Depends) || !slices.Equal(g.Aliases, want.Aliases) || !slices.Equal(g.SoftPre, want.SoftPre) {
			t.Errorf("%s%s: %+v, want %+v", name, suffix[i], g, want)
		}
		b, err := kmod.ReadFile(filepath.Join(dir, ix.Modules[name].Path+suffix[i]))
		if err != nil {
			t.Errorf("ReadFile: %v", err)
		} else if !bytes.Equal(b, plain[name]) {
			t.Errorf("ReadFile(%s%s) differs from the module", name, suffix[i])
		}
	}
	// A damaged compressed module is an error, not a silently short index.
	bad := filepath.Join(dir, "kernel", "broken.ko.xz")
	if err := os.WriteFile(bad, []byte("\xfd7zXZ\x00garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := kmod.Scan(dir, k.Version); err == nil {
		t.Error("Scan with a damaged .ko.xz gave no error")
	}
}
