package tui

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestMainMisuse(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"mac without server", []string{"--mac", "52:54:00:12:34:56"}, "--mac needs --server"},
		{"bad mac", []string{"--server", "http://127.0.0.1:1", "--mac", "zz"}, "--mac"},
		{"bad cycle", []string{"--server", "http://127.0.0.1:1", "--mac", "52:54:00:12:34:56", "--cycle", "not-hex"}, "--cycle"},
		{"both sources", []string{"--server", "http://127.0.0.1:1", "--image-root", "/tmp"}, "exclude each other"},
		{"bad server", []string{"--server", "ftp://x"}, "--server"},
		{"unknown flag", []string{"--frobnicate"}, "unknown flag"},
		{"argument", []string{"extra"}, "unknown command"},
		{"no terminal", []string{"--image-root", "/tmp"}, "needs a terminal"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := Main(context.Background(), tc.args, strings.NewReader(""), &out, &errb)
			if code != 2 || !strings.Contains(errb.String(), tc.want) {
				t.Fatalf("exit %d, stderr %q; want 2 and %q", code, errb.String(), tc.want)
			}
		})
	}
	var out, errb bytes.Buffer
	if code := Main(context.Background(), []string{"--help"}, strings.NewReader(""), &out, &errb); code != 0 || !strings.Contains(out.String(), "typing yes") || !strings.Contains(out.String(), "--server") {
		t.Fatalf("--help: exit %d, %q", code, out.String())
	}
}
