package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/btyproject/bty/internal/imagetest"
)

var streamCases = []string{"zst", "zst-multiframe", "gz", "gz-multimember", "xz", "xz-multiblock", "xz-multistream", "bz2"}

// writeAllTo decodes the image at path with WriteTo into w.
func writeAllTo(t *testing.T, path string, w io.Writer) (int64, error) {
	t.Helper()
	img, err := Open(context.Background(), openLocal(t, path), Options{})
	if err != nil {
		return 0, err
	}
	defer img.Close()
	wt, ok := img.(io.WriterTo)
	if !ok {
		t.Fatalf("%T is not an io.WriterTo", img)
	}
	return wt.WriteTo(w)
}

func TestWriteTo(t *testing.T) {
	set := imagetest.Corpus(t)
	for _, c := range streamCases {
		t.Run(c, func(t *testing.T) {
			h := sha256.New()
			n, err := writeAllTo(t, set.Files[c], h)
			if err != nil {
				t.Fatal(err)
			}
			if sum := hex.EncodeToString(h.Sum(nil)); n != set.Size || sum != set.RawSHA256 {
				t.Errorf("wrote %d bytes with sha256 %s, want %d bytes with %s", n, sum, set.Size, set.RawSHA256)
			}
		})
	}
}

// WriteTo after some Reads goes on where they stopped.
func TestWriteToAfterRead(t *testing.T) {
	set := imagetest.Corpus(t)
	for _, c := range []string{"zst", "xz-multiblock", "gz"} {
		t.Run(c, func(t *testing.T) {
			img, err := Open(context.Background(), openLocal(t, set.Files[c]), Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer img.Close()
			h := sha256.New()
			head := make([]byte, 3<<20+17)
			if _, err := io.ReadFull(img.(Stream), head); err != nil {
				t.Fatal(err)
			}
			h.Write(head)
			n, err := img.(io.WriterTo).WriteTo(h)
			if err != nil {
				t.Fatal(err)
			}
			if sum := hex.EncodeToString(h.Sum(nil)); int64(len(head))+n != set.Size || sum != set.RawSHA256 {
				t.Errorf("decoded %d bytes with sha256 %s, want %d bytes with %s", int64(len(head))+n, sum, set.Size, set.RawSHA256)
			}
			if k, err := img.(Stream).Read(head); k != 0 || err != io.EOF {
				t.Errorf("Read after WriteTo = %d, %v; want 0, EOF", k, err)
			}
		})
	}
}

func TestWriteToTruncatedCorrupt(t *testing.T) {
	set := imagetest.Corpus(t)
	for _, c := range streamCases {
		st, err := os.Stat(set.Files[c])
		if err != nil {
			t.Fatal(err)
		}
		paths := map[string]string{
			"half":    imagetest.Truncate(t, set.Files[c], st.Size()/2),
			"end-7":   imagetest.Truncate(t, set.Files[c], st.Size()-7),
			"corrupt": imagetest.Corrupt(t, set.Files[c], 3<<20, bytes.Repeat([]byte{0x5a}, 64)),
		}
		for name, p := range paths {
			t.Run(c+"/"+name, func(t *testing.T) {
				_, err := writeAllTo(t, p, io.Discard)
				if err == nil {
					t.Fatal("decoded without error")
				}
				// A local xz file's index and a local zstd file's
				// frames are read first: a cut there is refused before
				// decoding.
				walked := (strings.HasPrefix(c, "xz") || strings.HasPrefix(c, "zst")) &&
					strings.Contains(err.Error(), "it is truncated") && strings.Contains(err.Error(), "corrupt")
				if !strings.Contains(err.Error(), "compressed offset") && !walked {
					t.Errorf("error %q names no compressed offset", err)
				}
			})
		}
	}
}

type failWriter struct{ n int }

var errSink = errors.New("sink failed")

func (f *failWriter) Write(p []byte) (int, error) {
	if f.n -= len(p); f.n < 0 {
		return 0, errSink
	}
	return len(p), nil
}

func TestWriteToWriterError(t *testing.T) {
	set := imagetest.Corpus(t)
	for _, c := range streamCases {
		t.Run(c, func(t *testing.T) {
			_, err := writeAllTo(t, set.Files[c], &failWriter{n: 5 << 20})
			if err != errSink {
				t.Errorf("err = %v, want the writer's error as it is", err)
			}
		})
	}
}
