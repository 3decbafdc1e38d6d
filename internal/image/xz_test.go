package image

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/btyproject/bty/internal/imagetest"
)

// xzUtilsFile is a file of xz-utils' test suite (kept with the xz decoder
// fork).
func xzUtilsFile(name string) string {
	return filepath.Join("internal", "xz", "testdata", "xz-utils", name)
}

// xzIndexAt returns the offset and length of the last stream's index.
func xzIndexAt(t *testing.T, b []byte) (int, int) {
	t.Helper()
	foot := b[len(b)-12:]
	if foot[10] != 'Y' || foot[11] != 'Z' {
		t.Fatal("no stream footer at the end")
	}
	size := (int(binary.LittleEndian.Uint32(foot[4:8])) + 1) * 4
	return len(b) - 12 - size, size
}

// fixIndexCRC recomputes the CRC32 of the last stream's index.
func fixIndexCRC(t *testing.T, b []byte) {
	t.Helper()
	off, size := xzIndexAt(t, b)
	binary.LittleEndian.PutUint32(b[off+size-4:], crc32.ChecksumIEEE(b[off:off+size-4]))
}

// TestXzIndexRules: every rule of the .xz format that the per-block
// decoding does not check is checked on the index, so a multi-block file
// decoded in parallel is held to the same rules as a sequential decode
// (xz-utils' bad-2-index-3.xz, a non-zero byte in the index padding, was
// accepted). Each corrupt file is refused when opened, before a byte is
// decoded.
func TestXzIndexRules(t *testing.T) {
	data := bytes.Repeat([]byte("bty flashes images onto disks; "), 40000)
	multi := imagetest.Pipe(t, data, "xz", "-T2", "--block-size=256KiB", "-1", "-c")
	empty := imagetest.Pipe(t, nil, "xz", "-c")
	tests := []struct {
		name string
		file func() []byte
		want string
	}{
		{"xz-utils bad-2-index-3 (index padding)", func() []byte {
			b, err := os.ReadFile(xzUtilsFile("bad-2-index-3.xz"))
			if err != nil {
				t.Fatal(err)
			}
			return b
		}, "non-zero index padding at offset"},
		{"non-zero index padding, CRC32 fixed", func() []byte {
			b := bytes.Clone(multi)
			off, size := xzIndexAt(t, b)
			if b[off+size-5] != 0 {
				t.Fatal("the test file's index has no padding byte: change its input so it has one")
			}
			b[off+size-5] = 1
			fixIndexCRC(t, b)
			return b
		}, "non-zero index padding"},
		{"index CRC32", func() []byte {
			b := bytes.Clone(multi)
			off, size := xzIndexAt(t, b)
			b[off+size-1] ^= 1
			return b
		}, "bad CRC32 of the index"},
		{"more records than the stream holds", func() []byte {
			b := bytes.Clone(multi)
			off, _ := xzIndexAt(t, b)
			b[off+1]++ // the record count (one byte for a few blocks)
			fixIndexCRC(t, b)
			return b
		}, "index record"},
		{"reserved footer flags, CRC32 fixed", func() []byte {
			b := bytes.Clone(multi)
			foot := b[len(b)-12:]
			foot[8] = 1
			binary.LittleEndian.PutUint32(foot[0:4], crc32.ChecksumIEEE(foot[4:10]))
			return b
		}, "reserved stream flag bits"},
		{"footer CRC32", func() []byte {
			b := bytes.Clone(multi)
			b[len(b)-12] ^= 1
			return b
		}, "bad CRC32 of the stream footer"},
		{"empty stream's header CRC32", func() []byte {
			e := bytes.Clone(empty)
			e[8] ^= 1
			return append(e, multi...)
		}, "bad CRC32 of the stream header at offset 0"},
		{"header and footer flags differ", func() []byte {
			e := bytes.Clone(empty)
			// CRC32 check (1) instead of CRC64 (4) in the header only.
			e[7] = 1
			binary.LittleEndian.PutUint32(e[8:12], crc32.ChecksumIEEE(e[6:8]))
			return append(e, multi...)
		}, "different flags"},
		{"index size forged past the bound", func() []byte {
			// The footer's backward size (CRC32 fixed) on a file large
			// enough to hold it, so only the bound stops the allocation.
			b := append(append(bytes.Clone(empty), make([]byte, 90<<20)...), multi...)
			foot := b[len(b)-12:]
			binary.LittleEndian.PutUint32(foot[4:8], 20<<20) // (20 Mi + 1) * 4 bytes
			binary.LittleEndian.PutUint32(foot[0:4], crc32.ChecksumIEEE(foot[4:10]))
			return b
		}, "more than the 64 MiB bty reads"},
		{"stream padding not a multiple of four", func() []byte {
			return append(bytes.Clone(multi), 0, 0)
		}, "truncated"},
		{"garbage after the stream", func() []byte {
			return append(bytes.Clone(multi), []byte("GARBAGE!")...)
		}, "without a stream footer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "bad.img.xz")
			if err := os.WriteFile(p, tt.file(), 0o644); err != nil {
				t.Fatal(err)
			}
			err := decodeAll(t, p)
			if !(errors.Is(err, ErrCorrupt) || errors.Is(err, ErrUnsupported)) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want ErrCorrupt or ErrUnsupported saying %q", err, tt.want)
			}
		})
	}
	// The untouched files decode, in parallel.
	for name, b := range map[string][]byte{"multi": multi, "empty+multi": append(bytes.Clone(empty), multi...)} {
		p := filepath.Join(t.TempDir(), name+".img.xz")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := decodeAll(t, p); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestXzFilterMessages: a valid file using a filter bty lacks is "not
// supported", with what to do, not "corrupt"; the ARM64 filter is
// decoded.
func TestXzFilterMessages(t *testing.T) {
	b, err := os.ReadFile(xzUtilsFile("good-1-delta-lzma2.tiff.xz"))
	if err != nil {
		t.Fatal(err)
	}
	// The block header's first filter: Delta (0x03) -> RISC-V (0x0b),
	// header CRC32 fixed.
	hdrSize := (int(b[12]) + 1) * 4
	b[14] = 0x0b
	binary.LittleEndian.PutUint32(b[12+hdrSize-4:], crc32.ChecksumIEEE(b[12:12+hdrSize-4]))
	p := filepath.Join(t.TempDir(), "riscv.img.xz")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	err = decodeAll(t, p)
	if !errors.Is(err, ErrUnsupported) || errors.Is(err, ErrCorrupt) ||
		!strings.Contains(err.Error(), "RISC-V BCJ filter") || !strings.Contains(err.Error(), "xz -dc") {
		t.Fatalf("error %v, want ErrUnsupported naming the RISC-V filter and saying how to recompress", err)
	}
}
