package sshdtest_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/btyproject/bty/internal/sshdtest"
)

// sshArgs are the client options the stand-in cijoe uses too.
func sshArgs(srv *sshdtest.Server, key string) []string {
	return []string{"-i", key, "-p", fmt.Sprint(srv.Port), "-o", "BatchMode=yes",
		"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
		"-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=10", srv.User + "@" + srv.Host, "--"}
}

// run runs name with args in dir (no BTY_ROOTFS, extra env added) and
// returns its combined output and exit code.
func run(t *testing.T, dir string, env []string, name string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "BTY_ROOTFS=") && !strings.HasPrefix(kv, "CIJOE_STANDIN_ARGS_LOG=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &ee) && ee.Exited():
		return string(out), ee.ExitCode()
	default:
		t.Fatalf("%s %q: %v\n%s", name, args, err, out)
		return "", -1
	}
}

func TestStartLetsOnlyTheAuthorizedKeyIn(t *testing.T) {
	dir := t.TempDir()
	key, pub := sshdtest.Keygen(t, dir)
	other, _ := sshdtest.Keygen(t, dir)
	if key == other {
		t.Fatalf("Keygen returned the same path twice: %s", key)
	}
	for _, p := range []string{key, other} {
		st, err := os.Stat(p)
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("private key %s: %v, mode %v; want 0600", p, err, st.Mode().Perm())
		}
	}
	if !strings.HasPrefix(pub, "ssh-ed25519 ") || strings.Contains(pub, "\n") {
		t.Fatalf("public key line = %q; want one ssh-ed25519 line", pub)
	}
	srv := sshdtest.Start(t, pub)
	if srv.Host != "127.0.0.1" || srv.Port <= 0 || srv.User == "" {
		t.Fatalf("server = %+v", srv)
	}
	out, code := run(t, dir, nil, "ssh", append(sshArgs(srv, key), "id -un")...)
	if code != 0 || !hasLine(out, srv.User) {
		t.Fatalf("ssh with the authorized key: exit %d, output:\n%s\nwant a line %q", code, out, srv.User)
	}
	out, code = run(t, dir, nil, "ssh", append(sshArgs(srv, other), "echo let-in")...)
	if code == 0 || strings.Contains(out, "let-in") || !strings.Contains(out, "Permission denied") {
		t.Fatalf("ssh with another key: exit %d, output:\n%s\nwant Permission denied", code, out)
	}
}

// standIn is the repository's stand-in cijoe.
func standIn(t *testing.T) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("runtime.Caller failed")
	}
	p := filepath.Join(filepath.Dir(file), "..", "..", "e2e", "testdata", "cijoe")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("stand-in cijoe: %v", err)
	}
	return p
}

func write(t *testing.T, path, body string, mode os.FileMode) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	return path
}

func sshSection(srv *sshdtest.Server, key string) string {
	return fmt.Sprintf(`[cijoe.transport.ssh]
hostname = %q   # the target
port = %d
username = %q
key_filename = %q
`, srv.Host, srv.Port, srv.User, key)
}

func hasLine(out, line string) bool {
	for l := range strings.Lines(out) {
		if strings.TrimRight(l, "\r\n") == line {
			return true
		}
	}
	return false
}

func exists(t *testing.T, path string) bool {
	t.Helper()
	_, err := os.Stat(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return err == nil
}

func TestStandInCijoeOnline(t *testing.T) {
	cijoe := standIn(t)
	keys := t.TempDir()
	key, pub := sshdtest.Keygen(t, keys)
	srv := sshdtest.Start(t, pub)
	target := t.TempDir() // a directory on the "target" (this machine, over ssh)
	inputs := t.TempDir()
	config := write(t, filepath.Join(inputs, "config.toml"),
		"# cijoe-online config\n[cijoe.workflow]\nfail_fast = true\n\n"+sshSection(srv, key), 0o644)

	shapes := [][]string{
		{"--config", config, "--monitor"},
		{"-c", config, "--monitor"},
		{"--monitor", "--config", config},
		{"--monitor", "-c", config},
	}
	for i, shape := range shapes {
		name := strings.ReplaceAll(strings.Join(shape, " "), config, "CONFIG")
		t.Run("passes "+name, func(t *testing.T) {
			marker := filepath.Join(target, fmt.Sprintf("pass%d", i), "marker")
			wf := write(t, filepath.Join(inputs, fmt.Sprintf("pass%d.yaml", i)), `doc: two steps on the target
steps:
- name: write-marker
  run: mkdir -p `+filepath.Dir(marker)+` && echo hello > `+marker+`
- name: read-marker
  run: |
    test -f `+marker+`
    # a comment in the script

    cat `+marker+`
`, 0o644)
			wd := t.TempDir()
			argsLog := filepath.Join(wd, "args.log")
			out, code := run(t, wd, []string{"CIJOE_STANDIN_ARGS_LOG=" + argsLog}, cijoe, append([]string{wf}, shape...)...)
			if code != 0 {
				t.Fatalf("exit %d, output:\n%s", code, out)
			}
			if !hasLine(out, "hello") {
				t.Errorf("output has no line hello (step 2 reads the marker):\n%s", out)
			}
			w, r := strings.Index(out, "# step write-marker"), strings.Index(out, "# step read-marker")
			if w < 0 || r < w {
				t.Errorf("output lacks the step headers in order:\n%s", out)
			}
			if b, err := os.ReadFile(marker); err != nil || string(b) != "hello\n" {
				t.Errorf("marker on the target = %q, %v; want hello", b, err)
			}
			report, err := os.ReadFile(filepath.Join(wd, "cijoe-output", "report.html"))
			if err != nil {
				t.Fatalf("report: %v\noutput:\n%s", err, out)
			}
			for _, want := range []string{
				"<td>write-marker</td><td>passed</td><td>0</td>",
				"<td>read-marker</td><td>passed</td><td>0</td>",
				`class="result">passed<`,
			} {
				if !strings.Contains(string(report), want) {
					t.Errorf("report lacks %q:\n%s", want, report)
				}
			}
			logged, err := os.ReadFile(argsLog)
			if want := strings.Join(append([]string{wf}, shape...), " ") + "\n"; err != nil || string(logged) != want {
				t.Errorf("args log = %q, %v; want %q", logged, err, want)
			}
		})
	}

	t.Run("stops at the failing step", func(t *testing.T) {
		third := filepath.Join(target, "third-ran")
		wf := write(t, filepath.Join(inputs, "fail.yaml"), `steps:
- name: first
  run: echo first-ran
- name: fails
  run: exit 7
- name: third
  run: touch `+third+`
`, 0o644)
		wd := t.TempDir()
		out, code := run(t, wd, nil, cijoe, wf, "--config", config, "--monitor")
		if code != 7 {
			t.Errorf("exit %d; want 7 (the failing step's status), output:\n%s", code, out)
		}
		if !hasLine(out, "first-ran") {
			t.Errorf("step 1 did not run:\n%s", out)
		}
		if strings.Contains(out, "# step third") || exists(t, third) {
			t.Errorf("step 3 ran after step 2 failed (output below, %s exists: %v):\n%s", third, exists(t, third), out)
		}
		report, err := os.ReadFile(filepath.Join(wd, "cijoe-output", "report.html"))
		if err != nil {
			t.Fatalf("a failed run has no report: %v", err)
		}
		for _, want := range []string{
			"<td>first</td><td>passed</td><td>0</td>",
			"<td>fails</td><td>failed</td><td>7</td>",
			"<td>third</td><td>skipped</td><td></td>",
			`class="result">failed<`,
		} {
			if !strings.Contains(string(report), want) {
				t.Errorf("report lacks %q:\n%s", want, report)
			}
		}
	})

	// Each bad config fails before or at the first step; the step would
	// leave a marker on the target.
	other, _ := sshdtest.Keygen(t, t.TempDir()) // not authorized
	open := write(t, filepath.Join(inputs, "id_open"), func() string {
		b, err := os.ReadFile(key)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}(), 0o644)
	section := sshSection(srv, key)
	bad := []struct {
		name, config string
		code         int // 0: any non-zero
		want         string
	}{
		{"unauthorized key", sshSection(srv, other), 255, "Permission denied"},
		{"missing username", strings.Replace(section, "username =", "# username =", 1), 1, "[cijoe.transport.ssh] username is missing"},
		{"empty hostname", strings.Replace(section, `hostname = "127.0.0.1"`, `hostname = ""`, 1), 1, "hostname is empty"},
		{"key mode 0644", sshSection(srv, open), 1, "has mode 0644: it is accessible by group/other"},
		{"key file missing", sshSection(srv, key+".nonexistent"), 1, "does not exist"},
		{"port not a number", strings.Replace(section, fmt.Sprintf("port = %d", srv.Port), `port = "ssh"`, 1), 1, "port is not a number"},
		{"port out of range", strings.Replace(section, fmt.Sprintf("port = %d", srv.Port), "port = 70000", 1), 1, "port is not a number"},
		{"no ssh section", "[cijoe.workflow]\nfail_fast = true\n", 1, "has no [cijoe.transport.ssh] section"},
		{"ssh keys in another section", strings.Replace(section, "[cijoe.transport.ssh]", "[cijoe.transport.sh]", 1), 1, "has no [cijoe.transport.ssh] section"},
		{"not TOML", section + "this is not toml\n", 1, "cannot parse"},
	}
	for i, c := range bad {
		t.Run("config/"+c.name, func(t *testing.T) {
			if c.config == section {
				t.Fatal("the case's config is the good one: its Replace matched nothing")
			}
			marker := filepath.Join(target, fmt.Sprintf("bad%d", i))
			wf := write(t, filepath.Join(inputs, fmt.Sprintf("bad%d.yaml", i)), "steps:\n- name: touch\n  run: touch "+marker+"\n", 0o644)
			cfg := write(t, filepath.Join(inputs, fmt.Sprintf("bad%d.toml", i)), c.config, 0o644)
			out, code := run(t, t.TempDir(), nil, cijoe, wf, "--config", cfg, "--monitor")
			if code == 0 || (c.code != 0 && code != c.code) {
				t.Errorf("exit %d; want %d", code, c.code)
			}
			if !strings.Contains(out, c.want) {
				t.Errorf("output lacks %q:\n%s", c.want, out)
			}
			if exists(t, marker) {
				t.Errorf("the step ran on the target despite the bad config")
			}
		})
	}

	t.Run("usage errors", func(t *testing.T) {
		wf := write(t, filepath.Join(inputs, "usage.yaml"), "steps:\n- name: a\n  run: true\n", 0o644)
		for _, args := range [][]string{
			{wf, "--config", config},
			{wf, "--cfg", config, "--monitor"},
			{wf, "--config", config, "--verbose"},
			{wf, "--monitor", "--config", config, "extra"},
			{"--config", config, wf, "--monitor"},
		} {
			out, code := run(t, t.TempDir(), nil, cijoe, args...)
			if code != 2 || !strings.Contains(out, "usage: cijoe") {
				t.Errorf("%q: exit %d; want 2 and a usage line, output:\n%s", args, code, out)
			}
		}
		out, code := run(t, t.TempDir(), nil, cijoe, wf, "--monitor")
		if code != 1 || !strings.Contains(out, "BTY_ROOTFS is not set") {
			t.Errorf("neither BTY_ROOTFS nor a config: exit %d; want 1, output:\n%s", code, out)
		}
	})
}
