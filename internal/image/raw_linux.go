package image

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// rawFile is a raw image in a local file: random access, with holes found
// by SEEK_DATA/SEEK_HOLE reported as Zero extents.
type rawFile struct {
	f    *os.File
	name string
	size int64
}

var _ RandomAccess = (*rawFile)(nil)

func (r *rawFile) Format() Format { return Raw }
func (r *rawFile) Size() int64    { return r.size }

// Close does nothing: the file belongs to the source.
func (r *rawFile) Close() error { return nil }

// ReadAt reads with pread, safe for concurrent use.
func (r *rawFile) ReadAt(p []byte, off int64) (int, error) {
	if off >= r.size {
		return 0, io.EOF
	}
	if rem := r.size - off; int64(len(p)) > rem {
		n, err := r.f.ReadAt(p[:rem], off)
		if err == nil {
			err = io.EOF
		}
		return n, err
	}
	return r.f.ReadAt(p, off)
}

// seek runs lseek(2) on the descriptor. It moves the shared file offset,
// which nothing else uses for a raw local image (reads are pread).
func (r *rawFile) seek(off int64, whence int) (int64, error) {
	for {
		n, err := unix.Seek(int(r.f.Fd()), off, whence)
		if err == unix.EINTR {
			continue
		}
		return n, err
	}
}

func (r *rawFile) Extent(start, length int64) (Extent, error) {
	if start < 0 || length <= 0 || start >= r.size {
		return Extent{}, fmt.Errorf("%s: extent [%d, +%d) outside the image (size %d)", r.name, start, length, r.size)
	}
	end := min(start+length, r.size)
	data, err := r.seek(start, unix.SEEK_DATA)
	switch {
	case errors.Is(err, unix.ENXIO):
		// No data at or after start: a hole to the end.
		return Extent{Start: start, Length: end - start, Zero: true}, nil
	case errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP):
		// The file system cannot tell: all data.
		return Extent{Start: start, Length: end - start}, nil
	case err != nil:
		return Extent{}, fmt.Errorf("%s: SEEK_DATA at %d: %w", r.name, start, err)
	}
	if data > start {
		return Extent{Start: start, Length: min(data, end) - start, Zero: true}, nil
	}
	hole, err := r.seek(start, unix.SEEK_HOLE)
	if err != nil {
		return Extent{}, fmt.Errorf("%s: SEEK_HOLE at %d: %w", r.name, start, err)
	}
	return Extent{Start: start, Length: min(max(hole, start+1), end) - start}, nil
}

// allocated sums the data extents.
func allocatedBytes(ra RandomAccess) (int64, error) {
	var total int64
	for off := int64(0); off < ra.Size(); {
		e, err := ra.Extent(off, ra.Size()-off)
		if err != nil {
			return 0, err
		}
		if !e.Zero {
			total += e.Length
		}
		off += e.Length
	}
	return total, nil
}
