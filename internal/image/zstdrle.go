package image

import (
	"bufio"
	"encoding/binary"
	"math"
)

// zstdRLEAsRaw sits between the input buffer and the zstd decoder and
// rewrites every RLE block (one byte repeated, how zstd codes the long
// zero runs of a disk image) as the equivalent raw block. The decoded
// bytes, the frame sizes and the content checksum stay exactly the same;
// only the work moves: klauspost/compress fills an RLE block byte by byte
// on the goroutine that executes sequences, the pipeline's bottleneck,
// while here the block is written with clear() (memclr) on the goroutine
// that reads input. On the 3 GiB bench image (two thirds zeros) that loop
// was a third of the bottleneck goroutine's time.
//
// Anything it does not understand (a short header, a reserved block
// type, an unknown magic) makes it pass the rest through unchanged, so
// the decoder reports the error as before. Hand-written because the
// decoder has no option for this.
type zstdRLEAsRaw struct {
	br *bufio.Reader

	pend     [3]byte // a rewritten block header still to hand out
	pendOff  int     // next byte of pend; len(pend) when none
	fillLeft int     // bytes of the RLE value still to hand out
	fillByte byte
	copyLeft int64 // bytes to pass through unchanged
	state    int
	checksum bool // the current frame ends with a content checksum
	// bigWindow is the window of the last frame header that declared one
	// larger than zstdMaxWindow (0 if none did): the decoder refuses
	// such a frame, and the error then says why.
	bigWindow uint64
	// seq follows the sequences of frames without a content checksum
	// (checkSeq), for the corruption the decoder lets through; started
	// with the first such frame.
	seq      *zstdSeqWorker
	checkSeq bool
	// err is the corruption seq found, with blockOff the compressed
	// offset of its block (read counts the bytes taken from br).
	err      error
	blockOff int64
	read     int64
}

// finish waits for the sequence check and returns what it found (and
// keeps it in err and blockOff); nil without checksum-less frames.
func (z *zstdRLEAsRaw) finish() error {
	if z.seq != nil && z.err == nil {
		z.blockOff, z.err = z.seq.finish()
	}
	return z.err
}

const (
	zrFrame    = iota // at a frame (or skippable frame) start
	zrBlock           // at a block header
	zrChecksum        // at a frame's content checksum
	zrPass            // pass everything through
)

// zstdMaxBlock is the largest block zstd allows (and the decoder takes).
const zstdMaxBlock = 128 << 10

func newZstdRLEAsRaw(br *bufio.Reader) *zstdRLEAsRaw {
	return &zstdRLEAsRaw{br: br, pendOff: 3}
}

func (z *zstdRLEAsRaw) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		switch {
		case z.pendOff < len(z.pend):
			k := copy(p[n:], z.pend[z.pendOff:])
			z.pendOff += k
			n += k
		case z.fillLeft > 0:
			k := min(z.fillLeft, len(p)-n)
			fill(p[n:n+k], z.fillByte)
			z.fillLeft -= k
			n += k
		case z.copyLeft > 0:
			k, err := z.br.Read(p[n : n+int(min(int64(len(p)-n), z.copyLeft))])
			z.copyLeft -= int64(k)
			z.read += int64(k)
			n += k
			// One read from the source per call: return what there
			// is rather than block for more.
			return n, err
		default:
			if !z.advance() {
				if n > 0 {
					return n, nil
				}
				// A clean end between frames, or the source's error.
				_, err := z.br.Peek(1)
				return 0, err
			}
			if z.seq != nil && z.err == nil {
				if err := z.seq.failed(); err != nil {
					z.finish()
				}
			}
			if z.err != nil {
				return n, z.err
			}
		}
	}
	return n, nil
}

// advance looks at the next header and sets up what to hand out for it;
// false at the end of the input between frames.
func (z *zstdRLEAsRaw) advance() bool {
	switch z.state {
	case zrFrame:
		b, _ := z.br.Peek(18)
		if len(b) == 0 {
			return false
		}
		if len(b) < 8 {
			return z.pass()
		}
		magic := binary.LittleEndian.Uint32(b)
		if magic&0xfffffff0 == 0x184d2a50 { // skippable frame
			z.copyLeft = 8 + int64(binary.LittleEndian.Uint32(b[4:8]))
			return true
		}
		hlen, content, err := zstdFrameHeader(b)
		if err != nil {
			return z.pass()
		}
		if w := zstdWindow(b, content); w > zstdMaxWindow {
			z.bigWindow = w
		}
		z.checksum = b[4]&4 != 0
		z.checkSeq = !z.checksum
		if z.checkSeq {
			if z.seq == nil {
				z.seq = newZstdSeqWorker()
			}
			z.seq.frame()
		}
		z.copyLeft = int64(hlen)
		z.state = zrBlock
		return true
	case zrBlock:
		b, _ := z.br.Peek(4)
		if len(b) < 3 {
			return z.pass()
		}
		v := uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16
		last, typ, size := v&1 != 0, (v>>1)&3, int(v>>3)
		switch {
		case typ == 1 && size <= zstdMaxBlock && len(b) == 4:
			z.fillByte, z.fillLeft = b[3], size
			v &^= 3 << 1 // raw block, same size and last flag
			z.pend = [3]byte{byte(v), byte(v >> 8), byte(v >> 16)}
			z.pendOff = 0
			z.br.Discard(4)
			z.read += 4
		case typ == 2 && z.checkSeq:
			// A compressed block is at most 128 KiB: it is in the
			// buffer already or fits it.
			if blk, _ := z.br.Peek(3 + size); len(blk) == 3+size {
				z.seq.block(blk[3:], z.read)
			}
			z.copyLeft = 3 + int64(size)
		case typ == 0 || typ == 2:
			z.copyLeft = 3 + int64(size)
		default:
			return z.pass()
		}
		if last {
			z.state = zrFrame
			if z.checksum {
				z.state = zrChecksum
			}
		}
		return true
	case zrChecksum:
		z.copyLeft = 4
		z.state = zrFrame
		return true
	default:
		return z.pass()
	}
}

func (z *zstdRLEAsRaw) pass() bool {
	z.state = zrPass
	z.copyLeft = math.MaxInt64
	return true
}

// fill sets every byte of p to v.
func fill(p []byte, v byte) {
	if v == 0 {
		clear(p)
		return
	}
	if len(p) == 0 {
		return
	}
	p[0] = v
	for i := 1; i < len(p); i *= 2 {
		copy(p[i:], p[:i])
	}
}
