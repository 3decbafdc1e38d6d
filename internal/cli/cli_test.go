package cli

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/btyproject/bty/internal/buildtest"
	"github.com/btyproject/bty/internal/imagetest"
	"github.com/btyproject/bty/internal/looptest"
)

// btyBin is the real binary, built once for all tests: exit codes are
// checked on the process, as a user or a script sees them.
var btyBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "bty-cli-test-")
	if err != nil {
		panic(err)
	}
	// World-readable, so tests can run the binary as nobody.
	os.Chmod(dir, 0o755)
	btyBin = filepath.Join(dir, "bty")
	if err := buildtest.Build(btyBin, "../../cmd/bty", buildtest.Options{}); err != nil {
		fmt.Fprintf(os.Stderr, "building bty: %v\n", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	code           int
	stdout, stderr string
}

// bty runs the binary; with asNobody it drops root first (setpriv).
func bty(t *testing.T, asNobody bool, env []string, args ...string) result {
	t.Helper()
	name, argv := btyBin, args
	if asNobody {
		if os.Geteuid() != 0 {
			t.Skip("needs root to switch to nobody")
		}
		name = "setpriv"
		argv = append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", "--", btyBin}, args...)
	}
	cmd := exec.Command(name, argv...)
	cmd.Env = append(os.Environ(), env...)
	r := buildtest.Run(t, cmd)
	return result{code: r.Code, stdout: r.Stdout, stderr: r.Stderr}
}

func decodeJSON(t *testing.T, s string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatalf("not one JSON document: %v\n%s", err, s)
	}
	if m["schema_version"] != "1" {
		t.Errorf("schema_version = %v, want \"1\"", m["schema_version"])
	}
	return m
}

// worldReadable copies a corpus file into a directory nobody can read.
func worldReadable(t *testing.T, src string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "bty-img-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	dst := filepath.Join(dir, filepath.Base(src))
	looptest.Run(t, "cp", "--sparse=always", src, dst)
	os.Chmod(dst, 0o644)
	return dst
}

func TestExitCodesWithoutDevices(t *testing.T) {
	set := imagetest.Corpus(t)
	missing := filepath.Join(t.TempDir(), "nope.img")
	wf := filepath.Join(t.TempDir(), "wf.yaml")
	os.WriteFile(wf, []byte("steps: []\n"), 0o644)
	input := func(content string) string {
		p := filepath.Join(t.TempDir(), "input")
		os.WriteFile(p, []byte(content), 0o644)
		return p
	}
	goodUD := input("#cloud-config\nhostname: a\n")
	ci := func(extra ...string) []string {
		return append([]string{"flash", "--image", set.Raw, "--target", "/dev/loop0", "--provision", "cloud-init", "--dry-run"}, extra...)
	}
	tests := []struct {
		name    string
		env     []string
		args    []string
		code    int
		wantErr []string // substrings of stderr
		wantOut []string
	}{
		{"version", nil, []string{"--version"}, 0, nil, []string{"bty "}},
		{"help", nil, []string{"--help"}, 0, nil, []string{"Exit codes"}},
		{"flash help", nil, []string{"flash", "--help"}, 0, nil, []string{"--dry-run", "--verify", "--sha256"}},
		{"unknown command", nil, []string{"frobnicate"}, 2, []string{"unknown command"}, nil},
		{"unknown flag", nil, []string{"flash", "--bogus"}, 2, []string{"unknown flag", "--help"}, nil},
		{"list without what", nil, []string{"list"}, 2, []string{"bty list disks"}, nil},
		{"flash needs dry-run or yes", nil, []string{"flash", "--image", set.Raw, "--target", "/dev/null"}, 2,
			[]string{"--dry-run", "--yes"}, nil},
		{"flash without image", nil, []string{"flash", "--target", "/dev/loop0", "--dry-run"}, 2, []string{"--image"}, nil},
		{"flash missing image file", nil, []string{"flash", "--image", missing, "--target", "/dev/loop0", "--dry-run"}, 2,
			[]string{missing}, nil},
		{"flash target not a block device", nil, []string{"flash", "--image", set.Raw, "--target", set.Raw, "--dry-run"}, 2,
			[]string{"not a block device"}, nil},
		{"cloud-init without user-data", nil, []string{"flash", "--image", set.Raw, "--target", "/dev/loop0",
			"--provision", "cloud-init", "--dry-run"}, 2, []string{"--user-data"}, nil},
		{"user-data without a header", nil, ci("--user-data", input("packages: [htop]\n")), 2,
			[]string{"which cloud-init does not recognise", "#cloud-config"}, nil},
		{"user-data bad yaml names the line", nil, ci("--user-data", input("#cloud-config\nruncmd:\n  - a\n b: [\n")), 2,
			[]string{"not valid YAML: line 4"}, nil},
		{"user-data is a directory", nil, ci("--user-data", t.TempDir()), 2, []string{"is a directory"}, nil},
		{"meta-data not a mapping", nil, ci("--user-data", goodUD, "--meta-data", input("- a\n")), 2,
			[]string{"meta-data", "is a list"}, nil},
		{"bad hostname", nil, ci("--user-data", goodUD, "--hostname", "web_1"), 2, []string{"--hostname", "contains '_'"}, nil},
		{"unknown mode", nil, []string{"flash", "--image", set.Raw, "--target", "/dev/loop0", "--provision", "magic", "--dry-run"}, 2,
			[]string{"unknown provisioning mode"}, nil},
		{"bad sha256", nil, []string{"flash", "--image", set.Raw, "--target", "/dev/loop0", "--sha256", "xyz", "--dry-run"}, 2,
			[]string{"64 hexadecimal"}, nil},
		{"bad progress", nil, []string{"flash", "--image", set.Raw, "--target", "/dev/loop0", "--progress", "fancy", "--yes"}, 2,
			[]string{"--progress"}, nil},
		{"cijoe missing is exit 4", []string{"PATH=/nonexistent"}, []string{"flash", "--image", set.Raw, "--target", "/dev/loop0",
			"--provision", "cijoe", "--cijoe-workflow", wf, "--dry-run"}, 4, []string{"cijoe is not on PATH"}, nil},
		{"inspect missing", nil, []string{"inspect", "image", missing}, 2, []string{missing}, nil},
		{"inspect no arg", nil, []string{"inspect", "image"}, 2, []string{"accepts 1 arg"}, nil},
		{"inspect lying suffix", nil, []string{"inspect", "image", lyingCopy(t, set)}, 1, []string{"rename"}, nil},
		{"list images missing root", nil, []string{"list", "images", "--image-root", missing}, 2, []string{"does not exist"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := bty(t, false, tc.env, tc.args...)
			if r.code != tc.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", r.code, tc.code, r.stdout, r.stderr)
			}
			for _, s := range tc.wantErr {
				if !strings.Contains(r.stderr+r.stdout, s) {
					t.Errorf("output does not mention %q:\n%s%s", s, r.stdout, r.stderr)
				}
			}
			for _, s := range tc.wantOut {
				if !strings.Contains(r.stdout, s) {
					t.Errorf("stdout does not contain %q:\n%s", s, r.stdout)
				}
			}
		})
	}
}

// lyingCopy is the gzip image under a .img.zst name.
func lyingCopy(t *testing.T, set *imagetest.Set) string {
	dst := filepath.Join(t.TempDir(), "disk.img.zst")
	looptest.Run(t, "cp", set.Files["gz"], dst)
	return dst
}

func TestJSONDocuments(t *testing.T) {
	set := imagetest.Corpus(t)
	r := bty(t, false, nil, "inspect", "image", "--json", set.Files["qcow2-v3"])
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	m := decodeJSON(t, r.stdout)
	if m["command"] != "inspect-image" || m["format"] != "qcow2" || m["virtual_size_bytes"] != float64(set.Size) {
		t.Errorf("inspect-image document: %v", m)
	}

	r = bty(t, false, nil, "list", "images", "--json", "--image-root", set.Dir)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	m = decodeJSON(t, r.stdout)
	imgs, _ := m["images"].([]any)
	if m["command"] != "list-images" || len(imgs) < len(set.Files) {
		t.Errorf("list-images lists %d images, want at least %d: %v", len(imgs), len(set.Files), m)
	}

	// Without --image-root, BTY_IMAGE_ROOT names the image root.
	r = bty(t, false, []string{"BTY_IMAGE_ROOT=" + set.Dir}, "list", "images")
	if r.code != 0 || !strings.Contains(r.stdout, "zlib.qcow2") || !strings.Contains(r.stdout, "VIRTUAL SIZE") {
		t.Errorf("list images with BTY_IMAGE_ROOT: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	r = bty(t, false, nil, "list", "disks", "--json")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	m = decodeJSON(t, r.stdout)
	if m["command"] != "list-disks" {
		t.Errorf("list-disks document: %v", m)
	}
	if _, ok := m["disks"].([]any); !ok {
		t.Errorf("list-disks has no disks array: %v", m)
	}

	r = bty(t, false, nil, "inspect", "image", "--json", filepath.Join(set.Dir, "missing.img"))
	if r.code != 2 {
		t.Fatalf("exit %d, want 2", r.code)
	}
	if m = decodeJSON(t, r.stdout); m["ok"] != false || m["error"] == "" {
		t.Errorf("error document: %v", m)
	}
}

func TestFlashThroughBinary(t *testing.T) {
	looptest.RequireRoot(t)
	set := imagetest.Corpus(t)
	dev := looptest.New(t, set.Size+(1<<20))

	// The loop device is listed, with its size, as flashable.
	r := bty(t, false, nil, "list", "disks", "--json")
	var listed struct {
		Disks []struct {
			Path      string   `json:"path"`
			SizeBytes int64    `json:"size_bytes"`
			Problems  []string `json:"problems"`
		} `json:"disks"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &listed); err != nil || r.code != 0 {
		t.Fatalf("list disks --json: exit %d, %v", r.code, err)
	}
	found := false
	for _, d := range listed.Disks {
		if d.Path == dev.Path {
			found = true
			if d.SizeBytes != dev.Size || len(d.Problems) != 0 {
				t.Errorf("%s listed as %d bytes with problems %q, want %d and none", d.Path, d.SizeBytes, d.Problems, dev.Size)
			}
		}
	}
	if !found {
		t.Errorf("list disks does not show %s", dev.Path)
	}

	// Dry run: a plan, nothing written.
	before := dev.SHA256(t, set.Size)
	r = bty(t, false, nil, "flash", "--image", set.Files["zst"], "--target", dev.Path, "--dry-run", "--json")
	if r.code != 0 {
		t.Fatalf("dry run exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
	m := decodeJSON(t, r.stdout)
	if m["ok"] != true || m["dry_run"] != true || m["provisioning"] != "none" {
		t.Errorf("plan: %v", m)
	}
	if dev.SHA256(t, set.Size) != before {
		t.Fatal("--dry-run wrote to the target")
	}
	// --dry-run wins over --yes.
	if r := bty(t, false, nil, "flash", "--image", set.Files["zst"], "--target", dev.Path, "--dry-run", "--yes"); r.code != 0 || dev.SHA256(t, set.Size) != before {
		t.Fatalf("--dry-run --yes: exit %d or target changed", r.code)
	}

	// Not root: exit 3, nothing written.
	img := worldReadable(t, set.Files["zst"])
	r = bty(t, true, nil, "flash", "--image", img, "--target", dev.Path, "--yes")
	if r.code != 3 || !strings.Contains(r.stderr, "root") {
		t.Fatalf("as nobody: exit %d, want 3: %s", r.code, r.stderr)
	}
	// Not root, dry run: allowed.
	if r := bty(t, true, nil, "flash", "--image", img, "--target", dev.Path, "--dry-run"); r.code != 0 {
		t.Fatalf("dry run as nobody: exit %d: %s", r.code, r.stderr)
	}
	if dev.SHA256(t, set.Size) != before {
		t.Fatal("a refused flash wrote to the target")
	}

	// The real thing, with ndjson progress.
	r = bty(t, false, nil, "flash", "--image", set.Files["zst"], "--target", dev.Path, "--yes", "--verify",
		"--sha256", set.RawSHA256, "--progress", "ndjson")
	if r.code != 0 {
		t.Fatalf("flash exit %d: %s", r.code, r.stderr)
	}
	if got := dev.SHA256(t, set.Size); got != set.RawSHA256 {
		t.Fatalf("device sha256 %s, want %s", got, set.RawSHA256)
	}
	var types []string
	sc := bufio.NewScanner(strings.NewReader(r.stdout))
	for sc.Scan() {
		var ev map[string]any
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("ndjson line %q: %v", sc.Text(), err)
		}
		types = append(types, fmt.Sprint(ev["event"]))
	}
	joined := strings.Join(types, " ")
	for _, want := range []string{"started", "writing", "progress", "synced", "partprobed", "verified", "done"} {
		if !strings.Contains(joined, want) {
			t.Errorf("ndjson events %q lack %s", joined, want)
		}
	}

	// Wrong checksum: exit 1 with both hashes.
	wrong := strings.Repeat("ab", 32)
	r = bty(t, false, nil, "flash", "--image", set.Files["raw"], "--target", dev.Path, "--yes", "--sha256", wrong, "--json", "--progress", "none")
	if r.code != 1 || !strings.Contains(r.stdout, wrong) || !strings.Contains(r.stdout, set.RawSHA256) {
		t.Fatalf("wrong sha256: exit %d, want 1 with both hashes: %s %s", r.code, r.stdout, r.stderr)
	}

	// Truncated input: exit 1 naming an offset.
	cut := imagetest.Truncate(t, set.Files["zst"], 200000)
	r = bty(t, false, nil, "flash", "--image", cut, "--target", dev.Path, "--yes")
	if r.code != 1 || !strings.Contains(r.stderr, "offset") && !strings.Contains(r.stderr, "after") {
		t.Fatalf("truncated zst: exit %d, want 1 naming the offset: %s", r.code, r.stderr)
	}

	// A qcow2 cut in half: its later clusters point past the end of the
	// file. Exit 1 naming the guest offset.
	st, _ := os.Stat(set.Files["qcow2-zlib"])
	bad := imagetest.Truncate(t, set.Files["qcow2-zlib"], st.Size()/2)
	r = bty(t, false, nil, "flash", "--image", bad, "--target", dev.Path, "--yes")
	if r.code != 1 || !strings.Contains(r.stderr, "guest offset") {
		t.Fatalf("truncated qcow2: exit %d, want 1 naming the guest offset: %s", r.code, r.stderr)
	}

	// Mounted target: exit 1, refused before writing.
	looptest.MountExt4(t, dev.Path)
	r = bty(t, false, nil, "flash", "--image", set.Files["raw"], "--target", dev.Path, "--yes")
	if r.code != 1 || !strings.Contains(r.stderr, "mounted") {
		t.Fatalf("mounted: exit %d, want 1: %s", r.code, r.stderr)
	}
}

// TestCtrlC interrupts a flash from a slow HTTP server and expects a clean
// stop that says how far it got, exit 1.
func TestCtrlC(t *testing.T) {
	looptest.RequireRoot(t)
	set := imagetest.Corpus(t)
	dev := looptest.New(t, set.Size)
	raw, err := os.ReadFile(set.Files["raw-dense"])
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(len(raw)))
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodHead {
			return
		}
		for off := 0; off < len(raw); off += 256 << 10 {
			if _, err := w.Write(raw[off:min(off+256<<10, len(raw))]); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			time.Sleep(50 * time.Millisecond)
		}
	}))
	defer srv.Close()
	cmd := exec.Command(btyBin, "flash", "--image", srv.URL+"/disk.img", "--target", dev.Path, "--yes", "--progress", "ndjson")
	stdout, _ := cmd.StdoutPipe()
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if strings.Contains(sc.Text(), `"progress"`) && !strings.Contains(sc.Text(), `"bytes_written":0`) {
			cmd.Process.Signal(syscall.SIGINT)
			break
		}
	}
	var rest bytes.Buffer
	rest.ReadFrom(stdout)
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("after Ctrl-C: %v, want exit 1; stderr: %s", err, errb.String())
	}
	all := rest.String() + errb.String()
	if !strings.Contains(all, "interrupted after") {
		t.Errorf("no word on how far it got:\n%s", all)
	}
}

// TestRaceIsExit5 makes the target change while bty waits for a slow image
// server, between its first check of the target and the write: the real
// binary must notice and exit 5 without writing.
func TestRaceIsExit5(t *testing.T) {
	looptest.RequireRoot(t)
	set := imagetest.Corpus(t)
	dev := looptest.New(t, set.Size+(8<<20))
	looptest.Run(t, "mkfs.ext4", "-q", "-F", dev.Path)
	raw, err := os.ReadFile(set.Files["raw-dense"])
	if err != nil {
		t.Fatal(err)
	}
	asked := make(chan struct{}, 1)
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Accept-Ranges", "none")
		w.Header().Set("Content-Length", fmt.Sprint(len(raw)))
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		select {
		case asked <- struct{}{}:
		default:
		}
		<-release
		w.Write(raw)
	}))
	defer srv.Close()
	defer close(release)
	cmd := exec.Command(btyBin, "flash", "--image", srv.URL+"/disk.img", "--target", dev.Path, "--yes")
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-asked:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatal("bty never asked for the image")
	}
	mnt := t.TempDir()
	looptest.Run(t, "mount", dev.Path, mnt)
	defer exec.Command("umount", mnt).Run()
	release <- struct{}{}
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 5 {
		t.Fatalf("exit %v, want 5; stderr: %s", err, errb.String())
	}
	if !strings.Contains(errb.String(), "changed since it was checked") {
		t.Errorf("stderr does not explain the race: %s", errb.String())
	}
	if head := dev.ReadAt(t, 0, 2048); head[1080] != 0x53 || head[1081] != 0xef {
		t.Error("the raced target was written")
	}
}
