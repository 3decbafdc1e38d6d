package media

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/btyproject/bty/internal/buildtest"
)

// Tests that download Debian packages (the kernel is about 70 MB) run
// with BTY_MEDIA_TEST=1 (make test sets it), or when the cache already
// holds them. The cache is shared between runs and with internal/kmod's
// tests: $BTY_MEDIA_CACHE, else a fixed directory under the temp dir.

func TestMain(m *testing.M) {
	code := m.Run()
	for _, d := range []string{builtBins, netbootDir} {
		if d != "" {
			os.RemoveAll(d)
		}
	}
	os.Exit(code)
}

func testCache() string {
	if d := os.Getenv("BTY_MEDIA_CACHE"); d != "" {
		return d
	}
	return filepath.Join(os.TempDir(), "bty-media-test-cache")
}

// mediaTest skips unless the tests may download, or the packages they
// use (the kernel, busybox and extra, as "name_*" globs) are already
// cached (then they run offline against the cache).
func mediaTest(t *testing.T, extra ...string) {
	t.Helper()
	if os.Getenv("BTY_MEDIA_TEST") == "1" || os.Getenv("BTY_VMTEST") == "1" {
		return
	}
	for _, pkg := range append([]string{"linux-image-*", "busybox-static_*"}, extra...) {
		if m, _ := filepath.Glob(filepath.Join(testCache(), unpackedDir, pkg)); len(m) == 0 {
			t.Skipf("downloads Debian packages (kernel, busybox, ...: about 75 MB, apt-get): set BTY_MEDIA_TEST=1 (make test does); cache %s", testCache())
		}
	}
}

// needTools skips (or, with BTY_MEDIA_TEST=1, fails) when a reference
// tool is missing.
func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			msg := fmt.Sprintf("%s is not installed: scripts/install-deps.sh test installs it", tool)
			if os.Getenv("BTY_MEDIA_TEST") == "1" {
				t.Fatal(msg)
			}
			t.Skip(msg)
		}
	}
}

var (
	binsOnce  sync.Once
	binsDir   string
	binsErr   error
	builtBins string
)

// testBins returns a directory holding static bty, bty-tui and bty-web
// built from this checkout for this test run (not bin/: other builds may
// replace those files while the tests compare against them).
func testBins(t *testing.T) string {
	t.Helper()
	binsOnce.Do(func() {
		builtBins, binsErr = os.MkdirTemp("", "bty-media-test-bin-")
		if binsErr != nil {
			return
		}
		for _, n := range []string{"bty", "bty-tui", "bty-web"} {
			binsErr = buildtest.Build(filepath.Join(builtBins, n), "../../cmd/"+n, buildtest.Options{
				Env: []string{"GOOS=linux", "GOARCH=amd64"}, Flags: []string{"-trimpath", "-ldflags=-s -w"}})
			if binsErr != nil {
				return
			}
		}
		binsDir = builtBins
	})
	if binsErr != nil {
		t.Fatal(binsErr)
	}
	return binsDir
}

var (
	netbootOnce sync.Once
	netbootArt  *Artifacts
	netbootErr  error
	netbootDir  string
)

// sharedNetboot is one Netboot build (SOURCE_DATE_EPOCH=testEpoch) that
// several tests check and compare against; building one costs seconds,
// more under -race. Callers set SOURCE_DATE_EPOCH to testEpoch too.
func sharedNetboot(t *testing.T) *Artifacts {
	t.Helper()
	if os.Getenv("SOURCE_DATE_EPOCH") != testEpoch {
		t.Fatal("sharedNetboot: the caller must t.Setenv SOURCE_DATE_EPOCH to testEpoch")
	}
	bins := testBins(t)
	netbootOnce.Do(func() {
		netbootDir, netbootErr = os.MkdirTemp("", "bty-media-test-netboot-")
		if netbootErr != nil {
			return
		}
		out := filepath.Join(netbootDir, "live") // Netboot creates it
		netbootArt, netbootErr = Netboot(context.Background(), NetbootOptions{OutDir: out, CacheDir: testCache(), BinDir: bins, Log: testLog(t)})
	})
	if netbootErr != nil {
		t.Fatalf("building the shared netboot env: %v", netbootErr)
	}
	return netbootArt
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// cpioEntry is one member of a newc archive, as this test's own reader
// (written from the format, independent of writeCpio) sees it.
type cpioEntry struct {
	name                string
	ino, mode, nlink    uint32
	uid, gid, mtime     uint32
	data                []byte
	devmajor, rdevmajor uint32
}

// readInitramfs decompresses (every zstd frame) and parses an initramfs.
func readInitramfs(t *testing.T, b []byte) []cpioEntry {
	t.Helper()
	d, err := zstd.NewReader(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	raw, err := d.DecodeAll(b, nil)
	if err != nil {
		t.Fatalf("the initramfs is not valid zstd: %v", err)
	}
	return readCpio(t, raw)
}

func readCpio(t *testing.T, raw []byte) []cpioEntry {
	t.Helper()
	var out []cpioEntry
	off := 0
	align := func() { off = (off + 3) &^ 3 }
	for {
		if off+110 > len(raw) {
			t.Fatalf("cpio: truncated header at %d", off)
		}
		h := raw[off : off+110]
		if string(h[:6]) != "070701" {
			t.Fatalf("cpio: bad magic %q at %d", h[:6], off)
		}
		field := func(i int) uint32 {
			v, err := strconv.ParseUint(string(h[6+8*i:6+8*i+8]), 16, 32)
			if err != nil {
				t.Fatalf("cpio: bad header field %d at %d: %v", i, off, err)
			}
			return uint32(v)
		}
		e := cpioEntry{ino: field(0), mode: field(1), uid: field(2), gid: field(3), nlink: field(4), mtime: field(5),
			devmajor: field(7), rdevmajor: field(9)}
		size, namesize := int(field(6)), int(field(11))
		if field(12) != 0 {
			t.Errorf("cpio: check field is not 0 in newc")
		}
		off += 110
		if namesize == 0 || raw[off+namesize-1] != 0 {
			t.Fatalf("cpio: name at %d not NUL-terminated", off)
		}
		e.name = string(raw[off : off+namesize-1])
		off += namesize
		align()
		e.data = raw[off : off+size]
		off += size
		align()
		if e.name == "TRAILER!!!" {
			if rest := raw[off:]; len(bytes.Trim(rest, "\x00")) != 0 {
				t.Errorf("cpio: %d bytes of data after the trailer", len(rest))
			}
			return out
		}
		out = append(out, e)
	}
}

func byName(es []cpioEntry) map[string]cpioEntry {
	m := map[string]cpioEntry{}
	for _, e := range es {
		m[e.name] = e
	}
	return m
}

// gptPart is one partition as sgdisk -i reports it.
type gptPart struct {
	typeGUID, name string
	start, size    int64 // bytes
}

var (
	reTypeGUID = regexp.MustCompile(`Partition GUID code: ([0-9A-F-]+)`)
	reFirst    = regexp.MustCompile(`First sector: (\d+)`)
	reSize     = regexp.MustCompile(`Partition size: (\d+) sectors`)
	reName     = regexp.MustCompile(`Partition name: '([^']*)'`)
)

// sgdiskPart reads partition n of img with sgdisk, the reference tool.
func sgdiskPart(t *testing.T, img string, n int) gptPart {
	t.Helper()
	out, err := exec.Command("sgdisk", "-i", strconv.Itoa(n), img).CombinedOutput()
	if err != nil {
		t.Fatalf("sgdisk -i %d %s: %v\n%s", n, img, err, out)
	}
	s := string(out)
	get := func(re *regexp.Regexp) string {
		m := re.FindStringSubmatch(s)
		if m == nil {
			t.Fatalf("sgdisk -i %d: no %s in:\n%s", n, re, s)
		}
		return m[1]
	}
	first, _ := strconv.ParseInt(get(reFirst), 10, 64)
	size, _ := strconv.ParseInt(get(reSize), 10, 64)
	return gptPart{typeGUID: get(reTypeGUID), name: get(reName), start: first * 512, size: size * 512}
}

// extract copies [off, off+size) of img to a new sparse file (what dd
// skip= count= would do).
func extract(t *testing.T, img string, off, size int64) string {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return sectionFile(t, f, off, size)
}

// sectionFile writes [off, off+size) of f to a temp file (copySparse
// wants a path), keeping it sparse by skipping zero blocks.
func sectionFile(t *testing.T, f *os.File, off, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "section")
	out, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if err := out.Truncate(size); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	zero := make([]byte, 1<<20)
	for pos := int64(0); pos < size; {
		n, err := f.ReadAt(buf[:min(int64(len(buf)), size-pos)], off+pos)
		if n > 0 && !bytes.Equal(buf[:n], zero[:n]) {
			if _, werr := out.WriteAt(buf[:n], pos); werr != nil {
				t.Fatal(werr)
			}
		}
		pos += int64(n)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return p
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1", "LC_ALL=C")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}
