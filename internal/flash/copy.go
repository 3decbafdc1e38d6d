package flash

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/zeebo/xxh3"
	"golang.org/x/sync/errgroup"

	"github.com/btyproject/bty/internal/disk"
	"github.com/btyproject/bty/internal/event"
	"github.com/btyproject/bty/internal/image"
	"github.com/btyproject/bty/internal/layout"
)

// Tuning of the copy pipeline. Measured on a file-backed loop device (see
// scripts/bench.sh); the numbers only need to be "large" and "a few".
const (
	// segmentSize is the unit of work: a worker reads, scans and writes one
	// segment at a time. Memory in flight is about workers*segmentSize.
	segmentSize = 8 << 20
	// scanBlock is the granularity of zero detection.
	scanBlock = 64 << 10
	// minZeroRun is the shortest run of zero bytes that is zeroed with an
	// ioctl instead of written: shorter runs cost more as a syscall.
	minZeroRun = 256 << 10
	// headSize is the part of the image written last (partition tables
	// live there), so an interrupted flash never looks bootable.
	headSize = 1 << 20
	// progressEvery throttles progress events.
	progressEvery = 250 * time.Millisecond
)

// copyOptions tune one copy.
type copyOptions struct {
	Workers int
	// Hash computes the sha256 of the whole decoded stream, in order.
	Hash bool
	// Record keeps a sha256 per written segment for a later verify.
	Record bool
	// Expect is the sha256 the decoded stream must have; on a mismatch
	// the head is not written and the copy fails.
	Expect string
	Sink   event.Sink
}

// segmentRecord is what --verify re-reads: a written range and a hash of
// the bytes that belong there. The hash is XXH3-128: it detects a device
// that loses or garbles writes as surely as sha256 (nobody forges a
// disk's read-back), at about twenty times the speed, which keeps
// --verify cheap (docs/reference.md: at most 30 % on top of a flash).
type segmentRecord struct {
	Off, Len int64
	Sum      [16]byte
}

// copyStats is the outcome of a copy.
type copyStats struct {
	// Total is the decoded size of the image.
	Total int64
	// Written counts bytes sent with write; Zeroed bytes made zero by
	// ioctl (or by the fallback that writes zeros).
	Written, Zeroed int64
	ZeroMethod      disk.ZeroMethod
	SHA256          string
	Segments        []segmentRecord
	// PartitionTable is "gpt", "mbr" or "" as found in the image's head.
	PartitionTable string
	// A delta flash's counts: bytes fetched, the image's chunks, those
	// the target held, those fetched and written.
	Delta                                                  bool
	Fetched                                                int64
	ChunksTotal, ChunksEqual, ChunksFetched, ChunksWritten int64
	ChunksZero                                             int64
}

// ErrChecksum is returned (wrapped) when the decoded stream does not have
// the expected sha256.
var ErrChecksum = errors.New("checksum mismatch")

// ErrEmptyImage is returned when the image decodes to no bytes at all: a
// flash would write nothing (and the target is left as it was).
var ErrEmptyImage = errors.New("the image decodes to 0 bytes: there is nothing to flash (the target was not touched)")

// copier writes one image onto one device.
type copier struct {
	dev  Device
	opts copyOptions
	bs   int64 // alignment for ZeroRange

	done    atomic.Int64 // bytes of the image accounted for (written or zeroed)
	written atomic.Int64
	zeroed  atomic.Int64
	total   atomic.Int64 // -1 while unknown

	mu       sync.Mutex
	method   disk.ZeroMethod
	segments []segmentRecord
	// head holds the image's first headSize bytes, written last; headLen
	// is how much of it the image covers.
	head    []byte
	headLen int64

	// delta counts a delta flash's chunks (nil: a full flash);
	// fetchedFn reports the bytes fetched so far.
	delta     *deltaCounts
	fetchedFn func() int64
}

func newCopier(dev Device, opts copyOptions) *copier {
	if opts.Workers <= 0 {
		opts.Workers = 4
	}
	if opts.Sink == nil {
		opts.Sink = event.Discard
	}
	if opts.Expect != "" {
		opts.Hash = true
	}
	bs := int64(dev.LogicalBlockSize())
	if bs <= 0 {
		bs = 512
	}
	return &copier{dev: dev, opts: opts, bs: bs, head: alignedBuf(headSize)}
}

// copyImage writes img onto dev so that dev's first img.Size() bytes equal
// the decoded image: data is written, zero runs are zeroed by ioctl, the
// head goes last. It does not sync.
func copyImage(ctx context.Context, img image.Image, dev Device, opts copyOptions) (*copyStats, error) {
	c := newCopier(dev, opts)
	c.total.Store(img.Size())
	start := time.Now()
	stopProgress := c.reportProgress(start)
	var sum string
	var err error
	if ra, ok := img.(image.RandomAccess); ok {
		sum, err = c.copyRandom(ctx, ra)
	} else {
		sum, err = c.copyStream(ctx, img)
	}
	if err == nil && opts.Expect != "" && sum != opts.Expect {
		err = fmt.Errorf("%w: the image decodes to sha256 %s, but %s was expected; "+
			"the first %d KiB of the disk were left zeroed so it will not boot a wrong image",
			ErrChecksum, sum, opts.Expect, c.headLen>>10)
	}
	if err == nil {
		err = c.writeHead()
	}
	stopProgress()
	if err == nil {
		c.emitProgress(start) // a final 100 % event
	}
	st := &copyStats{
		Total: c.done.Load(), Written: c.written.Load(), Zeroed: c.zeroed.Load(),
		ZeroMethod: c.method, SHA256: sum, Segments: c.segments,
		PartitionTable: layout.HeadScheme(c.head[:c.headLen]),
	}
	if t := c.total.Load(); t >= 0 {
		st.Total = t
	}
	if err != nil {
		return st, err
	}
	return st, nil
}

// reportProgress emits a progress event every progressEvery until the
// returned stop function is called.
func (c *copier) reportProgress(start time.Time) (stop func()) {
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(progressEvery)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
				c.emitProgress(start)
			}
		}
	}()
	return func() { close(quit); wg.Wait() }
}

func (c *copier) emitProgress(start time.Time) {
	done := c.done.Load()
	rate := 0.0
	if el := time.Since(start).Seconds(); el > 0 {
		rate = float64(done) / el
	}
	total := c.total.Load()
	if total < 0 {
		total = 0
	}
	e := event.Event{Event: event.Progress, Time: time.Now(), BytesWritten: done, TotalBytes: total, Rate: rate}
	c.deltaFields(&e)
	c.opts.Sink.Emit(e)
}

// deltaFields adds a delta flash's counts to an event.
func (c *copier) deltaFields(e *event.Event) {
	if c.delta == nil {
		return
	}
	e.ChunksTotal, e.ChunksCompared, e.ChunksZero = c.delta.total.Load(), c.delta.compared.Load(), c.delta.zero
	e.ChunksEqual, e.ChunksFetched, e.ChunksWritten = c.delta.equal.Load(), c.delta.fetched.Load(), c.delta.written.Load()
	if c.fetchedFn != nil {
		e.BytesFetched = c.fetchedFn()
	}
}

// copyRandom copies a random-access image in parallel segments, skipping
// what the extent map says is zero.
func (c *copier) copyRandom(ctx context.Context, img image.RandomAccess) (string, error) {
	size := img.Size()
	if size < 0 {
		return "", fmt.Errorf("image size unknown for a random-access image")
	}
	if size == 0 {
		return "", ErrEmptyImage
	}
	if err := c.checkFits(size, false); err != nil {
		return "", err
	}
	if err := c.zeroHead(min(size, headSize)); err != nil {
		return "", err
	}
	nseg := int((size + segmentSize - 1) / segmentSize)
	g, ctx := errgroup.WithContext(ctx)

	// With hashing, workers hand their segment to the hasher in order and
	// wait until it is consumed; the window is bounded by the workers.
	var slots []chan hashItem
	var h hash.Hash
	if c.opts.Hash {
		h = sha256.New()
		slots = make([]chan hashItem, nseg)
		for i := range slots {
			slots[i] = make(chan hashItem, 1)
		}
		g.Go(func() error { return runHasher(ctx, h, slots) })
	}
	jobs := make(chan int)
	g.Go(func() error {
		defer close(jobs)
		for i := 0; i < nseg; i++ {
			select {
			case jobs <- i:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	})
	for w := 0; w < c.opts.Workers; w++ {
		g.Go(func() error {
			buf := alignedBuf(segmentSize)
			ack := make(chan struct{})
			for i := range jobs {
				off := int64(i) * segmentSize
				n := min(segmentSize, size-off)
				allZero, err := c.readSegment(img, buf[:n], off)
				if err != nil {
					return err
				}
				if allZero {
					if err := c.zero(off, n); err != nil {
						return err
					}
				} else if err := c.put(off, buf[:n]); err != nil {
					return err
				}
				if slots != nil {
					it := hashItem{n: n, ack: ack}
					if !allZero {
						it.data = buf[:n]
					}
					slots[i] <- it
					select {
					case <-ack:
					case <-ctx.Done():
						return ctx.Err()
					}
				}
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return "", c.interrupted(err)
	}
	if h == nil {
		return "", nil
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// readSegment fills buf with the decoded bytes at off, using the extent
// map. It reports whether the whole segment is a known-zero extent, in
// which case buf is left untouched.
func (c *copier) readSegment(img image.RandomAccess, buf []byte, off int64) (allZero bool, err error) {
	n := int64(len(buf))
	pos := off
	first := true
	for pos < off+n {
		ext, err := img.Extent(pos, off+n-pos)
		if err != nil {
			return false, fmt.Errorf("reading the extent map at offset %d: %w", pos, err)
		}
		if ext.Length <= 0 || ext.Start != pos {
			return false, fmt.Errorf("reading the extent map at offset %d: bad extent %+v", pos, ext)
		}
		l := min(ext.Length, off+n-pos)
		if first && ext.Zero && l == n {
			return true, nil
		}
		first = false
		b := buf[pos-off : pos-off+l]
		if ext.Zero {
			clear(b)
		} else if err := image.ReadFullAt(img, b, pos); err != nil {
			return false, fmt.Errorf("reading the image: %w", err)
		}
		pos += l
	}
	return false, nil
}

// copyStream copies an image read as one sequential stream
// (image.Reader): one goroutine decodes (and hashes, in order), workers
// scan and write.
func (c *copier) copyStream(ctx context.Context, img image.Image) (string, error) {
	r, err := image.Reader(img)
	if err != nil {
		return "", err
	}
	if size := img.Size(); size >= 0 {
		if err := c.checkFits(size, false); err != nil {
			return "", err
		}
	}
	type chunk struct {
		off int64
		buf []byte
		n   int
	}
	const chunkSize = 4 << 20
	nbuf := c.opts.Workers + 2
	pool := make(chan []byte, nbuf)
	for i := 0; i < nbuf; i++ {
		pool <- alignedBuf(chunkSize)
	}
	// The first chunk is decoded before the target is touched: an image
	// that decodes to nothing, or fails at once, leaves it as it was.
	first := <-pool
	firstN, firstErr := readFull(r, first)
	if firstN == 0 && firstErr == io.EOF {
		return "", ErrEmptyImage
	}
	if firstErr != nil && firstErr != io.EOF {
		if errors.Is(firstErr, context.Canceled) {
			return "", &interruptedError{done: int64(firstN), untouched: true, err: firstErr}
		}
		return "", fmt.Errorf("decoding %s image: %w", img.Format(), firstErr)
	}
	if err := c.checkFits(int64(firstN), img.Size() < 0); err != nil {
		return "", err
	}
	// The head is zeroed while the copy runs; only as much of it as the
	// image covers (a small image of unknown size ends in the first
	// chunk: then its size is known), so the bytes after the image stay.
	headLen := min(c.dev.Size(), headSize)
	if size := img.Size(); size >= 0 {
		headLen = min(size, headSize)
	} else if firstErr == io.EOF {
		headLen = min(int64(firstN), headSize)
	}
	if err := c.zeroHead(headLen); err != nil {
		return "", err
	}
	var h hash.Hash
	if c.opts.Hash {
		h = sha256.New()
	}
	jobs := make(chan chunk)
	g, ctx := errgroup.WithContext(ctx)
	var decoded int64
	g.Go(func() error {
		defer close(jobs)
		for {
			var (
				buf []byte
				n   int
				err error
			)
			if first != nil {
				buf, n, err, first = first, firstN, firstErr, nil
			} else {
				select {
				case buf = <-pool:
				case <-ctx.Done():
					return ctx.Err()
				}
				n, err = readFull(r, buf)
			}
			if n > 0 {
				if err := c.checkFits(decoded+int64(n), img.Size() < 0); err != nil {
					return err
				}
				if h != nil {
					h.Write(buf[:n])
				}
				select {
				case jobs <- chunk{off: decoded, buf: buf, n: n}:
				case <-ctx.Done():
					return ctx.Err()
				}
				decoded += int64(n)
			}
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return fmt.Errorf("decoding %s image after %d bytes: %w", img.Format(), decoded, err)
			}
		}
	})
	for w := 0; w < c.opts.Workers; w++ {
		g.Go(func() error {
			for ch := range jobs {
				if err := c.put(ch.off, ch.buf[:ch.n]); err != nil {
					return err
				}
				pool <- ch.buf
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return "", c.interrupted(err)
	}
	if size := img.Size(); size >= 0 && decoded != size {
		return "", fmt.Errorf("the %s image decoded to %d bytes but declares %d: the file is damaged", img.Format(), decoded, size)
	}
	c.total.Store(decoded)
	if h == nil {
		return "", nil
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// readFull reads until buf is full or the stream ends. Only a clean io.EOF
// ends the stream; every other error (a truncated download, a corrupt
// block) is returned as is.
func readFull(r io.Reader, buf []byte) (int, error) {
	n, empty := 0, 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
		// A reader that keeps returning (0, nil) is broken; bufio gives
		// up after 100 such reads, so do we.
		if m == 0 {
			if empty++; empty == 100 {
				return n, io.ErrNoProgress
			}
		} else {
			empty = 0
		}
	}
	return n, nil
}

// interrupted turns a cancellation into a message that says how far the
// copy got.
func (c *copier) interrupted(err error) error {
	if errors.Is(err, context.Canceled) {
		return &interruptedError{done: c.done.Load(), err: err}
	}
	return err
}

// interruptedError reads as a sentence for the user and still matches
// context.Canceled with errors.Is. untouched says nothing was written yet
// (done then counts decoded bytes).
type interruptedError struct {
	done      int64
	untouched bool
	err       error
}

func (e *interruptedError) Error() string {
	if e.untouched {
		return fmt.Sprintf("interrupted after %s of the image were decoded, before anything was written: the target is unchanged", formatBytes(e.done))
	}
	return fmt.Sprintf("interrupted after %s of the image were written; the disk is incomplete "+
		"(its first MiB is zeroed so it will not boot): flash it again", formatBytes(e.done))
}

func (e *interruptedError) Unwrap() error { return e.err }

// checkFits fails when n bytes of image do not fit the target; decoded
// says n is only what a stream of unknown size has decoded so far.
func (c *copier) checkFits(n int64, decoded bool) error {
	if size := c.dev.Size(); n > size {
		return &TooLargeError{Image: n, Target: size, AtLeast: decoded}
	}
	return nil
}

// TooLargeError reports an image whose decoded size exceeds the target.
type TooLargeError struct {
	Image, Target int64
	// AtLeast says Image is not the image's size but how far decoding
	// got (the format does not declare the size) when it passed the
	// target's end.
	AtLeast bool
}

func (e *TooLargeError) Error() string {
	if e.AtLeast {
		return fmt.Sprintf("the image decodes to more than the %s (%d bytes) the target holds (its size is not known before decoding; decoding stopped there): choose a larger disk",
			formatBytes(e.Target), e.Target)
	}
	return fmt.Sprintf("the image is %s (%d bytes) but the target holds only %s (%d bytes): choose a larger disk",
		formatBytes(e.Image), e.Image, formatBytes(e.Target), e.Target)
}

// zeroHead zeroes the first n bytes so the old partition table is gone
// while the copy runs; writeHead puts the image's head there at the end.
func (c *copier) zeroHead(n int64) error {
	if n <= 0 {
		return nil
	}
	aligned := n / c.bs * c.bs
	if aligned > 0 {
		m, err := c.dev.ZeroRange(0, aligned)
		if err != nil {
			return fmt.Errorf("clearing the start of the target: %w", err)
		}
		c.noteMethod(m)
	}
	if aligned < n {
		if err := c.pwrite(aligned, zeroBuf[:n-aligned]); err != nil {
			return fmt.Errorf("clearing the start of the target: %w", err)
		}
	}
	return nil
}

func (c *copier) writeHead() error {
	c.mu.Lock()
	head := c.head[:c.headLen]
	c.mu.Unlock()
	if len(head) == 0 {
		return nil
	}
	if err := c.pwrite(0, head); err != nil {
		return fmt.Errorf("writing the first %d bytes of the target: %w", len(head), err)
	}
	return nil
}

// keepHead stores the part of [off, off+len(p)) below headSize for
// writeHead (p nil means zeros) and returns how many bytes it took.
func (c *copier) keepHead(off int64, p []byte, n int64) int64 {
	if off >= headSize {
		return 0
	}
	k := min(n, headSize-off)
	c.mu.Lock()
	if p != nil {
		copy(c.head[off:off+k], p[:k])
	} else {
		clear(c.head[off : off+k])
	}
	c.headLen = max(c.headLen, off+k)
	c.mu.Unlock()
	c.done.Add(k)
	return k
}

// put writes the decoded bytes p at off: zero runs of at least minZeroRun
// are zeroed, the rest written in large writes. Bytes below headSize are
// kept aside for writeHead. When recording, the segment's sha256 is kept
// for verify.
func (c *copier) put(off int64, p []byte) error {
	if c.opts.Record {
		c.record(off, p)
	}
	if k := c.keepHead(off, p, int64(len(p))); k > 0 {
		off += k
		p = p[k:]
	}
	// Find zero runs of at least minZeroRun (in scanBlock steps); zero
	// those, write everything between them in as few writes as possible.
	data := 0
	for i := 0; i < len(p); {
		if !isZero(p[i:min(i+scanBlock, len(p))]) {
			i += scanBlock
			continue
		}
		j := i + scanBlock
		for j < len(p) && isZero(p[j:min(j+scanBlock, len(p))]) {
			j += scanBlock
		}
		j = min(j, len(p))
		if j-i >= minZeroRun {
			if i > data {
				if err := c.write(off+int64(data), p[data:i]); err != nil {
					return err
				}
			}
			if err := c.zero(off+int64(i), int64(j-i)); err != nil {
				return err
			}
			data = j
		}
		i = j
	}
	if data < len(p) {
		return c.write(off+int64(data), p[data:])
	}
	return nil
}

func (c *copier) record(off int64, p []byte) {
	r := segmentRecord{Off: off, Len: int64(len(p)), Sum: xxh3.Hash128(p).Bytes()}
	c.mu.Lock()
	c.segments = append(c.segments, r)
	c.mu.Unlock()
}

func (c *copier) write(off int64, p []byte) error {
	if err := c.pwrite(off, p); err != nil {
		return fmt.Errorf("writing %d bytes at offset %d of the target: %w", len(p), off, err)
	}
	c.written.Add(int64(len(p)))
	c.done.Add(int64(len(p)))
	return nil
}

// pwrite writes p at off. A write that is not whole blocks in offset,
// length or memory (only ever the image's last bytes, or a tiny image)
// is widened to whole blocks by reading the edge blocks first, so it
// works on a target opened with O_DIRECT and leaves the bytes around it
// as they were.
func (c *copier) pwrite(off int64, p []byte) error {
	n := int64(len(p))
	if off%c.bs == 0 && n%c.bs == 0 && uintptr(unsafe.Pointer(unsafe.SliceData(p)))%pageSize == 0 {
		_, err := c.dev.WriteAt(p, off)
		return err
	}
	start := off / c.bs * c.bs
	end := (off + n + c.bs - 1) / c.bs * c.bs
	buf := alignedBuf(int(end - start))
	if start < off {
		if _, err := c.dev.ReadAt(buf[:c.bs], start); err != nil {
			return fmt.Errorf("reading the block at %d to merge a partial write: %w", start, err)
		}
	}
	if end > off+n {
		if _, err := c.dev.ReadAt(buf[end-start-c.bs:], end-c.bs); err != nil {
			return fmt.Errorf("reading the block at %d to merge a partial write: %w", end-c.bs, err)
		}
	}
	copy(buf[off-start:], p)
	_, err := c.dev.WriteAt(buf, start)
	return err
}

// zero makes [off, off+n) read back as zeros: the block-aligned middle by
// ioctl, unaligned edges by writing zeros.
func (c *copier) zero(off, n int64) error {
	// The head was zeroed up front and is written at the end.
	if k := c.keepHead(off, nil, n); k > 0 {
		off += k
		n -= k
		if n == 0 {
			return nil
		}
	}
	start := (off + c.bs - 1) / c.bs * c.bs
	end := (off + n) / c.bs * c.bs
	if end <= start {
		return c.writeZeros(off, n)
	}
	if start > off {
		if err := c.writeZeros(off, start-off); err != nil {
			return err
		}
	}
	m, err := c.dev.ZeroRange(start, end-start)
	if err != nil {
		return fmt.Errorf("zeroing %d bytes at offset %d of the target: %w", end-start, start, err)
	}
	c.noteMethod(m)
	c.zeroed.Add(end - start)
	c.done.Add(end - start)
	if end < off+n {
		return c.writeZeros(end, off+n-end)
	}
	return nil
}

// writeZeros writes n zero bytes at off (n is below one block here).
func (c *copier) writeZeros(off, n int64) error {
	for n > 0 {
		k := min(n, int64(len(zeroBuf)))
		if err := c.write(off, zeroBuf[:k]); err != nil {
			return err
		}
		off, n = off+k, n-k
	}
	return nil
}

func (c *copier) noteMethod(m disk.ZeroMethod) {
	c.mu.Lock()
	// "write" (the slow fallback) wins: it is what the user must know.
	if c.method == "" || m == disk.ZeroWrite {
		c.method = m
	}
	c.mu.Unlock()
}

var (
	zeroBlock = make([]byte, scanBlock)
	// zeroBuf is an aligned source of zeros for writes.
	zeroBuf = alignedBuf(1 << 20)
)

func isZero(p []byte) bool { return bytes.Equal(p, zeroBlock[:len(p)]) }

// hashItem is one segment handed to the in-order hasher: data, or n zero
// bytes when data is nil.
type hashItem struct {
	data []byte
	n    int64
	ack  chan struct{}
}

func runHasher(ctx context.Context, h hash.Hash, slots []chan hashItem) error {
	for _, s := range slots {
		var it hashItem
		select {
		case it = <-s:
		case <-ctx.Done():
			return ctx.Err()
		}
		if it.data != nil {
			h.Write(it.data)
		} else {
			for left := it.n; left > 0; {
				k := min(left, int64(len(zeroBlock)))
				h.Write(zeroBlock[:k])
				left -= k
			}
		}
		it.ack <- struct{}{}
	}
	return nil
}
