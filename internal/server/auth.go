package server

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/argon2"

	"github.com/btyproject/bty/internal/api"
	"github.com/btyproject/bty/internal/store"
)

// SettingAdminPassword is the settings key of the admin password's
// argon2id hash.
const SettingAdminPassword = "admin_password_hash"

// CookieName is the session cookie (docs/reference.md, "Routes").
const CookieName = "bty-token"

// argon2id parameters (RFC 9106's second recommended option, with less
// memory and one lane: a login costs ~100 ms of one core and 64 MiB
// here). One lane keeps a password check to one core, so a login flood
// cannot take every core from PXE clients; hashes made with other
// parameters (older ones had p=2) are checked with their own.
const (
	argonTime    = 3
	argonMemory  = 64 << 10 // KiB
	argonThreads = 1
	argonKeyLen  = 32
)

// HashPassword returns an encoded argon2id hash of pw (PHC string form).
func HashPassword(pw string) (string, error) {
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	key := argon2.IDKey([]byte(pw), salt, argonTime, argonMemory, argonThreads, argonKeyLen)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, argonMemory, argonTime, argonThreads,
		b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

// CheckPassword reports whether pw matches an encoded hash from
// HashPassword, in constant time.
func CheckPassword(encoded, pw string) bool {
	parts := strings.Split(encoded, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return false
	}
	var version int
	var m uint32
	var t uint32
	var p uint8
	if _, err := fmt.Sscanf(parts[2], "v=%d", &version); err != nil || version != argon2.Version {
		return false
	}
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &m, &t, &p); err != nil {
		return false
	}
	b64 := base64.RawStdEncoding
	salt, err1 := b64.DecodeString(parts[4])
	want, err2 := b64.DecodeString(parts[5])
	if err1 != nil || err2 != nil || len(want) == 0 {
		return false
	}
	got := argon2.IDKey([]byte(pw), salt, t, m, p, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1
}

// NewPassword returns a random password for the first start: 20
// characters from an alphabet without look-alikes.
func NewPassword() string {
	const alphabet = "abcdefghjkmnpqrstuvwxyzABCDEFGHJKMNPQRSTUVWXYZ23456789"
	b := make([]byte, 20)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// newToken returns a session token (32 random bytes, base64url) and the
// SHA-256 that is stored in its place.
func newToken() (string, []byte) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	tok := base64.RawURLEncoding.EncodeToString(b)
	return tok, hashToken(tok)
}

func hashToken(tok string) []byte {
	h := sha256.Sum256([]byte(tok))
	return h[:]
}

// SetAdminPassword stores pw's hash as the admin password and revokes
// every session, returning how many: a session made under the old
// password never outlives it. Every change of SettingAdminPassword
// (BTY_ADMIN_PASSWORD at start, bty-web passwd) goes through here.
func SetAdminPassword(ctx context.Context, st store.Store, pw string) (revoked int, err error) {
	h, err := HashPassword(pw)
	if err != nil {
		return 0, err
	}
	// Store, then revoke: no login with the old password can slip in
	// between and keep its session.
	if err := st.SetSetting(ctx, SettingAdminPassword, h, time.Now()); err != nil {
		return 0, fmt.Errorf("storing the admin password: %w", err)
	}
	n, err := st.RevokeAllSessions(ctx)
	if err != nil {
		return 0, fmt.Errorf("the admin password changed but the existing sessions could not be revoked, so they may still be valid: %w; run bty-web passwd again or POST /auth/revoke-all", err)
	}
	return n, nil
}

// EnsureAdminPassword applies the password policy at start: pw (from
// BTY_ADMIN_PASSWORD) replaces the stored hash when it does not match,
// revoking every session; with neither, a password is generated, stored,
// and returned so the caller can print it once. generated is ""
// otherwise.
func EnsureAdminPassword(ctx context.Context, st store.Store, pw string) (generated string, err error) {
	cur, err := st.Setting(ctx, SettingAdminPassword)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return "", err
	}
	switch {
	case pw != "":
		if cur != "" && CheckPassword(cur, pw) {
			return "", nil
		}
	case cur != "":
		return "", nil
	default:
		pw = NewPassword()
		generated = pw
	}
	if _, err := SetAdminPassword(ctx, st, pw); err != nil {
		return "", err
	}
	return generated, nil
}

// limiter allows each client address a burst of attempts, refilled at a
// steady rate (a token bucket per address). Hand-written: a dozen lines,
// and golang.org/x/time/rate would still need the per-address map.
type limiter struct {
	mu      sync.Mutex
	burst   float64
	per     time.Duration // one attempt regained per this
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newLimiter(burst int, per time.Duration) *limiter {
	return &limiter{burst: float64(burst), per: per, buckets: map[string]*bucket{}}
}

// maxLimiterKeys bounds the addresses a limiter remembers.
const maxLimiterKeys = 10000

// trim forgets full buckets (an address that has waited long enough
// starts full anyway) and, if many addresses are still mid-limit (a flood
// from many addresses), arbitrary ones down to 90 % of maxLimiterKeys: the
// map stays bounded and a trim, which walks it, happens at most once per
// maxLimiterKeys/10 new addresses. A forgotten address starts with a full
// bucket; the global caps (password checks at once, unclaimed
// discoveries) hold regardless.
func (l *limiter) trim(now time.Time) {
	for k, b := range l.buckets {
		if b.tokens+float64(now.Sub(b.last))/float64(l.per) >= l.burst {
			delete(l.buckets, k)
		}
	}
	for k := range l.buckets {
		if len(l.buckets) <= maxLimiterKeys*9/10 {
			break
		}
		delete(l.buckets, k)
	}
}

// spent reports whether key has no attempt left at now (allow would
// refuse it), without taking one.
func (l *limiter) spent(key string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key]
	return ok && b.tokens+float64(now.Sub(b.last))/float64(l.per) < 1
}

// allow takes one attempt for key; when none is left it returns false
// and how long until the next one.
func (l *limiter) allow(key string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key]
	if !ok {
		if len(l.buckets) >= maxLimiterKeys {
			l.trim(now)
		}
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[key] = b
	}
	b.tokens = min(l.burst, b.tokens+float64(now.Sub(b.last))/float64(l.per))
	b.last = now
	if b.tokens < 1 {
		return false, time.Duration((1 - b.tokens) * float64(l.per))
	}
	b.tokens--
	return true, 0
}

// clientAddr is the request's peer address without the port.
func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// retryError is a login refused for now (429): after is the wait in
// whole seconds, the same number the message gives, for Retry-After.
type retryError struct {
	after int
	msg   string
}

func (e *retryError) Error() string { return e.msg }

// waitSeconds rounds d up to whole seconds, at least 1.
func waitSeconds(d time.Duration) int {
	return max(1, int((d+time.Second-1)/time.Second))
}

// setRetryAfter sets Retry-After when err is a *retryError.
func setRetryAfter(w http.ResponseWriter, err error) {
	var re *retryError
	if errors.As(err, &re) {
		w.Header().Set("Retry-After", strconv.Itoa(re.after))
	}
}

type authKind int

const (
	authNone authKind = iota
	authBearer
	authCookie
)

// requestToken returns the token a request carries and how.
func requestToken(r *http.Request) (string, authKind) {
	if h := r.Header.Get("Authorization"); h != "" {
		if tok, ok := strings.CutPrefix(h, "Bearer "); ok {
			return strings.TrimSpace(tok), authBearer
		}
		return "", authNone
	}
	if c, err := r.Cookie(CookieName); err == nil && c.Value != "" {
		return c.Value, authCookie
	}
	return "", authNone
}

// sameOrigin reports whether a cookie-authenticated, state-changing
// request comes from this server's own pages: its Origin (or, without
// one, its Referer) names the host the request was sent to.
func sameOrigin(r *http.Request) bool {
	src := r.Header.Get("Origin")
	if src == "" {
		src = r.Header.Get("Referer")
	}
	if src == "" || src == "null" {
		return false
	}
	u, err := url.Parse(src)
	if err != nil {
		return false
	}
	return strings.EqualFold(u.Host, r.Host)
}

func isSafeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

type ctxKey int

const tokenHashKey ctxKey = 1

// requireAuth wraps h: the request needs a valid session token (Bearer
// or cookie); cookie-authenticated state changes must also pass the
// Origin check.
func (s *Server) requireAuth(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tok, kind := requestToken(r)
		if kind == authNone {
			w.Header().Set("WWW-Authenticate", `Bearer realm="bty"`)
			writeError(w, http.StatusUnauthorized, "authentication required: log in (POST /auth/login or bty-ctl login) and send the token as Authorization: Bearer TOKEN")
			return
		}
		th := hashToken(tok)
		ok, err := s.store.SessionValid(r.Context(), th, time.Now())
		if err != nil {
			s.internalError(w, r, err)
			return
		}
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="bty", error="invalid_token"`)
			writeError(w, http.StatusUnauthorized, "the session token is invalid, expired or revoked: log in again")
			return
		}
		if kind == authCookie && !isSafeMethod(r.Method) && !sameOrigin(r) {
			writeError(w, http.StatusForbidden, "cross-origin request refused: the Origin header does not match this server")
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), tokenHashKey, th)))
	}
}

// login checks the admin password and issues a session token. Attempts
// are rate-limited per client address, successful or not; password
// checks are rate-limited server-wide, and at most Config.MaxLoginChecks
// run at once: the excess gets 429 before any hashing.
func (s *Server) login(ctx context.Context, addr, password string) (api.Session, int, error) {
	if ok, wait := s.loginLimit.allow(addr, time.Now()); !ok {
		secs := waitSeconds(wait)
		return api.Session{}, http.StatusTooManyRequests, &retryError{after: secs,
			msg: fmt.Sprintf("too many login attempts from %s: try again in %d s", addr, secs)}
	}
	hash, err := s.store.Setting(ctx, SettingAdminPassword)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return api.Session{}, http.StatusInternalServerError, err
	}
	ok := false
	if hash != "" {
		// Each check holds 64 MiB and a core for ~100 ms. Logins
		// from many addresses (each within its own limit) could still
		// keep the CPU busy hashing: the server as a whole starts at
		// most loginChecksBurst checks at once and loginChecksPerSecond
		// a second after that, and past either limit or the cap on
		// checks running at once, answers at once rather than queue (or
		// allocate) for every caller.
		now := time.Now()
		if ok, wait := s.pwRate.allow("", now); !ok {
			s.warnBusyLogins(addr, now)
			secs := waitSeconds(wait)
			return api.Session{}, http.StatusTooManyRequests, &retryError{after: secs,
				msg: fmt.Sprintf("the server is checking too many logins: try again in %d s", secs)}
		}
		select {
		case s.pwChecks <- struct{}{}:
		default:
			s.warnBusyLogins(addr, now)
			return api.Session{}, http.StatusTooManyRequests, &retryError{after: 1,
				msg: "the server is busy checking other logins: try again in 1 s"}
		}
		ok = s.checkPassword(hash, password)
		<-s.pwChecks
	}
	if !ok {
		s.log.Warn("login refused", "client", addr)
		return api.Session{}, http.StatusUnauthorized, errors.New("wrong password")
	}
	tok, th := newToken()
	now := time.Now()
	exp := now.Add(s.cfg.SessionTTL).UTC().Truncate(time.Second)
	if err := s.store.CreateSession(ctx, th, exp, now); err != nil {
		return api.Session{}, http.StatusInternalServerError, err
	}
	s.log.Info("login", "client", addr, "expires_at", exp)
	return api.Session{Token: tok, ExpiresAt: exp}, http.StatusOK, nil
}

// Server-wide password checks: at most loginChecksBurst in a burst, then
// loginChecksPerSecond (docs/reference.md, "Routes").
const (
	loginChecksBurst     = 10
	loginChecksPerSecond = 2
)

// warnBusyLogins logs a login refused because the server is checking
// too many passwords: once a minute, not once per attempt.
func (s *Server) warnBusyLogins(addr string, now time.Time) {
	if ok, _ := s.warnLimit.allow("busy logins", now); ok {
		s.log.Warn("logins refused: the server is checking too many passwords (a login flood?); once a minute", "client", addr,
			"max_at_once", cap(s.pwChecks), "per_second", loginChecksPerSecond)
	}
}

func (s *Server) handleLogin(w http.ResponseWriter, r *http.Request) {
	var req api.LoginRequest
	if !decodeJSON(w, r, &req, 64<<10) {
		return
	}
	if req.Password == "" {
		writeError(w, http.StatusBadRequest, `missing "password"`)
		return
	}
	resp, code, err := s.login(r.Context(), clientAddr(r), req.Password)
	if err != nil {
		if code == http.StatusInternalServerError {
			s.internalError(w, r, err)
			return
		}
		setRetryAfter(w, err)
		writeError(w, code, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) handleLogout(w http.ResponseWriter, r *http.Request) {
	th, _ := r.Context().Value(tokenHashKey).([]byte)
	if err := s.store.RevokeSession(r.Context(), th); err != nil {
		s.internalError(w, r, err)
		return
	}
	s.clearCookie(w)
	writeJSON(w, http.StatusOK, api.Revoked{Revoked: 1})
}

func (s *Server) handleRevokeAll(w http.ResponseWriter, r *http.Request) {
	n, err := s.revokeAll(w, r)
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, api.Revoked{Revoked: n})
}

// revokeAll ends every session, this one included, and drops the
// caller's cookie.
func (s *Server) revokeAll(w http.ResponseWriter, r *http.Request) (int, error) {
	n, err := s.store.RevokeAllSessions(r.Context())
	if err != nil {
		return 0, err
	}
	s.log.Info("all sessions revoked", "count", n, "client", clientAddr(r))
	s.clearCookie(w)
	return n, nil
}

// clearCookie drops the session cookie (HttpOnly, SameSite=Strict,
// Secure under TLS, like the one the browser UI sets).
func (s *Server) clearCookie(w http.ResponseWriter) {
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: s.tls()})
}

func (s *Server) tls() bool { return s.cfg.TLSCert != "" }
