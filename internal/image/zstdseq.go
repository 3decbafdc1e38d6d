package image

import (
	"encoding/binary"
	"errors"
	"math/bits"
	"sync"
)

// zstdSeqCheck follows the sequences of a zstd frame's compressed blocks
// (RFC 8878, 3.1.1.3.2) far enough to know every match offset, and fails
// on the one corruption klauspost/compress/zstd lets through: a repeat
// offset that resolves to 0 (literal length 0, offset value 3, repeat
// offset 1 equal to 1). Its decoder quietly uses offset 1 instead, as
// the reference decoder did before zstd 1.5.6, which now refuses such a
// frame (golden-decompression-errors/off0.bin.zst); so does bty.
//
// Only frames without a content checksum need it: where the frame has
// one, the decoder checks it over the output, and a frame that decodes
// to other bytes than were compressed fails that check. Anything this
// checker does not understand makes it stop following the frame (the
// decoder then judges the frame alone): it finds offset 0, nothing else.
//
// Hand-written because the decoder has no hook for it (see
// docs/upstream-zstd-zero-offset.md for the report to its maintainers).
type zstdSeqCheck struct {
	rep    [3]uint32
	tables [3]*fseTable // last LL, OF, ML tables, for the repeat mode
	off    bool         // gave up on this frame
}

// errZstdZeroOffset is the corruption zstdSeqCheck finds.
var errZstdZeroOffset = errors.New("a sequence repeats offset 0 (literal length 0, offset value 3, repeat offset 1 of 1)")

// errZstdSeqGiveUp stops following a frame.
var errZstdSeqGiveUp = errors.New("not followed")

// reset starts a frame.
func (c *zstdSeqCheck) reset() {
	c.rep = [3]uint32{1, 4, 8}
	c.tables = [3]*fseTable{}
	c.off = false
}

// block checks one compressed block's content. It returns
// errZstdZeroOffset or nil; any other trouble turns the check off for
// the rest of the frame.
func (c *zstdSeqCheck) block(b []byte) error {
	if c.off {
		return nil
	}
	err := c.sequences(b)
	if err == errZstdZeroOffset {
		return err
	}
	if err != nil {
		c.off = true
	}
	return nil
}

// Symbol tables of the sequence codes (RFC 8878, 3.1.1.3.2.1.1).
var (
	llBase = [36]uint32{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
		16, 18, 20, 22, 24, 28, 32, 40, 48, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536}
	llBits = [36]uint8{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
		1, 1, 1, 1, 2, 2, 3, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	mlBits = [53]uint8{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
		1, 1, 1, 1, 2, 2, 3, 3, 4, 4, 5, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	// Default distributions (3.1.1.3.2.2).
	llDefault = []int16{4, 3, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 3, 2, 1, 1, 1, 1, 1, -1, -1, -1, -1}
	ofDefault = []int16{1, 1, 1, 1, 1, 1, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, -1, -1, -1, -1, -1}
	mlDefault = []int16{1, 4, 3, 2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
		1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, -1, -1, -1, -1, -1, -1, -1}
	fseDefaults [3]*fseTable
)

// The three sequence code kinds, in the order their modes and tables come.
const (
	seqLL = iota
	seqOF
	seqML
)

var seqMaxSymbol = [3]int{35, 31, 52}
var seqMaxLog = [3]int{9, 8, 9}

func init() {
	for k, d := range [3][]int16{llDefault, ofDefault, mlDefault} {
		t, ok := buildFSE(d, map[int]uint{seqLL: 6, seqOF: 5, seqML: 6}[k])
		if !ok {
			panic("zstd default distribution")
		}
		fseDefaults[k] = t
	}
}

// fseTable is an FSE decoding table: per state, the symbol, the bits to
// read and the base of the next state.
type fseTable struct {
	log uint
	e   []fseEntry
}

type fseEntry struct {
	symbol, nbBits uint8
	base           uint16
}

// buildFSE builds the decoding table of a normalized distribution
// (RFC 8878, 4.1.1).
func buildFSE(norm []int16, log uint) (*fseTable, bool) {
	size := 1 << log
	t := &fseTable{log: log, e: make([]fseEntry, size)}
	high := size - 1
	next := make([]int, len(norm))
	for s, n := range norm {
		if n == -1 {
			t.e[high].symbol = uint8(s)
			high--
			next[s] = 1
		} else {
			next[s] = int(n)
		}
	}
	pos, step, mask := 0, size>>1+size>>3+3, size-1
	for s, n := range norm {
		for range max(int(n), 0) {
			t.e[pos].symbol = uint8(s)
			for {
				pos = (pos + step) & mask
				if pos <= high {
					break
				}
			}
		}
	}
	if pos != 0 {
		return nil, false
	}
	for u := range size {
		s := t.e[u].symbol
		n := next[s]
		next[s]++
		nb := int(log) - (bits.Len(uint(n)) - 1)
		if nb < 0 {
			return nil, false
		}
		t.e[u].nbBits = uint8(nb)
		t.e[u].base = uint16(n<<nb - size)
	}
	return t, true
}

// readFSE reads an FSE table description (4.1.1) at the start of b and
// returns the table and the bytes it took.
func readFSE(b []byte, maxSymbol, maxLog int) (*fseTable, int, bool) {
	pos := 0 // bit position, little-endian
	bitsLeft := len(b) * 8
	read := func(n int) (uint32, bool) {
		if pos+n > bitsLeft {
			return 0, false
		}
		v := uint32(0)
		for i := range n {
			p := pos + i
			v |= uint32(b[p>>3]>>(p&7)&1) << i
		}
		pos += n
		return v, true
	}
	peek := func(n int) uint32 {
		v := uint32(0)
		for i := range n {
			p := pos + i
			if p < bitsLeft {
				v |= uint32(b[p>>3]>>(p&7)&1) << i
			}
		}
		return v
	}
	al, ok := read(4)
	if !ok {
		return nil, 0, false
	}
	log := int(al) + 5
	if log > maxLog {
		return nil, 0, false
	}
	norm := make([]int16, 0, maxSymbol+1)
	remaining := 1<<log + 1
	threshold := 1 << log
	nbBits := log + 1
	for remaining > 1 {
		if len(norm) > maxSymbol {
			return nil, 0, false
		}
		maxv := 2*threshold - 1 - remaining
		var count int
		if low := int(peek(nbBits - 1)); low < maxv {
			count = low
			pos += nbBits - 1
		} else {
			count = int(peek(nbBits))
			if count >= threshold {
				count -= maxv
			}
			pos += nbBits
		}
		if pos > bitsLeft {
			return nil, 0, false
		}
		count--
		if count == -1 {
			remaining--
		} else {
			remaining -= count
		}
		norm = append(norm, int16(count))
		if count == 0 {
			for {
				rep, ok := read(2)
				if !ok {
					return nil, 0, false
				}
				for range rep {
					norm = append(norm, 0)
				}
				if rep != 3 {
					break
				}
			}
			if len(norm) > maxSymbol+1 {
				return nil, 0, false
			}
		}
		for remaining < threshold && remaining > 1 {
			nbBits--
			threshold >>= 1
		}
	}
	if remaining != 1 || len(norm) > maxSymbol+1 {
		return nil, 0, false
	}
	t, ok := buildFSE(norm, uint(log))
	return t, (pos + 7) / 8, ok
}

// backBits reads a bitstream backwards from its end (RFC 8878, 4.1):
// value holds the next have bits, the next to read the highest; bytes
// are loaded from b[idx-1] down.
type backBits struct {
	b     []byte
	idx   int
	value uint64
	have  uint
}

func newBackBits(b []byte) (backBits, bool) {
	if len(b) == 0 || b[len(b)-1] == 0 {
		return backBits{}, false
	}
	r := backBits{b: b, idx: len(b) - 1, value: uint64(b[len(b)-1]), have: uint(bits.Len8(b[len(b)-1]) - 1)}
	r.value &= 1<<r.have - 1 // drop the end marker
	return r, true
}

// read returns the next n bits (n <= 56), the first read the most
// significant; false when fewer are left.
func (r *backBits) read(n uint) (uint64, bool) {
	if r.have < n {
		r.fill()
		if r.have < n {
			return 0, false
		}
	}
	r.have -= n
	return r.value >> r.have & (1<<n - 1), true
}

// fill loads as many whole bytes as value has room for.
func (r *backBits) fill() {
	k := int(64-r.have) / 8
	if r.idx >= 8 {
		w := binary.LittleEndian.Uint64(r.b[r.idx-8:]) >> (64 - 8*k)
		r.value = r.value<<(8*k) | w
		r.idx -= k
		r.have += uint(8 * k)
		return
	}
	for ; k > 0 && r.idx > 0; k-- {
		r.idx--
		r.value = r.value<<8 | uint64(r.b[r.idx])
		r.have += 8
	}
}

// done reports whether every bit was read.
func (r *backBits) done() bool { return r.have == 0 && r.idx == 0 }

// sequences follows one block: literals section skipped, sequences
// section decoded.
func (c *zstdSeqCheck) sequences(b []byte) error {
	give := errZstdSeqGiveUp
	// Literals section header (3.1.1.3.1.1): skip the literals.
	if len(b) < 1 {
		return give
	}
	typ, sf := b[0]&3, (b[0]>>2)&3
	var hdr, size int
	switch typ {
	case 0, 1: // raw, RLE
		switch sf {
		case 0, 2:
			hdr, size = 1, int(b[0]>>3)
		case 1:
			if len(b) < 2 {
				return give
			}
			hdr, size = 2, int(b[0]>>4)|int(b[1])<<4
		case 3:
			if len(b) < 3 {
				return give
			}
			hdr, size = 3, int(b[0]>>4)|int(b[1])<<4|int(b[2])<<12
		}
		if typ == 1 {
			size = 1
		}
	default: // compressed, treeless
		hdr = []int{3, 3, 4, 5}[sf]
		if len(b) < hdr {
			return give
		}
		v := uint64(0)
		for i := hdr - 1; i >= 0; i-- {
			v = v<<8 | uint64(b[i])
		}
		v >>= 4
		w := []uint{10, 10, 14, 18}[sf]
		size = int(v >> w & (1<<w - 1)) // the compressed size follows the regenerated one
	}
	p := hdr + size
	if p > len(b) {
		return give
	}
	// Sequences section header (3.1.1.3.2.1).
	if p >= len(b) {
		return give
	}
	nbSeq := int(b[p])
	switch {
	case nbSeq == 0:
		return nil
	case nbSeq < 128:
		p++
	case nbSeq < 255:
		if p+2 > len(b) {
			return give
		}
		nbSeq = (nbSeq-128)<<8 + int(b[p+1])
		p += 2
	default:
		if p+3 > len(b) {
			return give
		}
		nbSeq = int(b[p+1]) + int(b[p+2])<<8 + 0x7f00
		p += 3
	}
	if p >= len(b) {
		return give
	}
	modes := b[p]
	p++
	if modes&3 != 0 {
		return give
	}
	var tabs [3]*fseTable
	for k := range 3 {
		switch mode := modes >> (6 - 2*k) & 3; mode {
		case 0:
			tabs[k] = fseDefaults[k]
		case 1: // RLE: one symbol
			if p >= len(b) || int(b[p]) > seqMaxSymbol[k] {
				return give
			}
			tabs[k] = &fseTable{e: []fseEntry{{symbol: b[p]}}}
			p++
		case 2:
			t, n, ok := readFSE(b[p:], seqMaxSymbol[k], seqMaxLog[k])
			if !ok {
				return give
			}
			tabs[k] = t
			p += n
		case 3:
			if c.tables[k] == nil {
				return give
			}
			tabs[k] = c.tables[k]
		}
	}
	c.tables = tabs
	r, ok := newBackBits(b[p:])
	if !ok {
		return give
	}
	llT, ofT, mlT := tabs[seqLL], tabs[seqOF], tabs[seqML]
	stLL, ok1 := r.read(llT.log)
	stOF, ok2 := r.read(ofT.log)
	stML, ok3 := r.read(mlT.log)
	if !ok1 || !ok2 || !ok3 {
		return give
	}
	rep := c.rep
	for i := range nbSeq {
		lle, ofe, mle := llT.e[stLL], ofT.e[stOF], mlT.e[stML]
		of, ml, ll := uint(ofe.symbol), mle.symbol, lle.symbol
		if of > 31 || int(ml) >= len(mlBits) || int(ll) >= len(llBits) {
			return give
		}
		// The extra bits: offset, match length, literal length (at
		// most 31+16+16 bits: one read, split).
		mb, lb := uint(mlBits[ml]), uint(llBits[ll])
		all, ok := r.read(of + mb + lb)
		if !ok {
			return give
		}
		offValue := uint32(1)<<of + uint32(all>>(mb+lb))
		// Repeat offsets (3.1.1.5).
		if offValue > 3 {
			rep = [3]uint32{offValue - 3, rep[0], rep[1]}
		} else {
			idx := offValue - 1
			if llBase[ll]+uint32(all&(1<<lb-1)) == 0 {
				idx++
			}
			switch idx {
			case 0:
			case 1:
				rep = [3]uint32{rep[1], rep[0], rep[2]}
			case 2:
				rep = [3]uint32{rep[2], rep[0], rep[1]}
			default:
				if rep[0] == 1 {
					return errZstdZeroOffset
				}
				rep = [3]uint32{rep[0] - 1, rep[0], rep[1]}
			}
		}
		if i == nbSeq-1 {
			break
		}
		// The next states: literal length, match length, offset (at
		// most 9+9+8 bits: one read, split).
		nl, nm, no := uint(lle.nbBits), uint(mle.nbBits), uint(ofe.nbBits)
		upd, ok := r.read(nl + nm + no)
		if !ok {
			return give
		}
		stLL = uint64(lle.base) + upd>>(nm+no)
		stML = uint64(mle.base) + upd>>no&(1<<nm-1)
		stOF = uint64(ofe.base) + upd&(1<<no-1)
	}
	c.rep = rep
	if !r.done() {
		return give
	}
	return nil
}

// zstdCheckFrame runs zstdSeqCheck over the one zstd frame at the start
// of b (a qcow2 cluster: qemu writes them without a content checksum).
// It returns errZstdZeroOffset or nil; what it cannot follow is left to
// the decoder.
func zstdCheckFrame(b []byte) error {
	hlen, _, err := zstdFrameHeader(b)
	if err != nil || b[4]&4 != 0 {
		return nil
	}
	var c zstdSeqCheck
	c.reset()
	for p := hlen; p+3 <= len(b); {
		v := uint32(b[p]) | uint32(b[p+1])<<8 | uint32(b[p+2])<<16
		last, typ, size := v&1 != 0, (v>>1)&3, int(v>>3)
		p += 3
		switch typ {
		case 1:
			size = 1
		case 3:
			return nil
		}
		if p+size > len(b) {
			return nil
		}
		if typ == 2 {
			if err := c.block(b[p : p+size]); err != nil {
				return err
			}
		}
		p += size
		if last {
			break
		}
	}
	return nil
}

// zstdSeqWorker runs a zstdSeqCheck on its own goroutine, fed the
// compressed blocks of checksum-less frames in order: the decoder's
// pipeline leaves a core idle for it (a 1.5 GB checksum-less image
// flashed in 3.0 s with the check inline, 2.2 s without it). What it
// finds is seen by the next Read, and at the latest when the stream
// ends (finish), before the flash can succeed.
type zstdSeqWorker struct {
	ch   chan zstdSeqJob
	free chan []byte
	done chan struct{}
	once sync.Once

	mu  sync.Mutex
	err error
	off int64 // compressed offset of the block err is about
}

type zstdSeqJob struct {
	reset bool
	block []byte
	off   int64
}

func newZstdSeqWorker() *zstdSeqWorker {
	w := &zstdSeqWorker{ch: make(chan zstdSeqJob, 8), free: make(chan []byte, 10), done: make(chan struct{})}
	go w.run()
	return w
}

func (w *zstdSeqWorker) run() {
	defer close(w.done)
	var c zstdSeqCheck
	for j := range w.ch {
		switch {
		case w.failed() != nil:
		case j.reset:
			c.reset()
		default:
			if err := c.block(j.block); err != nil {
				w.mu.Lock()
				w.err, w.off = err, j.off
				w.mu.Unlock()
			}
		}
		if j.block != nil {
			select {
			case w.free <- j.block:
			default:
			}
		}
	}
}

// frame starts a new frame.
func (w *zstdSeqWorker) frame() { w.ch <- zstdSeqJob{reset: true} }

// block queues a copy of one compressed block found at compressed offset off.
func (w *zstdSeqWorker) block(b []byte, off int64) {
	var buf []byte
	select {
	case buf = <-w.free:
	default:
	}
	w.ch <- zstdSeqJob{block: append(buf[:0], b...), off: off}
}

// failed returns what the check found so far (nil for nothing).
func (w *zstdSeqWorker) failed() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// finish waits for the queued blocks and returns the compressed offset
// of the block the check found fault with, and what it found. It stops
// the goroutine; later calls return the same.
func (w *zstdSeqWorker) finish() (int64, error) {
	w.once.Do(func() { close(w.ch) })
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.off, w.err
}
