package source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/btyproject/bty/internal/ctxio"
)

// fileSource is a local image file (or block device).
type fileSource struct {
	path string
	f    *os.File
	size int64
}

var (
	_ Source = (*fileSource)(nil)
	_ Filer  = (*fileSource)(nil)
)

// notFoundError names a missing path and matches both ErrNotFound and the
// underlying os error (so errors.Is(err, os.ErrNotExist) holds too).
type notFoundError struct {
	what   string // "image file PATH"
	detail string // shown after "not found"
	err    error
}

func (e *notFoundError) Error() string {
	return e.what + ": " + ErrNotFound.Error() + " (" + e.detail + ")"
}
func (e *notFoundError) Unwrap() []error { return []error{ErrNotFound, e.err} }

// OpenFile opens a local image file (or block device) as a Source, which
// is also a Filer. Open calls it for a ref that is not a URL.
func OpenFile(path string) (Source, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, &notFoundError{what: "image file " + path, detail: "check the path", err: err}
		}
		return nil, fmt.Errorf("opening image %s: %w", path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("opening image %s: %w", path, err)
	}
	size := fi.Size()
	switch {
	case fi.IsDir():
		f.Close()
		return nil, fmt.Errorf("opening image %s: is a directory, give the image file inside it", path)
	case fi.Mode()&os.ModeDevice != 0:
		// Block devices stat as size 0; their end tells the size.
		end, err := f.Seek(0, io.SeekEnd)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("opening image %s: finding device size: %w", path, err)
		}
		size = end
	case !fi.Mode().IsRegular():
		f.Close()
		return nil, fmt.Errorf("opening image %s: not a regular file or block device (%s)", path, fi.Mode().Type())
	}
	return &fileSource{path: path, f: f, size: size}, nil
}

func (s *fileSource) Name() string          { return s.path }
func (s *fileSource) Size() int64           { return s.size }
func (s *fileSource) ReaderAt() io.ReaderAt { return s.f }
func (s *fileSource) File() *os.File        { return s.f }
func (s *fileSource) Close() error          { return s.f.Close() }

// Open returns an independent reader from offset 0; it stops with ctx's
// error once ctx is done.
func (s *fileSource) Open(ctx context.Context) (io.ReadCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return io.NopCloser(ctxio.NewReader(ctx, io.NewSectionReader(s.f, 0, s.size))), nil
}
