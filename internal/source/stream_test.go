package source

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

const mib = 1 << 20

func fastOpts(logs *logBuffer) Options {
	o := Options{RetryDelay: time.Millisecond}
	if logs != nil {
		o.Logger = logs.logger()
	}
	return o
}

// readAll opens ref and reads the whole stream.
func readAll(t *testing.T, ref string, opts Options) ([]byte, Source, error) {
	t.Helper()
	src, err := Open(t.Context(), ref, opts)
	if err != nil {
		return nil, nil, err
	}
	t.Cleanup(func() { src.Close() })
	r, err := src.Open(t.Context())
	if err != nil {
		return nil, src, err
	}
	defer r.Close()
	got, err := io.ReadAll(r)
	return got, src, err
}

func TestStreamWhole(t *testing.T) {
	data := randomData(3*mib+123, 1)
	srv := newImageServer(t, data, nil)
	got, src, err := readAll(t, srv.URL(), fastOpts(nil))
	if err != nil {
		t.Fatal(err)
	}
	if sum(got) != sum(data) {
		t.Fatalf("content differs: got %d bytes", len(got))
	}
	if src.Size() != int64(len(data)) {
		t.Errorf("Size = %d, want %d", src.Size(), len(data))
	}
	// The GET made by Open is the stream: no second download.
	if n := srv.requests.Load(); n != 1 {
		t.Errorf("%d requests, want 1", n)
	}
	if ae := srv.header(0).Get("Accept-Encoding"); ae != "identity" {
		t.Errorf("Accept-Encoding %q, want identity", ae)
	}

	// A second Open reads everything again from 0.
	r, err := src.Open(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	again, err := io.ReadAll(r)
	r.Close()
	if err != nil || sum(again) != sum(data) {
		t.Fatalf("second Open: %d bytes, err %v", len(again), err)
	}
}

func TestStreamResumes(t *testing.T) {
	data := randomData(4*mib, 2)
	tests := []struct {
		name    string
		retries int
		cut     func(n int, start int64) int64
		setup   func(*imageServer)
		want    int // requests
		wantLog string
	}{
		{
			name: "one drop",
			cut: func(n int, _ int64) int64 {
				if n == 0 {
					return mib + 7
				}
				return -1
			},
			want:    2,
			wantLog: "offset=1048583 size=4194304 attempt=1 ",
		},
		{
			name: "several drops",
			cut: func(n int, _ int64) int64 {
				if n < 4 {
					return 700_001
				}
				return -1
			},
			want:    5,
			wantLog: "offset=2800004 size=4194304 attempt=1 ",
		},
		{
			// Retries count failures in a row: progress starts them over,
			// so 8 drops pass with Retries=2.
			name:    "counter resets after progress",
			retries: 2,
			cut: func(n int, _ int64) int64 {
				if n < 8 {
					return 300_000
				}
				return -1
			},
			want: 9,
		},
		{
			name:    "drops without progress within the bound",
			retries: 3,
			cut: func(n int, _ int64) int64 {
				switch {
				case n == 0:
					return 123_456
				case n <= 2: // resume attempts 1 and 2 fail, 3 works
					return 0
				}
				return -1
			},
			want:    4,
			wantLog: "offset=123456 size=4194304 attempt=3 retries=3",
		},
		{
			// Range is ignored but the ETag proves the same file: the
			// first N bytes of the new 200 are skipped.
			name: "server ignores Range, same ETag",
			setup: func(s *imageServer) {
				s.noRange = true
				s.acceptRanges = ""
			},
			cut: func(n int, _ int64) int64 {
				if n == 0 {
					return 2*mib + 1
				}
				return -1
			},
			want:    3, // GET, range probe at Open (answered 200), resume
			wantLog: "server ignores Range",
		},
		{
			name: "Last-Modified only",
			setup: func(s *imageServer) {
				s.etag = ""
				s.lastModified = "Tue, 01 Dec 2026 10:00:00 GMT"
			},
			cut: func(n int, _ int64) int64 {
				if n == 0 {
					return 99
				}
				return -1
			},
			want: 2,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			logs := &logBuffer{}
			srv := newImageServer(t, data, func(s *imageServer) {
				s.cut = tc.cut
				if tc.setup != nil {
					tc.setup(s)
				}
			})
			opts := fastOpts(logs)
			opts.Retries = tc.retries
			got, _, err := readAll(t, srv.URL(), opts)
			if err != nil {
				t.Fatalf("read: %v\nlog:\n%s", err, logs)
			}
			if sum(got) != sum(data) {
				t.Fatalf("content differs: got %d bytes, want %d", len(got), len(data))
			}
			if n := srv.requests.Load(); n != int64(tc.want) {
				t.Errorf("%d requests, want %d", n, tc.want)
			}
			if !strings.Contains(logs.String(), tc.wantLog) || !strings.Contains(logs.String(), "level=WARN") {
				t.Errorf("log lacks %q:\n%s", tc.wantLog, logs)
			}
		})
	}
}

func TestStreamResumeHeaders(t *testing.T) {
	data := randomData(mib, 3)
	srv := newImageServer(t, data, func(s *imageServer) {
		s.cut = func(n int, _ int64) int64 {
			if n == 0 {
				return 5000
			}
			return -1
		}
	})
	if _, _, err := readAll(t, srv.URL(), fastOpts(nil)); err != nil {
		t.Fatal(err)
	}
	h := srv.header(1)
	if got := h.Get("Range"); got != "bytes=5000-" {
		t.Errorf("Range %q, want bytes=5000-", got)
	}
	if got := h.Get("If-Range"); got != `"v1"` {
		t.Errorf("If-Range %q, want the ETag", got)
	}
}

func TestStreamGivesUp(t *testing.T) {
	data := randomData(2*mib, 4)
	tests := []struct {
		name   string
		setup  func(*imageServer)
		want   []string // in the message
		wantIs []error
	}{
		{
			name: "more drops than retries",
			setup: func(s *imageServer) {
				s.cut = func(n int, _ int64) int64 {
					if n == 0 {
						return 654_321
					}
					return 0
				}
			},
			want:   []string{"byte 654321 of 2097152", "after 2 retries"},
			wantIs: []error{io.ErrUnexpectedEOF},
		},
		{
			// The server announces 100 bytes more than it has and closes:
			// never a short success.
			name:   "Content-Length longer than body",
			setup:  func(s *imageServer) { s.extraLength = 100 },
			want:   []string{"byte 2097152 of 2097252"},
			wantIs: []error{io.ErrUnexpectedEOF},
		},
		{
			name: "Content-Length longer than body, no ranges",
			setup: func(s *imageServer) {
				s.extraLength = 100
				s.noRange = true
				s.acceptRanges = ""
				s.etag = ""
			},
			want: []string{"does not support resuming", "byte 2097152"},
		},
		{
			name: "server ignores Range, no validator",
			setup: func(s *imageServer) {
				s.noRange = true
				s.acceptRanges = ""
				s.etag = ""
				s.cut = func(n int, _ int64) int64 {
					if n == 0 {
						return 1000
					}
					return -1
				}
			},
			want: []string{"does not support resuming", "byte 1000"},
		},
		{
			name: "server errors on resume",
			setup: func(s *imageServer) {
				s.cut = func(n int, _ int64) int64 {
					if n == 0 {
						return 4096
					}
					return -1
				}
				s.statusFor = func(n int) int {
					if n == 0 {
						return 0
					}
					return http.StatusServiceUnavailable
				}
			},
			// After the first request, every answer is 503.
			want:   []string{"byte 4096", "503"},
			wantIs: []error{io.ErrUnexpectedEOF},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := newImageServer(t, data, tc.setup)
			opts := fastOpts(nil)
			opts.Retries = 2
			got, _, err := readAll(t, srv.URL(), opts)
			if err == nil {
				t.Fatalf("read %d bytes with no error", len(got))
			}
			t.Logf("error: %v", err)
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			for _, w := range tc.wantIs {
				if !errors.Is(err, w) {
					t.Errorf("error %q is not %v", err, w)
				}
			}
			if n := srv.requests.Load(); n > 4 {
				t.Errorf("%d requests; retries not bounded", n)
			}
		})
	}
}

func TestStreamFileChanged(t *testing.T) {
	data := randomData(2*mib, 5)
	changed := randomData(2*mib, 6)
	for _, noIfRange := range []bool{false, true} {
		// With If-Range honoured the server answers 200 with the new file;
		// without, 206 with the new ETag. Both must fail.
		t.Run(fmt.Sprintf("noIfRange=%v", noIfRange), func(t *testing.T) {
			srv := newImageServer(t, data, func(s *imageServer) {
				s.noIfRange = noIfRange
				s.cut = func(n int, _ int64) int64 {
					if n == 0 {
						return mib
					}
					return -1
				}
			})
			src, err := Open(t.Context(), srv.URL(), fastOpts(nil))
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			r, err := src.Open(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			buf := make([]byte, 4096)
			for {
				n, err := r.Read(buf)
				if err != nil || n == 0 {
					t.Fatalf("first read: %d, %v", n, err)
				}
				if srv.requests.Load() == 1 {
					break
				}
			}
			srv.set(changed, `"v2"`)
			_, err = io.ReadAll(r)
			if !errors.Is(err, ErrChanged) || !strings.Contains(err.Error(), "changed on the server") {
				t.Fatalf("err = %v, want ErrChanged", err)
			}
			if !strings.Contains(err.Error(), `"v2"`) {
				t.Errorf("error %q does not name the new ETag", err)
			}
		})
	}
}

func TestOpenURLErrors(t *testing.T) {
	t.Run("404", func(t *testing.T) {
		srv := newImageServer(t, nil, func(s *imageServer) { s.status = http.StatusNotFound })
		_, err := Open(t.Context(), srv.URL(), fastOpts(nil))
		if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "/images/disk.img") {
			t.Fatalf("err = %v, want ErrNotFound naming the URL", err)
		}
	})
	t.Run("410", func(t *testing.T) {
		srv := newImageServer(t, nil, func(s *imageServer) { s.status = http.StatusGone })
		_, err := Open(t.Context(), srv.URL(), fastOpts(nil))
		if !errors.Is(err, ErrNotFound) {
			t.Fatalf("err = %v, want ErrNotFound", err)
		}
	})
	t.Run("500", func(t *testing.T) {
		srv := newImageServer(t, nil, func(s *imageServer) { s.status = http.StatusInternalServerError })
		_, err := Open(t.Context(), srv.URL(), fastOpts(nil))
		if err == nil || errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "500 Internal Server Error") {
			t.Fatalf("err = %v, want one naming the status", err)
		}
	})
	t.Run("connection refused", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		start := time.Now()
		_, err = Open(t.Context(), "http://"+addr+"/x.img?token=secret", fastOpts(nil))
		if err == nil || !strings.Contains(err.Error(), "connection refused") || !strings.Contains(err.Error(), "http://"+addr+"/x.img") {
			t.Fatalf("err = %v, want connection refused naming the URL", err)
		}
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("error leaks the query string: %v", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("took %v to fail", d)
		}
	})
	t.Run("not http", func(t *testing.T) {
		if _, err := Open(t.Context(), "http://", fastOpts(nil)); err == nil {
			t.Fatal("no error for a URL without host")
		}
	})
}

func TestName(t *testing.T) {
	srv := newImageServer(t, randomData(100, 7), nil)
	u := strings.Replace(srv.URL(), "http://", "http://user:pw@", 1) + "?sig=abc#frag"
	src, err := Open(t.Context(), u, fastOpts(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if got, want := src.Name(), srv.URL(); got != want {
		t.Errorf("Name() = %q, want %q", got, want)
	}
	if got := srv.header(0).Get("Authorization"); !strings.HasPrefix(got, "Basic ") {
		t.Errorf("credentials not sent: Authorization %q", got)
	}
}

func TestUnknownSize(t *testing.T) {
	data := randomData(mib+5, 8)
	// Chunked, no Content-Length, no ranges. The first response is cut
	// after 1000 bytes; that must never look like the end.
	handler := func(etag string) http.Handler {
		var requests atomic.Int64
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if etag != "" {
				w.Header().Set("ETag", etag)
			}
			if requests.Add(1) == 1 {
				w.Write(data[:1000])
				http.NewResponseController(w).Flush()
				panic(http.ErrAbortHandler)
			}
			w.Write(data)
		})
	}
	t.Run("no validator", func(t *testing.T) {
		srv := httptest.NewServer(handler(""))
		defer srv.Close()
		got, src, err := readAll(t, srv.URL+"/img", fastOpts(nil))
		if src == nil || src.Size() != -1 {
			t.Fatalf("Size() should be -1 (err %v)", err)
		}
		if src.ReaderAt() != nil {
			t.Error("ReaderAt offered with unknown size")
		}
		if err == nil {
			t.Fatalf("a cut chunked stream read %d bytes with no error", len(got))
		}
		if !strings.Contains(err.Error(), "byte 1000") || !strings.Contains(err.Error(), "does not support resuming") {
			t.Errorf("error %q does not name the offset and cause", err)
		}
	})
	t.Run("same ETag", func(t *testing.T) {
		srv := httptest.NewServer(handler(`"x"`))
		defer srv.Close()
		got, _, err := readAll(t, srv.URL+"/img", fastOpts(nil))
		if err != nil || sum(got) != sum(data) {
			t.Fatalf("resume by skipping: %d bytes, %v", len(got), err)
		}
	})
}

func TestCancelStalled(t *testing.T) {
	data := randomData(2*mib, 9)
	srv := newImageServer(t, data, func(s *imageServer) {
		s.stall = make(chan struct{})
		s.cut = func(n int, _ int64) int64 { return 64 << 10 }
	})
	ctx, cancel := context.WithCancel(t.Context())
	src, err := Open(ctx, srv.URL(), fastOpts(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	r, err := src.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	done := make(chan error, 1)
	go func() {
		_, err := io.ReadAll(r)
		done <- err
	}()
	time.Sleep(200 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("read ended before cancel: %v", err)
	default:
	}
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want context.Canceled", err)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("cancel took %v", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("read still blocked 5s after cancel")
	}
}

func TestCancelDuringBackoff(t *testing.T) {
	data := randomData(mib, 10)
	srv := newImageServer(t, data, func(s *imageServer) {
		s.cut = func(n int, _ int64) int64 { return 1000 }
	})
	ctx, cancel := context.WithCancel(t.Context())
	logs := &logBuffer{}
	opts := Options{RetryDelay: time.Hour, Logger: logs.logger()}
	src, err := Open(ctx, srv.URL(), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	r, err := src.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	done := make(chan error, 1)
	go func() {
		_, err := io.ReadAll(r)
		done <- err
	}()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(logs.String(), "resuming") {
		if time.Now().After(deadline) {
			t.Fatal("no retry logged")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "byte 1000") {
			t.Errorf("err = %v, want context.Canceled at byte 1000", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("back-off sleep ignored cancel")
	}
}

func TestStallTimeoutResumes(t *testing.T) {
	data := randomData(mib, 11)
	srv := newImageServer(t, data, func(s *imageServer) {
		s.stall = make(chan struct{})
		s.cut = func(n int, _ int64) int64 {
			if n == 0 {
				return 5000
			}
			return -1
		}
	})
	logs := &logBuffer{}
	opts := fastOpts(logs)
	opts.StallTimeout = 200 * time.Millisecond
	got, _, err := readAll(t, srv.URL(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if sum(got) != sum(data) {
		t.Fatal("content differs")
	}
	if !strings.Contains(logs.String(), "stalled") {
		t.Errorf("no stall logged:\n%s", logs)
	}
}

func TestReaderClose(t *testing.T) {
	srv := newImageServer(t, randomData(mib, 12), nil)
	src, err := Open(t.Context(), srv.URL(), fastOpts(nil))
	if err != nil {
		t.Fatal(err)
	}
	r, err := src.Open(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	if _, err := r.Read(make([]byte, 10)); err == nil || err == io.EOF {
		t.Errorf("Read after Close: %v", err)
	}
	src.Close()
	if _, err := src.Open(t.Context()); err == nil {
		t.Error("Open after Close succeeded")
	}
}

func TestDefaultClient(t *testing.T) {
	c := DefaultClient()
	tr, ok := c.Transport.(*http.Transport)
	if !ok {
		t.Fatalf("transport %T", c.Transport)
	}
	if c.Timeout != 0 {
		t.Errorf("overall timeout %v would cut big downloads", c.Timeout)
	}
	if tr.ResponseHeaderTimeout == 0 || tr.TLSHandshakeTimeout == 0 || tr.DialContext == nil {
		t.Error("missing dial/TLS/header timeouts")
	}
	if tr.Proxy == nil {
		t.Error("proxies from the environment ignored")
	}
	if !tr.DisableCompression {
		t.Error("transparent gzip would break ranges")
	}
}

func TestHTTP2TLS(t *testing.T) {
	data := randomData(2*mib+3, 13)
	h := &imageServer{data: data, etag: `"v1"`, acceptRanges: "bytes"}
	srv := httptest.NewUnstartedServer(h)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	opts := fastOpts(nil)
	opts.Client = srv.Client()
	opts.BlockSize = 128 << 10
	got, src, err := readAll(t, srv.URL+"/disk.img", opts)
	if err != nil || sum(got) != sum(data) {
		t.Fatalf("stream over HTTP/2: %d bytes, %v", len(got), err)
	}
	ra := src.ReaderAt()
	if ra == nil {
		t.Fatal("no ReaderAt over HTTP/2")
	}
	p := make([]byte, 300_000)
	if n, err := ra.ReadAt(p, 1_000_000); n != len(p) || err != nil || !bytes.Equal(p, data[1_000_000:1_300_000]) {
		t.Fatalf("ReadAt over HTTP/2: %d, %v", n, err)
	}
}
