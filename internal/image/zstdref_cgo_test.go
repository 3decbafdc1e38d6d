//go:build cgo

package image

import (
	"testing"

	ddzstd "github.com/DataDog/zstd"
)

// zstdReference decodes b with the reference zstd library (1.5.7, through
// cgo): the decoder the other zstd decoders are judged against.
func zstdReference(b []byte) ([]byte, error) { return ddzstd.Decompress(nil, b) }

const haveZstdReference = true

// TestZstdZeroOffsetReference: the reference library refuses the
// offset-0 frame the test builds and decodes its valid variant to the
// same bytes as bty, so the frame is what the test says it is.
func TestZstdZeroOffsetReference(t *testing.T) {
	bad, good := off0Frames(t)
	if out, err := zstdReference(bad); err == nil {
		t.Fatalf("the reference decodes the offset-0 frame (%x)", out)
	}
	out, err := zstdReference(good)
	if err != nil || len(out) != 7 {
		t.Fatalf("reference on the valid frame: %x, %v", out, err)
	}
}
