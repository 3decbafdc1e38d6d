// Package clienttest starts a real bty-web server on loopback for the
// tests of its clients (internal/client, internal/ctl): the same
// server.New and Serve as bty-web, over SQLite in a temp directory.
package clienttest

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/server"
	"github.com/btyproject/bty/internal/store"
	"github.com/btyproject/bty/internal/store/sqlitestore"
)

// Password is the admin password of every test server.
const Password = "correct horse battery staple"

// Server is a running test server.
type Server struct {
	URL    string
	Config server.Config
	Store  store.Store
}

// Start runs a server until the test ends; mod may adjust its config.
func Start(t testing.TB, mod func(*server.Config)) *Server {
	t.Helper()
	dir := t.TempDir()
	cfg := server.Config{
		StateDir:   filepath.Join(dir, "state"),
		ImageRoot:  filepath.Join(dir, "images"),
		BootDir:    filepath.Join(dir, "boot"),
		Host:       "127.0.0.1",
		MaxUpload:  256 << 20,
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
	log := slog.New(slog.DiscardHandler)
	if testing.Verbose() && os.Getenv("BTY_TEST_SERVER_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	st, err := sqlitestore.Open(ctx, cfg.DBPath(), log)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if _, err := server.EnsureAdminPassword(ctx, st, Password); err != nil {
		cancel()
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	srv := server.New(cfg, st, log, nil)
	// PXE services as bty-web starts them (TFTP off: cfg.TFTPPort is 0),
	// so the settings API behaves as in production.
	if err := srv.StartPXEServices(ctx, prometheus.NewRegistry(), l.Addr().(*net.TCPAddr).Port); err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l, 2*time.Second) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return 10 s after shutdown")
		}
		srv.Close()
		st.Close()
	})
	return &Server{URL: "http://" + l.Addr().String(), Config: cfg, Store: st}
}

// cycleParam finds the flash cycle token on a live env script's kernel
// line.
var cycleParam = regexp.MustCompile(`\bbty\.cycle=([0-9a-f]+)\b`)

// PXEBoot is a machine's PXE contact (GET base/pxe/MAC from loopback,
// as iPXE asks): it returns the script served and the flash cycle token
// on its kernel line ("" when the script opens no cycle).
func PXEBoot(t testing.TB, base string, mac fleet.MAC) (script, cycle string) {
	t.Helper()
	resp, err := http.Get(base + "/pxe/" + mac.String())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /pxe/%s: %d %s %v", mac, resp.StatusCode, b, err)
	}
	if m := cycleParam.FindSubmatch(b); m != nil {
		cycle = string(m[1])
	}
	return string(b), cycle
}
