package image

import (
	"context"
	"io"
	"os"
	"testing"
)

func TestProfDecode(t *testing.T) {
	path := os.Getenv("BTY_PROF")
	if path == "" {
		t.Skip()
	}
	src, err := OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	img, err := Open(context.Background(), src, Options{Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	buf := make([]byte, 4<<20)
	lim := io.LimitReader(img.(Stream), 1<<30)
	n, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{lim}, buf)
	t.Log(n, err)
}
