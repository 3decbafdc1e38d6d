package source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ErrChanged is returned (wrapped) when the file behind a URL changed
// (another ETag, Last-Modified or size) between two requests of one
// download, so its pieces would not belong together.
var ErrChanged = errors.New("changed on the server while downloading")

// DefaultClient returns the client used when Options.Client is nil: no
// overall timeout (images are big; stalls are caught by
// Options.StallTimeout), but bounded dial, TLS handshake and response
// header waits; proxies from the environment (HTTP_PROXY, HTTPS_PROXY,
// NO_PROXY); no transparent gzip, which would hide the real length and
// break ranges.
func DefaultClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   30 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		ForceAttemptHTTP2:     true,
		TLSHandshakeTimeout:   15 * time.Second,
		ResponseHeaderTimeout: time.Minute,
		ExpectContinueTimeout: time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConns:          64,
		MaxIdleConnsPerHost:   16,
		DisableCompression:    true,
	}}
}

// httpSource is an image behind an http(s) URL.
type httpSource struct {
	url  string // as given; every request uses it (redirects resolve anew)
	name string // url without userinfo, query or fragment
	opts Options

	size         int64
	etag         string
	lastModified string
	ranges       bool // the server serves byte ranges of this file
	ownClient    bool // opts.Client was made here; Close drops its idle conns

	life     context.Context // ends at Close; range fetches run under it
	stopLife context.CancelFunc

	mu            sync.Mutex
	pending       *http.Response // the first GET, for the first Open
	pendingCtx    context.Context
	pendingCancel context.CancelCauseFunc
	cache         *blockCache
	closed        bool
}

var _ Source = (*httpSource)(nil)

// redactURL drops credentials, query string and fragment: what may be
// shown and logged.
func redactURL(u *url.URL) string {
	c := *u
	c.User = nil
	c.RawQuery = ""
	c.ForceQuery = false
	c.Fragment = ""
	c.RawFragment = ""
	return c.String()
}

func openURL(ctx context.Context, ref string, opts Options, ownClient bool) (Source, error) {
	u, err := url.Parse(ref)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("invalid image URL %q", ref)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("invalid image URL %s: only http and https are supported", redactURL(u))
	}
	s := &httpSource{url: ref, name: redactURL(u), opts: opts, size: -1, ownClient: ownClient}
	s.life, s.stopLife = context.WithCancel(context.WithoutCancel(ctx))

	// The body of the first response outlives ctx (it becomes the stream
	// of the first Open), so only the wait for its headers obeys ctx.
	reqCtx, cancel := context.WithCancelCause(s.life)
	stop := context.AfterFunc(ctx, func() { cancel(context.Cause(ctx)) })
	resp, err := s.do(reqCtx, nil)
	if !stop() || err != nil {
		cancel(nil)
		if resp != nil {
			resp.Body.Close()
		}
		s.stopLife()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("fetching %s: %w", s.name, context.Cause(ctx))
		}
		return nil, fmt.Errorf("fetching %s: %w (is the server up and the address right?)", s.name, err)
	}
	fail := func(err error) (Source, error) {
		resp.Body.Close()
		cancel(nil)
		s.stopLife()
		return nil, err
	}
	switch {
	case resp.StatusCode == http.StatusOK:
		s.size = resp.ContentLength
	case resp.StatusCode == http.StatusPartialContent:
		// A server may answer a plain GET with a first piece; the stream
		// resumes after it.
		start, _, total, err := parseContentRange(resp.Header.Get("Content-Range"))
		if err != nil || start != 0 {
			return fail(fmt.Errorf("fetching %s: server answered 206 with Content-Range %q to a plain GET",
				s.name, resp.Header.Get("Content-Range")))
		}
		s.size = total
		s.ranges = total >= 0
	default:
		return fail(statusError(s.name, resp, 0))
	}
	s.etag = resp.Header.Get("ETag")
	s.lastModified = resp.Header.Get("Last-Modified")
	s.pending, s.pendingCtx, s.pendingCancel = resp, reqCtx, cancel

	if !s.ranges && s.size >= 0 {
		switch ar := strings.ToLower(resp.Header.Get("Accept-Ranges")); {
		case strings.Contains(ar, "bytes"):
			s.ranges = true
		case ar == "":
			s.ranges = s.probeRanges(ctx)
		}
	}
	if s.ranges && s.size >= 0 {
		s.cache = newBlockCache(s)
	}
	return s, nil
}

// probeRanges asks for one byte: a 206 for the same file means random
// access works even though Accept-Ranges was not advertised.
func (s *httpSource) probeRanges(ctx context.Context) bool {
	if s.size == 0 {
		return false
	}
	h := http.Header{"Range": {"bytes=0-0"}}
	resp, err := s.do(ctx, h)
	if err != nil {
		s.opts.Logger.Debug("range probe failed", "url", s.name, "err", err)
		return false
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent {
		return false
	}
	start, _, total, err := parseContentRange(resp.Header.Get("Content-Range"))
	return err == nil && start == 0 && total == s.size && s.checkSame(resp.Header) == nil
}

// do sends a GET with extra headers h. Transport errors come back without
// the *url.Error wrapper, which would print the query string (tokens).
func (s *httpSource) do(ctx context.Context, h http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return nil, err
	}
	for k, v := range h {
		req.Header[k] = v
	}
	// Explicit identity: the transport must not gunzip behind our back.
	req.Header.Set("Accept-Encoding", "identity")
	req.Header.Set("User-Agent", "bty")
	resp, err := s.opts.Client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, err
	}
	return resp, nil
}

// statusError describes a non-success answer; 404/410 wrap ErrNotFound.
func statusError(name string, resp *http.Response, off int64) error {
	at := ""
	if off > 0 {
		at = fmt.Sprintf(" at byte %d", off)
	}
	if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone {
		return &notFoundError{
			what:   "image URL " + name + at,
			detail: "server answered " + resp.Status,
			err:    fmt.Errorf("HTTP %s", resp.Status),
		}
	}
	return fmt.Errorf("fetching %s%s: server answered %s", name, at, resp.Status)
}

// retryableStatus reports answers worth another try after a pause.
func retryableStatus(code int) bool {
	switch code {
	case http.StatusRequestTimeout, http.StatusTooEarly, http.StatusTooManyRequests,
		http.StatusInternalServerError, http.StatusBadGateway,
		http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// ifRange is the validator to send with If-Range: a strong ETag, else
// Last-Modified (weak ETags are not allowed there).
func (s *httpSource) ifRange() string {
	if s.etag != "" && !strings.HasPrefix(s.etag, "W/") {
		return s.etag
	}
	return s.lastModified
}

// checkSame compares a later response's validators with the first one's.
func (s *httpSource) checkSame(h http.Header) error {
	if et := h.Get("ETag"); s.etag != "" && et != "" {
		if strings.TrimPrefix(et, "W/") != strings.TrimPrefix(s.etag, "W/") {
			return fmt.Errorf("%s %w (ETag was %s, now %s); start over", s.name, ErrChanged, s.etag, et)
		}
		return nil
	}
	if lm := h.Get("Last-Modified"); s.lastModified != "" && lm != "" && lm != s.lastModified {
		return fmt.Errorf("%s %w (Last-Modified was %s, now %s); start over", s.name, ErrChanged, s.lastModified, lm)
	}
	return nil
}

// sameValidatorPresent reports whether h carries a validator that proves
// (not merely fails to disprove) the file is the one first fetched.
func (s *httpSource) sameValidatorPresent(h http.Header) bool {
	if et := h.Get("ETag"); s.etag != "" && et != "" {
		return strings.TrimPrefix(et, "W/") == strings.TrimPrefix(s.etag, "W/")
	}
	lm := h.Get("Last-Modified")
	return s.lastModified != "" && lm == s.lastModified
}

// parseContentRange parses "bytes START-END/TOTAL"; total is -1 for "*".
func parseContentRange(v string) (start, end, total int64, err error) {
	bad := fmt.Errorf("malformed Content-Range %q", v)
	rest, ok := strings.CutPrefix(strings.TrimSpace(v), "bytes ")
	if !ok {
		return 0, 0, 0, bad
	}
	rng, tot, ok := strings.Cut(rest, "/")
	if !ok {
		return 0, 0, 0, bad
	}
	a, b, ok := strings.Cut(rng, "-")
	if !ok {
		return 0, 0, 0, bad
	}
	if start, err = strconv.ParseInt(strings.TrimSpace(a), 10, 64); err != nil {
		return 0, 0, 0, bad
	}
	if end, err = strconv.ParseInt(strings.TrimSpace(b), 10, 64); err != nil || end < start {
		return 0, 0, 0, bad
	}
	total = -1
	if tot = strings.TrimSpace(tot); tot != "*" {
		if total, err = strconv.ParseInt(tot, 10, 64); err != nil || total <= end {
			return 0, 0, 0, bad
		}
	}
	return start, end, total, nil
}

// backoff is the pause before retry number attempt (1-based).
func (s *httpSource) backoff(attempt int) time.Duration {
	d := s.opts.RetryDelay
	for i := 1; i < attempt && d < MaxRetryDelay; i++ {
		d *= 2
	}
	return min(d, MaxRetryDelay)
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// errStalled is the cause a request is cancelled with when no byte came
// for StallTimeout.
var errStalled = errors.New("connection stalled")

// watchedBody ends a body that delivers nothing for the stall timeout and
// tells that apart from a cancelled parent.
type watchedBody struct {
	rc     io.ReadCloser
	ctx    context.Context
	cancel context.CancelCauseFunc
	timer  *time.Timer // nil when stall detection is off
	d      time.Duration
	stop   func() bool // detaches an AfterFunc, if any
}

func newWatchedBody(rc io.ReadCloser, ctx context.Context, cancel context.CancelCauseFunc, d time.Duration) *watchedBody {
	w := &watchedBody{rc: rc, ctx: ctx, cancel: cancel, d: d}
	if d > 0 {
		w.timer = time.AfterFunc(d, func() { cancel(fmt.Errorf("%w: no data for %s", errStalled, d)) })
	}
	return w
}

func (w *watchedBody) Read(p []byte) (int, error) {
	n, err := w.rc.Read(p)
	if n > 0 && w.timer != nil {
		w.timer.Reset(w.d)
	}
	if err != nil && err != io.EOF {
		if c := context.Cause(w.ctx); errors.Is(c, errStalled) {
			err = c
		}
	}
	return n, err
}

func (w *watchedBody) Close() error {
	if w.timer != nil {
		w.timer.Stop()
	}
	if w.stop != nil {
		w.stop()
	}
	err := w.rc.Close()
	w.cancel(nil)
	return err
}

func (s *httpSource) Name() string { return s.name }
func (s *httpSource) Size() int64  { return s.size }

// ReaderAt serves random reads through a block cache of range requests;
// nil when the server does not serve ranges or the size is unknown. It is
// safe for concurrent use. Having no context, its requests end at Close
// (or after the stall timeout and retries).
func (s *httpSource) ReaderAt() io.ReaderAt {
	if s.cache == nil {
		return nil
	}
	return s.cache
}

// Open starts a sequential read from offset 0. The first call reuses the
// response fetched by source.Open; later calls send a new GET.
func (s *httpSource) Open(ctx context.Context) (io.ReadCloser, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, fmt.Errorf("reading %s: source is closed", s.name)
	}
	resp, pctx, pcancel := s.pending, s.pendingCtx, s.pendingCancel
	s.pending, s.pendingCtx, s.pendingCancel = nil, nil, nil
	s.mu.Unlock()

	r := newStreamReader(ctx, s)
	if resp != nil {
		if err := ctx.Err(); err != nil {
			resp.Body.Close()
			pcancel(nil)
			r.Close()
			return nil, err
		}
		w := newWatchedBody(resp.Body, pctx, pcancel, s.opts.StallTimeout)
		w.stop = context.AfterFunc(r.ctx, func() { pcancel(context.Cause(r.ctx)) })
		r.body = w
		return r, nil
	}
	// Connect now so that errors (gone, changed, unreachable) show here.
	r.mu.Lock()
	err := r.connect()
	r.mu.Unlock()
	if err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

// dropPending closes the first GET's unread response: random access is in
// use, and an idle response would only hold a connection (some servers
// allow few per client). A later Open sends a new GET.
func (s *httpSource) dropPending() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropPendingLocked()
}

func (s *httpSource) dropPendingLocked() {
	if s.pending != nil {
		s.pending.Body.Close()
		s.pendingCancel(nil)
		s.pending, s.pendingCtx, s.pendingCancel = nil, nil, nil
	}
}

// Close releases the pending response, cached blocks and idle connections
// of the default client. Readers from Open stop with an error.
func (s *httpSource) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.dropPendingLocked()
	s.stopLife()
	if s.cache != nil {
		s.cache.drop()
	}
	if s.ownClient {
		s.opts.Client.CloseIdleConnections()
	}
	return nil
}
