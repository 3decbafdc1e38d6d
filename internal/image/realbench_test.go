package image

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/btyproject/bty/internal/source"
)

// TestRealDecode decodes the real benchmark images (a 3 GiB Debian disk
// with ~1.1 GiB of data, built by scripts/bench.sh into .cache/bench-image)
// to nowhere, each in a child process so its peak RSS is its own, next to
// the reference CLI on the same file in the same run. Opt-in:
//
//	BTY_REAL_BENCH=1 go test -run TestRealDecode -v ./internal/image/
//
// BTY_REAL_BENCH=zst,xz selects formats; BTY_REAL_BENCH_REPEAT repeats.
// The child reads into 4 MiB buffers like the flash engine (or uses
// WriteTo with BTY_REAL_BENCH_WRITETO=1); BTY_REAL_BENCH_BUFFER sets
// Options.BufferBytes; BTY_REAL_BENCH_ENGINE=1 adds the flash engine's
// CPU work (engineLike).
//
// BENCH (2 vCPUs, quiet machine, MB/s of decoded output, CPU time and
// peak RSS of the process; "engine" is BTY_REAL_BENCH_ENGINE=1; two runs):
//
//	                       zst                          xz (-T2, 128 blocks)
//	before (ed9a887)       1209-1431 MB/s 2.7-3.1 s 26 MiB  255-259 MB/s 24 s 145-168 MiB
//	  engine               1181-1407 MB/s 3.2-3.9 s 47 MiB  256-257 MB/s 24 s 198-214 MiB
//	after                  2424-2528 MB/s 1.7-1.8 s 31 MiB  350-353 MB/s 17.5 s  64 MiB
//	  engine               1739-2030 MB/s 2.5-2.9 s 51 MiB  334-342 MB/s 18.3 s  85 MiB
//	zstd -dc / xz -dc -T2  2236-2473 MB/s 1.5-1.7 s  9 MiB  372-394 MB/s 16.5 s 156 MiB
//
// (see git log for the numbers of each change)
func TestRealDecode(t *testing.T) {
	if path := os.Getenv("BTY_REAL_BENCH_CHILD"); path != "" {
		realDecodeChild(t, path)
		return
	}
	sel := os.Getenv("BTY_REAL_BENCH")
	if sel == "" {
		t.Skip("set BTY_REAL_BENCH=1 (or =zst,xz) to decode the real bench images")
	}
	dir := os.Getenv("BTY_REAL_BENCH_DIR")
	if dir == "" {
		dir = "../../.cache/bench-image"
	}
	formats := []string{"zst", "xz"}
	if sel != "1" {
		formats = strings.Split(sel, ",")
	}
	repeat := 1
	if r := os.Getenv("BTY_REAL_BENCH_REPEAT"); r != "" {
		fmt.Sscan(r, &repeat)
	}
	cli := map[string][]string{
		"zst": {"zstd", "-dcq"},
		"xz":  {"xz", "-dc", "-T2"},
		"gz":  {"gzip", "-dc"},
	}
	for range repeat {
		for _, f := range formats {
			path := filepath.Join(dir, "disk.img."+f)
			if _, err := os.Stat(path); err != nil {
				t.Skipf("no %s: %v", path, err)
			}
			const decoded = 3 << 30 // bytes, for MB/s
			self, _ := os.Executable()
			cmd := exec.Command(self, "-test.run=^TestRealDecode$")
			cmd.Env = append(os.Environ(), "BTY_REAL_BENCH_CHILD="+path)
			cmd.Stderr = os.Stderr
			cmd.Stdout = new(strings.Builder)
			d, cpu, rss, out, err := runMeasuredCPU(cmd)
			if err != nil {
				t.Fatalf("child: %v\n%s", err, out)
			}
			t.Logf("%-3s bty  %7.1f MB/s  %5.1f s CPU  %6.1f MiB peak RSS", f, float64(decoded)/d.Seconds()/1e6, cpu.Seconds(), float64(rss)/1024)
			if c, ok := cli[f]; ok {
				cmd := exec.Command(c[0], append(c[1:], path)...)
				d, cpu, rss, _, err := runMeasuredCPU(cmd)
				if err != nil {
					t.Fatalf("%s: %v", c[0], err)
				}
				t.Logf("%-3s %-5s%7.1f MB/s  %5.1f s CPU  %6.1f MiB peak RSS", f, c[0], float64(decoded)/d.Seconds()/1e6, cpu.Seconds(), float64(rss)/1024)
			}
		}
	}
}

// runMeasuredCPU runs cmd and returns its wall time, CPU time (user +
// system), peak RSS in KiB and captured stdout.
func runMeasuredCPU(cmd *exec.Cmd) (time.Duration, time.Duration, int64, []byte, error) {
	t0 := time.Now()
	err := cmd.Run()
	d := time.Since(t0)
	var rss int64
	var cpu time.Duration
	if cmd.ProcessState != nil {
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			rss = ru.Maxrss
		}
		cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	}
	var out []byte
	if b, ok := cmd.Stdout.(*strings.Builder); ok {
		out = []byte(b.String())
	}
	return d, cpu, rss, out, err
}

func realDecodeChild(t *testing.T, path string) {
	src, err := source.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if c := os.Getenv("BTY_REAL_BENCH_ZSTD_CONC"); c != "" {
		fmt.Sscan(c, &zstdConcurrency)
	}
	var opts Options
	if b := os.Getenv("BTY_REAL_BENCH_BUFFER"); b != "" {
		fmt.Sscan(b, &opts.BufferBytes)
	}
	img, err := Open(context.Background(), src, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	s := img.(Stream)
	var n int64
	if os.Getenv("BTY_REAL_BENCH_ENGINE") == "1" {
		n, err = engineLike(s)
	} else if wt, ok := s.(io.WriterTo); ok && os.Getenv("BTY_REAL_BENCH_WRITETO") == "1" {
		n, err = wt.WriteTo(io.Discard)
	} else {
		buf := make([]byte, 4<<20)
		for {
			k, rerr := io.ReadFull(s, buf)
			n += int64(k)
			if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
				break
			}
			if rerr != nil {
				err = rerr
				break
			}
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	if n != 3<<30 {
		t.Fatalf("decoded %d bytes", n)
	}
}

// engineLike consumes s the way the flash engine's stream copy does, minus
// the device: one goroutine fills 4 MiB buffers from a pool of 6, two
// workers scan them for all-zero 4 KiB blocks and copy the rest (as a
// write would touch them), so decoding competes for the CPU as in a flash.
func engineLike(s Stream) (int64, error) {
	const size = 4 << 20
	pool := make(chan []byte, 6)
	for range cap(pool) {
		pool <- make([]byte, size)
	}
	type chunk struct {
		b []byte
		n int
	}
	jobs := make(chan chunk)
	done := make(chan struct{})
	var sink [4096]byte
	for range 2 {
		go func() {
			for c := range jobs {
				for off := 0; off < c.n; off += 4096 {
					blk := c.b[off:min(off+4096, c.n)]
					zero := true
					for _, v := range blk {
						if v != 0 {
							zero = false
							break
						}
					}
					if !zero {
						copy(sink[:], blk)
					}
				}
				pool <- c.b
			}
			done <- struct{}{}
		}()
	}
	var total int64
	var err error
	for {
		b := <-pool
		k, rerr := io.ReadFull(s, b)
		total += int64(k)
		if k > 0 {
			jobs <- chunk{b, k}
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			err = rerr
			break
		}
	}
	close(jobs)
	<-done
	<-done
	return total, err
}
