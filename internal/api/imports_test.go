package api_test

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// deps lists the packages pkg links, by `go list -deps`.
func deps(t *testing.T, pkg string) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", pkg).Output()
	if err != nil {
		t.Fatalf("go list -deps %s: %v", pkg, err)
	}
	return strings.Fields(string(out))
}

// TestImportGraph keeps the layering README's layout section describes:
// the domain imports nothing of bty's, the wire types only the domain,
// and the clients (bty-ctl, bty-tui) link no server or database code.
func TestImportGraph(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("go is not on PATH")
	}
	const mod = "github.com/btyproject/bty/"
	for _, tc := range []struct {
		pkg     string
		allowed []string // bty packages it may link besides itself
	}{
		{mod + "internal/fleet", nil},
		{mod + "internal/api", []string{mod + "internal/fleet"}},
	} {
		for _, d := range deps(t, tc.pkg) {
			if strings.HasPrefix(d, mod) && d != tc.pkg && !slices.Contains(tc.allowed, d) {
				t.Errorf("%s links %s", tc.pkg, d)
			}
		}
	}
	for _, prog := range []string{mod + "cmd/bty-ctl", mod + "cmd/bty-tui"} {
		for _, d := range deps(t, prog) {
			if d == mod+"internal/server" || strings.HasPrefix(d, mod+"internal/store") || strings.Contains(d, "sqlite") {
				t.Errorf("%s links %s", prog, d)
			}
		}
	}
}
