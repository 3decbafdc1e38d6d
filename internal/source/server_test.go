package source

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// imageServer serves one in-memory file over real HTTP with knobs for the
// misbehaviour under test. The zero knobs give a well-behaved server with
// an ETag and range support.
type imageServer struct {
	mu           sync.Mutex
	data         []byte
	etag         string
	lastModified string
	acceptRanges string          // Accept-Ranges header value; "" sends none
	noRange      bool            // ignore Range (always 200 with everything)
	noIfRange    bool            // ignore If-Range (serve the range even if changed)
	extraLength  int64           // announce this many bytes more than exist
	status       int             // answer every request with this status
	statusFor    func(n int) int // status for request n (0: serve)
	// cut says, for request number n (from 0) starting at byte start, how
	// many body bytes to send before cutting the connection (-1: all).
	cut func(n int, start int64) int64
	// stall, when set, blocks the body after cut bytes instead of cutting.
	stall chan struct{}

	requests      atomic.Int64
	rangeRequests atomic.Int64
	headers       []http.Header // request headers, in order

	srv *httptest.Server
}

func newImageServer(t *testing.T, data []byte, setup func(*imageServer)) *imageServer {
	t.Helper()
	s := &imageServer{data: data, etag: `"v1"`, acceptRanges: "bytes"}
	if setup != nil {
		setup(s)
	}
	s.srv = httptest.NewServer(s)
	t.Cleanup(func() {
		if s.stall != nil {
			select {
			case <-s.stall:
			default:
				close(s.stall)
			}
		}
		s.srv.Close()
	})
	return s
}

func (s *imageServer) URL() string { return s.srv.URL + "/images/disk.img" }

// set changes the file (and its ETag) for later requests.
func (s *imageServer) set(data []byte, etag string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.data, s.etag = data, etag
}

func (s *imageServer) header(i int) http.Header {
	s.mu.Lock()
	defer s.mu.Unlock()
	if i >= len(s.headers) {
		return nil
	}
	return s.headers[i]
}

func (s *imageServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := int(s.requests.Add(1) - 1)
	s.mu.Lock()
	s.headers = append(s.headers, r.Header.Clone())
	data, etag, lastModified := s.data, s.etag, s.lastModified
	s.mu.Unlock()

	status := s.status
	if s.statusFor != nil {
		status = s.statusFor(n)
	}
	if status != 0 {
		http.Error(w, http.StatusText(status), status)
		return
	}
	size := int64(len(data)) + s.extraLength
	start, end := int64(0), size-1
	partial := false
	if rh := r.Header.Get("Range"); rh != "" && !s.noRange {
		ir := r.Header.Get("If-Range")
		if ir == "" || s.noIfRange || ir == etag || ir == lastModified {
			spec, ok := strings.CutPrefix(rh, "bytes=")
			a, b, ok2 := strings.Cut(spec, "-")
			if !ok || !ok2 {
				http.Error(w, "bad range", http.StatusBadRequest)
				return
			}
			start, _ = strconv.ParseInt(a, 10, 64)
			if b != "" {
				end, _ = strconv.ParseInt(b, 10, 64)
				end = min(end, size-1)
			}
			if start >= size {
				w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", size))
				w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
				return
			}
			partial = true
			s.rangeRequests.Add(1)
		}
	}
	h := w.Header()
	if etag != "" {
		h.Set("ETag", etag)
	}
	if lastModified != "" {
		h.Set("Last-Modified", lastModified)
	}
	if s.acceptRanges != "" {
		h.Set("Accept-Ranges", s.acceptRanges)
	}
	h.Set("Content-Length", strconv.FormatInt(end-start+1, 10))
	if partial {
		h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, end, size))
		w.WriteHeader(http.StatusPartialContent)
	} else {
		w.WriteHeader(http.StatusOK)
	}
	body := data[min(start, int64(len(data))):min(end+1, int64(len(data)))]
	k := int64(-1)
	if s.cut != nil {
		k = s.cut(n, start)
	}
	if k < 0 || k >= int64(len(body)) {
		w.Write(body)
		return // with extraLength, the server closes the connection short
	}
	w.Write(body[:k])
	rc := http.NewResponseController(w)
	rc.Flush()
	if s.stall != nil {
		select {
		case <-s.stall:
		case <-r.Context().Done():
		}
		return
	}
	conn, _, err := rc.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	conn.Close()
}

// randomData is n reproducible pseudo-random bytes.
func randomData(n int, seed uint64) []byte {
	r := rand.New(rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)}))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func sum(b []byte) [32]byte { return sha256.Sum256(b) }

// logBuffer collects log lines from concurrent goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
