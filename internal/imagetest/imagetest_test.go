package imagetest

import (
	"os"
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
	sum, err := FileSHA256(s.Raw)
	if err != nil {
		t.Fatal(err)
	}
	if sum != s.RawSHA256 {
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
