// Package chunks is bty's chunk store: a decoded image cut into
// fixed-size chunks aligned to disk offsets, each with the sha256 of its
// decoded bytes and a zero flag, each compressed on its own. A delta
// flash hashes the target's chunks and fetches (HTTP Range) and writes
// only the chunks whose hash differs; a full flash decodes the chunks in
// parallel. The format is in docs/reference.md ("Chunk stores").
//
// One file holds everything:
//
//	header   96 bytes: magic "BTYCHNK1", chunk size (u32), flags (u32),
//	         image size (u64), chunk count (u32), reserved (u32), the
//	         decoded image's sha256 (32 bytes), the image file's sha256
//	         (32 bytes, zero when not known); little endian
//	entries  40 bytes each: the chunk's sha256 (32), its packed length
//	         (u32; 0 for a zero chunk), flags (u32: 1 zero, 2 stored raw)
//	checksum sha256 of header and entries (32 bytes)
//	pack     each non-zero chunk, in order: a zstd frame, or its raw
//	         bytes when they do not compress
//
// Fixed-size chunks, not content-defined ones: a block device changes in
// place, so chunk i of the target is compared with chunk i of the image.
package chunks

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"sync"
)

// Format constants.
const (
	Magic      = "BTYCHNK1"
	HeaderSize = 96
	EntrySize  = 40
	SumSize    = sha256.Size

	// DefaultChunkSize is the chunk size bty index and bty-web use (see
	// docs/reference.md for the measurement behind it).
	DefaultChunkSize = 1 << 20
	MinChunkSize     = 64 << 10
	MaxChunkSize     = 64 << 20
	// MaxChunks bounds the entries an index may declare: 16 Mi chunks of
	// 1 MiB is a 16 TiB image, and 640 MiB of entries at most.
	MaxChunks = 1 << 24

	flagZero = 1
	flagRaw  = 2
)

// ErrFormat is wrapped by every error about a malformed chunk store.
var ErrFormat = errors.New("not a valid bty chunk store")

// Chunk is one entry of the index.
type Chunk struct {
	// Sum is the sha256 of the chunk's decoded bytes.
	Sum [SumSize]byte
	// Zero is set when every decoded byte is zero; such a chunk has no
	// bytes in the pack.
	Zero bool
	// Raw is set when the pack holds the chunk's bytes as they are.
	Raw bool
	// Off and Len locate the chunk's packed bytes in the file.
	Off, Len int64
}

// Index describes a chunk store.
type Index struct {
	ChunkSize int64
	// ImageSize is the decoded image's size; the last chunk may be
	// shorter than ChunkSize.
	ImageSize int64
	// SHA256 is the decoded image's sha256 (hex).
	SHA256 string
	// SourceSHA256 is the sha256 of the image file the store was built
	// from (hex; "" when the builder did not know it): a local store is
	// used only for the file it was built from.
	SourceSHA256 string
	Chunks       []Chunk
	// DataOffset is where the pack starts; FileSize is the whole file's
	// length as the index declares it.
	DataOffset, FileSize int64
}

// Span returns chunk i's range on the disk.
func (x *Index) Span(i int) (off, n int64) {
	off = int64(i) * x.ChunkSize
	return off, min(x.ChunkSize, x.ImageSize-off)
}

// IndexSize is the length of the header, entries and checksum of an
// index of count chunks: what ReadIndex reads.
func IndexSize(count int) int64 { return HeaderSize + int64(count)*EntrySize + SumSize }

// countFor is the number of chunks of an image of size bytes.
func countFor(size, chunkSize int64) int64 { return (size + chunkSize - 1) / chunkSize }

// ParseHeader reads the first HeaderSize bytes: the chunk size, image
// size, sha256 and chunk count, bounded, so a caller knows how many bytes
// the whole index is (IndexSize) before reading them.
func ParseHeader(b []byte) (x *Index, count int, err error) {
	if len(b) < HeaderSize {
		return nil, 0, fmt.Errorf("%w: %d bytes, a header is %d", ErrFormat, len(b), HeaderSize)
	}
	if string(b[:8]) != Magic {
		return nil, 0, fmt.Errorf("%w: bad magic %q", ErrFormat, b[:8])
	}
	le := binary.LittleEndian
	cs := int64(le.Uint32(b[8:]))
	flags := le.Uint32(b[12:])
	size := le.Uint64(b[16:])
	n := le.Uint32(b[24:])
	switch {
	case cs < MinChunkSize || cs > MaxChunkSize || bits.OnesCount64(uint64(cs)) != 1:
		return nil, 0, fmt.Errorf("%w: chunk size %d is not a power of two between %d and %d", ErrFormat, cs, MinChunkSize, MaxChunkSize)
	case flags != 0 || le.Uint32(b[28:]) != 0:
		return nil, 0, fmt.Errorf("%w: unknown flags %#x (a newer bty wrote it?)", ErrFormat, flags)
	case size == 0 || size > uint64(MaxChunks)*uint64(cs):
		return nil, 0, fmt.Errorf("%w: image size %d out of range", ErrFormat, size)
	case int64(n) != countFor(int64(size), cs):
		return nil, 0, fmt.Errorf("%w: %d chunks for an image of %d bytes in chunks of %d", ErrFormat, n, size, cs)
	}
	x = &Index{ChunkSize: cs, ImageSize: int64(size), SHA256: hex.EncodeToString(b[32:64])}
	if src := b[64:96]; !bytes.Equal(src, make([]byte, 32)) {
		x.SourceSHA256 = hex.EncodeToString(src)
	}
	return x, int(n), nil
}

// Parse reads a whole index (IndexSize bytes: header, entries, checksum)
// and checks it: the checksum, every entry's flags and lengths. The pack
// is not read; each chunk's bytes are checked by their sum when decoded.
func Parse(b []byte) (*Index, error) {
	x, n, err := ParseHeader(b)
	if err != nil {
		return nil, err
	}
	end := IndexSize(n)
	if int64(len(b)) < end {
		return nil, fmt.Errorf("%w: truncated index (%d of %d bytes)", ErrFormat, len(b), end)
	}
	sum := sha256.Sum256(b[:end-SumSize])
	if !bytes.Equal(sum[:], b[end-SumSize:end]) {
		return nil, fmt.Errorf("%w: the index's checksum does not match (corrupt or truncated)", ErrFormat)
	}
	le := binary.LittleEndian
	x.Chunks = make([]Chunk, n)
	x.DataOffset = end
	off := end
	for i := range x.Chunks {
		e := b[HeaderSize+int64(i)*EntrySize:]
		c := &x.Chunks[i]
		copy(c.Sum[:], e[:32])
		l := int64(le.Uint32(e[32:]))
		f := le.Uint32(e[36:])
		_, span := x.Span(i)
		c.Zero, c.Raw = f&flagZero != 0, f&flagRaw != 0
		switch {
		case f&^(flagZero|flagRaw) != 0 || (c.Zero && c.Raw):
			return nil, fmt.Errorf("%w: chunk %d has unknown flags %#x", ErrFormat, i, f)
		case c.Zero && l != 0:
			return nil, fmt.Errorf("%w: zero chunk %d has %d packed bytes", ErrFormat, i, l)
		case c.Zero && c.Sum != zeroSum(span):
			return nil, fmt.Errorf("%w: zero chunk %d has the sum of other bytes", ErrFormat, i)
		case c.Raw && l != span:
			return nil, fmt.Errorf("%w: raw chunk %d has %d bytes, not %d", ErrFormat, i, l, span)
		case !c.Zero && !c.Raw && (l == 0 || l >= span):
			return nil, fmt.Errorf("%w: chunk %d has a packed length of %d", ErrFormat, i, l)
		}
		c.Off, c.Len = off, l
		off += l
	}
	x.FileSize = off
	return x, nil
}

// ReadIndex reads and checks the index at the start of r (a file or a
// URL's range reader), a store of fileSize bytes. The header is checked
// before the entries are read, so an index off the network allocates no
// more than the store holds: entries that do not fit fileSize, or an
// image larger than maxImage (> 0: the target's size), are refused.
func ReadIndex(r io.ReaderAt, fileSize, maxImage int64) (*Index, error) {
	head := make([]byte, HeaderSize)
	if _, err := r.ReadAt(head, 0); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("%w: shorter than its header", ErrFormat)
		}
		return nil, err
	}
	hx, n, err := ParseHeader(head)
	if err != nil {
		return nil, err
	}
	switch {
	case IndexSize(n) > fileSize:
		return nil, fmt.Errorf("%w: an index of %d chunks does not fit a %d-byte store (truncated)", ErrFormat, n, fileSize)
	case maxImage > 0 && hx.ImageSize > maxImage:
		return nil, &TooLargeError{Image: hx.ImageSize, Max: maxImage}
	}
	b := make([]byte, IndexSize(n))
	copy(b, head)
	if _, err := r.ReadAt(b[HeaderSize:], HeaderSize); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("%w: truncated index", ErrFormat)
		}
		return nil, err
	}
	return Parse(b)
}

// TooLargeError is a store whose image is larger than the target.
type TooLargeError struct{ Image, Max int64 }

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("its image is %d bytes, larger than the target's %d", e.Image, e.Max)
}

// Marshal encodes the index (header, entries, checksum); the pack
// follows it in the file.
func (x *Index) Marshal() []byte {
	n := len(x.Chunks)
	b := make([]byte, IndexSize(n))
	le := binary.LittleEndian
	copy(b, Magic)
	le.PutUint32(b[8:], uint32(x.ChunkSize))
	le.PutUint64(b[16:], uint64(x.ImageSize))
	le.PutUint32(b[24:], uint32(n))
	if sum, err := hex.DecodeString(x.SHA256); err == nil && len(sum) == 32 {
		copy(b[32:], sum)
	}
	if sum, err := hex.DecodeString(x.SourceSHA256); err == nil && len(sum) == 32 {
		copy(b[64:], sum)
	}
	for i, c := range x.Chunks {
		e := b[HeaderSize+i*EntrySize:]
		copy(e, c.Sum[:])
		le.PutUint32(e[32:], uint32(c.Len))
		var f uint32
		if c.Zero {
			f |= flagZero
		}
		if c.Raw {
			f |= flagRaw
		}
		le.PutUint32(e[36:], f)
	}
	end := len(b) - SumSize
	sum := sha256.Sum256(b[:end])
	copy(b[end:], sum[:])
	return b
}

var zeroSums sync.Map // int64 -> [SumSize]byte

// zeroSum is the sha256 of n zero bytes, computed once per size.
func zeroSum(n int64) [SumSize]byte {
	if s, ok := zeroSums.Load(n); ok {
		return s.([SumSize]byte)
	}
	s := sha256.Sum256(make([]byte, n))
	if bits.OnesCount64(uint64(n)) == 1 {
		zeroSums.Store(n, s) // chunk sizes; a last chunk's odd size is not kept
	}
	return s
}
