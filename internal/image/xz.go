package image

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"runtime"
	"sync"

	xi2xz "github.com/btyproject/bty/internal/image/internal/xz"
)

// The xz container is parsed here (stream header/footer, index, block
// header filter flags) only to find the blocks; the decoding itself, with
// all checks, is xi2/xz's. No library exposes the index or per-block
// decoding, hence this small hand-written part.

var xzMagic = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}

type xzBlock struct {
	offset       int64 // of the block header in the file
	unpadded     int64 // unpadded size (header + data + check)
	uncompressed int64
	decodedStart int64 // offset of its first byte in the decoded image
	stream       int   // index into xzIndex.streams
}

type xzIndex struct {
	streams [][12]byte // each stream's header, in file order
	blocks  []xzBlock  // in decoded order
	size    int64      // sum of uncompressed sizes
}

func readUvarint(b []byte) (uint64, int, error) {
	v, n := binary.Uvarint(b)
	if n <= 0 || n > 9 {
		return 0, 0, errors.New("bad variable-length integer")
	}
	return v, n, nil
}

// xzIndexError is the error of readXzIndex: the file breaks a rule of
// the .xz format (its section numbers in the messages).
func xzIndexError(format string, args ...any) error {
	return &formatError{kind: ErrCorrupt, msg: "corrupt xz file: " + fmt.Sprintf(format, args...)}
}

// checkXzStreamFlags checks the Stream Flags of a header or footer
// (2.1.1.2): the reserved bits must be zero.
func checkXzStreamFlags(f []byte, what string, off int64) error {
	if f[0] != 0 || f[1]&0xf0 != 0 {
		return xzIndexError("the stream %s at offset %d has reserved stream flag bits set (%02x %02x)", what, off, f[0], f[1])
	}
	return nil
}

// xzMaxIndex bounds the index bty reads of one stream.
const xzMaxIndex = 64 << 20

// xzMaxVLI is the largest value a variable-length integer of the .xz
// format may hold (1.2).
const xzMaxVLI = 1<<63 - 1

// readXzIndex walks the file backwards from its end, stream by stream,
// and reads each stream's index. fileSize must be the encoded size. Every
// rule of the format that the blocks' own decoding (which the parallel
// decoder runs on a stream it rebuilds per block, with this index's
// records) does not check is checked here: stream padding, footer and
// header (magic, reserved flags, CRC32, matching flags), the backward
// size, the index (indicator, record count, record values, padding,
// CRC32) and that the blocks fill the stream exactly.
func readXzIndex(ra io.ReaderAt, fileSize int64) (*xzIndex, error) {
	var streams []struct {
		hdr    [12]byte
		blocks []xzBlock
	}
	end := fileSize
	var total int64 // uncompressed bytes of the streams read so far
	for end > 0 {
		// Stream padding: zero bytes in multiples of 4 (2.2).
		var word [4]byte
		for end >= 4 {
			if err := ReadFullAt(ra, word[:], end-4); err != nil {
				return nil, err
			}
			if word != [4]byte{} {
				break
			}
			end -= 4
		}
		var foot [12]byte
		if end >= 12 {
			if err := ReadFullAt(ra, foot[:], end-12); err != nil {
				return nil, err
			}
		}
		if end%4 != 0 || end < 24 || foot[10] != 'Y' || foot[11] != 'Z' {
			if len(streams) == 0 {
				return nil, xzIndexError("the file ends (at byte %d) without a stream footer: it is truncated (an incomplete copy or download?) or has something else appended", fileSize)
			}
			return nil, xzIndexError("no stream footer ends at offset %d, before the stream that starts there", end)
		}
		if crc32.ChecksumIEEE(foot[4:10]) != binary.LittleEndian.Uint32(foot[0:4]) {
			return nil, xzIndexError("bad CRC32 of the stream footer at offset %d", end-12)
		}
		if err := checkXzStreamFlags(foot[8:10], "footer", end-12); err != nil {
			return nil, err
		}
		indexSize := (int64(binary.LittleEndian.Uint32(foot[4:8])) + 1) * 4
		indexStart := end - 12 - indexSize
		if indexStart < 12 {
			return nil, xzIndexError("the backward size of the stream footer at offset %d (%d bytes of index) does not fit the file", end-12, indexSize)
		}
		if indexSize > xzMaxIndex {
			// A few bytes a block: even 1 MiB blocks of a terabyte image
			// need 8 MiB. The bound keeps a forged footer from making
			// bty allocate gigabytes.
			return nil, &formatError{kind: ErrUnsupported, msg: fmt.Sprintf(
				"the xz index at offset %d is %d MiB, more than the %d MiB bty reads: recompress with larger blocks (xz -T0 --block-size=64MiB)",
				indexStart, indexSize>>20, xzMaxIndex>>20)}
		}
		idx := make([]byte, indexSize)
		if err := ReadFullAt(ra, idx, indexStart); err != nil {
			return nil, err
		}
		if idx[0] != 0 {
			return nil, xzIndexError("no index indicator at offset %d (the stream footer's backward size points there)", indexStart)
		}
		if crc32.ChecksumIEEE(idx[:len(idx)-4]) != binary.LittleEndian.Uint32(idx[len(idx)-4:]) {
			return nil, xzIndexError("bad CRC32 of the index at offset %d", indexStart)
		}
		body := idx[:len(idx)-4]
		count, n, err := readUvarint(body[1:])
		if err != nil || count > uint64(len(body))/2 {
			return nil, xzIndexError("bad number of records in the index at offset %d", indexStart)
		}
		p := 1 + n
		var blocks []xzBlock
		var data, uncompressedSum int64 // this stream's blocks (padded) and their decoded bytes
		for i := range count {
			unpadded, n1, err := readUvarint(body[p:])
			if err != nil {
				return nil, xzIndexError("index record %d at offset %d: %v", i, indexStart+int64(p), err)
			}
			p += n1
			uncompressed, n2, err := readUvarint(body[p:])
			if err != nil {
				return nil, xzIndexError("index record %d at offset %d: %v", i, indexStart+int64(p), err)
			}
			p += n2
			if unpadded < 5 || unpadded > xzMaxVLI&^3 || uncompressed > xzMaxVLI {
				return nil, xzIndexError("index record %d at offset %d: unpadded size %d or uncompressed size %d out of range", i, indexStart+int64(p-n1-n2), unpadded, uncompressed)
			}
			data += (int64(unpadded) + 3) &^ 3
			if data > indexStart-12 {
				return nil, xzIndexError("the index at offset %d lists more blocks than the stream holds", indexStart)
			}
			if int64(uncompressed) > xzMaxVLI-uncompressedSum-total {
				return nil, xzIndexError("the index at offset %d sums to more than the largest size xz allows", indexStart)
			}
			uncompressedSum += int64(uncompressed)
			blocks = append(blocks, xzBlock{unpadded: int64(unpadded), uncompressed: int64(uncompressed)})
		}
		// Index padding: zeros up to a multiple of four, then the CRC32.
		pad := (4 - p%4) % 4
		if p+pad != len(body) {
			return nil, xzIndexError("the index at offset %d is %d bytes long but its records end at %d", indexStart, len(idx), p+pad+4)
		}
		for k := p; k < p+pad; k++ {
			if body[k] != 0 {
				return nil, xzIndexError("non-zero index padding at offset %d", indexStart+int64(k))
			}
		}
		streamStart := indexStart - data - 12
		var hdr [12]byte
		if err := ReadFullAt(ra, hdr[:], streamStart); err != nil {
			return nil, err
		}
		if !bytes.Equal(hdr[:6], xzMagic) {
			return nil, xzIndexError("no stream header at offset %d, where the index at %d says its stream starts", streamStart, indexStart)
		}
		if crc32.ChecksumIEEE(hdr[6:8]) != binary.LittleEndian.Uint32(hdr[8:12]) {
			return nil, xzIndexError("bad CRC32 of the stream header at offset %d", streamStart)
		}
		if err := checkXzStreamFlags(hdr[6:8], "header", streamStart); err != nil {
			return nil, err
		}
		if [2]byte(hdr[6:8]) != [2]byte(foot[8:10]) {
			return nil, xzIndexError("the stream header at offset %d and its footer at %d have different flags", streamStart, end-12)
		}
		off := streamStart + 12
		for i := range blocks {
			blocks[i].offset = off
			off += (blocks[i].unpadded + 3) &^ 3
		}
		streams = append(streams, struct {
			hdr    [12]byte
			blocks []xzBlock
		}{hdr, blocks})
		total += uncompressedSum
		end = streamStart
	}
	x := &xzIndex{}
	for i := len(streams) - 1; i >= 0; i-- {
		x.streams = append(x.streams, streams[i].hdr)
		for _, b := range streams[i].blocks {
			b.decodedStart = x.size
			b.stream = len(x.streams) - 1
			x.blocks = append(x.blocks, b)
			x.size += b.uncompressed
		}
	}
	return x, nil
}

// blockDictSize returns the LZMA2 dictionary size from a block header's
// filter flags, or 0 when it cannot tell.
func blockDictSize(ra io.ReaderAt, off int64) int64 {
	var h [1024]byte
	n, _ := ra.ReadAt(h[:], off)
	if n < 2 {
		return 0
	}
	size := (int(h[0]) + 1) * 4
	if size > n {
		return 0
	}
	b := h[:size]
	flags := b[1]
	p := 2
	for _, present := range []bool{flags&0x40 != 0, flags&0x80 != 0} {
		if present {
			_, k, err := readUvarint(b[p:])
			if err != nil {
				return 0
			}
			p += k
		}
	}
	for f := 0; f <= int(flags&3); f++ {
		id, k, err := readUvarint(b[p:])
		if err != nil {
			return 0
		}
		p += k
		psize, k, err := readUvarint(b[p:])
		if err != nil || p+k+int(psize) > len(b) {
			return 0
		}
		p += k
		if id == 0x21 && psize == 1 { // LZMA2
			bits := b[p]
			if bits > 40 {
				return 0
			}
			if bits == 40 {
				return 1<<32 - 1
			}
			return int64(2|bits&1) << (bits/2 + 11)
		}
		p += int(psize)
	}
	return 0
}

// singleBlockStream returns the bytes that follow a block to make it a
// complete one-block xz stream: an index with one record and a footer
// with the original stream flags. xi2/xz then checks everything a
// sequential decode would.
func singleBlockTrailer(hdr [12]byte, b xzBlock) []byte {
	var idx []byte
	idx = append(idx, 0)
	idx = binary.AppendUvarint(idx, 1)
	idx = binary.AppendUvarint(idx, uint64(b.unpadded))
	idx = binary.AppendUvarint(idx, uint64(b.uncompressed))
	for len(idx)%4 != 0 {
		idx = append(idx, 0)
	}
	idx = binary.LittleEndian.AppendUint32(idx, crc32.ChecksumIEEE(idx))
	var foot [12]byte
	binary.LittleEndian.PutUint32(foot[4:8], uint32(len(idx)/4-1))
	copy(foot[8:10], hdr[6:8])
	binary.LittleEndian.PutUint32(foot[0:4], crc32.ChecksumIEEE(foot[4:10]))
	foot[10], foot[11] = 'Y', 'Z'
	return append(idx, foot[:]...)
}

// xzChunk is the unit of decoded data handed from workers to the reader.
const xzChunk = 1 << 20

type xzJob struct {
	block  xzBlock
	queue  [][]byte
	done   bool
	err    error
	cursor []byte // the head chunk being read (reader side only)
}

// parallelXz decodes the blocks of a multi-block xz file (as `xz -T`
// writes) on several goroutines and hands out their bytes in order.
// Memory is bounded by a budget of decoded chunks: workers on later
// blocks stop when only a reserve is left, which the block being read may
// always use, so the reader never waits on a block nobody can decode.
type parallelXz struct {
	name    string
	ra      io.ReaderAt
	index   *xzIndex
	workers int
	tokens  int // free chunk budget
	reserve int

	mu      sync.Mutex
	cond    *sync.Cond
	jobs    []*xzJob
	next    int // next job to hand to a worker
	head    int // job being read
	closed  error
	started bool
	wg      sync.WaitGroup
	free    [][]byte // spare chunks; at most the budget is ever allocated
	stop    func() bool
	out     int64
}

var _ Stream = (*parallelXz)(nil)

func newParallelXz(ctx context.Context, name string, ra io.ReaderAt, index *xzIndex, opts Options) *parallelXz {
	workers := opts.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	if dict := blockDictSize(ra, index.blocks[0].offset); dict > 0 {
		workers = max(1, min(workers, int((64<<20)/dict)))
	}
	budget := opts.BufferBytes
	if budget <= 0 {
		budget = 32 << 20
	}
	p := &parallelXz{name: name, ra: ra, index: index, workers: workers}
	p.tokens = max(4, int(budget/xzChunk))
	p.reserve = 2
	p.cond = sync.NewCond(&p.mu)
	for _, b := range index.blocks {
		p.jobs = append(p.jobs, &xzJob{block: b})
	}
	p.stop = context.AfterFunc(ctx, func() {
		p.mu.Lock()
		if p.closed == nil {
			p.closed = ctx.Err()
		}
		p.cond.Broadcast()
		p.mu.Unlock()
	})
	opts.logger().Debug("parallel xz decoding", "image", name, "blocks", len(p.jobs), "workers", workers)
	return p
}

func (p *parallelXz) Format() Format { return Xz }
func (p *parallelXz) Size() int64    { return p.index.size }

func (p *parallelXz) start() {
	p.started = true
	for range p.workers {
		p.wg.Add(1)
		go p.work()
	}
}

// acquire takes one chunk of budget for job i and returns its buffer;
// nil when closed. Chunks are recycled through p.free rather than a
// sync.Pool, which the GC empties: a steady stream of fresh 1 MiB
// allocations made the heap (and RSS) grow far past the budget.
func (p *parallelXz) acquire(i int) []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.closed == nil && !(p.tokens > p.reserve || (i == p.head && p.tokens > 0)) {
		p.cond.Wait()
	}
	if p.closed != nil {
		return nil
	}
	p.tokens--
	if n := len(p.free); n > 0 {
		b := p.free[n-1]
		p.free = p.free[:n-1]
		return b
	}
	return make([]byte, xzChunk)
}

// release returns an unused chunk and its budget.
func (p *parallelXz) release(b []byte) {
	p.mu.Lock()
	p.free = append(p.free, b[:cap(b)])
	p.tokens++
	p.cond.Broadcast()
	p.mu.Unlock()
}

func (p *parallelXz) work() {
	defer p.wg.Done()
	var br *bufio.Reader
	// One decoder per worker, Reset for each block: xi2/xz keeps its
	// dictionary buffer across Resets, where a new decoder per block
	// allocated a fresh dictionary (8 MiB for `xz -6`) every 24 MiB.
	var dec *xi2xz.Reader
	for {
		p.mu.Lock()
		if p.closed != nil || p.next >= len(p.jobs) {
			p.mu.Unlock()
			return
		}
		i := p.next
		p.next++
		job := p.jobs[i]
		p.mu.Unlock()

		b := job.block
		hdr := p.index.streams[b.stream]
		section := io.NewSectionReader(p.ra, b.offset, (b.unpadded+3)&^3)
		if br == nil {
			br = bufio.NewReaderSize(section, inputBuffer)
		} else {
			br.Reset(section)
		}
		in := io.MultiReader(bytes.NewReader(hdr[:]), br, bytes.NewReader(singleBlockTrailer(hdr, b)))
		var err error
		if dec == nil {
			dec, err = xi2xz.NewReader(in, xzDictMax)
		} else {
			err = dec.Reset(in)
		}
		if err == nil {
			dec.Multistream(false)
			err = p.decode(i, job, dec)
		}
		p.mu.Lock()
		if msg := xzUnsupported(p.name, err); err != nil && msg != "" {
			job.err = &formatError{kind: ErrUnsupported, cause: err, msg: fmt.Sprintf("%s: the xz block at compressed offset %d %s", p.name, b.offset, msg)}
		} else if err != nil {
			job.err = &formatError{kind: ErrCorrupt, cause: err, msg: fmt.Sprintf("%s: corrupt xz block at compressed offset %d (decoded offset %d..%d): %v",
				p.name, b.offset, b.decodedStart, b.decodedStart+b.uncompressed, err)}
		}
		job.done = true
		p.cond.Broadcast()
		p.mu.Unlock()
		if err != nil {
			return
		}
	}
}

func (p *parallelXz) decode(i int, job *xzJob, dec *xi2xz.Reader) error {
	var total int64
	for {
		buf := p.acquire(i)
		if buf == nil {
			return nil
		}
		n, err := io.ReadFull(dec, buf)
		total += int64(n)
		if n > 0 {
			p.mu.Lock()
			job.queue = append(job.queue, buf[:n])
			p.cond.Broadcast()
			p.mu.Unlock()
		} else {
			p.release(buf)
		}
		switch {
		case err == io.EOF || err == io.ErrUnexpectedEOF:
			// io.ReadFull's ErrUnexpectedEOF only means the block ended
			// inside this chunk; xi2/xz reports a cut block as ErrBuf.
			if total != job.block.uncompressed {
				return fmt.Errorf("decoded %d bytes, the index says %d", total, job.block.uncompressed)
			}
			return nil
		case err != nil:
			return err
		}
	}
}

// headJob waits until the job being read has bytes and returns it, or
// returns the error that ends the stream (io.EOF after the last block).
// p.mu must be held.
func (p *parallelXz) headJob() (*xzJob, error) {
	if !p.started {
		p.start()
	}
	for {
		if p.closed != nil {
			return nil, p.closed
		}
		if p.head >= len(p.jobs) {
			return nil, io.EOF
		}
		job := p.jobs[p.head]
		if len(job.cursor) == 0 && len(job.queue) > 0 {
			job.cursor = job.queue[0]
		}
		if len(job.cursor) > 0 {
			return job, nil
		}
		if job.err != nil {
			p.closed = job.err
			p.cond.Broadcast()
			return nil, job.err
		}
		if job.done {
			p.head++
			p.cond.Broadcast()
			continue
		}
		p.cond.Wait()
	}
}

// consumed advances the head job past n bytes and recycles its chunk
// when it is used up. p.mu must be held.
func (p *parallelXz) consumed(job *xzJob, n int) {
	job.cursor = job.cursor[n:]
	p.out += int64(n)
	if len(job.cursor) == 0 {
		p.free = append(p.free, job.queue[0][:cap(job.queue[0])])
		job.queue[0] = nil
		job.queue = job.queue[1:]
		p.tokens++
		p.cond.Broadcast()
	}
}

func (p *parallelXz) Read(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	job, err := p.headJob()
	if err != nil {
		return 0, err
	}
	n := copy(b, job.cursor)
	p.consumed(job, n)
	return n, nil
}

// WriteTo writes the rest of the decoded image to w straight from the
// decoded chunks (1 MiB each, valid only during the Write call), saving
// the copy into a caller's buffer. Errors from w are returned as they
// are.
func (p *parallelXz) WriteTo(w io.Writer) (int64, error) {
	var total int64
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		job, err := p.headJob()
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
		chunk := job.cursor
		p.mu.Unlock()
		n, err := w.Write(chunk)
		p.mu.Lock()
		if err == nil && n < len(chunk) {
			err = io.ErrShortWrite
		}
		total += int64(n)
		p.consumed(job, n)
		if err != nil {
			return total, err
		}
	}
}

func (p *parallelXz) Close() error {
	p.stop()
	p.mu.Lock()
	if p.closed == nil {
		p.closed = errors.New("image closed")
	}
	p.cond.Broadcast()
	p.mu.Unlock()
	p.wg.Wait()
	return nil
}
