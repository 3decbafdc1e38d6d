package media

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/btyproject/bty/internal/exitcode"
)

func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := Run(context.Background(), args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func TestCLIHelp(t *testing.T) {
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"--help"}, []string{"netboot", "usb", "server", "apt-get", "dpkg-deb", "mkfs.vfat", "mtools", "mkfs.exfat", "mkfs.ext4", "Exit codes"}},
		{[]string{"netboot", "--help"}, []string{"BTY_BOOT_DIR", "bty-live-x86_64.vmlinuz", "bty-live-x86_64.initrd", "SHA256SUMS", "--out", "--kernel-deb", "--cache", "--bin-dir"}},
		{[]string{"usb", "--help"}, []string{"bty flash", "BTY_IMAGES", "exFAT", "BIOS", "--images-size", "--force", "mkfs.exfat"}},
		{[]string{"server", "--help"}, []string{"admin password", "BTY_STATE", "--state-size", "flash", "ext4", "mkfs.ext4"}},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, out, errOut := runCLI(t, tc.args...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("help lacks %q:\n%s", w, out)
				}
			}
		})
	}
	code, out, _ := runCLI(t, "--version")
	if code != 0 || !strings.HasPrefix(out, "bty-media ") {
		t.Errorf("--version: %d %q", code, out)
	}
}

func TestCLIMisuse(t *testing.T) {
	dir := t.TempDir()
	existing := filepath.Join(dir, "existing.img")
	if err := os.WriteFile(existing, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A bin dir whose bty is dynamically linked (the host's ls), and one
	// whose bty is a script.
	dynBins := filepath.Join(dir, "dyn")
	scriptBins := filepath.Join(dir, "script")
	for _, d := range []string{dynBins, scriptBins} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ls, err := os.ReadFile("/bin/ls")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dynBins, "bty"), ls, 0o755)
	os.WriteFile(filepath.Join(scriptBins, "bty"), []byte("#!/bin/sh\necho hi\n"), 0o755)

	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"unknown flag", []string{"netboot", "--bogus"}, exitcode.Usage, "unknown flag: --bogus"},
		{"unknown command", []string{"iso"}, exitcode.Usage, "unknown command"},
		{"usb without --out", []string{"usb"}, exitcode.Usage, `required flag(s) "out"`},
		{"bad size", []string{"usb", "--out", filepath.Join(dir, "x.img"), "--images-size", "lots"}, exitcode.Usage, "write it like 4GiB"},
		{"tiny images partition", []string{"usb", "--out", filepath.Join(dir, "x.img"), "--images-size", "1MiB"}, exitcode.Usage, "too small"},
		{"existing out", []string{"usb", "--out", existing}, exitcode.Usage, "already exists: add --force"},
		{"existing server out", []string{"server", "--out", existing}, exitcode.Usage, "already exists: add --force"},
		{"out in a missing dir", []string{"server", "--out", filepath.Join(dir, "nodir", "x.img")}, exitcode.Usage, "does not exist"},
		{"missing bin dir", []string{"netboot", "--out", filepath.Join(dir, "live1"), "--bin-dir", filepath.Join(dir, "nobin")}, exitcode.Usage, "run make build"},
		{"bin dir without bty", []string{"netboot", "--out", filepath.Join(dir, "live2"), "--bin-dir", dir}, exitcode.Usage, "bty is missing: run make build"},
		{"dynamic binary", []string{"netboot", "--out", filepath.Join(dir, "live3"), "--bin-dir", dynBins}, exitcode.Usage, "dynamically linked"},
		{"not an executable", []string{"netboot", "--out", filepath.Join(dir, "live4"), "--bin-dir", scriptBins}, exitcode.Usage, "not an ELF executable"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runCLI(t, tc.args...)
			if code != tc.code || !strings.Contains(errOut, tc.want) {
				t.Errorf("exit %d, stderr %q; want exit %d and %q", code, errOut, tc.code, tc.want)
			}
			if out != "" {
				t.Errorf("stdout on error: %q", out)
			}
		})
	}
	if b, _ := os.ReadFile(existing); string(b) != "keep me" {
		t.Error("a refused build changed the existing file")
	}
	for _, d := range []string{"live1", "live2", "live3", "live4"} {
		if _, err := os.Stat(filepath.Join(dir, d)); err == nil {
			t.Errorf("a failed netboot left its output directory %s", d)
		}
	}
	code, _, errOut := runCLI(t, "netboot", "--out", filepath.Join(dir, "live5"), "--bin-dir", dynBins)
	if code != exitcode.Usage || !strings.Contains(errOut, "CGO_ENABLED=0") {
		t.Errorf("a dynamic binary: exit %d, %q; want the make build (CGO_ENABLED=0) hint", code, errOut)
	}
}

func TestCLIMissingTool(t *testing.T) {
	t.Setenv("PATH", t.TempDir()) // nothing on PATH
	dir := t.TempDir()
	code, _, errOut := runCLI(t, "usb", "--out", filepath.Join(dir, "x.img"))
	if code != exitcode.MissingTool || !regexp.MustCompile(`run apt-get install .*exfatprogs`).MatchString(errOut) ||
		!strings.Contains(errOut, "mkfs.exfat") {
		t.Errorf("usb without its tools: exit %d, %q; want exit 4 and an apt-get install line with exfatprogs", code, errOut)
	}
	code, _, errOut = runCLI(t, "server", "--out", filepath.Join(dir, "x.img"))
	if code != exitcode.MissingTool || !strings.Contains(errOut, "e2fsprogs") || !strings.Contains(errOut, "dosfstools") {
		t.Errorf("server without its tools: exit %d, %q", code, errOut)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("files left: %v", entries)
	}
}

func TestSizeFlag(t *testing.T) {
	for in, want := range map[string]int64{"4GiB": 4 << 30, "512MiB": 512 << 20, "8 GiB": 8 << 30, "1048576": 1 << 20, "2G": 2e9} {
		var s sizeFlag
		if err := s.Set(in); err != nil || s.n != want {
			t.Errorf("Set(%q) = %d, %v; want %d", in, s.n, err, want)
		}
	}
	var s sizeFlag
	if err := s.Set("-1"); err == nil {
		t.Error("Set(-1) accepted")
	}
}
