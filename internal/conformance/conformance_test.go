package conformance

import (
	"archive/zip"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"

	"github.com/btyproject/bty/internal/flash"
	"github.com/btyproject/bty/internal/imagetest"
	"github.com/btyproject/bty/internal/looptest"
)

// verdict is what the reference decoder makes of a file.
type verdict int

const (
	decodes verdict = iota // the reference decodes it: bty must, to the same bytes
	refuses                // the reference refuses it: bty must refuse it
	either                 // no verdict (a warning): bty may do either, but not write other bytes
)

// testCase is one file to flash.
type testCase struct {
	group, name string
	path        string
	verdict     verdict
	want        []byte // the reference's output when it decodes
	// unsupported: bty must refuse it as something it does not decode
	// (a foreign format), not as corrupt.
	unsupported bool
}

// result counts what happened per group, for the summary.
type result struct{ identical, refused, empty, total int }

// TestConformance flashes every case onto one loop device, refilled with
// random bytes before each, and compares the device with the reference's
// output (and the bytes after it with what was there).
func TestConformance(t *testing.T) {
	looptest.RequireRoot(t)
	imagetest.RequireTools(t, "xz", "zstd", "gzip", "bzip2", "qemu-img", "qemu-io")
	dir := t.TempDir()
	var cases []testCase
	for _, add := range []func(*testing.T, string) []testCase{
		xzUtilsCases, xzMadeCases, zstdGoldenCases, zstdMadeCases, goVectorCases, qcow2Cases, foreignCases,
	} {
		cases = append(cases, add(t, dir)...)
	}
	var maxSize int
	for _, c := range cases {
		maxSize = max(maxSize, len(c.want))
	}
	const tail = 64 << 10
	dev := looptest.New(t, int64(maxSize)+2*tail)
	results := map[string]*result{}
	for _, c := range cases {
		r := results[c.group]
		if r == nil {
			r = &result{}
			results[c.group] = r
		}
		r.total++
		t.Run(c.group+"/"+c.name, func(t *testing.T) {
			span := int64(len(c.want)) + tail
			before := fillRandom(t, dev, span)
			res, err := flash.Run(context.Background(), flash.Options{Image: c.path, Target: dev.Path, Verify: true})
			switch {
			case err != nil && c.verdict == decodes && len(c.want) == 0:
				// An image that decodes to nothing is refused (there is
				// nothing to flash), leaving the target as it was.
				if !errors.Is(err, flash.ErrEmptyImage) && !strings.Contains(err.Error(), "decodes to 0 bytes") {
					t.Fatalf("empty image: %v, want the 'decodes to 0 bytes' error", err)
				}
				r.empty++
				return
			case err != nil && c.verdict == decodes:
				t.Fatalf("the reference decodes it (%d bytes), bty refused it: %v", len(c.want), err)
			case err != nil:
				if c.unsupported && !strings.Contains(err.Error(), "does not decode") {
					t.Errorf("refused as %q, want a 'does not decode' (unsupported) message", err)
				}
				r.refused++
				return
			case c.verdict == refuses:
				t.Fatalf("the reference refuses it, bty flashed %d bytes (verified: %v)", res.TotalBytes, res.Verified)
			}
			if c.verdict == either {
				// No verdict: bty's bytes must at least be xz's, which
				// still decodes with a warning (c.want).
				if c.want == nil {
					t.Fatalf("bty flashed %d bytes of a file without a reference output", res.TotalBytes)
				}
			}
			got := dev.ReadAt(t, 0, span)
			if !bytes.Equal(got[:len(c.want)], c.want) {
				t.Fatalf("the target differs from the reference's %d bytes (sha256 %x vs %x)",
					len(c.want), sha256.Sum256(got[:len(c.want)]), sha256.Sum256(c.want))
			}
			if !bytes.Equal(got[len(c.want):], before[len(c.want):]) {
				first, last := -1, -1
				for i := len(c.want); i < len(got); i++ {
					if got[i] != before[i] {
						if first < 0 {
							first = i
						}
						last = i
					}
				}
				t.Fatalf("bytes after the image (%d bytes) were changed: %d..%d (got % x, was % x)", len(c.want), first, last, got[first:min(first+8, len(got))], before[first:min(first+8, len(got))])
			}
			if res.TotalBytes != int64(len(c.want)) {
				t.Errorf("result says %d bytes, the image has %d", res.TotalBytes, len(c.want))
			}
			r.identical++
		})
	}
	var groups []string
	for g := range results {
		groups = append(groups, g)
	}
	sort.Strings(groups)
	total := result{}
	for _, g := range groups {
		r := results[g]
		t.Logf("%-14s %4d files: %4d bit-identical to the reference, %4d refused as expected, %d empty (refused: nothing to flash)",
			g, r.total, r.identical, r.refused, r.empty)
		total.total += r.total
		total.identical += r.identical
		total.refused += r.refused
		total.empty += r.empty
	}
	t.Logf("%-14s %4d files: %4d bit-identical to the reference, %4d refused as expected, %d empty (refused: nothing to flash)",
		"all", total.total, total.identical, total.refused, total.empty)
}

// fillRandom writes n random bytes at the start of dev and returns them.
func fillRandom(t *testing.T, dev *looptest.Device, n int64) []byte {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	f, err := os.OpenFile(dev.Path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	return b
}

// refDecode runs a reference decoder on path and returns its verdict and
// output. Exit status 0 decodes, 2 is a warning (xz: an integrity check
// it cannot verify; it still writes the output), anything else refuses.
func refDecode(t *testing.T, name string, args ...string) (verdict, []byte) {
	t.Helper()
	cmd := exec.Command(name, args...)
	out, err := cmd.Output()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return decodes, out
	case errors.As(err, &ee) && ee.ExitCode() == 2 && name == "xz":
		return either, out
	case errors.As(err, &ee):
		return refuses, nil
	}
	t.Fatalf("%s %v: %v", name, args, err)
	return refuses, nil
}

// imageName gives a file a name bty takes as what its magic says (an
// unknown suffix trusts the magic).
func writeCase(t *testing.T, dir, group, name string, b []byte) string {
	t.Helper()
	d := filepath.Join(dir, group)
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(d, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// repoRoot is the repository's root (this package is internal/conformance).
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// xzUtilsCases: xz-utils' own test files (tests/files), kept in the
// repository with the xz decoder fork, judged by xz -dc.
func xzUtilsCases(t *testing.T, dir string) []testCase {
	files, err := filepath.Glob(filepath.Join(repoRoot(), "internal", "image", "internal", "xz", "testdata", "xz-utils", "*.xz"))
	if err != nil || len(files) < 50 {
		t.Fatalf("xz-utils test files: %d found, %v", len(files), err)
	}
	var out []testCase
	for _, f := range files {
		v, want := refDecode(t, "xz", "-dc", f)
		out = append(out, testCase{group: "xz-utils", name: filepath.Base(f), path: f, verdict: v, want: want})
	}
	return out
}

// payload is what the made cases compress: mixed disk-like data.
func payload(t *testing.T, size int64, seed uint64) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := imagetest.WriteMixed(&b, size, seed); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// corruptions returns copies of b with one byte flipped at a few places
// and cut at a few lengths.
func corruptions(b []byte) map[string][]byte {
	out := map[string][]byte{}
	for _, frac := range []int{1, 3, 5, 7, 9} {
		off := len(b) * frac / 10
		c := bytes.Clone(b)
		c[off] ^= 0x55
		out[fmt.Sprintf("flip-%d", off)] = c
	}
	for _, k := range []int{len(b) / 2, len(b) - 1, 40} {
		if k > 0 && k < len(b) {
			out[fmt.Sprintf("cut-%d", k)] = bytes.Clone(b[:k])
		}
	}
	return out
}

// xzMadeCases: files xz 5.4 makes with its options (filters, checks,
// block layouts, several streams with padding), and corruptions.
func xzMadeCases(t *testing.T, dir string) []testCase {
	data := payload(t, 1<<20+12345, 1)
	code := payload(t, 256<<10, 2)
	made := map[string][]byte{
		"preset-0":    imagetest.Pipe(t, data, "xz", "-0", "-c"),
		"preset-9e":   imagetest.Pipe(t, data, "xz", "-9e", "-c"),
		"check-none":  imagetest.Pipe(t, data, "xz", "--check=none", "-c"),
		"check-crc32": imagetest.Pipe(t, data, "xz", "--check=crc32", "-c"),
		"sha256":      imagetest.Pipe(t, data, "xz", "--check=sha256", "-c"),
		"multiblock":  imagetest.Pipe(t, data, "xz", "-T2", "--block-size=128KiB", "-c"),
		"block-list":  imagetest.Pipe(t, data, "xz", "--block-list=1000,200000,0", "-c"),
		"lzma2-opts":  imagetest.Pipe(t, data, "xz", "--lzma2=dict=64KiB,lc=4,lp=0,pb=0", "-c"),
		"delta":       imagetest.Pipe(t, data, "xz", "--delta=dist=4", "--lzma2=preset=1", "-c"),
		"empty":       imagetest.Pipe(t, nil, "xz", "-c"),
	}
	for _, f := range []string{"x86", "powerpc", "ia64", "arm", "armthumb", "sparc", "arm64"} {
		made["bcj-"+f] = imagetest.Pipe(t, code, "xz", "--"+f, "--lzma2=preset=1", "-c")
	}
	// Two streams with stream padding between them, one of them empty.
	s1, s2 := made["multiblock"], imagetest.Pipe(t, data[:5000], "xz", "-c")
	made["streams-padded"] = append(append(append(bytes.Clone(s1), make([]byte, 8)...), s2...), append(made["empty"], make([]byte, 4)...)...)
	addCorruptions(made, "multiblock", "sha256")
	return madeCases(t, dir, "xz-made", ".img.xz", made, func(p string) (verdict, []byte) { return refDecode(t, "xz", "-dc", p) })
}

// addCorruptions adds corruptions of the named files to made.
func addCorruptions(made map[string][]byte, names ...string) {
	for _, n := range names {
		for name, b := range corruptions(made[n]) {
			made[n+"-"+name] = b
		}
	}
}

// madeCases writes the files in made under group and judges each.
func madeCases(t *testing.T, dir, group, ext string, made map[string][]byte, judge func(string) (verdict, []byte)) []testCase {
	var out []testCase
	for name, b := range made {
		p := writeCase(t, dir, group, name+ext, b)
		v, want := judge(p)
		out = append(out, testCase{group: group, name: name, path: p, verdict: v, want: want})
	}
	return out
}

// zstdVerdict judges a zstd file with the reference library (libzstd
// 1.5.7); without cgo, with the zstd CLI.
func zstdVerdict(t *testing.T, p string) (verdict, []byte) {
	t.Helper()
	if !imagetest.HaveZstdReference {
		return refDecode(t, "zstd", "-dcq", p)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	out, err := imagetest.ZstdReference(b)
	if err != nil {
		return refuses, nil
	}
	return decodes, out
}

// zstdGoldenCases: the zstd files klauspost/compress tests its decoder
// with (zstd/testdata good.zip, bad.zip, decoder.zip, which include
// zstd's own golden files), read from the module cache.
func zstdGoldenCases(t *testing.T, dir string) []testCase {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/klauspost/compress").Output()
	if err != nil {
		t.Fatalf("locating klauspost/compress in the module cache: %v", err)
	}
	td := filepath.Join(strings.TrimSpace(string(out)), "zstd", "testdata")
	var cases []testCase
	for _, z := range []string{"good.zip", "bad.zip", "decoder.zip"} {
		r, err := zip.OpenReader(filepath.Join(td, z))
		if err != nil {
			t.Fatalf("%s: %v", z, err)
		}
		for _, f := range r.File {
			if !strings.HasSuffix(f.Name, ".zst") {
				continue
			}
			rc, err := f.Open()
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(rc)
			rc.Close()
			if err != nil {
				t.Fatal(err)
			}
			group := "zstd-" + strings.TrimSuffix(z, ".zip")
			p := writeCase(t, dir, group, filepath.Base(f.Name), b)
			v, want := zstdVerdict(t, p)
			cases = append(cases, testCase{group: group, name: filepath.Base(f.Name), path: p, verdict: v, want: want})
		}
		r.Close()
	}
	if len(cases) < 100 {
		t.Fatalf("only %d zstd golden files found in %s", len(cases), td)
	}
	return cases
}

// zstdMadeCases: files the zstd and pzstd CLIs make with their options,
// and corruptions.
func zstdMadeCases(t *testing.T, dir string) []testCase {
	data := payload(t, 1<<20+777, 3)
	made := map[string][]byte{
		"level-1":         imagetest.Pipe(t, data, "zstd", "-1", "-c"),
		"level-19":        imagetest.Pipe(t, data, "zstd", "-19", "-c"),
		"ultra-22":        imagetest.Pipe(t, data[:300000], "zstd", "--ultra", "-22", "-c"),
		"long-27":         imagetest.Pipe(t, data, "zstd", "--long=27", "-c"),
		"no-check":        imagetest.Pipe(t, data, "zstd", "--no-check", "-c"),
		"threads":         imagetest.Pipe(t, data, "zstd", "-T2", "-B65536", "-c"),
		"no-content-size": imagetest.Pipe(t, data, "zstd", "--no-content-size", "-c"),
		"rsyncable":       imagetest.Pipe(t, data, "zstd", "--rsyncable", "-T2", "-c"),
		"empty":           imagetest.Pipe(t, nil, "zstd", "-c"),
	}
	if _, err := exec.LookPath("pzstd"); err == nil {
		made["pzstd"] = imagetest.Pipe(t, data, "pzstd", "-p", "2", "-q", "-c")
	}
	for name, b := range zstdHandMade() {
		made[name] = b
	}
	made["frames"] = append(bytes.Clone(made["level-1"]), made["no-check"]...)
	skip := []byte{0x5e, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, 'b', 't', 'y'}
	made["skippable"] = append(append(bytes.Clone(skip), made["level-1"]...), skip...)
	addCorruptions(made, "level-1", "no-check")
	return madeCases(t, dir, "zstd-made", ".img.zst", made, func(p string) (verdict, []byte) { return zstdVerdict(t, p) })
}

// zstdFrame makes a zstd frame (no checksum, no content size) with
// window descriptor wd and the given blocks (header fields and content).
func zstdFrame(wd byte, blocks ...zstdBlock) []byte {
	f := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, wd}
	for i, b := range blocks {
		size := len(b.content)
		if b.typ == 1 {
			size = b.rle
		}
		v := uint32(size)<<3 | uint32(b.typ)<<1
		if i == len(blocks)-1 {
			v |= 1
		}
		f = append(f, byte(v), byte(v>>8), byte(v>>16))
		f = append(f, b.content...)
	}
	return f
}

type zstdBlock struct {
	typ     int // 0 raw, 1 RLE, 2 compressed
	content []byte
	rle     int // RLE: regenerated size
}

// zstdHandMade builds the structural cases of zstd's own golden test
// files (tests/golden-decompression and golden-decompression-errors in
// facebook/zstd), which are not on this machine: made here by hand from
// RFC 8878, judged by libzstd like every other case.
func zstdHandMade() map[string][]byte {
	hello := []byte("Hello World!\n")
	lits := append([]byte{byte(len(hello)) << 3}, hello...) // raw literals, 1-byte header
	win128k := byte(7 << 3)                                 // window 128 KiB
	return map[string][]byte{
		// A compressed block of literals only, its sequence count 0
		// written in one byte and in the two-byte form (zeroSeq_2B).
		"hand-zero-seq-1B": zstdFrame(0, zstdBlock{typ: 2, content: append(bytes.Clone(lits), 0x00)}),
		"hand-zero-seq-2B": zstdFrame(0, zstdBlock{typ: 2, content: append(bytes.Clone(lits), 0x80, 0x00)}),
		// A byte after a sequence count of 0 (zeroSeq_extraneous).
		"hand-zero-seq-extraneous": zstdFrame(0, zstdBlock{typ: 2, content: append(bytes.Clone(lits), 0x00, 0x00)}),
		// An RLE first block, then a raw one (rle-first-block).
		"hand-rle-first": zstdFrame(win128k, zstdBlock{typ: 1, content: []byte{'a'}, rle: 100000}, zstdBlock{typ: 0, content: hello}),
		// An empty raw block between two others (empty-block).
		"hand-empty-block": zstdFrame(0, zstdBlock{typ: 0, content: hello}, zstdBlock{typ: 0}, zstdBlock{typ: 0, content: hello}),
		// A block of exactly the 128 KiB maximum (block-128k), and one
		// byte more.
		"hand-block-128k":      zstdFrame(win128k, zstdBlock{typ: 0, content: bytes.Repeat([]byte{7}, 128<<10)}),
		"hand-block-128k+1":    zstdFrame(win128k, zstdBlock{typ: 0, content: bytes.Repeat([]byte{7}, 128<<10+1)}),
		"hand-rle-over-window": zstdFrame(0, zstdBlock{typ: 1, content: []byte{'a'}, rle: 5000}),
	}
}

// gzipWrap makes a gzip member of a raw deflate stream of data.
func gzipWrap(deflate, data []byte) []byte {
	b := []byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff}
	b = append(b, deflate...)
	b = binary.LittleEndian.AppendUint32(b, crc32.ChecksumIEEE(data))
	return binary.LittleEndian.AppendUint32(b, uint32(len(data)))
}

// goVectorCases: the test vectors of Go's compress packages (in GOROOT):
// bzip2 files, gzip's issue 6550 file, flate's deflate streams (wrapped
// in gzip members), and compress/testdata's texts compressed by each
// tool.
func goVectorCases(t *testing.T, dir string) []testCase {
	goroot, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		t.Fatalf("go env GOROOT: %v", err)
	}
	src := filepath.Join(strings.TrimSpace(string(goroot)), "src", "compress")
	if _, err := os.Stat(src); err != nil {
		t.Fatalf("Go's compress test vectors are not in %s: %v", src, err)
	}
	var cases []testCase
	add := func(name, ext string, b []byte, tool string, args ...string) {
		p := writeCase(t, dir, "go-vectors", name+ext, b)
		v, want := refDecode(t, tool, append(args, p)...)
		cases = append(cases, testCase{group: "go-vectors", name: name, path: p, verdict: v, want: want})
	}
	bz, _ := filepath.Glob(filepath.Join(src, "bzip2", "testdata", "*.bz2"))
	for _, f := range bz {
		b, _ := os.ReadFile(f)
		add(filepath.Base(f), ".img.bz2", b, "bzip2", "-dc")
	}
	for _, f := range []string{filepath.Join(src, "bzip2", "testdata", "fail-issue5747.bz2.base64"), filepath.Join(src, "gzip", "testdata", "issue6550.gz.base64")} {
		enc, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(enc)))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if strings.Contains(f, "bzip2") {
			add(filepath.Base(f), ".img.bz2", b, "bzip2", "-dc")
		} else {
			add(filepath.Base(f), ".img.gz", b, "gzip", "-dc")
		}
	}
	ins, _ := filepath.Glob(filepath.Join(src, "flate", "testdata", "*.in"))
	for _, in := range ins {
		data, _ := os.ReadFile(in)
		for _, kind := range []string{".dyn.expect", ".wb.expect", ".golden"} {
			stream, err := os.ReadFile(strings.TrimSuffix(in, ".in") + kind)
			if err != nil {
				continue
			}
			// Only streams that decode to the .in file (some .expect
			// files are for other inputs).
			if got, err := io.ReadAll(flateReader(stream)); err != nil || !bytes.Equal(got, data) {
				continue
			}
			add(filepath.Base(in)+kind, ".img.gz", gzipWrap(stream, data), "gzip", "-dc")
		}
	}
	texts, _ := filepath.Glob(filepath.Join(src, "testdata", "*.txt"))
	for _, f := range texts {
		data, _ := os.ReadFile(f)
		add(filepath.Base(f)+"-zst", ".img.zst", imagetest.Pipe(t, data, "zstd", "-c"), "zstd", "-dcq")
		add(filepath.Base(f)+"-gz", ".img.gz", imagetest.Pipe(t, data, "gzip", "-c"), "gzip", "-dc")
		add(filepath.Base(f)+"-xz", ".img.xz", imagetest.Pipe(t, data, "xz", "-c"), "xz", "-dc")
		add(filepath.Base(f)+"-bz2", ".img.bz2", imagetest.Pipe(t, data, "bzip2", "-c"), "bzip2", "-dc")
	}
	if len(cases) < 20 {
		t.Fatalf("only %d Go test vectors found under %s", len(cases), src)
	}
	return cases
}

// flateReader decodes a raw deflate stream through gzip's reader (a
// member around it), to pick the flate vectors that are whole streams.
func flateReader(stream []byte) io.Reader {
	r, err := gzip.NewReader(bytes.NewReader(gzipWrap(stream, nil)))
	if err != nil {
		return bytes.NewReader(nil)
	}
	r.Multistream(false)
	return &lenient{r}
}

// lenient drops the checksum error of a member whose trailer was made
// for other data: only the deflate stream's own validity matters here.
type lenient struct{ r io.Reader }

func (l *lenient) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	if errors.Is(err, gzip.ErrChecksum) {
		err = io.EOF
	}
	return n, err
}

// qcow2Cases: images qemu-img makes with every option (judged by
// qemu-img convert), and corruptions qemu-img reads as zeros but bty
// must refuse (a cluster past the end of the file, unaligned entries).
func qcow2Cases(t *testing.T, dir string) []testCase {
	d := filepath.Join(dir, "qcow2")
	os.MkdirAll(d, 0o755)
	raw := imagetest.TailImage(t, d, 4<<20+3*512)
	var cases []testCase
	for _, v := range imagetest.Qcow2Variants(t, d, raw) {
		c := testCase{group: "qcow2-made", name: v.Name, path: v.Path}
		if v.Unsupported {
			c.verdict = refuses
		} else {
			want, err := os.ReadFile(imagetest.QemuImgRaw(t, v.Path))
			if err != nil {
				t.Fatal(err)
			}
			c.want = want
		}
		cases = append(cases, c)
	}
	for _, compressed := range []bool{false, true} {
		sub := filepath.Join(d, fmt.Sprintf("tail-%v", compressed))
		os.MkdirAll(sub, 0o755)
		p, _, _ := imagetest.Qcow2TailPastEOF(t, sub, raw, compressed)
		cases = append(cases, testCase{group: "qcow2-corrupt", name: filepath.Base(filepath.Dir(p)), path: p, verdict: refuses})
	}
	plain := filepath.Join(d, "plain.qcow2")
	imagetest.Run(t, d, "qemu-img", "convert", "-O", "qcow2", raw, plain)
	off, e := imagetest.Qcow2L2Entry(t, plain, 4<<20-64<<10)
	l1off, l1e := imagetest.Qcow2L1Entry(t, plain, 0)
	for name, patch := range map[string]struct {
		off int64
		v   uint64
	}{
		"l2-unaligned-last-cluster": {off, e + 512},
		"l2-reserved-bit":           {off, e | 2},
		"l1-unaligned":              {l1off, l1e + 4096},
	} {
		sub := filepath.Join(d, name)
		os.MkdirAll(sub, 0o755)
		b, _ := os.ReadFile(plain)
		copy(b[patch.off:], imagetest.Be64(patch.v))
		p := filepath.Join(sub, "bad.qcow2")
		os.WriteFile(p, b, 0o644)
		cases = append(cases, testCase{group: "qcow2-corrupt", name: name, path: p, verdict: refuses})
	}
	return cases
}

// foreignCases: disk formats bty does not decode, made by qemu-img: each
// must be refused as such, never written raw.
func foreignCases(t *testing.T, dir string) []testCase {
	d := filepath.Join(dir, "foreign")
	os.MkdirAll(d, 0o755)
	raw := imagetest.TailImage(t, d, 4<<20)
	var cases []testCase
	for _, f := range []struct{ name, format, opts string }{
		{"disk.vmdk", "vmdk", ""}, {"appliance.vmdk", "vmdk", "subformat=streamOptimized"},
		{"dynamic.vhd", "vpc", ""}, {"fixed.vhd", "vpc", "subformat=fixed"},
		{"disk.vhdx", "vhdx", ""}, {"disk.vdi", "vdi", ""}, {"disk.qed", "qed", ""}, {"disk.hdd", "parallels", ""},
	} {
		p := filepath.Join(d, f.name)
		args := []string{"convert", "-O", f.format}
		if f.opts != "" {
			args = append(args, "-o", f.opts)
		}
		imagetest.Run(t, d, "qemu-img", append(args, raw, p)...)
		cases = append(cases, testCase{group: "foreign", name: f.name, path: p, verdict: refuses, unsupported: true})
	}
	return cases
}
