package image

import (
	"testing"

	"github.com/btyproject/bty/internal/imagetest"
)

// TestZstdZeroOffsetReference: the reference library refuses the
// offset-0 frame the test builds and decodes its valid variant to the
// same bytes as bty, so the frame is what the test says it is.
func TestZstdZeroOffsetReference(t *testing.T) {
	if !imagetest.HaveZstdReference {
		t.Skip("the reference zstd library needs cgo")
	}
	bad, good := off0Frames(t)
	if out, err := imagetest.ZstdReference(bad); err == nil {
		t.Fatalf("the reference decodes the offset-0 frame (%x)", out)
	}
	out, err := imagetest.ZstdReference(good)
	if err != nil || len(out) != 7 {
		t.Fatalf("reference on the valid frame: %x, %v", out, err)
	}
}
