package ctl

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/btyproject/bty/internal/buildtest"
	"github.com/btyproject/bty/internal/client/clienttest"
)

// build compiles a command of this module, statically as it ships.
func build(t *testing.T, pkg string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds binaries; skipped with -short")
	}
	return buildtest.Program(t, pkg, buildtest.Options{})
}

// runBin runs the binary with exactly env (plus PATH), as a shell would.
func runBin(t *testing.T, bin string, env []string, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	cmd.Stdin = strings.NewReader(stdin)
	r := buildtest.Run(t, cmd)
	return result{code: r.Code, stdout: r.Stdout, stderr: r.Stderr}
}

// The real binary, as a user runs it: main's wiring, exit codes of the
// process, the token file across invocations.
func TestBinary(t *testing.T) {
	t.Parallel()
	bin := build(t, "../../cmd/bty-ctl")
	srv := clienttest.Start(t, nil)
	home := t.TempDir()
	env := []string{"HOME=" + home, "BTY_SERVER=" + srv.URL}

	r := runBin(t, bin, env, clienttest.Password+"\n", "login", "--password-stdin")
	if r.code != 0 || !strings.Contains(r.stdout, "logged in to "+srv.URL) {
		t.Fatalf("login: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if st, err := os.Stat(filepath.Join(home, ".config", "bty", "token")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v", err)
	}
	r = runBin(t, bin, env, "", "machines", "set", "AA-BB-CC-DD-EE-FF", "--policy", "flash", "--json")
	doc := envelope(t, r, "machines-set")
	if r.code != 0 || doc["machine"].(map[string]any)["mac"] != "aa:bb:cc:dd:ee:ff" {
		t.Fatalf("machines set: exit %d %v\n%s", r.code, doc, r.stderr)
	}
	r = runBin(t, bin, env, "", "machines", "list")
	if r.code != 0 || !strings.Contains(r.stdout, "aa:bb:cc:dd:ee:ff") || !strings.Contains(r.stdout, "flash") {
		t.Errorf("machines list: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := runBin(t, bin, env, "", "machines", "get", "aa:bb"); r.code != 2 {
		t.Errorf("bad MAC: exit %d, want 2\n%s", r.code, r.stderr)
	}
	if r := runBin(t, bin, env, "", "logout"); r.code != 0 {
		t.Errorf("logout: exit %d\n%s", r.code, r.stderr)
	}
	if r := runBin(t, bin, env, "", "machines", "list"); r.code != 3 || !strings.Contains(r.stderr, "bty-ctl: not logged in") {
		t.Errorf("after logout: exit %d, want 3\n%s", r.code, r.stderr)
	}
	if r := runBin(t, bin, env, "", "--version"); r.code != 0 || !strings.HasPrefix(r.stdout, "bty-ctl ") {
		t.Errorf("--version: exit %d %q", r.code, r.stdout)
	}
}

// bty-ctl against the real bty-web binary: the one place the settings
// API can succeed (the in-process server runs no PXE services).
func TestBinaryAgainstBtyWeb(t *testing.T) {
	t.Parallel()
	ctlBin := build(t, "../../cmd/bty-ctl")
	webBin := build(t, "../../cmd/bty-web")
	state := t.TempDir()
	web := exec.Command(webBin)
	web.Env = []string{"PATH=" + os.Getenv("PATH"), "BTY_STATE_DIR=" + state, "BTY_IMAGE_ROOT=" + filepath.Join(state, "images"),
		"BTY_WEB_HOST=127.0.0.1", "BTY_WEB_PORT=0", "BTY_TFTP_PORT=0", "BTY_ADMIN_PASSWORD=" + clienttest.Password}
	stderr, err := web.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := web.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	urlc := make(chan string, 1)
	var logs bytes.Buffer
	go func() {
		re := regexp.MustCompile(`url=(http://127\.0\.0\.1:\d+)`)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			logs.WriteString(sc.Text() + "\n")
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				urlc <- m[1]
			}
		}
		exited <- web.Wait()
	}()
	t.Cleanup(func() {
		web.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			web.Process.Kill()
		}
	})
	var url string
	select {
	case url = <-urlc:
	case err := <-exited:
		t.Fatalf("bty-web exited: %v\n%s", err, logs.String())
	case <-time.After(30 * time.Second):
		t.Fatal("bty-web did not say where it listens within 30 s")
	}
	env := []string{"HOME=" + t.TempDir(), "BTY_SERVER=" + url}
	if r := runBin(t, ctlBin, env, clienttest.Password+"\n", "login", "--password-stdin"); r.code != 0 {
		t.Fatalf("login: exit %d\n%s", r.code, r.stderr)
	}
	r := runBin(t, ctlBin, env, "", "settings", "set", "--proxydhcp-iface", "", "--json")
	doc := envelope(t, r, "settings-set")
	if r.code != 0 || doc["ok"] != true {
		t.Fatalf("settings set (off): exit %d %v\n%s", r.code, doc, r.stderr)
	}
	r = runBin(t, ctlBin, env, "", "settings", "set", "--proxydhcp-iface", "bty-nosuch0")
	if r.code != 1 || !strings.Contains(r.stderr, `no interface "bty-nosuch0"`) {
		t.Errorf("settings set (missing interface): exit %d\n%s", r.code, r.stderr)
	}
	r = runBin(t, ctlBin, env, "", "settings", "get")
	if r.code != 0 || !strings.Contains(r.stdout, "proxy-DHCP:            not running") || !strings.Contains(r.stdout, "TFTP:                  off") {
		t.Errorf("settings get: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	var s map[string]any
	r = runBin(t, ctlBin, env, "", "settings", "get", "--json")
	if err := json.Unmarshal([]byte(r.stdout), &s); err != nil {
		t.Fatal(fmt.Errorf("settings get --json: %w\n%s", err, r.stdout))
	}
}
