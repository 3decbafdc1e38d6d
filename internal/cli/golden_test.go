package cli

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/btyproject/bty/internal/imagetest"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// TestGoldenJSON pins the --json documents users script against. Paths
// that change per run are replaced by $CORPUS and $TMP.
func TestGoldenJSON(t *testing.T) {
	set := imagetest.Corpus(t)
	tmp := t.TempDir()
	tests := []struct {
		golden string
		args   []string
		code   int
	}{
		{"inspect-qcow2.json", []string{"inspect", "image", "--json", set.Files["qcow2-zlib"]}, 0},
		{"inspect-zst.json", []string{"inspect", "image", "--json", set.Files["zst"]}, 0},
		{"flash-dry-run-errors.json", []string{"flash", "--dry-run", "--json", "--image", set.Files["xz"],
			"--target", filepath.Join(tmp, "no-such-disk"), "--provision", "cloud-init"}, 2},
	}
	for _, tc := range tests {
		t.Run(tc.golden, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := Run(context.Background(), tc.args, nil, &out, &errb)
			if code != tc.code {
				t.Fatalf("exit %d, want %d: %s", code, tc.code, errb.String())
			}
			got := strings.NewReplacer(set.Dir, "$CORPUS", tmp, "$TMP").Replace(out.String())
			path := filepath.Join("testdata", tc.golden)
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if d := cmp.Diff(string(want), got); d != "" {
				t.Errorf("%s (-want +got):\n%s", tc.golden, d)
			}
		})
	}
}
