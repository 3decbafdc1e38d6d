package chunks

import (
	"crypto/sha256"
	"fmt"
	"sync"

	"github.com/klauspost/compress/zstd"
)

var decoders = sync.Pool{New: func() any {
	d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(false),
		zstd.WithDecoderMaxMemory(MaxChunkSize))
	if err != nil {
		panic(err) // only bad options fail here
	}
	return d
}}

// Decode decodes chunk i's packed bytes into dst (len: the chunk's span)
// and checks them against the chunk's sum: a chunk whose bytes do not
// hash to its sum is an error, never written.
func (x *Index) Decode(i int, packed, dst []byte) error {
	c := &x.Chunks[i]
	_, span := x.Span(i)
	if int64(len(dst)) != span {
		return fmt.Errorf("chunk %d: buffer of %d bytes for %d", i, len(dst), span)
	}
	switch {
	case c.Zero:
		clear(dst)
	case c.Raw:
		if int64(len(packed)) != span {
			return fmt.Errorf("%w: chunk %d: %d raw bytes for %d", ErrFormat, i, len(packed), span)
		}
		copy(dst, packed)
	default:
		d := decoders.Get().(*zstd.Decoder)
		out, err := d.DecodeAll(packed, dst[:0])
		decoders.Put(d)
		if err != nil {
			return fmt.Errorf("%w: chunk %d does not decode: %v", ErrFormat, i, err)
		}
		if int64(len(out)) != span || &out[0] != &dst[0] {
			return fmt.Errorf("%w: chunk %d decodes to %d bytes, not %d", ErrFormat, i, len(out), span)
		}
	}
	if sha256.Sum256(dst) != c.Sum {
		return fmt.Errorf("%w: chunk %d does not match its sha256 (corrupt store, or it changed while read)", ErrFormat, i)
	}
	return nil
}
