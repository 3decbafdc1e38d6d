//go:build cgo

package imagetest

import (
	"errors"
	"strings"

	ddzstd "github.com/DataDog/zstd"
)

// HaveZstdReference says whether ZstdReference decodes (it needs cgo).
const HaveZstdReference = true

// ZstdReference decodes b with the reference zstd library, libzstd 1.5.7
// (through cgo): what the other zstd decoders are judged against. The
// zstd CLI of Debian 12 is 1.5.4, which accepts frames 1.5.6 refuses
// (an offset of 0) and refuses valid ones (golden zeroSeq_2B).
//
// It calls ZSTD_decompress (one-shot), which decodes every frame and
// refuses a cut one, into a buffer grown until the output fits (the
// wrapper's Decompress sizes it from the first frame and fails on
// concatenated frames; its stream reader stops after one frame). One
// leniency of that entry point is taken back: it decodes an RLE block
// larger than the frame allows (RFC 8878, Block_Maximum_Size), which
// libzstd's streaming decoder, the zstd CLI and bty refuse.
func ZstdReference(b []byte) ([]byte, error) {
	if len(b) == 0 {
		return nil, errors.New("empty input")
	}
	for size := max(1<<20, 8*len(b)); ; size *= 2 {
		dst := make([]byte, size)
		n, err := ddzstd.DecompressInto(dst, b)
		if err != nil && strings.Contains(err.Error(), "too small") && size < 1<<30 {
			continue
		}
		if err != nil {
			return nil, err
		}
		if err := zstdBlockSizes(b); err != nil {
			return nil, err
		}
		return dst[:n], nil
	}
}
