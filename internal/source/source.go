// Package source opens what an image is read from: a local path or an
// http(s) URL. URL sources stream with no temp file, resume an interrupted
// transfer with Range (bounded retries) and offer random access through
// range reads when the server supports them (qcow2 needs it).
//
// Resuming trusts only proof: a 206 whose Content-Range starts where the
// stream stopped, for the same ETag (or Last-Modified) and size. A server
// that ignores Range and answers 200 is still resumed when its validator
// proves the file unchanged, by reading and discarding the bytes already
// delivered; with no validator that is an error ("server does not support
// resuming"), and a changed validator or size is ErrChanged. A stream that
// ends short after the retries is an error wrapping io.ErrUnexpectedEOF,
// never a silent EOF.
package source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"time"
)

// Source is the raw (still encoded) bytes of an image.
type Source interface {
	// Name is what to show the user: the path, or the URL without
	// credentials or query string.
	Name() string
	// Size is the length of the encoded bytes, -1 when unknown.
	Size() int64
	// Open returns a sequential reader from offset 0. For URLs it resumes
	// transparently after a dropped connection (Range + If-Range, bounded
	// retries). A stream that ends before Size bytes is an error
	// (io.ErrUnexpectedEOF wrapped with the offset), never a silent EOF.
	Open(ctx context.Context) (io.ReadCloser, error)
	// ReaderAt returns random access when the source supports it (a local
	// file; an HTTP server that honours Range), else nil. Reads past the
	// end return io.EOF as io.ReaderAt requires.
	ReaderAt() io.ReaderAt
	// Close releases the source.
	Close() error
}

// Filer is implemented by local sources; the image layer uses the file for
// SEEK_DATA/SEEK_HOLE and to resolve a qcow2 backing file next to it.
type Filer interface {
	File() *os.File
}

// Options tune URL sources. The zero value is usable.
type Options struct {
	// Client is the HTTP client; nil means a client with sane timeouts
	// (see DefaultClient).
	Client *http.Client
	// Retries bounds how often a dropped transfer is resumed in a row
	// without progress (default 5; negative means none). The count starts
	// over once bytes arrive again.
	Retries int
	// RetryDelay is the first back-off between retries (default 500ms,
	// doubling, at most MaxRetryDelay).
	RetryDelay time.Duration
	// StallTimeout treats a connection that delivers no byte for this long
	// as dropped, so it is resumed instead of hanging (default 1m;
	// negative disables).
	StallTimeout time.Duration
	// BlockSize is the unit ReaderAt fetches from a URL with one range
	// request (default 4 MiB).
	BlockSize int64
	// CacheBlocks bounds how many fetched blocks ReaderAt keeps (LRU,
	// default 16), so its memory is about BlockSize*CacheBlocks plus the
	// blocks being fetched.
	CacheBlocks int
	// Logger receives retry notices; nil discards.
	Logger *slog.Logger
}

// Defaults for the zero Options.
const (
	DefaultRetries      = 5
	DefaultRetryDelay   = 500 * time.Millisecond
	MaxRetryDelay       = 30 * time.Second
	DefaultStallTimeout = time.Minute
	DefaultBlockSize    = 4 << 20
	DefaultCacheBlocks  = 16
)

func (o Options) withDefaults() Options {
	if o.Client == nil {
		o.Client = DefaultClient()
	}
	if o.Retries == 0 {
		o.Retries = DefaultRetries
	} else if o.Retries < 0 {
		o.Retries = 0
	}
	if o.RetryDelay <= 0 {
		o.RetryDelay = DefaultRetryDelay
	}
	if o.StallTimeout == 0 {
		o.StallTimeout = DefaultStallTimeout
	}
	if o.BlockSize <= 0 {
		o.BlockSize = DefaultBlockSize
	}
	if o.CacheBlocks <= 0 {
		o.CacheBlocks = DefaultCacheBlocks
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Open opens ref, a local path or an http(s) URL (see IsURL).
//
// A missing file or a URL answering 404/410 is an error wrapping
// ErrNotFound (and os.ErrNotExist for files). For a URL, Open sends the
// first GET right away, so an unreachable host or an error status fails
// here; that response's body becomes the stream of the first Source.Open.
func Open(ctx context.Context, ref string, opts Options) (Source, error) {
	if IsURL(ref) {
		return openURL(ctx, ref, opts.withDefaults(), opts.Client == nil)
	}
	return OpenFile(ref)
}

// ErrNotFound is returned (wrapped) when a path does not exist or a URL
// answers 404/410.
var ErrNotFound = errors.New("not found")

// IsURL reports whether ref is an http or https URL.
func IsURL(ref string) bool {
	return len(ref) > 7 && (ref[:7] == "http://" || (len(ref) > 8 && ref[:8] == "https://"))
}

// ReadRange fills p with the source's bytes at off, all or an error
// (io.ErrUnexpectedEOF past the end). A URL asks for exactly that range
// with one request, resuming a dropped one like Open does, and bypasses
// ReaderAt's block cache: a chunk store's coalesced ranges are read once.
// ErrNoRanges when the source offers no random access.
func ReadRange(s Source, p []byte, off int64) error {
	if off < 0 || off+int64(len(p)) > s.Size() {
		return fmt.Errorf("reading %s bytes %d-%d: past its end (%d bytes): %w", s.Name(), off, off+int64(len(p))-1, s.Size(), io.ErrUnexpectedEOF)
	}
	if h, ok := s.(*httpSource); ok {
		if h.cache == nil {
			return ErrNoRanges
		}
		h.dropPending()
		return h.cache.readRange(p, off)
	}
	ra := s.ReaderAt()
	if ra == nil {
		return ErrNoRanges
	}
	n, err := ra.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("reading %s at %d: %w", s.Name(), off+int64(n), err)
}

// ErrNoRanges is returned by ReadRange for a source without random
// access (an HTTP server that ignores Range).
var ErrNoRanges = errors.New("the server does not serve byte ranges")

// Redact is ref as it may be shown and logged: a URL without
// credentials, query string or fragment; a path as it is.
func Redact(ref string) string {
	if !IsURL(ref) {
		return ref
	}
	u, err := url.Parse(ref)
	if err != nil {
		return "(an unparsable URL)"
	}
	return redactURL(u)
}
