// Package imagetest builds the shared test corpus: one sparse reference raw
// disk image (GPT, random and text regions, written zero runs, holes, data
// at the very end) and the same bytes in every format bty decodes, each
// made and verified by the reference tool (zstd, gzip, xz, bzip2,
// qemu-img). Tests of internal/image and internal/flash decode these and
// compare against Set.RawSHA256.
//
// The corpus is built once into os.TempDir()/bty-corpus-<Version> and
// reused by later test processes when its manifest is present.
package imagetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/btyproject/bty/internal/ctxio"
)

// Version names the corpus layout; bump it whenever the content or the
// set of cases changes so stale caches are not reused.
const Version = "v1"

// Set is a built corpus.
type Set struct {
	// Dir holds every file of the corpus.
	Dir string
	// Raw is the sparse reference raw image (also Files["raw"]).
	Raw string
	// RawSHA256 is the hex sha256 of Raw's bytes.
	RawSHA256 string
	// Size is the reference image's size in bytes (RefSize).
	Size int64
	// Files maps a case name to its path. Cases: raw, raw-dense, zst,
	// zst-multiframe, gz, gz-multimember, xz, xz-multiblock,
	// xz-multistream, bz2, qcow2-v3, qcow2-v2, qcow2-zlib, qcow2-zstd,
	// qcow2-backing (its backing file base.img lies next to it).
	Files map[string]string
}

// Cases returns the case names in a stable order.
func (s *Set) Cases() []string {
	names := make([]string, 0, len(s.Files))
	for n := range s.Files {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// caseFiles maps case names to file names inside Dir.
var caseFiles = map[string]string{
	"raw":            "disk.img",
	"raw-dense":      "dense.img",
	"zst":            "disk.img.zst",
	"zst-multiframe": "multiframe.img.zst",
	"gz":             "disk.img.gz",
	"gz-multimember": "multimember.img.gz",
	"xz":             "disk.img.xz",
	"xz-multiblock":  "multiblock.img.xz",
	"xz-multistream": "multistream.img.xz",
	"bz2":            "disk.img.bz2",
	"qcow2-v3":       "v3.qcow2",
	"qcow2-v2":       "v2.qcow2",
	"qcow2-zlib":     "zlib.qcow2",
	"qcow2-zstd":     "zstd.qcow2",
	"qcow2-backing":  "child.qcow2",
}

// BackingFile is the name of the backing file of the qcow2-backing case,
// next to it in Dir.
const BackingFile = "base.img"

// Tools are the external programs the corpus needs.
var Tools = []string{"sgdisk", "zstd", "gzip", "xz", "bzip2", "qemu-img", "qemu-io", "cp"}

var (
	corpusOnce sync.Once
	corpusSet  *Set
	corpusErr  error
	corpusSkip string
)

// Corpus returns the shared corpus, building it on first use. It skips the
// test, naming the missing tool, when a reference tool is not installed.
func Corpus(t testing.TB) *Set {
	t.Helper()
	corpusOnce.Do(func() {
		if tool := missingTool(Tools...); tool != "" {
			corpusSkip = fmt.Sprintf("imagetest: %s not on PATH (apt-get install -y qemu-utils gdisk zstd xz-utils bzip2)", tool)
			return
		}
		corpusSet, corpusErr = loadOrBuild(filepath.Join(os.TempDir(), "bty-corpus-"+Version))
	})
	if corpusSkip != "" {
		t.Skip(corpusSkip)
	}
	if corpusErr != nil {
		t.Fatalf("building the image corpus: %v", corpusErr)
	}
	return corpusSet
}

const manifestName = "manifest.json"

// loadOrBuild returns the corpus in dir, building it under an flock so
// parallel test processes (go test ./... runs packages concurrently) build
// it once.
func loadOrBuild(dir string) (*Set, error) {
	lock, err := os.OpenFile(dir+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	defer lock.Close()
	if err := flock(lock); err != nil {
		return nil, err
	}

	if s, err := load(dir); err == nil {
		return s, nil
	}
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), filepath.Base(dir)+".build-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	if err := build(tmp); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return nil, err
	}
	return load(dir)
}

type manifest struct {
	RawSHA256 string            `json:"raw_sha256"`
	Size      int64             `json:"size"`
	Files     map[string]string `json:"files"` // case -> base name
}

func load(dir string) (*Set, error) {
	b, err := os.ReadFile(filepath.Join(dir, manifestName))
	if err != nil {
		return nil, err
	}
	var m manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	s := &Set{Dir: dir, RawSHA256: m.RawSHA256, Size: m.Size, Files: map[string]string{}}
	for c, name := range m.Files {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err != nil {
			return nil, err
		}
		s.Files[c] = p
	}
	if len(s.Files) != len(caseFiles) {
		return nil, errors.New("incomplete corpus")
	}
	s.Raw = s.Files["raw"]
	return s, nil
}

// run runs a command in dir, returning its stdout.
func run(dir string, stdin io.Reader, name string, args ...string) ([]byte, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Stdin = stdin
	var out, errb bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &errb
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, errb.String())
	}
	return out.Bytes(), nil
}

// runTo runs a command with stdout going to the file out (in dir).
func runTo(dir, out string, name string, args ...string) error {
	f, err := os.Create(filepath.Join(dir, out))
	if err != nil {
		return err
	}
	defer f.Close()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Stdout = f
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s > %s: %v: %s", name, strings.Join(args, " "), out, err, errb.String())
	}
	return f.Close()
}

// hashCmd returns the sha256 of a command's stdout.
func hashCmd(dir string, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	h := sha256.New()
	cmd.Stdout = h
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, errb.String())
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// SHA256 returns the hex sha256 of n bytes at off of the file (or
// device) at path, n < 0 meaning up to its end. It fails t when the file
// holds fewer than n bytes there.
func SHA256(t testing.TB, path string, off, n int64) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	limit := n
	if n < 0 {
		limit = math.MaxInt64 - off
	}
	h := sha256.New()
	got, err := io.CopyBuffer(h, io.NewSectionReader(f, off, limit), make([]byte, 4<<20))
	if err != nil {
		t.Fatalf("hashing %s: %v", path, err)
	}
	if n >= 0 && got != n {
		t.Fatalf("%s holds %d bytes at offset %d, want %d", path, got, off, n)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// catFiles concatenates srcs into dst (all in dir).
func catFiles(dir, dst string, srcs ...string) error {
	out, err := os.Create(filepath.Join(dir, dst))
	if err != nil {
		return err
	}
	defer out.Close()
	for _, s := range srcs {
		in, err := os.Open(filepath.Join(dir, s))
		if err != nil {
			return err
		}
		_, err = io.Copy(out, in)
		in.Close()
		if err != nil {
			return err
		}
	}
	return out.Close()
}

// splitRef writes the two halves of the reference (split at a 1 MiB
// boundary) as part1/part2 in dir.
func splitRef(dir, ref string) error {
	b, err := os.ReadFile(filepath.Join(dir, ref))
	if err != nil {
		return err
	}
	half := int64(len(b)) / 2 &^ (mib - 1)
	if err := os.WriteFile(filepath.Join(dir, "part1"), b[:half], 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "part2"), b[half:], 0o644)
}

func build(dir string) error {
	ref := caseFiles["raw"]
	refPath := filepath.Join(dir, ref)
	if err := writeReference(refPath); err != nil {
		return fmt.Errorf("writing the reference image: %w", err)
	}
	// GPT with two partitions: 1 MiB..24 MiB and the rest.
	if _, err := run(dir, nil, "sgdisk", "-o", "-U", "6A3F1D2C-0B5E-4C8A-9D71-2F0E5B6C7D8E",
		"-n", "1:2048:+23M", "-t", "1:ef00", "-u", "1:11111111-2222-3333-4444-555555555555",
		"-n", "2:0:0", "-t", "2:8300", "-u", "2:66666666-7777-8888-9999-000000000000", ref); err != nil {
		return err
	}
	sum, err := ctxio.FileSHA256(context.Background(), refPath)
	if err != nil {
		return err
	}
	steps := [][]string{
		{"cp", "--sparse=never", ref, caseFiles["raw-dense"]},
		{"zstd", "-q", "-3", "-o", caseFiles["zst"], ref},
		{"xz", "-k", "-3", "-T1", "-S", ".xztmp", ref},
		{"mv", ref + ".xztmp", caseFiles["xz"]},
		{"xz", "-k", "-3", "-T2", "--block-size=4MiB", "-S", ".xztmp2", ref},
		{"mv", ref + ".xztmp2", caseFiles["xz-multiblock"]},
		{"qemu-img", "convert", "-O", "qcow2", "-o", "compat=1.1", ref, caseFiles["qcow2-v3"]},
		{"qemu-img", "convert", "-O", "qcow2", "-o", "compat=0.10", ref, caseFiles["qcow2-v2"]},
		{"qemu-img", "convert", "-c", "-O", "qcow2", ref, caseFiles["qcow2-zlib"]},
		{"qemu-img", "convert", "-c", "-O", "qcow2", "-o", "compression_type=zstd", ref, caseFiles["qcow2-zstd"]},
	}
	for _, s := range steps {
		if _, err := run(dir, nil, s[0], s[1:]...); err != nil {
			return err
		}
	}
	if err := runTo(dir, caseFiles["gz"], "gzip", "-c", "-6", ref); err != nil {
		return err
	}
	if err := runTo(dir, caseFiles["bz2"], "bzip2", "-c", "-9", ref); err != nil {
		return err
	}
	// Two-member / two-frame / two-stream files from the halves.
	if err := splitRef(dir, ref); err != nil {
		return err
	}
	for _, s := range [][]string{
		{"zstd", "-q", "-f", "part1", "part2"},
		{"gzip", "-k", "-f", "part1", "part2"},
		{"xz", "-k", "-f", "-T1", "part1", "part2"},
	} {
		if _, err := run(dir, nil, s[0], s[1:]...); err != nil {
			return err
		}
	}
	for c, ext := range map[string]string{"zst-multiframe": ".zst", "gz-multimember": ".gz", "xz-multistream": ".xz"} {
		if err := catFiles(dir, caseFiles[c], "part1"+ext, "part2"+ext); err != nil {
			return err
		}
	}
	for _, p := range []string{"part1", "part2", "part1.zst", "part2.zst", "part1.gz", "part2.gz", "part1.xz", "part2.xz"} {
		os.Remove(filepath.Join(dir, p))
	}
	if err := buildBacking(dir, ref); err != nil {
		return fmt.Errorf("building the backing-file case: %w", err)
	}

	// Verify every case with its reference tool.
	verify := map[string][]string{
		"raw":            {"cat", caseFiles["raw"]},
		"raw-dense":      {"cat", caseFiles["raw-dense"]},
		"zst":            {"zstd", "-dc", caseFiles["zst"]},
		"zst-multiframe": {"zstd", "-dc", caseFiles["zst-multiframe"]},
		"gz":             {"gzip", "-dc", caseFiles["gz"]},
		"gz-multimember": {"gzip", "-dc", caseFiles["gz-multimember"]},
		"xz":             {"xz", "-dc", caseFiles["xz"]},
		"xz-multiblock":  {"xz", "-dc", caseFiles["xz-multiblock"]},
		"xz-multistream": {"xz", "-dc", caseFiles["xz-multistream"]},
		"bz2":            {"bzip2", "-dc", caseFiles["bz2"]},
	}
	for c, name := range caseFiles {
		if strings.HasSuffix(name, ".qcow2") {
			verify[c] = []string{"qemu-img", "convert", "-O", "raw", name, "verify.raw"}
		}
	}
	for c, cmd := range verify {
		var got string
		if cmd[0] == "qemu-img" {
			if _, err := run(dir, nil, cmd[0], cmd[1:]...); err != nil {
				return err
			}
			got, err = ctxio.FileSHA256(context.Background(), filepath.Join(dir, "verify.raw"))
			os.Remove(filepath.Join(dir, "verify.raw"))
		} else {
			got, err = hashCmd(dir, cmd[0], cmd[1:]...)
		}
		if err != nil {
			return err
		}
		if got != sum {
			return fmt.Errorf("case %s: %s gives sha256 %s, want %s", c, strings.Join(cmd, " "), got, sum)
		}
	}
	// The dense copy must have no holes and the reference must have some.
	for name, wantSparse := range map[string]bool{caseFiles["raw"]: true, caseFiles["raw-dense"]: false} {
		var st syscall.Stat_t
		if err := syscall.Stat(filepath.Join(dir, name), &st); err != nil {
			return err
		}
		if sparse := st.Blocks*512 < RefSize; sparse != wantSparse {
			return fmt.Errorf("%s: sparse=%v (allocated %d of %d bytes), want %v; does %s support holes?",
				name, sparse, st.Blocks*512, RefSize, wantSparse, dir)
		}
	}

	m := manifest{RawSHA256: sum, Size: RefSize, Files: caseFiles}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, manifestName), b, 0o644)
}

// buildBacking writes base.img (the reference with a few regions changed)
// and child.qcow2 on top of it, which restores exactly the reference: data
// clusters where base differs, zero clusters where the reference has zeros
// but base has data, and unallocated clusters (reads fall through to base)
// everywhere else.
func buildBacking(dir, ref string) error {
	refBytes, err := os.ReadFile(filepath.Join(dir, ref))
	if err != nil {
		return err
	}
	if _, err := run(dir, nil, "cp", "--sparse=always", ref, BackingFile); err != nil {
		return err
	}
	base, err := os.OpenFile(filepath.Join(dir, BackingFile), os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	fl := newFiller(7)
	type diff struct{ off, len int64 }
	changed := []diff{
		{1 * mib, 1 * mib},  // random in both, different bytes
		{5 * mib, 1 * mib},  // zeros in the reference, data in base
		{30 * mib, 1 * mib}, // a hole in the reference, data in base
		{40 * mib, 1 * mib}, // text in the reference, zeros in base
	}
	for i, d := range changed {
		b := fl.random(int(d.len))
		if i == 3 {
			b = make([]byte, d.len)
		}
		if _, err := base.WriteAt(b, d.off); err != nil {
			base.Close()
			return err
		}
	}
	if err := base.Close(); err != nil {
		return err
	}
	child := caseFiles["qcow2-backing"]
	if _, err := run(dir, nil, "qemu-img", "create", "-q", "-f", "qcow2", "-b", BackingFile, "-F", "raw", child, fmt.Sprint(RefSize)); err != nil {
		return err
	}
	args := []string{"-f", "qcow2", child}
	for i, d := range changed {
		part := refBytes[d.off : d.off+d.len]
		if bytes.Count(part, []byte{0}) == len(part) {
			args = append(args, "-c", fmt.Sprintf("write -q -z %d %d", d.off, d.len))
			continue
		}
		pf := fmt.Sprintf("patch%d", i)
		if err := os.WriteFile(filepath.Join(dir, pf), part, 0o644); err != nil {
			return err
		}
		defer os.Remove(filepath.Join(dir, pf))
		args = append(args, "-c", fmt.Sprintf("write -q -s %s %d %d", pf, d.off, d.len))
	}
	_, err = run(dir, nil, "qemu-io", args...)
	return err
}

// Truncate copies the first n bytes of path into t.TempDir() under the
// same base name and returns the copy's path.
func Truncate(t testing.TB, path string, n int64) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if n > int64(len(b)) {
		t.Fatalf("Truncate(%s, %d): file has only %d bytes", path, n, len(b))
	}
	out := filepath.Join(t.TempDir(), filepath.Base(path))
	if err := os.WriteFile(out, b[:n], 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}

// Corrupt copies path into t.TempDir() under the same base name with data
// written over the bytes at off, and returns the copy's path.
func Corrupt(t testing.TB, path string, off int64, data []byte) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if off < 0 || off+int64(len(data)) > int64(len(b)) {
		t.Fatalf("Corrupt(%s, %d, %d bytes): file has only %d bytes", path, off, len(data), len(b))
	}
	copy(b[off:], data)
	out := filepath.Join(t.TempDir(), filepath.Base(path))
	if err := os.WriteFile(out, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}

// flock takes an exclusive lock on f, released when f is closed.
func flock(f *os.File) error {
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("locking %s: %w", f.Name(), err)
	}
	return nil
}

// missingTool returns the first of tools that is not on PATH, or "".
func missingTool(tools ...string) string {
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			return tool
		}
	}
	return ""
}
