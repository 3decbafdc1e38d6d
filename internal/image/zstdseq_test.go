package image

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// testSeq is one zstd sequence by its codes and extra bits.
type testSeq struct {
	ll, of, ml    uint8  // codes
	llX, ofX, mlX uint32 // extra bits
}

// statePath finds states of the predefined table t whose symbols are
// codes, each reachable from the one before; ok is false when there is
// no such path.
func statePath(t *fseTable, codes []uint8) ([]uint32, bool) {
	path := make([]uint32, len(codes))
	var walk func(i int, lo, n uint32) bool
	walk = func(i int, lo, n uint32) bool {
		if i == len(codes) {
			return true
		}
		for s := lo; s < lo+n; s++ {
			if t.e[s].symbol != codes[i] {
				continue
			}
			path[i] = s
			if walk(i+1, uint32(t.e[s].base), 1<<t.e[s].nbBits) {
				return true
			}
		}
		return false
	}
	return path, walk(0, 0, 1<<t.log)
}

// seqFrame makes a zstd frame (no checksum, no content size) with one
// compressed block: lits as raw literals, seqs coded with the predefined
// tables. The bitstream is built from the decoder's side: states chosen
// so each decodes to the wanted code, fields laid out in the order the
// decoder reads them (RFC 8878, 3.1.1.3.2).
func seqFrame(t *testing.T, lits []byte, seqs []testSeq) []byte {
	t.Helper()
	codes := func(f func(testSeq) uint8) []uint8 {
		var c []uint8
		for _, s := range seqs {
			c = append(c, f(s))
		}
		return c
	}
	llP, ok1 := statePath(fseDefaults[seqLL], codes(func(s testSeq) uint8 { return s.ll }))
	ofP, ok2 := statePath(fseDefaults[seqOF], codes(func(s testSeq) uint8 { return s.of }))
	mlP, ok3 := statePath(fseDefaults[seqML], codes(func(s testSeq) uint8 { return s.ml }))
	if !ok1 || !ok2 || !ok3 {
		t.Fatal("no state path for these codes in the predefined tables")
	}
	// Fields in read order; the first read is the most significant.
	type field struct {
		v uint32
		n uint
	}
	var fields []field
	fields = append(fields, field{llP[0], 6}, field{ofP[0], 5}, field{mlP[0], 6})
	for i, s := range seqs {
		fields = append(fields, field{s.ofX, uint(s.of)}, field{s.mlX, uint(mlBits[s.ml])}, field{s.llX, uint(llBits[s.ll])})
		if i < len(seqs)-1 {
			for _, st := range []struct {
				t    *fseTable
				from uint32
				to   uint32
			}{{fseDefaults[seqLL], llP[i], llP[i+1]}, {fseDefaults[seqML], mlP[i], mlP[i+1]}, {fseDefaults[seqOF], ofP[i], ofP[i+1]}} {
				e := st.t.e[st.from]
				fields = append(fields, field{st.to - uint32(e.base), uint(e.nbBits)})
			}
		}
	}
	x := big.NewInt(1) // the end marker, above every field
	for _, f := range fields {
		x.Lsh(x, f.n)
		x.Or(x, big.NewInt(int64(f.v)))
	}
	be := x.Bytes()
	stream := make([]byte, len(be))
	for i := range be {
		stream[i] = be[len(be)-1-i]
	}
	block := []byte{byte(len(lits) << 3)} // raw literals (type 0), 1-byte header (< 32)
	block = append(block, lits...)
	block = append(block, byte(len(seqs)), 0x00) // predefined tables
	block = append(block, stream...)
	hdr := uint32(len(block))<<3 | 2<<1 | 1 // compressed, last
	frame := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x00}
	frame = append(frame, byte(hdr), byte(hdr>>8), byte(hdr>>16))
	return append(frame, block...)
}

// off0Frames returns a frame whose second sequence repeats offset 0 (one
// literal, a match at offset 1, then literal length 0 with offset value
// 3 while repeat offset 1 is 1), and the same frame with a valid second
// sequence (offset value 4: offset 1).
func off0Frames(t *testing.T) (bad, good []byte) {
	first := testSeq{ll: 1, of: 2, ml: 0}        // 1 literal, offset value 4 (offset 1), match 3
	zero := testSeq{ll: 0, of: 1, ofX: 1, ml: 0} // offset value 3 with literal length 0: repeat 1 - 1 = 0
	valid := testSeq{ll: 0, of: 2, ml: 0}        // offset value 4: offset 1
	bad = seqFrame(t, []byte{0}, []testSeq{first, zero})
	good = seqFrame(t, []byte{0}, []testSeq{first, valid})
	return bad, good
}

func TestZstdSeqFrameBuilder(t *testing.T) {
	// The builder's frames are real zstd: the valid one decodes to the
	// literal and two 3-byte matches.
	_, good := off0Frames(t)
	d, _ := zstd.NewReader(nil)
	defer d.Close()
	out, err := d.DecodeAll(good, nil)
	if err != nil || !bytes.Equal(out, make([]byte, 7)) {
		t.Fatalf("DecodeAll = %x, %v; want 7 zero bytes", out, err)
	}
}

// TestZstdZeroOffset: a frame without a checksum whose sequence repeats
// offset 0. klauspost/compress decodes it (as offset 1, as zstd before
// 1.5.6 did); bty refuses it, locally and as a stream, and still
// decodes the valid variant to what the decoder gives.
func TestZstdZeroOffset(t *testing.T) {
	bad, good := off0Frames(t)
	d, _ := zstd.NewReader(nil)
	defer d.Close()
	if _, err := d.DecodeAll(bad, nil); err == nil {
		t.Log("klauspost/compress decodes the offset-0 frame without error (the upstream behaviour bty works around)")
	} else {
		t.Logf("klauspost/compress now refuses the offset-0 frame: %v", err)
	}
	local, stream := decodeBoth(t, "off0.img.zst", bad)
	for _, err := range []error{local, stream} {
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "repeats offset 0") {
			t.Errorf("error %v, want ErrCorrupt about offset 0", err)
		}
	}
	if local, stream := decodeBoth(t, "good.img.zst", good); local != nil || stream != nil {
		t.Errorf("the valid frame: %v, %v", local, stream)
	}
	// A repeat of offset 0 in a later frame, after a good one, and in a
	// qcow2-like single frame check.
	two := append(append([]byte{}, good...), bad...)
	if local, _ := decodeBoth(t, "two.img.zst", two); !errors.Is(local, ErrCorrupt) {
		t.Errorf("second frame: %v, want ErrCorrupt", local)
	}
	if err := zstdCheckFrame(bad); err != errZstdZeroOffset {
		t.Errorf("zstdCheckFrame(bad) = %v", err)
	}
	if err := zstdCheckFrame(good); err != nil {
		t.Errorf("zstdCheckFrame(good) = %v", err)
	}
	// With a content checksum the check is left to the decoder's XXH64.
	withSum := bytes.Clone(bad)
	withSum[4] |= 4
	withSum = append(withSum, 0, 0, 0, 0)
	p := filepath.Join(t.TempDir(), "sum.img.zst")
	os.WriteFile(p, withSum, 0o644)
	img, err := Open(context.Background(), streamOnly{openLocal(t, p)}, Options{})
	if err == nil {
		_, err = io.Copy(io.Discard, img.(Stream))
		img.Close()
	}
	if !errors.Is(err, ErrCorrupt) {
		t.Errorf("with a (wrong) checksum: %v, want ErrCorrupt from the checksum", err)
	}
}
