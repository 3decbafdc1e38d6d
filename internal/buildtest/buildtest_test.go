package buildtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestProgram(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("needs the go tool")
	}
	dir := t.TempDir()
	src := "package main\n\nimport \"fmt\"\n\nvar v = \"unset\"\n\nfunc main() { fmt.Print(v) }\n"
	if err := os.Mkdir(filepath.Join(dir, "hello"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "hello", "main.go"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module hello\n\ngo 1.22\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := Program(t, "./hello", Options{Dir: dir, Env: []string{"GOFLAGS="}, Flags: []string{"-ldflags=-X main.v=set"}})
	if filepath.Base(bin) != "hello" {
		t.Errorf("binary at %s, want it named hello", bin)
	}
	out, err := exec.Command(bin).Output()
	if err != nil || string(out) != "set" {
		t.Errorf("the built program printed %q (%v), want the -ldflags value \"set\"", out, err)
	}
	if err := Build(filepath.Join(dir, "x"), "./nosuch", Options{Dir: dir}); err == nil || !strings.Contains(err.Error(), "go build ./nosuch") {
		t.Errorf("building a missing package: %v, want an error naming it", err)
	}
}

func TestRun(t *testing.T) {
	r := Run(t, exec.Command("sh", "-c", "echo out; echo err >&2; exit 3"))
	if r.Code != 3 || r.Stdout != "out\n" || r.Stderr != "err\n" {
		t.Errorf("Run = %+v, want code 3, out, err", r)
	}
	if r := Run(t, exec.Command("true")); r.Code != 0 {
		t.Errorf("Run(true) = %+v", r)
	}
}
