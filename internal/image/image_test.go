package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/btyproject/bty/internal/imagetest"
	"github.com/btyproject/bty/internal/source"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/")

// openLocal opens path as a local source (ReaderAt and Filer).
func openLocal(t testing.TB, path string) source.Source {
	t.Helper()
	src, err := source.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	return src
}

// streamOnly hides random access, as an HTTP server without Range does.
type streamOnly struct{ s source.Source }

func (s streamOnly) Name() string                                    { return s.s.Name() }
func (s streamOnly) Size() int64                                     { return s.s.Size() }
func (s streamOnly) Open(ctx context.Context) (io.ReadCloser, error) { return s.s.Open(ctx) }
func (s streamOnly) ReaderAt() io.ReaderAt                           { return nil }
func (s streamOnly) Close() error                                    { return s.s.Close() }

// remoteAt has random access but no local file, as an HTTP server with
// Range does.
type remoteAt struct{ streamOnly }

func (s remoteAt) ReaderAt() io.ReaderAt { return s.s.ReaderAt() }

func TestDetect(t *testing.T) {
	tests := []struct {
		name string
		head []byte
		want Format
	}{
		{"qcow2", []byte("QFI\xfb\x00\x00\x00\x03"), Qcow2},
		{"zstd", []byte{0x28, 0xb5, 0x2f, 0xfd, 0x24}, Zstd},
		{"zstd skippable frame", []byte{0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0}, Zstd},
		{"zstd skippable frame 5f", []byte{0x5f, 0x2a, 0x4d, 0x18}, Zstd},
		{"gzip", []byte{0x1f, 0x8b, 8, 0}, Gzip},
		{"xz", []byte{0xfd, '7', 'z', 'X', 'Z', 0, 0, 4}, Xz},
		{"bzip2", []byte("BZh91AY&SY"), Bzip2},
		{"bzip2 level 1", []byte("BZh1"), Bzip2},
		{"bzip2 bad level", []byte("BZh0"), Raw},
		{"xz without the zero", []byte{0xfd, '7', 'z', 'X', 'Z', 1}, Raw},
		{"MBR", append(make([]byte, 510), 0x55, 0xaa), Raw},
		{"empty", nil, Raw},
		{"short qcow2", []byte("QFI"), Raw},
		{"not skippable", []byte{0x60, 0x2a, 0x4d, 0x18}, Raw},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, Detect(tt.head)); diff != "" {
				t.Errorf("Detect(%q) (-want +got):\n%s", tt.head, diff)
			}
		})
	}
}

func TestFormatFromName(t *testing.T) {
	type result struct {
		F  Format
		OK bool
	}
	tests := map[string]result{
		"disk.img":                           {Raw, true},
		"disk.raw":                           {Raw, true},
		"debian.iso":                         {Raw, true},
		"DISK.IMG":                           {Raw, true},
		"disk.img.zst":                       {Zstd, true},
		"disk.zst":                           {Zstd, true},
		"disk.img.gz":                        {Gzip, true},
		"disk.gz":                            {Gzip, true},
		"disk.img.xz":                        {Xz, true},
		"disk.xz":                            {Xz, true},
		"disk.img.bz2":                       {Bzip2, true},
		"disk.bz2":                           {Bzip2, true},
		"disk.qcow2":                         {Qcow2, true},
		"disk.qcow":                          {Qcow2, true},
		"/var/lib/bty/images/a.b.img.zst":    {Zstd, true},
		"https://h/images/disk.qcow2?sig=ab": {Qcow2, true},
		"disk.bin":                           {"", false},
		"disk.img.zip":                       {"", false},
		"disk.tar":                           {"", false},
		".img":                               {"", false},
		"README":                             {"", false},
	}
	for name, want := range tests {
		f, ok := FormatFromName(name)
		if diff := cmp.Diff(want, result{f, ok}); diff != "" {
			t.Errorf("FormatFromName(%q) (-want +got):\n%s", name, diff)
		}
	}
}

func TestSuffixLies(t *testing.T) {
	set := imagetest.Corpus(t)
	tests := []struct {
		file, content, want string
	}{
		{"disk.img.zst", "gz", "disk.img.zst is gzip data, not zstd: rename it to disk.img.gz"},
		{"disk.img", "qcow2-v3", "disk.img is qcow2 data, not raw: rename it to disk.qcow2"},
		{"disk.img", "zst", "disk.img is zstd data, not raw: rename it to disk.img.zst"},
		{"disk.img.gz", "xz", "disk.img.gz is xz data, not gzip: rename it to disk.img.xz"},
		{"disk.xz", "bz2", "disk.xz is bzip2 data, not xz: rename it to disk.bz2"},
		{"disk.iso", "zst", "disk.iso is zstd data, not raw: rename it to disk.img.zst"},
		{"disk.qcow2", "raw", "disk.qcow2 is not qcow2 data (it does not start with the qcow2 magic bytes; raw images have none): if it is a raw image, rename it to disk.img"},
		{"disk.img.bz2", "raw", "disk.img.bz2 is not bzip2 data (it does not start with the bzip2 magic bytes; raw images have none): if it is a raw image, rename it to disk.img"},
		{"disk.qcow2", "gz", "disk.qcow2 is gzip data, not qcow2: rename it to disk.img.gz"},
	}
	for _, tt := range tests {
		t.Run(tt.file+"/"+tt.content, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), tt.file)
			if err := os.WriteFile(p, imagetest.ReadAt(t, set.Files[tt.content], 0, 64<<10), 0o644); err != nil {
				t.Fatal(err)
			}
			src := openLocal(t, p)
			img, err := Open(context.Background(), src, Options{})
			if err == nil {
				img.Close()
				t.Fatalf("Open succeeded, want %q", tt.want)
			}
			if diff := cmp.Diff(tt.want, err.Error()); diff != "" {
				t.Errorf("Open error (-want +got):\n%s", diff)
			}
			_, err = Inspect(context.Background(), src)
			if err == nil || err.Error() != tt.want {
				t.Errorf("Inspect error %v, want %q", err, tt.want)
			}
		})
	}
	// An unknown suffix trusts the magic.
	p := filepath.Join(t.TempDir(), "disk.bin")
	if err := os.WriteFile(p, imagetest.ReadAt(t, set.Files["gz"], 0, 64<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	img, err := Open(context.Background(), openLocal(t, p), Options{})
	if err != nil {
		t.Fatalf("unknown suffix: %v", err)
	}
	defer img.Close()
	if img.Format() != Gzip {
		t.Errorf("disk.bin holding gzip opened as %s", img.Format())
	}
}

// hashImage decodes img completely: RandomAccess by ReadAt in odd-sized
// chunks, Stream by Read.
func hashImage(t *testing.T, img Image) (string, int64) {
	t.Helper()
	h := sha256.New()
	var n int64
	switch im := img.(type) {
	case RandomAccess:
		buf := make([]byte, 1<<20+12345)
		for off := int64(0); off < im.Size(); {
			chunk := buf[:min(int64(len(buf))-(off%7)*1001, im.Size()-off)]
			k, err := im.ReadAt(chunk, off)
			if k != len(chunk) || (err != nil && err != io.EOF) {
				t.Fatalf("ReadAt(%d bytes at %d) = %d, %v", len(chunk), off, k, err)
			}
			h.Write(chunk)
			off += int64(k)
			n += int64(k)
		}
		if k, err := im.ReadAt(buf[:10], im.Size()); k != 0 || err != io.EOF {
			t.Errorf("ReadAt past the end = %d, %v; want 0, EOF", k, err)
		}
	case Stream:
		buf := make([]byte, 4<<20)
		for {
			k, err := im.Read(buf)
			h.Write(buf[:k])
			n += int64(k)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("Read after %d bytes: %v", n, err)
			}
		}
	default:
		t.Fatalf("%T is neither RandomAccess nor Stream", img)
	}
	return hex.EncodeToString(h.Sum(nil)), n
}

func TestDecodeCorpus(t *testing.T) {
	set := imagetest.Corpus(t)
	type want struct {
		Format       Format
		RandomAccess bool
		Size         int64
	}
	wants := map[string]want{
		"raw":            {Raw, true, set.Size},
		"raw-dense":      {Raw, true, set.Size},
		"zst":            {Zstd, false, set.Size},
		"zst-multiframe": {Zstd, false, set.Size},
		"gz":             {Gzip, false, -1},
		"gz-multimember": {Gzip, false, -1},
		"xz":             {Xz, false, set.Size},
		"xz-multiblock":  {Xz, false, set.Size},
		"xz-multistream": {Xz, false, set.Size},
		"bz2":            {Bzip2, false, -1},
		"qcow2-v3":       {Qcow2, true, set.Size},
		"qcow2-v2":       {Qcow2, true, set.Size},
		"qcow2-zlib":     {Qcow2, true, set.Size},
		"qcow2-zstd":     {Qcow2, true, set.Size},
		"qcow2-backing":  {Qcow2, true, set.Size},
	}
	if diff := cmp.Diff(len(wants), len(set.Files)); diff != "" {
		t.Fatalf("corpus cases changed (-want +got):\n%s", diff)
	}
	for _, c := range set.Cases() {
		t.Run(c, func(t *testing.T) {
			img, err := Open(context.Background(), openLocal(t, set.Files[c]), Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer img.Close()
			_, isRA := img.(RandomAccess)
			if diff := cmp.Diff(wants[c], want{img.Format(), isRA, img.Size()}); diff != "" {
				t.Errorf("image (-want +got):\n%s", diff)
			}
			sum, n := hashImage(t, img)
			if n != set.Size || sum != set.RawSHA256 {
				t.Errorf("decoded %d bytes with sha256 %s, want %d bytes with %s", n, sum, set.Size, set.RawSHA256)
			}
		})
	}
	if img, err := Open(context.Background(), openLocal(t, set.Files["xz-multiblock"]), Options{}); err != nil {
		t.Fatal(err)
	} else {
		if _, ok := img.(*parallelXz); !ok {
			t.Errorf("xz-multiblock opened as %T, want parallel block decoding", img)
		}
		img.Close()
	}
}

// TestDecodeWithoutLocalFile decodes through sources without a local file:
// stream-only (no Range) and random access without a file.
func TestDecodeWithoutLocalFile(t *testing.T) {
	set := imagetest.Corpus(t)
	for _, c := range []string{"raw", "zst", "zst-multiframe", "gz", "xz", "xz-multiblock", "bz2", "qcow2-zstd"} {
		for _, mode := range []string{"stream", "remote"} {
			t.Run(c+"/"+mode, func(t *testing.T) {
				var src source.Source = streamOnly{openLocal(t, set.Files[c])}
				if mode == "remote" {
					src = remoteAt{streamOnly{openLocal(t, set.Files[c])}}
				}
				img, err := Open(context.Background(), src, Options{})
				if mode == "stream" && strings.HasPrefix(c, "qcow2") {
					if err == nil || !strings.Contains(err.Error(), "Range requests") {
						t.Fatalf("qcow2 without random access: err %v, want one about Range requests", err)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				defer img.Close()
				if _, ok := img.(Stream); !ok && c == "raw" {
					t.Errorf("raw without a local file opened as %T, want a Stream", img)
				}
				sum, n := hashImage(t, img)
				if n != set.Size || sum != set.RawSHA256 {
					t.Errorf("decoded %d bytes with sha256 %s, want %d bytes with %s", n, sum, set.Size, set.RawSHA256)
				}
			})
		}
	}
}

// checkExtents walks the extent map in uneven steps and checks it covers
// [0, size) with no gaps or overlaps and that every Zero extent reads as
// zeros. It returns the zero and data byte counts and the extents.
func checkExtents(t *testing.T, ra RandomAccess) (zero, data int64, exts []Extent) {
	t.Helper()
	size := ra.Size()
	steps := []int64{size, 3 << 20, 65536 + 512, 4097, 1 << 30}
	buf := make([]byte, 4<<20)
	for off, i := int64(0), 0; off < size; i++ {
		length := min(steps[i%len(steps)], size-off)
		e, err := ra.Extent(off, length)
		if err != nil {
			t.Fatalf("Extent(%d, %d): %v", off, length, err)
		}
		if e.Start != off || e.Length <= 0 || e.Length > length {
			t.Fatalf("Extent(%d, %d) = %+v: not a run starting at %d within the length", off, length, e, off)
		}
		if e.Zero {
			zero += e.Length
			for p := e.Start; p < e.Start+e.Length; p += int64(len(buf)) {
				b := buf[:min(int64(len(buf)), e.Start+e.Length-p)]
				if _, err := ra.ReadAt(b, p); err != nil && err != io.EOF {
					t.Fatal(err)
				}
				if i := bytes.IndexFunc(b, func(r rune) bool { return r != 0 }); i >= 0 {
					t.Fatalf("Zero extent %+v has data at %d", e, p+int64(i))
				}
			}
		} else {
			data += e.Length
		}
		exts = append(exts, e)
		off += e.Length
	}
	if zero+data != size {
		t.Fatalf("extents cover %d bytes, want %d", zero+data, size)
	}
	return zero, data, exts
}

// zeroAt reports whether the extent covering off is Zero.
func zeroAt(t *testing.T, ra RandomAccess, off int64) bool {
	t.Helper()
	e, err := ra.Extent(off, 1)
	if err != nil {
		t.Fatal(err)
	}
	return e.Zero
}

func TestExtents(t *testing.T) {
	set := imagetest.Corpus(t)
	const mib = 1 << 20
	tests := []struct {
		c        string
		wantZero bool           // any Zero extents at all
		at       map[int64]bool // offset -> Zero
	}{
		{"raw", true, map[int64]bool{0: false, 2 * mib: false, 12 * mib: true, 30 * mib: true, set.Size - 1: false}},
		{"raw-dense", false, map[int64]bool{12 * mib: false}},
		{"qcow2-v3", true, map[int64]bool{0: false, 2 * mib: false, 12 * mib: true, 30 * mib: true, set.Size - 1: false}},
		{"qcow2-v2", true, map[int64]bool{12 * mib: true, set.Size - 1: false}},
		{"qcow2-zlib", true, map[int64]bool{2 * mib: false, 12 * mib: true}},
		{"qcow2-zstd", true, map[int64]bool{2 * mib: false, 12 * mib: true}},
		// Unallocated clusters fall through to base.img: its data is
		// data, its holes Zero; zero clusters written over base's data
		// are Zero.
		{"qcow2-backing", true, map[int64]bool{12 * mib: true, 2 * mib: false, 1 * mib: false, 5 * mib: true, 30 * mib: true}},
	}
	for _, tt := range tests {
		t.Run(tt.c, func(t *testing.T) {
			img, err := Open(context.Background(), openLocal(t, set.Files[tt.c]), Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer img.Close()
			ra := img.(RandomAccess)
			zero, _, _ := checkExtents(t, ra)
			if (zero > 0) != tt.wantZero {
				t.Errorf("%d Zero bytes; want some: %v", zero, tt.wantZero)
			}
			for off, want := range tt.at {
				if got := zeroAt(t, ra, off); got != want {
					t.Errorf("Zero at %d = %v, want %v", off, got, want)
				}
			}
			if _, err := ra.Extent(set.Size, 1); err == nil {
				t.Errorf("Extent past the end succeeded")
			}
		})
	}
}

// TestConcurrentReadAt reads a qcow2 and a raw image from several
// goroutines at once (run with -race) and compares with the reference.
func TestConcurrentReadAt(t *testing.T) {
	set := imagetest.Corpus(t)
	ref, err := os.ReadFile(set.Raw)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"raw", "qcow2-zstd", "qcow2-zlib", "qcow2-backing"} {
		t.Run(c, func(t *testing.T) {
			img, err := Open(context.Background(), openLocal(t, set.Files[c]), Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer img.Close()
			ra := img.(RandomAccess)
			errs := make(chan error, 4)
			for w := range 4 {
				go func() {
					buf := make([]byte, 1<<20)
					for off := int64(w) << 20; off < set.Size; off += 4 << 20 {
						n, err := ra.ReadAt(buf, off)
						if err != nil && err != io.EOF {
							errs <- err
							return
						}
						if !bytes.Equal(buf[:n], ref[off:off+int64(n)]) {
							errs <- fmt.Errorf("bytes at %d differ", off)
							return
						}
					}
					errs <- nil
				}()
			}
			for range 4 {
				if err := <-errs; err != nil {
					t.Error(err)
				}
			}
		})
	}
}

func TestListGolden(t *testing.T) {
	set := imagetest.Corpus(t)
	// The corpus plus a few odd entries in a directory of their own.
	dir := t.TempDir()
	for _, c := range set.Cases() {
		if err := os.Symlink(set.Files[c], filepath.Join(dir, filepath.Base(set.Files[c]))); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(filepath.Join(set.Dir, imagetest.BackingFile), filepath.Join(dir, imagetest.BackingFile)); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("not an image"), 0o644)
	os.WriteFile(filepath.Join(dir, "mystery.bin"), imagetest.ReadAt(t, set.Files["gz"], 0, 1<<10), 0o644)
	os.WriteFile(filepath.Join(dir, "empty.img"), nil, 0o644)
	os.WriteFile(filepath.Join(dir, "lie.img.zst"), imagetest.ReadAt(t, set.Files["gz"], 0, 1<<10), 0o644)
	os.Mkdir(filepath.Join(dir, "sub.img"), 0o755)
	list, err := List(dir)
	if err != nil {
		t.Fatal(err)
	}
	got, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = bytes.ReplaceAll(got, []byte(dir), []byte("$ROOT"))
	golden(t, "list.golden.json", got)

	// Inspect on a single file gives the same record as List.
	info, err := Inspect(context.Background(), openLocal(t, set.Files["qcow2-backing"]))
	if err != nil {
		t.Fatal(err)
	}
	var fromList Info
	for _, i := range list {
		if i.Name == "child.qcow2" {
			fromList = i
		}
	}
	info.Path = fromList.Path
	if diff := cmp.Diff(fromList, info); diff != "" {
		t.Errorf("Inspect vs List (-list +inspect):\n%s", diff)
	}
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	p := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(p, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s (-want +got):\n%s", p, diff)
	}
}

// decodeAll opens path and decodes it all, returning the first error.
func decodeAll(t *testing.T, path string) (err error) {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("panic: %v", r)
		}
	}()
	img, err := Open(context.Background(), openLocal(t, path), Options{})
	if err != nil {
		return err
	}
	defer img.Close()
	switch im := img.(type) {
	case RandomAccess:
		_, err := readImage(im)
		return err
	case Stream:
		_, err := io.Copy(io.Discard, im)
		return err
	}
	return errors.New("unknown image type")
}

var offsetsRE = regexp.MustCompile(`compressed offset \d+ \(decoded offset \d+`)

func TestTruncatedStreams(t *testing.T) {
	set := imagetest.Corpus(t)
	for _, c := range []string{"zst", "zst-multiframe", "gz", "gz-multimember", "xz", "xz-multiblock", "xz-multistream", "bz2"} {
		st, err := os.Stat(set.Files[c])
		if err != nil {
			t.Fatal(err)
		}
		for _, cut := range []int64{st.Size() / 2, st.Size() - 7, 100} {
			t.Run(fmt.Sprintf("%s/%d", c, cut), func(t *testing.T) {
				err := decodeAll(t, imagetest.Truncate(t, set.Files[c], cut))
				if err == nil {
					t.Fatal("a truncated file decoded without error")
				}
				// A local xz file's index and a local zstd file's
				// frames are read before decoding starts: the cut is
				// found there.
				walked := (strings.HasPrefix(c, "xz") || strings.HasPrefix(c, "zst")) &&
					strings.Contains(err.Error(), "it is truncated") && strings.Contains(err.Error(), "corrupt")
				if !offsetsRE.MatchString(err.Error()) && !strings.Contains(err.Error(), "compressed offset") && !walked {
					t.Errorf("error %q names no compressed/decoded offsets", err)
				}
			})
		}
	}
}

func TestCorruptStreams(t *testing.T) {
	set := imagetest.Corpus(t)
	for _, c := range []string{"zst", "gz", "xz", "xz-multiblock", "bz2"} {
		t.Run(c, func(t *testing.T) {
			p := imagetest.Corrupt(t, set.Files[c], 3<<20, bytes.Repeat([]byte{0x5a}, 64))
			err := decodeAll(t, p)
			if err == nil {
				t.Fatal("a corrupt file decoded without error")
			}
			if !strings.Contains(err.Error(), "compressed offset") || !strings.Contains(err.Error(), "decoded offset") {
				t.Errorf("error %q names no compressed/decoded offsets", err)
			}
		})
	}
}

func TestCorruptQcow2(t *testing.T) {
	set := imagetest.Corpus(t)
	const guest = 2 << 20     // random data, allocated in every case
	const textGuest = 7 << 20 // text, compressed by qemu-img convert -c
	// compressedCluster returns the host offset of the compressed cluster
	// holding textGuest (64 KiB clusters).
	compressedCluster := func(p string) int64 {
		_, entry := imagetest.Qcow2L2Entry(t, p, textGuest)
		if entry&(1<<62) == 0 {
			t.Fatalf("cluster at guest offset %d is not compressed", textGuest)
		}
		return int64(entry & (1<<(62-(16-8)) - 1))
	}
	beyond := make([]byte, 8)
	binary.BigEndian.PutUint64(beyond, 1<<63|0x00ff_ffff_ff00_0000) // copied flag, host offset far past the end
	tests := []struct {
		name, c string
		off     func(path string) int64
		data    []byte
		want    string
	}{
		{"L2 entry beyond the file", "qcow2-v3", func(p string) int64 { off, _ := imagetest.Qcow2L2Entry(t, p, guest); return off }, beyond,
			"the L2 entry at file offset"},
		{"L1 entry beyond the file", "qcow2-v2", func(p string) int64 {
			b := imagetest.ReadAt(t, p, 0, 64)
			return int64(binary.BigEndian.Uint64(b[40:]))
		}, beyond, "L1 entry 0 (file offset"},
		{"garbage compressed cluster", "qcow2-zlib", compressedCluster, bytes.Repeat([]byte{0xff}, 512), fmt.Sprintf("zlib-compressed cluster for guest offset %d", textGuest)},
		{"garbage zstd cluster", "qcow2-zstd", compressedCluster, bytes.Repeat([]byte{0xff}, 512), fmt.Sprintf("zstd-compressed cluster for guest offset %d", textGuest)},
		{"huge L1 size", "qcow2-v3", func(string) int64 { return 36 }, []byte{0xff, 0xff, 0xff, 0xff}, "the active L1 table has 4294967295 entries"},
		{"cluster bits 40", "qcow2-v3", func(string) int64 { return 20 }, []byte{0, 0, 0, 40}, "cluster_bits is 40 (header offset 20), outside 9..21"},
		{"encrypted", "qcow2-v3", func(string) int64 { return 32 }, []byte{0, 0, 0, 2}, "encrypted qcow2 (LUKS) is not supported"},
		{"version 4", "qcow2-v3", func(string) int64 { return 4 }, []byte{0, 0, 0, 4}, "qcow2 version 4 is not supported"},
		{"external data file", "qcow2-v3", func(string) int64 { return 79 }, []byte{4}, "external data file is not supported"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := imagetest.Corrupt(t, set.Files[tt.c], tt.off(set.Files[tt.c]), tt.data)
			err := decodeAll(t, p)
			if err == nil {
				t.Fatal("a corrupt qcow2 decoded without error")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

func TestQcow2Backing(t *testing.T) {
	set := imagetest.Corpus(t)
	// Without base.img next to it.
	dir := t.TempDir()
	child := filepath.Join(dir, "child.qcow2")
	b, err := os.ReadFile(set.Files["qcow2-backing"])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(child, b, 0o644); err != nil {
		t.Fatal(err)
	}
	err = decodeAll(t, child)
	if err == nil || !strings.Contains(err.Error(), `backing file "base.img"`) {
		t.Errorf("missing backing file: error %v, want one naming \"base.img\"", err)
	}
	// Through a source without a local file (a URL).
	_, err = Open(context.Background(), remoteAt{streamOnly{openLocal(t, set.Files["qcow2-backing"])}}, Options{})
	if err == nil || !strings.Contains(err.Error(), `backing file "base.img"`) || !strings.Contains(err.Error(), "qemu-img convert") {
		t.Errorf("remote with backing file: error %v, want one naming \"base.img\" and the fix", err)
	}
	// A backing file outside the image's directory.
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not on PATH")
	}
	sub := filepath.Join(dir, "sub")
	os.Mkdir(sub, 0o755)
	os.WriteFile(filepath.Join(dir, "base.img"), make([]byte, 1<<20), 0o644)
	out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-b", "../base.img", "-F", "raw", filepath.Join(sub, "up.qcow2")).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img create: %v: %s", err, out)
	}
	err = decodeAll(t, filepath.Join(sub, "up.qcow2"))
	if err == nil || !strings.Contains(err.Error(), `backing file "../base.img" outside its directory`) {
		t.Errorf("backing file outside: error %v", err)
	}
}

// TestZstdWithoutContentSize: a frame made from a pipe declares no size.
func TestZstdWithoutContentSize(t *testing.T) {
	set := imagetest.Corpus(t)
	if _, err := exec.LookPath("zstd"); err != nil {
		t.Skip("zstd not on PATH")
	}
	in, err := os.Open(set.Raw)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	p := filepath.Join(t.TempDir(), "piped.img.zst")
	out, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("zstd", "-q", "-c")
	cmd.Stdin, cmd.Stdout = in, out
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	out.Close()
	img, err := Open(context.Background(), openLocal(t, p), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	if img.Size() != -1 {
		t.Errorf("Size() = %d, want -1", img.Size())
	}
	if sum, _ := hashImage(t, img); sum != set.RawSHA256 {
		t.Errorf("sha256 %s, want %s", sum, set.RawSHA256)
	}
}

// TestReader reads a random-access and a streamed image of the corpus
// through Reader: both are the reference raw image.
func TestReader(t *testing.T) {
	set := imagetest.Corpus(t)
	for _, c := range []string{"raw", "qcow2-v3", "zst", "xz-multiblock"} {
		t.Run(c, func(t *testing.T) {
			img, err := Open(context.Background(), openLocal(t, set.Files[c]), Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer img.Close()
			r, err := Reader(img)
			if err != nil {
				t.Fatal(err)
			}
			h := sha256.New()
			n, err := io.Copy(h, r)
			if sum := hex.EncodeToString(h.Sum(nil)); err != nil || n != set.Size || sum != set.RawSHA256 {
				t.Errorf("read %d bytes with sha256 %s (%v), want %d bytes with %s", n, sum, err, set.Size, set.RawSHA256)
			}
		})
	}
	if _, err := Reader(neither{}); err == nil || !strings.Contains(err.Error(), "neither streamed nor read at random") {
		t.Errorf("Reader of an image that is neither: %v", err)
	}
}

type neither struct{}

func (neither) Format() Format { return "odd" }
func (neither) Size() int64    { return 0 }
func (neither) Close() error   { return nil }
