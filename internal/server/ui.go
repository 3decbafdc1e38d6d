package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/human"
)

// The browser UI (docs/reference.md, "Routes"): server-rendered pages under
// /ui, enhanced by htmx (live machine table over SSE) and a little
// app.js (local times, uploads with progress). Assets are embedded.

//go:embed web/templates/*.html web/static
var webFS embed.FS

// uiTemplates holds one parsed template set per page.
type uiTemplates struct {
	pages map[string]*template.Template
}

// uiPages are the page templates; each is parsed with layout.html.
var uiPages = []string{"login", "dashboard", "machines", "machine", "confirm", "reflash", "images", "boot", "settings", "error", "workflows", "workflow", "schedules"}

// parsedUI parses the embedded templates once per process; every server
// shares them (they are read-only after parsing).
var parsedUI = sync.OnceValue(mustParseUI)

func mustParseUI() *uiTemplates {
	t := &uiTemplates{pages: map[string]*template.Template{}}
	for _, p := range uiPages {
		tpl := template.Must(template.New("layout.html").Funcs(uiFuncs).ParseFS(webFS, "web/templates/layout.html", "web/templates/"+p+".html"))
		t.pages[p] = tpl
	}
	return t
}

var uiFuncs = template.FuncMap{
	// when renders a time for the browser to localise (app.js); the text
	// is UTC until then. Nil or zero: an em dash.
	"when": func(v any) template.HTML {
		var t time.Time
		switch x := v.(type) {
		case time.Time:
			t = x
		case *time.Time:
			if x != nil {
				t = *x
			}
		}
		if t.IsZero() {
			return `<span class="never">—</span>`
		}
		t = t.UTC()
		return template.HTML(fmt.Sprintf(`<time datetime="%s" title="%s">%s</time>`,
			t.Format(time.RFC3339), t.Format(time.RFC3339), t.Format("2006-01-02 15:04:05 UTC")))
	},
	"bytes": func(v any) string {
		switch x := v.(type) {
		case int64:
			return human.Bytes(x)
		case *int64:
			if x == nil {
				return "—"
			}
			return human.Bytes(*x)
		}
		return fmt.Sprint(v)
	},
	"deref": func(p *string) string {
		if p == nil {
			return ""
		}
		return *p
	},
	"macid":    func(mac fleet.MAC) string { return mac.Hex() },
	"pathesc":  url.PathEscape,
	"queryesc": url.QueryEscape,
	"shortsha": shortSHA,
}

// uiPage is what every page template gets.
type uiPage struct {
	Title    string
	Nav      string // which nav entry is current
	LoggedIn bool
	Flash    string
	Data     any
}

// render writes page with status code; a template failure is logged
// and answered 500 (the buffer keeps half a page from going out).
func (s *Server) render(w http.ResponseWriter, r *http.Request, code int, page string, p uiPage) {
	// htmx's partial refreshes (the live table) never consume the
	// one-shot message: it belongs to the page the user navigates to.
	if p.Flash == "" && r.Header.Get("HX-Request") == "" {
		p.Flash = takeFlash(w, r)
	}
	var buf bytes.Buffer
	if err := s.ui.pages[page].Execute(&buf, p); err != nil {
		s.log.Error("rendering page", "page", page, "err", err)
		http.Error(w, "internal error rendering the page; see the server log", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'self'")
	w.WriteHeader(code)
	_, _ = w.Write(buf.Bytes())
}

// uiError renders a plain error page.
func (s *Server) uiError(w http.ResponseWriter, r *http.Request, code int, title, msg string) {
	s.render(w, r, code, "error", uiPage{Title: title, LoggedIn: code != http.StatusUnauthorized, Data: map[string]string{"Message": msg}})
}

const flashCookie = "bty-flash"

// setFlash leaves a one-shot message for the next page rendered.
func (s *Server) setFlash(w http.ResponseWriter, msg string) {
	http.SetCookie(w, &http.Cookie{Name: flashCookie, Value: url.QueryEscape(msg), Path: "/ui", MaxAge: 60,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: s.tls()})
}

func takeFlash(w http.ResponseWriter, r *http.Request) string {
	c, err := r.Cookie(flashCookie)
	if err != nil || c.Value == "" {
		return ""
	}
	http.SetCookie(w, &http.Cookie{Name: flashCookie, Value: "", Path: "/ui", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	msg, _ := url.QueryUnescape(c.Value)
	return msg
}

// redirect answers a form post or page visit with 303 See Other.
func redirect(w http.ResponseWriter, r *http.Request, to string) {
	http.Redirect(w, r, to, http.StatusSeeOther)
}

// uiAuth wraps a page handler: without a valid session a GET goes to the
// login page (and comes back after), a post is refused with 401; a post
// whose Origin is not this server is refused with 403.
func (s *Server) uiAuth(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tok, kind := requestToken(r)
		ok := false
		if kind != authNone {
			var err error
			ok, err = s.store.SessionValid(r.Context(), hashToken(tok), time.Now())
			if err != nil {
				s.uiInternal(w, r, fmt.Errorf("checking a session: %w", err))
				return
			}
		}
		if !ok {
			if isSafeMethod(r.Method) {
				redirect(w, r, "/ui/login?next="+url.QueryEscape(r.URL.RequestURI()))
				return
			}
			s.uiError(w, r, http.StatusUnauthorized, "Log in again", "Your session has ended or was revoked, so nothing was changed. Log in and try again.")
			return
		}
		if !isSafeMethod(r.Method) && !sameOrigin(r) {
			s.log.Warn("cross-origin form refused", "path", r.URL.Path, "origin", r.Header.Get("Origin"), "client", clientAddr(r))
			s.uiError(w, r, http.StatusForbidden, "Refused", "This form was not sent from this server's own pages (its Origin does not match), so nothing was changed.")
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), tokenHashKey, hashToken(tok))))
	}
}

func (s *Server) uiRoutes() {
	m := s.mux
	m.Handle("GET /ui/static/", staticHandler())
	m.HandleFunc("GET /ui", func(w http.ResponseWriter, r *http.Request) { redirect(w, r, "/ui/dashboard") })
	m.HandleFunc("GET /ui/{$}", func(w http.ResponseWriter, r *http.Request) { redirect(w, r, "/ui/dashboard") })
	m.HandleFunc("GET /ui/login", s.uiLoginPage)
	m.HandleFunc("POST /ui/login", s.uiLogin)
	m.HandleFunc("POST /ui/logout", s.uiLogout)
	m.HandleFunc("GET /ui/dashboard", s.uiAuth(s.uiDashboard))
	m.HandleFunc("GET /ui/machines", s.uiAuth(s.uiMachines))
	m.HandleFunc("POST /ui/machines/bulk", s.uiAuth(s.uiMachinesBulk))
	m.HandleFunc("GET /ui/machines/{mac}", s.uiAuth(s.uiMachine))
	m.HandleFunc("GET /ui/machines/{mac}/row", s.uiAuth(s.uiMachineRow))
	m.HandleFunc("POST /ui/machines/{mac}", s.uiAuth(s.uiMachineSave))
	m.HandleFunc("GET /ui/machines/{mac}/delete", s.uiAuth(s.uiMachineDeleteConfirm))
	m.HandleFunc("GET /ui/machines/{mac}/power", s.uiAuth(s.uiMachinePowerConfirm))
	m.HandleFunc("POST /ui/machines/{mac}/delete", s.uiAuth(s.uiMachineDelete))
	m.HandleFunc("POST /ui/machines/{mac}/power", s.uiAuth(s.uiMachinePower))
	m.HandleFunc("GET /ui/machines/{mac}/flash", s.uiAuth(s.uiMachineFlash))
	m.HandleFunc("GET /ui/machines/{mac}/reflash", s.uiAuth(s.uiReflashConfirm))
	m.HandleFunc("POST /ui/machines/{mac}/reflash", s.uiAuth(s.uiReflash))
	m.HandleFunc("GET /ui/machines/{mac}/flashes/{id}/cancel", s.uiAuth(s.uiFlashCancelConfirm))
	m.HandleFunc("POST /ui/machines/{mac}/flashes/{id}/cancel", s.uiAuth(s.uiFlashCancel))
	m.HandleFunc("GET /ui/images", s.uiAuth(s.uiImages))
	m.HandleFunc("GET /ui/images/{name}/delete", s.uiAuth(s.uiImageDeleteConfirm))
	m.HandleFunc("POST /ui/images/{name}/delete", s.uiAuth(s.uiImageDelete))
	m.HandleFunc("GET /ui/machines/{mac}/runs", s.uiAuth(s.uiMachineRuns))
	m.HandleFunc("POST /ui/machines/{mac}/reflash-known-good", s.uiAuth(s.uiReflashKnownGood))
	m.HandleFunc("POST /ui/machines/{mac}/clear", s.uiAuth(s.uiClear))
	m.HandleFunc("POST /ui/runs/{id}/cancel", s.uiAuth(s.uiRunCancel))
	m.HandleFunc("GET /ui/workflows", s.uiAuth(s.uiWorkflows))
	m.HandleFunc("POST /ui/workflows", s.uiAuth(s.uiWorkflowUpload))
	m.HandleFunc("GET /ui/workflows/{name}", s.uiAuth(s.uiWorkflow))
	m.HandleFunc("POST /ui/workflows/{name}/delete", s.uiAuth(s.uiWorkflowDelete))
	m.HandleFunc("GET /ui/boot", s.uiAuth(s.uiBoot))
	m.HandleFunc("GET /ui/settings", s.uiAuth(s.uiSettings))
	m.HandleFunc("POST /ui/settings/revoke-all", s.uiAuth(s.uiRevokeAll))
	m.HandleFunc("POST /ui/settings/proxydhcp", s.uiAuth(s.uiProxyDHCP))
	m.HandleFunc("POST /ui/settings/max-runs", s.uiAuth(s.uiMaxRuns))
}

// asset is one embedded static file with the ETag of its content.
type asset struct {
	body []byte
	etag string
}

// staticAssets reads and hashes the embedded assets once per process.
var staticAssets = sync.OnceValue(func() map[string]asset {
	sub, err := fs.Sub(webFS, "web/static")
	if err != nil {
		panic(err) // the embed pattern guarantees the directory
	}
	assets := map[string]asset{}
	_ = fs.WalkDir(sub, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(sub, p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		assets[p] = asset{body: b, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		return nil
	})
	return assets
})

// staticHandler serves the embedded assets with an ETag of their
// content, so browsers revalidate cheaply and never run stale code.
func staticHandler() http.Handler {
	assets := staticAssets()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := strings.TrimPrefix(path.Clean(r.URL.Path), "/ui/static/")
		a, ok := assets[name]
		if !ok {
			writeError(w, http.StatusNotFound, "no asset "+name)
			return
		}
		w.Header().Set("ETag", a.etag)
		w.Header().Set("Cache-Control", "no-cache")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(a.body))
	})
}

// safeNext is where to go after login: a local /ui path, else the
// dashboard (no open redirect).
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/ui/") || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") {
		return "/ui/dashboard"
	}
	u, err := url.Parse(next)
	if err != nil || u.Host != "" || u.Scheme != "" || strings.HasPrefix(u.Path, "/ui/login") {
		return "/ui/dashboard"
	}
	return next
}

func (s *Server) uiLoginPage(w http.ResponseWriter, r *http.Request) {
	if tok, kind := requestToken(r); kind != authNone {
		if ok, _ := s.store.SessionValid(r.Context(), hashToken(tok), time.Now()); ok {
			redirect(w, r, safeNext(r.URL.Query().Get("next")))
			return
		}
	}
	s.render(w, r, http.StatusOK, "login", uiPage{Title: "Log in", Data: map[string]string{"Next": safeNext(r.URL.Query().Get("next"))}})
}

func (s *Server) uiLogin(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		s.uiError(w, r, http.StatusBadRequest, "Bad request", "The login form could not be read: "+err.Error())
		return
	}
	next := safeNext(r.PostForm.Get("next"))
	data := map[string]string{"Next": next}
	// A login form posted from another site would plant that site's
	// session in this browser: refuse it when the browser says so.
	if o := r.Header.Get("Origin"); o != "" && !sameOrigin(r) {
		data["Error"] = "This login form was not sent from this server's own page."
		s.render(w, r, http.StatusForbidden, "login", uiPage{Title: "Log in", Data: data})
		return
	}
	pw := r.PostForm.Get("password")
	if pw == "" {
		data["Error"] = "Enter the admin password."
		s.render(w, r, http.StatusBadRequest, "login", uiPage{Title: "Log in", Data: data})
		return
	}
	resp, code, err := s.login(r.Context(), clientAddr(r), pw)
	if err != nil {
		if code == http.StatusInternalServerError {
			s.log.Error("login", "err", err)
			data["Error"] = "The server could not log you in; see its log."
		} else {
			data["Error"] = err.Error()
			if code == http.StatusUnauthorized {
				data["Error"] = "Wrong password. (Forgotten it? Run bty-web passwd on the server.)"
			}
			setRetryAfter(w, err)
		}
		s.render(w, r, code, "login", uiPage{Title: "Log in", Data: data})
		return
	}
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: resp.Token, Path: "/", Expires: resp.ExpiresAt,
		MaxAge: int(time.Until(resp.ExpiresAt).Seconds()), HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: s.tls()})
	redirect(w, r, next)
}

func (s *Server) uiLogout(w http.ResponseWriter, r *http.Request) {
	if tok, kind := requestToken(r); kind == authCookie {
		if !sameOrigin(r) {
			s.uiError(w, r, http.StatusForbidden, "Refused", "This form was not sent from this server's own pages, so you are still logged in.")
			return
		}
		if err := s.store.RevokeSession(r.Context(), hashToken(tok)); err != nil {
			s.log.Error("logout", "err", err)
		}
	}
	s.clearCookie(w)
	s.setFlash(w, "You are logged out.")
	redirect(w, r, "/ui/login")
}
