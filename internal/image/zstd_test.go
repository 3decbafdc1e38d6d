package image

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/btyproject/bty/internal/imagetest"
)

// decodeBoth decodes the file b as a local file and as a stream (as from
// a URL) and returns both errors.
func decodeBoth(t *testing.T, name string, b []byte) (local, stream error) {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	local = decodeAll(t, p)
	img, err := Open(context.Background(), streamOnly{openLocal(t, p)}, Options{})
	if err == nil {
		_, err = io.Copy(io.Discard, img.(Stream))
		img.Close()
	}
	return local, err
}

// TestZstdMessages: what used to be "corrupt" or a wrong size says what
// it is: a window too large for bty is "not supported" with the command
// that fixes it; bytes appended after the last frame are named as such.
func TestZstdMessages(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<16)
	t.Run("long=31", func(t *testing.T) {
		local, stream := decodeBoth(t, "long.img.zst", imagetest.Pipe(t, data, "zstd", "-q", "-c", "--long=31"))
		for _, err := range []error{local, stream} {
			if !errors.Is(err, ErrUnsupported) || errors.Is(err, ErrCorrupt) ||
				!strings.Contains(err.Error(), "needs a 2048 MiB window") || !strings.Contains(err.Error(), "--long=27") {
				t.Errorf("error %v, want ErrUnsupported naming the window and the fix", err)
			}
		}
	})
	t.Run("long=27", func(t *testing.T) {
		if local, stream := decodeBoth(t, "long27.img.zst", imagetest.Pipe(t, data, "zstd", "-q", "-c", "--long=27")); local != nil || stream != nil {
			t.Errorf("a 128 MiB window is refused: %v, %v", local, stream)
		}
	})
	t.Run("appended", func(t *testing.T) {
		local, stream := decodeBoth(t, "app.img.zst", append(imagetest.Pipe(t, data, "zstd", "-q", "-c"), "GARBAGE!"...))
		if !errors.Is(local, ErrCorrupt) || !strings.Contains(local.Error(), "8 bytes after the last frame") {
			t.Errorf("local: %v, want ErrCorrupt naming the 8 appended bytes", local)
		}
		if !errors.Is(stream, ErrCorrupt) {
			t.Errorf("stream: %v, want ErrCorrupt", stream)
		}
	})
}
