package flash

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/url"
	"path"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/btyproject/bty/internal/chunks"
	"github.com/btyproject/bty/internal/ctxio"
	"github.com/btyproject/bty/internal/layout"
	"github.com/btyproject/bty/internal/source"
)

// A delta flash (docs/reference.md, "Delta flashes") compares the
// target's chunks with the image's chunk store and fetches and writes
// only the chunks that differ.
const (
	// readGroup bounds one read of the target's data chunks.
	readGroup = 8 << 20
	// fetchGroup bounds the packed bytes of one coalesced Range request.
	fetchGroup = 8 << 20
)

// deltaStore is an image's chunk store, opened and bound to the image.
type deltaStore struct {
	src     source.Source
	x       *chunks.Index
	fetched atomic.Int64
}

func (d *deltaStore) close() {
	if d != nil && d.src != nil {
		d.src.Close()
	}
}

// read fills p from the store at off (one Range request for a URL,
// resumed like any URL source) and counts the bytes fetched.
func (d *deltaStore) read(p []byte, off int64) error {
	if err := source.ReadRange(d.src, p, off); err != nil {
		return err
	}
	d.fetched.Add(int64(len(p)))
	return nil
}

// ReadAt makes the store an io.ReaderAt for chunks.ReadIndex.
func (d *deltaStore) ReadAt(p []byte, off int64) (int, error) {
	if err := d.read(p, off); err != nil {
		return 0, err
	}
	return len(p), nil
}

// StoreRef is where the chunk store of image ref is looked for: bty-web
// serves an image's store at /images/{name}/chunks; any other image has
// it beside itself, with .btyc appended (what bty index writes).
func StoreRef(ref string) string {
	if source.IsURL(ref) {
		u, err := url.Parse(ref)
		if err != nil {
			return ref + ".btyc"
		}
		if path.Dir(u.Path) == "/images" && path.Base(u.Path) != "images" {
			u.Path += "/chunks"
		} else {
			u.Path += ".btyc"
		}
		u.RawPath = ""
		return u.String()
	}
	return ref + ".btyc"
}

// openDeltaStore opens the image's chunk store and checks that it is the
// image's: its decoded sha256 is the expected one (--sha256), or for a
// local image its file sha256 is the image file's. A missing, foreign or
// malformed store is (nil, note): the caller flashes in full and says
// why. Only a cancelled context is an error.
func openDeltaStore(ctx context.Context, opts Options, p *prepared, targetSize int64) (*deltaStore, string, error) {
	ref := opts.Chunks
	if ref == "" {
		ref = StoreRef(opts.Image)
	}
	full := func(format string, args ...any) (*deltaStore, string, error) {
		if err := ctx.Err(); err != nil {
			return nil, "", err
		}
		return nil, fmt.Sprintf(format, args...) + ": flashing in full", nil
	}
	if source.IsURL(opts.Image) && opts.SHA256 == "" {
		return full("a delta flash from a URL needs --sha256 (the decoded image's) to prove the chunk store is the image's")
	}
	src, err := source.Open(ctx, ref, opts.Source)
	if err != nil {
		if errors.Is(err, source.ErrNotFound) {
			return full("no chunk store for this image at %s (bty index IMAGE writes one; bty-web builds one for every image)", source.Redact(ref))
		}
		return full("the chunk store %s cannot be read (%v)", source.Redact(ref), err)
	}
	d := &deltaStore{src: src}
	// Bounded before the entries are read: the index must fit the store
	// file, its image the target.
	x, err := chunks.ReadIndex(d, src.Size(), targetSize)
	if err != nil {
		src.Close()
		return full("the chunk store %s is not usable (%v)", src.Name(), err)
	}
	d.x = x
	drop := func(format string, args ...any) (*deltaStore, string, error) {
		src.Close()
		return full(format, args...)
	}
	switch {
	case x.FileSize != src.Size():
		return drop("the chunk store %s is %d bytes, its index says %d (truncated or damaged)", src.Name(), src.Size(), x.FileSize)
	case opts.SHA256 != "" && x.SHA256 != opts.SHA256:
		return drop("the chunk store %s is of an image with sha256 %s, not %s", src.Name(), x.SHA256, opts.SHA256)
	case p.img.Size() >= 0 && x.ImageSize != p.img.Size():
		return drop("the chunk store %s is of a %d-byte image; this one decodes to %d bytes", src.Name(), x.ImageSize, p.img.Size())
	}
	if opts.SHA256 == "" {
		// A local image: the store must be of this very file.
		if x.SourceSHA256 == "" {
			return drop("the chunk store %s does not record which image file it was built from; pass --sha256", src.Name())
		}
		sum, err := ctxio.FileSHA256(ctx, opts.Image)
		if err != nil {
			return drop("hashing %s to check its chunk store: %v", opts.Image, err)
		}
		if sum != x.SourceSHA256 {
			return drop("the chunk store %s was built from another file than %s (rebuild it with bty index)", src.Name(), opts.Image)
		}
	}
	return d, "", nil
}

// deltaCounts are a delta flash's chunk counts (progress and result).
type deltaCounts struct {
	total, compared, equal, fetched, written atomic.Int64
	// zero is the image's zero chunks (set before the flash starts).
	zero int64
}

// errStoreBroken wraps a chunk store that failed mid-flash (a chunk that
// does not match its sum): Run then flashes in full.
type errStoreBroken struct{ err error }

func (e *errStoreBroken) Error() string { return e.err.Error() }
func (e *errStoreBroken) Unwrap() error { return e.err }

// copyDelta makes the target's first x.ImageSize bytes the image's:
// (1) every data chunk of the target is read (O_DIRECT, in parallel) and
// hashed; (2) the head is zeroed, zero chunks are zeroed by ioctl, the
// chunks that differ are fetched in coalesced Range requests, decoded in
// parallel, checked against their sha256 and written (recorded for
// verify); (3) the head goes last, as in a full
// flash. It returns the image's sha256: every chunk on the target now
// has the store's sum for it, and the store's image sha256 is the one
// the caller required.
func (c *copier) copyDelta(ctx context.Context, d *deltaStore) (string, error) {
	x := d.x
	n := len(x.Chunks)
	c.total.Store(x.ImageSize)
	c.delta = &deltaCounts{}
	c.delta.total.Store(int64(n))
	for _, ck := range x.Chunks {
		if ck.Zero {
			c.delta.zero++
		}
	}
	c.fetchedFn = d.fetched.Load

	differ, err := c.compareChunks(ctx, x)
	if err != nil {
		return "", err
	}
	if err := c.zeroHead(min(headSize, x.ImageSize)); err != nil {
		return "", err
	}
	// Zero chunks: zeroing is cheaper than reading them.
	for i := 0; i < n; {
		if !x.Chunks[i].Zero {
			i++
			continue
		}
		j := i
		for j+1 < n && x.Chunks[j+1].Zero {
			j++
		}
		off, _ := x.Span(i)
		end, last := x.Span(j)
		if err := c.zero(off, end+last-off); err != nil {
			return "", err
		}
		i = j + 1
	}
	if err := c.fetchChunks(ctx, d, differ); err != nil {
		return "", err
	}
	return x.SHA256, nil
}

// compareChunks reads and hashes the target's data chunks; differ[i] is
// set for every data chunk whose bytes are not the image's.
func (c *copier) compareChunks(ctx context.Context, x *chunks.Index) ([]bool, error) {
	n := len(x.Chunks)
	differ := make([]bool, n)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(c.opts.Workers)
	bufs := newBufPool(c.opts.Workers, readGroup+int(x.ChunkSize))
	for i := 0; i < n; {
		if x.Chunks[i].Zero {
			i++
			continue
		}
		j := i
		for j+1 < n && !x.Chunks[j+1].Zero && int64(j+2-i)*x.ChunkSize <= readGroup {
			j++
		}
		first, last := i, j
		i = j + 1
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error {
			off, _ := x.Span(first)
			lo, ln := x.Span(last)
			end := lo + ln
			buf := bufs.get()
			defer bufs.put(buf)
			// Whole blocks, for O_DIRECT (the image's end may not be).
			rd := (end - off + c.bs - 1) / c.bs * c.bs
			if _, err := c.dev.ReadAt(buf[:rd], off); err != nil {
				return fmt.Errorf("reading the target at offset %d to compare it with the image: %w", off, err)
			}
			for k := first; k <= last; k++ {
				ko, kn := x.Span(k)
				p := buf[ko-off : ko-off+kn]
				c.delta.compared.Add(1)
				if sha256.Sum256(p) != x.Chunks[k].Sum {
					differ[k] = true
					continue
				}
				c.delta.equal.Add(1)
				h := c.keepHead(ko, p, kn) // the head is rewritten last
				c.done.Add(kn - h)
			}
			return gctx.Err()
		})
	}
	if err := g.Wait(); err != nil {
		return nil, c.interrupted(err)
	}
	return differ, ctx.Err()
}

// fetchChunks fetches, decodes, checks and writes the chunks that differ,
// adjacent ones with one Range request.
func (c *copier) fetchChunks(ctx context.Context, d *deltaStore, differ []bool) error {
	x := d.x
	n := len(x.Chunks)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(c.opts.Workers)
	span := max(fetchGroup/x.ChunkSize, 1) // chunks per group
	bufs := newBufPool(c.opts.Workers, int(span*x.ChunkSize))
	for i := 0; i < n; {
		if !differ[i] {
			i++
			continue
		}
		// Coalesce: chunks that differ, and zero chunks between them
		// (no packed bytes), make one contiguous range.
		j, packed := i, x.Chunks[i].Len
		for k := i + 1; k < n && int64(k-i) < span && (differ[k] || x.Chunks[k].Zero) && packed+x.Chunks[k].Len <= fetchGroup; k++ {
			packed += x.Chunks[k].Len
			if differ[k] {
				j = k
			}
		}
		first, last := i, j
		i = j + 1
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error {
			from := x.Chunks[first].Off
			to := x.Chunks[last].Off + x.Chunks[last].Len
			raw := make([]byte, to-from)
			if err := d.read(raw, from); err != nil {
				return fmt.Errorf("fetching chunks %d-%d from %s: %w", first, last, d.src.Name(), err)
			}
			base, _ := x.Span(first)
			buf := bufs.get()
			defer bufs.put(buf)
			// Decode every chunk that differs, then write each run of
			// them with one write.
			for k := first; k <= last; k++ {
				if !differ[k] {
					continue
				}
				ck := x.Chunks[k]
				off, n := x.Span(k)
				c.delta.fetched.Add(1)
				if err := x.Decode(k, raw[ck.Off-from:ck.Off-from+ck.Len], buf[off-base:off-base+n]); err != nil {
					return &errStoreBroken{err}
				}
			}
			for k := first; k <= last; {
				if !differ[k] {
					k++
					continue
				}
				e := k
				for e+1 <= last && differ[e+1] {
					e++
				}
				off, _ := x.Span(k)
				eo, en := x.Span(e)
				if err := c.putChunk(off, buf[off-base:eo+en-base]); err != nil {
					return err
				}
				c.delta.written.Add(int64(e - k + 1))
				k = e + 1
			}
			return gctx.Err()
		})
	}
	if err := g.Wait(); err != nil {
		var sb *errStoreBroken
		if errors.As(err, &sb) {
			return err
		}
		return c.interrupted(err)
	}
	return ctx.Err()
}

// putChunk writes decoded chunks (their head part kept for writeHead),
// recorded for verify like a full flash's segments.
func (c *copier) putChunk(off int64, p []byte) error {
	if c.opts.Record {
		c.record(off, p)
	}
	h := c.keepHead(off, p, int64(len(p)))
	if h < int64(len(p)) {
		return c.write(off+h, p[h:])
	}
	return nil
}

// bufPool keeps up to n aligned buffers of one size for reuse.
type bufPool struct {
	free chan []byte
	size int
}

func newBufPool(n, size int) *bufPool { return &bufPool{free: make(chan []byte, n), size: size} }

func (p *bufPool) get() []byte {
	select {
	case b := <-p.free:
		return b
	default:
		return alignedBuf(p.size)
	}
}

func (p *bufPool) put(b []byte) {
	select {
	case p.free <- b:
	default:
	}
}

// deltaNote is the one-line summary of a delta flash.
func deltaNote(st *copyStats) string {
	return fmt.Sprintf("delta flash: %d of %d data chunks already on the target (and %d zero chunks, zeroed); fetched %s, wrote %s",
		st.ChunksEqual, st.ChunksTotal-st.ChunksZero, st.ChunksZero, formatBytes(st.Fetched), formatBytes(st.Written))
}

// deltaImage runs copyDelta with progress events and the head written
// last, like copyImage.
func deltaImage(ctx context.Context, d *deltaStore, dev Device, opts copyOptions) (*copyStats, error) {
	c := newCopier(dev, opts)
	start := time.Now()
	stop := c.reportProgress(start)
	sum, err := c.copyDelta(ctx, d)
	if err == nil {
		err = c.writeHead()
	}
	stop()
	if err == nil {
		c.emitProgress(start)
	}
	st := &copyStats{
		Total: d.x.ImageSize, Written: c.written.Load(), Zeroed: c.zeroed.Load(),
		ZeroMethod: c.method, SHA256: sum, Segments: c.segments,
		PartitionTable: layout.HeadScheme(c.head[:c.headLen]),
		Delta:          true, Fetched: d.fetched.Load(),
	}
	if c.delta != nil {
		st.ChunksTotal, st.ChunksEqual, st.ChunksZero = c.delta.total.Load(), c.delta.equal.Load(), c.delta.zero
		st.ChunksFetched, st.ChunksWritten = c.delta.fetched.Load(), c.delta.written.Load()
	}
	return st, err
}
