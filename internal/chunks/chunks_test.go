package chunks

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// testImage is size bytes: random runs, text-like runs, and zero chunks.
func testImage(size int64, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, size)
	for off := int64(0); off < size; off += 256 << 10 {
		end := min(off+256<<10, size)
		switch r.IntN(3) {
		case 0: // zeros
		case 1:
			for i := off; i < end; i++ {
				b[i] = byte(r.Uint32())
			}
		case 2:
			for i := off; i < end; i++ {
				b[i] = "bty chunk store "[i%16]
			}
		}
	}
	return b
}

func build(t *testing.T, img []byte, cs int64) (*Index, []byte) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "img.btyc")
	var last int64
	x, err := Build(context.Background(), bytes.NewReader(img), path, BuildOptions{ChunkSize: cs, Workers: 3,
		Progress: func(d int64) { last = d }})
	if err != nil {
		t.Fatal(err)
	}
	if last != int64(len(img)) {
		t.Errorf("progress ended at %d of %d", last, len(img))
	}
	file, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return x, file
}

func TestBuildParseDecode(t *testing.T) {
	const cs = 64 << 10
	img := testImage(5<<20+12345, 7) // a short last chunk
	x, file := build(t, img, cs)
	sum := sha256.Sum256(img)
	if x.SHA256 != hex.EncodeToString(sum[:]) || x.ImageSize != int64(len(img)) {
		t.Fatalf("index says %s/%d, image is %x/%d", x.SHA256, x.ImageSize, sum, len(img))
	}
	got, err := ReadIndex(bytes.NewReader(file), int64(len(file)), 0)
	if err != nil {
		t.Fatal(err)
	}
	if got.FileSize != int64(len(file)) || got.DataOffset != x.DataOffset || len(got.Chunks) != len(x.Chunks) {
		t.Fatalf("parsed %d chunks, file %d/%d; built %d, file %d", len(got.Chunks), got.FileSize, got.DataOffset, len(x.Chunks), len(file))
	}
	zeros, raws := 0, 0
	for i, c := range got.Chunks {
		if c != x.Chunks[i] {
			t.Fatalf("chunk %d parsed as %+v, built %+v", i, c, x.Chunks[i])
		}
		off, n := got.Span(i)
		dst := make([]byte, n)
		if err := got.Decode(i, file[c.Off:c.Off+c.Len], dst); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(dst, img[off:off+n]) {
			t.Fatalf("chunk %d decodes to other bytes", i)
		}
		if c.Zero {
			zeros++
		}
		if c.Raw {
			raws++
		}
	}
	if zeros == 0 || raws == 0 || zeros+raws == len(got.Chunks) {
		t.Errorf("want zero, raw and compressed chunks in the test image: %d zero, %d raw of %d", zeros, raws, len(got.Chunks))
	}
	// A chunk whose packed bytes are damaged is refused.
	for i, c := range got.Chunks {
		if c.Zero {
			continue
		}
		bad := bytes.Clone(file[c.Off : c.Off+c.Len])
		bad[len(bad)/2] ^= 1
		_, n := got.Span(i)
		if err := got.Decode(i, bad, make([]byte, n)); !errors.Is(err, ErrFormat) {
			t.Fatalf("chunk %d with a flipped bit: %v", i, err)
		}
		break
	}
}

func TestParseRefuses(t *testing.T) {
	img := testImage(1<<20, 3)
	_, file := build(t, img, 64<<10)
	x, _ := ReadIndex(bytes.NewReader(file), int64(len(file)), 0)
	idx := file[:x.DataOffset]
	for name, b := range map[string][]byte{
		"empty":     nil,
		"header":    idx[:HeaderSize],
		"truncated": idx[:len(idx)-1],
		"magic":     append([]byte("BTYCHNK2"), idx[8:]...),
		"entry":     flip(idx, HeaderSize+5),
		"checksum":  flip(idx, len(idx)-1),
		"count":     flip(idx, 24),
	} {
		if _, err := Parse(b); !errors.Is(err, ErrFormat) {
			t.Errorf("%s: %v, want ErrFormat", name, err)
		}
	}
	if _, err := ReadIndex(bytes.NewReader(idx[:100]), 100, 0); !errors.Is(err, ErrFormat) {
		t.Errorf("ReadIndex of a truncated index: %v", err)
	}
	// Bounds checked before the entries are read: an index that does not
	// fit the store's size, an image larger than the target.
	if _, err := ReadIndex(bytes.NewReader(file), x.DataOffset-1, 0); !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), "does not fit") {
		t.Errorf("ReadIndex of a store too short for its index: %v", err)
	}
	var tl *TooLargeError
	if _, err := ReadIndex(bytes.NewReader(file), int64(len(file)), x.ImageSize-1); !errors.As(err, &tl) || tl.Image != x.ImageSize {
		t.Errorf("ReadIndex with a target one byte too small: %v", err)
	}
}

func flip(b []byte, i int) []byte {
	b = bytes.Clone(b)
	b[i] ^= 0x40
	return b
}
