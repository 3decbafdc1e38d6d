// Package source opens what an image is read from: a local path or an
// http(s) URL. URL sources stream with no temp file, resume an interrupted
// transfer with Range (bounded retries) and offer random access through
// range reads when the server supports them (qcow2 needs it).
package source

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
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
	// Client is the HTTP client; nil means a client with sane timeouts.
	Client *http.Client
	// Retries bounds how often a dropped transfer is resumed (default 5).
	Retries int
	// RetryDelay is the first back-off between retries (default 500ms,
	// doubling).
	RetryDelay time.Duration
	// Logger receives retry notices; nil discards.
	Logger *slog.Logger
}

// ErrNotFound is returned (wrapped) when a path does not exist or a URL
// answers 404/410.
var ErrNotFound = errors.New("not found")

// IsURL reports whether ref is an http or https URL.
func IsURL(ref string) bool {
	return len(ref) > 7 && (ref[:7] == "http://" || (len(ref) > 8 && ref[:8] == "https://"))
}
