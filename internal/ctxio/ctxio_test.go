package ctxio

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSHA256(t *testing.T) {
	// sha256sum of "abc", from FIPS 180-2.
	const abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
	p := filepath.Join(t.TempDir(), "abc")
	if err := os.WriteFile(p, []byte("abc"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := FileSHA256(context.Background(), p); got != abc || err != nil {
		t.Errorf("FileSHA256 = %q, %v; want %q", got, err, abc)
	}
	if got, err := SHA256(context.Background(), strings.NewReader("abc")); got != abc || err != nil {
		t.Errorf("SHA256 = %q, %v; want %q", got, err, abc)
	}
	if _, err := FileSHA256(context.Background(), filepath.Join(t.TempDir(), "nope")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("FileSHA256 of a missing file: %v, want os.ErrNotExist", err)
	}
}

func TestCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	r := NewReader(ctx, strings.NewReader("abcdef"))
	var w bytes.Buffer
	cw := NewWriter(ctx, &w)
	buf := make([]byte, 3)
	if n, err := r.Read(buf); n != 3 || err != nil || string(buf) != "abc" {
		t.Fatalf("Read before cancel = %d %q, %v", n, buf[:n], err)
	}
	if n, err := cw.Write([]byte("x")); n != 1 || err != nil {
		t.Fatalf("Write before cancel = %d, %v", n, err)
	}
	cancel()
	if n, err := r.Read(buf); n != 0 || !errors.Is(err, context.Canceled) {
		t.Errorf("Read after cancel = %d, %v; want 0, context.Canceled", n, err)
	}
	if n, err := cw.Write([]byte("y")); n != 0 || !errors.Is(err, context.Canceled) || w.String() != "x" {
		t.Errorf("Write after cancel = %d, %v (wrote %q); want 0, context.Canceled, only x", n, err, w.String())
	}
	if _, err := SHA256(ctx, strings.NewReader("abc")); !errors.Is(err, context.Canceled) {
		t.Errorf("SHA256 with a done context: %v, want context.Canceled", err)
	}
}
