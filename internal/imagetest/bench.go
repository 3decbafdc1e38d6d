package imagetest

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// BenchSize is the decoded size of the benchmark inputs.
const BenchSize = 256 << 20

// Bench is a set of benchmark inputs: the same BenchSize bytes of mixed
// content (see WriteMixed) raw and compressed the way images are shipped.
type Bench struct {
	Dir string
	// Files maps a format to its file: raw (mixed.img), zst (zstd -3),
	// gz (gzip -6), xz (xz -6 -T2, multi-block as xz -T writes it),
	// xz-single (xz -6 -T1, one block), bz2 (bzip2 -9).
	Files map[string]string
}

var (
	benchOnce sync.Once
	benchSet  *Bench
	benchErr  error
	benchSkip string
)

// BenchInputs builds (once, cached in os.TempDir()/bty-bench-<Version>)
// and returns the benchmark inputs, skipping when a tool is missing.
func BenchInputs(tb testing.TB) *Bench {
	tb.Helper()
	benchOnce.Do(func() {
		if tool := missingTool("zstd", "gzip", "xz", "bzip2"); tool != "" {
			benchSkip = fmt.Sprintf("imagetest: %s not on PATH", tool)
			return
		}
		benchSet, benchErr = buildBench(filepath.Join(os.TempDir(), "bty-bench-"+Version))
	})
	if benchSkip != "" {
		tb.Skip(benchSkip)
	}
	if benchErr != nil {
		tb.Fatalf("building benchmark inputs: %v", benchErr)
	}
	return benchSet
}

func buildBench(dir string) (*Bench, error) {
	b := &Bench{Dir: dir, Files: map[string]string{
		"raw":       "mixed.img",
		"zst":       "mixed.img.zst",
		"gz":        "mixed.img.gz",
		"xz":        "mixed.img.xz",
		"xz-single": "mixed-single.img.xz",
		"bz2":       "mixed.img.bz2",
	}}
	for k, v := range b.Files {
		b.Files[k] = filepath.Join(dir, v)
	}
	done := filepath.Join(dir, "complete")
	if _, err := os.Stat(done); err == nil {
		return b, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	lock, err := os.OpenFile(dir+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	defer lock.Close()
	if err := flock(lock); err != nil {
		return nil, err
	}
	if _, err := os.Stat(done); err == nil {
		return b, nil
	}
	f, err := os.Create(b.Files["raw"])
	if err != nil {
		return nil, err
	}
	if err := WriteMixed(f, BenchSize, 256); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	raw := "mixed.img"
	for out, cmd := range map[string][]string{
		"mixed.img.zst":       {"zstd", "-c", "-3", "-T0", raw},
		"mixed.img.gz":        {"gzip", "-c", "-6", raw},
		"mixed.img.xz":        {"xz", "-c", "-6", "-T2", raw},
		"mixed-single.img.xz": {"xz", "-c", "-6", "-T1", raw},
		"mixed.img.bz2":       {"bzip2", "-c", "-9", raw},
	} {
		if err := runTo(dir, out, cmd[0], cmd[1:]...); err != nil {
			return nil, err
		}
	}
	return b, os.WriteFile(done, nil, 0o644)
}
