// Package client is a typed HTTP client for bty-web (docs/reference.md, "bty-web"):
// sessions, machines, the image catalog and uploads, live-env artifacts,
// settings and the live env's done signal. bty-ctl, bty-tui and the live
// env all talk to the server through it.
//
// The package deliberately does not import the server or its store: the
// wire types are declared here, so the live env's binary stays free of
// SQLite. Tests check they match the server's.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/btyproject/bty/internal/api"
)

// Client talks to one bty-web server. It is safe for concurrent use once
// configured; SetToken must not race with requests.
type Client struct {
	base  *url.URL
	token string
	hc    *http.Client
	// UserAgent is sent with every request.
	UserAgent string
	// machinesPage, when set, is Machines' page size (tests).
	machinesPage int
}

// Option configures a Client.
type Option func(*Client)

// WithToken sets the session token sent as Authorization: Bearer.
func WithToken(tok string) Option { return func(c *Client) { c.token = tok } }

// WithHTTPClient replaces the HTTP client (timeouts, TLS, test doubles).
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.hc = hc } }

// NormalizeServer parses a server address as users type it
// ("http://host:8080", "https://host/prefix", "host:8080") into the base
// URL requests are made against: scheme http or https, a host, no
// trailing slash, no query or fragment.
func NormalizeServer(s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", errors.New("empty server URL: want http://HOST:PORT")
	}
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("server URL %q: %v; want http://HOST:PORT", s, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("server URL %q: scheme %q is not http or https", s, u.Scheme)
	}
	if u.Host == "" {
		return "", fmt.Errorf("server URL %q has no host: want http://HOST:PORT", s)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", fmt.Errorf("server URL %q: drop the query, fragment or user part: want http://HOST:PORT[/PREFIX]", s)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	return u.String(), nil
}

// New returns a client for the server at base (see NormalizeServer).
func New(base string, opts ...Option) (*Client, error) {
	norm, err := NormalizeServer(base)
	if err != nil {
		return nil, err
	}
	u, _ := url.Parse(norm)
	c := &Client{base: u, UserAgent: "bty-client"}
	for _, o := range opts {
		o(c)
	}
	if c.hc == nil {
		c.hc = defaultHTTPClient()
	}
	return c, nil
}

// defaultHTTPClient has connect and header timeouts but no overall
// timeout: uploads and image downloads take as long as they take, and
// callers bound requests with their context.
func defaultHTTPClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	t.TLSHandshakeTimeout = 10 * time.Second
	// Counted from the end of the request body: the server inspects and
	// syncs an upload before it answers.
	t.ResponseHeaderTimeout = 5 * time.Minute
	return &http.Client{Transport: t}
}

// Server is the base URL, normalised.
func (c *Client) Server() string { return c.base.String() }

// Token is the session token in use ("" when none).
func (c *Client) Token() string { return c.token }

// SetToken sets the session token (after Login, for example).
func (c *Client) SetToken(tok string) { c.token = tok }

// APIError is a non-2xx answer: the server's {"error": ...} message and
// the HTTP status.
type APIError struct {
	Method     string
	URL        string
	StatusCode int
	// Message is the server's "error" field, else the start of the body,
	// else the status text.
	Message string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("%s (HTTP %d)", e.Message, e.StatusCode)
}

// ConnError is a request that got no HTTP answer: refused, unreachable,
// timed out, cut off.
type ConnError struct {
	Server string
	Err    error
}

func (e *ConnError) Error() string {
	return fmt.Sprintf("cannot reach bty-web at %s: %v", e.Server, e.Err)
}

func (e *ConnError) Unwrap() error { return e.Err }

// StatusCode returns the HTTP status of an *APIError in err's chain, 0
// when there is none.
func StatusCode(err error) int {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.StatusCode
	}
	return 0
}

// IsUnauthorized reports whether the server answered 401: no token, or
// one that is invalid, expired or revoked (or, for Login, a wrong
// password).
func IsUnauthorized(err error) bool { return StatusCode(err) == http.StatusUnauthorized }

// IsForbidden reports whether the server answered 403 (for the live
// env's calls: not its machine's open flash cycle; retrying cannot help).
func IsForbidden(err error) bool { return StatusCode(err) == http.StatusForbidden }

// IsNotFound reports whether the server answered 404.
func IsNotFound(err error) bool { return StatusCode(err) == http.StatusNotFound }

// endpoint joins the base URL and path elements, escaping each element
// (a name with "/" stays one element, and the server refuses it).
func (c *Client) endpoint(elems ...string) string {
	var b strings.Builder
	b.WriteString(c.base.String())
	for _, e := range elems {
		b.WriteByte('/')
		b.WriteString(url.PathEscape(e))
	}
	return b.String()
}

// request is one API call.
type request struct {
	method string
	url    string
	// body: JSON-encoded unless raw is set.
	body any
	raw  io.Reader
	// size is raw's length (-1 unknown).
	size   int64
	header http.Header
	auth   bool
	// text, when set, receives a 2xx answer's body as it is (at most
	// textLimit bytes; more is an error) instead of decoding JSON.
	text      *[]byte
	textLimit int64
	// respHeader, when set, receives a 2xx answer's header.
	respHeader *http.Header
	// stream, when set, reads a 2xx answer's body itself (an event
	// stream) until it returns.
	stream func(io.Reader) error
}

// do runs r and decodes a 2xx JSON answer into out (nil: discarded). It
// returns the status code.
func (c *Client) do(ctx context.Context, r request, out any) (int, error) {
	var body io.Reader
	switch {
	case r.raw != nil:
		body = r.raw
	case r.body != nil:
		b, err := json.Marshal(r.body)
		if err != nil {
			return 0, fmt.Errorf("encoding the request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, r.url, body)
	if err != nil {
		return 0, fmt.Errorf("building %s %s: %w", r.method, r.url, err)
	}
	if r.raw != nil {
		req.ContentLength = r.size
		if r.size == 0 {
			req.Body = http.NoBody
		}
		req.Header.Set("Content-Type", "application/octet-stream")
	} else if r.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range r.header {
		req.Header[k] = v
	}
	req.Header.Set("Accept", "application/json")
	if c.UserAgent != "" {
		req.Header.Set("User-Agent", c.UserAgent)
	}
	if r.auth && c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return 0, &ConnError{Server: c.Server(), Err: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, apiError(r.method, r.url, resp)
	}
	if r.respHeader != nil {
		*r.respHeader = resp.Header
	}
	if r.stream != nil {
		err := r.stream(resp.Body)
		if err != nil && ctx.Err() != nil {
			return resp.StatusCode, ctx.Err()
		}
		return resp.StatusCode, err
	}
	if r.text != nil {
		b, err := io.ReadAll(io.LimitReader(resp.Body, r.textLimit+1))
		switch {
		case err != nil && ctx.Err() != nil:
			return resp.StatusCode, ctx.Err()
		case err != nil:
			return resp.StatusCode, fmt.Errorf("reading the answer to %s %s: %w", r.method, r.url, err)
		case int64(len(b)) > r.textLimit:
			return resp.StatusCode, fmt.Errorf("the answer to %s %s is larger than %d bytes", r.method, r.url, r.textLimit)
		}
		*r.text = b
		return resp.StatusCode, nil
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		return resp.StatusCode, nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		if ctx.Err() != nil {
			return resp.StatusCode, ctx.Err()
		}
		return resp.StatusCode, fmt.Errorf("reading the answer to %s %s: %w (is %s a bty-web server?)", r.method, r.url, err, c.Server())
	}
	return resp.StatusCode, nil
}

// apiError reads an error answer: {"error": "..."} from bty-web, or
// whatever a proxy in between said.
func apiError(method, u string, resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	e := &APIError{Method: method, URL: u, StatusCode: resp.StatusCode}
	var doc api.Error
	if json.Unmarshal(b, &doc) == nil && doc.Error != "" {
		e.Message = doc.Error
		return e
	}
	text := strings.TrimSpace(string(b))
	if len(text) > 200 {
		text = text[:200] + "..."
	}
	if text == "" {
		text = http.StatusText(resp.StatusCode)
	}
	e.Message = fmt.Sprintf("%s %s: %s", method, u, text)
	return e
}
