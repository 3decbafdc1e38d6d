package ctl

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/btyproject/bty/internal/api"
	"github.com/btyproject/bty/internal/client/clienttest"
	"github.com/btyproject/bty/internal/fleet"
)

// harness is one bty-web on loopback and a user of bty-ctl with their
// own config directory; commands run in-process through run().
type harness struct {
	t   *testing.T
	srv *clienttest.Server
	env map[string]string
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	srv := clienttest.Start(t, nil)
	home := t.TempDir()
	return &harness{t: t, srv: srv, env: map[string]string{
		"HOME":            home,
		"XDG_CONFIG_HOME": filepath.Join(home, "xdg"),
		"BTY_SERVER":      srv.URL,
	}}
}

type result struct {
	code           int
	stdout, stderr string
}

func (h *harness) run(stdin string, args ...string) result {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out, errb bytes.Buffer
	code := run(ctx, args, strings.NewReader(stdin), &out, &errb, func(k string) string { return h.env[k] })
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

// want checks the exit code and that want appears in stdout+stderr.
func (h *harness) want(r result, code int, want string) {
	h.t.Helper()
	if r.code != code || !strings.Contains(r.stdout+r.stderr, want) {
		h.t.Fatalf("exit %d, want %d with %q\nstdout:\n%s\nstderr:\n%s", r.code, code, want, r.stdout, r.stderr)
	}
}

func (h *harness) login() {
	h.t.Helper()
	h.want(h.run(clienttest.Password+"\n", "login", "--password-stdin"), 0, "logged in to "+h.srv.URL)
}

func (h *harness) tokenFile() string { return filepath.Join(h.env["XDG_CONFIG_HOME"], "bty", "token") }

// envelope decodes stdout as exactly one JSON document with bty's
// envelope for command.
func envelope(t *testing.T, r result, command string) map[string]any {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	var doc map[string]any
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s\nstderr:\n%s", err, r.stdout, r.stderr)
	}
	if dec.More() {
		t.Fatalf("stdout holds more than one JSON document:\n%s", r.stdout)
	}
	if doc["schema_version"] != "1" || doc["command"] != command {
		t.Fatalf("envelope = schema_version %v, command %v; want \"1\", %q", doc["schema_version"], doc["command"], command)
	}
	if code, ok := doc["exit_code"]; ok && int(code.(float64)) != r.code {
		t.Errorf("exit_code %v in the document, process exit %d", code, r.code)
	}
	return doc
}

func TestLogin(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	r := h.run(clienttest.Password+"\n", "login", "--password-stdin", "--json")
	if r.code != 0 {
		t.Fatalf("login: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	doc := envelope(t, r, "login")
	if doc["ok"] != true || doc["server"] != h.srv.URL || doc["token_file"] != h.tokenFile() || doc["expires_at"] == nil {
		t.Errorf("login document: %v", doc)
	}
	st, err := os.Stat(h.tokenFile())
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("token file mode %04o, want 0600", st.Mode().Perm())
	}
	dst, _ := os.Stat(filepath.Dir(h.tokenFile()))
	if dst.Mode().Perm() != 0o700 {
		t.Errorf("token directory mode %04o, want 0700", dst.Mode().Perm())
	}
	var s session
	b, _ := os.ReadFile(h.tokenFile())
	if err := json.Unmarshal(b, &s); err != nil || s.Server != h.srv.URL || len(s.Token) < 40 {
		t.Errorf("token file holds %s (%v)", b, err)
	}
	if strings.Contains(r.stdout+r.stderr, s.Token) {
		t.Errorf("login printed the token:\n%s", r.stdout)
	}
	// The token works.
	h.want(h.run("", "machines", "list"), 0, "no machines")

	// Without XDG_CONFIG_HOME the file is under ~/.config.
	delete(h.env, "XDG_CONFIG_HOME")
	h.login()
	if _, err := os.Stat(filepath.Join(h.env["HOME"], ".config", "bty", "token")); err != nil {
		t.Errorf("without XDG_CONFIG_HOME: %v", err)
	}
}

func TestLoginRefused(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	r := h.run("hunter2\n", "login", "--password-stdin")
	h.want(r, AuthRequired, "wrong password")
	if _, err := os.Stat(h.tokenFile()); !os.IsNotExist(err) {
		t.Errorf("a refused login left a token file: %v", err)
	}
	r = h.run("hunter2\n", "login", "--password-stdin", "--json")
	doc := envelope(t, r, "login")
	if r.code != AuthRequired || doc["ok"] != false || !strings.Contains(doc["error"].(string), "wrong password") {
		t.Errorf("login --json with a wrong password: exit %d, %v", r.code, doc)
	}
	// stdin is not a terminal: no prompt, misuse.
	h.want(h.run("", "login"), 2, "--password-stdin")
	h.want(h.run("\n", "login", "--password-stdin"), 2, "no password")
}

func TestMachinesRoundTrip(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.login()
	// Upload an image to point at, so the record is realistic.
	r := h.run("", "machines", "set", "AA-BB-CC-DD-EE-FF", "--policy", "flash", "--image", "debian.img.zst",
		"--hostname", "node7", "--provisioning", "cloud-init", "--cijoe-workflow", "wf/smoke.yaml", "--json")
	doc := envelope(t, r, "machines-set")
	m := doc["machine"].(map[string]any)
	if r.code != 0 || doc["created"] != true || m["mac"] != "aa:bb:cc:dd:ee:ff" || m["boot_policy"] != "flash" ||
		m["image"] != "debian.img.zst" || m["hostname"] != "node7" || m["provisioning_mode"] != "cloud-init" ||
		m["cijoe_workflow_ref"] != "wf/smoke.yaml" {
		t.Fatalf("machines set: exit %d, %v", r.code, doc)
	}
	// Every field of the wire shape is in the document.
	for _, k := range []string{"last_known_good", "discovered_at", "last_seen_at", "last_seen_ip", "last_flashed_at",
		"last_workflow_run_at", "last_workflow_status", "last_workflow_output_path", "created_at", "updated_at"} {
		if _, ok := m[k]; !ok {
			t.Errorf("machines set --json: no %q in %v", k, m)
		}
	}
	// Change one field; the others stay.
	r = h.run("", "machines", "set", "aa:bb:cc:dd:ee:ff", "--hostname", "")
	h.want(r, 0, "updated machine aa:bb:cc:dd:ee:ff")
	if !strings.Contains(r.stdout, "boot policy:           flash") || !strings.Contains(r.stdout, "hostname:              -") {
		t.Errorf("machines set (update) printed:\n%s", r.stdout)
	}

	r = h.run("", "machines", "get", "AA-bb-CC-dd-EE-ff")
	h.want(r, 0, "mac:                   aa:bb:cc:dd:ee:ff")
	for _, want := range []string{"image:                 debian.img.zst", "next PXE boot:         flash debian.img.zst", "provisioning:          cloud-init"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("machines get lacks %q:\n%s", want, r.stdout)
		}
	}
	r = h.run("", "machines", "get", "aa-bb-cc-dd-ee-ff", "--json")
	doc = envelope(t, r, "machines-get")
	if doc["machine"].(map[string]any)["mac"] != "aa:bb:cc:dd:ee:ff" {
		t.Errorf("machines get --json: %v", doc)
	}

	// A PXE contact adds a discovered machine; list shows both, aligned.
	if _, err := httpGet(h.srv.URL + "/pxe/52-54-00-00-00-01"); err != nil {
		t.Fatal(err)
	}
	r = h.run("", "machines", "list")
	h.want(r, 0, "aa:bb:cc:dd:ee:ff")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "MAC") || !strings.Contains(lines[1], "52:54:00:00:00:01 (discovered)") ||
		!strings.Contains(lines[1], "127.0.0.1") || !strings.Contains(lines[2], "debian.img.zst") {
		t.Fatalf("machines list:\n%s", r.stdout)
	}
	col := strings.Index(lines[0], "POLICY")
	if lines[1][col-2:col] != "  " || lines[1][col:col+3] != "tui" || lines[2][col:col+5] != "flash" {
		t.Errorf("machines list columns are not aligned:\n%s", r.stdout)
	}
	// Last seen is shown in local time.
	if !strings.Contains(lines[1], time.Now().Format("2006-01-02 15:")) && !strings.Contains(lines[1], time.Now().Add(-time.Minute).Format("2006-01-02 15:")) {
		t.Errorf("machines list: last seen not in local time:\n%s", r.stdout)
	}
	r = h.run("", "machines", "list", "--json")
	doc = envelope(t, r, "machines-list")
	if ms := doc["machines"].([]any); len(ms) != 2 {
		t.Errorf("machines list --json: %v", doc)
	}

	r = h.run("", "machines", "delete", "AA:BB:CC:DD:EE:FF", "--json")
	doc = envelope(t, r, "machines-delete")
	if r.code != 0 || doc["mac"] != "aa:bb:cc:dd:ee:ff" {
		t.Errorf("machines delete --json: exit %d, %v", r.code, doc)
	}
	h.want(h.run("", "machines", "get", "aa:bb:cc:dd:ee:ff"), 1, "no machine aa:bb:cc:dd:ee:ff")
	h.want(h.run("", "machines", "delete", "aa:bb:cc:dd:ee:ff"), 1, "no machine aa:bb:cc:dd:ee:ff")
	r = h.run("", "machines", "get", "aa:bb:cc:dd:ee:ff", "--json")
	if doc := envelope(t, r, "machines-get"); r.code != 1 || !strings.Contains(doc["error"].(string), "no machine") {
		t.Errorf("machines get --json of a deleted machine: exit %d, %v", r.code, doc)
	}

	// What only the server can refuse: exit 1 with its message.
	h.want(h.run("", "machines", "set", "aa:bb:cc:dd:ee:01", "--hostname", "-bad-"), 1, "hostname")
	h.want(h.run("", "machines", "set", "aa:bb:cc:dd:ee:01", "--image", "../etc/passwd"), 1, "image:")
}

func httpGet(url string) (int, error) {
	c := &http.Client{Timeout: 30 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// countingServer accepts connections and counts them, answering
// nothing: a test that must not reach the server points at it.
func countingServer(t *testing.T) (string, *atomic.Int64) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			c.Close()
		}
	}()
	t.Cleanup(func() { l.Close() })
	return "http://" + l.Addr().String(), &n
}

func TestMisuseIsLocal(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.login()
	url, conns := countingServer(t)
	// A session for that server, so nothing but the checks under test
	// stands between the command and the network.
	tok, _ := os.ReadFile(h.tokenFile())
	var s session
	json.Unmarshal(tok, &s)
	s.Server = url
	b, _ := json.Marshal(s)
	os.WriteFile(h.tokenFile(), b, 0o600)
	h.env["BTY_SERVER"] = url

	dir := t.TempDir()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"bad MAC get", []string{"machines", "get", "aa:bb:cc:dd:ee"}, "invalid MAC address"},
		{"bad MAC set", []string{"machines", "set", "aabbccddeeff", "--policy", "flash"}, "invalid MAC address"},
		{"bad MAC delete", []string{"machines", "delete", "aa:bb:cc:dd:ee:gg"}, "invalid MAC address"},
		{"mixed separators", []string{"machines", "get", "aa:bb-cc:dd:ee:ff"}, "invalid MAC address"},
		{"bad policy", []string{"machines", "set", "aa:bb:cc:dd:ee:ff", "--policy", "always"}, `--policy "always": want one of local, flash, tui`},
		{"bad provisioning", []string{"machines", "set", "aa:bb:cc:dd:ee:ff", "--provisioning", "ansible"}, "--provisioning"},
		{"nothing to set", []string{"machines", "set", "aa:bb:cc:dd:ee:ff"}, "nothing to set"},
		{"no MAC", []string{"machines", "get"}, "accepts 1 arg"},
		{"unknown flag", []string{"machines", "list", "--all"}, "unknown flag: --all"},
		{"unknown subcommand", []string{"machines", "frob"}, `unknown command "frob"`},
		{"bare group", []string{"images"}, "choose a subcommand"},
		{"missing file", []string{"images", "upload", filepath.Join(dir, "nope.img.zst")}, "no file"},
		{"directory", []string{"images", "upload", dir}, "not a regular file"},
		{"bad sha", []string{"images", "upload", "ctl_test.go", "--sha256", "abc"}, "64 hexadecimal digits"},
		{"sha and checksum", []string{"images", "upload", "ctl_test.go", "--sha256", strings.Repeat("a", 64), "--checksum"}, "none of the others"},
		{"boot missing file", []string{"boot", "upload", filepath.Join(dir, "vmlinuz")}, "no file"},
		{"name with slash", []string{"boot", "upload", "ctl_test.go", "--name", "a/b"}, "plain file name"},
		{"settings nothing", []string{"settings", "set"}, "nothing to set"},
		{"settings bad subnet", []string{"settings", "set", "--proxydhcp-iface", "eth0", "--proxydhcp-subnet", "10.0.0.1"}, "CIDR"},
		{"bad server URL", []string{"machines", "list", "--server", "ftp://x"}, "not http or https"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := h.run("", tc.args...)
			if r.code != 2 || !strings.Contains(r.stderr, tc.want) {
				t.Errorf("exit %d, want 2 with %q on stderr\nstdout:\n%s\nstderr:\n%s", r.code, tc.want, r.stdout, r.stderr)
			}
			r = h.run("", append(tc.args, "--json")...)
			doc := envelope(t, r, r2cmd(tc.args))
			if r.code != 2 || doc["ok"] != false || !strings.Contains(doc["error"].(string), tc.want) {
				t.Errorf("--json: exit %d, %v", r.code, doc)
			}
		})
	}
	if n := conns.Load(); n != 0 {
		t.Errorf("misuse reached the server: %d connections", n)
	}
}

// r2cmd is the --json command name cobra resolves for args.
func r2cmd(args []string) string {
	var words []string
	for _, a := range args {
		if strings.HasPrefix(a, "-") {
			break
		}
		switch a {
		case "machines", "images", "boot", "settings", "get", "set", "list", "delete", "upload":
			words = append(words, a)
		}
	}
	if len(words) == 0 {
		return "bty-ctl"
	}
	return strings.Join(words, "-")
}

// zstdImage makes a real .img.zst with the zstd CLI.
func zstdImage(t *testing.T, dir, name string) (string, []byte) {
	t.Helper()
	if _, err := exec.LookPath("zstd"); err != nil {
		t.Skip("zstd CLI not installed (apt-get install zstd)")
	}
	raw := bytes.Repeat([]byte("bty image block "), 512<<10) // 8 MiB
	for i := 0; i < len(raw); i += 4096 {
		raw[i] = byte(i >> 12)
	}
	rawPath := filepath.Join(dir, strings.TrimSuffix(name, ".zst"))
	if err := os.WriteFile(rawPath, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, name)
	if b, err := exec.Command("zstd", "-q", "-f", "-o", out, rawPath).CombinedOutput(); err != nil {
		t.Fatalf("zstd: %v\n%s", err, b)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return out, data
}

func TestImages(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	dir := t.TempDir()
	file, data := zstdImage(t, dir, "debian-12.img.zst")
	sum := sha256.Sum256(data)
	hexSum := hex.EncodeToString(sum[:])

	// Not logged in: exit 3 before anything is read or sent.
	h.want(h.run("", "images", "upload", file), AuthRequired, "not logged in to "+h.srv.URL)
	h.login()

	r := h.run("", "images", "upload", file, "--checksum", "--json")
	doc := envelope(t, r, "images-upload")
	img, _ := doc["image"].(map[string]any)
	if r.code != 0 || doc["ok"] != true || doc["sha256"] != hexSum || doc["bytes"] != float64(len(data)) ||
		doc["replaced"] != false || img["name"] != "debian-12.img.zst" || img["format"] != "zst" {
		t.Fatalf("images upload --checksum --json: exit %d\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	got, _ := os.ReadFile(filepath.Join(h.srv.Config.ImageRoot, "debian-12.img.zst"))
	if !bytes.Equal(got, data) {
		t.Fatal("the server's copy differs from the file")
	}
	// Text mode, another name, a given sha256; stderr is not a terminal
	// here, so progress is plain lines (none for a file this quick).
	r = h.run("", "images", "upload", file, "--name", "copy.img.zst", "--sha256", strings.ToUpper(hexSum))
	h.want(r, 0, "uploaded image copy.img.zst on "+h.srv.URL)
	if strings.Contains(r.stderr, "\r") {
		t.Errorf("progress drew a bar on a non-terminal:\n%q", r.stderr)
	}
	h.want(h.run("", "images", "upload", file, "--name", "copy.img.zst", "--no-progress"), 0, "replaced image copy.img.zst")

	r = h.run("", "images", "list")
	h.want(r, 0, "debian-12.img.zst")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "NAME") || !strings.Contains(lines[1], "zst") || !strings.Contains(lines[2], "debian-12.img.zst") {
		t.Errorf("images list:\n%s", r.stdout)
	}
	r = h.run("", "images", "list", "--json")
	doc = envelope(t, r, "images-list")
	if imgs := doc["images"].([]any); len(imgs) != 2 || imgs[1].(map[string]any)["size_bytes"] != float64(len(data)) {
		t.Errorf("images list --json: %v", doc)
	}

	// A lying suffix: raw bytes called .img.zst. The server refuses, and
	// its reason is what the user reads.
	liar := filepath.Join(dir, "liar.img.zst")
	os.WriteFile(liar, bytes.Repeat([]byte{0xab}, 3<<20), 0o644)
	r = h.run("", "images", "upload", liar)
	h.want(r, 1, `the upload is raw (no known magic) data but its name "liar.img.zst" says zst`)
	r = h.run("", "images", "upload", liar, "--json")
	doc = envelope(t, r, "images-upload")
	if r.code != 1 || !strings.Contains(doc["error"].(string), "says zst") || doc["name"] != "liar.img.zst" {
		t.Errorf("lying upload --json: exit %d, %v", r.code, doc)
	}
	// A wrong checksum: refused, nothing kept.
	h.want(h.run("", "images", "upload", file, "--name", "bad.img.zst", "--sha256", strings.Repeat("0", 64)), 1, "sha256 mismatch")
	if _, err := os.Stat(filepath.Join(h.srv.Config.ImageRoot, "bad.img.zst")); !os.IsNotExist(err) {
		t.Errorf("a refused upload was kept: %v", err)
	}
	h.want(h.run("", "images", "upload", filepath.Join(dir, "missing.img")), 2, "no file")
}

func TestBootAndSettings(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.login()
	kernel := filepath.Join(t.TempDir(), "vmlinuz")
	os.WriteFile(kernel, bytes.Repeat([]byte("k"), 100<<10), 0o644)
	r := h.run("", "boot", "upload", kernel, "--name", "bty-live-x86_64.vmlinuz", "--checksum", "--json")
	doc := envelope(t, r, "boot-upload")
	if r.code != 0 || doc["boot"].(map[string]any)["sha256"] != doc["sha256"] {
		t.Fatalf("boot upload: exit %d, %v\n%s", r.code, doc, r.stderr)
	}
	r = h.run("", "boot", "list")
	h.want(r, 0, "bty-live-x86_64.vmlinuz")
	if !strings.Contains(r.stdout, "present") || !strings.Contains(r.stdout, "MISSING") {
		t.Errorf("boot list:\n%s", r.stdout)
	}
	envelope(t, h.run("", "boot", "list", "--json"), "boot-list")

	r = h.run("", "settings", "get")
	h.want(r, 0, "proxy-DHCP interface:  (off)")
	if !strings.Contains(r.stdout, "INTERFACE") || !strings.Contains(r.stdout, "lo ") {
		t.Errorf("settings get:\n%s", r.stdout)
	}
	doc = envelope(t, h.run("", "settings", "get", "--json"), "settings-get")
	if doc["settings"].(map[string]any)["interfaces"] == nil {
		t.Errorf("settings get --json: %v", doc)
	}
	// The in-process server runs no PXE services, so it refuses any
	// change; the point is that its reason comes through with exit 1.
	r = h.run("", "settings", "set", "--proxydhcp-iface", "bty-nosuch0", "--json")
	doc = envelope(t, r, "settings-set")
	if r.code != 1 || !strings.Contains(doc["error"].(string), "proxy-DHCP") {
		t.Errorf("settings set: exit %d, %v", r.code, doc)
	}
}

func TestLogoutAndRejectedSessions(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.login()
	saved, _ := os.ReadFile(h.tokenFile())

	r := h.run("", "logout", "--json")
	doc := envelope(t, r, "logout")
	if r.code != 0 || doc["revoked"] != true {
		t.Fatalf("logout: exit %d, %v", r.code, doc)
	}
	if _, err := os.Stat(h.tokenFile()); !os.IsNotExist(err) {
		t.Errorf("logout left the token file: %v", err)
	}
	h.want(h.run("", "machines", "list"), AuthRequired, "not logged in to "+h.srv.URL)
	r = h.run("", "machines", "list", "--json")
	if doc := envelope(t, r, "machines-list"); r.code != AuthRequired || !strings.Contains(doc["error"].(string), "bty-ctl") {
		t.Errorf("machines list --json logged out: exit %d, %v", r.code, doc)
	}
	h.want(h.run("", "logout"), 0, "not logged in")

	// The revoked token put back: the server's 401 is exit 3 with its
	// message and the way out.
	os.WriteFile(h.tokenFile(), saved, 0o600)
	r = h.run("", "machines", "list")
	h.want(r, AuthRequired, "invalid, expired or revoked")
	h.want(r, AuthRequired, "run: bty-ctl")
	// Logging out of a session the server forgot just forgets it.
	h.want(h.run("", "logout"), 0, "the server no longer knew the session")

	// A token file others can read is refused, before it is sent.
	h.login()
	os.Chmod(h.tokenFile(), 0o644)
	h.want(h.run("", "machines", "list"), AuthRequired, "can be read by others")
	os.Chmod(h.tokenFile(), 0o600)
	h.want(h.run("", "machines", "list"), 0, "no machines")

	// An expired session is not sent.
	var s session
	b, _ := os.ReadFile(h.tokenFile())
	json.Unmarshal(b, &s)
	good := s
	s.ExpiresAt = time.Now().Add(-time.Minute)
	b, _ = json.Marshal(s)
	os.WriteFile(h.tokenFile(), b, 0o600)
	h.want(h.run("", "machines", "list"), AuthRequired, "expired at")

	// A session is never sent to another server.
	b, _ = json.Marshal(good)
	os.WriteFile(h.tokenFile(), b, 0o600)
	other, conns := countingServer(t)
	h.want(h.run("", "--server", other, "machines", "list"), AuthRequired, "the saved session is for "+h.srv.URL)
	if conns.Load() != 0 {
		t.Error("the token was offered to another server")
	}
	// BTY_TOKEN overrides the file.
	h.env["BTY_TOKEN"] = good.Token
	os.Remove(h.tokenFile())
	h.want(h.run("", "machines", "list"), 0, "no machines")
}

func TestUnreachable(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + l.Addr().String()
	l.Close()
	home := t.TempDir()
	h := &harness{t: t, env: map[string]string{"HOME": home, "BTY_SERVER": url}}
	r := h.run("", "images", "list")
	h.want(r, 1, "cannot reach bty-web at "+url)
	h.want(r, 1, "connection refused")
	r = h.run("pw\n", "login", "--password-stdin", "--json")
	if doc := envelope(t, r, "login"); r.code != 1 || !strings.Contains(doc["error"].(string), url) {
		t.Errorf("login --json to a closed port: exit %d, %v", r.code, doc)
	}
}

// Every command explains itself with examples and the exit codes.
func TestHelp(t *testing.T) {
	t.Parallel()
	h := &harness{t: t, env: map[string]string{}}
	e := &env{getenv: func(string) string { return "" }, stdout: io.Discard, stderr: io.Discard}
	root := newRoot(e)
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	var paths [][]string
	var visit func(prefix []string, c *cobra.Command)
	visit = func(prefix []string, c *cobra.Command) {
		for _, s := range c.Commands() {
			if s.Hidden || s.Name() == "help" || s.Name() == "completion" {
				continue
			}
			p := append(append([]string{}, prefix...), s.Name())
			paths = append(paths, p)
			visit(p, s)
		}
	}
	visit(nil, root)
	if len(paths) < 15 {
		t.Fatalf("only %d commands found: %v", len(paths), paths)
	}
	for _, p := range append(paths, []string{}) {
		r := h.run("", append(p, "--help")...)
		if r.code != 0 || !strings.Contains(r.stdout, "Exit codes: 0 success") || !strings.Contains(r.stdout, "3 authentication") {
			t.Errorf("%v --help: exit %d\n%s", p, r.code, r.stdout)
		}
		leaf := len(p) == 0 || p[0] == "login" || p[0] == "logout" || len(p) == 2
		if leaf && !strings.Contains(r.stdout, "Examples:") {
			t.Errorf("%v --help has no examples", p)
		}
	}
	r := h.run("", "--version")
	h.want(r, 0, "bty-ctl ")
	envelope(t, h.run("", "--version", "--json"), "version")
}

// TestMachinesSeed: --user-data and --meta-data send the files' bytes,
// a file that cloud-init would reject is exit 2 before the server is
// asked, and "" clears.
func TestMachinesSeed(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.login()
	dir := t.TempDir()
	ud := filepath.Join(dir, "user-data.yaml")
	ud1 := "#cloud-config\nhostname: n9\nruncmd:\n  - [sh, -c, 'echo BTY-PROOF > /dev/ttyS0']\n"
	bad := filepath.Join(dir, "bad.yaml")
	md := filepath.Join(dir, "meta-data")
	for p, b := range map[string]string{ud: ud1, bad: "#cloud-config\nruncmd:\n  - [a,\n", md: "instance-id: n9-1\n"} {
		if err := os.WriteFile(p, []byte(b), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	const mac = "52:54:00:00:5e:09"
	r := h.run("", "machines", "set", mac, "--user-data", bad)
	h.want(r, 2, "line 3")
	r = h.run("", "machines", "set", mac, "--user-data", filepath.Join(dir, "missing"))
	h.want(r, 2, "no such file")
	r = h.run("", "machines", "get", mac)
	h.want(r, 1, "no machine")

	r = h.run("", "machines", "set", mac, "--provisioning", "cloud-init", "--user-data", ud, "--meta-data", md, "--json")
	m := envelope(t, r, "machines-set")["machine"].(map[string]any)
	if r.code != 0 || m["user_data"] != ud1 || m["meta_data"] != "instance-id: n9-1\n" {
		t.Fatalf("set with the seed: exit %d %v", r.code, m)
	}
	r = h.run("", "machines", "get", mac)
	h.want(r, 0, "user-data:             "+strconv.Itoa(len(ud1))+" bytes (#cloud-config)")
	r = h.run("", "machines", "set", mac, "--user-data", "", "--meta-data", "")
	h.want(r, 0, "meta-data:             made by the server")
	if !strings.Contains(r.stdout, "last failure:          -") {
		t.Errorf("no last failure row:\n%s", r.stdout)
	}
	if !strings.Contains(r.stdout, "user-data:             none") {
		t.Errorf("cleared user-data shows as:\n%s", r.stdout)
	}
}

// TestMachinesSetWarnings: machines set saves the record and warns about
// what will make the machine's next flash fail: an image the catalog
// lacks, cloud-init without user-data, cijoe (which the live env cannot
// run); a complete record gets no warning.
func TestMachinesSetWarnings(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.login()
	if err := os.WriteFile(filepath.Join(h.srv.Config.ImageRoot, "good.img"), bytes.Repeat([]byte{0xb7}, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	const mac = "aa:bb:cc:dd:ee:01"
	r := h.run("", "machines", "set", mac, "--policy", "flash", "--image", "nope.img", "--provisioning", "cloud-init")
	h.want(r, 0, "created machine "+mac)
	for _, want := range []string{"warning: image nope.img is not in the server's catalog", "warning: provisioning cloud-init with no user-data"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("machines set: no %q on stderr:\n%s", want, r.stderr)
		}
	}
	// The record was saved all the same.
	if m, err := h.srv.Store.GetMachine(context.Background(), fleet.MustParseMAC(mac)); err != nil || m.Image != "nope.img" {
		t.Fatalf("the record: %+v, %v", m, err)
	}
	r = h.run("", "machines", "set", mac, "--provisioning", "cijoe", "--json")
	doc := envelope(t, r, "machines-set")
	ws, _ := doc["warnings"].([]any)
	if r.code != 0 || len(ws) != 2 || !strings.Contains(fmt.Sprint(ws[1]), "provisioning cijoe") {
		t.Errorf("machines set --json warnings: exit %d, %v", r.code, doc["warnings"])
	}
	ud := filepath.Join(t.TempDir(), "user-data")
	if err := os.WriteFile(ud, []byte("#cloud-config\nhostname: n1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r = h.run("", "machines", "set", mac, "--image", "good.img", "--provisioning", "cloud-init", "--user-data", ud)
	h.want(r, 0, "updated machine "+mac)
	if strings.Contains(r.stderr, "warning") {
		t.Errorf("a complete record was warned about:\n%s", r.stderr)
	}
}

// TestPolicyString: machines list shows what the next PXE boot gets when
// fleet.Decide says it is not the policy.
func TestPolicyString(t *testing.T) {
	for _, tc := range []struct {
		m    api.Machine
		want string
	}{
		{api.Machine{BootPolicy: fleet.PolicyFlash, Image: "a.img", NextBoot: fleet.NextFlash}, "flash"},
		{api.Machine{BootPolicy: fleet.PolicyFlash, Image: "a.img", NextBoot: fleet.NextLocal}, "flash (next: local)"},
		{api.Machine{BootPolicy: fleet.PolicyFlash, NextBoot: fleet.NextFlash}, "flash (next: local)"},
		{api.Machine{BootPolicy: fleet.PolicyTUI}, "tui"},
		{api.Machine{BootPolicy: fleet.PolicyLocal, NextBoot: fleet.NextLocal}, "local"},
		{api.Machine{}, "-"},
	} {
		if got := policyString(tc.m); got != tc.want {
			t.Errorf("policyString(%+v) = %q, want %q", tc.m, got, tc.want)
		}
	}
}

// TestMachinesPower: --power-* set the machine's BMC settings with the
// password read from stdin and never printed; machines power reaches the
// server's power route and reports a BMC that does not answer as exit 1
// with the reason; misuse is exit 2 before the server is asked.
func TestMachinesPower(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.login()
	const mac, secret = "52:54:00:90:00:02", "bmc-Stdin-Secret-1"
	// A port nothing listens on: the BMC does not answer.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := "http://" + l.Addr().String()
	l.Close()
	h.want(h.run("", "machines", "set", mac, "--power-driver", "redfish", "--power-password-stdin"), 2, "standard input has no password")
	h.want(h.run("", "machines", "set", mac, "--power-driver", "smoke"), 2, "--power-driver")
	h.want(h.run(secret+"\n", "machines", "set", mac, "--power-driver", "ipmi", "--power-user", "admin", "--power-password-stdin"), 1, "power.address")
	r := h.run(secret+"\n", "machines", "set", mac, "--power-driver", "redfish", "--power-address", addr, "--power-user", "admin", "--power-password-stdin")
	h.want(r, 0, "power:                 redfish "+addr+", user admin, password set")
	r2 := h.run("", "machines", "get", mac, "--json")
	for _, out := range []string{r.stdout + r.stderr, r2.stdout} {
		if strings.Contains(out, secret) {
			t.Fatalf("the BMC password is printed:\n%s", out)
		}
	}
	if !strings.Contains(r2.stdout, `"password_set": true`) {
		t.Errorf("machines get --json: no password_set:\n%s", r2.stdout)
	}
	h.want(h.run("", "machines", "power", mac, "explode"), 2, "want on, off, cycle or status")
	r = h.run("", "machines", "power", mac, "status")
	h.want(r, 1, "did not answer")
	if strings.Contains(r.stdout+r.stderr, secret) {
		t.Fatalf("the power error shows the password:\n%s", r.stderr)
	}
	h.want(h.run("", "machines", "set", mac, "--power-driver", "none"), 0, "power:                 - (no BMC")
	h.want(h.run("", "machines", "power", mac, "on"), 1, "no power driver")
}

// TestMachinesReflashWait: reflash --wait follows a flash through its
// phases from the event stream while the test plays the machine (PXE
// contact, progress, done, the disk boot, the phone-home from its OS)
// and exits 0 with the phase times; --json gives the flash record; a
// second reflash while one runs is exit 1 naming it; --timeout leaves
// the flash running unless --cancel-on-interrupt; history lists them.
func TestMachinesReflashWait(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.login()
	if err := os.WriteFile(filepath.Join(h.srv.Config.ImageRoot, "job.img"), make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	const mac = "52:54:00:90:00:0a"
	h.want(h.run("", "machines", "set", mac, "--policy", "local", "--ready-check", "phone-home"), 0, "ready check:           phone-home")
	h.want(h.run("", "machines", "set", mac, "--ready-check", "ssh"), 2, "--ready-check")
	h.want(h.run("", "machines", "set", mac, "--flash-deadline", "2s"), 2, "--flash-deadline")
	h.want(h.run("", "machines", "reflash", mac, "--timeout", "1m"), 2, "go with --wait")
	h.want(h.run("", "machines", "reflash", mac, "--wait"), 1, "no image assigned")

	done := make(chan result, 1)
	go func() {
		done <- h.run("", "machines", "reflash", mac, "--image", "job.img", "--hostname", "ci-7", "--wait", "--timeout", "1m")
	}()
	// The machine: it PXE-boots once the flash is requested.
	base := h.srv.URL
	var script string
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(script, "bty.image_url") && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		script = httpDo(t, "GET", base+"/pxe/"+mac, "", "")
	}
	m := regexp.MustCompile(`bty\.cycle=([0-9a-f]{32})`).FindStringSubmatch(script)
	if m == nil || !strings.Contains(script, "bty.hostname=ci-7") || !strings.Contains(script, "bty.ready=phone-home") {
		t.Fatalf("the machine's script:\n%s", script)
	}
	cycle := m[1]
	httpDo(t, "POST", base+"/pxe/"+mac+"/progress", cycle, `{"bytes_written":524288,"total_bytes":1048576,"rate":1000000}`)
	httpDo(t, "POST", base+"/pxe/"+mac+"/done", cycle, `{"bytes_written":1048576,"total_bytes":1048576,"rate":2000000,"bytes_fetched":262144,"chunks_total":5,"chunks_zero":1,"chunks_equal":3}`)
	httpDo(t, "GET", base+"/pxe/"+mac, "", "")
	httpDo(t, "POST", base+"/pxe/"+mac+"/ready?cycle="+cycle, "", "")
	var r result
	select {
	case r = <-done:
	case <-time.After(time.Minute):
		t.Fatal("reflash --wait did not return after the phone-home")
	}
	h.want(r, 0, "ready in ")
	for _, want := range []string{"requested", "pxe", "fetch", "done ", "1.0 MiB of data written, image 1.0 MiB", "disk", "ready", "OS at 127.0.0.1", "no power driver"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("reflash --wait output lacks %q:\n%s", want, r.stdout)
		}
	}

	// --timeout with nothing happening: exit 1, the flash left running;
	// a second reflash is refused naming it; --cancel-on-interrupt
	// cancels it.
	r = h.run("", "machines", "reflash", mac, "--image", "job.img", "--wait", "--timeout", "1s")
	h.want(r, 1, "--timeout 1s passed in phase requested")
	h.want(r, 1, "continues on the server")
	h.want(h.run("", "machines", "reflash", mac, "--image", "job.img"), 1, "is in progress")
	h.want(h.run("", "machines", "reflash", mac, "--cancel"), 0, "cancelled")
	r = h.run("", "machines", "reflash", mac, "--image", "job.img", "--wait", "--timeout", "1s", "--cancel-on-interrupt", "--json")
	if r.code != 1 || !strings.Contains(r.stdout, `"result": "cancelled"`) {
		t.Fatalf("--cancel-on-interrupt --json: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	r = h.run("", "machines", "history", mac)
	h.want(r, 0, "ID")
	if n := strings.Count(r.stdout, "job.img"); n != 3 || !strings.Contains(r.stdout, "ready") || !strings.Contains(r.stdout, "cancelled") ||
		!strings.Contains(r.stdout, "1.0 MiB (fetched 256 KiB, 3 of 4 data chunks equal)") {
		t.Fatalf("history:\n%s", r.stdout)
	}
}

// httpDo is a PXE-side call (no session): the answer's body.
func httpDo(t *testing.T, method, url, cycle, body string) string {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if cycle != "" {
		req.Header.Set("X-Bty-Cycle", cycle)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 {
		t.Fatalf("%s %s: %d %s", method, url, res.StatusCode, b)
	}
	return string(b)
}
