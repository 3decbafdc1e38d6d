package power

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const (
	rfUser     = "bty-admin"
	rfPassword = "Redfish-pa55word-9Z"
	rackSystem = "/redfish/v1/Systems/437XR1138R2"
)

// rfRequest is one request the test BMC received.
type rfRequest struct {
	Method, Path, Body string
	Query, IfMatch     string
	Auth               bool // Basic credentials present, whatever they are
	URL                string
}

// testBMC serves the DMTF public-rackmount1 mockup documents and applies
// Reset actions and Boot PATCHes to its in-memory copy, as a BMC would.
type testBMC struct {
	t       *testing.T
	mu      sync.Mutex
	docs    map[string]map[string]any // path -> document
	reqs    []rfRequest
	fail5xx int                                           // answer this many requests with 503 first
	hang    chan struct{}                                 // when set, every request waits for it
	etag    bool                                          // send an ETag with systems, demand If-Match on PATCH
	hook    func(http.ResponseWriter, *http.Request) bool // handles a request when it returns true
	resets  []string                                      // ResetTypes applied, in order
}

func newTestBMC(t *testing.T) *testBMC {
	t.Helper()
	b := &testBMC{t: t, docs: map[string]map[string]any{}}
	root := filepath.Join("testdata", "redfish", "public-rackmount1")
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != "index.json" {
			return err
		}
		rel, _ := filepath.Rel(root, filepath.Dir(p))
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		var doc map[string]any
		if err := json.Unmarshal(data, &doc); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		b.docs[path.Clean("/redfish/v1/"+filepath.ToSlash(rel))] = doc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(b.docs) != 3 {
		t.Fatalf("loaded %d mockup documents, want 3", len(b.docs))
	}
	return b
}

// serve starts an HTTP server for b and returns its URL.
func (b *testBMC) serve() string {
	srv := httptest.NewServer(b)
	b.t.Cleanup(srv.Close)
	return srv.URL
}

// addSystem adds a copy of the 437XR1138R2 system under id, changed by
// edit, to the Systems collection.
func (b *testBMC) addSystem(id string, edit func(doc map[string]any)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var doc map[string]any
	data, _ := json.Marshal(b.docs[rackSystem])
	_ = json.Unmarshal(data, &doc)
	p := "/redfish/v1/Systems/" + id
	doc["Id"], doc["@odata.id"] = id, p
	reset := doc["Actions"].(map[string]any)["#ComputerSystem.Reset"].(map[string]any)
	reset["target"] = p + "/Actions/ComputerSystem.Reset"
	edit(doc)
	b.docs[p] = doc
	coll := b.docs["/redfish/v1/Systems"]
	coll["Members"] = append(coll["Members"].([]any), map[string]any{"@odata.id": p})
	coll["Members@odata.count"] = len(coll["Members"].([]any))
}

func (b *testBMC) requests() []rfRequest {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.reqs)
}

// field reads a string from a document, by a path of keys.
func (b *testBMC) field(doc string, keys ...string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var v any = b.docs[doc]
	for _, k := range keys {
		m, _ := v.(map[string]any)
		v = m[k]
	}
	s, _ := v.(string)
	return s
}

func (b *testBMC) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	user, pass, ok := r.BasicAuth()
	b.mu.Lock()
	b.reqs = append(b.reqs, rfRequest{Method: r.Method, Path: r.URL.Path, Body: string(body), Query: r.URL.RawQuery,
		IfMatch: r.Header.Get("If-Match"), Auth: ok, URL: r.URL.String()})
	hang, hook := b.hang, b.hook
	fail := b.fail5xx > 0
	if fail {
		b.fail5xx--
	}
	b.mu.Unlock()
	if hang != nil {
		select {
		case <-hang:
		case <-r.Context().Done():
		}
		return
	}
	if fail {
		rfError(w, http.StatusServiceUnavailable, "Base.1.8.ServiceTemporarilyUnavailable", "The service is temporarily unavailable.")
		return
	}
	if !ok || user != rfUser || pass != rfPassword {
		rfError(w, http.StatusUnauthorized, "Base.1.8.NoValidSession", "There is no valid session established with the implementation.")
		return
	}
	if hook != nil && hook(w, r) {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	p := strings.TrimSuffix(r.URL.Path, "/")
	switch r.Method {
	case http.MethodGet:
		doc, ok := b.docs[p]
		if !ok {
			rfError(w, http.StatusNotFound, "Base.1.8.ResourceNotFound", "not found")
			return
		}
		if b.etag && strings.HasPrefix(p, "/redfish/v1/Systems/") {
			w.Header().Set("ETag", b.etagOf(doc))
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(doc)
	case http.MethodPost:
		for _, doc := range b.docs {
			actions, _ := doc["Actions"].(map[string]any)
			reset, _ := actions["#ComputerSystem.Reset"].(map[string]any)
			if reset == nil || reset["target"] != p {
				continue
			}
			var req struct{ ResetType string }
			if json.Unmarshal(body, &req) != nil || !slices.Contains(reset["ResetType@Redfish.AllowableValues"].([]any), any(req.ResetType)) {
				rfError(w, http.StatusBadRequest, "Base.1.8.ActionParameterValueNotInList", "bad ResetType")
				return
			}
			switch req.ResetType {
			case "On", "ForceOn":
				doc["PowerState"] = "On"
			case "ForceOff", "GracefulShutdown":
				doc["PowerState"] = "Off"
			case "ForceRestart", "GracefulRestart", "PowerCycle":
				if doc["PowerState"] != "On" { // a restart of an off machine does nothing
					rfError(w, http.StatusConflict, "Base.1.8.ActionNotSupported", "the system is off")
					return
				}
			}
			b.resets = append(b.resets, req.ResetType)
			w.WriteHeader(http.StatusNoContent)
			return
		}
		rfError(w, http.StatusNotFound, "Base.1.8.ResourceNotFound", "no such action")
	case http.MethodPatch:
		doc, ok := b.docs[p]
		if !ok {
			rfError(w, http.StatusNotFound, "Base.1.8.ResourceNotFound", "not found")
			return
		}
		if b.etag && r.Header.Get("If-Match") != b.etagOf(doc) {
			rfError(w, http.StatusPreconditionFailed, "Base.1.8.PreconditionFailed", "If-Match missing or stale")
			return
		}
		var req struct{ Boot map[string]any }
		if json.Unmarshal(body, &req) != nil || req.Boot == nil {
			rfError(w, http.StatusBadRequest, "Base.1.8.MalformedJSON", "bad body")
			return
		}
		boot := doc["Boot"].(map[string]any)
		for k, v := range req.Boot {
			if k == "BootSourceOverrideTarget" && !slices.Contains(boot["BootSourceOverrideTarget@Redfish.AllowableValues"].([]any), v) {
				rfError(w, http.StatusBadRequest, "Base.1.8.PropertyValueNotInList", "bad target")
				return
			}
			boot[k] = v
		}
		w.WriteHeader(http.StatusNoContent)
	default:
		rfError(w, http.StatusMethodNotAllowed, "Base.1.8.OperationNotAllowed", "no")
	}
}

func (b *testBMC) etagOf(doc map[string]any) string {
	data, _ := json.Marshal(doc)
	return fmt.Sprintf(`W/"%d"`, len(data)+int(data[len(data)/2]))
}

func rfError(w http.ResponseWriter, code int, id, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	fmt.Fprintf(w, `{"error":{"code":%q,"message":%q}}`, id, msg)
}

func rfConfig(url string) Config {
	return Config{Driver: DriverRedfish, Address: url, Username: rfUser, Password: rfPassword}
}

func newRF(t *testing.T, c Config, opts ...Option) Driver {
	t.Helper()
	d, err := New(c, append([]Option{WithRetries(2, 10*time.Millisecond)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// checkAuth fails when a request went without credentials or with the
// password in its URL.
func checkAuth(t *testing.T, reqs []rfRequest) {
	t.Helper()
	for _, r := range reqs {
		if !r.Auth {
			t.Errorf("%s %s sent without credentials", r.Method, r.Path)
		}
		if strings.Contains(r.URL, rfPassword) || strings.Contains(r.URL, rfUser) {
			t.Errorf("%s %s has credentials in its URL %s", r.Method, r.Path, r.URL)
		}
	}
}

type call struct{ Method, Path, Body string }

func calls(reqs []rfRequest) []call {
	out := make([]call, len(reqs))
	for i, r := range reqs {
		out[i] = call{r.Method, r.Path, r.Body}
	}
	return out
}

var discover = []call{
	{"GET", "/redfish/v1", ""},
	{"GET", "/redfish/v1/Systems", ""},
	{"GET", rackSystem, ""},
}

func TestRedfishPower(t *testing.T) {
	b := newTestBMC(t)
	d := newRF(t, rfConfig(b.serve()))
	ctx := context.Background()
	reset := func(typ string) call {
		return call{"POST", rackSystem + "/Actions/ComputerSystem.Reset", `{"ResetType":"` + typ + `"}`}
	}
	after := call{"GET", rackSystem, ""}
	// The mockup's system is On and offers On, ForceOff,
	// GracefulShutdown, ForceRestart and more, but not PowerCycle.
	steps := []struct {
		name  string
		a     Action
		want  State
		calls []call
		power string // the BMC's PowerState afterwards
	}{
		{"status", Status, StateOn, discover, "On"},
		{"on when on sends no reset", On, StateOn, discover, "On"},
		{"off is ForceOff", Off, StateOff, append(slices.Clone(discover), reset("ForceOff"), after), "Off"},
		{"off when off sends no reset", Off, StateOff, discover, "Off"},
		{"cycle when off powers on", Cycle, StateOn, append(slices.Clone(discover), reset("On"), after), "On"},
		{"cycle is ForceRestart without PowerCycle", Cycle, StateOn, append(slices.Clone(discover), reset("ForceRestart"), after), "On"},
		{"off then on", Off, StateOff, append(slices.Clone(discover), reset("ForceOff"), after), "Off"},
		{"on is On", On, StateOn, append(slices.Clone(discover), reset("On"), after), "On"},
	}
	for _, s := range steps {
		n := len(b.requests())
		st, err := d.Power(ctx, s.a)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if st != s.want {
			t.Errorf("%s: state %s, want %s", s.name, st, s.want)
		}
		reqs := b.requests()[n:]
		if diff := cmp.Diff(s.calls, calls(reqs)); diff != "" {
			t.Errorf("%s: requests (-want +got):\n%s", s.name, diff)
		}
		checkAuth(t, reqs)
		if got := b.field(rackSystem, "PowerState"); got != s.power {
			t.Errorf("%s: the BMC's PowerState is %s, want %s", s.name, got, s.power)
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if diff := cmp.Diff([]string{"ForceOff", "On", "ForceRestart", "ForceOff", "On"}, b.resets); diff != "" {
		t.Errorf("resets applied (-want +got):\n%s", diff)
	}
	if _, err := d.Power(ctx, "reboot"); err == nil || !strings.Contains(err.Error(), "on, off, cycle, status") {
		t.Errorf("unknown action: %v, want an error listing the actions", err)
	}
}

func TestRedfishCycleOrder(t *testing.T) {
	offPoll = time.Millisecond
	b := newTestBMC(t)
	// Derived from 437XR1138R2: a BMC offering PowerCycle, and one
	// offering only On and ForceOff (a cycle is ForceOff, wait, On).
	b.addSystem("cycler", func(doc map[string]any) {
		doc["Actions"].(map[string]any)["#ComputerSystem.Reset"].(map[string]any)["ResetType@Redfish.AllowableValues"] = []any{"On", "ForceOff", "ForceRestart", "PowerCycle"}
	})
	b.addSystem("plain", func(doc map[string]any) {
		doc["Actions"].(map[string]any)["#ComputerSystem.Reset"].(map[string]any)["ResetType@Redfish.AllowableValues"] = []any{"On", "ForceOff"}
	})
	url := b.serve()
	for _, tc := range []struct{ system, want string }{
		{"cycler", "PowerCycle"},
		{"plain", "ForceOff On"},
		{"437XR1138R2", "ForceRestart"},
	} {
		c := rfConfig(url)
		c.System = tc.system
		b.mu.Lock()
		b.resets = nil
		b.mu.Unlock()
		if st, err := newRF(t, c).Power(context.Background(), Cycle); err != nil || st != StateOn {
			t.Errorf("%s: cycle: %s, %v; want on", tc.system, st, err)
		}
		b.mu.Lock()
		got := strings.Join(b.resets, " ")
		b.mu.Unlock()
		if got != tc.want {
			t.Errorf("%s: cycle sent %q, want %q", tc.system, got, tc.want)
		}
	}
}

func TestRedfishPXEOnce(t *testing.T) {
	b := newTestBMC(t)
	b.etag = true
	// The mockup ships with the override already set; start from none.
	b.docs[rackSystem]["Boot"].(map[string]any)["BootSourceOverrideTarget"] = "None"
	b.docs[rackSystem]["Boot"].(map[string]any)["BootSourceOverrideEnabled"] = "Disabled"
	d := newRF(t, rfConfig(b.serve()))
	ok, err := d.PXEOnce(context.Background())
	if err != nil || !ok {
		t.Fatalf("PXEOnce: %v, %v; want true, nil", ok, err)
	}
	reqs := b.requests()
	want := append(slices.Clone(discover), call{"PATCH", rackSystem, `{"Boot":{"BootSourceOverrideEnabled":"Once","BootSourceOverrideTarget":"Pxe"}}`})
	if diff := cmp.Diff(want, calls(reqs)); diff != "" {
		t.Errorf("requests (-want +got):\n%s", diff)
	}
	checkAuth(t, reqs)
	if last := reqs[len(reqs)-1]; last.IfMatch == "" {
		t.Errorf("PATCH without If-Match, though the BMC sent an ETag")
	}
	if got := b.field(rackSystem, "Boot", "BootSourceOverrideTarget") + " " + b.field(rackSystem, "Boot", "BootSourceOverrideEnabled"); got != "Pxe Once" {
		t.Errorf("the BMC's boot override is %q, want \"Pxe Once\"", got)
	}
}

func TestRedfishSeveralSystems(t *testing.T) {
	b := newTestBMC(t)
	// Derived from 437XR1138R2: a second system whose boot override
	// targets lack Pxe.
	b.addSystem("blade2", func(doc map[string]any) {
		doc["Boot"].(map[string]any)["BootSourceOverrideTarget@Redfish.AllowableValues"] = []any{"None", "Cd", "Hdd", "BiosSetup"}
	})
	url := b.serve()
	ctx := context.Background()

	_, err := newRF(t, rfConfig(url)).Power(ctx, Status)
	if err == nil || !errors.Is(err, ErrBMC) || !strings.Contains(err.Error(), rackSystem) ||
		!strings.Contains(err.Error(), "/redfish/v1/Systems/blade2") || !strings.Contains(err.Error(), "set system") {
		t.Errorf("two systems, none chosen: %v; want an error listing both and saying to set system", err)
	}

	c := rfConfig(url)
	c.System = "nope"
	if _, err := newRF(t, c).Power(ctx, Status); err == nil || !strings.Contains(err.Error(), "blade2") {
		t.Errorf("unknown system: %v; want an error listing the systems", err)
	}

	for _, sys := range []string{"blade2", "/redfish/v1/Systems/blade2", "/redfish/v1/Systems/blade2/"} {
		c.System = sys
		n := len(b.requests())
		ok, err := newRF(t, c).PXEOnce(ctx)
		if err != nil || ok {
			t.Errorf("system %s without Pxe: PXEOnce %v, %v; want false, nil", sys, ok, err)
		}
		for _, r := range b.requests()[n:] {
			if r.Method != "GET" {
				t.Errorf("system %s without Pxe: sent %s %s", sys, r.Method, r.Path)
			}
			if r.Path == rackSystem {
				t.Errorf("system %s: read the other system", sys)
			}
		}
	}

	c.System = "437XR1138R2"
	if ok, err := newRF(t, c).PXEOnce(ctx); err != nil || !ok {
		t.Errorf("system 437XR1138R2 by Id: PXEOnce %v, %v; want true", ok, err)
	}
}

func TestRedfishRefusedCredentials(t *testing.T) {
	b := newTestBMC(t)
	c := rfConfig(b.serve())
	c.Password = "Wrong-pa55word-X"
	_, err := newRF(t, c).Power(context.Background(), Status)
	if !errors.Is(err, ErrCredentials) {
		t.Fatalf("wrong password: %v; want ErrCredentials", err)
	}
	for _, want := range []string{"refused the credentials", "HTTP 401", rfUser, "check the username and password"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if strings.Contains(err.Error(), c.Password) {
		t.Errorf("error shows the password: %v", err)
	}
	if n := len(b.requests()); n != 1 {
		t.Errorf("a 401 was tried %d times, want once (not retried)", n)
	}
}

func TestRedfishHungBMC(t *testing.T) {
	b := newTestBMC(t)
	b.hang = make(chan struct{})
	url := b.serve()
	t.Cleanup(func() { close(b.hang) })
	d := newRF(t, rfConfig(url), WithTimeout(200*time.Millisecond))
	start := time.Now()
	_, err := d.Power(context.Background(), Status)
	took := time.Since(start)
	if !errors.Is(err, ErrUnreachable) {
		t.Fatalf("hung BMC: %v; want ErrUnreachable", err)
	}
	for _, want := range []string{url, "within 200ms", "check the address"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if took < 200*time.Millisecond || took > 450*time.Millisecond {
		t.Errorf("gave up after %s, want about the 200ms timeout (a timeout is not retried)", took)
	}
}

func TestRedfishRetries(t *testing.T) {
	b := newTestBMC(t)
	b.fail5xx = 2
	url := b.serve()
	st, err := newRF(t, rfConfig(url)).Power(context.Background(), Status)
	if err != nil || st != StateOn {
		t.Fatalf("two 503s then answers: %s, %v; want on after retries", st, err)
	}
	want := append([]call{{"GET", "/redfish/v1", ""}, {"GET", "/redfish/v1", ""}}, discover...)
	if diff := cmp.Diff(want, calls(b.requests())); diff != "" {
		t.Errorf("requests (-want +got):\n%s", diff)
	}

	b.fail5xx = 10
	n := len(b.requests())
	_, err = newRF(t, rfConfig(url)).Power(context.Background(), Status)
	if !errors.Is(err, ErrBMC) || !strings.Contains(err.Error(), "HTTP 503") || !strings.Contains(err.Error(), "temporarily unavailable") {
		t.Errorf("503s throughout: %v; want ErrBMC with the status and the BMC's message", err)
	}
	if got := len(b.requests()) - n; got != 3 {
		t.Errorf("503s throughout: %d tries, want 3 (1 + 2 retries)", got)
	}
}

func TestRedfishTLS(t *testing.T) {
	b := newTestBMC(t)
	srv := httptest.NewTLSServer(b)
	t.Cleanup(srv.Close)
	c := rfConfig(srv.URL)
	_, err := newRF(t, c).Power(context.Background(), Status)
	if err == nil || !strings.Contains(err.Error(), "not trusted") || !strings.Contains(err.Error(), "set insecure") {
		t.Errorf("self-signed BMC: %v; want an error saying the certificate is not trusted and how to proceed", err)
	}
	if len(b.requests()) != 0 {
		t.Errorf("a request reached an untrusted BMC")
	}
	c.Insecure = true
	if st, err := newRF(t, c).Power(context.Background(), Status); err != nil || st != StateOn {
		t.Errorf("insecure: %s, %v; want on", st, err)
	}
}

func TestRedfishHostileAnswers(t *testing.T) {
	ctx := context.Background()
	t.Run("oversized", func(t *testing.T) {
		b := newTestBMC(t)
		b.hook = func(w http.ResponseWriter, r *http.Request) bool {
			_, _ = w.Write(bytes.Repeat([]byte(" "), maxBody+10))
			return true
		}
		if _, err := newRF(t, rfConfig(b.serve())).Power(ctx, Status); !errors.Is(err, ErrBMC) || !strings.Contains(err.Error(), "more than") {
			t.Errorf("oversized answer: %v; want ErrBMC", err)
		}
	})
	t.Run("foreign action target", func(t *testing.T) {
		b := newTestBMC(t)
		b.docs[rackSystem]["Actions"].(map[string]any)["#ComputerSystem.Reset"].(map[string]any)["target"] = "http://attacker.example/redfish/v1/steal"
		if _, err := newRF(t, rfConfig(b.serve())).Power(ctx, Off); !errors.Is(err, ErrBMC) || !strings.Contains(err.Error(), "only follows paths on the BMC") {
			t.Errorf("foreign target: %v; want ErrBMC refusing it", err)
		}
	})
	t.Run("wrong types", func(t *testing.T) {
		b := newTestBMC(t)
		b.docs[rackSystem]["PowerState"] = 42
		b.docs[rackSystem]["Boot"] = "nonsense"
		if _, err := newRF(t, rfConfig(b.serve())).Power(ctx, Status); !errors.Is(err, ErrBMC) {
			t.Errorf("wrong types: %v; want ErrBMC", err)
		}
	})
	t.Run("not redfish", func(t *testing.T) {
		b := newTestBMC(t)
		b.hook = func(w http.ResponseWriter, r *http.Request) bool {
			_, _ = io.WriteString(w, "<html>login</html>")
			return true
		}
		if _, err := newRF(t, rfConfig(b.serve())).PXEOnce(ctx); !errors.Is(err, ErrBMC) || !strings.Contains(err.Error(), "Redfish service") {
			t.Errorf("HTML answer: %v; want ErrBMC saying it is not a Redfish service", err)
		}
	})
}
