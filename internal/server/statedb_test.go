package server

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMainRefusesEmptyStateDB: a 0-byte state.db (issue 17, item 9) is
// not a first start: bty-web and bty-web passwd exit 1 with the
// store's explanation and leave the file empty.
func TestMainRefusesEmptyStateDB(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("BTY_STATE_DIR", dir)
	t.Setenv("BTY_IMAGE_ROOT", filepath.Join(dir, "images"))
	t.Setenv("BTY_BOOT_DIR", filepath.Join(dir, "boot"))
	t.Setenv("BTY_WEB_HOST", "127.0.0.1")
	t.Setenv("BTY_WEB_PORT", "0")
	t.Setenv("BTY_TFTP_PORT", "0")
	db := filepath.Join(dir, "state.db")
	if err := os.WriteFile(db, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"serve"}, {"passwd", "--password-stdin"}} {
		t.Run(args[0], func(t *testing.T) {
			// Without the check, serve would start: the timeout ends it.
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			var stdout, stderr bytes.Buffer
			code := Main(ctx, args, strings.NewReader("a-long-enough-password\n"), &stdout, &stderr)
			if code != 1 {
				t.Fatalf("exit %d, want 1; stderr %q", code, stderr.String())
			}
			for _, w := range []string{db, "empty (0 bytes)", "restore it from a backup"} {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr %q does not mention %q", stderr.String(), w)
				}
			}
			if fi, err := os.Stat(db); err != nil || fi.Size() != 0 {
				t.Errorf("state.db after the refusal: %v, %v; want it still 0 bytes", fi, err)
			}
		})
	}
}
