// Package e2e holds end-to-end tests that boot what bty flashed.
//
// TestVMProvision (BTY_VMTEST=1, root; `make vmtest`) builds the cached
// Debian bookworm test image (scripts/vm-image.sh), flashes it with the
// real bty binary onto a loop device with --provision cloud-init and
// --provision cijoe (the stand-in e2e/testdata/cijoe on PATH), boots the
// loop device in QEMU (scripts/vm-boot.sh, TCG + OVMF) and proves from the
// serial console that the first boot picked the tuning up: the hostname
// asked for, and a file written by the provisioning, read back by the
// guest and printed as `BTY-PROOF <token>`.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
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
)

// Budgets: a boot here takes about a minute under TCG and a fresh image
// build about two; a slow CI machine gets plenty of slack. Each is cut
// short to end before the go test deadline, so that cleanups (loop
// devices, QEMU) still run.
const (
	imageTimeout = 20 * time.Minute
	bootTimeout  = 10 * time.Minute
)

var (
	markerRE = regexp.MustCompile(`BTY-BOOTED hostname=(\S+) state=(\S*)(?: failed=(\S+))?`)
	proofRE  = regexp.MustCompile(`BTY-PROOF (\S+)`)
)

func TestVMProvision(t *testing.T) {
	if os.Getenv("BTY_VMTEST") != "1" {
		t.Skip("VM test: boots flashed disks in QEMU (minutes); set BTY_VMTEST=1 as root, or run make vmtest")
	}
	if os.Geteuid() != 0 {
		t.Skip("VM test needs root (loop devices, debootstrap)")
	}
	for _, tool := range []string{"losetup", "qemu-system-x86_64"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("BTY_VMTEST=1 but %s is missing: run scripts/install-deps.sh vm (make vmtest does)", tool)
		}
	}
	repo := repoRoot(t)
	bty := buildBty(t, repo)

	start := time.Now()
	ctx, cancel := budget(t, imageTimeout)
	defer cancel()
	out := run(t, command(ctx, filepath.Join(repo, "scripts/vm-image.sh")))
	lines := strings.Split(strings.TrimSpace(out), "\n")
	image := lines[len(lines)-1]
	if _, err := os.Stat(image); err != nil {
		t.Fatalf("vm-image.sh printed %q: %v", image, err)
	}
	t.Logf("phase image: %s (%.1fs)", image, time.Since(start).Seconds())

	t.Run("cloud-init", func(t *testing.T) {
		token := randHex(t)
		hostname := "bty-ci-" + randHex(t)[:8]
		dir := t.TempDir()
		userData := filepath.Join(dir, "user-data")
		writeFile(t, userData, `#cloud-config
write_files:
  - path: /var/lib/bty-proof
    content: "`+token+`"
    permissions: "0644"
runcmd:
  - [sh, -c, 'echo "BTY-PROOF $(cat /var/lib/bty-proof)" >/dev/ttyS0']
`)
		dev := loopDisk(t)
		doc := flash(t, bty, "", "--image", image, "--target", dev, "--yes", "--json",
			"--provision", "cloud-init", "--user-data", userData, "--hostname", hostname)
		checkResult(t, doc, "cloud-init")
		if p, _ := findKey(doc, "hostname"); p != hostname {
			t.Errorf("--json: provision hostname %v, want %s", p, hostname)
		}

		serial := boot(t, repo, dev)
		checkBoot(t, serial, hostname, token)
		// cloud-init's final message names the datasource it used.
		if !regexp.MustCompile(`Datasource DataSourceNoCloud`).MatchString(serial) {
			t.Errorf("cloud-init did not report the NoCloud datasource on the console")
		}
	})

	// The user's own meta-data (no --hostname) and a shell-script
	// user-data instead of #cloud-config.
	t.Run("cloud-init-meta-data-script", func(t *testing.T) {
		token := randHex(t)
		hostname := "bty-md-" + randHex(t)[:8]
		dir := t.TempDir()
		userData := filepath.Join(dir, "user-data.sh")
		writeFile(t, userData, `#!/bin/sh
echo `+token+` >/var/lib/bty-proof
echo "BTY-PROOF $(cat /var/lib/bty-proof)" >/dev/ttyS0
`)
		metaData := filepath.Join(dir, "meta-data")
		writeFile(t, metaData, "instance-id: iid-bty-e2e-"+token+"\nlocal-hostname: "+hostname+"\n")
		dev := loopDisk(t)
		doc := flash(t, bty, "", "--image", image, "--target", dev, "--yes", "--json",
			"--provision", "cloud-init", "--user-data", userData, "--meta-data", metaData)
		checkResult(t, doc, "cloud-init")

		serial := boot(t, repo, dev)
		checkBoot(t, serial, hostname, token)
	})

	t.Run("cijoe", func(t *testing.T) {
		token := randHex(t)
		hostname := "bty-cijoe-" + randHex(t)[:8]
		dir := t.TempDir()
		workflow := filepath.Join(dir, "workflow.yaml")
		// Each run is one line of shell (the stand-in's YAML subset). The
		// last steps install a unit that prints the token at boot.
		writeFile(t, workflow, `doc: bty e2e, tunes the flashed rootfs offline
steps:
- name: token
  run: echo `+token+` > "$BTY_ROOTFS/var/lib/bty-proof"
- name: hostname
  run: echo `+hostname+` > "$BTY_ROOTFS/etc/hostname" && sed -i "s/bty-vm/`+hostname+`/" "$BTY_ROOTFS/etc/hosts"
- name: proof-script
  run: printf '#!/bin/sh\necho "BTY-PROOF $(cat /var/lib/bty-proof)" >/dev/ttyS0\n' > "$BTY_ROOTFS/usr/local/sbin/bty-proof" && chmod 755 "$BTY_ROOTFS/usr/local/sbin/bty-proof"
- name: proof-unit
  run: printf '[Unit]\nDescription=bty e2e proof\n[Service]\nType=oneshot\nExecStart=/usr/local/sbin/bty-proof\n[Install]\nWantedBy=multi-user.target\n' > "$BTY_ROOTFS/etc/systemd/system/bty-proof.service"
- name: enable
  run: ln -sf /etc/systemd/system/bty-proof.service "$BTY_ROOTFS/etc/systemd/system/multi-user.target.wants/bty-proof.service"
- name: show
  run: ls -l "$BTY_ROOTFS/var/lib/bty-proof" "$BTY_ROOTFS/etc/systemd/system/multi-user.target.wants/" && echo workflow-done-`+token+`
`)
		config := filepath.Join(dir, "cijoe-config.toml")
		writeFile(t, config, "[bty]\nname = \"e2e\"\n")
		dev := loopDisk(t)
		doc := flash(t, bty, cijoePath(t, repo), "--image", image, "--target", dev, "--yes", "--json",
			"--provision", "cijoe", "--cijoe-workflow", workflow, "--cijoe-config", config)
		checkResult(t, doc, "cijoe")
		checkCijoeLog(t, doc, "workflow-done-"+token)
		checkCijoeLog(t, doc, "loaded config "+config)

		serial := boot(t, repo, dev)
		checkBoot(t, serial, hostname, token)
	})

	// A failing workflow is a failed flash (exit 1) whose log still holds
	// the workflow's output. No boot: nothing to prove there.
	t.Run("cijoe-fails", func(t *testing.T) {
		dir := t.TempDir()
		workflow := filepath.Join(dir, "workflow.yaml")
		writeFile(t, workflow, `steps:
- name: before
  run: echo before-the-failure
- name: fail
  run: exit 3
- name: after
  run: echo never-reached
`)
		dev := loopDisk(t)
		start := time.Now()
		cmd := exec.Command(bty, "flash", "--image", image, "--target", dev, "--yes", "--json",
			"--provision", "cijoe", "--cijoe-workflow", workflow)
		cmd.Env = withPath(cijoePath(t, repo))
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		t.Logf("phase flash (failing workflow): %.1fs", time.Since(start).Seconds())
		t.Logf("bty stderr:\n%s", stderr.String())
		if code := exitCode(err); code != 1 {
			t.Fatalf("bty flash with a failing workflow: exit %d (%v), want 1; stdout:\n%s", code, err, stdout.String())
		}
		var doc map[string]any
		if err := json.Unmarshal(stdout.Bytes(), &doc); err != nil {
			t.Fatalf("--json output is not one JSON document: %v\n%s", err, stdout.String())
		}
		if doc["ok"] != false {
			t.Errorf("ok = %v, want false", doc["ok"])
		}
		checkCijoeLog(t, doc, "before-the-failure")
		if log := readLog(t, doc); strings.Contains(log, "never-reached") {
			t.Errorf("the step after the failure ran; log:\n%s", log)
		}
		checkReleased(t, dev)
	})
}

// repoRoot is the module root (go test runs in the package directory).
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "scripts", "vm-image.sh")); err != nil {
		t.Fatalf("not the repo root: %s: %v", root, err)
	}
	return root
}

// buildBty builds the bty binary the way `make build` does.
func buildBty(t *testing.T, repo string) string {
	t.Helper()
	return buildtest.Program(t, "./cmd/bty", buildtest.Options{Dir: repo, Flags: []string{"-trimpath"}})
}

// cijoePath is a directory holding only the stand-in cijoe.
func cijoePath(t *testing.T, repo string) string {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join(repo, "e2e", "testdata", "cijoe")
	if err := os.Symlink(src, filepath.Join(dir, "cijoe")); err != nil {
		t.Fatal(err)
	}
	return dir
}

func withPath(dir string) []string {
	env := os.Environ()
	if dir == "" {
		return env
	}
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, "PATH=") {
			out = append(out, kv)
		}
	}
	return append(out, "PATH="+dir+string(os.PathListSeparator)+os.Getenv("PATH"))
}

// loopDisk attaches a loop device over a sparse 2.5 GiB file (larger than
// the 1.25 GiB image) and detaches it when the test ends.
func loopDisk(t *testing.T) string {
	t.Helper()
	backing := filepath.Join(t.TempDir(), "target.raw")
	f, err := os.Create(backing)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(5 << 29); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "--find", "--show", backing).Output()
	if err != nil {
		t.Fatalf("losetup: %v: %s", err, stderrOf(err))
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", dev, err, out)
		}
	})
	return dev
}

// flash runs bty flash --json and returns its document after checking it
// succeeded.
func flash(t *testing.T, bty, pathDir string, args ...string) map[string]any {
	t.Helper()
	cmd := exec.Command(bty, append([]string{"flash"}, args...)...)
	cmd.Env = withPath(pathDir)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	t.Logf("phase flash: %.1fs", time.Since(start).Seconds())
	t.Logf("bty stderr:\n%s", stderr.String())
	if err != nil {
		t.Fatalf("bty flash %s: %v\nstdout:\n%s", strings.Join(args, " "), err, stdout.String())
	}
	var doc map[string]any
	if err := json.Unmarshal(stdout.Bytes(), &doc); err != nil {
		t.Fatalf("--json output is not one JSON document: %v\n%s", err, stdout.String())
	}
	t.Logf("bty --json:\n%s", stdout.String())
	return doc
}

func checkResult(t *testing.T, doc map[string]any, mode string) {
	t.Helper()
	if doc["command"] != "flash" || doc["ok"] != true {
		t.Errorf("command=%v ok=%v, want flash, true", doc["command"], doc["ok"])
	}
	res, _ := doc["result"].(map[string]any)
	if res == nil {
		t.Fatalf("no result object in %v", doc)
	}
	if res["provisioning"] != mode {
		t.Errorf("result.provisioning = %v, want %s", res["provisioning"], mode)
	}
	if m, _ := findKey(res, "mode"); m != mode {
		t.Errorf("--json: provision mode %v, want %s", m, mode)
	}
}

// findKey returns the first value under key anywhere in v (depth first).
func findKey(v any, key string) (any, bool) {
	switch v := v.(type) {
	case map[string]any:
		if x, ok := v[key]; ok {
			return x, true
		}
		for _, x := range v {
			if r, ok := findKey(x, key); ok {
				return r, true
			}
		}
	case []any:
		for _, x := range v {
			if r, ok := findKey(x, key); ok {
				return r, true
			}
		}
	}
	return nil, false
}

func readLog(t *testing.T, doc map[string]any) string {
	t.Helper()
	v, ok := findKey(doc, "log_path")
	p, _ := v.(string)
	if !ok || p == "" {
		t.Fatalf("no log_path in the --json document: %v", doc)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("log_path: %v", err)
	}
	// The log is bty's record for an operator; this test's runs need none.
	t.Cleanup(func() { os.Remove(p) })
	return string(b)
}

func checkCijoeLog(t *testing.T, doc map[string]any, want string) {
	t.Helper()
	log := readLog(t, doc)
	if !strings.Contains(log, want) {
		t.Errorf("cijoe log lacks %q:\n%s", want, log)
	}
}

// checkReleased fails if a loop device still sits on dev (bty reaches
// partitions through loop devices with an offset over the target, and
// must detach them, which needs their filesystems unmounted).
func checkReleased(t *testing.T, dev string) {
	t.Helper()
	out, err := exec.Command("losetup", "--associated", dev).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup --associated %s: %v: %s", dev, err, out)
	}
	if s := strings.TrimSpace(string(out)); s != "" {
		t.Errorf("loop devices left over %s after bty flash:\n%s", dev, s)
	}
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 2 && strings.Contains(line, " - ") {
			src := strings.Fields(line[strings.Index(line, " - ")+3:])
			if len(src) > 1 && src[1] == dev {
				t.Errorf("%s left mounted: %s", dev, line)
			}
		}
	}
}

// boot boots dev in QEMU until the boot marker and a BTY-PROOF line are on
// the serial console, and returns the serial log.
func boot(t *testing.T, repo, dev string) string {
	t.Helper()
	checkReleased(t, dev)
	serial := filepath.Join(t.TempDir(), "serial.log")
	ctx, cancel := budget(t, bootTimeout+time.Minute)
	defer cancel()
	limit := bootTimeout
	if d, ok := ctx.Deadline(); ok && time.Until(d)-time.Minute < limit {
		limit = time.Until(d) - time.Minute
	}
	cmd := command(ctx, filepath.Join(repo, "scripts/vm-boot.sh"), dev, fmt.Sprint(int(limit.Seconds())))
	cmd.Env = append(os.Environ(), "VM_SNAPSHOT=1", "VM_LOG="+serial, "VM_EXPECT=BTY-PROOF ")
	start := time.Now()
	out := run(t, cmd)
	t.Logf("phase boot: %.1fs; vm-boot.sh printed:\n%s", time.Since(start).Seconds(), out)
	b, err := os.ReadFile(serial)
	if err != nil {
		t.Fatal(err)
	}
	return strings.ReplaceAll(string(b), "\r", "")
}

func checkBoot(t *testing.T, serial, hostname, token string) {
	t.Helper()
	var marker, proofs []string
	sc := bufio.NewScanner(strings.NewReader(serial))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if m := markerRE.FindStringSubmatch(sc.Text()); m != nil && marker == nil {
			marker = m
		}
		if m := proofRE.FindStringSubmatch(sc.Text()); m != nil {
			proofs = append(proofs, m[1])
		}
	}
	tail := serial
	if len(tail) > 6000 {
		tail = tail[len(tail)-6000:]
	}
	if marker == nil {
		t.Fatalf("no boot marker on the serial console; tail:\n%s", tail)
	}
	t.Logf("marker: %s", marker[0])
	if marker[1] != hostname {
		t.Errorf("booted with hostname %q, want %q", marker[1], hostname)
	}
	if marker[2] != "running" {
		t.Errorf("the guest booted %s, not running; failed units: %s", marker[2], marker[3])
	}
	found := false
	for _, p := range proofs {
		found = found || p == token
	}
	if !found {
		t.Errorf("no BTY-PROOF %s on the serial console (saw %q); tail:\n%s", token, proofs, tail)
	}
}

// budget is a context for a step of at most max, ending a minute before
// the test's deadline.
func budget(t *testing.T, max time.Duration) (context.Context, context.CancelFunc) {
	t.Helper()
	if d, ok := t.Deadline(); ok {
		left := time.Until(d) - time.Minute
		if left <= 0 {
			t.Fatalf("no time left for a %s step before the test deadline", max)
		}
		if left < max {
			max = left
		}
	}
	return context.WithTimeout(context.Background(), max)
}

// command is exec.CommandContext for our scripts: on cancel they get
// SIGTERM (their traps stop QEMU and undo mounts), and SIGKILL 30 s later.
func command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	return cmd
}

// run runs cmd, streaming its stderr to ours (progress of minutes-long
// scripts), and returns its stdout.
func run(t *testing.T, cmd *exec.Cmd) string {
	t.Helper()
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\nstdout:\n%s", strings.Join(cmd.Args, " "), err, stdout.String())
	}
	return stdout.String()
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func randHex(t *testing.T) string {
	t.Helper()
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return -1
}

func stderrOf(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}
