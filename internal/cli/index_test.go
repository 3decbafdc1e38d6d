package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/btyproject/bty/internal/chunks"
	"github.com/btyproject/bty/internal/imagetest"
)

// TestIndexCommand: bty index writes a store beside the image whose
// index names the image's decoded sha256 and the file's sha256; bad
// input is exit 2 with the reason, and writes nothing.
func TestIndexCommand(t *testing.T) {
	set := imagetest.Corpus(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img.zst")
	b, err := os.ReadFile(set.Files["zst"])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(img, b, 0o644); err != nil {
		t.Fatal(err)
	}
	r := bty(t, false, nil, "index", img, "--json", "--chunk-size", "256KiB")
	if r.code != 0 {
		t.Fatalf("bty index: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	doc := decodeJSON(t, r.stdout)
	if doc["store"] != img+".btyc" || doc["sha256"] != set.RawSHA256 || doc["chunk_size"] != float64(256<<10) {
		t.Errorf("bty index --json: %v", doc)
	}
	f, err := os.Open(img + ".btyc")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	x, err := chunks.ReadIndex(f, st.Size(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if x.SHA256 != set.RawSHA256 || x.ImageSize != set.Size || x.SourceSHA256 != imagetest.SHA256(t, img, 0, int64(len(b))) {
		t.Errorf("the store's index: sha256 %s size %d source %s", x.SHA256, x.ImageSize, x.SourceSHA256)
	}

	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"missing image", []string{"index", filepath.Join(dir, "nope.img")}, "nope.img"},
		{"a URL", []string{"index", "http://127.0.0.1:1/images/x.img"}, "local image"},
		{"chunk size", []string{"index", img, "--chunk-size", "3MiB"}, "power of two"},
		{"chunks without delta", []string{"flash", "--image", img, "--target", "/dev/loop0", "--dry-run", "--chunks", img + ".btyc"}, "add --delta"},
	} {
		r := bty(t, false, nil, c.args...)
		if r.code != 2 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("%s: exit %d, stderr %q; want 2 and %q", c.name, r.code, r.stderr, c.want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "nope.img.btyc")); err == nil {
		t.Error("a failed index left a store behind")
	}
}
