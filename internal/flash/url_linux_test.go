package flash

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/btyproject/bty/internal/imagetest"
	"github.com/btyproject/bty/internal/looptest"
	"github.com/btyproject/bty/internal/source"
)

// dropWriter cuts the connection after limit body bytes.
type dropWriter struct {
	http.ResponseWriter
	left int64
}

func (d *dropWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > d.left {
		n, _ := d.ResponseWriter.Write(p[:d.left])
		d.ResponseWriter.(http.Flusher).Flush()
		conn, _, err := d.ResponseWriter.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
		d.left = 0
		return n, http.ErrAbortHandler
	}
	d.left -= int64(len(p))
	return d.ResponseWriter.Write(p)
}

// droppingServer serves dir with Range/If-Range support and cuts the
// first drops responses off after 700 KiB.
func droppingServer(t *testing.T, dir string, drops int64) (*httptest.Server, *atomic.Int64) {
	var requests, dropped atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		f, err := os.Open(filepath.Join(dir, filepath.Base(r.URL.Path)))
		if err != nil {
			http.NotFound(w, r)
			return
		}
		defer f.Close()
		st, _ := f.Stat()
		w.Header().Set("ETag", `"corpus-v1"`)
		var rw http.ResponseWriter = w
		if dropped.Add(1) <= drops {
			rw = &dropWriter{ResponseWriter: w, left: 700 << 10}
		}
		http.ServeContent(rw, r, st.Name(), st.ModTime(), f)
	}))
	t.Cleanup(srv.Close)
	return srv, &requests
}

// TestRunFromURLWithDrops flashes from an HTTP server that cuts the
// connection several times: streams resume with Range, qcow2 and
// multi-block xz read ranges; the disk must still match byte for byte.
func TestRunFromURLWithDrops(t *testing.T) {
	looptest.RequireRoot(t)
	set := imagetest.Corpus(t)
	for _, name := range []string{"raw", "zst", "gz", "qcow2-zlib", "xz-multiblock"} {
		t.Run(name, func(t *testing.T) {
			srv, requests := droppingServer(t, set.Dir, 3)
			dev := looptest.New(t, set.Size)
			url := srv.URL + "/" + filepath.Base(set.Files[name])
			res, err := Run(context.Background(), Options{Image: url, Target: dev.Path, SHA256: set.RawSHA256,
				Source: source.Options{RetryDelay: 10 * time.Millisecond}})
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if got := dev.SHA256(t, set.Size); got != set.RawSHA256 {
				t.Fatalf("device sha256 %s, want %s", got, set.RawSHA256)
			}
			if requests.Load() < 4 {
				t.Errorf("only %d requests: the drops were not exercised", requests.Load())
			}
			if res.SHA256 != set.RawSHA256 {
				t.Errorf("stream sha256 %s", res.SHA256)
			}
		})
	}
}

// TestRunFromURLGivesUp: a server that never sends the file past 8 MiB
// makes the flash fail with the offset, never a short "success".
func TestRunFromURLGivesUp(t *testing.T) {
	looptest.RequireRoot(t)
	set := imagetest.Corpus(t)
	data, err := os.ReadFile(set.Files["zst"])
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"corpus-v1"`)
		// Serve a cut-off copy under the full length: every response
		// ends early at the same byte.
		var start int64
		if r.Header.Get("Range") != "" {
			fmtSscanf(r.Header.Get("Range"), &start)
		}
		rw := &dropWriter{ResponseWriter: w, left: max(8<<20-start, 0)}
		http.ServeContent(rw, r, "disk.img.zst", time.Time{}, bytes.NewReader(data))
	}))
	defer srv.Close()
	dev := looptest.New(t, set.Size)
	before := dev.ReadAt(t, 0, headSize)
	_, err = Run(context.Background(), Options{Image: srv.URL + "/disk.img.zst", Target: dev.Path,
		Source: source.Options{Retries: 2, RetryDelay: time.Millisecond}})
	if err == nil {
		t.Fatal("a download that never completes flashed successfully")
	}
	if !strings.Contains(err.Error(), "8388608") {
		t.Errorf("error %q does not name the byte where the download stopped", err)
	}
	if head := dev.ReadAt(t, 0, headSize); bytes.Equal(head, before) || !bytes.Equal(head, make([]byte, headSize)) {
		t.Errorf("after a failed download (%v) the head must be zeroed, not old and not the image's", err)
	}
}

func fmtSscanf(rangeHeader string, start *int64) {
	_, _ = fmt.Sscanf(rangeHeader, "bytes=%d-", start)
}
