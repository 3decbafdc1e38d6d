package image

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// rleInput is data with long runs of zeros and of other bytes (which
// zstd codes as RLE blocks) between random and text stretches.
func rleInput() []byte {
	r := rand.New(rand.NewPCG(7, 8))
	var b []byte
	for i := range 40 {
		switch i % 4 {
		case 0:
			b = append(b, make([]byte, 1+r.IntN(700<<10))...)
		case 1:
			b = append(b, bytes.Repeat([]byte{byte(1 + r.IntN(255))}, 1+r.IntN(400<<10))...)
		case 2:
			for range r.IntN(50 << 10) {
				b = append(b, byte(r.Uint32()))
			}
		default:
			b = append(b, bytes.Repeat([]byte("bty flashes disks. "), r.IntN(5000))...)
		}
	}
	return b
}

// zstdBlockTypes counts the block types of the zstd frames in b.
func zstdBlockTypes(t *testing.T, b []byte) [4]int {
	t.Helper()
	var n [4]int
	for off := 0; off < len(b); {
		if b[off+1] == 0x2a && b[off+2] == 0x4d && b[off+3] == 0x18 {
			off += 8 + int(b[off+4])
			continue
		}
		hlen, _, err := zstdFrameHeader(b[off:])
		if err != nil {
			t.Fatalf("at %d: %v", off, err)
		}
		checksum := b[off+4]&4 != 0
		off += hlen
		for {
			v := uint32(b[off]) | uint32(b[off+1])<<8 | uint32(b[off+2])<<16
			typ, size := (v>>1)&3, int(v>>3)
			n[typ]++
			off += 3
			if typ == 1 {
				size = 1
			}
			off += size
			if v&1 != 0 {
				break
			}
		}
		if checksum {
			off += 4
		}
	}
	return n
}

func TestZstdRLEAsRaw(t *testing.T) {
	data := rleInput()
	for _, name := range []string{"checksum", "no-checksum", "multiframe"} {
		t.Run(name, func(t *testing.T) {
			var comp []byte
			enc := func(p []byte, crc bool) []byte {
				e, err := zstd.NewWriter(nil, zstd.WithEncoderCRC(crc), zstd.WithWindowSize(1<<20))
				if err != nil {
					t.Fatal(err)
				}
				return e.EncodeAll(p, nil)
			}
			switch name {
			case "checksum":
				comp = enc(data, true)
			case "no-checksum":
				comp = enc(data, false)
			default:
				// A skippable frame (as pzstd writes) between frames.
				skip := []byte{0x50, 0x2a, 0x4d, 0x18, 5, 0, 0, 0, 1, 2, 3, 4, 5}
				comp = append(append(append(skip, enc(data[:len(data)/3], true)...), skip...), enc(data[len(data)/3:], false)...)
			}
			types := zstdBlockTypes(t, comp)
			if types[1] == 0 {
				t.Fatalf("the input has no RLE blocks (%v)", types)
			}
			rewritten, err := io.ReadAll(iotestOneByteish(newZstdRLEAsRaw(bufio.NewReaderSize(bytes.NewReader(comp), 4096))))
			if err != nil {
				t.Fatal(err)
			}
			if got := zstdBlockTypes(t, rewritten); got[1] != 0 || got[0] != types[0]+types[1] || got[2] != types[2] {
				t.Errorf("rewritten block types %v, from %v", got, types)
			}
			p := filepath.Join(t.TempDir(), "x.img.zst")
			if err := os.WriteFile(p, comp, 0o644); err != nil {
				t.Fatal(err)
			}
			img, err := Open(context.Background(), openLocal(t, p), Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer img.Close()
			got, err := io.ReadAll(img.(Stream))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, data) {
				t.Fatalf("decoded %d bytes, not the %d bytes encoded", len(got), len(data))
			}
			// Every cut fails; none panics or passes: found by walking
			// the frames of a local file, by the decoder (behind the
			// RLE rewrite) in a stream.
			for cut := 8; cut < len(comp); cut += 1 + cut/7 {
				p := writeTemp(t, comp[:cut])
				if err := decodeAll(t, p); err == nil || !strings.Contains(err.Error(), "offset") {
					t.Fatalf("cut at %d of %d: %v", cut, len(comp), err)
				}
				img, err := Open(context.Background(), streamOnly{openLocal(t, p)}, Options{})
				if err == nil {
					_, err = io.Copy(io.Discard, img.(Stream))
					img.Close()
				}
				if err == nil || !strings.Contains(err.Error(), "offset") {
					t.Fatalf("cut at %d of %d, as a stream: %v", cut, len(comp), err)
				}
			}
		})
	}
}

func writeTemp(t *testing.T, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "cut.img.zst")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// iotestOneByteish reads in small odd pieces to exercise partial reads.
func iotestOneByteish(r io.Reader) io.Reader { return &smallReader{r: r} }

type smallReader struct {
	r io.Reader
	i int
}

func (s *smallReader) Read(p []byte) (int, error) {
	s.i++
	return s.r.Read(p[:min(len(p), 1+s.i%5000)])
}

func TestFill(t *testing.T) {
	for _, v := range []byte{0, 1, 0xff} {
		for n := range 70 {
			p := make([]byte, n)
			fill(p, v)
			if !bytes.Equal(p, bytes.Repeat([]byte{v}, n)) {
				t.Fatalf("fill(%d, %#x) = %x", n, v, p)
			}
		}
	}
}
