package chunks

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"
)

// FuzzParse: an index off the network never panics Parse, and one it
// accepts encodes back to the same bytes (nothing is read loosely).
func FuzzParse(f *testing.F) {
	for _, size := range []int64{64 << 10, 300 << 10} {
		path := filepath.Join(f.TempDir(), "seed.btyc")
		x, err := Build(context.Background(), bytes.NewReader(testImage(size, uint64(size))), path, BuildOptions{ChunkSize: 64 << 10})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(x.Marshal())
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		x, err := Parse(b)
		if err != nil {
			return
		}
		if got := x.Marshal(); !bytes.Equal(got, b[:len(got)]) {
			t.Fatalf("accepted an index that does not round-trip")
		}
		for i := range x.Chunks {
			if off, n := x.Span(i); off < 0 || n <= 0 || n > x.ChunkSize {
				t.Fatalf("chunk %d spans %d+%d", i, off, n)
			}
		}
	})
}
