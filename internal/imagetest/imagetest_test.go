package imagetest

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
)

// TestCorpus builds the corpus (each case is verified against its
// reference tool while building) and checks the reference's shape.
func TestCorpus(t *testing.T) {
	s := Corpus(t)
	if s.Size != RefSize || s.Size%512 != 0 || s.Size%(1<<20) == 0 {
		t.Fatalf("size %d: want %d, a multiple of 512 and not of 1 MiB", s.Size, RefSize)
	}
	for _, c := range []string{"raw", "raw-dense", "zst", "zst-multiframe", "gz", "gz-multimember", "xz", "xz-multiblock", "xz-multistream", "bz2", "qcow2-v3", "qcow2-v2", "qcow2-zlib", "qcow2-zstd", "qcow2-backing"} {
		if _, ok := s.Files[c]; !ok {
			t.Errorf("case %q missing", c)
		}
	}
	if sum := SHA256(t, s.Raw, 0, -1); sum != s.RawSHA256 {
		t.Errorf("raw sha256 %s, manifest says %s", sum, s.RawSHA256)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(s.Raw, &st); err != nil {
		t.Fatal(err)
	}
	if st.Blocks*512 >= s.Size {
		t.Errorf("reference is not sparse: %d bytes allocated", st.Blocks*512)
	}
	// GPT signature at LBA 1 and data in the last sector.
	b, err := os.ReadFile(s.Raw)
	if err != nil {
		t.Fatal(err)
	}
	if string(b[512:520]) != "EFI PART" || string(b[len(b)-512:len(b)-504]) != "EFI PART" {
		t.Errorf("no primary/backup GPT header")
	}
}

func TestTruncateCorrupt(t *testing.T) {
	p := t.TempDir() + "/x.img"
	if err := os.WriteFile(p, []byte("0123456789"), 0o644); err != nil {
		t.Fatal(err)
	}
	tr := Truncate(t, p, 4)
	if b, _ := os.ReadFile(tr); string(b) != "0123" {
		t.Errorf("Truncate gave %q", b)
	}
	c := Corrupt(t, p, 2, []byte("xy"))
	if b, _ := os.ReadFile(c); string(b) != "01xy456789" {
		t.Errorf("Corrupt gave %q", b)
	}
}

func TestSHA256(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte("xxabcyy"), 0o644); err != nil {
		t.Fatal(err)
	}
	// sha256("abc"), from FIPS 180-2.
	if got, want := SHA256(t, p, 2, 3), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"; got != want {
		t.Errorf("SHA256 of bytes 2-4 = %s, want %s", got, want)
	}
	whole := sha256.Sum256([]byte("xxabcyy"))
	if got, want := SHA256(t, p, 0, -1), hex.EncodeToString(whole[:]); got != want {
		t.Errorf("SHA256 of the whole file = %s, want %s", got, want)
	}
	// Fewer bytes than asked for fail the test.
	ft := &fatalTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		SHA256(ft, p, 5, 3)
	}()
	<-done
	if !strings.Contains(ft.msg, "holds 2 bytes at offset 5, want 3") {
		t.Errorf("SHA256 past the end: failure %q, want one saying the file is short", ft.msg)
	}
}

// fatalTB records a Fatal and ends the goroutine, as testing.T does.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Helper() {}
func (f *fatalTB) Fatal(args ...any) {
	f.msg = fmt.Sprint(args...)
	runtime.Goexit()
}
func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}
