package image

import (
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/btyproject/bty/internal/imagetest"
	"github.com/btyproject/bty/internal/source"
)

// The fuzz targets hold bty's decoders to one property: for any input,
// bty's output equals the reference decoder's, or bty returns an error.
// The references: libzstd 1.5.7 (cgo), Go's compress/gzip and
// compress/bzip2, the xz CLI and qemu-img; each runs only when bty
// decoded something (an error from bty is always allowed). A short run of
// each is part of make test (make fuzz); longer runs:
//
//	go test -run XXX -fuzz FuzzOpen -fuzztime 30m ./internal/image/
//	go test -run XXX -fuzz FuzzQcow2 -fuzztime 30m ./internal/image/
//	go test -run XXX -fuzz FuzzXzIndex -fuzztime 30m ./internal/image/
//	go test -run XXX -fuzz FuzzZstdSeq -fuzztime 30m ./internal/image/
//
// The seed corpora are in testdata/fuzz (go test -run TestWriteFuzzSeeds
// -write-fuzz-seeds ./internal/image/ rewrites them with the reference
// tools); a failing input the fuzzer finds lands there too and then runs
// with every go test.

// fuzzLimit bounds what a fuzz input may decode to before the comparison
// is skipped (a few bytes can declare gigabytes).
const fuzzLimit = 16 << 20

// memSource is an image held in memory, with random access.
type memSource struct {
	name string
	b    []byte
}

func (m *memSource) Name() string          { return m.name }
func (m *memSource) Size() int64           { return int64(len(m.b)) }
func (m *memSource) ReaderAt() io.ReaderAt { return bytes.NewReader(m.b) }
func (m *memSource) Close() error          { return nil }
func (m *memSource) Open(context.Context) (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(m.b)), nil
}

var _ source.Source = (*memSource)(nil)

// errTooBig stops a decode that outgrows fuzzLimit.
var errTooBig = errors.New("decodes past the fuzz limit")

// decodeLimited decodes img entirely, up to fuzzLimit bytes.
func decodeLimited(img Image) ([]byte, error) {
	if img.Size() > fuzzLimit {
		// Walk the extent map only (bounded by the file's size).
		if ra, ok := img.(RandomAccess); ok {
			for off := int64(0); off < ra.Size(); {
				e, err := ra.Extent(off, ra.Size()-off)
				if err != nil {
					return nil, err
				}
				off += e.Length
			}
		}
		return nil, errTooBig
	}
	var out bytes.Buffer
	switch im := img.(type) {
	case RandomAccess:
		buf := make([]byte, im.Size())
		for off := int64(0); off < im.Size(); {
			e, err := im.Extent(off, im.Size()-off)
			if err != nil {
				return nil, err
			}
			if !e.Zero {
				n, err := im.ReadAt(buf[off:off+e.Length], off)
				if int64(n) != e.Length || (err != nil && err != io.EOF) {
					return nil, fmt.Errorf("ReadAt(%d at %d) = %d, %w", e.Length, off, n, err)
				}
			}
			off += e.Length
		}
		out.Write(buf)
	case Stream:
		n, err := io.Copy(&out, io.LimitReader(im, fuzzLimit+1))
		if err != nil {
			return nil, err
		}
		if n > fuzzLimit {
			return nil, errTooBig
		}
	}
	return out.Bytes(), nil
}

// reference decodes b (a file of format f at path) with the reference
// decoder; ok is false when there is none here.
func reference(f Format, b []byte, path string) (out []byte, err error, ok bool) {
	switch f {
	case Raw:
		return b, nil, true
	case Zstd:
		if !imagetest.HaveZstdReference {
			return nil, nil, false
		}
		out, err := imagetest.ZstdReference(b)
		return out, err, true
	case Gzip:
		r, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			return nil, err, true
		}
		out, err := io.ReadAll(io.LimitReader(r, fuzzLimit+1))
		return out, err, true
	case Bzip2:
		out, err := io.ReadAll(io.LimitReader(bzip2.NewReader(bytes.NewReader(b)), fuzzLimit+1))
		if err == nil {
			return out, nil, true
		}
		// compress/bzip2 is stricter than libbzip2, the format's own
		// implementation (it refuses Huffman tables libbzip2 decodes):
		// its refusal is checked against the bzip2 CLI's.
		if _, lerr := exec.LookPath("bzip2"); lerr != nil {
			return out, err, true
		}
		cmd := exec.Command("bzip2", "-dc")
		cmd.Stdin = bytes.NewReader(b)
		cout, cerr := cmd.Output()
		if cerr != nil {
			return nil, fmt.Errorf("%v; bzip2 -dc: %v", err, cerr), true
		}
		return cout, nil, true
	case Xz:
		if _, err := exec.LookPath("xz"); err != nil {
			return nil, nil, false
		}
		cmd := exec.Command("xz", "-dc", "--no-warn")
		cmd.Stdin = bytes.NewReader(b)
		out, err := cmd.Output()
		if ee, isExit := err.(*exec.ExitError); isExit && ee.ExitCode() == 2 {
			// A warning (an integrity check xz cannot verify): not a
			// verdict either way.
			return nil, nil, false
		}
		return out, err, true
	case Qcow2:
		if _, err := exec.LookPath("qemu-img"); err != nil {
			return nil, nil, false
		}
		raw := path + ".raw"
		defer os.Remove(raw)
		if out, err := exec.Command("qemu-img", "convert", "-f", "qcow2", "-O", "raw", path, raw).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("%v: %s", err, out), true
		}
		out, err := os.ReadFile(raw)
		return out, err, true
	}
	return nil, nil, false
}

// checkAgainstReference is the fuzz property for one source of b.
func checkAgainstReference(t *testing.T, src source.Source, b []byte, path string) {
	t.Helper()
	img, err := Open(context.Background(), src, Options{Workers: 2})
	if err != nil {
		return
	}
	defer img.Close()
	got, err := decodeLimited(img)
	if err != nil {
		return
	}
	want, rerr, ok := reference(img.Format(), b, path)
	if !ok {
		return
	}
	if rerr != nil {
		t.Fatalf("bty decoded %d bytes of %s data (%s) that the reference refuses: %v", len(got), img.Format(), src.Name(), rerr)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("bty decoded %s data (%s) to %d bytes (sha256 %x), the reference to %d bytes (sha256 %x)",
			img.Format(), src.Name(), len(got), sha256.Sum256(got), len(want), sha256.Sum256(want))
	}
}

// FuzzOpen is every format's front door: the bytes as a local file and
// as a stream (as from a URL without Range).
func FuzzOpen(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) == 0 {
			return
		}
		p := filepath.Join(t.TempDir(), "image")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		src, err := source.OpenFile(p)
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		checkAgainstReference(t, src, b, p)
		checkAgainstReference(t, streamOnly{&memSource{name: "image", b: b}}, b, p)
	})
}

// FuzzQcow2 is the qcow2 metadata reader: header, extensions, snapshot
// table, L1 and L2 entries.
func FuzzQcow2(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		q, err := openQcow2("fuzz.qcow2", "", bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		defer q.Close()
		got, err := decodeLimited(q)
		if err != nil {
			return
		}
		p := filepath.Join(t.TempDir(), "fuzz.qcow2")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		want, rerr, ok := reference(Qcow2, b, p)
		if !ok {
			return
		}
		if rerr != nil {
			t.Fatalf("bty decoded %d bytes that qemu-img refuses: %v", len(got), rerr)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("bty decoded %d bytes (sha256 %x), qemu-img %d (sha256 %x)", len(got), sha256.Sum256(got), len(want), sha256.Sum256(want))
		}
	})
}

// FuzzXzIndex is the xz index reader and the parallel block decoder it
// feeds: an index it accepts describes the file exactly, and what the
// blocks decode to is what xz -dc gives.
func FuzzXzIndex(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		idx, err := readXzIndex(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		var sum int64
		for i, blk := range idx.blocks {
			if blk.offset < 12 || blk.offset+blk.unpadded > int64(len(b)) || blk.decodedStart != sum {
				t.Fatalf("block %d %+v does not fit the %d-byte file or follow block %d", i, blk, len(b), i-1)
			}
			sum += blk.uncompressed
		}
		if sum != idx.size {
			t.Fatalf("blocks sum to %d, the index says %d", sum, idx.size)
		}
		if idx.size > fuzzLimit || len(idx.blocks) < 2 {
			return
		}
		img := newParallelXz(context.Background(), "fuzz.xz", bytes.NewReader(b), idx, Options{Workers: 2})
		defer img.Close()
		got, err := decodeLimited(img)
		if err != nil {
			return
		}
		want, rerr, ok := reference(Xz, b, "")
		if !ok {
			return
		}
		if rerr != nil {
			t.Fatalf("bty decoded %d bytes in parallel that xz refuses: %v", len(got), rerr)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("bty decoded %d bytes in parallel, xz -dc %d (they differ)", len(got), len(want))
		}
	})
}

// FuzzZstdSeq is the zstd sequence checker on its own, on any block
// content: it never panics or loops, and a frame it calls corrupt the
// reference library refuses too.
func FuzzZstdSeq(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		var c zstdSeqCheck
		c.reset()
		err := c.block(b)
		if err == nil || len(b) >= 1<<17 {
			return
		}
		if err != errZstdZeroOffset {
			t.Fatalf("block = %v, want nil or errZstdZeroOffset", err)
		}
		// The block as a frame's only block: the reference must refuse it.
		frame := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x38} // no checksum, 128 KiB window
		v := uint32(len(b))<<3 | 2<<1 | 1
		frame = append(append(frame, byte(v), byte(v>>8), byte(v>>16)), b...)
		if !imagetest.HaveZstdReference {
			return
		}
		if out, rerr := imagetest.ZstdReference(frame); rerr == nil {
			t.Fatalf("bty finds offset 0 in a block the reference decodes (%d bytes)", len(out))
		}
	})
}

var writeFuzzSeeds = flag.Bool("write-fuzz-seeds", false, "rewrite the seed corpora in testdata/fuzz with the reference tools")

// TestWriteFuzzSeeds rewrites testdata/fuzz/Fuzz*/ from small images made
// by the reference tools (only with -write-fuzz-seeds).
func TestWriteFuzzSeeds(t *testing.T) {
	if !*writeFuzzSeeds {
		t.Skip("run with -write-fuzz-seeds to rewrite the seed corpora")
	}
	dir := t.TempDir()
	text := bytes.Repeat([]byte("bty flashes disk images; the seed corpus is small. "), 200)
	text = append(text, make([]byte, 20000)...) // a zero run: RLE blocks, zero clusters
	text = append(text, []byte("the end")...)
	raw := filepath.Join(dir, "seed.img")
	if err := os.WriteFile(raw, text, 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(name string, args ...string) []byte {
		cmd := exec.Command(name, args...)
		cmd.Dir = dir
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s %v: %v", name, args, err)
		}
		return out
	}
	file := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	padRaw := append(bytes.Clone(text), make([]byte, 512-len(text)%512)...)
	if err := os.WriteFile(raw, padRaw, 0o644); err != nil {
		t.Fatal(err)
	}
	qcow := map[string][]string{
		"qcow2-v3":   {"-o", "cluster_size=512"},
		"qcow2-v2":   {"-o", "cluster_size=512,compat=0.10"},
		"qcow2-zlib": {"-c", "-o", "cluster_size=512"},
		"qcow2-zstd": {"-c", "-o", "cluster_size=512,compression_type=zstd"},
	}
	seeds := map[string]map[string][]byte{"FuzzOpen": {}, "FuzzQcow2": {}, "FuzzXzIndex": {}}
	// qcow2 seeds from a smaller image: 2 KiB of text, 2 KiB of zeros,
	// 512 bytes of text.
	small := append(append(bytes.Clone(text[:2048]), make([]byte, 2048)...), text[:512]...)
	if err := os.WriteFile(filepath.Join(dir, "small.img"), small, 0o644); err != nil {
		t.Fatal(err)
	}
	for name, opts := range qcow {
		run("qemu-img", append(append([]string{"convert", "-O", "qcow2"}, opts...), "small.img", name)...)
		seeds["FuzzOpen"][name] = file(name)
		seeds["FuzzQcow2"][name] = file(name)
	}
	seeds["FuzzOpen"]["raw"] = padRaw[:4096]
	seeds["FuzzOpen"]["zst"] = run("zstd", "-q", "-c", "seed.img")
	seeds["FuzzOpen"]["zst-no-check"] = run("zstd", "-q", "-c", "--no-check", "seed.img")
	seeds["FuzzOpen"]["gz"] = run("gzip", "-n", "-c", "seed.img")
	seeds["FuzzOpen"]["bz2"] = run("bzip2", "-c", "seed.img")
	seeds["FuzzOpen"]["xz"] = run("xz", "-c", "seed.img")
	seeds["FuzzOpen"]["xz-sha256"] = run("xz", "-c", "--check=sha256", "seed.img")
	multi := run("xz", "-c", "-T2", "--block-size=4KiB", "seed.img")
	seeds["FuzzOpen"]["xz-multiblock"] = multi
	seeds["FuzzXzIndex"]["multiblock"] = multi
	seeds["FuzzXzIndex"]["multistream"] = append(bytes.Clone(multi), append(make([]byte, 4), run("xz", "-c", "-T2", "--block-size=2KiB", "seed.img")...)...)
	seeds["FuzzZstdSeq"] = map[string][]byte{}
	for name, z := range map[string][]byte{"no-check": seeds["FuzzOpen"]["zst-no-check"], "level19": run("zstd", "-q", "-19", "-c", "seed.img")} {
		for i, blk := range zstdCompressedBlocks(z) {
			seeds["FuzzZstdSeq"][fmt.Sprintf("%s-%d", name, i)] = blk
		}
	}
	// The block of the offset-0 frame TestZstdZeroOffset builds
	// (off0Frames): the checker's one finding, checked against libzstd.
	seeds["FuzzZstdSeq"]["off0"] = []byte{0x08, 0x00, 0x02, 0x00, 0x2f, 0xb0, 0x00, 0x9c, 0x10}
	seeds["FuzzOpen"]["vmdk-magic"] = append([]byte("KDMV\x01\x00\x00\x00"), text[:256]...)
	for target, files := range seeds {
		d := filepath.Join("testdata", "fuzz", target)
		// Only the seeds are rewritten: inputs the fuzzer found stay.
		old, _ := filepath.Glob(filepath.Join(d, "seed-*"))
		for _, f := range old {
			os.Remove(f)
		}
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, b := range files {
			body := "go test fuzz v1\n[]byte(" + strconv.Quote(string(b)) + ")\n"
			if err := os.WriteFile(filepath.Join(d, "seed-"+name), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// zstdCompressedBlocks returns the contents of the compressed blocks of
// the zstd frames in b.
func zstdCompressedBlocks(b []byte) [][]byte {
	var out [][]byte
	for p := 0; p+6 <= len(b); {
		hlen, _, err := zstdFrameHeader(b[p:])
		if err != nil {
			break
		}
		q := p + hlen
		for q+3 <= len(b) {
			v := uint32(b[q]) | uint32(b[q+1])<<8 | uint32(b[q+2])<<16
			last, typ, size := v&1 != 0, (v>>1)&3, int(v>>3)
			q += 3
			if typ == 1 {
				size = 1
			}
			if typ == 2 {
				out = append(out, b[q:q+size])
			}
			q += size
			if last {
				break
			}
		}
		if b[p+4]&4 != 0 {
			q += 4
		}
		p = q
	}
	return out
}
