// Package sshdtest is a test helper: it starts a real OpenSSH sshd on
// 127.0.0.1 that lets one public key in as the current user, for tests
// of code that reaches machines over SSH (cijoe-online runs, ...). It is
// meant for _test.go files only.
//
// Tests using it skip, saying that `scripts/install-deps.sh test`
// installs the tools, when /usr/sbin/sshd or ssh-keygen is missing;
// when the environment variable CI or BTY_REQUIRE_TOOLS is set they fail
// instead, so that CI never skips them silently.
package sshdtest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// SSHD is the sshd binary Start runs (sshd insists on an absolute path).
const SSHD = "/usr/sbin/sshd"

// privsepDir is the privilege separation directory Debian's sshd needs.
const privsepDir = "/run/sshd"

// Server is a running sshd.
type Server struct {
	Host string // "127.0.0.1"
	Port int
	User string // the user the authorized key logs in as: the current user
}

// requireTool skips t (or fails it under CI or BTY_REQUIRE_TOOLS) when
// path, a file or a command name, is missing.
func requireTool(t testing.TB, path, pkg string) string {
	t.Helper()
	var err error
	found := path
	if filepath.IsAbs(path) {
		_, err = os.Stat(path)
	} else {
		found, err = exec.LookPath(path)
	}
	if err == nil {
		return found
	}
	msg := fmt.Sprintf("needs %s (Debian package %s; scripts/install-deps.sh test installs it): %v", path, pkg, err)
	if os.Getenv("CI") != "" || os.Getenv("BTY_REQUIRE_TOOLS") != "" {
		t.Fatal(msg + " (not skipping: CI or BTY_REQUIRE_TOOLS is set)")
	}
	t.Skip(msg)
	return ""
}

// Keygen makes a new ed25519 key pair without a passphrase in dir with
// ssh-keygen, the private key mode 0600. It returns the private key's
// path and the public key's line (no trailing newline).
func Keygen(t testing.TB, dir string) (privPath, pubLine string) {
	t.Helper()
	keygen := requireTool(t, "ssh-keygen", "openssh-client")
	privPath = filepath.Join(dir, "id_ed25519")
	for i := 2; ; i++ {
		_, err1 := os.Lstat(privPath)
		_, err2 := os.Lstat(privPath + ".pub")
		if errors.Is(err1, os.ErrNotExist) && errors.Is(err2, os.ErrNotExist) {
			break
		}
		privPath = filepath.Join(dir, "id_ed25519_"+strconv.Itoa(i))
	}
	out, err := exec.Command(keygen, "-q", "-t", "ed25519", "-N", "", "-C", "sshdtest", "-f", privPath).CombinedOutput()
	if err != nil {
		t.Fatalf("ssh-keygen: %v: %s", err, out)
	}
	if err := os.Chmod(privPath, 0o600); err != nil {
		t.Fatal(err)
	}
	pub, err := os.ReadFile(privPath + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	return privPath, strings.TrimSpace(string(pub))
}

// Start runs sshd -D -e on 127.0.0.1 and a free port, with a temporary
// host key and a temporary authorized_keys file holding authorizedKey
// (one public key line, or several). Public key authentication is the
// only way in. It returns once the port accepts connections (or fails t
// after 10 s) and stops sshd when the test ends; if the test failed, the
// tail of sshd's log is logged then.
func Start(t testing.TB, authorizedKey string) *Server {
	t.Helper()
	requireTool(t, SSHD, "openssh-server")
	requireTool(t, "ssh-keygen", "openssh-client")
	u, err := user.Current()
	if err != nil {
		t.Fatalf("current user: %v", err)
	}
	if err := os.MkdirAll(privsepDir, 0o755); err != nil {
		t.Logf("sshdtest: creating %s: %v (sshd may refuse to start)", privsepDir, err)
	} else if err := os.Chmod(privsepDir, 0o755); err != nil {
		t.Logf("sshdtest: chmod %s: %v", privsepDir, err)
	}

	dir := t.TempDir()
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	hostKey, _ := Keygen(t, dir)
	authKeys := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(authKeys, []byte(strings.TrimSpace(authorizedKey)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "sshd.log")

	// The port is picked by listening on :0 and closing; another process
	// may take it before sshd binds it, so a bind failure is retried.
	const attempts = 5
	var lastErr error
	for range attempts {
		port, err := freePort()
		if err != nil {
			t.Fatalf("sshdtest: free port: %v", err)
		}
		conf := filepath.Join(dir, "sshd_config")
		cfg := fmt.Sprintf(`# written by sshdtest
ListenAddress 127.0.0.1:%d
HostKey %s
AuthorizedKeysFile %s
PubkeyAuthentication yes
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile none
PrintMotd no
LogLevel VERBOSE
`, port, hostKey, authKeys)
		if err := os.WriteFile(conf, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		srv, err := run(t, conf, logPath, port)
		if err == nil {
			srv.User = u.Username
			return srv
		}
		lastErr = err
		if !strings.Contains(readFile(logPath), "Address already in use") {
			break
		}
	}
	t.Fatalf("sshdtest: starting sshd: %v\nsshd log:\n%s", lastErr, tail(readFile(logPath), 40))
	return nil
}

// run starts sshd with conf, logging to logPath, and waits until it
// accepts connections on port; on success sshd is stopped on t.Cleanup.
func run(t testing.TB, conf, logPath string, port int) (*Server, error) {
	t.Helper()
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close() // sshd has its own descriptor once started
	cmd := exec.Command(SSHD, "-D", "-e", "-f", conf)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case err := <-exited:
			return nil, fmt.Errorf("sshd exited before accepting connections: %v", err)
		default:
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			stop(cmd, exited)
			return nil, fmt.Errorf("sshd did not accept connections on %s within 10s: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Cleanup(func() {
		stop(cmd, exited)
		if t.Failed() {
			t.Logf("sshdtest: tail of sshd log %s:\n%s", logPath, tail(readFile(logPath), 40))
		}
	})
	return &Server{Host: "127.0.0.1", Port: port}, nil
}

// stop ends sshd and its per-connection children: SIGTERM to its process
// group, SIGKILL after 5 s.
func stop(cmd *exec.Cmd, exited chan error) {
	pid := cmd.Process.Pid
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		<-exited
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
