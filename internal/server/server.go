// Package server is bty-web: the fleet's HTTP API (machines, images,
// boot artifacts, sessions), the iPXE scripts every PXE boot asks for,
// live machine events over SSE, Prometheus metrics, and the TFTP and
// proxy-DHCP services that get bare machines to iPXE (docs/reference.md,
// "bty-web").
package server

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/btyproject/bty/internal/api"
	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/store"
	"github.com/btyproject/bty/internal/version"
)

// Server is one bty-web instance over a store.
type Server struct {
	cfg        Config
	store      store.Store
	log        *slog.Logger
	mux        *routeMux
	hub        *hub
	metrics    *metrics
	catalog    *catalog
	loginLimit *limiter
	// pwRate bounds the password checks the whole server starts.
	pwRate *limiter
	// warnLimit rate-limits repeated warnings (PXE conflicts, refused
	// live env calls, busy logins): one per key per minute.
	warnLimit *limiter
	// progressLimit bounds the progress reports one address makes for
	// one machine that reach the store.
	progressLimit *limiter
	// eventWriteTimeout bounds every write to an event stream: a client
	// that stops reading is dropped after it.
	eventWriteTimeout time.Duration
	// snap is the last encoded event-stream snapshot, shared.
	snap      snapshotCache
	discovery *discoveryGate
	pxe       pxeServices
	recent    *recentLog
	ui        *uiTemplates

	// pwChecks is the semaphore of password checks running at once
	// (Config.MaxLoginChecks); checkPassword is CheckPassword, which
	// tests replace.
	pwChecks      chan struct{}
	checkPassword func(encoded, pw string) bool

	// bmcs serializes the actions on each BMC.
	bmcs *bmcGates
	// secrets seals the BMC passwords the store keeps.
	secrets *secretBox
	// sshKey is bty-web's SSH identity; workflows the workflow files;
	// runs the cijoe-online runner.
	sshKey    *sshIdentity
	workflows *workflowStore
	runs      *runner
	// wake tells the automation's runners a flash or run ended
	// (automation.go); recov runs the health checks and recoveries.
	wake  wakeups
	recov *recoverer
	// sched serializes the schedule runner's ticks (schedulerun.go).
	sched scheduleRunner
	// rollouts advances the rollouts (rolloutrun.go).
	rollouts *rolloutRunner

	// conns is Serve's listener, which counts the open connections.
	conns atomic.Pointer[connLimitListener]
}

// New builds a server; reg receives its metrics (nil: a new registry).
func New(cfg Config, st store.Store, log *slog.Logger, reg *prometheus.Registry) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	recent := newRecentLog(50)
	s := &Server{
		cfg:               cfg,
		store:             st,
		log:               slog.New(&teeHandler{inner: log.Handler(), ring: recent}),
		recent:            recent,
		ui:                parsedUI(),
		mux:               &routeMux{ServeMux: http.NewServeMux()},
		loginLimit:        newLimiter(10, 6*time.Second),
		pwRate:            newLimiter(loginChecksBurst, time.Second/loginChecksPerSecond),
		eventWriteTimeout: defaultEventWriteTimeout,
		warnLimit:         newLimiter(1, time.Minute),
		progressLimit:     newLimiter(3, 5*time.Second),
	}
	if s.cfg.MaxLoginChecks < 1 {
		s.cfg.MaxLoginChecks = defaultLoginChecks()
	}
	s.pwChecks = make(chan struct{}, s.cfg.MaxLoginChecks)
	if s.cfg.BodyTimeout <= 0 {
		s.cfg.BodyTimeout = defaultBodyTimeout
	}
	if s.cfg.UploadIdleTimeout <= 0 {
		s.cfg.UploadIdleTimeout = defaultUploadIdleTimeout
	}
	if s.cfg.CycleTTL <= 0 {
		s.cfg.CycleTTL = fleet.DefaultCycleTTL
	}
	if s.cfg.FlashDeadline <= 0 {
		s.cfg.FlashDeadline = fleet.DefaultFlashDeadline
	}
	s.bmcs = newBMCGates(bmcGap)
	s.secrets = newSecretBox(cfg.StateDir)
	s.sshKey = newSSHIdentity(cfg.StateDir)
	s.workflows = newWorkflowStore(cfg.StateDir)
	s.runs = newRunner(s)
	s.recov = newRecoverer(s)
	s.rollouts = newRolloutRunner(s)
	if s.cfg.MaxConns < 1 {
		s.cfg.MaxConns = defaultMaxConns
	}
	if s.cfg.MaxConnsPerAddr < 1 {
		s.cfg.MaxConnsPerAddr = defaultMaxConnsPerAddr
	}
	s.discovery = newDiscoveryGate(cmp.Or(max(0, s.cfg.DiscoveryBurst), defaultDiscoveryBurst),
		cmp.Or(max(0, s.cfg.DiscoveryEvery), defaultDiscoveryEvery), cmp.Or(max(0, s.cfg.MaxUnclaimed), defaultMaxUnclaimed))
	s.checkPassword = CheckPassword
	s.metrics = newMetrics(reg)
	s.hub = newHub(s.metrics)
	s.catalog = newCatalog(cfg.ImageRoot, st, s.log)
	if !cfg.NoChunkStores && cfg.StateDir != "" {
		if err := s.catalog.startChunks(filepath.Join(cfg.StateDir, "chunks"), s.metrics); err != nil {
			s.log.Warn("chunk stores off", "err", err)
		}
	}
	s.routes(reg)
	return s
}

// Handler is the HTTP handler with logging and metrics.
//
// Bodies are read under a deadline (bodyDeadline): BodyTimeout for the
// whole body, or on upload routes UploadIdleTimeout without progress.
func (s *Server) Handler() http.Handler { return s.bodyDeadline(s.instrument(s.mux)) }

// routeMux is an http.ServeMux that remembers the patterns registered
// on it, in order, for Routes.
type routeMux struct {
	*http.ServeMux
	patterns []string
}

func (m *routeMux) Handle(pattern string, h http.Handler) {
	m.patterns = append(m.patterns, pattern)
	m.ServeMux.Handle(pattern, h)
}

func (m *routeMux) HandleFunc(pattern string, h func(http.ResponseWriter, *http.Request)) {
	m.patterns = append(m.patterns, pattern)
	m.ServeMux.HandleFunc(pattern, h)
}

// Routes lists the patterns the server answers ("GET /healthz", the /ui
// pages, "/" for the rest), in the order they were registered. They are
// listed in docs/reference.md ("bty-web", "Routes"); docs/reference_test.go
// checks that the two agree.
func (s *Server) Routes() []string { return append([]string(nil), s.mux.patterns...) }

func (s *Server) routes(reg *prometheus.Registry) {
	m := s.mux
	// Open routes: PXE clients carry no credentials.
	m.HandleFunc("GET /healthz", s.handleHealthz)
	m.HandleFunc("GET /version", s.handleVersion)
	m.Handle("GET /metrics", metricsHandler(reg))
	m.HandleFunc("GET /pxe/{mac}", s.handlePXE)
	m.HandleFunc("POST /pxe/{mac}/done", s.handlePXEDone)
	m.HandleFunc("POST /machines/{mac}/power", s.requireAuth(s.handlePower))
	m.HandleFunc("POST /pxe/{mac}/failed", s.handlePXEFailed)
	m.HandleFunc("POST /pxe/{mac}/progress", s.handlePXEProgress)
	m.HandleFunc("POST /pxe/{mac}/ready", s.handlePXEReady)
	m.HandleFunc("POST /machines/{mac}/reflash", s.requireAuth(s.handleReflash))
	m.HandleFunc("GET /machines/{mac}/flashes", s.requireAuth(s.handleFlashes))
	m.HandleFunc("GET /machines/{mac}/flashes/{id}", s.requireAuth(s.handleFlashGet))
	m.HandleFunc("POST /machines/{mac}/flashes/{id}/cancel", s.requireAuth(s.handleFlashCancel))
	m.HandleFunc("GET /workflows", s.requireAuth(s.handleWorkflows))
	m.HandleFunc("GET /workflows/{name}", s.requireAuth(s.handleWorkflowGet))
	m.HandleFunc("PUT /workflows/{name}", s.requireAuth(s.handleWorkflowPut))
	m.HandleFunc("DELETE /workflows/{name}", s.requireAuth(s.handleWorkflowDelete))
	m.HandleFunc("GET /machines/{mac}/runs", s.requireAuth(s.handleRuns))
	m.HandleFunc("GET /runs/{id}", s.requireAuth(s.handleRunGet))
	m.HandleFunc("GET /runs/{id}/log", s.requireAuth(s.handleRunLog))
	m.HandleFunc("GET /runs/{id}/report", s.requireAuth(s.handleRunReport))
	m.HandleFunc("GET /runs/{id}/output/{path...}", s.requireAuth(s.handleRunOutput))
	m.HandleFunc("POST /runs/{id}/cancel", s.requireAuth(s.handleRunCancel))
	m.HandleFunc("POST /pxe/{mac}/runs", s.handlePXERunUpload)
	m.HandleFunc("POST /machines/{mac}/report-failure", s.requireAuth(s.handleReportFailure))
	m.HandleFunc("POST /machines/{mac}/clear", s.requireAuth(s.handleClear))
	m.HandleFunc("GET /machines/{mac}/actions", s.requireAuth(s.handleActions))
	m.HandleFunc("POST /machines/bulk", s.requireAuth(s.handleBulk))
	m.HandleFunc("GET /pxe/{mac}/user-data", s.handlePXESeed("user-data"))
	m.HandleFunc("GET /pxe/{mac}/meta-data", s.handlePXESeed("meta-data"))
	m.HandleFunc("GET /pxe-bootstrap.ipxe", s.handleBootstrap)
	m.HandleFunc("POST /pxe/{mac}/inventory", s.handlePXEInventory)
	m.HandleFunc("GET /images", s.handleImages)
	m.HandleFunc("GET /images/{name}", s.handleImageGet)
	m.HandleFunc("GET /images/{name}/chunks", s.handleImageChunks)
	m.HandleFunc("GET /boot", s.handleBootList)
	m.HandleFunc("GET /boot/{name}", s.handleBootGet)
	m.HandleFunc("POST /auth/login", s.handleLogin)

	// Authenticated routes.
	m.HandleFunc("POST /auth/logout", s.requireAuth(s.handleLogout))
	m.HandleFunc("POST /auth/revoke-all", s.requireAuth(s.handleRevokeAll))
	m.HandleFunc("GET /machines", s.requireAuth(s.handleMachines))
	m.HandleFunc("GET /machines/{mac}", s.requireAuth(s.handleMachineGet))
	m.HandleFunc("PUT /machines/{mac}", s.requireAuth(s.handleMachinePut))
	m.HandleFunc("DELETE /machines/{mac}", s.requireAuth(s.handleMachineDelete))
	m.HandleFunc("PUT /images/{name}", s.requireAuth(s.progressDeadline(s.handleImagePut)))
	m.HandleFunc("DELETE /images/{name}", s.requireAuth(s.handleImageDelete))
	m.HandleFunc("PUT /boot/{name}", s.requireAuth(s.progressDeadline(s.handleBootPut)))
	m.HandleFunc("GET /events/machines", s.requireAuth(s.handleEvents))
	m.HandleFunc("GET /settings", s.requireAuth(s.handleSettingsGet))
	m.HandleFunc("PUT /settings", s.requireAuth(s.handleSettingsPut))
	m.HandleFunc("GET /state/export", s.requireAuth(s.handleExport))
	m.HandleFunc("POST /state/import", s.requireAuth(s.progressDeadline(s.handleImport)))
	s.scheduleRoutes()

	s.uiRoutes()
	s.rolloutRoutes()

	m.HandleFunc("/", s.handleNoRoute)
}

// handleNoRoute answers what no route matched with a JSON error: 405
// with Allow when the path exists for other methods, else 404.
func (s *Server) handleNoRoute(w http.ResponseWriter, r *http.Request) {
	var allowed []string
	for _, method := range []string{"GET", "HEAD", "POST", "PUT", "DELETE"} {
		probe := r.Clone(r.Context())
		probe.Method = method
		if _, pattern := s.mux.Handler(probe); pattern != "/" && pattern != "" {
			allowed = append(allowed, method)
		}
	}
	if len(allowed) > 0 {
		w.Header().Set("Allow", strings.Join(allowed, ", "))
		writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("%s is not allowed on %s; allowed: %s", r.Method, r.URL.Path, strings.Join(allowed, ", ")))
		return
	}
	writeError(w, http.StatusNotFound, fmt.Sprintf("no route %s %s", r.Method, r.URL.Path))
}

// Serve serves on l until ctx ends, then shuts down gracefully: new
// connections are refused, requests in flight get up to grace to
// finish, SSE streams are closed. Connections beyond MaxConns, or
// beyond MaxConnsPerAddr from one client address, are closed as soon
// as they are accepted.
func (s *Server) Serve(ctx context.Context, l net.Listener, grace time.Duration) error {
	cl := newConnLimitListener(l, s.cfg.MaxConns, s.cfg.MaxConnsPerAddr, s.log)
	s.conns.Store(cl)
	l = cl
	hs := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	hs.RegisterOnShutdown(s.hub.close)
	go s.watchFlashes(ctx, flashWatchEvery)
	s.runs.start(ctx)
	if !s.cfg.manualTicks {
		go s.wake.loop(ctx, recoveryEvery, s.recov.tick)
	}
	s.startSchedules(ctx)
	defer s.sched.wait()
	s.rollouts.start(ctx)
	defer s.runs.wait(grace + killGrace)
	errc := make(chan error, 1)
	go func() {
		var err error
		if s.tls() {
			err = hs.ServeTLS(l, s.cfg.TLSCert, s.cfg.TLSKey)
		} else {
			err = hs.Serve(l)
		}
		errc <- err
	}()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	s.log.Info("shutting down", "grace", grace)
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	err := hs.Shutdown(sctx)
	if errors.Is(err, context.DeadlineExceeded) {
		hs.Close()
		err = nil
	}
	if serr := <-errc; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		return serr
	}
	return err
}

func (s *Server) handleHealthz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	if err := s.store.Ping(ctx); err != nil {
		// An open route: the error (the database's path among it) goes
		// to the log under an id, the answer carries only the id.
		id := s.logInternal("health check: database", r, err)
		writeJSON(w, http.StatusServiceUnavailable, api.Health{Status: "unhealthy", Error: "database unavailable (id " + id + "): see the server log"})
		return
	}
	writeJSON(w, http.StatusOK, api.Health{Status: "ok"})
}

func (s *Server) handleVersion(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, api.Version{Version: version.Version, Program: "bty-web"})
}

// writeJSON writes v as JSON with status code.
func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// writeError writes {"error": msg}.
func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, api.Error{Error: msg})
}

// internalError logs err with a short random id and answers 500 with
// only that id: the error's text (a database path, an SQLite message) is
// for the server's log, not for a client of an open route.
func (s *Server) internalError(w http.ResponseWriter, r *http.Request, err error) {
	id := s.logInternal("request failed", r, err)
	writeError(w, http.StatusInternalServerError, "internal error (id "+id+"): see the server log")
}

// logInternal logs err at error level with a new error_id and returns
// the id, which the answer shows so the operator can find the line.
func (s *Server) logInternal(msg string, r *http.Request, err error) string {
	id := errorID()
	s.log.Error(msg, "error_id", id, "method", r.Method, "path", r.URL.Path, "err", err)
	return id
}

// errorID is 8 random hex digits.
func errorID() string {
	var b [4]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read does not fail (Go 1.24+)
	return hex.EncodeToString(b[:])
}

// answer writes the answer of a handler's work: v with ok, or err with
// code (a 500 as internalError: logged with an id, the client sees only
// the id).
func (s *Server) answer(w http.ResponseWriter, r *http.Request, ok int, v any, code int, err error) {
	switch {
	case err == nil:
		writeJSON(w, ok, v)
	case code == http.StatusInternalServerError:
		s.internalError(w, r, err)
	default:
		writeError(w, code, err.Error())
	}
}

// decodeJSON reads a JSON body of at most limit bytes into v, refusing
// unknown fields; on failure it answers 400/413 and returns false.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any, limit int64) bool {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		writeError(w, http.StatusUnsupportedMediaType, "send the body as Content-Type: application/json")
		return false
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		switch {
		case errors.As(err, &mbe):
			writeError(w, http.StatusRequestEntityTooLarge, "the body is larger than "+strconv.FormatInt(limit, 10)+" bytes")
		case errors.Is(err, io.EOF):
			writeError(w, http.StatusBadRequest, "the body is empty: send a JSON object")
		default:
			writeError(w, http.StatusBadRequest, "invalid JSON body: "+err.Error())
		}
		return false
	}
	if dec.More() {
		writeError(w, http.StatusBadRequest, "invalid JSON body: more than one JSON value")
		return false
	}
	return true
}

// statusWriter records the status and byte count of a response; it
// passes ReadFrom through so files still go out with sendfile.
type statusWriter struct {
	http.ResponseWriter
	code  int
	bytes int64
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

func (w *statusWriter) ReadFrom(r io.Reader) (int64, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	var n int64
	var err error
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(r)
	} else {
		n, err = io.Copy(w.ResponseWriter, r)
	}
	w.bytes += n
	return n, err
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// instrument logs each request (never its credentials) and counts it.
func (s *Server) instrument(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		h.ServeHTTP(sw, r)
		if sw.code == 0 {
			sw.code = http.StatusOK
		}
		route := r.Pattern
		if route == "" || route == "/" {
			route = "unmatched"
		}
		s.metrics.requests.WithLabelValues(route, strconv.Itoa(sw.code)).Inc()
		level := slog.LevelDebug
		if sw.code >= 500 {
			level = slog.LevelError
		} else if !strings.HasPrefix(route, "GET /pxe/") && route != "GET /metrics" && route != "GET /healthz" {
			level = slog.LevelInfo
		}
		s.log.Log(r.Context(), level, "request", "method", r.Method, "path", r.URL.Path, "status", sw.code,
			"bytes", sw.bytes, "ms", time.Since(start).Milliseconds(), "client", clientAddr(r))
	})
}
