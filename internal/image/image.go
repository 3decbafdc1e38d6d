// Package image recognises image formats by their magic bytes and decodes
// them natively: raw, zstd, gzip, xz, bzip2 and qcow2 (v2/v3, zlib and
// zstd clusters). Random-access formats (raw files, qcow2) expose an extent
// map so the flash engine writes only data and zeroes the rest cheaply.
package image

import (
	"io"
)

// Format names an image encoding. The string is what users see in
// `bty list images` and `bty inspect image`.
type Format string

// The supported formats.
const (
	Raw   Format = "raw"
	Zstd  Format = "zst"
	Gzip  Format = "gz"
	Xz    Format = "xz"
	Bzip2 Format = "bz2"
	Qcow2 Format = "qcow2"
)

// Image is an opened, decodable image. Every Image is also either a
// RandomAccess or a Stream; the engine type-switches on that.
type Image interface {
	Format() Format
	// Size is the decoded (virtual) size in bytes, -1 when it cannot be
	// known before decoding ends (gz, bz2, zst without content size).
	Size() int64
	Close() error
}

// Extent describes [Start, Start+Length) of the decoded image.
type Extent struct {
	Start  int64
	Length int64
	// Zero is set when the range is known to read as zeros without
	// reading it (a hole, an unallocated or zero qcow2 cluster).
	Zero bool
}

// RandomAccess is implemented by raw files and qcow2 images.
type RandomAccess interface {
	Image
	io.ReaderAt
	// Extent reports the status of the longest run starting at start with
	// the same status, at most length bytes long.
	Extent(start, length int64) (Extent, error)
}

// Stream is implemented by compressed streams (and raw over HTTP): Read
// returns decoded bytes in order. A stream that ends early is an error that
// names the offset, never a silent io.EOF.
type Stream interface {
	Image
	io.Reader
}
