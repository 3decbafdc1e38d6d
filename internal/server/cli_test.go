package server

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestMainMisuse: bty-web's misuse is exit 2 with one "bty-web: " line,
// whether cobra finds it (flags, arguments, an unknown command) or a
// command does; nothing is served.
func TestMainMisuse(t *testing.T) {
	t.Setenv("BTY_STATE_DIR", t.TempDir())
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown command", []string{"frob"}, `bty-web: unknown command "frob" for "bty-web"`},
		{"unknown command before a bad flag", []string{"frob", "--bogus"}, `bty-web: unknown command "frob" for "bty-web"`},
		{"unknown flag", []string{"--bogus"}, "bty-web: unknown flag: --bogus"},
		{"argument to serve", []string{"serve", "extra"}, `bty-web: unknown command "extra" for "bty-web serve"`},
		{"bad flag value", []string{"serve", "--port", "x"}, `bty-web: invalid argument "x" for "--port" flag`},
		{"argument to passwd", []string{"passwd", "extra"}, `bty-web: unknown command "extra" for "bty-web passwd"`},
		{"passwd without a terminal", []string{"passwd"}, "bty-web: no terminal to prompt on: use --password-stdin"},
		{"short password", []string{"passwd", "--password-stdin"}, "bty-web: the password must have at least 8 characters; nothing changed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := Main(context.Background(), tc.args, strings.NewReader("short\n"), &stdout, &stderr)
			if code != 2 {
				t.Errorf("exit %d, want 2; stderr %q", code, stderr.String())
			}
			if !strings.HasPrefix(stderr.String(), tc.want) || strings.Count(stderr.String(), "bty-web: ") != 1 || stdout.Len() > 0 {
				t.Errorf("stderr %q, stdout %q; want one line starting %q", stderr.String(), stdout.String(), tc.want)
			}
		})
	}
}
