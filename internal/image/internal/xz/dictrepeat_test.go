package xz

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// dictRepeatBytewise is upstream's byte loop, the reference for the
// copy-based dictRepeat of this fork.
func dictRepeatBytewise(dict *dictionary, len *uint32, dist uint32) bool {
	if dist >= dict.full || dist >= dict.size {
		return false
	}
	left := min(dict.limit-dict.pos, *len)
	*len -= left
	back := dict.pos - dist - 1
	if dist >= dict.pos {
		back += dict.end
	}
	for {
		dict.buf[dict.pos] = dict.buf[back]
		dict.pos++
		back++
		if back == dict.end {
			back = 0
		}
		left--
		if left == 0 {
			break
		}
	}
	if dict.full < dict.pos {
		dict.full = dict.pos
	}
	return true
}

func TestDictRepeatMatchesByteLoop(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 200000 {
		size := uint32(1 + r.IntN(600))
		if i%3 == 0 {
			size = uint32(1 + r.IntN(8))
		}
		buf := make([]byte, size)
		for j := range buf {
			buf[j] = byte(r.IntN(256))
		}
		pos := uint32(r.IntN(int(size)))
		full := size
		if r.IntN(2) == 0 {
			full = pos
		}
		limit := pos + uint32(r.IntN(int(size-pos)+1))
		if limit == pos {
			continue // the decoder never calls it with no room
		}
		d := dictionary{buf: buf, pos: pos, full: full, limit: limit, end: size, size: size, start: pos}
		ref := d
		ref.buf = bytes.Clone(buf)
		length := uint32(2 + r.IntN(300))
		dist := uint32(r.IntN(int(size) + 2))
		l1, l2 := length, length
		ok1 := dictRepeat(&d, &l1, dist)
		ok2 := dictRepeatBytewise(&ref, &l2, dist)
		if ok1 != ok2 || l1 != l2 || d.pos != ref.pos || d.full != ref.full || !bytes.Equal(d.buf, ref.buf) {
			t.Fatalf("size %d pos %d full %d limit %d len %d dist %d: got ok=%v len=%d pos=%d full=%d, want ok=%v len=%d pos=%d full=%d (bufs equal %v)",
				size, pos, full, limit, length, dist, ok1, l1, d.pos, d.full, ok2, l2, ref.pos, ref.full, bytes.Equal(d.buf, ref.buf))
		}
	}
}
