package flash

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/btyproject/bty/internal/chunks"
	"github.com/btyproject/bty/internal/event"
	"github.com/btyproject/bty/internal/imagetest"
	"github.com/btyproject/bty/internal/looptest"
	"github.com/btyproject/bty/internal/source"
)

// deltaImage is a GPT disk with an ext4 root full of files (random and
// text), compressed with the zstd tool, and its chunk store.
type deltaFixture struct {
	disk  *imagetest.LinuxDisk
	image string // the .img.zst
	sum   string // decoded sha256
	x     *chunks.Index
}

func newDeltaFixture(t *testing.T, seed uint64) *deltaFixture {
	t.Helper()
	if _, err := exec.LookPath("zstd"); err != nil {
		t.Skip("needs zstd (make test installs it)")
	}
	r := rand.New(rand.NewPCG(seed, 2))
	files := map[string]string{"etc/hostname": "delta\n"}
	for i := range 12 {
		b := make([]byte, 1<<20+r.IntN(1<<20))
		for j := range b {
			b[j] = byte(r.Uint32())
		}
		files[filepath.Join("data", "f"+string(rune('a'+i)))] = string(b)
	}
	d := imagetest.NewLinuxDisk(t, files)
	out := filepath.Join(t.TempDir(), "linux.img.zst")
	looptest.Run(t, "zstd", "-q", "-3", d.Path, "-o", out)
	f := &deltaFixture{disk: d, image: out, sum: imagetest.SHA256(t, d.Path, 0, d.Size)}
	x, err := BuildIndex(context.Background(), out, StoreRef(out), chunks.BuildOptions{Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	if x.SHA256 != f.sum {
		t.Fatalf("the store says the image is %s, sha256sum says %s", x.SHA256, f.sum)
	}
	f.x = x
	return f
}

// dataChunks counts the store's non-zero chunks.
func (f *deltaFixture) dataChunks() int64 {
	n := int64(0)
	for _, c := range f.x.Chunks {
		if !c.Zero {
			n++
		}
	}
	return n
}

// flashDelta runs a delta flash and checks the target is the image.
func (f *deltaFixture) flash(t *testing.T, dev *looptest.Device, opts Options) (*Result, event.Event) {
	t.Helper()
	var rec event.Recorder
	opts.Image, opts.Target, opts.Delta, opts.Sink = f.image, dev.Path, true, &rec
	opts.Source.RetryDelay = 10 * time.Millisecond
	res, err := Run(context.Background(), opts)
	if err != nil {
		t.Fatalf("Run: %v (notes %q)", err, res.Notes)
	}
	if got := dev.SHA256(t, f.disk.Size); got != f.sum {
		t.Fatalf("after the delta flash the device reads %s, the image is %s", got, f.sum)
	}
	done := rec.Events()[len(rec.Events())-1]
	if done.Event != event.Done {
		t.Fatalf("last event %v", done.Event)
	}
	return res, done
}

// TestDeltaOnLoop: a delta flash onto garbage writes every data chunk;
// onto the image itself it writes nothing; after scattered writes, a
// file written into the ext4 root and a changed partition table, it
// writes exactly the chunks that changed. Every time the device reads
// back as the image.
func TestDeltaOnLoop(t *testing.T) {
	looptest.RequireRoot(t)
	f := newDeltaFixture(t, 1)
	dev := looptest.New(t, f.disk.Size+(4<<20))
	tail := dev.ReadAt(t, f.disk.Size, 4<<20)
	data := f.dataChunks()
	if data < 10 || data == int64(len(f.x.Chunks)) {
		t.Fatalf("fixture: %d data chunks of %d", data, len(f.x.Chunks))
	}

	// Garbage everywhere: delta degenerates to a full flash, still correct.
	res, done := f.flash(t, dev, Options{Verify: true})
	if zero := int64(len(f.x.Chunks)) - data; res.ChunksZero != zero || done.ChunksZero != zero {
		t.Errorf("chunks_zero %d (done event %d), the store has %d zero chunks", res.ChunksZero, done.ChunksZero, zero)
	}
	if !res.Delta || res.ChunksEqual != 0 || done.ChunksWritten != data || !res.Verified {
		t.Fatalf("onto garbage: delta %v, %d equal, %d written of %d data chunks, verified %v", res.Delta, res.ChunksEqual, done.ChunksWritten, data, res.Verified)
	}
	if res.BytesFetched < f.x.FileSize-f.x.DataOffset {
		t.Errorf("fetched %d bytes, the pack alone is %d", res.BytesFetched, f.x.FileSize-f.x.DataOffset)
	}
	if !bytes.Equal(dev.ReadAt(t, f.disk.Size, 4<<20), tail) {
		t.Error("bytes past the image were changed")
	}

	// Untouched: nothing written, nothing fetched but the index; and
	// --verify=full reads the whole range back against the sha256.
	res, done = f.flash(t, dev, Options{VerifyFull: true})
	if !res.Verified {
		t.Error("--verify=full did not verify")
	}
	wrong := strings.Repeat("0", 64)
	if err := verifyFull(context.Background(), dev.Path, f.disk.Size, wrong); err == nil || !strings.Contains(err.Error(), f.sum) {
		t.Errorf("verifyFull against a wrong sha256: %v; want a failure naming what it read (%s)", err, f.sum)
	}
	if res.ChunksEqual != data || done.ChunksWritten != 0 || res.BytesWritten != 0 || res.BytesFetched != f.x.DataOffset {
		t.Fatalf("untouched: %d equal of %d, %d chunks and %d bytes written, %d fetched (index %d)",
			res.ChunksEqual, data, done.ChunksWritten, res.BytesWritten, res.BytesFetched, f.x.DataOffset)
	}
	if res.SHA256 != f.sum {
		t.Errorf("result sha256 %s", res.SHA256)
	}

	// Scattered writes: into three data chunks and one zero chunk.
	var touched []int
	for i, c := range f.x.Chunks {
		if !c.Zero && i > 0 && len(touched) < 3 && i%3 == 0 {
			touched = append(touched, i)
		}
	}
	zeroChunk := slices.IndexFunc(f.x.Chunks, func(c chunks.Chunk) bool { return c.Zero })
	out, err := os.OpenFile(dev.Path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range append(slices.Clone(touched), zeroChunk) {
		off, _ := f.x.Span(i)
		if _, err := out.WriteAt(bytes.Repeat([]byte{0xa5}, 4096), off+8192); err != nil {
			t.Fatal(err)
		}
	}
	out.Close()
	res, done = f.flash(t, dev, Options{Verify: true})
	if done.ChunksWritten != int64(len(touched)) || res.ChunksEqual != data-int64(len(touched)) {
		t.Fatalf("scattered writes in %d data chunks: %d written, %d equal", len(touched), done.ChunksWritten, res.ChunksEqual)
	}
	if want := int64(len(touched)) << 20; res.BytesWritten > want {
		t.Errorf("wrote %d bytes for %d changed chunks", res.BytesWritten, len(touched))
	}

	// A file written into the ext4 root through a loop device at its offset.
	mnt := t.TempDir()
	looptest.Run(t, "mount", "-o", "loop,offset="+itoa(f.disk.RootStart)+",sizelimit="+itoa(f.disk.RootSize), dev.Path, mnt)
	if err := os.WriteFile(filepath.Join(mnt, "job-output.log"), bytes.Repeat([]byte("ci job wrote this\n"), 20000), 0o644); err != nil {
		looptest.Run(t, "umount", mnt)
		t.Fatal(err)
	}
	looptest.Run(t, "umount", mnt)
	_, done = f.flash(t, dev, Options{})
	if done.ChunksWritten == 0 || done.ChunksWritten > data/2 {
		t.Fatalf("after a file was written into the root: %d chunks written of %d", done.ChunksWritten, data)
	}

	// A changed partition table (primary at the head, backup at the end).
	looptest.Run(t, "sgdisk", "-c", "2:changed", dev.Path)
	res, done = f.flash(t, dev, Options{})
	if done.ChunksWritten < 1 || done.ChunksWritten > 2 {
		t.Fatalf("after sgdisk -c: %d chunks written (want the head's and the backup table's)", done.ChunksWritten)
	}
	if !strings.Contains(strings.Join(res.Notes, "\n"), "delta flash:") {
		t.Errorf("no delta summary in the notes %q", res.Notes)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// TestDeltaFallsBack: a store that is not the image's, a truncated one, a
// chunk that does not match its sum, or a target smaller than the image
// never writes a wrong disk: the flash is a full one, with a note.
func TestDeltaFallsBack(t *testing.T) {
	looptest.RequireRoot(t)
	f := newDeltaFixture(t, 2)
	other := newDeltaFixture(t, 3)
	store := StoreRef(f.image)
	good, err := os.ReadFile(store)
	if err != nil {
		t.Fatal(err)
	}
	dev := looptest.New(t, f.disk.Size)
	full := func(name, want string) {
		t.Helper()
		var rec event.Recorder
		res, err := Run(context.Background(), Options{Image: f.image, Target: dev.Path, Delta: true, Sink: &rec})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got := dev.SHA256(t, f.disk.Size); got != f.sum {
			t.Fatalf("%s: the device reads %s, the image is %s", name, got, f.sum)
		}
		if res.Delta || !slices.ContainsFunc(res.Notes, func(n string) bool { return strings.Contains(n, want) && strings.Contains(n, "flashing in full") }) {
			t.Fatalf("%s: delta %v, notes %q, want one saying %q", name, res.Delta, res.Notes, want)
		}
	}
	// Another image's store under this image's name.
	copyFile(t, StoreRef(other.image), store)
	full("another image's store", "another file")
	// Truncated.
	if err := os.WriteFile(store, good[:len(good)-100], 0o644); err != nil {
		t.Fatal(err)
	}
	full("truncated store", "truncated")
	// No store.
	os.Remove(store)
	full("no store", "no chunk store")
	// --sha256 of another image.
	if err := os.WriteFile(store, good, 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := Run(context.Background(), Options{Image: f.image, Target: dev.Path, Delta: true, SHA256: other.sum})
	if err == nil || res.Delta {
		t.Fatalf("--sha256 of another image: delta %v, err %v; want a full flash failing on the checksum", res.Delta, err)
	}

	// A chunk whose packed bytes are damaged, on a target that needs it:
	// detected before it is written; the flash goes on in full.
	bad := slices.Clone(good)
	victim := -1
	for i, c := range f.x.Chunks {
		if !c.Zero && !c.Raw && i > 2 {
			victim = i
			bad[c.Off+c.Len/2] ^= 0xff
			break
		}
	}
	if err := os.WriteFile(store, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	fillRandom(t, dev.Path, f.disk.Size)
	full("a damaged chunk "+itoa(int64(victim)), "broke during the delta flash")
	if err := os.WriteFile(store, good, 0o644); err != nil {
		t.Fatal(err)
	}

	// A target smaller than the image: no delta, and the full flash
	// refuses with the sizes.
	small := looptest.New(t, f.disk.Size-(4<<20))
	res, err = Run(context.Background(), Options{Image: f.image, Target: small.Path, Delta: true})
	if err == nil || !strings.Contains(err.Error(), "larger disk") || res.Delta {
		t.Fatalf("smaller target: delta %v, err %v", res.Delta, err)
	}
}

// TestDeltaFromURL: the store served over HTTP by a server that cuts
// connections: the index and the coalesced chunk ranges resume, only the
// changed chunks are fetched, and the device reads back as the image.
func TestDeltaFromURL(t *testing.T) {
	looptest.RequireRoot(t)
	f := newDeltaFixture(t, 4)
	dir := filepath.Dir(f.image)
	srv, requests := droppingServer(t, dir, 2)
	url := srv.URL + "/" + filepath.Base(f.image)
	dev := looptest.New(t, f.disk.Size)
	opts := Options{Image: url, Target: dev.Path, Delta: true, SHA256: f.sum, Source: source.Options{RetryDelay: 10 * time.Millisecond}}
	res, err := Run(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if got := dev.SHA256(t, f.disk.Size); got != f.sum || !res.Delta {
		t.Fatalf("device %s (delta %v), image %s", got, res.Delta, f.sum)
	}
	if requests.Load() < 4 {
		t.Errorf("%d requests: the drops were not exercised", requests.Load())
	}
	// Change two chunks: only those are fetched (one range each, plus the index).
	out, err := os.OpenFile(dev.Path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	var changed []int
	for i, c := range f.x.Chunks {
		if !c.Zero && i > 4 && len(changed) < 2 && (len(changed) == 0 || i > changed[0]+2) {
			changed = append(changed, i)
			off, _ := f.x.Span(i)
			if _, err := out.WriteAt(bytes.Repeat([]byte{1}, 512), off); err != nil {
				t.Fatal(err)
			}
		}
	}
	out.Close()
	res, err = Run(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	want := f.x.DataOffset + f.x.Chunks[changed[0]].Len + f.x.Chunks[changed[1]].Len
	if got := dev.SHA256(t, f.disk.Size); got != f.sum || res.BytesFetched != want {
		t.Fatalf("device %s, image %s; fetched %d bytes, want %d (the index and two chunks)", got, f.sum, res.BytesFetched, want)
	}
	// Without --sha256 a URL store cannot be bound to the image: full.
	opts.SHA256 = ""
	res, err = Run(context.Background(), opts)
	if err != nil || res.Delta {
		t.Fatalf("no --sha256: delta %v, err %v", res.Delta, err)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func fillRandom(t *testing.T, path string, n int64) {
	t.Helper()
	looptest.Run(t, "dd", "if=/dev/urandom", "of="+path, "bs=1M", "count="+itoa(n>>20), "status=none", "conv=fsync")
}
