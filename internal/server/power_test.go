package server

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/store"
)

// redfishBMC is a minimal Redfish service with one ComputerSystem whose
// PowerState follows the resets it is sent, and which takes a boot
// override (recorded among the resets as "boot:TARGET/ENABLED"); it
// checks Basic auth.
func redfishBMC(t *testing.T, user, pass string) (*httptest.Server, func() []string) {
	t.Helper()
	var mu sync.Mutex
	state := "Off"
	var resets []string
	doc := func(w http.ResponseWriter, v any) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != user || p != pass {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		switch r.Method + " " + r.URL.Path {
		case "GET /redfish/v1", "GET /redfish/v1/":
			doc(w, map[string]any{"@odata.id": "/redfish/v1", "Systems": map[string]string{"@odata.id": "/redfish/v1/Systems"}})
		case "GET /redfish/v1/Systems":
			doc(w, map[string]any{"@odata.id": "/redfish/v1/Systems", "Members": []map[string]string{{"@odata.id": "/redfish/v1/Systems/1"}}})
		case "GET /redfish/v1/Systems/1":
			doc(w, map[string]any{"@odata.id": "/redfish/v1/Systems/1", "Id": "1", "PowerState": state,
				"Boot": map[string]any{"BootSourceOverrideTarget": "None", "BootSourceOverrideEnabled": "Disabled",
					"BootSourceOverrideTarget@Redfish.AllowableValues": []string{"None", "Pxe", "Hdd"}},
				"Actions": map[string]any{"#ComputerSystem.Reset": map[string]any{
					"target":                            "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset",
					"ResetType@Redfish.AllowableValues": []string{"On", "ForceOff", "PowerCycle"}}}})
		case "POST /redfish/v1/Systems/1/Actions/ComputerSystem.Reset":
			var body struct{ ResetType string }
			_ = json.NewDecoder(r.Body).Decode(&body)
			resets = append(resets, body.ResetType)
			switch body.ResetType {
			case "On", "PowerCycle":
				state = "On"
			case "ForceOff":
				state = "Off"
			}
			w.WriteHeader(http.StatusNoContent)
		case "PATCH /redfish/v1/Systems/1":
			var body struct {
				Boot struct{ BootSourceOverrideTarget, BootSourceOverrideEnabled string }
			}
			_ = json.NewDecoder(r.Body).Decode(&body)
			resets = append(resets, "boot:"+body.Boot.BootSourceOverrideTarget+"/"+body.Boot.BootSourceOverrideEnabled)
			w.WriteHeader(http.StatusNoContent)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv, func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), resets...) }
}

// TestPowerControl: a machine's BMC settings are validated field by
// field, its password is write-only (never in an answer, an event, the
// machine page, an export or the log), and POST /machines/{mac}/power
// drives a real Redfish exchange and answers the state; a machine
// without a driver, a wrong password and bad requests get clear errors.
func TestPowerControl(t *testing.T) {
	const secret = "bmc-Secret-4711"
	bmc, resets := redfishBMC(t, "admin", secret)
	var logs syncBuffer // every log line, debug included
	ts, _ := customServer(t, nil, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	const mac = "52:54:00:90:00:01"
	put := func(body string) resp { return ts.do(t, "PUT", "/machines/"+mac, strings.NewReader(body), ts.auth()) }
	for body, field := range map[string]string{
		`{"power": {"driver": "ipmi", "username": "u", "password": "p"}}`:                            "power.address",
		`{"power": {"driver": "smoke-signals"}}`:                                                     "power.driver",
		`{"power": {"driver": "redfish", "address": "ftp://bmc", "username": "u", "password": "p"}}`: "power.address",
	} {
		if r := put(body); r.code != 400 || !strings.Contains(r.errMsg(t), field) {
			t.Errorf("PUT %s: %d %s, want 400 naming %s", body, r.code, r.body, field)
		}
	}
	if r := ts.do(t, "POST", "/machines/"+mac+"/power", strings.NewReader(`{"action":"status"}`), ts.auth()); r.code != 404 {
		t.Errorf("power for an unknown machine: %d", r.code)
	}
	if r := put(`{"hostname": "p1"}`); r.code != 201 {
		t.Fatalf("PUT: %d %s", r.code, r.body)
	}
	if r := ts.do(t, "POST", "/machines/"+mac+"/power", strings.NewReader(`{"action":"status"}`), ts.auth()); r.code != 409 ||
		!strings.Contains(r.errMsg(t), "--power-driver") {
		t.Errorf("power without a driver: %d %s", r.code, r.body)
	}
	r := put(`{"power": {"driver": "redfish", "address": "` + bmc.URL + `", "username": "admin", "password": "` + secret + `"}}`)
	if r.code != 200 || strings.Contains(string(r.body), secret) || !strings.Contains(string(r.body), `"password_set": true`) {
		t.Fatalf("PUT power: %d %s", r.code, r.body)
	}
	// A later change without the password keeps it.
	if r := put(`{"power": {"username": "admin"}}`); r.code != 200 {
		t.Fatalf("PUT power without password: %d %s", r.code, r.body)
	}
	power := func(action string) resp {
		return ts.do(t, "POST", "/machines/"+mac+"/power", strings.NewReader(`{"action":"`+action+`"}`), ts.auth())
	}
	for _, c := range []struct{ action, state string }{{"status", "off"}, {"on", "on"}, {"cycle", "on"}, {"off", "off"}} {
		r := power(c.action)
		var res struct{ Action, State, Driver string }
		if r.code != 200 || json.Unmarshal(r.body, &res) != nil || res.State != c.state || res.Driver != "redfish" {
			t.Errorf("power %s: %d %s, want state %s", c.action, r.code, r.body, c.state)
		}
	}
	if got := strings.Join(resets(), ","); got != "On,PowerCycle,ForceOff" {
		t.Errorf("the BMC was sent resets %s, want On,PowerCycle,ForceOff", got)
	}
	if r := power("explode"); r.code != 400 {
		t.Errorf("bad action: %d", r.code)
	}
	if r := ts.do(t, "POST", "/machines/"+mac+"/power", strings.NewReader(`{"action":"on"}`), nil); r.code != 401 {
		t.Errorf("power without a session: %d", r.code)
	}
	// A wrong password: a clear 502, the password in nothing.
	if r := put(`{"power": {"password": "wrong-Pass-99"}}`); r.code != 200 {
		t.Fatal(r.code)
	}
	r = power("status")
	if r.code != 502 || !strings.Contains(strings.ToLower(r.errMsg(t)), "credentials") || strings.Contains(string(r.body), "wrong-Pass-99") {
		t.Errorf("wrong BMC password: %d %s", r.code, r.body)
	}
	if !strings.Contains(string(ts.do(t, "GET", "/metrics", nil, nil).body), `bty_power_actions_total{driver="redfish",result="credentials"} 1`) {
		t.Error("/metrics does not count the refused power action")
	}
	// Write-only: no surface shows either password.
	cookie := map[string]string{"Cookie": CookieName + "=" + ts.token}
	for what, body := range map[string][]byte{
		"GET /machines/{mac}": ts.do(t, "GET", "/machines/"+mac, nil, ts.auth()).body,
		"GET /machines":       ts.do(t, "GET", "/machines", nil, ts.auth()).body,
		"GET /state/export":   ts.do(t, "GET", "/state/export", nil, ts.auth()).body,
		"the machine page":    ts.do(t, "GET", "/ui/machines/"+mac, nil, cookie).body,
		"the machines page":   ts.do(t, "GET", "/ui/machines", nil, cookie).body,
		"the server's log":    []byte(logs.String()),
	} {
		for _, pw := range []string{secret, "wrong-Pass-99"} {
			if strings.Contains(string(body), pw) {
				t.Errorf("%s shows the BMC password", what)
			}
		}
	}
	var m fleet.Machine
	ts.do(t, "GET", "/machines/"+mac, nil, ts.auth()).json(t, &m)
	if m.Power == nil || m.Power.Driver != "redfish" || m.Power.Address != bmc.URL {
		t.Errorf("stored power %+v", m.Power)
	}
	// Driver none removes power control.
	if r := put(`{"power": {"driver": "none"}}`); r.code != 200 || !strings.Contains(string(r.body), `"power": null`) {
		t.Errorf("driver none: %d %s", r.code, r.body)
	}
}

// TestUIPower: the machine page offers power buttons for a machine with
// a BMC; status and on run at once and show the BMC's answer; off and
// cycle go through a confirmation first (the unconfirmed POST changes
// nothing); a cross-origin form is refused.
func TestUIPower(t *testing.T) {
	bmc, resets := redfishBMC(t, "admin", "pw-UI-1")
	ts := startServer(t, nil)
	const mac = "52:54:00:90:00:03"
	cookie := map[string]string{"Cookie": CookieName + "=" + ts.token, "Origin": ts.URL}
	page := func() string { return string(ts.do(t, "GET", "/ui/machines/"+mac, nil, cookie).body) }
	if r := ts.do(t, "PUT", "/machines/"+mac, strings.NewReader(`{"hostname":"u1"}`), ts.auth()); r.code != 201 {
		t.Fatal(r.code)
	}
	if strings.Contains(page(), `id="power-form"`) {
		t.Fatal("power buttons for a machine without a BMC")
	}
	if r := ts.do(t, "PUT", "/machines/"+mac, strings.NewReader(`{"power":{"driver":"redfish","address":"`+bmc.URL+`","username":"admin","password":"pw-UI-1"}}`), ts.auth()); r.code != 200 {
		t.Fatal(r.code, string(r.body))
	}
	if p := page(); !strings.Contains(p, `id="power-form"`) || !strings.Contains(p, "password set") || strings.Contains(p, "pw-UI-1") {
		t.Fatal("the machine page: no power buttons, or the password shown")
	}
	post := func(vals url.Values, hdr map[string]string) formResp {
		return ts.form(t, "/ui/machines/"+mac+"/power", vals, hdr)
	}
	r := post(url.Values{"action": {"on"}}, cookie)
	if r.StatusCode != 303 {
		t.Fatalf("power on: %d", r.StatusCode)
	}
	// The outcome is shown on the page the redirect leads to.
	var flash string
	for _, c := range r.Cookies() {
		if c.Name == flashCookie {
			flash = c.Value
		}
	}
	shown := string(ts.do(t, "GET", "/ui/machines/"+mac, nil, map[string]string{"Cookie": cookie["Cookie"] + "; " + flashCookie + "=" + flash}).body)
	if !strings.Contains(shown, "the BMC reports the machine on") {
		t.Error("the page does not show the power on's outcome")
	}
	// off unconfirmed: to the confirmation, nothing sent to the BMC.
	if r := post(url.Values{"action": {"off"}}, cookie); r.StatusCode != 303 || !strings.Contains(r.Header.Get("Location"), "/power?action=off") {
		t.Fatalf("unconfirmed off: %d %s", r.StatusCode, r.Header.Get("Location"))
	}
	if c := string(ts.do(t, "GET", "/ui/machines/"+mac+"/power?action=off", nil, cookie).body); !strings.Contains(c, "Power off "+mac+" now?") ||
		!strings.Contains(c, `name="confirmed" value="yes"`) {
		t.Fatalf("the confirmation page:\n%s", c)
	}
	if got := strings.Join(resets(), ","); got != "On" {
		t.Fatalf("resets before confirming: %s", got)
	}
	if r := post(url.Values{"action": {"off"}, "confirmed": {"yes"}}, map[string]string{"Cookie": cookie["Cookie"], "Origin": "http://evil.example"}); r.StatusCode != 403 {
		t.Errorf("cross-origin power off: %d", r.StatusCode)
	}
	if r := post(url.Values{"action": {"off"}, "confirmed": {"yes"}}, cookie); r.StatusCode != 303 {
		t.Fatalf("confirmed off: %d", r.StatusCode)
	}
	if got := strings.Join(resets(), ","); got != "On,ForceOff" {
		t.Errorf("resets: %s, want On,ForceOff", got)
	}
}

// TestExportSecrets: an export carries the BMC passwords only when asked
// (?secrets=1), says so in the archive, and an import of it restores
// them (the BMC accepts the login on the new server); an import without
// them keeps the record passwordless; a secret for a machine the archive
// lacks refuses the whole import.
func TestExportSecrets(t *testing.T) {
	bmc, _ := redfishBMC(t, "admin", "exp-Secret-7")
	a := startServer(t, nil)
	const mac = "52:54:00:e5:00:01"
	body := `{"power":{"driver":"redfish","address":"` + bmc.URL + `","username":"admin","password":"exp-Secret-7"}}`
	if r := a.do(t, "PUT", "/machines/"+mac, strings.NewReader(body), a.auth()); r.code != 201 {
		t.Fatalf("PUT: %d %s", r.code, r.body)
	}
	plain := a.do(t, "GET", "/state/export", nil, a.auth()).body
	withSecrets := a.do(t, "GET", "/state/export?secrets=1", nil, a.auth())
	if strings.Contains(string(plain), "exp-Secret-7") || strings.Contains(string(plain), `"secrets"`) {
		t.Fatalf("a plain export carries secrets:\n%s", plain)
	}
	if withSecrets.code != 200 || !strings.Contains(string(withSecrets.body), `"exp-Secret-7"`) || !strings.Contains(string(withSecrets.body), "keep it like a password file") {
		t.Fatalf("export?secrets=1: %d\n%s", withSecrets.code, withSecrets.body)
	}
	if r := a.do(t, "GET", "/state/export?secrets=yes", nil, a.auth()); r.code != 400 {
		t.Errorf("secrets=yes: %d", r.code)
	}
	status := func(ts *testServer) int {
		r := ts.do(t, "POST", "/machines/"+mac+"/power", strings.NewReader(`{"action":"status"}`), ts.auth())
		if r.code != 200 && !strings.Contains(r.errMsg(t), "password") {
			t.Errorf("power status %d: %s, want the missing password named", r.code, r.body)
		}
		return r.code
	}
	b := startServer(t, nil)
	if r := b.do(t, "POST", "/state/import", bytes.NewReader(plain), b.auth()); r.code != 200 {
		t.Fatalf("import: %d %s", r.code, r.body)
	}
	if code := status(b); code != 409 {
		t.Errorf("power after a plain import: %d, want 409 (no password: set it again)", code)
	}
	c := startServer(t, nil)
	if r := c.do(t, "POST", "/state/import", bytes.NewReader(withSecrets.body), c.auth()); r.code != 200 {
		t.Fatalf("import with secrets: %d %s", r.code, r.body)
	}
	if code := status(c); code != 200 {
		t.Errorf("power after an import with secrets: %d, want 200", code)
	}
	var m fleet.Machine
	c.do(t, "GET", "/machines/"+mac, nil, c.auth()).json(t, &m)
	if m.Power == nil || !m.Power.PasswordSet {
		t.Errorf("imported power: %+v", m.Power)
	}
	bad := strings.Replace(string(withSecrets.body), `"`+mac+`": "exp-Secret-7"`, `"52:54:00:e5:00:99": "x"`, 1)
	if bad == string(withSecrets.body) {
		t.Fatal("could not build the bad archive")
	}
	d := startServer(t, nil)
	if r := d.do(t, "POST", "/state/import", strings.NewReader(bad), d.auth()); r.code != 400 || !strings.Contains(r.errMsg(t), "52:54:00:e5:00:99") {
		t.Errorf("a secret for a machine the archive lacks: %d %s", r.code, r.body)
	}
	if r := d.do(t, "GET", "/machines/"+mac, nil, d.auth()); r.code != 404 {
		t.Errorf("a refused import wrote the machine: %d", r.code)
	}
}

// TestPasswordsSealed: the state database (and so its backups) holds
// BMC passwords sealed with $BTY_STATE_DIR/secret.key (0600): the
// password's bytes are in neither state.db nor its WAL; a password
// stored in clear by an older bty-web is sealed at start; a key that
// is not the one a password was sealed with is a clear error.
func TestPasswordsSealed(t *testing.T) {
	const pw = "Sealed-Secret-4711"
	bmc, _ := redfishBMC(t, "admin", pw)
	ts := startServer(t, nil)
	const mac, legacy = "52:54:00:5e:a1:01", "52:54:00:5e:a1:02"
	body := `{"power":{"driver":"redfish","address":"` + bmc.URL + `","username":"admin","password":"` + pw + `"}}`
	if r := ts.do(t, "PUT", "/machines/"+mac, strings.NewReader(body), ts.auth()); r.code != 201 {
		t.Fatalf("PUT: %d %s", r.code, r.body)
	}
	status := func(m string) resp {
		return ts.do(t, "POST", "/machines/"+m+"/power", strings.NewReader(`{"action":"status"}`), ts.auth())
	}
	if r := status(mac); r.code != 200 {
		t.Fatalf("power with a sealed password: %d %s", r.code, r.body)
	}
	m, err := ts.st.GetMachine(context.Background(), fleet.MustParseMAC(mac))
	if err != nil || !strings.HasPrefix(m.Power.Password, sealedPrefix) || strings.Contains(m.Power.Password, pw) {
		t.Fatalf("stored password %q, %v", m.Power.Password, err)
	}
	for _, f := range []string{"state.db", "state.db-wal"} {
		b, err := os.ReadFile(filepath.Join(ts.cfg.StateDir, f))
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(pw)) {
			t.Errorf("%s holds the BMC password in clear", f)
		}
	}
	fi, err := os.Stat(filepath.Join(ts.cfg.StateDir, secretKeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the key file: %v %v", fi, err)
	}
	// A password an older bty-web stored in clear is sealed at start.
	if _, _, err := store.PutMachine(context.Background(), ts.st, fleet.MustParseMAC(legacy), fleet.MachineUpdate{Power: &fleet.PowerUpdate{
		Driver: ptr("redfish"), Address: ptr(bmc.URL), Username: ptr("admin"), Password: ptr(pw)}}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := ts.srv.SealPasswords(context.Background()); err != nil {
		t.Fatal(err)
	}
	if m, _ := ts.st.GetMachine(context.Background(), fleet.MustParseMAC(legacy)); !sealed(m.Power.Password) {
		t.Fatalf("a password in clear was not sealed at start: %q", m.Power.Password)
	}
	if r := status(legacy); r.code != 200 {
		t.Fatalf("power after sealing at start: %d %s", r.code, r.body)
	}
	// Another key: the password cannot be opened; the error says what to do.
	other := newSecretBox(t.TempDir())
	ts.srv.secrets = other
	if r := status(mac); r.code != 409 || !strings.Contains(r.errMsg(t), "set the password again") {
		t.Errorf("power with another key: %d %s", r.code, r.body)
	}
}

func ptr[T any](v T) *T { return &v }
