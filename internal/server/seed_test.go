package server

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/btyproject/bty/internal/fleet"
)

// getFrom GETs path from local address ip (any 127/8 address is this
// host's loopback), with no credentials.
func (ts *testServer) getFrom(t *testing.T, ip, path string) resp {
	t.Helper()
	return ts.callFrom(t, ip, "GET", path, "", nil)
}

// callFrom sends method path from local address ip with no
// credentials, with cycle (when set) as the X-Bty-Cycle header.
func (ts *testServer) callFrom(t *testing.T, ip, method, path, cycle string, body io.Reader) resp {
	t.Helper()
	var hdr map[string]string
	if cycle != "" {
		hdr = map[string]string{cycleHeader: cycle}
	}
	return ts.callFromHdr(t, ip, method, path, body, hdr)
}

// callFromHdr sends method path from local address ip with the headers
// hdr.
func (ts *testServer) callFromHdr(t *testing.T, ip, method, path string, body io.Reader, hdr map[string]string) resp {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		return d.DialContext(ctx, network, addr)
	}}}
	defer c.CloseIdleConnections()
	req, err := http.NewRequest(method, ts.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s from %s: %v", method, path, ip, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return resp{res.StatusCode, res.Header, b}
}

// report is the live env's report (route "done" or "failed") for mac
// in the flash cycle of a PXE contact from 127.0.0.1 made just before;
// the machine's policy must serve the live env (flash, tui).
func (ts *testServer) report(t *testing.T, mac, route string, body io.Reader) resp {
	t.Helper()
	_, cycle := ts.boot(t, "127.0.0.1", mac)
	if cycle == "" {
		t.Fatalf("%s: the PXE contact opened no flash cycle (policy local?)", mac)
	}
	return ts.callFrom(t, "127.0.0.1", "POST", "/pxe/"+mac+"/"+route, cycle, body)
}

var cycleParam = regexp.MustCompile(`\bbty\.cycle=([0-9a-f]{32})\b`)

// boot is a PXE contact for mac from ip: the script served and the
// flash cycle token on its kernel line ("" when none).
func (ts *testServer) boot(t *testing.T, ip, mac string) (script, cycle string) {
	t.Helper()
	r := ts.getFrom(t, ip, "/pxe/"+mac)
	if r.code != 200 {
		t.Fatalf("PXE contact %s from %s: %d %s", mac, ip, r.code, r.body)
	}
	if m := cycleParam.FindSubmatch(r.body); m != nil {
		cycle = string(m[1])
	}
	return string(r.body), cycle
}

// TestSeedAPI: user_data and meta_data are set through PUT, validated
// (a #cloud-config that is not YAML is a 400 naming the line), returned
// to authenticated callers only, and never in the open routes' answers.
func TestSeedAPI(t *testing.T) {
	ts := startServer(t, nil)
	const mac = "52:54:00:5e:ed:01"
	ud := "#cloud-config\nhostname: seeded\nwrite_files:\n  - path: /etc/bty-proof\n    content: \"token\\n\"\n"
	put := func(body string) resp {
		return ts.do(t, "PUT", "/machines/"+mac, strings.NewReader(body), ts.auth())
	}
	if r := ts.do(t, "PUT", "/machines/"+mac, strings.NewReader(`{"user_data": "#cloud-config\n"}`), nil); r.code != 401 {
		t.Fatalf("PUT without auth: %d", r.code)
	}
	b, _ := json.Marshal(map[string]string{"user_data": ud, "boot_policy": "flash", "image": "a.img", "hostname": "n1", "provisioning_mode": "cloud-init"})
	if r := put(string(b)); r.code != 201 {
		t.Fatalf("PUT: %d %s", r.code, r.body)
	}
	var m fleet.Machine
	ts.do(t, "GET", "/machines/"+mac, nil, ts.auth()).json(t, &m)
	if m.UserData != ud || m.MetaData != "" {
		t.Fatalf("GET: user_data %q meta_data %q", m.UserData, m.MetaData)
	}
	if r := ts.do(t, "GET", "/machines/"+mac, nil, nil); r.code != 401 || strings.Contains(string(r.body), "bty-proof") {
		t.Fatalf("GET without auth: %d %s", r.code, r.body)
	}
	// Validation: the line of the YAML error, and nothing saved.
	for body, want := range map[string]string{
		`{"user_data": "#cloud-config\nusers:\n  - name: a\n   bad: [\n"}`: "line 4",
		`{"user_data": "hello"}`:                                             "does not recognise",
		`{"meta_data": "instance-id: [\n"}`:                                  "meta_data: meta-data is not valid YAML",
		`{"user_data": "` + strings.Repeat("x", fleet.MaxSeedBytes+1) + `"}`: "the limit is",
	} {
		r := put(body)
		if r.code != 400 || !strings.Contains(r.errMsg(t), want) {
			t.Errorf("PUT %.60s: %d %s, want 400 with %q", body, r.code, r.body, want)
		}
	}
	ts.do(t, "GET", "/machines/"+mac, nil, ts.auth()).json(t, &m)
	if m.UserData != ud {
		t.Fatalf("a refused PUT changed user_data: %q", m.UserData)
	}
	// The open routes' answers carry no seed, nor anything else of the
	// record: a status.
	for _, path := range []string{"/pxe/" + mac + "/failed", "/pxe/" + mac + "/done"} {
		_, cycle := ts.boot(t, "127.0.0.1", mac)
		r := ts.callFrom(t, "127.0.0.1", "POST", path, cycle, strings.NewReader("x"))
		if r.code != 200 || !statusOnly(r) {
			t.Errorf("POST %s answered: %d %s", path, r.code, r.body)
		}
	}
}

// TestSeedRoutes: GET /pxe/{mac}/user-data and meta-data answer only
// the machine's open flash cycle (its token, from its address), each
// once; the synthesised meta-data carries the hostname and an
// instance-id that changes with every flash.
func TestSeedRoutes(t *testing.T) {
	ts := startServer(t, nil)
	const mac = "52:54:00:5e:ed:02"
	ud := "#cloud-config\nruncmd:\n  - echo hi\n"
	b, _ := json.Marshal(map[string]string{"user_data": ud, "boot_policy": "flash", "image": "a.img", "hostname": "Node-7", "provisioning_mode": "cloud-init"})
	if r := ts.do(t, "PUT", "/machines/"+mac, strings.NewReader(string(b)), ts.auth()); r.code != 201 {
		t.Fatalf("PUT: %d %s", r.code, r.body)
	}
	ud1, md1 := "/pxe/"+mac+"/user-data", "/pxe/"+mac+"/meta-data"
	seed := func(ip, path, cycle string) resp { return ts.callFrom(t, ip, "GET", path, cycle, nil) }
	// Before any PXE contact: no flash cycle.
	if r := seed("127.0.0.1", ud1, fleet.NewCycleToken()); r.code != 403 {
		t.Fatalf("before a contact: %d %s", r.code, r.body)
	}
	script, cycle := ts.boot(t, "127.0.0.1", mac)
	if !strings.Contains(script, "bty.provisioning=cloud-init") || cycle == "" {
		t.Fatalf("flash contact: %s", script)
	}
	// Without the token, or with another, from the right address: 403.
	for _, c := range []string{"", fleet.NewCycleToken(), strings.ToUpper(cycle)} {
		if r := seed("127.0.0.1", ud1, c); r.code != 403 || strings.Contains(string(r.body), "echo hi") {
			t.Fatalf("user-data with token %q: %d %s", c, r.code, r.body)
		}
	}
	// The right token from another address: 403, the body says nothing
	// of the seed.
	for _, p := range []string{ud1, md1} {
		if r := seed("127.0.0.2", p, cycle); r.code != 403 || strings.Contains(string(r.body), "echo hi") {
			t.Errorf("%s from another address: %d %s", p, r.code, r.body)
		}
	}
	r := seed("127.0.0.1", ud1, cycle)
	if r.code != 200 || string(r.body) != ud || r.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("user-data to the machine: %d %q", r.code, r.body)
	}
	// Once per cycle.
	if r := seed("127.0.0.1", ud1, cycle); r.code != 403 {
		t.Fatalf("user-data a second time: %d %s", r.code, r.body)
	}
	r = seed("127.0.0.1", md1, cycle)
	md := string(r.body)
	if r.code != 200 || !strings.Contains(md, "local-hostname: node-7\n") || !strings.HasPrefix(md, "instance-id: bty-5254005eed02-") {
		t.Fatalf("synthesised meta-data: %d %q", r.code, md)
	}
	// done ends the cycle's calls.
	if r := ts.getFrom(t, "127.0.0.1", "/pxe/"+mac+"/done"); r.code != 405 {
		t.Fatalf("GET done: %d", r.code)
	}
	if r := ts.callFrom(t, "127.0.0.1", "POST", "/pxe/"+mac+"/done", cycle, nil); r.code != 200 {
		t.Fatalf("done: %d %s", r.code, r.body)
	}
	if r := seed("127.0.0.1", md1, cycle); r.code != 403 {
		t.Fatalf("after done: %d", r.code)
	}
	// The contact after done boots the disk (no cycle, no seed); the
	// one after that flashes again, in a new cycle, with a new
	// instance-id.
	if script, c := ts.boot(t, "127.0.0.1", mac); c != "" || !strings.Contains(script, "booting from the local disk") {
		t.Fatalf("the local contact after done: cycle %q, %s", c, script)
	}
	_, cycle2 := ts.boot(t, "127.0.0.1", mac)
	if cycle2 == "" || cycle2 == cycle {
		t.Fatalf("second flash's cycle %q (first %q)", cycle2, cycle)
	}
	r = seed("127.0.0.1", md1, cycle2)
	if r.code != 200 || string(r.body) == md || !strings.HasPrefix(string(r.body), "instance-id: bty-5254005eed02-") {
		t.Fatalf("second flash's meta-data: %d %q (first %q)", r.code, r.body, md)
	}
	// The operator's own meta-data is served as it is.
	if r := ts.do(t, "PUT", "/machines/"+mac, strings.NewReader(`{"meta_data": "instance-id: mine\n"}`), ts.auth()); r.code != 200 {
		t.Fatalf("PUT meta_data: %d %s", r.code, r.body)
	}
	_, cycle3 := ts.boot(t, "127.0.0.1", mac)
	if r := seed("127.0.0.1", md1, cycle3); string(r.body) != "instance-id: mine\n" {
		t.Fatalf("operator meta-data: %d %q", r.code, r.body)
	}
	// No user_data on the record: 404 to the cycle's own live env.
	if r := ts.do(t, "PUT", "/machines/"+mac, strings.NewReader(`{"user_data": ""}`), ts.auth()); r.code != 200 {
		t.Fatalf("clearing: %d", r.code)
	}
	if r := seed("127.0.0.1", ud1, cycle3); r.code != 404 {
		t.Fatalf("without user_data: %d", r.code)
	}
	if r := ts.getFrom(t, "127.0.0.2", "/pxe/zz/user-data"); r.code != 400 {
		t.Fatalf("bad MAC: %d", r.code)
	}
}
