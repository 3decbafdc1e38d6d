package chunks

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sync/errgroup"
)

// BuildOptions tune Build.
type BuildOptions struct {
	// ChunkSize defaults to DefaultChunkSize.
	ChunkSize int64
	// Workers compress chunks in parallel (default 2).
	Workers int
	// Level is the zstd level (default zstd.SpeedDefault, level 3).
	Level zstd.EncoderLevel
	// Progress, when set, is called with the decoded bytes done so far.
	Progress func(done int64)
	// SourceSHA256 is the image file's sha256 (hex), recorded in the
	// header; "" when not known.
	SourceSHA256 string
}

// Build reads the decoded image from r to its end and writes its chunk
// store to path (through a temporary file beside it, renamed into place
// once complete, so a reader never sees half a store). It returns the
// index; its SHA256 is the decoded image's sha256.
func Build(ctx context.Context, r io.Reader, path string, opts BuildOptions) (*Index, error) {
	if opts.ChunkSize == 0 {
		opts.ChunkSize = DefaultChunkSize
	}
	if opts.ChunkSize < MinChunkSize || opts.ChunkSize > MaxChunkSize || opts.ChunkSize&(opts.ChunkSize-1) != 0 {
		return nil, fmt.Errorf("chunk size %d: use a power of two between %d and %d", opts.ChunkSize, MinChunkSize, MaxChunkSize)
	}
	if opts.Workers <= 0 {
		opts.Workers = 2
	}
	if opts.Level == 0 {
		opts.Level = zstd.SpeedDefault
	}
	dir := filepath.Dir(path)
	pack, err := os.CreateTemp(dir, "."+filepath.Base(path)+".pack-*")
	if err != nil {
		return nil, fmt.Errorf("creating the chunk store: %w", err)
	}
	defer os.Remove(pack.Name())
	defer pack.Close()

	x, err := buildPack(ctx, r, pack, opts)
	if err != nil {
		return nil, err
	}
	x.SourceSHA256 = opts.SourceSHA256
	out, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("creating the chunk store: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			out.Close()
			os.Remove(out.Name())
		}
	}()
	head := x.Marshal()
	if _, err := out.Write(head); err != nil {
		return nil, fmt.Errorf("writing the chunk store: %w", err)
	}
	if _, err := pack.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	if _, err := io.Copy(out, pack); err != nil { // copy_file_range
		return nil, fmt.Errorf("writing the chunk store: %w", err)
	}
	if err := out.Sync(); err != nil {
		return nil, fmt.Errorf("writing the chunk store: %w", err)
	}
	if err := out.Close(); err != nil {
		return nil, fmt.Errorf("writing the chunk store: %w", err)
	}
	if err := os.Rename(out.Name(), path); err != nil {
		return nil, fmt.Errorf("writing the chunk store: %w", err)
	}
	ok = true
	// Offsets as a reader sees them: after the index.
	x.DataOffset = int64(len(head))
	off := x.DataOffset
	for i := range x.Chunks {
		x.Chunks[i].Off = off
		off += x.Chunks[i].Len
	}
	x.FileSize = off
	return x, nil
}

type buildItem struct {
	buf  []byte // decoded bytes (len = chunk's span)
	done chan struct{}
	out  []byte // packed bytes (nil: zero chunk)
	sum  [SumSize]byte
	zero bool
	raw  bool
}

// buildPack cuts r into chunks, hashes and compresses them on
// opts.Workers goroutines, and writes the packed bytes to w in order.
func buildPack(ctx context.Context, r io.Reader, w io.Writer, opts BuildOptions) (*Index, error) {
	cs := opts.ChunkSize
	x := &Index{ChunkSize: cs}
	whole := sha256.New()
	g, gctx := errgroup.WithContext(ctx)
	work := make(chan *buildItem, opts.Workers)
	order := make(chan *buildItem, opts.Workers*2)
	pool := sync.Pool{New: func() any { b := make([]byte, cs); return &b }}

	for range opts.Workers {
		enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(opts.Level), zstd.WithEncoderConcurrency(1),
			zstd.WithEncoderCRC(false), zstd.WithZeroFrames(true))
		if err != nil {
			return nil, err
		}
		g.Go(func() error {
			defer enc.Close()
			for it := range work {
				it.sum = sha256.Sum256(it.buf)
				if isZero(it.buf) {
					it.zero = true
				} else {
					out := enc.EncodeAll(it.buf, make([]byte, 0, len(it.buf)/2))
					if len(out) >= len(it.buf) {
						out, it.raw = append(out[:0], it.buf...), true
					}
					it.out = out
				}
				close(it.done)
			}
			return nil
		})
	}
	// Writer: in order, into the pack and the whole-image hash.
	g.Go(func() error {
		for it := range order {
			select {
			case <-it.done:
			case <-gctx.Done():
				return gctx.Err()
			}
			whole.Write(it.buf)
			if it.out != nil {
				if _, err := w.Write(it.out); err != nil {
					return fmt.Errorf("writing the chunk store: %w", err)
				}
			}
			x.Chunks = append(x.Chunks, Chunk{Sum: it.sum, Zero: it.zero, Raw: it.raw, Len: int64(len(it.out))})
			x.ImageSize += int64(len(it.buf))
			b := it.buf[:cs]
			pool.Put(&b)
			if opts.Progress != nil {
				opts.Progress(x.ImageSize)
			}
		}
		return nil
	})
	// Reader: cut the stream.
	readErr := func() error {
		defer close(order)
		defer close(work)
		for i := 0; ; i++ {
			if err := gctx.Err(); err != nil {
				return err
			}
			buf := *pool.Get().(*[]byte)
			n, err := io.ReadFull(r, buf)
			if n > 0 {
				it := &buildItem{buf: buf[:n], done: make(chan struct{})}
				select {
				case order <- it:
				case <-gctx.Done():
					return gctx.Err()
				}
				select {
				case work <- it:
				case <-gctx.Done():
					return gctx.Err()
				}
			}
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("reading the image: %w", err)
			}
			if i+1 >= MaxChunks {
				return fmt.Errorf("the image is larger than %d chunks of %d bytes", MaxChunks, cs)
			}
		}
	}()
	if err := g.Wait(); err != nil {
		return nil, err
	}
	if readErr != nil {
		return nil, readErr
	}
	if x.ImageSize == 0 {
		return nil, errors.New("the image is empty")
	}
	x.SHA256 = hex.EncodeToString(whole.Sum(nil))
	return x, nil
}

var zeroBuf = make([]byte, 1<<20)

func isZero(p []byte) bool {
	for len(p) > 0 {
		n := min(len(p), 1<<20)
		if string(p[:n]) != string(zeroBuf[:n]) {
			return false
		}
		p = p[n:]
	}
	return true
}
