package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/btyproject/bty/internal/api"
	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/store/sqlitestore"
)

const testPassword = "correct horse battery"

// testServer is a real bty-web on a loopback port over a real SQLite
// file.
type testServer struct {
	URL   string
	cfg   Config
	token string
	srv   *Server
	st    *sqlitestore.SQLite
	stop  context.CancelFunc
	done  chan error
}

func startServer(t *testing.T, mod func(*Config)) *testServer {
	t.Helper()
	dir := t.TempDir()
	cfg := Config{
		StateDir:   filepath.Join(dir, "state"),
		ImageRoot:  filepath.Join(dir, "images"),
		BootDir:    filepath.Join(dir, "boot"),
		Host:       "127.0.0.1",
		MaxUpload:  64 << 20,
		SessionTTL: time.Hour,
	}
	if mod != nil {
		mod(&cfg)
	}
	for _, d := range []string{cfg.StateDir, cfg.ImageRoot, cfg.BootDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	st, err := sqlitestore.Open(ctx, cfg.DBPath(), log)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureAdminPassword(ctx, st, testPassword); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{URL: "http://" + l.Addr().String(), cfg: cfg, st: st, stop: cancel, done: make(chan error, 1)}
	ts.srv = New(cfg, st, log, nil)
	if err := ts.srv.StartPXEServices(ctx, prometheus.NewRegistry(), l.Addr().(*net.TCPAddr).Port); err != nil {
		t.Fatal(err)
	}
	go func() { ts.done <- ts.srv.Serve(ctx, l, 2*time.Second) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-ts.done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return 10 s after shutdown")
		}
		ts.srv.Close()
		st.Close()
	})
	ts.token = ts.login(t, testPassword)
	return ts
}

type resp struct {
	code   int
	header http.Header
	body   []byte
}

func (r resp) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decoding %q: %v", r.body, err)
	}
}

func (r resp) errMsg(t *testing.T) string {
	t.Helper()
	var e struct {
		Error string `json:"error"`
	}
	r.json(t, &e)
	if e.Error == "" {
		t.Fatalf("no error message in %q", r.body)
	}
	return e.Error
}

// do sends a request; hdr holds extra headers ("Authorization" etc.).
func (ts *testServer) do(t *testing.T, method, path string, body io.Reader, hdr map[string]string) resp {
	t.Helper()
	req, err := http.NewRequest(method, ts.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp{res.StatusCode, res.Header, b}
}

func (ts *testServer) auth() map[string]string {
	return map[string]string{"Authorization": "Bearer " + ts.token}
}

func (ts *testServer) login(t *testing.T, pw string) string {
	t.Helper()
	r := ts.do(t, "POST", "/auth/login", strings.NewReader(fmt.Sprintf(`{"password": %q}`, pw)), nil)
	if r.code != 200 {
		t.Fatalf("login: %d %s", r.code, r.body)
	}
	var lr api.Session
	r.json(t, &lr)
	if len(lr.Token) < 40 || lr.ExpiresAt.Before(time.Now()) {
		t.Fatalf("login response %+v", lr)
	}
	return lr.Token
}

func TestOpenRoutes(t *testing.T) {
	ts := startServer(t, nil)
	if r := ts.do(t, "GET", "/healthz", nil, nil); r.code != 200 || !bytes.Contains(r.body, []byte(`"ok"`)) {
		t.Errorf("healthz: %d %s", r.code, r.body)
	}
	if r := ts.do(t, "GET", "/version", nil, nil); r.code != 200 || !bytes.Contains(r.body, []byte(`"version"`)) {
		t.Errorf("version: %d %s", r.code, r.body)
	}
	if r := ts.do(t, "GET", "/nope", nil, nil); r.code != 404 || !strings.Contains(r.errMsg(t), "no route") {
		t.Errorf("unknown route: %d %s", r.code, r.body)
	}
	if r := ts.do(t, "DELETE", "/healthz", nil, nil); r.code != 405 {
		t.Errorf("DELETE /healthz: %d", r.code)
	}
	// A closed database makes the health check fail.
	ts.st.Close()
	if r := ts.do(t, "GET", "/healthz", nil, nil); r.code != 503 {
		t.Errorf("healthz with the database closed: %d %s", r.code, r.body)
	}
}

func TestAuth(t *testing.T) {
	ts := startServer(t, nil)
	protected := []struct{ method, path string }{
		{"GET", "/machines"}, {"GET", "/machines/aa:bb:cc:dd:ee:ff"}, {"PUT", "/machines/aa:bb:cc:dd:ee:ff"},
		{"DELETE", "/machines/aa:bb:cc:dd:ee:ff"}, {"PUT", "/images/x.img"}, {"DELETE", "/images/x.img"},
		{"PUT", "/boot/x"}, {"GET", "/events/machines"}, {"POST", "/auth/logout"}, {"POST", "/auth/revoke-all"},
	}
	for _, p := range protected {
		for name, hdr := range map[string]map[string]string{
			"no token":    nil,
			"bogus token": {"Authorization": "Bearer AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"},
			"basic auth":  {"Authorization": "Basic YWRtaW46YWRtaW4="},
		} {
			if r := ts.do(t, p.method, p.path, strings.NewReader("{}"), hdr); r.code != 401 {
				t.Errorf("%s %s with %s: %d, want 401", p.method, p.path, name, r.code)
			}
		}
	}

	// Wrong passwords and malformed logins.
	if r := ts.do(t, "POST", "/auth/login", strings.NewReader(`{"password":"nope"}`), nil); r.code != 401 {
		t.Errorf("wrong password: %d", r.code)
	}
	if r := ts.do(t, "POST", "/auth/login", strings.NewReader(`{"pass":"x"}`), nil); r.code != 400 {
		t.Errorf("unknown field: %d", r.code)
	}
	if r := ts.do(t, "POST", "/auth/login", strings.NewReader(`not json`), nil); r.code != 400 {
		t.Errorf("not json: %d", r.code)
	}

	// Tokens: logout revokes only its own; revoke-all revokes every one.
	a, b := ts.login(t, testPassword), ts.login(t, testPassword)
	bearer := func(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }
	if r := ts.do(t, "POST", "/auth/logout", nil, bearer(a)); r.code != 200 {
		t.Fatalf("logout: %d %s", r.code, r.body)
	}
	if r := ts.do(t, "GET", "/machines", nil, bearer(a)); r.code != 401 {
		t.Errorf("after logout: %d", r.code)
	}
	if r := ts.do(t, "GET", "/machines", nil, bearer(b)); r.code != 200 {
		t.Errorf("another token after logout: %d", r.code)
	}
	if r := ts.do(t, "POST", "/auth/revoke-all", nil, bearer(b)); r.code != 200 {
		t.Fatalf("revoke-all: %d", r.code)
	}
	for _, tok := range []string{b, ts.token} {
		if r := ts.do(t, "GET", "/machines", nil, bearer(tok)); r.code != 401 {
			t.Errorf("after revoke-all: %d", r.code)
		}
	}
	// Only the hash is stored: the database file does not contain the token.
	c := ts.login(t, testPassword)
	db, _ := os.ReadFile(ts.cfg.DBPath())
	wal, _ := os.ReadFile(ts.cfg.DBPath() + "-wal")
	if bytes.Contains(db, []byte(c)) || bytes.Contains(wal, []byte(c)) || bytes.Contains(append(db, wal...), []byte(testPassword)) {
		t.Error("a token or the password is stored in clear in the database")
	}

	// Cookie sessions: state changes need a matching Origin.
	cookie := map[string]string{"Cookie": CookieName + "=" + c}
	body := `{"boot_policy":"local"}`
	if r := ts.do(t, "PUT", "/machines/aa:bb:cc:dd:ee:01", strings.NewReader(body), cookie); r.code != 403 {
		t.Errorf("cookie PUT without Origin: %d, want 403", r.code)
	}
	cookie["Origin"] = "http://evil.example"
	if r := ts.do(t, "PUT", "/machines/aa:bb:cc:dd:ee:01", strings.NewReader(body), cookie); r.code != 403 {
		t.Errorf("cookie PUT from another origin: %d, want 403", r.code)
	}
	cookie["Origin"] = ts.URL
	if r := ts.do(t, "PUT", "/machines/aa:bb:cc:dd:ee:01", strings.NewReader(body), cookie); r.code != 201 {
		t.Errorf("cookie PUT from our origin: %d %s", r.code, r.body)
	}
	delete(cookie, "Origin")
	if r := ts.do(t, "GET", "/machines", nil, cookie); r.code != 200 {
		t.Errorf("cookie GET: %d", r.code)
	}
}

func TestLoginRateLimit(t *testing.T) {
	ts := startServer(t, nil)
	var codes []int
	for range 14 {
		r := ts.do(t, "POST", "/auth/login", strings.NewReader(`{"password":"wrong"}`), nil)
		codes = append(codes, r.code)
	}
	if codes[0] != 401 || codes[len(codes)-1] != 429 {
		t.Fatalf("codes %v: want 401s, then 429", codes)
	}
	// Even the right password is refused while limited.
	r := ts.do(t, "POST", "/auth/login", strings.NewReader(fmt.Sprintf(`{"password":%q}`, testPassword)), nil)
	if r.code != 429 || r.header.Get("Retry-After") == "" || !strings.Contains(r.errMsg(t), "too many login attempts") {
		t.Errorf("right password while limited: %d %s", r.code, r.body)
	}
}

func TestMachinesAPI(t *testing.T) {
	ts := startServer(t, nil)
	h := ts.auth()
	r := ts.do(t, "GET", "/machines", nil, h)
	if r.code != 200 || strings.TrimSpace(string(r.body)) != "[]" {
		t.Fatalf("empty list: %d %s", r.code, r.body)
	}
	r = ts.do(t, "PUT", "/machines/AA-BB-CC-DD-EE-0F", strings.NewReader(`{"image":"debian.img.zst","hostname":"n1"}`), h)
	var m fleet.Machine
	r.json(t, &m)
	if r.code != 201 || m.MAC.String() != "aa:bb:cc:dd:ee:0f" || m.BootPolicy != "local" || m.Image != "debian.img.zst" || m.CreatedAt.IsZero() {
		t.Fatalf("create: %d %s", r.code, r.body)
	}
	r = ts.do(t, "PUT", "/machines/aa:bb:cc:dd:ee:0f", strings.NewReader(`{"boot_policy":"flash"}`), h)
	r.json(t, &m)
	if r.code != 200 || m.BootPolicy != "flash" || m.Image != "debian.img.zst" || m.Hostname != "n1" {
		t.Fatalf("update: %d %s", r.code, r.body)
	}
	// Every wire field is present.
	var raw map[string]any
	ts.do(t, "GET", "/machines/aa:bb:cc:dd:ee:0f", nil, h).json(t, &raw)
	for _, k := range []string{"mac", "image", "provisioning_mode", "hostname", "cijoe_workflow_ref", "last_known_good",
		"discovered_at", "last_seen_at", "last_seen_ip", "boot_policy", "last_flashed_at", "last_workflow_run_at",
		"last_workflow_status", "last_workflow_output_path", "created_at", "updated_at"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("machine JSON lacks %q: %v", k, raw)
		}
	}
	errs := []struct {
		method, path, body string
		code               int
		want               string
	}{
		{"PUT", "/machines/aa:bb:cc:dd:ee:0f", `{"boot_policy":"reboot"}`, 400, "boot_policy"},
		{"PUT", "/machines/aa:bb:cc:dd:ee:0f", `{"provisioning_mode":"magic"}`, 400, "provisioning_mode"},
		{"PUT", "/machines/aa:bb:cc:dd:ee:0f", `{"colour":"red"}`, 400, "unknown field"},
		{"PUT", "/machines/aa:bb:cc:dd:ee:0f", `{"image": 7}`, 400, "invalid JSON"},
		{"PUT", "/machines/aa:bb:cc:dd:ee:0f", ``, 400, "empty"},
		{"PUT", "/machines/aabbccddee0f", `{}`, 400, "invalid MAC"},
		{"PUT", "/machines/aa:bb:cc:dd:ee:0f:11", `{}`, 400, "invalid MAC"},
		{"GET", "/machines/aa:bb:cc:dd:ee:99", ``, 404, "no machine"},
		{"DELETE", "/machines/aa:bb:cc:dd:ee:99", ``, 404, "no machine"},
		{"GET", "/machines/zz:bb:cc:dd:ee:99", ``, 400, "invalid MAC"},
	}
	for _, e := range errs {
		r := ts.do(t, e.method, e.path, strings.NewReader(e.body), h)
		if r.code != e.code || !strings.Contains(r.errMsg(t), e.want) {
			t.Errorf("%s %s %s: %d %s; want %d with %q", e.method, e.path, e.body, r.code, r.body, e.code, e.want)
		}
	}
	big := `{"hostname":"` + strings.Repeat("a", 4*fleet.MaxSeedBytes) + `"}`
	if r := ts.do(t, "PUT", "/machines/aa:bb:cc:dd:ee:0f", strings.NewReader(big), h); r.code != 413 {
		t.Errorf("oversized body: %d", r.code)
	}
	if r := ts.do(t, "DELETE", "/machines/AA:BB:CC:DD:EE:0F", nil, h); r.code != 204 {
		t.Errorf("delete: %d %s", r.code, r.body)
	}
	if r := ts.do(t, "GET", "/machines/aa:bb:cc:dd:ee:0f", nil, h); r.code != 404 {
		t.Errorf("after delete: %d", r.code)
	}
}

func TestPXEDiscoveryAndCadence(t *testing.T) {
	ts := startServer(t, nil)
	h := ts.auth()
	// An unknown MAC is discovered as a tui machine.
	r := ts.do(t, "GET", "/pxe/52-54-00-12-34-56", nil, nil)
	if r.code != 200 || !strings.HasPrefix(string(r.body), "#!ipxe") {
		t.Fatalf("pxe: %d %s", r.code, r.body)
	}
	var m fleet.Machine
	ts.do(t, "GET", "/machines/52:54:00:12:34:56", nil, h).json(t, &m)
	if m.BootPolicy != "tui" || m.DiscoveredAt == nil || m.LastSeenAt == nil || m.LastSeenIP != "127.0.0.1" {
		t.Fatalf("discovered record: %+v", m)
	}
	first := *m.LastSeenAt
	time.Sleep(1100 * time.Millisecond)
	ts.do(t, "GET", "/pxe/52:54:00:12:34:56", nil, nil)
	ts.do(t, "GET", "/machines/52:54:00:12:34:56", nil, h).json(t, &m)
	if !m.LastSeenAt.After(first) || !m.DiscoveredAt.Equal(first) {
		t.Errorf("second contact: last_seen %v (first %v), discovered %v", m.LastSeenAt, first, m.DiscoveredAt)
	}
	if r := ts.do(t, "POST", "/pxe/52:54:00:aa:aa:aa/done", nil, nil); r.code != 403 {
		t.Errorf("done for an unknown MAC: %d", r.code)
	}
	if r := ts.do(t, "GET", "/pxe/not-a-mac", nil, nil); r.code != 400 {
		t.Errorf("bad MAC: %d", r.code)
	}
}

// readSSE returns the next event of an SSE stream (skipping comments).
func readSSE(t *testing.T, br *bufio.Reader) (string, string) {
	t.Helper()
	var event, data string
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading SSE: %v", err)
		}
		line = strings.TrimRight(line, "\n")
		switch {
		case line == "" && event != "":
			return event, data
		case strings.HasPrefix(line, "event: "):
			event = line[7:]
		case strings.HasPrefix(line, "data: "):
			data = line[6:]
		}
	}
}

func TestEvents(t *testing.T) {
	ts := startServer(t, nil)
	ts.do(t, "PUT", "/machines/aa:00:00:00:00:01", strings.NewReader(`{}`), ts.auth())
	req, _ := http.NewRequest("GET", ts.URL+"/events/machines", nil)
	req.Header.Set("Authorization", "Bearer "+ts.token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("events: %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
	br := bufio.NewReader(res.Body)
	ev, data := readSSE(t, br)
	var snap []fleet.Machine
	if err := json.Unmarshal([]byte(data), &snap); ev != "snapshot" || err != nil || len(snap) != 1 || snap[0].MAC.String() != "aa:00:00:00:00:01" {
		t.Fatalf("first event %s %s (%v)", ev, data, err)
	}
	// A PXE contact from elsewhere shows up as an event.
	ts.do(t, "GET", "/pxe/aa:00:00:00:00:02", nil, nil)
	ev, data = readSSE(t, br)
	var me api.MachineEvent
	if err := json.Unmarshal([]byte(data), &me); ev != "machine" || err != nil || me.Type != "upsert" || me.MAC.String() != "aa:00:00:00:00:02" || me.Machine.BootPolicy != "tui" {
		t.Fatalf("event %s %s", ev, data)
	}
	ts.do(t, "DELETE", "/machines/aa:00:00:00:00:01", nil, ts.auth())
	ev, data = readSSE(t, br)
	if err := json.Unmarshal([]byte(data), &me); err != nil || ev != "machine" || me.Type != "delete" || me.MAC.String() != "aa:00:00:00:00:01" {
		t.Fatalf("delete event %s %s", ev, data)
	}
	if !strings.Contains(string(ts.do(t, "GET", "/metrics", nil, nil).body), "bty_sse_subscribers 1") {
		t.Error("metrics do not count the SSE subscriber")
	}
}

func TestMetrics(t *testing.T) {
	ts := startServer(t, nil)
	_, cycle := ts.boot(t, "127.0.0.1", "aa:00:00:00:00:03")
	ts.callFrom(t, "127.0.0.1", "POST", "/pxe/aa:00:00:00:00:03/done", cycle, nil)
	ts.do(t, "PUT", "/machines/aa:00:00:00:00:03", strings.NewReader(`{"boot_policy":"local"}`), ts.auth())
	ts.do(t, "GET", "/pxe/aa:00:00:00:00:03", nil, nil)
	body := string(ts.do(t, "GET", "/metrics", nil, nil).body)
	for _, want := range []string{
		`bty_pxe_contacts_total{policy="tui"} 1`,
		`bty_pxe_contacts_total{policy="local"} 1`,
		`bty_flashes_done_total 1`,
		`bty_http_requests_total{code="200",route="GET /pxe/{mac}"} 2`,
		`bty_bytes_served_total{kind="image"} 0`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// TestShutdownEndsStreams: cancelling Serve's context returns promptly
// even with an SSE client connected.
func TestShutdownEndsStreams(t *testing.T) {
	ts := startServer(t, nil)
	req, _ := http.NewRequest("GET", ts.URL+"/events/machines", nil)
	req.Header.Set("Authorization", "Bearer "+ts.token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	readSSE(t, bufio.NewReader(res.Body))
	start := time.Now()
	ts.stop()
	select {
	case err := <-ts.done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
		ts.done <- nil // for the cleanup
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return within 5 s of shutdown with an SSE client")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("shutdown took %s", d)
	}
}

func TestPXEScriptsAndCadence(t *testing.T) {
	ts := startServer(t, nil)
	h := ts.auth()
	raw := randomBytes(t, 1<<20)
	if r := ts.do(t, "PUT", "/images/debian.img", bytes.NewReader(raw), h); r.code != 201 {
		t.Fatalf("upload: %d %s", r.code, r.body)
	}
	waitCatalog(t, ts, "debian.img")
	mac := "52:54:00:00:00:07"
	pxe := func() string { return string(ts.do(t, "GET", "/pxe/"+strings.ToUpper(mac), nil, nil).body) }

	// Flash policy without an image: the disk boots, and the console says why.
	ts.do(t, "PUT", "/machines/"+mac, strings.NewReader(`{"boot_policy":"flash"}`), h)
	if s := pxe(); !strings.Contains(s, "no image assigned") || !strings.Contains(s, "sanboot") {
		t.Errorf("flash without image:\n%s", s)
	}
	ts.do(t, "PUT", "/machines/"+mac, strings.NewReader(`{"image":"debian.img","provisioning_mode":"cloud-init","hostname":"n7"}`), h)
	flashWant := []string{
		"kernel " + ts.URL + "/boot/bty-live-x86_64.vmlinuz initrd=bty-live-x86_64.initrd",
		"bty.server=" + ts.URL, "bty.mac=" + mac, "bty.image_url=" + ts.URL + "/images/debian.img",
		"bty.provisioning=cloud-init", "bty.sha256=" + sha(raw), "bty.hostname=n7",
	}
	// Per-job cadence: flash until done; after done the disk boots once,
	// then the next contact flashes again.
	var cycle string
	for i, want := range []string{"flash", "flash", "done", "local", "flash", "flash"} {
		if want == "done" {
			var m fleet.Machine
			r := ts.callFrom(t, "127.0.0.1", "POST", "/pxe/"+mac+"/done", cycle, nil)
			ts.do(t, "GET", "/machines/"+mac, nil, h).json(t, &m)
			if r.code != 200 || m.LastFlashedAt == nil || m.BootPolicy != "flash" || m.NextBoot != "local" {
				t.Fatalf("done: %d %s", r.code, r.body)
			}
			continue
		}
		s := pxe()
		if m := cycleParam.FindStringSubmatch(s); m != nil {
			cycle = m[1]
		}
		switch want {
		case "flash":
			for _, w := range flashWant {
				if !strings.Contains(s, w) {
					t.Errorf("contact %d: flash script lacks %q:\n%s", i, w, s)
				}
			}
		case "local":
			if !strings.Contains(s, "iseq ${platform} efi") || !strings.Contains(s, "sanboot --no-describe --drive 0x80 || exit") {
				t.Errorf("contact %d: want the local script:\n%s", i, s)
			}
		}
	}
	// tui for a new machine.
	if s := pxe2(t, ts, "52:54:00:00:00:08"); !strings.Contains(s, "bty.mode=interactive") {
		t.Errorf("tui script:\n%s", s)
	}
	// The bootstrap names the host the request used.
	if s := string(ts.do(t, "GET", "/pxe-bootstrap.ipxe", nil, nil).body); !strings.Contains(s, "chain "+ts.URL+"/pxe/${netX/mac:hexhyp}") {
		t.Errorf("bootstrap:\n%s", s)
	}
	// A hostname that would inject kernel arguments is refused by the
	// store, so it never reaches a script.
	r := ts.do(t, "PUT", "/machines/"+mac, strings.NewReader(`{"hostname":"x bty.image_url=http://evil/"}`), h)
	if r.code != 400 {
		t.Errorf("hostname with a space: %d %s", r.code, r.body)
	}
}

func pxe2(t *testing.T, ts *testServer, mac string) string {
	return string(ts.do(t, "GET", "/pxe/"+mac, nil, nil).body)
}

func TestExportImport(t *testing.T) {
	a := startServer(t, nil)
	a.do(t, "GET", "/pxe/52:54:00:00:00:21", nil, nil)
	a.do(t, "PUT", "/machines/52:54:00:00:00:22", strings.NewReader(`{"image":"x.img","boot_policy":"flash","hostname":"h22"}`), a.auth())
	if r := a.report(t, "52:54:00:00:00:22", "done", nil); r.code != 200 {
		t.Fatalf("done: %d %s", r.code, r.body)
	}
	r := a.do(t, "GET", "/state/export", nil, a.auth())
	if r.code != 200 || !strings.Contains(r.header.Get("Content-Disposition"), "bty-state-") {
		t.Fatalf("export: %d %v", r.code, r.header)
	}
	if bytes.Contains(r.body, []byte("argon2")) || bytes.Contains(r.body, []byte(a.token)) {
		t.Error("the export carries a secret")
	}
	if code := a.do(t, "GET", "/state/export", nil, nil).code; code != 401 {
		t.Errorf("unauthenticated export: %d", code)
	}

	b := startServer(t, nil)
	if r := b.do(t, "POST", "/state/import", bytes.NewReader(r.body), b.auth()); r.code != 200 {
		t.Fatalf("import: %d %s", r.code, r.body)
	}
	var am, bm []fleet.Machine
	a.do(t, "GET", "/machines", nil, a.auth()).json(t, &am)
	b.do(t, "GET", "/machines", nil, b.auth()).json(t, &bm)
	// Flash cycles are not exported: their token hashes stay behind.
	// Flashes are the history of the database they ran in.
	for i := range am {
		am[i].Cycle, am[i].Flash = nil, nil
	}
	if len(am) != 2 || fmt.Sprint(am) != fmt.Sprint(bm) {
		t.Errorf("after import:\n%v\nwant\n%v", bm, am)
	}
	for _, bad := range []string{`{"format":"zip"}`, `{"format":"bty-state-v1","machines":[{"mac":"nope"}]}`,
		`{"format":"bty-state-v1","machines":[{"mac":"52:54:00:00:00:30","boot_policy":"sometimes"}]}`} {
		if r := b.do(t, "POST", "/state/import", strings.NewReader(bad), b.auth()); r.code != 400 {
			t.Errorf("import %s: %d %s", bad, r.code, r.body)
		}
	}
}

// TestSettingsProxyDHCP applies proxy-DHCP settings live through the API
// (on a dummy interface in a network namespace of its own would be
// cleaner; loopback is enough to bind and report).
func TestSettingsProxyDHCP(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("binding DHCP ports needs root")
	}
	ts := startServer(t, nil)
	h := ts.auth()
	var doc struct {
		Iface      string              `json:"proxydhcp_iface"`
		Status     api.ProxyDHCPStatus `json:"proxydhcp_status"`
		Interfaces []api.Interface     `json:"interfaces"`
	}
	r := ts.do(t, "PUT", "/settings", strings.NewReader(`{"proxydhcp_iface":"lo","proxydhcp_subnet":"127.0.0.0/8"}`), h)
	r.json(t, &doc)
	if r.code != 200 || !doc.Status.Running || doc.Status.Interface != "lo" ||
		doc.Status.BootstrapURL != ts.URL+"/pxe-bootstrap.ipxe" || len(doc.Interfaces) == 0 {
		t.Fatalf("PUT settings: %d %s", r.code, r.body)
	}
	if v, _ := ts.st.Setting(context.Background(), SettingProxyIface); v != "lo" {
		t.Errorf("stored iface %q", v)
	}
	for _, bad := range []string{`{"proxydhcp_iface":"nosuch0"}`, `{"proxydhcp_iface":"lo","proxydhcp_subnet":"10.9.9.0/24"}`,
		`{"proxydhcp_iface":"lo","proxydhcp_subnet":"banana"}`} {
		if r := ts.do(t, "PUT", "/settings", strings.NewReader(bad), h); r.code != 400 {
			t.Errorf("%s: %d %s", bad, r.code, r.body)
		}
	}
	if v, _ := ts.st.Setting(context.Background(), SettingProxyIface); v != "lo" {
		t.Errorf("a refused setting was stored: %q", v)
	}
	ts.do(t, "GET", "/settings", nil, h).json(t, &doc)
	if !doc.Status.Running || doc.Status.Interface != "lo" {
		t.Errorf("after refused changes the responder is not back on lo: %+v", doc.Status)
	}
	r = ts.do(t, "PUT", "/settings", strings.NewReader(`{"proxydhcp_iface":""}`), h)
	r.json(t, &doc)
	if r.code != 200 || doc.Status.Running {
		t.Errorf("turning proxy-DHCP off: %d %s", r.code, r.body)
	}
	if r := ts.do(t, "PUT", "/settings", strings.NewReader(`{"proxydhcp_iface":"lo"}`), nil); r.code != 401 {
		t.Errorf("unauthenticated settings: %d", r.code)
	}
}

// subscribe opens GET /events/machines with query (e.g. "?mac=...") for
// the test's session (openEvents) and fails unless it is a 200.
func (ts *testServer) subscribe(t *testing.T, query string) *bufio.Reader {
	t.Helper()
	res, br := openEvents(t, ts, query)
	if res.StatusCode != 200 {
		t.Fatalf("GET /events/machines%s: %d", query, res.StatusCode)
	}
	return br
}
