package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/btyproject/bty/internal/imagetest"
	"github.com/btyproject/bty/internal/source"
)

// sizeUnknown is random access without a known file size, as an HTTP
// server that sends no length would give.
type sizeUnknown struct{ remoteAt }

func (sizeUnknown) Size() int64 { return -1 }

// tailRaw is the raw image the qcow2 tests convert: data to the very end,
// a size that leaves the last 64 KiB cluster partial.
func tailRaw(t *testing.T, dir string) string {
	t.Helper()
	return imagetest.TailImage(t, dir, 4<<20+3*512)
}

func qemuImg(t *testing.T, dir string, args ...string) {
	t.Helper()
	imagetest.Run(t, dir, "qemu-img", args...)
}

// readImage decodes a RandomAccess image the way the flash engine does
// (extent by extent, data read with ReadAt) and returns the sha256 of
// the bytes, or the first error. Every ReadAt must fill its buffer.
func readImage(img RandomAccess) (string, error) {
	h := sha256.New()
	buf := make([]byte, 1<<20)
	zeros := make([]byte, 1<<20)
	for off := int64(0); off < img.Size(); {
		e, err := img.Extent(off, img.Size()-off)
		if err != nil {
			return "", err
		}
		if e.Start != off || e.Length <= 0 {
			return "", fmt.Errorf("bad extent %+v at %d", e, off)
		}
		for done := int64(0); done < e.Length; {
			n := min(int64(len(buf)), e.Length-done)
			if e.Zero {
				h.Write(zeros[:n])
			} else {
				k, err := img.ReadAt(buf[:n], off+done)
				if int64(k) != n || (err != nil && err != io.EOF) {
					return "", fmt.Errorf("ReadAt(%d bytes at %d) = %d: %w", n, off+done, k, err)
				}
				h.Write(buf[:n])
			}
			done += n
		}
		off += e.Length
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func openQcowFile(t *testing.T, src source.Source) (RandomAccess, error) {
	t.Helper()
	img, err := Open(context.Background(), src, Options{})
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { img.Close() })
	return img.(RandomAccess), nil
}

// TestQcow2Variants decodes qcow2 images made with every qemu-img option
// and compares each with qemu-img convert's raw output.
func TestQcow2Variants(t *testing.T) {
	imagetest.RequireTools(t, "qemu-img", "qemu-io")
	dir := t.TempDir()
	raw := tailRaw(t, dir)
	for _, v := range imagetest.Qcow2Variants(t, dir, raw) {
		t.Run(v.Name, func(t *testing.T) {
			img, err := openQcowFile(t, openLocal(t, v.Path))
			if v.Unsupported {
				if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "qemu-img convert") {
					t.Fatalf("error %v, want ErrUnsupported saying what to run", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := imagetest.SHA256(t, imagetest.QemuImgRaw(t, v.Path), 0, -1)
			got, err := readImage(img)
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("sha256 %s, qemu-img convert gives %s", got, want)
			}
		})
	}
}

// TestQcow2TailPastEOF: a cluster of the image's last run of data whose
// host offset lies past the end of the file. It used to flash as zeros
// (or stale data) with exit 0; it is refused when the image is opened,
// and, where the file's size is unknown, when the cluster is read.
func TestQcow2TailPastEOF(t *testing.T) {
	imagetest.RequireTools(t, "qemu-img")
	raw := tailRaw(t, t.TempDir())
	for _, compressed := range []bool{false, true} {
		name := map[bool]string{false: "normal", true: "compressed"}[compressed]
		t.Run(name, func(t *testing.T) {
			corrupt, guest, off := imagetest.Qcow2TailPastEOF(t, t.TempDir(), raw, compressed)
			_, err := openQcowFile(t, openLocal(t, corrupt))
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("open: error %v, want ErrCorrupt", err)
			}
			for _, want := range []string{fmt.Sprintf("file offset %d", off), fmt.Sprintf("guest offset %d", guest), "past the end of the"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}

			// Without the file size the entry cannot be checked when
			// opening: the read must fail instead.
			img, err := openQcowFile(t, sizeUnknown{remoteAt{streamOnly{openLocal(t, corrupt)}}})
			if err != nil {
				t.Fatalf("open without a file size: %v", err)
			}
			_, err = readImage(img)
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), fmt.Sprintf("guest offset %d", guest)) {
				t.Fatalf("read without a file size: error %v, want ErrCorrupt naming guest offset %d", err, guest)
			}
		})
	}
}

// TestQcow2CorruptMetadata corrupts one header field, L1 or L2 entry at a
// time of images made by qemu-img: each is refused when opened, naming
// what is wrong and where.
func TestQcow2CorruptMetadata(t *testing.T) {
	imagetest.RequireTools(t, "qemu-img")
	dir := t.TempDir()
	raw := tailRaw(t, dir)
	convert := func(name string, args ...string) string {
		p := filepath.Join(dir, name+".qcow2")
		qemuImg(t, dir, append(append([]string{"convert", "-O", "qcow2"}, args...), raw, p)...)
		return p
	}
	v3 := convert("v3")
	v2 := convert("v2", "-o", "compat=0.10")
	zlib := convert("zlib", "-c")
	small := convert("small", "-o", "cluster_size=512")
	ext := convert("ext", "-o", "extended_l2=on")
	const textGuest = 1<<20 + 1<<19 // text: compressed by -c
	const zeroGuest = 2<<20 + 1<<19 // zeros: unallocated
	l2 := func(p string, guest int64) (int64, uint64) { return imagetest.Qcow2L2Entry(t, p, guest) }
	l1 := func(p string, i int64) (int64, uint64) { return imagetest.Qcow2L1Entry(t, p, i) }
	be64, be32 := imagetest.Be64, imagetest.Be32

	type patch struct {
		off  int64
		data []byte
	}
	tests := []struct {
		name    string
		image   string
		patches func() []patch
		kind    error
		want    []string
	}{
		{"version 1", v3, func() []patch { return []patch{{4, be32(1)}} }, ErrUnsupported, []string{"qcow version 1", "qemu-img convert"}},
		{"version 4", v3, func() []patch { return []patch{{4, be32(4)}} }, ErrUnsupported, []string{"qcow2 version 4"}},
		{"cluster bits 8", v3, func() []patch { return []patch{{20, be32(8)}} }, ErrCorrupt, []string{"cluster_bits is 8 (header offset 20)"}},
		{"unknown encryption", v3, func() []patch { return []patch{{32, be32(7)}} }, ErrCorrupt, []string{"unknown encryption method 7"}},
		{"header length below 104", v3, func() []patch { return []patch{{100, be32(96)}} }, ErrCorrupt, []string{"header_length 96"}},
		{"header length not a multiple of 8", v3, func() []patch { return []patch{{100, be32(108)}} }, ErrCorrupt, []string{"header_length 108", "multiple of 8"}},
		{"refcount order 7", v3, func() []patch { return []patch{{96, be32(7)}} }, ErrCorrupt, []string{"refcount_order 7"}},
		{"no refcount table", v3, func() []patch { return []patch{{56, be32(0)}} }, ErrCorrupt, []string{"no refcount table"}},
		{"refcount table unaligned", v3, func() []patch { return []patch{{48, be64(65536 + 512)}} }, ErrCorrupt, []string{"refcount table", "not aligned"}},
		{"refcount table too large", v3, func() []patch { return []patch{{56, be32(1 << 20)}} }, ErrCorrupt, []string{"refcount table has 1048576 clusters"}},
		{"L1 table unaligned", v3, func() []patch { return []patch{{40, be64(3*65536 + 512)}} }, ErrCorrupt, []string{"L1 table (l1_table_offset 197120", "not aligned"}},
		{"L1 table too small", v3, func() []patch { return []patch{{36, be32(0)}} }, ErrCorrupt, []string{"L1 table has 0 entries"}},
		{"too many snapshots", v3, func() []patch { return []patch{{60, be32(70000)}} }, ErrCorrupt, []string{"70000 snapshots"}},
		{"snapshot table past the end", v3, func() []patch { return []patch{{60, be32(1)}, {64, be64(1 << 30)}} }, ErrCorrupt, []string{"snapshot table", "past the end"}},
		{"backing name too long", v3, func() []patch { return []patch{{8, be64(512)}, {16, be32(2000)}} }, ErrCorrupt, []string{"backing file name of 2000 bytes"}},
		{"header extension too large", v3, func() []patch { return []patch{{112, append(be32(0x12345678), be32(1<<20)...)}} }, ErrCorrupt, []string{"header extension 0x12345678 at offset 112"}},
		{"compression bit without zstd", v3, func() []patch { return []patch{{79, []byte{8}}} }, ErrCorrupt, []string{"compression type feature bit is set"}},
		{"compression type 2", v3, func() []patch { return []patch{{79, []byte{8}}, {104, []byte{2}}} }, ErrUnsupported, []string{"compression type 2"}},
		{"unknown incompatible feature", v3, func() []patch { return []patch{{79, []byte{32}}} }, ErrUnsupported, []string{"incompatible feature bit 5"}},
		{"marked corrupt", v3, func() []patch { return []patch{{79, []byte{2}}} }, ErrCorrupt, []string{"qemu marked the image corrupt"}},
		{"L1 entry unaligned", v3, func() []patch {
			off, e := l1(v3, 0)
			return []patch{{off, be64(e + 512)}}
		}, ErrCorrupt, []string{"L1 entry 0 (file offset", "not aligned to the 65536-byte cluster size"}},
		{"L1 entry reserved bits", v3, func() []patch {
			off, e := l1(v3, 0)
			return []patch{{off, be64(e | 1)}}
		}, ErrCorrupt, []string{"L1 entry 0 (file offset", "reserved bits"}},
		{"L1 entries share an L2 table", small, func() []patch {
			off, e := l1(small, 0)
			return []patch{{off + 8, be64(e)}}
		}, ErrCorrupt, []string{"L1 entries 0 and 1", "both point to the L2 table"}},
		{"L2 entry unaligned", v3, func() []patch {
			off, e := l2(v3, 0)
			return []patch{{off, be64(e + 512)}}
		}, ErrCorrupt, []string{"the L2 entry at file offset", "guest offset 0", "not aligned to the 65536-byte cluster size"}},
		{"L2 entry unaligned near the end", v3, func() []patch {
			off, e := l2(v3, 4<<20-64<<10)
			return []patch{{off, be64(e + 4096)}}
		}, ErrCorrupt, []string{fmt.Sprintf("guest offset %d", 4<<20-64<<10), "not aligned"}},
		{"L2 entry reserved bits", v3, func() []patch {
			off, e := l2(v3, 0)
			return []patch{{off, be64(e | 2)}}
		}, ErrCorrupt, []string{"the L2 entry at file offset", "reserved bits"}},
		{"zero flag in version 2", v2, func() []patch {
			off, e := l2(v2, 0)
			return []patch{{off, be64(e | 1)}}
		}, ErrCorrupt, []string{"zero flag (bit 0) set, which version 2 images do not have"}},
		{"compressed cluster marked copied", zlib, func() []patch {
			off, e := l2(zlib, textGuest)
			return []patch{{off, be64(e | 1<<63)}}
		}, ErrCorrupt, []string{fmt.Sprintf("guest offset %d", textGuest), "copied (bit 63)"}},
		{"compressed data in the header", zlib, func() []patch {
			off, e := l2(zlib, textGuest)
			return []patch{{off, be64(e&^(1<<54-1) | 100)}}
		}, ErrCorrupt, []string{"compressed data at offset 100, inside the header cluster"}},
		{"subclusters both allocated and zero", ext, func() []patch {
			off, _ := l2(ext, 0)
			return []patch{{off + 8, be64(1<<32 | 1)}}
		}, ErrCorrupt, []string{"both allocated and zero"}},
		{"subclusters allocated without a host offset", ext, func() []patch {
			off, _ := l2(ext, zeroGuest)
			return []patch{{off, be64(0)}, {off + 8, be64(1)}}
		}, ErrCorrupt, []string{fmt.Sprintf("guest offset %d", zeroGuest), "without a host offset"}},
		{"extended entry with bit 0", ext, func() []patch {
			off, e := l2(ext, 0)
			return []patch{{off, be64(e | 1)}}
		}, ErrCorrupt, []string{"bit 0 set, which is always 0 with extended L2 entries"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := os.ReadFile(tt.image)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range tt.patches() {
				copy(b[p.off:], p.data)
			}
			p := filepath.Join(t.TempDir(), filepath.Base(tt.image))
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
			img, err := openQcowFile(t, openLocal(t, p))
			if err == nil {
				_, err = readImage(img)
				t.Fatalf("opened without error (reading it: %v)", err)
			}
			if !errors.Is(err, tt.kind) {
				t.Errorf("error %q is not %v", err, tt.kind)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}
