package server

import (
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"
)

// retryAfterMatches fails t unless a 429's Retry-After is the number of
// seconds its message names ("try again in N s").
func retryAfterMatches(t *testing.T, what string, hdr http.Header, msg string) {
	t.Helper()
	m := regexp.MustCompile(`try again in (\d+) s`).FindStringSubmatch(msg)
	if m == nil {
		t.Fatalf("%s: no wait in the message %q", what, msg)
	}
	if got := hdr.Get("Retry-After"); got != m[1] {
		t.Errorf("%s: Retry-After %q, the message says %q", what, got, m[0])
	}
}

// The limiter's 429 says in Retry-After what its message says.
func TestLoginRateLimitRetryAfter(t *testing.T) {
	ts := startServer(t, nil)
	var r resp
	for range 14 {
		if r = ts.do(t, "POST", "/auth/login", strings.NewReader(`{"password":"wrong"}`), nil); r.code == 429 {
			break
		}
	}
	if r.code != 429 {
		t.Fatalf("14 wrong logins: last %d, want 429", r.code)
	}
	retryAfterMatches(t, "POST /auth/login", r.header, r.errMsg(t))

	// The form gets the same header; its page carries the message.
	res := ts.form(t, "/ui/login", url.Values{"password": {"wrong"}}, map[string]string{"Origin": ts.URL})
	if res.StatusCode != 429 {
		t.Fatalf("POST /ui/login while limited: %d", res.StatusCode)
	}
	retryAfterMatches(t, "POST /ui/login", res.Header, res.body)
}

func TestWaitSeconds(t *testing.T) {
	for _, c := range []struct {
		ms   int
		want int
	}{{0, 1}, {1, 1}, {999, 1}, {1000, 1}, {1001, 2}, {3200, 4}, {6000, 6}} {
		if got := waitSeconds(time.Duration(c.ms) * time.Millisecond); got != c.want {
			t.Errorf("waitSeconds(%d ms) = %d, want %d", c.ms, got, c.want)
		}
	}
}
