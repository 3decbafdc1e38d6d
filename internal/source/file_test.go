package source

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFileSource(t *testing.T) {
	data := randomData(3*mib+5, 30)
	path := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	src, err := Open(t.Context(), path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if src.Name() != path || src.Size() != int64(len(data)) {
		t.Errorf("Name %q Size %d", src.Name(), src.Size())
	}
	// Open twice: each reader starts at 0, even after the first is used.
	for i := range 2 {
		r, err := src.Open(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(r)
		r.Close()
		if err != nil || sum(got) != sum(data) {
			t.Fatalf("Open #%d: %d bytes, %v", i+1, len(got), err)
		}
	}
	ra := src.ReaderAt()
	p := make([]byte, 100)
	if n, err := ra.ReadAt(p, 12345); n != 100 || err != nil || !bytes.Equal(p, data[12345:12445]) {
		t.Errorf("ReadAt: %d, %v", n, err)
	}
	if n, err := ra.ReadAt(p, int64(len(data))-10); n != 10 || err != io.EOF {
		t.Errorf("ReadAt over the end: %d, %v; want 10, io.EOF", n, err)
	}
	f, ok := src.(Filer)
	if !ok {
		t.Fatal("local source is not a Filer")
	}
	fi, err := f.File().Stat()
	if err != nil || fi.Size() != int64(len(data)) || f.File().Name() != path {
		t.Errorf("File(): %v %v", fi, err)
	}
}

func TestFileCancel(t *testing.T) {
	path := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(path, randomData(mib, 31), 0o644); err != nil {
		t.Fatal(err)
	}
	src, err := Open(t.Context(), path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	ctx, cancel := context.WithCancel(t.Context())
	r, err := src.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Read(make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := io.ReadAll(r); !errors.Is(err, context.Canceled) {
		t.Errorf("read after cancel: %v", err)
	}
}

func TestFileErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "nope.img")
	_, err := Open(t.Context(), missing, Options{})
	if !errors.Is(err, ErrNotFound) || !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing file: %v; want ErrNotFound and os.ErrNotExist naming the path", err)
	}
	_, err = Open(t.Context(), dir, Options{})
	if err == nil || !strings.Contains(err.Error(), "is a directory") || errors.Is(err, ErrNotFound) {
		t.Errorf("directory: %v", err)
	}
}

func TestIsURL(t *testing.T) {
	for ref, want := range map[string]bool{
		"http://h/x":   true,
		"https://h/x":  true,
		"/srv/x.img":   false,
		"ftp://h/x":    false,
		"http:/x":      false,
		"./http://x":   false,
		"https://":     false,
		"disk.qcow2":   false,
		"http://h:8/x": true,
	} {
		if got := IsURL(ref); got != want {
			t.Errorf("IsURL(%q) = %v, want %v", ref, got, want)
		}
	}
}
