// Package image recognises image formats by their magic bytes and decodes
// them natively: raw, zstd, gzip, xz, bzip2 and qcow2 (v2/v3, zlib and
// zstd clusters). Random-access formats (raw files, qcow2) expose an extent
// map so the flash engine writes only data and zeroes the rest cheaply.
package image

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"path"
	"strings"
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

// RandomAccess is implemented by raw local files and qcow2 images. ReadAt
// and Extent are safe for concurrent use (the engine reads in parallel
// segments); ReadAt returns io.EOF at or past Size.
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

// Reader returns img's decoded bytes as one sequential reader, first byte
// to last: a Stream as it is (reading consumes it), a RandomAccess read
// through ReadAt from 0 to Size.
func Reader(img Image) (io.Reader, error) {
	switch v := img.(type) {
	case Stream:
		return v, nil
	case RandomAccess:
		return io.NewSectionReader(v, 0, v.Size()), nil
	}
	return nil, fmt.Errorf("image format %s can be neither streamed nor read at random", img.Format())
}

// Canonical file name suffixes per format, used in rename hints.
var canonicalSuffix = map[Format]string{
	Raw: ".img", Zstd: ".img.zst", Gzip: ".img.gz", Xz: ".img.xz", Bzip2: ".img.bz2", Qcow2: ".qcow2",
}

// describe names a format the way error messages do.
var describe = map[Format]string{
	Raw: "raw", Zstd: "zstd", Gzip: "gzip", Xz: "xz", Bzip2: "bzip2", Qcow2: "qcow2",
}

// Options tune Open. The zero value is usable.
type Options struct {
	// Logger receives notes (parallel xz decoding, qcow2 warnings); nil
	// discards.
	Logger *slog.Logger
	// Workers bounds the goroutines decoding xz blocks in parallel;
	// 0 means GOMAXPROCS.
	Workers int
	// BufferBytes bounds the decoded data held ahead of the reader by
	// parallel xz decoding (default 32 MiB). Decoder dictionaries come on
	// top (the worker count is lowered so they stay under 64 MiB).
	BufferBytes int64
}

func (o Options) logger() *slog.Logger {
	if o.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return o.Logger
}

// Info describes an image for `bty list images` and `bty inspect image`.
type Info struct {
	Name      string `json:"name"`
	Path      string `json:"path"`
	Format    Format `json:"format"`
	SizeBytes int64  `json:"size_bytes"`
	// VirtualSizeBytes is what lands on the disk; nil when unknown before
	// decoding (gz, bz2, zst without content sizes, xz without an index).
	VirtualSizeBytes *int64 `json:"virtual_size_bytes"`
	// Detail is one of *QcowDetail, *ZstdDetail, *XzDetail, *RawDetail.
	Detail any `json:"detail,omitempty"`
	// Error says why the image cannot be used (List keeps such files).
	Error string `json:"error,omitempty"`
}

// QcowDetail is Info.Detail for qcow2.
type QcowDetail struct {
	Version     int    `json:"version"`
	ClusterSize int64  `json:"cluster_size"`
	Compression string `json:"compression"`  // zlib or zstd
	BackingFile string `json:"backing_file"` // "" when there is none
	// AllocatedBytes is the guest data the image (with its backing file)
	// provides: everything but unallocated and zero clusters.
	AllocatedBytes int64 `json:"allocated_bytes"`
}

// ZstdDetail is Info.Detail for zst.
type ZstdDetail struct {
	// FrameContentSize is the first frame's declared content size.
	FrameContentSize *int64 `json:"frame_content_size,omitempty"`
	// Frames is the number of frames (0 when they were not walked, as
	// for remote sources).
	Frames int `json:"frames,omitempty"`
}

// XzDetail is Info.Detail for xz, read from the stream indexes.
type XzDetail struct {
	Streams          int   `json:"streams"`
	Blocks           int   `json:"blocks"`
	UncompressedSize int64 `json:"uncompressed_size"`
}

// RawDetail is Info.Detail for raw local files.
type RawDetail struct {
	// AllocatedBytes is the data not in holes (SEEK_DATA/SEEK_HOLE).
	AllocatedBytes int64 `json:"allocated_bytes"`
}

// Detect recognises a format by the magic bytes at the start of head.
// Anything unrecognised is Raw (raw images have no magic).
func Detect(head []byte) Format {
	switch {
	case bytes.HasPrefix(head, []byte("QFI\xfb")):
		return Qcow2
	case bytes.HasPrefix(head, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return Zstd
	case len(head) >= 4 && head[0]&0xf0 == 0x50 && head[1] == 0x2a && head[2] == 0x4d && head[3] == 0x18:
		// A zstd skippable frame (magic 0x184D2A50-0x184D2A5F, little
		// endian), as pzstd writes first.
		return Zstd
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		return Gzip
	case bytes.HasPrefix(head, []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}):
		return Xz
	case len(head) >= 4 && head[0] == 'B' && head[1] == 'Z' && head[2] == 'h' && head[3] >= '1' && head[3] <= '9':
		return Bzip2
	}
	return Raw
}

// suffixes maps name suffixes to formats, longest first.
var suffixes = []struct {
	suffix string
	format Format
}{
	{".img.zst", Zstd}, {".img.gz", Gzip}, {".img.xz", Xz}, {".img.bz2", Bzip2},
	{".qcow2", Qcow2}, {".qcow", Qcow2},
	{".img", Raw}, {".raw", Raw}, {".iso", Raw},
	{".zst", Zstd}, {".gz", Gzip}, {".xz", Xz}, {".bz2", Bzip2},
}

// FormatFromName returns the format a file or URL name's suffix promises
// (case-insensitive; a URL's query or fragment is ignored), false for
// unknown suffixes.
func FormatFromName(name string) (Format, bool) {
	f, _, ok := splitName(name)
	return f, ok
}

// baseName is the last element of a path or URL (without query).
func baseName(name string) string {
	_, stem, ok := splitName(name)
	if !ok {
		return stem
	}
	if i := strings.IndexAny(name, "?#"); i >= 0 && strings.Contains(name, "://") {
		name = name[:i]
	}
	return path.Base(name)
}

// splitName returns the promised format and the base name without its
// format suffix.
func splitName(name string) (Format, string, bool) {
	if i := strings.IndexAny(name, "?#"); i >= 0 && strings.Contains(name, "://") {
		name = name[:i]
	}
	base := path.Base(strings.ReplaceAll(name, "\\", "/"))
	lower := strings.ToLower(base)
	for _, s := range suffixes {
		if strings.HasSuffix(lower, s.suffix) && len(lower) > len(s.suffix) {
			return s.format, base[:len(base)-len(s.suffix)], true
		}
	}
	return "", base, false
}

// checkName returns the error for a name whose suffix promises another
// format than the magic shows, with the name it should have.
func checkName(name string, actual Format) error {
	promised, stem, ok := splitName(name)
	if !ok || promised == actual {
		return nil
	}
	base := baseName(name)
	suffix := canonicalSuffix[actual]
	if actual != Raw && actual != Qcow2 && promised != Raw && promised != Qcow2 && !strings.Contains(strings.ToLower(base), ".img") {
		suffix = strings.TrimPrefix(suffix, ".img")
	}
	if actual == Raw {
		return fmt.Errorf("%s is not %s data (it does not start with the %s magic bytes; raw images have none): if it is a raw image, rename it to %s%s",
			base, describe[promised], describe[promised], stem, suffix)
	}
	return fmt.Errorf("%s is %s data, not %s: rename it to %s%s", base, describe[actual], describe[promised], stem, suffix)
}
