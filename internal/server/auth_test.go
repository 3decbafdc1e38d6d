package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/btyproject/bty/internal/store/sqlitestore"
)

// bootServer starts bty-web over stateDir's database the way Run does
// (EnsureAdminPassword with pw, then New) behind httptest; prep, when
// not nil, adjusts the Server before it serves. stop ends it (also at
// cleanup); a later bootServer on the same stateDir is a restart.
func bootServer(t *testing.T, stateDir, pw string, mod func(*Config), prep func(*Server)) (ts *testServer, stop func()) {
	t.Helper()
	cfg := Config{StateDir: stateDir, ImageRoot: filepath.Join(stateDir, "images"), BootDir: filepath.Join(stateDir, "boot"),
		Host: "127.0.0.1", MaxUpload: 1 << 20, SessionTTL: time.Hour}
	if mod != nil {
		mod(&cfg)
	}
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := sqlitestore.Open(ctx, cfg.DBPath(), log)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureAdminPassword(ctx, st, pw); err != nil {
		st.Close()
		t.Fatal(err)
	}
	srv := New(cfg, st, log, nil)
	if prep != nil {
		prep(srv)
	}
	hs := httptest.NewServer(srv.Handler())
	var once sync.Once
	stop = func() {
		once.Do(func() {
			hs.Close()
			srv.Close()
			st.Close()
		})
	}
	t.Cleanup(stop)
	return &testServer{URL: hs.URL, cfg: cfg, srv: srv, st: st}, stop
}

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

// A login beyond MaxLoginChecks running password checks gets 429 at
// once, with Retry-After, on the API and the form alike.
func TestLoginChecksCapped(t *testing.T) {
	// The first check blocks until released; any other runs at once
	// (and, with the cap working, never runs).
	entered, release := make(chan struct{}), make(chan struct{})
	var first atomic.Bool
	var freeOnce sync.Once
	free := func() { freeOnce.Do(func() { close(release) }) }
	t.Cleanup(free)
	ts, _ := bootServer(t, t.TempDir(), testPassword, func(c *Config) { c.MaxLoginChecks = 1 }, func(s *Server) {
		s.checkPassword = func(string, string) bool {
			if first.CompareAndSwap(false, true) {
				entered <- struct{}{}
				<-release
			}
			return false
		}
	})
	held := make(chan int, 1)
	go func() {
		_, code, _ := ts.srv.login(context.Background(), "192.0.2.1", "wrong")
		held <- code
	}()
	<-entered // the one check allowed is running

	start := time.Now()
	r := ts.do(t, "POST", "/auth/login", strings.NewReader(fmt.Sprintf(`{"password":%q}`, testPassword)), nil)
	if r.code != 429 {
		t.Fatalf("POST /auth/login while the checks are full: %d %s, want 429", r.code, r.body)
	}
	retryAfterMatches(t, "POST /auth/login (busy)", r.header, r.errMsg(t))
	res := ts.form(t, "/ui/login", url.Values{"password": {testPassword}}, map[string]string{"Origin": ts.URL})
	if res.StatusCode != 429 {
		t.Fatalf("POST /ui/login while the checks are full: %d, want 429", res.StatusCode)
	}
	retryAfterMatches(t, "POST /ui/login (busy)", res.Header, res.body)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the refusals took %v: they must not wait for a check", d)
	}

	free()
	if code := <-held; code != 401 {
		t.Errorf("the held check: %d, want 401", code)
	}
	// The slot is free again: the real check runs.
	ts.srv.checkPassword = CheckPassword
	ts.login(t, testPassword)
}

// Under many parallel logins from distinct addresses, no more than
// MaxLoginChecks password checks run at once; the rest get 429.
func TestLoginChecksConcurrency(t *testing.T) {
	const limit, callers = 2, 16
	var running, peak, calls atomic.Int32
	ts, _ := bootServer(t, t.TempDir(), testPassword, func(c *Config) { c.MaxLoginChecks = limit }, func(s *Server) {
		s.checkPassword = func(string, string) bool {
			calls.Add(1)
			n := running.Add(1)
			for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
			}
			time.Sleep(50 * time.Millisecond)
			running.Add(-1)
			return false
		}
	})
	var wg sync.WaitGroup
	var busy atomic.Int32
	start := make(chan struct{})
	for i := range callers {
		wg.Go(func() {
			<-start
			_, code, err := ts.srv.login(context.Background(), fmt.Sprintf("192.0.2.%d", i+1), "wrong")
			var re *retryError
			switch {
			case code == 429 && errors.As(err, &re) && re.after >= 1:
				busy.Add(1)
			case code != 401:
				t.Errorf("caller %d: %d %v", i, code, err)
			}
		})
	}
	close(start)
	wg.Wait()
	if p := peak.Load(); p > limit {
		t.Errorf("%d password checks ran at once, the cap is %d", p, limit)
	}
	if busy.Load() == 0 || calls.Load()+busy.Load() != callers {
		t.Errorf("%d checks ran, %d callers got 429, of %d", calls.Load(), busy.Load(), callers)
	}
}

// TestLoginChecksServerWide: wrong logins from many addresses, each
// within its own per-address limit, start at most loginChecksBurst
// password checks and then loginChecksPerSecond a second, server-wide;
// the rest get 429 with a Retry-After before any hashing (the bench's
// 48 attacking addresses kept both cores hashing).
func TestLoginChecksServerWide(t *testing.T) {
	var calls atomic.Int32
	ts, _ := bootServer(t, t.TempDir(), testPassword, func(c *Config) { c.MaxLoginChecks = 64 }, func(s *Server) {
		s.checkPassword = func(string, string) bool { calls.Add(1); return false }
	})
	start := time.Now()
	var limited int
	for i := range 200 {
		_, code, err := ts.srv.login(context.Background(), fmt.Sprintf("192.0.2.%d", i%200+1), "wrong")
		var re *retryError
		switch {
		case code == 429 && errors.As(err, &re) && re.after >= 1 && strings.Contains(re.msg, "too many logins"):
			limited++
		case code != 401:
			t.Fatalf("login %d: %d %v", i, code, err)
		}
	}
	elapsed := time.Since(start)
	if max := loginChecksBurst + int(elapsed.Seconds()*loginChecksPerSecond) + 1; int(calls.Load()) > max {
		t.Errorf("%d password checks in %s from 200 addresses; the server-wide limit allows %d", calls.Load(), elapsed, max)
	}
	if limited == 0 || int(calls.Load())+limited != 200 {
		t.Errorf("%d checks, %d refused, of 200", calls.Load(), limited)
	}
}

func TestConfigMaxLoginChecks(t *testing.T) {
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == "BTY_MAX_LOGIN_CHECKS" {
				return v
			}
			return ""
		}
	}
	if c, err := ConfigFromEnv(env("")); err != nil || c.MaxLoginChecks < 1 {
		t.Errorf("default: %d, %v; want at least 1", c.MaxLoginChecks, err)
	}
	if c, err := ConfigFromEnv(env("3")); err != nil || c.MaxLoginChecks != 3 {
		t.Errorf("BTY_MAX_LOGIN_CHECKS=3: %d, %v", c.MaxLoginChecks, err)
	}
	for _, bad := range []string{"0", "-1", "two"} {
		if _, err := ConfigFromEnv(env(bad)); err == nil || !strings.Contains(err.Error(), "BTY_MAX_LOGIN_CHECKS") {
			t.Errorf("BTY_MAX_LOGIN_CHECKS=%s: %v, want an error naming it", bad, err)
		}
	}
	s := New(Config{}, nil, nil, nil)
	defer s.Close()
	if cap(s.pwChecks) < 1 {
		t.Errorf("New with MaxLoginChecks 0: cap %d", cap(s.pwChecks))
	}
}

// A session made under one admin password is refused once the server
// restarts with another (BTY_ADMIN_PASSWORD), and survives a restart
// with the same one.
func TestPasswordChangeRevokesSessions(t *testing.T) {
	const pwA, pwB = "password A, the first", "password B, the second"
	dir := t.TempDir()
	bearer := func(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }

	ts, stop := bootServer(t, dir, pwA, nil, nil)
	tok := ts.login(t, pwA)
	stop()

	ts, stop = bootServer(t, dir, pwA, nil, nil)
	if r := ts.do(t, "GET", "/machines", nil, bearer(tok)); r.code != 200 {
		t.Fatalf("after a restart with the same password: %d %s, want 200", r.code, r.body)
	}
	stop()

	ts, stop = bootServer(t, dir, pwB, nil, nil)
	defer stop()
	if r := ts.do(t, "GET", "/machines", nil, bearer(tok)); r.code != 401 {
		t.Errorf("after a restart with a new password: %d %s, want 401", r.code, r.body)
	}
	if r := ts.do(t, "POST", "/auth/login", strings.NewReader(fmt.Sprintf(`{"password":%q}`, pwA)), nil); r.code != 401 {
		t.Errorf("login with the old password: %d, want 401", r.code)
	}
	tokB := ts.login(t, pwB)

	// bty-web passwd (on the same state, the server still running)
	// revokes the sessions too.
	var stdout, stderr bytes.Buffer
	if code := Main(context.Background(), []string{"passwd", "--password-stdin", "--state-dir", dir},
		strings.NewReader("password C, the third\n"), &stdout, &stderr); code != 0 {
		t.Fatalf("bty-web passwd: exit %d, %s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), "1 session(s) revoked") {
		t.Errorf("bty-web passwd said %q", stdout.String())
	}
	if r := ts.do(t, "GET", "/machines", nil, bearer(tokB)); r.code != 401 {
		t.Errorf("after bty-web passwd: %d, want 401", r.code)
	}
	ts.login(t, "password C, the third")
}

// TestLimiterBounded: a flood from many addresses, each mid-limit, does
// not grow the limiter's memory without bound (it walked the map on every
// call past 10,000 entries and kept every partly used bucket).
func TestLimiterBounded(t *testing.T) {
	l := newLimiter(10, time.Hour)
	now := time.Now()
	for i := range 3 * maxLimiterKeys {
		l.allow(fmt.Sprintf("2001:db8::%x", i), now)
	}
	if n := len(l.buckets); n > maxLimiterKeys {
		t.Fatalf("the limiter remembers %d addresses, want at most %d", n, maxLimiterKeys)
	}
	// A remembered address is still limited.
	for range 10 {
		l.allow("192.0.2.1", now)
	}
	if ok, wait := l.allow("192.0.2.1", now); ok || wait <= 0 {
		t.Errorf("the 11th attempt of one address: allowed %v, wait %v", ok, wait)
	}
}
