package flash

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/btyproject/bty/internal/event"
	"github.com/btyproject/bty/internal/image"
	"github.com/btyproject/bty/internal/imagetest"
	"github.com/btyproject/bty/internal/source"
)

// openImage opens a corpus file the way the engine does.
func openImage(t *testing.T, path string) image.Image {
	t.Helper()
	src, err := source.Open(context.Background(), path, source.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	img, err := image.Open(context.Background(), src, image.Options{})
	if err != nil {
		t.Fatalf("image.Open(%s): %v", path, err)
	}
	t.Cleanup(func() { img.Close() })
	return img
}

// sumPrefix returns the sha256 of the first n bytes of r.
func sumPrefix(t *testing.T, r io.ReaderAt, n int64) string {
	t.Helper()
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(r, 0, n)); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func readAll(t *testing.T, r io.ReaderAt, off, n int64) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := r.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCopyCorpus flashes every format of the corpus onto a file full of
// random bytes and compares the result with the raw reference; the bytes
// past the image's end must be left as they were.
func TestCopyCorpus(t *testing.T) {
	set := imagetest.Corpus(t)
	const tail = 1 << 20
	for _, name := range set.Cases() {
		t.Run(name, func(t *testing.T) {
			img := openImage(t, set.Files[name])
			dev := newGarbageDevice(t, set.Size+tail)
			after := readAll(t, dev, set.Size, tail)
			var rec event.Recorder
			st, err := copyImage(context.Background(), img, dev, copyOptions{Hash: true, Record: true, Sink: &rec})
			if err != nil {
				t.Fatalf("copy: %v", err)
			}
			if got := sumPrefix(t, dev, set.Size); got != set.RawSHA256 {
				t.Fatalf("target sha256 %s, want %s", got, set.RawSHA256)
			}
			if !bytes.Equal(readAll(t, dev, set.Size, tail), after) {
				t.Fatal("bytes past the image's end were changed")
			}
			if st.SHA256 != set.RawSHA256 {
				t.Errorf("stream sha256 %s, want %s", st.SHA256, set.RawSHA256)
			}
			if st.Total != set.Size {
				t.Errorf("total %d, want %d", st.Total, set.Size)
			}
			if st.Zeroed == 0 || st.Written >= set.Size {
				t.Errorf("zero runs were written instead of zeroed: written %d zeroed %d of %d", st.Written, st.Zeroed, set.Size)
			}
			if st.PartitionTable != "gpt" {
				t.Errorf("partition table %q, want gpt", st.PartitionTable)
			}
			if err := verifyFrom(context.Background(), dev, st.Segments, 2); err != nil {
				t.Errorf("verify of a good copy: %v", err)
			}
			evs := rec.Events()
			if len(evs) == 0 || evs[len(evs)-1].Event != event.Progress || evs[len(evs)-1].BytesWritten != set.Size {
				t.Errorf("last progress event %+v, want %d bytes", evs[len(evs)-1], set.Size)
			}
		})
	}
}

func TestCopyChecksumMismatchLeavesHeadZeroed(t *testing.T) {
	set := imagetest.Corpus(t)
	for _, name := range []string{"raw", "zst"} {
		t.Run(name, func(t *testing.T) {
			img := openImage(t, set.Files[name])
			dev := newGarbageDevice(t, set.Size)
			wrong := strings.Repeat("0", 64)
			_, err := copyImage(context.Background(), img, dev, copyOptions{Expect: wrong})
			if !errors.Is(err, ErrChecksum) {
				t.Fatalf("err = %v, want ErrChecksum", err)
			}
			for _, want := range []string{set.RawSHA256, wrong} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not show %s", err, want)
				}
			}
			if head := readAll(t, dev, 0, headSize); !bytes.Equal(head, make([]byte, headSize)) {
				t.Error("the head was written although the checksum did not match")
			}
		})
	}
}

func TestCopyTooLarge(t *testing.T) {
	set := imagetest.Corpus(t)
	for _, name := range []string{"raw", "qcow2-v3", "gz"} {
		t.Run(name, func(t *testing.T) {
			img := openImage(t, set.Files[name])
			dev := newGarbageDevice(t, set.Size/2)
			_, err := copyImage(context.Background(), img, dev, copyOptions{})
			var tl *TooLargeError
			if !errors.As(err, &tl) {
				t.Fatalf("err = %v, want TooLargeError", err)
			}
		})
	}
}

func TestCopyCancelSaysHowFar(t *testing.T) {
	set := imagetest.Corpus(t)
	img := openImage(t, set.Files["zst"])
	dev := newGarbageDevice(t, set.Size)
	ctx, cancel := context.WithCancel(context.Background())
	// Ctrl-C arrives with the first write; with one worker and a bounded
	// buffer pool, most of the image is still to come.
	slow := &slowDevice{fileDevice: dev, onWrite: cancel}
	_, err := copyImage(ctx, img, slow, copyOptions{Workers: 1})
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "interrupted after") {
		t.Fatalf("err = %v, want an interruption that says how far it got", err)
	}
	if head := readAll(t, dev, 0, headSize); !bytes.Equal(head, make([]byte, headSize)) {
		t.Error("an interrupted copy wrote the head")
	}
}

type slowDevice struct {
	*fileDevice
	onWrite func()
}

func (s *slowDevice) WriteAt(p []byte, off int64) (int, error) {
	s.onWrite()
	sleepBriefly()
	return s.fileDevice.WriteAt(p, off)
}

func TestVerifyDetectsCorruption(t *testing.T) {
	set := imagetest.Corpus(t)
	img := openImage(t, set.Files["raw"])
	dev := newGarbageDevice(t, set.Size)
	st, err := copyImage(context.Background(), img, dev, copyOptions{Record: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Segments) == 0 {
		t.Fatal("no segments recorded")
	}
	seg := st.Segments[len(st.Segments)/2]
	b := readAll(t, dev, seg.Off+7, 1)
	b[0] ^= 0xff
	if _, err := dev.WriteAt(b, seg.Off+7); err != nil {
		t.Fatal(err)
	}
	err = verifyFrom(context.Background(), dev, st.Segments, 2)
	if err == nil {
		t.Fatal("verify passed on a corrupted target")
	}
	if !strings.Contains(err.Error(), hex.EncodeToString(seg.Sum[:])) || !strings.Contains(err.Error(), fmt.Sprint(seg.Off)) {
		t.Errorf("verify error %q does not name the range and the expected hash", err)
	}
}

// TestPutZeroRuns checks how one buffer is split into writes and zeroed
// ranges, and that the device ends up with exactly the buffer's bytes.
func TestPutZeroRuns(t *testing.T) {
	const K = 1024
	data := func(n int) []byte {
		b := make([]byte, n)
		rand.Read(b)
		return b
	}
	zeros := func(n int) []byte { return make([]byte, n) }
	tests := []struct {
		name              string
		parts             [][]byte
		written, zeroed   int64
		wantZeroRangeCall bool
	}{
		{"all data", [][]byte{data(512 * K)}, 512 * K, 0, false},
		{"long zero run is zeroed", [][]byte{data(64 * K), zeros(512 * K), data(64 * K)}, 128 * K, 512 * K, true},
		{"short zero run is written", [][]byte{data(64 * K), zeros(64 * K), data(64 * K)}, 192 * K, 0, false},
		{"trailing zeros with odd length", [][]byte{data(64 * K), zeros(300*K + 512)}, 64 * K, 300*K + 512, true},
		{"odd tail is written", [][]byte{zeros(minZeroRun), data(1000)}, 1000, minZeroRun, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := bytes.Join(tc.parts, nil)
			off := int64(headSize) // past the head, which is written last
			dev := newGarbageDevice(t, off+int64(len(p))+4096)
			c := newCopier(dev, copyOptions{})
			if err := c.put(off, p); err != nil {
				t.Fatal(err)
			}
			if got := readAll(t, dev, off, int64(len(p))); !bytes.Equal(got, p) {
				t.Fatal("device content differs from the buffer")
			}
			if c.written.Load() != tc.written || c.zeroed.Load() != tc.zeroed {
				t.Errorf("written %d zeroed %d, want %d and %d", c.written.Load(), c.zeroed.Load(), tc.written, tc.zeroed)
			}
			if (dev.zeroCalls.Load() > 0) != tc.wantZeroRangeCall {
				t.Errorf("ZeroRange calls %d, want any: %v", dev.zeroCalls.Load(), tc.wantZeroRangeCall)
			}
		})
	}
}

// errAfter returns its data, then a wrapped io.ErrUnexpectedEOF, like a
// cut-off download: readFull must not take it for the end of the stream.
type errAfter struct {
	r   io.Reader
	err error
}

func (e *errAfter) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err == io.EOF {
		return n, e.err
	}
	return n, err
}

func TestReadFullKeepsTruncation(t *testing.T) {
	cut := fmt.Errorf("download cut at byte 10: %w", io.ErrUnexpectedEOF)
	n, err := readFull(&errAfter{r: bytes.NewReader(make([]byte, 10)), err: cut}, make([]byte, 100))
	if n != 10 || err != cut {
		t.Fatalf("readFull = %d, %v; want 10 and the truncation error", n, err)
	}
	n, err = readFull(bytes.NewReader(make([]byte, 10)), make([]byte, 100))
	if n != 10 || err != io.EOF {
		t.Fatalf("readFull at a clean end = %d, %v; want 10, io.EOF", n, err)
	}
}

// shortTail is a random-access image whose ReadAt returns fewer bytes
// than asked, with io.EOF, for reads that reach into its last MiB: what a
// decoder does when the file ends early. Its extent map calls everything
// data.
type shortTail struct {
	size int64
}

func (s *shortTail) Format() image.Format { return image.Raw }
func (s *shortTail) Size() int64          { return s.size }
func (s *shortTail) Close() error         { return nil }
func (s *shortTail) Extent(start, length int64) (image.Extent, error) {
	return image.Extent{Start: start, Length: min(length, s.size-start)}, nil
}
func (s *shortTail) ReadAt(p []byte, off int64) (int, error) {
	n := int64(len(p))
	if off+n > s.size-1<<20 {
		n = max(0, s.size-1<<20-off)
	}
	for i := range p[:n] {
		p[i] = 0xa5
	}
	if n == int64(len(p)) && off+n < s.size {
		return int(n), nil
	}
	return int(n), io.EOF
}

// TestCopyShortReadInLastRun: a short read in the image's last run of
// data is an error, not the end of the image (it used to flash the rest
// as whatever the buffer held, exit 0).
func TestCopyShortReadInLastRun(t *testing.T) {
	const size = 20 << 20
	dev := newGarbageDevice(t, size)
	_, err := copyImage(context.Background(), &shortTail{size: size}, dev, copyOptions{})
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("offset %d", size-1<<20)) || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("copyImage = %v, want an error naming offset %d", err, size-1<<20)
	}
}
