package imagetest

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// RequireTools skips t when one of tools is not on PATH.
func RequireTools(t testing.TB, tools ...string) {
	t.Helper()
	if tool := missingTool(tools...); tool != "" {
		t.Skipf("needs %s on PATH (make test installs it)", tool)
	}
}

// Run runs a command in dir and fails t with its stderr when it fails.
func Run(t testing.TB, dir, name string, args ...string) []byte {
	t.Helper()
	out, err := run(dir, nil, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TailImage writes a size-byte raw image into dir whose data runs to its
// very end: random bytes in the first MiB, text and zeros after it,
// and a last MiB of random bytes then text (which qcow2 compresses). Its last run of data is what a decoder that takes a short read
// for the end of the image gets wrong.
func TailImage(t testing.TB, dir string, size int64) string {
	t.Helper()
	if size < 3*mib {
		t.Fatalf("TailImage: size %d below 3 MiB", size)
	}
	f := newFiller(42)
	b := make([]byte, size)
	copy(b, f.random(mib))
	copy(b[mib+mib/2:], f.text(mib/2))
	copy(b[size-mib:], f.random(mib/2))
	copy(b[size-mib/2:], f.text(mib/2))
	p := filepath.Join(dir, "tail.img")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// Qcow2Geometry is what tests need of a qcow2 header to find entries.
type Qcow2Geometry struct {
	ClusterBits uint32
	ClusterSize int64
	L1Offset    int64
	L1Size      int64
	Extended    bool // extended L2 entries (16 bytes each)
}

// ReadQcow2Geometry reads the header fields of the qcow2 file at path.
func ReadQcow2Geometry(t testing.TB, path string) Qcow2Geometry {
	t.Helper()
	b := readHead(t, path, 112)
	be := binary.BigEndian
	g := Qcow2Geometry{
		ClusterBits: be.Uint32(b[20:]),
		L1Size:      int64(be.Uint32(b[36:])),
		L1Offset:    int64(be.Uint64(b[40:])),
	}
	g.ClusterSize = 1 << g.ClusterBits
	if be.Uint32(b[4:]) == 3 {
		g.Extended = be.Uint64(b[72:])&(1<<4) != 0
	}
	return g
}

// Qcow2L1Entry returns the file offset and value of L1 entry i.
func Qcow2L1Entry(t testing.TB, path string, i int64) (int64, uint64) {
	t.Helper()
	g := ReadQcow2Geometry(t, path)
	off := g.L1Offset + 8*i
	return off, binary.BigEndian.Uint64(ReadAt(t, path, off, 8))
}

// Qcow2L2Entry returns the file offset and value of the L2 entry that
// maps guest offset guest (the first 8 bytes of it with extended L2
// entries; the bitmap follows). It fails t when no L2 table maps it.
func Qcow2L2Entry(t testing.TB, path string, guest int64) (int64, uint64) {
	t.Helper()
	g := ReadQcow2Geometry(t, path)
	entrySize := int64(8)
	if g.Extended {
		entrySize = 16
	}
	perL2 := g.ClusterSize / entrySize
	cluster := guest / g.ClusterSize
	_, l1e := Qcow2L1Entry(t, path, cluster/perL2)
	table := int64(l1e & 0x00fffffffffffe00)
	if table == 0 {
		t.Fatalf("no L2 table maps guest offset %d of %s", guest, path)
	}
	off := table + entrySize*(cluster%perL2)
	return off, binary.BigEndian.Uint64(ReadAt(t, path, off, 8))
}

// Be64 returns v as 8 big-endian bytes.
func Be64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

// Be32 returns v as 4 big-endian bytes.
func Be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

func readHead(t testing.TB, path string, n int) []byte {
	t.Helper()
	return ReadAt(t, path, 0, n)
}

// ReadAt returns n bytes at off of the file at path.
func ReadAt(t testing.TB, path string, off int64, n int) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatalf("reading %d bytes at %d of %s: %v", n, off, path, err)
	}
	return b
}

// Pipe runs a tool (a compressor) with args on stdin in and returns its
// stdout, skipping t when the tool is missing.
func Pipe(t testing.TB, in []byte, name string, args ...string) []byte {
	t.Helper()
	RequireTools(t, name)
	cmd := exec.Command(name, args...)
	cmd.Stdin = bytes.NewReader(in)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %v: %v", name, args, err)
	}
	return out
}

// QemuImgRaw converts the image at path to raw with qemu-img and returns
// the raw file's path (next to it, suffixed .ref.raw).
func QemuImgRaw(t testing.TB, path string) string {
	t.Helper()
	out := path + ".ref.raw"
	cmd := exec.Command("qemu-img", "convert", "-O", "raw", path, out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert %s: %v: %s", path, err, b)
	}
	return out
}

// Qcow2Variant is one qcow2 image made by qemu-img.
type Qcow2Variant struct {
	Name string
	Path string
	// Unsupported is set for valid images bty refuses with a message
	// (encryption, an external data file).
	Unsupported bool
}

// Qcow2Variants builds, each in its own directory under dir, qcow2 images
// of the raw image at raw (a multiple of 64 KiB plus a few sectors, so the
// last cluster is partial) with the options qemu-img has: compat 0.10 and
// 1.1, cluster sizes 512 B to 2 MiB, zlib and zstd compression, lazy
// refcounts, refcount widths, preallocation, extended L2 entries with
// subcluster writes, zero clusters, internal snapshots, persistent
// bitmaps, backing chains (raw and qcow2, one shorter than the image),
// and the ones bty refuses (LUKS encryption, an external data file). The
// reference for each is qemu-img convert -O raw of it (QemuImgRaw).
func Qcow2Variants(t testing.TB, dir, raw string) []Qcow2Variant {
	t.Helper()
	RequireTools(t, "qemu-img", "qemu-io")
	st, err := os.Stat(raw)
	if err != nil {
		t.Fatal(err)
	}
	size := st.Size()
	var out []Qcow2Variant
	sub := func(name string) string {
		d := filepath.Join(dir, name)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	convert := func(name string, args ...string) {
		p := filepath.Join(sub(name), name+".qcow2")
		Run(t, dir, "qemu-img", append(append([]string{"convert", "-O", "qcow2"}, args...), raw, p)...)
		out = append(out, Qcow2Variant{Name: name, Path: p})
	}
	convert("v2", "-o", "compat=0.10")
	convert("v2-c512", "-o", "compat=0.10,cluster_size=512")
	for _, cs := range []string{"512", "4k", "64k", "2M"} {
		convert("v3-c"+cs, "-o", "compat=1.1,cluster_size="+cs)
	}
	convert("zlib", "-c")
	convert("zlib-c4k", "-c", "-o", "cluster_size=4k")
	convert("zlib-c2M", "-c", "-o", "cluster_size=2M")
	convert("zlib-v2", "-c", "-o", "compat=0.10")
	convert("zstd", "-c", "-o", "compression_type=zstd")
	convert("zstd-c2M", "-c", "-o", "compression_type=zstd,cluster_size=2M")
	convert("lazy-refcounts", "-o", "lazy_refcounts=on")
	for _, bits := range []string{"1", "8", "64"} {
		convert("refcount-"+bits, "-o", "refcount_bits="+bits)
	}
	for _, pre := range []string{"metadata", "falloc", "full"} {
		convert("prealloc-"+pre, "-o", "preallocation="+pre)
	}
	convert("extended-l2", "-o", "extended_l2=on")
	convert("extended-l2-zstd", "-c", "-o", "extended_l2=on,compression_type=zstd")

	io := func(p string, cmds ...string) {
		args := []string{"-f", "qcow2"}
		for _, c := range cmds {
			args = append(args, "-c", c)
		}
		Run(t, dir, "qemu-io", append(args, p)...)
	}
	at := func(frac int64) int64 { return size / 8 * frac &^ 4095 }

	// Zero clusters over data (kept allocated, and unmapped), data in
	// partial clusters.
	{
		d := sub("zero-clusters")
		p := filepath.Join(d, "zero-clusters.qcow2")
		Run(t, dir, "qemu-img", "convert", "-O", "qcow2", raw, p)
		io(p, "write -q -z 0 128k", fmt.Sprintf("write -q -z -u %d 192k", at(1)),
			fmt.Sprintf("write -q -P 0x5a %d 4k", at(3)+512))
		out = append(out, Qcow2Variant{Name: "zero-clusters", Path: p})
	}
	// Subclusters: 2 KiB of a 64 KiB cluster written, zeroed, left to
	// the backing file.
	{
		d := sub("subclusters")
		base := filepath.Join(d, "base.img")
		Run(t, dir, "cp", raw, base)
		p := filepath.Join(d, "subclusters.qcow2")
		Run(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "extended_l2=on", "-b", "base.img", "-F", "raw", p, fmt.Sprint(size))
		io(p, "write -q -P 0x11 2k 2k", "write -q -z 8k 4k", "write -q -P 0x22 62k 4k",
			fmt.Sprintf("write -q -P 0x33 %d 6k", at(5)), fmt.Sprintf("write -q -z %d 2k", at(5)+10<<10))
		out = append(out, Qcow2Variant{Name: "subclusters", Path: p})
	}
	// An internal snapshot, then the active layer changed.
	{
		d := sub("snapshot")
		p := filepath.Join(d, "snapshot.qcow2")
		Run(t, dir, "qemu-img", "convert", "-O", "qcow2", raw, p)
		Run(t, dir, "qemu-img", "snapshot", "-c", "before", p)
		io(p, fmt.Sprintf("write -q -P 0x77 %d 1M", at(2)), "write -q -z 0 64k")
		Run(t, dir, "qemu-img", "snapshot", "-c", "after", p)
		io(p, fmt.Sprintf("write -q -P 0x78 %d 64k", at(6)))
		out = append(out, Qcow2Variant{Name: "snapshot", Path: p})
	}
	// A persistent dirty bitmap.
	{
		d := sub("bitmap")
		p := filepath.Join(d, "bitmap.qcow2")
		Run(t, dir, "qemu-img", "convert", "-O", "qcow2", raw, p)
		Run(t, dir, "qemu-img", "bitmap", "--add", "--granularity", "64k", p, "b0")
		io(p, fmt.Sprintf("write -q -P 0x66 %d 128k", at(4)))
		out = append(out, Qcow2Variant{Name: "bitmap", Path: p})
	}
	// A chain: raw base <- qcow2 mid <- qcow2 top, with zero clusters
	// hiding base data.
	{
		d := sub("chain")
		Run(t, dir, "cp", raw, filepath.Join(d, "base.img"))
		mid, top := filepath.Join(d, "mid.qcow2"), filepath.Join(d, "chain.qcow2")
		Run(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.img", "-F", "raw", mid, fmt.Sprint(size))
		io(mid, fmt.Sprintf("write -q -P 0x44 %d 256k", at(2)), "write -q -z 0 64k")
		Run(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", top, fmt.Sprint(size))
		io(top, fmt.Sprintf("write -q -P 0x45 %d 64k", at(2)+64<<10), fmt.Sprintf("write -q -z %d 64k", at(6)))
		out = append(out, Qcow2Variant{Name: "chain", Path: top})
	}
	// A backing file shorter than the image: the rest reads as zeros.
	{
		d := sub("short-backing")
		short := make([]byte, size/2+512)
		src, err := os.ReadFile(raw)
		if err != nil {
			t.Fatal(err)
		}
		copy(short, src)
		if err := os.WriteFile(filepath.Join(d, "short.img"), short, 0o644); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(d, "short-backing.qcow2")
		Run(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "short.img", "-F", "raw", p, fmt.Sprint(size))
		io(p, fmt.Sprintf("write -q -P 0x55 %d 64k", at(7)))
		out = append(out, Qcow2Variant{Name: "short-backing", Path: p})
	}
	// What bty refuses.
	{
		// A LUKS image made by qemu-img when it can (its key derivation
		// times itself and fails on a loaded machine with "Unable to get
		// accurate CPU usage"); else a plain image marked LUKS, which is
		// what bty looks at.
		d := sub("luks")
		p := filepath.Join(d, "luks.qcow2")
		if _, err := run(dir, nil, "qemu-img", "create", "-q", "-f", "qcow2", "--object", "secret,id=s0,data=bty-test",
			"-o", "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10", p, fmt.Sprint(size)); err != nil {
			Run(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", p, fmt.Sprint(size))
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			copy(b[32:], Be32(2))
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		out = append(out, Qcow2Variant{Name: "luks", Path: p, Unsupported: true})
		d = sub("data-file")
		p = filepath.Join(d, "data-file.qcow2")
		Run(t, d, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "data_file=data.raw", p, fmt.Sprint(size))
		out = append(out, Qcow2Variant{Name: "data-file", Path: p, Unsupported: true})
	}
	return out
}

// Qcow2TailPastEOF converts the raw image at raw (made by TailImage) to
// qcow2 in dir, compressed with -c or not, and points the L2 entry of a
// cluster in the image's last run of data past the end of the file. It
// returns the corrupt image, the guest offset of that cluster and the file
// offset of its L2 entry.
func Qcow2TailPastEOF(t testing.TB, dir, raw string, compressed bool) (path string, guest, entryOff int64) {
	t.Helper()
	RequireTools(t, "qemu-img")
	st, err := os.Stat(raw)
	if err != nil {
		t.Fatal(err)
	}
	guest = (st.Size() - 256<<10) &^ (64<<10 - 1) // text at the end: compressed by -c
	name := map[bool]string{false: "normal", true: "compressed"}[compressed]
	p := filepath.Join(dir, name+".qcow2")
	args := []string{"convert", "-O", "qcow2"}
	if compressed {
		args = append(args, "-c")
	}
	Run(t, dir, "qemu-img", append(args, raw, p)...)
	if g := ReadQcow2Geometry(t, p); g.ClusterSize != 64<<10 {
		t.Fatalf("%s has %d-byte clusters, want 64 KiB", p, g.ClusterSize)
	}
	fst, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	off, entry := Qcow2L2Entry(t, p, guest)
	var bad uint64
	if compressed {
		if entry&(1<<62) == 0 {
			t.Fatalf("the cluster at guest offset %d of %s is not compressed", guest, p)
		}
		// Keep the sector count, move the data past the end.
		shift := 62 - (16 - 8)
		bad = entry&^(1<<shift-1) | uint64(fst.Size()+4096)
	} else {
		bad = 1<<63 | uint64((fst.Size()+1<<20)&^(64<<10-1))
	}
	return Corrupt(t, p, off, Be64(bad)), guest, off
}
