package server

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// Defaults for Config's body deadlines and connection caps
// (docs/reference.md, "bty-web", "Deadlines and caps").
const (
	defaultBodyTimeout       = 30 * time.Second
	defaultUploadIdleTimeout = 60 * time.Second
	defaultMaxConns          = 4096
	defaultMaxConnsPerAddr   = 256
)

// bodyDeadline gives every request that has a body a read deadline of
// BodyTimeout for the whole body, so a client trickling (or stalling)
// a body cannot hold a connection and a goroutine for ever. Routes
// wrapped in progressDeadline (uploads, imports) switch to a progress
// deadline instead. The deadline ends once the body is read to its end,
// so a long handler (an SSE stream, a download) is not cut by it.
// http.Server.ReadTimeout cannot do this: it would cut large uploads.
func (s *Server) bodyDeadline(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil && r.Body != http.NoBody {
			rc := http.NewResponseController(w)
			if err := rc.SetReadDeadline(time.Now().Add(s.cfg.BodyTimeout)); err == nil {
				r.Body = &deadlineBody{ReadCloser: r.Body, rc: rc}
			}
		}
		h.ServeHTTP(w, r)
	})
}

// progressDeadline turns bodyDeadline's whole-body deadline into a
// progress deadline: the body may take as long as it needs while bytes
// keep arriving, but UploadIdleTimeout without a byte ends it (the
// read fails, and the upload's temp file is removed).
func (s *Server) progressDeadline(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if b, ok := r.Body.(*deadlineBody); ok {
			b.idle = s.cfg.UploadIdleTimeout
			_ = b.rc.SetReadDeadline(time.Now().Add(b.idle))
		}
		h(w, r)
	}
}

// deadlineBody is a request body under a read deadline: with idle set,
// every read that brings bytes moves the deadline to idle from now. At
// the body's end the deadline is cleared; after a failed read (a
// timeout) it is left in place, so the server's own draining of the
// rest of the body fails at once and the connection is closed.
type deadlineBody struct {
	io.ReadCloser
	rc   *http.ResponseController
	idle time.Duration
	done bool
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	switch {
	case err == io.EOF:
		if !b.done {
			b.done = true
			_ = b.rc.SetReadDeadline(time.Time{})
		}
	case err == nil && n > 0 && b.idle > 0:
		_ = b.rc.SetReadDeadline(time.Now().Add(b.idle))
	}
	return n, err
}

// connLimitListener caps the connections open at once, in all and per
// client address (IP). A connection over either cap is closed as soon
// as it is accepted: Accept never blocks on the caps, so one address
// filling its share does not stall anyone else's connections (PXE
// boots among them).
type connLimitListener struct {
	net.Listener
	max, perAddr int
	log          *slog.Logger

	mu       sync.Mutex
	total    int
	byAddr   map[string]int
	refused  int
	lastWarn time.Time
}

func newConnLimitListener(l net.Listener, max, perAddr int, log *slog.Logger) *connLimitListener {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &connLimitListener{Listener: l, max: max, perAddr: perAddr, log: log, byAddr: map[string]int{}}
}

func (l *connLimitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if lc := l.admit(c); lc != nil {
			return lc, nil
		}
		c.Close()
	}
}

// admit counts c in, or returns nil when a cap is reached (the refusals
// are logged at most every 10 s, with their count).
func (l *connLimitListener) admit(c net.Conn) net.Conn {
	addr := remoteHost(c)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.total >= l.max || l.byAddr[addr] >= l.perAddr {
		l.refused++
		if now := time.Now(); now.Sub(l.lastWarn) >= 10*time.Second {
			l.log.Warn("connections refused: too many open", "refused", l.refused, "client", addr,
				"client_open", l.byAddr[addr], "open", l.total, "max_per_client", l.perAddr, "max", l.max)
			l.lastWarn, l.refused = now, 0
		}
		return nil
	}
	l.total++
	l.byAddr[addr]++
	return &limitedConn{Conn: c, l: l, addr: addr}
}

func (l *connLimitListener) release(addr string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.byAddr[addr]--; l.byAddr[addr] <= 0 {
		delete(l.byAddr, addr)
	}
}

// open is the number of connections counted in, for tests.
func (l *connLimitListener) open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

// remoteHost is c's remote IP (the whole address when it has no port).
func remoteHost(c net.Conn) string {
	a := c.RemoteAddr()
	if a == nil {
		return ""
	}
	if host, _, err := net.SplitHostPort(a.String()); err == nil {
		return host
	}
	return a.String()
}

// limitedConn gives its slot back on its first Close.
type limitedConn struct {
	net.Conn
	l    *connLimitListener
	addr string
	once sync.Once
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.addr) })
	return err
}
