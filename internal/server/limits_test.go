package server

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// rawRequest opens a connection to ts, sends head (a request's line and
// headers, without the blank line) and then body, and returns the
// connection still open.
func rawRequest(t *testing.T, ts *testServer, head string, body []byte) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(ts.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := io.WriteString(c, head+"\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(body); err != nil {
		t.Fatal(err)
	}
	return c
}

// endsWithin reads c until the server answers and closes it, or wait
// passes (a failure: the server is still waiting for the body). It
// returns what the server sent.
func endsWithin(t *testing.T, c net.Conn, wait time.Duration) string {
	t.Helper()
	start := time.Now()
	c.SetReadDeadline(start.Add(wait))
	got, err := io.ReadAll(c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the server still held the stalled request after %v (got %q)", wait, got)
	}
	t.Logf("the server ended the stalled request after %v: %q", time.Since(start).Round(time.Millisecond), firstLine(got))
	return string(got)
}

func firstLine(b []byte) string {
	line, _, _ := bytes.Cut(b, []byte("\r\n"))
	return string(line)
}

// A body trickled onto an open route (the review's 16,000-byte POST
// /pxe/{mac}/failed sending one byte) ends after BodyTimeout instead of
// holding the connection for ever, and the server goes on answering.
func TestStalledBodyTimesOut(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.BodyTimeout = 500 * time.Millisecond })
	c := rawRequest(t, ts, "POST /pxe/52:54:00:12:34:56/failed HTTP/1.1\r\nHost: bty\r\nContent-Type: text/plain\r\nContent-Length: 16000", []byte("x"))
	endsWithin(t, c, 5*time.Second)
	if r := ts.do(t, "GET", "/pxe/52:54:00:12:34:56", nil, nil); r.code != 200 {
		t.Errorf("GET /pxe after the stalled report: %d %s", r.code, r.body)
	}
}

// A stalled upload ends after UploadIdleTimeout without a byte and
// leaves no temp file; one that keeps sending (for longer than both
// BodyTimeout and UploadIdleTimeout) is kept whole.
func TestUploadProgressDeadline(t *testing.T) {
	ts := startServer(t, func(c *Config) {
		c.BodyTimeout = 500 * time.Millisecond
		c.UploadIdleTimeout = 500 * time.Millisecond
	})

	// Stalled: 100 KiB of 1 MiB (past the 64 KiB head, so the temp file
	// exists and is being written), then nothing.
	c := rawRequest(t, ts, fmt.Sprintf("PUT /images/stalled.img HTTP/1.1\r\nHost: bty\r\nAuthorization: Bearer %s\r\nContent-Length: %d", ts.token, 1<<20), randomBytes(t, 100<<10))
	time.Sleep(200 * time.Millisecond)
	if tmp, _ := filepath.Glob(filepath.Join(ts.cfg.ImageRoot, ".bty-upload-*")); len(tmp) != 1 {
		t.Errorf("temp files during the stalled upload: %v, want one", tmp)
	}
	if got := endsWithin(t, c, 5*time.Second); got != "" && !strings.HasPrefix(got, "HTTP/1.1 400") {
		t.Errorf("the stalled upload's answer: %q, want 400", firstLine([]byte(got)))
	}
	noTempFiles(t, ts.cfg.ImageRoot)
	if r := ts.do(t, "GET", "/images/stalled.img", nil, nil); r.code != 404 {
		t.Errorf("GET the stalled image: %d, want 404", r.code)
	}

	// Slow but steady: 16 KiB every 100 ms for 1.5 s.
	data := randomBytes(t, 15*16<<10)
	pr, pw := io.Pipe()
	go func() {
		for off := 0; off < len(data); off += 16 << 10 {
			if _, err := pw.Write(data[off : off+16<<10]); err != nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		pw.Close()
	}()
	req, _ := http.NewRequest("PUT", ts.URL+"/images/slow.img", pr)
	req.ContentLength = int64(len(data))
	req.Header.Set("Authorization", "Bearer "+ts.token)
	start := time.Now()
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 201 {
		t.Fatalf("slow upload after %v: %d %s", time.Since(start), res.StatusCode, b)
	}
	if r := ts.do(t, "GET", "/images/slow.img", nil, nil); r.code != 200 || !bytes.Equal(r.body, data) {
		t.Errorf("GET the slow image: %d, %d bytes, want 200 and the %d sent", r.code, len(r.body), len(data))
	}
	noTempFiles(t, ts.cfg.ImageRoot)
}

// With MaxConns 3, a fourth connection is closed at once (not queued),
// and a freed slot serves the next connection.
func TestMaxConns(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.MaxConns = 3 })
	http.DefaultClient.CloseIdleConnections() // startServer's login
	waitOpen(t, ts, 0)
	healthz := func(c net.Conn, br *bufio.Reader) error {
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: bty\r\n\r\n"); err != nil {
			return err
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != 200 {
			return fmt.Errorf("status %d", res.StatusCode)
		}
		return nil
	}
	dial := func() (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", strings.TrimPrefix(ts.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c, bufio.NewReader(c)
	}
	var conns []net.Conn
	for i := range 3 {
		c, br := dial()
		if err := healthz(c, br); err != nil {
			t.Fatalf("connection %d of 3: %v", i+1, err)
		}
		conns = append(conns, c)
	}
	c, br := dial()
	start := time.Now()
	if err := healthz(c, br); err == nil {
		t.Fatal("a fourth connection was served with MaxConns 3")
	} else if time.Since(start) > 2*time.Second {
		t.Fatalf("the fourth connection waited %v before it failed (%v): it should be closed at once", time.Since(start), err)
	}
	conns[0].Close()
	waitOpen(t, ts, 2)
	c, br = dial()
	if err := healthz(c, br); err != nil {
		t.Errorf("a connection after one closed: %v", err)
	}
}

// waitOpen waits (up to 5 s) until ts's server counts n open connections.
func waitOpen(t *testing.T, ts *testServer, n int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		got := -1
		if l := ts.srv.conns.Load(); l != nil {
			got = l.open()
		}
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("open connections: %d, want %d", got, n)
		}
	}
}

// fakeAddr and addrConn give a net.Pipe connection a remote address.
type fakeAddr string

func (a fakeAddr) Network() string { return "tcp" }
func (a fakeAddr) String() string  { return string(a) }

type addrConn struct {
	net.Conn
	remote net.Addr
}

func (c addrConn) RemoteAddr() net.Addr { return c.remote }

// chanListener accepts the connections sent on its channel.
type chanListener chan net.Conn

func (l chanListener) Accept() (net.Conn, error) {
	c, ok := <-l
	if !ok {
		return nil, net.ErrClosed
	}
	return c, nil
}
func (l chanListener) Close() error   { return nil }
func (l chanListener) Addr() net.Addr { return fakeAddr("127.0.0.1:0") }

// With MaxConnsPerAddr 3, a fourth connection from one address is
// closed while another address's connection is accepted at once; a
// closed connection frees its address's slot.
func TestMaxConnsPerAddr(t *testing.T) {
	in := make(chanListener, 16)
	l := newConnLimitListener(in, 100, 3, nil)
	type pair struct{ server, client net.Conn }
	conn := func(addr string) pair {
		s, c := net.Pipe()
		t.Cleanup(func() { s.Close(); c.Close() })
		p := pair{addrConn{s, fakeAddr(addr)}, c}
		in <- p.server
		return p
	}
	accept := func() net.Conn {
		t.Helper()
		done := make(chan net.Conn, 1)
		go func() {
			c, err := l.Accept()
			if err != nil {
				t.Error(err)
			}
			done <- c
		}()
		select {
		case c := <-done:
			return c
		case <-time.After(5 * time.Second):
			t.Fatal("Accept blocked")
			return nil
		}
	}
	var a []pair
	for range 4 {
		a = append(a, conn("10.0.0.1:40000"))
	}
	b := conn("[2001:db8::1]:40000")
	var got []net.Conn
	for range 4 {
		got = append(got, accept())
	}
	for i := range 3 {
		if got[i].(*limitedConn).Conn != a[i].server {
			t.Errorf("accept %d: not 10.0.0.1's connection %d", i+1, i+1)
		}
	}
	if got[3].(*limitedConn).Conn != b.server {
		t.Errorf("accept 4: not 2001:db8::1's connection (10.0.0.1's fourth was not skipped)")
	}
	a[3].client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := a[3].client.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("10.0.0.1's fourth connection: read %v, want EOF (closed by the server)", err)
	}
	if n := l.open(); n != 4 {
		t.Errorf("open: %d, want 4", n)
	}
	got[0].Close()
	got[0].Close() // a second Close frees nothing more
	if n := l.open(); n != 3 {
		t.Errorf("open after a close: %d, want 3", n)
	}
	a5 := conn("10.0.0.1:40001")
	if c := accept(); c.(*limitedConn).Conn != a5.server {
		t.Error("10.0.0.1's connection after one closed was not accepted")
	}
}

// The deadlines and caps come from the environment, with defaults, and
// a malformed value is an error naming its variable.
func TestLimitsConfigFromEnv(t *testing.T) {
	env := func(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }
	c, err := ConfigFromEnv(env(nil))
	if err != nil || c.BodyTimeout != 30*time.Second || c.UploadIdleTimeout != time.Minute || c.MaxConns != 4096 || c.MaxConnsPerAddr != 256 {
		t.Errorf("defaults: %v %v %d %d, %v", c.BodyTimeout, c.UploadIdleTimeout, c.MaxConns, c.MaxConnsPerAddr, err)
	}
	c, err = ConfigFromEnv(env(map[string]string{"BTY_BODY_TIMEOUT": "5s", "BTY_UPLOAD_IDLE_TIMEOUT": "2m", "BTY_MAX_CONNS": "100", "BTY_MAX_CONNS_PER_ADDR": "7"}))
	if err != nil || c.BodyTimeout != 5*time.Second || c.UploadIdleTimeout != 2*time.Minute || c.MaxConns != 100 || c.MaxConnsPerAddr != 7 {
		t.Errorf("set: %v %v %d %d, %v", c.BodyTimeout, c.UploadIdleTimeout, c.MaxConns, c.MaxConnsPerAddr, err)
	}
	for k, v := range map[string]string{"BTY_BODY_TIMEOUT": "10ms", "BTY_UPLOAD_IDLE_TIMEOUT": "soon", "BTY_MAX_CONNS": "0", "BTY_MAX_CONNS_PER_ADDR": "-1"} {
		if _, err := ConfigFromEnv(env(map[string]string{k: v})); err == nil || !strings.Contains(err.Error(), k) {
			t.Errorf("%s=%s: %v, want an error naming it", k, v, err)
		}
	}
}
